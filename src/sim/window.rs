//! The time window a series endpoint answers for (engagement-api §5.1, §5.2, §12.5): fixed for
//! `/28hr`, from `start`/`end` for `/historical`. `/totals` has none.
//!
//! Error texts are simulator choices (Q6); the status is 400.

use chrono::{NaiveDate, NaiveDateTime};

use crate::domain::{Endpoint, HOUR_SECS, Hour, iso_utc};

use super::contract::{HISTORICAL_FLOOR, HOUR28_SECS};

pub use super::contract::MAX_WINDOW_SECS;

/// Hours `[start, end)` plus the `start`/`end` strings the response echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: Hour,
    pub end: Hour,
    pub echo_start: String,
    pub echo_end: String,
}

impl Window {
    /// Every hour of the window, oldest first.
    pub fn hours(&self) -> impl Iterator<Item = Hour> + '_ {
        (0..(self.end.secs() - self.start.secs()) / HOUR_SECS).map(|n| self.start.plus_hours(n))
    }
}

/// Why a `/historical` window is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("Invalid {field} {value:?}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z] (UTC)")]
    BadTime { field: &'static str, value: String },
    #[error("end ({0}) must be after start ({1})")]
    EndNotAfterStart(String, String),
    #[error("End dates in the future are not supported: {0}")]
    FutureEnd(String),
    #[error("start ({0}) is before the earliest available data, 2014-09-01T00:00:00Z")]
    TooEarly(String),
    #[error("The window from {0} to {1} is longer than 4 weeks")]
    TooLong(String, String),
}

/// Reads a time as clients send it; zone-less times are UTC (TAPGNIP ran that way in production).
fn parse_time(field: &'static str, value: &str) -> Result<i64, WindowError> {
    let v = value.strip_suffix('Z').unwrap_or(value);
    let parsed = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    parsed
        .map(|t| t.and_utc().timestamp())
        .ok_or_else(|| WindowError::BadTime {
            field,
            value: value.into(),
        })
}

/// The window of a request to `endpoint` at `now`, or `None` for `/totals`.
pub fn window(
    endpoint: Endpoint,
    start: Option<&str>,
    end: Option<&str>,
    now: i64,
) -> Result<Option<Window>, WindowError> {
    match endpoint {
        Endpoint::Totals => Ok(None),
        // §5.2 model: start = floor_hour(now − 28 h), end = ceil_hour(now); start/end in the body are ignored.
        Endpoint::Hour28 => {
            let (s, e) = (Hour::floor(now - HOUR28_SECS), Hour::ceil(now));
            Ok(Some(Window {
                start: s,
                end: e,
                echo_start: s.to_string(),
                echo_end: e.to_string(),
            }))
        }
        Endpoint::Historical => {
            let start = start.map(|s| parse_time("start", s)).transpose()?;
            let end = end.map(|e| parse_time("end", e)).transpose()?;
            // Defaults (§5.1, Q15): neither → the previous 4 weeks up to now; one side → 4 weeks
            // from it, never past now.
            let (s, e) = match (start, end) {
                (Some(s), Some(e)) => (s, e),
                (Some(s), None) => (s, (s + MAX_WINDOW_SECS).min(now)),
                (None, Some(e)) => (e - MAX_WINDOW_SECS, e),
                (None, None) => (Hour::ceil(now).secs() - MAX_WINDOW_SECS, now),
            };
            if e > now {
                return Err(WindowError::FutureEnd(iso_utc(e)));
            }
            if e <= s {
                return Err(WindowError::EndNotAfterStart(iso_utc(e), iso_utc(s)));
            }
            if s < HISTORICAL_FLOOR {
                return Err(WindowError::TooEarly(iso_utc(s)));
            }
            let (hs, he) = (Hour::floor(s), Hour::ceil(e));
            if he.secs() - hs.secs() > MAX_WINDOW_SECS {
                return Err(WindowError::TooLong(iso_utc(s), iso_utc(e)));
            }
            // The echoed end is the request's end, unrounded, as RUBY's real response shows.
            Ok(Some(Window {
                start: hs,
                end: he,
                echo_start: hs.to_string(),
                echo_end: iso_utc(e),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000 + 1234; // not on an hour

    #[test]
    fn hour28_spans_29_buckets_off_the_hour() {
        let w = window(Endpoint::Hour28, None, None, NOW).unwrap().unwrap();
        assert_eq!(w.hours().count(), 29);
        assert!(w.end.secs() >= NOW && w.start.secs() <= NOW - 28 * HOUR_SECS);
    }

    #[test]
    fn historical_rounds_outwards_and_echoes() {
        let w = window(
            Endpoint::Historical,
            Some("2015-07-01T12:24:00Z"),
            Some("2015-07-10T08:37:00Z"),
            NOW,
        )
        .unwrap()
        .unwrap();
        assert_eq!(w.echo_start, "2015-07-01T12:00:00Z");
        assert_eq!(w.end.to_string(), "2015-07-10T09:00:00Z");
        let d = window(
            Endpoint::Historical,
            Some("2015-08-01"),
            Some("2015-08-15T00:00:00"),
            NOW,
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.hours().count(), 14 * 24);
        let default = window(Endpoint::Historical, None, None, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(default.end.secs() - default.start.secs(), MAX_WINDOW_SECS);
    }

    #[test]
    fn historical_refusals() {
        let h =
            |s: Option<&str>, e: Option<&str>| window(Endpoint::Historical, s, e, NOW).unwrap_err();
        assert!(matches!(
            h(Some("yesterday"), None),
            WindowError::BadTime { field: "start", .. }
        ));
        assert!(matches!(
            h(Some("2015-08-01"), Some("2015-09-01")),
            WindowError::TooLong(..)
        ));
        assert!(matches!(
            h(Some("2014-08-01"), Some("2014-08-10")),
            WindowError::TooEarly(_)
        ));
        assert!(matches!(
            h(Some("2015-08-10"), Some("2015-08-01")),
            WindowError::EndNotAfterStart(..)
        ));
        assert!(matches!(
            h(None, Some("2099-01-01")),
            WindowError::FutureEnd(_)
        ));
        assert!(
            window(
                Endpoint::Historical,
                Some("2015-08-01"),
                Some("2015-08-29"),
                NOW
            )
            .is_ok()
        );
    }
}
