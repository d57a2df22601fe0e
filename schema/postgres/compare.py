#!/usr/bin/env python3
"""Check that schema/postgres/ gives PostgreSQL the database schema/*.sql gives SQLite.

    schema/postgres/compare.py [--fresh | --no-apply] [URL]

Builds a SQLite database in memory from schema/NNNN_*.sql (in order, as the binary does), applies
schema/postgres/NNNN_*.sql to the PostgreSQL database at URL (default: $ENGAGEMENT_INGEST_TEST_PG)
through psql, each file in one transaction recorded in schema_version as the binary records it,
and compares: the tables; per table its columns in order with their types (INTEGER -> bigint,
TEXT -> text COLLATE "C", REAL -> double precision, BLOB -> bytea), NOT NULL-ness and defaults,
its primary key, unique keys, foreign keys and number of CHECKs; the indexes (columns,
uniqueness, partial predicate); the triggers; the views and their columns; the lookup rows of `metrics`. Then the
same statements run on both (inside a transaction rolled back on PostgreSQL): the compatibility
functions (total, multi-argument min/max, instr) and the owner-move trigger on sample rows,
compared row by row.

--fresh creates a scratch database through URL, works there and drops it (the role needs
CREATEDB); --no-apply compares the database at URL as it is (e.g. one the binary migrated).
Exits 0 when everything matches, 1 with a diff when not, 2 when it cannot run. The URL's
password is never printed.
"""

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # schema/
SEP = "\x1f"
NULL = "<<NULL>>"

TYPE_MAP = {"INTEGER": "bigint", "TEXT": "text", "REAL": "double precision", "BLOB": "bytea"}


def redact(url):
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def with_database(url, dbname):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


class Pg:
    def __init__(self, url):
        self.url = url

    def run(self, sql, single_transaction=False):
        """Runs sql (on stdin); returns its rows (unaligned, fields split); fails loudly."""
        cmd = ["psql", "-X", "-q", "-A", "-t", "-F", SEP, "-P", "null=" + NULL,
               "-v", "ON_ERROR_STOP=1", "-d", self.url]
        if single_transaction:
            cmd.append("--single-transaction")
        env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
        p = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            msg = p.stderr.replace(self.url, redact(self.url)).strip()
            raise RuntimeError(f"psql on {redact(self.url)} failed: {msg}")
        return [line.split(SEP) for line in p.stdout.split("\n") if line != ""]


def cell(v):
    """A value as both sides compare it: numbers as numbers, NULL as None."""
    if v is None or v == NULL:
        return None
    if isinstance(v, (int, float)):
        return v
    for number in (int, float):
        try:
            return number(v)
        except ValueError:
            pass
    return v


def sqlite_db():
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    files = sorted(ROOT.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise RuntimeError(f"no schema/NNNN_*.sql under {ROOT}")
    for f in files:
        db.executescript("BEGIN;\n" + f.read_text() + "\nCOMMIT;")
    return db


def sqlite_catalog(db):
    q = lambda sql, *a: db.execute(sql, a).fetchall()
    cat = {"tables": {}, "views": {}, "indexes": {}, "triggers": set()}
    for (name, sql) in q("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                         "AND name NOT LIKE 'sqlite_%' ORDER BY name"):
        cols = q(f'PRAGMA table_info("{name}")')
        pk = [c[1] for c in sorted((c for c in cols if c[5]), key=lambda c: c[5])]
        rowid_alias = len(pk) == 1 and any(c[1] == pk[0] and c[2].upper() == "INTEGER" for c in cols)
        columns = []
        for (_cid, cname, ctype, notnull, dflt, inpk) in cols:
            columns.append({
                "name": cname,
                "type": TYPE_MAP.get(ctype.upper(), "?" + ctype),
                # A primary key column is NOT NULL in PostgreSQL; in SQLite an INTEGER PRIMARY
                # KEY cannot be NULL, and the store never writes a NULL key of another type.
                "notnull": bool(notnull) or bool(inpk),
                "default": norm_default(dflt),
                "auto": rowid_alias and cname == pk[0],
                # SQLite compares text byte by byte (BINARY): PostgreSQL's "C" collation.
                "collation": "C" if ctype.upper() == "TEXT" else None,
            })
        uniques = set()
        for (_seq, iname, unique, origin, _partial) in q(f'PRAGMA index_list("{name}")'):
            if unique and origin == "u":
                uniques.add(tuple(r[2] for r in q(f'PRAGMA index_info("{iname}")')))
        fks = set()
        for fk in q(f'PRAGMA foreign_key_list("{name}")'):
            fks.add((fk[3], fk[2], fk[4]))
        checks = len(re.findall(r"\bCHECK\s*\(", sql, re.I))
        cat["tables"][name] = {"columns": columns, "pk": pk, "unique": uniques,
                               "fks": fks, "checks": checks}
    for (name,) in q("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name"):
        cat["views"][name] = [c[1] for c in q(f'PRAGMA table_info("{name}")')]
    for (name, table, sql) in q("SELECT name, tbl_name, sql FROM sqlite_master "
                                "WHERE type = 'index' AND sql IS NOT NULL"):
        cols = tuple(r[2] for r in q(f'PRAGMA index_info("{name}")'))
        m = re.search(r"\bWHERE\b(.*)$", sql, re.I | re.S)
        unique = bool(re.match(r"\s*CREATE\s+UNIQUE", sql, re.I))
        cat["indexes"][name] = (table, cols, unique, norm_expr(m.group(1)) if m else None)
    for (name, table) in q("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"):
        cat["triggers"].add((name, table))
    cat["metrics"] = [tuple(cell(v) for v in r)
                      for r in q("SELECT metric_id, name FROM metrics ORDER BY metric_id")]
    return cat


def norm_default(d):
    if d is None or d == NULL:
        return None
    d = re.sub(r"::[a-z ]+$", "", d.strip())
    return d


def norm_expr(e):
    return re.sub(r"[\s()]", "", e).lower()


def pg_catalog(pg):
    cat = {"tables": {}, "views": {}, "indexes": {}, "triggers": set()}
    schema = "current_schema()"
    tables = [r[0] for r in pg.run(
        f"SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = {schema} AND c.relkind IN ('r', 'p') ORDER BY 1")]
    cols = pg.run(
        f"SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity, "
        f"coalesce(collation_name, '{NULL}') "
        f"FROM information_schema.columns WHERE table_schema = {schema} "
        f"ORDER BY table_name, ordinal_position")
    keys = pg.run(
        f"SELECT c.conrelid::regclass::text, c.contype, c.conname, "
        f"array_to_string(ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i) "
        f"JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), ','), "
        f"coalesce(c.confrelid::regclass::text, ''), "
        f"array_to_string(ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY AS k(n, i) "
        f"JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), ',') "
        f"FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        f"WHERE n.nspname = {schema} AND c.contype IN ('p', 'u', 'f', 'c') AND c.conrelid <> 0")
    for t in tables:
        cat["tables"][t] = {"columns": [], "pk": [], "unique": set(), "fks": set(), "checks": 0}
    views = {r[0] for r in pg.run(f"SELECT viewname FROM pg_views WHERE schemaname = {schema}")}
    for v in views:
        cat["views"][v] = []
    for (t, c, typ, nullable, dflt, identity, collation) in cols:
        if t in views:
            cat["views"][t].append(c)
        elif t in cat["tables"]:
            cat["tables"][t]["columns"].append({
                "name": c, "type": typ, "notnull": nullable == "NO",
                "default": norm_default(dflt), "auto": identity == "YES",
                "collation": None if collation == NULL else collation})
    for (t, kind, _name, columns, ftable, fcolumns) in keys:
        if t not in cat["tables"]:
            continue
        entry = cat["tables"][t]
        cols_ = columns.split(",") if columns else []
        if kind == "p":
            entry["pk"] = cols_
        elif kind == "u":
            entry["unique"].add(tuple(cols_))
        elif kind == "f":
            entry["fks"].add((",".join(cols_), ftable, fcolumns))
        elif kind == "c":
            entry["checks"] += 1
    for t in cat["tables"].values():
        t["fks"] = {(a, b, c) for (a, b, c) in t["fks"]}
    for (name, table, columns, unique, pred) in pg.run(
            f"SELECT i.relname, t.relname, array_to_string(ARRAY(SELECT a.attname "
            f"FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(n, o) JOIN pg_attribute a "
            f"ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o), ','), x.indisunique, "
            f"coalesce(pg_get_expr(x.indpred, x.indrelid), '{NULL}') "
            f"FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            f"JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            f"WHERE n.nspname = {schema} AND NOT EXISTS "
            f"(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"):
        cat["indexes"][name] = (table, tuple(columns.split(",")), unique == "t",
                                None if pred == NULL else norm_expr(pred))
    for (name, table) in pg.run(
            f"SELECT g.tgname, c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {schema} AND NOT g.tgisinternal"):
        cat["triggers"].add((name, table))
    cat["metrics"] = [tuple(cell(v) for v in r)
                      for r in pg.run("SELECT metric_id, name FROM metrics ORDER BY metric_id")]
    # The binary's own table: SQLite keeps the version in PRAGMA user_version instead.
    cat["tables"].pop("schema_version", None)
    return cat


def compare_catalogs(lite, pg):
    diffs = []
    lt, pt = set(lite["tables"]), set(pg["tables"])
    for t in sorted(lt - pt):
        diffs.append(f"table {t}: in SQLite, missing in PostgreSQL")
    for t in sorted(pt - lt):
        diffs.append(f"table {t}: in PostgreSQL only")
    for t in sorted(lt & pt):
        a, b = lite["tables"][t], pg["tables"][t]
        an = [c["name"] for c in a["columns"]]
        bn = [c["name"] for c in b["columns"]]
        if an != bn:
            diffs.append(f"table {t}: columns differ\n    SQLite:     {an}\n    PostgreSQL: {bn}")
        bcols = {c["name"]: c for c in b["columns"]}
        for ca in a["columns"]:
            cb = bcols.get(ca["name"])
            if cb is None:
                continue
            for key in ("type", "notnull", "default", "collation"):
                if ca[key] != cb[key]:
                    diffs.append(f"{t}.{ca['name']}: {key} is {ca[key]!r} in SQLite, "
                                 f"{cb[key]!r} in PostgreSQL")
            if cb["auto"] and not ca["auto"]:
                diffs.append(f"{t}.{ca['name']}: an identity in PostgreSQL, not a rowid in SQLite")
        for key, label in (("pk", "primary key"), ("unique", "unique keys"),
                           ("fks", "foreign keys"), ("checks", "number of CHECKs")):
            if a[key] != b[key]:
                diffs.append(f"table {t}: {label} differ\n    SQLite:     {sorted_repr(a[key])}"
                             f"\n    PostgreSQL: {sorted_repr(b[key])}")
    lv, pv = set(lite["views"]), set(pg["views"])
    if lv != pv:
        diffs.append(f"views differ: SQLite only {sorted(lv - pv)}, PostgreSQL only {sorted(pv - lv)}")
    for v in sorted(lv & pv):
        if lite["views"][v] != pg["views"][v]:
            diffs.append(f"view {v}: columns differ\n    SQLite:     {lite['views'][v]}"
                         f"\n    PostgreSQL: {pg['views'][v]}")
    li, pi = lite["indexes"], pg["indexes"]
    for i in sorted(set(li) | set(pi)):
        if li.get(i) != pi.get(i):
            diffs.append(f"index {i}: SQLite {li.get(i)!r}, PostgreSQL {pi.get(i)!r}")
    if lite["triggers"] != pg["triggers"]:
        diffs.append(f"triggers differ: SQLite {sorted(lite['triggers'])}, "
                     f"PostgreSQL {sorted(pg['triggers'])}")
    if lite["metrics"] != pg["metrics"]:
        diffs.append(f"metrics rows differ:\n    SQLite:     {lite['metrics']}"
                     f"\n    PostgreSQL: {pg['metrics']}")
    return diffs


def sorted_repr(v):
    return sorted(v) if isinstance(v, set) else v


# Statements whose text runs on both backends, each result compared row by row. The DML sets up
# sample rows (rolled back on PostgreSQL); each SELECT's first column names it in the output.
SHARED_SETUP = """
INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at)
VALUES (1, 'acme', 'acme', 0, 0), (2, 'acme', 'acme', 0, 0), (3, 'beta', 'beta', 0, 0),
       (4, NULL, NULL, 0, 0);
INSERT INTO series (tweet_id, metric_id, hour, value, source, fetched_at)
VALUES (1, 1, 3600, 5, 0, 9), (1, 1, 7200, 7, 1, 9), (2, 1, 3600, 11, 0, 9),
       (2, 1, 90000, 13, 1, 9), (3, 1, 3600, 17, 0, 9), (4, 3, 3600, 19, 0, 9);
INSERT INTO tweet_days (tweet_id, metric_id, day, value)
SELECT tweet_id, metric_id, hour - hour % 86400, CAST(total(value) AS BIGINT)
FROM series GROUP BY tweet_id, metric_id, hour - hour % 86400;
INSERT INTO account_days (owner, metric_id, day, value, tweets)
SELECT w.owner, d.metric_id, d.day, CAST(total(d.value) AS BIGINT), count(*)
FROM tweet_days AS d JOIN tweets AS w USING (tweet_id) WHERE w.owner IS NOT NULL
GROUP BY w.owner, d.metric_id, d.day;
INSERT INTO totals (tweet_id, metric_id, observed_at, value)
VALUES (1, 3, 10, 1), (1, 3, 20, 4), (4, 3, 10, 2);
INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at)
VALUES (5, 'acme', 'acme', 0, 0);
INSERT INTO tweet_days (tweet_id, metric_id, day, value) VALUES (5, 2, 0, 9000000000000000000);
INSERT INTO account_days (owner, metric_id, day, value, tweets)
VALUES ('acme', 2, 0, -5000000000000000000, 2), ('beta', 2, 0, 9000000000000000000, 1),
       ('beta', 2, 86400, 3, 1);
INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at, totals_checked_at)
VALUES (1067094924124872705, 'acme', 'acme', 1543190400, 1543190400, 1543190500);
INSERT INTO totals (tweet_id, metric_id, observed_at, value)
VALUES (1067094924124872705, 3, 1543190500, 10), (1067094924124872705, 3, 1543194100, 25),
       (1067094924124872705, 1, 1543190500, 1000), (1067094924124872705, 2, 1543190500, 33),
       (1, 1, 20, 300), (1, 2, 20, 7), (2, 1, 20, 0), (2, 2, 20, 0);
INSERT INTO tweet_days (tweet_id, metric_id, day, value)
VALUES (1067094924124872705, 1, 1543190400 - 1543190400 % 86400, 5);
INSERT INTO account_days (owner, metric_id, day, value, tweets)
SELECT 'acme', 1, unixepoch() - unixepoch() % 86400 - 86400 * d, 100 + d, 1
FROM (SELECT 0 AS d UNION ALL SELECT 29 UNION ALL SELECT 30) AS days;
INSERT INTO handle_usage (month, handle, requests, first_used_at, last_used_at)
SELECT strftime('%Y-%m', 'now'), 'acme', 3, 0, 0 UNION ALL SELECT '2014-09', 'beta', 1, 0, 0;
INSERT INTO accounts (handle, state, detail, since, checked_at)
VALUES ('acme', 'ok', NULL, 0, 0), ('beta', 'refused', 'Unauthorized', 1543190400, 0);
INSERT INTO runs (run_id, kinds, started_at, status) VALUES (1, 'totals', 0, 'ok'), (2, 'hourly', 5, 'partial');
INSERT INTO requests (run_id, seq, kind, endpoint, credential, tweet_count, attempts, http_status,
                      outcome, error, rows, started_at, duration_ms)
VALUES (1, 1, 'totals', 'totals', 'bearer', 3, 1, 200, 'ok', NULL, 3, 0, 10),
       (2, 1, 'hourly', '28hr', 'acme', 2, 3, 503, 'failed', 'Service Unavailable', 0, 5, 99),
       (2, 2, 'hourly', '28hr', 'acme', 2, 1, 200, 'ok', NULL, 4, 6, 12);
"""

SHARED_QUERIES = [
    "SELECT 'total', total(value), total(CASE WHEN value > 10 THEN value END), "
    "total(value > 10) FROM series",
    "SELECT 'total_empty', total(value) FROM series WHERE tweet_id = 99",
    "SELECT 'total_cast', CAST(total(value) AS INTEGER), CAST(total(value) AS BIGINT) FROM series",
    "SELECT 'min_max', tweet_id, min(hour, fetched_at), max(hour, fetched_at), "
    "min(hour, value, fetched_at), max(hour, value, fetched_at, 8000), "
    "min(hour, NULL), max(NULL, value), max(hour, 1) FROM series ORDER BY tweet_id, hour",
    "SELECT 'aggregates', min(hour), max(hour), count(*) FROM series",
    "SELECT 'grouped', tweet_id, min(hour), max(value) FROM series GROUP BY tweet_id ORDER BY 2",
    "SELECT 'instr', instr(',totals,hourly,', ',hourly,'), instr('abc', 'z')",
    "SELECT 'latest', tweet_id, owner, metric, value, observed_at FROM latest_totals "
    "ORDER BY tweet_id, metric",
    "SELECT 'hourly', tweet_id, owner, metric, hour, hour_utc, value FROM hourly "
    "ORDER BY tweet_id, metric, hour",
    "SELECT 'daily', tweet_id, owner, metric, day, value FROM daily ORDER BY tweet_id, metric, day",
    "SELECT 'account_daily', owner, metric, day, value, tweets FROM account_daily "
    "ORDER BY owner, metric, day",
]

# The owner-move trigger: a Tweet changes hands with sums past 2^63 both ways (they saturate),
# another changes hands, a public Tweet gains an owner, an owned one loses it, two move in one
# statement; the rollups after each step.
SHARED_MOVES = [
    "UPDATE tweets SET owner = 'beta' WHERE tweet_id = 5",
    "UPDATE tweets SET owner = 'beta' WHERE tweet_id = 1",
    "UPDATE tweets SET owner = 'acme' WHERE tweet_id = 4",
    "UPDATE tweets SET owner = NULL WHERE tweet_id = 2",
    "UPDATE tweets SET owner = 'gamma' WHERE owner = 'beta'",
]
AFTER_MOVE = ("SELECT 'account_days', owner, metric_id, day, value, tweets FROM account_days "
              "ORDER BY owner, metric_id, day")


def readme_queries():
    """The example queries of schema/README.md (its ```sql blocks): documented to run on both."""
    text = (ROOT / "README.md").read_text()
    return [q.strip().rstrip(";") for q in re.findall(r"```sql\n(.*?)```", text, re.S)]


def shared_checks(db, pg):
    """Runs the shared statements on both; returns the differences and the rows compared."""
    queries = [(q, q) for q in SHARED_QUERIES]
    queries += [(f"schema/README.md query {i + 1}", q) for i, q in enumerate(readme_queries())]
    for i, move in enumerate(SHARED_MOVES):
        queries.append((f"after {move}", AFTER_MOVE, move))
    # SQLite: in a transaction, rolled back.
    lite = []
    db.execute("BEGIN")
    for stmt in SHARED_SETUP.split(";"):
        if stmt.strip():
            db.execute(stmt)
    for entry in queries:
        if len(entry) == 3:
            db.execute(entry[2])
        lite.append(db.execute(entry[1]).fetchall())
    db.execute("ROLLBACK")
    # PostgreSQL: one session, one transaction, rolled back; a marker row ends each result.
    marker = "end of result"
    script = ["BEGIN;", SHARED_SETUP]
    for entry in queries:
        if len(entry) == 3:
            script.append(entry[2] + ";")
        script += [entry[1] + ";", f"SELECT '{marker}';"]
    script.append("ROLLBACK;")
    pg_results, current = [], []
    for row in pg.run("\n".join(script)):
        if row == [marker]:
            pg_results.append(current)
            current = []
        else:
            current.append(row)
    diffs, rows = [], 0
    for entry, a, b in zip(queries, lite, pg_results):
        label, sql = entry[0], entry[1]
        a = [tuple(cell(v) for v in r) for r in a]
        b = [tuple(cell(v) for v in r) for r in b]
        if not re.search(r"\bORDER\s+BY\b", sql, re.I):
            a, b = sorted(a, key=repr), sorted(b, key=repr)
        rows += len(a)
        if a != b:
            diffs.append(f"{label}: results differ\n    SQLite:     {a}\n    PostgreSQL: {b}")
    if len(pg_results) != len(queries):
        diffs.append(f"PostgreSQL answered {len(pg_results)} of {len(queries)} shared statements")
    return diffs, rows, len(queries)


def apply_files(pg):
    files = sorted((ROOT / "postgres").glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise RuntimeError(f"no schema/postgres/NNNN_*.sql under {ROOT / 'postgres'}")
    # As the binary does: the version table first, then each file in one transaction with its row.
    pg.run("CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);")
    for f in files:
        version = int(f.name[:4])
        sql = f.read_text()
        if re.search(r"\bCONCURRENTLY\b", sql, re.I):
            raise RuntimeError(f"{f.name}: CONCURRENTLY cannot run inside a transaction")
        pg.run(sql + f"\n;INSERT INTO schema_version VALUES ({version}, "
               "extract(epoch FROM now())::bigint);\n", single_transaction=True)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", nargs="?", default=os.environ.get("ENGAGEMENT_INGEST_TEST_PG"),
                    help="PostgreSQL URL (default: $ENGAGEMENT_INGEST_TEST_PG)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--fresh", action="store_true",
                      help="work in a scratch database created (and dropped) through URL")
    mode.add_argument("--no-apply", action="store_true",
                      help="compare the database at URL as it is")
    args = ap.parse_args()
    if not args.url:
        print("compare.py: no URL given and ENGAGEMENT_INGEST_TEST_PG is not set", file=sys.stderr)
        return 2
    admin = Pg(args.url)
    scratch = None
    try:
        db = sqlite_db()
        target = admin
        if args.fresh:
            name = f"schema_compare_{os.getpid()}"
            admin.run(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\';')
            scratch = name
            target = Pg(with_database(args.url, scratch))
        if not args.no_apply:
            files = apply_files(target)
            print(f"applied {', '.join(f.name for f in files)} to {redact(target.url)}")
        lite, pgc = sqlite_catalog(db), pg_catalog(target)
        diffs = compare_catalogs(lite, pgc)
        try:
            shared_diffs, rows, statements = shared_checks(db, target)
            diffs += shared_diffs
        except (RuntimeError, sqlite3.Error) as e:
            diffs.append(f"shared statements failed: {e}")
    except (RuntimeError, ValueError, sqlite3.Error, OSError) as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 2
    finally:
        if scratch:
            try:
                admin.run(f'DROP DATABASE IF EXISTS "{scratch}";')
            except RuntimeError as e:
                print(f"compare.py: could not drop {scratch}: {e}", file=sys.stderr)
    if diffs:
        print(f"schema/postgres differs from schema/*.sql ({len(diffs)} difference(s)):")
        for d in diffs:
            print("  - " + d)
        return 1
    print(f"same schema: {len(lite['tables'])} tables (columns, types, NOT NULL, defaults, keys, "
          f"CHECK counts), {len(lite['indexes'])} indexes, {len(lite['triggers'])} trigger, "
          f"{len(lite['views'])} views ({', '.join(sorted(lite['views']))}), "
          f"{len(lite['metrics'])} metrics rows; {statements} shared statements (schema/README.md's "
          f"examples among them) gave the same {rows} rows on both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
