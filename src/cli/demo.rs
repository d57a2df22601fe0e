//! `demo`: the simulator in-process on a loopback port, a generated world, one full cycle into
//! `--db`, and a short report. Needs no credentials and no network.

use std::collections::BTreeMap;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::plan::count;
use super::run::{pipeline_failure, print_report, stored_buckets};
use super::{DemoArgs, Failure};
use crate::config::Config;
use crate::domain::{DAY_SECS, JobKind, Metric};
use crate::pipeline::{self, Context};
use crate::sim;
use crate::store::{DailyQuery, Owner, TopBasis, TopQuery};

/// Seed of the demo world: the same Tweets and numbers on every run of the same day.
const DEMO_SEED: u64 = 7;

/// Runs the demo and prints what it did.
pub async fn demo(args: &DemoArgs) -> Result<u8, Failure> {
    let dir = tempfile::tempdir()
        .context("cannot create a temporary folder")
        .map_err(Failure::fatal)?;
    let handle = sim::spawn(sim::demo_world(DEMO_SEED), ([127, 0, 0, 1], 0).into())
        .await
        .map_err(Failure::fatal)?;
    let inventory_path = dir.path().join("tweets.csv");
    let config_path = dir.path().join("config.toml");
    let written = std::fs::write(&inventory_path, handle.sim.inventory_csv()).and_then(|()| {
        let toml = handle
            .sim
            .worker_config_toml(&handle.base_url(), &inventory_path.to_string_lossy());
        std::fs::write(&config_path, toml)
    });
    written
        .context("cannot write the demo config")
        .map_err(Failure::fatal)?;
    // The process environment is left out: ENGAGEMENT__* variables meant for a real config must
    // not leak into the demo's.
    let mut config =
        Config::load(Some(&config_path), std::iter::empty()).map_err(Failure::fatal)?;
    let target = crate::store::Target::parse(&args.db, None)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--db: {e}")))?;
    config.database.path = std::path::PathBuf::from(target.to_string());
    config.database.target = Some(target);

    let accounts = config.accounts.len();
    let tweets = handle.sim.tweets().len();
    let owned = handle
        .sim
        .tweets()
        .iter()
        .filter(|t| t.owner.is_some())
        .count();
    println!(
        "engagement-ingest demo: simulator on {}, {}, {} ({owned} owned, {} public)",
        handle.base_url(),
        count(accounts, "account", "accounts"),
        count(tweets, "Tweet", "Tweets"),
        tweets - owned
    );
    let ctx = Context::new(config, pipeline::system_clock()).map_err(pipeline_failure)?;
    let before = stored_buckets(&ctx);
    let report = pipeline::run_once(&ctx, &JobKind::ALL, &CancellationToken::new())
        .await
        .map_err(pipeline_failure)?;
    print_report(&report, before.zip(stored_buckets(&ctx)));

    let stats = handle.sim.stats();
    let mut seen: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &stats.requests {
        let credential = if r.credential == "bearer" || r.endpoint == "oauth2/token" {
            r.credential.clone()
        } else {
            "user".to_string()
        };
        *seen
            .entry((r.endpoint.clone(), format!("{credential} {}", r.status)))
            .or_default() += r.count;
    }
    println!("  the simulator saw:");
    for ((endpoint, what), n) in seen {
        println!("    /{endpoint:<13} {what:<12} {n:>4}");
    }
    println!(
        "  unique handles queried: {}",
        stats
            .unique_handles
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    print_database(&ctx.store.lock().expect("store mutex poisoned"))?;
    handle.shutdown().await.map_err(Failure::fatal)?;
    Ok(report.exit_code())
}

fn print_database(store: &crate::store::Store) -> Result<(), Failure> {
    print_top(store, Metric::Impressions, "owned Tweets by impressions")?;
    print_top(store, Metric::Favorites, "all Tweets by favorites")?;
    print_daily(store, Metric::Impressions, 7)?;
    let rows = |table: &str| -> Result<usize, Failure> {
        let n = store.count(table).map_err(Failure::fatal)?;
        Ok(usize::try_from(n).unwrap_or(0))
    };
    println!(
        "\ndatabase: {} ({}, {}, {})",
        store.target(),
        count(rows("totals")?, "snapshot row", "snapshot rows"),
        count(rows("series")?, "hourly bucket", "hourly buckets"),
        count(rows("tweets")?, "Tweet", "Tweets")
    );
    let example =
        "SELECT * FROM latest_totals WHERE metric = 'impressions' ORDER BY value DESC LIMIT 5";
    match store.target() {
        crate::store::Target::Sqlite(path) => {
            println!("try: sqlite3 {} \"{example}\"", path.display())
        }
        target => println!("try: psql {target} -c \"{example}\""),
    }
    Ok(())
}

/// A table of the last `days` UTC days (today included) per account, from the hourly series.
fn print_daily(store: &crate::store::Store, metric: Metric, days: i64) -> Result<(), Failure> {
    let today = chrono::Utc::now().date_naive();
    let first = today - chrono::Days::new(days as u64 - 1);
    let since = first.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
    let rows = store
        .daily(&DailyQuery {
            metric,
            since,
            until: None,
            owner: Owner::Any,
        })
        .map_err(Failure::fatal)?;
    let dates: Vec<String> = first
        .iter_days()
        .take(days as usize)
        .map(|d| d.format("%m-%d").to_string())
        .collect();
    let mut table: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for point in rows {
        let day = chrono::DateTime::from_timestamp(point.day * DAY_SECS, 0)
            .map(|d| d.format("%m-%d").to_string())
            .unwrap_or_default();
        table
            .entry(point.owner)
            .or_default()
            .insert(day, point.value);
    }
    println!("\ndaily {metric} per account (UTC; today so far):");
    print!("  {:<12}", "account");
    for d in &dates {
        print!(" {d:>8}");
    }
    println!();
    for (owner, values) in table {
        print!("  {owner:<12}");
        for d in &dates {
            print!(" {:>8}", values.get(d).copied().unwrap_or(0));
        }
        println!();
    }
    Ok(())
}

fn print_top(store: &crate::store::Store, metric: Metric, title: &str) -> Result<(), Failure> {
    // Lifetime totals: the growth since ever is the latest value.
    let rows = store
        .top_tweets(&TopQuery {
            metric,
            since: i64::MIN,
            until: None,
            owner: Owner::Any,
            limit: 5,
            basis: TopBasis::Totals,
            only_positive: false,
        })
        .map_err(Failure::fatal)?;
    println!("\ntop {title}:");
    println!(
        "  {:<20} {:<12} {:>10}",
        "tweet_id",
        "owner",
        metric.as_str()
    );
    for t in rows {
        println!(
            "  {:<20} {:<12} {:>10}",
            t.tweet.to_string(),
            t.owner.as_deref().unwrap_or("(public)"),
            t.value
        );
    }
    Ok(())
}
