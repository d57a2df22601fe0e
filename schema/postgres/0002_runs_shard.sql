-- Version 2 (SQLite's 0007): the shard a run belongs to (`I/N`). Shards that share one database
-- each keep their own cycles: what is due, and which `running` rows a restart marks
-- interrupted, are read from the shard's own runs.
ALTER TABLE runs ADD COLUMN shard TEXT COLLATE "C" NOT NULL DEFAULT '0/1';
CREATE INDEX runs_shard ON runs (shard, run_id);

-- SQLite's sum() of integers: an integer, an error past 2^63 (PostgreSQL's sum(bigint) is
-- numeric). The binary's SQL calls it for sum(); a query written by hand may use either.
CREATE AGGREGATE public.int_sum(bigint) (
    SFUNC = int8pl, STYPE = bigint, COMBINEFUNC = int8pl, PARALLEL = SAFE
);
