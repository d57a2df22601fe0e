//! The HTTP client: rate limiter → sign → send → classify → retry. It turns one planned request
//! into a checked body or a typed failure; it does not know what the numbers mean or where they go.
//!
//! Here: the client itself and one HTTP exchange (sign, send, classify). Around it: `request`
//! (the body's wire format), `retry` (a request's attempts and deadline), `pacing` (limiters and
//! the API's budget headers), `breaker` (an unreachable API), `token` (the bearer token),
//! `classify` (what an answer means), `body` (reading bodies within their size limits),
//! `settings` (what the client takes from the config).

mod body;
mod breaker;
mod classify;
mod pacing;
mod request;
mod retry;
mod settings;
mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::DefaultDirectRateLimiter;
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use tokio::sync::{Mutex, Semaphore};

pub use breaker::Breaker;
pub use classify::{ApiError, Decision, classify};
pub use pacing::{Budget, PACING_SLACK, budgets, pause_for};
pub use request::{RequestBody, SERIES_GROUPING, TOTALS_GROUPING, grouping};
pub use retry::RetryPolicy;
pub use settings::{ClientSettings, EndpointLimit};
pub use token::AppVerdict;

use crate::auth::{self, Pinned};
use crate::config::Secret;
use crate::domain::Credential;
use crate::domain::{Clock, Endpoint};
use crate::metrics::Metrics;
use crate::parse::{self, ParseError};
use body::{ERROR_BODY_MAX, Limit, read_body};
use classify::{error_strings, redirect_note, send_error};
use pacing::{jitter_for, limiters_for};

/// A request's final result with the number of attempts it took.
#[derive(Debug)]
pub struct Outcome<T> {
    pub result: Result<T, ApiError>,
    pub attempts: u32,
    pub status: Option<u16>,
}

/// The client. Cheap to share behind an `Arc`.
pub struct ApiClient {
    http: reqwest::Client,
    settings: ClientSettings,
    clock: Clock,
    /// Whether an obtained bearer token was already renewed after a 401.
    bearer_renewed: std::sync::atomic::AtomicBool,
    /// The bearer token, or why the token endpoint refused one (asked once per client).
    bearer: Mutex<Option<Result<Secret, String>>>,
    limiters: HashMap<Endpoint, Vec<DefaultDirectRateLimiter>>,
    /// Per endpoint: no request before this instant (the API said its budget is spent).
    pauses: HashMap<Endpoint, std::sync::Mutex<Option<tokio::time::Instant>>>,
    /// Per endpoint: the most a paced request is delayed on top of its slot (2% of the pacing
    /// interval, at most 50 ms), so requests do not march in lockstep yet keep the budget.
    jitter: HashMap<Endpoint, Duration>,
    in_flight: Arc<Semaphore>,
    /// Where every HTTP answer is counted.
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.settings.base_url)
            .finish()
    }
}

impl ApiClient {
    /// Builds the client (reqwest with rustls, gzip and a timeout; one limiter set per endpoint).
    pub fn new(settings: ClientSettings, clock: Clock) -> Result<ApiClient, ApiError> {
        // Answers are inflated here rather than by reqwest, so that both the bytes on the wire
        // and the inflated ones are counted against `max_answer_bytes` as they arrive.
        // Redirects are not followed: a 3xx would re-send the Tweet IDs to another origin.
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .no_gzip()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Transport(format!("cannot build the HTTP client: {e}")))?;
        let limiters = Endpoint::ALL
            .into_iter()
            .map(|e| {
                (
                    e,
                    limiters_for(settings.limits.get(&e).copied().unwrap_or_default()),
                )
            })
            .collect();
        Ok(ApiClient {
            http,
            clock,
            bearer: Mutex::new(settings.bearer_token.clone().map(Ok)),
            bearer_renewed: std::sync::atomic::AtomicBool::new(false),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            limiters,
            jitter: Endpoint::ALL
                .into_iter()
                .map(|e| {
                    (
                        e,
                        jitter_for(settings.limits.get(&e).copied().unwrap_or_default()),
                    )
                })
                .collect(),
            pauses: Endpoint::ALL
                .into_iter()
                .map(|e| (e, std::sync::Mutex::new(None)))
                .collect(),
            settings,
            metrics: None,
        })
    }

    /// Counts every HTTP answer in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> ApiClient {
        self.metrics = Some(metrics);
        self
    }

    /// Forgets a refusal from the token endpoint and allows one more renewal of the bearer
    /// token, so that a long-running process asks again at its next cycle (the operator may
    /// have fixed the app's keys meanwhile).
    pub fn new_cycle(&self) {
        if let Ok(mut slot) = self.bearer.try_lock()
            && matches!(slot.as_ref(), Some(Err(_)))
        {
            *slot = None;
        }
        self.bearer_renewed.store(false, Ordering::SeqCst);
    }

    /// The full URL of an endpoint.
    pub fn url(&self, endpoint: Endpoint) -> String {
        format!(
            "{}{}",
            self.settings.base_url.trim_end_matches('/'),
            endpoint.path()
        )
    }

    /// One HTTP exchange: sign, send, classify.
    async fn exchange<T>(
        &self,
        endpoint: Endpoint,
        credential: &Credential,
        payload: &[u8],
        check: &impl Fn(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T, ApiError> {
        let url = self.url(endpoint);
        // Signed per attempt: a retried request needs a fresh nonce and timestamp.
        let mut bearer_used = None;
        let authorization = match credential {
            Credential::Bearer => {
                let token = self.bearer().await?;
                let header = auth::bearer_header(&token);
                bearer_used = Some(token);
                header
            }
            Credential::UserContext { account } => {
                let user = self
                    .settings
                    .accounts
                    .get(account)
                    .ok_or_else(|| ApiError::NoToken(account.clone()))?;
                // The timestamp comes from the injected clock, so tests can move time on both sides.
                let pinned = Pinned {
                    nonce: None,
                    timestamp: u64::try_from((self.clock)()).ok(),
                };
                auth::oauth1_header("POST", &url, &self.settings.app, user, &[], pinned)
            }
        };
        let response = self
            .http
            .post(&url)
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_TYPE, "application/json")
            // Without it the API answers 406.
            .header(ACCEPT_ENCODING, "gzip")
            .header(USER_AGENT, &self.settings.user_agent)
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| send_error(&self.settings.base_url, false, &e))?;
        let status = response.status().as_u16();
        if let Some(metrics) = &self.metrics {
            metrics.response(endpoint, status);
        }
        self.note_budget(endpoint, status, response.headers());
        let redirect = redirect_note(status, response.headers());
        let success = classify(Some(status)) == Decision::Done;
        // An error body is read for its text only: its first part is enough.
        let limit = if success {
            Limit::Refuse(self.settings.max_answer_bytes)
        } else {
            Limit::Cut(ERROR_BODY_MAX)
        };
        let bytes = read_body(response, limit).await?;
        let refused_bearer = bearer_used.filter(|_| status == 401);
        if let Some(token) = refused_bearer
            && self.forget_bearer(&token).await
        {
            // An obtained bearer token can be invalidated: obtain a new one, once per client.
            return Err(ApiError::Transport(
                "the bearer token was refused (401); obtaining a new one".into(),
            ));
        }
        if !success {
            let mut errors = error_strings(&bytes);
            errors.extend(redirect);
            return Err(ApiError::Status {
                status,
                errors,
                unavailable: parse::error_info(&bytes)
                    .map(|(_, ids)| ids)
                    .unwrap_or_default(),
            });
        }
        Ok(check(&bytes)?)
    }
}
