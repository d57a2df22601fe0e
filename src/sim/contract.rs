//! The API's rules as `engagement-api.md` writes them, for the simulator alone. The worker has
//! its own copy in `domain` (what it plans by); the simulator must not share it, or a wrong batch
//! size or metric table there would pass every end-to-end test. The test at the bottom holds the
//! two against each other and names the row where they disagree.
//!
//! Metrics are listed here by their API spelling, as the document's tables list them, so this
//! file does not lean on `Metric`'s own lists either.

use crate::domain::{DAY_SECS, Endpoint, HOUR_SECS, Metric};

/// Tweet IDs per request (§2.1, REF): 250 for `/totals`, 25 for the series endpoints.
pub fn max_ids(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Totals => 250,
        Endpoint::Hour28 | Endpoint::Historical => 25,
    }
}

/// The engagement types `/totals` accepts (§2.1, §3.1): "only these".
const TOTALS_TYPES: [&str; 7] = [
    "impressions",
    "engagements",
    "favorites",
    "retweets",
    "quote_tweets",
    "replies",
    "video_views",
];

/// The 17 types `/28hr` and `/historical` accept (§3.1): every type but `quote_tweets`.
const SERIES_TYPES: [&str; 17] = [
    "impressions",
    "engagements",
    "favorites",
    "retweets",
    "replies",
    "video_views",
    "media_views",
    "media_engagements",
    "url_clicks",
    "hashtag_clicks",
    "detail_expands",
    "permalink_clicks",
    "app_install_attempts",
    "app_opens",
    "email_tweet",
    "user_follows",
    "user_profile_clicks",
];

/// The types a bearer token may read, on `/totals` only (§3.2).
const BEARER_TYPES: [&str; 5] = [
    "favorites",
    "retweets",
    "quote_tweets",
    "replies",
    "video_views",
];

/// Whether `endpoint` accepts `metric` in `engagement_types`.
pub fn accepts(endpoint: Endpoint, metric: Metric) -> bool {
    let table: &[&str] = match endpoint {
        Endpoint::Totals => &TOTALS_TYPES,
        Endpoint::Hour28 | Endpoint::Historical => &SERIES_TYPES,
    };
    table.contains(&metric.as_str())
}

/// Whether a bearer (app-only) token may read `metric` on `endpoint` (§3.2, §6.1).
pub fn bearer_may_read(endpoint: Endpoint, metric: Metric) -> bool {
    endpoint == Endpoint::Totals && BEARER_TYPES.contains(&metric.as_str())
}

/// Whether `engagement.day`/`engagement.hour` may be grouped by (§4.1): not on `/totals`.
pub fn allows_time_groupings(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::Hour28 | Endpoint::Historical)
}

/// At most this many groupings per request (§4.1; Q1 resolved as the docs say).
pub const MAX_GROUPINGS: usize = 3;

/// `/totals` serves `impressions`/`engagements` only for Tweets posted in the last 90 days (§5.3).
pub const IMPRESSIONS_MAX_AGE_SECS: i64 = 90 * DAY_SECS;

/// `video_views` only for Tweets at most 1800 days old (§3.1).
pub const VIDEO_VIEWS_MAX_AGE_SECS: i64 = 1800 * DAY_SECS;

/// The longest `/historical` window: 4 weeks (§5.1).
pub const MAX_WINDOW_SECS: i64 = 28 * DAY_SECS;

/// `/28hr` answers the last 28 hours (§5.2).
pub const HOUR28_SECS: i64 = 28 * HOUR_SECS;

/// The earliest `/historical` data, 2014-09-01T00:00:00Z (§5.1, REF and KEYCHAR).
pub const HISTORICAL_FLOOR: i64 = 1_409_529_600;

/// The newer overview's lookback (§5.1, Q5): only the last 365 days of engagement time.
pub const NEWER_LOOKBACK_DAYS: u32 = 365;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;

    /// The worker's tables (`domain`) against the API's (this file), row by row. A failure names
    /// the row so the one that is wrong can be found in engagement-api.md.
    #[test]
    fn the_workers_tables_agree_with_the_api_contract() {
        let mut rows: Vec<String> = Vec::new();
        let mut check = |row: String, api: String, worker: String| {
            if api != worker {
                rows.push(format!("{row}: the API says {api}, domain says {worker}"));
            }
        };
        for endpoint in Endpoint::ALL {
            let at = format!("/{endpoint}");
            check(
                format!("{at} Tweet IDs per request"),
                max_ids(endpoint).to_string(),
                endpoint.max_ids().to_string(),
            );
            check(
                format!("{at} time groupings"),
                allows_time_groupings(endpoint).to_string(),
                endpoint.allows_time_groupings().to_string(),
            );
            for metric in Metric::ALL {
                check(
                    format!("{at} accepts {metric}"),
                    accepts(endpoint, metric).to_string(),
                    endpoint.accepts(metric).to_string(),
                );
                check(
                    format!("{at} bearer may read {metric}"),
                    bearer_may_read(endpoint, metric).to_string(),
                    endpoint.bearer_may_read(metric).to_string(),
                );
            }
        }
        check(
            "bearer-readable metrics".into(),
            format!("{BEARER_TYPES:?}"),
            format!(
                "{:?}",
                Metric::PUBLIC
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
            ),
        );
        check(
            "90-day impressions rule (seconds)".into(),
            IMPRESSIONS_MAX_AGE_SECS.to_string(),
            domain::IMPRESSIONS_MAX_AGE_SECS.to_string(),
        );
        check(
            "1800-day video views rule (seconds)".into(),
            VIDEO_VIEWS_MAX_AGE_SECS.to_string(),
            domain::VIDEO_VIEWS_MAX_AGE_SECS.to_string(),
        );
        check(
            "/historical earliest data".into(),
            domain::iso_utc(HISTORICAL_FLOOR),
            domain::iso_utc(domain::HISTORICAL_EPOCH),
        );
        check(
            "/historical longest window = the planner's grid cell (seconds)".into(),
            MAX_WINDOW_SECS.to_string(),
            crate::planner::CELL_SECS.to_string(),
        );
        assert!(
            rows.is_empty(),
            "domain disagrees with the API contract (sim/contract.rs, from engagement-api.md):\n  {}",
            rows.join("\n  ")
        );
    }

    /// Every type the document names is a type the worker knows, and the tables have the sizes
    /// the document gives (7 on /totals, 17 on the series endpoints).
    #[test]
    fn the_tables_name_known_types() {
        for name in TOTALS_TYPES
            .iter()
            .chain(&SERIES_TYPES)
            .chain(&BEARER_TYPES)
        {
            assert!(name.parse::<Metric>().is_ok(), "{name}");
        }
        assert!(!SERIES_TYPES.contains(&"quote_tweets"));
        assert!(BEARER_TYPES.iter().all(|t| TOTALS_TYPES.contains(t)));
    }
}
