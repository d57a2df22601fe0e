//! Sharding: two shards (`[runtime] shard = "0/2"` and `"1/2"`), each with its own SQLite file,
//! against one simulator, compared with an unsharded run of the same inventory.

use std::collections::{BTreeMap, BTreeSet};

use engagement_ingest::domain::{JobKind, Shard, TweetId};
use engagement_ingest::sim::Stats;

use crate::helpers::{TestApp, set_in_section, text, two_series_metrics, world_of};

/// Requests per API endpoint, and the (endpoint, Tweet) pairs asked for, in `after` but not in
/// `before` (the same simulator's stats, earlier).
fn asked(before: &Stats, after: &Stats) -> (BTreeMap<String, u64>, BTreeSet<(String, u64)>) {
    let count = |s: &Stats, endpoint: &str| s.count(endpoint);
    let requests = ["totals", "28hr", "historical"]
        .into_iter()
        .map(|e| (e.to_string(), count(after, e) - count(before, e)))
        .collect();
    let earlier: BTreeMap<(&str, u64), u64> = before
        .tweets
        .iter()
        .map(|t| ((t.endpoint.as_str(), t.tweet_id.get()), t.count))
        .collect();
    let tweets = after
        .tweets
        .iter()
        .filter(|t| {
            t.count
                > earlier
                    .get(&(t.endpoint.as_str(), t.tweet_id.get()))
                    .copied()
                    .unwrap_or(0)
        })
        .map(|t| (t.endpoint.clone(), t.tweet_id.get()))
        .collect();
    (requests, tweets)
}

/// 30 Tweets of acme (shard 1), 40 of bob (shard 0), 250 public Tweets of each shard, all
/// younger than 90 days, and a simulator enforcing 50 requests a second per endpoint (copied
/// into the worker's `[limits]`). See [`two_shards_do_an_unsharded_run_s_work_between_them`].
pub fn sharded_world(now: i64) -> engagement_ingest::sim::World {
    let mut public: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for k in 0u32.. {
        if public.iter().all(|p| p.len() == 250) {
            break;
        }
        let id = TweetId::from_snowflake((now - 3600 - i64::from(k) * 1800) * 1000, k);
        let i = usize::from(Shard::new(1, 2).unwrap().owns_public(id));
        if public[i].len() < 250 {
            public[i].push(format!("{:?}", id.to_string()));
        }
    }
    let public = format!("[{}]", [&public[0][..], &public[1][..]].concat().join(", "));
    // The simulator enforces these budgets (a 429 would show in the counts) and the worker's
    // config copies them into `[limits]`: paced, so that each shard's share shows, and fast
    // enough that the test stays quick.
    let limits = "[limits]\n\
                  totals = { per_minute = 6000, per_second = 50 }\n\
                  \"28hr\" = { per_minute = 6000, per_second = 50 }\n\
                  historical = { per_minute = 6000, per_second = 50 }";
    world_of("30", "40", &public, &format!("spread_days = 80\n{limits}"))
}

/// Every latest total of a database: (Tweet, metric, value).
fn latest_totals(db: &rusqlite::Connection) -> BTreeSet<(i64, String, i64)> {
    let mut stmt = db
        .prepare("SELECT tweet_id, metric, value FROM latest_totals")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Two shards together do an unsharded run's work, each only its part: the Tweets asked for
/// are the unsharded run's, none is asked for by both, the request counts add up, each stores
/// exactly its Tweets' totals, and each paces at half of `[limits]`.
///
/// acme's Tweets are shard 1's and bob's shard 0's (FNV-1a 64 of the handle: 0x0724d383f4f6de0f
/// is odd, bob's even). The bearer token's `/totals` batches are the one place where splitting
/// can cost requests (two part-full batches instead of one): here the public Tweets are 250 of
/// each shard (a full batch each), and the owned ones all younger than 90 days (read with their
/// owner's token), so that the counts can add up exactly.
#[tokio::test]
async fn two_shards_do_an_unsharded_run_s_work_between_them() {
    if crate::helpers::sqlite_only("two_shards_do_an_unsharded_run_s_work_between_them") {
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let app = TestApp::spawn_at(sharded_world(now), now).await;
    app.edit_config(two_series_metrics);
    let base = std::fs::read_to_string(&app.config_path).unwrap();
    let db_line = format!("path = {:?}", app.db_path.to_string_lossy());
    assert!(base.contains(&db_line), "{base}");
    let shard_config = |i: usize| {
        let db = app._dir.path().join(format!("shard-{i}.sqlite"));
        let text = set_in_section(
            &base.replace(&db_line, &format!("path = {:?}", db.to_string_lossy())),
            "runtime",
            &format!("shard = \"{i}/2\""),
        );
        let path = app._dir.path().join(format!("shard-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        (path, db)
    };
    let shards = [shard_config(0), shard_config(1)];

    // The unsharded run, then both shards at once, against the same simulator.
    let start = app.sim().stats();
    let whole = app.run(&app.context(), &JobKind::ALL).await;
    assert_eq!(whole.failed().count(), 0);
    let after_whole = app.sim().stats();
    let contexts: Vec<_> = shards
        .iter()
        .map(|(path, _)| {
            let config = engagement_ingest::config::Config::load(Some(path), std::iter::empty())
                .expect("the shard's config loads");
            engagement_ingest::pipeline::Context::new(config, app.worker_clock.clone())
                .expect("context builds")
        })
        .collect();
    let (r0, r1) = tokio::join!(
        app.run(&contexts[0], &JobKind::ALL),
        app.run(&contexts[1], &JobKind::ALL)
    );
    assert_eq!(r0.failed().count() + r1.failed().count(), 0);
    let after_shards = app.sim().stats();
    let (whole_requests, whole_tweets) = asked(&start, &after_whole);
    let (shard_requests, shard_tweets) = asked(&after_whole, &after_shards);
    assert!(
        whole_requests.values().all(|&n| n > 0),
        "{whole_requests:?}"
    );
    assert_eq!(
        shard_requests, whole_requests,
        "the shards' requests add up"
    );
    assert_eq!(shard_tweets, whole_tweets, "the same Tweets are asked for");
    assert_eq!(
        r0.planned + r1.planned,
        whole.planned,
        "planned: {} + {} vs {}",
        r0.planned,
        r1.planned,
        whole.planned
    );

    // No Tweet is asked for by both: each shard's stored totals are its own Tweets', and
    // together they are the unsharded run's.
    let whole_totals = latest_totals(&app.db());
    let parts: Vec<BTreeSet<(i64, String, i64)>> = shards
        .iter()
        .map(|(_, db)| latest_totals(&rusqlite::Connection::open(db).unwrap()))
        .collect();
    assert!(!parts[0].is_empty() && !parts[1].is_empty());
    let ids = |s: &BTreeSet<(i64, String, i64)>| s.iter().map(|t| t.0).collect::<BTreeSet<_>>();
    assert!(ids(&parts[0]).is_disjoint(&ids(&parts[1])));
    assert_eq!(&parts[0] | &parts[1], whole_totals);
    // Every shard mirrors the whole inventory (one shared `tweets` table in PostgreSQL).
    for (_, db) in &shards {
        let n: i64 = rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM tweets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 570);
    }
    // Shard 1 asked for acme's Tweets with acme's token, shard 0 for bob's with bob's.
    let credentials = |r: &engagement_ingest::pipeline::RunReport| {
        r.requests
            .iter()
            .map(|q| q.credential.label().to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        credentials(&r0),
        BTreeSet::from(["bearer".into(), "bob".into()])
    );
    assert_eq!(
        credentials(&r1),
        BTreeSet::from(["acme".into(), "bearer".into()])
    );

    // `plan` shows each shard's part and its pace: half of every limit.
    for (i, (path, _)) in shards.iter().enumerate() {
        let out = crate::helpers::run_binary(vec![
            "--config".into(),
            path.to_string_lossy().into_owned(),
            "plan".into(),
            "--format".into(),
            "json".into(),
            "--job".into(),
            "totals".into(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let shard = &plan["shard"];
        assert_eq!(
            (shard["index"].as_u64(), shard["count"].as_u64()),
            (Some(i as u64), Some(2))
        );
        assert_eq!(shard["tweets"], if i == 0 { 290 } else { 280 }, "{shard}");
        assert_eq!(
            (shard["accounts"].as_u64(), shard["total_accounts"].as_u64()),
            (Some(1), Some(2))
        );
        for e in ["totals", "28hr", "historical"] {
            assert_eq!(shard["contract_limits"][e]["per_second"], 50, "{shard}");
            assert_eq!(shard["limits"][e]["per_second"], 25, "{shard}");
            assert_eq!(shard["limits"][e]["per_minute"], 3000, "{shard}");
        }
        // A forced /totals cycle: one bearer request and one of the shard's account.
        assert_eq!(plan["kinds"][0]["requests"], 2, "{plan}");
        let table = crate::helpers::run_binary(vec![
            "--config".into(),
            path.to_string_lossy().into_owned(),
            "plan".into(),
            "--summary".into(),
        ])
        .await;
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        let line = format!(
            "shard {i}/2: {} of 570 Tweets, 1 of 2 accounts, pacing at 1/2 of [limits]",
            if i == 0 { 290 } else { 280 }
        );
        assert!(table.starts_with(&line), "{table}");
    }
}
