use std::process::Output;

use crate::helpers::{
    ACME_SECRET, BEARER, BOB_SECRET, CONSUMER_SECRET, TestApp, binary, text, world,
};

/// Requests the simulator counted for `endpoint` under `credential` (any status).
fn requests(app: &TestApp, endpoint: &str, credential: &str) -> u64 {
    app.sim()
        .stats()
        .requests
        .iter()
        .filter(|r| r.endpoint == endpoint && r.credential == credential)
        .map(|r| r.count)
        .sum()
}

/// The stdout line that starts with `prefix`.
/// Runs the binary with `args` in the app's folder, the config giving the database relative to
/// it, in a folder that does not exist.
async fn in_missing_folder(args: &[&str]) -> (TestApp, std::process::Output) {
    let app = TestApp::spawn(world(2, 1, 2, 0)).await;
    let db = app.db_arg();
    app.edit_config(|t| t.replace(&db, "missing/engagement.sqlite"));
    let dir = app.config_path.parent().unwrap().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        binary()
            .current_dir(&dir)
            .args(["--config", "config.toml"])
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (app, out)
}

/// `check`'s line about the database folder, which must name `folder` as FAILED.
fn folder_failed<'a>(stdout: &'a str, folder: &std::path::Path, all: &str) -> &'a str {
    let failed = line(stdout, "database folder ");
    assert!(
        failed.starts_with(&format!("database folder {}: FAILED", folder.display())),
        "{all}"
    );
    failed
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_no_secret(all: &str, extra: &[&str]) {
    for secret in [CONSUMER_SECRET, BEARER, ACME_SECRET, BOB_SECRET]
        .iter()
        .chain(extra)
    {
        assert!(!all.contains(secret), "secret leaked: {all}");
    }
}

/// Plain `check` on a good setup exits 0, says in one line that nothing was sent, and the
/// simulator indeed received no request at all (not even for a token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_online_sends_nothing_and_says_so() {
    if crate::helpers::sqlite_only("check_without_online_sends_nothing_and_says_so") {
        return;
    }
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    let out = app.cli(&["check"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = stdout(&out);
    assert!(
        line(&stdout, "api: nothing sent").contains("--online"),
        "{all}"
    );
    assert!(
        line(&stdout, "database folder ").contains("ok (writable, "),
        "{all}"
    );
    assert_eq!(line(&stdout, "account acme:"), "account acme: enabled");
    assert!(
        stdout.trim_end().ends_with("check: ok (nothing sent)"),
        "{all}"
    );
    assert!(app.sim().stats().requests.is_empty(), "{all}");
    assert_no_secret(&all, &[]);
}

/// `check --online` with every credential right exits 0, reports each one ok, and costs one
/// token request, one bearer /totals request and one /totals request per enabled account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_all_right_exits_0_with_one_request_per_credential() {
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    let out = app.cli(&["check", "--online"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = stdout(&out);
    assert!(line(&stdout, "app: ").starts_with("app: ok"), "{all}");
    assert_eq!(line(&stdout, "bearer token"), "bearer token (obtained): ok");
    assert_eq!(line(&stdout, "account acme:"), "account acme: ok");
    assert_eq!(line(&stdout, "account bob:"), "account bob: ok");
    assert!(!stdout.contains("nothing sent"), "{all}");
    assert!(
        stdout
            .trim_end()
            .ends_with("check: ok (3 /totals requests sent)"),
        "{all}"
    );
    assert_eq!(requests(&app, "oauth2/token", "bearer"), 1);
    for credential in ["bearer", "acme", "bob"] {
        assert_eq!(
            requests(&app, "totals", credential),
            1,
            "{credential}: {all}"
        );
    }
    assert_eq!(app.sim().stats().count("totals"), 3, "{all}");
    assert_no_secret(&all, &[]);
}

/// With acme's token secret wrong, `check --online` exits 2 and names acme, and only acme:
/// bob is ok and the app's keys are not blamed. No secret is printed, the wrong one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_names_the_one_account_whose_secret_is_wrong() {
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    let wrong = "ts-acme-WRONG-4Gh8Jk2Lm6";
    app.edit_config(|t| t.replace(ACME_SECRET, wrong));
    let out = app.cli(&["check", "--online"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let stdout = stdout(&out);
    let acme = line(&stdout, "account acme:");
    assert!(acme.contains("REFUSED") && acme.contains("401"), "{all}");
    assert!(acme.contains("re-authorize the account"), "{all}");
    assert_eq!(line(&stdout, "account bob:"), "account bob: ok");
    assert_eq!(stdout.matches("re-authorize").count(), 1, "{all}");
    assert!(!stdout.contains("app: REFUSED"), "{all}");
    assert!(
        stdout
            .trim_end()
            .ends_with("check: 1 problem: account acme (3 /totals requests sent)"),
        "{all}"
    );
    assert_no_secret(&all, &[wrong]);
}

/// A wrong `app.consumer_secret` is one app-level problem naming app.consumer_secret, whether
/// the bearer token is obtained (the token endpoint refuses) or configured (the bearer request
/// works, the first account's 401 is then traced to the app's keys): no account is told to
/// re-authorize, and no account request is sent once the keys are known to be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_wrong_consumer_secret_is_one_app_problem() {
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    let wrong = "cs-WRONG-8Jd3Ka9Lw1Zq";
    app.edit_config(|t| t.replace(CONSUMER_SECRET, wrong));
    for bearer_configured in [false, true] {
        if bearer_configured {
            app.edit_config(|t| {
                t.replace("[app]\n", &format!("[app]\nbearer_token = {BEARER:?}\n"))
            });
        }
        let out = app.cli(&["check", "--online"]).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        let stdout = stdout(&out);
        let app_lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("app.consumer_secret"))
            .collect();
        assert_eq!(app_lines.len(), 1, "{all}");
        assert!(app_lines[0].starts_with("app: REFUSED"), "{all}");
        assert!(!stdout.contains("re-authorize the account"), "{all}");
        assert!(!line(&stdout, "account acme:").contains("REFUSED"), "{all}");
        assert!(!line(&stdout, "account bob:").contains("REFUSED"), "{all}");
        line(&stdout, "check: 1 problem: app keys");
        assert_no_secret(&all, &[wrong]);
    }
    // Obtained: no /totals at all. Configured: the bearer's request and acme's 401, not bob's.
    assert_eq!(requests(&app, "totals", "bob"), 0);
    assert_eq!(requests(&app, "totals", "acme"), 1);
    assert_eq!(requests(&app, "totals", "bearer"), 1);
}

/// A paused account (`enabled = false`) is shown paused, with and without --online, and no
/// request ever carries its token; the other account is still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_account_is_shown_paused_and_sent_nothing() {
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    app.edit_config(|t| t.replace("handle = \"bob\"\n", "handle = \"bob\"\nenabled = false\n"));
    let out = app.cli(&["check"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(
        line(&stdout(&out), "account bob:"),
        "account bob: paused (enabled = false)"
    );
    let out = app.cli(&["check", "--online"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = stdout(&out);
    assert!(
        line(&stdout, "account bob:").contains("paused (enabled = false)"),
        "{all}"
    );
    assert_eq!(line(&stdout, "account acme:"), "account acme: ok");
    assert!(line(&stdout, "config ").contains("1 paused"), "{all}");
    let stats = app.sim().stats();
    assert!(
        stats.requests.iter().all(|r| r.credential != "bob"),
        "{stats:?}"
    );
    assert!(
        !stats.unique_handles.iter().any(|h| h.as_str() == "bob"),
        "{stats:?}"
    );
    assert_eq!(requests(&app, "totals", "acme"), 1);
}

/// An account with no Tweet in the inventory is not sent a request (it would count its handle
/// for billing), and that is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_without_tweets_is_not_sent_a_request() {
    let app = TestApp::spawn(world(3, 0, 3, 0)).await;
    let out = app.cli(&["check", "--online"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        line(&stdout(&out), "account bob:")
            .contains("not checked: no Tweet of it in the inventory"),
        "{all}"
    );
    assert_eq!(requests(&app, "totals", "bob"), 0);
}

/// A revoked token answers 401 like a wrong one: the account is named, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_account_is_named_refused() {
    let mut world = world(3, 2, 3, 0);
    world.accounts[1].revoked = true;
    let app = TestApp::spawn(world).await;
    let out = app.cli(&["check", "--online"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let stdout = stdout(&out);
    assert!(line(&stdout, "account bob:").contains("REFUSED"), "{all}");
    assert_eq!(line(&stdout, "account acme:"), "account acme: ok");
}

/// An API that does not answer is said once and is exit 3, not a credential problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_api_exits_3() {
    let app = TestApp::spawn(world(3, 2, 3, 0)).await;
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = app.sim.base_url();
    let base = base.trim_end_matches('/').to_string();
    app.edit_config(|t| {
        t.replace(&base, &format!("http://127.0.0.1:{port}"))
            .replace("[api]\n", "[api]\nretry_attempts = 1\n")
    });
    let out = app.cli(&["check", "--online"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    let stdout = stdout(&out);
    assert_eq!(stdout.matches("API unreachable:").count(), 1, "{all}");
    assert!(!stdout.contains("REFUSED"), "{all}");
    assert!(
        line(&stdout, "check: no problem found").contains("not verified"),
        "{all}"
    );
}

/// A database path in a folder that does not exist fails `check` with exit 2, naming the
/// folder's absolute path (the config gives it relative) and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_folder_fails_check_with_its_absolute_path() {
    if crate::helpers::sqlite_only("missing_database_folder_fails_check_with_its_absolute_path") {
        return;
    }
    let (app, out) = in_missing_folder(&["check"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let folder = app.config_path.parent().unwrap().join("missing");
    let stdout = stdout(&out);
    let failed = folder_failed(&stdout, &folder, &all);
    assert!(
        failed.contains("does not exist") && failed.contains("create it"),
        "{all}"
    );
    assert!(failed.contains("[database] path"), "{all}");
    line(&stdout, "check: 1 problem: database folder");
}

/// A schedule that can never fire (31 February) is refused by the config validation, and
/// `check` reports it with exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_firing_schedule_fails_check() {
    let app = TestApp::spawn(world(2, 1, 2, 0)).await;
    app.edit_config(|t| format!("{t}\n[schedule]\ntotals = \"0 0 0 31 2 *\"\n"));
    let out = app.cli(&["check"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("never fires"), "{all}");
    assert!(all.contains("schedule"), "{all}");
}

/// `run` with the database in a missing folder exits 3, printing the OS error once (not once
/// per level of the error chain) with the folder's absolute path and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_missing_folder_prints_the_os_error_once() {
    if crate::helpers::sqlite_only("run_with_a_missing_folder_prints_the_os_error_once") {
        return;
    }
    let (app, out) = in_missing_folder(&["run", "--job", "totals"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("os error 2").count(), 1, "{all}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{all}"
    );
    let folder = app.config_path.parent().unwrap().join("missing");
    assert!(
        stderr.contains(&format!("the folder {} does not exist", folder.display())),
        "{all}"
    );
    assert_eq!(app.sim().stats().count("totals"), 0, "{all}");
}

/// A database folder this process cannot write: `check` fails naming it and SQLite's WAL
/// needs; a writer (`migrate`, with its lock file already there) explains the same; a reader
/// (`query`) says there is no -shm file. Tests run as root, which writes anywhere: then the
/// binary runs as `nobody` so the permissions are enforced, or the test says why it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_database_folder_is_explained() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let folder = root.join("ro");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(root.join("tweets.csv"), "tweet_id,owner\n20,\n").unwrap();
    std::fs::write(
        root.join("config.toml"),
        "[api]\nbase_url = \"http://127.0.0.1:9\"\ntoken_url = \"http://127.0.0.1:9/oauth2/token\"\n\
         [app]\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\n\
         [inventory]\npath = \"tweets.csv\"\n[database]\npath = \"ro/e.sqlite\"\n",
    )
    .unwrap();
    let command = |args: &[&str], as_nobody: bool| {
        let mut cmd = binary();
        cmd.current_dir(&root)
            .args(["--config", "config.toml"])
            .args(args);
        if as_nobody {
            // std drops the supplementary groups when it sets the user.
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd.output()
    };
    let out = command(&["migrate"], false).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = folder.join("e.sqlite");
    let lock = folder.join("e.sqlite.lock");
    assert!(lock.exists() && !folder.join("e.sqlite-shm").exists());
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    let enforced = std::fs::write(folder.join("probe"), "").is_err();
    let as_nobody = !enforced;
    if as_nobody {
        let _ = std::fs::remove_file(folder.join("probe"));
        // The database and its lock file stay writable for the writer, only the folder is not.
        for file in [&db, &lock] {
            std::os::unix::fs::chown(file, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        if let Err(e) = command(&["--version"], true) {
            println!("note: cannot run the binary as nobody ({e}): permissions not checked");
            return;
        }
    }

    let out = command(&["check"], as_nobody).unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let stdout = stdout(&out);
    let failed = folder_failed(&stdout, &folder, &all);
    assert!(
        failed.contains("not writable") && failed.contains("WAL"),
        "{all}"
    );
    assert!(failed.contains("-wal/-shm"), "{all}");

    let out = command(&["migrate"], as_nobody).unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains(&format!("cannot open database {}", db.display())),
        "{all}"
    );
    assert!(all.contains("WAL mode needs a writable folder"), "{all}");
    assert!(all.contains("query --db"), "{all}");

    let out = command(&["query", "--db", "ro/e.sqlite", "runs"], as_nobody).unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains("no ") && all.contains("e.sqlite-shm file"),
        "{all}"
    );
    assert!(all.contains(&folder.display().to_string()), "{all}");

    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
}
