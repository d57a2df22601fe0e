//! `daemon`: each job kind on its `[schedule]` cron (tokio-cron-scheduler, UTC), until SIGTERM or
//! SIGINT. One cycle of a kind at a time; kinds run concurrently and share the client (limiters)
//! and the database writer. The config and the inventory are read again at every cycle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sd_notify::NotifyState;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::run::{pipeline_failure, progress_interval};
use super::{Cli, DaemonArgs, Failure};
use crate::config::Config;
use crate::domain::JobKind;
use crate::listener;
use crate::metrics;
use crate::pipeline::{self, Context, Selection};

/// What the scheduled jobs and the HTTP endpoints share.
struct Daemon {
    /// The context of the last good config.
    ctx: Mutex<Context>,
    config_path: Option<PathBuf>,
    running: HashMap<JobKind, AtomicBool>,
    /// The scheduler's job per kind, to replace it when the schedule changes.
    jobs: tokio::sync::Mutex<HashMap<JobKind, Uuid>>,
    scheduler: JobScheduler,
    cycles: TaskTracker,
    shutdown: CancellationToken,
}

/// Runs until the first SIGTERM/SIGINT, then lets running cycles finish within the shutdown
/// grace and exits 0.
pub async fn daemon(cli: &Cli, args: &DaemonArgs) -> Result<u8, Failure> {
    let config = super::load_config(cli)?;
    let mut ctx = Context::new(config, pipeline::system_clock()).map_err(pipeline_failure)?;
    ctx.progress = progress_interval();
    let shutdown = super::cancel_on_signal(
        "Stopping: no new cycles or requests; batches in flight finish and are stored (a second signal exits now)",
    );
    let listener = match args.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let scheduler = JobScheduler::new()
        .await
        .map_err(|e| Failure::fatal(anyhow::anyhow!("cannot start the scheduler: {e}")))?;
    let daemon = Arc::new(Daemon {
        ctx: Mutex::new(ctx.clone()),
        config_path: cli.config.clone(),
        running: JobKind::ALL
            .into_iter()
            .map(|k| (k, AtomicBool::new(false)))
            .collect(),
        jobs: tokio::sync::Mutex::new(HashMap::new()),
        scheduler: scheduler.clone(),
        cycles: TaskTracker::new(),
        shutdown: shutdown.clone(),
    });
    for kind in JobKind::ALL {
        daemon
            .schedule(kind, &ctx.config)
            .await
            .map_err(Failure::usage)?;
    }
    // The endpoints serve until the cycles are over, so a scrape during the stop sees them end.
    let stop_serving = CancellationToken::new();
    let mut serving = None;
    if let Some(listener) = listener {
        let app = axum::Router::new()
            .route("/metrics", get(serve_metrics))
            .route("/healthz", get(serve_health))
            .with_state(Arc::clone(&daemon));
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        tracing::info!(addr = %addr, "Serving /metrics and /healthz");
        if let Some(warning) = args.metrics_listen.and_then(exposure_warning) {
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
        .map_err(|e| Failure::fatal(anyhow::anyhow!("cannot start the scheduler: {e}")))?;
    let now = chrono::Utc::now();
    for kind in JobKind::ALL {
        let cron = ctx.config.schedule.of(kind);
        tracing::info!(kind = kind.name(), schedule = %cron,
            next = ?cron.next_after(now).map(|t| t.to_rfc3339()), "Scheduled");
    }
    tracing::info!(
        database = %ctx.config.database.path.display(),
        lock = %ctx.lock_path().display(),
        "Daemon started"
    );
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
    if let Some(serving) = serving {
        // Idle connections close at once; a response being written gets a moment.
        let _ = tokio::time::timeout(Duration::from_secs(1), serving).await;
    }
    tracing::info!("Daemon stopped");
    Ok(0)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "cannot listen on {addr} (--metrics-listen): {e}"
        ))
    })
}

/// The warning for endpoints served on `addr`, unless it is a loopback address.
fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "/metrics and /healthz are served without authentication on {addr}: anyone who can \
             reach it can read them. Bind 127.0.0.1, or restrict access with a firewall or network policy"
        )
    })
}

impl Daemon {
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
        let (_, body) = health_report(&ctx);
        let status: Vec<&str> = body.lines().skip(1).collect();
        let _ = sd_notify::notify(&[NotifyState::Status(&status.join("; "))]);
    }

    /// Reads the config again: a valid one replaces the last good one (the database path
    /// excepted: the writer lock is held on the old one); an invalid one is logged and ignored.
    async fn reload(self: &Arc<Self>, kind: JobKind) -> Context {
        let current = self.current();
        let mut config = match Config::load(self.config_path.as_deref(), super::utf8_env()) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(
                    kind = kind.name(),
                    "The config is invalid; this cycle uses the last good one:\n{e}"
                );
                let first = e.problems.first().cloned().unwrap_or_default();
                let mut ctx = current;
                ctx.config_problem = Some(format!(
                    "config: {first}{}; the last good config was used",
                    match e.problems.len() {
                        0 | 1 => String::new(),
                        n => format!(" (and {} more problems)", n - 1),
                    }
                ));
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

/// A fixed delay in `[0, jitter)` for `kind`, derived from the kind and the database path
/// (FNV-1a), so each instance keeps its own offset from cycle to cycle.
pub fn jitter_delay(kind: JobKind, database: &std::path::Path, jitter: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!("{}\0{}", kind.name(), database.display());
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hash % millis)
}

async fn serve_metrics(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        daemon.current().metrics.render(),
    )
}

async fn serve_health(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let (healthy, body) = health_report(&daemon.current());
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// `/healthz`: healthy while the last cycle of every kind ended `ok` within twice its period;
/// the body says which kind fails and why, then the conditions a person should see that do not
/// fail a kind (refused or paused accounts, a bad inventory line, an unreachable API).
fn health_report(ctx: &Context) -> (bool, String) {
    let now = chrono::Utc::now();
    let verdict = metrics::health(&ctx.metrics, &ctx.config.schedule, &JobKind::ALL, now);
    let healthy = verdict.iter().all(|h| h.healthy);
    let mut body = String::from(if healthy { "ok\n" } else { "unhealthy\n" });
    for h in &verdict {
        body.push_str(&format!(
            "{}: {} ({})\n",
            h.kind.name(),
            if h.healthy { "ok" } else { "failing" },
            h.reason
        ));
    }
    for warning in ctx.metrics.warnings(now.timestamp()) {
        body.push_str(&format!("warning: {warning}\n"));
    }
    if let Some(problem) = &ctx.config_problem {
        body.push_str(&format!("warning: {problem}\n"));
    }
    (healthy, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_fixed_per_kind_and_database_and_below_the_bound() {
        let bound = Duration::from_secs(30);
        let db = std::path::Path::new("/var/lib/engagement-ingest/engagement.sqlite");
        let a = jitter_delay(JobKind::Totals, db, bound);
        assert_eq!(a, jitter_delay(JobKind::Totals, db, bound));
        let all: Vec<Duration> = JobKind::ALL
            .into_iter()
            .map(|k| jitter_delay(k, db, bound))
            .collect();
        assert!(all.iter().all(|d| *d < bound), "{all:?}");
        assert!(all[0] != all[1] || all[1] != all[2], "{all:?}");
        let other = std::path::Path::new("/srv/other.sqlite");
        assert_ne!(a, jitter_delay(JobKind::Totals, other, bound));
    }

    #[test]
    fn only_a_non_loopback_metrics_address_is_warned_about() {
        for quiet in [
            "127.0.0.1:9464",
            "127.3.2.1:9464",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:9464",
        ] {
            assert_eq!(exposure_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for exposed in [
            "0.0.0.0:9464",
            "10.0.0.5:9464",
            "[::]:9464",
            "[2001:db8::1]:9464",
        ] {
            let warning = exposure_warning(exposed.parse().unwrap()).expect(exposed);
            assert!(
                warning.contains(exposed) && warning.contains("without authentication"),
                "{warning}"
            );
        }
    }
}
