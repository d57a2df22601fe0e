//! The time window a series endpoint answers for (engagement-api §5.1, §5.2, §12.5): fixed for
//! `/28hr`, from `start`/`end` for `/historical`. `/totals` has none.
//!
//! Error texts are simulator choices (Q6); the status is 400.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::domain::{DAY_SECS, Endpoint, HOUR_SECS, Hour, iso_utc};

use super::contract::{HISTORICAL_FLOOR, HOUR28_SECS};
use super::realism::Realism;

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
    #[error("Invalid {field} {value:?}: use {}", formats(*.lenient))]
    BadTime {
        field: &'static str,
        value: String,
        lenient: bool,
    },
    #[error("end ({0}) must be after start ({1})")]
    EndNotAfterStart(String, String),
    #[error("End dates in the future are not supported: {0}")]
    FutureEnd(String),
    #[error("start ({0}) is before the earliest available data, 2014-09-01T00:00:00Z")]
    TooEarly(String),
    #[error("The window from {0} to {1} is longer than 4 weeks")]
    TooLong(String, String),
    /// Under `lookback_days`: the start (floored to its hour) is older than the lookback allows.
    #[error(
        "start ({start}) is before the earliest available data, {earliest}: engagement data is limited to the last {days} days"
    )]
    BeforeLookback {
        start: String,
        earliest: String,
        days: u32,
    },
}

/// The formats a `BadTime` text offers.
fn formats(lenient: bool) -> &'static str {
    if lenient {
        "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM] (zone-less is UTC)"
    } else {
        "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z] (UTC)"
    }
}

/// Reads a time as clients send it; zone-less times are UTC (TAPGNIP ran that way in production).
/// `lenient` (`lenient_input`) also reads fractional seconds and a UTC offset, converted to UTC:
/// no client is known to send them and whether the API accepts them is unknown (§2.2), so they
/// are refused unless the world asks otherwise. Fractions are dropped (truncated to the second):
/// the window is widened to whole hours anyway, a simulator choice.
fn parse_time(field: &'static str, value: &str, lenient: bool) -> Result<i64, WindowError> {
    let v = value.strip_suffix('Z').unwrap_or(value);
    let naive = |formats: &[&str]| {
        formats
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
            .map(|t| t.and_utc().timestamp())
    };
    let strict = || {
        naive(&["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]).or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp())
        })
    };
    let loose = || {
        naive(&["%Y-%m-%dT%H:%M:%S%.f"]).or_else(|| {
            [
                "%Y-%m-%dT%H:%M:%S%.f%:z",
                "%Y-%m-%dT%H:%M:%S%.f%z",
                "%Y-%m-%dT%H:%M%:z",
            ]
            .iter()
            .find_map(|f| DateTime::parse_from_str(value, f).ok())
            .map(|t| t.timestamp())
        })
    };
    strict()
        .or_else(|| lenient.then(loose).flatten())
        .ok_or_else(|| WindowError::BadTime {
            field,
            value: value.into(),
            lenient,
        })
}

/// The earliest hour `/historical` serves under `lookback_days` (the newer overview's 365 days,
/// §5.1 [D], Q5), counted back from the current hour (simulator choice), or `None` when the
/// 2014-09-01 floor is the later one (`lookback_days = 0` always).
fn lookback_floor(lookback_days: u32, now: i64) -> Option<i64> {
    let floor = Hour::floor(now).secs() - i64::from(lookback_days) * DAY_SECS;
    (lookback_days > 0 && floor > HISTORICAL_FLOOR).then_some(floor)
}

/// The window of a request to `endpoint` at `now`, or `None` for `/totals`. Of `realism`,
/// `lenient_input`, `round_end` and `lookback_days` act here.
pub fn window(
    endpoint: Endpoint,
    start: Option<&str>,
    end: Option<&str>,
    now: i64,
    realism: &Realism,
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
            let lenient = realism.lenient_input;
            let start = start.map(|s| parse_time("start", s, lenient)).transpose()?;
            let end = end.map(|e| parse_time("end", e, lenient)).transpose()?;
            let lookback = lookback_floor(realism.lookback_days, now);
            // A start the client did not send is never before the lookback floor: the API
            // serves what it has rather than refuse its own default (simulator choice).
            let clip = |s: i64| lookback.map_or(s, |floor| s.max(floor));
            // Defaults (§5.1, Q15): neither → the previous 4 weeks up to now; one side → 4 weeks
            // from it, never past now.
            let (s, e) = match (start, end) {
                (Some(s), Some(e)) => (s, e),
                (Some(s), None) => (s, (s + MAX_WINDOW_SECS).min(now)),
                (None, Some(e)) => (clip(e - MAX_WINDOW_SECS), e),
                (None, None) => (clip(Hour::ceil(now).secs() - MAX_WINDOW_SECS), now),
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
            if let Some(floor) = lookback
                && hs.secs() < floor
            {
                return Err(WindowError::BeforeLookback {
                    start: iso_utc(s),
                    earliest: iso_utc(floor),
                    days: realism.lookback_days,
                });
            }
            if he.secs() - hs.secs() > MAX_WINDOW_SECS {
                return Err(WindowError::TooLong(iso_utc(s), iso_utc(e)));
            }
            // The echoed end is the request's end, unrounded, as RUBY's real response shows
            // (§5.1 [C]); `round_end` echoes it rounded up to its hour, as REF's example does
            // (08:37 → 09:00, §5.1 [D]). The buckets are the same either way.
            let echo_end = if realism.round_end {
                he.to_string()
            } else {
                iso_utc(e)
            };
            Ok(Some(Window {
                start: hs,
                end: he,
                echo_start: hs.to_string(),
                echo_end,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000 + 1234; // not on an hour

    /// The tidy simulator's window (every knob off).
    fn window(
        endpoint: Endpoint,
        start: Option<&str>,
        end: Option<&str>,
        now: i64,
    ) -> Result<Option<Window>, WindowError> {
        super::window(endpoint, start, end, now, &Realism::TIDY)
    }

    fn historical(
        realism: Realism,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<Window, WindowError> {
        super::window(Endpoint::Historical, start, end, NOW, &realism).map(Option::unwrap)
    }

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

    #[test]
    fn fractions_and_offsets_are_read_only_when_lenient() {
        let lenient = Realism {
            lenient_input: true,
            ..Realism::TIDY
        };
        let cases = [
            ("2015-08-01T00:00:00.000Z", "2015-08-01T00:00:00Z"),
            ("2015-08-01T00:00:00.999", "2015-08-01T00:00:00Z"),
            ("2015-08-01T00:00:00+00:00", "2015-08-01T00:00:00Z"),
            ("2015-08-01T02:30:00.000+02:00", "2015-08-01T00:30:00Z"),
            ("2015-07-31T19:00:00-0500", "2015-08-01T00:00:00Z"),
            ("2015-08-01T05:30+05:30", "2015-08-01T00:00:00Z"),
        ];
        for (sent, utc) in cases {
            let w = historical(lenient, Some(sent), Some("2015-08-10")).unwrap();
            assert_eq!(w.echo_start, utc.replace(":30:00Z", ":00:00Z"), "{sent}");
            assert_eq!(
                parse_time("start", sent, true).map(iso_utc),
                Ok(utc.to_string())
            );
            let e = historical(Realism::TIDY, Some(sent), Some("2015-08-10")).unwrap_err();
            assert_eq!(
                e,
                WindowError::BadTime {
                    field: "start",
                    value: sent.into(),
                    lenient: false
                },
                "{sent}"
            );
        }
        // The strict formats still read the same, and the lenient refusal names its formats.
        let w = historical(lenient, Some("2015-08-01"), Some("2015-08-10T00:00:00Z")).unwrap();
        assert_eq!(w.hours().count(), 9 * 24);
        assert_eq!(
            historical(lenient, Some("2015-08-01T00:00:00.000Y"), None)
                .unwrap_err()
                .to_string(),
            "Invalid start \"2015-08-01T00:00:00.000Y\": use YYYY-MM-DD or \
             YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM] (zone-less is UTC)"
        );
    }

    #[test]
    fn round_end_echoes_the_end_hour_with_the_same_buckets() {
        let (s, e) = (Some("2015-07-01T12:24:00Z"), Some("2015-07-10T08:37:00Z"));
        let tidy = historical(Realism::TIDY, s, e).unwrap();
        let rounded = historical(
            Realism {
                round_end: true,
                ..Realism::TIDY
            },
            s,
            e,
        )
        .unwrap();
        assert_eq!(tidy.echo_end, "2015-07-10T08:37:00Z");
        assert_eq!(rounded.echo_end, "2015-07-10T09:00:00Z");
        assert_eq!(rounded.echo_start, "2015-07-01T12:00:00Z");
        assert_eq!(
            (rounded.start, rounded.end),
            (tidy.start, tidy.end),
            "same buckets"
        );
        // An end on the hour is echoed as sent.
        let on = historical(
            Realism {
                round_end: true,
                ..Realism::TIDY
            },
            s,
            Some("2015-07-10T08:00:00Z"),
        )
        .unwrap();
        assert_eq!(on.echo_end, "2015-07-10T08:00:00Z");
    }

    #[test]
    fn lookback_refuses_older_starts_and_clips_the_default() {
        let days = |n| Realism {
            lookback_days: n,
            ..Realism::TIDY
        };
        let floor = Hour::floor(NOW).secs() - 365 * DAY_SECS;
        let at = |secs: i64| iso_utc(secs);
        // The first hour served is served; the hour before it is refused, naming the floor.
        let ok = historical(days(365), Some(&at(floor)), Some(&at(floor + DAY_SECS))).unwrap();
        assert_eq!(ok.start.secs(), floor);
        let early = at(floor - 60);
        let e = historical(days(365), Some(&early), Some(&at(floor + DAY_SECS))).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "start ({early}) is before the earliest available data, {}: engagement data is \
                 limited to the last 365 days",
                at(floor)
            )
        );
        // Off (0), the same start is served: only 2014-09-01 bounds it.
        assert!(historical(days(0), Some(&early), Some(&at(floor + DAY_SECS))).is_ok());
        // A lookback reaching past 2014-09-01 leaves today's floor and text in force.
        assert!(matches!(
            historical(days(100_000), Some("2014-08-01"), Some("2014-08-10")),
            Err(WindowError::TooEarly(_))
        ));
        // The default window is clipped to the floor, not refused.
        let w = historical(days(7), None, None).unwrap();
        assert_eq!(w.start.secs(), Hour::floor(NOW).secs() - 7 * DAY_SECS);
        assert_eq!(w.end, Hour::ceil(NOW));
        let w = historical(days(7), None, Some(&at(NOW - DAY_SECS))).unwrap();
        assert_eq!(w.start.secs(), Hour::floor(NOW).secs() - 7 * DAY_SECS);
        assert_eq!(
            historical(days(0), None, None).unwrap(),
            window(Endpoint::Historical, None, None, NOW)
                .unwrap()
                .unwrap()
        );
    }
}
