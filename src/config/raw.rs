//! The configuration file's shape: one serde type per section, every key a field with its doc
//! comment and its default, unknown keys refused. Values here are only well-typed; what they
//! must mean (ranges, URLs, secrets, engagement types) is checked by `validate`. The simulator
//! writes its worker config from these types too.

use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{Cron, OnInvalid};
use crate::domain::Endpoint;

/// The engagement API's host, when `api.base_url` is not given.
pub const DEFAULT_BASE_URL: &str = "https://data-api.twitter.com";
/// Where bearer tokens are obtained, when `api.token_url` is not given (and `base_url` is not a
/// loopback simulator).
pub const DEFAULT_TOKEN_URL: &str = "https://api.twitter.com/oauth2/token";

/// The whole file, as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub api: RawApi,
    pub app: RawApp,
    #[serde(deserialize_with = "accounts")]
    pub accounts: Vec<RawAccount>,
    pub inventory: RawInventory,
    pub database: RawDatabase,
    pub schedule: RawSchedule,
    pub runtime: RawRuntime,
    pub limits: RawLimits,
    pub totals: RawTotals,
    pub hourly: RawHourly,
    pub historical: RawHistorical,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    /// Scheme and host only.
    pub base_url: String,
    /// `None`: [`DEFAULT_TOKEN_URL`], or `<base_url>/oauth2/token` for a loopback simulator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Timeout of one HTTP request.
    pub timeout: HumanDuration,
    /// Requests in flight at once, app-wide (1..=64).
    pub max_in_flight: u64,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Attempts per request in all, the first included (1..=20).
    pub retry_attempts: u64,
    /// Longest a request keeps being retried.
    pub retry_max_elapsed: HumanDuration,
    /// First retry delay.
    pub retry_min_delay: HumanDuration,
    /// The largest answer taken, in MiB (1..=1024).
    pub max_answer_mib: u64,
}

impl Default for RawApi {
    fn default() -> RawApi {
        RawApi {
            base_url: DEFAULT_BASE_URL.to_string(),
            token_url: None,
            timeout: HumanDuration::secs(30),
            max_in_flight: 4,
            user_agent: format!("engagement-ingest/{}", env!("CARGO_PKG_VERSION")),
            retry_attempts: 5,
            retry_max_elapsed: HumanDuration::secs(120),
            retry_min_delay: HumanDuration(Duration::from_millis(500)),
            // The largest legal answer (25 Tweets × 17 metrics × 28 days of 12-digit counts) is
            // 5.9 MB compact and 9.6 MB indented (2.8 MB when every count is 0); 16 MiB leaves
            // room for that and keeps `max_in_flight` answers well under the units' memory limits.
            max_answer_mib: 16,
        }
    }
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub enabled: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for RawAccount {
    fn default() -> RawAccount {
        RawAccount {
            handle: None,
            access_token: None,
            access_token_file: None,
            access_token_secret: None,
            access_token_secret_file: None,
            user_id: None,
            enabled: true,
        }
    }
}

/// `[inventory]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInventory {
    /// The `tweet_id,owner` CSV.
    pub path: String,
    /// How long a Tweet reported unavailable, protected or forbidden is left alone.
    pub recheck_after: HumanDuration,
    /// What a cycle does with an inventory that has bad lines.
    pub on_invalid: OnInvalid,
}

impl Default for RawInventory {
    fn default() -> RawInventory {
        RawInventory {
            path: "tweets.csv".to_string(),
            recheck_after: HumanDuration::secs(86_400),
            on_invalid: OnInvalid::Fail,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    /// The SQLite file.
    pub path: String,
}

impl Default for RawDatabase {
    fn default() -> RawDatabase {
        RawDatabase {
            path: "engagement.sqlite".to_string(),
        }
    }
}

/// `[schedule]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSchedule {
    pub totals: Cron,
    pub hourly: Cron,
    pub historical: Cron,
    /// Upper bound of the fixed delay after each trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
}

impl Default for RawSchedule {
    fn default() -> RawSchedule {
        let cron = |s: &str| s.parse::<Cron>().expect("default schedules parse");
        RawSchedule {
            totals: cron("0 */15 * * * *"),
            hourly: cron("0 5 * * * *"),
            historical: cron("0 30 3 * * *"),
            jitter: None,
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRuntime {
    /// How long batches in flight may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace: HumanDuration,
}

impl Default for RawRuntime {
    fn default() -> RawRuntime {
        RawRuntime {
            shutdown_grace: HumanDuration::secs(20),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub totals: RawLimit,
    pub hourly: RawLimit,
    pub historical: RawLimit,
}

/// One endpoint's request limit; 0 = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimit {
    pub per_minute: u64,
    pub per_second: u64,
}

impl Default for RawLimit {
    fn default() -> RawLimit {
        RawLimit {
            per_minute: 60,
            per_second: 0,
        }
    }
}

/// `[totals]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTotals {
    /// Request budget of one run; 0 = no cap.
    pub max_requests_per_run: u64,
}

/// `[hourly]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHourly {
    pub max_age: HumanDuration,
    pub metrics: MetricNames,
    pub max_requests_per_run: u64,
}

impl Default for RawHourly {
    fn default() -> RawHourly {
        RawHourly {
            max_age: HumanDuration::secs(3 * 86_400),
            metrics: MetricNames::default(),
            max_requests_per_run: 0,
        }
    }
}

/// `[historical]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistorical {
    pub max_age: HumanDuration,
    pub metrics: MetricNames,
    pub max_requests_per_run: u64,
    /// How often a cell that runs into the present is fetched again (at least 1h).
    pub refresh_after: HumanDuration,
}

impl Default for RawHistorical {
    fn default() -> RawHistorical {
        RawHistorical {
            max_age: HumanDuration::secs(90 * 86_400),
            metrics: MetricNames::default(),
            max_requests_per_run: 0,
            refresh_after: HumanDuration::secs(86_400),
        }
    }
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

/// A positive duration written as `"30s"`, `"15m"`, `"2h"`, `"90d"` (see
/// [`crate::timespec::parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string with a unit, e.g. \"30s\" or \"90d\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                super::parse_duration(s)
                    .map(HumanDuration)
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::timespec::format_duration(self.0))
    }
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
