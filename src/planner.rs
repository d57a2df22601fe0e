//! The planner: a pure function from (inventory, state from the database, policy, now) to the
//! list of requests a cycle makes. It decides endpoint, credential, batch and metric set; it does
//! no I/O and knows nothing of HTTP or SQL.

use std::collections::{BTreeMap, HashMap};

use crate::auth::Credential;
use crate::domain::{Endpoint, Handle, IMPRESSIONS_MAX_AGE_SECS, JobKind, Metric, TweetId};
use crate::store::{TweetState, TweetStatus};

/// How long a Tweet reported unavailable or protected is left alone before it is asked again.
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
}

/// Why a Tweet is not in this cycle's plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Unavailable or protected, asked again after [`RECHECK_AFTER_SECS`].
    pub resting: usize,
    /// Left for the next run by the per-run request budget.
    pub over_budget: usize,
}

/// The `/totals` plan: public Tweets and owned Tweets of 90 days or more through the bearer
/// token (≤250 per request, owners mixed); younger owned Tweets under their owner's token with
/// `impressions` and `engagements` added (≤250 per request, one owner each). Owned Tweets the
/// owner's token may not read fall back to the bearer token for their public metrics.
pub fn plan_totals<'a>(
    tweets: impl IntoIterator<Item = PlanTweet<'a>>,
    states: &HashMap<TweetId, TweetState>,
    policy: TotalsPolicy,
    now: i64,
) -> (Vec<Job>, Skipped) {
    let mut bearer: Vec<TweetId> = Vec::new();
    let mut owned: BTreeMap<&Handle, Vec<TweetId>> = BTreeMap::new();
    let mut skipped = Skipped::default();
    for t in tweets {
        let state = states.get(&t.id);
        let status = state.map_or(TweetStatus::Active, |s| s.status);
        let resting = matches!(status, TweetStatus::Unavailable | TweetStatus::Protected)
            && state
                .and_then(|s| s.status_changed_at)
                .is_some_and(|at| now - at < RECHECK_AFTER_SECS);
        if resting {
            skipped.resting += 1;
            continue;
        }
        match t.owner {
            Some(owner)
                if t.id.age_at(now) < IMPRESSIONS_MAX_AGE_SECS
                    && status != TweetStatus::Forbidden =>
            {
                owned.entry(owner).or_default().push(t.id)
            }
            _ => bearer.push(t.id),
        }
    }
    let user_metrics: Vec<Metric> = Endpoint::Totals.metrics();
    let mut jobs = Vec::new();
    for (owner, ids) in owned {
        let credential = Credential::UserContext {
            account: owner.clone(),
        };
        push_batches(&mut jobs, JobKind::Totals, credential, ids, &user_metrics);
    }
    push_batches(
        &mut jobs,
        JobKind::Totals,
        Credential::Bearer,
        bearer,
        &Metric::PUBLIC,
    );
    if let Some(max) = policy.max_requests {
        let max = max as usize;
        if jobs.len() > max {
            skipped.over_budget = jobs[max..].iter().map(|j| j.tweets.len()).sum();
            jobs.truncate(max);
        }
    }
    (jobs, skipped)
}

/// Splits one group into the fewest requests: `ceil(n / max_ids)`, sizes differing by at most one.
fn push_batches(
    jobs: &mut Vec<Job>,
    kind: JobKind,
    credential: Credential,
    mut ids: Vec<TweetId>,
    metrics: &[Metric],
) {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return;
    }
    let endpoint = kind.endpoint();
    let batches = ids.len().div_ceil(endpoint.max_ids());
    let base = ids.len() / batches;
    let extra = ids.len() % batches;
    let mut rest = ids.as_slice();
    for i in 0..batches {
        let (head, tail) = rest.split_at(base + usize::from(i < extra));
        rest = tail;
        jobs.push(Job {
            kind,
            endpoint,
            credential: credential.clone(),
            tweets: head.to_vec(),
            metrics: metrics.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DAY_SECS;

    const NOW: i64 = 1_800_000_000;

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
        plan_totals(tweets, &HashMap::new(), TotalsPolicy::default(), NOW).0
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

    #[test]
    fn unavailable_tweets_rest_then_are_asked_again_and_forbidden_ones_use_bearer() {
        let acme: Handle = "acme".parse().unwrap();
        let ids = tweets(3, 2, 1);
        let mut states = HashMap::new();
        let resting = TweetState {
            status: TweetStatus::Unavailable,
            status_changed_at: Some(NOW - 3600),
        };
        let stale = TweetState {
            status: TweetStatus::Unavailable,
            status_changed_at: Some(NOW - 2 * DAY_SECS),
        };
        let forbidden = TweetState {
            status: TweetStatus::Forbidden,
            status_changed_at: Some(NOW),
        };
        states.insert(ids[0], resting);
        states.insert(ids[1], stale);
        states.insert(ids[2], forbidden);
        let input = ids.iter().map(|id| PlanTweet {
            id: *id,
            owner: Some(&acme),
        });
        let (jobs, skipped) = plan_totals(input, &states, TotalsPolicy::default(), NOW);
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
        assert_eq!(user.tweets, vec![ids[1]]);
    }

    #[test]
    fn the_request_budget_defers_the_rest() {
        let public = tweets(1000, 400, 1);
        let input = public.iter().map(|id| PlanTweet {
            id: *id,
            owner: None,
        });
        let policy = TotalsPolicy {
            max_requests: Some(2),
        };
        let (jobs, skipped) = plan_totals(input, &HashMap::new(), policy, NOW);
        assert_eq!(jobs.len(), 2);
        assert_eq!(skipped.over_budget, 500);
    }

    #[test]
    fn an_empty_inventory_plans_nothing() {
        assert!(plan(&[]).is_empty());
    }
}
