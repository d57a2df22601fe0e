//! The Tweets of a world: listed ones plus generated ones, a pure function of the world and the
//! UTC day the simulator starts, so two simulators started the same day agree on every ID.

use std::collections::HashSet;

use crate::domain::{DAY_SECS, Handle, TweetId};

use super::data::{has_video, mix, unit};
use super::world::{TweetSpec, World};

/// Author user IDs of public Tweets are `PUBLIC_AUTHOR_BASE + k`, outside any configured account.
pub const PUBLIC_AUTHOR_BASE: u64 = 9_000_000;

const TAG_OWNED: u64 = 0x20;
const TAG_PUBLIC: u64 = 0x21;
const TAG_DELETED: u64 = 0x22;
const TAG_PROTECTED: u64 = 0x23;
const TAG_REOWNED: u64 = 0x24;
const TAG_SHARED_VIDEO: u64 = 0x25;

/// What the API does with a Tweet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TweetState {
    /// Served normally.
    Active,
    /// Answered in `unavailable_tweet_ids`.
    Deleted,
    /// Refuses the whole request (400 "Tweet ID(s) are unavailable").
    Protected,
}

/// One Tweet of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTweet {
    pub id: TweetId,
    /// The configured account that owns it now, per the API; `None` for a public Tweet.
    pub owner: Option<Handle>,
    /// The account the exported inventory names: `owner`, except for a Tweet that changed hands
    /// (`[[tweets.reowned]]`), where it is the previous owner.
    pub listed_owner: Option<Handle>,
    /// The user ID of `owner` (or of the public author): what a 403 names.
    pub author_id: u64,
    pub state: TweetState,
    /// The other Tweet of the world that carries the same video (`shared_videos`): its views
    /// count in this Tweet's `/totals` `video_views` (§3.1 [D]).
    pub video_partner: Option<TweetId>,
}

/// Midnight UTC of the day containing `now` (Unix seconds).
pub fn start_day(now: i64) -> i64 {
    now.div_euclid(DAY_SECS) * DAY_SECS
}

/// Every Tweet of `world` for a simulator started on the day beginning at `start_day`: accounts'
/// Tweets in account order, then public ones.
pub fn generate(world: &World, start_day: i64) -> Vec<SimTweet> {
    let mut taken: HashSet<TweetId> = world
        .accounts
        .iter()
        .flat_map(|a| a.tweets.listed())
        .chain(world.public.tweets.listed())
        .copied()
        .collect();
    let spread_ms = i64::from(world.tweets.spread_days) * DAY_SECS * 1000;
    let first_ms = start_day * 1000 - spread_ms;
    let mut ids = |spec: &TweetSpec, tag: u64, group: u64| -> Vec<TweetId> {
        match spec {
            TweetSpec::List(ids) => ids.clone(),
            TweetSpec::Count(n) => (0..u64::from(*n))
                .map(|k| {
                    let h = mix(&[tag, world.seed, group, k]);
                    let created_ms = first_ms + (unit(h) * spread_ms as f64) as i64;
                    let mut low = (h & 0x3f_ffff) as u32;
                    // Two Tweets in one millisecond differ in their low (sequence) bits.
                    loop {
                        let id = TweetId::from_snowflake(created_ms, low);
                        if taken.insert(id) {
                            break id;
                        }
                        low = low.wrapping_add(1);
                    }
                })
                .collect(),
        }
    };

    let mut tweets = Vec::new();
    for (i, a) in world.accounts.iter().enumerate() {
        for id in ids(&a.tweets, TAG_OWNED, i as u64) {
            tweets.push(SimTweet {
                id,
                owner: Some(a.handle.clone()),
                listed_owner: Some(a.handle.clone()),
                author_id: a.user_id,
                state: TweetState::Active,
                video_partner: None,
            });
        }
    }
    for (k, id) in ids(&world.public.tweets, TAG_PUBLIC, 0)
        .into_iter()
        .enumerate()
    {
        let author_id = PUBLIC_AUTHOR_BASE + k as u64;
        tweets.push(SimTweet {
            id,
            owner: None,
            listed_owner: None,
            author_id,
            state: TweetState::Active,
            video_partner: None,
        });
    }
    reown(&mut tweets, world);
    mark(
        &mut tweets,
        &world.tweets.deleted,
        TweetState::Deleted,
        world.seed,
        TAG_DELETED,
    );
    mark(
        &mut tweets,
        &world.tweets.protected,
        TweetState::Protected,
        world.seed,
        TAG_PROTECTED,
    );
    pair_videos(&mut tweets, world.seed, world.realism().shared_videos);
    tweets
}

/// Pairs a share `share` of the Tweets that carry a video (whatever their state: the video's
/// views exist anyway, a simulator choice), each with one other, in an order drawn from the
/// seed. A Tweet is in at most one pair; an odd one out stays alone.
fn pair_videos(tweets: &mut [SimTweet], seed: u64, share: f64) {
    let mut videos: Vec<usize> = (0..tweets.len())
        .filter(|i| has_video(seed, tweets[*i].id))
        .collect();
    videos.sort_by_key(|i| mix(&[TAG_SHARED_VIDEO, seed, tweets[*i].id.get()]));
    let paired = (share * videos.len() as f64).round() as usize / 2 * 2;
    for pair in videos[..paired].chunks_exact(2) {
        let (a, b) = (pair[0], pair[1]);
        tweets[a].video_partner = Some(tweets[b].id);
        tweets[b].video_partner = Some(tweets[a].id);
    }
}

impl SimTweet {
    /// Whether the inventory names another account than the API does (a Tweet that changed hands).
    pub fn is_reowned(&self) -> bool {
        self.listed_owner != self.owner
    }
}

/// Hands the Tweets of each `[[tweets.reowned]]` entry to its `to` account: listed IDs, or a
/// seed-chosen count of `from`'s Tweets not already handed on. Entries naming IDs go first, so a
/// count never takes a Tweet an `ids` entry names. Runs before the deleted/protected marks so that
/// counted marks can leave re-owned Tweets alone.
fn reown(tweets: &mut [SimTweet], world: &World) {
    let (by_ids, by_count): (Vec<_>, Vec<_>) =
        world.tweets.reowned.iter().partition(|r| !r.ids.is_empty());
    for r in by_ids.into_iter().chain(by_count) {
        // Validation guarantees both accounts exist.
        let (Some(from), Some(to)) = (world.account_index(&r.from), world.account_index(&r.to))
        else {
            continue;
        };
        let (from, to) = (&world.accounts[from], &world.accounts[to]);
        let mut chosen: Vec<usize> = (0..tweets.len())
            .filter(|i| {
                let t = &tweets[*i];
                !t.is_reowned()
                    && t.owner.as_ref() == Some(&from.handle)
                    && (r.ids.is_empty() || r.ids.contains(&t.id))
            })
            .collect();
        chosen.sort_by_key(|i| mix(&[TAG_REOWNED, world.seed, tweets[*i].id.get()]));
        chosen.truncate(r.len());
        for i in chosen {
            tweets[i].owner = Some(to.handle.clone());
            tweets[i].author_id = to.user_id;
        }
    }
}

/// Puts the Tweets `spec` names (by ID, or a seed-chosen count of still-active ones that did not
/// change hands) in `state`.
fn mark(tweets: &mut [SimTweet], spec: &TweetSpec, state: TweetState, seed: u64, tag: u64) {
    match spec {
        TweetSpec::List(ids) => {
            for t in tweets.iter_mut().filter(|t| ids.contains(&t.id)) {
                t.state = state;
            }
        }
        TweetSpec::Count(n) => {
            // Re-owned Tweets stay active: a world that moves them wants them read.
            let mut candidates: Vec<usize> = (0..tweets.len())
                .filter(|i| tweets[*i].state == TweetState::Active && !tweets[*i].is_reowned())
                .collect();
            candidates.sort_by_key(|i| mix(&[tag, seed, tweets[*i].id.get()]));
            for i in candidates.into_iter().take(*n as usize) {
                tweets[i].state = state;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::contract::IMPRESSIONS_MAX_AGE_SECS;

    const DAY: i64 = 1_750_000_000 / DAY_SECS * DAY_SECS;

    #[test]
    fn same_world_same_day_same_tweets() {
        let w = World::demo(7);
        assert_eq!(generate(&w, DAY), generate(&World::demo(7), DAY));
        assert_ne!(generate(&w, DAY), generate(&World::demo(8), DAY));
    }

    #[test]
    fn generated_ids_are_unique_snowflakes_inside_the_spread() {
        let w = World::demo(3);
        let tweets = generate(&w, DAY);
        assert_eq!(tweets.len(), 380);
        let ids: HashSet<_> = tweets.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), tweets.len());
        for t in &tweets {
            assert!(
                t.id.created_at() >= DAY - 120 * DAY_SECS && t.id.created_at() < DAY,
                "{}",
                t.id
            );
        }
        // The 90-day rule must have something to bite on.
        assert!(
            tweets
                .iter()
                .any(|t| t.owner.is_some() && t.id.age_at(DAY) > IMPRESSIONS_MAX_AGE_SECS)
        );
    }

    #[test]
    fn owners_authors_and_states() {
        let w = World::demo(3);
        let tweets = generate(&w, DAY);
        let acme = tweets
            .iter()
            .filter(|t| t.owner.as_ref().is_some_and(|h| h.as_str() == "acme_news"));
        assert!(acme.clone().count() == 80 && acme.clone().all(|t| t.author_id == 1001));
        let public: Vec<_> = tweets.iter().filter(|t| t.owner.is_none()).collect();
        assert_eq!(public.len(), 200);
        assert!(public.iter().all(|t| t.author_id >= PUBLIC_AUTHOR_BASE));
        assert_eq!(
            tweets
                .iter()
                .filter(|t| t.state == TweetState::Deleted)
                .count(),
            3
        );
        assert_eq!(
            tweets
                .iter()
                .filter(|t| t.state == TweetState::Protected)
                .count(),
            0
        );
    }

    #[test]
    fn listed_tweets_keep_their_ids_and_marks() {
        let mut w = World::demo(3);
        let id: TweetId = "1067094924124872705".parse().unwrap();
        w.public.tweets = TweetSpec::List(vec![id]);
        w.tweets.deleted = TweetSpec::Count(0);
        w.tweets.protected = TweetSpec::List(vec![id]);
        let tweets = generate(&w, DAY);
        let t = tweets.iter().find(|t| t.id == id).unwrap();
        assert_eq!((t.owner.clone(), t.state), (None, TweetState::Protected));
    }

    #[test]
    fn named_reowned_tweets_are_never_taken_by_a_count() {
        let mut w = World::demo(3);
        let ids: Vec<TweetId> = ["1067094924124872705", "1070059276213702656"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        w.accounts[0].tweets = TweetSpec::List(ids.clone());
        let entry = |to: &str, count, ids| super::super::world::Reowned {
            from: "acme_news".parse().unwrap(),
            to: to.parse().unwrap(),
            count,
            ids,
        };
        // The count comes first in the file but may not take the named Tweet.
        w.tweets.reowned = vec![
            entry("bistro_bob", 1, Vec::new()),
            entry("civic_lab", 0, vec![ids[0]]),
        ];
        w.validate().unwrap();
        let tweets = generate(&w, DAY);
        let owner = |id| {
            let t = tweets.iter().find(|t| t.id == id).unwrap();
            t.owner.as_ref().unwrap().as_str().to_string()
        };
        assert_eq!(
            (owner(ids[0]), owner(ids[1])),
            ("civic_lab".into(), "bistro_bob".into())
        );
    }

    #[test]
    fn a_share_of_video_tweets_is_paired_and_none_without_the_knob() {
        let mut w = World::demo(3);
        assert!(generate(&w, DAY).iter().all(|t| t.video_partner.is_none()));
        w.realism.shared_videos = Some(0.5);
        let tweets = generate(&w, DAY);
        assert_eq!(tweets, generate(&w, DAY));
        let videos = tweets.iter().filter(|t| has_video(w.seed, t.id)).count();
        let paired: Vec<&SimTweet> = tweets
            .iter()
            .filter(|t| t.video_partner.is_some())
            .collect();
        assert!(videos > 40, "{videos}");
        assert!(
            paired.len().abs_diff(videos / 2) <= 2,
            "{} of {videos}",
            paired.len()
        );
        for t in &paired {
            let partner = tweets
                .iter()
                .find(|p| Some(p.id) == t.video_partner)
                .unwrap();
            // Pairs are mutual, between two different video Tweets.
            assert_eq!(partner.video_partner, Some(t.id));
            assert!(partner.id != t.id && has_video(w.seed, partner.id) && has_video(w.seed, t.id));
        }
        w.realism.shared_videos = Some(1.0);
        let all = generate(&w, DAY);
        assert!(all.iter().filter(|t| t.video_partner.is_some()).count() >= videos - 1);
    }

    #[test]
    fn reowned_tweets_change_owner_and_author_but_not_listing() {
        let mut w = World::demo(3);
        let entry = |from: &str, to: &str, count| super::super::world::Reowned {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            count,
            ids: Vec::new(),
        };
        w.tweets.reowned = vec![
            entry("acme_news", "bistro_bob", 5),
            entry("acme_news", "civic_lab", 2),
        ];
        w.tweets.deleted = TweetSpec::Count(50);
        w.validate().unwrap();
        let tweets = generate(&w, DAY);
        assert_eq!(tweets, generate(&w, DAY));
        let moved: Vec<&SimTweet> = tweets.iter().filter(|t| t.is_reowned()).collect();
        assert_eq!(moved.len(), 7);
        for t in &moved {
            assert_eq!(t.listed_owner.as_ref().unwrap().as_str(), "acme_news");
            assert_eq!(t.state, TweetState::Active);
        }
        let to = |h: &str| -> Vec<u64> {
            moved
                .iter()
                .filter(|t| t.owner.as_ref().unwrap().as_str() == h)
                .map(|t| t.author_id)
                .collect()
        };
        assert_eq!(to("bistro_bob"), [1002; 5]);
        assert_eq!(to("civic_lab"), [1003; 2]);
        // The same IDs exist as without the move: only ownership changed.
        w.tweets.reowned.clear();
        let unmoved = generate(&w, DAY);
        let ids = |ts: &[SimTweet]| ts.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(&tweets), ids(&unmoved));
    }
}
