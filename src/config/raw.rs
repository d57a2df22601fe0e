//! The configuration file's shape: one serde type per section, every key a field with its final
//! type, its doc comment and its default (`#[default(..)]`), unknown keys refused. A check that
//! concerns one value alone (a range, a blank string, a URL that does not parse) is its field's
//! adapter in `field`; `validate` checks what involves more (URL rules, secrets, engagement
//! types, handles). Most sections are [`Config`](super::Config)'s own; `[app]`,
//! `[[accounts]]`, `[hourly]` and `[historical]` are read here and built by `validate`. The
//! simulator writes its worker config from these types too.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use url::Url;

use super::Cron;
use super::field;
use crate::domain::{Endpoint, JobKind};

/// The engagement API's host, when `api.base_url` is not given.
pub const DEFAULT_BASE_URL: &str = "https://data-api.twitter.com";
/// Where bearer tokens are obtained, when `api.token_url` is not given (and `base_url` is not a
/// loopback simulator).
pub const DEFAULT_TOKEN_URL: &str = "https://api.twitter.com/oauth2/token";

/// The whole file, as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub api: ApiConfig,
    pub app: RawApp,
    #[serde(deserialize_with = "accounts")]
    pub accounts: Vec<RawAccount>,
    pub inventory: InventoryConfig,
    pub database: DatabaseConfig,
    pub schedule: ScheduleConfig,
    pub runtime: RuntimeConfig,
    pub limits: LimitsConfig,
    pub totals: TotalsConfig,
    pub hourly: RawHourly,
    pub historical: RawHistorical,
}

/// `[api]`: where and how requests are sent.
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Scheme and authority only (path `/`): `https://data-api.twitter.com` by default.
    #[serde(with = "field::url")]
    #[default(Url::parse(DEFAULT_BASE_URL).expect("the default URL parses"))]
    pub base_url: Url,
    /// Where app-only bearer tokens are obtained (`POST /oauth2/token`). Left out:
    /// [`DEFAULT_TOKEN_URL`], or `<base_url>/oauth2/token` for a loopback simulator.
    #[serde(with = "field::url")]
    #[default(Url::parse(DEFAULT_TOKEN_URL).expect("the default URL parses"))]
    pub token_url: Url,
    /// Timeout of one HTTP request.
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(30))]
    pub timeout: Duration,
    /// Requests in flight at once, app-wide (1..=64).
    #[serde(deserialize_with = "field::count::<1, 64, _, _>")]
    #[default(4)]
    pub max_in_flight: usize,
    /// The `User-Agent` header.
    #[serde(deserialize_with = "field::non_empty")]
    #[default(concat!("engagement-ingest/", env!("CARGO_PKG_VERSION")).to_string())]
    pub user_agent: String,
    /// Attempts per request in all, the first included (1..=20).
    #[serde(deserialize_with = "field::count::<1, 20, _, _>")]
    #[default(5)]
    pub retry_attempts: u32,
    /// Longest a request keeps being retried.
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(120))]
    pub retry_max_elapsed: Duration,
    /// First retry delay; each next one doubles (with full jitter), up to 30 s.
    #[serde(with = "field::duration")]
    #[default(Duration::from_millis(500))]
    pub retry_min_delay: Duration,
    /// The largest answer taken, in MiB, on the wire and once inflated (1..=1024). The largest
    /// legal answer (25 Tweets × 17 metrics × 28 days of 12-digit counts) is 5.9 MB compact and
    /// 9.6 MB indented (2.8 MB when every count is 0); 16 MiB leaves room for that and keeps
    /// `max_in_flight` answers well under the units' memory limits.
    #[serde(deserialize_with = "field::count::<1, 1024, _, _>")]
    #[default(16)]
    pub max_answer_mib: u32,
}

/// `[app]`: each credential inline, as `<name>_file` (a path) or from the environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_secret_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
}

/// One `[[accounts]]` entry.
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct RawAccount {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_secret_file: Option<String>,
    /// The owner's numeric user id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// `false` pauses the account.
    #[serde(skip_serializing_if = "is_true")]
    #[default(true)]
    pub enabled: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `[inventory]`.
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// The `tweet_id,owner` CSV, relative to the working directory unless absolute.
    #[serde(deserialize_with = "field::path")]
    #[default(PathBuf::from("tweets.csv"))]
    pub path: PathBuf,
    /// How long a Tweet the API reported unavailable, protected or forbidden is left alone.
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(86_400))]
    pub recheck_after: Duration,
    /// What a cycle does with an inventory that has bad lines.
    pub on_invalid: OnInvalid,
}

/// `inventory.on_invalid`: what a cycle does with an inventory that has bad lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SmartDefault, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum OnInvalid {
    /// Nothing is sent (`run` exits 2); the daemon keeps the last good inventory.
    #[default]
    Fail,
    /// The valid lines are collected and the bad ones reported.
    Skip,
}

/// `[database]`.
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file, relative to the working directory unless absolute. With `url`: the
    /// server's URL as shown in messages (never the password).
    #[serde(deserialize_with = "field::path")]
    #[default(PathBuf::from("engagement.sqlite"))]
    pub path: PathBuf,
    /// A PostgreSQL database instead of the file: `postgres://USER@HOST:PORT/DATABASE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The PostgreSQL password (better in `password_file` or the environment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file holding the PostgreSQL password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Where the database is, once validated (`path`, or `url` with its password).
    #[serde(skip)]
    pub target: Option<crate::store::Target>,
}

impl DatabaseConfig {
    /// Where the database is: the PostgreSQL server of `url`, else the file at `path`.
    pub fn target(&self) -> crate::store::Target {
        self.target
            .clone()
            .unwrap_or_else(|| crate::store::Target::Sqlite(self.path.clone()))
    }
}

/// `[schedule]`: when the daemon runs each job kind (UTC, seconds first).
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Default `0 */15 * * * *`.
    #[default(cron("0 */15 * * * *"))]
    pub totals: Cron,
    /// Default `0 5 * * * *`.
    #[default(cron("0 5 * * * *"))]
    pub hourly: Cron,
    /// Default `0 30 3 * * *`.
    #[default(cron("0 30 3 * * *"))]
    pub historical: Cron,
    /// Upper bound of a fixed delay per kind after each trigger (derived from the kind and the
    /// database path, so it is the same at every cycle); `None`: start on the trigger.
    #[serde(
        with = "field::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
}

fn cron(s: &str) -> Cron {
    s.parse().expect("default schedules parse")
}

impl ScheduleConfig {
    /// The schedule of `kind`.
    pub fn of(&self, kind: JobKind) -> &Cron {
        match kind {
            JobKind::Totals => &self.totals,
            JobKind::Hourly => &self.hourly,
            JobKind::Historical => &self.historical,
        }
    }
}

/// `[runtime]`: how the process behaves when asked to stop, and which shard of the inventory
/// it works on (`validate` resolves `shard` and `shards` into [`Config::shard`](super::Config)).
#[derive(Debug, Clone, PartialEq, Eq, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// After SIGTERM/SIGINT, how long batches in flight may take to finish and be stored
    /// before the process exits anyway. Default 20 s (below Kubernetes' 30 s).
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(20))]
    pub shutdown_grace: Duration,
    /// `"I/N"`: this instance is shard I (0-based) of N. Left out (and no `shards`): the whole
    /// inventory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// N shards, this instance's index from `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u64>,
}

/// `[limits]`: the contract's request limits per endpoint, app-wide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `/totals`.
    pub totals: Limit,
    /// `/28hr`.
    pub hourly: Limit,
    /// `/historical`.
    pub historical: Limit,
}

/// Request rate limit of one endpoint; `None` = unlimited (written as `0` or left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limit {
    /// Requests per minute; default 60.
    #[serde(with = "field::budget")]
    #[default(NonZeroU32::new(60))]
    pub per_minute: Option<NonZeroU32>,
    /// Requests per second; default unlimited.
    #[serde(with = "field::budget")]
    pub per_second: Option<NonZeroU32>,
}

/// `[totals]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotalsConfig {
    /// Request budget of one run; `None` (0) = no cap.
    #[serde(with = "field::budget")]
    pub max_requests_per_run: Option<NonZeroU32>,
}

/// `[hourly]`; `validate` makes it a [`SeriesConfig`](super::SeriesConfig).
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHourly {
    /// Tweets older than this are left to other kinds.
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(3 * 86_400))]
    pub max_age: Duration,
    /// The engagement types requested, each accepted by `/28hr`.
    pub metrics: MetricNames,
    /// Request budget of one run; 0 = no cap.
    #[serde(with = "field::budget")]
    pub max_requests_per_run: Option<NonZeroU32>,
}

/// `[historical]`; `validate` makes it a [`SeriesConfig`](super::SeriesConfig).
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistorical {
    /// Tweets older than this are left to other kinds.
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(90 * 86_400))]
    pub max_age: Duration,
    /// The engagement types requested, each accepted by `/historical`.
    pub metrics: MetricNames,
    /// Request budget of one run; 0 = no cap.
    #[serde(with = "field::budget")]
    pub max_requests_per_run: Option<NonZeroU32>,
    /// How often a cell that is not final yet is fetched again (at least 1h).
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(86_400))]
    pub refresh_after: Duration,
    /// How long an hour's numbers may still change after it ends (the docs are silent: 48 h).
    #[serde(with = "field::duration")]
    #[default(Duration::from_secs(48 * 3600))]
    pub settle_after: Duration,
    /// How far back the API serves `/historical` data; 0 = back to 2014-09-01.
    #[serde(with = "field::duration_or_zero")]
    #[default(Some(Duration::from_secs(365 * 86_400)))]
    pub lookback: Option<Duration>,
}

impl RawConfig {
    /// The TOML of the keys that differ from their defaults, and of `[database] path` always
    /// (which file a config writes is worth seeing, and editing, at a glance).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut table = toml::Table::try_from(self)?;
        prune(&mut table, &toml::Table::try_from(RawConfig::default())?);
        table.insert(
            "database".to_string(),
            toml::Value::try_from(&self.database)?,
        );
        toml::to_string(&table)
    }
}

/// Removes from `table` what equals `defaults`, and the tables that become empty.
fn prune(table: &mut toml::Table, defaults: &toml::Table) {
    table.retain(|key, value| {
        let Some(default) = defaults.get(key) else {
            return true;
        };
        if let (toml::Value::Table(t), toml::Value::Table(d)) = (&mut *value, default) {
            prune(t, d);
            return !t.is_empty();
        }
        value != default
    });
}

/// The engagement types of `[hourly]` or `[historical]`, as written: a list, or (from the
/// environment) a comma-separated string. Which names are known is checked by `validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MetricNames(pub Vec<String>);

impl Default for MetricNames {
    fn default() -> MetricNames {
        MetricNames(
            Endpoint::Hour28
                .metrics()
                .iter()
                .map(|m| m.as_str().to_string())
                .collect(),
        )
    }
}

const METRICS_EXPECTED: &str = "a list of strings such as [\"impressions\", \"favorites\"]";

impl<'de> Deserialize<'de> for MetricNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MetricNames, D::Error> {
        /// One name; anything else is said of the whole list.
        struct Name(String);
        impl<'de> Deserialize<'de> for Name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
                struct N;
                impl Visitor<'_> for N {
                    type Value = Name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(METRICS_EXPECTED)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<Name, E> {
                        Ok(Name(s.to_string()))
                    }
                }
                d.deserialize_str(N)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetricNames;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(METRICS_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MetricNames, E> {
                Ok(MetricNames(
                    s.split(',').map(|m| m.trim().to_string()).collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetricNames, A::Error> {
                let mut names = Vec::new();
                while let Some(Name(name)) = seq.next_element()? {
                    names.push(name);
                }
                Ok(MetricNames(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[accounts]]`: a list of tables (said so when it is not).
fn accounts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawAccount>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<RawAccount>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of [[accounts]] tables")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<RawAccount>, A::Error> {
            let mut out = Vec::new();
            while let Some(a) = seq.next_element()? {
                out.push(a);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

impl TryFrom<String> for OnInvalid {
    type Error = String;

    fn try_from(s: String) -> Result<OnInvalid, String> {
        match s.as_str() {
            "fail" => Ok(OnInvalid::Fail),
            "skip" => Ok(OnInvalid::Skip),
            other => Err(format!(
                "{other:?} is not one of \"fail\" (send nothing while a line is bad) or \"skip\" \
                 (collect the valid lines)"
            )),
        }
    }
}

impl From<OnInvalid> for &'static str {
    fn from(o: OnInvalid) -> &'static str {
        match o {
            OnInvalid::Fail => "fail",
            OnInvalid::Skip => "skip",
        }
    }
}
