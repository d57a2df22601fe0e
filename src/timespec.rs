//! Times and durations as people write them, on the command line and in the config: one duration
//! parser for both (`30s`, `15m`, `2h`, `90d`, `2w`, `1h30m`; read by humantime), and the times of
//! `--since` and `--until`: an ISO date (`2026-11-01`, midnight UTC), RFC 3339
//! (`2026-11-01T12:00:00Z`, `2026-11-01T13:00:00+01:00`), a UTC date and time without offset
//! (`2026-11-01T12:00`, `2026-11-01 12:00:00`), Unix seconds (`@1793491200`), or a duration
//! counted back from now (`7d`: that long ago). What a duration may be in a given config key (not
//! zero, at least an hour) is the config's business.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// The units a duration may be written in.
const UNITS: [&str; 6] = ["ms", "s", "m", "h", "d", "w"];

/// Parses a duration: one or more integer-and-unit groups (ms, s, m, h, d or w), without spaces:
/// `"500ms"`, `"30s"`, `"90d"`, `"2w"`, `"1h30m"`. Zero is a duration here.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match compact(text.trim()) {
        Some(Ok(d)) => Ok(d),
        Some(Err(())) => Err(format!("{text:?} is too long")),
        None => Err(format!(
            "{text:?} is not a duration; write an integer and a unit (ms, s, m, h, d or w), \
             e.g. \"30s\" or \"90d\""
        )),
    }
}

/// `d` as [`parse_duration`] reads it back, in its largest whole unit: `"90d"`, `"30s"`, `"500ms"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (unit, per) = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)]
        .into_iter()
        .find(|(_, per)| secs.is_multiple_of(*per))
        .expect("every whole second count divides by 1");
    format!("{}{unit}", secs / per)
}

/// `None` when `t` is not integer-and-unit groups; `Some(Err)` when it is, but too long.
/// humantime alone would also take spaces, fractions, months and years (of 30.44 and 365.25
/// days): the groups are checked first, so what is accepted is exact and written one way.
fn compact(t: &str) -> Option<Result<Duration, ()>> {
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let after = &rest[digits..];
        let unit = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        if digits == 0 || !UNITS.contains(&&after[..unit]) {
            return None;
        }
        rest = &after[unit..];
    }
    if t.is_empty() {
        return None;
    }
    Some(humantime::parse_duration(t).map_err(|_| ()))
}

/// The epoch seconds `text` names, durations counted back from `now`.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    let hint = "use a date (2026-11-01), RFC 3339 (2026-11-01T12:00:00Z), @UNIX_SECONDS, \
                or an age such as 7d, 24h, 90m";
    if let Some(secs) = t.strip_prefix('@') {
        return secs
            .parse()
            .map_err(|_| format!("{text:?} is not a time; {hint}"));
    }
    if let Some(ago) = compact(t) {
        return ago
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .and_then(|secs| now.checked_sub(secs))
            .ok_or_else(|| format!("{text:?} is too long ago"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Ok(t.timestamp());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(t.and_utc().timestamp());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp());
    }
    Err(format!("{text:?} is not a time; {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_793_404_800; // 2026-10-31T00:00:00Z

    #[test]
    fn every_documented_form_parses() {
        assert_eq!(parse_time("2026-11-01", NOW), Ok(NOW + 86_400));
        assert_eq!(
            parse_time("2026-11-01T12:00:00Z", NOW),
            Ok(NOW + 86_400 + 43_200)
        );
        assert_eq!(
            parse_time("2026-11-01T13:00:00+01:00", NOW),
            Ok(NOW + 86_400 + 43_200)
        );
        assert_eq!(
            parse_time("2026-11-01T12:00", NOW),
            Ok(NOW + 86_400 + 43_200)
        );
        assert_eq!(
            parse_time("2026-11-01 12:00:00", NOW),
            Ok(NOW + 86_400 + 43_200)
        );
        assert_eq!(parse_time("@1700000000", NOW), Ok(1_700_000_000));
        assert_eq!(parse_time("7d", NOW), Ok(NOW - 7 * 86_400));
        assert_eq!(parse_time("24h", NOW), Ok(NOW - 86_400));
        assert_eq!(parse_time("90m", NOW), Ok(NOW - 5400));
        assert_eq!(parse_time("2w", NOW), Ok(NOW - 14 * 86_400));
    }

    #[test]
    fn bad_times_say_what_is_accepted() {
        for bad in ["yesterday", "7y", "2026-13-01", "", "@x"] {
            let e = parse_time(bad, NOW).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    /// The config's and the command line's durations are one parser: milliseconds, weeks and
    /// compound forms work in both; spaces, fractions, months and years in neither.
    #[test]
    fn one_duration_parser_for_config_and_command_line() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_time("1h30m", NOW), Ok(NOW - 5400));
        assert_eq!(parse_time("1500ms", NOW), Ok(NOW - 1));
        for bad in [
            "", "30", "s", "1.5h", "3 weeks", "-1s", "2M", "1y", "5sec", "1h 30m",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad:?}: {e}");
        }
        assert!(
            parse_duration("99999999999999999999d")
                .unwrap_err()
                .ends_with("is too long")
        );
        assert!(
            parse_time("999999999999999w", NOW)
                .unwrap_err()
                .ends_with("too long ago")
        );
    }

    #[test]
    fn durations_are_written_back_in_their_largest_whole_unit() {
        for (d, text) in [
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(150), "150s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::ZERO, "0d"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
