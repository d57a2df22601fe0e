use std::collections::BTreeMap;

use engagement_ingest::domain::{DAY_SECS, HOUR_SECS, Hour, JobKind, Metric, TweetId, iso_utc};
use engagement_ingest::sim::TweetState;
use serde_json::Value;

use crate::helpers::{TestApp, text, world_with};

/// `query … --format json` through the binary: exit 0, the rows, and stderr.
async fn query_json(app: &TestApp, args: &[&str]) -> (Vec<Value>, String) {
    let db = app.db_arg();
    let mut full = vec!["query", "--db", &db, "--format", "json"];
    full.extend_from_slice(args);
    let out = app.cli(&full).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    let rows: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)));
    let rows = rows.as_array().expect("an array of rows").clone();
    (rows, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A Tweet ID of a JSON row: a string, read exactly.
fn id_of(row: &Value) -> u64 {
    row["tweet_id"]
        .as_str()
        .unwrap_or_else(|| panic!("tweet_id is a string: {row}"))
        .parse()
        .unwrap()
}

/// What an account's row must say, computed from the simulator and the stored coverage spans.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    tweets: i64,
    posted: i64,
    hours: i64,
    hours_known: i64,
    sums: BTreeMap<Metric, i64>,
}

/// The metrics `query accounts` sums from hourly buckets.
const SUMMED: [Metric; 6] = [
    Metric::Impressions,
    Metric::Engagements,
    Metric::Favorites,
    Metric::Retweets,
    Metric::Replies,
    Metric::VideoViews,
];

/// Per account, over `[since, until)`: its Tweets, their hours (each from its creation hour),
/// the hours inside a stored `/historical` cell or `/28hr` window, and the simulator's buckets
/// summed over those known hours, hour by hour.
fn expected(app: &TestApp, since: i64, until: i64, now: i64) -> BTreeMap<String, Expected> {
    let db = app.db();
    let spans = |sql: &str, id: TweetId| -> Vec<(i64, i64)> {
        let mut stmt = db.prepare(sql).unwrap();
        stmt.query_map([id.get() as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    for t in app.sim().tweets() {
        let Some(owner) = &t.owner else { continue };
        let e = out.entry(owner.to_string()).or_default();
        let created = t.id.created_at();
        if created >= until {
            continue;
        }
        e.tweets += 1;
        e.posted += i64::from(created >= since);
        let created_hour = Hour::floor(created).secs();
        let cells = spans(
            "SELECT cell, fetched_until FROM coverage WHERE tweet_id = ?1",
            t.id,
        );
        let recent = spans(
            "SELECT fetched_from, fetched_until FROM recent_coverage WHERE tweet_id = ?1",
            t.id,
        );
        let mut hour = created_hour.max(since);
        while hour < until {
            e.hours += 1;
            let known = cells
                .iter()
                .any(|(a, b)| (*a).max(created_hour) <= hour && hour < *b)
                || recent.iter().any(|(a, b)| *a <= hour && hour < *b);
            if known {
                e.hours_known += 1;
                for m in SUMMED {
                    *e.sums.entry(m).or_default() +=
                        app.sim().bucket_at(t.id, m, Hour::floor(hour), now);
                }
            }
            hour += HOUR_SECS;
        }
    }
    out
}

/// Checks `rows` (JSON of `query accounts`) against [`expected`].
fn assert_accounts(rows: &[Value], expected: &BTreeMap<String, Expected>) {
    let owners: Vec<&str> = rows.iter().map(|r| r["owner"].as_str().unwrap()).collect();
    assert_eq!(
        owners,
        expected.keys().map(String::as_str).collect::<Vec<_>>()
    );
    for row in rows {
        let e = &expected[row["owner"].as_str().unwrap()];
        assert_eq!(row["tweets"].as_i64(), Some(e.tweets), "{row}");
        assert_eq!(row["posted"].as_i64(), Some(e.posted), "{row}");
        assert_eq!(row["hours"].as_i64(), Some(e.hours), "{row}");
        assert_eq!(row["hours_known"].as_i64(), Some(e.hours_known), "{row}");
        for m in SUMMED {
            let want = (e.hours_known > 0).then(|| e.sums[&m]);
            assert_eq!(row[m.as_str()].as_i64(), want, "{m}: {row}");
        }
        let (i, g) = (e.sums[&Metric::Impressions], e.sums[&Metric::Engagements]);
        if i > 0 {
            let rate = row["engagement_rate"].as_f64().unwrap();
            assert!((rate - g as f64 / i as f64).abs() < 1e-9, "{row}");
        }
    }
}

/// `query accounts` equals, per account, the simulator's hourly numbers summed over its Tweets
/// and the period, and says how many Tweet-hours are known: after `/28hr` only a part (the
/// rest is unknown, not zero: a table marks it), after `/historical` all of them. `--until`
/// bounds the period; quote Tweets come from `/totals` and are unknown without a total from
/// before the period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sum_the_simulators_hours_and_say_what_is_known() {
    let now = chrono::Utc::now().timestamp() / HOUR_SECS * HOUR_SECS;
    let app = TestApp::spawn_at(world_with(5, 3, 2, "spread_days = 5"), now).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals, JobKind::Hourly]).await;
    // The period starts at 00:00 UTC of --since's day (whole days read from the rollups).
    let since = now - 4 * DAY_SECS;
    let (since_s, until_s) = (iso_utc(since), iso_utc(now));
    let args = ["accounts", "--since", &since_s, "--until", &until_s];
    let day_since = since.div_euclid(DAY_SECS) * DAY_SECS;
    let day_until = now;
    let (rows, _) = query_json(&app, &args).await;
    let before = expected(&app, day_since, day_until, now);
    assert_accounts(&rows, &before);
    assert!(
        before
            .values()
            .any(|e| 0 < e.hours_known && e.hours_known < e.hours),
        "/28hr alone covers part of the period: {before:?}"
    );
    // Tweets older than the period have no total from before it: quote Tweets are unknown.
    for row in &rows {
        assert_eq!(row["quote_tweets"], Value::Null, "{row}");
    }
    // The table marks figures that are not fully covered and says why.
    let db = app.db_arg();
    let mut table_args = vec!["query", "--db", &db, "--format", "table"];
    table_args.extend_from_slice(&args);
    let table = app.cli(&table_args).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let acme = table.lines().find(|l| l.starts_with("acme")).unwrap();
    let e = &before["acme"];
    let pct = e.hours_known * 100 / e.hours;
    assert!(
        acme.contains(&format!("{}/{} ({pct}%)", e.hours_known, e.hours)),
        "{table}"
    );
    assert!(
        acme.contains(&format!("{}*", e.sums[&Metric::Impressions])),
        "{table}"
    );
    assert!(
        table.contains("* 2 of 2 accounts have Tweet-hours outside fetched coverage")
            && table.contains("unknown, not zero"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "Period {} to {until_s} (exclusive; from 00:00 UTC of --since's day)",
            iso_utc(day_since)
        )),
        "{table}"
    );

    // After /historical every hour of the period is known.
    app.run(&ctx, &[JobKind::Historical]).await;
    let (rows, _) = query_json(&app, &args).await;
    let after = expected(&app, day_since, day_until, now);
    assert!(
        after.values().all(|e| e.hours_known == e.hours),
        "{after:?}"
    );
    assert_accounts(&rows, &after);

    // --until bounds the period; --owner in any case, repeatable.
    let until = now - DAY_SECS;
    let until_s = iso_utc(until);
    let (rows, _) = query_json(
        &app,
        &[
            "accounts", "--since", &since_s, "--until", &until_s, "--owner", "BOB",
        ],
    )
    .await;
    let mut bounded = expected(&app, day_since, until, now);
    bounded.remove("acme");
    assert_accounts(&rows, &bounded);

    // A period from before every Tweet: quote Tweets are the sum of their lifetime totals.
    let (rows, _) = query_json(
        &app,
        &[
            "accounts",
            "--since",
            &iso_utc(now - 6 * DAY_SECS),
            "--until",
            &iso_utc(now + HOUR_SECS),
        ],
    )
    .await;
    for row in &rows {
        let owner = row["owner"].as_str().unwrap();
        let quotes: i64 = app
            .sim()
            .tweets()
            .iter()
            .filter(|t| t.owner.as_ref().is_some_and(|o| o.to_string() == owner))
            .map(|t| app.sim().total(t.id, Metric::QuoteTweets, now))
            .sum();
        assert_eq!(row["quote_tweets"].as_i64(), Some(quotes), "{row}");
    }

    // An unknown owner is exit 2 naming the valid ones.
    let out = app
        .cli(&["query", "--db", &db, "accounts", "--owner", "nobody"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("owners: acme, bob"), "{}", text(&out));
    // So is a period that ends before it starts.
    let out = app
        .cli(&[
            "query", "--db", &db, "accounts", "--since", "1d", "--until", "2d",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("the period is empty"), "{}", text(&out));
}

/// `--until` bounds `top` and `series`; Tweet IDs are JSON strings that round-trip exactly
/// (above 2^53), numbers in CSV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_bounds_top_and_series_and_ids_are_exact_strings() {
    let now = chrono::Utc::now().timestamp() / HOUR_SECS * HOUR_SECS;
    let app = TestApp::spawn_at(world_with(4, 2, 2, "spread_days = 5"), now).await;
    let ctx = app.context();
    app.run(
        &ctx,
        &[JobKind::Totals, JobKind::Hourly, JobKind::Historical],
    )
    .await;
    let sim = app.sim();
    let (since, until) = (now - 4 * DAY_SECS, now - DAY_SECS);
    let sum = |t: TweetId| -> i64 {
        let from = Hour::floor(t.created_at()).secs().max(since);
        (from..until)
            .step_by(HOUR_SECS as usize)
            .map(|h| sim.bucket_at(t, Metric::Impressions, Hour::floor(h), now))
            .sum()
    };
    let owned: Vec<TweetId> = sim
        .tweets()
        .iter()
        .filter(|t| t.owner.is_some() && t.state == TweetState::Active)
        .map(|t| t.id)
        .collect();
    let mut ranking: Vec<(i64, u64)> = owned
        .iter()
        .filter(|t| t.created_at() < until)
        .map(|t| (-sum(*t), t.get()))
        .collect();
    ranking.sort();
    let (since_s, until_s) = (iso_utc(since), iso_utc(until));
    let (top, _) = query_json(
        &app,
        &[
            "top",
            "--metric",
            "impressions",
            "--since",
            &since_s,
            "--until",
            &until_s,
            "--limit",
            "4",
        ],
    )
    .await;
    let got: Vec<(i64, u64)> = top
        .iter()
        .map(|r| (-r["value"].as_i64().unwrap(), id_of(r)))
        .collect();
    assert_eq!(
        got,
        ranking[..4],
        "public Tweets have no total before --until"
    );
    assert!(got.iter().all(|(_, id)| *id > 1 << 53), "IDs above 2^53");

    // The raw text carries the ID as a string; CSV as a bare number.
    let db = app.db_arg();
    let id = got[0].1;
    let out = app
        .cli(&[
            "query",
            "--db",
            &db,
            "--format",
            "json",
            "latest",
            "--tweet",
            &id.to_string(),
        ])
        .await;
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains(&format!("\"tweet_id\": \"{id}\"")), "{raw}");
    let out = app
        .cli(&[
            "query",
            "--db",
            &db,
            "--format",
            "csv",
            "latest",
            "--tweet",
            &id.to_string(),
        ])
        .await;
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines().nth(1).unwrap().starts_with(&format!("{id},")),
        "{csv}"
    );

    // series: the hours of [since, until) from the Tweet's creation, as the simulator has them.
    let tweet = TweetId::new(id).unwrap();
    let (series, _) = query_json(
        &app,
        &[
            "series",
            "--tweet",
            &id.to_string(),
            "--metric",
            "impressions",
            "--since",
            &since_s,
            "--until",
            &until_s,
        ],
    )
    .await;
    let from = Hour::floor(tweet.created_at()).secs().max(since);
    assert_eq!(series.len() as i64, (until - from) / HOUR_SECS);
    assert_eq!(
        series.last().unwrap()["hour"].as_str(),
        Some(iso_utc(until - HOUR_SECS).as_str())
    );
    let total: i64 = series.iter().map(|r| r["value"].as_i64().unwrap()).sum();
    assert_eq!(total, sum(tweet));
    assert!(series.iter().all(|r| id_of(r) == id));
}

/// `latest --metric` keeps the chosen metrics; `--wide` is one row per Tweet with a column per
/// metric, the simulator's totals, in every format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_narrowed_by_metric_and_widened_by_tweet() {
    let now = chrono::Utc::now().timestamp() / HOUR_SECS * HOUR_SECS;
    let app = TestApp::spawn_at(world_with(3, 2, 2, "spread_days = 5"), now).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals]).await;
    let sim = app.sim();
    let (narrow, _) = query_json(
        &app,
        &["latest", "--metric", "favorites", "--metric", "impressions"],
    )
    .await;
    assert!(!narrow.is_empty());
    assert!(
        narrow
            .iter()
            .all(|r| r["metric"] == "favorites" || r["metric"] == "impressions"),
        "{narrow:?}"
    );
    let (wide, _) = query_json(&app, &["latest", "--wide"]).await;
    let listed = sim.tweets().len();
    assert_eq!(wide.len(), listed, "one row per Tweet");
    for row in &wide {
        let t = TweetId::new(id_of(row)).unwrap();
        for m in [Metric::Favorites, Metric::Retweets, Metric::Replies] {
            assert_eq!(
                row[m.as_str()].as_i64(),
                Some(sim.total(t, m, now)),
                "{m}: {row}"
            );
        }
        // Public Tweets have no impressions: an empty cell, not a zero.
        let public = row["owner"].is_null();
        assert_eq!(row["impressions"].is_null(), public, "{row}");
    }
    let db = app.db_arg();
    let out = app
        .cli(&[
            "query", "--db", &db, "--format", "csv", "latest", "--wide", "--metric", "retweets",
        ])
        .await;
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        csv.lines().next(),
        Some("tweet_id,owner,retweets,observed_at,checked_at")
    );
    assert_eq!(csv.lines().count(), listed + 1, "{csv}");
}

/// `series` on a Tweet without series says why on stderr and prints no rows, exit 0: a public
/// Tweet (totals only), an owned one no series answer covered yet. An unknown Tweet is exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_without_a_series_says_why() {
    let now = chrono::Utc::now().timestamp() / HOUR_SECS * HOUR_SECS;
    let app = TestApp::spawn_at(world_with(2, 0, 1, "spread_days = 5"), now).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals]).await;
    let sim = app.sim();
    let public = sim.tweets().iter().find(|t| t.owner.is_none()).unwrap().id;
    let owned = sim.tweets().iter().find(|t| t.owner.is_some()).unwrap().id;
    let (rows, stderr) = query_json(&app, &["series", "--tweet", &public.to_string()]).await;
    assert!(rows.is_empty(), "{rows:?}");
    assert!(
        stderr.contains(&format!(
            "Tweet {public} has no hourly series: public Tweets get /totals only"
        )),
        "{stderr}"
    );
    let (rows, stderr) = query_json(&app, &["series", "--tweet", &owned.to_string()]).await;
    assert!(rows.is_empty(), "{rows:?}");
    assert!(
        stderr.contains(&format!("Tweet {owned} has no coverage between")),
        "{stderr}"
    );
    let db = app.db_arg();
    let out = app
        .cli(&["query", "--db", &db, "series", "--tweet", "20"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not in the database"), "{}", text(&out));
}
