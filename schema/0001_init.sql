-- engagement-ingest schema, version 1. Times are INTEGER Unix seconds, UTC.
-- Never edit a migration that has shipped: add schema/NNNN_*.sql instead (see schema/README.md).

-- Lookup of engagement types, spelled as the API spells them. metric_id is stable.
CREATE TABLE metrics (
    metric_id INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE
) STRICT;

INSERT INTO metrics (metric_id, name) VALUES
    (1, 'impressions'), (2, 'engagements'), (3, 'favorites'), (4, 'retweets'),
    (5, 'quote_tweets'), (6, 'replies'), (7, 'video_views'), (8, 'media_views'),
    (9, 'media_engagements'), (10, 'url_clicks'), (11, 'hashtag_clicks'),
    (12, 'detail_expands'), (13, 'permalink_clicks'), (14, 'app_install_attempts'),
    (15, 'app_opens'), (16, 'email_tweet'), (17, 'user_follows'), (18, 'user_profile_clicks');

-- Mirror of the inventory. A Tweet removed from the inventory keeps its row and data; removed_at is set.
CREATE TABLE tweets (
    tweet_id          INTEGER PRIMARY KEY,
    owner             TEXT,                       -- handle of the owning account; NULL = public Tweet
    listed_owner      TEXT,                       -- the owner the inventory lists; differs from
                                                  -- owner when the API says the Tweet changed hands
    created_at        INTEGER NOT NULL,           -- from the Snowflake ID
    status            TEXT NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'unavailable', 'protected', 'forbidden')),
    status_detail     TEXT,                       -- why the status is not 'active' (API message)
    status_changed_at INTEGER,                    -- when the status last changed
    status_checked_at INTEGER,                    -- when the API last reported this status
    first_seen_at     INTEGER NOT NULL,           -- first time the inventory listed it
    removed_at        INTEGER,                    -- NULL while listed in the inventory
    totals_checked_at INTEGER,                    -- last successful /totals answer for it
    -- Metrics the API refused for this Tweet (unsupported_* lists: impressions/engagements of
    -- Tweets over 90 days old, video views of Tweets over 1800 days old), as a bit set:
    -- bit metric_id set = never asked again. Test with: unsupported_metrics & (1 << metric_id)
    unsupported_metrics INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX tweets_owner ON tweets (owner, created_at);

-- Cumulative lifetime values from /totals. Change-only: a row is written when the value differs
-- from the previous row of the same (tweet, metric). tweets.totals_checked_at says when it was last confirmed.
CREATE TABLE totals (
    tweet_id    INTEGER NOT NULL REFERENCES tweets (tweet_id),
    metric_id   INTEGER NOT NULL REFERENCES metrics (metric_id),
    observed_at INTEGER NOT NULL,
    value       INTEGER NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, observed_at)
) STRICT, WITHOUT ROWID;

-- Hourly counts from /28hr and /historical; hour = bucket start. Sparse: zero buckets are not stored.
CREATE TABLE series (
    tweet_id   INTEGER NOT NULL REFERENCES tweets (tweet_id),
    metric_id  INTEGER NOT NULL REFERENCES metrics (metric_id),
    hour       INTEGER NOT NULL CHECK (hour % 3600 = 0),
    value      INTEGER NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('28hr', 'historical')),
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, hour)
) STRICT, WITHOUT ROWID;

-- Historical grid cells (28 days, anchored at 2014-09-01T00:00Z) fetched per Tweet.
-- A cell is complete once a fetch reached its end: fetched_until >= cell + 28 days.
CREATE TABLE coverage (
    tweet_id      INTEGER NOT NULL REFERENCES tweets (tweet_id),
    cell          INTEGER NOT NULL,               -- start of the cell
    fetched_at    INTEGER NOT NULL,               -- when it was last fetched
    fetched_until INTEGER NOT NULL,               -- end of the window that fetch covered
    PRIMARY KEY (tweet_id, cell)
) STRICT, WITHOUT ROWID;

-- One row per cycle.
CREATE TABLE runs (
    run_id         INTEGER PRIMARY KEY,
    kinds          TEXT NOT NULL,                 -- comma-separated: totals,hourly,historical
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    status         TEXT NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'ok', 'partial', 'failed', 'interrupted')),
    requests       INTEGER NOT NULL DEFAULT 0,
    failed_batches INTEGER NOT NULL DEFAULT 0,
    rows_written   INTEGER NOT NULL DEFAULT 0,
    error          TEXT
) STRICT;

-- One row per batch (request to the API, with its retries).
CREATE TABLE requests (
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
    -- failed (after retries; planned again next run)
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'partial', 'refused', 'failed')),
    error       TEXT,
    rows        INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

-- Unique handles whose Tweets were queried with their token, per billing month (UTC, 'YYYY-MM').
CREATE TABLE handle_usage (
    month         TEXT NOT NULL,
    handle        TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    first_used_at INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    PRIMARY KEY (month, handle)
) STRICT, WITHOUT ROWID;

-- Latest known lifetime value per Tweet and metric. observed_at = when this value was first seen;
-- checked_at = when /totals last confirmed the Tweet.
CREATE VIEW latest_totals AS
SELECT t.tweet_id, w.owner, m.name AS metric, t.value, t.observed_at, w.totals_checked_at AS checked_at
FROM totals AS t
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id)
WHERE t.observed_at = (
    SELECT max(t2.observed_at) FROM totals AS t2
    WHERE t2.tweet_id = t.tweet_id AND t2.metric_id = t.metric_id
);

-- Hourly buckets with readable names. A missing hour inside fetched coverage means zero.
CREATE VIEW hourly AS
SELECT s.tweet_id, w.owner, m.name AS metric, s.hour,
       strftime('%Y-%m-%dT%H:00:00Z', s.hour, 'unixepoch') AS hour_utc, s.value
FROM series AS s
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id);

-- Daily sums of the hourly buckets (UTC days).
CREATE VIEW daily AS
SELECT s.tweet_id, w.owner, m.name AS metric,
       date(s.hour, 'unixepoch') AS day, sum(s.value) AS value
FROM series AS s
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id)
GROUP BY s.tweet_id, s.metric_id, day;
