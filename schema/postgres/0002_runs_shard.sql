-- Version 2 (SQLite's 0007): the shard a run belongs to (`I/N`). Shards that share one database
-- each keep their own cycles: what is due, and which `running` rows a restart marks
-- interrupted, are read from the shard's own runs.
ALTER TABLE runs ADD COLUMN shard TEXT COLLATE "C" NOT NULL DEFAULT '0/1';
CREATE INDEX runs_shard ON runs (shard, run_id);
