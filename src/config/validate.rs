//! The one validation step, [`Raw`] → [`Config`]: what needs more than one value or the whole
//! config: the URLs' rules and the token URL derived from the base URL, engagement types,
//! handles, schedules that never fire, and each credential from its inline value, its `*_file`
//! or the environment (reading those files). Every problem is collected, none stops the others;
//! each is worded by `diagnostics`. The keys themselves, their defaults and the checks of one
//! value alone (ranges, blank strings) are `raw`'s and `field`'s.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use url::Url;

use super::diagnostics::{Locator, path, suggest};
use super::raw::{
    DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, MetricNames, RawAccount, RawApp, RawConfig, RawHistorical,
    RawHourly, RuntimeConfig,
};
use super::secret::{self, Secret};
use super::tree::Seg;
use super::{
    AccountConfig, ApiConfig, AppConfig, Config, ConfigError, HistoricalConfig, Raw,
    SHARD_INDEX_ENV, ScheduleConfig, SeriesConfig, is_loopback_url,
};
use crate::domain::{DAY_SECS, Endpoint, Handle, JobKind, Metric, Shard, ShardError};

impl TryFrom<Raw> for Config {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Config, ConfigError> {
        let Raw {
            values,
            at,
            faults,
            strays,
            shard_index,
        } = raw;
        let mut problems: Vec<String> = faults.iter().map(|f| at.fault(f)).collect();
        problems.extend(strays.iter().map(|(var, why)| at.stray(var, why)));
        let mut check = Check {
            at: &at,
            problems,
            warnings: Vec::new(),
            loopback: false,
        };
        let config = check.config(values, shard_index.as_deref());
        let Check {
            mut problems,
            warnings,
            ..
        } = check;
        if problems.is_empty() {
            return Ok(Config { warnings, ..config });
        }
        at.sort(&mut problems);
        Err(ConfigError { problems })
    }
}

/// Whether a credential is a secret (redacted, warned about inline) or an identifier.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sensitivity {
    Secret,
    Identifier,
}

struct Check<'a> {
    at: &'a Locator,
    problems: Vec<String>,
    warnings: Vec<String>,
    /// The API is the simulator on this machine: inline secrets are not warned about.
    loopback: bool,
}

impl Check<'_> {
    fn problem(&mut self, path: &[Seg], message: &str) {
        self.problems.push(self.at.problem(path, message));
    }

    fn config(&mut self, raw: RawConfig, shard_index: Option<&str>) -> Config {
        let RawConfig {
            mut api,
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
        } = raw;
        self.api(&mut api);
        self.loopback = is_loopback_url(&api.base_url);
        let app = self.app(app);
        let accounts = self.accounts(accounts);
        let database = self.database(database);
        self.schedule(&schedule);
        let shard = self.shard(&runtime, shard_index);
        Config {
            source: None,
            api,
            app,
            accounts,
            inventory,
            database,
            schedule,
            runtime,
            shard,
            limits,
            totals,
            hourly: self.hourly(hourly),
            historical: self.historical(historical),
            warnings: Vec::new(),
        }
    }

    /// The URLs' rules; `token_url`, when left out, follows a loopback `base_url`.
    fn api(&mut self, api: &mut ApiConfig) {
        self.url("api.base_url", &api.base_url, true);
        if self.at.is_written(&path("api.token_url")) {
            self.url("api.token_url", &api.token_url, false);
        } else if is_loopback_url(&api.base_url) {
            // The simulator serves the token endpoint too: never send its credentials to X.
            api.token_url = api
                .base_url
                .join("/oauth2/token")
                .unwrap_or_else(|_| Url::parse(DEFAULT_TOKEN_URL).expect("default URLs parse"));
        }
    }

    /// `[database]`: `url` (PostgreSQL, with its password) or `path` (SQLite), not both.
    fn database(&mut self, mut db: crate::config::DatabaseConfig) -> crate::config::DatabaseConfig {
        let section = [Seg::Key("database".into())];
        let password = self.credential(
            &section,
            "password",
            (db.password.take(), db.password_file.take()),
            Sensitivity::Secret,
            false,
        );
        let Some(url) = db.url.clone() else {
            if password.is_some() {
                self.problem(
                    &path("database.password"),
                    "is set but [database] url is not: a password is for a PostgreSQL server",
                );
            }
            return db;
        };
        if self.at.is_written(&path("database.path")) {
            self.problem(
                &path("database.url"),
                "both [database] url and path are set; keep url for PostgreSQL or path for SQLite",
            );
            return db;
        }
        let password = password.map(crate::config::Secret::new);
        match crate::store::PgTarget::parse(&url, password.as_ref()) {
            Ok(target) => {
                db.path = std::path::PathBuf::from(target.to_string());
                db.target = Some(crate::store::Target::Postgres(target));
            }
            Err(e) => self.problem(&path("database.url"), &e),
        }
        db
    }

    /// Each schedule fires again.
    fn schedule(&mut self, schedule: &ScheduleConfig) {
        for kind in JobKind::ALL {
            let cron = schedule.of(kind);
            if cron.next_after(Utc::now()).is_none() {
                self.problem(
                    &path(&format!("schedule.{}", kind.name())),
                    &format!(
                        "{:?} never fires (no such date from now on); check the day and month fields",
                        cron.as_str()
                    ),
                );
            }
        }
    }

    /// `[runtime] shard = "I/N"`, or `shards = N` with I from `JOB_COMPLETION_INDEX`
    /// (`index_var`); neither: the whole inventory.
    fn shard(&mut self, runtime: &RuntimeConfig, index_var: Option<&str>) -> Shard {
        let (shard_key, shards_key) = (path("runtime.shard"), path("runtime.shards"));
        let resolved = match (&runtime.shard, runtime.shards) {
            (None, None) => return Shard::WHOLE,
            (Some(_), Some(_)) => Err((
                shard_key,
                "both shard and shards are set; keep one: shard = \"I/N\" names this \
                 instance's shard, shards = N takes it from JOB_COMPLETION_INDEX"
                    .to_string(),
            )),
            (Some(s), None) => s.parse::<Shard>().map_err(|e| (shard_key, e.to_string())),
            (None, Some(n)) => match (u32::try_from(n), index_var.map(str::trim)) {
                (Ok(0), _) => Err((shards_key, ShardError::NoShards.to_string())),
                (Err(_), _) => Err((
                    shards_key,
                    format!("{n} is out of range (1 to {})", u32::MAX),
                )),
                (Ok(_), None | Some("")) => Err((
                    shards_key,
                    format!(
                        "the environment variable {SHARD_INDEX_ENV} (this instance's shard, 0 to \
                         {}) is not set; set it (Kubernetes does in an Indexed Job), or write \
                         shard = \"I/{n}\" instead",
                        n - 1
                    ),
                )),
                (Ok(count), Some(i)) => match i.parse::<u32>() {
                    Ok(index) if i.bytes().all(|b| b.is_ascii_digit()) => Shard::new(index, count)
                        .map_err(|e| (shards_key, format!("{SHARD_INDEX_ENV}={i}: {e}"))),
                    _ => Err((
                        shards_key,
                        format!(
                            "the environment variable {SHARD_INDEX_ENV} is {i:?}, not a shard \
                             index (a number from 0 to {})",
                            n - 1
                        ),
                    )),
                },
            },
        };
        resolved.unwrap_or_else(|(key, message)| {
            self.problem(&key, &message);
            Shard::WHOLE
        })
    }

    fn app(&mut self, raw: RawApp) -> AppConfig {
        let section = path("app");
        let consumer_key = self.credential(
            &section,
            "consumer_key",
            (raw.consumer_key, raw.consumer_key_file),
            Sensitivity::Identifier,
            true,
        );
        let consumer_secret = self.credential(
            &section,
            "consumer_secret",
            (raw.consumer_secret, raw.consumer_secret_file),
            Sensitivity::Secret,
            true,
        );
        let bearer_token = self.credential(
            &section,
            "bearer_token",
            (raw.bearer_token, raw.bearer_token_file),
            Sensitivity::Secret,
            false,
        );
        AppConfig {
            consumer_key: consumer_key.unwrap_or_default(),
            consumer_secret: Secret::new(consumer_secret.unwrap_or_default()),
            bearer_token: bearer_token.map(Secret::new),
        }
    }

    fn accounts(&mut self, raw: Vec<RawAccount>) -> Vec<AccountConfig> {
        let mut accounts = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, a) in raw.into_iter().enumerate() {
            let entry = vec![Seg::Key("accounts".into()), Seg::Index(i)];
            let field = |f: &str| [entry.clone(), vec![Seg::Key(f.into())]].concat();
            let handle = match &a.handle {
                None => {
                    self.problem(&entry, "handle is missing (handle = \"acme\")");
                    None
                }
                Some(h) => match h.parse::<Handle>() {
                    Ok(h) => Some(h),
                    Err(e) => {
                        self.problem(&field("handle"), &e.to_string());
                        None
                    }
                },
            };
            if let Some(h) = &handle
                && let Some(first) = seen.insert(h.as_str().to_ascii_lowercase(), i)
            {
                self.problem(
                    &field("handle"),
                    &format!(
                        "{:?} is already used by [[accounts]] #{} (handles are case-insensitive)",
                        h.as_str(),
                        first + 1
                    ),
                );
            }
            let access_token = self.credential(
                &entry,
                "access_token",
                (a.access_token, a.access_token_file),
                Sensitivity::Identifier,
                true,
            );
            let access_token_secret = self.credential(
                &entry,
                "access_token_secret",
                (a.access_token_secret, a.access_token_secret_file),
                Sensitivity::Secret,
                true,
            );
            if let (Some(handle), Some(access_token), Some(secret)) =
                (handle, access_token, access_token_secret)
            {
                accounts.push(AccountConfig {
                    handle,
                    access_token,
                    access_token_secret: Secret::new(secret),
                    user_id: a.user_id,
                    enabled: a.enabled,
                });
            }
        }
        accounts
    }

    /// A credential given as `field` (inline), `field_file` (a path) or the environment (which
    /// sets either). The environment wins over the file; inside one layer, both is an error.
    fn credential(
        &mut self,
        section: &[Seg],
        field: &str,
        (inline, file): (Option<String>, Option<String>),
        sensitivity: Sensitivity,
        required: bool,
    ) -> Option<String> {
        let file_key = format!("{field}_file");
        let inline_path = [section, &[Seg::Key(field.to_string())]].concat();
        let file_path = [section, &[Seg::Key(file_key.clone())]].concat();
        let env_var = self.at.env_var(&inline_path);
        let inline_env = self.at.is_from_env(&inline_path);
        let chosen = match (inline, file) {
            (Some(_), Some(_)) if inline_env == self.at.is_from_env(&file_path) => {
                self.problem(
                    &inline_path,
                    &format!("both {field} and {file_key} are set; keep one"),
                );
                return None;
            }
            (Some(i), Some(f)) => {
                if inline_env {
                    Ok(i)
                } else {
                    Err(f)
                }
            }
            (Some(i), None) => Ok(i),
            (None, Some(f)) => Err(f),
            (None, None) => {
                if required {
                    self.problem(
                        &inline_path,
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
            Ok(value) if value.is_empty() => {
                self.problem(&inline_path, "is empty");
                None
            }
            Ok(value) => {
                if sensitivity == Sensitivity::Secret && !inline_env && !self.loopback {
                    let warning = self.at.problem(
                        &inline_path,
                        &format!(
                            "secret written inline in the config file; move it to {file_key} \
                             or the environment variable {env_var}"
                        ),
                    );
                    self.warnings.push(warning);
                }
                Some(value)
            }
            Err(file) => match secret::read_file(&file) {
                Ok(read) => {
                    if let Some(mode) = read.world_writable {
                        let warning = self.at.problem(
                            &file_path,
                            &format!(
                                "{file:?} is writable by every user of this machine (mode \
                                 {mode:o}): anyone could replace the secret; `chmod o-w` it \
                                 (0600 or 0640)"
                            ),
                        );
                        self.warnings.push(warning);
                    }
                    Some(read.value)
                }
                Err(why) => {
                    self.problem(&file_path, &why);
                    None
                }
            },
        }
    }

    fn hourly(&mut self, raw: RawHourly) -> SeriesConfig {
        SeriesConfig {
            max_age: raw.max_age,
            metrics: self.metrics("hourly.metrics", &raw.metrics),
            max_requests_per_run: raw.max_requests_per_run,
        }
    }

    fn historical(&mut self, raw: RawHistorical) -> HistoricalConfig {
        if raw.refresh_after < Duration::from_secs(3600) {
            self.problem(
                &path("historical.refresh_after"),
                "must be at least 1h (an open cell is refreshed at most this often; /28hr covers the last 28 hours)",
            );
        }
        // The 28-day grid: a lookback shorter than a cell would leave nothing to ask for.
        if raw
            .lookback
            .is_some_and(|l| l < Duration::from_secs(28 * DAY_SECS as u64))
        {
            self.problem(
                &path("historical.lookback"),
                "must be at least 28d (one /historical window), or 0 for no limit (back to 2014-09-01)",
            );
        }
        HistoricalConfig {
            series: SeriesConfig {
                max_age: raw.max_age,
                metrics: self.metrics("historical.metrics", &raw.metrics),
                max_requests_per_run: raw.max_requests_per_run,
            },
            refresh_after: raw.refresh_after,
            settle_after: raw.settle_after,
            lookback: raw.lookback,
        }
    }

    fn metrics(&mut self, key: &str, names: &MetricNames) -> Vec<Metric> {
        let key = path(key);
        let problems_before = self.problems.len();
        let mut metrics = Vec::new();
        for name in &names.0 {
            match name.parse::<Metric>() {
                Ok(m) if !Endpoint::Hour28.accepts(m) => self.problem(
                    &key,
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
                    let hint = suggest(name, &known).map_or_else(
                        || format!("; known: {}", known.join(", ")),
                        |s| format!(" (did you mean {s:?}?)"),
                    );
                    self.problem(&key, &format!("unknown engagement type {name:?}{hint}"));
                }
            }
        }
        if metrics.is_empty() && self.problems.len() == problems_before {
            self.problem(&key, "must list at least one engagement type");
        }
        metrics
    }

    /// The rules of a URL that parsed: scheme, no credentials, and for the base no path or query.
    fn url(&mut self, key: &str, url: &Url, is_base: bool) {
        let key = path(key);
        let mut bad = Vec::new();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_url(url) => {}
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
        for b in bad {
            self.problem(&key, &b);
        }
    }
}
