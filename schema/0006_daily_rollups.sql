-- engagement-ingest schema, version 6: daily rollups, kept by the worker in the transaction of
-- every series write, so that daily and per-account questions read one row per day instead of
-- summing 24 hourly buckets per Tweet (at 200,000 Tweets, "daily impressions per account this
-- month" summed some 10^8 buckets through the old `daily` view).

-- Per Tweet, metric and UTC day: the sum of its stored hourly buckets. A row exists when the
-- day has a stored bucket, so, as in `series`, a missing day is not a zero unless coverage says so.
CREATE TABLE tweet_days (
    tweet_id  INTEGER NOT NULL REFERENCES tweets (tweet_id),
    metric_id INTEGER NOT NULL REFERENCES metrics (metric_id),
    day       INTEGER NOT NULL CHECK (day % 86400 = 0),   -- 00:00 UTC, Unix seconds
    value     INTEGER NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, day)
) STRICT, WITHOUT ROWID;

-- Per owner, metric and UTC day: the sum of `tweet_days` over the Tweets the owner has now
-- (`tweets.owner`, removed Tweets included, as the `daily` view groups them), and how many
-- Tweets have a row that day. A Tweet that changes owner moves its days with it (trigger below).
CREATE TABLE account_days (
    owner     TEXT NOT NULL,
    metric_id INTEGER NOT NULL REFERENCES metrics (metric_id),
    day       INTEGER NOT NULL CHECK (day % 86400 = 0),
    value     INTEGER NOT NULL,
    tweets    INTEGER NOT NULL CHECK (tweets >= 0),      -- a row at 0 is deleted at once
    -- Clustered by metric and day: "one metric, these days, every account" is one range.
    PRIMARY KEY (metric_id, day, owner)
) STRICT, WITHOUT ROWID;

-- Built from what is stored. total() and the cast, as in the views since version 5, so that a
-- count an earlier version stored cannot make the migration fail with "integer overflow".
INSERT INTO tweet_days (tweet_id, metric_id, day, value)
SELECT tweet_id, metric_id, hour - hour % 86400, CAST(total(value) AS INTEGER)
FROM series
GROUP BY tweet_id, metric_id, hour - hour % 86400;

INSERT INTO account_days (owner, metric_id, day, value, tweets)
SELECT w.owner, d.metric_id, d.day, CAST(total(d.value) AS INTEGER), count(*)
FROM tweet_days AS d JOIN tweets AS w USING (tweet_id)
WHERE w.owner IS NOT NULL
GROUP BY w.owner, d.metric_id, d.day;

-- A Tweet's days leave its old owner's rows and join the new owner's, in the statement that
-- changes the owner (the inventory changed it, or the API said the Tweet changed hands).
-- Additions saturate rather than overflow, like total().
CREATE TRIGGER tweets_owner_moves_rollups AFTER UPDATE OF owner ON tweets
WHEN old.owner IS NOT new.owner
BEGIN
    -- Rows this Tweet alone made go first; the others lose its share.
    DELETE FROM account_days
    WHERE owner = old.owner AND tweets = 1
      AND (metric_id, day) IN (SELECT metric_id, day FROM tweet_days WHERE tweet_id = new.tweet_id);
    UPDATE account_days SET
        value = CASE WHEN account_days.value BETWEEN -4e18 AND 4e18
                AND d.value BETWEEN -4e18 AND 4e18
                THEN account_days.value - d.value
                ELSE CAST(1.0 * account_days.value - d.value AS INTEGER) END,
        tweets = account_days.tweets - 1
    FROM (SELECT metric_id, day, value FROM tweet_days WHERE tweet_id = new.tweet_id) AS d
    WHERE account_days.owner = old.owner AND account_days.metric_id = d.metric_id
      AND account_days.day = d.day AND account_days.tweets > 1;
    INSERT INTO account_days (owner, metric_id, day, value, tweets)
    SELECT new.owner, metric_id, day, value, 1 FROM tweet_days
    WHERE tweet_id = new.tweet_id AND new.owner IS NOT NULL
    ON CONFLICT (metric_id, day, owner) DO UPDATE SET
        value = CASE WHEN value BETWEEN -4e18 AND 4e18 AND excluded.value BETWEEN -4e18 AND 4e18
                THEN value + excluded.value ELSE CAST(1.0 * value + excluded.value AS INTEGER) END,
        tweets = tweets + 1;
END;

-- Per-account figures read the listed owned Tweets (their owner and creation) from this index
-- alone, and find the removed ones (whose days they leave out) without reading every Tweet.
CREATE INDEX tweets_listed ON tweets (owner, created_at) WHERE removed_at IS NULL AND owner IS NOT NULL;
CREATE INDEX tweets_removed ON tweets (owner) WHERE removed_at IS NOT NULL;

-- Daily sums per Tweet, now read from the rollup: the same columns as before.
DROP VIEW daily;
CREATE VIEW daily AS
SELECT d.tweet_id, w.owner, m.name AS metric, date(d.day, 'unixepoch') AS day, d.value
FROM tweet_days AS d
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id);

-- Daily sums per account with readable names; `tweets`: how many of its Tweets have buckets
-- that day.
CREATE VIEW account_daily AS
SELECT a.owner, m.name AS metric, date(a.day, 'unixepoch') AS day, a.value, a.tweets
FROM account_days AS a
JOIN metrics AS m USING (metric_id);
