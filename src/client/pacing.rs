//! Pacing: the per-endpoint rate limiters (a little under each budget), their jitter, and the
//! pauses the API's rate-limit headers call for.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;

use super::{ApiClient, EndpointLimit};
use crate::domain::Endpoint;

/// Pacing slack: requests go out at 1/1.03 of each budget, one at a time (burst 1).
///
/// X counts per fixed minute (and second) while GCRA refills continuously: with any burst, or
/// at exactly the budget rate, one aligned window can receive more than its budget. At 3% under
/// the rate with burst 1 (and jitter of 2% of the interval), no window of the contract's length
/// can see more than its budget, and the budget is still used at about 96%.
pub const PACING_SLACK: f64 = 1.03;

pub(super) fn limiters_for(limit: EndpointLimit) -> Vec<DefaultDirectRateLimiter> {
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
pub(super) fn jitter_for(limit: EndpointLimit) -> Duration {
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
    pub(super) fn note_budget(&self, endpoint: Endpoint, status: u16, headers: &HeaderMap) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
