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
        let wrong = tcp.replacen("://", "://", 1);
        let (scheme, rest) = wrong.split_once("://").unwrap();
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
