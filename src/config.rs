//! The configuration: a TOML file plus `ENGAGEMENT__SECTION__KEY` environment overrides, validated
//! once into typed sections. Every problem is collected and reported together, each naming the
//! file, the line when known and the full key. Secrets live in [`Secret`] and never reach `Debug`,
//! errors or warnings. Loading reads the config file and `*_file` secrets only: never the
//! inventory, never the database, never the process environment (the caller passes it in).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use config::{Environment, File, FileFormat, Value, ValueKind};
use croner::parser::{CronParser, Seconds};
use secrecy::{ExposeSecret, SecretString};
use toml::de::{DeTable, DeValue};
use url::{Host, Url};

use crate::domain::{DAY_SECS, Endpoint, Handle, JobKind, Metric};

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "ENGAGEMENT_CONFIG";
/// Prefix of the environment variables that override config keys (`ENGAGEMENT__API__TIMEOUT`).
pub const ENV_PREFIX: &str = "ENGAGEMENT__";
/// Prefix of the per-account environment variables (`ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN`).
const ACCOUNTS_ENV_PREFIX: &str = "ENGAGEMENT__ACCOUNTS__";
/// The origin the config crate records for values from its `Environment` source.
const CONFIG_CRATE_ENV_ORIGIN: &str = "the environment";
/// Origin prefix we record for account values injected from the environment.
const ENV_ORIGIN_PREFIX: &str = "env ";

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (`None` when parsed from a string).
    pub source: Option<PathBuf>,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[app]`.
    pub app: AppConfig,
    /// `[[accounts]]`, in file order; may be empty (public Tweets only).
    pub accounts: Vec<AccountConfig>,
    /// `[inventory]`.
    pub inventory: InventoryConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[schedule]`.
    pub schedule: ScheduleConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[totals]`.
    pub totals: TotalsConfig,
    /// `[hourly]` (the `/28hr` job kind).
    pub hourly: SeriesConfig,
    /// `[historical]`.
    pub historical: SeriesConfig,
    /// Things that work but should change (inline secrets); see [`Config::warnings`].
    warnings: Vec<String>,
}

/// `[api]`: where and how requests are sent.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Scheme and authority only (path `/`): `https://data-api.twitter.com` by default.
    pub base_url: Url,
    /// Where app-only bearer tokens are obtained (`POST /oauth2/token`).
    pub token_url: Url,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Requests in flight at once, app-wide (1..=64).
    pub max_in_flight: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Attempts per request in all, the first included (1..=20).
    pub retry_attempts: u32,
    /// Longest a request keeps being retried.
    pub retry_max_elapsed: Duration,
    /// First retry delay; each next one doubles (with full jitter), up to 30 s.
    pub retry_min_delay: Duration,
    /// The largest answer taken, in MiB, on the wire and once inflated (1..=1024).
    pub max_answer_mib: u32,
}

/// `[app]`: the approved app's credentials.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app's API key (an identifier, not a secret).
    pub consumer_key: String,
    /// The app's API secret.
    pub consumer_secret: Secret,
    /// App-only token; `None` means "obtain one from `api.token_url`".
    pub bearer_token: Option<Secret>,
}

/// One `[[accounts]]` entry: a Tweet owner who authorized the app.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The owner's handle, as spelled in the config.
    pub handle: Handle,
    /// The owner's OAuth 1.0a access token (an identifier, not a secret).
    pub access_token: String,
    /// The owner's OAuth 1.0a access token secret.
    pub access_token_secret: Secret,
    /// The owner's numeric user id, when known: lets the worker recognise its Tweets in the
    /// API's "Forbidden to access tweets for author id …" answers.
    pub user_id: Option<u64>,
    /// `false` pauses the account: no request uses its token; its Tweets' public metrics are
    /// still read with the bearer token. Default `true`.
    pub enabled: bool,
}

/// `[inventory]`.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// The `tweet_id,owner` CSV, relative to the working directory unless absolute.
    pub path: PathBuf,
    /// How long a Tweet the API reported unavailable, protected or forbidden is left alone.
    pub recheck_after: Duration,
    /// What a cycle does with an inventory that has bad lines.
    pub on_invalid: OnInvalid,
}

/// `inventory.on_invalid`: what a cycle does with an inventory that has bad lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// Nothing is sent (`run` exits 2); the daemon keeps the last good inventory.
    Fail,
    /// The valid lines are collected and the bad ones reported.
    Skip,
}

/// `[database]`.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The SQLite file, relative to the working directory unless absolute.
    pub path: PathBuf,
}

/// `[schedule]`: when the daemon runs each job kind (UTC, seconds first).
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Default `0 */15 * * * *`.
    pub totals: Cron,
    /// Default `0 5 * * * *`.
    pub hourly: Cron,
    /// Default `0 30 3 * * *`.
    pub historical: Cron,
    /// Upper bound of a fixed delay per kind after each trigger (derived from the kind and the
    /// database path, so it is the same at every cycle); `None`: start on the trigger.
    pub jitter: Option<Duration>,
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

/// `[runtime]`: how the process behaves when asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// After SIGTERM/SIGINT, how long batches in flight may take to finish and be stored
    /// before the process exits anyway. Default 20 s (below Kubernetes' 30 s).
    pub shutdown_grace: Duration,
}

/// `[limits]`: the contract's request limits per endpoint, app-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `/totals`.
    pub totals: Limit,
    /// `/28hr`.
    pub hourly: Limit,
    /// `/historical`.
    pub historical: Limit,
}

/// Request rate limit of one endpoint; `None` = unlimited (written as `0` or left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests per minute; default 60.
    pub per_minute: Option<NonZeroU32>,
    /// Requests per second; default unlimited.
    pub per_second: Option<NonZeroU32>,
}

/// `[totals]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalsConfig {
    /// Request budget of one run; `None` = no cap.
    pub max_requests_per_run: Option<NonZeroU32>,
}

/// `[hourly]` and `[historical]`: the time-series job kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesConfig {
    /// Tweets older than this are left to other kinds.
    pub max_age: Duration,
    /// The engagement types requested, each accepted by `/28hr` and `/historical`.
    pub metrics: Vec<Metric>,
    /// Request budget of one run; `None` = no cap.
    pub max_requests_per_run: Option<NonZeroU32>,
    /// `[historical]` only: how often a cell that runs into the present (or ended less than
    /// this long ago) is fetched again; default a day (`/28hr` covers the recent hours meanwhile).
    pub refresh_after: Duration,
}

/// A secret string: `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The secret value itself: pass it to the signer, never to a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A cron schedule with seconds (6 or 7 fields, as tokio-cron-scheduler expects), in UTC.
#[derive(Clone)]
pub struct Cron {
    source: String,
    parsed: croner::Cron,
}

impl Cron {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first firing strictly after `t`; `None` if the schedule never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.find_next_occurrence(&t, false).ok()
    }

    /// The last firing at or before `t`; `None` if the schedule never fired before.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.find_previous_occurrence(&t, true).ok()
    }

    /// The gap between the firings around `t` (the last at or before it and the next after it),
    /// seconds: the period a cycle is expected within at `t`, also for irregular schedules
    /// (business hours: 15 minutes by day, the night's gap at night). Without a firing before
    /// `t`, the gap between the next two.
    pub fn period_at(&self, t: DateTime<Utc>) -> Option<i64> {
        let next = self.next_after(t)?;
        let before = match self.last_at_or_before(t) {
            Some(before) => before,
            None => return Some((self.next_after(next)? - next).num_seconds().max(1)),
        };
        Some((next - before).num_seconds().max(1))
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Cron, String> {
        let fields = s.split_whitespace().count();
        if fields == 5 {
            return Err(format!(
                "{s:?} has 5 fields, but seconds come first: write 6 or 7 fields \
                 (sec min hour day month weekday [year]), e.g. \"0 */15 * * * *\""
            ));
        }
        let parser = CronParser::builder().seconds(Seconds::Required).build();
        let parsed = parser.parse(s).map_err(|e| {
            format!("{s:?} is not a cron schedule ({e}); write 6 or 7 fields, seconds first, e.g. \"0 */15 * * * *\"")
        })?;
        Ok(Cron {
            source: s.trim().to_string(),
            parsed,
        })
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cron").field(&self.source).finish()
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Cron) -> bool {
        self.source == other.source
    }
}

/// Everything wrong with a configuration, one problem per entry, none containing a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Each problem, naming the file (and line when known) and the full key.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => f.write_str(one),
            many => {
                for p in many {
                    writeln!(f, "{p}")?;
                }
                write!(f, "{} problems in the configuration", many.len())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"90d"`: a positive integer and a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let hint = "write an integer and a unit (ms, s, m, h or d), e.g. \"30s\" or \"90d\"";
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_SECS as u64 * 1000,
        _ => return Err(format!("{s:?} is not a duration; {hint}")),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; {hint}"))?;
    if n == 0 {
        return Err(format!("{s:?}: the duration must be greater than zero"));
    }
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Whether `url`'s host is a loopback address (127.0.0.0/8, ::1) or `localhost`.
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Config {
    /// Loads `path`, else the file named by `ENGAGEMENT_CONFIG` in `env`, layered with the
    /// `ENGAGEMENT__SECTION__KEY` variables of `env`, and validates it.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => match env
                .iter()
                .find(|(k, v)| k == CONFIG_PATH_ENV && !v.is_empty())
            {
                Some((_, v)) => PathBuf::from(v),
                None => {
                    return Err(ConfigError::one(
                        "no config: pass --config PATH or set ENGAGEMENT_CONFIG",
                    ));
                }
            },
        };
        // Messages name the file by its absolute path: a relative one means little in a log.
        let path = std::path::absolute(&path).unwrap_or(path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::one(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let mut config = Config::parse(&path.display().to_string(), &text, env)?;
        config.source = Some(path);
        Ok(config)
    }

    /// Validates TOML `text` (named `source_name` in messages) layered with the overrides in
    /// `env`. Reads `*_file` secrets; touches nothing else.
    pub fn parse(
        source_name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let doc = DeTable::parse(text).map_err(|e| {
            let at = e.span().map_or(String::new(), |s| {
                let (line, col) = line_col(text, s.start);
                format!(":{line}:{col}")
            });
            ConfigError::one(format!(
                "{source_name}{at}: invalid TOML: {}",
                e.message().trim()
            ))
        })?;

        let mut overrides = HashMap::new();
        let mut account_env = Vec::new();
        for (k, v) in env {
            if starts_with_ignore_case(&k, ACCOUNTS_ENV_PREFIX) {
                account_env.push((k, v));
            } else if starts_with_ignore_case(&k, ENV_PREFIX) {
                overrides.insert(k, v);
            }
        }
        let layered = config::Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .add_source(
                Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                    .prefix_separator("__")
                    .separator("__")
                    .ignore_empty(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| ConfigError::one(format!("{source_name}: {e}")))?;
        let root = match layered.cache.kind {
            ValueKind::Table(t) => t,
            _ => Table::new(),
        };

        let mut loader = Loader {
            name: source_name,
            text,
            doc: doc.get_ref(),
            problems: Vec::new(),
            warnings: Vec::new(),
            loopback: false,
        };
        let config = loader.config(root, account_env);
        if loader.problems.is_empty() {
            return Ok(config);
        }
        // File order first (by line), then what has no line (environment, missing sections).
        let mut problems = loader.problems;
        let prefix = format!("{source_name}:");
        problems.sort_by_key(|p| {
            p.strip_prefix(&prefix)
                .and_then(|rest| rest.split(':').next()?.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
        Err(ConfigError { problems })
    }

    /// Things that work but should change (inline secrets), for the caller to log at startup.
    /// They name keys and files, never a secret value.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The rate limit of endpoint `e`.
    pub fn limit(&self, e: Endpoint) -> &Limit {
        match e {
            Endpoint::Totals => &self.limits.totals,
            Endpoint::Hour28 => &self.limits.hourly,
            Endpoint::Historical => &self.limits.historical,
        }
    }

    /// The account with handle `h` (case-insensitive).
    pub fn account(&self, h: &Handle) -> Option<&AccountConfig> {
        self.accounts
            .iter()
            .find(|a| a.handle.as_str().eq_ignore_ascii_case(h.as_str()))
    }

    /// Every configured account handle, as spelled in the config (for the inventory).
    pub fn handles(&self) -> Vec<Handle> {
        self.accounts.iter().map(|a| a.handle.clone()).collect()
    }

    /// Whether the API is on this machine (the simulator): `http://` and inline secrets are fine.
    pub fn is_loopback(&self) -> bool {
        is_loopback_url(&self.api.base_url)
    }

    /// Every secret value, so tests can check that none of them reaches a log.
    pub fn secret_values(&self) -> Vec<&str> {
        let mut out = vec![self.app.consumer_secret.expose()];
        out.extend(self.app.bearer_token.as_ref().map(Secret::expose));
        out.extend(self.accounts.iter().map(|a| a.access_token_secret.expose()));
        out
    }
}

type Table = config::Map<String, Value>;

const ROOT_KEYS: &[&str] = &[
    "api",
    "app",
    "accounts",
    "inventory",
    "database",
    "schedule",
    "runtime",
    "limits",
    "totals",
    "hourly",
    "historical",
];
const API_KEYS: &[&str] = &[
    "base_url",
    "token_url",
    "timeout",
    "max_in_flight",
    "user_agent",
    "retry_attempts",
    "retry_max_elapsed",
    "retry_min_delay",
    "max_answer_mib",
];
const APP_KEYS: &[&str] = &[
    "consumer_key",
    "consumer_key_file",
    "consumer_secret",
    "consumer_secret_file",
    "bearer_token",
    "bearer_token_file",
];
const ACCOUNT_KEYS: &[&str] = &[
    "handle",
    "access_token",
    "access_token_file",
    "access_token_secret",
    "access_token_secret_file",
    "user_id",
    "enabled",
];
const PATH_KEYS: &[&str] = &["path"];
const INVENTORY_KEYS: &[&str] = &["path", "recheck_after", "on_invalid"];
const KIND_KEYS: &[&str] = &["totals", "hourly", "historical"];
const SCHEDULE_KEYS: &[&str] = &["totals", "hourly", "historical", "jitter"];
const RUNTIME_KEYS: &[&str] = &["shutdown_grace"];
const LIMIT_KEYS: &[&str] = &["per_minute", "per_second"];
const TOTALS_KEYS: &[&str] = &["max_requests_per_run"];
const SERIES_KEYS: &[&str] = &["max_age", "metrics", "max_requests_per_run"];
const HISTORICAL_KEYS: &[&str] = &[
    "max_age",
    "metrics",
    "max_requests_per_run",
    "refresh_after",
];

const DEFAULT_BASE_URL: &str = "https://data-api.twitter.com";
const DEFAULT_TOKEN_URL: &str = "https://api.twitter.com/oauth2/token";

/// One step of a key path: a table key, or the n-th `[[accounts]]` entry (with its handle).
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Entry(usize, Option<String>),
}

/// A full key such as `api.timeout` or `accounts[1].access_token`, rendered for messages.
#[derive(Clone, Debug, Default)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn child(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    fn entry(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Entry(index, None));
        p
    }

    fn label(&mut self, handle: &str) {
        if let Some(Seg::Entry(_, label)) = self.0.last_mut() {
            *label = Some(handle.to_string());
        }
    }

    /// `[api] base_url`, `[limits.totals] per_minute`, `[[accounts]] #2 (acme) access_token`.
    fn section_form(&self) -> String {
        let Some((last, parents)) = self.0.split_last() else {
            return String::new();
        };
        match (parents.is_empty(), last) {
            (true, Seg::Key(k)) => format!("[{k}]"),
            (_, Seg::Entry(..)) => entry_header(parents, last),
            (false, Seg::Key(k)) => match parents.last() {
                Some(e @ Seg::Entry(..)) => {
                    format!("{} {k}", entry_header(&parents[..parents.len() - 1], e))
                }
                _ => format!("[{}] {k}", dotted(parents)),
            },
        }
    }

    /// The environment variable that overrides this key (`ENGAGEMENT__API__TIMEOUT`).
    fn env_var(&self) -> String {
        let mut out = ENV_PREFIX.to_string();
        for (i, seg) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str("__");
            }
            match seg {
                Seg::Key(k) => out.push_str(&k.to_ascii_uppercase()),
                Seg::Entry(i, h) => out.push_str(
                    &h.clone()
                        .unwrap_or_else(|| format!("<HANDLE OF #{}>", i + 1))
                        .to_ascii_uppercase(),
                ),
            }
        }
        out
    }
}

fn entry_header(parents: &[Seg], entry: &Seg) -> String {
    let Seg::Entry(i, label) = entry else {
        return dotted(parents);
    };
    match label {
        Some(h) => format!("[[{}]] #{} ({h})", dotted(parents), i + 1),
        None => format!("[[{}]] #{}", dotted(parents), i + 1),
    }
}

fn dotted(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        if let Seg::Key(k) = seg {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(k);
        }
    }
    out
}

/// A value taken out of the layered tree, with where it came from.
struct Item {
    path: KeyPath,
    origin: Option<String>,
    kind: ValueKind,
}

impl Item {
    fn is_from_env(&self) -> bool {
        self.origin
            .as_deref()
            .is_some_and(|o| o == CONFIG_CRATE_ENV_ORIGIN || o.starts_with(ENV_ORIGIN_PREFIX))
    }
}

/// A table being read: keys are taken out as they are validated; what is left is unknown.
struct Section {
    path: KeyPath,
    table: Table,
}

impl Section {
    fn take(&mut self, key: &str) -> Option<Item> {
        self.table.remove(key).map(|v| Item {
            path: self.path.child(key),
            origin: v.origin().map(str::to_string),
            kind: v.kind,
        })
    }

    fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }
}

/// Whether a credential field is a secret (redacted, warned about inline) or an identifier.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sensitivity {
    Secret,
    Identifier,
}

struct Loader<'a> {
    name: &'a str,
    text: &'a str,
    doc: &'a DeTable<'a>,
    problems: Vec<String>,
    warnings: Vec<String>,
    loopback: bool,
}

impl Loader<'_> {
    fn config(&mut self, root: Table, account_env: Vec<(String, String)>) -> Config {
        let mut root = Section {
            path: KeyPath::default(),
            table: root,
        };

        let mut sec = self.section(&mut root, "api");
        let api = self.api(&mut sec);
        self.finish(sec, API_KEYS);
        self.loopback = is_loopback_url(&api.base_url);

        let mut sec = self.section(&mut root, "app");
        let app = self.app(&mut sec);
        self.finish(sec, APP_KEYS);

        let accounts = self.accounts(&mut root, account_env);

        let mut sec = self.section(&mut root, "inventory");
        let inventory = InventoryConfig {
            path: self.path(&mut sec, "path", "tweets.csv"),
            recheck_after: self.duration(&mut sec, "recheck_after", "1d"),
            on_invalid: self.on_invalid(&mut sec),
        };
        self.finish(sec, INVENTORY_KEYS);

        let mut sec = self.section(&mut root, "database");
        let database = DatabaseConfig {
            path: self.path(&mut sec, "path", "engagement.sqlite"),
        };
        self.finish(sec, PATH_KEYS);

        let mut sec = self.section(&mut root, "schedule");
        let schedule = ScheduleConfig {
            totals: self.cron(&mut sec, "totals", "0 */15 * * * *"),
            hourly: self.cron(&mut sec, "hourly", "0 5 * * * *"),
            historical: self.cron(&mut sec, "historical", "0 30 3 * * *"),
            jitter: sec
                .contains("jitter")
                .then(|| self.duration(&mut sec, "jitter", "1s")),
        };
        self.finish(sec, SCHEDULE_KEYS);

        let mut sec = self.section(&mut root, "runtime");
        let runtime = RuntimeConfig {
            shutdown_grace: self.duration(&mut sec, "shutdown_grace", "20s"),
        };
        self.finish(sec, RUNTIME_KEYS);

        let mut sec = self.section(&mut root, "limits");
        let limits = LimitsConfig {
            totals: self.limit(&mut sec, "totals"),
            hourly: self.limit(&mut sec, "hourly"),
            historical: self.limit(&mut sec, "historical"),
        };
        self.finish(sec, KIND_KEYS);

        let mut sec = self.section(&mut root, "totals");
        let totals = TotalsConfig {
            max_requests_per_run: self.budget(&mut sec),
        };
        self.finish(sec, TOTALS_KEYS);

        let hourly = self.series(&mut root, "hourly", "3d");
        let historical = self.series(&mut root, "historical", "90d");

        self.finish(root, ROOT_KEYS);
        Config {
            source: None,
            api,
            app,
            accounts,
            inventory,
            database,
            schedule,
            runtime,
            limits,
            totals,
            hourly,
            historical,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn api(&mut self, sec: &mut Section) -> ApiConfig {
        let base_url = self.url(sec, "base_url", DEFAULT_BASE_URL, true);
        // The simulator serves the token endpoint too: never send its credentials to X.
        let token_default = if is_loopback_url(&base_url) {
            base_url
                .join("/oauth2/token")
                .map_or_else(|_| DEFAULT_TOKEN_URL.to_string(), String::from)
        } else {
            DEFAULT_TOKEN_URL.to_string()
        };
        let token_url = self.url(sec, "token_url", &token_default, false);
        let timeout = self.duration(sec, "timeout", "30s");
        let max_in_flight = self.count(sec, "max_in_flight", 4, 1, 64) as usize;
        let user_agent = match sec.take("user_agent") {
            None => format!("engagement-ingest/{}", env!("CARGO_PKG_VERSION")),
            Some(item) => self.non_empty_string(item).unwrap_or_default(),
        };
        let retry_attempts = self.count(sec, "retry_attempts", 5, 1, 20);
        let retry_max_elapsed = self.duration(sec, "retry_max_elapsed", "2m");
        let retry_min_delay = self.duration(sec, "retry_min_delay", "500ms");
        // The largest legal answer (25 Tweets × 17 metrics × 28 days of 12-digit counts) is
        // 5.9 MB compact and 9.6 MB indented (2.8 MB when every count is 0); 16 MiB leaves room
        // for that and keeps `max_in_flight` answers well under the units' memory limits.
        let max_answer_mib = self.count(sec, "max_answer_mib", 16, 1, 1024);
        ApiConfig {
            base_url,
            token_url,
            timeout,
            max_in_flight,
            user_agent,
            retry_attempts,
            retry_max_elapsed,
            retry_min_delay,
            max_answer_mib,
        }
    }

    fn app(&mut self, sec: &mut Section) -> AppConfig {
        let env = |field: &str| format!("{ENV_PREFIX}APP__{}", field.to_ascii_uppercase());
        let consumer_key = self
            .credential(
                sec,
                "consumer_key",
                Sensitivity::Identifier,
                true,
                &env("consumer_key"),
            )
            .unwrap_or_default();
        let consumer_secret = self
            .credential(
                sec,
                "consumer_secret",
                Sensitivity::Secret,
                true,
                &env("consumer_secret"),
            )
            .unwrap_or_default();
        let bearer_token = self.credential(
            sec,
            "bearer_token",
            Sensitivity::Secret,
            false,
            &env("bearer_token"),
        );
        AppConfig {
            consumer_key,
            consumer_secret: Secret::new(consumer_secret),
            bearer_token: bearer_token.map(Secret::new),
        }
    }

    fn accounts(
        &mut self,
        root: &mut Section,
        account_env: Vec<(String, String)>,
    ) -> Vec<AccountConfig> {
        let path = root.path.child("accounts");
        let entries = match root.take("accounts") {
            None => Vec::new(),
            Some(Item {
                kind: ValueKind::Array(a),
                ..
            }) => a,
            Some(item) => {
                self.problem(&item, "must be a list of [[accounts]] tables");
                Vec::new()
            }
        };
        let mut env = self.account_env(account_env);
        let mut accounts = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, value) in entries.into_iter().enumerate() {
            let mut sec = Section {
                path: path.entry(i),
                table: Table::new(),
            };
            match value.kind {
                ValueKind::Table(t) => sec.table = t,
                _ => {
                    let origin = value.origin().map(str::to_string);
                    self.problem_at(&sec.path, origin.as_deref(), "must be a table");
                    continue;
                }
            }
            let handle = match sec.take("handle") {
                None => {
                    self.problem_at(&sec.path, None, "handle is missing (handle = \"acme\")");
                    None
                }
                Some(item) => self.string(&item).and_then(|s| match s.parse::<Handle>() {
                    Ok(h) => Some(h),
                    Err(e) => {
                        self.problem(&item, &e.to_string());
                        None
                    }
                }),
            };
            if let Some(h) = &handle {
                sec.path.label(h.as_str());
                let key = h.as_str().to_ascii_lowercase();
                if let Some(first) = seen.insert(key.clone(), i) {
                    self.problem_at(
                        &sec.path.child("handle"),
                        None,
                        &format!(
                            "{:?} is already used by [[accounts]] #{} (handles are case-insensitive)",
                            h.as_str(),
                            first + 1
                        ),
                    );
                }
                // Environment values override the file, as for every other key.
                for (field, var, value) in env.remove(&key).unwrap_or_default() {
                    let origin = format!("{ENV_ORIGIN_PREFIX}{var}");
                    sec.table.insert(field, Value::new(Some(&origin), value));
                }
            }
            let env_name = |field: &str| {
                let h = handle
                    .as_ref()
                    .map_or("<HANDLE>".to_string(), |h| h.as_str().to_ascii_uppercase());
                format!("{ACCOUNTS_ENV_PREFIX}{h}__{}", field.to_ascii_uppercase())
            };
            let access_token = self.credential(
                &mut sec,
                "access_token",
                Sensitivity::Identifier,
                true,
                &env_name("access_token"),
            );
            let access_token_secret = self.credential(
                &mut sec,
                "access_token_secret",
                Sensitivity::Secret,
                true,
                &env_name("access_token_secret"),
            );
            let user_id = sec
                .take("user_id")
                .and_then(|item| self.int(&item))
                .map(|n| n as u64);
            let enabled = sec
                .take("enabled")
                .and_then(|item| self.boolean(&item))
                .unwrap_or(true);
            self.finish(sec, ACCOUNT_KEYS);
            if let (Some(handle), Some(access_token), Some(secret)) =
                (handle, access_token, access_token_secret)
            {
                accounts.push(AccountConfig {
                    handle,
                    access_token,
                    access_token_secret: Secret::new(secret),
                    user_id,
                    enabled,
                });
            }
        }
        let mut orphans: Vec<_> = env.into_iter().collect();
        orphans.sort();
        for (handle, fields) in orphans {
            for (_, var, _) in fields {
                self.problems.push(format!(
                    "{} (env {var}): no [[accounts]] entry has handle {handle:?}; add one \
                     (handle = {handle:?}) to the config file or remove the variable",
                    self.name
                ));
            }
        }
        accounts
    }

    /// Groups `ENGAGEMENT__ACCOUNTS__<HANDLE>__<FIELD>` variables by lowercased handle.
    #[allow(clippy::type_complexity)]
    fn account_env(
        &mut self,
        vars: Vec<(String, String)>,
    ) -> HashMap<String, Vec<(String, String, String)>> {
        let mut out: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
        let fields = [
            "access_token_secret_file",
            "access_token_secret",
            "access_token_file",
            "access_token",
            "enabled",
        ];
        for (var, value) in vars {
            if value.is_empty() {
                continue;
            }
            let rest = &var[ACCOUNTS_ENV_PREFIX.len()..];
            let found = fields.iter().find_map(|f| {
                let cut = rest.len().checked_sub(f.len() + 2)?;
                let (handle, suffix) = (rest.get(..cut)?, rest.get(cut..)?);
                (!handle.is_empty()
                    && suffix.starts_with("__")
                    && suffix[2..].eq_ignore_ascii_case(f))
                .then(|| {
                    (
                        handle.trim_start_matches('@').to_ascii_lowercase(),
                        f.to_string(),
                    )
                })
            });
            match found {
                Some((handle, field)) => out.entry(handle).or_default().push((field, var, value)),
                None => self.problems.push(format!(
                    "{} (env {var}): not an account setting; use {ACCOUNTS_ENV_PREFIX}<HANDLE>__ACCESS_TOKEN, \
                     __ACCESS_TOKEN_SECRET, __ACCESS_TOKEN_SECRET_FILE or __ENABLED",
                    self.name
                )),
            }
        }
        out
    }

    /// A credential given as `field` (inline), `field_file` (a path) or the environment
    /// (`env_var`). The environment wins over the file; inside one layer, both is an error.
    fn credential(
        &mut self,
        sec: &mut Section,
        field: &str,
        sensitivity: Sensitivity,
        required: bool,
        env_var: &str,
    ) -> Option<String> {
        let file_key = format!("{field}_file");
        let inline = sec.take(field);
        let file = sec.take(&file_key);
        let chosen = match (inline, file) {
            (Some(i), Some(f)) if i.is_from_env() == f.is_from_env() => {
                self.problem(
                    &i,
                    &format!("both {field} and {file_key} are set; keep one"),
                );
                return None;
            }
            (Some(i), Some(f)) => {
                if i.is_from_env() {
                    Ok(i)
                } else {
                    Err(f)
                }
            }
            (Some(i), None) => Ok(i),
            (None, Some(f)) => Err(f),
            (None, None) => {
                if required {
                    self.problem_at(
                        &sec.path.child(field),
                        None,
                        &format!(
                            "missing; set {file_key} = \"PATH\" (a file holding it), the environment \
                             variable {env_var}, or {field} = \"...\""
                        ),
                    );
                }
                return None;
            }
        };
        match chosen {
            Ok(inline) => {
                let value = self.string(&inline)?;
                if value.is_empty() {
                    self.problem(&inline, "is empty");
                    return None;
                }
                if sensitivity == Sensitivity::Secret && !inline.is_from_env() && !self.loopback {
                    let at = self.locate(&inline.path, None);
                    self.warnings.push(format!(
                        "{at}: {}: secret written inline in the config file; move it to {file_key} \
                         or the environment variable {env_var}",
                        inline.path.section_form()
                    ));
                }
                Some(value)
            }
            Err(file) => {
                let path = self.string(&file)?;
                match std::fs::read_to_string(&path) {
                    Ok(contents) => {
                        let value = contents.trim_end_matches(['\n', '\r']);
                        if value.is_empty() {
                            self.problem(&file, &format!("file {path:?} is empty"));
                            return None;
                        }
                        if let Some(mode) = world_writable(Path::new(&path)) {
                            let at = self.locate(&file.path, None);
                            self.warnings.push(format!(
                                "{at}: {}: {path:?} is writable by every user of this machine \
                                 (mode {mode:o}): anyone could replace the secret; `chmod o-w` it \
                                 (0600 or 0640)",
                                file.path.section_form()
                            ));
                        }
                        Some(value.to_string())
                    }
                    Err(e) => {
                        self.problem(&file, &format!("cannot read {path:?}: {e}"));
                        None
                    }
                }
            }
        }
    }

    fn series(&mut self, root: &mut Section, name: &str, max_age: &str) -> SeriesConfig {
        let mut sec = self.section(root, name);
        let max_age = self.duration(&mut sec, "max_age", max_age);
        let metrics = match sec.take("metrics") {
            None => Endpoint::Hour28.metrics(),
            Some(item) => self.metrics(item),
        };
        let max_requests_per_run = self.budget(&mut sec);
        // Only /historical refreshes cells; /28hr always asks for the last 28 hours.
        let historical = name == "historical";
        let refresh_after = if historical {
            let d = self.duration(&mut sec, "refresh_after", "1d");
            if d < Duration::from_secs(3600) {
                let path = sec.path.child("refresh_after");
                self.problem_at(
                    &path,
                    None,
                    "must be at least 1h (an open cell is refreshed at most this often; /28hr covers the last 28 hours)",
                );
            }
            d
        } else {
            Duration::from_secs(DAY_SECS as u64)
        };
        self.finish(
            sec,
            if historical {
                HISTORICAL_KEYS
            } else {
                SERIES_KEYS
            },
        );
        SeriesConfig {
            max_age,
            metrics,
            max_requests_per_run,
            refresh_after,
        }
    }

    fn on_invalid(&mut self, sec: &mut Section) -> OnInvalid {
        let Some(item) = sec.take("on_invalid") else {
            return OnInvalid::Fail;
        };
        match self.string(&item).as_deref() {
            Some("fail") => OnInvalid::Fail,
            Some("skip") => OnInvalid::Skip,
            Some(other) => {
                self.problem(
                    &item,
                    &format!("{other:?} is not one of \"fail\" (send nothing while a line is bad) or \"skip\" (collect the valid lines)"),
                );
                OnInvalid::Fail
            }
            None => OnInvalid::Fail,
        }
    }

    fn boolean(&mut self, item: &Item) -> Option<bool> {
        match &item.kind {
            ValueKind::Boolean(b) => Some(*b),
            // From the environment: a string.
            ValueKind::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            ValueKind::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => {
                self.problem(item, "must be true or false");
                None
            }
        }
    }

    fn metrics(&mut self, item: Item) -> Vec<Metric> {
        let problems_before = self.problems.len();
        let names: Vec<String> = match &item.kind {
            // From the environment: a comma-separated list.
            ValueKind::String(s) => s.split(',').map(|m| m.trim().to_string()).collect(),
            ValueKind::Array(values) => {
                let mut names = Vec::new();
                for v in values {
                    match &v.kind {
                        ValueKind::String(s) => names.push(s.clone()),
                        _ => {
                            self.problem(&item, "must be a list of strings such as [\"impressions\", \"favorites\"]");
                            return Endpoint::Hour28.metrics();
                        }
                    }
                }
                names
            }
            _ => {
                self.problem(
                    &item,
                    "must be a list of strings such as [\"impressions\", \"favorites\"]",
                );
                return Endpoint::Hour28.metrics();
            }
        };
        let mut metrics = Vec::new();
        for name in names {
            match name.parse::<Metric>() {
                Ok(m) if !Endpoint::Hour28.accepts(m) => self.problem(
                    &item,
                    &format!("{name:?} is not served by /28hr or /historical; remove it"),
                ),
                Ok(m) => {
                    if !metrics.contains(&m) {
                        metrics.push(m);
                    }
                }
                Err(_) => {
                    let known: Vec<&str> = Endpoint::Hour28
                        .metrics()
                        .iter()
                        .map(|m| m.as_str())
                        .collect();
                    let hint = suggest(&name, &known).map_or_else(
                        || format!("; known: {}", known.join(", ")),
                        |s| format!(" (did you mean {s:?}?)"),
                    );
                    self.problem(&item, &format!("unknown engagement type {name:?}{hint}"));
                }
            }
        }
        if metrics.is_empty() && self.problems.len() == problems_before {
            self.problem(&item, "must list at least one engagement type");
        }
        metrics
    }

    fn limit(&mut self, limits: &mut Section, name: &str) -> Limit {
        let mut sec = self.section(limits, name);
        let mut per_minute = NonZeroU32::new(60);
        if let Some(item) = sec.take("per_minute") {
            per_minute = self
                .int(&item)
                .and_then(|n| self.u32_or(&item, n))
                .and_then(NonZeroU32::new);
        }
        let per_second = sec
            .take("per_second")
            .and_then(|item| self.int(&item).and_then(|n| self.u32_or(&item, n)))
            .and_then(NonZeroU32::new);
        self.finish(sec, LIMIT_KEYS);
        Limit {
            per_minute,
            per_second,
        }
    }

    fn budget(&mut self, sec: &mut Section) -> Option<NonZeroU32> {
        let item = sec.take("max_requests_per_run")?;
        self.int(&item)
            .and_then(|n| self.u32_or(&item, n))
            .and_then(NonZeroU32::new)
    }

    fn u32_or(&mut self, item: &Item, n: i64) -> Option<u32> {
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(
                    item,
                    &format!("{n} is out of range (0 = unlimited, up to {})", u32::MAX),
                );
                None
            }
        }
    }

    fn url(&mut self, sec: &mut Section, key: &str, default: &str, is_base: bool) -> Url {
        let fallback = || Url::parse(default).expect("default URLs parse");
        let Some(item) = sec.take(key) else {
            return fallback();
        };
        let Some(text) = self.string(&item) else {
            return fallback();
        };
        let shown = if text.contains('@') {
            "the URL".to_string()
        } else {
            format!("{text:?}")
        };
        let url = match Url::parse(&text) {
            Ok(u) => u,
            Err(e) => {
                self.problem(&item, &format!("{shown} is not a URL ({e})"));
                return fallback();
            }
        };
        let mut bad = Vec::new();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_url(&url) => {}
            "http" => bad.push(
                "http:// is only allowed for loopback addresses (127.0.0.0/8, ::1, localhost); use https://"
                    .to_string(),
            ),
            other => bad.push(format!("scheme {other}:// is not supported; use https://")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            bad.push(
                "must not contain credentials; put them in [app] and [[accounts]]".to_string(),
            );
        }
        if is_base && url.path() != "/" {
            bad.push(format!(
                "must have no path (got {:?}); write scheme and host only, e.g. {DEFAULT_BASE_URL:?}",
                url.path()
            ));
        }
        if is_base && url.query().is_some() {
            bad.push("must have no query string".to_string());
        }
        if url.fragment().is_some() {
            bad.push("must have no #fragment".to_string());
        }
        if bad.is_empty() {
            url
        } else {
            for b in bad {
                self.problem(&item, &b);
            }
            fallback()
        }
    }

    fn duration(&mut self, sec: &mut Section, key: &str, default: &str) -> Duration {
        let fallback = parse_duration(default).expect("default durations parse");
        let Some(item) = sec.take(key) else {
            return fallback;
        };
        let text = match &item.kind {
            ValueKind::String(s) => s.clone(),
            _ => {
                self.problem(
                    &item,
                    &format!("must be a string with a unit, e.g. {default:?}"),
                );
                return fallback;
            }
        };
        parse_duration(&text).unwrap_or_else(|e| {
            self.problem(&item, &e);
            fallback
        })
    }

    fn count(&mut self, sec: &mut Section, key: &str, default: u32, min: u32, max: u32) -> u32 {
        let Some(item) = sec.take(key) else {
            return default;
        };
        match self.int(&item) {
            Some(n) if (i64::from(min)..=i64::from(max)).contains(&n) => n as u32,
            Some(n) => {
                self.problem(&item, &format!("{n} is out of range ({min} to {max})"));
                default
            }
            None => default,
        }
    }

    fn cron(&mut self, sec: &mut Section, key: &str, default: &str) -> Cron {
        let fallback = || default.parse::<Cron>().expect("default schedules parse");
        let Some(item) = sec.take(key) else {
            return fallback();
        };
        let Some(text) = self.string(&item) else {
            return fallback();
        };
        match text.parse::<Cron>() {
            Ok(cron) if cron.next_after(Utc::now()).is_none() => {
                self.problem(
                    &item,
                    &format!("{text:?} never fires (no such date from now on); check the day and month fields"),
                );
                fallback()
            }
            Ok(cron) => cron,
            Err(e) => {
                self.problem(&item, &e);
                fallback()
            }
        }
    }

    fn path(&mut self, sec: &mut Section, key: &str, default: &str) -> PathBuf {
        match sec.take(key) {
            None => PathBuf::from(default),
            Some(item) => self
                .non_empty_string(item)
                .map_or_else(|| PathBuf::from(default), PathBuf::from),
        }
    }

    fn non_empty_string(&mut self, item: Item) -> Option<String> {
        let s = self.string(&item)?;
        if s.trim().is_empty() {
            self.problem(&item, "is empty");
            return None;
        }
        Some(s)
    }

    fn string(&mut self, item: &Item) -> Option<String> {
        match &item.kind {
            ValueKind::String(s) => Some(s.clone()),
            _ => {
                self.problem(item, "must be a string");
                None
            }
        }
    }

    fn int(&mut self, item: &Item) -> Option<i64> {
        let n = match &item.kind {
            ValueKind::I64(n) => Some(*n),
            ValueKind::U64(n) => i64::try_from(*n).ok(),
            ValueKind::I128(n) => i64::try_from(*n).ok(),
            ValueKind::U128(n) => i64::try_from(*n).ok(),
            ValueKind::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= 0 => Some(n),
            _ => {
                self.problem(item, "must be a non-negative integer");
                None
            }
        }
    }

    /// Takes the sub-table `name` out of `parent` (empty when absent).
    fn section(&mut self, parent: &mut Section, name: &str) -> Section {
        let path = parent.path.child(name);
        let table = match parent.take(name) {
            None => Table::new(),
            Some(Item {
                kind: ValueKind::Table(t),
                ..
            }) => t,
            Some(item) => {
                self.problem(&item, "must be a table ([section] or { key = value })");
                Table::new()
            }
        };
        Section { path, table }
    }

    /// Reports every key left in `sec` as unknown, suggesting the nearest of `known`.
    fn finish(&mut self, sec: Section, known: &[&str]) {
        let mut left: Vec<(String, Value)> = sec.table.into_iter().collect();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in left {
            let path = sec.path.child(&key);
            let at = self.locate(&path, value.origin());
            let guess = suggest(&key, known);
            let problem = match sec.path.0.last() {
                Some(entry @ Seg::Entry(..)) => {
                    let header = entry_header(&sec.path.0[..sec.path.0.len() - 1], entry);
                    let hint = guess.map_or(String::new(), |s| format!(" (did you mean {s:?}?)"));
                    format!("{at}: unknown key {key:?} in {header}{hint}")
                }
                _ => {
                    let hint = guess.map_or(String::new(), |s| {
                        format!(" (did you mean {:?}?)", qualify(&sec.path, s))
                    });
                    format!("{at}: unknown key {:?}{hint}", qualify(&sec.path, &key))
                }
            };
            self.problems.push(problem);
        }
    }

    fn problem(&mut self, item: &Item, message: &str) {
        self.problem_at(&item.path, item.origin.as_deref(), message);
    }

    fn problem_at(&mut self, path: &KeyPath, origin: Option<&str>, message: &str) {
        let at = self.locate(path, origin);
        self.problems
            .push(format!("{at}: {}: {message}", path.section_form()));
    }

    /// `config.toml:12`, `config.toml` or `config.toml (env ENGAGEMENT__API__TIMEOUT)`.
    fn locate(&self, path: &KeyPath, origin: Option<&str>) -> String {
        match origin {
            Some(CONFIG_CRATE_ENV_ORIGIN) => format!("{} (env {})", self.name, path.env_var()),
            Some(o) if o.starts_with(ENV_ORIGIN_PREFIX) => format!("{} ({o})", self.name),
            _ => match self.offset_of(path) {
                Some(offset) => format!("{}:{}", self.name, line_col(self.text, offset).0),
                None => self.name.to_string(),
            },
        }
    }

    /// Byte offset of the deepest part of `path` written in the file.
    fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        let mut table: Option<&DeTable<'_>> = Some(self.doc);
        let mut value: Option<&DeValue<'_>> = None;
        let mut found = None;
        for seg in &path.0 {
            match seg {
                Seg::Key(k) => {
                    let t = match value {
                        None => table?,
                        Some(DeValue::Table(t)) => t,
                        Some(_) => break,
                    };
                    let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)
                    else {
                        break;
                    };
                    found = Some(key.span().start);
                    table = None;
                    value = Some(v.get_ref());
                }
                Seg::Entry(i, _) => {
                    let Some(DeValue::Array(a)) = value else {
                        break;
                    };
                    let Some(v) = a.get(*i) else { break };
                    if let DeValue::Table(t) = v.get_ref() {
                        // The first key of the entry is on (or right after) its header.
                        if let Some(first) = t.iter().map(|(key, _)| key.span().start).min() {
                            found = Some(first);
                        }
                    }
                    value = Some(v.get_ref());
                }
            }
        }
        found
    }
}

fn qualify(section: &KeyPath, key: &str) -> String {
    let prefix = dotted(&section.0);
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The known key closest to `word`, if it is close enough to be a typo.
fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    if word == "28hr" && known.contains(&"hourly") {
        return Some("hourly");
    }
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The permission bits of a file every user may write to (the file itself, after symlinks),
/// or `None`.
fn world_writable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o002 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[app]
consumer_key = "ck"
consumer_secret = "app-secret-value"

[[accounts]]
handle = "Acme"
access_token = "1001-acme"
access_token_secret = "acme-secret-value"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse("config.toml", text, env(vars))
    }

    fn problems(text: &str, vars: &[(&str, &str)]) -> String {
        parse(text, vars)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.api.base_url.as_str(), "https://data-api.twitter.com/");
        assert_eq!(
            c.api.token_url.as_str(),
            "https://api.twitter.com/oauth2/token"
        );
        assert_eq!(c.api.timeout, Duration::from_secs(30));
        assert_eq!(c.api.max_in_flight, 4);
        assert!(c.api.user_agent.starts_with("engagement-ingest/"));
        assert_eq!(c.app.consumer_secret.expose(), "app-secret-value");
        assert!(c.app.bearer_token.is_none());
        assert_eq!(c.accounts[0].handle.as_str(), "Acme");
        assert_eq!(c.inventory.path, PathBuf::from("tweets.csv"));
        assert_eq!(c.database.path, PathBuf::from("engagement.sqlite"));
        assert_eq!(c.schedule.totals.as_str(), "0 */15 * * * *");
        assert_eq!(c.limit(Endpoint::Hour28).per_minute, NonZeroU32::new(60));
        assert_eq!(c.limit(Endpoint::Totals).per_second, None);
        assert_eq!(c.totals.max_requests_per_run, None);
        assert_eq!(c.hourly.max_age, Duration::from_secs(3 * 86_400));
        assert_eq!(c.historical.max_age, Duration::from_secs(90 * 86_400));
        assert_eq!(c.hourly.metrics, Endpoint::Hour28.metrics());
        assert!(c.account(&"acme".parse().unwrap()).is_some());
        assert!(!c.is_loopback());
        assert_eq!(
            c.secret_values(),
            vec!["app-secret-value", "acme-secret-value"]
        );
        // Two inline secrets against the real API: two warnings, neither holding the value.
        assert_eq!(c.warnings().len(), 2, "{:?}", c.warnings());
        assert!(c.warnings()[0].contains("consumer_secret_file"));
        assert!(c.warnings().iter().all(|w| !w.contains("secret-value")));
    }

    #[test]
    fn environment_overrides_file_keys() {
        let c = parse(
            &format!("{MINIMAL}\n[api]\ntimeout = \"5s\"\n"),
            &[
                ("ENGAGEMENT__API__TIMEOUT", "10s"),
                ("ENGAGEMENT__LIMITS__TOTALS__PER_MINUTE", "30"),
                ("ENGAGEMENT__HOURLY__METRICS", "impressions, favorites"),
                ("ENGAGEMENT_CONFIG", "ignored.toml"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.api.timeout, Duration::from_secs(10));
        assert_eq!(c.limits.totals.per_minute, NonZeroU32::new(30));
        assert_eq!(
            c.hourly.metrics,
            vec![Metric::Impressions, Metric::Favorites]
        );
    }

    #[test]
    fn secrets_come_from_the_environment_without_warnings() {
        let text = r#"
[app]
consumer_key = "ck"
[[accounts]]
handle = "acme"
access_token = "file-token"
"#;
        let c = parse(
            text,
            &[
                ("ENGAGEMENT__APP__CONSUMER_SECRET", "env-app-secret"),
                ("ENGAGEMENT__APP__BEARER_TOKEN", "env-bearer"),
                (
                    "ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN_SECRET",
                    "env-acme-secret",
                ),
                ("ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN", "env-token"),
            ],
        )
        .unwrap();
        assert_eq!(c.app.consumer_secret.expose(), "env-app-secret");
        assert_eq!(c.app.bearer_token.as_ref().unwrap().expose(), "env-bearer");
        assert_eq!(
            c.accounts[0].access_token_secret.expose(),
            "env-acme-secret"
        );
        assert_eq!(c.accounts[0].access_token, "env-token");
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn file_secrets_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("consumer_secret");
        std::fs::write(&secret, "from-a-file\r\n").unwrap();
        let text = format!(
            "[app]\nconsumer_key = \"ck\"\nconsumer_secret_file = {:?}\n",
            secret.display().to_string()
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.app.consumer_secret.expose(), "from-a-file");
        assert!(c.warnings().is_empty());
        assert!(c.accounts.is_empty(), "zero accounts is allowed");
    }

    /// A secret file anyone may write is a secret anyone may replace: said, not refused
    /// (the value is still read), and never with the value.
    #[test]
    fn world_writable_secret_files_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cs");
        std::fs::write(&secret, "w0rld-wr1table").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
        let text = format!(
            "[app]\nconsumer_key = \"ck\"\nconsumer_secret_file = {:?}\n",
            secret.display().to_string()
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.app.consumer_secret.expose(), "w0rld-wr1table");
        let w = c.warnings().join("\n");
        assert!(
            w.contains("config.toml:3: [app] consumer_secret_file:"),
            "{w}"
        );
        assert!(
            w.contains("writable by every user") && w.contains("666"),
            "{w}"
        );
        assert!(!w.contains("w0rld-wr1table"));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(parse(&text, &[]).unwrap().warnings().is_empty());
    }

    #[test]
    fn unreadable_secret_file_names_key_path_and_os_error() {
        let text = "[app]\nconsumer_key = \"ck\"\nconsumer_secret_file = \"/nonexistent/cs\"\n";
        let e = problems(text, &[]);
        assert!(
            e.starts_with(
                "config.toml:3: [app] consumer_secret_file: cannot read \"/nonexistent/cs\""
            ),
            "{e}"
        );
        assert!(e.contains("os error 2"), "{e}");
    }

    #[test]
    fn inline_and_file_secret_together_is_an_error() {
        let text = "[app]\nconsumer_key = \"ck\"\nconsumer_secret = \"s3cr3t\"\nconsumer_secret_file = \"x\"\n";
        let e = problems(text, &[]);
        assert!(
            e.contains(
                "[app] consumer_secret: both consumer_secret and consumer_secret_file are set"
            ),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"));
    }

    #[test]
    fn missing_secret_names_the_three_ways_to_give_it() {
        let e = problems("[app]\nconsumer_key = \"ck\"\n", &[]);
        assert!(e.contains("consumer_secret_file"), "{e}");
        assert!(e.contains("ENGAGEMENT__APP__CONSUMER_SECRET"), "{e}");
        assert!(e.contains("consumer_secret = \"...\""), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let e = problems(&format!("{MINIMAL}\n[api]\ntimout = \"3s\"\n"), &[]);
        assert_eq!(
            e,
            "config.toml:12: unknown key \"api.timout\" (did you mean \"api.timeout\"?)"
        );

        let text = MINIMAL.replace("access_token = ", "acess_token = ");
        let e = problems(&text, &[]);
        assert!(
            e.contains("config.toml:8: unknown key \"acess_token\" in [[accounts]] #1 (Acme) (did you mean \"access_token\"?)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_environment_keys_name_the_variable() {
        let e = problems(MINIMAL, &[("ENGAGEMENT__API__TIMOUT", "3s")]);
        assert!(
            e.contains("(env ENGAGEMENT__API__TIMOUT): unknown key \"api.timout\""),
            "{e}"
        );
        let e = problems(
            MINIMAL,
            &[("ENGAGEMENT__ACCOUNTS__NOBODY__ACCESS_TOKEN_SECRET", "x")],
        );
        assert!(
            e.contains("no [[accounts]] entry has handle \"nobody\""),
            "{e}"
        );
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        let e = problems(
            &format!("{MINIMAL}\n[api]\nbase_url = \"http://example.com\"\n"),
            &[],
        );
        assert_eq!(
            e,
            "config.toml:12: [api] base_url: http:// is only allowed for loopback addresses \
             (127.0.0.0/8, ::1, localhost); use https://"
        );
        for ok in [
            "http://127.0.0.1:8080",
            "http://[::1]:9",
            "http://localhost",
        ] {
            let c = parse(&format!("{MINIMAL}\n[api]\nbase_url = {ok:?}\n"), &[]).unwrap();
            assert!(c.is_loopback());
            assert!(
                c.warnings().is_empty(),
                "simulator credentials are not secrets"
            );
            assert_eq!(c.api.token_url.path(), "/oauth2/token");
            assert_eq!(c.api.token_url.host(), c.api.base_url.host());
        }
        let e = problems(
            &format!("{MINIMAL}\n[api]\nbase_url = \"https://x.test/v1?a=b\"\n"),
            &[],
        );
        assert!(
            e.contains("must have no path") && e.contains("no query"),
            "{e}"
        );
        assert!(
            problems(
                &format!("{MINIMAL}\n[api]\nbase_url = \"ftp://x.test\"\n"),
                &[]
            )
            .contains("ftp://")
        );
    }

    #[test]
    fn five_field_cron_is_rejected_saying_seconds_come_first() {
        let e = problems(
            &format!("{MINIMAL}\n[schedule]\nhourly = \"5 * * * *\"\n"),
            &[],
        );
        assert!(
            e.contains("[schedule] hourly: \"5 * * * *\" has 5 fields, but seconds come first"),
            "{e}"
        );
        assert!(e.contains("\"0 */15 * * * *\""));
        assert!(
            problems(
                &format!("{MINIMAL}\n[schedule]\ntotals = \"0 61 * * * *\"\n"),
                &[]
            )
            .contains("[schedule] totals")
        );
    }

    #[test]
    fn cron_next_after_follows_the_schedule() {
        let cron: Cron = "0 */15 * * * *".parse().unwrap();
        let t = DateTime::parse_from_rfc3339("2024-05-01T10:07:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            cron.next_after(t).unwrap().to_rfc3339(),
            "2024-05-01T10:15:00+00:00"
        );
        let on = DateTime::parse_from_rfc3339("2024-05-01T10:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            cron.next_after(on).unwrap().to_rfc3339(),
            "2024-05-01T10:30:00+00:00"
        );
    }

    #[test]
    fn durations_parse_and_bad_ones_name_the_key() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        for bad in ["", "30", "s", "1.5h", "3w", "-1s", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let e = problems(
            &format!("{MINIMAL}\n[hourly]\nmax_age = \"3 weeks\"\n"),
            &[],
        );
        assert!(
            e.starts_with("config.toml:12: [hourly] max_age: \"3 weeks\" is not a duration"),
            "{e}"
        );
        let e = problems(&format!("{MINIMAL}\n[api]\ntimeout = 30\n"), &[]);
        assert!(
            e.contains("[api] timeout: must be a string with a unit"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = format!(
            "{MINIMAL}\n[api]\ntimout = \"3s\"\nmax_in_flight = 0\n[limits]\ntotals = {{ per_minut = 5 }}\n\
             [hourly]\nmetrics = [\"impressions\", \"quote_tweets\", \"favourites\"]\n\
             [[accounts]]\nhandle = \"ACME\"\naccess_token = \"\"\naccess_token_secret = \"x\"\n"
        );
        let e = parse(&text, &[]).unwrap_err();
        let all = e.to_string();
        assert!(all.contains("unknown key \"api.timout\""), "{all}");
        assert!(
            all.contains("[api] max_in_flight: 0 is out of range (1 to 64)"),
            "{all}"
        );
        assert!(all.contains("unknown key \"limits.totals.per_minut\" (did you mean \"limits.totals.per_minute\"?)"), "{all}");
        assert!(
            all.contains("\"quote_tweets\" is not served by /28hr"),
            "{all}"
        );
        assert!(
            all.contains("unknown engagement type \"favourites\" (did you mean \"favorites\"?)"),
            "{all}"
        );
        assert!(
            all.contains(
                "[[accounts]] #2 (ACME) handle: \"ACME\" is already used by [[accounts]] #1"
            ),
            "{all}"
        );
        assert!(
            all.contains("[[accounts]] #2 (ACME) access_token: is empty"),
            "{all}"
        );
        assert!(all.ends_with(&format!(
            "{} problems in the configuration",
            e.problems.len()
        )));
        assert_eq!(e.problems.len(), 7, "{all}");
    }

    #[test]
    fn invalid_toml_is_located_without_echoing_the_line() {
        let e = problems("[app]\nconsumer_secret = \"unterminated-secret\n", &[]);
        assert!(e.starts_with("config.toml:2:"), "{e}");
        assert!(!e.contains("unterminated-secret"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let c = parse(
            MINIMAL,
            &[("ENGAGEMENT__APP__BEARER_TOKEN", "bearer-secret-value")],
        )
        .unwrap();
        let debug = format!("{c:?}");
        for s in c.secret_values() {
            assert!(!debug.contains(s), "{s} leaked into {debug}");
        }
        assert!(debug.contains("[redacted]"));
        assert_eq!(c.app.consumer_secret.to_string(), "[redacted]");
    }

    #[test]
    fn example_config_loads_with_secrets_from_the_environment() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let c = Config::load(
            None,
            env(&[
                ("ENGAGEMENT_CONFIG", path.to_str().unwrap()),
                ("ENGAGEMENT__APP__CONSUMER_SECRET", "cs"),
                ("ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN_SECRET", "ats"),
                ("ENGAGEMENT__INVENTORY__PATH", "/nonexistent/tweets.csv"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source.as_deref(), Some(path.as_path()));
        assert_eq!(c.inventory.path, PathBuf::from("/nonexistent/tweets.csv"));
        assert_eq!(c.hourly.metrics.len(), 17);
        assert_eq!(
            c.limits.totals,
            Limit {
                per_minute: NonZeroU32::new(60),
                per_second: None
            }
        );
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn no_config_path_is_a_clear_error() {
        let e = Config::load(None, env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no config: pass --config PATH or set ENGAGEMENT_CONFIG"
        );
        let e = Config::load(Some(Path::new("/nonexistent/c.toml")), env(&[])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read config file /nonexistent/c.toml:")
        );
    }
}
