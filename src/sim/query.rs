//! Reads and validates the JSON body of an insights request into a typed [`Query`]
//! (engagement-api §2, §4.1, §12.3). Says nothing about who may read what (`rules` does).
//!
//! Where X does not document the status or text of a validation error (Q6), the simulator answers
//! 400 with the texts of [`QueryError`], a simulator choice.

use std::fmt;

use serde_json::Value;

use crate::domain::{Endpoint, Metric, TweetId};

use super::contract;
use super::realism::Realism;

pub use contract::MAX_GROUPINGS;

/// One `group_by` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKey {
    TweetId,
    Type,
    Day,
    Hour,
}

impl GroupKey {
    const ALL: [GroupKey; 4] = [
        GroupKey::TweetId,
        GroupKey::Type,
        GroupKey::Day,
        GroupKey::Hour,
    ];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKey::TweetId => "tweet.id",
            GroupKey::Type => "engagement.type",
            GroupKey::Day => "engagement.day",
            GroupKey::Hour => "engagement.hour",
        }
    }

    fn is_time(self) -> bool {
        matches!(self, GroupKey::Day | GroupKey::Hour)
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The only two 4-item `group_by` orders the API accepts (REF).
const FOUR_ITEM_ORDERS: [[GroupKey; 4]; 2] = [
    [
        GroupKey::TweetId,
        GroupKey::Type,
        GroupKey::Day,
        GroupKey::Hour,
    ],
    [
        GroupKey::Type,
        GroupKey::TweetId,
        GroupKey::Day,
        GroupKey::Hour,
    ],
];

/// A named grouping; the name comes back verbatim as a top-level response key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub name: String,
    pub keys: Vec<GroupKey>,
}

/// A validated request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Requested IDs, duplicates removed, first occurrence kept.
    pub ids: Vec<TweetId>,
    /// Requested types, duplicates removed.
    pub metrics: Vec<Metric>,
    pub groupings: Vec<Grouping>,
    /// `start`/`end` as sent (`/historical` reads them; the others ignore them).
    pub start: Option<String>,
    pub end: Option<String>,
}

/// A 400 answer to a bad body. Texts are simulator choices except `TimeGroupings` (RUBY, §4.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("Request body is empty: expected a JSON object")]
    Empty,
    #[error("Request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("Request body must be a JSON object")]
    NotObject,
    #[error("Unknown field in request body: {0}")]
    UnknownField(String),
    #[error("Missing required field: {0}")]
    Missing(&'static str),
    #[error("{0} must be a non-empty array")]
    NotNonEmptyArray(&'static str),
    #[error("Invalid Tweet ID {0}: Tweet IDs must be strings of digits")]
    BadTweetId(String),
    /// The refusal under `lenient_input`, where integers are accepted too.
    #[error(
        "Invalid Tweet ID {0}: Tweet IDs must be strings of digits or positive integers below 2^63"
    )]
    BadLenientTweetId(String),
    #[error("Too many Tweet IDs: {got} (at most {max} per request)")]
    TooManyIds { got: usize, max: usize },
    #[error("Invalid engagement type {0}: engagement types must be strings")]
    BadTypeValue(String),
    #[error("Unknown engagement type: {0}")]
    UnknownType(String),
    #[error("Engagement type {metric} is not supported by /{endpoint}")]
    TypeNotSupported { metric: Metric, endpoint: Endpoint },
    #[error("groupings must be a non-empty object")]
    GroupingsNotObject,
    #[error("Too many groupings: {0} (at most 3 per request)")]
    TooManyGroupings(usize),
    #[error("Grouping {0:?}: group_by must be a non-empty array of strings")]
    BadGroupBy(String),
    #[error("Grouping {0:?}: unknown group_by value {1}")]
    UnknownGroupKey(String, String),
    #[error("Grouping {0:?}: {1} appears twice in group_by")]
    DuplicateGroupKey(String, GroupKey),
    #[error(
        "One or more of the groupBys you have specified are not supported: ({0}). Please adjust your request and try again."
    )]
    TimeGroupings(String),
    #[error(
        "Grouping {0:?}: a 4-item group_by must be [tweet.id, engagement.type, engagement.day, engagement.hour] \
         or [engagement.type, tweet.id, engagement.day, engagement.hour]"
    )]
    FourItemOrder(String),
    #[error("Only one grouping with 4 group_by items is allowed per request")]
    TwoFourItemGroupings,
    // Q3: the API's behaviour is unknown; the simulator refuses rather than invent a sum.
    #[error("Grouping {0:?}: group_by must include engagement.type")]
    NoTypeKey(String),
    #[error("{field} must be a string such as \"2015-08-01\" or \"2015-08-01T17:00:00Z\"")]
    BadTimeValue { field: &'static str },
    #[error(
        "Content-Type is missing: send Content-Type: application/json with a JSON request body"
    )]
    NoContentType,
    #[error(
        "Content-Type {0:?} is not supported: send Content-Type: application/json with a JSON request body"
    )]
    WrongContentType(String),
}

/// Checks the request's `Content-Type` when the world requires it (`require_content_type`): the
/// docs say to send `application/json` (§1 [D]) but not what happens otherwise (Q6), so the
/// status (400) and the texts are simulator choices. Parameters such as `; charset=utf-8` are
/// allowed and the media type compares case-insensitively, as HTTP media types do (RFC 9110 §8.3.1).
pub fn check_content_type(content_type: Option<&str>) -> Result<(), QueryError> {
    let value = content_type.ok_or(QueryError::NoContentType)?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(QueryError::WrongContentType(value.to_string()))
    }
}

/// Parses and validates `body` for `endpoint`; `realism.lenient_input` admits integer IDs.
pub fn parse(endpoint: Endpoint, body: &[u8], realism: &Realism) -> Result<Query, QueryError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(QueryError::Empty);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| QueryError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(QueryError::NotObject);
    };
    if let Some(k) = obj.keys().find(|k| {
        !["tweet_ids", "engagement_types", "groupings", "start", "end"].contains(&k.as_str())
    }) {
        return Err(QueryError::UnknownField(k.clone()));
    }

    let ids = non_empty_array(&obj, "tweet_ids")?;
    let mut tweet_ids: Vec<TweetId> = Vec::new();
    for v in ids {
        let id = tweet_id(v, realism.lenient_input)?;
        if !tweet_ids.contains(&id) {
            tweet_ids.push(id);
        }
    }
    if tweet_ids.len() > contract::max_ids(endpoint) {
        return Err(QueryError::TooManyIds {
            got: tweet_ids.len(),
            max: contract::max_ids(endpoint),
        });
    }

    let mut metrics: Vec<Metric> = Vec::new();
    for v in non_empty_array(&obj, "engagement_types")? {
        let name = v
            .as_str()
            .ok_or_else(|| QueryError::BadTypeValue(v.to_string()))?;
        let metric: Metric = name
            .parse()
            .map_err(|_| QueryError::UnknownType(name.to_string()))?;
        if !contract::accepts(endpoint, metric) {
            return Err(QueryError::TypeNotSupported { metric, endpoint });
        }
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }

    let groupings = parse_groupings(
        endpoint,
        obj.get("groupings")
            .ok_or(QueryError::Missing("groupings"))?,
    )?;
    let time = |field: &'static str| match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(QueryError::BadTimeValue { field }),
    };
    Ok(Query {
        ids: tweet_ids,
        metrics,
        groupings,
        start: time("start")?,
        end: time("end")?,
    })
}

/// One `tweet_ids` item. Strings only by default: integers above 2^53 lose precision in many
/// parsers, so the docs ask for strings (§2.2 [D], Q14). Leniently also JSON integers, as RUBY
/// and the GETSTARTED sample send them (§2.2 [C]); serde_json reads an integer exactly up to
/// u64::MAX (a larger one becomes a float and is refused), and zero or one above 2^63 − 1 is no
/// Tweet ID.
fn tweet_id(v: &Value, lenient: bool) -> Result<TweetId, QueryError> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) if lenient => n.as_u64().and_then(TweetId::new),
        _ => None,
    }
    .ok_or_else(|| {
        if lenient {
            QueryError::BadLenientTweetId(v.to_string())
        } else {
            QueryError::BadTweetId(v.to_string())
        }
    })
}

fn non_empty_array<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<&'a Vec<Value>, QueryError> {
    match obj.get(field) {
        None => Err(QueryError::Missing(field)),
        Some(Value::Array(a)) if !a.is_empty() => Ok(a),
        Some(_) => Err(QueryError::NotNonEmptyArray(field)),
    }
}

fn parse_groupings(endpoint: Endpoint, value: &Value) -> Result<Vec<Grouping>, QueryError> {
    let obj = value
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or(QueryError::GroupingsNotObject)?;
    if obj.len() > MAX_GROUPINGS {
        return Err(QueryError::TooManyGroupings(obj.len()));
    }
    let mut groupings = Vec::new();
    let mut refused_time_keys: Vec<GroupKey> = Vec::new();
    for (name, spec) in obj {
        let bad = || QueryError::BadGroupBy(name.clone());
        let list = spec
            .get("group_by")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(bad)?;
        let mut keys = Vec::new();
        for v in list {
            let s = v.as_str().ok_or_else(bad)?;
            let key = GroupKey::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .ok_or_else(|| QueryError::UnknownGroupKey(name.clone(), s.to_string()))?;
            if keys.contains(&key) {
                return Err(QueryError::DuplicateGroupKey(name.clone(), key));
            }
            keys.push(key);
        }
        refused_time_keys.extend(
            keys.iter()
                .filter(|k| k.is_time() && !contract::allows_time_groupings(endpoint)),
        );
        groupings.push(Grouping {
            name: name.clone(),
            keys,
        });
    }
    if !refused_time_keys.is_empty() {
        let mut names: Vec<&str> = refused_time_keys.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        return Err(QueryError::TimeGroupings(names.join(", ")));
    }
    for g in &groupings {
        if g.keys.len() == 4 && !FOUR_ITEM_ORDERS.iter().any(|o| o[..] == g.keys[..]) {
            return Err(QueryError::FourItemOrder(g.name.clone()));
        }
        if !g.keys.contains(&GroupKey::Type) {
            return Err(QueryError::NoTypeKey(g.name.clone()));
        }
    }
    if groupings.iter().filter(|g| g.keys.len() == 4).count() > 1 {
        return Err(QueryError::TwoFourItemGroupings);
    }
    Ok(groupings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The tidy simulator's parse (every knob off).
    fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Query, QueryError> {
        super::parse(endpoint, body, &Realism::TIDY)
    }

    const LENIENT: Realism = Realism {
        lenient_input: true,
        ..Realism::TIDY
    };

    fn body(ids: Value, types: Value, groupings: Value) -> Vec<u8> {
        json!({"tweet_ids": ids, "engagement_types": types, "groupings": groupings})
            .to_string()
            .into_bytes()
    }

    fn per_tweet() -> Value {
        json!({"g": {"group_by": ["tweet.id", "engagement.type"]}})
    }

    #[test]
    fn documented_example_parses_and_dedups() {
        let b = body(
            json!(["20", "10", "20"]),
            json!(["favorites", "impressions", "favorites"]),
            per_tweet(),
        );
        let q = parse(Endpoint::Totals, &b).unwrap();
        assert_eq!(q.ids.iter().map(|i| i.get()).collect::<Vec<_>>(), [20, 10]);
        assert_eq!(q.metrics, [Metric::Favorites, Metric::Impressions]);
        assert_eq!(q.groupings[0].keys, [GroupKey::TweetId, GroupKey::Type]);
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(parse(Endpoint::Totals, b" "), Err(QueryError::Empty));
        assert!(matches!(
            parse(Endpoint::Totals, b"{"),
            Err(QueryError::NotJson(_))
        ));
        assert_eq!(parse(Endpoint::Totals, b"[]"), Err(QueryError::NotObject));
        assert_eq!(
            parse(Endpoint::Totals, b"{}"),
            Err(QueryError::Missing("tweet_ids"))
        );
        let b = body(json!([]), json!(["favorites"]), per_tweet());
        assert_eq!(
            parse(Endpoint::Totals, &b),
            Err(QueryError::NotNonEmptyArray("tweet_ids"))
        );
        let b = body(json!([12]), json!(["favorites"]), per_tweet());
        assert_eq!(
            parse(Endpoint::Totals, &b),
            Err(QueryError::BadTweetId("12".into()))
        );
    }

    #[test]
    fn id_limits_follow_the_endpoint() {
        let ids: Vec<String> = (1..=26).map(|i| i.to_string()).collect();
        let b = body(json!(ids), json!(["favorites"]), per_tweet());
        assert!(parse(Endpoint::Totals, &b).is_ok());
        let e = parse(Endpoint::Hour28, &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Too many Tweet IDs: 26 (at most 25 per request)"
        );
    }

    #[test]
    fn type_errors() {
        let b = body(json!(["1"]), json!(["media_clicks"]), per_tweet());
        assert_eq!(
            parse(Endpoint::Hour28, &b),
            Err(QueryError::UnknownType("media_clicks".into()))
        );
        let b = body(json!(["1"]), json!(["url_clicks"]), per_tweet());
        assert_eq!(
            parse(Endpoint::Totals, &b).unwrap_err().to_string(),
            "Engagement type url_clicks is not supported by /totals"
        );
        let b = body(json!(["1"]), json!(["quote_tweets"]), per_tweet());
        assert!(parse(Endpoint::Historical, &b).is_err());
    }

    #[test]
    fn grouping_rules() {
        let check = |e: Endpoint, g: Value| parse(e, &body(json!(["1"]), json!(["favorites"]), g));
        let time = json!({"a": {"group_by": ["tweet.id", "engagement.type", "engagement.hour"]}, "b": {"group_by": ["engagement.type", "engagement.day"]}});
        assert_eq!(
            check(Endpoint::Totals, time.clone())
                .unwrap_err()
                .to_string(),
            "One or more of the groupBys you have specified are not supported: (engagement.day, engagement.hour). Please adjust your request and try again."
        );
        assert!(check(Endpoint::Hour28, time).is_ok());
        let bad_order = json!({"a": {"group_by": ["engagement.day", "engagement.type", "tweet.id", "engagement.hour"]}});
        assert_eq!(
            check(Endpoint::Hour28, bad_order),
            Err(QueryError::FourItemOrder("a".into()))
        );
        let four = json!([
            "tweet.id",
            "engagement.type",
            "engagement.day",
            "engagement.hour"
        ]);
        let two = json!({"a": {"group_by": four}, "b": {"group_by": four}});
        assert_eq!(
            check(Endpoint::Hour28, two),
            Err(QueryError::TwoFourItemGroupings)
        );
        let many = json!({"a": {"group_by": ["engagement.type"]}, "b": {"group_by": ["engagement.type"]}, "c": {"group_by": ["engagement.type"]}, "d": {"group_by": ["engagement.type"]}});
        assert_eq!(
            check(Endpoint::Totals, many),
            Err(QueryError::TooManyGroupings(4))
        );
        assert_eq!(
            check(Endpoint::Totals, json!({"a": {"group_by": ["tweet.id"]}})),
            Err(QueryError::NoTypeKey("a".into()))
        );
        assert!(matches!(
            check(Endpoint::Totals, json!({"a": {"group_by": ["tweet.ids"]}})),
            Err(QueryError::UnknownGroupKey(..))
        ));
        assert_eq!(
            check(Endpoint::Totals, json!({})),
            Err(QueryError::GroupingsNotObject)
        );
    }

    #[test]
    fn integer_ids_are_refused_unless_lenient() {
        let b = body(
            json!([
                1260294888811347969_u64,
                "850006245121695744",
                1260294888811347969_u64
            ]),
            json!(["favorites"]),
            per_tweet(),
        );
        assert_eq!(
            parse(Endpoint::Totals, &b).unwrap_err().to_string(),
            "Invalid Tweet ID 1260294888811347969: Tweet IDs must be strings of digits"
        );
        let q = super::parse(Endpoint::Totals, &b, &LENIENT).unwrap();
        // Exact above 2^53, and deduplicated across the two spellings' duplicates.
        assert_eq!(
            q.ids.iter().map(|i| i.get()).collect::<Vec<_>>(),
            [1260294888811347969, 850006245121695744]
        );
    }

    #[test]
    fn lenient_integer_ids_must_be_tweet_ids() {
        for bad in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!(9_223_372_036_854_775_808_u64),
            json!(18_446_744_073_709_551_615_u64),
            json!(true),
        ] {
            let b = body(json!([bad.clone()]), json!(["favorites"]), per_tweet());
            let e = super::parse(Endpoint::Totals, &b, &LENIENT).unwrap_err();
            assert_eq!(e, QueryError::BadLenientTweetId(bad.to_string()), "{bad}");
        }
        let b = body(
            json!([u64::MAX as f64 * 2.0]),
            json!(["favorites"]),
            per_tweet(),
        );
        assert!(matches!(
            super::parse(Endpoint::Totals, &b, &LENIENT),
            Err(QueryError::BadLenientTweetId(_))
        ));
        let b = body(
            json!([9_223_372_036_854_775_807_u64]),
            json!(["favorites"]),
            per_tweet(),
        );
        assert!(super::parse(Endpoint::Totals, &b, &LENIENT).is_ok());
    }

    #[test]
    fn content_type_must_be_json_with_any_parameters() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
        ] {
            assert_eq!(check_content_type(Some(ok)), Ok(()), "{ok}");
        }
        assert_eq!(check_content_type(None), Err(QueryError::NoContentType));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonp",
            "",
        ] {
            assert_eq!(
                check_content_type(Some(bad)),
                Err(QueryError::WrongContentType(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            QueryError::WrongContentType("text/plain".into()).to_string(),
            "Content-Type \"text/plain\" is not supported: send Content-Type: application/json with a JSON request body"
        );
    }
}
