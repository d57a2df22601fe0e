//! One request's whole life: waiting for the breaker's probe, a pause, a request slot and a
//! pacing slot, then each attempt under the retry policy and the `retry_max_elapsed` deadline.
//! One exchange itself (sign, send, classify) is the client's own, in `client/mod.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::Jitter;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::breaker::Probe;
use super::{ApiClient, ApiError, Breaker, Decision, Outcome};
use crate::domain::Credential;
use crate::domain::Endpoint;
use crate::parse::ParseError;

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

impl ApiClient {
    /// Sends `body` to `endpoint` under `credential`, retrying transient failures, and returns
    /// the body as `check` reads it (a body `check` cannot read counts as transient: truncated).
    pub async fn send<T>(
        &self,
        endpoint: Endpoint,
        credential: &Credential,
        body: &impl Serialize,
        check: impl Fn(&[u8]) -> Result<T, ParseError>,
        breaker: &Breaker,
        shutdown: &CancellationToken,
    ) -> Outcome<T> {
        let attempts = AtomicU32::new(0);
        let last_status = std::sync::Mutex::new(None);
        // While the breaker is not sure of the API, this send holds its probe from its first
        // attempt to its last, backoff included: one batch at a time finds out.
        let probe = Probe::default();
        let payload = serde_json::to_vec(body).expect("a request body serializes");
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
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use crate::auth::AppKeys;
    use crate::client::{ApiClient, ApiError, Breaker, ClientSettings, Outcome, RetryPolicy};
    use crate::config::Secret;
    use crate::domain::Credential;
    use crate::domain::Endpoint;

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
