//! Process metrics in the Prometheus text exposition format (version 0.0.4), served by the
//! daemon's `/metrics` and written by `run --metrics-file` for node_exporter's textfile
//! collector; and the health verdict behind `/healthz`.
//!
//! The classic text format is written by hand (a few lines) rather than through a client crate:
//! the crates that exist emit OpenMetrics, whose `# EOF` and counter naming node_exporter's
//! textfile collector does not expect.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::config::ScheduleConfig;
use crate::domain::{AccountState, BatchOutcome, RunStatus};
use crate::domain::{Endpoint, JobKind};

/// Counters and gauges of one process. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    started_at: i64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    /// Batches as recorded in the `requests` table, by endpoint and outcome.
    requests: BTreeMap<(&'static str, &'static str), u64>,
    /// HTTP attempts and retries (attempts after the first) per endpoint.
    attempts: BTreeMap<&'static str, u64>,
    retries: BTreeMap<&'static str, u64>,
    /// HTTP responses by endpoint and status code.
    responses: BTreeMap<(&'static str, u16), u64>,
    /// Rows written per kind (changed snapshots, non-zero buckets).
    rows: BTreeMap<&'static str, u64>,
    /// Values received per kind (one per Tweet and metric, or per bucket including zeros).
    received: BTreeMap<&'static str, u64>,
    cycles: BTreeMap<(&'static str, RunStatus), u64>,
    kinds: BTreeMap<JobKind, KindState>,
    /// Each kind's schedule period, seconds.
    periods: BTreeMap<JobKind, i64>,
    /// Every configured account's condition.
    accounts: Vec<(String, AccountState)>,
    /// Why, and since when, the API was unreachable in the last cycle; `None`: reached.
    unreachable: Option<(String, i64)>,
    /// The inventory's bad lines at its last read.
    inventory: Option<InventoryProblem>,
    /// `/historical` requests the remaining backfill needs, when known.
    backfill_left: Option<usize>,
}

/// Bad lines of the inventory, what the cycle did about them, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryProblem {
    /// The first bad line, `file:line: reason`.
    pub first: String,
    /// Bad lines in all.
    pub count: usize,
    /// What the cycle used instead.
    pub how: String,
    /// When the inventory was first found with bad lines (Unix seconds).
    pub since: i64,
}

impl InventoryProblem {
    /// The problem of `lines` (each `file:line: reason`), found at `now`.
    pub fn new(lines: &[String], how: String, now: i64) -> InventoryProblem {
        InventoryProblem {
            first: lines.first().cloned().unwrap_or_default(),
            count: lines.len(),
            how,
            since: now,
        }
    }

    /// One line for people: the first bad line, how many, what was done, since when.
    pub fn summary(&self) -> String {
        let more = match self.count {
            0 | 1 => String::new(),
            n => format!(" (and {} more bad lines)", n - 1),
        };
        format!(
            "inventory {}{more}; {}; since {}",
            self.first,
            self.how,
            crate::domain::iso_utc(self.since)
        )
    }
}

/// What is known of one kind's cycles.
#[derive(Debug, Default, Clone, Copy)]
pub struct KindState {
    /// Status and end (epoch seconds) of the last finished cycle.
    pub last: Option<(RunStatus, i64)>,
    pub last_success: Option<i64>,
    pub last_duration: Option<f64>,
    pub running: bool,
    pub planned: usize,
    pub done: usize,
}

impl Metrics {
    /// Empty metrics of a process started at `started_at` (epoch seconds).
    pub fn new(started_at: i64) -> Metrics {
        Metrics {
            started_at,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One HTTP response from the API.
    pub fn response(&self, endpoint: Endpoint, status: u16) {
        self.with(|m| *m.responses.entry((endpoint.name(), status)).or_default() += 1);
    }

    /// One batch recorded in the `requests` table.
    pub fn batch(
        &self,
        kind: JobKind,
        endpoint: Endpoint,
        outcome: BatchOutcome,
        attempts: u32,
        received: usize,
        rows: usize,
    ) {
        self.with(|m| {
            let e = endpoint.name();
            *m.requests.entry((e, outcome.as_str())).or_default() += 1;
            *m.attempts.entry(e).or_default() += u64::from(attempts);
            *m.retries.entry(e).or_default() += u64::from(attempts.saturating_sub(1));
            *m.rows.entry(kind.name()).or_default() += rows as u64;
            *m.received.entry(kind.name()).or_default() += received as u64;
        });
    }

    /// A cycle of `kinds` started with `planned` batches of each kind.
    pub fn cycle_started(&self, planned: &BTreeMap<JobKind, usize>) {
        self.with(|m| {
            for (kind, n) in planned {
                let state = m.kinds.entry(*kind).or_default();
                state.running = true;
                state.planned = *n;
                state.done = 0;
            }
        });
    }

    /// A batch of `kind` is done (stored, failed or skipped).
    pub fn batch_done(&self, kind: JobKind, n: usize) {
        self.with(|m| m.kinds.entry(kind).or_default().done += n);
    }

    /// A cycle of `kinds` ended with run status `status` at `finished_at`.
    pub fn cycle_finished(
        &self,
        kinds: &[JobKind],
        status: RunStatus,
        finished_at: i64,
        seconds: f64,
    ) {
        self.with(|m| {
            for kind in kinds {
                *m.cycles.entry((kind.name(), status)).or_default() += 1;
                let state = m.kinds.entry(*kind).or_default();
                state.running = false;
                state.last = Some((status, finished_at));
                state.last_duration = Some(seconds);
                if status == RunStatus::Ok {
                    state.last_success = Some(finished_at);
                }
            }
        });
    }

    /// What the database knows of a kind's earlier cycles (a new process starts from it).
    pub fn seed_kind(
        &self,
        kind: JobKind,
        last: Option<(RunStatus, i64)>,
        last_success: Option<i64>,
    ) {
        self.with(|m| {
            let state = m.kinds.entry(kind).or_default();
            state.last = last;
            state.last_success = last_success;
        });
    }

    /// Each kind's schedule period.
    pub fn set_periods(&self, periods: Vec<(JobKind, i64)>) {
        self.with(|m| m.periods = periods.into_iter().collect());
    }

    /// Every configured account's condition.
    pub fn set_accounts(&self, accounts: Vec<(String, AccountState)>) {
        self.with(|m| m.accounts = accounts);
    }

    /// Why the last cycle found the API unreachable, and when; `None` once it was reached.
    pub fn set_unreachable(&self, unreachable: Option<(String, i64)>) {
        self.with(|m| {
            m.unreachable = match (m.unreachable.take(), unreachable) {
                // Still unreachable: since the first cycle that found it so.
                (Some((_, since)), Some((why, _))) => Some((why, since)),
                (_, now) => now,
            }
        });
    }

    /// The inventory's bad lines at its last read; `since` carries over while they persist.
    pub fn set_inventory_problem(&self, problem: Option<InventoryProblem>) {
        self.with(|m| {
            m.inventory = match (m.inventory.take(), problem) {
                (Some(old), Some(new)) => Some(InventoryProblem {
                    since: old.since,
                    ..new
                }),
                (_, new) => new,
            }
        });
    }

    /// The inventory's bad lines at its last read.
    pub fn inventory_problem(&self) -> Option<InventoryProblem> {
        self.with(|m| m.inventory.clone())
    }

    /// `/historical` requests the remaining backfill needs.
    pub fn set_backfill_left(&self, requests: usize) {
        self.with(|m| m.backfill_left = Some(requests));
    }

    /// Conditions a person should know of that do not fail a kind: refused and paused
    /// accounts, an unreachable API, a bad inventory.
    pub fn warnings(&self, now: i64) -> Vec<String> {
        let m = self.with(|m| m.clone());
        let mut out = Vec::new();
        if let Some((why, since)) = &m.unreachable {
            out.push(format!("API unreachable since {}s ago: {why}", now - since));
        }
        for (account, state) in &m.accounts {
            match state {
                AccountState::Refused => out.push(format!(
                    "account {account}: token refused (401); re-authorize it (its public metrics are still read)"
                )),
                AccountState::Paused => out.push(format!(
                    "account {account}: paused (enabled = false); public metrics only"
                )),
                AccountState::Ok => {}
            }
        }
        if let Some(p) = &m.inventory {
            out.push(p.summary());
        }
        out
    }

    /// A kind's state.
    pub fn kind(&self, kind: JobKind) -> KindState {
        self.with(|m| m.kinds.get(&kind).copied().unwrap_or_default())
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let m = self.with(|m| m.clone());
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let endpoints = || Endpoint::ALL.into_iter().map(Endpoint::name);
        let kinds = || JobKind::ALL.into_iter().map(JobKind::name);
        family(
            "engagement_requests_total",
            "counter",
            "Batches sent to the API, by endpoint and outcome, as recorded in the requests table.",
            endpoints()
                .flat_map(|e| {
                    ["ok", "partial", "refused", "failed", "unauthorized"].map(|o| {
                        let n = m.requests.get(&(e, o)).copied().unwrap_or(0);
                        (labels(&[("endpoint", e), ("outcome", o)]), n as f64)
                    })
                })
                .collect(),
        );
        family(
            "engagement_http_attempts_total",
            "counter",
            "HTTP requests sent to the API (retries included), by endpoint.",
            per(endpoints(), "endpoint", &m.attempts),
        );
        family(
            "engagement_retries_total",
            "counter",
            "HTTP requests that repeated a failed attempt, by endpoint.",
            per(endpoints(), "endpoint", &m.retries),
        );
        let rate_limited: BTreeMap<&str, u64> = endpoints()
            .map(|e| (e, m.responses.get(&(e, 429)).copied().unwrap_or(0)))
            .collect();
        family(
            "engagement_rate_limited_total",
            "counter",
            "HTTP 429 answers, by endpoint.",
            per(endpoints(), "endpoint", &rate_limited),
        );
        family(
            "engagement_http_responses_total",
            "counter",
            "HTTP answers from the API, by endpoint and status code.",
            m.responses
                .iter()
                .map(|((e, code), n)| {
                    let code = code.to_string();
                    (labels(&[("endpoint", e), ("code", &code)]), *n as f64)
                })
                .collect(),
        );
        family(
            "engagement_rows_written_total",
            "counter",
            "Rows written: changed totals snapshots and non-zero hourly buckets, by kind.",
            per(kinds(), "kind", &m.rows),
        );
        family(
            "engagement_values_received_total",
            "counter",
            "Values the API returned, zeros included, by kind.",
            per(kinds(), "kind", &m.received),
        );
        family(
            "engagement_cycles_total",
            "counter",
            "Finished cycles, by kind and run status.",
            kinds()
                .flat_map(|k| {
                    RunStatus::FINISHED.map(|s| {
                        let n = m.cycles.get(&(k, s)).copied().unwrap_or(0);
                        (labels(&[("kind", k), ("status", s.as_str())]), n as f64)
                    })
                })
                .collect(),
        );
        let gauge = |f: &dyn Fn(&KindState) -> Option<f64>| -> Vec<(String, f64)> {
            m.kinds
                .iter()
                .filter_map(|(k, s)| Some((labels(&[("kind", k.name())]), f(s)?)))
                .collect()
        };
        family(
            "engagement_last_success_timestamp_seconds",
            "gauge",
            "When the last cycle of each kind that stored everything ended (Unix time).",
            gauge(&|s| s.last_success.map(|t| t as f64)),
        );
        family(
            "engagement_cycle_duration_seconds",
            "gauge",
            "How long the last finished cycle of each kind took.",
            gauge(&|s| s.last_duration),
        );
        family(
            "engagement_cycle_running",
            "gauge",
            "1 while a cycle of the kind runs.",
            gauge(&|s| Some(if s.running { 1.0 } else { 0.0 })),
        );
        family(
            "engagement_cycle_batches_planned",
            "gauge",
            "Batches planned by the current or last cycle of each kind.",
            gauge(&|s| Some(s.planned as f64)),
        );
        family(
            "engagement_cycle_batches_done",
            "gauge",
            "Batches of the current or last cycle of each kind that are done.",
            gauge(&|s| Some(s.done.min(s.planned) as f64)),
        );
        family(
            "engagement_schedule_period_seconds",
            "gauge",
            "The schedule period of each kind: a kind is due again this long after its last full cycle.",
            m.periods
                .iter()
                .map(|(k, p)| (labels(&[("kind", k.name())]), *p as f64))
                .collect(),
        );
        family(
            "engagement_account_state",
            "gauge",
            "1 for each configured account's condition: ok, refused (the API refused its token; re-authorize it) or paused (enabled = false).",
            m.accounts
                .iter()
                .flat_map(|(account, state)| {
                    AccountState::ALL.map(|s| {
                        let value = if s == *state { 1.0 } else { 0.0 };
                        (
                            labels(&[("account", account), ("state", s.as_str())]),
                            value,
                        )
                    })
                })
                .collect(),
        );
        family(
            "engagement_api_reachable",
            "gauge",
            "0 when the last cycle found the API unreachable (connection refused, DNS, TLS, timeouts) and stopped sending; else 1.",
            vec![(
                String::new(),
                if m.unreachable.is_some() { 0.0 } else { 1.0 },
            )],
        );
        family(
            "engagement_backfill_left_requests",
            "gauge",
            "/historical requests the remaining backfill needs (refreshes of open cells aside).",
            m.backfill_left
                .map(|n| vec![(String::new(), n as f64)])
                .unwrap_or_default(),
        );
        family(
            "engagement_inventory_invalid_lines",
            "gauge",
            "Bad lines in the inventory at its last read (the daemon keeps the last good inventory meanwhile).",
            vec![(
                String::new(),
                m.inventory.as_ref().map_or(0.0, |p| p.count as f64),
            )],
        );
        family(
            "engagement_start_time_seconds",
            "gauge",
            "When the process started (Unix time).",
            vec![(String::new(), self.started_at as f64)],
        );
        out
    }

    /// Writes the metrics to `path` for node_exporter's textfile collector: to a temporary file
    /// beside it, then renamed, so the collector never reads half a file.
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, self.render())?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn per<'a>(
    keys: impl Iterator<Item = &'a str>,
    label: &str,
    values: &BTreeMap<&'a str, u64>,
) -> Vec<(String, f64)> {
    keys.map(|k| {
        (
            labels(&[(label, k)]),
            values.get(k).copied().unwrap_or(0) as f64,
        )
    })
    .collect()
}

/// `{a="x",b="y"}` with the text format's escapes.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// One kind's verdict for `/healthz`.
#[derive(Debug, Clone, PartialEq)]
pub struct KindHealth {
    pub kind: JobKind,
    pub healthy: bool,
    pub reason: String,
}

/// The period a cycle of `kind` is expected within at `now`: the gap between the schedule's
/// firings around `now` (see [`crate::config::Cron::period_at`]).
pub fn period(schedule: &ScheduleConfig, kind: JobKind, now: DateTime<Utc>) -> Option<i64> {
    schedule.of(kind).period_at(now)
}

/// Whether the last cycle of every kind in `kinds` succeeded within twice its period; a kind
/// that has not finished a cycle yet is given twice its period from `started_at` to do so.
pub fn health(
    metrics: &Metrics,
    schedule: &ScheduleConfig,
    kinds: &[JobKind],
    now: DateTime<Utc>,
) -> Vec<KindHealth> {
    let t = now.timestamp();
    kinds
        .iter()
        .map(|&kind| {
            let state = metrics.kind(kind);
            let Some(period) = period(schedule, kind, now) else {
                return KindHealth {
                    kind,
                    healthy: true,
                    reason: "its schedule does not fire again".into(),
                };
            };
            let allowed = 2 * period;
            let (healthy, reason) = match state.last {
                None if t - metrics.started_at <= allowed => {
                    (true, "starting: no cycle finished yet".to_string())
                }
                None => (
                    false,
                    format!(
                        "no cycle finished in the {}s since start (twice its period)",
                        t - metrics.started_at
                    ),
                ),
                Some((status, _)) if status != RunStatus::Ok => (
                    false,
                    format!(
                        "the last cycle ended {}{}",
                        status.as_str(),
                        since(state.last_success, t)
                    ),
                ),
                Some((_, at)) if t - at > allowed => (
                    false,
                    format!(
                        "the last cycle ended {}s ago, more than twice its period ({period}s)",
                        t - at
                    ),
                ),
                Some((_, at)) => (true, format!("ok {}s ago", t - at)),
            };
            KindHealth {
                kind,
                healthy,
                reason,
            }
        })
        .collect()
}

fn since(last_success: Option<i64>, now: i64) -> String {
    match last_success {
        Some(at) => format!("; last success {}s ago", now - at),
        None => "; no success yet".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn schedule(every_secs: u32) -> ScheduleConfig {
        let text = format!(
            "[app]\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\n[schedule]\ntotals = \"*/{every_secs} * * * * *\"\n\
             hourly = \"*/{every_secs} * * * * *\"\nhistorical = \"0 0 3 * * *\"\n"
        );
        Config::parse("t.toml", &text, std::iter::empty())
            .unwrap()
            .schedule
    }

    fn at(t: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(t, 0).unwrap()
    }

    #[test]
    fn render_is_prometheus_text_with_the_counts_given() {
        let m = Metrics::new(1_700_000_000);
        m.batch(
            JobKind::Totals,
            Endpoint::Totals,
            BatchOutcome::Ok,
            3,
            500,
            20,
        );
        m.batch(
            JobKind::Totals,
            Endpoint::Totals,
            BatchOutcome::Failed,
            1,
            0,
            0,
        );
        m.response(Endpoint::Totals, 429);
        m.response(Endpoint::Totals, 429);
        m.response(Endpoint::Totals, 200);
        m.cycle_finished(&[JobKind::Totals], RunStatus::Partial, 1_700_000_100, 2.5);
        let text = m.render();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
        let value = |name: &str, want: &[(&str, &str)]| -> f64 {
            let s = scrape
                .samples
                .iter()
                .find(|s| s.metric == name && want.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .unwrap_or_else(|| panic!("{name} {want:?} missing in\n{text}"));
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("unexpected type"),
            }
        };
        let ok = [("endpoint", "totals"), ("outcome", "ok")];
        assert_eq!(value("engagement_requests_total", &ok), 1.0);
        let failed = [("endpoint", "totals"), ("outcome", "failed")];
        assert_eq!(value("engagement_requests_total", &failed), 1.0);
        let totals = [("endpoint", "totals")];
        assert_eq!(value("engagement_retries_total", &totals), 2.0);
        assert_eq!(value("engagement_http_attempts_total", &totals), 4.0);
        assert_eq!(value("engagement_rate_limited_total", &totals), 2.0);
        assert_eq!(
            value("engagement_rows_written_total", &[("kind", "totals")]),
            20.0
        );
        let partial = [("kind", "totals"), ("status", "partial")];
        assert_eq!(value("engagement_cycles_total", &partial), 1.0);
        assert_eq!(
            value("engagement_cycle_duration_seconds", &[("kind", "totals")]),
            2.5
        );
        assert!(
            !text.contains("engagement_last_success_timestamp_seconds{"),
            "no success yet:\n{text}"
        );
        assert_eq!(labels(&[("a", "x\"y\\z")]), r#"{a="x\"y\\z"}"#);
    }

    #[test]
    fn health_needs_a_recent_successful_last_cycle_of_every_kind() {
        let s = schedule(5); // totals and hourly every 5 s: allowed 10 s
        let kinds = [JobKind::Totals, JobKind::Hourly];
        let start = 1_800_000_000;
        let m = Metrics::new(start);
        let healthy = |m: &Metrics, t: i64| health(m, &s, &kinds, at(t)).iter().all(|k| k.healthy);
        assert!(healthy(&m, start + 9), "starting up");
        assert!(
            !healthy(&m, start + 11),
            "nothing finished in twice the period"
        );
        m.cycle_finished(&kinds, RunStatus::Ok, start + 12, 1.0);
        assert!(healthy(&m, start + 13));
        assert!(!healthy(&m, start + 23), "last success too old");
        m.cycle_finished(&[JobKind::Hourly], RunStatus::Partial, start + 24, 1.0);
        m.cycle_finished(&[JobKind::Totals], RunStatus::Ok, start + 24, 1.0);
        let verdict = health(&m, &s, &kinds, at(start + 25));
        assert!(verdict[0].healthy);
        assert!(!verdict[1].healthy);
        assert!(verdict[1].reason.contains("ended partial"), "{verdict:?}");
        assert_eq!(period(&s, JobKind::Historical, at(start)), Some(86_400));
    }

    /// Accounts, reachability, backfill and the inventory appear as gauges and as `/healthz`
    /// warnings; an unreachable API and a bad inventory keep the time they were first seen.
    #[test]
    fn conditions_are_gauges_and_warnings() {
        let m = Metrics::new(1_000);
        m.set_accounts(vec![
            ("acme".into(), AccountState::Ok),
            ("bob".into(), AccountState::Refused),
            ("carol".into(), AccountState::Paused),
        ]);
        m.set_unreachable(Some(("the API cannot be reached: x".into(), 1_100)));
        m.set_unreachable(Some(("the API cannot be reached: y".into(), 1_200)));
        let lines = vec!["t.csv:7: bad".to_string(), "t.csv:9: worse".to_string()];
        m.set_inventory_problem(Some(InventoryProblem::new(&lines, "kept".into(), 1_150)));
        m.set_inventory_problem(Some(InventoryProblem::new(&lines, "kept".into(), 1_250)));
        m.set_backfill_left(12);
        let text = m.render();
        for sample in [
            "engagement_account_state{account=\"bob\",state=\"refused\"} 1",
            "engagement_account_state{account=\"bob\",state=\"ok\"} 0",
            "engagement_account_state{account=\"carol\",state=\"paused\"} 1",
            "engagement_api_reachable 0",
            "engagement_backfill_left_requests 12",
            "engagement_inventory_invalid_lines 2",
        ] {
            assert!(text.contains(sample), "{sample} missing in\n{text}");
        }
        let warnings = m.warnings(1_300).join("\n");
        assert!(
            warnings.contains("API unreachable since 200s ago: the API cannot be reached: y"),
            "{warnings}"
        );
        assert!(
            warnings.contains("account bob: token refused"),
            "{warnings}"
        );
        assert!(warnings.contains("account carol: paused"), "{warnings}");
        assert!(
            warnings.contains("t.csv:7: bad (and 1 more bad lines)"),
            "{warnings}"
        );
        assert!(
            warnings.contains(&crate::domain::iso_utc(1_150)),
            "{warnings}"
        );
        assert!(!warnings.contains("account acme"), "{warnings}");
        m.set_unreachable(None);
        m.set_inventory_problem(None);
        assert!(m.render().contains("engagement_api_reachable 1"));
        assert_eq!(m.warnings(1_300).len(), 2);
    }

    #[test]
    fn the_metrics_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engagement.prom");
        std::fs::write(&path, "old").unwrap();
        let m = Metrics::new(1);
        m.write_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# HELP engagement_requests_total"),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
