-- Sums that cannot overflow. SQLite's sum() fails the whole query with "integer overflow" when
-- a total passes 2^63; one bad count stored by an earlier version made `daily`, `report` and
-- `query top` fail until it was replaced. total() adds in floating point and never fails; the
-- cast keeps the column an integer (exact up to 2^53, far past any real sum, since every count
-- taken from an answer is within 10^12; a sum past 2^63 reads as 2^63 - 1).
DROP VIEW daily;
CREATE VIEW daily AS
SELECT s.tweet_id, w.owner, m.name AS metric,
       date(s.hour, 'unixepoch') AS day, CAST(total(s.value) AS INTEGER) AS value
FROM series AS s
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id)
GROUP BY s.tweet_id, s.metric_id, day;
