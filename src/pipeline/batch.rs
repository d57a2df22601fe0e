//! One run's batches: what they share, sending each job once and storing what came back (the
//! answer read by `answer`), and the store writes off the async threads. What follows a refusal
//! (fallback, sending again) is `fallback`'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::answer::{self, Refusal, Write};
use super::context::store_task;
use super::fallback::Refused;
use super::report::request_report;
use super::{Context, PipelineError, RequestReport};
use crate::client::{ApiClient, ApiError, AppVerdict, Breaker, RequestBody};
use crate::domain::{BatchOutcome, Clock, Credential, Handle, Hour, TweetId, TweetState};
use crate::metrics::Metrics;
use crate::parse;
use crate::planner::Job;
use crate::store::{BatchRecord, Store, StoreError};

/// What every batch of a run shares.
pub(super) struct BatchContext {
    run_id: i64,
    seq: AtomicI64,
    pub(super) client: Arc<ApiClient>,
    store: Arc<Mutex<Store>>,
    states: HashMap<TweetId, TweetState>,
    /// Configured accounts by user id, to recognise them as authors in 403 answers.
    authors: HashMap<u64, Handle>,
    /// Tweets found this run to belong to another configured account, and which.
    pub(super) moved: Mutex<HashMap<TweetId, Handle>>,
    clock: Clock,
    shutdown: CancellationToken,
    pub(super) metrics: Arc<Metrics>,
    /// Batch tasks alive at once, run-wide: a task per batch exists only while its batch is
    /// sent and stored, not for every planned batch at once (memory at a million Tweets).
    tasks: Arc<tokio::sync::Semaphore>,
    /// Stops the cycle's sending when the API cannot be reached.
    pub(super) breaker: Breaker,
    /// What the token endpoint said of the app's keys, asked once after the first 401.
    pub(super) app: tokio::sync::OnceCell<AppVerdict>,
    /// Set when the app's consumer key and secret were refused: no user-context request is
    /// sent after it.
    pub(super) app_refused: OnceLock<String>,
    /// Set when the app's bearer token was refused: no bearer request is sent after it.
    pub(super) bearer_refused: OnceLock<String>,
    /// Accounts whose token the API accepted this run.
    answered_accounts: Mutex<BTreeSet<Handle>>,
    /// Metric names answers used that this build does not know (logged once per run).
    unknown_metrics: Mutex<BTreeSet<String>>,
    /// `app.bearer_token` is configured (else it is obtained from the token endpoint).
    pub(super) bearer_configured: bool,
}

/// Batch tasks per request slot (`api.max_in_flight`): enough that a slot never waits for a task.
const BATCH_TASKS_PER_SLOT: usize = 2;

/// The requests one job (or one account's jobs) took.
#[derive(Default)]
pub(super) struct JobDone {
    pub requests: Vec<RequestReport>,
    /// Shutdown came before the job was (completely) sent.
    pub interrupted: bool,
    /// The account whose token was refused, and the API's words.
    pub rejected_account: Option<(Handle, String)>,
    /// Tweets left out because their owner's token was refused.
    pub skipped_tweets: usize,
    /// Jobs never sent (the API unreachable, the app refused, shutting down).
    pub not_attempted: usize,
    /// Jobs to run next: moved Tweets under their new owner.
    pub followups: Vec<Job>,
}

impl JobDone {
    pub(super) fn merge(&mut self, other: JobDone) {
        self.requests.extend(other.requests);
        self.interrupted |= other.interrupted;
        self.rejected_account = self.rejected_account.take().or(other.rejected_account);
        self.skipped_tweets += other.skipped_tweets;
        self.not_attempted += other.not_attempted;
        self.followups.extend(other.followups);
    }
}

/// What all of a run's batches did.
pub(super) struct Sent {
    pub requests: Vec<RequestReport>,
    pub interrupted: bool,
    /// The accounts whose token was refused, with the API's words.
    pub rejected: Vec<(Handle, String)>,
    pub skipped_tweets: usize,
    pub not_attempted: usize,
    /// What stopped a part of the run (a store that would not write, a task that failed).
    pub fatal: Option<PipelineError>,
}

/// What one sending of a job came to.
pub(super) enum Sending {
    /// Stored, recorded as failed, or never sent: the job is over.
    Over,
    /// The API refused the request because of the Tweets it names: the rest go again.
    Resend(Refusal),
}

impl BatchContext {
    /// The batches' shared state for run `run_id`; `states` are the known Tweets' as planned.
    pub(super) fn new(
        ctx: &Context,
        run_id: i64,
        states: HashMap<TweetId, TweetState>,
        shutdown: &CancellationToken,
    ) -> BatchContext {
        BatchContext {
            run_id,
            seq: AtomicI64::new(0),
            client: Arc::clone(&ctx.client),
            store: Arc::clone(&ctx.store),
            states,
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
        }
    }

    /// Sends every job of the run. Bearer jobs all start at once; each account's jobs wait for
    /// its first answer, so a revoked token costs one request, not one per batch.
    pub(super) async fn send_all(self: &Arc<Self>, jobs: Vec<Job>, span: &tracing::Span) -> Sent {
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
            let batch = Arc::clone(self);
            set.spawn(async move { batch.run_jobs(bearer).await }.instrument(span.clone()));
        }
        for (account, jobs) in per_account {
            let batch = Arc::clone(self);
            let span = span.clone();
            set.spawn(async move { batch.run_account(account, jobs, span).await });
        }
        let mut sent = Sent {
            requests: Vec::new(),
            interrupted: false,
            rejected: Vec::new(),
            skipped_tweets: 0,
            not_attempted: 0,
            fatal: None,
        };
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(done)) => {
                    sent.interrupted |= done.interrupted;
                    sent.requests.extend(done.requests);
                    sent.rejected.extend(done.rejected_account);
                    sent.skipped_tweets += done.skipped_tweets;
                    sent.not_attempted += done.not_attempted;
                }
                Ok(Err(e)) => sent.fatal = Some(e),
                Err(e) => sent.fatal = Some(PipelineError::Task(e.to_string())),
            }
        }
        sent
    }

    /// Runs jobs concurrently (each with its own span), merging what they did.
    pub(super) async fn run_jobs(
        self: &Arc<Self>,
        jobs: Vec<Job>,
    ) -> Result<JobDone, PipelineError> {
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

    /// Sends `job` once and stores what came back: the answer's writes, or the failure and the
    /// Tweets a refusal names. `may_resend`: the job may go again without named Tweets. A job
    /// never sent (shutting down, the API unreachable) records nothing.
    pub(super) async fn send_once(
        &self,
        job: &Job,
        may_resend: bool,
        done: &mut JobDone,
    ) -> Result<Sending, PipelineError> {
        let started_at = (self.clock)();
        let timer = Instant::now();
        let window = job.window(started_at);
        let body = RequestBody::new(job, window);
        let outcome = self
            .client
            .send(
                job.endpoint,
                &job.credential,
                &body,
                |bytes: &[u8]| answer::parse(job.kind, bytes),
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
            return Ok(Sending::Over); // never sent: nothing to record
        }
        let record = BatchRecord {
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
        match outcome.result {
            Ok(parsed) => {
                self.store_answer(job, &parsed, window, record, done)
                    .await?;
                Ok(Sending::Over)
            }
            Err(error) => {
                self.record_failure(job, error, may_resend, record, done)
                    .await
            }
        }
    }

    /// Stores an answered job (its batch's line in `requests` with it).
    async fn store_answer(
        &self,
        job: &Job,
        parsed: &parse::Parsed,
        window: Option<(Hour, Hour)>,
        mut record: BatchRecord,
        done: &mut JobDone,
    ) -> Result<(), PipelineError> {
        self.note_unknown_metrics(&parsed.unknown_metrics);
        let answered = answer::answered(job, parsed, &self.states, window, (self.clock)());
        record.outcome = answered.outcome;
        record.error = answered.error;
        let received = answered.received;
        let rows = match answered.write {
            Write::Totals(write) => {
                self.blocking(record.clone(), move |store, rec| {
                    store.write_totals_batch(rec, &write)
                })
                .await
            }
            Write::Series(write) => {
                self.blocking(record.clone(), move |store, rec| {
                    store.write_series_batch(rec, &write)
                })
                .await
            }
        };
        let rows = match rows {
            Ok(rows) => rows,
            // Another process held the database past the busy timeout: this batch is lost (and
            // planned again), not the run.
            Err(PipelineError::Store(e)) if e.is_busy() => {
                self.not_stored(job, record, &e, done);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Some(why) = answered.shortfall {
            tracing::warn!(endpoint = job.endpoint.name(), credential = %job.credential,
                "Batch answered in part: {why}");
        }
        tracing::debug!(received, rows, "Stored");
        self.note_answered(job);
        self.metrics.batch(
            job.kind,
            job.endpoint,
            record.outcome,
            record.attempts,
            received,
            rows,
        );
        let mut report = request_report(job, &record, rows, false);
        report.received = received;
        done.requests.push(report);
        Ok(())
    }

    /// Records a failed request: its batch's line, and the Tweets a refusal names (marked, or
    /// moved to another configured account).
    async fn record_failure(
        &self,
        job: &Job,
        error: ApiError,
        may_resend: bool,
        mut record: BatchRecord,
        done: &mut JobDone,
    ) -> Result<Sending, PipelineError> {
        let blamed = self.blame(job, &error).await;
        let failed = answer::failed(
            job,
            &error,
            &self.authors,
            blamed.is_some(),
            may_resend,
            self.breaker.last_cause(),
        );
        record.error = Some(failed.error);
        record.outcome = failed.outcome;
        let named = failed.refusal;
        if !named.is_empty() {
            self.note_answered(job);
        }
        let auth_rejected = blamed == Some(Refused::Account);
        if failed.resend {
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
            Err(PipelineError::Store(e)) if e.is_busy() => {
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
            .push(request_report(job, &record, 0, auth_rejected));
        Ok(if failed.resend {
            Sending::Resend(named)
        } else {
            Sending::Over
        })
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
        if let Some(account) = answer::account_of(job) {
            self.answered_accounts
                .lock()
                .expect("not poisoned")
                .insert(account);
        }
    }

    /// The accounts whose token the API accepted this run.
    pub(super) fn answered_accounts(&self) -> Vec<Handle> {
        let answered = self.answered_accounts.lock().expect("not poisoned");
        answered.iter().cloned().collect()
    }

    /// How many Tweets this run found to belong to another configured account.
    pub(super) fn moved_count(&self) -> usize {
        self.moved.lock().expect("not poisoned").len()
    }

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

    /// Runs a store write of `record`'s batch off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        record: BatchRecord,
        write: impl FnOnce(&mut Store, &BatchRecord) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        store_task(&self.store, move |store| write(store, &record)).await
    }
}
