//! When a credential or Tweets are refused: whose credential a 401 is about (the account's, the
//! app's keys, the bearer token), an account's fallback to the bearer token once its token is
//! refused, and sending a job again without the Tweets the API named (protected, forbidden, or
//! another configured account's). The batch module sends and stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument;

use super::PipelineError;
use super::answer::account_of;
use super::batch::{BatchContext, JobDone, Sending};
use crate::client::{ApiError, AppVerdict};
use crate::domain::{Credential, Handle, JobKind, Metric, TweetId};
use crate::planner::Job;

/// How often a job whose request the API refused because of named Tweets is sent again
/// without them.
const MAX_STRIPS: usize = 2;

/// Whose credential a refusal (401, or a refused token request) is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
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
    pub(super) async fn blame(&self, job: &Job, error: &ApiError) -> Option<Refused> {
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

    /// One account's jobs: the first alone; if the API refuses the token (401) while it
    /// accepts the app's keys, the account is skipped for the rest of the run, its `/totals`
    /// batches read with the bearer token (public metrics only) and its series left for the
    /// next due cycle; if the app's keys are refused, nothing more is sent with them; otherwise
    /// the rest at once.
    pub(super) async fn run_account(
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
    pub(super) async fn run_job(&self, mut job: Job) -> Result<JobDone, PipelineError> {
        let mut done = JobDone::default();
        for strip in 0..=MAX_STRIPS {
            if self.credential_refused(&job) {
                done.not_attempted += 1;
                return Ok(done);
            }
            // Tweets another batch of this run found to belong to another account go there.
            if strip == 0 {
                let known = self.known_moved(&job);
                if !known.is_empty() {
                    job.tweets.retain(|t| !known.iter().any(|(k, _)| k == t));
                    self.follow_moved(&job, &known, &mut done);
                    if job.tweets.is_empty() {
                        return Ok(done);
                    }
                }
            }
            let named = match self.send_once(&job, strip < MAX_STRIPS, &mut done).await? {
                Sending::Over => return Ok(done),
                Sending::Resend(named) => named,
            };
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

    /// `job`'s Tweets that another batch of this run found to belong to another account, with
    /// that account. Only user-context jobs: the bearer token reads anyone's public metrics.
    fn known_moved(&self, job: &Job) -> Vec<(TweetId, Handle)> {
        let Some(account) = account_of(job) else {
            return Vec::new();
        };
        let moved = self.moved.lock().expect("not poisoned");
        job.tweets
            .iter()
            .filter_map(|t| Some((*t, moved.get(t).filter(|o| **o != account)?.clone())))
            .collect()
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
}
