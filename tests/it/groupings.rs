//! Property test of `parse::parse` against the simulator: random valid grouping shapes, sent over
//! HTTP, parsed back to typed rows and checked against numbers computed from `Sim::bucket` and
//! `Sim::total`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use engagement_ingest::auth::{self, AppKeys, Pinned, UserToken};
use engagement_ingest::config::Secret;
use engagement_ingest::domain::{
    DAY_SECS, Endpoint, HOUR_SECS, Hour, IMPRESSIONS_MAX_AGE_SECS, Metric, TweetId,
};
use engagement_ingest::parse::{self, GroupBy, Row};
use engagement_ingest::sim::{self, ManualClock, Sim, TweetState};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::helpers::{ACME_SECRET, CONSUMER_SECRET, world};

/// Fixed so a failure reproduces; `GROUPINGS_SEED` overrides it to explore other cases.
const SEED: u64 = 0x5eed_2024_0611;
/// Requests per run.
const CASES: usize = 40;
/// The simulator's Tweets are generated for the UTC day of this instant (2025-10-09T08:53:20Z);
/// each case moves the clock to a time at most two days later.
const BASE_NOW: i64 = 1_760_000_000;
/// At most this many (Tweet, type, hour) numbers per series request, to bound the runtime.
const MAX_FACTS: usize = 100_000;
const MAX_WINDOW_SECS: i64 = 28 * DAY_SECS;
/// Grouping names, some needing JSON escapes, all coming back verbatim as top-level keys.
const NAMES: [&str; 7] = [
    "hourly-time-series",
    "Grand Totals",
    "by type",
    "g1",
    "séries ☃",
    "a \"quoted\" name",
    "x",
];

/// One generated request.
#[derive(Debug)]
struct Case {
    endpoint: Endpoint,
    now: i64,
    ids: Vec<TweetId>,
    metrics: Vec<Metric>,
    groupings: Vec<(String, Vec<GroupBy>)>,
    /// `/historical` only: the instant meant and the text sent.
    start: Option<(i64, String)>,
    end: Option<(i64, String)>,
}

/// The keys of one parsed row: (tweet, metric, day start, hour of day).
type Key = (Option<TweetId>, Option<Metric>, Option<i64>, Option<u8>);

fn iso(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A time near `t` (never later) in one of the forms `/historical` reads, and the instant it means.
fn time_form(rng: &mut StdRng, t: i64) -> (i64, String) {
    let fmt = |t: i64, f: &str| Utc.timestamp_opt(t, 0).unwrap().format(f).to_string();
    match rng.random_range(0..5) {
        0 => {
            let d = t.div_euclid(DAY_SECS) * DAY_SECS;
            (d, fmt(d, "%Y-%m-%d"))
        }
        1 => {
            let h = Hour::floor(t).secs();
            (h, fmt(h, "%Y-%m-%dT%H:%M:%SZ"))
        }
        2 => (t, fmt(t, "%Y-%m-%dT%H:%M:%SZ")),
        3 => (t, fmt(t, "%Y-%m-%dT%H:%M:%S")),
        _ => {
            let m = t - t.rem_euclid(60);
            (m, fmt(m, "%Y-%m-%dT%H:%MZ"))
        }
    }
}

/// A random valid `group_by`: `engagement.type` plus a random subset of the other keys the
/// endpoint allows, in random order; a 4-item list only in an allowed order, at most once.
fn group_by(rng: &mut StdRng, endpoint: Endpoint, four_taken: &mut bool) -> Vec<GroupBy> {
    let others: &[GroupBy] = if endpoint == Endpoint::Totals {
        &[GroupBy::TweetId]
    } else {
        &[GroupBy::TweetId, GroupBy::Day, GroupBy::Hour]
    };
    let mut keys = vec![GroupBy::EngagementType];
    keys.extend(others.iter().filter(|_| rng.random_bool(0.5)));
    if keys.len() == 4 {
        if !*four_taken && rng.random_bool(0.7) {
            *four_taken = true;
            let tweet_first = rng.random_bool(0.5);
            return if tweet_first {
                vec![
                    GroupBy::TweetId,
                    GroupBy::EngagementType,
                    GroupBy::Day,
                    GroupBy::Hour,
                ]
            } else {
                vec![
                    GroupBy::EngagementType,
                    GroupBy::TweetId,
                    GroupBy::Day,
                    GroupBy::Hour,
                ]
            };
        }
        let drop = rng.random_range(1..4);
        keys.remove(drop);
    }
    keys.shuffle(rng);
    keys
}

/// A `/historical` window of at most `max_hours` rounded hours, ending no later than `now`.
fn window(rng: &mut StdRng, now: i64, max_hours: i64) -> (Option<(i64, String)>, (i64, String)) {
    loop {
        let back = match rng.random_range(0..3) {
            0 => rng.random_range(0..=2 * HOUR_SECS),
            1 => rng.random_range(0..=3 * DAY_SECS),
            _ => rng.random_range(0..=140 * DAY_SECS),
        };
        let span = rng.random_range(1..=max_hours * HOUR_SECS);
        // Sometimes only `start`: the window runs 4 weeks from it, never past now.
        if rng.random_range(0..8) == 0 {
            let start = time_form(rng, now - span);
            let end = (start.0 + MAX_WINDOW_SECS).min(now);
            if start.0 < end
                && Hour::ceil(end).secs() - Hour::floor(start.0).secs() <= max_hours * HOUR_SECS
            {
                return (None, start);
            }
            continue;
        }
        let end = time_form(rng, now - back);
        let start = time_form(rng, end.0 - span);
        let rounded = Hour::ceil(end.0).secs() - Hour::floor(start.0).secs();
        if start.0 < end.0 && rounded <= (max_hours * HOUR_SECS).min(MAX_WINDOW_SECS) {
            return (Some(end), start);
        }
    }
}

fn generate(rng: &mut StdRng, sim: &Sim, base_day: i64) -> Case {
    let endpoint = *[Endpoint::Totals, Endpoint::Hour28, Endpoint::Historical]
        .choose(rng)
        .unwrap();
    let hour = base_day + rng.random_range(0..48) * HOUR_SECS;
    let now = hour
        + *[0, 1, 1799, 3599, rng.random_range(0..HOUR_SECS)]
            .choose(rng)
            .unwrap();

    let all = endpoint.metrics();
    let n_metrics = rng.random_range(1..=all.len());
    let metrics: Vec<Metric> = all.choose_multiple(rng, n_metrics).copied().collect();
    // Only Tweets the simulator answers for every requested type: acme's active ones, and on
    // /totals with impressions or engagements only those younger than 90 days.
    let needs_young = endpoint == Endpoint::Totals
        && metrics
            .iter()
            .any(|m| matches!(m, Metric::Impressions | Metric::Engagements));
    let pool: Vec<TweetId> = sim
        .tweets()
        .iter()
        .filter(|t| t.state == TweetState::Active)
        .filter(|t| t.owner.as_ref().is_some_and(|h| h.as_str() == "acme"))
        .filter(|t| !needs_young || t.id.age_at(now) < IMPRESSIONS_MAX_AGE_SECS - DAY_SECS)
        .map(|t| t.id)
        .collect();
    let max_ids = pool.len().min(endpoint.max_ids());
    let n_ids = rng.random_range(1..=max_ids);
    let ids: Vec<TweetId> = pool.choose_multiple(rng, n_ids).copied().collect();

    let mut names = NAMES.to_vec();
    names.shuffle(rng);
    let mut four_taken = false;
    let groupings = names[..rng.random_range(1..=3)]
        .iter()
        .map(|n| (n.to_string(), group_by(rng, endpoint, &mut four_taken)))
        .collect();

    let (start, end) = if endpoint == Endpoint::Historical {
        let per_hour = (ids.len() * metrics.len()) as i64;
        let max_hours = (MAX_FACTS as i64 / per_hour).clamp(1, 28 * 24);
        let (end, start) = window(rng, now, max_hours);
        (Some(start), end)
    } else {
        (None, None)
    };
    Case {
        endpoint,
        now,
        ids,
        metrics,
        groupings,
        start,
        end,
    }
}

/// The window's hours as the API defines it, or `None` for `/totals`; and the echoed end.
fn hours(case: &Case) -> Option<(Vec<Hour>, String)> {
    let (s, e, echo_end) = match case.endpoint {
        Endpoint::Totals => return None,
        Endpoint::Hour28 => {
            let e = Hour::ceil(case.now);
            (case.now - 28 * HOUR_SECS, e.secs(), e.to_string())
        }
        Endpoint::Historical => {
            let s = case.start.as_ref().unwrap().0;
            let e = case
                .end
                .as_ref()
                .map_or((s + MAX_WINDOW_SECS).min(case.now), |e| e.0);
            (s, e, iso(e))
        }
    };
    let (first, last) = (Hour::floor(s), Hour::ceil(e));
    let n = (last.secs() - first.secs()) / HOUR_SECS;
    Some(((0..n).map(|i| first.plus_hours(i)).collect(), echo_end))
}

/// What each grouping of a dense answer must contain: one row per distinct key projection of
/// every (Tweet, type[, hour]) number, valued at the sum of the numbers it covers.
fn expected(sim: &Sim, case: &Case, ctx: &str) -> Vec<HashMap<Key, i64>> {
    let window = hours(case).map(|(h, _)| h);
    let mut facts: Vec<(TweetId, Metric, Option<Hour>, i64)> = Vec::new();
    for &t in &case.ids {
        for &m in &case.metrics {
            let Some(hours) = &window else {
                facts.push((t, m, None, sim.total(t, m, case.now)));
                continue;
            };
            let mut sum = 0;
            for &h in hours {
                // Hours that have not ended read 0.
                let ended = h.plus_hours(1).secs() <= case.now;
                let v = if ended { sim.bucket(t, m, h) } else { 0 };
                sum += v;
                facts.push((t, m, Some(h), v));
            }
            // Self-check of the model: the window's buckets add up to the change of the total.
            let (first, end) = (hours[0].secs(), hours.last().unwrap().plus_hours(1).secs());
            assert_eq!(
                sum,
                sim.total(t, m, end.min(case.now)) - sim.total(t, m, first),
                "{ctx}: model buckets of {t} {m}"
            );
        }
    }
    case.groupings
        .iter()
        .map(|(_, keys)| {
            let mut out: HashMap<Key, i64> = HashMap::new();
            for &(t, m, h, v) in &facts {
                let key = (
                    keys.contains(&GroupBy::TweetId).then_some(t),
                    Some(m),
                    keys.contains(&GroupBy::Day)
                        .then(|| h.unwrap().secs().div_euclid(DAY_SECS) * DAY_SECS),
                    keys.contains(&GroupBy::Hour)
                        .then(|| (h.unwrap().secs().rem_euclid(DAY_SECS) / HOUR_SECS) as u8),
                );
                *out.entry(key).or_default() += v;
            }
            out
        })
        .collect()
}

fn body(case: &Case) -> Value {
    let groupings: Map<String, Value> = case
        .groupings
        .iter()
        .map(|(name, keys)| {
            let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
            (name.clone(), json!({ "group_by": keys }))
        })
        .collect();
    let mut body = json!({
        "tweet_ids": case.ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": case.metrics.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "groupings": groupings,
    });
    if let Some((_, s)) = &case.start {
        body["start"] = json!(s);
    }
    if let Some((_, e)) = &case.end {
        body["end"] = json!(e);
    }
    body
}

fn check_rows(rows: &[Row], want: &HashMap<Key, i64>, window: Option<&[Hour]>, ctx: &str) {
    let mut got: HashMap<Key, i64> = HashMap::new();
    for r in rows {
        let key = (r.tweet, r.metric, r.day, r.hour);
        assert!(got.insert(key, r.value).is_none(), "{ctx}: row {r:?} twice");
        assert_eq!(
            want.get(&key),
            Some(&r.value),
            "{ctx}: row {r:?} (expected value on the left, None = no such key)"
        );
        match (r.day, r.hour) {
            (Some(_), Some(_)) => {
                let b = r.bucket().expect("day and hour make a bucket");
                assert!(
                    window.is_some_and(|w| w.contains(&b)),
                    "{ctx}: bucket {b} outside the window"
                );
            }
            _ => assert_eq!(r.bucket(), None, "{ctx}: {r:?}"),
        }
    }
    let missing: Vec<&Key> = want
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(5)
        .collect();
    assert_eq!(
        rows.len(),
        want.len(),
        "{ctx}: row count (got, dense); first missing keys {missing:?}"
    );
}

/// Random valid groupings on every endpoint parse back to the simulator's numbers, densely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_groupings_parse_back_to_the_simulators_numbers() {
    let started = Instant::now();
    let seed = std::env::var("GROUPINGS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let clock = ManualClock::new(BASE_NOW);
    let sim = Arc::new(Sim::with_clock(world(60, 3, 3, 4), clock.clock()));
    let handle = sim::spawn_sim(sim.clone(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("simulator binds");
    let base_day = sim.start_day();
    let http = reqwest::Client::new();
    let app = AppKeys {
        consumer_key: "it-consumer".into(),
        consumer_secret: Secret::new(CONSUMER_SECRET),
    };
    let acme = UserToken {
        access_token: "1001-acme".into(),
        access_token_secret: Secret::new(ACME_SECRET),
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let mut shapes: BTreeSet<(&str, Vec<&str>)> = BTreeSet::new();
    let mut rows_checked = 0;
    for i in 0..CASES {
        let case = generate(&mut rng, &sim, base_day);
        clock.set(case.now);
        let request = body(&case);
        let ctx = format!(
            "seed {seed} case {i} at {} ({}): {request}",
            iso(case.now),
            case.endpoint
        );

        let url = format!("{}{}", handle.base_url(), case.endpoint.path());
        // Signed at the simulator's (moved) clock, so its timestamp check agrees.
        let pinned = Pinned {
            nonce: None,
            timestamp: Some(case.now as u64),
        };
        let authorization = auth::oauth1_header("POST", &url, &app, &acme, &[], pinned);
        let resp = http
            .post(&url)
            .header("Authorization", authorization)
            .header("Accept-Encoding", "gzip")
            .json(&request)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body read");
        assert_eq!(status, 200, "{ctx}: {}", String::from_utf8_lossy(&bytes));

        let specs: Vec<(&str, &[GroupBy])> = case
            .groupings
            .iter()
            .map(|(n, k)| (n.as_str(), k.as_slice()))
            .collect();
        let parsed = parse::parse(&bytes, &specs).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert!(
            parsed.unavailable.is_empty()
                && parsed.unsupported_impressions.is_empty()
                && parsed.unsupported_video_views.is_empty()
                && parsed.errors.is_empty()
                && parsed.unknown_metrics.is_empty(),
            "{ctx}: partial answer {parsed:?}"
        );
        let window = hours(&case);
        assert_eq!(
            (parsed.start.clone(), parsed.end.clone()),
            window.as_ref().map_or((None, None), |(h, end)| (
                Some(h[0].to_string()),
                Some(end.clone())
            )),
            "{ctx}: echoed start/end"
        );
        let wants = expected(&sim, &case, &ctx);
        assert_eq!(parsed.groupings.len(), case.groupings.len(), "{ctx}");
        for ((name, keys), want) in case.groupings.iter().zip(&wants) {
            let rows = &parsed.groupings[name];
            let ctx = format!("{ctx}\n  grouping {name:?} {keys:?}");
            check_rows(rows, want, window.as_ref().map(|(h, _)| h.as_slice()), &ctx);
            rows_checked += rows.len();
            shapes.insert((
                case.endpoint.name(),
                keys.iter().map(|k| k.as_str()).collect(),
            ));
        }
    }
    drop(http);
    handle.shutdown().await.expect("simulator stops");

    // The seed must have exercised the shapes this test is about.
    use GroupBy::{Day, EngagementType as Type, Hour as H, TweetId as Id};
    let names = |keys: &[GroupBy]| keys.iter().map(|k| k.as_str()).collect::<Vec<_>>();
    let seen = |endpoints: &[&str], keys: &[GroupBy]| {
        endpoints
            .iter()
            .any(|e| shapes.contains(&(*e, names(keys))))
    };
    let series: &[&str] = &["28hr", "historical"];
    for (endpoints, keys) in [
        (&["totals"][..], &[Type][..]),
        (&["totals"][..], &[Id, Type][..]),
        (&["totals"][..], &[Type, Id][..]),
        (&["28hr"][..], &[Type][..]),
        (&["historical"][..], &[Type][..]),
        (series, &[Id, Type, Day, H][..]),
        (series, &[Type, Id, Day, H][..]),
    ] {
        assert!(
            seen(endpoints, keys),
            "seed {seed} never tried {endpoints:?} {keys:?}: {shapes:?}"
        );
    }
    let any = |p: &dyn Fn(&Vec<&str>) -> bool| shapes.iter().any(|(_, k)| p(k));
    assert!(
        any(&|k| k.contains(&"engagement.hour") && !k.contains(&"engagement.day")),
        "seed {seed} never tried hour without day"
    );
    assert!(
        any(&|k| k.contains(&"engagement.day") && !k.contains(&"engagement.hour")),
        "seed {seed} never tried day without hour"
    );
    eprintln!(
        "groupings: seed {seed}, {CASES} requests, {} shapes, {rows_checked} rows in {:?}",
        shapes.len(),
        started.elapsed()
    );
}
