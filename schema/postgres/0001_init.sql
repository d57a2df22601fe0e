-- engagement-ingest's PostgreSQL schema: SQLite's schema/0001..0006 (version 6) in one file, with
-- the same tables, columns, keys, CHECKs, indexes, views and trigger (see schema/postgres/README.md).
-- Applied by the binary in one transaction and recorded in schema_version (created by the binary).
-- Times are BIGINT Unix seconds, UTC, as in SQLite. Types: INTEGER -> BIGINT, TEXT -> TEXT
-- COLLATE "C" (byte order, as SQLite's BINARY: ORDER BY and lower() agree on both backends).

-- SQLite's functions that the store's SQL and the documented queries use, with SQLite's meaning,
-- so that one statement's text runs on both backends.

-- total(x): the sum as a float, 0.0 over no rows, NULLs skipped. Defined on double precision with
-- the built-in float8pl (a bigint argument is cast to it implicitly, as SQLite's total() converts
-- each value): an SQL-language step function was 35 times slower over 3 million rows.
CREATE AGGREGATE public.total(double precision) (
    SFUNC = float8pl, STYPE = double precision, INITCOND = '0',
    COMBINEFUNC = float8pl, PARALLEL = SAFE
);

-- total(condition): SQLite counts a true condition as 1 (a boolean is an integer there).
CREATE FUNCTION public.total_step(double precision, boolean) RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    AS $$BEGIN RETURN $1 + CASE WHEN $2 THEN 1 ELSE 0 END; END$$;
CREATE AGGREGATE public.total(boolean) (
    SFUNC = public.total_step, STYPE = double precision, INITCOND = '0',
    COMBINEFUNC = float8pl, PARALLEL = SAFE
);

-- SQLite's multi-argument min() and max(): NULL when any argument is NULL (least() and
-- greatest() skip NULLs). Plain SQL expressions, so the planner inlines them.
CREATE FUNCTION public.min(bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 IS NULL OR $2 IS NULL THEN NULL ELSE least($1, $2) END';
CREATE FUNCTION public.min(bigint, bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN NULL ELSE least($1, $2, $3) END';
CREATE FUNCTION public.min(bigint, bigint, bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL OR $4 IS NULL THEN NULL
        ELSE least($1, $2, $3, $4) END';
CREATE FUNCTION public.max(bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 IS NULL OR $2 IS NULL THEN NULL ELSE greatest($1, $2) END';
CREATE FUNCTION public.max(bigint, bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN NULL ELSE greatest($1, $2, $3) END';
CREATE FUNCTION public.max(bigint, bigint, bigint, bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL OR $4 IS NULL THEN NULL
        ELSE greatest($1, $2, $3, $4) END';

-- SQLite's instr(haystack, needle): the 1-based position of needle, 0 when absent.
CREATE FUNCTION public.instr(text, text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT strpos($1, $2)::bigint';

-- SQLite's unixepoch() (no arguments): now, in integer Unix seconds (the transaction's start).
CREATE FUNCTION public.unixepoch() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS 'SELECT floor(extract(epoch FROM now()))::bigint';

-- SQLite's date and time functions, for the documented queries: strftime(format, time,
-- modifiers...), date(time, modifiers...) and datetime(time, modifiers...), UTC. A time is 'now',
-- a Unix time with the 'unixepoch' modifier, or text as 'YYYY-MM-DD[ HH:MM[:SS]]'; modifiers
-- are 'start of day', 'start of month', 'start of year' and '+N' or '-N' 'days', 'hours',
-- 'minutes', 'seconds', 'months' or 'years'; formats %Y %m %d %H %M %S %s %j %w %f %%. Anything
-- else gives NULL, as SQLite gives NULL for what it cannot read. ('localtime' and 'utc' are not
-- supported: a PostgreSQL server's zone need not be the reader's.)
CREATE FUNCTION public.sqlite_moment(t text, mods text[]) RETURNS timestamp
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    at timestamp;
    m text;
    i int := 1;
    parts text[];
BEGIN
    IF t IS NULL THEN
        RETURN NULL;
    ELSIF lower(t) = 'now' THEN
        at := date_trunc('milliseconds', statement_timestamp() AT TIME ZONE 'UTC');
    ELSIF coalesce(lower(mods[1]), '') = 'unixepoch' THEN
        IF t !~ '^\s*[-+]?[0-9]+(\.[0-9]*)?\s*$' THEN
            RETURN NULL;
        END IF;
        at := to_timestamp(t::double precision) AT TIME ZONE 'UTC';
        i := 2;
    ELSIF t ~ '^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$' THEN
        BEGIN
            at := replace(t, 'T', ' ')::timestamp;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END;
    ELSE
        RETURN NULL;
    END IF;
    WHILE i <= coalesce(array_length(mods, 1), 0) LOOP
        m := lower(btrim(mods[i]));
        IF m = 'start of day' THEN
            at := date_trunc('day', at);
        ELSIF m = 'start of month' THEN
            at := date_trunc('month', at);
        ELSIF m = 'start of year' THEN
            at := date_trunc('year', at);
        ELSE
            parts := regexp_match(m, '^([-+]?[0-9]+(\.[0-9]+)?)\s+(day|hour|minute|second|month|year)s?$');
            IF parts IS NULL THEN
                RETURN NULL;
            END IF;
            at := at + (parts[1] || ' ' || parts[3])::interval;
        END IF;
        i := i + 1;
    END LOOP;
    RETURN at;
END
$$;

CREATE FUNCTION public.sqlite_format(fmt text, at timestamp) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    out text := '';
    c text;
    i int := 1;
BEGIN
    IF fmt IS NULL OR at IS NULL THEN
        RETURN NULL;
    END IF;
    WHILE i <= length(fmt) LOOP
        c := substr(fmt, i, 1);
        IF c <> '%' THEN
            out := out || c;
        ELSE
            i := i + 1;
            c := substr(fmt, i, 1);
            out := out || CASE c
                WHEN 'Y' THEN to_char(at, 'YYYY')
                WHEN 'm' THEN to_char(at, 'MM')
                WHEN 'd' THEN to_char(at, 'DD')
                WHEN 'H' THEN to_char(at, 'HH24')
                WHEN 'M' THEN to_char(at, 'MI')
                WHEN 'S' THEN to_char(at, 'SS')
                WHEN 'f' THEN to_char(at, 'SS.MS')
                WHEN 'j' THEN to_char(at, 'DDD')
                WHEN 'w' THEN extract(dow FROM at)::int::text
                WHEN 's' THEN floor(extract(epoch FROM at))::bigint::text
                WHEN '%' THEN '%'
                END;
            IF out IS NULL THEN
                RETURN NULL;
            END IF;
        END IF;
        i := i + 1;
    END LOOP;
    RETURN out;
END
$$;

CREATE FUNCTION public.strftime(fmt text, t text, VARIADIC mods text[] DEFAULT '{}') RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS 'SELECT public.sqlite_format($1, public.sqlite_moment($2, $3))';
CREATE FUNCTION public.strftime(fmt text, t bigint, VARIADIC mods text[] DEFAULT '{}') RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS 'SELECT public.sqlite_format($1, public.sqlite_moment($2::text, $3))';
CREATE FUNCTION public.datetime(t text, VARIADIC mods text[] DEFAULT '{}') RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$SELECT public.sqlite_format('%Y-%m-%d %H:%M:%S', public.sqlite_moment($1, $2))$$;
CREATE FUNCTION public.datetime(t bigint, VARIADIC mods text[] DEFAULT '{}') RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$SELECT public.sqlite_format('%Y-%m-%d %H:%M:%S', public.sqlite_moment($1::text, $2))$$;
-- date() with one argument stays PostgreSQL's cast to a date (which prints the same).
CREATE FUNCTION public.date(t text, VARIADIC mods text[]) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$SELECT public.sqlite_format('%Y-%m-%d', public.sqlite_moment($1, $2))$$;
CREATE FUNCTION public.date(t bigint, VARIADIC mods text[]) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$SELECT public.sqlite_format('%Y-%m-%d', public.sqlite_moment($1::text, $2))$$;

-- CAST(x AS INTEGER) of a float in SQLite: truncated toward zero, saturating at the bounds of a
-- 64-bit integer where PostgreSQL's cast would fail. Used by the trigger below, as 0006's is.
CREATE FUNCTION public.saturating_bigint(double precision) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT CASE WHEN $1 >= 9223372036854775807::double precision THEN 9223372036854775807
        WHEN $1 <= -9223372036854775808::double precision THEN -9223372036854775808
        ELSE trunc($1)::bigint END';

CREATE TABLE metrics (
    metric_id BIGINT PRIMARY KEY,
    name      TEXT COLLATE "C" NOT NULL UNIQUE
);

INSERT INTO metrics (metric_id, name) VALUES
    (1, 'impressions'), (2, 'engagements'), (3, 'favorites'), (4, 'retweets'),
    (5, 'quote_tweets'), (6, 'replies'), (7, 'video_views'), (8, 'media_views'),
    (9, 'media_engagements'), (10, 'url_clicks'), (11, 'hashtag_clicks'),
    (12, 'detail_expands'), (13, 'permalink_clicks'), (14, 'app_install_attempts'),
    (15, 'app_opens'), (16, 'email_tweet'), (17, 'user_follows'), (18, 'user_profile_clicks');

CREATE TABLE tweets (
    tweet_id            BIGINT PRIMARY KEY,
    owner               TEXT COLLATE "C",
    listed_owner        TEXT COLLATE "C",
    created_at          BIGINT NOT NULL,
    status              TEXT COLLATE "C" NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'unavailable', 'protected', 'forbidden')),
    status_detail       TEXT COLLATE "C",
    status_changed_at   BIGINT,
    status_checked_at   BIGINT,
    first_seen_at       BIGINT NOT NULL,
    removed_at          BIGINT,
    totals_checked_at   BIGINT,
    unsupported_metrics BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tweets_owner ON tweets (owner, created_at);
CREATE INDEX tweets_listed ON tweets (owner, created_at) WHERE removed_at IS NULL AND owner IS NOT NULL;
CREATE INDEX tweets_removed ON tweets (owner) WHERE removed_at IS NOT NULL;

CREATE TABLE totals (
    tweet_id    BIGINT NOT NULL REFERENCES tweets (tweet_id),
    metric_id   BIGINT NOT NULL REFERENCES metrics (metric_id),
    observed_at BIGINT NOT NULL,
    value       BIGINT NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, observed_at)
);

CREATE TABLE coverage (
    tweet_id      BIGINT NOT NULL REFERENCES tweets (tweet_id),
    cell          BIGINT NOT NULL,
    fetched_at    BIGINT NOT NULL,
    fetched_until BIGINT NOT NULL,
    PRIMARY KEY (tweet_id, cell)
);

CREATE TABLE recent_coverage (
    tweet_id      BIGINT PRIMARY KEY REFERENCES tweets (tweet_id),
    fetched_from  BIGINT NOT NULL,
    fetched_until BIGINT NOT NULL,
    fetched_at    BIGINT NOT NULL
);

CREATE TABLE runs (
    run_id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kinds          TEXT COLLATE "C" NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    status         TEXT COLLATE "C" NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'ok', 'partial', 'failed', 'interrupted')),
    requests       BIGINT NOT NULL DEFAULT 0,
    failed_batches BIGINT NOT NULL DEFAULT 0,
    rows_written   BIGINT NOT NULL DEFAULT 0,
    error          TEXT COLLATE "C",
    catch_up       TEXT COLLATE "C" NOT NULL DEFAULT '',
    planned        BIGINT,
    not_attempted  BIGINT NOT NULL DEFAULT 0,
    failed_kinds   TEXT COLLATE "C" NOT NULL DEFAULT ''
);

CREATE TABLE requests (
    run_id      BIGINT NOT NULL REFERENCES runs (run_id),
    seq         BIGINT NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    endpoint    TEXT COLLATE "C" NOT NULL,
    credential  TEXT COLLATE "C" NOT NULL,
    tweet_count BIGINT NOT NULL,
    attempts    BIGINT NOT NULL,
    http_status BIGINT,
    outcome     TEXT COLLATE "C" NOT NULL
                CHECK (outcome IN ('ok', 'partial', 'refused', 'failed', 'unauthorized')),
    error       TEXT COLLATE "C",
    rows        BIGINT NOT NULL DEFAULT 0,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE handle_usage (
    month         TEXT COLLATE "C" NOT NULL,
    handle        TEXT COLLATE "C" NOT NULL,
    requests      BIGINT NOT NULL,
    first_used_at BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    PRIMARY KEY (month, handle)
);

CREATE TABLE series (
    tweet_id   BIGINT NOT NULL REFERENCES tweets (tweet_id),
    metric_id  BIGINT NOT NULL REFERENCES metrics (metric_id),
    hour       BIGINT NOT NULL CHECK (hour % 3600 = 0),
    value      BIGINT NOT NULL,
    source     BIGINT NOT NULL CHECK (source IN (0, 1)),
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, hour)
);

CREATE TABLE accounts (
    handle     TEXT COLLATE "C" PRIMARY KEY,
    state      TEXT COLLATE "C" NOT NULL CHECK (state IN ('ok', 'refused', 'paused')),
    detail     TEXT COLLATE "C",
    since      BIGINT NOT NULL,
    checked_at BIGINT NOT NULL
);

CREATE TABLE tweet_days (
    tweet_id  BIGINT NOT NULL REFERENCES tweets (tweet_id),
    metric_id BIGINT NOT NULL REFERENCES metrics (metric_id),
    day       BIGINT NOT NULL CHECK (day % 86400 = 0),
    value     BIGINT NOT NULL,
    PRIMARY KEY (tweet_id, metric_id, day)
);

CREATE TABLE account_days (
    owner     TEXT COLLATE "C" NOT NULL,
    metric_id BIGINT NOT NULL REFERENCES metrics (metric_id),
    day       BIGINT NOT NULL CHECK (day % 86400 = 0),
    value     BIGINT NOT NULL,
    tweets    BIGINT NOT NULL CHECK (tweets >= 0),
    PRIMARY KEY (metric_id, day, owner)
);

-- A Tweet's days leave its old owner's rows and join the new owner's, in the statement that
-- changes the owner: SQLite's trigger of 0006, statement for statement and in the same order
-- (rows this Tweet alone made go first, then the others lose its share, then the new owner gains
-- it: the other order would delete rows the update just brought down to one Tweet). Additions
-- saturate rather than overflow, as there. A row-level AFTER trigger, as SQLite's: PostgreSQL runs
-- it at the end of the UPDATE statement instead of after each row, which changes nothing here
-- (it reads tweet_days and account_days only, never tweets).
CREATE FUNCTION tweets_owner_moves_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM account_days
    WHERE owner = OLD.owner AND tweets = 1
      AND (metric_id, day) IN (SELECT metric_id, day FROM tweet_days WHERE tweet_id = NEW.tweet_id);
    UPDATE account_days SET
        value = CASE WHEN account_days.value BETWEEN -4000000000000000000 AND 4000000000000000000
                AND d.value BETWEEN -4000000000000000000 AND 4000000000000000000
                THEN account_days.value - d.value
                ELSE saturating_bigint(account_days.value::double precision - d.value) END,
        tweets = account_days.tweets - 1
    FROM (SELECT metric_id, day, value FROM tweet_days WHERE tweet_id = NEW.tweet_id) AS d
    WHERE account_days.owner = OLD.owner AND account_days.metric_id = d.metric_id
      AND account_days.day = d.day AND account_days.tweets > 1;
    INSERT INTO account_days AS a (owner, metric_id, day, value, tweets)
    SELECT NEW.owner, metric_id, day, value, 1 FROM tweet_days
    WHERE tweet_id = NEW.tweet_id AND NEW.owner IS NOT NULL
    ON CONFLICT (metric_id, day, owner) DO UPDATE SET
        value = CASE WHEN a.value BETWEEN -4000000000000000000 AND 4000000000000000000
                AND excluded.value BETWEEN -4000000000000000000 AND 4000000000000000000
                THEN a.value + excluded.value
                ELSE saturating_bigint(a.value::double precision + excluded.value) END,
        tweets = a.tweets + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER tweets_owner_moves_rollups AFTER UPDATE OF owner ON tweets
FOR EACH ROW WHEN (OLD.owner IS DISTINCT FROM NEW.owner)
EXECUTE FUNCTION tweets_owner_moves_rollups();

-- The views: SQLite's, with to_char() for strftime() and date() (the same text: hours as
-- 'YYYY-MM-DDTHH:00:00Z', days as 'YYYY-MM-DD', UTC).
CREATE VIEW latest_totals AS
SELECT t.tweet_id, w.owner, m.name AS metric, t.value, t.observed_at, w.totals_checked_at AS checked_at
FROM totals AS t
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id)
WHERE t.observed_at = (
    SELECT max(t2.observed_at) FROM totals AS t2
    WHERE t2.tweet_id = t.tweet_id AND t2.metric_id = t.metric_id
);

CREATE VIEW hourly AS
SELECT s.tweet_id, w.owner, m.name AS metric, s.hour,
       to_char(to_timestamp(s.hour) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":00:00Z"') AS hour_utc,
       s.value
FROM series AS s
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id);

CREATE VIEW daily AS
SELECT d.tweet_id, w.owner, m.name AS metric,
       to_char(to_timestamp(d.day) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, d.value
FROM tweet_days AS d
JOIN metrics AS m USING (metric_id)
JOIN tweets AS w USING (tweet_id);

CREATE VIEW account_daily AS
SELECT a.owner, m.name AS metric,
       to_char(to_timestamp(a.day) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, a.value, a.tweets
FROM account_days AS a
JOIN metrics AS m USING (metric_id);
