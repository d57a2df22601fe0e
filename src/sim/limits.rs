//! App-wide request budgets per endpoint in fixed windows aligned to the minute (and second), and
//! the `x-per-minute-*` / `x-per-second-*` headers that report them (engagement-api §7, §12.7).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::Endpoint;

use super::world::{EndpointLimit, Limits};

/// The limit advertised when an endpoint has no budget, so clients can still read the headers.
pub const UNLIMITED: u32 = 1_000_000;

/// One window's allowance as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the next window starts.
    pub reset: i64,
}

/// The rate-limit headers of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub minute: Allowance,
    /// Only when a per-second budget is set.
    pub second: Option<Allowance>,
}

impl RateHeaders {
    /// Header names and values.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let windows = [("minute", Some(self.minute)), ("second", self.second)];
        for (unit, a) in windows.iter().filter_map(|(u, a)| a.map(|a| (u, a))) {
            out.push((format!("x-per-{unit}-limit"), a.limit.to_string()));
            out.push((format!("x-per-{unit}-remaining"), a.remaining.to_string()));
            out.push((format!("x-per-{unit}-reset"), a.reset.to_string()));
        }
        out
    }
}

/// Requests counted in the current minute and second of one endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Used {
    minute_start: i64,
    minute: u32,
    second_start: i64,
    second: u32,
}

impl Used {
    /// Forgets counts of windows that have ended.
    fn roll(&mut self, now: i64) {
        let minute_start = now.div_euclid(60) * 60;
        if self.minute_start != minute_start {
            (self.minute_start, self.minute) = (minute_start, 0);
        }
        if self.second_start != now {
            (self.second_start, self.second) = (now, 0);
        }
    }

    fn headers(&self, limit: EndpointLimit) -> RateHeaders {
        let allowance = |budget: u32, used: u32, reset: i64| {
            let limit = if budget == 0 { UNLIMITED } else { budget };
            Allowance {
                limit,
                remaining: limit.saturating_sub(used),
                reset,
            }
        };
        RateHeaders {
            minute: allowance(limit.per_minute, self.minute, self.minute_start + 60),
            second: (limit.per_second > 0)
                .then(|| allowance(limit.per_second, self.second, self.second_start + 1)),
        }
    }
}

/// The budgets of every endpoint.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    used: Mutex<HashMap<Endpoint, Used>>,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> RateLimiter {
        RateLimiter {
            limits,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The headers at `now` without spending anything (for answers given before the budget check).
    pub fn peek(&self, endpoint: Endpoint, now: i64) -> RateHeaders {
        let mut used = self.used.lock().expect("limiter lock");
        let u = used.entry(endpoint).or_default();
        u.roll(now);
        u.headers(self.limits.of(endpoint))
    }

    /// Spends one request of `endpoint`'s budget at `now`; `Err` (nothing spent) when a window is used up.
    pub fn take(&self, endpoint: Endpoint, now: i64) -> Result<RateHeaders, RateHeaders> {
        let limit = self.limits.of(endpoint);
        let mut used = self.used.lock().expect("limiter lock");
        let u = used.entry(endpoint).or_default();
        u.roll(now);
        let over = |budget: u32, used: u32| budget > 0 && used >= budget;
        if over(limit.per_minute, u.minute) || over(limit.per_second, u.second) {
            return Err(u.headers(limit));
        }
        u.minute += 1;
        u.second += 1;
        Ok(u.headers(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_minute_window_refuses_then_resets() {
        let limits = Limits {
            totals: EndpointLimit {
                per_minute: 2,
                per_second: 0,
            },
            ..Limits::default()
        };
        let rl = RateLimiter::new(limits);
        let t = 1_700_000_080; // 40 s into the minute starting at 1_700_000_040
        assert_eq!(rl.take(Endpoint::Totals, t).unwrap().minute.remaining, 1);
        assert_eq!(
            rl.take(Endpoint::Totals, t + 1).unwrap().minute.remaining,
            0
        );
        let refused = rl.take(Endpoint::Totals, t + 2).unwrap_err();
        assert_eq!(
            refused.minute,
            Allowance {
                limit: 2,
                remaining: 0,
                reset: 1_700_000_100
            }
        );
        assert!(refused.second.is_none());
        assert!(rl.take(Endpoint::Totals, t + 20).is_ok());
        // Other endpoints are unaffected and advertise a large limit.
        assert_eq!(
            rl.take(Endpoint::Hour28, t).unwrap().minute.limit,
            UNLIMITED
        );
    }

    #[test]
    fn per_second_budget_and_headers() {
        let limits = Limits {
            historical: EndpointLimit {
                per_minute: 0,
                per_second: 1,
            },
            ..Limits::default()
        };
        let rl = RateLimiter::new(limits);
        let ok = rl.take(Endpoint::Historical, 100).unwrap();
        assert!(rl.take(Endpoint::Historical, 100).is_err());
        assert!(rl.take(Endpoint::Historical, 101).is_ok());
        let names: Vec<String> = ok.pairs().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names.len(), 6);
        assert!(names.contains(&"x-per-second-reset".to_string()));
    }
}
