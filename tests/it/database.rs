use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use engagement_ingest::domain::JobKind;
use engagement_ingest::pipeline::{self, PipelineError, Selection};
use engagement_ingest::store::StoreError;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, binary, text, world};

/// Every request the simulator answered, the token endpoint's included.
fn sent(app: &TestApp) -> u64 {
    app.sim().stats().requests.iter().map(|r| r.count).sum()
}

/// Requests to the Engagement API's endpoints (the token endpoint left out).
fn insights_sent(app: &TestApp) -> u64 {
    let stats = app.sim().stats();
    ["totals", "28hr", "historical"]
        .iter()
        .map(|e| stats.count(e))
        .sum()
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The stdout line after the one that starts with `prefix` (a FAILED line's message).
fn after<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(prefix));
    lines
        .next()
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{stdout}"));
    lines.next().unwrap_or_default()
}

/// Overwrites the cell pointers of a leaf page of `table` in the middle of the file, as a
/// failing disk or a torn copy would: page 1 is intact, so the file still opens, and SQLite
/// reads that page as garbage. Returns the page's number, once SQLite is seen to report it.
fn damage_a_page_of(db: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    // Every page in the main file: none of them only in the WAL, where the damage would not be.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let leaves: Vec<i64> = conn
        .prepare("SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' ORDER BY pageno")
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        leaves.len() >= 3,
        "{table} has {} leaf pages, too few to damage one in the middle",
        leaves.len()
    );
    let page = leaves[leaves.len() / 2];
    let size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    // Past the leaf page's 8-byte header: its array of cell offsets.
    file.seek(SeekFrom::Start(((page - 1) * size + 8) as u64))
        .unwrap();
    file.write_all(&[0xFF; 1000]).unwrap();
    file.sync_all().unwrap();
    let conn = rusqlite::Connection::open(db).unwrap();
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap();
    assert!(
        verdict.contains(&format!("page {page}")),
        "SQLite does not see the damage to page {page}: {verdict}"
    );
    page
}

/// The same database sound, then with a damaged page: `check` passes it, then fails naming it,
/// the problem SQLite found and what to do; `check --thorough` finds the same with
/// integrity_check; `run` exits 3 with the same words, having sent nothing (not even for a
/// token) and written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_fails_check_and_run_sends_nothing() {
    if crate::helpers::sqlite_only("a_damaged_database_fails_check_and_run_sends_nothing") {
        return;
    }
    let app = TestApp::spawn(world(6, 4, 6, 0)).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals, JobKind::Historical]).await;
    drop(ctx);
    let db = app.db_arg();
    let out = app.cli(&["check"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sound = format!("database integrity {db}: ok (PRAGMA quick_check in ");
    assert!(stdout.lines().any(|l| l.starts_with(&sound)), "{all}");
    let writable = format!("database writable {db}: ok (");
    assert!(stdout.lines().any(|l| l.starts_with(&writable)), "{all}");

    let page = damage_a_page_of(&app.db_path, "series");
    let (sent_before, runs_before) = (sent(&app), count(&app.db(), "SELECT count(*) FROM runs"));

    for (args, pragma) in [
        (&["check"][..], "quick_check"),
        (&["check", "--thorough"][..], "integrity_check"),
    ] {
        let out = app.cli(args).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("database integrity {db}: FAILED");
        let why = after(&stdout, &prefix);
        assert!(
            why.starts_with(&format!("database {db} is damaged: PRAGMA {pragma} found ")),
            "{all}"
        );
        assert!(why.contains(&format!("page {page}")), "{all}");
        assert!(why.contains(".recover") && why.contains("backup"), "{all}");
        assert!(
            stdout
                .trim_end()
                .ends_with("check: 1 problem: database integrity (nothing sent)"),
            "{all}"
        );
    }

    for args in [&["run", "--job", "totals"][..], &["run"][..]] {
        let out = app.cli(args).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{all}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "database {db} is damaged: PRAGMA quick_check found"
            )),
            "{all}"
        );
        assert!(stderr.contains(&format!("page {page}")), "{all}");
        assert!(stderr.contains("nothing is sent"), "{all}");
    }
    assert_eq!(sent(&app), sent_before, "requests were sent");
    let conn = rusqlite::Connection::open_with_flags(
        &app.db_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), runs_before);
}

/// A long-lived context (the daemon's) proves the database before each cycle, not only when it
/// opened it: a cycle that finds the write lock held past the busy timeout fails as busy with
/// nothing sent, and the next cycle, the lock let go, runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cycle_of_a_long_lived_context_proves_the_database() {
    if crate::helpers::sqlite_only("each_cycle_of_a_long_lived_context_proves_the_database") {
        return;
    }
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals]).await;
    ctx.store
        .lock()
        .unwrap()
        .set_busy_timeout(Duration::from_millis(200))
        .unwrap();
    let before = sent(&app);
    let holder = app.db();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let selection = Selection::Forced(vec![JobKind::Totals]);
    let err = pipeline::run_cycle(&ctx, &selection, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::Store(StoreError::Busy { .. })),
        "{err}"
    );
    assert_eq!(err.exit_code(), 3);
    assert_eq!(sent(&app), before, "requests were sent");
    holder.execute_batch("COMMIT").unwrap();
    let report = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 0);
    assert!(sent(&app) > before);
    let db = app.db();
    assert_eq!(
        count(&db, "SELECT count(*) FROM runs WHERE status = 'running'"),
        0
    );
}

/// `run` started while another connection holds the database's write lock waits for it (it
/// sends nothing meanwhile), then runs: exit 0, its run `ok`, none left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_a_write_lock_held_as_it_starts() {
    if crate::helpers::sqlite_only("run_waits_for_a_write_lock_held_as_it_starts") {
        return;
    }
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    drop(app.context()); // creates the database
    let holder = app.db();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let child = binary()
        .args(["--config", &app.config_path.to_string_lossy()])
        .args(["-q", "run", "--job", "totals"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once it holds the writer lock its next step is the database (bounded wait).
    let lock = std::path::PathBuf::from(format!("{}.lock", app.db_path.display()));
    let pid = format!("pid {} ", child.id());
    for _ in 0..1000 {
        if std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&pid)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sent(&app),
        0,
        "a request was sent while the database was locked"
    );
    holder.execute_batch("COMMIT").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = app.db();
    let status: String = db
        .query_row(
            "SELECT status FROM runs ORDER BY run_id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "ok");
    assert_eq!(
        count(&db, "SELECT count(*) FROM runs WHERE status = 'running'"),
        0
    );
    assert!(insights_sent(&app) > 0);
}

/// Answers that arrive while another connection holds the write lock for a while (less than the
/// busy timeout) wait for it and are all stored: exit 0, every batch in the ledger, the run `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_wait_for_a_write_lock_held_during_the_run() {
    if crate::helpers::sqlite_only("answers_wait_for_a_write_lock_held_during_the_run") {
        return;
    }
    let app = TestApp::spawn(world(12, 10, 12, 0)).await;
    let mut faults = app.sim().faults();
    faults.latency_ms = 300;
    app.sim().set_faults(faults).unwrap();
    drop(app.context()); // creates the database
    let child = binary()
        .args(["--config", &app.config_path.to_string_lossy()])
        .args(["-q", "run", "--job", "totals", "--job", "historical"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Locked from the first answer on (bounded wait), while later batches are in flight.
    for _ in 0..1000 {
        if insights_sent(&app) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let holder = app.db();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The holder has the write lock: no batch was stored since it took it.
    let stored = count(&holder, "SELECT count(*) FROM requests");
    let answered = insights_sent(&app);
    holder.execute_batch("COMMIT").unwrap();
    assert!(
        answered > stored as u64,
        "no answer arrived while the lock was held ({answered} answered, {stored} stored): \
         the test proves nothing"
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let db = app.db();
    assert_eq!(
        count(&db, "SELECT count(*) FROM requests") as u64,
        insights_sent(&app),
        "{all}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM requests WHERE outcome NOT IN ('ok', 'partial')"
        ),
        0,
        "{all}"
    );
    let status: String = db
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "ok", "{all}");
}

/// A database file this process cannot write: `check` fails naming it and what to do, `run`
/// exits 3 having sent nothing. Tests run as root, which writes any file: then the binary runs
/// as `nobody` (the folder its own, the file not), or the test says why it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_database_file_fails_check_and_run_sends_nothing() {
    if crate::helpers::sqlite_only("an_unwritable_database_file_fails_check_and_run_sends_nothing")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    const NOBODY: u32 = 65534;
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals]).await;
    drop(ctx);
    let folder = app.config_path.parent().unwrap().to_path_buf();
    let db = app.db_path.clone();
    for suffix in ["-wal", "-shm"] {
        let file = format!("{}{suffix}", db.display());
        assert!(
            !Path::new(&file).exists(),
            "{file} left after a clean close"
        );
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let enforced = std::fs::OpenOptions::new().write(true).open(&db).is_err();
    let as_nobody = !enforced;
    if as_nobody {
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&folder, Some(NOBODY), Some(NOBODY)).unwrap();
        // The writer lock file is nobody's to create: the folder is, the database is not.
        std::fs::remove_file(format!("{}.lock", db.display())).unwrap();
    }
    let command = |args: &[&str]| {
        let mut cmd = binary();
        cmd.args(["--config", &app.config_path.to_string_lossy()])
            .args(args);
        if as_nobody {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd.output()
    };
    if as_nobody && let Err(e) = command(&["--version"]) {
        println!("note: cannot run the binary as nobody ({e}): permissions not checked");
        return;
    }
    let before = sent(&app);

    let out = command(&["check"]).unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let why = after(
        &stdout,
        &format!("database writable {}: FAILED", db.display()),
    );
    assert!(
        why.starts_with(&format!(
            "database {} is not writable for this process: the file cannot be written",
            db.display()
        )),
        "{all}"
    );
    assert!(why.contains("Permission denied"), "{all}");
    assert!(
        stdout
            .trim_end()
            .ends_with("check: 1 problem: database writable (nothing sent)"),
        "{all}"
    );

    let out = command(&["run", "--job", "totals"]).unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains(&format!("database {} is not writable", db.display())),
        "{all}"
    );
    assert_eq!(sent(&app), before, "requests were sent");
}
