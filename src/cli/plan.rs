//! `plan`: for the current inventory, database state and config, the requests the next cycle of
//! each kind would make, the quota and handles they use, and how long they take at the
//! configured `[limits]`. Sends nothing, writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use std::fmt::Write as _;

use super::output::emit;
use super::{Failure, Format, PlanArgs};
use crate::auth::Credential;
use crate::client::PACING_SLACK;
use crate::config::{Config, Limit};
use crate::domain::{DAY_SECS, JobKind};
use crate::metrics::period;
use crate::pipeline::{self, PlanState};
use crate::planner::Job;
use crate::store::Store;

/// What one kind's next cycle would do.
#[derive(Debug, Clone)]
pub struct KindPlan {
    pub kind: JobKind,
    pub requests: usize,
    /// Requests per credential label.
    pub by_credential: BTreeMap<String, (usize, usize)>,
    /// The fewest requests that can carry the same Tweets (per credential and grid cell, full
    /// batches).
    pub lower_bound: usize,
    pub tweets: usize,
    pub handles: BTreeSet<String>,
    /// Seconds at the configured limits (0 when the endpoint is unlimited).
    pub estimated_seconds: f64,
    pub limited: bool,
    /// The schedule's period, seconds.
    pub period: Option<i64>,
    /// Left for later cycles by the per-run request budget.
    pub over_budget: usize,
    /// `/historical`: requests the whole remaining backfill takes, budget aside.
    pub backfill_requests: usize,
    /// `/historical`: days until the backfill is done at this budget and schedule.
    pub backfill_days: Option<f64>,
}

/// Prints the plan of the chosen kinds.
pub fn plan(config: Config, args: &PlanArgs) -> Result<u8, Failure> {
    let kinds = if args.jobs.is_empty() {
        JobKind::ALL.to_vec()
    } else {
        args.jobs.clone()
    };
    let inventory = pipeline::load_inventory(&config).map_err(Failure::usage)?;
    let state = if config.database.path.exists() {
        let store = Store::open_read_only(&config.database.path).map_err(Failure::fatal)?;
        PlanState::read(&store).map_err(Failure::fatal)?
    } else {
        PlanState::default()
    };
    let now = chrono::Utc::now().timestamp();
    let plans: Vec<KindPlan> = kinds
        .iter()
        .map(|k| plan_kind(&config, &inventory, &state, *k, now))
        .collect();
    let token_request = config.app.bearer_token.is_none()
        && plans.iter().any(|p| p.by_credential.contains_key("bearer"));
    match args.format {
        Format::Json => {
            let total: usize = plans.iter().map(|p| p.requests).sum();
            let body = json!({
                "requests": total,
                "token_requests": usize::from(token_request),
                "tweets": inventory.entries.len(),
                "kinds": plans.iter().map(|p| json!({
                    "kind": p.kind.name(),
                    "endpoint": p.kind.endpoint().name(),
                    "requests": p.requests,
                    "lower_bound": p.lower_bound,
                    "tweets": p.tweets,
                    "credentials": p.by_credential.iter().map(|(c, (n, t))| json!({
                        "credential": c, "requests": n, "tweets": t,
                    })).collect::<Vec<_>>(),
                    "handles": p.handles,
                    "estimated_seconds": (p.estimated_seconds * 10.0).round() / 10.0,
                    "limited": p.limited,
                    "period_seconds": p.period,
                    "fits_period": fits(p),
                    "over_budget": p.over_budget,
                    "backfill_requests": p.backfill_requests,
                    "backfill_days": p.backfill_days.map(|d| (d * 10.0).round() / 10.0),
                })).collect::<Vec<_>>(),
            });
            emit(&(serde_json::to_string_pretty(&body).expect("JSON serializes") + "\n"));
        }
        Format::Table | Format::Csv => emit(&table(&plans, inventory.entries.len(), token_request)),
    }
    for p in &plans {
        if !fits(p) {
            tracing::warn!(
                kind = p.kind.name(),
                "At the configured limits this cycle takes {} but its schedule fires every {}: \
                 triggers will be skipped while it runs; raise [limits] or lower the work per cycle",
                human(p.estimated_seconds),
                human(p.period.unwrap_or(0) as f64)
            );
        }
    }
    Ok(0)
}

fn fits(p: &KindPlan) -> bool {
    p.period
        .is_none_or(|period| p.estimated_seconds <= period as f64)
}

fn plan_kind(
    config: &Config,
    inventory: &crate::inventory::Inventory,
    state: &PlanState,
    kind: JobKind,
    now: i64,
) -> KindPlan {
    let (jobs, skipped) = pipeline::plan(config, inventory, state, &[kind], now);
    let mut by_credential: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut handles = BTreeSet::new();
    for job in &jobs {
        let entry = by_credential
            .entry(job.credential.label().to_string())
            .or_default();
        entry.0 += 1;
        entry.1 += job.tweets.len();
        if let Credential::UserContext { account } = &job.credential {
            handles.insert(account.to_string());
        }
    }
    let limit = *config.limit(kind.endpoint());
    let interval = pacing_interval(&limit);
    let estimated_seconds = interval.map_or(0.0, |i| i * jobs.len().saturating_sub(1) as f64);
    let at = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    let period = period(&config.schedule, kind, at);
    // The whole backfill, without the per-run budget.
    let (backfill_requests, backfill_days) = if kind == JobKind::Historical {
        let mut unbounded = config.clone();
        unbounded.historical.max_requests_per_run = None;
        let (all, _) = pipeline::plan(&unbounded, inventory, state, &[kind], now);
        let per_cycle = jobs.len().max(1) as f64;
        let days =
            period.map(|p| (all.len() as f64 / per_cycle).ceil() * p as f64 / DAY_SECS as f64);
        (all.len(), if all.is_empty() { Some(0.0) } else { days })
    } else {
        (0, None)
    };
    KindPlan {
        kind,
        requests: jobs.len(),
        lower_bound: lower_bound(&jobs),
        tweets: jobs.iter().map(|j| j.tweets.len()).sum(),
        by_credential,
        handles,
        estimated_seconds,
        limited: interval.is_some(),
        period,
        over_budget: skipped.over_budget,
        backfill_requests,
        backfill_days,
    }
}

/// The time between two paced requests under `limit` (the client's pacing: burst 1, 3% under
/// each budget), or `None` when unlimited.
fn pacing_interval(limit: &Limit) -> Option<f64> {
    let windows = [(60.0, limit.per_minute), (1.0, limit.per_second)];
    windows
        .into_iter()
        .filter_map(|(secs, n)| n.map(|n| secs / f64::from(n.get()) * PACING_SLACK))
        .reduce(f64::max)
}

/// Full batches per credential and grid cell.
fn lower_bound(jobs: &[Job]) -> usize {
    let mut groups: BTreeMap<(String, Option<i64>), BTreeSet<u64>> = BTreeMap::new();
    for job in jobs {
        groups
            .entry((
                job.credential.label().to_string(),
                job.cell.map(|c| c.start()),
            ))
            .or_default()
            .extend(job.tweets.iter().map(|t| t.get()));
    }
    let per = jobs.first().map_or(1, |j| j.endpoint.max_ids());
    groups.values().map(|t| t.len().div_ceil(per)).sum()
}

fn human(secs: f64) -> String {
    let s = secs.round() as i64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m{:02}s", s / 60, s % 60),
        7200..=172_799 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{:.1} days", secs / DAY_SECS as f64),
    }
}

fn table(plans: &[KindPlan], tweets: usize, token_request: bool) -> String {
    let mut out = String::new();
    let total: usize = plans.iter().map(|p| p.requests).sum();
    let _ = writeln!(
        out,
        "plan: {total} requests for {tweets} Tweets in the inventory (nothing sent)"
    );
    if token_request {
        let _ = writeln!(
            out,
            "  + 1 request to the token endpoint for the bearer token"
        );
    }
    for p in plans {
        let handles: Vec<&str> = p.handles.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "{:<10} /{:<10} {:>6} requests (lower bound {}), {} Tweets, {} at the configured limits{}",
            p.kind.name(),
            p.kind.endpoint().name(),
            p.requests,
            p.lower_bound,
            p.tweets,
            if p.limited {
                human(p.estimated_seconds)
            } else {
                "no wait".to_string()
            },
            match p.period {
                Some(period) => format!(", schedule every {}", human(period as f64)),
                None => String::new(),
            }
        );
        for (credential, (n, t)) in &p.by_credential {
            let _ = writeln!(out, "    {credential:<20} {n:>6} requests  {t:>8} Tweets");
        }
        if !handles.is_empty() {
            let _ = writeln!(
                out,
                "    handles touched ({}): {}",
                handles.len(),
                handles.join(" ")
            );
        }
        if p.over_budget > 0 {
            let _ = writeln!(
                out,
                "    {} Tweets left for later cycles by the per-run request budget",
                p.over_budget
            );
        }
        if p.kind == JobKind::Historical {
            match p.backfill_days {
                Some(days) if p.backfill_requests > 0 => {
                    let _ = writeln!(
                        out,
                        "    backfill left: {} requests, about {} at this budget and schedule",
                        p.backfill_requests,
                        human(days * DAY_SECS as f64)
                    );
                }
                _ if p.backfill_requests == 0 => {
                    let _ = writeln!(out, "    backfill complete");
                }
                _ => {
                    let _ = writeln!(out, "    backfill left: {} requests", p.backfill_requests);
                }
            }
        }
        if !fits(p) {
            let _ = writeln!(
                out,
                "    warning: longer than the schedule's period; triggers will be skipped while it runs"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn pacing_follows_the_tighter_window() {
        let limit = |m: u32, s: u32| Limit {
            per_minute: NonZeroU32::new(m),
            per_second: NonZeroU32::new(s),
        };
        assert_eq!(pacing_interval(&limit(0, 0)), None);
        let one_a_second = pacing_interval(&limit(60, 0)).unwrap();
        assert!((one_a_second - 1.03).abs() < 1e-9);
        let five = pacing_interval(&limit(600, 5)).unwrap();
        assert!((five - 0.206).abs() < 1e-9, "{five}");
        assert_eq!(human(59.4), "59s");
        assert_eq!(human(150.0), "2m30s");
        assert_eq!(human(7200.0), "2h00m");
    }
}
