//! `TestApp`: a simulator on a frozen clock, a worker config and inventory pointing at it, and a
//! temporary database; runs cycles in-process or through the binary.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use engagement_ingest::config::Config;
use engagement_ingest::domain::JobKind;
use engagement_ingest::pipeline::{self, Context, RunReport};
use engagement_ingest::sim::{self, ManualClock, Sim, SimHandle, World};
use tokio_util::sync::CancellationToken;

/// Secrets distinctive enough that finding one in a log can only mean it leaked.
pub const CONSUMER_SECRET: &str = "cs-7Qe9ZpLw2Xv4Rt8Ky6Nb";
pub const BEARER: &str = "AAAA-bearer-3Hs8Jd2Lq9Wm5Zx";
pub const ACME_SECRET: &str = "ts-acme-Vb6Nm1Qw8Er4Ty7U";
pub const BOB_SECRET: &str = "ts-bob-Pl0Ok9Ij8Uh7Yg6Tf";

/// A world with two accounts, public Tweets and a few deleted ones.
pub fn world(acme: u32, bob: u32, public: u32, deleted: u32) -> World {
    world_with(acme, bob, public, &format!("deleted = {deleted}"))
}

/// As [`world`], with `tweets` as the body of the world's `[tweets]` section (Tweets spread
/// over 150 days unless it sets `spread_days`).
pub fn world_with(acme: u32, bob: u32, public: u32, tweets: &str) -> World {
    let spread = if tweets.contains("spread_days") {
        ""
    } else {
        "spread_days = 150"
    };
    world_of(
        &acme.to_string(),
        &bob.to_string(),
        &public.to_string(),
        &format!("{spread}\n{tweets}"),
    )
}

/// The test world with each `tweets` value written as given (a count, or a list of IDs) and
/// `tweets` as the body of its `[tweets]` section.
pub fn world_of(acme: &str, bob: &str, public: &str, tweets: &str) -> World {
    World::from_toml_str(&format!(
        r#"
seed = 11
[app]
consumer_key = "it-consumer"
consumer_secret = "{CONSUMER_SECRET}"
bearer_token = "{BEARER}"
[[accounts]]
handle = "acme"
user_id = 1001
access_token = "1001-acme"
access_token_secret = "{ACME_SECRET}"
tweets = {acme}
[[accounts]]
handle = "bob"
user_id = 1002
access_token = "1002-bob"
access_token_secret = "{BOB_SECRET}"
tweets = {bob}
[public]
tweets = {public}
[tweets]
{tweets}
"#
    ))
    .expect("the test world parses")
}

pub struct TestApp {
    /// Keeps the temporary folder alive as long as the app.
    pub _dir: tempfile::TempDir,
    pub sim: SimHandle,
    pub clock: ManualClock,
    /// The clock the worker runs on: the simulator's.
    pub worker_clock: engagement_ingest::domain::Clock,
    pub config_path: PathBuf,
    pub inventory_path: PathBuf,
    pub db_path: PathBuf,
}

impl TestApp {
    /// Starts the simulator with its clock frozen at the current time, and writes the worker's
    /// config (database in the temporary folder) and inventory.
    pub async fn spawn(world: World) -> TestApp {
        TestApp::spawn_at(world, chrono::Utc::now().timestamp()).await
    }

    /// As [`TestApp::spawn`], with the simulator's clock frozen at `now`.
    pub async fn spawn_at(world: World, now: i64) -> TestApp {
        let clock = ManualClock::new(now);
        TestApp::spawn_with(world, clock.clone(), clock.clock()).await
    }

    /// A simulator on the machine's clock (rate-limit windows need time to pass); `clock` is
    /// then only a handle, unused by the simulator.
    pub async fn spawn_live(world: World) -> TestApp {
        let now = chrono::Utc::now().timestamp();
        TestApp::spawn_with(
            world,
            ManualClock::new(now),
            engagement_ingest::domain::system_clock(),
        )
        .await
    }

    async fn spawn_with(
        world: World,
        clock: ManualClock,
        sim_clock: engagement_ingest::domain::Clock,
    ) -> TestApp {
        let sim = Arc::new(Sim::with_clock(world, sim_clock.clone()));
        let sim = sim::spawn_sim(sim, ([127, 0, 0, 1], 0).into())
            .await
            .expect("simulator binds");
        let dir = tempfile::tempdir().expect("temp dir");
        let inventory_path = dir.path().join("tweets.csv");
        let config_path = dir.path().join("config.toml");
        let db_path = dir.path().join("engagement.sqlite");
        std::fs::write(&inventory_path, sim.sim.inventory_csv()).unwrap();
        let toml = sim
            .sim
            .worker_config_toml(&sim.base_url(), &inventory_path.to_string_lossy())
            .replace(
                "path = \"engagement.sqlite\"",
                &format!("path = {:?}", db_path.to_string_lossy()),
            );
        std::fs::write(&config_path, toml).unwrap();
        TestApp {
            _dir: dir,
            sim,
            clock,
            worker_clock: sim_clock,
            config_path,
            inventory_path,
            db_path,
        }
    }

    pub fn sim(&self) -> &Sim {
        &self.sim.sim
    }

    pub fn config(&self) -> Config {
        Config::load(Some(&self.config_path), std::iter::empty())
            .expect("the exported config loads")
    }

    /// A pipeline context on the simulator's clock (OAuth timestamps must agree with it).
    pub fn context(&self) -> Context {
        Context::new(self.config(), self.worker_clock.clone()).expect("context builds")
    }

    /// One in-process cycle of `kinds`.
    pub async fn run(&self, ctx: &Context, kinds: &[JobKind]) -> RunReport {
        pipeline::run_once(ctx, kinds, &CancellationToken::new())
            .await
            .expect("the cycle runs")
    }

    /// Runs the binary with `--config` and `args`, off the async runtime so the simulator keeps serving.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut full = vec![
            "--config".to_string(),
            self.config_path.to_string_lossy().into_owned(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        run_binary(full).await
    }

    /// Rewrites the worker config file with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(text)).unwrap();
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db_path).expect("database opens")
    }
}

impl TestApp {
    /// How many answers with `status` the simulator sent.
    pub fn answered(&self, status: u16) -> u64 {
        self.sim()
            .stats()
            .requests
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.count)
            .sum()
    }

    /// The `requests` ledger's rows with `http_status = status`, and their attempts.
    pub fn ledger(&self, status: u16) -> (u64, u64) {
        self.db()
            .query_row(
                "SELECT count(*), coalesce(sum(attempts), 0) FROM requests WHERE http_status = ?1",
                [status],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .unwrap()
    }
}

/// `config` with `lines` in its `[section]`: after the section's header when the config has
/// one (the simulator's export may), else in a new section at the end.
pub fn set_in_section(config: &str, section: &str, lines: &str) -> String {
    let header = format!("[{section}]\n");
    let lines = lines.trim_end();
    match config.find(&header) {
        Some(at) if at == 0 || config[..at].ends_with('\n') => {
            let (head, tail) = config.split_at(at + header.len());
            format!("{head}{lines}\n{tail}")
        }
        _ => format!("{config}\n{header}{lines}\n"),
    }
}

/// Two metrics per series request keep the answers small.
pub fn two_series_metrics(config: String) -> String {
    let metrics = "metrics = [\"impressions\", \"favorites\"]";
    set_in_section(
        &set_in_section(&config, "hourly", metrics),
        "historical",
        metrics,
    )
}

/// The binary, with a clean ENGAGEMENT_* environment.
pub fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_engagement-ingest"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ENGAGEMENT") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `demo --db DIR/demo.sqlite`, which must exit 0: the database's path and what it printed.
pub async fn demo_in(dir: &std::path::Path) -> (PathBuf, Output) {
    let db_path = dir.join("demo.sqlite");
    let out = run_binary(vec![
        "demo".into(),
        "--db".into(),
        db_path.to_string_lossy().into_owned(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    (db_path, out)
}

/// Runs the binary with `args`, off the async runtime.
pub async fn run_binary(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || binary().args(args).output().expect("the binary runs"))
        .await
        .expect("blocking task")
}

/// stdout and stderr of a finished process, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every stored hourly bucket: (tweet, metric id, hour, value).
pub fn series(db: &rusqlite::Connection) -> std::collections::BTreeSet<(i64, i64, i64, i64)> {
    let mut stmt = db
        .prepare("SELECT tweet_id, metric_id, hour, value FROM series")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What the code running on this thread logs, in JSON lines as `--log-format json` writes them
/// and at the binary's default levels, captured while the guard [`Logs::capture`] returns lives.
/// On the current-thread runtime that is everything an in-process daemon logs from its tasks.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,tokio_cron_scheduler=warn",
            ))
            .with_writer(move || sink.clone())
            .json()
            .flatten_event(true)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The first line logged so far that contains `needle`.
    pub fn line_with(&self, needle: &str) -> Option<String> {
        self.text()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
