//! The HTTP client: rate limiter → sign → send → classify → retry. It turns one planned request
//! into a checked body or a typed failure; it does not know what the numbers mean or where they go.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use reqwest::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, LOCATION, USER_AGENT,
};
use serde::Deserialize;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{self, AppKeys, Credential, Pinned, UserToken};
use crate::config::Secret;
use crate::domain::{Clock, Endpoint, Handle, TweetId};
use crate::metrics::Metrics;
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
    /// The most bytes an answer may have, on the wire and once inflated.
    pub max_answer_bytes: usize,
}

impl ClientSettings {
    /// A digest of every setting, secrets included (it is compared, never shown), telling
    /// whether a reloaded config needs a new client.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.base_url, &self.token_url, self.timeout).hash(&mut h);
        (&self.user_agent, self.max_in_flight).hash(&mut h);
        (&self.app.consumer_key, self.app.consumer_secret.expose()).hash(&mut h);
        self.bearer_token.as_ref().map(Secret::expose).hash(&mut h);
        let mut accounts: Vec<_> = self
            .accounts
            .iter()
            .map(|(handle, t)| {
                let secret = t.access_token_secret.expose();
                (handle.to_string(), &t.access_token, secret)
            })
            .collect();
        accounts.sort();
        accounts.hash(&mut h);
        for e in Endpoint::ALL {
            let limit = self.limits.get(&e).copied().unwrap_or_default();
            (limit.per_minute, limit.per_second).hash(&mut h);
        }
        format!("{:?}", self.retry).hash(&mut h);
        self.max_answer_bytes.hash(&mut h);
        h.finish()
    }
}

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The longest one request is tried, counted from its first attempt: attempts, their
    /// timeouts and the backoff between them included. No attempt starts after it, and an
    /// attempt still waiting for its answer then is cut off.
    pub max_elapsed: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(120),
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
    /// No connection could be made, or no answer came in time (connection refused, DNS, TLS,
    /// timeout): the API may be unreachable. The text is the root cause, with the URL.
    #[error("{0}")]
    Connect(String),
    /// As [`ApiError::Connect`], to a token endpoint on another host than the API.
    #[error("{0}")]
    TokenConnect(String),
    /// Not sent: consecutive connection failures showed the API unreachable this cycle.
    #[error("{0}")]
    Unreachable(String),
    #[error("HTTP {status}: {}", if errors.is_empty() { "(no error text)".to_string() } else { errors.join("; ") })]
    Status {
        status: u16,
        errors: Vec<String>,
        /// `unavailable_tweet_ids` of the error body (protected Tweets refuse the whole request).
        unavailable: Vec<TweetId>,
    },
    #[error("HTTP 200 with an unreadable body: {0}")]
    Body(#[from] ParseError),
    /// The answer is larger than `api.max_answer_mib` allows, on the wire or inflated.
    #[error("the answer is larger than {limit} MiB ({what}); nothing of it is stored (api.max_answer_mib)", limit = limit / (1024 * 1024))]
    TooLarge { limit: usize, what: &'static str },
    /// An answer that asking again would not mend: an unknown encoding, a broken gzip stream,
    /// a token that cannot be a header value.
    #[error("unusable answer: {0}")]
    Unusable(String),
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
            ApiError::Transport(_)
            | ApiError::Connect(_)
            | ApiError::TokenConnect(_)
            | ApiError::Body(ParseError::Truncated(_)) => Decision::Retry,
            ApiError::Status { status, .. } => classify(Some(*status)),
            // The same bytes would come again: not worth the quota.
            ApiError::Body(_) | ApiError::TooLarge { .. } | ApiError::Unusable(_) => {
                Decision::GiveUp
            }
            ApiError::NoToken(_)
            | ApiError::Token(_)
            | ApiError::Cancelled
            | ApiError::Unreachable(_) => Decision::GiveUp,
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

#[derive(Deserialize)]
struct TokenBody {
    token_type: String,
    access_token: String,
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

    /// Sends `body` to `endpoint` under `credential`, retrying transient failures, and returns
    /// the body as `check` reads it (a body `check` cannot read counts as transient: truncated).
    pub async fn send<T>(
        &self,
        endpoint: Endpoint,
        credential: &Credential,
        body: &serde_json::Value,
        check: impl Fn(&[u8]) -> Result<T, ParseError>,
        breaker: &Breaker,
        shutdown: &CancellationToken,
    ) -> Outcome<T> {
        let attempts = AtomicU32::new(0);
        let last_status = std::sync::Mutex::new(None);
        // While the breaker is not sure of the API, this send holds its probe from its first
        // attempt to its last, backoff included: one batch at a time finds out.
        let probe = Probe::default();
        let payload = serde_json::to_vec(body).expect("a JSON value serializes");
        let policy = self.settings.retry;
        // `max_elapsed` counts from the first attempt's sending (waiting for a pacing slot
        // before it is not the request's time).
        let deadline = std::sync::OnceLock::new();
        let left = || {
            deadline.get().map(|d: &tokio::time::Instant| {
                d.saturating_duration_since(tokio::time::Instant::now())
            })
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize);
        let attempt = || async {
            let result = self
                .attempt(
                    endpoint, credential, &payload, &check, &attempts, breaker, &probe, shutdown,
                    &deadline,
                )
                .await;
            *last_status.lock().expect("not poisoned") = match &result {
                Ok(_) => Some(200),
                Err(e) => e.status(),
            };
            result
        };
        let result = attempt
            .retry(backoff)
            .when(|e: &ApiError| {
                e.decision() == Decision::Retry
                    && !shutdown.is_cancelled()
                    && left().is_none_or(|l| !l.is_zero())
            })
            // Full jitter: a random delay up to the exponential one, so retries spread out;
            // none past the deadline.
            .adjust(|_, delay| {
                let delay = delay?.mul_f64(rand::random::<f64>());
                match left() {
                    Some(l) if l <= delay => None,
                    _ => Some(delay),
                }
            })
            .notify(|e, delay| {
                // A connection failure is reported once, by the breaker, if it persists.
                if matches!(e, ApiError::Connect(_) | ApiError::TokenConnect(_)) {
                    tracing::debug!(endpoint = endpoint.name(), credential = %credential, error = %e,
                        "Retrying in {:.1}s", delay.as_secs_f64());
                } else {
                    tracing::warn!(endpoint = endpoint.name(), credential = %credential, error = %e,
                        "Retrying in {:.1}s", delay.as_secs_f64());
                }
            })
            .await;
        // A whole retry policy of connection failures, and no answer in between: unreachable.
        if !probe.answered.load(Ordering::Relaxed) && !shutdown.is_cancelled() {
            match &result {
                Err(ApiError::Connect(cause)) => {
                    breaker.trip(cause, attempts.load(Ordering::Relaxed))
                }
                Err(ApiError::TokenConnect(cause)) => {
                    breaker.trip_token(cause, attempts.load(Ordering::Relaxed))
                }
                _ => {}
            }
        }
        let status = *last_status.lock().expect("not poisoned");
        Outcome {
            result,
            attempts: attempts.load(Ordering::Relaxed),
            status,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt<T>(
        &self,
        endpoint: Endpoint,
        credential: &Credential,
        payload: &[u8],
        check: &impl Fn(&[u8]) -> Result<T, ParseError>,
        attempts: &AtomicU32,
        breaker: &Breaker,
        probe: &Probe,
        shutdown: &CancellationToken,
        deadline: &std::sync::OnceLock<tokio::time::Instant>,
    ) -> Result<T, ApiError> {
        // Until the API has answered (and again after a connection failure) one send at a time
        // goes out, holding the probe through its retries: a dead API costs one batch's retry
        // policy in connection attempts, not one per batch in flight. The probe is taken before
        // a request slot, so the sends waiting for it hold no slot the probing one needs.
        if let Some(why) = breaker.stops(credential) {
            return Err(ApiError::Unreachable(why));
        }
        if !breaker.is_answered() && !probe.holds() {
            let guard = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(ApiError::Cancelled),
                guard = Arc::clone(&breaker.probe).lock_owned() => guard,
            };
            probe.hold(guard);
            if let Some(why) = breaker.stops(credential) {
                return Err(ApiError::Unreachable(why));
            }
        }
        // A pause is waited out without holding a request slot (a paused endpoint must not
        // starve the others); the pacing slot is taken while holding one, so paced requests go
        // out as paced. A pause that began meanwhile (another answer said the budget is spent)
        // sends this request back to wait.
        let _permit = loop {
            let paused = *self.pauses[&endpoint].lock().expect("not poisoned");
            if let Some(until) = paused.filter(|u| *u > tokio::time::Instant::now()) {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Err(ApiError::Cancelled),
                    () = tokio::time::sleep_until(until) => {}
                }
            }
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(ApiError::Cancelled),
                permit = self.in_flight.acquire() => permit.expect("the semaphore is never closed"),
            };
            for limiter in &self.limiters[&endpoint] {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Err(ApiError::Cancelled),
                    () = limiter.until_ready_with_jitter(Jitter::up_to(self.jitter[&endpoint])) => {}
                }
            }
            let paused = *self.pauses[&endpoint].lock().expect("not poisoned");
            if paused.is_some_and(|u| u > tokio::time::Instant::now()) {
                continue;
            }
            break permit;
        };
        if shutdown.is_cancelled() {
            return Err(ApiError::Cancelled);
        }
        if let Some(why) = breaker.stops(credential) {
            return Err(ApiError::Unreachable(why));
        }
        attempts.fetch_add(1, Ordering::Relaxed);
        let max_elapsed = self.settings.retry.max_elapsed;
        let deadline = *deadline.get_or_init(|| tokio::time::Instant::now() + max_elapsed);
        let exchange = self.exchange(endpoint, credential, payload, check);
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Connect(format!(
                "no answer from {} within api.retry_max_elapsed ({}s, attempts included)",
                self.settings.base_url,
                max_elapsed.as_secs()
            ))),
        };
        match &result {
            Err(ApiError::Connect(_)) => breaker.connect_failed(),
            Err(ApiError::TokenConnect(_)) => {}
            Err(ApiError::NoToken(_) | ApiError::Cancelled | ApiError::Unreachable(_)) => {}
            _ => {
                breaker.answered();
                probe.answered.store(true, Ordering::Relaxed);
                probe.release();
            }
        }
        result
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

    /// Whether the token endpoint accepts the app's consumer key and secret: the cheapest
    /// request that tells the app's own keys apart from an account's token after a 401.
    pub async fn verify_app(&self) -> AppVerdict {
        // Without a configured bearer token, the keys' answer is the bearer token's: asked once
        // per cycle, shared with the batches that need it.
        let answer = if self.settings.bearer_token.is_none() {
            self.bearer().await.map(|_| ())
        } else {
            self.fetch_bearer().await.map(|_| ())
        };
        match answer {
            Ok(()) => AppVerdict::Accepted,
            Err(ApiError::Token(why)) => AppVerdict::Refused(why),
            Err(e) => AppVerdict::Unknown(e.to_string()),
        }
    }

    /// After a 401 on the obtained bearer token `refused`: whether to send again with a new
    /// one. The first batch to see it refused forgets it (once per client: a new token that is
    /// refused too is final); batches that sent the same old token concurrently just retry with
    /// whatever is current. A token from the config is never replaced (a new one cannot be had).
    async fn forget_bearer(&self, refused: &Secret) -> bool {
        if self.settings.bearer_token.is_some() {
            return false;
        }
        let mut slot = self.bearer.lock().await;
        let current = matches!(slot.as_ref(), Some(Ok(t)) if t.expose() == refused.expose());
        if !current {
            return true; // already forgotten or replaced by another batch
        }
        if self.bearer_renewed.swap(true, Ordering::SeqCst) {
            return false;
        }
        *slot = None;
        true
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
            .map_err(|e| {
                let other_host =
                    origin(&self.settings.token_url) != origin(&self.settings.base_url);
                send_error(&self.settings.token_url, other_host, &e)
            })?;
        let status = response.status();
        let redirect = redirect_note(status.as_u16(), response.headers());
        let limit = if status.is_success() {
            Limit::Refuse(TOKEN_BODY_MAX)
        } else {
            Limit::Cut(ERROR_BODY_MAX)
        };
        let bytes = read_body(response, limit).await?;
        // 429 and 5xx say nothing of the keys: retried like any transient answer, never
        // remembered as a refusal.
        if classify(Some(status.as_u16())) == Decision::Retry {
            return Err(ApiError::Status {
                status: status.as_u16(),
                errors: error_strings(&bytes),
                unavailable: Vec::new(),
            });
        }
        if let Some(redirect) = redirect {
            return Err(ApiError::Unusable(format!(
                "the token endpoint answered HTTP {}: {redirect}",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(ApiError::Token(format!(
                "HTTP {}: {}; check app.consumer_key and app.consumer_secret",
                status.as_u16(),
                error_strings(&bytes).join("; ")
            )));
        }
        // Not a refusal of the keys: an answer that is not what the endpoint gives.
        let body: TokenBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Unusable(format!(
                "the token endpoint's answer: {}",
                parse::clean_text(&e.to_string(), 200)
            ))
        })?;
        if !body.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unusable(format!(
                "the token endpoint's token_type is {:?}, not \"bearer\"",
                parse::clean_text(&body.token_type, 40)
            )));
        }
        // It goes into an Authorization header: visible ASCII, of a sane length.
        let token = &body.access_token;
        if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::Unusable(format!(
                "the token endpoint's access_token ({} bytes) is not a usable header value",
                token.len()
            )));
        }
        tracing::debug!("obtained the app's bearer token from the token endpoint");
        Ok(Secret::new(body.access_token))
    }
}

/// Pacing slack: requests go out at 1/1.03 of each budget, one at a time (burst 1).
///
/// X counts per fixed minute (and second) while GCRA refills continuously: with any burst, or
/// at exactly the budget rate, one aligned window can receive more than its budget. At 3% under
/// the rate with burst 1 (and jitter of 2% of the interval), no window of the contract's length
/// can see more than its budget, and the budget is still used at about 96%.
pub const PACING_SLACK: f64 = 1.03;

fn limiters_for(limit: EndpointLimit) -> Vec<DefaultDirectRateLimiter> {
    let quota = |window_secs: f64, n: NonZeroU32| {
        let period = Duration::from_secs_f64(window_secs / f64::from(n.get()) * PACING_SLACK);
        Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::MIN)
    };
    let windows = [(60.0, limit.per_minute), (1.0, limit.per_second)];
    windows
        .into_iter()
        .filter_map(|(secs, n)| n.map(|n| RateLimiter::direct(quota(secs, n))))
        .collect()
}

/// The pacing jitter for a limit: 2% of its interval, at most 50 ms.
fn jitter_for(limit: EndpointLimit) -> Duration {
    let per_sec = [
        limit.per_second.map(|n| f64::from(n.get())),
        limit.per_minute.map(|n| f64::from(n.get()) / 60.0),
    ];
    per_sec
        .into_iter()
        .flatten()
        .map(|rate| Duration::from_secs_f64(0.02 / rate))
        .fold(Duration::from_millis(50), Duration::min)
}

/// One window of the API's rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub remaining: u64,
    /// Epoch seconds at which the window resets.
    pub reset: i64,
}

/// The `x-per-minute-*` and `x-per-second-*` headers of a response.
pub fn budgets(headers: &HeaderMap) -> (Option<Budget>, Option<Budget>) {
    let read = |unit: &str| {
        let get = |what: &str| {
            headers
                .get(format!("x-per-{unit}-{what}"))?
                .to_str()
                .ok()?
                .trim()
                .parse::<i64>()
                .ok()
        };
        Some(Budget {
            remaining: u64::try_from(get("remaining")?).ok()?,
            reset: get("reset")?,
        })
    };
    (read("minute"), read("second"))
}

/// How long to hold an endpoint after a response, from its status and budget headers at `now`
/// (epoch seconds): until the reset of a window whose budget is spent; after a 429 that shows no
/// spent window, one second. A reset in the past or implausibly far ahead (clock skew) is
/// clamped and reported. `None`: no pause.
pub fn pause_for(
    status: u16,
    minute: Option<Budget>,
    second: Option<Budget>,
    now: f64,
) -> Option<(Duration, Option<String>)> {
    let spent = |b: Option<Budget>| b.filter(|b| b.remaining == 0);
    let (window, longest) = match (spent(second), spent(minute)) {
        (_, Some(m)) => (Some(m), 61u64),
        (Some(s), None) => (Some(s), 2),
        (None, None) if status == 429 => (None, 1),
        (None, None) => return None,
    };
    let Some(window) = window else {
        return Some((Duration::from_secs(1), None));
    };
    let wait = window.reset as f64 - now;
    if wait < -1.0 {
        let note = format!(
            "rate-limit reset {:.0} s in the past: is this machine's clock right?",
            -wait
        );
        return Some((Duration::from_secs(1), Some(note)));
    }
    if wait > longest as f64 {
        let note =
            format!("rate-limit reset {wait:.0} s ahead, more than a window: pausing {longest} s");
        return Some((Duration::from_secs(longest), Some(note)));
    }
    // A little past the reset, so the request lands in the new window.
    Some((
        Duration::from_secs_f64(wait.max(0.0)) + Duration::from_millis(20),
        None,
    ))
}

impl ApiClient {
    /// Reads the budget headers of a response and pauses the endpoint when they say so.
    fn note_budget(&self, endpoint: Endpoint, status: u16, headers: &HeaderMap) {
        let (minute, second) = budgets(headers);
        // Sub-second precision matters for per-second budgets; the injected clock (whole
        // seconds) wins when it disagrees with the machine's, as in tests that move time.
        let precise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let injected = (self.clock)() as f64;
        let now = if (precise - injected).abs() < 2.0 {
            precise
        } else {
            injected
        };
        let Some((wait, note)) = pause_for(status, minute, second, now) else {
            return;
        };
        if let Some(note) = note {
            tracing::warn!(endpoint = endpoint.name(), "{note}");
        }
        tracing::debug!(
            endpoint = endpoint.name(),
            status,
            wait_ms = wait.as_millis() as u64,
            "Budget spent; pausing"
        );
        let until = tokio::time::Instant::now() + wait;
        let mut slot = self.pauses[&endpoint].lock().expect("not poisoned");
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
    }
}

/// What the token endpoint says of the app's consumer key and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppVerdict {
    Accepted,
    /// Refused, with the endpoint's words.
    Refused(String),
    /// No answer (transport error): the keys could not be verified.
    Unknown(String),
}

/// Tells an unreachable API apart from a failing request, for one cycle. When a send has used
/// its whole retry policy (`api.retry_attempts`, `api.retry_max_elapsed`) on connection failures
/// (refused, DNS, TLS, timeouts) with no HTTP answer in between, nothing more is sent: one error
/// line names the URL and the cause. Until the API has answered in the cycle, and again after
/// any connection failure, one send at a time goes out and keeps the turn through its retries
/// and their backoff, so a dead API costs one batch's retry policy in connection attempts
/// (plus those already in flight when it went away), however many batches wait, and a blip
/// shorter than the backoff trips nothing. A token endpoint on another host has its own
/// verdict: when it cannot be reached, only bearer requests stop.
#[derive(Debug)]
pub struct Breaker {
    state: std::sync::Mutex<BreakerState>,
    probe: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
struct BreakerState {
    answered: bool,
    last_cause: Option<String>,
    tripped: Option<String>,
    token_tripped: Option<String>,
}

/// One send's turn at the breaker's probe, and whether the API answered any of its attempts.
#[derive(Default)]
pub(crate) struct Probe {
    guard: std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
    answered: std::sync::atomic::AtomicBool,
}

impl Probe {
    fn holds(&self) -> bool {
        self.guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn hold(&self, guard: tokio::sync::OwnedMutexGuard<()>) {
        *self.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    fn release(&self) {
        self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Breaker {
    /// A breaker for one cycle.
    pub fn new() -> Breaker {
        Breaker {
            state: std::sync::Mutex::new(BreakerState::default()),
            probe: Arc::new(Mutex::new(())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_answered(&self) -> bool {
        self.lock().answered
    }

    /// Why nothing more may be sent with `credential`, once the API (or, for the bearer token,
    /// its token endpoint) was found unreachable.
    fn stops(&self, credential: &Credential) -> Option<String> {
        let state = self.lock();
        match credential {
            Credential::Bearer => state.tripped.clone().or(state.token_tripped.clone()),
            Credential::UserContext { .. } => state.tripped.clone(),
        }
    }

    fn answered(&self) {
        self.lock().answered = true;
    }

    fn connect_failed(&self) {
        self.lock().answered = false;
    }

    fn trip(&self, cause: &str, attempts: u32) {
        let mut state = self.lock();
        state.last_cause = Some(cause.to_string());
        if state.tripped.is_none() {
            let why = format!(
                "the API cannot be reached: {cause} ({attempts} connection attempts, the whole \
                 retry policy, failed); nothing more is sent this cycle, and what was not sent is \
                 planned next time"
            );
            tracing::error!("{why}");
            state.tripped = Some(why);
        }
    }

    fn trip_token(&self, cause: &str, attempts: u32) {
        let mut state = self.lock();
        state.last_cause = Some(cause.to_string());
        if state.token_tripped.is_none() {
            let why = format!(
                "the token endpoint cannot be reached: {cause} ({attempts} connection attempts \
                 failed); no bearer request is sent this cycle (check api.token_url)"
            );
            tracing::error!("{why}");
            state.token_tripped = Some(why);
        }
    }

    /// Why the API (or the token endpoint) was found unreachable, once it was.
    pub fn tripped(&self) -> Option<String> {
        let state = self.lock();
        state.tripped.clone().or(state.token_tripped.clone())
    }

    /// The last connection failure's cause (URL and OS error).
    pub fn last_cause(&self) -> Option<String> {
        self.lock().last_cause.clone()
    }
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker::new()
    }
}

/// Scheme, host and port of a URL, to tell whether two URLs are one server.
fn origin(url: &str) -> Option<(String, Option<String>, Option<u16>)> {
    let url = url::Url::parse(url).ok()?;
    Some((
        url.scheme().to_string(),
        url.host_str().map(str::to_string),
        url.port_or_known_default(),
    ))
}

/// A failed send: a connection failure (with its root cause and the URL) or another
/// transport error.
fn send_error(url: &str, token_host: bool, e: &reqwest::Error) -> ApiError {
    if e.is_connect() || e.is_timeout() {
        let cause = root_cause(e);
        let cause = if e.is_timeout() && !cause.to_ascii_lowercase().contains("timed out") {
            format!("no answer within api.timeout ({cause})")
        } else {
            cause
        };
        let message = format!("{}: {cause}", url.trim_end_matches('/'));
        if token_host {
            ApiError::TokenConnect(message)
        } else {
            ApiError::Connect(message)
        }
    } else if e.is_builder() {
        // A header value that cannot be sent (a token with a line break, say): sending again
        // would fail the same way.
        ApiError::Unusable(format!("cannot build the request: {}", root_cause(e)))
    } else {
        ApiError::Transport(error_chain(e))
    }
}

/// The innermost error of a chain: the OS error of a refused connection, the resolver's words.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// The `errors` strings of an error body, or the start of a body that is not JSON; both made
/// safe to show ([`parse::clean_text`]).
fn error_strings(body: &[u8]) -> Vec<String> {
    match parse::error_info(body) {
        Some((errors, _)) => errors,
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![parse::clean_text(text, 200)]
            }
        }
    }
}

/// The most of an error answer's body that is read: enough for any `errors` list the API
/// sends (its messages name at most 25 Tweet IDs each).
const ERROR_BODY_MAX: usize = 64 * 1024;

/// The most a token endpoint's answer may have.
const TOKEN_BODY_MAX: usize = 64 * 1024;

/// How much of a body is read.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Past this many bytes (on the wire or inflated) the answer is refused.
    Refuse(usize),
    /// Past this many bytes the rest is not read.
    Cut(usize),
}

/// What a redirect says (it is not followed): where it points, so a wrong `api.base_url` can
/// be fixed.
fn redirect_note(status: u16, headers: &HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let location = headers
        .get(LOCATION)
        .map(|l| parse::clean_text(&String::from_utf8_lossy(l.as_bytes()), 200));
    Some(match location {
        Some(l) => format!("redirected to {l}; redirects are not followed (check api.base_url)"),
        None => "a redirect without a Location; redirects are not followed".to_string(),
    })
}

/// A `Write` into memory that refuses to grow past `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other("over the answer size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a body as it arrives, inflating gzip here, counting both the bytes on the wire and the
/// inflated ones against `limit`: a 2 MB gzip that inflates to 2 GiB costs at most the limit.
async fn read_body(mut response: reqwest::Response, limit: Limit) -> Result<Vec<u8>, ApiError> {
    let (max, refuse) = match limit {
        Limit::Refuse(n) => (n, true),
        Limit::Cut(n) => (n, false),
    };
    let too_large = |what| ApiError::TooLarge { limit: max, what };
    let encoding = response.headers().get(CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let gzip = match encoding.as_deref() {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return Err(ApiError::Unusable(format!(
                "Content-Encoding {:?} (only gzip is asked for)",
                parse::clean_text(other, 40)
            )));
        }
    };
    if refuse && response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large("Content-Length"));
    }
    let capped = Capped {
        buf: Vec::new(),
        max,
        over: false,
    };
    // The inflater writes into the capped buffer as it goes, so no chunk can inflate past it.
    let mut body = if gzip {
        Body::Gzip(Box::new(flate2::write::MultiGzDecoder::new(capped)))
    } else {
        Body::Plain(capped)
    };
    let mut wire = 0usize;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(ApiError::Transport(error_chain(&e))),
        };
        wire += chunk.len();
        if wire > max {
            if refuse {
                return Err(too_large("on the wire"));
            }
            break;
        }
        if let Err(e) = body.write_all(&chunk) {
            if body.sink().over {
                if refuse {
                    return Err(too_large(if gzip { "inflated" } else { "on the wire" }));
                }
                return Ok(body.into_bytes());
            }
            return Err(ApiError::Unusable(format!(
                "the gzip stream is broken: {e}"
            )));
        }
    }
    if let Body::Gzip(d) = &mut body
        && let Err(e) = d.try_finish()
    {
        if d.get_ref().over {
            if refuse {
                return Err(too_large("inflated"));
            }
        } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // The stream ended before gzip's end: cut short on the way.
            return Err(ApiError::Transport(format!(
                "the gzip stream ends early: {e}"
            )));
        } else if refuse {
            return Err(ApiError::Unusable(format!(
                "the gzip stream is broken: {e}"
            )));
        }
    }
    Ok(body.into_bytes())
}

/// A body being read: as sent, or inflated on the way.
enum Body {
    Plain(Capped),
    Gzip(Box<flate2::write::MultiGzDecoder<Capped>>),
}

impl Body {
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Body::Plain(c) => c.write_all(data),
            Body::Gzip(d) => d.write_all(data),
        }
    }

    fn sink(&self) -> &Capped {
        match self {
            Body::Plain(c) => c,
            Body::Gzip(d) => d.get_ref(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Plain(c) => c.buf,
            // What was inflated so far, whether or not the stream could finish.
            Body::Gzip(mut d) => std::mem::take(&mut d.get_mut().buf),
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
            (Some(301), Decision::GiveUp),
            (Some(307), Decision::GiveUp),
            (Some(308), Decision::GiveUp),
        ];
        for (status, expected) in table {
            assert_eq!(classify(status), expected, "{status:?}");
        }
        // A body cut short on the way is asked again; one that will never parse is not.
        let errors = [
            (
                ApiError::Body(ParseError::Truncated("eof".into())),
                Decision::Retry,
            ),
            (ApiError::Transport("reset".into()), Decision::Retry),
            (
                ApiError::Body(ParseError::Json("x".into())),
                Decision::GiveUp,
            ),
            (ApiError::Body(ParseError::NotAnObject), Decision::GiveUp),
            (
                ApiError::Body(ParseError::Shape {
                    grouping: "g".into(),
                    detail: "d".into(),
                }),
                Decision::GiveUp,
            ),
            (
                ApiError::TooLarge {
                    limit: 1,
                    what: "inflated",
                },
                Decision::GiveUp,
            ),
            (ApiError::Unusable("header".into()), Decision::GiveUp),
        ];
        for (error, expected) in errors {
            assert_eq!(error.decision(), expected, "{error:?}");
        }
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

    /// When the budget headers pause an endpoint, and for how long.
    #[test]
    fn spent_budgets_pause_until_their_reset() {
        let b = |remaining, reset| Some(Budget { remaining, reset });
        let secs = |p: Option<(Duration, Option<String>)>| {
            p.map(|(d, note)| (d.as_millis(), note.is_some()))
        };
        // Budget left: no pause, even with both windows reported.
        assert_eq!(pause_for(200, b(5, 1060), b(1, 1001), 1000.5), None);
        // Second spent: until the next second (plus a margin).
        assert_eq!(
            secs(pause_for(200, b(5, 1060), b(0, 1001), 1000.5)),
            Some((520, false))
        );
        // Minute spent wins over a spent second.
        assert_eq!(
            secs(pause_for(429, b(0, 1060), b(0, 1001), 1000.0)),
            Some((60_020, false))
        );
        // A 429 with budget left (or no headers): a short pause.
        assert_eq!(
            secs(pause_for(429, b(3, 1060), None, 1000.0)),
            Some((1000, false))
        );
        assert_eq!(
            secs(pause_for(429, None, None, 1000.0)),
            Some((1000, false))
        );
        // Clock skew: a reset in the past, or beyond the window, is clamped and reported.
        assert_eq!(
            secs(pause_for(200, b(0, 900), None, 1000.0)),
            Some((1000, true))
        );
        assert_eq!(
            secs(pause_for(200, b(0, 5000), None, 1000.0)),
            Some((61_000, true))
        );
    }

    /// Paced at 3% under the budget with burst 1, no aligned window can take more than its budget.
    #[test]
    fn pacing_never_exceeds_a_window() {
        for n in [1u32, 5, 10, 60, 300] {
            let period = 1.0 / f64::from(n) * PACING_SLACK;
            let max_jitter = 0.02 / f64::from(n);
            // Slots k·period, each sent up to max_jitter late: the most in any 1 s window.
            let most = (1.0 + max_jitter) / period;
            assert!(
                (most.floor() as u32) < n,
                "{n} per second: up to {} in a window",
                most.floor() + 1.0
            );
        }
    }

    /// Against a stub server answering one fixed status: 400, 401, 403, 404 and 406 are sent
    /// once; 429 and 5xx up to the attempt limit (the stub's hit count proves it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_transient_statuses_are_retried() {
        use std::sync::atomic::AtomicUsize;
        for (status, expected) in [
            (400u16, 1usize),
            (401, 1),
            (403, 1),
            (404, 1),
            (406, 1),
            (429, 3),
            (500, 3),
            (503, 3),
        ] {
            let hits = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&hits);
            let app = axum::Router::new().fallback(move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        r#"{"errors":["stub"]}"#,
                    )
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let settings = settings_for(format!("http://{addr}"), 3, 1);
            let outcome = send_many(settings, 1).await.0.remove(0);
            assert!(outcome.result.is_err());
            assert_eq!(outcome.status, Some(status));
            assert_eq!((status, hits.load(Ordering::SeqCst)), (status, expected));
            assert_eq!(outcome.attempts as usize, expected);
            server.abort();
        }
    }

    /// A server that accepts and never answers costs `retry_max_elapsed` in all, not
    /// `retry_attempts` × `timeout`: the attempt waiting then is cut off, none starts after.
    #[tokio::test(start_paused = true)]
    async fn retry_max_elapsed_bounds_a_requests_whole_time() {
        let app = axum::Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never"
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut settings = settings_for(format!("http://{addr}"), 5, 1);
        settings.timeout = Duration::from_secs(30);
        settings.retry.max_elapsed = Duration::from_secs(45);
        let started = tokio::time::Instant::now();
        let outcome = send_many(settings, 1).await.0.remove(0);
        // On the paused clock: 30 s for the first attempt, the second cut at 45 s.
        let spent = started.elapsed();
        assert_eq!(outcome.attempts, 2, "{:?}", outcome.result);
        assert!(spent <= Duration::from_secs(46), "{spent:?}");
        let error = outcome.result.unwrap_err().to_string();
        assert!(error.contains("api.retry_max_elapsed"), "{error}");
        server.abort();
    }

    /// A client for a stub on `base_url`: a configured bearer token, quick retries.
    fn settings_for(base_url: String, attempts: u32, max_in_flight: usize) -> ClientSettings {
        ClientSettings {
            token_url: format!("{base_url}/oauth2/token"),
            base_url,
            timeout: Duration::from_secs(5),
            user_agent: "test".into(),
            max_in_flight,
            app: AppKeys {
                consumer_key: "k".into(),
                consumer_secret: Secret::new("s"),
            },
            bearer_token: Some(Secret::new("b")),
            accounts: HashMap::new(),
            limits: HashMap::new(),
            retry: RetryPolicy {
                max_attempts: attempts,
                max_elapsed: Duration::from_secs(10),
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            max_answer_bytes: 1024 * 1024,
        }
    }

    /// A port that was just free: nothing listens on it.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// `n` bearer sends at once through one client and one breaker; their outcomes.
    async fn send_many(settings: ClientSettings, n: usize) -> (Vec<Outcome<()>>, Arc<Breaker>) {
        let client = Arc::new(ApiClient::new(settings, crate::domain::system_clock()).unwrap());
        let breaker = Arc::new(Breaker::new());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (client, breaker) = (Arc::clone(&client), Arc::clone(&breaker));
            tasks.spawn(async move {
                client
                    .send(
                        Endpoint::Totals,
                        &Credential::Bearer,
                        &serde_json::json!({}),
                        |_| Ok(()),
                        &breaker,
                        &CancellationToken::new(),
                    )
                    .await
            });
        }
        let mut outcomes = Vec::new();
        while let Some(outcome) = tasks.join_next().await {
            outcomes.push(outcome.unwrap());
        }
        (outcomes, breaker)
    }

    /// A closed port: twenty batches sent at once cost one batch's retry policy in connection
    /// attempts, not twenty; the rest are not sent, and the reason names the URL and the OS error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_api_costs_one_retry_policy_in_attempts() {
        let base = format!("http://127.0.0.1:{}", free_port());
        let (outcomes, breaker) = send_many(settings_for(base.clone(), 4, 4), 20).await;
        let attempts: u32 = outcomes.iter().map(|o| o.attempts).sum();
        let unreachable = outcomes
            .iter()
            .filter(|o| matches!(o.result, Err(ApiError::Unreachable(_))))
            .count();
        assert_eq!(attempts, 4, "connection attempts in all");
        assert!(
            unreachable >= 19,
            "{unreachable} batches stopped by the breaker"
        );
        let why = breaker.tripped().expect("tripped");
        assert!(why.contains(&base), "{why}");
        assert!(why.contains("os error"), "{why}");
    }

    /// An API that is away for 300 ms, shorter than the retry policy's backoff, trips nothing:
    /// every batch of those waiting is answered once it is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blip_shorter_than_the_backoff_trips_nothing() {
        let port = free_port();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let app = axum::Router::new().fallback(|| async { "{}" });
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(listener, app).await
        });
        let mut settings = settings_for(format!("http://127.0.0.1:{port}"), 5, 4);
        settings.retry.min_delay = Duration::from_secs(1);
        settings.retry.max_delay = Duration::from_secs(8);
        let (outcomes, breaker) = send_many(settings, 20).await;
        assert_eq!(outcomes.iter().filter(|o| o.result.is_ok()).count(), 20);
        assert!(breaker.tripped().is_none());
        server.abort();
    }
}
