//! The request wire format: the JSON body of a `/totals`, `/28hr` or `/historical` request, and
//! the grouping each kind asks for. It builds bodies; it neither sends them nor reads answers.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::{Hour, JobKind};
use crate::parse::GroupBy;
use crate::planner::Job;

/// The grouping every `/totals` request asks for.
pub const TOTALS_GROUPING: &str = "by_tweet";
const TOTALS_GROUP_BY: &[GroupBy] = &[GroupBy::TweetId, GroupBy::EngagementType];
/// The grouping every `/28hr` and `/historical` request asks for (design §2).
pub const SERIES_GROUPING: &str = "by_hour";
const SERIES_GROUP_BY: &[GroupBy] = &[
    GroupBy::TweetId,
    GroupBy::EngagementType,
    GroupBy::Day,
    GroupBy::Hour,
];

/// The grouping each kind asks for: lifetime values per Tweet and type for `/totals`; for the
/// series, always hourly buckets (days are a view), so everything is stored at one resolution.
pub fn grouping(kind: JobKind) -> (&'static str, &'static [GroupBy]) {
    match kind {
        JobKind::Totals => (TOTALS_GROUPING, TOTALS_GROUP_BY),
        JobKind::Hourly | JobKind::Historical => (SERIES_GROUPING, SERIES_GROUP_BY),
    }
}

/// The JSON body of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestBody {
    /// Tweet IDs as strings, as the API spells them.
    tweet_ids: Vec<String>,
    engagement_types: Vec<&'static str>,
    /// One grouping, by name.
    groupings: BTreeMap<&'static str, Grouping>,
    /// `/historical` only: the window's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    /// `/historical` only: the window's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

/// One grouping: the nesting of the answer, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Grouping {
    group_by: Vec<&'static str>,
}

impl RequestBody {
    /// The body of `job`; `window` is the `/historical` window.
    pub fn new(job: &Job, window: Option<(Hour, Hour)>) -> RequestBody {
        let (name, levels) = grouping(job.kind);
        let group_by = levels.iter().map(|g| g.as_str()).collect();
        RequestBody {
            tweet_ids: job.tweets.iter().map(ToString::to_string).collect(),
            engagement_types: job.metrics.iter().map(|m| m.as_str()).collect(),
            groupings: BTreeMap::from([(name, Grouping { group_by })]),
            start: window.map(|(start, _)| start.to_string()),
            end: window.map(|(_, end)| end.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Credential, Endpoint, Metric, TweetId};
    use crate::planner::Cell;

    fn job(kind: JobKind, endpoint: Endpoint, cell: Option<Cell>) -> Job {
        Job {
            kind,
            endpoint,
            credential: Credential::Bearer,
            tweets: vec![
                TweetId::new(20).unwrap(),
                TweetId::new(1_000_000_000_000_000_001).unwrap(),
            ],
            metrics: vec![Metric::Impressions, Metric::Favorites],
            cell,
            refresh: false,
            served_from: None,
        }
    }

    /// A `/totals` body: Tweet IDs as strings, the API's metric names, the by-Tweet grouping,
    /// no window.
    #[test]
    fn a_totals_body_is_the_wire_format() {
        let body = RequestBody::new(&job(JobKind::Totals, Endpoint::Totals, None), None);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "tweet_ids": ["20", "1000000000000000001"],
                "engagement_types": ["impressions", "favorites"],
                "groupings": { "by_tweet": { "group_by": ["tweet.id", "engagement.type"] } },
            })
        );
    }

    /// A `/historical` body carries its window as `start` and `end`, and asks for hourly buckets.
    #[test]
    fn a_historical_body_carries_its_window() {
        let cell = Cell::of(1_700_000_000);
        let window = cell.window(1_700_000_000 + 100 * 86_400);
        let body = RequestBody::new(
            &job(JobKind::Historical, Endpoint::Historical, Some(cell)),
            Some(window),
        );
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(value["start"], window.0.to_string());
        assert_eq!(value["end"], window.1.to_string());
        assert_eq!(
            value["groupings"]["by_hour"]["group_by"],
            serde_json::json!([
                "tweet.id",
                "engagement.type",
                "engagement.day",
                "engagement.hour"
            ])
        );
    }
}
