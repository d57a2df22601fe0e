//! Engagement API response bodies → typed rows. Works for any grouping shape (the nesting follows
//! the `group_by` order) and turns the partial-success keys into typed outcomes. No I/O.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime};
use serde_json::{Map, Value};

use crate::domain::{HOUR_SECS, Hour, Metric, TweetId};

/// One `group_by` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    TweetId,
    EngagementType,
    Day,
    Hour,
}

impl GroupBy {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::TweetId => "tweet.id",
            GroupBy::EngagementType => "engagement.type",
            GroupBy::Day => "engagement.day",
            GroupBy::Hour => "engagement.hour",
        }
    }
}

/// One leaf of a grouping: the keys found on the way down, and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub tweet: Option<TweetId>,
    pub metric: Option<Metric>,
    /// Start of the UTC day (Unix seconds), when grouped by day.
    pub day: Option<i64>,
    /// Hour of the day (0–23), when grouped by hour.
    pub hour: Option<u8>,
    pub value: i64,
}

impl Row {
    /// The bucket's hour, when the row has both a day and an hour key.
    pub fn bucket(&self) -> Option<Hour> {
        Hour::exact(self.day? + i64::from(self.hour?) * HOUR_SECS)
    }
}

/// A parsed response body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Rows per grouping name, in no particular order.
    pub groupings: BTreeMap<String, Vec<Row>>,
    /// Tweets the API reports as deleted or not public.
    pub unavailable: Vec<TweetId>,
    /// Tweets too old for `impressions`/`engagements`.
    pub unsupported_impressions: Vec<TweetId>,
    /// Tweets too old for `video_views` (their `video_views` read 0 and mean "unknown").
    pub unsupported_video_views: Vec<TweetId>,
    /// The `errors` strings that came with the answer.
    pub errors: Vec<String>,
    /// Metric names the API returned that this build does not know (skipped).
    pub unknown_metrics: Vec<String>,
    pub start: Option<String>,
    pub end: Option<String>,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("response is not valid JSON (truncated?): {0}")]
    Json(String),
    #[error("response is not a JSON object")]
    NotAnObject,
    #[error("grouping {0:?} is missing from the response")]
    MissingGrouping(String),
    #[error("grouping {grouping:?}: {detail}")]
    Shape { grouping: String, detail: String },
}

/// Parses `body`, reading each requested grouping with its `group_by` order.
pub fn parse(body: &[u8], groupings: &[(&str, &[GroupBy])]) -> Result<Parsed, ParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(mut top) = value else {
        return Err(ParseError::NotAnObject);
    };
    let mut out = Parsed {
        unavailable: id_list(&top, "unavailable_tweet_ids"),
        unsupported_impressions: id_list(&top, "unsupported_for_impressions_engagements_tweet_ids"),
        unsupported_video_views: id_list(&top, "unsupported_for_video_views_tweet_ids"),
        errors: string_list(&top, "errors"),
        start: top.get("start").and_then(Value::as_str).map(str::to_string),
        end: top.get("end").and_then(Value::as_str).map(str::to_string),
        ..Parsed::default()
    };
    for (name, levels) in groupings {
        let tree = match top.remove(*name) {
            Some(t) => t,
            // An answer where every Tweet was unavailable may leave the grouping out.
            None if !out.unavailable.is_empty() => Value::Object(Map::new()),
            None => return Err(ParseError::MissingGrouping(name.to_string())),
        };
        let mut rows = Vec::new();
        let mut walker = Walker {
            levels,
            rows: &mut rows,
            unknown: &mut out.unknown_metrics,
        };
        walker
            .walk(
                &tree,
                0,
                Row {
                    tweet: None,
                    metric: None,
                    day: None,
                    hour: None,
                    value: 0,
                },
            )
            .map_err(|detail| ParseError::Shape {
                grouping: name.to_string(),
                detail,
            })?;
        out.groupings.insert(name.to_string(), rows);
    }
    out.unknown_metrics.sort();
    out.unknown_metrics.dedup();
    Ok(out)
}

struct Walker<'a> {
    levels: &'a [GroupBy],
    rows: &'a mut Vec<Row>,
    unknown: &'a mut Vec<String>,
}

impl Walker<'_> {
    fn walk(&mut self, node: &Value, depth: usize, row: Row) -> Result<(), String> {
        let Some(level) = self.levels.get(depth) else {
            let value =
                leaf_value(node).ok_or_else(|| format!("expected a count, found {node}"))?;
            self.rows.push(Row { value, ..row });
            return Ok(());
        };
        let Value::Object(map) = node else {
            return Err(format!(
                "expected an object keyed by {}, found {node}",
                level.as_str()
            ));
        };
        for (key, child) in map {
            let mut next = row.clone();
            match level {
                GroupBy::TweetId => {
                    next.tweet = Some(key.parse().map_err(|e| format!("bad Tweet ID key: {e}"))?);
                }
                GroupBy::EngagementType => match key.parse() {
                    Ok(m) => next.metric = Some(m),
                    Err(_) => {
                        self.unknown.push(key.clone());
                        continue;
                    }
                },
                GroupBy::Day => {
                    let day = NaiveDate::parse_from_str(key, "%Y-%m-%d")
                        .map_err(|_| format!("bad day key {key:?} (expected YYYY-MM-DD)"))?;
                    next.day = Some(day.and_time(NaiveTime::MIN).and_utc().timestamp());
                }
                GroupBy::Hour => {
                    let hour = key.parse().ok().filter(|h| key.len() == 2 && *h < 24);
                    next.hour = Some(
                        hour.ok_or_else(|| format!("bad hour key {key:?} (expected 00 to 23)"))?,
                    );
                }
            }
            self.walk(child, depth + 1, next)?;
        }
        Ok(())
    }
}

/// Counts are decimal strings; a few documented examples show bare numbers, so both are read.
fn leaf_value(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn id_list(top: &Map<String, Value>, key: &str) -> Vec<TweetId> {
    let Some(Value::Array(items)) = top.get(key) else {
        return Vec::new();
    };
    let mut ids: Vec<TweetId> = items
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().and_then(TweetId::new),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The `errors` and `unavailable_tweet_ids` of an error answer; `None` when the body is not a
/// JSON object (a proxy's HTML page, say).
pub fn error_info(body: &[u8]) -> Option<(Vec<String>, Vec<TweetId>)> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(top)) => Some((
            string_list(&top, "errors"),
            id_list(&top, "unavailable_tweet_ids"),
        )),
        _ => None,
    }
}

/// Error strings; the api host's `{"code":…,"message":…}` objects are read for their message.
fn string_list(top: &Map<String, Value>, key: &str) -> Vec<String> {
    match top.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| v.to_string(), str::to_string),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BY_TWEET: &[GroupBy] = &[GroupBy::TweetId, GroupBy::EngagementType];

    fn id(s: &str) -> TweetId {
        s.parse().unwrap()
    }

    /// The documented bearer `/totals` answer (engagement-api.md §4.4).
    #[test]
    fn documented_bearer_totals() {
        let body = br#"{
          "perTweetMetricsUnowned": {
            "1021817816134156288": {"favorites": "530", "quote_tweets": "79", "replies": "147", "retweets": "323", "video_views": "0"},
            "1067094924124872705": {"favorites": "1360", "quote_tweets": "29", "replies": "56", "retweets": "178", "video_views": "5754512"},
            "1070059276213702656": {"favorites": "69", "quote_tweets": "5", "replies": "7", "retweets": "26", "video_views": "0"}
          }
        }"#;
        let p = parse(body, &[("perTweetMetricsUnowned", BY_TWEET)]).unwrap();
        let rows = &p.groupings["perTweetMetricsUnowned"];
        assert_eq!(rows.len(), 15);
        let vv = rows
            .iter()
            .find(|r| {
                r.tweet == Some(id("1067094924124872705")) && r.metric == Some(Metric::VideoViews)
            })
            .unwrap();
        assert_eq!(vv.value, 5_754_512);
        assert_eq!(
            rows.iter().map(|r| r.value).sum::<i64>(),
            530 + 79 + 147 + 323 + 1360 + 29 + 56 + 178 + 5_754_512 + 69 + 5 + 7 + 26
        );
    }

    /// The documented "unavailable" example, whose `retweets` is a bare number (doc typo), and
    /// the video-views example with its unsupported list.
    #[test]
    fn documented_partial_answers() {
        let body = br#"{"start":"2015-11-17T22:00:00Z","end":"2015-11-19T02:00:00Z",
          "unavailable_tweet_ids":["323456789"],
          "group1":{"423456789":{"favorites":"67","replies":"8","retweets":26,"quote_tweets":"2"}}}"#;
        let p = parse(body, &[("group1", BY_TWEET)]).unwrap();
        assert_eq!(p.unavailable, vec![id("323456789")]);
        assert_eq!(p.groupings["group1"].len(), 4);
        assert!(
            p.groupings["group1"]
                .iter()
                .any(|r| r.metric == Some(Metric::Retweets) && r.value == 26)
        );
        assert_eq!(p.start.as_deref(), Some("2015-11-17T22:00:00Z"));

        let body = br#"{"unsupported_for_video_views_tweet_ids": ["479311209565413376", "477139122520219648"],
          "grouping name": {"479311209565413376": {"favorites": "69", "impressions": "1692", "retweets": "142", "video_views": "0"}}}"#;
        let p = parse(body, &[("grouping name", BY_TWEET)]).unwrap();
        assert_eq!(p.unsupported_video_views.len(), 2);
    }

    /// The documented `/28hr` answer: 29 dense hourly buckets, keys day then hour.
    #[test]
    fn documented_hourly_series() {
        let body = br#"{"start": "2015-09-14T17:00:00Z", "end": "2015-09-15T22:00:00Z",
          "hourly-time-series": {"123456789": {"impressions": {
            "2015-09-14": {"17": "551", "18": "412", "19": "371", "20": "280", "21": "100", "22": "19", "23": "6"},
            "2015-09-15": {"00": "5", "01": "2", "02": "7", "03": "3", "04": "1", "05": "0", "06": "0", "07": "0", "08": "0", "09": "0", "10": "0",
                           "11": "0", "12": "0", "13": "0", "14": "0", "15": "0", "16": "0", "17": "0", "18": "0", "19": "0", "20": "0", "21": "0"}}}}}"#;
        let levels = [
            GroupBy::TweetId,
            GroupBy::EngagementType,
            GroupBy::Day,
            GroupBy::Hour,
        ];
        let p = parse(body, &[("hourly-time-series", &levels)]).unwrap();
        let rows = &p.groupings["hourly-time-series"];
        assert_eq!(rows.len(), 29);
        let first = rows.iter().find(|r| r.value == 551).unwrap();
        assert_eq!(first.bucket().unwrap().to_string(), "2015-09-14T17:00:00Z");
        assert_eq!(rows.iter().map(|r| r.value).sum::<i64>(), 1757);
    }

    /// Type-first nesting and grand totals parse to the same kind of rows.
    #[test]
    fn other_nesting_orders() {
        let body = br#"{"a":{"favorites":{"11":"3","12":"4"}},"b":{"favorites":"7"}}"#;
        let p = parse(
            body,
            &[
                ("a", &[GroupBy::EngagementType, GroupBy::TweetId]),
                ("b", &[GroupBy::EngagementType]),
            ],
        )
        .unwrap();
        assert_eq!(p.groupings["a"].iter().map(|r| r.value).sum::<i64>(), 7);
        assert_eq!(
            p.groupings["b"],
            vec![Row {
                tweet: None,
                metric: Some(Metric::Favorites),
                day: None,
                hour: None,
                value: 7
            }]
        );
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(matches!(
            parse(br#"{"g": {"1": {"favorites": "1"#, &[("g", BY_TWEET)]),
            Err(ParseError::Json(_))
        ));
        assert_eq!(
            parse(b"[]", &[("g", BY_TWEET)]),
            Err(ParseError::NotAnObject)
        );
        assert_eq!(
            parse(b"{}", &[("g", BY_TWEET)]),
            Err(ParseError::MissingGrouping("g".into()))
        );
        assert!(matches!(
            parse(br#"{"g": {"x": {}}}"#, &[("g", BY_TWEET)]),
            Err(ParseError::Shape { .. })
        ));
        assert!(matches!(
            parse(
                br#"{"g": {"1": {"favorites": "many"}}}"#,
                &[("g", BY_TWEET)]
            ),
            Err(ParseError::Shape { .. })
        ));
        let p = parse(
            br#"{"g": {"1": {"media_clicks": "3", "favorites": "-2"}}}"#,
            &[("g", BY_TWEET)],
        )
        .unwrap();
        assert_eq!(p.unknown_metrics, vec!["media_clicks".to_string()]);
        assert_eq!(p.groupings["g"][0].value, -2);
    }
}
