//! The one validation step, [`Raw`] → [`Config`]: ranges, URLs, engagement types, handles, and
//! each credential from its inline value, its `*_file` or the environment (reading those files).
//! Every problem is collected, none stops the others; each is worded by `diagnostics`. The keys
//! themselves and their defaults are `raw`'s.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use url::Url;

use super::diagnostics::{Locator, path, suggest};
use super::raw::{
    DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, MetricNames, RawAccount, RawApi, RawApp, RawConfig,
    RawHistorical, RawHourly, RawLimit,
};
use super::secret::{self, Secret};
use super::tree::Seg;
use super::{
    AccountConfig, ApiConfig, AppConfig, Config, ConfigError, Cron, DatabaseConfig,
    InventoryConfig, Limit, LimitsConfig, Raw, RuntimeConfig, ScheduleConfig, SeriesConfig,
    TotalsConfig, is_loopback_url,
};
use crate::domain::{DAY_SECS, Endpoint, Handle, Metric};

impl TryFrom<Raw> for Config {
    type Error = ConfigError;

    fn try_from(raw: Raw) -> Result<Config, ConfigError> {
        let Raw {
            values,
            at,
            faults,
            strays,
        } = raw;
        let mut problems: Vec<String> = faults.iter().map(|f| at.fault(f)).collect();
        problems.extend(strays.iter().map(|(var, why)| at.stray(var, why)));
        let mut check = Check {
            at: &at,
            problems,
            warnings: Vec::new(),
            loopback: false,
        };
        let config = check.config(values);
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

    fn config(&mut self, raw: RawConfig) -> Config {
        let api = self.api(raw.api);
        self.loopback = is_loopback_url(&api.base_url);
        let app = self.app(raw.app);
        let accounts = self.accounts(raw.accounts);
        let inventory = InventoryConfig {
            path: self.path("inventory.path", raw.inventory.path),
            recheck_after: raw.inventory.recheck_after.0,
            on_invalid: raw.inventory.on_invalid,
        };
        let database = DatabaseConfig {
            path: self.path("database.path", raw.database.path),
        };
        let s = raw.schedule;
        let schedule = ScheduleConfig {
            totals: self.cron("schedule.totals", s.totals),
            hourly: self.cron("schedule.hourly", s.hourly),
            historical: self.cron("schedule.historical", s.historical),
            jitter: s.jitter.map(|j| j.0),
        };
        let limits = LimitsConfig {
            totals: self.limit("limits.totals", &raw.limits.totals),
            hourly: self.limit("limits.hourly", &raw.limits.hourly),
            historical: self.limit("limits.historical", &raw.limits.historical),
        };
        let totals = TotalsConfig {
            max_requests_per_run: self.budget(
                "totals.max_requests_per_run",
                raw.totals.max_requests_per_run,
            ),
        };
        Config {
            source: None,
            api,
            app,
            accounts,
            inventory,
            database,
            schedule,
            runtime: RuntimeConfig {
                shutdown_grace: raw.runtime.shutdown_grace.0,
            },
            limits,
            totals,
            hourly: self.hourly(raw.hourly),
            historical: self.historical(raw.historical),
            warnings: Vec::new(),
        }
    }

    fn api(&mut self, raw: RawApi) -> ApiConfig {
        let base_url = self.url("api.base_url", &raw.base_url, DEFAULT_BASE_URL, true);
        // The simulator serves the token endpoint too: never send its credentials to X.
        let token_default = if is_loopback_url(&base_url) {
            base_url
                .join("/oauth2/token")
                .map_or_else(|_| DEFAULT_TOKEN_URL.to_string(), String::from)
        } else {
            DEFAULT_TOKEN_URL.to_string()
        };
        let token_url = match &raw.token_url {
            Some(t) => self.url("api.token_url", t, &token_default, false),
            None => Url::parse(&token_default).expect("default URLs parse"),
        };
        if raw.user_agent.trim().is_empty() {
            self.problem(&path("api.user_agent"), "is empty");
        }
        ApiConfig {
            base_url,
            token_url,
            timeout: raw.timeout.0,
            max_in_flight: self.count("api.max_in_flight", raw.max_in_flight, 1, 64) as usize,
            user_agent: raw.user_agent,
            retry_attempts: self.count("api.retry_attempts", raw.retry_attempts, 1, 20),
            retry_max_elapsed: raw.retry_max_elapsed.0,
            retry_min_delay: raw.retry_min_delay.0,
            max_answer_mib: self.count("api.max_answer_mib", raw.max_answer_mib, 1, 1024),
        }
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
            max_age: raw.max_age.0,
            metrics: self.metrics("hourly.metrics", &raw.metrics),
            max_requests_per_run: self
                .budget("hourly.max_requests_per_run", raw.max_requests_per_run),
            // Only /historical refreshes cells; /28hr always asks for the last 28 hours.
            refresh_after: Duration::from_secs(DAY_SECS as u64),
        }
    }

    fn historical(&mut self, raw: RawHistorical) -> SeriesConfig {
        if raw.refresh_after.0 < Duration::from_secs(3600) {
            self.problem(
                &path("historical.refresh_after"),
                "must be at least 1h (an open cell is refreshed at most this often; /28hr covers the last 28 hours)",
            );
        }
        SeriesConfig {
            max_age: raw.max_age.0,
            metrics: self.metrics("historical.metrics", &raw.metrics),
            max_requests_per_run: self
                .budget("historical.max_requests_per_run", raw.max_requests_per_run),
            refresh_after: raw.refresh_after.0,
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

    fn limit(&mut self, key: &str, raw: &RawLimit) -> Limit {
        Limit {
            per_minute: self.budget(&format!("{key}.per_minute"), raw.per_minute),
            per_second: self.budget(&format!("{key}.per_second"), raw.per_second),
        }
    }

    /// A count where 0 means "no limit".
    fn budget(&mut self, key: &str, n: u64) -> Option<NonZeroU32> {
        match u32::try_from(n) {
            Ok(n) => NonZeroU32::new(n),
            Err(_) => {
                self.problem(
                    &path(key),
                    &format!("{n} is out of range (0 = unlimited, up to {})", u32::MAX),
                );
                None
            }
        }
    }

    fn count(&mut self, key: &str, n: u64, min: u32, max: u32) -> u32 {
        if (u64::from(min)..=u64::from(max)).contains(&n) {
            n as u32
        } else {
            self.problem(&path(key), &format!("{n} is out of range ({min} to {max})"));
            min
        }
    }

    fn cron(&mut self, key: &str, cron: Cron) -> Cron {
        if cron.next_after(Utc::now()).is_none() {
            self.problem(
                &path(key),
                &format!(
                    "{:?} never fires (no such date from now on); check the day and month fields",
                    cron.as_str()
                ),
            );
        }
        cron
    }

    fn path(&mut self, key: &str, value: String) -> PathBuf {
        if value.trim().is_empty() {
            self.problem(&path(key), "is empty");
        }
        PathBuf::from(value)
    }

    fn url(&mut self, key: &str, text: &str, default: &str, is_base: bool) -> Url {
        let fallback = || Url::parse(default).expect("default URLs parse");
        let key = path(key);
        // A URL with a user name may hold a password: never echoed.
        let shown = if text.contains('@') {
            "the URL".to_string()
        } else {
            format!("{text:?}")
        };
        let url = match Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.problem(&key, &format!("{shown} is not a URL ({e})"));
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
            return url;
        }
        for b in bad {
            self.problem(&key, &b);
        }
        fallback()
    }
}
