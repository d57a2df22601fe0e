//! Engagement API response bodies → typed rows. Works for any grouping shape (the nesting follows
//! the `group_by` order) and turns the partial-success keys into typed outcomes. No I/O.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::domain::{HOUR_SECS, Hour, Metric, TweetId};

mod fast;

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

/// The largest count taken from an answer, in either sign. The most-viewed Tweets have some
/// 10^10 impressions; a value past 10^12 is not a measurement, and with it no sum of stored
/// values can come near `i64::MAX` (it would take 9 million such values).
pub const MAX_COUNT: i64 = 1_000_000_000_000;

/// The most values one grouping may hold. The largest legal answer has 25 Tweets × 17 metrics ×
/// 673 hours = 286,025; past this an answer is not one the API gives, and its rows would only
/// cost memory.
pub const MAX_LEAVES: usize = 400_000;

/// What an answer said about one (Tweet, metric) pair: how many leaves it gave and, for time
/// series, the first and last hour bucket. Keys are distinct at every level (a repeated key is
/// a shape error), so the leaves are distinct buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub leaves: u32,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Span {
    fn add(&mut self, bucket: Option<i64>) {
        self.leaves += 1;
        bucket.into_iter().for_each(|b| self.widen(b));
    }

    fn merge(&mut self, other: Span) {
        self.leaves += other.leaves;
        [other.first, other.last]
            .into_iter()
            .flatten()
            .for_each(|b| self.widen(b));
    }

    fn widen(&mut self, bucket: i64) {
        self.first = Some(self.first.map_or(bucket, |f| f.min(bucket)));
        self.last = Some(self.last.map_or(bucket, |l| l.max(bucket)));
    }

    /// Whether the pair has every hour bucket of `[start, end)` (hour-aligned seconds): the
    /// span reaches both ends and has as many distinct buckets as hours from first to last.
    pub fn covers(&self, start: i64, end: i64) -> bool {
        match (self.first, self.last) {
            (Some(first), Some(last)) => {
                first <= start
                    && last >= end - HOUR_SECS
                    && (last - first) / HOUR_SECS + 1 == i64::from(self.leaves)
            }
            _ => false,
        }
    }
}

/// A parsed response body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Rows per grouping name, in no particular order.
    pub groupings: BTreeMap<String, Vec<Row>>,
    /// Per grouping keyed by Tweet and type: every pair the answer named, zeros included (a
    /// pair it does not name is not a zero: it is unanswered).
    pub named: BTreeMap<String, HashMap<(TweetId, Metric), Span>>,
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
    /// The body ends mid-value: cut short on the way (worth asking again).
    #[error("response ends before its JSON does (truncated): {0}")]
    Truncated(String),
    /// Not JSON: asking again gets the same answer.
    #[error("response is not valid JSON: {0}")]
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
/// Counts may be negative here (a series bucket or window sum can be: un-likes within it,
/// engagement-api.md §4.2); see [`parse_lifetime`] for `/totals`.
pub fn parse(body: &[u8], groupings: &[(&str, &[GroupBy])]) -> Result<Parsed, ParseError> {
    parse_with(body, groupings, false, -MAX_COUNT)
}

/// As [`parse`], for `/totals`: lifetime counts, which are never negative (one that is makes the
/// answer a shape error).
pub fn parse_lifetime(body: &[u8], groupings: &[(&str, &[GroupBy])]) -> Result<Parsed, ParseError> {
    parse_with(body, groupings, false, 0)
}

/// As [`parse`], but hourly buckets (rows of a grouping by `engagement.hour`) that are zero are
/// left out. Series answers are dense and mostly zeros (96% on the demo world), and a zero
/// bucket is never stored, so a `/historical` answer of 285,600 buckets keeps ~12,000 rows.
pub fn parse_nonzero_buckets(
    body: &[u8],
    groupings: &[(&str, &[GroupBy])],
) -> Result<Parsed, ParseError> {
    parse_with(body, groupings, true, -MAX_COUNT)
}

fn parse_with(
    body: &[u8],
    groupings: &[(&str, &[GroupBy])],
    skip_zero_buckets: bool,
    min_count: i64,
) -> Result<Parsed, ParseError> {
    // The usual answer is read by the reader for its shape; anything it does not take, the
    // generic one reads (and every error is the generic reader's).
    let mut state = Top::new(groupings, skip_zero_buckets, min_count);
    if fast::read(body, &mut state).is_some() {
        return finish(state, groupings);
    }
    parse_generic(body, groupings, skip_zero_buckets, min_count)
}

/// [`parse_with`] by serde_json alone, for any body.
fn parse_generic(
    body: &[u8],
    groupings: &[(&str, &[GroupBy])],
    skip_zero_buckets: bool,
    min_count: i64,
) -> Result<Parsed, ParseError> {
    let mut state = Top::new(groupings, skip_zero_buckets, min_count);
    let mut de = serde_json::Deserializer::from_slice(body);
    let streamed = TopSeed(&mut state)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Err(e) = streamed {
        // Truncated or invalid JSON wins over what was found on the way.
        if let Err(invalid) = serde_json::from_slice::<IgnoredAny>(body) {
            return Err(if invalid.is_eof() {
                ParseError::Truncated(invalid.to_string())
            } else {
                ParseError::Json(invalid.to_string())
            });
        }
        if !state.object {
            return Err(ParseError::NotAnObject);
        }
        let grouping = state
            .current
            .map_or_else(String::new, |i| groupings[i].0.to_string());
        return Err(ParseError::Shape {
            grouping: clean_text(&grouping, TEXT_MAX),
            detail: clean_text(&state.shape.unwrap_or_else(|| e.to_string()), TEXT_MAX),
        });
    }
    finish(state, groupings)
}

/// What a whole read collected, as a [`Parsed`].
fn finish(state: Top<'_>, groupings: &[(&str, &[GroupBy])]) -> Result<Parsed, ParseError> {
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
    for ((name, levels), (rows, named)) in groupings
        .iter()
        .zip(state.rows.into_iter().zip(state.named))
    {
        let rows = match rows {
            Some(rows) => rows,
            // An answer where every Tweet was unavailable may leave the grouping out.
            None if !out.unavailable.is_empty() => Vec::new(),
            None => return Err(ParseError::MissingGrouping(name.to_string())),
        };
        out.groupings.insert(name.to_string(), rows);
        if levels.contains(&GroupBy::TweetId) && levels.contains(&GroupBy::EngagementType) {
            out.named.insert(name.to_string(), named);
        }
    }
    out.unknown_metrics.sort();
    out.unknown_metrics.dedup();
    Ok(out)
}

/// A count written as a decimal string (the API's way); surrounding blanks are allowed. The
/// range is checked by the caller.
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
    /// The smallest count accepted.
    min_count: i64,
    groupings: &'g [(&'g str, &'g [GroupBy])],
    /// Rows per requested grouping, `None` until found.
    rows: Vec<Option<Vec<Row>>>,
    /// Named (Tweet, metric) pairs per requested grouping.
    named: Vec<HashMap<(TweetId, Metric), Span>>,
    meta: Map<String, Value>,
    unknown: Vec<String>,
    /// The grouping being read (for error messages).
    current: Option<usize>,
    /// Why a grouping does not have the expected shape.
    shape: Option<String>,
    /// Whether the body is a JSON object.
    object: bool,
}

impl<'g> Top<'g> {
    fn new(
        groupings: &'g [(&'g str, &'g [GroupBy])],
        skip_zero_buckets: bool,
        min_count: i64,
    ) -> Self {
        Top {
            skip_zero_buckets,
            min_count,
            groupings,
            rows: groupings.iter().map(|_| None).collect(),
            named: groupings.iter().map(|_| HashMap::new()).collect(),
            meta: Map::new(),
            unknown: Vec::new(),
            current: None,
            shape: None,
            object: false,
        }
    }
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
                if top.rows[i].is_some() {
                    let detail = "the grouping appears twice".to_string();
                    top.shape = Some(detail.clone());
                    return Err(de::Error::custom(detail));
                }
                let mut rows = Vec::new();
                let mut named = HashMap::new();
                let mut day = DayCache::default();
                let levels = top.groupings[i].1;
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
                        skip_zero: top.skip_zero_buckets && levels.contains(&GroupBy::Hour),
                        min: top.min_count,
                        rows: &mut rows,
                        named: &mut named,
                        pair: None,
                        leaves: 0,
                        unknown: &mut top.unknown,
                        shape: &mut top.shape,
                        day: &mut day,
                    },
                })?;
                top.current = None;
                top.rows[i] = Some(rows);
                top.named[i] = named;
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
    /// The smallest count accepted (the largest is [`MAX_COUNT`]).
    min: i64,
    rows: &'a mut Vec<Row>,
    named: &'a mut HashMap<(TweetId, Metric), Span>,
    /// The pair whose leaves are being read (they come together in the usual nesting), kept
    /// out of `named` until the next pair starts.
    pair: Option<((TweetId, Metric), Span)>,
    /// Values read so far.
    leaves: usize,
    unknown: &'a mut Vec<String>,
    shape: &'a mut Option<String>,
    day: &'a mut DayCache,
}

impl Sink<'_> {
    /// Takes one checked count.
    fn push(&mut self, row: &Row, value: i64) {
        if let (Some(tweet), Some(metric)) = (row.tweet, row.metric) {
            let bucket = row.bucket().map(Hour::secs);
            match &mut self.pair {
                Some((key, span)) if *key == (tweet, metric) => span.add(bucket),
                current => {
                    if let Some((key, span)) = current.take() {
                        self.named.entry(key).or_default().merge(span);
                    }
                    let mut span = Span::default();
                    span.add(bucket);
                    *current = Some(((tweet, metric), span));
                }
            }
        }
        if value != 0 || !self.skip_zero {
            self.rows.push(Row { value, ..*row });
        }
    }
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        if let Some((key, span)) = self.pair.take() {
            self.named.entry(key).or_default().merge(span);
        }
    }
}

/// The keys of one JSON object seen so far, to find a repeated one: a list while they come in
/// ascending order (the usual case), a set once they do not.
#[derive(Default)]
struct Seen {
    ascending: Vec<i64>,
    set: Option<HashSet<i64>>,
}

impl Seen {
    /// Notes `key`; false when it was seen before.
    fn insert(&mut self, key: i64) -> bool {
        if let Some(set) = &mut self.set {
            return set.insert(key);
        }
        match self.ascending.last() {
            Some(&last) if key <= last => {
                let mut set: HashSet<i64> = self.ascending.drain(..).collect();
                let fresh = set.insert(key);
                self.set = Some(set);
                fresh
            }
            _ => {
                self.ascending.push(key);
                true
            }
        }
    }
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
            Some(_) if self.out.leaves == MAX_LEAVES => Err(self.fail(format!(
                "more than {MAX_LEAVES} values, more than any answer of the API holds"
            ))),
            Some(value) if (self.out.min..=MAX_COUNT).contains(&value) => {
                self.out.leaves += 1;
                self.out.push(&self.row, value);
                Ok(())
            }
            Some(_) => Err(self.fail(format!(
                "count {found} is out of range ({} to {MAX_COUNT})",
                self.out.min
            ))),
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
        match count(v) {
            Some(value) => self.leaf(Some(value), &value),
            None => {
                let shown: String = v.chars().take(40).collect();
                self.leaf(None, &Value::from(shown))
            }
        }
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.leaf(Some(v), &v)
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.leaf(Some(i64::try_from(v).unwrap_or(i64::MAX)), &v)
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
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            let mut next = self.row.clone();
            match level {
                GroupBy::TweetId => match key.parse::<TweetId>() {
                    Ok(id) => next.tweet = Some(id),
                    Err(e) => return Err(self.fail(format!("bad Tweet ID key: {e}"))),
                },
                GroupBy::EngagementType => match key.parse::<Metric>() {
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
            let id = match level {
                GroupBy::TweetId => next.tweet.map(|t| t.get() as i64),
                GroupBy::EngagementType => next.metric.map(Metric::id),
                GroupBy::Day => next.day,
                GroupBy::Hour => next.hour.map(i64::from),
            };
            if let Some(id) = id
                && !seen.insert(id)
            {
                return Err(self.fail(format!(
                    "key {key:?} appears twice under {}",
                    level.as_str()
                )));
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
/// At most [`ERRORS_MAX`] of them, each made safe by [`clean_text`].
fn string_list(top: &Map<String, Value>, key: &str) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => clean_text(s, TEXT_MAX),
        Value::Object(o) => match o.get("message").and_then(Value::as_str) {
            Some(message) => clean_text(message, TEXT_MAX),
            None => clean_text(&v.to_string(), TEXT_MAX),
        },
        other => clean_text(&other.to_string(), TEXT_MAX),
    };
    match top.get(key) {
        Some(Value::Array(items)) => {
            let mut out: Vec<String> = items.iter().take(ERRORS_MAX).map(text).collect();
            if items.len() > ERRORS_MAX {
                out.push(format!("({} more not shown)", items.len() - ERRORS_MAX));
            }
            out
        }
        Some(v @ Value::String(_)) => vec![text(v)],
        _ => Vec::new(),
    }
}

/// The longest text kept from an answer (an `errors` string, a body that is not JSON), in
/// characters: room for a refusal naming 25 Tweet IDs.
pub const TEXT_MAX: usize = 1000;

/// The most `errors` strings kept from one answer.
pub const ERRORS_MAX: usize = 10;

/// Text from the network made safe to log, print and store: control characters and the
/// invisible ones that reorder or hide text (bidirectional marks and overrides, zero-width
/// characters, line separators) escaped as `\u{…}`, and the whole cut to `max` characters
/// with a note of how much was left out.
pub fn clean_text(text: &str, max: usize) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    let mut out = String::with_capacity(text.len().min(max + 32));
    for (shown, (i, c)) in text.char_indices().enumerate() {
        if shown == max {
            let left = text[i..].chars().count();
            out.push_str(&format!("… ({left} more characters)"));
            break;
        }
        if hidden(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
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
            Err(ParseError::Truncated(_))
        ));
        assert!(matches!(
            parse(br#"{"g": {"1": {"favorites": "1"}}} x"#, &[("g", BY_TWEET)]),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse(b"<html>Bad gateway</html>", &[("g", BY_TWEET)]),
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
            br#"{"g": {"1": {"media_clicks": "3", "favorites": "2"}}}"#,
            &[("g", BY_TWEET)],
        )
        .unwrap();
        assert_eq!(p.unknown_metrics, vec!["media_clicks".to_string()]);
        assert_eq!(p.groupings["g"][0].value, 2);
    }

    /// Lifetime counts are never negative; a bucket or a window's sum may be (an un-like
    /// within it); no count goes past [`MAX_COUNT`], as a string or a JSON number.
    #[test]
    fn counts_are_checked_for_range() {
        let series = [
            GroupBy::TweetId,
            GroupBy::EngagementType,
            GroupBy::Day,
            GroupBy::Hour,
        ];
        let shape = |body: &[u8], levels: &[GroupBy]| match parse(body, &[("g", levels)]) {
            Err(ParseError::Shape { detail, .. }) => detail,
            other => panic!("{other:?}"),
        };
        let lifetime = |body: &[u8]| match parse_lifetime(body, &[("g", BY_TWEET)]) {
            Err(ParseError::Shape { detail, .. }) => detail,
            other => panic!("{other:?}"),
        };
        assert!(lifetime(br#"{"g": {"1": {"favorites": "-5"}}}"#).contains("out of range"));
        assert!(lifetime(br#"{"g": {"1": {"favorites": -5}}}"#).contains("out of range"));
        // A window's sum can be negative.
        assert_eq!(
            parse(br#"{"g": {"1": {"favorites": "-5"}}}"#, &[("g", BY_TWEET)])
                .unwrap()
                .groupings["g"][0]
                .value,
            -5
        );
        for huge in [
            &br#"{"g": {"1": {"impressions": "9223372036854775807"}}}"#[..],
            br#"{"g": {"1": {"impressions": "99999999999999999999"}}}"#,
            br#"{"g": {"1": {"impressions": 18446744073709551615}}}"#,
            br#"{"g": {"1": {"impressions": "1000000000001"}}}"#,
        ] {
            assert!(matches!(
                parse(huge, &[("g", BY_TWEET)]),
                Err(ParseError::Shape { .. })
            ));
        }
        let at_max = format!(r#"{{"g": {{"1": {{"impressions": "{MAX_COUNT}"}}}}}}"#);
        assert_eq!(
            parse(at_max.as_bytes(), &[("g", BY_TWEET)])
                .unwrap()
                .groupings["g"][0]
                .value,
            MAX_COUNT
        );
        let p = parse(
            br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "-1", "01": "2"}}}}}"#,
            &[("g", &series)],
        )
        .unwrap();
        assert_eq!(p.groupings["g"].iter().map(|r| r.value).sum::<i64>(), 1);
        assert!(
            shape(
                br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "-1000000000001"}}}}}"#,
                &series
            )
            .contains("out of range")
        );
    }

    /// A key repeated at any level makes the answer ambiguous: a shape error, not two values.
    #[test]
    fn repeated_keys_are_shape_errors() {
        let series = [
            GroupBy::TweetId,
            GroupBy::EngagementType,
            GroupBy::Day,
            GroupBy::Hour,
        ];
        for body in [
            &br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "1", "00": "2"}}}}}"#[..],
            br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "1"}, "2026-11-01": {"01": "2"}}}}}"#,
            br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "1"}}, "favorites": {"2026-11-02": {"00": "1"}}}}}"#,
            br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "1"}}}, "1": {"favorites": {"2026-11-02": {"00": "1"}}}}}"#,
            br#"{"g": {"2": {"favorites": {"2026-11-01": {"05": "1", "01": "2", "05": "0"}}}}}"#,
            br#"{"g": {}, "g": {}}"#,
        ] {
            let got = parse(body, &[("g", &series)]);
            assert!(matches!(got, Err(ParseError::Shape { .. })), "{got:?}");
        }
        // Out-of-order keys are fine when distinct.
        let p = parse(
            br#"{"g": {"2": {"favorites": {"2026-11-02": {"05": "1", "01": "2"}, "2026-11-01": {"00": "3"}}}, "1": {"favorites": {"2026-11-01": {"00": "4"}}}}}"#,
            &[("g", &series)],
        )
        .unwrap();
        assert_eq!(p.groupings["g"].len(), 4);
    }

    /// Every pair an answer names is known with its span, zeros included; the span tells a
    /// whole window from a part of one or one with a hole.
    #[test]
    fn named_pairs_and_their_spans() {
        let series = [
            GroupBy::TweetId,
            GroupBy::EngagementType,
            GroupBy::Day,
            GroupBy::Hour,
        ];
        let body = br#"{"g": {
            "1": {"favorites": {"2026-11-01": {"22": "0", "23": "0"}, "2026-11-02": {"00": "0"}},
                  "replies": {"2026-11-01": {"22": "1", "23": "0"}}},
            "2": {"favorites": {"2026-11-01": {"22": "0", "23": "5"}, "2026-11-02": {"01": "0"}}}}}"#;
        let p = parse_nonzero_buckets(body, &[("g", &series)]).unwrap();
        assert_eq!(p.groupings["g"].len(), 2, "zeros are not kept as rows");
        let named = &p.named["g"];
        assert_eq!(named.len(), 3, "but every pair is named");
        let day = NaiveDate::from_ymd_opt(2026, 11, 1)
            .unwrap()
            .and_time(NaiveTime::MIN)
            .and_utc()
            .timestamp();
        let (h22, h01) = (day + 22 * HOUR_SECS, day + 25 * HOUR_SECS);
        let whole = named[&(id("1"), Metric::Favorites)];
        assert_eq!(
            (whole.leaves, whole.first, whole.last),
            (3, Some(h22), Some(h22 + 2 * HOUR_SECS))
        );
        assert!(whole.covers(h22, h22 + 3 * HOUR_SECS));
        assert!(
            !named[&(id("1"), Metric::Replies)].covers(h22, h22 + 3 * HOUR_SECS),
            "too short"
        );
        let holed = named[&(id("2"), Metric::Favorites)];
        assert_eq!(holed.last, Some(h01));
        assert!(!holed.covers(h22, h01 + HOUR_SECS), "hour 00 is missing");
        // Totals: a pair is named by its one leaf.
        let p = parse(br#"{"t": {"1": {"favorites": "0"}}}"#, &[("t", BY_TWEET)]).unwrap();
        assert_eq!(p.named["t"][&(id("1"), Metric::Favorites)].leaves, 1);
    }

    /// Text from an answer is cut and has what would steer a terminal escaped.
    #[test]
    fn answer_text_is_cut_and_escaped() {
        let text = format!("bad\u{1b}[31m \u{202e}gnp.exe\r\n{}", "x".repeat(5000));
        let clean = clean_text(&text, 100);
        assert!(
            !clean.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{clean}"
        );
        assert!(
            clean.starts_with("bad\\u{1b}[31m \\u{202e}gnp.exe\\u{d}\\u{a}"),
            "{clean}"
        );
        assert!(clean.ends_with("(4919 more characters)"), "{clean}");
        assert_eq!(clean_text("plain", 100), "plain");
        let many: Vec<String> = (0..50).map(|i| format!("error {i}")).collect();
        let body = serde_json::json!({ "errors": many }).to_string();
        let (errors, _) = error_info(body.as_bytes()).unwrap();
        assert_eq!(errors.len(), ERRORS_MAX + 1);
        assert_eq!(errors[ERRORS_MAX], "(40 more not shown)");
    }
}
