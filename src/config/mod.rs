//! The configuration: a TOML file plus `ENGAGEMENT__SECTION__KEY` environment overrides, validated
//! once into typed sections. Every problem is collected and reported together, each naming the
//! file, the line when known and the full key. Secrets live in [`Secret`] and never reach `Debug`,
//! errors or warnings. Loading reads the config file and `*_file` secrets only: never the
//! inventory, never the database, never the process environment (the caller passes it in).
//!
//! The way through: `tree` parses the TOML once and lays the environment over it; [`raw`] is the
//! file's shape as serde types (every key a field with its final type, its doc comment and its
//! default, read through the adapters of `field`); `validate` turns a [`Raw`] into a [`Config`];
//! `diagnostics` words the problems. This file holds [`Config`], the sections `validate` builds
//! (`[app]`, `[[accounts]]`, `[hourly]`, `[historical]`) and the ways in; the other sections are
//! `raw`'s types, re-exported here.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::{Host, Url};

use crate::domain::{Endpoint, Handle, Metric, Shard};

mod cron;
mod diagnostics;
mod field;
pub mod raw;
mod secret;
mod tree;
mod validate;

pub use cron::Cron;
pub use raw::{
    ApiConfig, DatabaseConfig, InventoryConfig, Limit, LimitsConfig, OnInvalid, RuntimeConfig,
    ScheduleConfig, TotalsConfig,
};
pub use secret::Secret;

use diagnostics::Locator;
use raw::RawConfig;
use tree::{Fault, Node, Seg};

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "ENGAGEMENT_CONFIG";
/// Prefix of the environment variables that override config keys (`ENGAGEMENT__API__TIMEOUT`).
pub const ENV_PREFIX: &str = "ENGAGEMENT__";
/// The environment variable that gives the shard's index when `[runtime] shards` is set (set by
/// Kubernetes in each pod of an Indexed Job).
pub const SHARD_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Prefix of the per-account environment variables (`ENGAGEMENT__ACCOUNTS__ACME__ACCESS_TOKEN`).
const ACCOUNTS_ENV_PREFIX: &str = "ENGAGEMENT__ACCOUNTS__";

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
    /// The shard this instance works on, from `[runtime] shard` or `shards` (and
    /// `JOB_COMPLETION_INDEX`); [`Shard::WHOLE`] when neither is set.
    pub shard: Shard,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[totals]`.
    pub totals: TotalsConfig,
    /// `[hourly]` (the `/28hr` job kind).
    pub hourly: SeriesConfig,
    /// `[historical]`.
    pub historical: HistoricalConfig,
    /// Things that work but should change (inline secrets); see [`Config::warnings`].
    warnings: Vec<String>,
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

/// `[hourly]` and `[historical]`: the time-series job kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesConfig {
    /// Tweets older than this are left to other kinds.
    pub max_age: Duration,
    /// The engagement types requested, each accepted by `/28hr` and `/historical`.
    pub metrics: Vec<Metric>,
    /// Request budget of one run; `None` = no cap.
    pub max_requests_per_run: Option<NonZeroU32>,
}

/// `[historical]`: a series kind, and when its grid cells are final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalConfig {
    pub series: SeriesConfig,
    /// How often a cell that is not final yet is fetched again; default a day (`/28hr` covers
    /// the recent hours meanwhile).
    pub refresh_after: Duration,
    /// How long after an hour ends its numbers may still change; a cell is final once fetched
    /// to its end at least this long after it ended. Default 48 h (the API's docs are silent).
    pub settle_after: Duration,
    /// How far back `/historical` serves data; `None`: back to 2014-09-01. Default 365 days
    /// (the newer overview; the older reference says 2014-09-01).
    pub lookback: Option<Duration>,
}

/// A configuration as written, before validation: its values, where each came from, and what
/// could not even be read (unknown keys, wrong types, variables that fit no key).
#[derive(Debug, Clone)]
pub struct Raw {
    /// The values, each defaulted where it was absent or could not be read.
    pub values: RawConfig,
    at: Locator,
    faults: Vec<Fault>,
    strays: Vec<(String, String)>,
    /// `JOB_COMPLETION_INDEX` as the environment gave it, for `[runtime] shards`.
    shard_index: Option<String>,
}

impl Raw {
    /// Reads TOML `text` (named `source_name` in messages) with the overrides in `env` laid over
    /// it. Only invalid TOML is an error here; every other problem waits for validation.
    pub fn read(
        source_name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Raw, ConfigError> {
        let mut tree = Node::parse(text).map_err(|(offset, message)| {
            let at = offset.map_or(String::new(), |o| {
                let (line, col) = diagnostics::line_col(text, o);
                format!(":{line}:{col}")
            });
            ConfigError::one(format!("{source_name}{at}: invalid TOML: {message}"))
        })?;
        let mut shard_index = None;
        let env = env.into_iter().inspect(|(k, v)| {
            if k == SHARD_INDEX_ENV {
                shard_index = Some(v.clone());
            }
        });
        let strays = tree::overlay(&mut tree, env);
        let at = Locator::new(source_name, text, tree.clone());
        let (values, faults) = tree::deserialize::<RawConfig>(&mut tree);
        Ok(Raw {
            values: values.unwrap_or_default(),
            at,
            faults,
            strays,
            shard_index,
        })
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

/// Parses a positive duration: `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"90d"`, `"2w"`, `"1h30m"`
/// (the parser of [`crate::timespec::parse_duration`], without zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match crate::timespec::parse_duration(s)? {
        Duration::ZERO => Err(format!("{s:?}: the duration must be greater than zero")),
        d => Ok(d),
    }
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

/// The config file named by `path`, else by `ENGAGEMENT_CONFIG` in `env`, as an absolute path
/// (a relative one means little in a log).
fn config_path(path: Option<&Path>, env: &[(String, String)]) -> Option<PathBuf> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => env
            .iter()
            .find(|(k, v)| k == CONFIG_PATH_ENV && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))?,
    };
    Some(std::path::absolute(&path).unwrap_or(path))
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(format!("cannot read config file {}: {e}", path.display())))
}

/// The database a read-only command reads, without validating the rest of the config (so a
/// config whose secrets are not at hand still serves): `ENGAGEMENT__DATABASE__PATH` in `env`,
/// else the `[database] path` of the file named by `path` or `ENGAGEMENT_CONFIG`, else the
/// default. Only that key's problems are errors.
pub fn database_path(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<crate::store::Target, ConfigError> {
    use crate::store::Target;
    let env: Vec<(String, String)> = env.into_iter().collect();
    // The variable wins over the file: then the file is not even read.
    let var = format!("{ENV_PREFIX}DATABASE__PATH");
    if let Some((_, p)) = env.iter().find(|(k, v)| *k == var && !v.is_empty()) {
        return Target::parse(Path::new(p), None).map_err(ConfigError::one);
    }
    let Some(file) = config_path(path, &env) else {
        return Ok(Target::Sqlite(DatabaseConfig::default().path));
    };
    let raw = Raw::read(&file.display().to_string(), &read_config_file(&file)?, env)?;
    let problems: Vec<String> = raw
        .faults
        .iter()
        .filter(|f| {
            f.path.len() >= 2
                && f.path[0] == Seg::Key("database".into())
                && ["path", "url", "password", "password_file"]
                    .iter()
                    .any(|k| f.path[1] == Seg::Key((*k).into()))
        })
        .map(|f| raw.at.fault(f))
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let database = raw.values.database;
    let Some(url) = database.url else {
        return Ok(Target::Sqlite(database.path));
    };
    // The password as `run` finds it: inline, else its file, else the environment's.
    let password = match (database.password, database.password_file) {
        (Some(p), _) => Some(Secret::new(p)),
        (None, Some(file)) => Some(Secret::new(
            secret::read_file(&file)
                .map_err(|e| ConfigError::one(format!("[database] password_file: {e}")))?
                .value,
        )),
        (None, None) => None,
    };
    crate::store::PgTarget::parse(&url, password.as_ref())
        .map(Target::Postgres)
        .map_err(ConfigError::one)
}

impl Config {
    /// Loads `path`, else the file named by `ENGAGEMENT_CONFIG` in `env`, layered with the
    /// `ENGAGEMENT__SECTION__KEY` variables of `env`, and validates it.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let path = config_path(path, &env).ok_or_else(|| {
            ConfigError::one("no config: pass --config PATH or set ENGAGEMENT_CONFIG")
        })?;
        let text = read_config_file(&path)?;
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
        Config::try_from(Raw::read(source_name, text, env)?)
    }

    /// Things that work but should change (inline secrets), for the caller to log at startup.
    /// They name keys and files, never a secret value.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The rate limit this instance paces endpoint `e` at: its shard's share of the contract's
    /// (`[limits]`), each window's figure divided by the number of shards (rounded down, at
    /// least 1). Without shards, `[limits]` itself.
    pub fn limit(&self, e: Endpoint) -> Limit {
        let contract = *self.contract_limit(e);
        let share = |n: Option<NonZeroU32>| n.map(|n| self.shard.share(n));
        Limit {
            per_minute: share(contract.per_minute),
            per_second: share(contract.per_second),
        }
    }

    /// The contract's rate limit of endpoint `e`, as `[limits]` says (every shard's together).
    pub fn contract_limit(&self, e: Endpoint) -> &Limit {
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

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

    /// `historical.lookback` takes a duration of at least 28 days, or 0 (written as a number or
    /// a string) for no limit; `settle_after` a duration.
    #[test]
    fn lookback_and_settle_after() {
        let with = |body: &str| format!("{MINIMAL}\n[historical]\n{body}\n");
        for zero in ["lookback = 0", "lookback = \"0\""] {
            assert_eq!(parse(&with(zero), &[]).unwrap().historical.lookback, None);
        }
        let c = parse(&with("lookback = \"400d\"\nsettle_after = \"3d\""), &[]).unwrap();
        assert_eq!(
            c.historical.lookback,
            Some(Duration::from_secs(400 * 86_400))
        );
        assert_eq!(c.historical.settle_after, Duration::from_secs(3 * 86_400));
        let e = problems(&with("lookback = \"10d\""), &[]);
        assert!(
            e.contains("[historical] lookback") && e.contains("at least 28d"),
            "{e}"
        );
        let e = problems(&with("lookback = 365"), &[]);
        assert!(e.contains("has no unit") && e.contains("365d"), "{e}");
        let e = problems(&with("settle_after = \"soon\""), &[]);
        assert!(e.contains("settle_after"), "{e}");
    }

    /// `[runtime] shard = "I/N"`, or `shards = N` with `JOB_COMPLETION_INDEX`; neither is the
    /// whole inventory. Each mistake names the file, the key and what to do.
    #[test]
    fn the_shard_comes_from_shard_or_shards_and_the_job_index() {
        let with = |body: &str| format!("{MINIMAL}\n[runtime]\n{body}\n");
        let shard = |text: &str, vars: &[(&str, &str)]| parse(text, vars).unwrap().shard;
        assert_eq!(
            shard(MINIMAL, &[("JOB_COMPLETION_INDEX", "3")]),
            Shard::WHOLE
        );
        assert_eq!(
            shard(&with("shard = \"1/4\""), &[]),
            Shard::new(1, 4).unwrap()
        );
        assert_eq!(
            shard(&with("shards = 3"), &[("JOB_COMPLETION_INDEX", "2")]),
            Shard::new(2, 3).unwrap()
        );
        assert_eq!(
            shard(
                MINIMAL,
                &[
                    ("ENGAGEMENT__RUNTIME__SHARDS", "2"),
                    ("JOB_COMPLETION_INDEX", "0")
                ]
            ),
            Shard::new(0, 2).unwrap()
        );
        assert_eq!(
            shard(MINIMAL, &[("ENGAGEMENT__RUNTIME__SHARD", "0/2")]),
            Shard::new(0, 2).unwrap()
        );
        /// The `[runtime]` body, the environment, words the problem must contain.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: [Case; 8] = [
            (
                "shard = \"4/4\"",
                &[],
                &["config.toml:", "[runtime] shard", "0 to 3"],
            ),
            ("shard = \"0/0\"", &[], &["[runtime] shard", "at least 1"]),
            ("shard = \"two\"", &[], &["[runtime] shard", "\"I/N\""]),
            (
                "shards = 0",
                &[("JOB_COMPLETION_INDEX", "0")],
                &["[runtime] shards", "at least 1"],
            ),
            (
                "shards = 4",
                &[],
                &[
                    "[runtime] shards",
                    "JOB_COMPLETION_INDEX",
                    "not set",
                    "shard = \"I/4\"",
                ],
            ),
            (
                "shards = 4",
                &[("JOB_COMPLETION_INDEX", "x1")],
                &["[runtime] shards", "\"x1\"", "0 to 3"],
            ),
            (
                "shards = 4",
                &[("JOB_COMPLETION_INDEX", "4")],
                &["[runtime] shards", "JOB_COMPLETION_INDEX=4", "0 to 3"],
            ),
            (
                "shard = \"0/2\"\nshards = 2",
                &[("JOB_COMPLETION_INDEX", "0")],
                &["[runtime] shard", "keep one"],
            ),
        ];
        for (body, vars, words) in cases {
            let e = problems(&with(body), vars);
            for w in words {
                assert!(e.contains(w), "{body:?}: {w:?} not in {e}");
            }
        }
    }

    /// A shard paces at its share of `[limits]`: each figure divided by the number of shards,
    /// rounded down, at least 1; unlimited stays unlimited. `[limits]` itself is unchanged.
    #[test]
    fn a_shard_paces_at_its_share_of_the_limits() {
        let text = format!(
            "{MINIMAL}\n[runtime]\nshard = \"2/4\"\n[limits]\ntotals = {{ per_minute = 90, per_second = 3 }}\nhourly = {{ per_minute = 0 }}\n"
        );
        let c = parse(&text, &[]).unwrap();
        let limit = |per_minute, per_second| Limit {
            per_minute: NonZeroU32::new(per_minute),
            per_second: NonZeroU32::new(per_second),
        };
        assert_eq!(c.limit(Endpoint::Totals), limit(22, 1));
        assert_eq!(*c.contract_limit(Endpoint::Totals), limit(90, 3));
        assert_eq!(c.limit(Endpoint::Hour28), limit(0, 0));
        assert_eq!(c.limit(Endpoint::Historical), limit(15, 0));
        let whole = parse(MINIMAL, &[]).unwrap();
        assert_eq!(whole.limit(Endpoint::Historical), limit(60, 0));
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
        assert_eq!(
            c.historical.series.max_age,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(c.historical.settle_after, Duration::from_secs(48 * 3600));
        assert_eq!(
            c.historical.lookback,
            Some(Duration::from_secs(365 * 86_400))
        );
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
        // Weeks too: the config reads durations as the command line does.
        assert_eq!(parse_duration("3w"), Ok(Duration::from_secs(21 * 86_400)));
        for bad in ["", "30", "s", "1.5h", "-1s", "0s"] {
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

    /// A field's own check (a range, a blank value) is reported with its key and where it was
    /// set, among the other problems.
    #[test]
    fn a_fields_own_check_names_its_key_and_where_it_was_set() {
        let text = format!(
            "{MINIMAL}\n[api]\nretry_attempts = 21\nuser_agent = \" \"\n\
             [totals]\nmax_requests_per_run = 4294967296\n"
        );
        let e = parse(&text, &[("ENGAGEMENT__LIMITS__HOURLY__PER_SECOND", "-1")]).unwrap_err();
        assert_eq!(
            e.problems,
            vec![
                "config.toml:12: [api] retry_attempts: 21 is out of range (1 to 20)",
                "config.toml:13: [api] user_agent: is empty",
                "config.toml:15: [totals] max_requests_per_run: 4294967296 is out of range \
                 (0 = unlimited, up to 4294967295)",
                "config.toml (env ENGAGEMENT__LIMITS__HOURLY__PER_SECOND): [limits.hourly] \
                 per_second: must be a non-negative integer",
            ]
        );
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

    /// Read-only commands read `[database] path` alone: secrets need not be at hand, unknown
    /// keys elsewhere do not matter, and the variable wins over the file.
    #[test]
    fn the_database_path_is_read_without_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[app]\ntypo = 1\n[database]\npath = \"db/e.sqlite\"\n",
        )
        .unwrap();
        let read = |vars: &[(&str, &str)]| database_path(Some(&file), env(vars));
        assert_eq!(
            read(&[]).unwrap().sqlite_path(),
            Some(Path::new("db/e.sqlite"))
        );
        assert_eq!(
            read(&[("ENGAGEMENT__DATABASE__PATH", "/x.sqlite")])
                .unwrap()
                .sqlite_path(),
            Some(Path::new("/x.sqlite"))
        );
        assert_eq!(
            database_path(None, env(&[])).unwrap().sqlite_path(),
            Some(Path::new("engagement.sqlite"))
        );
        std::fs::write(&file, "[database]\npath = 5\n").unwrap();
        let e = read(&[]).unwrap_err().to_string();
        assert!(
            e.ends_with("c.toml:2: [database] path: must be a string"),
            "{e}"
        );
    }

    /// What the simulator exports is the config's own types: only what differs from the
    /// defaults (and the database), and it reads back to the same values.
    #[test]
    fn raw_values_write_back_as_toml_that_reads_the_same() {
        let written = raw::RawConfig::default().to_toml().unwrap();
        assert_eq!(written, "[database]\npath = \"engagement.sqlite\"\n");
        let mut values = raw::RawConfig::default();
        values.api.retry_min_delay = Duration::from_millis(250);
        values.hourly.metrics = raw::MetricNames(vec!["impressions".into()]);
        values.schedule.jitter = Some(Duration::from_secs(90));
        values.inventory.on_invalid = OnInvalid::Skip;
        let text = format!("{MINIMAL}{}", values.to_toml().unwrap());
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.api.retry_min_delay, Duration::from_millis(250));
        assert_eq!(c.hourly.metrics, vec![Metric::Impressions]);
        assert_eq!(c.schedule.jitter, Some(Duration::from_secs(90)));
        assert_eq!(c.inventory.on_invalid, OnInvalid::Skip);
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
