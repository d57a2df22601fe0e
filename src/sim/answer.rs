//! What a valid, authenticated request gets: the credential and ownership rules (engagement-api
//! §3.2, §6.1, §8.3, §12.4), the partial-success lists, and the groupings nested in `group_by`
//! order with string leaves (§4).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::domain::{
    Endpoint, Hour, IMPRESSIONS_MAX_AGE_SECS, Metric, TweetId, VIDEO_VIEWS_MAX_AGE_SECS, iso_utc,
};

use super::auth::Credential;
use super::population::TweetState;
use super::query::{GroupKey, Query};
use super::service::{Reply, Sim};
use super::window::Window;

/// One number the answer is made of: a (Tweet, type) total, or one hourly bucket of it.
struct Fact {
    tweet: TweetId,
    metric: Metric,
    /// Index into the window's hours, for series endpoints.
    hour: Option<usize>,
    value: i64,
}

/// `N Tweet ID(s) are unavailable` [D].
fn unavailable_text(n: usize) -> String {
    format!("{n} Tweet ID(s) are unavailable")
}

fn id_strings(ids: &[TweetId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

impl Sim {
    /// The answer to `query` from `credential` at `now`, or a whole-request refusal.
    pub(crate) fn answer(
        &self,
        endpoint: Endpoint,
        credential: Credential,
        query: &Query,
        window: Option<&Window>,
        now: i64,
    ) -> Result<Reply, Reply> {
        self.check_credential(endpoint, credential, query)?;

        // Protected Tweets refuse the whole request with 400 (AUTHGUIDE [D]); listing them in
        // `unavailable_tweet_ids` there too is a simulator choice (Q13).
        let state = |id: &TweetId| self.tweet(*id).map(|t| t.state);
        let protected: Vec<TweetId> = query
            .ids
            .iter()
            .copied()
            .filter(|id| state(id) == Some(TweetState::Protected))
            .collect();
        if !protected.is_empty() {
            return Err(Reply::json(
                400,
                json!({ "errors": [unavailable_text(protected.len())], "unavailable_tweet_ids": id_strings(&protected) }),
            ));
        }
        // IDs the world does not know are answered like deleted ones (simulator choice).
        let (available, unavailable): (Vec<TweetId>, Vec<TweetId>) = query
            .ids
            .iter()
            .partition(|id| state(id) == Some(TweetState::Active));

        let wants = |m: Metric| query.metrics.contains(&m);
        // Q8: the 90-day rule is documented for /totals only, so only /totals applies it.
        let too_old_for_impressions: Vec<TweetId> = if endpoint == Endpoint::Totals
            && (wants(Metric::Impressions) || wants(Metric::Engagements))
        {
            available
                .iter()
                .copied()
                .filter(|t| t.age_at(now) > IMPRESSIONS_MAX_AGE_SECS)
                .collect()
        } else {
            Vec::new()
        };
        let too_old_for_video: Vec<TweetId> = if wants(Metric::VideoViews) {
            available
                .iter()
                .copied()
                .filter(|t| t.age_at(now) > VIDEO_VIEWS_MAX_AGE_SECS)
                .collect()
        } else {
            Vec::new()
        };

        let mut facts = Vec::new();
        for &tweet in &available {
            for &metric in &query.metrics {
                let omitted = matches!(metric, Metric::Impressions | Metric::Engagements)
                    && too_old_for_impressions.contains(&tweet);
                if omitted {
                    continue;
                }
                // Too old for video views: kept in the answer with "0" (interpreting-metrics [D]).
                let zeroed = metric == Metric::VideoViews && too_old_for_video.contains(&tweet);
                self.push_facts(&mut facts, tweet, metric, window, now, zeroed);
            }
        }

        let hour_keys: Vec<(String, String)> = window
            .map(|w| w.hours().map(Hour::keys).collect())
            .unwrap_or_default();
        let mut body = Map::new();
        for g in &query.groupings {
            let refs: Vec<&Fact> = facts.iter().collect();
            body.insert(g.name.clone(), nest(&g.keys, &refs, &hour_keys));
        }
        if let Some(w) = window {
            body.insert("start".into(), w.echo_start.clone().into());
            body.insert("end".into(), w.echo_end.clone().into());
        }
        let mut errors = Vec::new();
        if !unavailable.is_empty() {
            // Q13: REF's message table pairs the list with this error; the simulator sends both.
            errors.push(unavailable_text(unavailable.len()));
            body.insert(
                "unavailable_tweet_ids".into(),
                id_strings(&unavailable).into(),
            );
        }
        if !too_old_for_impressions.is_empty() {
            // Q9: the TIME_PERIOD placeholder is filled with the cut-off (simulator choice).
            let cutoff = iso_utc(now - IMPRESSIONS_MAX_AGE_SECS);
            errors.push(format!(
                "Impressions & engagements for tweets older than 90 days (created before {cutoff}) are not supported"
            ));
            body.insert(
                "unsupported_for_impressions_engagements_tweet_ids".into(),
                id_strings(&too_old_for_impressions).into(),
            );
        }
        if !too_old_for_video.is_empty() {
            body.insert(
                "unsupported_for_video_views_tweet_ids".into(),
                id_strings(&too_old_for_video).into(),
            );
        }
        if !errors.is_empty() {
            body.insert("errors".into(), errors.into());
        }
        Ok(Reply::json(200, Value::Object(body)))
    }

    /// Bearer: public types on `/totals` only. User context: only the token owner's Tweets;
    /// deleted and unknown IDs are not ownership-checked. Either failure refuses the whole request.
    fn check_credential(
        &self,
        endpoint: Endpoint,
        credential: Credential,
        query: &Query,
    ) -> Result<(), Reply> {
        match credential {
            Credential::Bearer => {
                let refused: Vec<&str> = query
                    .metrics
                    .iter()
                    .filter(|m| !endpoint.bearer_may_read(**m))
                    .map(|m| m.as_str())
                    .collect();
                if refused.is_empty() {
                    Ok(())
                } else {
                    // Text seen by RUBY [C]; used for every bearer refusal (Q10, simulator choice).
                    Err(Reply::errors(
                        403,
                        [format!(
                            "Forbidden to access metrics: {}",
                            refused.join(", ")
                        )],
                    ))
                }
            }
            Credential::User(i) => {
                let handle = &self.world().accounts[i].handle;
                let foreign: Vec<String> = query
                    .ids
                    .iter()
                    .filter(|id| {
                        self.tweet(**id).is_some_and(|t| {
                            t.state != TweetState::Deleted && t.owner.as_ref() != Some(handle)
                        })
                    })
                    .map(ToString::to_string)
                    .collect();
                if foreign.is_empty() {
                    Ok(())
                } else {
                    Err(Reply::errors(
                        403,
                        [format!(
                            "Forbidden to access tweets: {}",
                            foreign.join(", ")
                        )],
                    ))
                }
            }
        }
    }

    /// The facts of one (Tweet, type): its total at `now`, or one per window hour. Hours that have
    /// not ended yet read zero: data is revealed hour by hour.
    fn push_facts(
        &self,
        facts: &mut Vec<Fact>,
        tweet: TweetId,
        metric: Metric,
        window: Option<&Window>,
        now: i64,
        zeroed: bool,
    ) {
        let Some(w) = window else {
            let value = if zeroed {
                0
            } else {
                self.total(tweet, metric, now)
            };
            facts.push(Fact {
                tweet,
                metric,
                hour: None,
                value,
            });
            return;
        };
        // Consecutive boundaries share one cumulative value each, so a bucket costs one call.
        let mut before = self.total(tweet, metric, w.start.secs());
        for (i, hour) in w.hours().enumerate() {
            let end = hour.plus_hours(1).secs();
            let after = self.total(tweet, metric, end);
            let value = if zeroed || end > now {
                0
            } else {
                after - before
            };
            facts.push(Fact {
                tweet,
                metric,
                hour: Some(i),
                value,
            });
            before = after;
        }
    }
}

/// Nests `facts` by `keys` in order; a leaf is the decimal string of the sum of its facts. Without
/// `engagement.day`, `engagement.hour` buckets are hour-of-day sums (RUBY's real output, Q2).
fn nest(keys: &[GroupKey], facts: &[&Fact], hour_keys: &[(String, String)]) -> Value {
    let Some((first, rest)) = keys.split_first() else {
        return Value::String(facts.iter().map(|f| f.value).sum::<i64>().to_string());
    };
    let mut groups: BTreeMap<String, Vec<&Fact>> = BTreeMap::new();
    for f in facts {
        let key = match first {
            GroupKey::TweetId => f.tweet.to_string(),
            GroupKey::Type => f.metric.as_str().to_string(),
            // Validation keeps time keys off /totals, so series facts always have an hour.
            GroupKey::Day => f.hour.map(|h| hour_keys[h].0.clone()).unwrap_or_default(),
            GroupKey::Hour => f.hour.map(|h| hour_keys[h].1.clone()).unwrap_or_default(),
        };
        groups.entry(key).or_default().push(f);
    }
    Value::Object(
        groups
            .into_iter()
            .map(|(k, fs)| (k, nest(rest, &fs, hour_keys)))
            .collect(),
    )
}
