#!/usr/bin/env python3
"""A plain Python client of the Engagement API: the script a user would write instead of the
worker, used by `tests/e2e_bench.sh compare` as the baseline of the CPU comparison. A measuring
tool, not shipped.

It does one full cycle, the same requests as the worker's first cycle into a fresh database:

- /totals: public Tweets and owned Tweets of 90 days or more with the app's bearer token (five
  public metrics, <=250 per request, owners mixed); younger owned Tweets with their owner's
  OAuth 1.0a token (seven metrics, <=250 per request, one owner each);
- /28hr: owned Tweets younger than `hourly.max_age`, <=25 per request, one owner each;
- /historical: owned Tweets from creation to `historical.max_age`, on the 28-day grid anchored
  at 2014-09-01T00:00Z, <=25 per request, one owner and one grid cell each.

Batches are split as the worker splits them (Tweet IDs sorted, the fewest requests, sizes that
differ by at most one), so both send the same requests; the script compares both `requests`
ledgers. Answers are read the way a competent data engineer would: `requests` (a Session per
credential, gzip accepted, the body bounded by `api.max_answer_mib` once inflated), `json`,
shape and value checks (a Tweet or metric the answer does not name is not stored, never taken
as zero; an answer naming a Tweet not asked for, or a count that is not an integer up to 10^12,
or a negative lifetime total, stores nothing; unlike the worker it does not look for repeated
keys, which `json` resolves to the last), and `sqlite3` with `executemany`, one transaction per
batch. Storage as the worker's: sparse hourly rows (zeros not stored; the hours an answer gives
replace the stored buckets over them), change-only totals (a row when the value differs from the
latest one), the worker's schema (`--schema`, from `sqlite3 worker.sqlite .schema`).

Usage:
    python3 tests/plain_client.py --config worker.toml --schema schema.sql --db plain.sqlite \
        [--now UNIX_SECONDS]

`--config` is the worker's config (the one `engagement-ingest sim --export-config` writes);
`--now` plans as of that time (the worker's run start, so both plan the same windows).
Needs Python 3.11+ and `pip install requests requests-oauthlib`. Prints one JSON line:
requests, buckets received, rows stored.
"""

import argparse
import csv
import json
import re
import sqlite3
import sys
import time
from datetime import datetime, timezone

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("plain_client: needs Python 3.11 or later (tomllib)")
try:
    import requests
    from requests_oauthlib import OAuth1
except ImportError:
    sys.exit("plain_client: pip install requests requests-oauthlib")

HOUR = 3600
DAY = 86400
CELL = 28 * DAY
GRID_EPOCH = 1_409_529_600  # 2014-09-01T00:00Z
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657
IMPRESSIONS_MAX_AGE = 90 * DAY
MAX_COUNT = 10**12

METRIC_IDS = {
    name: i + 1
    for i, name in enumerate(
        "impressions engagements favorites retweets quote_tweets replies video_views "
        "media_views media_engagements url_clicks hashtag_clicks detail_expands "
        "permalink_clicks app_install_attempts app_opens email_tweet user_follows "
        "user_profile_clicks".split()
    )
}
PUBLIC = ["favorites", "retweets", "quote_tweets", "replies", "video_views"]
TOTALS_USER = ["impressions", "engagements"] + PUBLIC
SERIES_DEFAULT = [m for m in METRIC_IDS if m != "quote_tweets"]
SOURCE = {"28hr": 0, "historical": 1}


class ShapeError(Exception):
    """An answer that is not what the API answers: nothing of it is stored."""


def duration(value, default):
    """Seconds of a config duration: a number of seconds or humantime text ("3d", "90 days")."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return int(value)
    units = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": HOUR, "hour": HOUR, "hours": HOUR,
             "d": DAY, "day": DAY, "days": DAY, "w": 7 * DAY, "week": 7 * DAY,
             "weeks": 7 * DAY}
    total = 0
    for number, unit in re.findall(r"(\d+)\s*([a-z]+)", value):
        if unit not in units:
            raise ValueError(f"unknown duration unit in {value!r}")
        total += int(number) * units[unit]
    return total if total or value.strip() in ("0", "") else int(value)


def created_at(tweet_id):
    return ((tweet_id >> 22) + SNOWFLAKE_EPOCH_MS) // 1000


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def split(ids, size):
    """The fewest batches of at most `size`, sizes differing by at most one (as the worker)."""
    ids = sorted(set(ids))
    if not ids:
        return []
    n = -(-len(ids) // size)
    base, extra = divmod(len(ids), n)
    out, at = [], 0
    for i in range(n):
        k = base + (1 if i < extra else 0)
        out.append(ids[at:at + k])
        at += k
    return out


def plan(cfg, inventory, now):
    """[(kind, endpoint, credential, tweet_ids, metrics, window or None, cell or None)]."""
    accounts = {a["handle"] for a in cfg.get("accounts", []) if a.get("enabled", True)}
    hourly = cfg.get("hourly", {})
    hist = cfg.get("historical", {})
    hourly_age = duration(hourly.get("max_age"), 3 * DAY)
    hourly_metrics = hourly.get("metrics") or SERIES_DEFAULT
    hist_age = duration(hist.get("max_age"), 90 * DAY)
    hist_metrics = hist.get("metrics") or SERIES_DEFAULT
    lookback = duration(hist.get("lookback"), 365 * DAY)
    last_hour = now - now % HOUR
    served_from = None
    if lookback:
        served_from = (now - lookback) - (now - lookback) % HOUR + HOUR
    floor = max(GRID_EPOCH, served_from or GRID_EPOCH)

    jobs = []
    owned, bearer, recent, cells = {}, [], {}, {}
    for tid, owner in inventory:
        age = now - created_at(tid)
        if owner in accounts and age < IMPRESSIONS_MAX_AGE:
            owned.setdefault(owner, []).append(tid)
        else:
            bearer.append(tid)
        if owner not in accounts:
            continue
        if age < hourly_age:
            recent.setdefault(owner, []).append(tid)
        born = max(created_at(tid), GRID_EPOCH, floor)
        life_end = min(created_at(tid) + hist_age, last_hour)
        cell = GRID_EPOCH + (born - GRID_EPOCH) // CELL * CELL
        while born < life_end and cell < life_end:
            cells.setdefault((-cell, owner), []).append(tid)
            cell += CELL
    for owner in sorted(owned):
        for ids in split(owned[owner], 250):
            jobs.append(("totals", "totals", owner, ids, TOTALS_USER, None, None))
    for ids in split(bearer, 250):
        jobs.append(("totals", "totals", "bearer", ids, PUBLIC, None, None))
    for owner in sorted(recent):
        for ids in split(recent[owner], 25):
            jobs.append(("hourly", "28hr", owner, ids, hourly_metrics, None, None))
    for neg_cell, owner in sorted(cells):
        cell = -neg_cell
        start = max(cell, served_from) if served_from and served_from > cell else cell
        end = min(cell + CELL, last_hour)
        for ids in split(cells[(neg_cell, owner)], 25):
            jobs.append(("historical", "historical", owner, ids, hist_metrics, (start, end),
                         cell))
    return jobs


def count(value, low=-MAX_COUNT):
    """A count as the API writes it (a string of digits, or a bare number), in [low, 10^12]:
    lifetime totals are never negative, an hourly bucket may be (un-likes within the hour)."""
    if isinstance(value, bool):
        raise ShapeError("a boolean where a count belongs")
    if isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if not digits.isascii() or not digits.isdigit() or len(digits) > 13:
            raise ShapeError(f"not a count: {value[:40]!r}")
        value = int(value)
    if not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise ShapeError(f"count out of range: {str(value)[:40]}")
    return value


def grouping(answer, name):
    group = answer.get(name)
    if group is None:
        return {}
    if not isinstance(group, dict):
        raise ShapeError(f"{name} is not an object")
    return group


def read_totals(answer, ids, metrics):
    """[(tweet_id, metric_id, value)] of the Tweets and metrics asked for and named."""
    asked, wanted, rows = set(ids), set(metrics), []
    for key, by_metric in grouping(answer, "by_tweet").items():
        if not key.isdigit() or int(key) not in asked or not isinstance(by_metric, dict):
            raise ShapeError(f"Tweet {key[:40]!r} was not asked for")
        for metric, value in by_metric.items():
            if metric in wanted:
                rows.append((int(key), METRIC_IDS[metric], count(value, 0)))
    return rows


HOUR_KEYS = {f"{h:02}": h * HOUR for h in range(24)} | {str(h): h * HOUR for h in range(10)}


def day_start(day):
    try:
        return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())
    except (TypeError, ValueError) as e:
        raise ShapeError(f"not a day: {str(day)[:40]!r}") from e


def read_series(answer, ids, metrics, start, end):
    """({(tweet, metric): (first_hour, last_hour, buckets)}, [(tweet, metric, hour, value)]
    non-zero, received bucket count) over [start, end)."""
    asked, wanted = set(ids), set(metrics)
    spans, rows, received, midnights = {}, [], 0, {}
    for key, by_metric in grouping(answer, "by_hour").items():
        if not key.isdigit() or int(key) not in asked or not isinstance(by_metric, dict):
            raise ShapeError(f"Tweet {key[:40]!r} was not asked for")
        tid = int(key)
        for metric, by_day in by_metric.items():
            if metric not in wanted or not isinstance(by_day, dict):
                continue
            mid = METRIC_IDS[metric]
            first = last = None
            n = 0
            for day, by_hour in by_day.items():
                midnight = midnights.get(day)
                if midnight is None:
                    midnight = midnights[day] = day_start(day)
                if not isinstance(by_hour, dict):
                    raise ShapeError("a day that is not an object")
                for hh, value in by_hour.items():
                    offset = HOUR_KEYS.get(hh)
                    if offset is None:
                        raise ShapeError(f"not an hour: {hh[:40]!r}")
                    hour = midnight + offset
                    # The usual leaf, a short string of ASCII digits, without a call.
                    if type(value) is str and len(value) < 13 and value.isascii() \
                            and value.isdigit():
                        v = int(value)
                    else:
                        v = count(value)
                    n += 1
                    if first is None or hour < first:
                        first = hour
                    if last is None or hour > last:
                        last = hour
                    if v and start <= hour < end:
                        rows.append((tid, mid, hour, v))
            received += n
            if n:
                spans[(tid, mid)] = (first, last, n)
    return spans, rows, received


class Client:
    def __init__(self, cfg):
        api = cfg.get("api", {})
        self.base = api["base_url"].rstrip("/")
        self.token_url = api.get("token_url") or self.base + "/oauth2/token"
        self.limit = int(api.get("max_answer_mib", 16)) << 20
        self.timeout = duration(api.get("timeout"), 30)
        app = cfg["app"]
        self.app = app
        self.tokens = {a["handle"]: a for a in cfg.get("accounts", [])}
        self.sessions = {}

    def session(self, credential):
        s = self.sessions.get(credential)
        if s is None:
            s = requests.Session()
            s.headers["Accept-Encoding"] = "gzip"
            if credential == "bearer":
                s.headers["Authorization"] = "Bearer " + self.bearer()
            else:
                a = self.tokens[credential]
                s.auth = OAuth1(self.app["consumer_key"], self.app["consumer_secret"],
                                a["access_token"], a["access_token_secret"])
            self.sessions[credential] = s
        return s

    def bearer(self):
        if self.app.get("bearer_token"):
            return self.app["bearer_token"]
        r = requests.post(self.token_url, data={"grant_type": "client_credentials"},
                          auth=(self.app["consumer_key"], self.app["consumer_secret"]),
                          timeout=self.timeout)
        r.raise_for_status()
        token = r.json().get("access_token")
        if not isinstance(token, str) or not token.isprintable():
            raise ShapeError("the token endpoint answered no token")
        return token

    def post(self, credential, endpoint, body):
        r = self.session(credential).post(
            f"{self.base}/insights/engagement/{endpoint}", data=json.dumps(body),
            headers={"Content-Type": "application/json"}, timeout=self.timeout,
            stream=True, allow_redirects=False)
        with r:
            raw = r.raw.read(self.limit + 1, decode_content=True)
        if len(raw) > self.limit:
            raise ShapeError(f"answer over {self.limit >> 20} MiB")
        if r.status_code != 200:
            return r.status_code, None
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ShapeError("the answer is not an object")
        return r.status_code, answer


def latest_totals(db, ids):
    marks = ",".join("?" * len(ids))
    latest = {}
    for tid, mid, value in db.execute(
            f"SELECT tweet_id, metric_id, value FROM totals WHERE tweet_id IN ({marks}) "
            "ORDER BY observed_at", ids):
        latest[(tid, mid)] = value
    return latest


def run(args):
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    now = args.now or int(time.time())
    inv_path = cfg.get("inventory", {}).get("path", "tweets.csv")
    with open(inv_path, newline="") as f:
        inventory = [(int(r["tweet_id"]), r["owner"] or None) for r in csv.DictReader(f)]

    db = sqlite3.connect(args.db, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    with open(args.schema) as f:
        db.executescript(f.read())
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at) "
        "VALUES (?, ?, ?, ?, ?)", ((t, o, o, created_at(t), now) for t, o in inventory))
    run_id = db.execute("INSERT INTO runs (kinds, started_at) VALUES (?, ?)",
                        ("totals,hourly,historical", now)).lastrowid
    db.execute("COMMIT")

    client = Client(cfg)
    stats = {"requests": 0, "failed": 0, "buckets_received": 0, "totals_received": 0,
             "series_rows": 0, "totals_rows": 0}
    for seq, (kind, endpoint, cred, ids, metrics, window, cell) in enumerate(
            plan(cfg, inventory, now)):
        body = {"tweet_ids": [str(t) for t in ids], "engagement_types": metrics}
        if kind == "totals":
            body["groupings"] = {"by_tweet": {"group_by": ["tweet.id", "engagement.type"]}}
        else:
            body["groupings"] = {"by_hour": {"group_by": [
                "tweet.id", "engagement.type", "engagement.day", "engagement.hour"]}}
        if window:
            body["start"], body["end"] = iso(window[0]), iso(window[1])
        started = time.time()
        stats["requests"] += 1
        rows, outcome = 0, "ok"
        try:
            status, answer = client.post(cred, endpoint, body)
            if answer is None:
                raise ShapeError(f"HTTP {status}")
            fetched_at = int(time.time())
            db.execute("BEGIN")
            if kind == "totals":
                values = read_totals(answer, ids, metrics)
                stats["totals_received"] += len(values)
                latest = latest_totals(db, ids)
                new = [(t, m, fetched_at, v) for t, m, v in values if latest.get((t, m)) != v]
                db.executemany("INSERT INTO totals (tweet_id, metric_id, observed_at, value) "
                               "VALUES (?, ?, ?, ?)", new)
                named = sorted({t for t, _, _ in values})
                db.executemany("UPDATE tweets SET totals_checked_at = ? WHERE tweet_id = ?",
                               ((fetched_at, t) for t in named))
                rows = len(new)
                stats["totals_rows"] += rows
            else:
                if window:
                    start, end = window
                else:
                    start = (answer.get("start") or "")[:19]
                    end = (answer.get("end") or "")[:19]
                    try:
                        start = int(datetime.fromisoformat(start)
                                    .replace(tzinfo=timezone.utc).timestamp())
                        end = int(datetime.fromisoformat(end)
                                  .replace(tzinfo=timezone.utc).timestamp())
                    except ValueError as e:
                        raise ShapeError("/28hr answered no window") from e
                    start -= start % HOUR
                    end += -end % HOUR
                spans, values, received = read_series(answer, ids, metrics, start, end)
                stats["buckets_received"] += received
                # Each (Tweet, metric) named with contiguous buckets replaces its stored
                # buckets over those hours.
                clear = [(t, m, max(first, start), min(last + HOUR, end))
                         for (t, m), (first, last, n) in spans.items()
                         if (last - first) // HOUR + 1 == n]
                ok = {(t, m): (a, b) for t, m, a, b in clear}
                db.executemany("DELETE FROM series WHERE tweet_id = ? AND metric_id = ? "
                               "AND hour >= ? AND hour < ?", clear)
                keep = [(t, m, h, v, SOURCE[endpoint], fetched_at) for t, m, h, v in values
                        if (t, m) in ok and ok[(t, m)][0] <= h < ok[(t, m)][1]]
                db.executemany("INSERT INTO series (tweet_id, metric_id, hour, value, source, "
                               "fetched_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                               "value = excluded.value, source = excluded.source, "
                               "fetched_at = excluded.fetched_at", keep)
                if cell is not None:
                    full = {t for (t, m), (a, b) in ok.items() if a <= start and b >= end}
                    db.executemany("INSERT OR REPLACE INTO coverage (tweet_id, cell, "
                                   "fetched_at, fetched_until) VALUES (?, ?, ?, ?)",
                                   ((t, cell, fetched_at, end) for t in sorted(full)))
                rows = len(keep)
                stats["series_rows"] += rows
            named = answer.get("unavailable_tweet_ids") or []
            if named:
                outcome = "partial"
            db.execute("INSERT INTO requests (run_id, seq, kind, endpoint, credential, "
                       "tweet_count, attempts, http_status, outcome, rows, started_at, "
                       "duration_ms) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                       (run_id, seq + 1, kind, endpoint, cred, len(ids), status, outcome,
                        rows, int(started), int((time.time() - started) * 1000)))
            db.execute("COMMIT")
        except (ShapeError, ValueError, requests.RequestException) as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            stats["failed"] += 1
            print(f"plain_client: {endpoint} {cred} batch {seq + 1}: {str(e)[:200]}",
                  file=sys.stderr)
    db.execute("UPDATE runs SET finished_at = ?, status = ?, requests = ?, rows_written = ? "
               "WHERE run_id = ?", (int(time.time()), "ok" if not stats["failed"] else
                                    "partial", stats["requests"],
                                    stats["series_rows"] + stats["totals_rows"], run_id))
    db.close()
    print(json.dumps(stats))
    return 1 if stats["failed"] else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--now", type=int)
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
