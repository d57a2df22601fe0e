//! Engagement API response bodies → typed rows. Works for any grouping shape (the nesting follows
//! the `group_by` order) and turns the partial-success keys into typed outcomes. No I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
///
/// The body is read in one streaming pass: groupings go straight into rows, with no JSON tree in
/// between (a `/historical` answer has about 300,000 leaves), and keys are borrowed from the body.
pub fn parse(body: &[u8], groupings: &[(&str, &[GroupBy])]) -> Result<Parsed, ParseError> {
    parse_with(body, groupings, false)
}

/// As [`parse`], but hourly buckets (rows of a grouping by `engagement.hour`) that are zero are
/// left out. Series answers are dense and mostly zeros (96% on the demo world), and a zero
/// bucket is never stored, so a `/historical` answer of 285,600 buckets keeps ~12,000 rows.
pub fn parse_nonzero_buckets(
    body: &[u8],
    groupings: &[(&str, &[GroupBy])],
) -> Result<Parsed, ParseError> {
    parse_with(body, groupings, true)
}

fn parse_with(
    body: &[u8],
    groupings: &[(&str, &[GroupBy])],
    skip_zero_buckets: bool,
) -> Result<Parsed, ParseError> {
    let mut state = Top {
        skip_zero_buckets,
        groupings,
        rows: groupings.iter().map(|_| None).collect(),
        meta: Map::new(),
        unknown: Vec::new(),
        current: None,
        shape: None,
        object: false,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let streamed = TopSeed(&mut state)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Err(e) = streamed {
        // Truncated or invalid JSON wins over what was found on the way: it is retried.
        if let Err(invalid) = serde_json::from_slice::<IgnoredAny>(body) {
            return Err(ParseError::Json(invalid.to_string()));
        }
        if !state.object {
            return Err(ParseError::NotAnObject);
        }
        let grouping = state
            .current
            .map_or_else(String::new, |i| groupings[i].0.to_string());
        return Err(ParseError::Shape {
            grouping,
            detail: state.shape.unwrap_or_else(|| e.to_string()),
        });
    }
    let top = state.meta;
    let mut out = Parsed {
        unavailable: id_list(&top, "unavailable_tweet_ids"),
        unsupported_impressions: id_list(&top, "unsupported_for_impressions_engagements_tweet_ids"),
        unsupported_video_views: id_list(&top, "unsupported_for_video_views_tweet_ids"),
        errors: string_list(&top, "errors"),
        start: top.get("start").and_then(Value::as_str).map(str::to_string),
        end: top.get("end").and_then(Value::as_str).map(str::to_string),
        unknown_metrics: state.unknown,
        ..Parsed::default()
    };
    for ((name, _), rows) in groupings.iter().zip(state.rows) {
        let rows = match rows {
            Some(rows) => rows,
            // An answer where every Tweet was unavailable may leave the grouping out.
            None if !out.unavailable.is_empty() => Vec::new(),
            None => return Err(ParseError::MissingGrouping(name.to_string())),
        };
        out.groupings.insert(name.to_string(), rows);
    }
    out.unknown_metrics.sort();
    out.unknown_metrics.dedup();
    Ok(out)
}

/// A count written as a decimal string (the API's way); surrounding blanks are allowed.
fn count(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // The common case, a few plain digits, without the general parser.
    if !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit) {
        return Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')));
    }
    s.trim().parse().ok()
}

/// The top-level keys kept (besides the groupings); anything else is skipped unread.
const META_KEYS: &[&str] = &[
    "unavailable_tweet_ids",
    "unsupported_for_impressions_engagements_tweet_ids",
    "unsupported_for_video_views_tweet_ids",
    "errors",
    "start",
    "end",
];

/// What the streaming pass collects.
struct Top<'g> {
    skip_zero_buckets: bool,
    groupings: &'g [(&'g str, &'g [GroupBy])],
    /// Rows per requested grouping, `None` until found.
    rows: Vec<Option<Vec<Row>>>,
    meta: Map<String, Value>,
    unknown: Vec<String>,
    /// The grouping being read (for error messages).
    current: Option<usize>,
    /// Why a grouping does not have the expected shape.
    shape: Option<String>,
    /// Whether the body is a JSON object.
    object: bool,
}

struct TopSeed<'a, 'g>(&'a mut Top<'g>);

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let top = self.0;
        top.object = true;
        while let Some(Key(key)) = map.next_key()? {
            if let Some(i) = top.groupings.iter().position(|(n, _)| *n == key) {
                top.current = Some(i);
                let mut rows = Vec::new();
                let mut day = DayCache::default();
                map.next_value_seed(Level {
                    levels: top.groupings[i].1,
                    depth: 0,
                    row: Row {
                        tweet: None,
                        metric: None,
                        day: None,
                        hour: None,
                        value: 0,
                    },
                    out: &mut Sink {
                        skip_zero: top.skip_zero_buckets
                            && top.groupings[i].1.contains(&GroupBy::Hour),
                        rows: &mut rows,
                        unknown: &mut top.unknown,
                        shape: &mut top.shape,
                        day: &mut day,
                    },
                })?;
                top.current = None;
                top.rows[i] = Some(rows);
            } else if META_KEYS.contains(&key.as_ref()) {
                let value: Value = map.next_value()?;
                top.meta.insert(key.into_owned(), value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A map key, borrowed from the body unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Where the rows of one grouping go.
struct Sink<'a> {
    /// Leave zero counts out (hourly buckets of [`parse_nonzero_buckets`]).
    skip_zero: bool,
    rows: &'a mut Vec<Row>,
    unknown: &'a mut Vec<String>,
    shape: &'a mut Option<String>,
    day: &'a mut DayCache,
}

/// The last day key read and its Unix seconds: consecutive buckets share their day.
#[derive(Default)]
struct DayCache {
    key: String,
    secs: i64,
}

impl DayCache {
    fn secs(&mut self, key: &str) -> Option<i64> {
        if self.key != key {
            let day = NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()?;
            self.secs = day.and_time(NaiveTime::MIN).and_utc().timestamp();
            key.clone_into(&mut self.key);
        }
        Some(self.secs)
    }
}

/// One level of a grouping: an object keyed by `levels[depth]`, or a count below the last level.
struct Level<'a, 'b> {
    levels: &'a [GroupBy],
    depth: usize,
    row: Row,
    out: &'a mut Sink<'b>,
}

impl Level<'_, '_> {
    fn fail<E: de::Error>(&mut self, detail: String) -> E {
        let e = E::custom(&detail);
        *self.out.shape = Some(detail);
        e
    }

    fn leaf<E: de::Error>(
        &mut self,
        value: Option<i64>,
        found: &dyn fmt::Display,
    ) -> Result<(), E> {
        if self.depth < self.levels.len() {
            let level = self.levels[self.depth].as_str();
            return Err(self.fail(format!(
                "expected an object keyed by {level}, found {found}"
            )));
        }
        match value {
            Some(value) => {
                if value != 0 || !self.out.skip_zero {
                    self.out.rows.push(Row { value, ..self.row });
                }
                Ok(())
            }
            None => Err(self.fail(format!("expected a count, found {found}"))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.levels.get(self.depth) {
            Some(level) => write!(f, "an object keyed by {}", level.as_str()),
            None => f.write_str("a count"),
        }
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        if self.depth == self.levels.len()
            && let Some(value) = count(v)
        {
            if value != 0 || !self.out.skip_zero {
                self.out.rows.push(Row { value, ..self.row });
            }
            return Ok(());
        }
        self.leaf(None, &Value::from(v))
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.leaf(Some(v), &v)
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.leaf(i64::try_from(v).ok(), &v)
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.leaf(None, &v)
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.leaf(None, &v)
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.leaf(None, &"null")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, _: A) -> Result<(), A::Error> {
        self.leaf(None, &"an array")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let Some(&level) = self.levels.get(self.depth) else {
            return Err(self.fail("expected a count, found an object".to_string()));
        };
        while let Some(Key(key)) = map.next_key()? {
            let mut next = self.row.clone();
            match level {
                GroupBy::TweetId => match key.parse() {
                    Ok(id) => next.tweet = Some(id),
                    Err(e) => return Err(self.fail(format!("bad Tweet ID key: {e}"))),
                },
                GroupBy::EngagementType => match key.parse() {
                    Ok(m) => next.metric = Some(m),
                    Err(_) => {
                        self.out.unknown.push(key.into_owned());
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                },
                GroupBy::Day => match self.out.day.secs(&key) {
                    Some(secs) => next.day = Some(secs),
                    None => {
                        return Err(self.fail(format!("bad day key {key:?} (expected YYYY-MM-DD)")));
                    }
                },
                GroupBy::Hour => {
                    let b = key.as_bytes();
                    let hour = (b.len() == 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit())
                        .then(|| (b[0] - b'0') * 10 + (b[1] - b'0'))
                        .filter(|h| *h < 24);
                    match hour {
                        Some(h) => next.hour = Some(h),
                        None => {
                            return Err(
                                self.fail(format!("bad hour key {key:?} (expected 00 to 23)"))
                            );
                        }
                    }
                }
            }
            map.next_value_seed(Level {
                levels: self.levels,
                depth: self.depth + 1,
                row: next,
                out: &mut *self.out,
            })?;
        }
        Ok(())
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

    /// The sparse variant keeps the non-zero hourly buckets only, and every total.
    #[test]
    fn zero_buckets_can_be_left_out() {
        let body =
            br#"{"h": {"1": {"favorites": {"2015-09-14": {"17": "0", "18": "3", "19": "0"}}}},
          "t": {"1": {"favorites": "0"}}}"#;
        let levels = [
            GroupBy::TweetId,
            GroupBy::EngagementType,
            GroupBy::Day,
            GroupBy::Hour,
        ];
        let groupings: &[(&str, &[GroupBy])] = &[("h", &levels), ("t", BY_TWEET)];
        let dense = parse(body, groupings).unwrap();
        assert_eq!(dense.groupings["h"].len(), 3);
        let sparse = parse_nonzero_buckets(body, groupings).unwrap();
        assert_eq!(sparse.groupings["h"].len(), 1);
        assert_eq!(sparse.groupings["h"][0].value, 3);
        assert_eq!(sparse.groupings["t"], dense.groupings["t"]);
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
