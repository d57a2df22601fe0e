-- Hours /28hr answers covered per Tweet: the latest window, merged with the span before it when
-- the two touch or overlap (polled every hour, a Tweet's span grows without gaps). Inside it (and
-- inside a complete /historical cell), an hour missing from `series` is a zero, not a hole.
CREATE TABLE recent_coverage (
    tweet_id      INTEGER PRIMARY KEY REFERENCES tweets (tweet_id),
    fetched_from  INTEGER NOT NULL,               -- start of the covered span (hour)
    fetched_until INTEGER NOT NULL,               -- end of the covered span (exclusive)
    fetched_at    INTEGER NOT NULL                -- when /28hr last answered for it
) STRICT;
