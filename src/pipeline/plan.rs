//! From the database's state to a cycle's jobs: the state the planner needs, read in one go,
//! and the policies each kind is planned under in its scope. The planning itself is the
//! planner's; this module adds what only the database knows (history, refused accounts).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use super::due::{KindDue, Scope, Selection};
use crate::config::{Config, ScheduleConfig};
use crate::domain::{AccountState, Handle, JobKind, Shard, TweetId, TweetState};
use crate::inventory::{self, Entry, Inventory, InventoryError};
use crate::planner::{
    self, Cell, CellState, HistoricalPolicy, Job, PlanSettings, PlanTweet, Refresh, SeriesPolicy,
    SeriesSettings, Skipped, TotalsPolicy, TweetStates,
};
use crate::store::{AccountRecord, KindHistory, Store, StoreError};

/// Loads the inventory named by the config, checking owners against `[[accounts]]`.
pub fn load_inventory(config: &Config) -> Result<Inventory, InventoryError> {
    inventory::load(&config.inventory.path, &config.handles())
}

/// The entries of `inventory` that `shard` plans: by the inventory's owner (the same in every
/// shard's eyes, whatever each database has learnt of moved Tweets), public ones by ID. The
/// inventory mirror takes every entry: all shards share one `tweets` table.
pub fn shard_entries(shard: Shard, inventory: &Inventory) -> impl Iterator<Item = &Entry> {
    inventory
        .entries
        .iter()
        .filter(move |e| shard.owns(e.id, e.owner.as_ref()))
}

/// What the planner needs from the database.
#[derive(Debug, Default)]
pub struct PlanState {
    /// Status and last `/totals` and `/28hr` answers of known Tweets, as the batches look them up.
    pub tweets: HashMap<TweetId, TweetState>,
    /// The same, by Tweet ID: what the planner walks alongside the inventory.
    pub by_id: TweetStates,
    /// `/historical` cells complete, and fetched but open, per Tweet.
    pub cells: CellState,
    /// Tweets the API attributes to another configured account than the inventory does.
    pub moved: HashMap<TweetId, Handle>,
    /// The accounts' conditions as the last runs found them.
    pub accounts: Vec<AccountRecord>,
    /// Each kind's last cycles.
    pub history: BTreeMap<JobKind, KindHistory>,
}

impl PlanState {
    /// Reads the state the planner needs; `settle_after` decides which cells are final.
    pub fn read(store: &Store, settle_after: Duration) -> Result<PlanState, StoreError> {
        let settle = i64::try_from(settle_after.as_secs()).unwrap_or(i64::MAX / 4);
        let complete = store
            .complete_cells(planner::CELL_SECS, settle)?
            .into_iter()
            .filter_map(|(id, start)| Some((id, Cell::starting_at(start)?)))
            .collect();
        let open = store
            .open_cells(planner::CELL_SECS, settle)?
            .into_iter()
            .filter_map(|c| {
                Some((
                    (c.tweet, Cell::starting_at(c.cell)?),
                    (c.fetched_at, c.fetched_until),
                ))
            })
            .collect();
        let by_id: TweetStates = store.tweet_states()?.into_iter().collect();
        let mut history = BTreeMap::new();
        for kind in JobKind::ALL {
            history.insert(kind, store.kind_history(kind.name())?);
        }
        Ok(PlanState {
            tweets: by_id.iter().map(|(id, s)| (*id, *s)).collect(),
            by_id,
            cells: CellState { complete, open },
            moved: store.moved_owners()?,
            accounts: store.accounts()?,
            history,
        })
    }

    /// Whether each kind `selection` considers is due at `now` under `schedule` (forced ones
    /// always are).
    pub fn dues(&self, selection: &Selection, schedule: &ScheduleConfig, now: i64) -> Vec<KindDue> {
        selection
            .kinds()
            .into_iter()
            .map(|kind| {
                let history = self.history.get(&kind).copied().unwrap_or_default();
                match selection {
                    Selection::Due => KindDue::at(kind, &history, schedule, now),
                    Selection::Forced(_) => KindDue::forced(kind, &history, schedule, now),
                }
            })
            .collect()
    }

    /// Accounts whose token the API refused at their last use.
    fn refused(&self) -> HashSet<&str> {
        self.accounts
            .iter()
            .filter(|a| a.state == AccountState::Refused)
            .map(|a| a.handle.as_str())
            .collect()
    }
}

/// Plans the jobs of `kinds`, each in its scope, for `inventory` (no I/O besides the state
/// already read). Paused accounts' Tweets (and, when catching up, refused accounts') are
/// planned as public Tweets: their public totals with the bearer token, no series.
pub fn plan(
    config: &Config,
    inventory: &Inventory,
    state: &PlanState,
    kinds: &[(JobKind, Scope)],
    now: i64,
) -> (Vec<Job>, Skipped) {
    plan_with(
        &PlanSettings::from(config),
        inventory,
        state,
        kinds,
        now,
        false,
    )
}

/// `/historical` backfill left (never fetched, or fetched short): requests it needs, budget
/// aside; refreshes of open cells do not count.
pub fn backfill_left(config: &Config, inventory: &Inventory, state: &PlanState, now: i64) -> usize {
    let mut unbounded = PlanSettings::from(config);
    unbounded.historical.max_requests = None;
    plan_with(
        &unbounded,
        inventory,
        state,
        &[(JobKind::Historical, Scope::Full)],
        now,
        true,
    )
    .0
    .len()
}

/// A cycle's work, planned.
pub(super) struct Planned {
    /// The kinds with work, each in its scope.
    pub scopes: Vec<(JobKind, Scope)>,
    pub jobs: Vec<Job>,
    pub skipped: Skipped,
    /// `/historical` requests the remaining backfill needs, when `/historical` is considered.
    pub backfill_left: Option<usize>,
}

/// Plans each kind of `dues` in its scope. A due kind counts even with nothing to send, so its
/// period starts again; a catch-up with nothing undone is no work at all.
pub(super) fn plan_cycle(
    config: &Config,
    inventory: &Inventory,
    state: &PlanState,
    dues: &[KindDue],
    considered: &[JobKind],
    now: i64,
) -> Planned {
    let mut scopes = Vec::new();
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for due in dues {
        let scope = due.scope();
        let (mut j, s) = plan(config, inventory, state, &[(due.kind, scope)], now);
        if scope == Scope::Full || !j.is_empty() {
            scopes.push((due.kind, scope));
            jobs.append(&mut j);
            skipped.absorb(&s);
        }
    }
    skipped.paused = shard_entries(config.shard, inventory)
        .filter(|e| {
            e.owner
                .as_ref()
                .and_then(|o| config.account(o))
                .is_some_and(|a| !a.enabled)
        })
        .count();
    Planned {
        scopes,
        jobs,
        skipped,
        backfill_left: considered
            .contains(&JobKind::Historical)
            .then(|| backfill_left(config, inventory, state, now)),
    }
}

fn plan_with(
    settings: &PlanSettings,
    inventory: &Inventory,
    state: &PlanState,
    kinds: &[(JobKind, Scope)],
    now: i64,
    backfill_only: bool,
) -> (Vec<Job>, Skipped) {
    let paused = &settings.paused;
    let refused = state.refused();
    // The owner the API says wrote a Tweet wins over the inventory's, once the API said so.
    let tweets = |scope: Scope| {
        let refused = &refused;
        shard_entries(settings.shard, inventory).map(move |e| {
            let owner = state.moved.get(&e.id).or(e.owner.as_ref()).filter(|o| {
                let catching_up = matches!(scope, Scope::CatchUp { .. });
                !(paused.contains(o.as_str()) || catching_up && refused.contains(o.as_str()))
            });
            PlanTweet { id: e.id, owner }
        })
    };
    let recheck = settings.recheck_after_secs;
    let since = |scope: Scope| match scope {
        Scope::Full => None,
        Scope::CatchUp { since } => Some(since),
    };
    // A per-run budget is a budget per period of the schedule: a catch-up gets what the kind's
    // last full cycle (and the catch-ups since) left of it, so a CronJob that runs more often
    // than the schedule spends no more than the daemon would.
    let budget = |kind: JobKind, max: Option<NonZeroU32>, scope: Scope| {
        let max = max.map(|n| n.get());
        match scope {
            Scope::Full => max,
            Scope::CatchUp { .. } => {
                let sent = state.history.get(&kind).map_or(0, |h| h.sent_since_full);
                max.map(|m| m.saturating_sub(u32::try_from(sent).unwrap_or(u32::MAX)))
            }
        }
    };
    let series = |kind: JobKind, s: &SeriesSettings, scope: Scope| SeriesPolicy {
        max_age_secs: s.max_age_secs,
        metrics: s.metrics.clone(),
        max_requests: budget(kind, s.max_requests, scope),
        recheck_after_secs: recheck,
        unconfirmed_since: since(scope),
    };
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for &(kind, scope) in kinds {
        let (mut j, s) = match kind {
            JobKind::Totals => {
                let policy = TotalsPolicy {
                    max_requests: budget(kind, settings.totals_max_requests, scope),
                    recheck_after_secs: recheck,
                    unconfirmed_since: since(scope),
                };
                planner::plan_totals(tweets(scope), &state.by_id, policy, now)
            }
            JobKind::Hourly => planner::plan_hourly(
                tweets(scope),
                &state.by_id,
                &series(kind, &settings.hourly, scope),
                now,
            ),
            JobKind::Historical => {
                let history = HistoricalPolicy {
                    refresh_after_secs: settings.refresh_after_secs,
                    settle_after_secs: settings.settle_after_secs,
                    lookback_secs: settings.lookback_secs,
                    refresh: match (backfill_only, scope) {
                        (true, _) => Refresh::Never,
                        (false, Scope::Full) => Refresh::Due,
                        (false, Scope::CatchUp { since }) => Refresh::DueAt { since },
                    },
                };
                let mut policy = series(kind, &settings.historical, scope);
                // A backfill is not a catch-up's to narrow: never-fetched cells are undone work.
                policy.unconfirmed_since = None;
                planner::plan_historical(
                    tweets(scope),
                    &state.by_id,
                    &state.cells,
                    &policy,
                    &history,
                    now,
                )
            }
        };
        jobs.append(&mut j);
        skipped.absorb(&s);
    }
    (jobs, skipped)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::Credential;
    use crate::inventory::Entry;

    /// A config of `accounts` handles, sharded as `shard` (`None`: unsharded).
    fn config(accounts: &[&str], shard: Option<Shard>) -> Config {
        let mut text = String::from("[app]\nconsumer_key = \"ck\"\nconsumer_secret = \"cs\"\n");
        for (i, h) in accounts.iter().enumerate() {
            text.push_str(&format!(
                "[[accounts]]\nhandle = \"{h}\"\naccess_token = \"{i}-t\"\naccess_token_secret = \"s\"\n"
            ));
        }
        if let Some(s) = shard {
            text.push_str(&format!("[runtime]\nshard = \"{s}\"\n"));
        }
        Config::parse("config.toml", &text, std::iter::empty()).unwrap()
    }

    /// Every Tweet of an inventory is planned by exactly one of N shards (N = 1 to 5), for every
    /// kind, and a shard uses only its own accounts' tokens.
    #[test]
    fn every_tweet_is_planned_by_exactly_one_shard() {
        let handles = ["Acme", "bob", "carol_9", "DELTA", "e", "f00", "Globex"];
        let now = 1_790_000_000;
        let entries = (0..700u32)
            .map(|k| Entry {
                // Ages from an hour to about 120 days: every kind has work.
                id: TweetId::from_snowflake((now - 3600 - i64::from(k) * 15_000) * 1000, k),
                owner: (k % 3 != 0).then(|| handles[k as usize % handles.len()].parse().unwrap()),
                line: k as usize + 2,
            })
            .collect::<Vec<_>>();
        let mut entries = entries;
        entries.sort_by_key(|e| e.id);
        let inventory = Inventory {
            entries,
            duplicates_skipped: 0,
            source: "tweets.csv".into(),
        };
        let state = PlanState::default();
        let kinds: Vec<(JobKind, Scope)> = JobKind::ALL.map(|k| (k, Scope::Full)).to_vec();
        // (kind, Tweet) → how many times planned.
        let planned = |config: &Config| {
            let (jobs, _) = plan(config, &inventory, &state, &kinds, now);
            let mut out: BTreeMap<(JobKind, TweetId), usize> = BTreeMap::new();
            for job in &jobs {
                for t in &job.tweets {
                    *out.entry((job.kind, *t)).or_default() += 1;
                }
            }
            (jobs, out)
        };
        let (_, whole) = planned(&config(&handles, None));
        for kind in JobKind::ALL {
            assert!(whole.keys().any(|(k, _)| *k == kind), "{kind} has no work");
        }
        for n in 1..=5 {
            let mut union: BTreeMap<(JobKind, TweetId), usize> = BTreeMap::new();
            let mut sizes = Vec::new();
            for i in 0..n {
                let shard = Shard::new(i, n).unwrap();
                let config = config(&handles, Some(shard));
                let (jobs, part) = planned(&config);
                for job in &jobs {
                    if let Credential::UserContext { account } = &job.credential {
                        assert!(
                            shard.owns_handle(account),
                            "{shard}: {account}'s token used"
                        );
                    }
                }
                sizes.push(shard_entries(shard, &inventory).count());
                for (key, times) in part {
                    *union.entry(key).or_default() += times;
                }
            }
            assert_eq!(union, whole, "{n} shards together plan what one does, once");
            assert_eq!(
                sizes.iter().sum::<usize>(),
                inventory.entries.len(),
                "{n}: {sizes:?}"
            );
            if n > 1 {
                assert!(sizes.iter().all(|&s| s > 0), "{n} shards: {sizes:?}");
            }
        }
    }
}
