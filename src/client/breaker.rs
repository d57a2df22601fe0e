//! The breaker: tells an unreachable API apart from a failing request, for one cycle, and lets
//! one send at a time find out while the API is in doubt.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::domain::Credential;

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
    pub(super) probe: Arc<Mutex<()>>,
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
pub(super) struct Probe {
    guard: std::sync::Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
    pub(super) answered: std::sync::atomic::AtomicBool,
}

impl Probe {
    pub(super) fn holds(&self) -> bool {
        self.guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub(super) fn hold(&self, guard: tokio::sync::OwnedMutexGuard<()>) {
        *self.guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    pub(super) fn release(&self) {
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

    pub(super) fn is_answered(&self) -> bool {
        self.lock().answered
    }

    /// Why nothing more may be sent with `credential`, once the API (or, for the bearer token,
    /// its token endpoint) was found unreachable.
    pub(super) fn stops(&self, credential: &Credential) -> Option<String> {
        let state = self.lock();
        match credential {
            Credential::Bearer => state.tripped.clone().or(state.token_tripped.clone()),
            Credential::UserContext { .. } => state.tripped.clone(),
        }
    }

    pub(super) fn answered(&self) {
        self.lock().answered = true;
    }

    pub(super) fn connect_failed(&self) {
        self.lock().answered = false;
    }

    pub(super) fn trip(&self, cause: &str, attempts: u32) {
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

    pub(super) fn trip_token(&self, cause: &str, attempts: u32) {
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
