//! The pipeline: the only place that knows the order of the stages. `run_once` reads the
//! inventory, mirrors it into the database, plans, sends every job through the client, parses,
//! and stores each batch in its own transaction. `run`, `demo` and (later) the daemon call it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{AppKeys, Credential, UserToken};
use crate::client::{ApiClient, ApiError, ClientSettings, EndpointLimit, RetryPolicy};
use crate::config::Config;
pub use crate::domain::system_clock;
use crate::domain::{Clock, Endpoint, Handle, JobKind, Metric, TweetId};
use crate::inventory::{self, Inventory, InventoryError};
use crate::parse::{self, GroupBy, Parsed};
use crate::planner::{self, Job, PlanTweet, Skipped, TotalsPolicy};
use crate::store::{
    BatchOutcome, BatchRecord, RunSummary, Store, StoreError, SyncReport, TotalsWrite, TweetState,
    TweetStatus,
};

/// The grouping every `/totals` request asks for.
const TOTALS_GROUPING: &str = "by_tweet";
const TOTALS_GROUP_BY: &[GroupBy] = &[GroupBy::TweetId, GroupBy::EngagementType];

/// Everything a cycle needs, built once from the config.
pub struct Context {
    pub config: Config,
    pub client: Arc<ApiClient>,
    pub store: Arc<Mutex<Store>>,
    pub clock: Clock,
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
}

impl PipelineError {
    /// The process exit code for this error (design §3).
    pub fn exit_code(&self) -> u8 {
        match self {
            PipelineError::Inventory(_) => 2,
            PipelineError::Store(_) | PipelineError::Client(_) | PipelineError::Task(_) => 3,
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
    pub rows: usize,
    pub outcome: BatchOutcome,
    pub error: Option<String>,
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
    pub elapsed: Duration,
}

impl RunReport {
    /// Batches that failed after retries.
    pub fn failed(&self) -> impl Iterator<Item = &RequestReport> {
        self.requests
            .iter()
            .filter(|r| r.outcome == BatchOutcome::Failed)
    }

    /// `0` when everything planned was stored, `1` when some batch failed (design §3).
    pub fn exit_code(&self) -> u8 {
        if self.failed().next().is_some() { 1 } else { 0 }
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
    /// Builds the client and opens (creating or migrating) the database.
    pub fn new(config: Config, clock: Clock) -> Result<Context, PipelineError> {
        let client = ApiClient::new(client_settings(&config), Arc::clone(&clock))?;
        let store = Store::open(&config.database.path)?;
        Ok(Context {
            config,
            client: Arc::new(client),
            store: Arc::new(Mutex::new(store)),
            clock,
        })
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
        retry: RetryPolicy::default(),
    }
}

/// Loads the inventory named by the config, checking owners against `[[accounts]]`.
pub fn load_inventory(config: &Config) -> Result<Inventory, InventoryError> {
    let handles: Vec<Handle> = config.accounts.iter().map(|a| a.handle.clone()).collect();
    inventory::load(&config.inventory.path, &handles)
}

/// Plans the jobs of `kinds` for `inventory` (no I/O besides the state already read).
pub fn plan(
    config: &Config,
    inventory: &Inventory,
    states: &HashMap<TweetId, TweetState>,
    kinds: &[JobKind],
    now: i64,
) -> (Vec<Job>, Skipped) {
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for kind in kinds {
        match kind {
            JobKind::Totals => {
                let tweets = inventory.entries.iter().map(|e| PlanTweet {
                    id: e.id,
                    owner: e.owner.as_ref(),
                });
                let policy = TotalsPolicy {
                    max_requests: config.totals.max_requests_per_run.map(|n| n.get()),
                };
                let (mut j, s) = planner::plan_totals(tweets, states, policy, now);
                jobs.append(&mut j);
                skipped.resting += s.resting;
                skipped.over_budget += s.over_budget;
            }
            JobKind::Hourly | JobKind::Historical => {
                tracing::warn!(
                    kind = kind.name(),
                    "This build does not collect {kind} series yet; nothing planned"
                );
            }
        }
    }
    (jobs, skipped)
}

/// Runs one cycle of `kinds`. Stops starting new requests when `shutdown` is cancelled.
pub async fn run_once(
    ctx: &Context,
    kinds: &[JobKind],
    shutdown: &CancellationToken,
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let now = (ctx.clock)();
    let inventory = load_inventory(&ctx.config)?;
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let (sync, states, run_id) = {
        let mut store = ctx.store.lock().expect("store mutex poisoned");
        let sync = store.sync_inventory(
            inventory.entries.iter().map(|e| (e.id, e.owner.as_ref())),
            now,
        )?;
        let states = store.tweet_states()?;
        let run_id = store.begin_run(&kind_names, now)?;
        (sync, states, run_id)
    };
    let (jobs, skipped) = plan(&ctx.config, &inventory, &states, kinds, now);
    let _run = tracing::info_span!("run", run_id, kinds = %kind_names.join(",")).entered();
    tracing::info!(
        tweets = inventory.entries.len(),
        added = sync.added,
        removed = sync.removed,
        requests = jobs.len(),
        "Planned"
    );
    drop(_run);

    let planned = jobs.len();
    let states = Arc::new(states);
    let seq = Arc::new(AtomicI64::new(0));
    let mut set = JoinSet::new();
    let mut interrupted = false;
    for job in jobs {
        if shutdown.is_cancelled() {
            interrupted = true;
            break;
        }
        let client = Arc::clone(&ctx.client);
        let store = Arc::clone(&ctx.store);
        let states = Arc::clone(&states);
        let clock = Arc::clone(&ctx.clock);
        let seq = Arc::clone(&seq);
        set.spawn(
            async move { run_job(job, run_id, &seq, &client, &store, &states, &clock).await },
        );
    }
    let mut requests = Vec::new();
    let mut rows_written = 0;
    let mut fatal = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(report)) => {
                rows_written += report.rows;
                requests.push(report);
            }
            Ok(Err(e)) => fatal = Some(e),
            Err(e) => fatal = Some(PipelineError::Task(e.to_string())),
        }
    }
    let failed = requests
        .iter()
        .filter(|r| r.outcome == BatchOutcome::Failed)
        .count();
    let status = match (&fatal, interrupted, failed) {
        (Some(_), _, _) => "failed",
        (None, true, _) => "interrupted",
        (None, false, 0) => "ok",
        (None, false, _) => "partial",
    };
    let summary = RunSummary {
        finished_at: (ctx.clock)(),
        status,
        requests: requests.len(),
        failed_batches: failed,
        rows_written,
        error: fatal.as_ref().map(|e| e.to_string()),
    };
    {
        let store = Arc::clone(&ctx.store);
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .expect("store mutex poisoned")
                .finish_run(run_id, &summary)
        })
        .await
        .expect("finish_run does not panic")?;
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    requests.sort_by(|a, b| {
        (a.kind, a.endpoint, &a.credential).cmp(&(b.kind, b.endpoint, &b.credential))
    });
    Ok(RunReport {
        run_id,
        kinds: kinds.to_vec(),
        inventory: sync,
        inventory_len: inventory.entries.len(),
        skipped,
        planned,
        requests,
        rows_written,
        interrupted,
        elapsed: started.elapsed(),
    })
}

/// Sends one job and stores what came back; a failed batch is recorded, never fatal.
async fn run_job(
    job: Job,
    run_id: i64,
    seq: &AtomicI64,
    client: &ApiClient,
    store: &Arc<Mutex<Store>>,
    states: &HashMap<TweetId, TweetState>,
    clock: &Clock,
) -> Result<RequestReport, PipelineError> {
    let span = tracing::info_span!("batch", kind = job.kind.name(), endpoint = job.endpoint.name(),
        credential = %job.credential, tweets = job.tweets.len());
    let _enter = span.enter();
    let started_at = clock();
    let timer = Instant::now();
    let body = totals_body(&job);
    let outcome = client
        .send(job.endpoint, &job.credential, &body, |bytes| {
            parse::parse(bytes, &[(TOTALS_GROUPING, TOTALS_GROUP_BY)])
        })
        .await;
    let observed_at = clock();
    let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
    let mut record = BatchRecord {
        run_id,
        seq,
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
    match outcome.result {
        Ok(parsed) => {
            let write = totals_write(&job, &parsed, states, observed_at);
            let partial = !parsed.unavailable.is_empty()
                || !parsed.unsupported_impressions.is_empty()
                || !parsed.unsupported_video_views.is_empty();
            if partial {
                record.outcome = BatchOutcome::Partial;
                record.error = (!parsed.errors.is_empty()).then(|| parsed.errors.join("; "));
            }
            let rec = record.clone();
            let store = Arc::clone(store);
            let rows = tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .expect("store mutex poisoned")
                    .write_totals_batch(&rec, &write)
            })
            .await
            .expect("write_totals_batch does not panic")?;
            tracing::debug!(rows, "Stored");
            Ok(request_report(&job, &record, rows))
        }
        Err(error) => {
            let changes = status_changes_for_refusal(&job, &error);
            record.outcome = BatchOutcome::Failed;
            record.error = Some(error.to_string());
            tracing::warn!(error = %error, attempts = record.attempts, "Batch failed; it will be planned again next run");
            let rec = record.clone();
            let store = Arc::clone(store);
            tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .expect("store mutex poisoned")
                    .record_batch(&rec, &changes)
            })
            .await
            .expect("record_batch does not panic")?;
            Ok(request_report(&job, &record, 0))
        }
    }
}

fn request_report(job: &Job, record: &BatchRecord, rows: usize) -> RequestReport {
    RequestReport {
        kind: job.kind,
        endpoint: job.endpoint,
        credential: job.credential.clone(),
        tweets: job.tweets.len(),
        attempts: record.attempts,
        rows,
        outcome: record.outcome,
        error: record.error.clone(),
    }
}

/// The JSON body of a `/totals` job.
pub fn totals_body(job: &Job) -> serde_json::Value {
    let group_by: Vec<&str> = TOTALS_GROUP_BY.iter().map(|g| g.as_str()).collect();
    serde_json::json!({
        "tweet_ids": job.tweets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "engagement_types": job.metrics.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "groupings": { TOTALS_GROUPING: { "group_by": group_by } },
    })
}

/// What an answered `/totals` job stores: values the API vouched for, status changes, usage.
fn totals_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    observed_at: i64,
) -> TotalsWrite {
    let requested: HashSet<TweetId> = job.tweets.iter().copied().collect();
    let unavailable: HashSet<TweetId> = parsed.unavailable.iter().copied().collect();
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
        if requested.contains(&tweet) && job.metrics.contains(&metric) && !refused {
            values.push((tweet, metric, row.value));
        }
    }
    let detail = (!parsed.errors.is_empty()).then(|| parsed.errors.join("; "));
    let mut status_changes: Vec<(TweetId, TweetStatus, Option<String>)> = unavailable
        .iter()
        .filter(|t| requested.contains(t))
        .map(|t| (*t, TweetStatus::Unavailable, detail.clone()))
        .collect();
    let checked: Vec<TweetId> = job
        .tweets
        .iter()
        .copied()
        .filter(|t| !unavailable.contains(t))
        .collect();
    // A Tweet that answers again is active again (forbidden ones stay so: the bearer answered, not the owner).
    for t in &checked {
        if states
            .get(t)
            .is_some_and(|s| matches!(s.status, TweetStatus::Unavailable | TweetStatus::Protected))
        {
            status_changes.push((*t, TweetStatus::Active, None));
        }
    }
    let handle = match &job.credential {
        Credential::UserContext { account } => Some(account.clone()),
        Credential::Bearer => None,
    };
    TotalsWrite {
        observed_at,
        values,
        checked,
        status_changes,
        handle,
    }
}

/// Tweets a refused request names: protected ones (400 "Tweet ID(s) are unavailable") and
/// ones the owner's token may not read (403 "Forbidden to access tweets: …").
fn status_changes_for_refusal(
    job: &Job,
    error: &ApiError,
) -> Vec<(TweetId, TweetStatus, Option<String>)> {
    let status = match error.status() {
        Some(403) if matches!(job.credential, Credential::UserContext { .. }) => {
            TweetStatus::Forbidden
        }
        Some(400) => TweetStatus::Protected,
        _ => return Vec::new(),
    };
    let requested: HashSet<TweetId> = job.tweets.iter().copied().collect();
    let detail = (!error.api_errors().is_empty()).then(|| error.api_errors().join("; "));
    let mut out: Vec<_> = error
        .unavailable_ids()
        .iter()
        .filter(|id| requested.contains(id))
        .map(|id| (*id, status, detail.clone()))
        .collect();
    for message in error.api_errors() {
        let lower = message.to_ascii_lowercase();
        if !(lower.contains("forbidden to access tweets") || lower.contains("are unavailable")) {
            continue;
        }
        for id in ids_in(message) {
            if requested.contains(&id) && !out.iter().any(|(o, _, _)| *o == id) {
                out.push((id, status, Some(message.clone())));
            }
        }
    }
    out
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
}
