//! The planner: a pure function from (inventory, state from the database, policy, now) to the
//! list of requests a cycle makes. It decides endpoint, credential, batch and metric set; it does
//! no I/O and knows nothing of HTTP or SQL. [`PlanSettings`] is what it takes from the config.

mod sorted;

#[cfg(test)]
mod reference_tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::config::{Config, SeriesConfig};

use crate::domain::{
    Credential, DAY_SECS, Endpoint, HISTORICAL_EPOCH, Handle, Hour, IMPRESSIONS_MAX_AGE_SECS,
    JobKind, Metric, Shard, TweetId, TweetState, TweetStatus,
};

pub use sorted::{Cursor, SortedMap, SortedSet};

/// What the planner knows of each Tweet the database has a state for, by Tweet ID.
pub type TweetStates = SortedMap<TweetId, TweetState>;

/// How long a Tweet reported unavailable, protected or forbidden is left alone by default.
pub const RECHECK_AFTER_SECS: i64 = 24 * 3600;

/// One request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    pub endpoint: Endpoint,
    pub credential: Credential,
    /// Sorted, unique, at most `endpoint.max_ids()`.
    pub tweets: Vec<TweetId>,
    pub metrics: Vec<Metric>,
    /// `/historical` only: the grid cell asked for.
    pub cell: Option<Cell>,
    /// `/historical` only: every Tweet of the job was fetched for this cell before, and is asked
    /// again only to refresh numbers that were still settling (see [`HistoricalPolicy`]).
    pub refresh: bool,
    /// `/historical` only: the first hour the API still serves, when the cell starts before it
    /// (the lookback floor, [`HistoricalPolicy::served_from`]).
    pub served_from: Option<Hour>,
}

impl Job {
    /// The `/historical` window to ask for at `now`: the cell cut at the last ended hour, and at
    /// the first hour the API still serves.
    pub fn window(&self, now: i64) -> Option<(Hour, Hour)> {
        let (start, end) = self.cell?.window(now);
        Some((self.served_from.map_or(start, |f| f.max(start)), end))
    }
}

/// Length of a `/historical` grid cell: the API's longest window.
pub const CELL_SECS: i64 = 28 * DAY_SECS;

/// A cell of the fixed 28-day grid anchored at 2014-09-01T00:00Z. Tweets of one owner that need
/// the same cell share a request; a cell is complete for a Tweet once fetched after it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell(i64);

impl Cell {
    /// The cell containing `t` (Unix seconds; times before the grid's anchor belong to the first cell).
    pub fn of(t: i64) -> Cell {
        let t = t.max(HISTORICAL_EPOCH);
        Cell(HISTORICAL_EPOCH + (t - HISTORICAL_EPOCH).div_euclid(CELL_SECS) * CELL_SECS)
    }

    /// The cell starting at `start`, if `start` is on the grid.
    pub fn starting_at(start: i64) -> Option<Cell> {
        (start >= HISTORICAL_EPOCH && (start - HISTORICAL_EPOCH) % CELL_SECS == 0)
            .then_some(Cell(start))
    }

    /// The cell's place on the grid: 0 for the first.
    fn index(self) -> usize {
        usize::try_from((self.0 - HISTORICAL_EPOCH) / CELL_SECS).unwrap_or(0)
    }

    /// First second of the cell.
    pub fn start(self) -> i64 {
        self.0
    }

    /// First second after the cell.
    pub fn end(self) -> i64 {
        self.0 + CELL_SECS
    }

    /// The window to ask for at `now`: the cell, cut at the last hour that has ended (the API
    /// refuses windows ending in the future).
    pub fn window(self, now: i64) -> (Hour, Hour) {
        let end = self.end().min(Hour::floor(now).secs());
        (Hour::floor(self.start()), Hour::floor(end))
    }

    /// Whether a fetch at `fetched_at` saw the whole cell.
    pub fn complete_at(self, fetched_at: i64) -> bool {
        fetched_at >= self.end()
    }
}

/// A Tweet as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct PlanTweet<'a> {
    pub id: TweetId,
    pub owner: Option<&'a Handle>,
}

/// What limits a plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct TotalsPolicy {
    /// At most this many requests per run; the rest waits for the next run.
    pub max_requests: Option<u32>,
    /// How long refused Tweets rest (see [`RECHECK_AFTER_SECS`]).
    pub recheck_after_secs: i64,
    /// Catching up: only Tweets `/totals` has not confirmed since this time (the start of the
    /// last full cycle). `None`: every Tweet.
    pub unconfirmed_since: Option<i64>,
}

/// Why a Tweet is not in this cycle's plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Unavailable or protected, asked again after [`RECHECK_AFTER_SECS`].
    pub resting: usize,
    /// Left for the next run by the per-run request budget.
    pub over_budget: usize,
    /// Series left for the next run because their owner's token was refused.
    pub rejected: usize,
    /// Tweets of paused accounts (`enabled = false`): public totals only, no series.
    pub paused: usize,
    /// `/historical`: Tweets whose life starts before the API's lookback floor, and how much of
    /// their lives (seconds, summed) lies before it: history the API no longer serves.
    pub before_lookback: usize,
    pub before_lookback_secs: i64,
}

impl Skipped {
    /// Adds what one kind's plan left out (resting, over budget, before the lookback); the
    /// run-wide counts, rejected and paused, are the pipeline's.
    pub fn absorb(&mut self, other: &Skipped) {
        self.resting += other.resting;
        self.over_budget += other.over_budget;
        self.before_lookback += other.before_lookback;
        self.before_lookback_secs += other.before_lookback_secs;
    }
}

/// The `/totals` plan: public Tweets and owned Tweets of 90 days or more through the bearer
/// token (≤250 per request, owners mixed); younger owned Tweets under their owner's token with
/// `impressions` and `engagements` added (≤250 per request, one owner each).
///
/// Tweets the API reported unavailable or protected rest for [`RECHECK_AFTER_SECS`]; owned
/// Tweets the owner's token may not read use the bearer token for that long, then the owner's
/// token is tried again. Under a request budget the least recently checked Tweets go first, so
/// what is left over is served by the next runs.
pub fn plan_totals<'a>(
    tweets: impl IntoIterator<Item = PlanTweet<'a>>,
    states: &TweetStates,
    policy: TotalsPolicy,
    now: i64,
) -> (Vec<Job>, Skipped) {
    let mut bearer: Vec<TweetId> = Vec::new();
    let mut owned: BTreeMap<&Handle, Vec<TweetId>> = BTreeMap::new();
    let mut skipped = Skipped::default();
    let mut state_of = states.cursor();
    for t in tweets {
        let state = state_of.get(&t.id);
        let access = access(state, now, policy.recheck_after_secs);
        if access == Access::Resting {
            skipped.resting += 1;
            continue;
        }
        if let Some(since) = policy.unconfirmed_since
            && state
                .and_then(|s| s.totals_checked_at)
                .is_some_and(|at| at >= since)
        {
            continue;
        }
        match t.owner {
            Some(owner)
                if t.id.age_at(now) < IMPRESSIONS_MAX_AGE_SECS && access == Access::Owner =>
            {
                owned.entry(owner).or_default().push(t.id)
            }
            _ => bearer.push(t.id),
        }
    }
    let user_metrics: Vec<Metric> = Endpoint::Totals.metrics();
    let mut jobs = Vec::new();
    push_per_owner(
        &mut jobs,
        JobKind::Totals,
        owned,
        &user_metrics,
        states,
        true,
    );
    push_batches(
        &mut jobs,
        JobKind::Totals,
        Credential::Bearer,
        bearer,
        &Metric::PUBLIC,
        states,
        true,
    );
    if policy.max_requests.is_some() {
        // Batches hold their group's stalest Tweets first, so the stalest batches go first;
        // never-checked Tweets sort first.
        jobs.sort_by_cached_key(|j| {
            let mut state_of = states.cursor();
            j.tweets
                .iter()
                .map(|id| {
                    state_of
                        .get(id)
                        .and_then(|s| s.totals_checked_at)
                        .unwrap_or(i64::MIN)
                })
                .min()
        });
    }
    apply_budget(&mut jobs, policy.max_requests, &mut skipped);
    (jobs, skipped)
}

/// Who may be asked about a Tweet now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Its owner's token (or the bearer token, for public metrics).
    Owner,
    /// The owner's token was refused lately: the bearer token only.
    BearerOnly,
    /// Reported unavailable or protected lately: nobody.
    Resting,
}

/// A Tweet the API refused rests for `recheck_after` seconds from its last report.
fn access(state: Option<&TweetState>, now: i64, recheck_after: i64) -> Access {
    let Some(state) = state else {
        return Access::Owner;
    };
    let recent = state
        .status_checked_at
        .is_some_and(|at| now - at < recheck_after);
    match state.status {
        TweetStatus::Unavailable | TweetStatus::Protected if recent => Access::Resting,
        TweetStatus::Forbidden if recent => Access::BearerOnly,
        _ => Access::Owner,
    }
}

/// What a cycle's plans take from the config, before the database's state narrows them (a
/// catch-up's budget, the Tweets it confirms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    /// Accounts paused in the config (`enabled = false`): their Tweets are planned as public.
    pub paused: HashSet<String>,
    /// How long refused Tweets rest (`inventory.recheck_after`).
    pub recheck_after_secs: i64,
    /// `[totals]`: request budget of one run.
    pub totals_max_requests: Option<NonZeroU32>,
    /// `[hourly]`.
    pub hourly: SeriesSettings,
    /// `[historical]`.
    pub historical: SeriesSettings,
    /// `historical.refresh_after` (see [`HistoricalPolicy`]).
    pub refresh_after_secs: i64,
    /// `historical.settle_after` (see [`HistoricalPolicy`]).
    pub settle_after_secs: i64,
    /// `historical.lookback`; `None`: back to 2014-09-01.
    pub lookback_secs: Option<i64>,
    /// The part of the inventory planned (`[runtime] shard`): an inventory entry belongs to it
    /// by its inventory owner (or, public, by its ID).
    pub shard: Shard,
}

/// What a series kind's plans take from its config section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSettings {
    /// See [`SeriesPolicy::max_age_secs`].
    pub max_age_secs: i64,
    pub metrics: Vec<Metric>,
    /// Request budget of one run.
    pub max_requests: Option<NonZeroU32>,
}

impl From<&SeriesConfig> for SeriesSettings {
    fn from(c: &SeriesConfig) -> SeriesSettings {
        SeriesSettings {
            max_age_secs: secs(c.max_age, i64::MAX),
            metrics: c.metrics.clone(),
            max_requests: c.max_requests_per_run,
        }
    }
}

impl From<&Config> for PlanSettings {
    fn from(config: &Config) -> PlanSettings {
        PlanSettings {
            paused: config
                .accounts
                .iter()
                .filter(|a| !a.enabled)
                .map(|a| a.handle.as_str().to_string())
                .collect(),
            recheck_after_secs: secs(config.inventory.recheck_after, i64::MAX),
            totals_max_requests: config.totals.max_requests_per_run,
            hourly: SeriesSettings::from(&config.hourly),
            historical: SeriesSettings::from(&config.historical.series),
            refresh_after_secs: secs(config.historical.refresh_after, i64::MAX / 4),
            settle_after_secs: secs(config.historical.settle_after, i64::MAX / 4),
            lookback_secs: config.historical.lookback.map(|l| secs(l, i64::MAX / 4)),
            shard: config.shard,
        }
    }
}

/// `d` in whole seconds, `max` when it does not fit.
fn secs(d: Duration, max: i64) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(max)
}

/// The first hour `/historical` serves at `now` under a lookback of `lookback_secs`, an hour
/// inside the API's own floor so that the two clocks may differ; `None` without a lookback.
pub fn served_from(lookback_secs: Option<i64>, now: i64) -> Option<Hour> {
    lookback_secs.map(|l| Hour::floor(now.saturating_sub(l)).plus_hours(1))
}

/// What limits a series plan (`hourly` or `historical`).
#[derive(Debug, Clone, Default)]
pub struct SeriesPolicy {
    /// `hourly`: Tweets younger than this. `historical`: each Tweet's life from creation to this age.
    pub max_age_secs: i64,
    pub metrics: Vec<Metric>,
    pub max_requests: Option<u32>,
    /// How long refused Tweets rest (see [`RECHECK_AFTER_SECS`]).
    pub recheck_after_secs: i64,
    /// `hourly`, catching up: only Tweets `/28hr` has not answered for since this time (the
    /// start of the last full cycle). `None`: every Tweet.
    pub unconfirmed_since: Option<i64>,
}

/// When an open `/historical` cell is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoricalPolicy {
    /// A cell that is not final yet (it ran into the present when it was fetched, or had ended
    /// less than `settle_after` before) is refreshed at most this often.
    pub refresh_after_secs: i64,
    /// How long an hour's numbers may still change after it ends: the first fetch to a cell's
    /// end at least this long after the cell ended makes it final. A cell that becomes final
    /// is fetched at the next cycle after that moment, whatever `refresh_after` says.
    pub settle_after_secs: i64,
    /// How far back the API serves data; `None`: back to 2014-09-01.
    pub lookback_secs: Option<i64>,
    /// Which fetched-but-open cells to refresh.
    pub refresh: Refresh,
}

/// Which fetched-but-open `/historical` cells a plan refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Those fetched at least `refresh_after` ago, less an eighth of it (so a daily cycle that
    /// takes a while still refreshes every day).
    Due,
    /// Catching up: those that were due for a refresh at the start of the last full cycle,
    /// `since`, and were not fetched after it (the refresh failed or was never sent).
    DueAt { since: i64 },
    /// None: backfill only (cells never fetched, or fetched short of their end).
    Never,
}

impl HistoricalPolicy {
    /// Whether an open cell last fetched at `fetched_at` is refreshed: fetched `refresh_after`
    /// ago (less an eighth), or final-able since, at the time the refresh is judged (`now`, or
    /// the start of the cycle a catch-up completes).
    fn refreshes(&self, cell: Cell, fetched_at: i64, now: i64) -> bool {
        let at = match self.refresh {
            Refresh::Due => now,
            Refresh::DueAt { since } => since,
            Refresh::Never => return false,
        };
        let margin = self.refresh_after_secs - self.refresh_after_secs / 8;
        let settled = cell.end() + self.settle_after_secs;
        fetched_at <= at - margin || (at >= settled && fetched_at < settled)
    }

    /// Whether a fetch at `fetched_at` up to `fetched_until` made `cell` final.
    pub fn complete(&self, cell: Cell, fetched_at: i64, fetched_until: i64) -> bool {
        fetched_until >= cell.end() && fetched_at >= cell.end() + self.settle_after_secs
    }

    /// The first hour the API serves at `now` under the lookback, an hour inside the API's own
    /// floor so that the two clocks may differ; `None` without a lookback.
    pub fn served_from(&self, now: i64) -> Option<Hour> {
        served_from(self.lookback_secs, now)
    }
}

/// What the database knows of `/historical` cells: the complete (Tweet, cell) pairs, and the
/// fetched but open ones with when they were fetched and up to when.
#[derive(Debug, Clone, Default)]
pub struct CellState {
    pub complete: SortedSet<(TweetId, Cell)>,
    pub open: SortedMap<(TweetId, Cell), (i64, i64)>,
}

/// What a `/historical` plan does with one (Tweet, cell) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairWork {
    /// Never fetched, or fetched short of the cell's end after it ended.
    Backfill,
    /// Fetched while open or settling, and due for a refresh.
    Refresh,
    Nothing,
}

impl CellState {
    /// Look-ups for (Tweet, cell) pairs in ascending order (see [`Cursor`]).
    fn walk(&self) -> CellWalk<'_> {
        CellWalk {
            complete: self.complete.cursor(),
            open: self.open.cursor(),
        }
    }
}

/// [`CellState`] looked up alongside the sorted inventory.
struct CellWalk<'a> {
    complete: Cursor<'a, (TweetId, Cell), ()>,
    open: Cursor<'a, (TweetId, Cell), (i64, i64)>,
}

impl CellWalk<'_> {
    fn work(&mut self, id: TweetId, cell: Cell, policy: &HistoricalPolicy, now: i64) -> PairWork {
        if self.complete.contains(&(id, cell)) {
            return PairWork::Nothing;
        }
        let Some(&(fetched_at, fetched_until)) = self.open.get(&(id, cell)) else {
            return PairWork::Backfill;
        };
        if fetched_until < cell.end() && fetched_at >= cell.end() {
            return PairWork::Backfill; // the cell had ended, yet the fetch stopped short of it
        }
        if policy.refreshes(cell, fetched_at, now) {
            PairWork::Refresh
        } else {
            PairWork::Nothing
        }
    }
}

/// The `/28hr` plan: owned Tweets younger than `max_age`, under their owner's token, ≤25 per
/// request, so `ceil(n/25)` requests per owner.
pub fn plan_hourly<'a>(
    tweets: impl IntoIterator<Item = PlanTweet<'a>>,
    states: &TweetStates,
    policy: &SeriesPolicy,
    now: i64,
) -> (Vec<Job>, Skipped) {
    let mut owned: BTreeMap<&Handle, Vec<TweetId>> = BTreeMap::new();
    let mut skipped = Skipped::default();
    let mut state_of = states.cursor();
    for t in tweets {
        let Some(owner) = t.owner else { continue };
        if t.id.age_at(now) >= policy.max_age_secs {
            continue;
        }
        let state = state_of.get(&t.id);
        if let Some(since) = policy.unconfirmed_since
            && state
                .and_then(|s| s.hourly_fetched_at)
                .is_some_and(|at| at >= since)
        {
            continue;
        }
        match access(state, now, policy.recheck_after_secs) {
            Access::Owner => owned.entry(owner).or_default().push(t.id),
            Access::BearerOnly | Access::Resting => skipped.resting += 1,
        }
    }
    let mut jobs = Vec::new();
    push_per_owner(
        &mut jobs,
        JobKind::Hourly,
        owned,
        &policy.metrics,
        states,
        false,
    );
    apply_budget(&mut jobs, policy.max_requests, &mut skipped);
    (jobs, skipped)
}

/// The `/historical` plan: for every owned Tweet, the grid cells that its life (creation to
/// `max_age`, never before 2014-09-01, never past the last ended hour) touches and that need
/// work: never fetched or fetched short (backfill), or fetched while open and due for a refresh
/// under `history` (see [`HistoricalPolicy`]). The Tweets of one owner needing one cell share
/// requests of ≤25, so the plan makes `ceil(n/25)` requests per (owner, cell). Under a budget
/// the most recent cells go first.
pub fn plan_historical<'a>(
    tweets: impl IntoIterator<Item = PlanTweet<'a>>,
    states: &TweetStates,
    cells: &CellState,
    policy: &SeriesPolicy,
    history: &HistoricalPolicy,
    now: i64,
) -> (Vec<Job>, Skipped) {
    // A million Tweets make millions of (Tweet, cell) pairs: owners are numbered, each owner's
    // pairs are gathered per cell of the grid as the inventory is walked (no sort of the pairs),
    // and the state and cells are walked alongside it (no hash probes).
    let mut owners: Vec<&Handle> = Vec::new();
    let mut owner_number: HashMap<&Handle, u32> = HashMap::new();
    let mut last_owner: Option<(&Handle, u32)> = None;
    // Per owner number, per cell (by its index on the grid): the Tweets needing that cell.
    let mut wanted: Vec<Vec<Vec<TweetId>>> = Vec::new();
    // The pairs due for a refresh (open cells only, so few): a job is a refresh if all its are.
    let mut refreshing: Vec<(TweetId, Cell)> = Vec::new();
    let mut skipped = Skipped::default();
    let last_hour = Hour::floor(now).secs();
    let served_from = history.served_from(now);
    let floor = served_from.map_or(HISTORICAL_EPOCH, |h| h.secs().max(HISTORICAL_EPOCH));
    let mut state_of = states.cursor();
    let mut walk = cells.walk();
    for t in tweets {
        let Some(owner) = t.owner else { continue };
        let born = t.id.created_at().max(HISTORICAL_EPOCH);
        let life_end = (t.id.created_at() + policy.max_age_secs).min(last_hour);
        if life_end <= born {
            continue;
        }
        if born < floor {
            skipped.before_lookback += 1;
            skipped.before_lookback_secs += life_end.min(floor) - born;
        }
        let born = born.max(floor);
        if life_end <= born {
            continue;
        }
        if access(state_of.get(&t.id), now, policy.recheck_after_secs) != Access::Owner {
            skipped.resting += 1;
            continue;
        }
        let number = match last_owner {
            Some((last, n)) if last == owner => n,
            _ => {
                let n = *owner_number.entry(owner).or_insert_with(|| {
                    owners.push(owner);
                    wanted.push(Vec::new());
                    owners.len() as u32 - 1
                });
                last_owner = Some((owner, n));
                n
            }
        };
        let by_cell = &mut wanted[number as usize];
        let mut cell = Cell::of(born);
        while cell.start() < life_end {
            let work = walk.work(t.id, cell, history, now);
            if work == PairWork::Refresh {
                refreshing.push((t.id, cell));
            }
            if work != PairWork::Nothing {
                let index = cell.index();
                if by_cell.len() <= index {
                    by_cell.resize_with(index + 1, Vec::new);
                }
                by_cell[index].push(t.id);
            }
            cell = Cell(cell.end());
        }
    }
    // Most recent cell first, then owners in handle order (numbers were given in first-seen order).
    let mut by_handle: Vec<usize> = (0..owners.len()).collect();
    by_handle.sort_unstable_by_key(|n| owners[*n]);
    let cell_count = wanted.iter().map(Vec::len).max().unwrap_or(0);
    let refreshing: SortedSet<(TweetId, Cell)> = refreshing.into_iter().collect();
    let mut jobs = Vec::new();
    for index in (0..cell_count).rev() {
        let cell = Cell(HISTORICAL_EPOCH + index as i64 * CELL_SECS);
        for &n in &by_handle {
            let Some(ids) = wanted[n].get_mut(index).filter(|ids| !ids.is_empty()) else {
                continue;
            };
            let credential = Credential::UserContext {
                account: owners[n].clone(),
            };
            let first = jobs.len();
            push_batches(
                &mut jobs,
                JobKind::Historical,
                credential,
                std::mem::take(ids),
                &policy.metrics,
                states,
                false,
            );
            for job in &mut jobs[first..] {
                job.cell = Some(cell);
                job.served_from = served_from.filter(|f| f.secs() > cell.start());
                job.refresh = !refreshing.is_empty()
                    && job.tweets.iter().all(|t| refreshing.contains(&(*t, cell)));
            }
        }
    }
    apply_budget(&mut jobs, policy.max_requests, &mut skipped);
    (jobs, skipped)
}

/// The requests for each owner's Tweets under that owner's token.
fn push_per_owner(
    jobs: &mut Vec<Job>,
    kind: JobKind,
    owned: BTreeMap<&Handle, Vec<TweetId>>,
    metrics: &[Metric],
    states: &TweetStates,
    stalest_first: bool,
) {
    for (owner, ids) in owned {
        let credential = Credential::UserContext {
            account: owner.clone(),
        };
        push_batches(jobs, kind, credential, ids, metrics, states, stalest_first);
    }
}

/// Keeps the first `max` jobs; the Tweets of the others wait for the next run.
fn apply_budget(jobs: &mut Vec<Job>, max: Option<u32>, skipped: &mut Skipped) {
    if let Some(max) = max.map(|m| m as usize).filter(|m| jobs.len() > *m) {
        skipped.over_budget += jobs[max..].iter().map(|j| j.tweets.len()).sum::<usize>();
        jobs.truncate(max);
    }
}

/// Splits one group into the fewest requests, `ceil(n / max_ids)`, sizes differing by at most
/// one. Tweets for which the API refused some of `metrics` (remembered in `states`) form their
/// own subgroups without those metrics, so they are never asked for them again. With
/// `stalest_first`, the least recently checked Tweets fill the first batches.
fn push_batches(
    jobs: &mut Vec<Job>,
    kind: JobKind,
    credential: Credential,
    mut ids: Vec<TweetId>,
    metrics: &[Metric],
    states: &TweetStates,
    stalest_first: bool,
) {
    ids.sort_unstable();
    ids.dedup();
    // The 90-day impressions rule is a `/totals` rule; the 1800-day video rule holds everywhere.
    let asked = match kind {
        JobKind::Totals => metric_mask(metrics),
        JobKind::Hourly | JobKind::Historical => {
            metric_mask(metrics) & metric_mask(&[Metric::VideoViews])
        }
    };
    // The refused masks are few: a short list searched from its last hit, sorted once at the end.
    // Each Tweet is kept with when `/totals` last checked it (never-checked ones sort first).
    let mut by_mask: Vec<(u32, Vec<(i64, TweetId)>)> = Vec::new();
    let mut last = 0;
    let mut state_of = states.cursor();
    for id in ids {
        let state = state_of.get(&id);
        let refused = state.map_or(0, |s| s.unsupported) & asked;
        let checked = state.and_then(|s| s.totals_checked_at).unwrap_or(i64::MIN);
        if by_mask.get(last).is_none_or(|(m, _)| *m != refused) {
            last = match by_mask.iter().position(|(m, _)| *m == refused) {
                Some(i) => i,
                None => {
                    by_mask.push((refused, Vec::new()));
                    by_mask.len() - 1
                }
            };
        }
        by_mask[last].1.push((checked, id));
    }
    by_mask.sort_unstable_by_key(|(m, _)| *m);
    for (refused, mut ids) in by_mask {
        let metrics: Vec<Metric> = metrics
            .iter()
            .copied()
            .filter(|m| refused & metric_mask(&[*m]) == 0)
            .collect();
        if metrics.is_empty() {
            continue;
        }
        if stalest_first {
            ids.sort_unstable();
        }
        let endpoint = kind.endpoint();
        let batches = ids.len().div_ceil(endpoint.max_ids());
        let base = ids.len() / batches;
        let extra = ids.len() % batches;
        let mut rest = ids.as_slice();
        for i in 0..batches {
            let (head, tail) = rest.split_at(base + usize::from(i < extra));
            rest = tail;
            let mut tweets: Vec<TweetId> = head.iter().map(|(_, id)| *id).collect();
            tweets.sort_unstable();
            jobs.push(Job {
                kind,
                endpoint,
                credential: credential.clone(),
                tweets,
                metrics: metrics.clone(),
                cell: None,
                refresh: false,
                served_from: None,
            });
        }
    }
}

/// The bit set of `metrics` by metric id (as stored in `tweets.unsupported_metrics`).
pub fn metric_mask(metrics: &[Metric]) -> u32 {
    metrics.iter().fold(0, |m, metric| m | (1 << metric.id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings read the config's paused accounts, budgets, series sections and durations.
    #[test]
    fn settings_are_taken_from_the_config() {
        let text = r#"
[app]
consumer_key = "ck"
consumer_secret = "cs"

[[accounts]]
handle = "Acme"
access_token = "1-acme"
access_token_secret = "s"

[[accounts]]
handle = "Beta"
access_token = "2-beta"
access_token_secret = "s"
enabled = false

[totals]
max_requests_per_run = 7

[historical]
refresh_after = "2d"
"#;
        let config = Config::parse("config.toml", text, std::iter::empty()).unwrap();
        let settings = PlanSettings::from(&config);
        assert_eq!(settings.paused, HashSet::from(["Beta".to_string()]));
        assert_eq!(settings.totals_max_requests, NonZeroU32::new(7));
        assert_eq!(settings.refresh_after_secs, 2 * DAY_SECS);
        assert_eq!(settings.recheck_after_secs, RECHECK_AFTER_SECS);
        assert_eq!(
            settings.hourly.max_age_secs,
            config.hourly.max_age.as_secs() as i64
        );
        assert_eq!(settings.hourly.max_requests, None);
        assert_eq!(
            settings.historical.metrics,
            config.historical.series.metrics
        );
    }

    const NOW: i64 = 1_800_000_000;

    fn default_policy() -> TotalsPolicy {
        TotalsPolicy {
            max_requests: None,
            recheck_after_secs: RECHECK_AFTER_SECS,
            unconfirmed_since: None,
        }
    }

    /// `n` distinct Tweets created `age_days` before NOW.
    fn tweets(n: usize, age_days: i64, salt: u32) -> Vec<TweetId> {
        (0..n)
            .map(|i| TweetId::from_snowflake((NOW - age_days * DAY_SECS) * 1000 - i as i64, salt))
            .collect()
    }

    fn plan(input: &[(TweetId, Option<&Handle>)]) -> Vec<Job> {
        let tweets = input.iter().map(|(id, owner)| PlanTweet {
            id: *id,
            owner: *owner,
        });
        plan_totals(tweets, &TweetStates::new(), default_policy(), NOW).0
    }

    /// Requests per cycle equal the lower bound, `ceil(n/250)` per bearer group and per owner,
    /// for awkward counts; no batch exceeds 250 and every Tweet is asked exactly once.
    #[test]
    fn totals_plan_meets_the_lower_bound() {
        let acme: Handle = "acme".parse().unwrap();
        let bob: Handle = "bob".parse().unwrap();
        for n in [1usize, 249, 250, 251, 500, 501, 1000, 1001] {
            let young_acme = tweets(n, 3, 1);
            let young_bob = tweets(n / 2 + 1, 10, 2);
            let public = tweets(n, 400, 3);
            let old_acme = tweets(n / 3 + 1, 91, 4);
            let mut input: Vec<(TweetId, Option<&Handle>)> = Vec::new();
            input.extend(young_acme.iter().map(|t| (*t, Some(&acme))));
            input.extend(young_bob.iter().map(|t| (*t, Some(&bob))));
            input.extend(public.iter().map(|t| (*t, None)));
            input.extend(old_acme.iter().map(|t| (*t, Some(&acme))));
            let jobs = plan(&input);

            let lower = n.div_ceil(250) + (n / 2 + 1).div_ceil(250) + (n + n / 3 + 1).div_ceil(250);
            assert_eq!(jobs.len(), lower, "n = {n}");
            assert!(
                jobs.iter()
                    .all(|j| !j.tweets.is_empty() && j.tweets.len() <= 250)
            );
            let mut all: Vec<TweetId> = jobs.iter().flat_map(|j| j.tweets.clone()).collect();
            all.sort();
            let before = all.len();
            all.dedup();
            assert_eq!(before, all.len(), "a Tweet was planned twice");
            assert_eq!(all.len(), input.len());
        }
    }

    /// Each owned young Tweet only under its owner's token with impressions; everything else via
    /// bearer with public metrics only.
    #[test]
    fn totals_plan_picks_the_right_credential_and_metrics() {
        let acme: Handle = "acme".parse().unwrap();
        let young = tweets(3, 1, 1);
        let old = tweets(2, 120, 2);
        let public = tweets(4, 5, 3);
        let mut input: Vec<(TweetId, Option<&Handle>)> = Vec::new();
        input.extend(young.iter().map(|t| (*t, Some(&acme))));
        input.extend(old.iter().map(|t| (*t, Some(&acme))));
        input.extend(public.iter().map(|t| (*t, None)));
        let jobs = plan(&input);
        assert_eq!(jobs.len(), 2);
        let user = jobs
            .iter()
            .find(|j| j.credential != Credential::Bearer)
            .unwrap();
        assert_eq!(
            user.credential,
            Credential::UserContext {
                account: acme.clone()
            }
        );
        let mut expected = young.clone();
        expected.sort();
        assert_eq!(user.tweets, expected);
        assert!(
            user.metrics.contains(&Metric::Impressions)
                && user.metrics.contains(&Metric::QuoteTweets)
        );
        let bearer = jobs
            .iter()
            .find(|j| j.credential == Credential::Bearer)
            .unwrap();
        assert_eq!(bearer.tweets.len(), 6);
        assert!(
            bearer
                .metrics
                .iter()
                .all(|m| Endpoint::Totals.bearer_may_read(*m))
        );
    }

    fn state(status: TweetStatus, checked_ago: i64) -> TweetState {
        TweetState {
            status,
            status_checked_at: Some(NOW - checked_ago),
            totals_checked_at: None,
            unsupported: 0,
            hourly_fetched_at: None,
        }
    }

    /// Unavailable Tweets rest for a day, then are asked again; forbidden owned Tweets use the
    /// bearer token for a day, then their owner's token again.
    #[test]
    fn refused_tweets_rest_then_are_asked_again() {
        let acme: Handle = "acme".parse().unwrap();
        let ids = tweets(4, 2, 1);
        let mut states = TweetStates::new();
        states.insert(ids[0], state(TweetStatus::Unavailable, 3600));
        states.insert(ids[1], state(TweetStatus::Unavailable, 2 * DAY_SECS));
        states.insert(ids[2], state(TweetStatus::Forbidden, 3600));
        states.insert(ids[3], state(TweetStatus::Forbidden, 2 * DAY_SECS));
        let input = ids.iter().map(|id| PlanTweet {
            id: *id,
            owner: Some(&acme),
        });
        let (jobs, skipped) = plan_totals(input, &states, default_policy(), NOW);
        assert_eq!(skipped.resting, 1);
        let bearer = jobs
            .iter()
            .find(|j| j.credential == Credential::Bearer)
            .unwrap();
        assert_eq!(bearer.tweets, vec![ids[2]]);
        let user = jobs
            .iter()
            .find(|j| j.credential != Credential::Bearer)
            .unwrap();
        let mut expected = vec![ids[1], ids[3]];
        expected.sort();
        assert_eq!(user.tweets, expected);
    }

    /// A budget of 2 requests over 1000 public Tweets (4 requests) serves the never-checked and
    /// then the least recently checked Tweets, so two runs cover all of them.
    #[test]
    fn the_request_budget_serves_the_stalest_tweets_first() {
        let public = tweets(1000, 400, 1);
        let policy = TotalsPolicy {
            max_requests: Some(2),
            recheck_after_secs: RECHECK_AFTER_SECS,
            unconfirmed_since: None,
        };
        let mut states = TweetStates::new();
        let mut seen = std::collections::HashSet::new();
        for run in 0..2 {
            let input = public.iter().map(|id| PlanTweet {
                id: *id,
                owner: None,
            });
            let (jobs, skipped) = plan_totals(input, &states, policy, NOW + run);
            assert_eq!(jobs.len(), 2);
            assert_eq!(skipped.over_budget, 500);
            for id in jobs.iter().flat_map(|j| &j.tweets) {
                assert!(
                    seen.insert(*id),
                    "{id} planned twice before every Tweet was served"
                );
                let s = TweetState {
                    status: TweetStatus::Active,
                    status_checked_at: None,
                    totals_checked_at: Some(NOW + run),
                    unsupported: 0,
                    hourly_fetched_at: None,
                };
                states.insert(*id, s);
            }
        }
        assert_eq!(seen.len(), 1000);
    }

    fn history(refresh: Refresh) -> HistoricalPolicy {
        HistoricalPolicy {
            refresh_after_secs: DAY_SECS,
            settle_after_secs: DAY_SECS,
            lookback_secs: None,
            refresh,
        }
    }

    fn series_policy(max_age_days: i64) -> SeriesPolicy {
        SeriesPolicy {
            max_age_secs: max_age_days * DAY_SECS,
            metrics: Endpoint::Hour28.metrics(),
            max_requests: None,
            recheck_after_secs: RECHECK_AFTER_SECS,
            unconfirmed_since: None,
        }
    }

    /// `/28hr`: `ceil(n/25)` requests per owner for owners with 1, 25, 26 and 51 young Tweets;
    /// older and public Tweets are left out.
    #[test]
    fn hourly_plan_meets_the_lower_bound() {
        let owners: Vec<Handle> = ["a1", "a25", "a26", "a51"]
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        let counts = [1usize, 25, 26, 51];
        let mut input = Vec::new();
        let mut all = Vec::new();
        for (i, n) in counts.iter().enumerate() {
            all.push((tweets(*n, 1, i as u32 + 1), Some(&owners[i])));
            all.push((tweets(3, 5, i as u32 + 10), Some(&owners[i]))); // too old for /28hr
        }
        all.push((tweets(40, 1, 30), None)); // public
        for (ids, owner) in &all {
            input.extend(ids.iter().map(|id| PlanTweet {
                id: *id,
                owner: *owner,
            }));
        }
        let (jobs, _) = plan_hourly(input, &TweetStates::new(), &series_policy(3), NOW);
        assert_eq!(jobs.len(), 1 + 1 + 2 + 3);
        for (i, n) in counts.iter().enumerate() {
            let mine: Vec<&Job> = jobs
                .iter()
                .filter(|j| j.credential.label() == owners[i].as_str())
                .collect();
            assert_eq!(mine.len(), n.div_ceil(25));
            assert_eq!(mine.iter().map(|j| j.tweets.len()).sum::<usize>(), *n);
            assert!(
                mine.iter()
                    .all(|j| j.tweets.len() <= 25 && j.endpoint == Endpoint::Hour28)
            );
        }
    }

    /// `/historical`: Tweets spread over several grid cells; each (owner, cell) group costs
    /// `ceil(n/25)` requests, every Tweet is asked for every cell its life touches, and complete
    /// cells are not asked again.
    #[test]
    fn historical_plan_meets_the_lower_bound_per_owner_and_cell() {
        let acme: Handle = "acme".parse().unwrap();
        let bob: Handle = "bob".parse().unwrap();
        // Ages from 1 to 80 days: lives cross cell boundaries at different points.
        let acme_ids: Vec<TweetId> = (0..51)
            .flat_map(|i| tweets(1, 1 + (i * 79) / 50, i as u32 + 1))
            .collect();
        let bob_ids: Vec<TweetId> = (0..26)
            .flat_map(|i| tweets(1, 2 + i * 3, i as u32 + 100))
            .collect();
        let input = || {
            acme_ids
                .iter()
                .map(|id| PlanTweet {
                    id: *id,
                    owner: Some(&acme),
                })
                .chain(bob_ids.iter().map(|id| PlanTweet {
                    id: *id,
                    owner: Some(&bob),
                }))
        };
        let policy = series_policy(90);
        let (jobs, _) = plan_historical(
            input(),
            &TweetStates::new(),
            &CellState::default(),
            &policy,
            &history(Refresh::Due),
            NOW,
        );

        let mut groups: HashMap<(String, Cell), usize> = HashMap::new();
        for (ids, owner) in [(&acme_ids, &acme), (&bob_ids, &bob)] {
            for id in ids.iter() {
                let mut cell = Cell::of(id.created_at());
                while cell.start() < Hour::floor(NOW).secs() {
                    *groups.entry((owner.to_string(), cell)).or_default() += 1;
                    cell = Cell(cell.end());
                }
            }
        }
        assert!(
            groups.keys().filter(|(o, _)| o == "acme").count() >= 3,
            "spread over cells"
        );
        let lower: usize = groups.values().map(|n| n.div_ceil(25)).sum();
        assert_eq!(jobs.len(), lower);
        let mut asked: HashMap<(String, Cell), usize> = HashMap::new();
        for job in &jobs {
            assert!(job.tweets.len() <= 25 && job.endpoint == Endpoint::Historical);
            *asked
                .entry((job.credential.label().to_string(), job.cell.unwrap()))
                .or_default() += job.tweets.len();
        }
        assert_eq!(asked, groups);

        // Complete every cell but the current one: only the current cell is planned again.
        let now_cell = Cell::of(NOW);
        let complete: SortedSet<(TweetId, Cell)> = jobs
            .iter()
            .filter(|j| j.cell != Some(now_cell))
            .flat_map(|j| j.tweets.iter().map(|t| (*t, j.cell.unwrap())))
            .collect();
        let mut cells = CellState {
            complete,
            open: SortedMap::new(),
        };
        let plan = |cells: &CellState, refresh, now| {
            plan_historical(
                input(),
                &TweetStates::new(),
                cells,
                &policy,
                &history(refresh),
                now,
            )
            .0
        };
        let again = plan(&cells, Refresh::Due, NOW);
        assert!(!again.is_empty());
        assert!(again.iter().all(|j| j.cell == Some(now_cell) && !j.refresh));
        assert_eq!(again.iter().map(|j| j.tweets.len()).sum::<usize>(), 51 + 26);

        // The open cell fetched: nothing to do until it is due for a refresh, a day later less
        // an eighth; then it is a refresh, not backfill.
        for job in &again {
            for t in &job.tweets {
                cells
                    .open
                    .insert((*t, now_cell), (NOW, Hour::floor(NOW).secs()));
            }
        }
        assert!(plan(&cells, Refresh::Due, NOW + 60).is_empty());
        assert!(plan(&cells, Refresh::Due, NOW + 20 * 3600).is_empty());
        let refresh = plan(&cells, Refresh::Due, NOW + 22 * 3600);
        assert_eq!(refresh.len(), again.len());
        assert!(refresh.iter().all(|j| j.refresh));
        assert!(plan(&cells, Refresh::Never, NOW + 22 * 3600).is_empty());
        // Catching up after a full cycle at NOW + 60 that did not reach them: not due then.
        assert!(plan(&cells, Refresh::DueAt { since: NOW + 60 }, NOW + 22 * 3600).is_empty());
        assert_eq!(
            plan(
                &cells,
                Refresh::DueAt {
                    since: NOW + 22 * 3600
                },
                NOW + 23 * 3600
            )
            .len(),
            again.len()
        );
        // A Tweet whose open cell was never fetched is backfill, and rides in the same batches.
        cells.open.remove(&(again[0].tweets[0], now_cell));
        let mixed = plan(&cells, Refresh::Due, NOW + 22 * 3600);
        assert_eq!(mixed.len(), again.len());
        assert_eq!(mixed.iter().filter(|j| !j.refresh).count(), 1);
        let backfill = plan(&cells, Refresh::Never, NOW + 22 * 3600);
        assert_eq!(backfill.len(), 1);
        assert_eq!(backfill[0].tweets, vec![again[0].tweets[0]]);
    }

    /// Refreshed daily, final two days after a cell's end.
    fn settling() -> HistoricalPolicy {
        HistoricalPolicy {
            refresh_after_secs: DAY_SECS,
            settle_after_secs: 2 * DAY_SECS,
            ..history(Refresh::Due)
        }
    }

    /// A cell is complete only once fetched to its end at least `settle_after` after it ended;
    /// `refresh_after` only says how often an open cell is asked again.
    #[test]
    fn cells_complete_after_they_settle() {
        let h = settling();
        let cell = Cell::of(NOW);
        assert!(!h.complete(cell, cell.end() + 10, cell.end()));
        assert!(!h.complete(cell, cell.end() + DAY_SECS, cell.end()));
        assert!(!h.complete(cell, cell.end() + 2 * DAY_SECS, cell.end() - 3600));
        assert!(h.complete(cell, cell.end() + 2 * DAY_SECS, cell.end()));
    }

    /// An open cell is refreshed every `refresh_after`, and once more as soon as it can become
    /// final (`settle_after` after its end), however recently it was fetched; never in between.
    #[test]
    fn an_open_cell_is_refreshed_when_it_can_become_final() {
        let h = settling();
        let cell = Cell::of(NOW);
        let settled = cell.end() + 2 * DAY_SECS;
        // Fetched 4 h before it could settle: not due 2 h later, due at the settle moment.
        let fetched = settled - 4 * 3600;
        assert!(!h.refreshes(cell, fetched, settled - 2 * 3600));
        assert!(h.refreshes(cell, fetched, settled));
        // The daily rhythm still holds before then.
        assert!(h.refreshes(cell, fetched - DAY_SECS, settled - 4 * 3600));
        // A catch-up judges at the start of the cycle it completes.
        let catch_up = HistoricalPolicy {
            refresh: Refresh::DueAt {
                since: settled + 60,
            },
            ..h
        };
        assert!(catch_up.refreshes(cell, fetched, settled + 3600));
        assert!(!catch_up.refreshes(cell, settled + 120, settled + 3600));
        let never = HistoricalPolicy {
            refresh: Refresh::Never,
            ..h
        };
        assert!(!never.refreshes(cell, fetched, settled));
    }

    /// Under a lookback, cells wholly before the API's floor are not asked for, the cell that
    /// straddles it is asked from the floor on, and the plan says how much history that leaves out.
    #[test]
    fn the_lookback_floor_cuts_history_the_api_no_longer_serves() {
        let acme: Handle = "acme".parse().unwrap();
        let year = 365 * DAY_SECS;
        let old = TweetId::from_snowflake((NOW - year - 40 * DAY_SECS) * 1000, 1);
        let young = TweetId::from_snowflake((NOW - 50 * DAY_SECS) * 1000, 2);
        let policy = series_policy(90);
        let h = HistoricalPolicy {
            lookback_secs: Some(year),
            ..history(Refresh::Due)
        };
        let input = [old, young].map(|id| PlanTweet {
            id,
            owner: Some(&acme),
        });
        let (jobs, skipped) = plan_historical(
            input,
            &TweetStates::new(),
            &CellState::default(),
            &policy,
            &h,
            NOW,
        );
        let floor = h.served_from(NOW).unwrap();
        assert_eq!(floor, Hour::floor(NOW - year).plus_hours(1));
        let old_cells: Vec<&Job> = jobs.iter().filter(|j| j.tweets.contains(&old)).collect();
        assert!(!old_cells.is_empty());
        for job in &old_cells {
            let cell = job.cell.unwrap();
            assert!(cell.end() > floor.secs(), "{cell:?} lies before the floor");
            let (start, _) = job.window(NOW).unwrap();
            assert_eq!(start.secs(), cell.start().max(floor.secs()));
        }
        assert!(old_cells.iter().any(|j| j.served_from == Some(floor)));
        // Only the old Tweet loses history: its first 40 days, give or take the hour margin.
        assert_eq!(skipped.before_lookback, 1);
        let lost = floor.secs() - old.created_at();
        assert_eq!(skipped.before_lookback_secs, lost);
        assert!((lost - 40 * DAY_SECS).abs() <= 2 * 3600, "{lost}");
        // The young Tweet's cells are whole.
        assert!(
            jobs.iter()
                .filter(|j| j.tweets.contains(&young))
                .all(|j| j.served_from.is_none())
        );
        // Without a lookback, everything back to creation.
        let (all, skipped) = plan_historical(
            [old].map(|id| PlanTweet {
                id,
                owner: Some(&acme),
            }),
            &TweetStates::new(),
            &CellState::default(),
            &policy,
            &history(Refresh::Due),
            NOW,
        );
        assert_eq!(
            all.iter().map(|j| j.cell).min().unwrap(),
            Some(Cell::of(old.created_at()))
        );
        assert_eq!(skipped.before_lookback, 0);
    }

    /// A Tweet's historical life runs from creation (never before 2014-09-01) to `max_age`,
    /// never past the last ended hour; windows never end in the future.
    #[test]
    fn historical_life_and_windows() {
        let acme: Handle = "acme".parse().unwrap();
        let old = TweetId::from_snowflake((NOW - 200 * DAY_SECS) * 1000, 1);
        let ancient = TweetId::from_snowflake((HISTORICAL_EPOCH - 30 * DAY_SECS) * 1000, 2);
        let policy = series_policy(90);
        for id in [old, ancient] {
            let (jobs, _) = plan_historical(
                [PlanTweet {
                    id,
                    owner: Some(&acme),
                }],
                &TweetStates::new(),
                &CellState::default(),
                &policy,
                &history(Refresh::Due),
                NOW,
            );
            let born = id.created_at().max(HISTORICAL_EPOCH);
            let first = jobs.iter().map(|j| j.cell.unwrap()).min().unwrap();
            let last = jobs.iter().map(|j| j.cell.unwrap()).max().unwrap();
            assert_eq!(first, Cell::of(born));
            let life_end = (id.created_at() + 90 * DAY_SECS).min(Hour::floor(NOW).secs());
            assert!(last.start() < life_end && life_end <= last.end(), "{id}");
            assert!(first.start() >= HISTORICAL_EPOCH);
        }
        let cell = Cell::of(NOW);
        let (start, end) = cell.window(NOW);
        assert_eq!(start.secs(), cell.start());
        assert_eq!(end, Hour::floor(NOW));
        assert!(cell.window(cell.end() + 10).1.secs() == cell.end());
        assert!(!cell.complete_at(NOW) && cell.complete_at(cell.end()));
        assert_eq!(Cell::of(HISTORICAL_EPOCH - 1), Cell::of(HISTORICAL_EPOCH));
        assert_eq!(Cell::starting_at(cell.start()), Some(cell));
        assert_eq!(Cell::starting_at(cell.start() + 3600), None);
    }

    /// Tweets that refused a metric form their own batches without it; the others keep it.
    #[test]
    fn refused_metrics_split_their_tweets_off() {
        let public = tweets(300, 400, 1);
        let mut states = TweetStates::new();
        for id in &public[..10] {
            let s = TweetState {
                status: TweetStatus::Active,
                status_checked_at: None,
                totals_checked_at: None,
                unsupported: metric_mask(&[Metric::VideoViews]),
                hourly_fetched_at: None,
            };
            states.insert(*id, s);
        }
        let input = public.iter().map(|id| PlanTweet {
            id: *id,
            owner: None,
        });
        let (jobs, _) = plan_totals(input, &states, default_policy(), NOW);
        // 290 with video views (2 requests), 10 without (1 request).
        assert_eq!(jobs.len(), 3);
        let without: Vec<&Job> = jobs
            .iter()
            .filter(|j| !j.metrics.contains(&Metric::VideoViews))
            .collect();
        assert_eq!(without.len(), 1);
        assert_eq!(without[0].tweets.len(), 10);
        assert_eq!(without[0].metrics.len(), 4);
        assert!(without[0].tweets.iter().all(|t| states.contains_key(t)));
    }

    #[test]
    fn an_empty_inventory_plans_nothing() {
        assert!(plan(&[]).is_empty());
    }
}
