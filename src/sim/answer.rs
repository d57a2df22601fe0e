//! What a valid, authenticated request gets: the credential and ownership rules (engagement-api
//! §3.2, §6.1, §8.3, §12.4), the partial-success lists, and the groupings nested in `group_by`
//! order with string leaves (§4). The `[realism]` knobs that shape an answer (Tweet and key
//! order, the 403 form, `errors` in partial 200s) are drawn here per request, in [`Shape`].

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use crate::domain::{Endpoint, Metric, TweetId, iso_utc};

use super::contract::{self, IMPRESSIONS_MAX_AGE_SECS, VIDEO_VIEWS_MAX_AGE_SECS};

use super::auth::Credential;
use super::data::{Series, mix, unit};
use super::population::TweetState;
use super::query::{GroupKey, Grouping, Query};
use super::realism::{ForbiddenForm, PartialErrors, Realism, TweetOrder};
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

// Tags that keep the per-request draws apart (data.rs uses 0x1_, population.rs 0x2_).
const TAG_TWEET_ORDER: u64 = 0x30;
const TAG_KEY_ORDER: u64 = 0x31;
const TAG_FORBIDDEN_FORM: u64 = 0x32;
const TAG_PARTIAL_ERRORS: u64 = 0x33;
/// The place the top-level keys' order is drawn from (`place` gives the `GroupKey`s 0..4).
const TOP_LEVEL_KEYS: u64 = 4;

/// One request's draws of the knobs that shape an answer: a pure function of the seed, the
/// request's number and the knobs, so a replayed run answers byte for byte the same.
#[derive(Debug, Clone, Copy)]
struct Shape {
    seed: u64,
    request: u64,
    realism: Realism,
}

impl Shape {
    /// A coin for this request, independent per `tag`.
    fn coin(&self, tag: u64) -> bool {
        unit(mix(&[tag, self.seed, self.request])) < 0.5
    }

    /// Puts `ids` in the answer's Tweet order (`tweet_order`). The reference examples answer
    /// sorted (§4.4 [D]); §4.2 [I] says key order is not meaningful, so a client may not rely on
    /// request order.
    fn order_tweets(&self, ids: &mut [TweetId]) {
        match self.realism.tweet_order {
            TweetOrder::Request => {}
            TweetOrder::Sorted => ids.sort(),
            TweetOrder::Shuffled => {
                ids.sort_by_key(|id| mix(&[TAG_TWEET_ORDER, self.seed, self.request, id.get()]))
            }
        }
    }

    /// The order of `n` keys drawn from `place` (`shuffle_keys`): `0..n` when the knob is off,
    /// else a permutation drawn for this request (simulator choice: one per place and request,
    /// so every nested object of a request lists its days, say, in the same order).
    fn key_order(&self, place: u64, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if self.realism.shuffle_keys {
            order.sort_by_key(|i| mix(&[TAG_KEY_ORDER, self.seed, self.request, place, *i as u64]));
        }
        order
    }

    /// Whether this request's 403 for foreign Tweets uses the current form (no author id).
    fn current_forbidden_form(&self) -> bool {
        match self.realism.forbidden_form {
            ForbiddenForm::Author => false,
            ForbiddenForm::Current => true,
            ForbiddenForm::Mixed => self.coin(TAG_FORBIDDEN_FORM),
        }
    }

    /// Whether this request's partial 200 carries `errors` next to the lists (Q13).
    fn errors_in_partial(&self) -> bool {
        match self.realism.partial_errors {
            PartialErrors::Always => true,
            PartialErrors::Never => false,
            PartialErrors::Mixed => self.coin(TAG_PARTIAL_ERRORS),
        }
    }
}

/// Where a `GroupKey`'s order is drawn from, and its slot in `Keys::orders`.
fn place(key: GroupKey) -> u64 {
    match key {
        GroupKey::TweetId => 0,
        GroupKey::Type => 1,
        GroupKey::Day => 2,
        GroupKey::Hour => 3,
    }
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
        request: u64,
    ) -> Result<Reply, Reply> {
        let shape = Shape {
            seed: self.world().seed,
            request,
            realism: self.realism(),
        };
        self.check_credential(endpoint, credential, query, shape)?;

        // Protected Tweets refuse the whole request with 400 (AUTHGUIDE [D]); listing them in
        // `unavailable_tweet_ids` there too is a simulator choice (Q13).
        let state = |id: &TweetId| self.tweet(*id).map(|t| t.state);
        let mut protected: Vec<TweetId> = query
            .ids
            .iter()
            .copied()
            .filter(|id| state(id) == Some(TweetState::Protected))
            .collect();
        if !protected.is_empty() {
            shape.order_tweets(&mut protected);
            return Err(Reply::json(
                400,
                json!({ "errors": [unavailable_text(protected.len())], "unavailable_tweet_ids": id_strings(&protected) }),
            ));
        }
        // IDs the world does not know are answered like deleted ones (simulator choice).
        let (mut available, mut unavailable): (Vec<TweetId>, Vec<TweetId>) = query
            .ids
            .iter()
            .partition(|id| state(id) == Some(TweetState::Active));
        // The `unsupported_*` lists are filtered from `available`, so they follow its order.
        shape.order_tweets(&mut available);
        shape.order_tweets(&mut unavailable);

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
        if !errors.is_empty() && shape.errors_in_partial() {
            meta.insert("errors".into(), errors.into());
        }
        // Serialized as it is walked, not built as a `Value`: a full /historical batch has ~300k
        // leaves.
        let keys = Keys::new(&available, window, shape);
        let refs: Vec<&Fact> = facts.iter().collect();
        // Meta keys in serde_json's order (its maps are sorted: no `preserve_order` in this
        // crate), then the groupings in query order; or all of them in a drawn order.
        let top: Vec<Top> = meta
            .iter()
            .map(|(k, v)| Top::Meta(k, v))
            .chain(query.groupings.iter().map(Top::Grouping))
            .collect();
        let answer = Answer {
            top: (shape.key_order(TOP_LEVEL_KEYS, top.len()).into_iter())
                .map(|i| top[i])
                .collect(),
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
        shape: Shape,
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
                if shape.current_forbidden_form() {
                    // The documented current form (§8.2 [D], FAQ example "Forbidden to access
                    // tweets: 1054424731825229824;"): one string, no author. For several IDs,
                    // ascending, ", "-joined, one `;` at the end: simulator choice.
                    let mut ids: Vec<TweetId> = foreign.into_values().flatten().collect();
                    ids.sort();
                    ids.dedup();
                    let text = format!(
                        "Forbidden to access tweets: {};",
                        id_strings(&ids).join(", ")
                    );
                    return Err(Reply::errors(403, [text]));
                }
                // One string per foreign author in the 2016 form RUBY saw [C], IDs ascending and
                // joined by ", ". Naming the author lets a client tell a Tweet that changed hands
                // to another of its accounts from a stranger's.
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

    /// The facts of one (Tweet, type): its total at `now` (`Sim::total`), or one per window hour,
    /// as much of it as has settled by `now` (`settle`; tidy: hours that have not ended read 0).
    fn push_facts(
        &self,
        facts: &mut Vec<Fact>,
        (index, tweet): (usize, TweetId),
        metric: Metric,
        window: Option<&Window>,
        now: i64,
        zeroed: bool,
    ) {
        let mut push = |hour, value| {
            facts.push(Fact {
                tweet: index,
                metric,
                hour,
                value,
            })
        };
        let Some(w) = window else {
            push(
                None,
                if zeroed {
                    0
                } else {
                    self.total(tweet, metric, now)
                },
            );
            return;
        };
        let series = Series::new(self.world().seed, tweet, metric);
        let settle = self.settle();
        // Consecutive buckets share a boundary, so each bucket costs one evaluation.
        let mut before = series.at(w.start.secs());
        for (i, hour) in w.hours().enumerate() {
            let after = series.at(hour.plus_hours(1).secs());
            push(
                Some(i),
                if zeroed {
                    0
                } else {
                    settle.reported(after - before, hour, now)
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
    /// Per `place(key)`: the indices of `key`'s values in the order they are written.
    orders: [Vec<usize>; 4],
}

impl Keys {
    fn new(tweets: &[TweetId], window: Option<&Window>, shape: Shape) -> Keys {
        let mut keys = Keys {
            tweets: id_strings(tweets),
            days: Vec::new(),
            day_of: Vec::new(),
            hour_of: Vec::new(),
            orders: Default::default(),
        };
        for hour in window.iter().flat_map(|w| w.hours()) {
            let (day, hh) = hour.keys();
            if keys.days.last() != Some(&day) {
                keys.days.push(day);
            }
            keys.day_of.push(keys.days.len() - 1);
            keys.hour_of.push(hh.parse().unwrap_or_default());
        }
        let drawn = |key| shape.key_order(place(key), keys.len(key));
        // Tweets are already in `tweet_order`; `shuffle_keys` leaves them alone.
        let orders = [
            (0..keys.tweets.len()).collect(),
            drawn(GroupKey::Type),
            drawn(GroupKey::Day),
            drawn(GroupKey::Hour),
        ];
        keys.orders = orders;
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

/// One top-level entry of a 200 answer.
#[derive(Clone, Copy)]
enum Top<'a> {
    Meta(&'a str, &'a Value),
    Grouping(&'a Grouping),
}

/// A whole 200 answer: the top-level fields and one nested object per grouping, in `top` order.
struct Answer<'a> {
    top: Vec<Top<'a>>,
    facts: &'a [&'a Fact],
    keys: &'a Keys,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.top.len()))?;
        for entry in &self.top {
            match entry {
                Top::Meta(name, value) => map.serialize_entry(name, value)?,
                Top::Grouping(g) => {
                    let nested = Nested {
                        group_by: &g.keys,
                        facts: self.facts.to_vec(),
                        keys: self.keys,
                    };
                    map.serialize_entry(&g.name, &nested)?;
                }
            }
        }
        map.end()
    }
}

/// `facts` nested by `group_by` in order; a leaf is the decimal string of the sum of its facts.
/// Keys come in `Keys::orders` (tidy: Tweets in request order, types in `Metric::ALL` order, time
/// oldest first). Without `engagement.day`, `engagement.hour` buckets are hour-of-day sums
/// (RUBY's real output, Q2).
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
        for &i in &self.keys.orders[place(first) as usize] {
            let facts = std::mem::take(&mut groups[i]);
            if facts.is_empty() {
                continue;
            }
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
