use std::collections::BTreeSet;
use std::time::Instant;

use engagement_ingest::domain::{DAY_SECS, HOUR_SECS, Hour, JobKind, Metric, TweetId, iso_utc};
use engagement_ingest::sim::{Faults, TweetState, World};
use serde_json::Value;

use crate::helpers::{TestApp, set_in_section, text, world_with};

/// `query … --format json` through the binary, as JSON.
async fn query(app: &TestApp, args: &[&str]) -> Value {
    let db = app.db_arg();
    let mut full = vec!["query", "--db", &db, "--format", "json"];
    full.extend_from_slice(args);
    let out = app.cli(&full).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("an array of rows")
}

/// The owned Tweets the simulator serves data for.
fn active_owned(app: &TestApp) -> Vec<TweetId> {
    app.sim()
        .tweets()
        .iter()
        .filter(|t| t.owner.is_some() && t.state == TweetState::Active)
        .map(|t| t.id)
        .collect()
}

/// Every `query` answer checked against the simulator's own numbers: latest totals, series with
/// zeros inside coverage and holes outside it, top Tweets with engagement rate, runs, failures
/// and usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_with_the_simulators_numbers() {
    // On an hour boundary, so no bucket is partial.
    let now = chrono::Utc::now().timestamp() / HOUR_SECS * HOUR_SECS;
    let app = TestApp::spawn_at(world_with(6, 4, 5, "spread_days = 2\ndeleted = 2"), now).await;
    let sim = app.sim();
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals, JobKind::Hourly]).await;

    // latest: every metric of a Tweet as the simulator counts it.
    let owned = active_owned(&app);
    let tweet = owned[0];
    let id = tweet.get().to_string();
    let latest = query(&app, &["latest", "--tweet", &id]).await;
    assert!(rows(&latest).len() >= 7, "{latest}");
    for row in rows(&latest) {
        let metric: Metric = row["metric"].as_str().unwrap().parse().unwrap();
        assert_eq!(row["tweet_id"].as_str(), Some(id.as_str()));
        assert_eq!(
            row["value"].as_i64(),
            Some(sim.total(tweet, metric, now)),
            "{row}"
        );
        assert_eq!(row["observed_at"].as_str(), Some(iso_utc(now).as_str()));
    }

    // series after /28hr only: the last 28 hours hold the simulator's buckets (zeros included);
    // older hours are holes (null), not zeros.
    let old = *owned
        .iter()
        .find(|t| t.age_at(now) > 40 * HOUR_SECS)
        .expect("a Tweet older than the /28hr window");
    let until = iso_utc(now);
    let series_of = |t: TweetId| {
        let id = t.get().to_string();
        let until = until.clone();
        let app = &app;
        async move {
            query(
                app,
                &[
                    "series",
                    "--tweet",
                    &id,
                    "--metric",
                    "impressions",
                    "--until",
                    &until,
                ],
            )
            .await
        }
    };
    let before = series_of(old).await;
    let values: Vec<Option<i64>> = rows(&before).iter().map(|r| r["value"].as_i64()).collect();
    let first_known = values.iter().position(Option::is_some).expect("some data");
    assert!(first_known > 0, "hours before the /28hr window are holes");
    assert!(
        values[first_known..].iter().all(Option::is_some),
        "one span"
    );
    assert!(values.len() - first_known >= 27, "{}", values.len());
    for row in &rows(&before)[first_known..] {
        let hour = chrono::DateTime::parse_from_rfc3339(row["hour"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let expected = sim.bucket(old, Metric::Impressions, Hour::floor(hour));
        assert_eq!(row["value"].as_i64(), Some(expected), "{row}");
    }

    // After /historical the whole life of the Tweet is covered: no holes, every hour exact.
    app.run(&ctx, &[JobKind::Historical]).await;
    let after = series_of(old).await;
    let created_hour = Hour::floor(old.created_at()).secs();
    assert_eq!(
        rows(&after).len() as i64,
        (now - created_hour) / HOUR_SECS,
        "one row per hour from creation"
    );
    for row in rows(&after) {
        let hour = chrono::DateTime::parse_from_rfc3339(row["hour"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let expected = sim.bucket(old, Metric::Impressions, Hour::floor(hour));
        assert_eq!(row["value"].as_i64(), Some(expected), "{row}");
    }
    let daily = query(
        &app,
        &[
            "series",
            "--tweet",
            &old.get().to_string(),
            "--metric",
            "impressions",
            "--until",
            &until,
            "--granularity",
            "day",
        ],
    )
    .await;
    let summed: i64 = rows(&daily)
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .sum();
    assert_eq!(summed, sim.total(old, Metric::Impressions, now));

    // top: the simulator's ranking by impressions over the last day, with engagement rates.
    let since = now - DAY_SECS;
    let mut expected: Vec<(i64, u64)> = owned
        .iter()
        .map(|t| {
            let v =
                sim.total(*t, Metric::Impressions, now) - sim.total(*t, Metric::Impressions, since);
            (-v, t.get())
        })
        .collect();
    expected.sort();
    let top = query(
        &app,
        &[
            "top",
            "--metric",
            "impressions",
            "--since",
            &iso_utc(since),
            "--limit",
            "3",
        ],
    )
    .await;
    assert_eq!(rows(&top).len(), 3, "{top}");
    for (row, (neg, id)) in rows(&top).iter().zip(&expected) {
        assert_eq!(
            row["tweet_id"].as_str(),
            Some(id.to_string().as_str()),
            "{top}"
        );
        assert_eq!(row["value"].as_i64(), Some(-neg), "{top}");
        let t = TweetId::new(*id).unwrap();
        let eng = sim.total(t, Metric::Engagements, now) - sim.total(t, Metric::Engagements, since);
        let rate = row["engagement_rate"].as_f64().unwrap();
        assert!((rate - eng as f64 / (-neg) as f64).abs() < 1e-9, "{row}");
        assert_eq!(row["source"], "series");
    }

    // A run where every request fails: its batches are listed as failures to retry.
    drop(ctx);
    app.edit_config(|t| t.replace("[api]\n", "[api]\nretry_attempts = 1\n"));
    sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let ctx = app.context();
    let failed_run = app.run(&ctx, &[JobKind::Totals]).await;
    let failed_batches = failed_run.failed().count();
    assert!(failed_batches > 0);
    sim.set_faults(Faults::default()).unwrap();
    let failures = query(&app, &["failures"]).await;
    let batches: Vec<&Value> = rows(&failures)
        .iter()
        .filter(|r| r["what"] == "batch")
        .collect();
    assert_eq!(batches.len(), failed_batches, "{failures}");
    assert!(batches.iter().all(|r| r["kind"] == "totals"
        && r["http_status"].as_i64().unwrap() >= 500
        && r["retry"] == "next run"));
    let resting: BTreeSet<u64> = rows(&failures)
        .iter()
        .filter(|r| r["what"] == "tweet")
        .map(|r| r["tweet_id"].as_str().unwrap().parse().unwrap())
        .collect();
    let deleted: BTreeSet<u64> = sim
        .tweets()
        .iter()
        .filter(|t| t.state == TweetState::Deleted)
        .map(|t| t.id.get())
        .collect();
    assert_eq!(resting, deleted, "{failures}");

    // runs: three, the last partial.
    let runs = query(&app, &["runs"]).await;
    let statuses: Vec<&str> = rows(&runs)
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["partial", "ok", "ok"], "{runs}");
    let stats = sim.stats();
    let insights = stats.count("totals") + stats.count("28hr") + stats.count("historical");
    let requests: u64 = rows(&runs)
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        requests, insights,
        "every request the simulator saw is in a run: {runs}"
    );

    // usage: the handles and requests the simulator saw.
    let usage = query(&app, &["usage"]).await;
    let month = &rows(&usage)[0];
    assert_eq!(rows(&usage).len(), 1);
    assert_eq!(month["month"].as_str(), Some(&iso_utc(now)[..7]));
    let handles: Vec<String> = stats.unique_handles.iter().map(|h| h.to_string()).collect();
    assert_eq!(month["unique_handles"].as_u64(), Some(handles.len() as u64));
    assert_eq!(month["handles"].as_str(), Some(handles.join(" ").as_str()));
    for (column, endpoint) in [
        ("totals_requests", "totals"),
        ("28hr_requests", "28hr"),
        ("historical_requests", "historical"),
    ] {
        // Every batch but the failed ones was sent once; failed ones once per attempt (1).
        assert_eq!(
            month[column].as_u64(),
            Some(stats.count(endpoint)),
            "{column}: {usage}"
        );
    }
    assert_eq!(month["http_attempts"].as_u64(), Some(insights));
}

/// Bad arguments are exit 2 with a message that says what is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_arguments_are_checked() {
    let app = TestApp::spawn(world_with(2, 0, 1, "")).await;
    let db = app.db_arg();
    let out = app.cli(&["query", "--db", &db, "runs"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no such database"), "{}", text(&out));
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals]).await;
    for (args, needle) in [
        (&["top", "--metric", "likes"][..], "is not a metric"),
        (
            &["top", "--metric", "favorites", "--since", "last week"],
            "RFC 3339",
        ),
        (
            &["top", "--metric", "favorites", "--owner", "nobody"],
            "owners: acme",
        ),
        (&["usage", "--month", "2026-13"], "YYYY-MM"),
        (&["series", "--tweet", "20"], "not in the database"),
    ] {
        let mut full = vec!["query", "--db", &db];
        full.extend_from_slice(args);
        let out = app.cli(&full).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    }
    // CSV by default in a pipe.
    let out = app.cli(&["query", "--db", &db, "runs"]).await;
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.starts_with("run_id,kinds,catch_up,started_at,"),
        "{csv}"
    );
}

/// `plan` on the demo world predicts exactly the requests `run` then sends, per endpoint, plus
/// the token request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_the_requests_run_sends() {
    let app = TestApp::spawn(engagement_ingest::sim::demo_world(7)).await;
    let out = app.cli(&["plan", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds = plan["kinds"].as_array().unwrap();
    let planned = |kind: &str| {
        kinds.iter().find(|k| k["kind"] == kind).unwrap()["requests"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(app.sim().stats().count("totals"), 0, "plan sends nothing");
    let out = app.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stats = app.sim().stats();
    assert_eq!(planned("totals"), stats.count("totals"));
    assert_eq!(planned("hourly"), stats.count("28hr"));
    assert_eq!(planned("historical"), stats.count("historical"));
    assert_eq!(
        plan["requests"].as_u64().unwrap(),
        stats.count("totals") + stats.count("28hr") + stats.count("historical")
    );
    assert_eq!(
        plan["token_requests"].as_u64(),
        Some(stats.count("oauth2/token"))
    );
    for k in kinds {
        assert_eq!(k["requests"], k["lower_bound"], "{k}");
        assert!(k["estimated_seconds"].is_number());
    }
}

/// For a backfill paced by a per-second limit, `plan`'s time estimate is within 15% of the time
/// the run takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_estimates_a_paced_backfill_within_15_percent() {
    let mut text_world = String::from(
        "seed = 5\n[app]\nconsumer_key = \"ck\"\nconsumer_secret = \"cs\"\nbearer_token = \"bt\"\n",
    );
    for (i, handle) in ["ann", "ben", "cat", "dan"].iter().enumerate() {
        text_world += &format!(
            "[[accounts]]\nhandle = \"{handle}\"\nuser_id = {}\naccess_token = \"t-{handle}\"\n\
             access_token_secret = \"s-{handle}\"\ntweets = 8\n",
            2000 + i
        );
    }
    text_world += "[tweets]\nspread_days = 80\n[limits]\nhistorical = { per_second = 4 }\n";
    let app = TestApp::spawn_live(World::from_toml_str(&text_world).unwrap()).await;
    app.edit_config(|t| set_in_section(&t, "historical", "metrics = [\"impressions\"]"));
    let out = app
        .cli(&["plan", "--job", "historical", "--format", "json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kind = &plan["kinds"][0];
    let estimate = kind["estimated_seconds"].as_f64().unwrap();
    let requests = kind["requests"].as_u64().unwrap();
    assert!(
        requests >= 12,
        "a backfill of several cells per owner: {kind}"
    );
    let ctx = app.context();
    let started = Instant::now();
    let report = app.run(&ctx, &[JobKind::Historical]).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(report.requests.len() as u64, requests);
    let error = (estimate - took).abs() / took;
    println!(
        "plan: {estimate:.2}s estimated, {took:.2}s measured ({:.1}% off)",
        error * 100.0
    );
    assert!(error <= 0.15, "estimated {estimate:.2}s, took {took:.2}s");
}

/// `plan --format csv`: a header and one row per kind and credential, with the numbers of the
/// plan's JSON; the requests add up to the plan's total. `/historical` counts each Tweet once
/// and names its (Tweet, cell) pairs apart, as the coverage the run then writes has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_csv_has_the_plans_numbers_and_tweets_are_counted_once() {
    let app = TestApp::spawn(world_with(12, 6, 30, "spread_days = 80")).await;
    let json = app.cli(&["plan", "--format", "json"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let plan: Value = serde_json::from_slice(&json.stdout).unwrap();
    let csv = app.cli(&["plan", "--format", "csv"]).await;
    assert_eq!(csv.status.code(), Some(0), "{}", text(&csv));
    let body = String::from_utf8(csv.stdout).unwrap();
    let mut lines = body.lines();
    assert_eq!(
        lines.next(),
        Some("kind,endpoint,due,scope,credential,requests,lower_bound,tweets,tweet_cell_pairs")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 9), "{body}");
    let number = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("{s:?} in {body}"))
    };
    let mut expected = 0;
    for kind in plan["kinds"].as_array().unwrap() {
        let name = kind["kind"].as_str().unwrap();
        for c in kind["credentials"].as_array().unwrap() {
            expected += 1;
            let credential = c["credential"].as_str().unwrap();
            let row = rows
                .iter()
                .find(|r| r[0] == name && r[4] == credential)
                .unwrap_or_else(|| panic!("no {name} {credential} row in {body}"));
            assert_eq!(row[1], kind["endpoint"].as_str().unwrap());
            assert_eq!(row[2], kind["due"].to_string());
            assert_eq!(row[3], kind["scope"].as_str().unwrap());
            assert_eq!(Some(number(row[5])), c["requests"].as_u64(), "{row:?}");
            assert_eq!(Some(number(row[6])), c["lower_bound"].as_u64(), "{row:?}");
            assert_eq!(Some(number(row[7])), c["tweets"].as_u64(), "{row:?}");
            match c["tweet_cell_pairs"].as_u64() {
                Some(pairs) => assert_eq!(number(row[8]), pairs, "{row:?}"),
                None => assert_eq!(row[8], "", "{row:?}"),
            }
        }
        let sum: u64 = rows
            .iter()
            .filter(|r| r[0] == name)
            .map(|r| number(r[5]))
            .sum();
        assert_eq!(Some(sum), kind["requests"].as_u64(), "{name}");
    }
    assert_eq!(rows.len(), expected, "{body}");
    let total: u64 = rows.iter().map(|r| number(r[5])).sum();
    assert_eq!(Some(total), plan["requests"].as_u64());

    let historical = plan["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "historical")
        .unwrap();
    let tweets = historical["tweets"].as_u64().unwrap();
    let pairs = historical["tweet_cell_pairs"].as_u64().unwrap();
    assert!(
        pairs > tweets,
        "Tweets spanning several cells: {historical}"
    );
    let table = app.cli(&["plan", "--job", "historical"]).await;
    let table = text(&table);
    assert!(
        table.contains(&format!("{tweets} Tweets in {pairs} (Tweet, cell) pairs")),
        "{table}"
    );
    let out = app.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (distinct, cells): (i64, i64) = app
        .db()
        .query_row(
            "SELECT count(DISTINCT tweet_id), count(*) FROM coverage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((tweets, pairs), (distinct as u64, cells as u64));
}

/// `plan --summary` is one line per kind; the default table has no per-credential lines, which
/// `--by-account` adds; "1 request", never "1 requests".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_summary_has_one_line_per_kind_and_counts_read_right() {
    let app = TestApp::spawn(crate::helpers::world(1, 0, 0, 0)).await;
    let out = app.cli(&["plan", "--summary"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 3, "{summary}");
    for (line, kind) in lines.iter().zip(["totals", "hourly", "historical"]) {
        assert!(line.starts_with(kind), "{summary}");
    }
    assert!(
        lines[0].contains("due (never run): 1 request, 1 Tweet, 1 handle, no wait"),
        "{summary}"
    );
    let default = text(&app.cli(&["plan"]).await);
    let by_account = text(&app.cli(&["plan", "--by-account"]).await);
    assert!(!default.contains("handles touched"), "{default}");
    assert!(
        !default.lines().any(|l| l.trim_start().starts_with("acme")),
        "{default}"
    );
    assert!(default.contains("lower bound 1 request"), "{default}");
    assert!(
        by_account.contains("handles touched (1): acme"),
        "{by_account}"
    );
    let acme_rows = by_account
        .lines()
        .filter(|l| l.trim_start().starts_with("acme "))
        .count();
    assert!(acme_rows >= 2, "one row per kind with work: {by_account}");
    for out in [&summary, &default, &by_account] {
        let spaced = format!(" {}", out.replace('\n', " "));
        for noun in [
            "requests", "Tweets", "handles", "accounts", "batches", "pairs",
        ] {
            assert!(!spaced.contains(&format!(" 1 {noun}")), "1 {noun}: {out}");
        }
    }
    let both = app.cli(&["plan", "--summary", "--by-account"]).await;
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
}
