-- engagement-ingest schema, version 3: series.source as an integer (0 = /28hr, 1 = /historical).
-- As text it took 4 or 10 of the 45 bytes a stored bucket cost; the integers 0 and 1 take none
-- (SQLite stores them in the record header). SQLite cannot change a column's type in place, so
-- the table is rebuilt; the views that read it are dropped first and created again unchanged.

CREATE TABLE series_v2 (
    tweet_id   INTEGER NOT NULL REFERENCES tweets (tweet_id),
    metric_id  INTEGER NOT NULL REFERENCES metrics (metric_id),
    hour       INTEGER NOT NULL CHECK (hour % 3600 = 0),
    value      INTEGER NOT NULL,
    source     INTEGER NOT NULL CHECK (source IN (0, 1)),   -- 0 = /28hr, 1 = /historical
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, hour)
) STRICT, WITHOUT ROWID;

INSERT INTO series_v2 (tweet_id, metric_id, hour, value, source, fetched_at)
SELECT tweet_id, metric_id, hour, value, CASE source WHEN '28hr' THEN 0 ELSE 1 END, fetched_at
FROM series;

DROP VIEW hourly;
DROP VIEW daily;
DROP TABLE series;
ALTER TABLE series_v2 RENAME TO series;

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
