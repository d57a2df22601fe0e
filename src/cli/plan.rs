//! `plan`: for the current inventory, database state and config, the requests the next cycle of
//! each kind would make, the quota and handles they use, and how long they take at the
//! configured `[limits]`. Sends nothing, writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use std::fmt::Write as _;

use super::output::{Cell, Rows, emit};
use super::{Failure, Format, PlanArgs};
use crate::client::PACING_SLACK;
use crate::config::{Config, Limit};
use crate::domain::Credential;
use crate::domain::{DAY_SECS, Endpoint, JobKind};
use crate::pipeline::{self, KindDue, PlanState, Scope, Selection};
use crate::planner::{self, Job, PlanSettings};
use crate::store::Store;

/// What one kind's next cycle would do.
#[derive(Debug, Clone)]
pub struct KindPlan {
    pub kind: JobKind,
    /// Whether it is due, and why.
    pub due: KindDue,
    /// `full`, `catch_up` (only what its last cycle left undone) or `none`.
    pub scope: &'static str,
    pub requests: usize,
    /// What each credential label (`bearer`, an account's handle) would send.
    pub by_credential: BTreeMap<String, CredentialPlan>,
    /// The fewest requests that can carry the same Tweets (per credential and grid cell, full
    /// batches).
    pub lower_bound: usize,
    /// Distinct Tweets asked for, each counted once.
    pub tweets: usize,
    /// `/historical`: the (Tweet, cell) pairs asked for; a Tweet spans one cell per 28 days of
    /// its history.
    pub tweet_cells: Option<usize>,
    pub handles: BTreeSet<String>,
    /// Seconds at the configured limits (0 when the endpoint is unlimited).
    pub estimated_seconds: f64,
    pub limited: bool,
    /// The schedule's period, seconds.
    pub period: Option<i64>,
    /// Left for later cycles by the per-run request budget.
    pub over_budget: usize,
    /// `/historical`: requests of this cycle that only refresh open cells.
    pub refresh_requests: usize,
    /// `/historical`: requests the whole remaining backfill takes, budget aside (refreshes
    /// aside too).
    pub backfill_requests: usize,
    /// `/historical`: days until the backfill is done at this budget and schedule.
    pub backfill_days: Option<f64>,
    /// `/historical`: the first hour the API still serves (`historical.lookback`), and the
    /// Tweets and Tweet-days of history before it, which are not asked for.
    pub served_from: Option<i64>,
    pub before_lookback: usize,
    pub before_lookback_days: f64,
}

/// What one credential would send in one kind's cycle.
#[derive(Debug, Clone, Default)]
pub struct CredentialPlan {
    pub requests: usize,
    /// Distinct Tweets.
    pub tweets: usize,
    /// `/historical`: (Tweet, cell) pairs.
    pub tweet_cells: usize,
    /// Full batches per grid cell.
    pub lower_bound: usize,
}

/// How much of the plan the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// One line per kind.
    Summary,
    /// One line per kind and the figures behind it (lower bound, backfill, lookback, warnings).
    Kinds,
    /// And each credential's requests and Tweets, and the handles touched.
    ByAccount,
}

/// Prints the plan of the chosen kinds: `--job` kinds in full; without, what `run` would do
/// (the due kinds, and what earlier cycles left undone).
pub fn plan(config: Config, args: &PlanArgs) -> Result<u8, Failure> {
    let detail = if args.summary {
        Detail::Summary
    } else if args.by_account {
        Detail::ByAccount
    } else {
        Detail::Kinds
    };
    plan_selection(
        config,
        &super::run::selection(&args.jobs),
        args.format,
        detail,
    )
}

/// Prints the plan of `selection` in `format` (`plan`, `run --dry-run`); `detail` shapes the
/// table.
pub fn plan_selection(
    config: Config,
    selection: &Selection,
    format: Format,
    detail: Detail,
) -> Result<u8, Failure> {
    // As `run` reads it: with `on_invalid = "skip"`, the valid lines (the bad ones are named).
    let inventory = match config.inventory.on_invalid {
        crate::config::OnInvalid::Fail => pipeline::load_inventory(&config),
        crate::config::OnInvalid::Skip => {
            crate::inventory::load_valid_lines(&config.inventory.path, &config.handles()).map(
                |(inventory, problems)| {
                    for p in &problems {
                        tracing::warn!("{}:{}: {} (skipped)", inventory.source, p.line, p.message);
                    }
                    inventory
                },
            )
        }
    }
    .map_err(Failure::usage)?;
    let target = config.database.target();
    let state = match target.exists().then(|| Store::open_read_only(&target)) {
        Some(Ok(store)) => {
            PlanState::read(&store, config.historical.settle_after).map_err(Failure::fatal)?
        }
        // A database not created yet (a PostgreSQL database without the schema): nothing
        // fetched so far.
        None | Some(Err(crate::store::StoreError::TooOld { found: 0, .. })) => PlanState::default(),
        Some(Err(e)) => return Err(Failure::fatal(e)),
    };
    let now = chrono::Utc::now().timestamp();
    let plans: Vec<KindPlan> = state
        .dues(selection, &config.schedule, now)
        .into_iter()
        .map(|due| plan_kind(&config, &inventory, &state, due, now))
        .collect();
    let shard = ShardJson::new(&config, &inventory);
    let token_request = config.app.bearer_token.is_none()
        && plans.iter().any(|p| p.by_credential.contains_key("bearer"));
    let paused: Vec<&str> = config
        .accounts
        .iter()
        .filter(|a| !a.enabled)
        .map(|a| a.handle.as_str())
        .collect();
    let refused: Vec<&str> = state
        .accounts
        .iter()
        .filter(|a| a.state == crate::domain::AccountState::Refused)
        .map(|a| a.handle.as_str())
        .filter(|h| {
            config
                .accounts
                .iter()
                .any(|a| a.enabled && a.handle.as_str() == *h)
        })
        .collect();
    match format {
        Format::Json => {
            let body = PlanJson {
                kinds: plans.iter().map(|p| KindJson::new(p, now)).collect(),
                paused_accounts: &paused,
                refused_accounts: &refused,
                requests: plans.iter().map(|p| p.requests).sum(),
                shard,
                token_requests: usize::from(token_request),
                tweets: inventory.entries.len(),
            };
            emit(&(serde_json::to_string_pretty(&body).expect("JSON serializes") + "\n"));
        }
        Format::Csv => emit(&csv(&plans).render(Format::Csv)),
        Format::Table => {
            let mut text = table(&plans, inventory.entries.len(), token_request, now, detail);
            if !config.shard.is_whole() {
                // Under the head line (or first, for the summary): the figures are the shard's.
                let at = if detail == Detail::Summary {
                    0
                } else {
                    text.find('\n').map_or(text.len(), |i| i + 1)
                };
                text.insert_str(at, &(shard.line() + "\n"));
            }
            if detail == Detail::Summary {
                // One line per kind: the accounts' conditions are in the full table.
            } else if !paused.is_empty() {
                let _ = writeln!(
                    text,
                    "paused accounts (enabled = false; public metrics only): {}",
                    paused.join(" ")
                );
            }
            if detail != Detail::Summary && !refused.is_empty() {
                let _ = writeln!(
                    text,
                    "refused accounts (their token was refused at its last use; tried again when their kinds are due): {}",
                    refused.join(" ")
                );
            }
            emit(&text)
        }
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

/// `plan --format json`. Fields are in alphabetical order, the order it has always printed.
#[derive(Serialize)]
struct PlanJson<'a> {
    kinds: Vec<KindJson<'a>>,
    paused_accounts: &'a [&'a str],
    refused_accounts: &'a [&'a str],
    requests: usize,
    shard: ShardJson,
    token_requests: usize,
    tweets: usize,
}

/// The shard the plan is for (`[runtime] shard`; `0/1` without), fields in alphabetical order.
#[derive(Serialize)]
struct ShardJson {
    /// Configured accounts whose Tweets are this shard's.
    accounts: usize,
    /// The number of shards.
    count: u32,
    /// 0-based.
    index: u32,
    /// `[limits]`: the contract's figures, every shard's together.
    contract_limits: BTreeMap<&'static str, LimitJson>,
    /// What this shard paces at: its share of `contract_limits`.
    limits: BTreeMap<&'static str, LimitJson>,
    /// Inventory Tweets that are this shard's.
    tweets: usize,
    /// Configured accounts in all.
    total_accounts: usize,
    /// Inventory Tweets in all.
    total_tweets: usize,
}

/// One endpoint's limit; `null` is unlimited.
#[derive(Serialize)]
struct LimitJson {
    per_minute: Option<u32>,
    per_second: Option<u32>,
}

impl From<&Limit> for LimitJson {
    fn from(l: &Limit) -> LimitJson {
        LimitJson {
            per_minute: l.per_minute.map(|n| n.get()),
            per_second: l.per_second.map(|n| n.get()),
        }
    }
}

impl ShardJson {
    fn new(config: &Config, inventory: &crate::inventory::Inventory) -> ShardJson {
        let limits = |f: &dyn Fn(Endpoint) -> Limit| {
            Endpoint::ALL
                .into_iter()
                .map(|e| (e.name(), LimitJson::from(&f(e))))
                .collect()
        };
        ShardJson {
            accounts: config
                .accounts
                .iter()
                .filter(|a| config.shard.owns_handle(&a.handle))
                .count(),
            count: config.shard.count(),
            index: config.shard.index(),
            contract_limits: limits(&|e| *config.contract_limit(e)),
            limits: limits(&|e| config.limit(e)),
            tweets: pipeline::shard_entries(config.shard, inventory).count(),
            total_accounts: config.accounts.len(),
            total_tweets: inventory.entries.len(),
        }
    }

    /// `shard 1/4: 812 of 3,240 Tweets, 11 of 40 accounts, pacing at 1/4 of [limits]`.
    fn line(&self) -> String {
        format!(
            "shard {}/{}: {} of {} Tweets, {} of {}, pacing at 1/{} of [limits] (per_minute, \
             per_second: {})",
            self.index,
            self.count,
            self.tweets,
            self.total_tweets,
            self.accounts,
            count(self.total_accounts, "account", "accounts"),
            self.count,
            self.limits
                .iter()
                .map(|(e, l)| {
                    let n = |v: Option<u32>| v.map_or("unlimited".to_string(), |v| v.to_string());
                    format!("/{e} {}, {}", n(l.per_minute), n(l.per_second))
                })
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// One kind of [`PlanJson`], fields in alphabetical order.
#[derive(Serialize)]
struct KindJson<'a> {
    backfill_days: Option<f64>,
    backfill_requests: usize,
    credentials: Vec<CredentialJson<'a>>,
    due: bool,
    endpoint: &'static str,
    estimated_seconds: f64,
    fits_period: bool,
    handles: &'a BTreeSet<String>,
    kind: &'static str,
    last_full_cycle: Option<i64>,
    limited: bool,
    lower_bound: usize,
    next_due: Option<i64>,
    over_budget: usize,
    period_seconds: Option<i64>,
    reason: String,
    refresh_requests: usize,
    requests: usize,
    scope: &'static str,
    /// Distinct Tweets (each counted once).
    tweets: usize,
    /// `/historical`: (Tweet, cell) pairs; `null` for the other kinds.
    tweet_cell_pairs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    served_from: Option<i64>,
    before_lookback_tweets: usize,
    before_lookback_tweet_days: f64,
}

/// Requests per credential of [`KindJson`].
#[derive(Serialize)]
struct CredentialJson<'a> {
    credential: &'a str,
    lower_bound: usize,
    requests: usize,
    tweet_cell_pairs: Option<usize>,
    tweets: usize,
}

impl<'a> KindJson<'a> {
    fn new(p: &'a KindPlan, now: i64) -> KindJson<'a> {
        let tenths = |x: f64| (x * 10.0).round() / 10.0;
        KindJson {
            backfill_days: p.backfill_days.map(tenths),
            backfill_requests: p.backfill_requests,
            credentials: p
                .by_credential
                .iter()
                .map(|(c, plan)| CredentialJson {
                    credential: c,
                    lower_bound: plan.lower_bound,
                    requests: plan.requests,
                    tweet_cell_pairs: p.tweet_cells.map(|_| plan.tweet_cells),
                    tweets: plan.tweets,
                })
                .collect(),
            due: p.due.due,
            endpoint: p.kind.endpoint().name(),
            estimated_seconds: tenths(p.estimated_seconds),
            fits_period: fits(p),
            handles: &p.handles,
            kind: p.kind.name(),
            last_full_cycle: p.due.last_full_start,
            limited: p.limited,
            lower_bound: p.lower_bound,
            next_due: p.due.next_due,
            over_budget: p.over_budget,
            period_seconds: p.period,
            reason: p.due.reason(now),
            refresh_requests: p.refresh_requests,
            requests: p.requests,
            scope: p.scope,
            tweets: p.tweets,
            tweet_cell_pairs: p.tweet_cells,
            served_from: p.served_from,
            before_lookback_tweets: p.before_lookback,
            before_lookback_tweet_days: tenths(p.before_lookback_days),
        }
    }
}

fn fits(p: &KindPlan) -> bool {
    p.period
        .is_none_or(|period| p.estimated_seconds <= period as f64)
}

fn plan_kind(
    config: &Config,
    inventory: &crate::inventory::Inventory,
    state: &PlanState,
    due: KindDue,
    now: i64,
) -> KindPlan {
    let kind = due.kind;
    let scope = due.scope();
    let (jobs, skipped) = pipeline::plan(config, inventory, state, &[(kind, scope)], now);
    let mut by_credential: BTreeMap<String, CredentialPlan> = BTreeMap::new();
    let mut distinct: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut handles = BTreeSet::new();
    for job in &jobs {
        let label = job.credential.label();
        let entry = by_credential.entry(label.to_string()).or_default();
        entry.requests += 1;
        entry.tweet_cells += job.tweets.len();
        distinct
            .entry(label)
            .or_default()
            .extend(job.tweets.iter().map(|t| t.get()));
        if let Credential::UserContext { account } = &job.credential {
            handles.insert(account.to_string());
        }
    }
    for (label, tweets) in &distinct {
        if let Some(entry) = by_credential.get_mut(*label) {
            entry.tweets = tweets.len();
        }
    }
    for (label, n) in lower_bounds(&jobs) {
        if let Some(entry) = by_credential.get_mut(&label) {
            entry.lower_bound = n;
        }
    }
    let tweets = distinct.values().flatten().collect::<BTreeSet<_>>().len();
    let limit = config.limit(kind.endpoint());
    let interval = pacing_interval(&limit);
    let estimated_seconds = interval.map_or(0.0, |i| i * jobs.len().saturating_sub(1) as f64);
    let period = due.period;
    // The whole backfill, without the per-run budget; refreshes of open cells are not backfill.
    let (backfill_requests, backfill_days) = if kind == JobKind::Historical {
        let left = pipeline::backfill_left(config, inventory, state, now);
        // Cycles of at most the budget each: the first when the kind is next due, one per period
        // after it, each taking its requests' time at the configured limits.
        let per_cycle = config
            .historical
            .series
            .max_requests_per_run
            .map_or(left, |n| n.get() as usize)
            .max(1);
        let cycles = left.div_ceil(per_cycle);
        let wait = due.next_due.map_or(0, |n| (n - now).max(0)) as f64;
        let last = left - per_cycle * cycles.saturating_sub(1);
        let days = period.map(|p| {
            let paced = |n: usize| interval.map_or(0.0, |i| i * n as f64);
            let secs = wait + (cycles.saturating_sub(1) as f64) * p as f64 + paced(last);
            secs / DAY_SECS as f64
        });
        (left, if left == 0 { Some(0.0) } else { days })
    } else {
        (0, None)
    };
    KindPlan {
        kind,
        due,
        scope: match scope {
            Scope::Full => "full",
            Scope::CatchUp { .. } if jobs.is_empty() => "none",
            Scope::CatchUp { .. } => "catch_up",
        },
        requests: jobs.len(),
        lower_bound: by_credential.values().map(|c| c.lower_bound).sum(),
        tweets,
        tweet_cells: (kind == JobKind::Historical)
            .then(|| jobs.iter().map(|j| j.tweets.len()).sum()),
        by_credential,
        handles,
        estimated_seconds,
        limited: interval.is_some(),
        period,
        over_budget: skipped.over_budget,
        refresh_requests: jobs.iter().filter(|j| j.refresh).count(),
        backfill_requests,
        backfill_days,
        served_from: (kind == JobKind::Historical)
            .then(|| planner::served_from(PlanSettings::from(config).lookback_secs, now))
            .flatten()
            .map(|h| h.secs()),
        before_lookback: skipped.before_lookback,
        before_lookback_days: skipped.before_lookback_secs as f64 / DAY_SECS as f64,
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

/// Full batches per grid cell, per credential label.
fn lower_bounds(jobs: &[Job]) -> BTreeMap<String, usize> {
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
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for ((label, _), tweets) in &groups {
        *out.entry(label.clone()).or_default() += tweets.len().div_ceil(per);
    }
    out
}

/// A duration for people (see [`pipeline::human_secs`]).
fn human(secs: f64) -> String {
    pipeline::human_secs(secs.round() as i64)
}

/// `n` and the noun, singular for 1: "1 request", "2 requests".
pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "N Tweets", with the (Tweet, cell) pairs they make for `/historical`.
fn tweets_text(tweets: usize, cells: Option<usize>) -> String {
    match cells {
        Some(pairs) if pairs != tweets => format!(
            "{} in {}",
            count(tweets, "Tweet", "Tweets"),
            count(pairs, "(Tweet, cell) pair", "(Tweet, cell) pairs")
        ),
        _ => count(tweets, "Tweet", "Tweets"),
    }
}

/// The kind's one line: due or not and why, then what its cycle would send.
fn summary_line(p: &KindPlan, now: i64) -> String {
    let reason = p.due.reason(now);
    let reason = reason
        .trim_start_matches("due: ")
        .trim_start_matches("not due: ");
    let head = format!(
        "{:<10} /{:<11} {} ({reason})",
        p.kind.name(),
        p.kind.endpoint().name(),
        if p.due.due { "due" } else { "not due" },
    );
    if p.scope == "none" {
        return format!("{head}: nothing left undone");
    }
    if p.requests == 0 {
        return format!("{head}: nothing to send");
    }
    let what = if p.scope == "catch_up" {
        ", catching up on what its last cycle left undone"
    } else {
        ""
    };
    format!(
        "{head}{what}: {}, {}, {}, {}",
        count(p.requests, "request", "requests"),
        tweets_text(p.tweets, p.tweet_cells),
        count(p.handles.len(), "handle", "handles"),
        if p.limited {
            format!("{} at the configured limits", human(p.estimated_seconds))
        } else {
            "no wait at the configured limits".to_string()
        }
    )
}

fn table(
    plans: &[KindPlan],
    tweets: usize,
    token_request: bool,
    now: i64,
    detail: Detail,
) -> String {
    let mut out = String::new();
    if detail == Detail::Summary {
        for p in plans {
            let _ = writeln!(out, "{}", summary_line(p, now));
        }
        return out;
    }
    let total: usize = plans.iter().map(|p| p.requests).sum();
    let _ = writeln!(
        out,
        "plan: {} for {} in the inventory (nothing sent)",
        count(total, "request", "requests"),
        count(tweets, "Tweet", "Tweets")
    );
    if token_request {
        let _ = writeln!(
            out,
            "  + 1 request to the token endpoint for the bearer token"
        );
    }
    for p in plans {
        let _ = writeln!(out, "{}", summary_line(p, now));
        if p.scope == "none" || p.requests == 0 {
            if p.kind == JobKind::Historical && p.served_from.is_some() && p.before_lookback > 0 {
                let _ = writeln!(out, "{}", lookback_line(p));
            }
            if p.kind == JobKind::Historical {
                let _ = writeln!(
                    out,
                    "    backfill left: {}",
                    count(p.backfill_requests, "request", "requests")
                );
            }
            continue;
        }
        let bearer = p.by_credential.get("bearer").map_or(0, |c| c.requests);
        let accounts = p.by_credential.len() - usize::from(bearer > 0);
        let mut by = Vec::new();
        if bearer > 0 {
            by.push(format!("{bearer} with the bearer token"));
        }
        if accounts > 0 {
            by.push(format!(
                "{} with {}",
                p.requests - bearer,
                if accounts == 1 {
                    "1 account's token".to_string()
                } else {
                    format!("the tokens of {accounts} accounts")
                }
            ));
        }
        let _ = writeln!(
            out,
            "    lower bound {} (full batches per credential{}); {}",
            count(p.lower_bound, "request", "requests"),
            if p.tweet_cells.is_some() {
                " and grid cell"
            } else {
                ""
            },
            by.join(", ")
        );
        if detail == Detail::ByAccount {
            by_account(&mut out, p);
        }
        if p.over_budget > 0 {
            let what = if p.tweet_cells.is_some() {
                count(p.over_budget, "(Tweet, cell) pair", "(Tweet, cell) pairs")
            } else {
                count(p.over_budget, "Tweet", "Tweets")
            };
            let _ = writeln!(
                out,
                "    {what} left for later cycles by the per-run request budget"
            );
        }
        if p.kind == JobKind::Historical {
            historical_lines(&mut out, p);
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

/// `--by-account`: a small table of the kind's credentials, then the handles it touches.
fn by_account(out: &mut String, p: &KindPlan) {
    let cells = p.tweet_cells.is_some();
    let columns = [
        "credential",
        "requests",
        "lower_bound",
        "tweets",
        "tweet_cell_pairs",
    ];
    let mut rows = Rows::new(&columns[..if cells { 5 } else { 4 }]);
    for (credential, c) in &p.by_credential {
        let mut row: Vec<Cell> = vec![
            credential.as_str().into(),
            (c.requests as i64).into(),
            (c.lower_bound as i64).into(),
            (c.tweets as i64).into(),
        ];
        if cells {
            row.push((c.tweet_cells as i64).into());
        }
        rows.push(row);
    }
    for line in rows.render(Format::Table).lines() {
        let _ = writeln!(out, "    {line}");
    }
    if !p.handles.is_empty() {
        let handles: Vec<&str> = p.handles.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "    handles touched ({}): {}",
            handles.len(),
            handles.join(" ")
        );
    }
}

/// `/historical`: what the API's lookback leaves out.
fn lookback_line(p: &KindPlan) -> String {
    format!(
        "    the API serves /historical from {} on (historical.lookback): {} {} \
         {:.1} Tweet-days of history before it, not requested",
        p.served_from
            .map_or_else(String::new, crate::domain::iso_utc),
        count(p.before_lookback, "Tweet", "Tweets"),
        if p.before_lookback == 1 {
            "has"
        } else {
            "have"
        },
        p.before_lookback_days
    )
}

/// `/historical`: backfill against refresh, the lookback, and the backfill left.
fn historical_lines(out: &mut String, p: &KindPlan) {
    let _ = writeln!(
        out,
        "    {}, {} refreshing open cells",
        count(
            p.requests - p.refresh_requests,
            "backfill request",
            "backfill requests"
        ),
        p.refresh_requests
    );
    if p.served_from.is_some() {
        let _ = writeln!(out, "{}", lookback_line(p));
    }
    let left = count(p.backfill_requests, "request", "requests");
    match p.backfill_days {
        _ if p.backfill_requests == 0 => {
            let _ = writeln!(out, "    backfill left: 0 requests (complete)");
        }
        Some(days) => {
            let _ = writeln!(
                out,
                "    backfill left: {left}, done in about {} at this budget, schedule and [limits]",
                human(days * DAY_SECS as f64)
            );
        }
        None => {
            let _ = writeln!(out, "    backfill left: {left}");
        }
    }
}

/// `--format csv`: one row per kind and credential (a kind with nothing to send: one row with
/// no credential). The requests add up to the plan's total, token request aside.
fn csv(plans: &[KindPlan]) -> Rows {
    let mut rows = Rows::new(&[
        "kind",
        "endpoint",
        "due",
        "scope",
        "credential",
        "requests",
        "lower_bound",
        "tweets",
        "tweet_cell_pairs",
    ]);
    for p in plans {
        let head = |credential: Cell| -> Vec<Cell> {
            vec![
                p.kind.name().into(),
                p.kind.endpoint().name().into(),
                if p.due.due { "true" } else { "false" }.into(),
                p.scope.into(),
                credential,
            ]
        };
        if p.by_credential.is_empty() {
            let mut row = head(Cell::Null);
            row.extend([
                0.into(),
                0.into(),
                0.into(),
                p.tweet_cells.map(|_| 0).into(),
            ]);
            rows.push(row);
        }
        for (credential, c) in &p.by_credential {
            let mut row = head(credential.as_str().into());
            row.extend([
                (c.requests as i64).into(),
                (c.lower_bound as i64).into(),
                (c.tweets as i64).into(),
                p.tweet_cells.map(|_| c.tweet_cells as i64).into(),
            ]);
            rows.push(row);
        }
    }
    rows
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

    #[test]
    fn counts_are_singular_for_one_and_pairs_are_named() {
        assert_eq!(count(1, "request", "requests"), "1 request");
        assert_eq!(count(0, "request", "requests"), "0 requests");
        assert_eq!(count(2, "batch", "batches"), "2 batches");
        assert_eq!(tweets_text(1, None), "1 Tweet");
        assert_eq!(tweets_text(3, Some(3)), "3 Tweets");
        assert_eq!(tweets_text(2, Some(5)), "2 Tweets in 5 (Tweet, cell) pairs");
    }
}
