//! The pipeline: the only place that knows the order of the stages. A cycle reads the
//! inventory, mirrors it into the database, decides which kinds are due (or catch up on what an
//! earlier cycle left undone), plans, sends every job through the client, parses, and stores
//! each batch in its own transaction. `run`, `demo` and the daemon call it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::{AppKeys, Credential, UserToken};
use crate::client::{
    ApiClient, ApiError, AppVerdict, Breaker, ClientSettings, EndpointLimit, RetryPolicy,
};
use crate::config::{Config, OnInvalid, ScheduleConfig};
pub use crate::domain::system_clock;
use crate::domain::{Clock, Endpoint, HOUR_SECS, Handle, Hour, JobKind, Metric, TweetId};
use crate::inventory::{self, Inventory, InventoryError};
use crate::lock::{EXIT_LOCKED, LockError, WriterLock};
use crate::metrics::{InventoryProblem, Metrics};
use crate::parse::{self, GroupBy, Parsed};
use crate::planner::{
    self, Cell, CellState, HistoricalPolicy, Job, PlanTweet, Refresh, SeriesPolicy, Skipped,
    TotalsPolicy,
};
use crate::store::{
    AccountRecord, AccountState, BatchOutcome, BatchRecord, KindHistory, RunStart, RunStatus,
    RunSummary, SeriesWrite, StatusChange, Store, StoreError, SyncReport, TotalsWrite, TweetState,
    TweetStatus,
};

/// The grouping every `/totals` request asks for.
const TOTALS_GROUPING: &str = "by_tweet";
const TOTALS_GROUP_BY: &[GroupBy] = &[GroupBy::TweetId, GroupBy::EngagementType];
/// The grouping every `/28hr` and `/historical` request asks for (design §2).
const SERIES_GROUPING: &str = "by_hour";
const SERIES_GROUP_BY: &[GroupBy] = &[
    GroupBy::TweetId,
    GroupBy::EngagementType,
    GroupBy::Day,
    GroupBy::Hour,
];

/// Everything a cycle needs, built once from the config. A clone shares the client (its
/// limiters), the database connection, the metrics, the writer lock and the last good
/// inventory.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub client: Arc<ApiClient>,
    pub store: Arc<Mutex<Store>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// How often a cycle logs its progress (batches done, ETA); `None`: never.
    pub progress: Option<Duration>,
    /// Why the config in use is not the file's current one (the daemon keeps the last good
    /// config when an edit does not validate): noted in each cycle's `runs` row.
    pub config_problem: Option<String>,
    /// The last inventory that validated, and when it was read.
    last_inventory: Arc<Mutex<Option<GoodInventory>>>,
    lock: Arc<WriterLock>,
    /// When [`Context::new`] proved the database ([`Store::preflight`]); taken by the next cycle,
    /// which need not prove it again if it begins within [`PROOF_SERVES`].
    proven: Arc<Mutex<Option<Instant>>>,
}

/// How long the proof of the database made when it is opened serves the first cycle: `run`
/// begins its cycle at once, the daemon's first trigger may come much later.
const PROOF_SERVES: Duration = Duration::from_secs(60);

/// An inventory that validated, and when it was read.
type GoodInventory = (Arc<Inventory>, i64);

/// What a run learned of the accounts: the refused ones with the API's words, and the ones
/// whose token answered.
struct AccountNews {
    refused: Vec<(Handle, String)>,
    answered: Vec<Handle>,
}

/// Errors that stop a cycle before or outside any batch.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Client(#[from] ApiError),
    #[error("a batch task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Locked(#[from] LockError),
}

impl PipelineError {
    /// The process exit code for this error (design §3).
    pub fn exit_code(&self) -> u8 {
        match self {
            PipelineError::Inventory(_) => 2,
            PipelineError::Locked(LockError::Held { .. }) => EXIT_LOCKED,
            PipelineError::Store(_)
            | PipelineError::Client(_)
            | PipelineError::Task(_)
            | PipelineError::Locked(LockError::Io { .. }) => 3,
        }
    }
}

/// One request as it ended.
#[derive(Debug, Clone)]
pub struct RequestReport {
    pub kind: JobKind,
    pub endpoint: Endpoint,
    pub credential: Credential,
    pub tweets: usize,
    pub attempts: u32,
    /// Rows written: changed snapshots (totals) or non-zero buckets (series).
    pub rows: usize,
    /// Values the answer carried: one per Tweet and metric (totals), or every bucket of the
    /// dense window (series), zeros included.
    pub received: usize,
    pub outcome: BatchOutcome,
    pub error: Option<String>,
    /// The credential itself was refused (401, or no bearer token could be had).
    pub auth_rejected: bool,
    /// `/historical`: only refreshed cells still settling (see [`planner::HistoricalPolicy`]).
    pub refresh: bool,
}

/// Which kinds a cycle runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The kinds that are due by their `[schedule]` period, and what earlier cycles of the
    /// others left undone (`run` without `--job`): a CronJob sends what the daemon would.
    Due,
    /// These kinds in full, due or not (`run --job`, the daemon's triggers, `demo`).
    Forced(Vec<JobKind>),
}

impl Selection {
    /// The kinds a cycle of this selection considers.
    pub fn kinds(&self) -> Vec<JobKind> {
        match self {
            Selection::Due => JobKind::ALL.to_vec(),
            Selection::Forced(kinds) => kinds.clone(),
        }
    }
}

/// How much of a kind a cycle plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything the kind covers now.
    Full,
    /// Only what the full cycle that started at `since` left undone: Tweets it did not confirm,
    /// `/historical` cells it did not fetch or refresh. Refused accounts are not asked again.
    CatchUp { since: i64 },
}

/// Whether a kind is due, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindDue {
    pub kind: JobKind,
    /// Due by its schedule (or forced).
    pub due: bool,
    /// Forced by `--job` or a daemon trigger.
    pub forced: bool,
    /// Start of the last cycle that planned the kind in full.
    pub last_full_start: Option<i64>,
    /// The schedule's period, seconds.
    pub period: Option<i64>,
    /// When the kind is due next, when not due now (Unix seconds).
    pub next_due: Option<i64>,
}

/// How early a cycle may come and still count as due: a tenth of the period, at most a
/// minute, so a CronJob that starts a few seconds early still runs the kind and one that runs
/// more often than the schedule does not run it twice.
pub fn schedule_tolerance(period: i64) -> i64 {
    (period / 10).min(60)
}

impl KindDue {
    /// Whether `kind` is due at `now`: never run in full, or its schedule fired (less
    /// [`schedule_tolerance`]) after the firing its last full cycle served (the one nearest its
    /// start), so a `run` every 15 minutes runs each kind once per firing of its cron, as the
    /// daemon does, also for irregular schedules. A last full cycle that started in the future (the clock was set
    /// back) counts as due, so a clock correction never stalls collection.
    pub fn at(
        kind: JobKind,
        history: &KindHistory,
        schedule: &ScheduleConfig,
        now: i64,
    ) -> KindDue {
        let cron = schedule.of(kind);
        let utc = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let period = cron.period_at(utc(now));
        let (due, next_due) = match history.last_full_start {
            None => (true, None),
            Some(last) if last > now + 60 => {
                tracing::warn!(
                    kind = kind.name(),
                    "The last full cycle of this kind started in the future ({}): was the clock \
                     set back? Running it now",
                    crate::domain::iso_utc(last)
                );
                (true, None)
            }
            Some(last) => {
                // The firing the last full cycle served: the one nearest its start (a cycle a
                // few seconds early served the firing it anticipated, a late one the firing
                // before it; an off-schedule one, such as the very first, the nearer of the two).
                // The kind is due again at the firing after the one served.
                let tolerance = cron.period_at(utc(last)).map_or(0, schedule_tolerance);
                let before = cron.last_at_or_before(utc(last));
                let after = cron.next_after(utc(last));
                let served = match (before, after) {
                    (Some(b), Some(a)) if a.timestamp() - last < last - b.timestamp() => Some(a),
                    (Some(b), _) => Some(b),
                    (None, a) => a,
                };
                let next = served.and_then(|served| cron.next_after(served));
                match next {
                    Some(firing) => {
                        let next = firing.timestamp() - tolerance;
                        (now >= next, (now < next).then_some(next))
                    }
                    None => (false, None),
                }
            }
        };
        KindDue {
            kind,
            due,
            forced: false,
            last_full_start: history.last_full_start,
            period,
            next_due,
        }
    }

    /// A kind run in full because it was asked for.
    pub fn forced(
        kind: JobKind,
        history: &KindHistory,
        schedule: &ScheduleConfig,
        now: i64,
    ) -> KindDue {
        KindDue {
            due: true,
            forced: true,
            next_due: None,
            ..KindDue::at(kind, history, schedule, now)
        }
    }

    /// The scope of this kind's work in a cycle.
    pub fn scope(&self) -> Scope {
        match (self.due, self.last_full_start) {
            (false, Some(since)) => Scope::CatchUp { since },
            _ => Scope::Full,
        }
    }

    /// Why it is due or not, for people.
    pub fn reason(&self, now: i64) -> String {
        let ago = |t: i64| format!("{} ago", human_secs(now - t));
        let every = self
            .period
            .map_or(String::new(), |p| format!(", every {}", human_secs(p)));
        match (self.forced, self.due, self.last_full_start) {
            (true, _, _) => "asked for (--job)".to_string(),
            (_, true, None) => "due: never run".to_string(),
            (_, true, Some(last)) => format!("due: last full cycle {}{every}", ago(last)),
            (_, false, Some(last)) => format!(
                "not due: last full cycle {}{every}; due in {}",
                ago(last),
                self.next_due.map_or("?".into(), |n| human_secs(n - now))
            ),
            (_, false, None) => "not due".to_string(),
        }
    }
}

/// A duration in seconds, for people: `45s`, `14m05s`, `2h05m`, `3.2 days`.
pub fn human_secs(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=172_799 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{:.1} days", s as f64 / 86_400.0),
    }
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// `None` when nothing was due and nothing was left undone: no run was recorded.
    pub run_id: Option<i64>,
    /// The kinds the cycle worked on.
    pub kinds: Vec<JobKind>,
    /// Those among `kinds` that only caught up on undone work.
    pub catch_up: Vec<JobKind>,
    /// Every kind considered, with whether it was due.
    pub dues: Vec<KindDue>,
    pub inventory: SyncReport,
    pub inventory_len: usize,
    /// Bad inventory lines the cycle worked around (`file:line: reason`), with how.
    pub inventory_problems: Option<InventoryProblem>,
    pub skipped: Skipped,
    pub planned: usize,
    pub requests: Vec<RequestReport>,
    /// Planned batches never sent: the API was unreachable, the app's keys were refused, or
    /// the process was stopping. Planned again next time.
    pub not_attempted: usize,
    pub rows_written: usize,
    pub interrupted: bool,
    /// Accounts whose token the API refused (401) while it accepted the app's keys: their
    /// public metrics were read with the bearer token; a person must re-authorize them.
    pub rejected_accounts: Vec<Handle>,
    /// Accounts paused in the config (`enabled = false`).
    pub paused_accounts: Vec<Handle>,
    /// The app's own credentials were refused: what and why (exit 3).
    pub app_refused: Option<String>,
    /// The API could not be reached: the root cause (exit 3).
    pub unreachable: Option<String>,
    /// Tweets the API attributed to another configured account than the inventory does.
    pub moved: usize,
    /// `/historical` requests the remaining backfill needs (refreshes aside), when planned.
    pub backfill_left: Option<usize>,
    pub elapsed: Duration,
}

impl RunReport {
    /// Batches that failed after retries.
    pub fn failed(&self) -> impl Iterator<Item = &RequestReport> {
        self.requests
            .iter()
            .filter(|r| r.outcome == BatchOutcome::Failed)
    }

    /// `3` when the API could not be reached or refused the app's own credentials; `1` when a
    /// batch failed after retries; else `0`. A refused or paused account is that account's
    /// condition, reported, not a failed job.
    pub fn exit_code(&self) -> u8 {
        if self.unreachable.is_some() || self.app_refused.is_some() {
            3
        } else if self.failed().next().is_some() {
            1
        } else {
            0
        }
    }

    /// The run's status in `runs`.
    pub fn status(&self) -> RunStatus {
        if self.unreachable.is_some() || self.app_refused.is_some() {
            RunStatus::Failed
        } else if self.interrupted {
            RunStatus::Interrupted
        } else if self.failed().next().is_some() {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        }
    }

    /// Request counts by (endpoint, credential kind).
    pub fn requests_by_endpoint(&self) -> BTreeMap<(Endpoint, &'static str), usize> {
        let mut out = BTreeMap::new();
        for r in &self.requests {
            *out.entry((r.endpoint, r.credential.kind())).or_default() += 1;
        }
        out
    }
}

impl Context {
    /// Takes the database's writer lock (before anything is written), opens (creating) the
    /// database, proves it sound and writable ([`Store::preflight`]) before migrating it, marks
    /// runs a killed process left `running` as interrupted, and builds the client. The metrics
    /// start from what the database knows of earlier cycles.
    pub fn new(config: Config, clock: Clock) -> Result<Context, PipelineError> {
        let lock = WriterLock::acquire(&config.database.path)?;
        let mut store = Store::connect(&config.database.path)?;
        store.preflight()?;
        let proven = Instant::now();
        store.migrate()?;
        let stale = store.close_stale_runs(clock())?;
        if stale > 0 {
            tracing::warn!(
                runs = stale,
                "Runs left `running` by a process that ended without finishing them are now marked interrupted"
            );
        }
        let metrics = Arc::new(Metrics::new(clock()));
        seed_metrics(&metrics, &store, &config, clock())?;
        let client = new_client(&config, &clock, &metrics)?;
        Ok(Context {
            config,
            client,
            store: Arc::new(Mutex::new(store)),
            clock,
            metrics,
            progress: None,
            config_problem: None,
            last_inventory: Arc::new(Mutex::new(None)),
            lock: Arc::new(lock),
            proven: Arc::new(Mutex::new(Some(proven))),
        })
    }

    /// The writer lock's file.
    pub fn lock_path(&self) -> &std::path::Path {
        self.lock.path()
    }

    /// This context with a newly loaded config: the client is rebuilt only when its settings
    /// changed (otherwise its limiters and pauses carry over).
    pub fn reconfigured(&self, config: Config) -> Result<Context, PipelineError> {
        let client = if client_settings(&config).fingerprint()
            == client_settings(&self.config).fingerprint()
        {
            Arc::clone(&self.client)
        } else {
            tracing::info!("API settings, credentials or limits changed: new client");
            new_client(&config, &self.clock, &self.metrics)?
        };
        self.metrics
            .set_periods(periods(&config.schedule, (self.clock)()));
        Ok(Context {
            config,
            client,
            ..self.clone()
        })
    }

    /// The inventory this cycle uses: the file's when it validates; with bad lines, its valid
    /// lines (`on_invalid = "skip"`) or the last good inventory of this process (the daemon),
    /// else an error. Problems are logged with `file:line` and kept for `/healthz`.
    fn inventory(
        &self,
        now: i64,
    ) -> Result<(Arc<Inventory>, Option<InventoryProblem>), InventoryError> {
        let config = &self.config;
        let last_good = self
            .last_inventory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let read = inventory::load_valid_lines(&config.inventory.path, &config.handles());
        let (inventory, problem) = match read {
            Ok((inventory, problems)) if problems.is_empty() => {
                let inventory = Arc::new(inventory);
                *self
                    .last_inventory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&inventory), now));
                (inventory, None)
            }
            Ok((inventory, problems)) => {
                let lines: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{}:{}: {}", inventory.source, p.line, p.message))
                    .collect();
                for line in &lines {
                    tracing::error!("{line}");
                }
                let last_good = last_good.map(|(good, at)| (known_owners(good, config), at));
                let (used, how) = match (config.inventory.on_invalid, last_good) {
                    (OnInvalid::Skip, _) => (
                        Arc::new(inventory.clone()),
                        format!(
                            "its {} valid lines were used (on_invalid = \"skip\")",
                            inventory.len()
                        ),
                    ),
                    (OnInvalid::Fail, Some((good, read_at))) => (
                        good,
                        format!(
                            "the last good inventory, read at {}, was used",
                            crate::domain::iso_utc(read_at)
                        ),
                    ),
                    (OnInvalid::Fail, None) => {
                        self.metrics
                            .set_inventory_problem(Some(InventoryProblem::new(
                                &lines,
                                "nothing was sent".into(),
                                now,
                            )));
                        return Err(InventoryError::Invalid {
                            source_name: inventory.source,
                            problems,
                        });
                    }
                };
                (used, Some(InventoryProblem::new(&lines, how, now)))
            }
            Err(e) => match last_good {
                Some((good, read_at)) => {
                    let good = known_owners(good, config);
                    let line = e.to_string();
                    tracing::error!("{line}");
                    let how = format!(
                        "the last good inventory, read at {}, was used",
                        crate::domain::iso_utc(read_at)
                    );
                    (good, Some(InventoryProblem::new(&[line], how, now)))
                }
                None => return Err(e),
            },
        };
        if let Some(p) = &problem {
            tracing::warn!("The inventory has {} bad lines: {}", p.count, p.how);
        }
        self.metrics.set_inventory_problem(problem.clone());
        Ok((inventory, self.metrics.inventory_problem()))
    }
}

/// `inventory` with owners that are no longer configured accounts taken as public Tweets (an
/// account removed from the config since the inventory was last good: its token is gone).
fn known_owners(inventory: Arc<Inventory>, config: &Config) -> Arc<Inventory> {
    let known = |e: &inventory::Entry| e.owner.as_ref().is_none_or(|o| config.account(o).is_some());
    if inventory.entries.iter().all(known) {
        return inventory;
    }
    let mut copy = (*inventory).clone();
    for entry in &mut copy.entries {
        if !known(entry) {
            entry.owner = None;
        }
    }
    Arc::new(copy)
}

/// Starts the metrics from the database: each kind's last cycle and last success (a `run`
/// writes them to its metrics file even for kinds it did not run), the accounts' conditions,
/// and the schedules' periods.
fn seed_metrics(
    metrics: &Metrics,
    store: &Store,
    config: &Config,
    now: i64,
) -> Result<(), StoreError> {
    for kind in JobKind::ALL {
        let history = store.kind_history(kind.name())?;
        metrics.seed_kind(kind, history.last_finished, history.last_success);
    }
    metrics.set_periods(periods(&config.schedule, now));
    metrics.set_accounts(account_states(config, &store.accounts()?));
    Ok(())
}

/// Each kind's schedule period at `now`.
fn periods(schedule: &ScheduleConfig, now: i64) -> Vec<(JobKind, i64)> {
    let at = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    JobKind::ALL
        .into_iter()
        .filter_map(|k| Some((k, crate::metrics::period(schedule, k, at)?)))
        .collect()
}

/// Every configured account's condition: paused by the config, else what the database says
/// (an account with no record yet is taken as ok).
pub fn account_states(config: &Config, records: &[AccountRecord]) -> Vec<(String, AccountState)> {
    config
        .accounts
        .iter()
        .map(|a| {
            let state = if !a.enabled {
                AccountState::Paused
            } else {
                records
                    .iter()
                    .find(|r| r.handle == a.handle.as_str())
                    .map_or(AccountState::Ok, |r| match r.state {
                        AccountState::Paused => AccountState::Ok,
                        s => s,
                    })
            };
            (a.handle.to_string(), state)
        })
        .collect()
}

fn new_client(
    config: &Config,
    clock: &Clock,
    metrics: &Arc<Metrics>,
) -> Result<Arc<ApiClient>, PipelineError> {
    let client = ApiClient::new(client_settings(config), Arc::clone(clock))?;
    Ok(Arc::new(client.with_metrics(Arc::clone(metrics))))
}

/// [`run_cycle`], bounded after shutdown by the config's `shutdown_grace`: when batches in
/// flight have not finished by then, the cycle is abandoned (they are planned again next run),
/// its run is marked interrupted, and `None` is returned.
pub async fn run_within_grace(
    ctx: &Context,
    selection: &Selection,
    shutdown: &CancellationToken,
) -> Result<Option<RunReport>, PipelineError> {
    let started = Instant::now();
    let grace = ctx.config.runtime.shutdown_grace;
    let expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        report = run_cycle(ctx, selection, shutdown) => report.map(Some),
        () = expired => {
            tracing::warn!(grace = ?grace, "Batches still in flight at the end of the shutdown grace: \
                abandoned (they are planned again next run)");
            let now = (ctx.clock)();
            let store = Arc::clone(&ctx.store);
            tokio::task::spawn_blocking(move || {
                store.lock().unwrap_or_else(|e| e.into_inner()).close_stale_runs(now)
            })
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))??;
            let seconds = started.elapsed().as_secs_f64();
            ctx.metrics
                .cycle_finished(&selection.kinds(), RunStatus::Interrupted, now, seconds);
            Ok(None)
        }
    }
}

/// The client's settings, taken from the config. Paused accounts get no token: nothing can
/// be signed with it.
pub fn client_settings(config: &Config) -> ClientSettings {
    let limit = |e: Endpoint| {
        let l = config.limit(e);
        EndpointLimit {
            per_minute: l.per_minute,
            per_second: l.per_second,
        }
    };
    ClientSettings {
        base_url: config.api.base_url.as_str().to_string(),
        token_url: config.api.token_url.as_str().to_string(),
        timeout: config.api.timeout,
        user_agent: config.api.user_agent.clone(),
        max_in_flight: config.api.max_in_flight,
        app: AppKeys {
            consumer_key: config.app.consumer_key.clone(),
            consumer_secret: config.app.consumer_secret.clone(),
        },
        bearer_token: config.app.bearer_token.clone(),
        accounts: config
            .accounts
            .iter()
            .filter(|a| a.enabled)
            .map(|a| {
                let token = UserToken {
                    access_token: a.access_token.clone(),
                    access_token_secret: a.access_token_secret.clone(),
                };
                (a.handle.clone(), token)
            })
            .collect(),
        limits: Endpoint::ALL.into_iter().map(|e| (e, limit(e))).collect(),
        retry: RetryPolicy {
            max_attempts: config.api.retry_attempts,
            max_elapsed: config.api.retry_max_elapsed,
            min_delay: config.api.retry_min_delay,
            ..RetryPolicy::default()
        },
        max_answer_bytes: config.api.max_answer_mib as usize * 1024 * 1024,
    }
}

/// Loads the inventory named by the config, checking owners against `[[accounts]]`.
pub fn load_inventory(config: &Config) -> Result<Inventory, InventoryError> {
    inventory::load(&config.inventory.path, &config.handles())
}

/// What the planner needs from the database.
#[derive(Debug, Default)]
pub struct PlanState {
    /// Status and last `/totals` and `/28hr` answers of known Tweets.
    pub tweets: HashMap<TweetId, TweetState>,
    /// `/historical` cells complete, and fetched but open, per Tweet.
    pub cells: CellState,
    /// Tweets the API attributes to another configured account than the inventory does.
    pub moved: HashMap<TweetId, Handle>,
    /// The accounts' conditions as the last runs found them.
    pub accounts: Vec<AccountRecord>,
    /// Each kind's last cycles.
    pub history: BTreeMap<JobKind, KindHistory>,
}

impl PlanState {
    /// Reads the state the planner needs; `refresh_after` decides which cells are complete.
    pub fn read(store: &Store, refresh_after: Duration) -> Result<PlanState, StoreError> {
        let settle = i64::try_from(refresh_after.as_secs()).unwrap_or(i64::MAX / 4);
        let complete = store
            .complete_cells(planner::CELL_SECS, settle)?
            .into_iter()
            .filter_map(|(id, start)| Some((id, Cell::starting_at(start)?)))
            .collect();
        let open = store
            .open_cells(planner::CELL_SECS, settle)?
            .into_iter()
            .filter_map(|c| {
                Some((
                    (c.tweet, Cell::starting_at(c.cell)?),
                    (c.fetched_at, c.fetched_until),
                ))
            })
            .collect();
        let mut history = BTreeMap::new();
        for kind in JobKind::ALL {
            history.insert(kind, store.kind_history(kind.name())?);
        }
        Ok(PlanState {
            tweets: store.tweet_states()?,
            cells: CellState { complete, open },
            moved: store.moved_owners()?,
            accounts: store.accounts()?,
            history,
        })
    }

    /// Whether each kind `selection` considers is due at `now` under `schedule` (forced ones
    /// always are).
    pub fn dues(&self, selection: &Selection, schedule: &ScheduleConfig, now: i64) -> Vec<KindDue> {
        selection
            .kinds()
            .into_iter()
            .map(|kind| {
                let history = self.history.get(&kind).copied().unwrap_or_default();
                match selection {
                    Selection::Due => KindDue::at(kind, &history, schedule, now),
                    Selection::Forced(_) => KindDue::forced(kind, &history, schedule, now),
                }
            })
            .collect()
    }

    /// Accounts whose token the API refused at their last use.
    fn refused(&self) -> HashSet<&str> {
        self.accounts
            .iter()
            .filter(|a| a.state == AccountState::Refused)
            .map(|a| a.handle.as_str())
            .collect()
    }
}

/// Plans the jobs of `kinds`, each in its scope, for `inventory` (no I/O besides the state
/// already read). Paused accounts' Tweets (and, when catching up, refused accounts') are
/// planned as public Tweets: their public totals with the bearer token, no series.
pub fn plan(
    config: &Config,
    inventory: &Inventory,
    state: &PlanState,
    kinds: &[(JobKind, Scope)],
    now: i64,
) -> (Vec<Job>, Skipped) {
    plan_with(config, inventory, state, kinds, now, false)
}

/// `/historical` backfill left (never fetched, or fetched short): requests it needs, budget
/// aside; refreshes of open cells do not count.
pub fn backfill_left(config: &Config, inventory: &Inventory, state: &PlanState, now: i64) -> usize {
    let mut unbounded = config.clone();
    unbounded.historical.max_requests_per_run = None;
    plan_with(
        &unbounded,
        inventory,
        state,
        &[(JobKind::Historical, Scope::Full)],
        now,
        true,
    )
    .0
    .len()
}

fn plan_with(
    config: &Config,
    inventory: &Inventory,
    state: &PlanState,
    kinds: &[(JobKind, Scope)],
    now: i64,
    backfill_only: bool,
) -> (Vec<Job>, Skipped) {
    let paused: HashSet<&str> = config
        .accounts
        .iter()
        .filter(|a| !a.enabled)
        .map(|a| a.handle.as_str())
        .collect();
    let refused = state.refused();
    // The owner the API says wrote a Tweet wins over the inventory's, once the API said so.
    let tweets = |scope: Scope| {
        let paused = &paused;
        let refused = &refused;
        inventory.entries.iter().map(move |e| {
            let owner = state.moved.get(&e.id).or(e.owner.as_ref()).filter(|o| {
                let catching_up = matches!(scope, Scope::CatchUp { .. });
                !(paused.contains(o.as_str()) || catching_up && refused.contains(o.as_str()))
            });
            PlanTweet { id: e.id, owner }
        })
    };
    let recheck = i64::try_from(config.inventory.recheck_after.as_secs()).unwrap_or(i64::MAX);
    let since = |scope: Scope| match scope {
        Scope::Full => None,
        Scope::CatchUp { since } => Some(since),
    };
    // A per-run budget is a budget per period of the schedule: a catch-up gets what the kind's
    // last full cycle (and the catch-ups since) left of it, so a CronJob that runs more often
    // than the schedule spends no more than the daemon would.
    let budget = |kind: JobKind, max: Option<std::num::NonZeroU32>, scope: Scope| {
        let max = max.map(|n| n.get());
        match scope {
            Scope::Full => max,
            Scope::CatchUp { .. } => {
                let sent = state.history.get(&kind).map_or(0, |h| h.sent_since_full);
                max.map(|m| m.saturating_sub(u32::try_from(sent).unwrap_or(u32::MAX)))
            }
        }
    };
    let series = |kind: JobKind, c: &crate::config::SeriesConfig, scope: Scope| SeriesPolicy {
        max_age_secs: i64::try_from(c.max_age.as_secs()).unwrap_or(i64::MAX),
        metrics: c.metrics.clone(),
        max_requests: budget(kind, c.max_requests_per_run, scope),
        recheck_after_secs: recheck,
        unconfirmed_since: since(scope),
    };
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for &(kind, scope) in kinds {
        let (mut j, s) = match kind {
            JobKind::Totals => {
                let policy = TotalsPolicy {
                    max_requests: budget(kind, config.totals.max_requests_per_run, scope),
                    recheck_after_secs: recheck,
                    unconfirmed_since: since(scope),
                };
                planner::plan_totals(tweets(scope), &state.tweets, policy, now)
            }
            JobKind::Hourly => planner::plan_hourly(
                tweets(scope),
                &state.tweets,
                &series(kind, &config.hourly, scope),
                now,
            ),
            JobKind::Historical => {
                let history = HistoricalPolicy {
                    refresh_after_secs: i64::try_from(config.historical.refresh_after.as_secs())
                        .unwrap_or(i64::MAX / 4),
                    refresh: match (backfill_only, scope) {
                        (true, _) => Refresh::Never,
                        (false, Scope::Full) => Refresh::Due,
                        (false, Scope::CatchUp { since }) => Refresh::DueAt { since },
                    },
                };
                let mut policy = series(kind, &config.historical, scope);
                // A backfill is not a catch-up's to narrow: never-fetched cells are undone work.
                policy.unconfirmed_since = None;
                planner::plan_historical(
                    tweets(scope),
                    &state.tweets,
                    &state.cells,
                    &policy,
                    &history,
                    now,
                )
            }
        };
        jobs.append(&mut j);
        skipped.resting += s.resting;
        skipped.over_budget += s.over_budget;
    }
    (jobs, skipped)
}

/// Runs one cycle of `kinds` in full (as `run --job`, the daemon's triggers and `demo` do).
pub async fn run_once(
    ctx: &Context,
    kinds: &[JobKind],
    shutdown: &CancellationToken,
) -> Result<RunReport, PipelineError> {
    run_cycle(ctx, &Selection::Forced(kinds.to_vec()), shutdown).await
}

/// Runs one cycle of what `selection` picks. When `shutdown` is cancelled no new request is
/// sent; requests in flight finish and are stored, and the run is marked interrupted. A cycle
/// that fails before planning (inventory, database) is recorded in `runs` as failed, unless the
/// database is damaged or cannot be written.
pub async fn run_cycle(
    ctx: &Context,
    selection: &Selection,
    shutdown: &CancellationToken,
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let now = (ctx.clock)();
    let considered = selection.kinds();
    let begun = begin_cycle(ctx, selection, &considered, now).await;
    let begun = match begun {
        Ok(begun) => begun,
        Err(e) => {
            let seconds = started.elapsed().as_secs_f64();
            ctx.metrics
                .cycle_finished(&considered, RunStatus::Failed, (ctx.clock)(), seconds);
            record_failed_cycle(ctx, &considered, now, &e).await;
            return Err(e);
        }
    };
    let Begun {
        inventory,
        inventory_problems,
        sync,
        state,
        dues,
        scopes,
        jobs,
        skipped,
        backfill_left,
        run_id,
    } = begun;
    let kinds: Vec<JobKind> = scopes.iter().map(|(k, _)| *k).collect();
    let catch_up: Vec<JobKind> = scopes
        .iter()
        .filter(|(_, s)| matches!(s, Scope::CatchUp { .. }))
        .map(|(k, _)| *k)
        .collect();
    let paused_accounts: Vec<Handle> = ctx
        .config
        .accounts
        .iter()
        .filter(|a| !a.enabled)
        .map(|a| a.handle.clone())
        .collect();
    let Some(run_id) = run_id else {
        let report = RunReport {
            run_id: None,
            kinds,
            catch_up,
            dues,
            inventory: sync,
            inventory_len: inventory.entries.len(),
            inventory_problems,
            skipped,
            planned: 0,
            requests: Vec::new(),
            not_attempted: 0,
            rows_written: 0,
            interrupted: false,
            rejected_accounts: Vec::new(),
            paused_accounts,
            app_refused: None,
            unreachable: None,
            moved: 0,
            backfill_left,
            elapsed: started.elapsed(),
        };
        tracing::debug!(
            "Nothing due and nothing left undone: {}",
            report
                .dues
                .iter()
                .map(|d| format!("{} {}", d.kind.name(), d.reason(now)))
                .collect::<Vec<_>>()
                .join("; ")
        );
        return Ok(report);
    };
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let span = tracing::info_span!("run", run_id, kinds = %kind_names.join(","));
    span.in_scope(|| {
        for d in &dues {
            tracing::debug!(kind = d.kind.name(), reason = %d.reason(now), "Due?");
        }
        tracing::info!(
            tweets = inventory.entries.len(),
            added = sync.added,
            removed = sync.removed,
            requests = jobs.len(),
            catch_up = %catch_up.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
            "Planned"
        )
    });

    let planned = jobs.len();
    let mut per_kind: BTreeMap<JobKind, usize> = kinds.iter().map(|k| (*k, 0)).collect();
    for job in &jobs {
        *per_kind.entry(job.kind).or_default() += 1;
    }
    ctx.metrics.cycle_started(&per_kind);
    let progress = ctx.progress.map(|every| {
        let reporter = Progress {
            metrics: Arc::clone(&ctx.metrics),
            kinds: kinds.to_vec(),
            limits: kinds
                .iter()
                .map(|k| (*k, *ctx.config.limit(k.endpoint())))
                .collect(),
            started,
        };
        tokio::spawn(reporter.run(every).instrument(span.clone()))
    });
    let batch = Arc::new(BatchContext {
        run_id,
        seq: AtomicI64::new(0),
        client: Arc::clone(&ctx.client),
        store: Arc::clone(&ctx.store),
        states: state.tweets,
        // Paused accounts are left out: no request may use their token.
        authors: ctx
            .config
            .accounts
            .iter()
            .filter(|a| a.enabled)
            .filter_map(|a| Some((a.user_id?, a.handle.clone())))
            .collect(),
        moved: Mutex::new(HashMap::new()),
        clock: Arc::clone(&ctx.clock),
        shutdown: shutdown.clone(),
        metrics: Arc::clone(&ctx.metrics),
        tasks: Arc::new(tokio::sync::Semaphore::new(
            BATCH_TASKS_PER_SLOT * ctx.config.api.max_in_flight.max(1),
        )),
        breaker: Breaker::new(),
        app: tokio::sync::OnceCell::new(),
        app_refused: OnceLock::new(),
        bearer_refused: OnceLock::new(),
        answered_accounts: Mutex::new(BTreeSet::new()),
        unknown_metrics: Mutex::new(BTreeSet::new()),
        bearer_configured: ctx.config.app.bearer_token.is_some(),
    });
    // Bearer jobs all start at once; each account's jobs wait for its first answer, so a
    // revoked token costs one request, not one per batch.
    let mut set = JoinSet::new();
    let mut per_account: BTreeMap<Handle, Vec<Job>> = BTreeMap::new();
    let mut bearer = Vec::new();
    for job in jobs {
        match &job.credential {
            Credential::UserContext { account } => {
                per_account.entry(account.clone()).or_default().push(job)
            }
            Credential::Bearer => bearer.push(job),
        }
    }
    if !bearer.is_empty() {
        let batch = Arc::clone(&batch);
        set.spawn(async move { batch.run_jobs(bearer).await }.instrument(span.clone()));
    }
    for (account, jobs) in per_account {
        let batch = Arc::clone(&batch);
        let span = span.clone();
        set.spawn(async move { batch.run_account(account, jobs, span).await });
    }
    let mut requests = Vec::new();
    let mut interrupted = false;
    let mut rejected: Vec<(Handle, String)> = Vec::new();
    let mut skipped = skipped;
    let mut not_attempted = 0;
    let mut fatal = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(done)) => {
                interrupted |= done.interrupted;
                requests.extend(done.requests);
                rejected.extend(done.rejected_account);
                skipped.rejected += done.skipped_tweets;
                not_attempted += done.not_attempted;
            }
            Ok(Err(e)) => fatal = Some(e),
            Err(e) => fatal = Some(PipelineError::Task(e.to_string())),
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    requests.sort_by(|a, b| {
        (a.kind, a.endpoint, &a.credential).cmp(&(b.kind, b.endpoint, &b.credential))
    });
    let unreachable = batch.breaker.tripped();
    let keys_refused = batch.app_refused.get().is_some();
    let app_refused = batch
        .app_refused
        .get()
        .or(batch.bearer_refused.get())
        .cloned();
    // An account refused while the app's keys were refused too is not the account's fault.
    if keys_refused {
        rejected.clear();
    }
    // The backfill left once this run's backfill batches are stored.
    let backfill_done = requests
        .iter()
        .filter(|r| {
            r.kind == JobKind::Historical
                && !r.refresh
                && matches!(r.outcome, BatchOutcome::Ok | BatchOutcome::Partial)
        })
        .count();
    let backfill_left = backfill_left.map(|n| n.saturating_sub(backfill_done));
    if let Some(n) = backfill_left {
        ctx.metrics.set_backfill_left(n);
    }
    let report = RunReport {
        run_id: Some(run_id),
        kinds: kinds.clone(),
        catch_up,
        dues,
        inventory: sync,
        inventory_len: inventory.entries.len(),
        inventory_problems: inventory_problems.clone(),
        skipped,
        planned,
        rows_written: requests.iter().map(|r| r.rows).sum(),
        requests,
        not_attempted,
        interrupted,
        rejected_accounts: rejected.iter().map(|(h, _)| h.clone()).collect(),
        paused_accounts,
        app_refused,
        unreachable,
        moved: batch.moved.lock().expect("not poisoned").len(),
        backfill_left,
        elapsed: started.elapsed(),
    };
    let status = match &fatal {
        Some(_) => RunStatus::Failed,
        None => report.status(),
    };
    let mut notes: Vec<String> = Vec::new();
    if let Some(e) = &fatal {
        notes.push(e.to_string());
    }
    notes.extend(report.unreachable.clone());
    notes.extend(report.app_refused.clone());
    for (account, why) in &rejected {
        notes.push(format!("account {account}: token refused (401): {why}"));
    }
    if let Some(p) = &inventory_problems {
        notes.push(p.summary());
    }
    notes.extend(ctx.config_problem.clone());
    let failed_kinds: Vec<&'static str> = kinds
        .iter()
        .filter(|k| report.failed().any(|r| r.kind == **k))
        .map(|k| k.name())
        .collect();
    let summary = RunSummary {
        finished_at: (ctx.clock)(),
        status: status.as_str(),
        requests: report.requests.len(),
        failed_batches: report.failed().count(),
        not_attempted: report.not_attempted,
        failed_kinds: failed_kinds.clone(),
        rows_written: report.rows_written,
        error: (!notes.is_empty()).then(|| notes.join("; ")),
    };
    // What this run learned of the accounts: refused, answering, paused; unconfigured forgotten.
    let answered: Vec<Handle> = batch
        .answered_accounts
        .lock()
        .expect("not poisoned")
        .iter()
        .cloned()
        .collect();
    let account_updates = if keys_refused {
        None
    } else {
        Some(AccountNews {
            refused: rejected.clone(),
            answered,
        })
    };
    let configured: Vec<(String, bool)> = ctx
        .config
        .accounts
        .iter()
        .map(|a| (a.handle.to_string(), a.enabled))
        .collect();
    let store = Arc::clone(&ctx.store);
    let finished_at = summary.finished_at;
    let records = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().expect("store mutex poisoned");
        store.finish_run(run_id, &summary)?;
        record_accounts(&mut store, &configured, account_updates, finished_at)?;
        store.accounts()
    })
    .await
    .expect("finish_run does not panic")?;
    ctx.metrics
        .set_accounts(account_states(&ctx.config, &records));
    ctx.metrics.set_unreachable(
        report
            .unreachable
            .as_ref()
            .map(|why| (why.clone(), finished_at)),
    );
    // Each kind by its own batches: one kind's failed batch does not make another's cycle partial.
    for kind in &kinds {
        let own = match status {
            RunStatus::Partial if !failed_kinds.contains(&kind.name()) => RunStatus::Ok,
            s => s,
        };
        ctx.metrics
            .cycle_finished(&[*kind], own, finished_at, report.elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_str(),
            requests = report.requests.len(),
            failed = report.failed().count(),
            not_attempted = report.not_attempted,
            rows = report.rows_written,
            seconds = report.elapsed.as_secs_f64(),
            "Run finished"
        )
    });
    match fatal {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// What a cycle knows once it has planned.
struct Begun {
    inventory: Arc<Inventory>,
    inventory_problems: Option<InventoryProblem>,
    sync: SyncReport,
    state: PlanState,
    dues: Vec<KindDue>,
    /// The kinds with work, each in its scope.
    scopes: Vec<(JobKind, Scope)>,
    jobs: Vec<Job>,
    skipped: Skipped,
    backfill_left: Option<usize>,
    /// `None`: nothing to do, nothing recorded.
    run_id: Option<i64>,
}

/// Reads the inventory, mirrors it, reads the plan state, decides what is due, plans, and
/// records the run (when there is anything to do). The database work runs off the async
/// threads.
async fn begin_cycle(
    ctx: &Context,
    selection: &Selection,
    considered: &[JobKind],
    now: i64,
) -> Result<Begun, PipelineError> {
    let (inventory, inventory_problems) = ctx.inventory(now)?;
    let store = Arc::clone(&ctx.store);
    let mirror = Arc::clone(&inventory);
    let refresh_after = ctx.config.historical.refresh_after;
    // Before anything is sent, the database must be sound and writable (proven when the context
    // opened it, if that was a moment ago).
    let proven = ctx
        .proven
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .is_some_and(|at| at.elapsed() < PROOF_SERVES);
    let (sync, state) = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().expect("store mutex poisoned");
        if !proven {
            store.preflight()?;
        }
        let entries = mirror.entries.iter().map(|e| (e.id, e.owner.as_ref()));
        let sync = store.sync_inventory(entries, now)?;
        Ok::<_, StoreError>((sync, PlanState::read(&store, refresh_after)?))
    })
    .await
    .map_err(|e| PipelineError::Task(e.to_string()))??;

    let dues = state.dues(selection, &ctx.config.schedule, now);
    let mut scopes = Vec::new();
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for due in &dues {
        let scope = due.scope();
        let (mut j, s) = plan(&ctx.config, &inventory, &state, &[(due.kind, scope)], now);
        // A due kind is recorded even with nothing to send, so its period starts again; a
        // catch-up with nothing undone is no work at all.
        if scope == Scope::Full || !j.is_empty() {
            scopes.push((due.kind, scope));
            jobs.append(&mut j);
            skipped.resting += s.resting;
            skipped.over_budget += s.over_budget;
        }
    }
    let backfill_left = considered
        .contains(&JobKind::Historical)
        .then(|| backfill_left(&ctx.config, &inventory, &state, now));
    if let Some(n) = backfill_left {
        ctx.metrics.set_backfill_left(n);
    }
    skipped.paused = inventory
        .entries
        .iter()
        .filter(|e| {
            e.owner
                .as_ref()
                .and_then(|o| ctx.config.account(o))
                .is_some_and(|a| !a.enabled)
        })
        .count();
    let run_id = if scopes.is_empty() {
        None
    } else {
        let kinds: Vec<&'static str> = scopes.iter().map(|(k, _)| k.name()).collect();
        let catch_up: Vec<&'static str> = scopes
            .iter()
            .filter(|(_, s)| matches!(s, Scope::CatchUp { .. }))
            .map(|(k, _)| k.name())
            .collect();
        let planned = jobs.len();
        let store = Arc::clone(&ctx.store);
        let id = tokio::task::spawn_blocking(move || {
            let start = RunStart {
                kinds,
                catch_up,
                planned,
                started_at: now,
            };
            store
                .lock()
                .expect("store mutex poisoned")
                .begin_run(&start)
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))??;
        Some(id)
    };
    Ok(Begun {
        inventory,
        inventory_problems,
        sync,
        state,
        dues,
        scopes,
        jobs,
        skipped,
        backfill_left,
        run_id,
    })
}

/// Records in `runs` a cycle that failed before it planned anything, when the database can
/// take it.
async fn record_failed_cycle(
    ctx: &Context,
    kinds: &[JobKind],
    started_at: i64,
    error: &PipelineError,
) {
    if let PipelineError::Store(e) = error
        && e.forbids_writing()
    {
        tracing::error!("The failed cycle is not recorded in the runs table: {e}");
        return;
    }
    let store = Arc::clone(&ctx.store);
    let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
    let (finished_at, text) = ((ctx.clock)(), error.to_string());
    let written = tokio::task::spawn_blocking(move || {
        store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_failed_cycle(&names, started_at, finished_at, &text)
    })
    .await;
    if let Ok(Err(e)) = written {
        tracing::warn!(error = %e, "Cannot record the failed cycle in the runs table");
    }
}

/// Writes what a run learned of the accounts. `updates` is `None` when the app's own keys were
/// refused (then no account's condition is known).
fn record_accounts(
    store: &mut Store,
    configured: &[(String, bool)],
    updates: Option<AccountNews>,
    now: i64,
) -> Result<(), StoreError> {
    let handles: Vec<&str> = configured.iter().map(|(h, _)| h.as_str()).collect();
    store.retain_accounts(&handles)?;
    let records = store.accounts()?;
    for (handle, enabled) in configured {
        if !enabled {
            store.set_account_state(handle, AccountState::Paused, None, now)?;
        } else if records
            .iter()
            .any(|r| &r.handle == handle && r.state == AccountState::Paused)
        {
            // Enabled again: its condition is unknown until its token is used.
            store.forget_account(handle)?;
        }
    }
    if let Some(AccountNews {
        refused: rejected,
        answered,
    }) = updates
    {
        for (handle, why) in &rejected {
            store.set_account_state(handle.as_str(), AccountState::Refused, Some(why), now)?;
        }
        for handle in answered {
            if !rejected.iter().any(|(h, _)| *h == handle) {
                store.set_account_state(handle.as_str(), AccountState::Ok, None, now)?;
            }
        }
    }
    Ok(())
}

/// What every batch of a run shares.
struct BatchContext {
    run_id: i64,
    seq: AtomicI64,
    client: Arc<ApiClient>,
    store: Arc<Mutex<Store>>,
    states: HashMap<TweetId, TweetState>,
    /// Configured accounts by user id, to recognise them as authors in 403 answers.
    authors: HashMap<u64, Handle>,
    /// Tweets found this run to belong to another configured account, and which.
    moved: Mutex<HashMap<TweetId, Handle>>,
    clock: Clock,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    /// Batch tasks alive at once, run-wide: a task per batch exists only while its batch is
    /// sent and stored, not for every planned batch at once (memory at a million Tweets).
    tasks: Arc<tokio::sync::Semaphore>,
    /// Stops the cycle's sending when the API cannot be reached.
    breaker: Breaker,
    /// What the token endpoint said of the app's keys, asked once after the first 401.
    app: tokio::sync::OnceCell<AppVerdict>,
    /// Set when the app's consumer key and secret were refused: no user-context request is
    /// sent after it.
    app_refused: OnceLock<String>,
    /// Set when the app's bearer token was refused: no bearer request is sent after it.
    bearer_refused: OnceLock<String>,
    /// Accounts whose token the API accepted this run.
    answered_accounts: Mutex<BTreeSet<Handle>>,
    /// Metric names answers used that this build does not know (logged once per run).
    unknown_metrics: Mutex<BTreeSet<String>>,
    /// `app.bearer_token` is configured (else it is obtained from the token endpoint).
    bearer_configured: bool,
}

/// Batch tasks per request slot (`api.max_in_flight`): enough that a slot never waits for a task.
const BATCH_TASKS_PER_SLOT: usize = 2;

/// The requests one job (or one account's jobs) took.
#[derive(Default)]
struct JobDone {
    requests: Vec<RequestReport>,
    /// Shutdown came before the job was (completely) sent.
    interrupted: bool,
    /// The account whose token was refused, and the API's words.
    rejected_account: Option<(Handle, String)>,
    /// Tweets left out because their owner's token was refused.
    skipped_tweets: usize,
    /// Jobs never sent (the API unreachable, the app refused, shutting down).
    not_attempted: usize,
    /// Jobs to run next: moved Tweets under their new owner.
    followups: Vec<Job>,
}

impl JobDone {
    fn merge(&mut self, other: JobDone) {
        self.requests.extend(other.requests);
        self.interrupted |= other.interrupted;
        self.rejected_account = self.rejected_account.take().or(other.rejected_account);
        self.skipped_tweets += other.skipped_tweets;
        self.not_attempted += other.not_attempted;
        self.followups.extend(other.followups);
    }
}

/// How often a job whose request the API refused because of named Tweets is sent again
/// without them.
const MAX_STRIPS: usize = 2;

/// Whose credential a refusal (401, or a refused token request) is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    /// The account's own token: that account's condition.
    Account,
    /// The app's consumer key and secret (or the app is not enabled for the API).
    AppKeys(String),
    /// The app's bearer token.
    Bearer(String),
}

impl BatchContext {
    /// Whether `job`'s credential is known refused this run (app keys, bearer token).
    fn credential_refused(&self, job: &Job) -> bool {
        match job.credential {
            Credential::Bearer => self.bearer_refused.get().is_some(),
            Credential::UserContext { .. } => self.app_refused.get().is_some(),
        }
    }

    /// Decides whose credential a refusal is about, asking the token endpoint about the app's
    /// keys once per run, and reports an app-level refusal once.
    async fn blame(&self, job: &Job, error: &ApiError) -> Option<Refused> {
        let text = error.to_string();
        let refused = match (&job.credential, error) {
            (_, ApiError::Token(why)) => {
                Refused::AppKeys(format!("the token endpoint refused the app's keys: {why}"))
            }
            (Credential::Bearer, e) if e.status() == Some(401) => {
                Refused::Bearer(if self.bearer_configured {
                    format!(
                        "the API refused the app's bearer token (401: {text}); check app.bearer_token, \
                     or remove it so that one is obtained from api.token_url"
                    )
                } else {
                    format!(
                        "the API refused the bearer token the token endpoint issued, twice (401: {text}); \
                     check that api.token_url and api.base_url belong to the same service"
                    )
                })
            }
            (Credential::UserContext { .. }, e) if e.status() == Some(401) => {
                if text
                    .to_ascii_lowercase()
                    .contains("application id is not authorized")
                {
                    Refused::AppKeys(format!(
                        "the app is not enabled for the Engagement API ({text}); ask X to enable \
                         the app of app.consumer_key"
                    ))
                } else {
                    let verdict = self
                        .app
                        .get_or_init(|| self.client.verify_app())
                        .await
                        .clone();
                    match verdict {
                        AppVerdict::Refused(why) => Refused::AppKeys(format!(
                            "the API refused the app's own credentials: user requests failed with \
                             401 and the token endpoint refused app.consumer_key and app.consumer_secret ({why})"
                        )),
                        AppVerdict::Accepted => Refused::Account,
                        AppVerdict::Unknown(why) => {
                            tracing::debug!(error = %why, "Could not verify the app's keys; blaming the account");
                            Refused::Account
                        }
                    }
                }
            }
            _ => return None,
        };
        match &refused {
            Refused::AppKeys(why) => {
                let mut first = false;
                self.app_refused.get_or_init(|| {
                    first = true;
                    why.clone()
                });
                if matches!(error, ApiError::Token(_)) {
                    // No bearer token can be had with refused keys either.
                    self.bearer_refused.get_or_init(|| why.clone());
                }
                if first {
                    tracing::error!(
                        "{why}. No account is at fault and none needs re-authorizing; fix [app] \
                         (app.consumer_key, app.consumer_secret) and run again. Nothing more is \
                         sent with these keys this cycle"
                    );
                }
            }
            Refused::Bearer(why) => {
                let mut first = false;
                self.bearer_refused.get_or_init(|| {
                    first = true;
                    why.clone()
                });
                if first {
                    tracing::error!("{why}. Nothing more is sent with the bearer token this cycle");
                }
            }
            Refused::Account => {}
        }
        Some(refused)
    }

    /// Runs jobs concurrently (each with its own span), merging what they did.
    async fn run_jobs(self: &Arc<Self>, jobs: Vec<Job>) -> Result<JobDone, PipelineError> {
        let mut set = JoinSet::new();
        for job in jobs {
            let me = Arc::clone(self);
            let permit = Arc::clone(&self.tasks)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let span = tracing::info_span!("batch", kind = job.kind.name(),
                endpoint = job.endpoint.name(), credential = %job.credential, tweets = job.tweets.len());
            set.spawn(
                async move {
                    let _permit = permit;
                    let kind = job.kind;
                    let done = me.run_job(job).await;
                    me.metrics.batch_done(kind, 1);
                    done
                }
                .instrument(span),
            );
        }
        let mut done = JobDone::default();
        while let Some(joined) = set.join_next().await {
            done.merge(joined.map_err(|e| PipelineError::Task(e.to_string()))??);
        }
        // Moved Tweets, under their new owner (once: a second move is left for the next run).
        for job in std::mem::take(&mut done.followups) {
            let me = Arc::clone(self);
            let span = tracing::info_span!("batch", kind = job.kind.name(),
                endpoint = job.endpoint.name(), credential = %job.credential, tweets = job.tweets.len());
            let mut more = me.run_job(job).instrument(span).await?;
            more.followups.clear();
            done.merge(more);
        }
        Ok(done)
    }

    /// One account's jobs: the first alone; if the API refuses the token (401) while it
    /// accepts the app's keys, the account is skipped for the rest of the run, its `/totals`
    /// batches read with the bearer token (public metrics only) and its series left for the
    /// next due cycle; if the app's keys are refused, nothing more is sent with them; otherwise
    /// the rest at once.
    async fn run_account(
        self: Arc<Self>,
        account: Handle,
        mut jobs: Vec<Job>,
        span: tracing::Span,
    ) -> Result<JobDone, PipelineError> {
        let rest = jobs.split_off(1);
        let mut done = self.run_jobs(jobs.clone()).instrument(span.clone()).await?;
        if self.app_refused.get().is_some() || self.breaker.tripped().is_some() {
            done.not_attempted += rest.len();
            for job in &rest {
                self.metrics.batch_done(job.kind, 1);
            }
            return Ok(done);
        }
        // Only this account's own answers count (a moved Tweet's follow-up may use another).
        let own = Credential::UserContext {
            account: account.clone(),
        };
        let rejected = done
            .requests
            .iter()
            .find(|r| r.auth_rejected && r.credential == own)
            .map(|r| r.error.clone().unwrap_or_default());
        let Some(why) = rejected else {
            done.merge(self.run_jobs(rest).instrument(span).await?);
            return Ok(done);
        };
        tracing::error!(parent: &span, account = %account,
            "The API refused this account's token (401) while it accepts the app's keys: its \
             public metrics are read with the bearer token, its impressions and series wait; \
             re-authorize the account (or set enabled = false in its [[accounts]] entry)");
        done.rejected_account = Some((account, why));
        let mut fallback = Vec::new();
        for job in jobs.into_iter().chain(rest) {
            if job.kind == JobKind::Totals {
                fallback.push(Job {
                    credential: Credential::Bearer,
                    metrics: Metric::PUBLIC.to_vec(),
                    ..job
                });
            } else {
                done.skipped_tweets += job.tweets.len();
                self.metrics.batch_done(job.kind, 1);
            }
        }
        done.merge(self.run_jobs(fallback).instrument(span).await?);
        Ok(done)
    }

    /// Sends one job and stores what came back. A request the API refuses because of Tweets it
    /// names (protected; not the owner's) marks them and is sent again at once without them; any
    /// other failure is recorded and planned again next run, never fatal. A job whose
    /// credential is known refused, or sent after the API was found unreachable, is not sent.
    async fn run_job(&self, mut job: Job) -> Result<JobDone, PipelineError> {
        let mut done = JobDone::default();
        for strip in 0..=MAX_STRIPS {
            if self.credential_refused(&job) {
                done.not_attempted += 1;
                return Ok(done);
            }
            // Tweets another batch of this run found to belong to another account go there.
            // (Only user-context jobs: the bearer token reads anyone's public metrics.)
            let known: Vec<(TweetId, Handle)> = match account_of(&job) {
                Some(account) => {
                    let moved = self.moved.lock().expect("not poisoned");
                    job.tweets
                        .iter()
                        .filter_map(|t| {
                            Some((*t, moved.get(t).filter(|o| **o != account)?.clone()))
                        })
                        .collect()
                }
                None => Vec::new(),
            };
            if strip == 0 && !known.is_empty() {
                job.tweets.retain(|t| !known.iter().any(|(k, _)| k == t));
                self.follow_moved(&job, &known, &mut done);
                if job.tweets.is_empty() {
                    return Ok(done);
                }
            }
            let started_at = (self.clock)();
            let timer = Instant::now();
            let window = job.cell.map(|cell| cell.window(started_at));
            let body = request_body(&job, window);
            let grouping = grouping(job.kind);
            // Zero buckets are never stored: they are not kept past the parse. Lifetime totals
            // are never negative.
            let check = |bytes: &[u8]| match job.kind {
                JobKind::Totals => parse::parse_lifetime(bytes, &[grouping]),
                JobKind::Hourly | JobKind::Historical => {
                    parse::parse_nonzero_buckets(bytes, &[grouping])
                }
            };
            let outcome = self
                .client
                .send(
                    job.endpoint,
                    &job.credential,
                    &body,
                    check,
                    &self.breaker,
                    &self.shutdown,
                )
                .await;
            let unsent = matches!(
                outcome.result,
                Err(ApiError::Cancelled | ApiError::Unreachable(_))
            );
            if matches!(outcome.result, Err(ApiError::Cancelled)) {
                done.interrupted = true;
            }
            if unsent && outcome.attempts == 0 {
                done.not_attempted += 1;
                return Ok(done); // never sent: nothing to record
            }
            let mut record = BatchRecord {
                run_id: self.run_id,
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                kind: job.kind.name(),
                endpoint: job.endpoint,
                credential: job.credential.label().to_string(),
                tweet_count: job.tweets.len(),
                attempts: outcome.attempts,
                http_status: outcome.status,
                outcome: BatchOutcome::Ok,
                error: None,
                started_at,
                duration_ms: timer.elapsed().as_millis() as i64,
            };
            let error = match outcome.result {
                Ok(parsed) => {
                    self.note_unknown_metrics(&parsed.unknown_metrics);
                    let now = (self.clock)();
                    let (received, rows, shortfall) = match job.kind {
                        JobKind::Totals => {
                            let (write, coverage) = totals_write(&job, &parsed, &self.states, now);
                            let shortfall = record_answer(&mut record, &job, &parsed, &coverage);
                            let received = write.values.len();
                            let rows = self
                                .blocking(record.clone(), move |store, rec| {
                                    store.write_totals_batch(rec, &write)
                                })
                                .await;
                            (received, rows, shortfall)
                        }
                        JobKind::Hourly | JobKind::Historical => {
                            let (write, coverage) =
                                series_write(&job, &parsed, &self.states, window, now);
                            let shortfall = record_answer(&mut record, &job, &parsed, &coverage);
                            let received = write
                                .answered
                                .iter()
                                .map(|(_, _, from, to)| {
                                    usize::try_from((to - from) / HOUR_SECS).unwrap_or(0)
                                })
                                .sum();
                            let rows = self
                                .blocking(record.clone(), move |store, rec| {
                                    store.write_series_batch(rec, &write)
                                })
                                .await;
                            (received, rows, shortfall)
                        }
                    };
                    let rows = match rows {
                        Ok(rows) => rows,
                        // Another process held the database past the busy timeout: this batch
                        // is lost (and planned again), not the run.
                        Err(PipelineError::Store(e)) if store_busy(&e) => {
                            self.not_stored(&job, record, &e, &mut done);
                            return Ok(done);
                        }
                        Err(e) => return Err(e),
                    };
                    if let Some(why) = shortfall {
                        tracing::warn!(endpoint = job.endpoint.name(), credential = %job.credential,
                            "Batch answered in part: {why}");
                    }
                    tracing::debug!(received, rows, "Stored");
                    self.note_answered(&job);
                    self.metrics.batch(
                        job.kind,
                        job.endpoint,
                        record.outcome,
                        record.attempts,
                        received,
                        rows,
                    );
                    let mut report = request_report(&job, &record, rows, false);
                    report.received = received;
                    done.requests.push(report);
                    return Ok(done);
                }
                Err(error) => error,
            };
            let blamed = self.blame(&job, &error).await;
            let named = refusal(&job, &error, &self.authors);
            let strip_and_resend = !named.is_empty() && strip < MAX_STRIPS;
            // A batch the breaker stopped after its own attempts failed: its own cause, once.
            record.error = Some(match (&error, self.breaker.last_cause()) {
                (ApiError::Unreachable(_), Some(cause)) => format!("connection failed: {cause}"),
                _ => error.to_string(),
            });
            record.outcome = if blamed.is_some() {
                BatchOutcome::Unauthorized
            } else if strip_and_resend {
                BatchOutcome::Refused
            } else {
                BatchOutcome::Failed
            };
            if !named.is_empty() {
                self.note_answered(&job);
            }
            let auth_rejected = blamed == Some(Refused::Account);
            if strip_and_resend {
                tracing::info!(error = %error, refused = named.marked.len(), moved = named.moved.len(),
                    "Marked the Tweets the API refused; sending the rest again");
            } else if blamed.is_none()
                && !matches!(error, ApiError::Unreachable(_))
                // The breaker's one line says it for the batch that found the API unreachable.
                && !(matches!(error, ApiError::Connect(_) | ApiError::TokenConnect(_))
                    && self.breaker.tripped().is_some())
            {
                tracing::warn!(error = %error, attempts = record.attempts, "Batch failed; it will be planned again next run");
            }
            let (changes, moved) = (named.marked.clone(), named.moved.clone());
            let recorded = self
                .blocking(record.clone(), move |store, rec| {
                    store.record_batch(rec, &changes, &moved)
                })
                .await;
            match recorded {
                Ok(()) => {}
                // The batch failed anyway; only its line in `requests` is lost.
                Err(PipelineError::Store(e)) if store_busy(&e) => {
                    tracing::error!(error = %e, "The failed batch could not be recorded: the database stayed busy");
                }
                Err(e) => return Err(e),
            }
            self.metrics.batch(
                job.kind,
                job.endpoint,
                record.outcome,
                record.attempts,
                0,
                0,
            );
            done.requests
                .push(request_report(&job, &record, 0, auth_rejected));
            if !strip_and_resend {
                return Ok(done);
            }
            // Tweets another configured account wrote are asked again at once under its token.
            if !named.moved.is_empty() {
                tracing::warn!(
                    tweets = named.moved.len(),
                    "The API says these Tweets belong to another configured account: collecting them under it (update the inventory)"
                );
                self.moved
                    .lock()
                    .expect("not poisoned")
                    .extend(named.moved.iter().cloned());
                self.follow_moved(&job, &named.moved, &mut done);
            }
            job.tweets.retain(|t| !named.names(t));
            if job.tweets.is_empty() {
                return Ok(done);
            }
        }
        Ok(done)
    }

    /// Logs the metric names an answer used that this build does not know, each once per run.
    fn note_unknown_metrics(&self, names: &[String]) {
        let mut seen = self.unknown_metrics.lock().expect("not poisoned");
        for name in names {
            if seen.len() < 100 && seen.insert(name.clone()) {
                tracing::warn!(metric = %parse::clean_text(name, 64),
                    "The answer has a metric this version does not know; it is not stored");
            }
        }
    }

    /// Notes that `job`'s account token was accepted (the API answered past authentication).
    fn note_answered(&self, job: &Job) {
        if let Some(account) = account_of(job) {
            self.answered_accounts
                .lock()
                .expect("not poisoned")
                .insert(account);
        }
    }

    /// Queues `job`'s `moved` Tweets as jobs under their new owners.
    fn follow_moved(&self, job: &Job, moved: &[(TweetId, Handle)], done: &mut JobDone) {
        let mut by_owner: BTreeMap<&Handle, Vec<TweetId>> = BTreeMap::new();
        for (id, owner) in moved {
            by_owner.entry(owner).or_default().push(*id);
        }
        for (owner, tweets) in by_owner {
            let credential = Credential::UserContext {
                account: owner.clone(),
            };
            done.followups.push(Job {
                credential,
                tweets,
                ..job.clone()
            });
        }
    }

    /// Runs a store write off the async threads.
    /// Reports a batch that was answered but could not be stored.
    fn not_stored(
        &self,
        job: &Job,
        mut record: BatchRecord,
        error: &StoreError,
        done: &mut JobDone,
    ) {
        tracing::error!(error = %error, endpoint = job.endpoint.name(), credential = %job.credential,
            "Batch answered but not stored: another process held the database longer than the \
             busy timeout; it is planned again next run");
        record.outcome = BatchOutcome::Failed;
        record.error = Some(format!(
            "answered, but not stored (planned again next run): {error}"
        ));
        self.metrics.batch(
            job.kind,
            job.endpoint,
            record.outcome,
            record.attempts,
            0,
            0,
        );
        done.requests.push(request_report(job, &record, 0, false));
    }

    async fn blocking<T: Send + 'static>(
        &self,
        record: BatchRecord,
        write: impl FnOnce(&mut Store, &BatchRecord) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        let store = Arc::clone(&self.store);
        let result = tokio::task::spawn_blocking(move || {
            write(&mut store.lock().expect("store mutex poisoned"), &record)
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))?;
        Ok(result?)
    }
}

/// Logs a cycle's progress: batches done of planned per kind, and when the rest should be done at
/// the configured limits (or, for an unlimited endpoint, at the rate seen so far).
struct Progress {
    metrics: Arc<Metrics>,
    kinds: Vec<JobKind>,
    limits: Vec<(JobKind, crate::config::Limit)>,
    started: Instant,
}

impl Progress {
    async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
            let mut parts = Vec::new();
            let mut eta = Some(0.0_f64);
            let states: Vec<_> = self.kinds.iter().map(|k| self.metrics.kind(*k)).collect();
            let all_done: usize = states.iter().map(|s| s.done.min(s.planned)).sum();
            let overall = (all_done > 0).then(|| all_done as f64 / elapsed);
            for &kind in &self.kinds {
                let state = self.metrics.kind(kind);
                let (done, planned) = (state.done.min(state.planned), state.planned);
                parts.push(format!("{} {done}/{planned}", kind.name()));
                let left = (planned - done) as f64;
                let limit = self.limits.iter().find(|(k, _)| *k == kind).map(|(_, l)| l);
                let configured = limit.and_then(|l| {
                    let per_minute = l.per_minute.map(|n| f64::from(n.get()) / 60.0);
                    let per_second = l.per_second.map(|n| f64::from(n.get()));
                    match (per_minute, per_second) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                });
                let seen = (done > 0).then(|| done as f64 / elapsed);
                eta = match (eta, configured.or(seen).or(overall)) {
                    _ if left == 0.0 => eta,
                    (Some(e), Some(rate)) => Some(e.max(left / rate)),
                    _ => None,
                };
            }
            let eta = eta.map_or_else(|| "unknown".to_string(), |e| format!("{:.0}s", e.ceil()));
            tracing::info!(batches = %parts.join(", "), eta = %eta, "Progress");
        }
    }
}

fn request_report(
    job: &Job,
    record: &BatchRecord,
    rows: usize,
    auth_rejected: bool,
) -> RequestReport {
    RequestReport {
        refresh: job.refresh,
        kind: job.kind,
        endpoint: job.endpoint,
        credential: job.credential.clone(),
        tweets: job.tweets.len(),
        attempts: record.attempts,
        rows,
        received: 0,
        outcome: record.outcome,
        error: record.error.clone(),
        auth_rejected,
    }
}

/// The grouping each kind asks for: lifetime values per Tweet and type for `/totals`; for the
/// series, always hourly buckets (days are a view), so everything is stored at one resolution.
fn grouping(kind: JobKind) -> (&'static str, &'static [GroupBy]) {
    match kind {
        JobKind::Totals => (TOTALS_GROUPING, TOTALS_GROUP_BY),
        JobKind::Hourly | JobKind::Historical => (SERIES_GROUPING, SERIES_GROUP_BY),
    }
}

/// The JSON body of a job; `window` is the `/historical` window.
pub fn request_body(job: &Job, window: Option<(Hour, Hour)>) -> serde_json::Value {
    let (name, levels) = grouping(job.kind);
    let group_by: Vec<&str> = levels.iter().map(|g| g.as_str()).collect();
    let mut body = serde_json::json!({
        "tweet_ids": job.tweets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "engagement_types": job.metrics.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "groupings": { name: { "group_by": group_by } },
    });
    if let Some((start, end)) = window {
        body["start"] = start.to_string().into();
        body["end"] = end.to_string().into();
    }
    body
}

/// Whether a store error is another connection holding the database past the busy timeout.
fn store_busy(error: &StoreError) -> bool {
    error.is_busy()
}

/// The outcome an answer gives its batch: `partial` when it lists Tweets as unavailable or
/// unsupported, or leaves some out (with why); `failed` when it names none of them.
/// Returns what the answer left out, in words.
fn record_answer(
    record: &mut BatchRecord,
    job: &Job,
    parsed: &Parsed,
    coverage: &Coverage,
) -> Option<String> {
    let listed = coverage.unavailable > 0
        || !parsed.unsupported_impressions.is_empty()
        || !parsed.unsupported_video_views.is_empty();
    let shortfall = coverage.shortfall(job);
    let mut why: Vec<String> = Vec::new();
    if listed && !parsed.errors.is_empty() {
        why.push(parsed.errors.join("; "));
    }
    why.extend(shortfall.clone());
    if coverage.answered_nothing(job) {
        record.outcome = BatchOutcome::Failed;
    } else if listed || shortfall.is_some() {
        record.outcome = BatchOutcome::Partial;
    }
    record.error = (!why.is_empty()).then(|| why.join("; "));
    shortfall
}

/// What an answer said of a job's Tweets, pair by pair. Only what it names counts: a requested
/// Tweet or metric it leaves out is unanswered (nothing stored or deleted for it, no coverage,
/// planned again), never a zero.
struct Coverage {
    /// Tweets the answer named in full: every pair asked of them that the API measures (those
    /// its `unsupported_*` lists refuse are answered by the list), over the whole window for
    /// the series.
    complete: Vec<TweetId>,
    /// Pairs the answer named, with the hours `[from, to)` it named them over (series only).
    named: Vec<(TweetId, Metric, i64, i64)>,
    /// Requested Tweets the answer neither named nor listed as unavailable.
    missing_tweets: Vec<TweetId>,
    /// Pairs of named Tweets missing from the answer, or (series) not covering the window.
    missing_pairs: Vec<(TweetId, Metric)>,
    /// Requested Tweets listed as unavailable.
    unavailable: usize,
    status_changes: Vec<StatusChange>,
}

impl Coverage {
    /// Reads `parsed` for `job`; `whole` says whether a pair's span is a full answer and gives
    /// the hours it covers (for the series: contiguous buckets, clipped to the window).
    fn of(
        job: &Job,
        parsed: &Parsed,
        grouping: &str,
        states: &HashMap<TweetId, TweetState>,
        span_hours: impl Fn(&parse::Span) -> Option<(i64, i64, bool)>,
    ) -> Coverage {
        let unavailable: HashSet<TweetId> = parsed.unavailable.iter().copied().collect();
        let no_video: HashSet<TweetId> = parsed.unsupported_video_views.iter().copied().collect();
        let no_impressions: HashSet<TweetId> =
            parsed.unsupported_impressions.iter().copied().collect();
        // What the API says it does not measure is not a zero to store (nor to delete over).
        let measured = |t: &TweetId, m: &Metric| match m {
            Metric::VideoViews => !no_video.contains(t),
            Metric::Impressions | Metric::Engagements => !no_impressions.contains(t),
            _ => true,
        };
        let empty = HashMap::new();
        let spans = parsed.named.get(grouping).unwrap_or(&empty);
        let detail = (!parsed.errors.is_empty()).then(|| parsed.errors.join("; "));
        let owner_answered = matches!(job.credential, Credential::UserContext { .. });
        let mut out = Coverage {
            complete: Vec::new(),
            named: Vec::new(),
            missing_tweets: Vec::new(),
            missing_pairs: Vec::new(),
            unavailable: 0,
            status_changes: Vec::new(),
        };
        for t in &job.tweets {
            if unavailable.contains(t) {
                out.unavailable += 1;
                out.status_changes
                    .push((*t, TweetStatus::Unavailable, detail.clone()));
                continue;
            }
            let (mut any, mut whole) = (false, true);
            for m in job.metrics.iter().filter(|m| measured(t, m)) {
                match spans.get(&(*t, *m)).and_then(&span_hours) {
                    Some((from, to, full)) => {
                        any = true;
                        out.named.push((*t, *m, from, to));
                        if !full {
                            whole = false;
                            out.missing_pairs.push((*t, *m));
                        }
                    }
                    None => {
                        whole = false;
                        out.missing_pairs.push((*t, *m));
                    }
                }
            }
            // A Tweet whose every asked metric is unsupported is answered by the lists alone.
            let listed = job.metrics.iter().all(|m| !measured(t, m));
            if !any && !listed {
                out.missing_pairs.retain(|(p, _)| p != t);
                out.missing_tweets.push(*t);
                continue;
            }
            if whole {
                out.complete.push(*t);
            }
            // A Tweet that answers again is active again (one forbidden to its owner only when
            // the owner's token answered).
            let revived = states.get(t).is_some_and(|s| match s.status {
                TweetStatus::Unavailable | TweetStatus::Protected => true,
                TweetStatus::Forbidden => owner_answered,
                TweetStatus::Active => false,
            });
            if revived {
                out.status_changes.push((*t, TweetStatus::Active, None));
            }
        }
        out
    }

    /// Whether the answer named nothing of what was asked: no Tweet, no unavailable list.
    fn answered_nothing(&self, job: &Job) -> bool {
        !job.tweets.is_empty() && self.missing_tweets.len() == job.tweets.len()
    }

    /// What the answer left out, in words (a few IDs, then a count), when it left anything.
    fn shortfall(&self, job: &Job) -> Option<String> {
        let ids = |v: &mut dyn Iterator<Item = String>, n: usize| {
            let shown: Vec<String> = v.take(5).collect();
            let more = n.saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{more}", shown.join(", "))
        };
        let mut parts = Vec::new();
        if !self.missing_tweets.is_empty() {
            parts.push(format!(
                "left out {} of the {} Tweets asked ({})",
                self.missing_tweets.len(),
                job.tweets.len(),
                ids(
                    &mut self.missing_tweets.iter().map(ToString::to_string),
                    self.missing_tweets.len()
                )
            ));
        }
        if !self.missing_pairs.is_empty() {
            let what = if job.kind == JobKind::Totals {
                "left out"
            } else {
                "left out or gave incomplete series for"
            };
            parts.push(format!(
                "{what} {} Tweet metrics ({})",
                self.missing_pairs.len(),
                ids(
                    &mut self.missing_pairs.iter().map(|(t, m)| format!("{t} {m}")),
                    self.missing_pairs.len()
                )
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "the answer {}: nothing stored for them, asked again next run",
                parts.join(" and ")
            )
        })
    }
}

fn account_of(job: &Job) -> Option<Handle> {
    match &job.credential {
        Credential::UserContext { account } => Some(account.clone()),
        Credential::Bearer => None,
    }
}

/// What an answered `/28hr` or `/historical` job stores. Each pair the answer named with
/// contiguous hourly buckets replaces its stored buckets over those hours, within the window
/// (the requested one for `/historical`, the echoed one for `/28hr`, else the hours the answer
/// spans); only Tweets named in full over the window count as covered.
fn series_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    window: Option<(Hour, Hour)>,
    fetched_at: i64,
) -> (SeriesWrite, Coverage) {
    let spans = parsed.named.get(SERIES_GROUPING);
    let (start, end) = window
        .map(|(s, e)| (s.secs(), e.secs()))
        .or_else(|| echoed_window(parsed))
        .or_else(|| {
            // Neither asked nor echoed: the hours the answer spans.
            let spans = spans?.values();
            let first = spans.clone().filter_map(|s| s.first).min()?;
            let last = spans.filter_map(|s| s.last).max()?;
            Some((first, last + HOUR_SECS))
        })
        .unwrap_or((
            Hour::floor(fetched_at - 28 * HOUR_SECS).secs(),
            Hour::ceil(fetched_at).secs(),
        ));
    let coverage = Coverage::of(job, parsed, SERIES_GROUPING, states, |span| {
        let (first, last) = (span.first?, span.last?);
        // Buckets with a hole between them say nothing certain of the hours in the hole.
        if (last - first) / HOUR_SECS + 1 != i64::from(span.leaves) {
            return None;
        }
        let (from, to) = (first.max(start), (last + HOUR_SECS).min(end));
        Some((from, to, span.covers(start, end)))
    });
    let ranges: HashMap<(TweetId, Metric), (i64, i64)> = coverage
        .named
        .iter()
        .map(|&(t, m, from, to)| ((t, m), (from, to)))
        .collect();
    let rows = parsed
        .groupings
        .get(SERIES_GROUPING)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let values = rows
        .iter()
        .filter_map(|r| Some((r.tweet?, r.metric?, r.bucket()?, r.value)))
        // Zero buckets are not stored (the range's delete covers them).
        .filter(|(t, m, h, v)| {
            *v != 0
                && ranges
                    .get(&(*t, *m))
                    .is_some_and(|(from, to)| (*from..*to).contains(&h.secs()))
        })
        .collect();
    let mut answered = coverage.named.clone();
    answered.sort();
    let write = SeriesWrite {
        source: job.endpoint,
        fetched_at,
        start,
        end,
        answered,
        values,
        cell: job.cell.map(Cell::start),
        covered: coverage.complete.clone(),
        status_changes: coverage.status_changes.clone(),
        handle: account_of(job),
        unsupported: unsupported(job, parsed),
    };
    (write, coverage)
}

/// The `start`/`end` the API echoed, widened to whole hours (seconds).
fn echoed_window(parsed: &Parsed) -> Option<(i64, i64)> {
    let secs = |s: &Option<String>| {
        chrono::DateTime::parse_from_rfc3339(s.as_deref()?)
            .ok()
            .map(|d| d.timestamp())
    };
    let (start, end) = (secs(&parsed.start)?, secs(&parsed.end)?);
    (start < end).then(|| (Hour::floor(start).secs(), Hour::ceil(end).secs()))
}

/// What an answered `/totals` job stores: the values the answer named, and `checked_at` for
/// the Tweets it named in full.
fn totals_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    observed_at: i64,
) -> (TotalsWrite, Coverage) {
    let coverage = Coverage::of(job, parsed, TOTALS_GROUPING, states, |span| {
        (span.leaves > 0).then_some((0, 0, true))
    });
    let rows = parsed
        .groupings
        .get(TOTALS_GROUPING)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let asked: HashSet<(TweetId, Metric)> = job
        .tweets
        .iter()
        .flat_map(|t| job.metrics.iter().map(move |m| (*t, *m)))
        .collect();
    let named: HashSet<(TweetId, Metric)> =
        coverage.named.iter().map(|&(t, m, _, _)| (t, m)).collect();
    let mut values: Vec<(TweetId, Metric, i64)> = rows
        .iter()
        .filter_map(|r| Some((r.tweet?, r.metric?, r.value)))
        .filter(|(t, m, _)| asked.contains(&(*t, *m)) && named.contains(&(*t, *m)))
        .collect();
    values.sort_by_key(|(t, m, _)| (*t, *m));
    let write = TotalsWrite {
        observed_at,
        values,
        checked: coverage.complete.clone(),
        status_changes: coverage.status_changes.clone(),
        handle: account_of(job),
        unsupported: unsupported(job, parsed),
    };
    (write, coverage)
}

/// The (Tweet, metric) pairs an answer's `unsupported_*` lists refuse, among those asked for.
fn unsupported(job: &Job, parsed: &Parsed) -> Vec<(TweetId, Metric)> {
    let lists = [
        (
            &parsed.unsupported_impressions,
            &[Metric::Impressions, Metric::Engagements][..],
        ),
        (&parsed.unsupported_video_views, &[Metric::VideoViews][..]),
    ];
    lists
        .into_iter()
        .flat_map(|(ids, metrics)| {
            ids.iter()
                .flat_map(move |id| metrics.iter().map(move |m| (*id, *m)))
        })
        .filter(|(id, m)| job.tweets.contains(id) && job.metrics.contains(m))
        .collect()
}

/// What a refused request says about the Tweets it names.
#[derive(Debug, Default)]
struct Refusal {
    /// Protected ones (400 "Tweet ID(s) are unavailable") and ones the owner's token may not
    /// read (403 "Forbidden to access tweets …"), with their new status.
    marked: Vec<StatusChange>,
    /// Ones the API says another configured account wrote ("… for author id N: …" where N is
    /// that account's `user_id`): collected under that account from now on.
    moved: Vec<(TweetId, Handle)>,
}

impl Refusal {
    fn is_empty(&self) -> bool {
        self.marked.is_empty() && self.moved.is_empty()
    }

    fn names(&self, id: &TweetId) -> bool {
        self.marked.iter().any(|(t, _, _)| t == id) || self.moved.iter().any(|(t, _)| t == id)
    }
}

/// Reads the Tweets a refused request names; `authors` maps configured accounts' user ids.
fn refusal(job: &Job, error: &ApiError, authors: &HashMap<u64, Handle>) -> Refusal {
    let status = match error.status() {
        Some(403) if matches!(job.credential, Credential::UserContext { .. }) => {
            TweetStatus::Forbidden
        }
        Some(400) => TweetStatus::Protected,
        _ => return Refusal::default(),
    };
    let requested: HashSet<TweetId> = job.tweets.iter().copied().collect();
    let detail = (!error.api_errors().is_empty()).then(|| error.api_errors().join("; "));
    let mut out = Refusal {
        marked: error
            .unavailable_ids()
            .iter()
            .filter(|id| requested.contains(id))
            .map(|id| (*id, status, detail.clone()))
            .collect(),
        moved: Vec::new(),
    };
    for message in error.api_errors() {
        let lower = message.to_ascii_lowercase();
        if !(lower.contains("forbidden to access tweets") || lower.contains("are unavailable")) {
            continue;
        }
        let new_owner = author_id(message)
            .and_then(|a| authors.get(&a))
            .filter(|h| Some(*h) != account_of(job).as_ref());
        for id in ids_in(message) {
            if !requested.contains(&id) || out.names(&id) {
                continue;
            }
            match new_owner {
                Some(owner) => out.moved.push((id, owner.clone())),
                None => out.marked.push((id, status, Some(message.clone()))),
            }
        }
    }
    out
}

/// The author id in "Forbidden to access tweets for author id 18435372: …".
fn author_id(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("author id")? + "author id".len();
    let digits: String = lower[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Tweet IDs named in an API message: the numbers after its last ':' (separated by ',', ';' or spaces).
fn ids_in(message: &str) -> Vec<TweetId> {
    let tail = message.rsplit_once(':').map_or("", |(_, t)| t);
    tail.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers that leave out any subset of Tweets, of pairs, or the last hours of a pair.
    mod left_out {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const METRICS: [Metric; 3] = [Metric::Impressions, Metric::Favorites, Metric::Retweets];
        const TWEETS: u64 = 4;
        /// Hours of the window.
        const HOURS: i64 = 6;

        /// Per Tweet, per metric: `None` left out, else how many of the window's hours (from
        /// its start) the answer gives, and their values.
        type Answer = Vec<Vec<Option<(usize, Vec<i64>)>>>;

        fn answer() -> impl Strategy<Value = (Vec<bool>, Answer)> {
            let pair = prop_oneof![
                1 => Just(None),
                4 => (1..=HOURS as usize, prop::collection::vec(-1i64..4, HOURS as usize))
                    .prop_map(Some),
            ];
            (
                prop::collection::vec(any::<bool>(), TWEETS as usize),
                prop::collection::vec(prop::collection::vec(pair, METRICS.len()), TWEETS as usize),
            )
        }

        fn tweet(n: u64) -> TweetId {
            TweetId::new(1_000 + n).unwrap()
        }

        /// The JSON of a series answer over `[start, start + HOURS)`.
        fn series_json(start: i64, tweets: &[bool], answer: &Answer) -> String {
            let mut grouping = serde_json::Map::new();
            for (t, present) in tweets.iter().enumerate() {
                if !present {
                    continue;
                }
                let mut metrics = serde_json::Map::new();
                for (m, pair) in answer[t].iter().enumerate() {
                    let Some((hours, values)) = pair else {
                        continue;
                    };
                    let mut days: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
                        BTreeMap::new();
                    for (h, value) in values.iter().enumerate().take(*hours) {
                        let at = chrono::DateTime::from_timestamp(start + h as i64 * HOUR_SECS, 0)
                            .unwrap();
                        days.entry(at.format("%Y-%m-%d").to_string())
                            .or_default()
                            .insert(at.format("%H").to_string(), value.to_string().into());
                    }
                    metrics.insert(
                        METRICS[m].as_str().into(),
                        serde_json::to_value(days).unwrap(),
                    );
                }
                grouping.insert(tweet(t as u64).to_string(), metrics.into());
            }
            serde_json::json!({ SERIES_GROUPING: grouping }).to_string()
        }

        fn totals_json(tweets: &[bool], answer: &Answer) -> String {
            let mut grouping = serde_json::Map::new();
            for (t, present) in tweets.iter().enumerate() {
                if !present {
                    continue;
                }
                let metrics: serde_json::Map<String, serde_json::Value> = answer[t]
                    .iter()
                    .enumerate()
                    .filter_map(|(m, pair)| {
                        let (_, values) = pair.as_ref()?;
                        Some((
                            METRICS[m].as_str().into(),
                            values[0].abs().to_string().into(),
                        ))
                    })
                    .collect();
                grouping.insert(tweet(t as u64).to_string(), metrics.into());
            }
            serde_json::json!({ TOTALS_GROUPING: grouping }).to_string()
        }

        fn record(run_id: i64, seq: i64, kind: JobKind, endpoint: Endpoint) -> BatchRecord {
            BatchRecord {
                run_id,
                seq,
                kind: kind.name(),
                endpoint,
                credential: "acme".into(),
                tweet_count: TWEETS as usize,
                attempts: 1,
                http_status: Some(200),
                outcome: BatchOutcome::Ok,
                error: None,
                started_at: 0,
                duration_ms: 0,
            }
        }

        fn job(kind: JobKind, endpoint: Endpoint, cell: Option<Cell>) -> Job {
            Job {
                kind,
                endpoint,
                credential: Credential::UserContext {
                    account: "acme".parse().unwrap(),
                },
                tweets: (0..TWEETS).map(tweet).collect(),
                metrics: METRICS.to_vec(),
                cell,
                refresh: false,
            }
        }

        fn store() -> (tempfile::TempDir, Store, i64) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
            let acme: Handle = "acme".parse().unwrap();
            store
                .sync_inventory((0..TWEETS).map(|n| (tweet(n), Some(&acme))), 1)
                .unwrap();
            let run = store.begin_run(&RunStart::new(&["historical"], 1)).unwrap();
            (dir, store, run)
        }

        /// The rows of `sql`, each read by `row`.
        fn rows<T, C: FromIterator<T>>(
            store: &Store,
            sql: &str,
            row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        ) -> C {
            let mut stmt = store.conn().prepare(sql).unwrap();
            stmt.query_map([], row)
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }

        fn stored(store: &Store) -> BTreeSet<(i64, i64, i64, i64)> {
            rows(
                store,
                "SELECT tweet_id, metric_id, hour, value FROM series",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        }

        /// Two columns as a map from the first.
        fn by_first(store: &Store, sql: &str) -> BTreeMap<i64, i64> {
            rows(store, sql, |r| Ok((r.get(0)?, r.get(1)?)))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// After a `/historical` batch the database holds everything it held before,
            /// except the buckets the answer named, which hold the answer's values; only the
            /// Tweets it named in full are covered.
            #[test]
            fn series_keep_all_but_what_the_answer_named(
                (first_tweets, first) in answer(),
                (tweets, second) in answer(),
            ) {
                let (_dir, mut store, run) = store();
                let cell = Cell::of(1_700_000_000);
                let start = cell.start();
                let now = start + HOURS * HOUR_SECS;
                let job = job(JobKind::Historical, Endpoint::Historical, Some(cell));
                let window = Some(cell.window(now));
                let states = HashMap::new();
                let mut expected: BTreeMap<(i64, i64, i64), i64> = BTreeMap::new();
                let mut covered_at: BTreeMap<i64, i64> = BTreeMap::new();
                for (seq, (tweets, answer)) in [(first_tweets, first), (tweets, second)].into_iter().enumerate() {
                    let fetched_at = now + seq as i64;
                    let body = series_json(start, &tweets, &answer);
                    let parsed = parse::parse_nonzero_buckets(body.as_bytes(), &[grouping(JobKind::Historical)]).unwrap();
                    let (write, _) = series_write(&job, &parsed, &states, window, fetched_at);
                    let rec = record(run, seq as i64 + 1, JobKind::Historical, Endpoint::Historical);
                    store.write_series_batch(&rec, &write).unwrap();
                    for (t, present) in tweets.iter().enumerate() {
                        if !present {
                            continue;
                        }
                        let id = tweet(t as u64).get() as i64;
                        for (m, pair) in answer[t].iter().enumerate() {
                            let Some((hours, values)) = pair else { continue };
                            for (h, v) in values.iter().enumerate().take(*hours) {
                                let key = (id, METRICS[m].id(), start + h as i64 * HOUR_SECS);
                                if *v == 0 { expected.remove(&key); } else { expected.insert(key, *v); }
                            }
                        }
                        let whole = answer[t].iter().all(|p| p.as_ref().is_some_and(|(h, _)| *h == HOURS as usize));
                        if whole {
                            covered_at.insert(id, fetched_at);
                        }
                    }
                    let expected_rows: BTreeSet<_> = expected.iter().map(|(&(t, m, h), &v)| (t, m, h, v)).collect();
                    prop_assert_eq!(stored(&store), expected_rows);
                    let coverage: BTreeMap<i64, i64> =
                        by_first(&store, "SELECT tweet_id, fetched_at FROM coverage");
                    prop_assert_eq!(&coverage, &covered_at);
                }
            }

            /// After a `/totals` batch every pair's latest value is the answer's if it named
            /// the pair, else what it was; `checked_at` moves only for Tweets named in full.
            #[test]
            fn totals_keep_all_but_what_the_answer_named(
                (first_tweets, first) in answer(),
                (tweets, second) in answer(),
            ) {
                let (_dir, mut store, run) = store();
                let job = job(JobKind::Totals, Endpoint::Totals, None);
                let states = HashMap::new();
                let mut latest: BTreeMap<(i64, i64), i64> = BTreeMap::new();
                let mut checked: BTreeMap<i64, i64> = BTreeMap::new();
                for (seq, (tweets, answer)) in [(first_tweets, first), (tweets, second)].into_iter().enumerate() {
                    let at = 100 + seq as i64;
                    let body = totals_json(&tweets, &answer);
                    let parsed = parse::parse_lifetime(body.as_bytes(), &[grouping(JobKind::Totals)]).unwrap();
                    let (write, _) = totals_write(&job, &parsed, &states, at);
                    store.write_totals_batch(&record(run, seq as i64 + 1, JobKind::Totals, Endpoint::Totals), &write).unwrap();
                    for (t, present) in tweets.iter().enumerate() {
                        if !present {
                            continue;
                        }
                        let id = tweet(t as u64).get() as i64;
                        for (m, pair) in answer[t].iter().enumerate() {
                            if let Some((_, values)) = pair {
                                latest.insert((id, METRICS[m].id()), values[0].abs());
                            }
                        }
                        if answer[t].iter().all(Option::is_some) {
                            checked.insert(id, at);
                        }
                    }
                    let got: BTreeMap<(i64, i64), i64> = rows(
                        &store,
                        "SELECT tweet_id, metric_id, value FROM totals AS t WHERE observed_at = \
                         (SELECT max(observed_at) FROM totals AS u WHERE u.tweet_id = t.tweet_id AND u.metric_id = t.metric_id)",
                        |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)),
                    );
                    prop_assert_eq!(&got, &latest);
                    let got_checked: BTreeMap<i64, i64> = by_first(
                        &store,
                        "SELECT tweet_id, totals_checked_at FROM tweets WHERE totals_checked_at IS NOT NULL",
                    );
                    prop_assert_eq!(&got_checked, &checked);
                }
            }
        }
    }

    #[test]
    fn ids_are_read_from_both_forbidden_message_forms() {
        assert_eq!(
            ids_in("Forbidden to access tweets: 1054424731825229824;"),
            vec!["1054424731825229824".parse::<TweetId>().unwrap()]
        );
        let old = "Forbidden to access tweets for author id 18435372: 640026211712786432, 640026277605339136";
        assert_eq!(ids_in(old).len(), 2);
        assert!(ids_in("internal server error").is_empty());
    }

    fn schedule(extra: &str) -> ScheduleConfig {
        let text =
            format!("[app]\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\n[schedule]\n{extra}\n");
        Config::parse("t.toml", &text, std::iter::empty())
            .unwrap()
            .schedule
    }

    /// The full cycles a `run` every 15 minutes (starting `offsets` seconds early or late) makes
    /// of `kind` over `days` from `t0`, as hours:minutes of the day.
    fn cron_job(schedule: &ScheduleConfig, kind: JobKind, t0: i64, days: i64) -> Vec<String> {
        let mut history = KindHistory::default();
        let mut fired = Vec::new();
        for i in 0..days * 96 {
            let now = t0 + i * 900 + [0, -5, 7][(i % 3) as usize];
            if KindDue::at(kind, &history, schedule, now).due {
                history.last_full_start = Some(now);
                let t = (now + 30).rem_euclid(86_400);
                fired.push(format!("{:02}:{:02}", t / 3600, t % 3600 / 60));
            }
        }
        fired
    }

    /// A kind is due when its schedule fired since its last full cycle (a few seconds early is
    /// on time), also for irregular schedules: business hours, a few times a day.
    #[test]
    fn kinds_are_due_at_their_schedules_firings() {
        let t0 = 1_795_219_200; // a UTC midnight
        let s = schedule(
            "totals = \"0 */15 8-17 * * *\"\nhourly = \"0 5 * * * *\"\nhistorical = \"0 0 1,2,12 * * *\"",
        );
        // The first cycle runs at once (never run), off the schedule; then the firings: 40.
        let totals = cron_job(&s, JobKind::Totals, t0, 1);
        assert_eq!(totals.len(), 41, "{totals:?}");
        assert_eq!(totals[..2], ["00:00", "08:00"]);
        assert!(
            totals[1..]
                .iter()
                .all(|t| ("08:00"..="17:45").contains(&t.as_str())),
            "{totals:?}"
        );
        let historical = cron_job(&s, JobKind::Historical, t0, 2);
        assert_eq!(
            historical,
            ["00:00", "02:00", "12:00", "01:00", "02:00", "12:00"],
            "each firing is served by the run at it"
        );
        let hourly = cron_job(&s, JobKind::Hourly, t0, 1);
        assert_eq!(hourly.len(), 24, "{hourly:?}");
        assert_eq!(hourly[..3], ["00:00", "01:15", "02:15"]);
        let daily = schedule("historical = \"0 30 3 * * *\"");
        assert_eq!(
            cron_job(&daily, JobKind::Historical, t0, 3),
            ["00:00", "03:30", "03:30"]
        );
        let every15 = schedule("totals = \"0 */15 * * * *\"");
        assert_eq!(cron_job(&every15, JobKind::Totals, t0, 1).len(), 96);
    }

    /// A last full cycle that started in the future (the clock was set back) makes the kind due.
    #[test]
    fn a_cycle_in_the_future_makes_the_kind_due() {
        let s = schedule("");
        let history = KindHistory {
            last_full_start: Some(1_800_000_000 + 3 * 86_400),
            ..KindHistory::default()
        };
        assert!(KindDue::at(JobKind::Historical, &history, &s, 1_800_000_000).due);
        let recent = KindHistory {
            last_full_start: Some(1_800_000_000 - 60),
            ..KindHistory::default()
        };
        let due = KindDue::at(JobKind::Historical, &recent, &s, 1_800_000_000);
        assert!(!due.due && due.next_due.is_some());
        assert_eq!(
            due.scope(),
            Scope::CatchUp {
                since: 1_800_000_000 - 60
            }
        );
    }

    #[test]
    fn author_ids_are_read_from_the_2016_message_form() {
        let m = "Forbidden to access tweets for author id 18435372: 640026211712786432, 640026277605339136";
        assert_eq!(author_id(m), Some(18_435_372));
        assert_eq!(
            author_id("Forbidden to access tweets: 1054424731825229824;"),
            None
        );
    }
}
