//! The plans checked against a straightforward reference: the planner as it was written with
//! hash tables (a probe per Tweet and per (Tweet, cell) pair, one sort of every pair), on
//! random inventories in random order, random states and cells, under random policies.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::domain::{Endpoint, HOUR_SECS};
use crate::test_rng::Rng;

const NOW: i64 = 1_800_000_000;

/// The state a plan reads, in hash tables.
struct Reference {
    states: HashMap<TweetId, TweetState>,
    complete: HashSet<(TweetId, Cell)>,
    open: HashMap<(TweetId, Cell), (i64, i64)>,
}

impl Reference {
    fn work(&self, id: TweetId, cell: Cell, policy: &HistoricalPolicy, now: i64) -> PairWork {
        if self.complete.contains(&(id, cell)) {
            return PairWork::Nothing;
        }
        let Some(&(fetched_at, fetched_until)) = self.open.get(&(id, cell)) else {
            return PairWork::Backfill;
        };
        if fetched_until < cell.end() && fetched_at >= cell.end() {
            return PairWork::Backfill;
        }
        if policy.refreshes(cell, fetched_at, now) {
            PairWork::Refresh
        } else {
            PairWork::Nothing
        }
    }

    fn checked(&self, id: &TweetId) -> i64 {
        self.states
            .get(id)
            .and_then(|s| s.totals_checked_at)
            .unwrap_or(i64::MIN)
    }

    fn totals(
        &self,
        tweets: &[PlanTweet<'_>],
        policy: TotalsPolicy,
        now: i64,
    ) -> (Vec<Job>, Skipped) {
        let mut bearer = Vec::new();
        let mut owned: BTreeMap<&Handle, Vec<TweetId>> = BTreeMap::new();
        let mut skipped = Skipped::default();
        for t in tweets {
            let state = self.states.get(&t.id);
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
        let mut jobs = Vec::new();
        for (owner, ids) in owned {
            let credential = Credential::UserContext {
                account: owner.clone(),
            };
            self.batches(
                &mut jobs,
                JobKind::Totals,
                credential,
                ids,
                &Endpoint::Totals.metrics(),
                true,
            );
        }
        self.batches(
            &mut jobs,
            JobKind::Totals,
            Credential::Bearer,
            bearer,
            &Metric::PUBLIC,
            true,
        );
        if policy.max_requests.is_some() {
            jobs.sort_by_cached_key(|j| j.tweets.iter().map(|id| self.checked(id)).min());
        }
        apply_budget(&mut jobs, policy.max_requests, &mut skipped);
        (jobs, skipped)
    }

    fn hourly(
        &self,
        tweets: &[PlanTweet<'_>],
        policy: &SeriesPolicy,
        now: i64,
    ) -> (Vec<Job>, Skipped) {
        let mut owned: BTreeMap<&Handle, Vec<TweetId>> = BTreeMap::new();
        let mut skipped = Skipped::default();
        for t in tweets {
            let Some(owner) = t.owner else { continue };
            if t.id.age_at(now) >= policy.max_age_secs {
                continue;
            }
            let state = self.states.get(&t.id);
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
        for (owner, ids) in owned {
            let credential = Credential::UserContext {
                account: owner.clone(),
            };
            self.batches(
                &mut jobs,
                JobKind::Hourly,
                credential,
                ids,
                &policy.metrics,
                false,
            );
        }
        apply_budget(&mut jobs, policy.max_requests, &mut skipped);
        (jobs, skipped)
    }

    fn historical(
        &self,
        tweets: &[PlanTweet<'_>],
        policy: &SeriesPolicy,
        history: &HistoricalPolicy,
        now: i64,
    ) -> (Vec<Job>, Skipped) {
        let mut pairs: Vec<(Reverse<Cell>, &Handle, TweetId)> = Vec::new();
        let mut skipped = Skipped::default();
        let last_hour = Hour::floor(now).secs();
        let served_from = history.served_from(now);
        let floor = served_from.map_or(HISTORICAL_EPOCH, |h| h.secs().max(HISTORICAL_EPOCH));
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
            if access(self.states.get(&t.id), now, policy.recheck_after_secs) != Access::Owner {
                skipped.resting += 1;
                continue;
            }
            let mut cell = Cell::of(born);
            while cell.start() < life_end {
                if self.work(t.id, cell, history, now) != PairWork::Nothing {
                    pairs.push((Reverse(cell), owner, t.id));
                }
                cell = Cell(cell.end());
            }
        }
        pairs.sort();
        let mut groups: Vec<(Cell, &Handle, Vec<TweetId>)> = Vec::new();
        for (Reverse(cell), owner, id) in pairs {
            match groups.last_mut() {
                Some((c, o, ids)) if *c == cell && *o == owner => ids.push(id),
                _ => groups.push((cell, owner, vec![id])),
            }
        }
        let mut jobs = Vec::new();
        for (cell, owner, ids) in groups {
            let credential = Credential::UserContext {
                account: owner.clone(),
            };
            let first = jobs.len();
            self.batches(
                &mut jobs,
                JobKind::Historical,
                credential,
                ids,
                &policy.metrics,
                false,
            );
            for job in &mut jobs[first..] {
                job.cell = Some(cell);
                job.served_from = served_from.filter(|f| f.secs() > cell.start());
                job.refresh = job
                    .tweets
                    .iter()
                    .all(|t| self.work(*t, cell, history, now) == PairWork::Refresh);
            }
        }
        apply_budget(&mut jobs, policy.max_requests, &mut skipped);
        (jobs, skipped)
    }

    fn batches(
        &self,
        jobs: &mut Vec<Job>,
        kind: JobKind,
        credential: Credential,
        mut ids: Vec<TweetId>,
        metrics: &[Metric],
        stalest_first: bool,
    ) {
        ids.sort_unstable();
        ids.dedup();
        let asked = match kind {
            JobKind::Totals => metric_mask(metrics),
            JobKind::Hourly | JobKind::Historical => {
                metric_mask(metrics) & metric_mask(&[Metric::VideoViews])
            }
        };
        let mut by_mask: BTreeMap<u32, Vec<TweetId>> = BTreeMap::new();
        for id in ids {
            let refused = self.states.get(&id).map_or(0, |s| s.unsupported) & asked;
            by_mask.entry(refused).or_default().push(id);
        }
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
                ids.sort_by_cached_key(|id| (self.checked(id), *id));
            }
            let endpoint = kind.endpoint();
            let batches = ids.len().div_ceil(endpoint.max_ids());
            for chunk in split_evenly(&ids, batches) {
                let mut tweets = chunk.to_vec();
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
}

/// `ids` in `n` consecutive runs whose sizes differ by at most one, the longer ones first.
fn split_evenly(ids: &[TweetId], n: usize) -> Vec<&[TweetId]> {
    let (base, extra) = (ids.len() / n, ids.len() % n);
    let mut out = Vec::new();
    let mut rest = ids;
    for i in 0..n {
        let (head, tail) = rest.split_at(base + usize::from(i < extra));
        out.push(head);
        rest = tail;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every kind's plan (jobs, their order, and what was skipped) equals the reference's, for
    /// inventories in ID order (as loaded) or shuffled, with duplicates, refused metrics,
    /// resting Tweets, complete and open cells, budgets, catch-ups and lookbacks.
    #[test]
    fn plans_equal_the_straightforward_reference(seed in any::<u64>(), n in 0usize..700, sorted in any::<bool>()) {
        let mut rng = Rng(seed);
        let handles: Vec<Handle> = ["acme", "Bob", "carol", "dan_"].iter().map(|h| h.parse().unwrap()).collect();
        let owners = 1 + rng.below(handles.len() as u64) as usize;
        let now = NOW + rng.secs(DAY_SECS);
        let mut entries: Vec<(TweetId, Option<usize>)> = (0..n)
            .map(|_| {
                // Mostly young Tweets (so that series batches fill up), some years old.
                let age = if rng.chance(60) { rng.secs(120 * DAY_SECS) } else { rng.secs(4 * 365 * DAY_SECS) };
                let id = TweetId::from_snowflake((now - age) * 1000 - rng.secs(1000), rng.below(4) as u32);
                (id, rng.chance(75).then(|| rng.below(owners as u64) as usize))
            })
            .collect();
        if rng.chance(20) && !entries.is_empty() {
            let again = entries[rng.below(entries.len() as u64) as usize];
            entries.push((again.0, rng.chance(50).then_some(0)));
        }
        if sorted {
            entries.sort_by_key(|(id, _)| *id);
        }
        let statuses = [TweetStatus::Active, TweetStatus::Unavailable, TweetStatus::Protected, TweetStatus::Forbidden];
        let masks = [0, metric_mask(&[Metric::VideoViews]), metric_mask(&[Metric::Impressions]), metric_mask(&[Metric::VideoViews, Metric::Impressions])];
        let mut reference = Reference { states: HashMap::new(), complete: HashSet::new(), open: HashMap::new() };
        for (id, owner) in &entries {
            if rng.chance(50) {
                let state = TweetState {
                    status: statuses[rng.below(4) as usize],
                    status_checked_at: rng.chance(80).then(|| now - rng.secs(3 * DAY_SECS)),
                    totals_checked_at: rng.chance(70).then(|| now - rng.secs(3 * DAY_SECS)),
                    unsupported: masks[rng.below(4) as usize],
                    hourly_fetched_at: rng.chance(50).then(|| now - rng.secs(3 * DAY_SECS)),
                };
                reference.states.insert(*id, state);
            }
            if owner.is_some() {
                let mut cell = Cell::of(id.created_at());
                while cell.start() < now {
                    match rng.below(4) {
                        0 => { reference.complete.insert((*id, cell)); }
                        1 => {
                            let at = cell.start() + rng.secs((now - cell.start()).max(1));
                            let until = (cell.start() + rng.secs(2 * CELL_SECS)).min(at);
                            reference.open.insert((*id, cell), (at, until));
                        }
                        _ => {}
                    }
                    cell = Cell(cell.end());
                }
            }
        }
        let states: TweetStates = reference.states.iter().map(|(k, v)| (*k, *v)).collect();
        let cells = CellState {
            complete: reference.complete.iter().copied().collect(),
            open: reference.open.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        let tweets: Vec<PlanTweet<'_>> = entries
            .iter()
            .map(|(id, owner)| PlanTweet { id: *id, owner: owner.map(|o| &handles[o]) })
            .collect();
        let budget = |rng: &mut Rng| rng.chance(30).then(|| rng.below(6) as u32);
        let recheck = if rng.chance(50) { RECHECK_AFTER_SECS } else { 2 * HOUR_SECS };
        let since = |rng: &mut Rng| rng.chance(30).then(|| now - rng.secs(2 * DAY_SECS));

        let totals = TotalsPolicy { max_requests: budget(&mut rng), recheck_after_secs: recheck, unconfirmed_since: since(&mut rng) };
        prop_assert_eq!(
            plan_totals(tweets.iter().copied(), &states, totals, now),
            reference.totals(&tweets, totals, now)
        );
        let hourly = SeriesPolicy {
            max_age_secs: if rng.chance(50) { 3 * DAY_SECS } else { 40 * DAY_SECS },
            metrics: Endpoint::Hour28.metrics(),
            max_requests: budget(&mut rng),
            recheck_after_secs: recheck,
            unconfirmed_since: since(&mut rng),
        };
        prop_assert_eq!(
            plan_hourly(tweets.iter().copied(), &states, &hourly, now),
            reference.hourly(&tweets, &hourly, now)
        );
        let series = SeriesPolicy {
            max_age_secs: [90 * DAY_SECS, 400 * DAY_SECS, i64::MAX / 4][rng.below(3) as usize],
            metrics: Endpoint::Historical.metrics(),
            max_requests: budget(&mut rng),
            recheck_after_secs: recheck,
            unconfirmed_since: None,
        };
        let history = HistoricalPolicy {
            refresh_after_secs: DAY_SECS,
            settle_after_secs: 2 * DAY_SECS,
            lookback_secs: rng.chance(40).then(|| 30 * DAY_SECS + rng.secs(400 * DAY_SECS)),
            refresh: match rng.below(3) {
                0 => Refresh::Due,
                1 => Refresh::DueAt { since: now - rng.secs(2 * DAY_SECS) },
                _ => Refresh::Never,
            },
        };
        prop_assert_eq!(
            plan_historical(tweets.iter().copied(), &states, &cells, &series, &history, now),
            reference.historical(&tweets, &series, &history, now)
        );
    }
}
