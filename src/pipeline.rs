//! The pipeline: the only place that knows the order of the stages. `run_once` reads the
//! inventory, mirrors it into the database, plans, sends every job through the client, parses,
//! and stores each batch in its own transaction. `run`, `demo` and (later) the daemon call it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::{AppKeys, Credential, UserToken};
use crate::client::{ApiClient, ApiError, ClientSettings, EndpointLimit, RetryPolicy};
use crate::config::Config;
pub use crate::domain::system_clock;
use crate::domain::{Clock, Endpoint, HOUR_SECS, Handle, Hour, JobKind, Metric, TweetId};
use crate::inventory::{self, Inventory, InventoryError};
use crate::lock::{EXIT_LOCKED, LockError, WriterLock};
use crate::metrics::Metrics;
use crate::parse::{self, GroupBy, Parsed};
use crate::planner::{self, Cell, Job, PlanTweet, SeriesPolicy, Skipped, TotalsPolicy};
use crate::store::{
    BatchOutcome, BatchRecord, RunSummary, SeriesWrite, StatusChange, Store, StoreError,
    SyncReport, TotalsWrite, TweetState, TweetStatus,
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
/// limiters), the database connection, the metrics and the writer lock.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub client: Arc<ApiClient>,
    pub store: Arc<Mutex<Store>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// How often a cycle logs its progress (batches done, ETA); `None`: never.
    pub progress: Option<Duration>,
    lock: Arc<WriterLock>,
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
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub kinds: Vec<JobKind>,
    pub inventory: SyncReport,
    pub inventory_len: usize,
    pub skipped: Skipped,
    pub planned: usize,
    pub requests: Vec<RequestReport>,
    pub rows_written: usize,
    pub interrupted: bool,
    /// Accounts whose token the API refused (401): skipped for the rest of the run, their
    /// public metrics read with the bearer token.
    pub rejected_accounts: Vec<Handle>,
    /// Tweets the API attributed to another configured account than the inventory does.
    pub moved: usize,
    pub elapsed: Duration,
}

impl RunReport {
    /// Batches that failed after retries.
    pub fn failed(&self) -> impl Iterator<Item = &RequestReport> {
        self.requests
            .iter()
            .filter(|r| r.outcome == BatchOutcome::Failed)
    }

    /// `0` when everything planned was stored, `1` when some batch failed, `3` when every
    /// request failed because its credential was refused (design §3).
    pub fn exit_code(&self) -> u8 {
        let failed = self.failed().count();
        if failed == 0 {
            0
        } else if failed == self.requests.len() && self.failed().all(|r| r.auth_rejected) {
            3
        } else {
            1
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
    /// Takes the database's writer lock (before anything is written), opens (creating or
    /// migrating) the database, marks runs a killed process left `running` as interrupted, and
    /// builds the client.
    pub fn new(config: Config, clock: Clock) -> Result<Context, PipelineError> {
        let lock = WriterLock::acquire(&config.database.path)?;
        let mut store = Store::open(&config.database.path)?;
        let stale = store.close_stale_runs(clock())?;
        if stale > 0 {
            tracing::warn!(
                runs = stale,
                "Runs left `running` by a process that ended without finishing them are now marked interrupted"
            );
        }
        let metrics = Arc::new(Metrics::new(clock()));
        let client = new_client(&config, &clock, &metrics)?;
        Ok(Context {
            config,
            client,
            store: Arc::new(Mutex::new(store)),
            clock,
            metrics,
            progress: None,
            lock: Arc::new(lock),
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
        Ok(Context {
            config,
            client,
            ..self.clone()
        })
    }
}

fn new_client(
    config: &Config,
    clock: &Clock,
    metrics: &Arc<Metrics>,
) -> Result<Arc<ApiClient>, PipelineError> {
    let client = ApiClient::new(client_settings(config), Arc::clone(clock))?;
    Ok(Arc::new(client.with_metrics(Arc::clone(metrics))))
}

/// [`run_once`], bounded after shutdown by the config's `shutdown_grace`: when batches in flight
/// have not finished by then, the cycle is abandoned (they are planned again next run), its run
/// is marked interrupted, and `None` is returned.
pub async fn run_within_grace(
    ctx: &Context,
    kinds: &[JobKind],
    shutdown: &CancellationToken,
) -> Result<Option<RunReport>, PipelineError> {
    let started = Instant::now();
    let grace = ctx.config.runtime.shutdown_grace;
    let expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        report = run_once(ctx, kinds, shutdown) => report.map(Some),
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
            ctx.metrics.cycle_finished(kinds, "interrupted", now, seconds);
            Ok(None)
        }
    }
}

/// The client's settings, taken from the config.
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
    }
}

/// Loads the inventory named by the config, checking owners against `[[accounts]]`.
pub fn load_inventory(config: &Config) -> Result<Inventory, InventoryError> {
    inventory::load(&config.inventory.path, &config.handles())
}

/// What the planner needs from the database.
#[derive(Debug, Default)]
pub struct PlanState {
    /// Status and last `/totals` check of known Tweets.
    pub tweets: HashMap<TweetId, TweetState>,
    /// `/historical` cells already complete, per Tweet.
    pub complete: HashSet<(TweetId, Cell)>,
    /// Tweets the API attributes to another configured account than the inventory does.
    pub moved: HashMap<TweetId, Handle>,
}

impl PlanState {
    /// Reads the state the planner needs.
    pub fn read(store: &Store) -> Result<PlanState, StoreError> {
        let complete = store
            .complete_cells(planner::CELL_SECS)?
            .into_iter()
            .filter_map(|(id, start)| Some((id, Cell::starting_at(start)?)))
            .collect();
        Ok(PlanState {
            tweets: store.tweet_states()?,
            complete,
            moved: store.moved_owners()?,
        })
    }
}

/// Plans the jobs of `kinds` for `inventory` (no I/O besides the state already read).
pub fn plan(
    config: &Config,
    inventory: &Inventory,
    state: &PlanState,
    kinds: &[JobKind],
    now: i64,
) -> (Vec<Job>, Skipped) {
    // The owner the API says wrote a Tweet wins over the inventory's, once the API said so.
    let tweets = || {
        inventory.entries.iter().map(|e| PlanTweet {
            id: e.id,
            owner: state.moved.get(&e.id).or(e.owner.as_ref()),
        })
    };
    let recheck = i64::try_from(config.inventory.recheck_after.as_secs()).unwrap_or(i64::MAX);
    let series = |c: &crate::config::SeriesConfig| SeriesPolicy {
        max_age_secs: i64::try_from(c.max_age.as_secs()).unwrap_or(i64::MAX),
        metrics: c.metrics.clone(),
        max_requests: c.max_requests_per_run.map(|n| n.get()),
        recheck_after_secs: recheck,
    };
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for kind in kinds {
        let (mut j, s) = match kind {
            JobKind::Totals => {
                let policy = TotalsPolicy {
                    max_requests: config.totals.max_requests_per_run.map(|n| n.get()),
                    recheck_after_secs: recheck,
                };
                planner::plan_totals(tweets(), &state.tweets, policy, now)
            }
            JobKind::Hourly => {
                planner::plan_hourly(tweets(), &state.tweets, &series(&config.hourly), now)
            }
            JobKind::Historical => planner::plan_historical(
                tweets(),
                &state.tweets,
                &state.complete,
                &series(&config.historical),
                now,
            ),
        };
        jobs.append(&mut j);
        skipped.resting += s.resting;
        skipped.over_budget += s.over_budget;
    }
    (jobs, skipped)
}

/// Runs one cycle of `kinds`. When `shutdown` is cancelled no new request is sent; requests in
/// flight finish and are stored, and the run is marked interrupted.
pub async fn run_once(
    ctx: &Context,
    kinds: &[JobKind],
    shutdown: &CancellationToken,
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let now = (ctx.clock)();
    // A cycle that cannot start (bad inventory, database error) counts as failed.
    let failed_to_start = |e: PipelineError| {
        let seconds = started.elapsed().as_secs_f64();
        ctx.metrics
            .cycle_finished(kinds, "failed", (ctx.clock)(), seconds);
        e
    };
    let inventory = load_inventory(&ctx.config).map_err(|e| failed_to_start(e.into()))?;
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let (sync, state, run_id) = {
        let mut store = ctx.store.lock().expect("store mutex poisoned");
        let entries = inventory.entries.iter().map(|e| (e.id, e.owner.as_ref()));
        let begun = store.sync_inventory(entries, now).and_then(|sync| {
            let state = PlanState::read(&store)?;
            let run_id = store.begin_run(&kind_names, now)?;
            Ok((sync, state, run_id))
        });
        begun.map_err(|e| failed_to_start(e.into()))?
    };
    let (jobs, skipped) = plan(&ctx.config, &inventory, &state, kinds, now);
    let span = tracing::info_span!("run", run_id, kinds = %kind_names.join(","));
    span.in_scope(|| {
        tracing::info!(
            tweets = inventory.entries.len(),
            added = sync.added,
            removed = sync.removed,
            requests = jobs.len(),
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
        authors: ctx
            .config
            .accounts
            .iter()
            .filter_map(|a| Some((a.user_id?, a.handle.clone())))
            .collect(),
        moved: Mutex::new(HashMap::new()),
        clock: Arc::clone(&ctx.clock),
        shutdown: shutdown.clone(),
        metrics: Arc::clone(&ctx.metrics),
        tasks: Arc::new(tokio::sync::Semaphore::new(
            BATCH_TASKS_PER_SLOT * ctx.config.api.max_in_flight.max(1),
        )),
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
    let mut rejected_accounts = Vec::new();
    let mut skipped = skipped;
    let mut fatal = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(done)) => {
                interrupted |= done.interrupted;
                requests.extend(done.requests);
                rejected_accounts.extend(done.rejected_account);
                skipped.rejected += done.skipped_tweets;
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
    let report = RunReport {
        run_id,
        kinds: kinds.to_vec(),
        inventory: sync,
        inventory_len: inventory.entries.len(),
        skipped,
        planned,
        rows_written: requests.iter().map(|r| r.rows).sum(),
        requests,
        interrupted,
        rejected_accounts,
        moved: batch.moved.lock().expect("not poisoned").len(),
        elapsed: started.elapsed(),
    };
    let summary = RunSummary {
        finished_at: (ctx.clock)(),
        status: match (&fatal, interrupted, report.failed().count()) {
            (Some(_), _, _) => "failed",
            (None, true, _) => "interrupted",
            (None, false, 0) => "ok",
            (None, false, _) => "partial",
        },
        requests: report.requests.len(),
        failed_batches: report.failed().count(),
        rows_written: report.rows_written,
        error: fatal.as_ref().map(|e| e.to_string()),
    };
    let store = Arc::clone(&ctx.store);
    let (status, finished_at) = (summary.status, summary.finished_at);
    tokio::task::spawn_blocking(move || {
        store
            .lock()
            .expect("store mutex poisoned")
            .finish_run(run_id, &summary)
    })
    .await
    .expect("finish_run does not panic")?;
    ctx.metrics
        .cycle_finished(kinds, status, finished_at, report.elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            requests = report.requests.len(),
            failed = report.failed().count(),
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
}

/// Batch tasks per request slot (`api.max_in_flight`): enough that a slot never waits for a task.
const BATCH_TASKS_PER_SLOT: usize = 2;

/// The requests one job (or one account's jobs) took.
#[derive(Default)]
struct JobDone {
    requests: Vec<RequestReport>,
    /// Shutdown came before the job was (completely) sent.
    interrupted: bool,
    /// The account whose token was refused.
    rejected_account: Option<Handle>,
    /// Tweets left out because their owner's token was refused.
    skipped_tweets: usize,
    /// Jobs to run next: moved Tweets under their new owner.
    followups: Vec<Job>,
}

impl JobDone {
    fn merge(&mut self, other: JobDone) {
        self.requests.extend(other.requests);
        self.interrupted |= other.interrupted;
        self.rejected_account = self.rejected_account.take().or(other.rejected_account);
        self.skipped_tweets += other.skipped_tweets;
        self.followups.extend(other.followups);
    }
}

/// How often a job whose request the API refused because of named Tweets is sent again
/// without them.
const MAX_STRIPS: usize = 2;

impl BatchContext {
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

    /// One account's jobs: the first alone; if the API refuses the token (401), the account is
    /// skipped for the rest of the run, its `/totals` batches read with the bearer token
    /// (public metrics only) and its series left for the next run; otherwise the rest at once.
    async fn run_account(
        self: Arc<Self>,
        account: Handle,
        mut jobs: Vec<Job>,
        span: tracing::Span,
    ) -> Result<JobDone, PipelineError> {
        let rest = jobs.split_off(1);
        let mut done = self.run_jobs(jobs.clone()).instrument(span.clone()).await?;
        // Only this account's own answers count (a moved Tweet's follow-up may use another).
        let own = Credential::UserContext {
            account: account.clone(),
        };
        let rejected = done
            .requests
            .iter()
            .any(|r| r.auth_rejected && r.credential == own);
        if !rejected {
            done.merge(self.run_jobs(rest).instrument(span).await?);
            return Ok(done);
        }
        tracing::error!(parent: &span, account = %account,
            "The API refused this account's token (401): skipping it for this run; its public \
             metrics are read with the bearer token; re-authorize the account");
        done.rejected_account = Some(account);
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
    /// other failure is recorded and planned again next run, never fatal.
    async fn run_job(&self, mut job: Job) -> Result<JobDone, PipelineError> {
        let mut done = JobDone::default();
        for strip in 0..=MAX_STRIPS {
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
            // Zero buckets are never stored: they are not kept past the parse.
            let check = |bytes: &[u8]| parse::parse_nonzero_buckets(bytes, &[grouping]);
            let outcome = self
                .client
                .send(job.endpoint, &job.credential, &body, check, &self.shutdown)
                .await;
            if matches!(outcome.result, Err(ApiError::Cancelled)) {
                done.interrupted = true;
                if outcome.attempts == 0 {
                    return Ok(done); // never sent: nothing to record
                }
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
                    let partial = !parsed.unavailable.is_empty()
                        || !parsed.unsupported_impressions.is_empty()
                        || !parsed.unsupported_video_views.is_empty();
                    if partial {
                        record.outcome = BatchOutcome::Partial;
                        record.error =
                            (!parsed.errors.is_empty()).then(|| parsed.errors.join("; "));
                    }
                    let now = (self.clock)();
                    let (received, rows) = match job.kind {
                        JobKind::Totals => {
                            let write = totals_write(&job, &parsed, &self.states, now);
                            let received = write.values.len();
                            let rows = self
                                .blocking(record.clone(), move |store, rec| {
                                    store.write_totals_batch(rec, &write)
                                })
                                .await?;
                            (received, rows)
                        }
                        JobKind::Hourly | JobKind::Historical => {
                            let write = series_write(&job, &parsed, &self.states, window, now);
                            let hours = (write.end - write.start) / HOUR_SECS;
                            let received =
                                write.answered.len() * usize::try_from(hours).unwrap_or(0);
                            let rows = self
                                .blocking(record.clone(), move |store, rec| {
                                    store.write_series_batch(rec, &write)
                                })
                                .await?;
                            (received, rows)
                        }
                    };
                    tracing::debug!(received, rows, "Stored");
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
            let named = refusal(&job, &error, &self.authors);
            let strip_and_resend = !named.is_empty() && strip < MAX_STRIPS;
            record.error = Some(error.to_string());
            record.outcome = if strip_and_resend {
                BatchOutcome::Refused
            } else {
                BatchOutcome::Failed
            };
            let auth_rejected = matches!(error, ApiError::Token(_) | ApiError::NoToken(_))
                || error.status() == Some(401);
            if strip_and_resend {
                tracing::info!(error = %error, refused = named.marked.len(), moved = named.moved.len(),
                    "Marked the Tweets the API refused; sending the rest again");
            } else {
                tracing::warn!(error = %error, attempts = record.attempts, "Batch failed; it will be planned again next run");
            }
            let (changes, moved) = (named.marked.clone(), named.moved.clone());
            self.blocking(record.clone(), move |store, rec| {
                store.record_batch(rec, &changes, &moved)
            })
            .await?;
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

/// The Tweets an answer covers (all asked but the unavailable ones) and the status changes it
/// implies: unavailable Tweets marked, refused ones that answer again made active again (a
/// Tweet forbidden to its owner only when the owner's token answered).
fn answered_tweets(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
) -> (Vec<TweetId>, Vec<StatusChange>) {
    let unavailable: HashSet<TweetId> = parsed.unavailable.iter().copied().collect();
    let detail = (!parsed.errors.is_empty()).then(|| parsed.errors.join("; "));
    let mut changes: Vec<StatusChange> = job
        .tweets
        .iter()
        .filter(|t| unavailable.contains(t))
        .map(|t| (*t, TweetStatus::Unavailable, detail.clone()))
        .collect();
    let answered: Vec<TweetId> = job
        .tweets
        .iter()
        .copied()
        .filter(|t| !unavailable.contains(t))
        .collect();
    let owner_answered = matches!(job.credential, Credential::UserContext { .. });
    for t in &answered {
        let revived = states.get(t).is_some_and(|s| match s.status {
            TweetStatus::Unavailable | TweetStatus::Protected => true,
            TweetStatus::Forbidden => owner_answered,
            TweetStatus::Active => false,
        });
        if revived {
            changes.push((*t, TweetStatus::Active, None));
        }
    }
    (answered, changes)
}

fn account_of(job: &Job) -> Option<Handle> {
    match &job.credential {
        Credential::UserContext { account } => Some(account.clone()),
        Credential::Bearer => None,
    }
}

/// What an answered `/28hr` or `/historical` job stores. The answer is dense over its window
/// (the requested one for `/historical`, the echoed one for `/28hr`), so every answered
/// (Tweet, metric) pair replaces its stored buckets there.
fn series_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    window: Option<(Hour, Hour)>,
    fetched_at: i64,
) -> SeriesWrite {
    let (start, end) = window.or_else(|| echoed_window(parsed)).unwrap_or_else(|| {
        // No echo: the documented /28hr window.
        (
            Hour::floor(fetched_at - 28 * HOUR_SECS),
            Hour::ceil(fetched_at),
        )
    });
    let (answered, status_changes) = answered_tweets(job, parsed, states);
    let no_video: HashSet<TweetId> = parsed.unsupported_video_views.iter().copied().collect();
    let no_impressions: HashSet<TweetId> = parsed.unsupported_impressions.iter().copied().collect();
    let pairs: HashSet<(TweetId, Metric)> = answered
        .iter()
        .flat_map(|t| job.metrics.iter().map(move |m| (*t, *m)))
        // What the API says it does not measure is not a zero to store (nor to delete over).
        .filter(|(t, m)| match m {
            Metric::VideoViews => !no_video.contains(t),
            Metric::Impressions | Metric::Engagements => !no_impressions.contains(t),
            _ => true,
        })
        .collect();
    let rows = parsed
        .groupings
        .get(SERIES_GROUPING)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let values = rows
        .iter()
        .filter_map(|r| Some((r.tweet?, r.metric?, r.bucket()?, r.value)))
        // Zero buckets are not stored (the window's delete covers them).
        .filter(|(t, m, _, v)| *v != 0 && pairs.contains(&(*t, *m)))
        .collect();
    let mut answered_pairs: Vec<(TweetId, Metric)> = pairs.into_iter().collect();
    answered_pairs.sort();
    SeriesWrite {
        source: job.endpoint,
        fetched_at,
        start: start.secs(),
        end: end.secs(),
        answered: answered_pairs,
        values,
        cell: job.cell.map(Cell::start),
        covered: answered,
        status_changes,
        handle: account_of(job),
        unsupported: unsupported(job, parsed),
    }
}

/// The `start`/`end` the API echoed, widened to whole hours.
fn echoed_window(parsed: &Parsed) -> Option<(Hour, Hour)> {
    let secs = |s: &Option<String>| {
        chrono::DateTime::parse_from_rfc3339(s.as_deref()?)
            .ok()
            .map(|d| d.timestamp())
    };
    Some((
        Hour::floor(secs(&parsed.start)?),
        Hour::ceil(secs(&parsed.end)?),
    ))
}

/// What an answered `/totals` job stores: values the API vouched for, status changes, usage.
fn totals_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    observed_at: i64,
) -> TotalsWrite {
    let (checked, status_changes) = answered_tweets(job, parsed, states);
    let answered: HashSet<TweetId> = checked.iter().copied().collect();
    let no_impressions: HashSet<TweetId> = parsed.unsupported_impressions.iter().copied().collect();
    let no_video: HashSet<TweetId> = parsed.unsupported_video_views.iter().copied().collect();
    let rows = parsed
        .groupings
        .get(TOTALS_GROUPING)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(tweet), Some(metric)) = (row.tweet, row.metric) else {
            continue;
        };
        let refused = match metric {
            Metric::Impressions | Metric::Engagements => no_impressions.contains(&tweet),
            // The API keeps these Tweets with a "0" that means "not measured", not zero views.
            Metric::VideoViews => no_video.contains(&tweet),
            _ => false,
        };
        if answered.contains(&tweet) && job.metrics.contains(&metric) && !refused {
            values.push((tweet, metric, row.value));
        }
    }
    TotalsWrite {
        observed_at,
        values,
        checked,
        status_changes,
        handle: account_of(job),
        unsupported: unsupported(job, parsed),
    }
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
