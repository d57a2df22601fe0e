//! Small named types shared by every stage: Tweet IDs, handles, metrics, endpoints and aligned
//! UTC hours. Parsing happens here, once; the rest of the crate trusts these types. No I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch at which Twitter's Snowflake clock starts (2010-11-04).
pub const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

/// Seconds in one hour.
pub const HOUR_SECS: i64 = 3600;
/// Seconds in one day.
pub const DAY_SECS: i64 = 86_400;

/// `impressions` and `engagements` are served only for Tweets younger than this (engagement-api §5.3).
pub const IMPRESSIONS_MAX_AGE_SECS: i64 = 90 * DAY_SECS;
/// `video_views` are served only for Tweets younger than this (engagement-api §3.1).
pub const VIDEO_VIEWS_MAX_AGE_SECS: i64 = 1800 * DAY_SECS;
/// The earliest hour `/historical` serves: 2014-09-01T00:00:00Z.
pub const HISTORICAL_EPOCH: i64 = 1_409_529_600;

/// A Tweet ID: a non-zero 64-bit Snowflake whose high bits carry its creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TweetId(u64);

/// Why a string is not a Tweet ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TweetIdError {
    #[error("not a number: {0:?} (a Tweet ID is a decimal integer such as 1067094924124872705)")]
    NotANumber(String),
    #[error("Tweet ID 0 is not valid")]
    Zero,
    #[error("Tweet ID {0} is too large (Tweet IDs are below 2^63)")]
    TooLarge(u64),
}

impl TweetId {
    /// Wraps a raw ID; `None` for zero and for IDs above `i64::MAX` (Snowflakes are 63-bit,
    /// and SQLite stores them as signed integers).
    pub fn new(raw: u64) -> Option<TweetId> {
        (raw != 0 && i64::try_from(raw).is_ok()).then_some(TweetId(raw))
    }

    /// Builds the Snowflake ID of a Tweet created at `created_ms` (Unix milliseconds), with
    /// `low` (22 bits of worker and sequence number) to tell apart Tweets of the same millisecond.
    pub fn from_snowflake(created_ms: i64, low: u32) -> TweetId {
        let since = (created_ms - SNOWFLAKE_EPOCH_MS).max(0) as u64;
        TweetId((since << 22) | u64::from(low & 0x3f_ffff).max(1))
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Creation time in Unix milliseconds, from the Snowflake bits.
    pub fn created_ms(self) -> i64 {
        (self.0 >> 22) as i64 + SNOWFLAKE_EPOCH_MS
    }

    /// Creation time in Unix seconds (rounded down).
    pub fn created_at(self) -> i64 {
        self.created_ms().div_euclid(1000)
    }

    /// Age in seconds at `now` (Unix seconds); negative for a Tweet "from the future".
    pub fn age_at(self, now: i64) -> i64 {
        now - self.created_at()
    }
}

impl fmt::Display for TweetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TweetId {
    type Err = TweetIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TweetIdError::NotANumber(s.to_string()));
        }
        let raw: u64 = t
            .parse()
            .map_err(|_| TweetIdError::NotANumber(s.to_string()))?;
        match raw {
            0 => Err(TweetIdError::Zero),
            _ => TweetId::new(raw).ok_or(TweetIdError::TooLarge(raw)),
        }
    }
}

impl TryFrom<String> for TweetId {
    type Error = TweetIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TweetId> for String {
    fn from(t: TweetId) -> String {
        t.to_string()
    }
}

/// An X @handle (without the `@`): 1 to 15 ASCII letters, digits or underscores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

/// Why a string is not a handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid handle: {0:?} (1 to 15 letters, digits or underscores, without '@')")]
pub struct HandleError(String);

impl Handle {
    /// Whether `s` (without `@`) is a valid handle, without allocating.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }

    /// The handle as written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Handle {
    type Err = HandleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('@');
        if Handle::is_valid(t) {
            Ok(Handle(t.to_string()))
        } else {
            Err(HandleError(s.to_string()))
        }
    }
}

impl TryFrom<String> for Handle {
    type Error = HandleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Handle> for String {
    fn from(h: Handle) -> String {
        h.0
    }
}

/// FNV-1a, 64 bits, over `bytes`: the stable hash that assigns Tweets to shards (the same in
/// every build and on every machine, unlike `std`'s hashers).
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The part of the inventory (and of the contract's limits) one instance works on: shard
/// `index` of `count` (0-based, like Kubernetes' `JOB_COMPLETION_INDEX`). An owned Tweet belongs
/// to the shard of its owner's handle (FNV-1a 64 of the lowercased handle, `% count`), a public
/// Tweet to the shard of its ID (FNV-1a 64 of the decimal ID). [`Shard::WHOLE`] (`0/1`) is
/// everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why `index`/`count` is not a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("the number of shards must be at least 1")]
    NoShards,
    #[error("shard {index} does not exist: with {count} shards the index is 0 to {}", count - 1)]
    OutOfRange { index: u32, count: u32 },
    #[error("{0:?} is not \"I/N\" (shard I of N, I from 0 to N-1), e.g. \"0/4\"")]
    Syntax(String),
}

impl Shard {
    /// The whole inventory: one shard of one.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`: `count >= 1`, `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// 0-based.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this is the whole inventory (`0/1`).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    fn owns_hash(self, h: u64) -> bool {
        h % u64::from(self.count) == u64::from(self.index)
    }

    /// Whether the Tweets of the account `handle` are this shard's (case-insensitive).
    pub fn owns_handle(self, handle: &Handle) -> bool {
        self.owns_hash(fnv1a_64(handle.as_str().to_lowercase().as_bytes()))
    }

    /// Whether the public Tweet `id` is this shard's.
    pub fn owns_public(self, id: TweetId) -> bool {
        self.owns_hash(fnv1a_64(id.to_string().as_bytes()))
    }

    /// Whether an inventory entry (Tweet `id`, owned by `owner` or public) is this shard's.
    pub fn owns(self, id: TweetId, owner: Option<&Handle>) -> bool {
        match owner {
            Some(h) => self.owns_handle(h),
            None => self.owns_public(id),
        }
    }

    /// This shard's share of a limit of `n` requests: `n / count`, rounded down, at least 1.
    pub fn share(self, n: std::num::NonZeroU32) -> std::num::NonZeroU32 {
        std::num::NonZeroU32::new(n.get() / self.count).unwrap_or(std::num::NonZeroU32::MIN)
    }
}

impl Default for Shard {
    fn default() -> Shard {
        Shard::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;
    /// `"I/N"` (spaces around the numbers allowed).
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(syntax)?;
        let number = |t: &str| {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            t.parse::<u32>().map_err(|_| syntax())
        };
        Shard::new(number(i)?, number(n)?)
    }
}

/// Every engagement type the Engagement API spells (engagement-api §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Impressions,
    Engagements,
    Favorites,
    Retweets,
    QuoteTweets,
    Replies,
    VideoViews,
    MediaViews,
    MediaEngagements,
    UrlClicks,
    HashtagClicks,
    DetailExpands,
    PermalinkClicks,
    AppInstallAttempts,
    AppOpens,
    EmailTweet,
    UserFollows,
    UserProfileClicks,
}

/// Why a string is not an engagement type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engagement type {0:?}")]
pub struct MetricError(pub String);

impl Metric {
    /// All 18 types, in a stable order (their index + 1 is the database `metric_id`).
    pub const ALL: [Metric; 18] = [
        Metric::Impressions,
        Metric::Engagements,
        Metric::Favorites,
        Metric::Retweets,
        Metric::QuoteTweets,
        Metric::Replies,
        Metric::VideoViews,
        Metric::MediaViews,
        Metric::MediaEngagements,
        Metric::UrlClicks,
        Metric::HashtagClicks,
        Metric::DetailExpands,
        Metric::PermalinkClicks,
        Metric::AppInstallAttempts,
        Metric::AppOpens,
        Metric::EmailTweet,
        Metric::UserFollows,
        Metric::UserProfileClicks,
    ];

    /// The five metrics any app may read for any public Tweet with a bearer token.
    pub const PUBLIC: [Metric; 5] = [
        Metric::Favorites,
        Metric::Retweets,
        Metric::QuoteTweets,
        Metric::Replies,
        Metric::VideoViews,
    ];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Impressions => "impressions",
            Metric::Engagements => "engagements",
            Metric::Favorites => "favorites",
            Metric::Retweets => "retweets",
            Metric::QuoteTweets => "quote_tweets",
            Metric::Replies => "replies",
            Metric::VideoViews => "video_views",
            Metric::MediaViews => "media_views",
            Metric::MediaEngagements => "media_engagements",
            Metric::UrlClicks => "url_clicks",
            Metric::HashtagClicks => "hashtag_clicks",
            Metric::DetailExpands => "detail_expands",
            Metric::PermalinkClicks => "permalink_clicks",
            Metric::AppInstallAttempts => "app_install_attempts",
            Metric::AppOpens => "app_opens",
            Metric::EmailTweet => "email_tweet",
            Metric::UserFollows => "user_follows",
            Metric::UserProfileClicks => "user_profile_clicks",
        }
    }

    /// The stable database key of this metric (1-based, matches `schema/0001_init.sql`).
    pub fn id(self) -> i64 {
        Metric::ALL
            .iter()
            .position(|m| *m == self)
            .map_or(0, |i| i as i64 + 1)
    }

    /// The metric with database key `id`.
    pub fn from_id(id: i64) -> Option<Metric> {
        usize::try_from(id - 1)
            .ok()
            .and_then(|i| Metric::ALL.get(i).copied())
    }

    /// Whether a bearer (app-only) token may read this metric (on `/totals` only).
    pub fn is_public(self) -> bool {
        Metric::PUBLIC.contains(&self)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = MetricError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| MetricError(s.to_string()))
    }
}

/// The three Engagement API endpoints and the rules each one enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    #[serde(rename = "totals")]
    Totals,
    #[serde(rename = "28hr")]
    Hour28,
    #[serde(rename = "historical")]
    Historical,
}

impl Endpoint {
    /// All endpoints.
    pub const ALL: [Endpoint; 3] = [Endpoint::Totals, Endpoint::Hour28, Endpoint::Historical];

    /// Short name as used in logs, the `requests` table and the simulator's stats.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Totals => "totals",
            Endpoint::Hour28 => "28hr",
            Endpoint::Historical => "historical",
        }
    }

    /// The request path below the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Totals => "/insights/engagement/totals",
            Endpoint::Hour28 => "/insights/engagement/28hr",
            Endpoint::Historical => "/insights/engagement/historical",
        }
    }

    /// Largest number of Tweet IDs one request may carry.
    pub fn max_ids(self) -> usize {
        match self {
            Endpoint::Totals => 250,
            Endpoint::Hour28 | Endpoint::Historical => 25,
        }
    }

    /// Whether this endpoint accepts `metric` in `engagement_types`.
    pub fn accepts(self, metric: Metric) -> bool {
        match self {
            Endpoint::Totals => matches!(
                metric,
                Metric::Impressions
                    | Metric::Engagements
                    | Metric::Favorites
                    | Metric::Retweets
                    | Metric::QuoteTweets
                    | Metric::Replies
                    | Metric::VideoViews
            ),
            Endpoint::Hour28 | Endpoint::Historical => metric != Metric::QuoteTweets,
        }
    }

    /// The metrics this endpoint accepts, in `Metric::ALL` order.
    pub fn metrics(self) -> Vec<Metric> {
        Metric::ALL
            .into_iter()
            .filter(|m| self.accepts(*m))
            .collect()
    }

    /// Whether a bearer token may read `metric` here (only public metrics, only on `/totals`).
    pub fn bearer_may_read(self, metric: Metric) -> bool {
        self == Endpoint::Totals && metric.is_public()
    }

    /// Whether `engagement.day` / `engagement.hour` groupings are allowed.
    pub fn allows_time_groupings(self) -> bool {
        self != Endpoint::Totals
    }

    /// The endpoint whose `name()` is `s`.
    pub fn from_name(s: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The three kinds of job a cycle runs (design §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Lifetime totals from `/totals`.
    Totals,
    /// The last 28 hours, hour by hour, from `/28hr`.
    Hourly,
    /// The hourly history from `/historical`.
    Historical,
}

impl JobKind {
    /// All kinds, in the order a cycle runs them.
    pub const ALL: [JobKind; 3] = [JobKind::Totals, JobKind::Hourly, JobKind::Historical];

    /// The name used on the command line, in config sections and in the database.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Totals => "totals",
            JobKind::Hourly => "hourly",
            JobKind::Historical => "historical",
        }
    }

    /// The endpoint this kind calls.
    pub fn endpoint(self) -> Endpoint {
        match self {
            JobKind::Totals => Endpoint::Totals,
            JobKind::Hourly => Endpoint::Hour28,
            JobKind::Historical => Endpoint::Historical,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown job kind {s:?} (expected totals, hourly or historical)")
            })
    }
}

/// The start of a UTC hour, as Unix seconds (always a multiple of 3600).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(i64);

impl Hour {
    /// The hour containing `t` (Unix seconds).
    pub fn floor(t: i64) -> Hour {
        Hour(t.div_euclid(HOUR_SECS) * HOUR_SECS)
    }

    /// The first hour boundary at or after `t`.
    pub fn ceil(t: i64) -> Hour {
        Hour((t + HOUR_SECS - 1).div_euclid(HOUR_SECS) * HOUR_SECS)
    }

    /// `Some` when `t` is on an hour boundary.
    pub fn exact(t: i64) -> Option<Hour> {
        (t.rem_euclid(HOUR_SECS) == 0).then_some(Hour(t))
    }

    /// The hour of a `YYYY-MM-DD` day key and an `HH` hour key, as the API writes buckets.
    pub fn from_keys(day: &str, hour: &str) -> Option<Hour> {
        let d = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        if hour.len() != 2 {
            return None;
        }
        let h: u32 = hour.parse().ok().filter(|h| *h < 24)?;
        let t = d.and_hms_opt(h, 0, 0)?.and_utc().timestamp();
        Some(Hour(t))
    }

    /// Unix seconds of the hour's start.
    pub fn secs(self) -> i64 {
        self.0
    }

    /// The hour `n` hours later (earlier for negative `n`).
    pub fn plus_hours(self, n: i64) -> Hour {
        Hour(self.0 + n * HOUR_SECS)
    }

    /// The `YYYY-MM-DD` and `HH` keys the API uses for this bucket.
    pub fn keys(self) -> (String, String) {
        let dt = self.datetime();
        (
            dt.format("%Y-%m-%d").to_string(),
            dt.format("%H").to_string(),
        )
    }

    /// As a chrono UTC time.
    pub fn datetime(self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.0, 0).single().unwrap_or_default()
    }
}

impl fmt::Display for Hour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.datetime().format("%Y-%m-%dT%H:%M:%SZ"))
    }
}

/// "Now" in Unix seconds. Injected wherever a test needs to control time: the worker's clock
/// stamps observations and OAuth timestamps, the simulator's decides what data exists.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The machine's clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp())
}

/// A clock a test sets by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// The [`Clock`] that reads this.
    pub fn clock(&self) -> Clock {
        let cell = self.0.clone();
        Arc::new(move || cell.load(Ordering::SeqCst))
    }
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso_utc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

// ---- The shared vocabulary of states and outcomes (the planner, store, metrics and CLI all
// speak it; none of them owns it).

/// Which credential signs a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Credential {
    /// The app's bearer token (app-only): `/totals`, public metrics only.
    Bearer,
    /// A Tweet owner's OAuth 1.0a access token.
    UserContext { account: Handle },
}

impl Credential {
    /// A label safe to log and store: `bearer` or the account's handle.
    pub fn label(&self) -> &str {
        match self {
            Credential::Bearer => "bearer",
            Credential::UserContext { account } => account.as_str(),
        }
    }

    /// `bearer` or `user`, for per-kind summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::Bearer => "bearer",
            Credential::UserContext { .. } => "user",
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The status of a Tweet as the API last described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TweetStatus {
    Active,
    /// Deleted or otherwise not public (`unavailable_tweet_ids`).
    Unavailable,
    /// Protected: refused even with the owner's token.
    Protected,
    /// The configured owner's token may not read it.
    Forbidden,
}

impl TweetStatus {
    /// The spelling in the `tweets.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TweetStatus::Active => "active",
            TweetStatus::Unavailable => "unavailable",
            TweetStatus::Protected => "protected",
            TweetStatus::Forbidden => "forbidden",
        }
    }

    /// Reads `tweets.status`; `None` for a spelling the schema does not allow.
    pub fn parse(s: &str) -> Option<TweetStatus> {
        Some(match s {
            "active" => TweetStatus::Active,
            "unavailable" => TweetStatus::Unavailable,
            "protected" => TweetStatus::Protected,
            "forbidden" => TweetStatus::Forbidden,
            _ => return None,
        })
    }
}

/// A Tweet whose status the API reported, with its words.
pub type StatusChange = (TweetId, TweetStatus, Option<String>);

/// What the database remembers of a Tweet that the planner needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TweetState {
    pub status: TweetStatus,
    /// When the API last reported `status` (for non-active Tweets).
    pub status_checked_at: Option<i64>,
    /// When `/totals` last answered for the Tweet.
    pub totals_checked_at: Option<i64>,
    /// Metrics the API refused for the Tweet (`unsupported_*` lists), as a bit set by metric id.
    pub unsupported: u32,
    /// When `/28hr` last answered for the Tweet.
    pub hourly_fetched_at: Option<i64>,
}

/// Outcome of one batch as recorded in `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    Ok,
    /// Answered, but some Tweets or metrics were refused (unavailable, unsupported).
    Partial,
    /// Refused as a whole because of Tweets the API named; those were marked and the rest sent again.
    Refused,
    /// Failed after retries; planned again next run.
    Failed,
    /// The credential was refused (401): an account to re-authorize, or the app's own keys.
    Unauthorized,
}

impl BatchOutcome {
    /// The spelling in the `requests` table.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchOutcome::Ok => "ok",
            BatchOutcome::Partial => "partial",
            BatchOutcome::Refused => "refused",
            BatchOutcome::Failed => "failed",
            BatchOutcome::Unauthorized => "unauthorized",
        }
    }
}

/// The status of a run in `runs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunStatus {
    Running,
    Ok,
    Partial,
    Failed,
    Interrupted,
}

impl RunStatus {
    /// Every status a finished run can have, in the order metrics list them.
    pub const FINISHED: [RunStatus; 4] = [
        RunStatus::Ok,
        RunStatus::Partial,
        RunStatus::Failed,
        RunStatus::Interrupted,
    ];

    /// The spelling in `runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// Reads `runs.status`; `None` for a spelling the schema does not allow.
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "running" => RunStatus::Running,
            "ok" => RunStatus::Ok,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            _ => return None,
        })
    }
}

/// The condition of a configured account, as the `accounts` table has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountState {
    /// Its token answered.
    Ok,
    /// The API refused its token (401) while the app's keys were accepted.
    Refused,
    /// `enabled = false`: no request uses its token.
    Paused,
}

impl AccountState {
    /// Every state, in the order metrics list them.
    pub const ALL: [AccountState; 3] = [
        AccountState::Ok,
        AccountState::Refused,
        AccountState::Paused,
    ];

    /// The spelling in `accounts.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Ok => "ok",
            AccountState::Refused => "refused",
            AccountState::Paused => "paused",
        }
    }

    /// Reads `accounts.state`; `None` for a spelling the schema does not allow.
    pub fn parse(s: &str) -> Option<AccountState> {
        Some(match s {
            "ok" => AccountState::Ok,
            "refused" => AccountState::Refused,
            "paused" => AccountState::Paused,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a 64 test vectors, and assignments worked out by hand from them once:
    /// if either changes, every deployed shard would start working on other Tweets.
    #[test]
    fn shards_are_assigned_by_fnv1a_64() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"acme"), 0x0724_d383_f4f6_de0f);
        let acme: Handle = "Acme".parse().unwrap();
        let shard_of = |n: u32, owns: &dyn Fn(Shard) -> bool| {
            let owners: Vec<u32> = (0..n)
                .filter(|&i| owns(Shard::new(i, n).unwrap()))
                .collect();
            assert_eq!(owners.len(), 1, "{n} shards: owned by {owners:?}");
            owners[0]
        };
        // 0x0724d383f4f6de0f = 514_829_640_451_497_487: % 2 = 1, % 3 = 2, % 4 = 3, % 5 = 2.
        let by_handle: Vec<u32> = (1..=5)
            .map(|n| shard_of(n, &|s| s.owns_handle(&acme)))
            .collect();
        assert_eq!(by_handle, [0, 1, 2, 3, 2]);
        // The handle's case does not matter.
        let upper: Handle = "ACME".parse().unwrap();
        assert!(Shard::new(3, 4).unwrap().owns_handle(&upper));
        // "1460323737035677698" hashes to 0x9090494842ba24e6: % 4 = 2, % 5 = 1.
        let id: TweetId = "1460323737035677698".parse().unwrap();
        assert_eq!(fnv1a_64(b"1460323737035677698"), 0x9090_4948_42ba_24e6);
        assert_eq!(shard_of(4, &|s| s.owns_public(id)), 2);
        assert_eq!(shard_of(5, &|s| s.owns_public(id)), 1);
        assert!(Shard::WHOLE.owns(id, None) && Shard::WHOLE.owns(id, Some(&acme)));
    }

    #[test]
    fn shards_parse_as_index_of_count() {
        assert_eq!("1/4".parse::<Shard>().unwrap(), Shard::new(1, 4).unwrap());
        assert_eq!(" 0 / 1 ".parse::<Shard>().unwrap(), Shard::WHOLE);
        assert_eq!(Shard::new(2, 3).unwrap().to_string(), "2/3");
        assert_eq!(
            "4/4".parse::<Shard>(),
            Err(ShardError::OutOfRange { index: 4, count: 4 })
        );
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::NoShards));
        for bad in [
            "1",
            "1/",
            "/4",
            "a/4",
            "-1/4",
            "1/4/5",
            "1.0/4",
            "99999999999/4",
        ] {
            assert!(
                matches!(bad.parse::<Shard>(), Err(ShardError::Syntax(_))),
                "{bad:?}"
            );
        }
        let e = "4/4".parse::<Shard>().unwrap_err().to_string();
        assert!(e.contains("0 to 3"), "{e}");
    }

    /// A shard paces at its share of each limit: floor(n / N), never below 1.
    #[test]
    fn a_shard_s_share_of_a_limit_rounds_down_to_at_least_one() {
        let n = |v| std::num::NonZeroU32::new(v).unwrap();
        let shares: Vec<u32> = [(60, 1), (60, 2), (60, 7), (3, 4), (1, 5)]
            .into_iter()
            .map(|(limit, count)| Shard::new(0, count).unwrap().share(n(limit)).get())
            .collect();
        assert_eq!(shares, [60, 30, 8, 1, 1]);
    }

    #[test]
    fn snowflake_time_matches_a_known_tweet() {
        // 1067094924124872705 is a documented example ID; it was posted on 2018-11-26 16:37:10.466 UTC.
        let id: TweetId = "1067094924124872705".parse().unwrap();
        assert_eq!(iso_utc(id.created_at()), "2018-11-26T16:37:10Z");
    }

    #[test]
    fn snowflake_round_trips_its_creation_time() {
        let ms = 1_700_000_123_456;
        let id = TweetId::from_snowflake(ms, 77);
        assert_eq!(id.created_ms(), ms);
        assert_ne!(id, TweetId::from_snowflake(ms, 78));
    }

    #[test]
    fn tweet_id_rejects_zero_signs_and_text() {
        assert_eq!("0".parse::<TweetId>(), Err(TweetIdError::Zero));
        assert!(matches!(
            "-5".parse::<TweetId>(),
            Err(TweetIdError::NotANumber(_))
        ));
        assert!(matches!(
            "12a".parse::<TweetId>(),
            Err(TweetIdError::NotANumber(_))
        ));
        assert_eq!(
            "9223372036854775808".parse::<TweetId>(),
            Err(TweetIdError::TooLarge(1 << 63))
        );
        assert!(matches!(
            "99999999999999999999".parse::<TweetId>(),
            Err(TweetIdError::NotANumber(_))
        ));
        assert_eq!(" 42 ".parse::<TweetId>().unwrap().get(), 42);
    }

    #[test]
    fn handle_validation() {
        assert_eq!("@acme".parse::<Handle>().unwrap().as_str(), "acme");
        assert!("".parse::<Handle>().is_err());
        assert!("sixteen_chars_xx".parse::<Handle>().is_err());
        assert!("a-b".parse::<Handle>().is_err());
    }

    #[test]
    fn metric_spellings_round_trip_and_ids_are_dense() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.as_str().parse::<Metric>().unwrap(), *m);
            assert_eq!(m.id(), i as i64 + 1);
            assert_eq!(Metric::from_id(m.id()), Some(*m));
        }
        assert!("media_clicks".parse::<Metric>().is_err());
    }

    #[test]
    fn endpoint_rules_follow_the_api() {
        assert_eq!(Endpoint::Totals.metrics().len(), 7);
        assert_eq!(Endpoint::Hour28.metrics().len(), 17);
        assert!(!Endpoint::Historical.accepts(Metric::QuoteTweets));
        assert!(Endpoint::Totals.bearer_may_read(Metric::QuoteTweets));
        assert!(!Endpoint::Totals.bearer_may_read(Metric::Impressions));
        assert!(!Endpoint::Hour28.bearer_may_read(Metric::Favorites));
        assert_eq!(Endpoint::Totals.max_ids(), 250);
        assert_eq!(Endpoint::Historical.max_ids(), 25);
    }

    #[test]
    fn hours_floor_ceil_and_keys() {
        let t = 1_700_000_123;
        assert_eq!(Hour::floor(t).secs() % 3600, 0);
        assert!(Hour::floor(t).secs() <= t && Hour::ceil(t).secs() >= t);
        assert_eq!(Hour::ceil(Hour::floor(t).secs()), Hour::floor(t));
        let h = Hour::floor(t);
        let (d, hh) = h.keys();
        assert_eq!(Hour::from_keys(&d, &hh), Some(h));
        assert_eq!(Hour::from_keys("2015-09-14", "7"), None);
        assert_eq!(iso_utc(HISTORICAL_EPOCH), "2014-09-01T00:00:00Z");
    }
}
