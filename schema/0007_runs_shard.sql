-- Version 7: the shard a run belongs to (`I/N`, issue 17). Shards that share one database each
-- keep their own cycles: what is due, and which `running` rows a restart marks interrupted,
-- are read from the shard's own runs. Runs before version 7 were unsharded.
ALTER TABLE runs ADD COLUMN shard TEXT NOT NULL DEFAULT '0/1';
CREATE INDEX runs_shard ON runs (shard, run_id);
