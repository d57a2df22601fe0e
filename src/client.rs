//! The HTTP client: rate limiter → sign → send → classify → retry. It turns one planned request
//! into a checked body or a typed failure; it does not know what the numbers mean or where they go.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, USER_AGENT};
use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{self, AppKeys, Credential, Pinned, UserToken};
use crate::config::Secret;
use crate::domain::{Clock, Endpoint, Handle, TweetId};
use crate::parse::{self, ParseError};

/// Per-endpoint pacing, from the config's `[limits]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointLimit {
    pub per_minute: Option<NonZeroU32>,
    pub per_second: Option<NonZeroU32>,
}

/// Everything the client needs, resolved from the config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: String,
    pub token_url: String,
    pub timeout: Duration,
    pub user_agent: String,
    pub max_in_flight: usize,
    pub app: AppKeys,
    pub bearer_token: Option<Secret>,
    pub accounts: HashMap<Handle, UserToken>,
    pub limits: HashMap<Endpoint, EndpointLimit>,
    pub retry: RetryPolicy,
}

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// What to do with one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Done,
    Retry,
    GiveUp,
}

/// Retry policy by HTTP status (`None` = no response: transport error or timeout).
/// 429 and 5xx are transient; every other 4xx means the request itself is wrong or refused.
pub fn classify(status: Option<u16>) -> Decision {
    match status {
        None => Decision::Retry,
        Some(s) if (200..300).contains(&s) => Decision::Done,
        Some(429) => Decision::Retry,
        Some(s) if s >= 500 => Decision::Retry,
        Some(_) => Decision::GiveUp,
    }
}

/// A request that did not yield a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("transport error: {0}")]
    Transport(String),
    #[error("HTTP {status}: {}", if errors.is_empty() { "(no error text)".to_string() } else { errors.join("; ") })]
    Status {
        status: u16,
        errors: Vec<String>,
        /// `unavailable_tweet_ids` of the error body (protected Tweets refuse the whole request).
        unavailable: Vec<TweetId>,
    },
    #[error("HTTP 200 with an unreadable body: {0}")]
    Body(#[from] ParseError),
    #[error("no access token configured for account {0}")]
    NoToken(Handle),
    #[error("could not obtain a bearer token from the token endpoint: {0}")]
    Token(String),
    #[error("not sent: shutting down")]
    Cancelled,
}

impl ApiError {
    fn decision(&self) -> Decision {
        match self {
            ApiError::Transport(_) | ApiError::Body(_) => Decision::Retry,
            ApiError::Status { status, .. } => classify(Some(*status)),
            ApiError::NoToken(_) | ApiError::Token(_) | ApiError::Cancelled => Decision::GiveUp,
        }
    }

    /// The HTTP status, when a response came back.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Body(_) => Some(200),
            _ => None,
        }
    }

    /// Tweets the error body lists as unavailable.
    pub fn unavailable_ids(&self) -> &[TweetId] {
        match self {
            ApiError::Status { unavailable, .. } => unavailable,
            _ => &[],
        }
    }

    /// The API's `errors` strings, when it sent any.
    pub fn api_errors(&self) -> &[String] {
        match self {
            ApiError::Status { errors, .. } => errors,
            _ => &[],
        }
    }
}

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
    /// The bearer token, or why the token endpoint refused one (asked once per client).
    bearer: Mutex<Option<Result<Secret, String>>>,
    limiters: HashMap<Endpoint, Vec<DefaultDirectRateLimiter>>,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.settings.base_url)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token_type: String,
    access_token: String,
}

impl ApiClient {
    /// Builds the client (reqwest with rustls, gzip and a timeout; one limiter set per endpoint).
    pub fn new(settings: ClientSettings, clock: Clock) -> Result<ApiClient, ApiError> {
        // gzip(true) sends `Accept-Encoding: gzip`, without which the API answers 406.
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .gzip(true)
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
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            limiters,
            settings,
        })
    }

    /// The full URL of an endpoint.
    pub fn url(&self, endpoint: Endpoint) -> String {
        format!(
            "{}{}",
            self.settings.base_url.trim_end_matches('/'),
            endpoint.path()
        )
    }

    /// Sends `body` to `endpoint` under `credential`, retrying transient failures, and returns
    /// the body as `check` reads it (a body `check` cannot read counts as transient: truncated).
    pub async fn send<T>(
        &self,
        endpoint: Endpoint,
        credential: &Credential,
        body: &serde_json::Value,
        check: impl Fn(&[u8]) -> Result<T, ParseError>,
        shutdown: &CancellationToken,
    ) -> Outcome<T> {
        let _permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                return Outcome { result: Err(ApiError::Cancelled), attempts: 0, status: None };
            }
            permit = self.in_flight.acquire() => permit.expect("the semaphore is never closed"),
        };
        let attempts = AtomicU32::new(0);
        let last_status = std::sync::Mutex::new(None);
        let payload = serde_json::to_vec(body).expect("a JSON value serializes");
        let policy = self.settings.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let attempt = || async {
            let result = self
                .attempt(endpoint, credential, &payload, &check, &attempts, shutdown)
                .await;
            *last_status.lock().expect("not poisoned") = match &result {
                Ok(_) => Some(200),
                Err(e) => e.status(),
            };
            result
        };
        let result = attempt
            .retry(backoff)
            .when(|e: &ApiError| e.decision() == Decision::Retry && !shutdown.is_cancelled())
            .notify(|e, delay| {
                tracing::warn!(endpoint = endpoint.name(), credential = %credential, error = %e,
                    "Retrying in {:.1}s", delay.as_secs_f64());
            })
            .await;
        let status = *last_status.lock().expect("not poisoned");
        Outcome {
            result,
            attempts: attempts.load(Ordering::Relaxed),
            status,
        }
    }

    async fn attempt<T>(
        &self,
        endpoint: Endpoint,
        credential: &Credential,
        payload: &[u8],
        check: &impl Fn(&[u8]) -> Result<T, ParseError>,
        attempts: &AtomicU32,
        shutdown: &CancellationToken,
    ) -> Result<T, ApiError> {
        for limiter in &self.limiters[&endpoint] {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(ApiError::Cancelled),
                () = limiter.until_ready_with_jitter(Jitter::up_to(Duration::from_millis(50))) => {}
            }
        }
        if shutdown.is_cancelled() {
            return Err(ApiError::Cancelled);
        }
        attempts.fetch_add(1, Ordering::Relaxed);
        let url = self.url(endpoint);
        // Signed per attempt: a retried request needs a fresh nonce and timestamp.
        let authorization = match credential {
            Credential::Bearer => auth::bearer_header(&self.bearer().await?),
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
            .header(USER_AGENT, &self.settings.user_agent)
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        let status = response.status().as_u16();
        log_rate_headers(endpoint, response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        if classify(Some(status)) != Decision::Done {
            return Err(ApiError::Status {
                status,
                errors: error_strings(&bytes),
                unavailable: parse::error_info(&bytes)
                    .map(|(_, ids)| ids)
                    .unwrap_or_default(),
            });
        }
        Ok(check(&bytes)?)
    }

    /// The bearer token: from the config, or obtained once from the token endpoint.
    pub async fn bearer(&self) -> Result<Secret, ApiError> {
        let mut slot = self.bearer.lock().await;
        if let Some(known) = slot.as_ref() {
            return known.clone().map_err(ApiError::Token);
        }
        // A refusal is remembered, so a bad consumer secret costs one token request, not one per
        // batch; a transport error is not, and is retried with the batch that needed the token.
        let fetched = self.fetch_bearer().await;
        match &fetched {
            Ok(token) => *slot = Some(Ok(token.clone())),
            Err(ApiError::Token(msg)) => *slot = Some(Err(msg.clone())),
            Err(_) => {}
        }
        fetched
    }

    async fn fetch_bearer(&self) -> Result<Secret, ApiError> {
        let response = self
            .http
            .post(&self.settings.token_url)
            .header(AUTHORIZATION, auth::basic_header(&self.settings.app))
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .header(USER_AGENT, &self.settings.user_agent)
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        if !status.is_success() {
            return Err(ApiError::Token(format!(
                "HTTP {}: {}; check app.consumer_key and app.consumer_secret",
                status.as_u16(),
                error_strings(&bytes).join("; ")
            )));
        }
        let body: TokenBody = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Token(format!("unexpected answer: {e}")))?;
        if !body.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Token(format!(
                "unexpected token_type {:?}",
                body.token_type
            )));
        }
        tracing::debug!("obtained the app's bearer token from the token endpoint");
        Ok(Secret::new(body.access_token))
    }
}

fn limiters_for(limit: EndpointLimit) -> Vec<DefaultDirectRateLimiter> {
    // A small burst: GCRA refills continuously, while X counts per fixed minute, so a full-minute
    // burst could spend nearly two minutes' budget inside one contract minute.
    let mut out = Vec::new();
    if let Some(n) = limit.per_minute {
        let burst = NonZeroU32::new((n.get() / 10).clamp(1, 10)).expect("clamped to at least 1");
        out.push(RateLimiter::direct(Quota::per_minute(n).allow_burst(burst)));
    }
    if let Some(n) = limit.per_second {
        out.push(RateLimiter::direct(
            Quota::per_second(n).allow_burst(NonZeroU32::MIN),
        ));
    }
    out
}

fn log_rate_headers(endpoint: Endpoint, headers: &HeaderMap) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(remaining) = get("x-per-minute-remaining") {
        tracing::trace!(
            endpoint = endpoint.name(),
            remaining,
            reset = get("x-per-minute-reset"),
            "rate budget"
        );
    }
}

/// The `errors` strings of an error body, or the start of a body that is not JSON.
fn error_strings(body: &[u8]) -> Vec<String> {
    match parse::error_info(body) {
        Some((errors, _)) => errors,
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![text.chars().take(200).collect()]
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which answers are retried: the table issue 4 builds on.
    #[test]
    fn classification_table() {
        let table = [
            (None, Decision::Retry),
            (Some(200), Decision::Done),
            (Some(400), Decision::GiveUp),
            (Some(401), Decision::GiveUp),
            (Some(403), Decision::GiveUp),
            (Some(404), Decision::GiveUp),
            (Some(406), Decision::GiveUp),
            (Some(429), Decision::Retry),
            (Some(500), Decision::Retry),
            (Some(502), Decision::Retry),
            (Some(503), Decision::Retry),
        ];
        for (status, expected) in table {
            assert_eq!(classify(status), expected, "{status:?}");
        }
        assert_eq!(
            ApiError::Body(ParseError::NotAnObject).decision(),
            Decision::Retry
        );
    }

    #[test]
    fn error_bodies_of_both_shapes_are_read() {
        assert_eq!(
            error_strings(br#"{"errors":["internal server error"]}"#),
            vec!["internal server error"]
        );
        assert_eq!(
            error_strings(br#"{"errors":[{"code":99,"label":"x","message":"Unable to verify your credentials"}]}"#),
            vec!["Unable to verify your credentials"]
        );
        assert_eq!(error_strings(b"Bad Gateway"), vec!["Bad Gateway"]);
    }
}
