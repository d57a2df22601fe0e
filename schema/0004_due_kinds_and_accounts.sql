-- engagement-ingest schema, version 4: what is due, and the accounts' conditions.
--
-- runs: which kinds a run only caught up on (work an earlier cycle left undone), how many
-- batches it planned (NULL: it failed before planning: config, inventory, database or lock),
-- how many of them it did not send (the API could not be reached, or the process was stopped),
-- and which kinds had a batch fail after retries (a `partial` run is partial for those only).
-- A kind is due again when its [schedule] fired since the last run that planned it in full.
ALTER TABLE runs ADD COLUMN catch_up TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN planned INTEGER;
ALTER TABLE runs ADD COLUMN not_attempted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN failed_kinds TEXT NOT NULL DEFAULT '';
-- Earlier versions recorded only cycles that planned, each in full: they count for what is due,
-- so the first run after the upgrade does not repeat a cycle that just ran.
UPDATE runs SET planned = requests;

-- requests: a new outcome, `unauthorized`, for a batch whose credential the API refused (401):
-- an account to re-authorize, or the app's own keys. SQLite cannot change a CHECK in place, so
-- the table is rebuilt (no view reads it).
CREATE TABLE requests_v4 (
    run_id      INTEGER NOT NULL REFERENCES runs (run_id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,                    -- totals, hourly, historical
    endpoint    TEXT NOT NULL,                    -- totals, 28hr, historical
    credential  TEXT NOT NULL,                    -- 'bearer' or the account handle; never a secret
    tweet_count INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    http_status INTEGER,                          -- last status; NULL when no response was received
    -- ok; partial (some Tweets or metrics refused, the rest stored); refused (the API refused
    -- the request because of Tweets it named: they were marked and the rest sent again at once);
    -- failed (after retries; planned again next run); unauthorized (the credential was refused:
    -- see the accounts table, or the app's keys)
    outcome     TEXT NOT NULL
                CHECK (outcome IN ('ok', 'partial', 'refused', 'failed', 'unauthorized')),
    error       TEXT,
    rows        INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

INSERT INTO requests_v4 SELECT run_id, seq, kind, endpoint, credential, tweet_count, attempts,
    http_status, outcome, error, rows, started_at, duration_ms FROM requests;
DROP TABLE requests;
ALTER TABLE requests_v4 RENAME TO requests;

-- The condition of every configured account, as the last run found it: `ok` (its token
-- answered), `refused` (the API refused its token with 401 while the app's own keys were
-- accepted: a person must re-authorize it; its Tweets' public metrics are read with the bearer
-- token meanwhile), `paused` (`enabled = false` in the config: no request uses its token).
CREATE TABLE accounts (
    handle     TEXT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (state IN ('ok', 'refused', 'paused')),
    detail     TEXT,                              -- the API's words for a refusal
    since      INTEGER NOT NULL,                  -- when it entered this state
    checked_at INTEGER NOT NULL                   -- when a run last confirmed it
) STRICT;
