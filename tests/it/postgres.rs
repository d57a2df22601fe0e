//! PostgreSQL against a real server (`ENGAGEMENT_INGEST_TEST_PG`): the same content as SQLite,
//! `copy`, the shard's writer lock, and a wrong URL or password. Ignored without a server
//! (reported as ignored by `cargo test`); CI runs them with `--ignored` and a server.

use std::collections::BTreeMap;

use engagement_ingest::domain::JobKind;
use engagement_ingest::store::Store;
use engagement_ingest::store::copy::TABLES;

use crate::helpers::{PgDb, TestApp, demo_in, pg_or_skip, text, world};

/// Every row of every table, as text, ordered; `skip` names columns left out (`table.column`).
fn contents(db: &rusqlite::Connection, skip: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for table in TABLES {
        let columns: Vec<String> = db
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .filter(|c: &String| !skip.contains(&format!("{table}.{c}").as_str()))
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY 1",
            columns
                .iter()
                .map(|c| format!("quote({c})"))
                .collect::<Vec<_>>()
                .join(" || '|' || ")
        );
        let rows: Vec<String> = db
            .prepare(&sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.insert(table.to_string(), rows);
    }
    out
}

fn assert_same(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>) {
    for table in TABLES {
        let (x, y) = (&a[*table], &b[*table]);
        assert_eq!(
            x.len(),
            y.len(),
            "{table}: {} rows against {}",
            x.len(),
            y.len()
        );
        for (i, (l, r)) in x.iter().zip(y).enumerate() {
            assert_eq!(l, r, "{table} row {i}");
        }
    }
}

/// The same cycles against the same simulator (frozen clock) store identical content in
/// SQLite and in PostgreSQL, table by table and row by row (the requests' wall-clock
/// durations left out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (ENGAGEMENT_INGEST_TEST_PG)"]
async fn sqlite_and_postgres_store_identical_content() {
    let Some(server) = pg_or_skip("sqlite_and_postgres_store_identical_content") else {
        return;
    };
    let app = TestApp::spawn(world(12, 8, 6, 1)).await;
    let kinds = [JobKind::Totals, JobKind::Hourly, JobKind::Historical];
    {
        let ctx = app.context();
        assert_eq!(app.run(&ctx, &kinds).await.exit_code(), 0);
        assert_eq!(app.run(&ctx, &kinds).await.exit_code(), 0);
    }
    let on_sqlite = contents(
        &rusqlite::Connection::open(&app.db_path).unwrap(),
        &["requests.duration_ms", "requests.seq"],
    );
    assert!(
        on_sqlite["series"].len() > 100,
        "too little stored to compare"
    );

    let pg = PgDb::create(&server);
    let path = app.db_path.to_string_lossy().into_owned();
    app.edit_config(|t| t.replace(&format!("path = {path:?}"), &format!("url = {:?}", pg.url)));
    {
        let ctx = app.context();
        assert_eq!(app.run(&ctx, &kinds).await.exit_code(), 0);
        assert_eq!(app.run(&ctx, &kinds).await.exit_code(), 0);
    }
    let snapshot = pg.snapshot(&app._dir.path().join("pg-copy.sqlite"));
    assert_same(
        &on_sqlite,
        &contents(&snapshot, &["requests.duration_ms", "requests.seq"]),
    );
}

/// `copy` moves the demo database into PostgreSQL: it reports the copy verified, and the
/// content read back equals the file's, row by row. A second copy adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (ENGAGEMENT_INGEST_TEST_PG)"]
async fn copy_moves_the_demo_database_into_postgres() {
    let Some(server) = pg_or_skip("copy_moves_the_demo_database_into_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (demo, _) = demo_in(dir.path()).await;
    let pg = PgDb::create(&server);
    let copy = |_: ()| {
        crate::helpers::binary()
            .args(["copy", "--from", &demo.to_string_lossy(), "--to", &pg.url])
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| copy(()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verified: 12 tables"), "{}", text(&out));
    let snapshot = pg.snapshot(&dir.path().join("back.sqlite"));
    let file = rusqlite::Connection::open(&demo).unwrap();
    assert_same(&contents(&file, &[]), &contents(&snapshot, &[]));
    // Resumable: what is there already is kept, nothing is added twice.
    let again = tokio::task::block_in_place(|| copy(()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        text(&again).contains("series") && text(&again).contains(" 0 new"),
        "{}",
        text(&again)
    );
}

/// A second writer of the same shard exits 4 and names the lock; the first one's connection
/// going away frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (ENGAGEMENT_INGEST_TEST_PG)"]
async fn a_second_writer_of_the_shard_exits_4() {
    let Some(server) = pg_or_skip("a_second_writer_of_the_shard_exits_4") else {
        return;
    };
    let app = TestApp::spawn(world(3, 0, 0, 0)).await;
    let pg = PgDb::create(&server);
    let path = app.db_path.to_string_lossy().into_owned();
    app.edit_config(|t| t.replace(&format!("path = {path:?}"), &format!("url = {:?}", pg.url)));
    // Another writer of shard 0/1, on a thread of its own (the driver blocks).
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let target = pg.target();
    let holder = std::thread::spawn(move || {
        let mut store = Store::open(&target).unwrap();
        store.lock_shard("0/1").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        drop(store);
    });
    locked_rx.recv().unwrap();
    let out = app.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("advisory lock"), "{}", text(&out));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let out = app.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A database that does not exist, or a wrong password, exits 3 with the host and the
/// database named and the password nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (ENGAGEMENT_INGEST_TEST_PG)"]
async fn a_wrong_url_or_password_exits_3_without_the_password() {
    let Some(server) = pg_or_skip("a_wrong_url_or_password_exits_3_without_the_password") else {
        return;
    };
    let app = TestApp::spawn(world(2, 0, 0, 0)).await;
    let path = app.db_path.to_string_lossy().into_owned();
    let mut cases = vec![(
        crate::helpers::with_dbname(&server, "no_such_database_here"),
        "no_such_database_here",
    )];
    // The wrong password: the TCP address of the server with a password it refuses
    // (`ENGAGEMENT_INGEST_TEST_PG_TCP`, where the server checks passwords).
    if let Ok(tcp) = std::env::var("ENGAGEMENT_INGEST_TEST_PG_TCP") {
        let (scheme, rest) = tcp.split_once("://").unwrap();
        let (user_part, host_part) = rest.split_once('@').unwrap();
        let user = user_part.split(':').next().unwrap();
        cases.push((
            format!("{scheme}://{user}:Wr0ngSecret@{host_part}"),
            "Wr0ngSecret",
        ));
    } else {
        eprintln!("the wrong-password case is skipped: ENGAGEMENT_INGEST_TEST_PG_TCP is not set");
    }
    let mut previous = format!("path = {path:?}");
    for (url, secret_or_db) in cases {
        let line = format!("url = {url:?}");
        app.edit_config(|t| t.replace(&previous, &line));
        previous = line;
        let out = app.cli(&["run"]).await;
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(3), "{shown}");
        assert!(
            shown.contains("cannot connect to PostgreSQL database"),
            "{shown}"
        );
        if secret_or_db == "Wr0ngSecret" {
            assert!(
                !shown.contains("Wr0ngSecret"),
                "the password is shown: {shown}"
            );
            assert!(shown.contains("127.0.0.1"), "{shown}");
        } else {
            assert!(shown.contains(secret_or_db), "{shown}");
        }
    }
}

/// Two shards writing one PostgreSQL database at the same time end with the content of one
/// unsharded run (every table but the run and request ledgers, row by row), their request
/// counts add up to the unsharded run's, no Tweet is asked for by both, each paces at half of
/// `[limits]`, and each handle is counted once in the month's usage.
#[tokio::test]
#[ignore = "needs PostgreSQL (ENGAGEMENT_INGEST_TEST_PG)"]
async fn two_shards_share_one_postgres_database() {
    let Some(server) = pg_or_skip("two_shards_share_one_postgres_database") else {
        return;
    };
    let now = chrono::Utc::now().timestamp();
    let app = TestApp::spawn_at(crate::shards::sharded_world(now), now).await;
    app.edit_config(crate::helpers::two_series_metrics);
    let pg = PgDb::create(&server);
    let base = std::fs::read_to_string(&app.config_path).unwrap();
    let db_line = format!("path = {:?}", app.db_path.to_string_lossy());
    let load = |i: usize| {
        let path = app._dir.path().join(format!("pg-shard-{i}.toml"));
        std::fs::write(
            &path,
            crate::helpers::set_in_section(
                &base.replace(&db_line, &format!("url = {:?}", pg.url)),
                "runtime",
                &format!("shard = \"{i}/2\""),
            ),
        )
        .unwrap();
        let config = engagement_ingest::config::Config::load(Some(&path), std::iter::empty())
            .expect("the shard's config loads");
        let clock = app.worker_clock.clone();
        std::thread::spawn(move || {
            engagement_ingest::pipeline::Context::new(config, clock).expect("context builds")
        })
        .join()
        .unwrap()
    };

    let start = app.sim().stats();
    let whole = app.run(&app.context(), &JobKind::ALL).await;
    assert_eq!(whole.failed().count(), 0);
    let after_whole = app.sim().stats();
    let (c0, c1) = (load(0), load(1));
    let (r0, r1) = tokio::join!(app.run(&c0, &JobKind::ALL), app.run(&c1, &JobKind::ALL));
    assert_eq!(r0.failed().count() + r1.failed().count(), 0);
    let after_shards = app.sim().stats();
    for e in ["totals", "28hr", "historical"] {
        assert_eq!(
            after_shards.count(e) - after_whole.count(e),
            after_whole.count(e) - start.count(e),
            "{e}: the shards' requests add up to the unsharded run's"
        );
    }
    // No Tweet asked for twice: every (endpoint, Tweet) the shards asked for, once each.
    let once = |s: &engagement_ingest::sim::Stats| {
        s.tweets
            .iter()
            .map(|t| ((t.endpoint.clone(), t.tweet_id.get()), t.count))
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (once(&after_whole), once(&after_shards));
    for (key, n) in &b {
        assert_eq!(*n, 2 * a.get(key).copied().unwrap_or(0), "{key:?}");
    }
    assert_eq!(a.len(), b.len());
    // Each shard paces at half of the contract's figures.
    for c in [&c0, &c1] {
        for e in engagement_ingest::domain::Endpoint::ALL {
            let (paced, contract) = (c.config.limit(e), c.config.contract_limit(e));
            assert_eq!(
                paced.per_second.map(|n| n.get() * 2),
                contract.per_second.map(|n| n.get())
            );
        }
    }
    drop((c0, c1));
    // The shared database holds what the unsharded run stored, row by row.
    let skip = ["requests.duration_ms", "requests.seq"];
    let shared = contents(&pg.snapshot(&app._dir.path().join("shared.sqlite")), &skip);
    let unsharded = contents(&rusqlite::Connection::open(&app.db_path).unwrap(), &skip);
    for table in TABLES.iter().filter(|t| !["runs", "requests"].contains(t)) {
        assert_eq!(shared[*table], unsharded[*table], "{table}");
    }
    assert_eq!(shared["runs"].len(), 2, "one run per shard");
    assert_eq!(
        shared["requests"].len(),
        unsharded["requests"].len(),
        "the shards' ledgers add up"
    );
    // Each handle once in the month's usage, with all its requests.
    assert_eq!(
        shared["handle_usage"].len(),
        2,
        "{:?}",
        shared["handle_usage"]
    );
}
