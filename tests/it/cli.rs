use engagement_ingest::store::SCHEMA_VERSION;

use crate::helpers::{
    ACME_SECRET, BEARER, BOB_SECRET, CONSUMER_SECRET, TestApp, run_binary, text, world,
};

/// Bad inventory lines fail with exit 2 before anything is sent, each named by file:line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inventory_lines_exit_2_and_name_each_line() {
    let app = TestApp::spawn(world(3, 0, 3, 0)).await;
    let mut csv = std::fs::read_to_string(&app.inventory_path).unwrap();
    csv.push_str("12ab,\n0,acme\n555,nobody\n");
    std::fs::write(&app.inventory_path, csv).unwrap();
    let out = app.cli(&["run", "--job", "totals"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let lines = 1 + 6; // header + 6 Tweets
    for (n, what) in [
        (lines + 1, "not a number"),
        (lines + 2, "0"),
        (lines + 3, "nobody"),
    ] {
        let needle = format!("tweets.csv:{n}:");
        let line = all
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no {needle} in {all}"));
        assert!(line.contains(what), "{line}");
    }
    assert_eq!(app.sim().stats().count("totals"), 0, "nothing may be sent");
}

/// An unknown config key fails with exit 2 and names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_keys_exit_2_and_name_the_key() {
    let app = TestApp::spawn(world(1, 0, 1, 0)).await;
    let toml = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        toml.replace("[api]\n", "[api]\ntimout = \"10s\"\n"),
    )
    .unwrap();
    for cmd in [&["run"][..], &["check"]] {
        let out = app.cli(cmd).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains("api.timout"), "{all}");
    }
}

/// A full run at debug level logs plenty, and never a secret: not the consumer secret, not the
/// token secrets, not the bearer token obtained from the token endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_debug_logs() {
    let app = TestApp::spawn(world(20, 5, 30, 2)).await;
    for format in ["text", "json"] {
        let out = app
            .cli(&["-v", "--log-format", format, "run", "--job", "totals"])
            .await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{all}");
        assert!(all.contains("DEBUG"), "debug logging was on: {all}");
        for secret in [CONSUMER_SECRET, BEARER, ACME_SECRET, BOB_SECRET] {
            assert!(
                !all.contains(secret),
                "secret leaked in {format} logs: {all}"
            );
        }
    }
    let stats = app.sim().stats();
    assert!(
        stats
            .requests
            .iter()
            .any(|r| r.endpoint == "oauth2/token" && r.status == 200)
    );
}

/// `check` reports a good setup with exit 0; `migrate` creates the database and refuses one newer
/// than the binary with exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_migrate() {
    if crate::helpers::sqlite_only("check_and_migrate") {
        return;
    }
    let app = TestApp::spawn(world(2, 1, 2, 0)).await;
    let out = app.cli(&["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = app.cli(&["migrate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("created"), "{}", text(&out));
    app.db()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    for cmd in [&["migrate"][..], &["run"]] {
        let out = app.cli(cmd).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{all}");
        assert!(all.contains("newer than this binary"), "{all}");
    }
    let out = app.cli(&["check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// `run --dry-run` plans and prints, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_nothing() {
    let app = TestApp::spawn(world(5, 5, 300, 0)).await;
    let out = app.cli(&["run", "--dry-run", "--job", "totals"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("bearer"), "{all}");
    assert_eq!(app.sim().stats().count("totals"), 0);
    assert!(!app.db_exists());
}

/// The README's by-hand flow: `sim` as its own process exports a config and an inventory and
/// announces its address on the first stdout line; `check` and `run` work against it; SIGTERM
/// stops it with exit 0.
#[test]
fn sim_process_serves_a_worker_process() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world.toml");
    std::fs::write(
        &world,
        "seed = 3\n[app]\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\nbearer_token = \"b\"\n\
         [[accounts]]\nhandle = \"acme\"\nuser_id = 1001\naccess_token = \"1001-acme\"\n\
         access_token_secret = \"t\"\ntweets = 30\n[public]\ntweets = 40\n",
    )
    .unwrap();
    let mut sim = crate::helpers::binary()
        .current_dir(dir.path())
        .args(["sim", "--world", "world.toml", "--listen", "127.0.0.1:0"])
        .args([
            "--export-config",
            "worker.toml",
            "--export-inventory",
            "tweets.csv",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first:?}"
    );

    let worker = |args: &[&str]| {
        crate::helpers::binary()
            .current_dir(dir.path())
            .args(["--config", "worker.toml"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = worker(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = worker(&["run", "--job", "totals"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let conn = rusqlite::Connection::open(dir.path().join("engagement.sqlite")).unwrap();
    let tweets: i64 = conn
        .query_row(
            "SELECT count(DISTINCT tweet_id) FROM latest_totals",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tweets, 70);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sim.wait().unwrap().code(), Some(0));
}

/// The simulator refuses to listen anywhere but loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_refuses_non_loopback_addresses() {
    let out = run_binary(vec![
        "sim".into(),
        "--world".into(),
        "w.toml".into(),
        "--listen".into(),
        "0.0.0.0:0".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("loopback"), "{}", text(&out));
}

/// When every credential is refused (a wrong consumer secret breaks both the token request and
/// every OAuth signature), `run` exits 3 with the app's keys named, no account blamed, asks the
/// token endpoint once, and logs no secret on these error paths either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_exit_3_without_leaking_secrets() {
    let app = TestApp::spawn(world(20, 5, 300, 0)).await;
    let wrong = "cs-WRONG-9Hd7Fk3Lq2Zp";
    app.edit_config(|t| t.replace(CONSUMER_SECRET, wrong));
    let out = app.cli(&["-v", "run", "--job", "totals"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains("app.consumer_secret") && all.contains("Unable to verify your credentials"),
        "{all}"
    );
    assert!(!all.contains("re-authorize"), "{all}");
    for secret in [wrong, CONSUMER_SECRET, BEARER, ACME_SECRET, BOB_SECRET] {
        assert!(!all.contains(secret), "secret leaked: {all}");
    }
    let stats = app.sim().stats();
    let token_requests: u64 = stats
        .requests
        .iter()
        .filter(|r| r.endpoint == "oauth2/token")
        .map(|r| r.count)
        .sum();
    assert_eq!(token_requests, 1, "{stats:?}");
}

/// `demo`'s figures are the database's: one count of stored buckets (`count(*)` of `series`)
/// wherever it prints one, and each endpoint's requests by outcome as the `requests` table has
/// them, partial batches shown as partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_figures_agree_with_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db_path, out) = crate::helpers::demo_in(dir.path()).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let series: i64 = db
        .query_row("SELECT count(*) FROM series", [], |r| r.get(0))
        .unwrap();
    let number_before = |text: &str, marker: &str| -> i64 {
        let head = &text[..text
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in {stdout}"))];
        let digits: String = head
            .chars()
            .rev()
            .skip_while(|c| *c == ' ')
            .take_while(char::is_ascii_digit)
            .collect();
        digits.chars().rev().collect::<String>().parse().unwrap()
    };
    assert_eq!(
        number_before(&stdout, "non-zero buckets added to the database"),
        series,
        "{stdout}"
    );
    assert_eq!(
        number_before(&stdout, "hourly buckets,"),
        series,
        "{stdout}"
    );
    assert!(!stdout.contains("non-zero stored"), "{stdout}");

    let mut stmt = db
        .prepare(
            "SELECT endpoint, CASE credential WHEN 'bearer' THEN 'bearer' ELSE 'user' END, \
             count(*), sum(outcome = 'ok'), sum(outcome = 'partial'), sum(outcome = 'failed') \
             FROM requests GROUP BY 1, 2",
        )
        .unwrap();
    let ledger: Vec<(String, String, i64, i64, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        ledger.iter().any(|l| l.4 > 0),
        "the demo world has partial batches: {ledger:?}"
    );
    for (endpoint, credential, n, ok, partial, failed) in ledger {
        let line = stdout
            .lines()
            .find(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.len() > 2
                    && words[0] == format!("/{endpoint}")
                    && words[1] == credential
                    && words[2].parse::<i64>().is_ok()
            })
            .unwrap_or_else(|| panic!("no /{endpoint} {credential} line in {stdout}"));
        let noun = if n == 1 { "request" } else { "requests" };
        assert!(line.contains(&format!(" {n} {noun}: {ok} ok, ")), "{line}");
        if partial > 0 {
            assert!(line.contains(&format!(", {partial} partial (")), "{line}");
        } else {
            assert!(!line.contains("partial"), "{line}");
        }
        assert!(line.contains(&format!(", {failed} failed, ")), "{line}");
    }
}
