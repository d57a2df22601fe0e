//! Times given on the command line (`--since`, `--until`): an ISO date (`2026-11-01`, midnight
//! UTC), RFC 3339 (`2026-11-01T12:00:00Z`, `2026-11-01T13:00:00+01:00`), a UTC date and time
//! without offset (`2026-11-01T12:00`, `2026-11-01 12:00:00`), Unix seconds (`@1793491200`), or a
//! time relative to now (`7d`, `24h`, `90m`, `30s`: that long ago).

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// The epoch seconds `text` names, relative forms counted back from `now`.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    let hint = "use a date (2026-11-01), RFC 3339 (2026-11-01T12:00:00Z), @UNIX_SECONDS, \
                or an age such as 7d, 24h, 90m";
    if let Some(secs) = t.strip_prefix('@') {
        return secs
            .parse()
            .map_err(|_| format!("{text:?} is not a time; {hint}"));
    }
    if let Some(ago) = relative(t) {
        return ago
            .map(|secs| now - secs)
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

/// `7d`, `24h`, `90m`, `30s`, `2w` as seconds; `None` when `t` is not of that form,
/// `Some(None)` on overflow.
fn relative(t: &str) -> Option<Option<i64>> {
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    let per: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    let n: i64 = number.parse().ok()?;
    Some(n.checked_mul(per))
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
}
