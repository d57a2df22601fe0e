//! What a valid, authenticated request gets: the credential and ownership rules (engagement-api
//! §3.2, §6.1, §8.3, §12.4), the partial-success lists, and the groupings nested in `group_by`
//! order with string leaves (§4).

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use crate::domain::{Endpoint, Metric, TweetId, iso_utc};

use super::contract::{self, IMPRESSIONS_MAX_AGE_SECS, VIDEO_VIEWS_MAX_AGE_SECS};

use super::auth::Credential;
use super::data::Series;
use super::population::TweetState;
use super::query::{GroupKey, Query};
use super::service::{Reply, Sim};
use super::window::Window;

/// One number the answer is made of: a (Tweet, type) total, or one hourly bucket of it.
struct Fact {
    /// Index into the answered Tweets.
    tweet: usize,
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
        // The request's number since start: what per-request draws (orders, forms) hash.
        _request: u64,
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
        for (index, &tweet) in available.iter().enumerate() {
            for &metric in &query.metrics {
                let omitted = matches!(metric, Metric::Impressions | Metric::Engagements)
                    && too_old_for_impressions.contains(&tweet);
                if omitted {
                    continue;
                }
                // Too old for video views: kept in the answer with "0" (interpreting-metrics [D]).
                let zeroed = metric == Metric::VideoViews && too_old_for_video.contains(&tweet);
                self.push_facts(&mut facts, (index, tweet), metric, window, now, zeroed);
            }
        }

        let mut meta = Map::new();
        if let Some(w) = window {
            meta.insert("start".into(), w.echo_start.clone().into());
            meta.insert("end".into(), w.echo_end.clone().into());
        }
        let mut errors = Vec::new();
        if !unavailable.is_empty() {
            // Q13: REF's message table pairs the list with this error; the simulator sends both.
            errors.push(unavailable_text(unavailable.len()));
            meta.insert(
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
            meta.insert(
                "unsupported_for_impressions_engagements_tweet_ids".into(),
                id_strings(&too_old_for_impressions).into(),
            );
        }
        if !too_old_for_video.is_empty() {
            meta.insert(
                "unsupported_for_video_views_tweet_ids".into(),
                id_strings(&too_old_for_video).into(),
            );
        }
        if !errors.is_empty() {
            meta.insert("errors".into(), errors.into());
        }
        // Serialized as it is walked, not built as a `Value`: a full /historical batch has ~300k
        // leaves.
        let keys = Keys::new(&available, window);
        let refs: Vec<&Fact> = facts.iter().collect();
        let answer = Answer {
            meta: &meta,
            groupings: &query.groupings,
            facts: &refs,
            keys: &keys,
        };
        let out = serde_json::to_string(&answer).map_err(|e| Reply::raw(500, e.to_string()))?;
        Ok(Reply::raw(200, out))
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
                    .filter(|m| !contract::bearer_may_read(endpoint, **m))
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
                let mut foreign: BTreeMap<u64, Vec<TweetId>> = BTreeMap::new();
                for t in query.ids.iter().filter_map(|id| self.tweet(*id)) {
                    if t.state != TweetState::Deleted && t.owner.as_ref() != Some(handle) {
                        foreign.entry(t.author_id).or_default().push(t.id);
                    }
                }
                if foreign.is_empty() {
                    return Ok(());
                }
                // One string per foreign author in the 2016 form RUBY saw [C], IDs ascending and
                // joined by ", ". The current text is unknown (the FAQ shows "Forbidden to access
                // tweets: <ids>" [D]); naming the author is a simulator choice, so a client can
                // tell a Tweet that changed hands to another of its accounts from a stranger's.
                let messages = foreign.into_iter().map(|(author, mut ids)| {
                    ids.sort();
                    ids.dedup();
                    format!(
                        "Forbidden to access tweets for author id {author}: {}",
                        id_strings(&ids).join(", ")
                    )
                });
                Err(Reply::errors(403, messages))
            }
        }
    }

    /// The facts of one (Tweet, type): its total at `now`, or one per window hour. Hours that have
    /// not ended yet read zero: data is revealed hour by hour.
    fn push_facts(
        &self,
        facts: &mut Vec<Fact>,
        (index, tweet): (usize, TweetId),
        metric: Metric,
        window: Option<&Window>,
        now: i64,
        zeroed: bool,
    ) {
        let series = Series::new(self.world().seed, tweet, metric);
        let mut push = |hour, value| {
            facts.push(Fact {
                tweet: index,
                metric,
                hour,
                value,
            })
        };
        let Some(w) = window else {
            push(None, if zeroed { 0 } else { series.at(now) });
            return;
        };
        // Consecutive buckets share a boundary, so each bucket costs one evaluation.
        let mut before = series.at(w.start.secs());
        for (i, hour) in w.hours().enumerate() {
            let end = hour.plus_hours(1).secs();
            let after = series.at(end);
            push(
                Some(i),
                if zeroed || end > now {
                    0
                } else {
                    after - before
                },
            );
            before = after;
        }
    }
}

/// The keys of a response, made once per answer; facts are grouped by dense key indices.
struct Keys {
    /// Decimal IDs of the answered Tweets, by `Fact::tweet`.
    tweets: Vec<String>,
    /// The window's distinct `YYYY-MM-DD` days, oldest first.
    days: Vec<String>,
    /// Per window hour: its index in `days` and its hour of day.
    day_of: Vec<usize>,
    hour_of: Vec<usize>,
}

impl Keys {
    fn new(tweets: &[TweetId], window: Option<&Window>) -> Keys {
        let mut keys = Keys {
            tweets: id_strings(tweets),
            days: Vec::new(),
            day_of: Vec::new(),
            hour_of: Vec::new(),
        };
        for hour in window.iter().flat_map(|w| w.hours()) {
            let (day, hh) = hour.keys();
            if keys.days.last() != Some(&day) {
                keys.days.push(day);
            }
            keys.day_of.push(keys.days.len() - 1);
            keys.hour_of.push(hh.parse().unwrap_or_default());
        }
        keys
    }

    /// How many distinct values `key` can take.
    fn len(&self, key: GroupKey) -> usize {
        match key {
            GroupKey::TweetId => self.tweets.len(),
            GroupKey::Type => Metric::ALL.len() + 1,
            GroupKey::Day => self.days.len(),
            GroupKey::Hour => 24,
        }
    }

    /// The index of `f`'s value of `key`. Validation keeps time keys off /totals, so facts
    /// grouped by time always have an hour.
    fn index(&self, key: GroupKey, f: &Fact) -> usize {
        let hour = f.hour.unwrap_or_default();
        match key {
            GroupKey::TweetId => f.tweet,
            GroupKey::Type => f.metric.id() as usize,
            GroupKey::Day => self.day_of[hour],
            GroupKey::Hour => self.hour_of[hour],
        }
    }

    /// The JSON key for index `i` of `key`.
    fn name(&self, key: GroupKey, i: usize) -> std::borrow::Cow<'_, str> {
        match key {
            GroupKey::TweetId => self.tweets[i].as_str().into(),
            GroupKey::Type => Metric::from_id(i as i64).map_or("", Metric::as_str).into(),
            GroupKey::Day => self.days[i].as_str().into(),
            GroupKey::Hour => format!("{i:02}").into(),
        }
    }
}

/// A whole 200 answer: the top-level fields, then one nested object per grouping.
struct Answer<'a> {
    meta: &'a Map<String, Value>,
    groupings: &'a [super::query::Grouping],
    facts: &'a [&'a Fact],
    keys: &'a Keys,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.meta.len() + self.groupings.len()))?;
        for (name, value) in self.meta {
            map.serialize_entry(name, value)?;
        }
        for g in self.groupings {
            let nested = Nested {
                group_by: &g.keys,
                facts: self.facts.to_vec(),
                keys: self.keys,
            };
            map.serialize_entry(&g.name, &nested)?;
        }
        map.end()
    }
}

/// `facts` nested by `group_by` in order; a leaf is the decimal string of the sum of its facts.
/// Tweets come in request order, types in `Metric::ALL` order, time oldest first. Without
/// `engagement.day`, `engagement.hour` buckets are hour-of-day sums (RUBY's real output, Q2).
struct Nested<'a> {
    group_by: &'a [GroupKey],
    facts: Vec<&'a Fact>,
    keys: &'a Keys,
}

impl Serialize for Nested<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some((&first, rest)) = self.group_by.split_first() else {
            let sum: i64 = self.facts.iter().map(|f| f.value).sum();
            return serializer.collect_str(&sum);
        };
        let mut groups: Vec<Vec<&Fact>> = vec![Vec::new(); self.keys.len(first)];
        for f in &self.facts {
            groups[self.keys.index(first, f)].push(f);
        }
        let mut map = serializer.serialize_map(None)?;
        for (i, facts) in groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
        {
            let inner = Nested {
                group_by: rest,
                facts,
                keys: self.keys,
            };
            map.serialize_entry(&self.keys.name(first, i), &inner)?;
        }
        map.end()
    }
}
