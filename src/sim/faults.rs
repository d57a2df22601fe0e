//! Injected failures: which one (if any) hits the n-th insights request, decided from the seed
//! and a request counter so that a run can be replayed.

use super::data::{mix, unit};
use super::world::Faults;

const TAG_FAULT: u64 = 0x30;

/// What goes wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 500 or 503 with `{"errors":["internal server error"]}`.
    ServerError(u16),
    /// 429 whatever the budget says.
    RateLimited,
    /// A 200 whose JSON body is cut in half.
    Malformed,
    /// The connection is closed without a complete response: a transport error for the client.
    Dropped,
}

/// The fault of request number `n` under `faults`.
pub fn draw(seed: u64, n: u64, faults: &Faults) -> Fault {
    let h = mix(&[TAG_FAULT, seed, n]);
    let u = unit(h);
    if u < faults.server_error {
        // The low bit picks the status so both kinds of outage show up.
        Fault::ServerError(if h & 1 == 0 { 500 } else { 503 })
    } else if u < faults.server_error + faults.rate_limited {
        Fault::RateLimited
    } else if u < faults.server_error + faults.rate_limited + faults.malformed {
        Fault::Malformed
    } else if u < faults.server_error + faults.rate_limited + faults.malformed + faults.dropped {
        // Drawn last, so worlds without it see the same faults as before it existed.
        Fault::Dropped
    } else {
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_roughly_honoured_and_replayable() {
        let f = Faults {
            server_error: 0.2,
            rate_limited: 0.1,
            malformed: 0.1,
            dropped: 0.1,
            latency_ms: 0,
        };
        let draws: Vec<Fault> = (0..2000).map(|n| draw(9, n, &f)).collect();
        let share = |p: fn(&Fault) -> bool| draws.iter().filter(|d| p(d)).count() as f64 / 2000.0;
        assert!((share(|d| matches!(d, Fault::ServerError(_))) - 0.2).abs() < 0.04);
        assert!((share(|d| *d == Fault::RateLimited) - 0.1).abs() < 0.03);
        assert!((share(|d| *d == Fault::Malformed) - 0.1).abs() < 0.03);
        assert!((share(|d| *d == Fault::Dropped) - 0.1).abs() < 0.03);
        assert!(
            draws.contains(&Fault::ServerError(500)) && draws.contains(&Fault::ServerError(503))
        );
        assert_eq!(draws, (0..2000).map(|n| draw(9, n, &f)).collect::<Vec<_>>());
        assert!((0..100).all(|n| draw(9, n, &Faults::default()) == Fault::None));
    }

    #[test]
    fn dropped_does_not_change_the_other_draws() {
        let without = Faults {
            server_error: 0.2,
            malformed: 0.1,
            ..Faults::default()
        };
        let with = Faults {
            dropped: 0.3,
            ..without
        };
        for n in 0..500 {
            let (a, b) = (draw(4, n, &without), draw(4, n, &with));
            assert!(a == b || (a == Fault::None && b == Fault::Dropped), "{n}");
        }
    }
}
