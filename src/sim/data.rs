//! The simulator's engagement numbers: a pure, closed-form function of
//! `(seed, tweet, metric, hour)`. No state, no I/O, no loops over a Tweet's life, so a Tweet that
//! is years old costs the same as a new one.

use crate::domain::{HOUR_SECS, Hour, Metric, TweetId};

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash step.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a tuple of words; the first word should be a distinct tag per use so that uses never
/// share draws.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243f_6a88_85a3_08d3, |h, p| splitmix(h ^ p))
}

/// Maps a hash to a uniform float in `[0, 1)`.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

// Tags that keep the independent draws apart.
const TAG_POPULARITY: u64 = 0x10;
const TAG_VIDEO: u64 = 0x11;
const TAG_AMPLITUDE: u64 = 0x12;
const TAG_TAU: u64 = 0x13;
const TAG_UNLIKE: u64 = 0x14;

/// Share of `favorites` hours whose running count dips by one (an un-like).
const UNLIKE_RATE: f64 = 0.08;
/// Share of Tweets that carry a video.
const VIDEO_RATE: f64 = 0.25;

/// Lifetime count of a Tweet of average popularity, per metric. The order matches what analysts
/// see: impressions far above engagements, then favorites, retweets, replies, quotes.
fn typical_lifetime(metric: Metric) -> f64 {
    match metric {
        Metric::Impressions => 1500.0,
        Metric::Engagements => 45.0,
        Metric::Favorites => 25.0,
        Metric::Retweets => 6.0,
        Metric::Replies => 3.0,
        Metric::QuoteTweets => 1.2,
        Metric::VideoViews => 900.0,
        Metric::MediaViews => 200.0,
        Metric::MediaEngagements => 12.0,
        Metric::UrlClicks => 5.0,
        Metric::HashtagClicks => 1.5,
        Metric::DetailExpands => 20.0,
        Metric::PermalinkClicks => 2.0,
        Metric::AppInstallAttempts => 0.3,
        Metric::AppOpens => 0.5,
        Metric::EmailTweet => 0.2,
        Metric::UserFollows => 0.8,
        Metric::UserProfileClicks => 4.0,
    }
}

/// Whether `tweet` carries a video: only those have `video_views`, and only those can share
/// their video with another Tweet (`shared_videos`, §3.1).
pub(crate) fn has_video(seed: u64, tweet: TweetId) -> bool {
    unit(mix(&[TAG_VIDEO, seed, tweet.get()])) < VIDEO_RATE
}

/// The growth curve of one (Tweet, metric): `amplitude · (1 − exp(−hours / tau))`.
struct Curve {
    amplitude: f64,
    tau_hours: f64,
}

impl Curve {
    fn of(seed: u64, tweet: TweetId, metric: Metric) -> Curve {
        let t = tweet.get();
        let m = metric.id() as u64;
        // One popularity per Tweet, shared by its metrics, so a viral Tweet is viral everywhere.
        let popularity = (4.0 * unit(mix(&[TAG_POPULARITY, seed, t]))).exp();
        let amplitude = if metric == Metric::VideoViews && !has_video(seed, tweet) {
            0.0
        } else {
            typical_lifetime(metric)
                * popularity
                * (0.8 + 0.4 * unit(mix(&[TAG_AMPLITUDE, seed, t, m])))
        };
        let tau_hours = 4.0 + 60.0 * unit(mix(&[TAG_TAU, seed, t, m]));
        Curve {
            amplitude,
            tau_hours,
        }
    }

    /// Floor of the curve after `hours` whole hours; non-decreasing in `hours`.
    fn at(&self, hours: i64) -> i64 {
        // -expm1(-x) = 1 - e^-x, accurate for small x.
        (self.amplitude * -(-(hours as f64) / self.tau_hours).exp_m1()).floor() as i64
    }
}

/// The running count of one (Tweet, metric) over time; build it once to read many boundaries.
pub(crate) struct Series {
    seed: u64,
    tweet: TweetId,
    born: i64,
    curve: Curve,
    unlikes: bool,
}

impl Series {
    pub(crate) fn new(seed: u64, tweet: TweetId, metric: Metric) -> Series {
        Series {
            seed,
            tweet,
            born: Hour::floor(tweet.created_at()).secs(),
            curve: Curve::of(seed, tweet, metric),
            unlikes: metric == Metric::Favorites,
        }
    }

    /// The running count at the hour boundary at or before `boundary_secs`.
    pub(crate) fn at(&self, boundary_secs: i64) -> i64 {
        let hours = (Hour::floor(boundary_secs).secs() - self.born) / HOUR_SECS;
        if hours <= 0 {
            return 0;
        }
        let unlike = self.unlikes
            && unit(mix(&[
                TAG_UNLIKE,
                self.seed,
                self.tweet.get(),
                hours as u64,
            ])) < UNLIKE_RATE;
        (self.curve.at(hours) - i64::from(unlike)).max(0)
    }
}

/// The running count of `metric` for `tweet` at the hour boundary at or before `boundary_secs`.
///
/// Zero at and before the boundary that starts the Tweet's creation hour. Every metric follows a
/// saturating curve, so late hours add nothing (zero buckets); `favorites` also dips by one in a
/// few hours (un-likes), so some of its buckets are negative, but the count never goes below 0.
pub fn cumulative(seed: u64, tweet: TweetId, metric: Metric, boundary_secs: i64) -> i64 {
    Series::new(seed, tweet, metric).at(boundary_secs)
}

/// The count of `metric` for `tweet` during `hour`: the running count's change over that hour.
pub fn bucket(seed: u64, tweet: TweetId, metric: Metric, hour: Hour) -> i64 {
    cumulative(seed, tweet, metric, hour.plus_hours(1).secs())
        - cumulative(seed, tweet, metric, hour.secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 7;

    fn tweets() -> Vec<TweetId> {
        (0..40u32)
            .map(|k| TweetId::from_snowflake(1_700_000_000_000 + i64::from(k) * 7_777_777, k))
            .collect()
    }

    #[test]
    fn totals_equal_the_sum_of_the_buckets_before_them() {
        for tweet in tweets().into_iter().take(6) {
            for metric in [
                Metric::Impressions,
                Metric::Favorites,
                Metric::Replies,
                Metric::VideoViews,
            ] {
                let first = Hour::floor(tweet.created_at());
                let mut sum = 0;
                for n in 0..24 * 130 {
                    let h = first.plus_hours(n);
                    assert_eq!(
                        sum,
                        cumulative(SEED, tweet, metric, h.secs()),
                        "{tweet} {metric} {h}"
                    );
                    // Within an hour the total does not move: data is revealed per ended hour.
                    assert_eq!(sum, cumulative(SEED, tweet, metric, h.secs() + 1800));
                    sum += bucket(SEED, tweet, metric, h);
                }
            }
        }
    }

    #[test]
    fn nothing_before_creation_and_never_negative() {
        for tweet in tweets() {
            let born = Hour::floor(tweet.created_at());
            for metric in Metric::ALL {
                assert_eq!(cumulative(SEED, tweet, metric, born.secs()), 0);
                assert_eq!(bucket(SEED, tweet, metric, born.plus_hours(-5)), 0);
                for n in [1, 2, 10, 100, 1000, 100_000] {
                    assert!(cumulative(SEED, tweet, metric, born.plus_hours(n).secs()) >= 0);
                }
            }
        }
    }

    #[test]
    fn series_have_zero_and_negative_buckets() {
        let (mut zeros, mut negatives, mut positives) = (0, 0, 0);
        for tweet in tweets() {
            let born = Hour::floor(tweet.created_at());
            for n in 0..500 {
                let v = bucket(SEED, tweet, Metric::Favorites, born.plus_hours(n));
                zeros += usize::from(v == 0);
                negatives += usize::from(v < 0);
                positives += usize::from(v > 0);
            }
        }
        assert!(
            zeros > 0 && negatives > 0 && positives > 0,
            "{zeros} {negatives} {positives}"
        );
    }

    #[test]
    fn scales_look_like_real_tweets() {
        let late = |m: Metric| -> i64 {
            tweets()
                .iter()
                .map(|t| cumulative(SEED, *t, m, t.created_at() + 1000 * HOUR_SECS))
                .sum()
        };
        assert!(late(Metric::Impressions) > 10 * late(Metric::Engagements));
        assert!(late(Metric::Engagements) > late(Metric::Favorites));
        assert!(late(Metric::Favorites) > late(Metric::Retweets));
        assert!(late(Metric::Retweets) > late(Metric::Replies));
        assert!(late(Metric::Replies) > late(Metric::QuoteTweets));
        let no_video = tweets()
            .iter()
            .filter(|t| {
                cumulative(
                    SEED,
                    **t,
                    Metric::VideoViews,
                    t.created_at() + 1000 * HOUR_SECS,
                ) == 0
            })
            .count();
        assert!(no_video > tweets().len() / 2);
    }

    #[test]
    fn engagements_are_not_the_sum_of_the_broken_out_types() {
        // §5.4 [D]: engagements include promoted ones and exclude media views, so no sum of the
        // other types matches it; its curve is drawn on its own.
        let parts = [
            Metric::Favorites,
            Metric::Retweets,
            Metric::Replies,
            Metric::QuoteTweets,
            Metric::MediaEngagements,
            Metric::UrlClicks,
            Metric::HashtagClicks,
            Metric::DetailExpands,
            Metric::PermalinkClicks,
            Metric::AppInstallAttempts,
            Metric::AppOpens,
            Metric::EmailTweet,
            Metric::UserFollows,
            Metric::UserProfileClicks,
        ];
        let differ = tweets()
            .iter()
            .filter(|t| {
                let at = t.created_at() + 500 * HOUR_SECS;
                let sum: i64 = parts.iter().map(|m| cumulative(SEED, **t, *m, at)).sum();
                cumulative(SEED, **t, Metric::Engagements, at) != sum
            })
            .count();
        assert!(differ > tweets().len() * 9 / 10, "{differ}");
    }

    #[test]
    fn some_tweets_carry_a_video_and_only_they_have_views() {
        let with: Vec<bool> = tweets().iter().map(|t| has_video(SEED, *t)).collect();
        assert!(with.iter().any(|v| *v) && with.iter().any(|v| !*v));
        for (t, video) in tweets().iter().zip(with) {
            let views = cumulative(
                SEED,
                *t,
                Metric::VideoViews,
                t.created_at() + 900 * HOUR_SECS,
            );
            assert_eq!(views > 0, video, "{t}");
        }
    }

    #[test]
    fn a_decade_old_tweet_costs_nothing_extra() {
        let old = TweetId::from_snowflake(1_300_000_000_000, 1);
        let v = cumulative(SEED, old, Metric::Impressions, 1_900_000_000);
        assert_eq!(v, cumulative(SEED, old, Metric::Impressions, 1_900_003_600));
        assert!(v > 0);
    }
}
