//! The daemon as a library: each job kind on its `[schedule]` cron (tokio-cron-scheduler, UTC),
//! one cycle of a kind at a time, kinds concurrently sharing the client (limiters) and the
//! database writer; the config and the inventory read again at every cycle (the last good config
//! kept, schedule changes applied live), the optional fixed jitter, systemd readiness and status,
//! `/metrics` and `/healthz` on a listener it is given ([`endpoints`]), and the stop when the token
//! it is given is cancelled, bounded by the shutdown grace.
//!
//! It reads no arguments, binds no address and watches no signal: `cli::daemon` does that and
//! hands over a bound listener and a token, so that a test can drive a daemon in-process on a
//! `127.0.0.1:0` listener and stop it by cancelling its own token.

mod endpoints;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{Config, ConfigError};
use crate::domain::{Clock, JobKind};
use crate::listener;
use crate::pipeline::{self, Context, PipelineError, Selection};

pub use endpoints::exposure_warning;

/// Where the config is read from, at start and again at every cycle: a file (or, without one,
/// what the environment names) and the environment's `ENGAGEMENT__…` overrides.
#[derive(Clone)]
pub struct ConfigSource {
    path: Option<PathBuf>,
    env: Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>,
}

impl ConfigSource {
    /// The config at `path` (`None`: the one the environment names), with the environment that
    /// `env` returns at each reading.
    pub fn new(
        path: Option<PathBuf>,
        env: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> ConfigSource {
        ConfigSource {
            path,
            env: Arc::new(env),
        }
    }

    /// The config file at `path`, with no environment.
    pub fn file(path: impl Into<PathBuf>) -> ConfigSource {
        ConfigSource::new(Some(path.into()), Vec::new)
    }

    /// Reads and validates the config as it is now.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.path.as_deref(), (self.env)())
    }
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How the daemon runs, apart from its config.
#[derive(Clone)]
pub struct Options {
    /// The worker's clock (observations, OAuth timestamps).
    pub clock: Clock,
    /// How often a cycle logs its progress; `None`: never.
    pub progress: Option<Duration>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// Why the daemon could not start. Once it has started, failures are logged and it goes on.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The config does not validate (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database cannot be opened or is locked by another writer (the error's exit code).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A `[schedule]` the scheduler does not take (exit 2).
    #[error("{0}")]
    Schedule(String),
    /// The scheduler itself did not start (exit 3).
    #[error("cannot start the scheduler: {0}")]
    Start(String),
}

/// A daemon that has read its config and holds the database's writer lock, not yet scheduling.
pub struct Scheduler {
    ctx: Context,
    source: ConfigSource,
}

/// Reads the config, opens the database and runs until `shutdown` is cancelled: see
/// [`Scheduler::open`] and [`Scheduler::run`].
pub async fn run(
    source: ConfigSource,
    options: Options,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    Scheduler::open(source, options)?
        .run(listener, shutdown)
        .await
}

impl Scheduler {
    /// Reads the config (its warnings are logged) and opens the database, taking its writer
    /// lock, which is held until [`Scheduler::run`] returns (or this value is dropped).
    pub fn open(source: ConfigSource, options: Options) -> Result<Scheduler, SchedulerError> {
        let config = source.load()?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let mut ctx = Context::new(config, options.clock)?;
        ctx.progress = options.progress;
        Ok(Scheduler { ctx, source })
    }

    /// The writer lock's file.
    pub fn lock_path(&self) -> Option<&Path> {
        self.ctx.lock_path()
    }

    /// Schedules every kind, serves `/metrics` and `/healthz` on `listener` if there is one, and
    /// runs until `shutdown` is cancelled; then starts no new cycle, lets running cycles finish
    /// within the shutdown grace, serves until they are over and returns.
    pub async fn run(
        self,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), SchedulerError> {
        let Scheduler { ctx, source } = self;
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| SchedulerError::Start(e.to_string()))?;
        let daemon = Daemon::new(ctx.clone(), source, scheduler.clone(), shutdown.clone());
        for kind in JobKind::ALL {
            daemon
                .schedule(kind, &ctx.config)
                .await
                .map_err(|e| SchedulerError::Schedule(e.to_string()))?;
        }
        // The endpoints serve until the cycles are over, so a scrape during the stop sees them end.
        let stop_serving = CancellationToken::new();
        let mut serving = None;
        if let Some(listener) = listener {
            let app = endpoints::router(Arc::clone(&daemon));
            let local = listener.local_addr().ok();
            let addr = local.map_or_else(|| "?".to_string(), |a| a.to_string());
            tracing::info!(addr = %addr, "Serving /metrics and /healthz");
            if let Some(warning) = local.and_then(exposure_warning) {
                tracing::warn!(addr = %addr, "{warning}");
            }
            serving = Some(tokio::spawn(listener::serve(
                listener,
                app,
                listener::Limits::METRICS,
                stop_serving.clone(),
            )));
        }
        scheduler
            .start()
            .await
            .map_err(|e| SchedulerError::Start(e.to_string()))?;
        let now = chrono::Utc::now();
        for kind in JobKind::ALL {
            let cron = ctx.config.schedule.of(kind);
            tracing::info!(kind = kind.name(), schedule = %cron,
                next = ?cron.next_after(now).map(|t| t.to_rfc3339()), "Scheduled");
        }
        tracing::info!(
            database = %ctx.config.database.path.display(),
            lock = %ctx.lock_path().map_or_else(|| "the shard's advisory lock".to_string(), |p| p.display().to_string()),
            "Daemon started"
        );
        drop(ctx);
        let _ = sd_notify::notify(&[
            NotifyState::Ready,
            NotifyState::Status("waiting for the first cycle"),
        ]);

        shutdown.cancelled().await;
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        let mut scheduler = scheduler;
        let _ = scheduler.shutdown().await;
        daemon.cycles.close();
        let grace = daemon.current().config.runtime.shutdown_grace;
        // Each cycle bounds itself by the grace; the margin covers marking its run interrupted.
        if tokio::time::timeout(grace + Duration::from_secs(2), daemon.cycles.wait())
            .await
            .is_err()
        {
            tracing::warn!("Cycles did not end within the shutdown grace; exiting");
        }
        stop_serving.cancel();
        if let Some(mut serving) = serving {
            // Idle connections close at once; a response being written gets a moment, then is
            // dropped (with the context it holds) rather than left behind the returned daemon.
            if tokio::time::timeout(Duration::from_secs(1), &mut serving)
                .await
                .is_err()
            {
                serving.abort();
            }
        }
        tracing::info!("Daemon stopped");
        Ok(())
    }
}

/// What the scheduled jobs and the HTTP endpoints share.
struct Daemon {
    /// The context of the last good config.
    ctx: Mutex<Context>,
    source: ConfigSource,
    running: HashMap<JobKind, AtomicBool>,
    /// The scheduler's job per kind, to replace it when the schedule changes.
    jobs: tokio::sync::Mutex<HashMap<JobKind, Uuid>>,
    scheduler: JobScheduler,
    cycles: TaskTracker,
    shutdown: CancellationToken,
}

impl Daemon {
    fn new(
        ctx: Context,
        source: ConfigSource,
        scheduler: JobScheduler,
        shutdown: CancellationToken,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            ctx: Mutex::new(ctx),
            source,
            running: JobKind::ALL
                .into_iter()
                .map(|k| (k, AtomicBool::new(false)))
                .collect(),
            jobs: tokio::sync::Mutex::new(HashMap::new()),
            scheduler,
            cycles: TaskTracker::new(),
            shutdown,
        })
    }

    fn current(&self) -> Context {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds (or replaces) the scheduler's job for `kind` with the config's schedule.
    async fn schedule(self: &Arc<Self>, kind: JobKind, config: &Config) -> anyhow::Result<()> {
        let cron = config.schedule.of(kind).as_str().to_string();
        let me = Arc::downgrade(self);
        let job = Job::new_async(cron.as_str(), move |_id, _scheduler| {
            let me = me.clone();
            Box::pin(async move {
                if let Some(me) = me.upgrade() {
                    me.trigger(kind);
                }
            })
        })
        .map_err(|e| anyhow::anyhow!("[schedule] {}: {cron:?}: {e}", kind.name()))?;
        let mut jobs = self.jobs.lock().await;
        if let Some(old) = jobs.remove(&kind) {
            self.scheduler
                .remove(&old)
                .await
                .map_err(|e| anyhow::anyhow!("cannot replace the {} job: {e}", kind.name()))?;
        }
        let id = self
            .scheduler
            .add(job)
            .await
            .map_err(|e| anyhow::anyhow!("cannot schedule {}: {e}", kind.name()))?;
        jobs.insert(kind, id);
        Ok(())
    }

    /// A trigger of `kind`'s schedule: starts a cycle unless one is still running.
    fn trigger(self: &Arc<Self>, kind: JobKind) {
        if self.shutdown.is_cancelled() {
            return;
        }
        if self.running[&kind].swap(true, Ordering::SeqCst) {
            tracing::warn!(
                kind = kind.name(),
                "The previous cycle of this kind is still running: this trigger is skipped"
            );
            return;
        }
        let me = Arc::clone(self);
        self.cycles.spawn(async move {
            me.cycle(kind).await;
            me.running[&kind].store(false, Ordering::SeqCst);
        });
    }

    async fn cycle(self: &Arc<Self>, kind: JobKind) {
        let ctx = self.reload(kind).await;
        if let Some(jitter) = ctx.config.schedule.jitter {
            let delay = jitter_delay(kind, &ctx.config.database.path, jitter);
            tracing::debug!(kind = kind.name(), delay = ?delay, "Jitter");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
        ctx.client.new_cycle();
        // A trigger is the schedule saying the kind is due: the cycle plans it in full.
        let selection = Selection::Forced(vec![kind]);
        match pipeline::run_within_grace(&ctx, &selection, &self.shutdown).await {
            Ok(Some(report)) if report.failed().count() > 0 => {
                tracing::warn!(
                    kind = kind.name(),
                    run_id = report.run_id,
                    failed = report.failed().count(),
                    "Some batches failed after retries; they are planned again next cycle (see the requests table)"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(kind = kind.name(), error = %e, "The cycle failed"),
        }
        let (_, body) = endpoints::health_report(&ctx);
        let status: Vec<&str> = body.lines().skip(1).collect();
        let _ = sd_notify::notify(&[NotifyState::Status(&status.join("; "))]);
    }

    /// Reads the config again: a valid one replaces the last good one (the database path
    /// excepted: the writer lock is held on the old one); an invalid one is logged and ignored.
    async fn reload(self: &Arc<Self>, kind: JobKind) -> Context {
        let current = self.current();
        let mut config = match self.source.load() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(
                    kind = kind.name(),
                    "The config is invalid; this cycle uses the last good one:\n{e}"
                );
                let mut ctx = current;
                ctx.config_problem = Some(config_problem(&e));
                *self.ctx.lock().unwrap_or_else(|e| e.into_inner()) = ctx.clone();
                return ctx;
            }
        };
        if config.database.path != current.config.database.path {
            tracing::warn!(
                old = %current.config.database.path.display(),
                new = %config.database.path.display(),
                "[database] path changed: restart the daemon to use the new database; keeping the old one"
            );
            config.database.path = current.config.database.path.clone();
        }
        for k in JobKind::ALL {
            if config.schedule.of(k) != current.config.schedule.of(k) {
                match self.schedule(k, &config).await {
                    Ok(()) => {
                        tracing::info!(kind = k.name(), schedule = %config.schedule.of(k), "Schedule changed")
                    }
                    Err(e) => {
                        tracing::error!(kind = k.name(), error = %e, "Cannot apply the new schedule")
                    }
                }
            }
        }
        match current.reconfigured(config) {
            Ok(mut ctx) => {
                ctx.config_problem = None;
                *self.ctx.lock().unwrap_or_else(|e| e.into_inner()) = ctx.clone();
                ctx
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot apply the new config; this cycle uses the last good one");
                current
            }
        }
    }
}

/// What a cycle's `runs` row and `/healthz` say of a config edit that does not validate: its
/// first problem, how many more there are, and that the last good config was used.
fn config_problem(e: &ConfigError) -> String {
    let first = e.problems.first().cloned().unwrap_or_default();
    format!(
        "config: {first}{}; the last good config was used",
        match e.problems.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more problems)", n - 1),
        }
    )
}

/// A fixed delay in `[0, jitter)` for `kind`, derived from the kind and the database path
/// (FNV-1a), so each instance keeps its own offset from cycle to cycle.
pub fn jitter_delay(kind: JobKind, database: &Path, jitter: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!("{}\0{}", kind.name(), database.display());
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hash % millis)
}

#[cfg(test)]
mod tests {
    use crate::domain::system_clock;
    use crate::lock::EXIT_LOCKED;
    use crate::sim::{Sim, demo_world};

    use super::*;

    /// Schedules that do not fire while a test runs.
    const NEVER: &str = "0 0 0 1 1 * 2099";

    /// Writes, in `dir`, a config for the demo world's accounts and inventory against an API
    /// nobody answers, with a database in `dir` and `schedule` as its `[schedule]` table.
    fn write_config(dir: &Path, schedule: &[(&str, &str)]) -> PathBuf {
        let sim = Sim::new(demo_world(7));
        let inventory = dir.join("tweets.csv");
        std::fs::write(&inventory, sim.inventory_csv()).unwrap();
        let exported = sim.worker_config_toml("http://127.0.0.1:9", &inventory.to_string_lossy());
        let mut config: toml::Table = toml::from_str(&exported).unwrap();
        let database = dir.join("engagement.sqlite");
        config["database"]
            .as_table_mut()
            .unwrap()
            .insert("path".into(), database.to_string_lossy().as_ref().into());
        let schedule: toml::Table = schedule
            .iter()
            .map(|(k, v)| (k.to_string(), toml::Value::from(*v)))
            .collect();
        config.insert("schedule".into(), schedule.into());
        let path = dir.join("config.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        path
    }

    fn options() -> Options {
        Options {
            clock: system_clock(),
            progress: None,
        }
    }

    /// Kinds triggered while their cycle waits out its jitter: a second trigger of the same kind
    /// is skipped, another kind's runs beside it; at shutdown both end without a cycle, and a
    /// trigger after it starts nothing. On the paused clock: the hour of jitter never passes.
    #[tokio::test(start_paused = true)]
    async fn a_cycle_waiting_out_its_jitter_ends_at_shutdown_and_one_cycle_per_kind_runs() {
        let dir = tempfile::tempdir().unwrap();
        let schedule = [
            ("totals", NEVER),
            ("hourly", NEVER),
            ("historical", NEVER),
            ("jitter", "1h"),
        ];
        let path = write_config(dir.path(), &schedule);
        let Scheduler { ctx, source } =
            Scheduler::open(ConfigSource::file(&path), options()).unwrap_or_else(|e| panic!("{e}"));
        let jitter = Duration::from_secs(3600);
        for kind in [JobKind::Totals, JobKind::Hourly] {
            assert!(jitter_delay(kind, &ctx.config.database.path, jitter) > Duration::from_secs(1));
        }
        let shutdown = CancellationToken::new();
        let scheduler = JobScheduler::new().await.unwrap();
        let daemon = Daemon::new(ctx, source, scheduler, shutdown.clone());

        daemon.trigger(JobKind::Totals);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(daemon.cycles.len(), 1);
        daemon.trigger(JobKind::Totals);
        assert_eq!(daemon.cycles.len(), 1, "a second totals cycle started");
        daemon.trigger(JobKind::Hourly);
        assert_eq!(daemon.cycles.len(), 2);

        shutdown.cancel();
        daemon.cycles.close();
        tokio::time::timeout(Duration::from_secs(1), daemon.cycles.wait())
            .await
            .expect("cycles waiting out their jitter end at shutdown");
        let metrics = &daemon.current().metrics;
        for kind in JobKind::ALL {
            assert!(!daemon.running[&kind].load(Ordering::SeqCst), "{kind:?}");
            let state = metrics.kind(kind);
            assert!(
                state.last.is_none() && !state.running,
                "{kind:?}: {state:?}"
            );
        }
        daemon.trigger(JobKind::Historical);
        assert_eq!(daemon.cycles.len(), 0);
    }

    /// A token cancelled before the start: `run` serves, then stops at once; afterwards the port
    /// is closed and the database's writer lock is free for the next daemon.
    #[tokio::test]
    async fn a_cancelled_daemon_returns_closes_its_port_and_frees_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &[("totals", NEVER), ("hourly", NEVER)]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        tokio::time::timeout(
            Duration::from_secs(20),
            run(
                ConfigSource::file(&path),
                options(),
                Some(listener),
                shutdown,
            ),
        )
        .await
        .expect("a cancelled daemon returns")
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        let again = Scheduler::open(ConfigSource::file(&path), options())
            .unwrap_or_else(|e| panic!("the lock is free: {e}"));
        assert!(
            again
                .lock_path()
                .unwrap()
                .ends_with("engagement.sqlite.lock")
        );
    }

    /// What the command line maps to exit codes: a config that does not validate, and a
    /// database another daemon writes (exit 4).
    #[tokio::test]
    async fn a_bad_config_and_a_held_database_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &[("totals", "every minute")]);
        match Scheduler::open(ConfigSource::file(&path), options()) {
            Err(SchedulerError::Config(e)) => {
                assert!(e.problems.iter().any(|p| p.contains("totals")), "{e}")
            }
            other => panic!("{:?}", other.err()),
        }
        let path = write_config(dir.path(), &[]);
        let _holder = Scheduler::open(ConfigSource::file(&path), options()).unwrap();
        match Scheduler::open(ConfigSource::file(&path), options()) {
            Err(SchedulerError::Pipeline(e)) => assert_eq!(e.exit_code(), EXIT_LOCKED, "{e}"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn jitter_is_fixed_per_kind_and_database_and_below_the_bound() {
        let bound = Duration::from_secs(30);
        let db = Path::new("/var/lib/engagement-ingest/engagement.sqlite");
        let a = jitter_delay(JobKind::Totals, db, bound);
        assert_eq!(a, jitter_delay(JobKind::Totals, db, bound));
        let all: Vec<Duration> = JobKind::ALL
            .into_iter()
            .map(|k| jitter_delay(k, db, bound))
            .collect();
        assert!(all.iter().all(|d| *d < bound), "{all:?}");
        assert!(all[0] != all[1] || all[1] != all[2], "{all:?}");
        let other = Path::new("/srv/other.sqlite");
        assert_ne!(a, jitter_delay(JobKind::Totals, other, bound));
    }

    #[test]
    fn a_config_problem_names_the_first_problem_and_counts_the_others() {
        let one = ConfigError {
            problems: vec!["config.toml:3: api.timout: unknown key".to_string()],
        };
        assert_eq!(
            config_problem(&one),
            "config: config.toml:3: api.timout: unknown key; the last good config was used"
        );
        let three = ConfigError {
            problems: vec!["a".to_string(), "b".to_string(), "c".to_string()],
        };
        assert_eq!(
            config_problem(&three),
            "config: a (and 2 more problems); the last good config was used"
        );
    }
}
