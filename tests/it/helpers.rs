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
    /// The PostgreSQL database the worker writes instead of `db_path`, when the suite runs on
    /// PostgreSQL ([`on_postgres`]).
    pub pg: Option<PgDb>,
}

/// The PostgreSQL server the tests may use (`ENGAGEMENT_INGEST_TEST_PG`: a URL of a role that
/// may create databases), if any.
pub fn pg_server() -> Option<String> {
    std::env::var("ENGAGEMENT_INGEST_TEST_PG")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Whether the suite runs on PostgreSQL (`ENGAGEMENT_INGEST_TEST_BACKEND=postgres`): every
/// [`TestApp`] then writes a database of its own on that server. Without a server that is an
/// error, never a quiet fall-back to SQLite.
pub fn on_postgres() -> bool {
    match std::env::var("ENGAGEMENT_INGEST_TEST_BACKEND").as_deref() {
        Ok("postgres") => {
            assert!(
                pg_server().is_some(),
                "ENGAGEMENT_INGEST_TEST_BACKEND=postgres needs ENGAGEMENT_INGEST_TEST_PG"
            );
            true
        }
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("ENGAGEMENT_INGEST_TEST_BACKEND={other}: sqlite or postgres"),
    }
}

/// Whether a test about SQLite's own file (its folder, its lock file, damaged pages, file
/// permissions, SQLite's write lock) is skipped because the suite runs on PostgreSQL; says so.
pub fn sqlite_only(test: &str) -> bool {
    if on_postgres() {
        eprintln!("{test}: SKIPPED on PostgreSQL (it is about SQLite's file)");
        return true;
    }
    false
}

/// The PostgreSQL server for a test that needs one: its URL, or `None` after printing that
/// the test is skipped. Such tests are also `#[ignore]`d, so that `cargo test` reports them
/// as ignored without a server; CI runs them with `--ignored` and a server, and there a
/// missing server fails them.
pub fn pg_or_skip(test: &str) -> Option<String> {
    match pg_server() {
        Some(url) => Some(url),
        None => {
            assert!(
                std::env::var("CI").is_err(),
                "{test}: ENGAGEMENT_INGEST_TEST_PG is not set, and CI must run it"
            );
            eprintln!("{test}: SKIPPED (no PostgreSQL server: set ENGAGEMENT_INGEST_TEST_PG)");
            None
        }
    }
}

/// A database of its own on the test server, dropped with the value.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDb {
    /// A new empty database on the server at `admin` (a URL of a role that may create one).
    pub fn create(admin: &str) -> PgDb {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ei_test_{}_{n}", std::process::id());
        let (url, sql) = (admin.to_string(), name.clone());
        // Off any async runtime: the driver blocks on a runtime of its own.
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls)
                .expect("the test server accepts the connection");
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {sql}"))?;
            client.batch_execute(&format!("CREATE DATABASE {sql}"))
        })
        .join()
        .unwrap()
        .expect("the test database is created");
        PgDb {
            url: with_dbname(admin, &name),
            admin: admin.to_string(),
            name,
        }
    }

    /// The database as a store target.
    pub fn target(&self) -> engagement_ingest::store::Target {
        engagement_ingest::store::Target::parse(std::path::Path::new(&self.url), None).unwrap()
    }

    /// A copy of the whole database in a new SQLite file at `path`, for assertions written
    /// against SQLite.
    pub fn snapshot(&self, path: &std::path::Path) -> rusqlite::Connection {
        let _ = std::fs::remove_file(path);
        let source = engagement_ingest::store::Store::open_read_only(self.target())
            .expect("the PostgreSQL database opens");
        let mut copy = engagement_ingest::store::Store::open(path).expect("the snapshot opens");
        source
            .snapshot(|source| source.copy_into(&mut copy, |_| {}))
            .expect("the copy succeeds");
        drop(copy);
        rusqlite::Connection::open(path).expect("the snapshot opens")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Off any async runtime: the driver blocks.
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// `url` with its database replaced by `name` (the query string, e.g. `?host=`, kept).
pub fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{base}/{name}{query}")
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
        let pg = on_postgres().then(|| PgDb::create(&pg_server().unwrap()));
        let database = match &pg {
            Some(pg) => format!("url = {:?}", pg.url),
            None => format!("path = {:?}", db_path.to_string_lossy()),
        };
        let toml = sim
            .sim
            .worker_config_toml(&sim.base_url(), &inventory_path.to_string_lossy())
            .replace("path = \"engagement.sqlite\"", &database);
        std::fs::write(&config_path, toml).unwrap();
        TestApp {
            _dir: dir,
            sim,
            clock,
            worker_clock: sim_clock,
            config_path,
            inventory_path,
            db_path,
            pg,
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

    /// The worker's database: the SQLite file, or on PostgreSQL a fresh SQLite copy of it
    /// (read-only use: writes to the copy do not reach the worker's database).
    pub fn db(&self) -> rusqlite::Connection {
        match &self.pg {
            Some(pg) => pg.snapshot(&self._dir.path().join("snapshot.sqlite")),
            None => rusqlite::Connection::open(&self.db_path).expect("database opens"),
        }
    }

    /// Runs `sql` (statements without parameters) on the worker's database itself, SQLite's
    /// file or the PostgreSQL database (as a user editing it would).
    pub fn execute(&self, sql: &str) {
        match &self.pg {
            None => self.db().execute_batch(sql).expect("the statements run"),
            Some(pg) => {
                let (url, sql) = (pg.url.clone(), sql.to_string());
                std::thread::spawn(move || {
                    postgres::Client::connect(&url, postgres::NoTls)
                        .and_then(|mut c| c.batch_execute(&sql))
                })
                .join()
                .unwrap()
                .expect("the statements run");
            }
        }
    }

    /// Whether the worker has created its database (on PostgreSQL: its schema).
    pub fn db_exists(&self) -> bool {
        match &self.pg {
            None => self.db_path.exists(),
            Some(pg) => {
                let target = pg.target();
                std::thread::spawn(move || {
                    engagement_ingest::store::Store::connect_existing(&target)
                        .and_then(|s| s.schema_version())
                        .is_ok_and(|v| v > 0)
                })
                .join()
                .unwrap()
            }
        }
    }

    /// The database as `--db` takes it: the SQLite file or the PostgreSQL URL.
    pub fn db_arg(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url.clone(),
            None => self.db_path.to_string_lossy().into_owned(),
        }
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
