//! Broken and hostile answers. A stand-in server on 127.0.0.1:0 sits in front of the simulator
//! and changes its answers (Tweets or metrics left out, empty groupings, counts out of range,
//! repeated keys) or answers on its own (redirects, a gzip bomb, invalid JSON, a huge error
//! text). Each case checks the database afterwards: nothing stored before is lost, nothing the
//! answer did not say is stored; and the outcome, the exit code and the attempts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use engagement_ingest::domain::BatchOutcome;
use engagement_ingest::domain::JobKind;
use engagement_ingest::pipeline::Context;
use serde_json::Value;

use crate::helpers::{TestApp, text, world_with};

type Edit = Arc<dyn Fn(&mut Value) + Send + Sync>;
type TextEdit = Arc<dyn Fn(String) -> String + Send + Sync>;
/// What an edit left out: a Tweet (no metric) or one metric of it.
type LeftOut<M> = Arc<Mutex<Vec<(i64, Option<M>)>>>;

/// What the stand-in answers.
#[derive(Clone)]
enum Answer {
    /// The simulator's answer as it is.
    Pass,
    /// The simulator's answer with its JSON changed.
    Edit(Edit),
    /// The simulator's answer with its text changed (for what a JSON value cannot hold).
    Text(TextEdit),
    /// An answer of its own: status, headers, body.
    Fixed(u16, Vec<(&'static str, String)>, Bytes),
    /// The simulator's answer, this long after the request.
    Slow(std::time::Duration),
}

#[derive(Clone)]
struct Stand {
    upstream: Option<String>,
    http: reqwest::Client,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
}

/// The stand-in server.
struct Hostile {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
}

impl Hostile {
    /// Serves on 127.0.0.1:0, passing requests to `upstream` (the simulator) when the answer
    /// needs its words.
    async fn spawn(upstream: Option<String>) -> Hostile {
        let stand = Stand {
            upstream,
            http: reqwest::Client::new(),
            answer: Arc::new(Mutex::new(Answer::Pass)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let (answer, hits) = (Arc::clone(&stand.answer), Arc::clone(&stand.hits));
        let app = axum::Router::new().fallback(handle).with_state(stand);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hostile { addr, answer, hits }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
        self.hits.store(0, Ordering::SeqCst);
    }

    fn edit(&self, f: impl Fn(&mut Value) + Send + Sync + 'static) {
        self.answer(Answer::Edit(Arc::new(f)));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn handle(State(stand): State<Stand>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    stand.hits.fetch_add(1, Ordering::SeqCst);
    let answer = stand.answer.lock().unwrap().clone();
    if let Answer::Fixed(status, headers, body) = answer {
        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
        for (k, v) in headers {
            response.headers_mut().insert(k, v.parse().unwrap());
        }
        return response;
    }
    if let Answer::Slow(delay) = answer {
        tokio::time::sleep(delay).await;
    }
    let upstream = stand.upstream.as_deref().expect("an upstream to pass to");
    // The Host header goes along: the OAuth signature covers the URL the worker sent to.
    let mut request = stand
        .http
        .post(format!("{upstream}{}", uri.path()))
        .body(body);
    for (k, v) in &headers {
        if k != "content-length" && k != "accept-encoding" {
            request = request.header(k, v);
        }
    }
    let got = request.send().await.expect("the simulator answers");
    let status = got.status().as_u16();
    let text = got.text().await.unwrap();
    let text = match answer {
        Answer::Pass | Answer::Fixed(..) | Answer::Slow(_) => text,
        Answer::Edit(edit) => {
            let mut value: Value = serde_json::from_str(&text).unwrap();
            edit(&mut value);
            value.to_string()
        }
        Answer::Text(edit) => edit(text),
    };
    let mut response = (StatusCode::from_u16(status).unwrap(), text).into_response();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// What the database holds, table by table, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    series: BTreeSet<(i64, i64, i64, i64)>,
    totals: BTreeSet<(i64, i64, i64, i64)>,
    coverage: BTreeSet<(i64, i64, i64, i64)>,
    recent: BTreeSet<(i64, i64, i64, i64)>,
    checked: BTreeMap<i64, Option<i64>>,
}

fn rows4(db: &rusqlite::Connection, sql: &str) -> BTreeSet<(i64, i64, i64, i64)> {
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn snapshot(app: &TestApp) -> Snapshot {
    let db = app.db();
    let mut stmt = db
        .prepare("SELECT tweet_id, totals_checked_at FROM tweets")
        .unwrap();
    let checked = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Snapshot {
        series: rows4(&db, "SELECT tweet_id, metric_id, hour, value FROM series"),
        totals: rows4(
            &db,
            "SELECT tweet_id, metric_id, observed_at, value FROM totals",
        ),
        coverage: rows4(
            &db,
            "SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage",
        ),
        recent: rows4(
            &db,
            "SELECT tweet_id, fetched_from, fetched_until, fetched_at FROM recent_coverage",
        ),
        checked,
    }
}

/// A world of 4 + 3 owned and 3 public Tweets of the last 4 days (so `/28hr` has Tweets young
/// enough), collected once directly from the simulator, then pointed at a stand-in in front of
/// it; the clock moves on an hour, so every kind has something new to say.
async fn collected() -> (TestApp, Hostile) {
    let app = TestApp::spawn(world_with(4, 3, 3, "spread_days = 4")).await;
    let ctx = app.context();
    let first = app.run(&ctx, &JobKind::ALL).await;
    assert_eq!(first.exit_code(), 0, "{first:?}");
    let hostile = Hostile::spawn(Some(app.sim.base_url())).await;
    let sim_url = app.sim.base_url();
    let stand = hostile.url();
    app.edit_config(|t| {
        t.replacen(
            &format!("base_url = {:?}", sim_url.trim_end_matches('/')),
            &format!("base_url = {stand:?}"),
            1,
        )
        .replace(
            "[api]\n",
            "[api]\nretry_attempts = 3\nretry_min_delay = \"10ms\"\n",
        )
    });
    assert!(
        std::fs::read_to_string(&app.config_path)
            .unwrap()
            .contains(&stand),
        "the config points at the stand-in"
    );
    app.clock.advance(3600);
    (app, hostile)
}

fn context(app: &TestApp) -> Context {
    app.context()
}

/// The grouping of an answer, whatever its name.
fn grouping(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    let name = ["by_tweet", "by_hour"]
        .into_iter()
        .find(|n| v.get(n).is_some())
        .expect("a grouping");
    v[name].as_object_mut().unwrap()
}

/// A `/totals` answer that leaves out one Tweet and one metric of another: nothing stored or
/// checked for them, the batch partial with the reason; the rest stored; the next run asks
/// them again.
#[tokio::test]
async fn totals_left_out_are_not_zeros_and_are_asked_again() {
    let (app, hostile) = collected().await;
    let before = snapshot(&app);
    let left_out: LeftOut<&'static str> = Arc::default();
    let noted = Arc::clone(&left_out);
    // Of each batch of two or more Tweets, the first goes, and the second's favorites.
    hostile.edit(move |v| {
        let g = grouping(v);
        let ids: Vec<String> = g.keys().cloned().collect();
        if ids.len() < 2 {
            return;
        }
        g.remove(&ids[0]);
        g[&ids[1]].as_object_mut().unwrap().remove("favorites");
        let mut noted = noted.lock().unwrap();
        noted.push((ids[0].parse().unwrap(), None));
        noted.push((ids[1].parse().unwrap(), Some("favorites")));
    });
    let report = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let after = snapshot(&app);
    let left_out = left_out.lock().unwrap().clone();
    assert!(!left_out.is_empty());
    assert!(before.totals.is_subset(&after.totals), "nothing lost");
    let partial: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.outcome == BatchOutcome::Partial)
        .collect();
    assert!(!partial.is_empty(), "{report:?}");
    for r in &partial {
        let why = r.error.as_deref().unwrap_or_default();
        assert!(why.contains("left out"), "{why}");
        assert_eq!(r.attempts, 1, "an answer that parses is not asked again");
    }
    let fav_id: i64 = app
        .db()
        .query_row(
            "SELECT metric_id FROM metrics WHERE name = 'favorites'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (tweet, metric) in &left_out {
        assert_eq!(
            before.checked[tweet], after.checked[tweet],
            "Tweet {tweet} was not checked"
        );
        let new: Vec<_> = after
            .totals
            .difference(&before.totals)
            .filter(|(t, m, _, _)| t == tweet && (metric.is_none() || *m == fav_id))
            .collect();
        assert!(new.is_empty(), "nothing invented for {tweet}: {new:?}");
    }
    // Tweets the answer named in full were checked now.
    let named_in_full = after
        .checked
        .iter()
        .filter(|(t, at)| before.checked[*t] != **at)
        .count();
    assert!(named_in_full > 0, "the rest was stored");
    let stored: i64 = app
        .db()
        .query_row(
            "SELECT count(*) FROM requests WHERE outcome = 'partial' AND error LIKE '%left out%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored >= 1, "the ledger says why");

    // Asked again: with the whole answer, they are checked.
    hostile.answer(Answer::Pass);
    let again = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(again.exit_code(), 0);
    let last = snapshot(&app);
    for (tweet, _) in &left_out {
        assert_ne!(
            last.checked[tweet], before.checked[tweet],
            "{tweet} asked again"
        );
    }
}

/// An empty grouping names no Tweet: for every kind, nothing deleted, no coverage, no
/// `checked_at`; the batch failed (exit 1) after one attempt. `/historical` is tried on a
/// database whose coverage was deleted, as a user might to fetch again.
#[tokio::test]
async fn empty_groupings_change_nothing() {
    let (app, hostile) = collected().await;
    app.execute("DELETE FROM coverage");
    let before = snapshot(&app);
    assert!(!before.series.is_empty() && !before.totals.is_empty());
    hostile.edit(|v| grouping(v).clear());
    for kind in [JobKind::Totals, JobKind::Hourly, JobKind::Historical] {
        let report = app.run(&context(&app), &[kind]).await;
        assert_eq!(report.exit_code(), 1, "{kind:?}: {report:?}");
        assert!(!report.requests.is_empty(), "{kind:?} sent");
        for r in &report.requests {
            assert_eq!(
                (r.outcome, r.attempts),
                (BatchOutcome::Failed, 1),
                "{kind:?}"
            );
            assert!(r.error.as_deref().unwrap_or_default().contains("left out"));
        }
        assert_eq!(
            snapshot(&app),
            before,
            "{kind:?}: the database is unchanged"
        );
    }
    // A 302 to an empty answer is not followed into the same loss.
    hostile.answer(Answer::Fixed(
        302,
        vec![("location", "http://127.0.0.1:9/empty".into())],
        Bytes::new(),
    ));
    let report = app.run(&context(&app), &[JobKind::Historical]).await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(snapshot(&app), before);
}

/// Series left out for some Tweets and metrics keep their stored buckets and their coverage.
#[tokio::test]
async fn series_left_out_keep_their_buckets() {
    let (app, hostile) = collected().await;
    app.execute("DELETE FROM coverage");
    let before = snapshot(&app);
    let dropped: LeftOut<String> = Arc::default();
    let noted = Arc::clone(&dropped);
    // Of each batch of two or more Tweets, the first goes, and the second's first metric.
    hostile.edit(move |v| {
        let g = grouping(v);
        let ids: Vec<String> = g.keys().cloned().collect();
        if ids.len() < 2 {
            return;
        }
        let mut noted = noted.lock().unwrap();
        g.remove(&ids[0]);
        noted.push((ids[0].parse().unwrap(), None));
        let metrics = g[&ids[1]].as_object_mut().unwrap();
        let m = metrics.keys().next().cloned().unwrap();
        metrics.remove(&m);
        noted.push((ids[1].parse().unwrap(), Some(m)));
    });
    let report = app.run(&context(&app), &[JobKind::Historical]).await;
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert!(report.requests.iter().all(|r| r.attempts == 1));
    assert!(
        report
            .requests
            .iter()
            .any(|r| r.outcome == BatchOutcome::Partial)
    );
    let after = snapshot(&app);
    let db = app.db();
    let metric_id = |name: &str| -> i64 {
        db.query_row(
            "SELECT metric_id FROM metrics WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    let dropped = dropped.lock().unwrap().clone();
    assert!(!dropped.is_empty());
    for (tweet, metric) in &dropped {
        let m = metric.as_deref().map(metric_id);
        let keep = |s: &&(i64, i64, i64, i64)| s.0 == *tweet && m.is_none_or(|m| s.1 == m);
        let was: BTreeSet<_> = before.series.iter().filter(keep).collect();
        let now: BTreeSet<_> = after.series.iter().filter(keep).collect();
        assert_eq!(
            was, now,
            "Tweet {tweet} {metric:?}: its buckets are as they were"
        );
        assert!(
            !after.coverage.iter().any(|c| c.0 == *tweet),
            "Tweet {tweet} is not covered"
        );
    }
    assert!(
        !after.coverage.is_empty(),
        "the Tweets named in full are covered"
    );
}

/// 301, 302, 307 and 308 are not followed: the Tweet IDs never reach the other origin, one
/// attempt per batch, the error names the Location, nothing stored.
#[tokio::test]
async fn redirects_are_not_followed() {
    let (app, hostile) = collected().await;
    let elsewhere = Hostile::spawn(None).await;
    elsewhere.answer(Answer::Fixed(
        200,
        Vec::new(),
        Bytes::from_static(b"{\"by_tweet\":{}}"),
    ));
    let before = snapshot(&app);
    for status in [301, 302, 307, 308] {
        let location = format!("{}/insights/engagement/totals", elsewhere.url());
        hostile.answer(Answer::Fixed(
            status,
            vec![("location", location.clone())],
            Bytes::new(),
        ));
        let report = app.run(&context(&app), &[JobKind::Totals]).await;
        assert_eq!(report.exit_code(), 1, "{status}");
        let batches = report.requests.len();
        assert!(batches > 0);
        assert_eq!(hostile.hits(), batches, "{status}: one attempt per batch");
        for r in &report.requests {
            assert_eq!((r.outcome, r.attempts), (BatchOutcome::Failed, 1));
            let why = r.error.as_deref().unwrap_or_default();
            assert!(
                why.contains(&location) && why.contains("not followed"),
                "{why}"
            );
        }
        assert_eq!(
            elsewhere.hits(),
            0,
            "{status}: nothing reached the other origin"
        );
        assert_eq!(snapshot(&app), before);
    }
}

/// A gzip stream of 1 GiB of zeros in a 1 MB body, against a 1 MiB limit: refused once the
/// inflated bytes pass the limit, not retried, nothing stored. (Peak memory against the
/// default limit: `tests/hostile-memory.sh`.)
#[tokio::test]
async fn a_gzip_bomb_stops_at_the_limit() {
    let (app, hostile) = collected().await;
    app.edit_config(|t| t.replace("[api]\n", "[api]\nmax_answer_mib = 1\n"));
    let before = snapshot(&app);
    hostile.answer(Answer::Fixed(
        200,
        vec![
            ("content-encoding", "gzip".into()),
            ("content-type", "application/json".into()),
        ],
        Bytes::from(gzip_bomb(1024)),
    ));
    let report = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 1, "{report:?}");
    for r in &report.requests {
        assert_eq!((r.outcome, r.attempts), (BatchOutcome::Failed, 1));
        let why = r.error.as_deref().unwrap_or_default();
        assert!(why.contains("larger than 1 MiB (inflated)"), "{why}");
    }
    // A plain body past the limit, with and without a Content-Length.
    hostile.answer(Answer::Fixed(
        200,
        Vec::new(),
        Bytes::from(vec![b' '; 3 << 20]),
    ));
    let report = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 1);
    for r in &report.requests {
        assert_eq!((r.outcome, r.attempts), (BatchOutcome::Failed, 1));
        assert!(
            r.error
                .as_deref()
                .unwrap_or_default()
                .contains("larger than 1 MiB")
        );
    }
    assert_eq!(snapshot(&app), before);
}

/// `mib` MiB of JSON-ish zeros as gzip members of 16 MiB each (about 16 KB apiece).
pub fn gzip_bomb(mib: usize) -> Vec<u8> {
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b'0'; 1 << 20];
    for _ in 0..16.min(mib) {
        member.write_all(&block).unwrap();
    }
    let member = member.finish().unwrap();
    let mut body = b"".to_vec();
    for _ in 0..mib.div_ceil(16) {
        body.extend_from_slice(&member);
    }
    body
}

/// A negative lifetime count, or a bucket past any real count, makes the whole answer a shape
/// error: nothing of it stored, not retried. A huge value an earlier version stored does not
/// break the sums of `daily`, `report` and `query top`.
#[tokio::test]
async fn counts_out_of_range_poison_only_their_answer() {
    let (app, hostile) = collected().await;
    app.execute("DELETE FROM coverage");
    let before = snapshot(&app);
    hostile.edit(|v| {
        let g = grouping(v);
        let first = g.values_mut().next().unwrap().as_object_mut().unwrap();
        let metric = first.values_mut().next().unwrap();
        match metric {
            Value::Object(days) => {
                let hours = days.values_mut().next().unwrap().as_object_mut().unwrap();
                *hours.values_mut().next().unwrap() = "9223372036854775807".into();
            }
            other => *other = "-5".into(),
        }
    });
    for kind in [JobKind::Totals, JobKind::Hourly, JobKind::Historical] {
        let report = app.run(&context(&app), &[kind]).await;
        assert_eq!(report.exit_code(), 1, "{kind:?}");
        let failed: Vec<_> = report.failed().collect();
        assert!(!failed.is_empty(), "{kind:?}");
        for r in failed {
            assert_eq!(r.attempts, 1, "{kind:?}");
            assert!(
                r.error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("out of range")
            );
        }
    }
    // Batches without a poisoned value were stored; the poisoned ones changed nothing.
    let after = snapshot(&app);
    assert!(before.series.is_subset(&after.series));
    assert!(before.totals.is_subset(&after.totals));
    assert!(
        !after.series.iter().any(|s| s.3.abs() > 1_000_000_000_000),
        "no count past 10^12"
    );
    assert!(!after.totals.iter().any(|t| t.3 < 0), "no negative total");

    // What an earlier version could store: two buckets whose sum passes 2^63.
    let db = app.db();
    let (tweet, metric, name): (i64, i64, String) = db
        .query_row(
            "SELECT tweet_id, metric_id, name FROM series JOIN metrics USING (metric_id) LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    db.execute(
        "INSERT OR REPLACE INTO series (tweet_id, metric_id, hour, value, source, fetched_at) \
         VALUES (?1, ?2, 1699999200, 9223372036854775807, 1, 1), (?1, ?2, 1700002800, 9223372036854775807, 1, 1)",
        rusqlite::params![tweet, metric],
    )
    .unwrap();
    // The daily rollups as migration 0006 builds them from such a database.
    db.execute_batch(
        "DELETE FROM tweet_days; DELETE FROM account_days;
         INSERT INTO tweet_days (tweet_id, metric_id, day, value)
         SELECT tweet_id, metric_id, hour - hour % 86400, CAST(total(value) AS INTEGER)
         FROM series GROUP BY tweet_id, metric_id, hour - hour % 86400;
         INSERT INTO account_days (owner, metric_id, day, value, tweets)
         SELECT w.owner, d.metric_id, d.day, CAST(total(d.value) AS INTEGER), count(*)
         FROM tweet_days AS d JOIN tweets AS w USING (tweet_id) WHERE w.owner IS NOT NULL
         GROUP BY w.owner, d.metric_id, d.day;",
    )
    .unwrap();
    let day: i64 = db
        .query_row(
            "SELECT value FROM daily WHERE tweet_id = ?1 AND day = '2023-11-14' LIMIT 1",
            [tweet],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(day, i64::MAX, "the view saturates instead of failing");
    drop(db);
    let html = app.db_path.with_file_name("report.html");
    let report = app
        .cli(&[
            "report",
            "--since",
            "2023-11-01",
            "--out",
            &html.to_string_lossy(),
        ])
        .await;
    assert_eq!(report.status.code(), Some(0), "{}", text(&report));
    let top = app
        .cli(&["query", "top", "--metric", &name, "--since", "2023-11-01"])
        .await;
    assert_eq!(top.status.code(), Some(0), "{}", text(&top));
}

/// A key repeated in a grouping: which value is right cannot be told, so none is stored.
#[tokio::test]
async fn repeated_keys_are_refused() {
    let (app, hostile) = collected().await;
    let before = snapshot(&app);
    hostile.answer(Answer::Text(Arc::new(|text: String| {
        // The first Tweet's object once more, at the front of the grouping.
        let v: Value = serde_json::from_str(&text).unwrap();
        let (id, body) = v["by_tweet"].as_object().unwrap().iter().next().unwrap();
        text.replacen(
            "\"by_tweet\":{",
            &format!("\"by_tweet\":{{{:?}:{body},", id),
            1,
        )
    })));
    let report = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 1);
    let failed: Vec<_> = report.failed().collect();
    assert!(!failed.is_empty());
    for r in failed {
        assert_eq!(r.attempts, 1);
        assert!(
            r.error
                .as_deref()
                .unwrap_or_default()
                .contains("appears twice")
        );
    }
    let after = snapshot(&app);
    assert!(before.totals.is_subset(&after.totals));
    // Rows written count what was stored.
    let stored = after.totals.len() - before.totals.len();
    assert_eq!(report.rows_written, stored);
}

/// Invalid JSON is not asked again; JSON cut short is (it may come whole next time).
#[tokio::test]
async fn invalid_json_is_not_retried_but_a_cut_body_is() {
    let (app, hostile) = collected().await;
    let before = snapshot(&app);
    for (body, attempts) in [
        (&b"<html>Service Unavailable</html>"[..], 1),
        (b"{\"by_tweet\": {oops}}", 1),
        (b"{\"by_tweet\": {\"1\": {\"favorites\": ", 3),
    ] {
        hostile.answer(Answer::Fixed(200, Vec::new(), Bytes::from_static(body)));
        let report = app.run(&context(&app), &[JobKind::Totals]).await;
        assert_eq!(report.exit_code(), 1);
        for r in &report.requests {
            assert_eq!(
                (r.outcome, r.attempts),
                (BatchOutcome::Failed, attempts),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(hostile.hits(), report.requests.len() * attempts as usize);
    }
    assert_eq!(snapshot(&app), before);
}

/// A 500 whose `errors` string is 10 MB of text with terminal escapes: retried as a 5xx, and
/// what reaches stderr, stdout and the database is short and escaped.
#[tokio::test]
async fn error_text_is_bounded_and_escaped() {
    let (app, hostile) = collected().await;
    // The file's growth is SQLite's measure; on PostgreSQL the rows below say it.
    let file_size = || std::fs::metadata(&app.db_path).map_or(0, |m| m.len());
    let size_before = file_size();
    let poison = format!(
        "\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}{}",
        "A".repeat(10 << 20)
    );
    let body = serde_json::json!({ "errors": [poison] }).to_string();
    hostile.answer(Answer::Fixed(500, Vec::new(), Bytes::from(body)));
    let out = app.cli(&["run", "--job", "totals"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).len());
    let printed = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(printed.len() < 64 * 1024, "{} bytes printed", printed.len());
    assert!(!printed.contains(&0x1b), "no ESC reaches the terminal");
    assert!(
        !String::from_utf8_lossy(&printed).contains('\u{202e}'),
        "no bidirectional override"
    );
    let db = app.db();
    let (longest, attempts): (i64, i64) = db
        .query_row(
            "SELECT max(length(error)), max(attempts) FROM requests WHERE http_status = 500",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(longest < 2000, "{longest} characters stored");
    assert_eq!(attempts, 3, "a 5xx is retried");
    let escaped: i64 = db
        .query_row(
            "SELECT count(*) FROM requests WHERE instr(error, char(27)) > 0 OR instr(error, char(8238)) > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(escaped, 0);
    drop(db);
    let size_after = file_size();
    assert!(
        size_after < size_before + (1 << 20),
        "{size_before} → {size_after} bytes"
    );

    // A 403's text, the same way.
    let body = serde_json::json!({ "errors": ["Forbidden\u{1b}[31m \u{202e}txt.exe"] }).to_string();
    hostile.answer(Answer::Fixed(403, Vec::new(), Bytes::from(body)));
    let out = app.cli(&["run", "--job", "totals"]).await;
    let printed = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(!printed.contains(&0x1b), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&printed).contains("\\u{1b}[31m"),
        "{}",
        text(&out)
    );
}

/// Another process holds the database's write lock past the busy timeout while batches are
/// answered: those batches are reported failed ("not stored") and asked again next run, the
/// others are stored, and the run is closed with a status, not left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_loses_batches_not_the_run() {
    if crate::helpers::sqlite_only("a_busy_database_loses_batches_not_the_run") {
        return;
    }
    let (app, hostile) = collected().await;
    app.edit_config(|t| t.replace("[api]\n", "[api]\nmax_in_flight = 1\n"));
    let before = snapshot(&app);
    let ctx = context(&app);
    ctx.store
        .lock()
        .unwrap()
        .set_busy_timeout(std::time::Duration::from_millis(300))
        .unwrap();
    hostile.answer(Answer::Slow(std::time::Duration::from_millis(400)));
    let hits = Arc::clone(&hostile.hits);
    let db_path = app.db_path.clone();
    let holder = std::thread::spawn(move || {
        while hits.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let db = rusqlite::Connection::open(db_path).unwrap();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1000));
        db.execute_batch("COMMIT").unwrap();
    });
    let report = app.run(&ctx, &[JobKind::Totals]).await;
    holder.join().unwrap();
    assert_eq!(report.exit_code(), 1, "{report:?}");
    let lost: Vec<_> = report
        .requests
        .iter()
        .filter(|r| {
            r.error
                .as_deref()
                .unwrap_or_default()
                .contains("not stored")
        })
        .collect();
    assert!(!lost.is_empty(), "{report:?}");
    assert!(lost.iter().all(|r| r.outcome == BatchOutcome::Failed));
    let status: String = app
        .db()
        .query_row(
            "SELECT status FROM runs WHERE run_id = ?1",
            [report.run_id.unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "partial", "the run is closed");
    let after = snapshot(&app);
    assert!(before.totals.is_subset(&after.totals));
    let unchecked: Vec<i64> = after
        .checked
        .iter()
        .filter(|(t, at)| before.checked[*t] == **at)
        .map(|(t, _)| *t)
        .collect();
    assert!(
        !unchecked.is_empty(),
        "the lost batches' Tweets were not checked"
    );

    // The next run asks them again.
    hostile.answer(Answer::Pass);
    drop(ctx);
    let again = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(again.exit_code(), 0, "{again:?}");
    let last = snapshot(&app);
    for t in unchecked {
        assert_ne!(last.checked[&t], before.checked[&t], "{t} asked again");
    }
}

/// A token endpoint that answers a token no header can carry: the bearer batches fail once
/// each, not retried, with the reason; a 5xx from it is retried and never taken as a refusal.
#[tokio::test]
async fn a_bad_token_answer_is_not_retried() {
    let (app, _hostile) = collected().await;
    let tokens = Hostile::spawn(None).await;
    let url = format!("{}/oauth2/token", tokens.url());
    app.edit_config(|t| {
        let line = t
            .lines()
            .find(|l| l.starts_with("token_url"))
            .unwrap()
            .to_string();
        t.replace(&line, &format!("token_url = {url:?}"))
    });
    tokens.answer(Answer::Fixed(
        200,
        vec![("content-type", "application/json".into())],
        Bytes::from_static(br#"{"token_type":"bearer","access_token":"AAAA\r\nX-Injected: 1"}"#),
    ));
    let before = snapshot(&app);
    let report = app.run(&context(&app), &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 1, "{report:?}");
    let bearer: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.credential.label() == "bearer")
        .collect();
    assert!(!bearer.is_empty());
    for r in &bearer {
        assert_eq!((r.outcome, r.attempts), (BatchOutcome::Failed, 1), "{r:?}");
        assert!(
            r.error
                .as_deref()
                .unwrap_or_default()
                .contains("not a usable header value")
        );
    }
    assert!(report.app_refused.is_none(), "the keys were not refused");
    assert_eq!(tokens.hits(), 1, "asked once");
    let after = snapshot(&app);
    assert!(before.totals.is_subset(&after.totals));

    // A 503 from it is retried like any 5xx.
    tokens.answer(Answer::Fixed(503, Vec::new(), Bytes::new()));
    let report = app.run(&context(&app), &[JobKind::Totals]).await;
    assert!(report.app_refused.is_none());
    assert!(tokens.hits() >= 3, "{} token requests", tokens.hits());
}
