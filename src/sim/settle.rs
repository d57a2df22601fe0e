//! Late-settling numbers (the `settle_hours` knob): what an answer at `now` reports for an hour
//! whose final count `data` knows, and `/totals` as the sum of what the series would report.
//! Owns no numbers of its own: the final values stay `data`'s.
//!
//! The docs say lifetime totals "change with each call for live Tweets" (§5.3 [D]) but not how
//! an hour fills up after it ends; the linear ramp below is a simulator choice. It makes every
//! hour grow for `settle_hours` after it ends and then never move again, so a client that
//! re-fetches until then converges on `data::bucket`.

use crate::domain::{HOUR_SECS, Hour};

use super::data::Series;

/// The settling rule of a world: how long after its start an hour keeps growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settle {
    /// `settle_hours`; 0 is the tidy rule (an ended hour is final, the current hour reads 0).
    hours: u32,
}

impl Settle {
    pub(crate) fn new(settle_hours: u32) -> Settle {
        Settle {
            hours: settle_hours,
        }
    }

    /// Seconds from an hour's start until it is final: the hour itself, then `settle_hours`.
    fn span(self) -> i64 {
        HOUR_SECS * (1 + i64::from(self.hours))
    }

    /// What an answer at `now` reports for `hour`, whose final count is `final_value`: zero for a
    /// future hour, `final · elapsed / span` (rounded toward zero, so negative buckets settle
    /// too) while it settles, `final_value` from `hour + 1 h + settle_hours` on.
    pub(crate) fn reported(self, final_value: i64, hour: Hour, now: i64) -> i64 {
        let elapsed = now - hour.secs();
        if self.hours == 0 {
            // The tidy rule: data is revealed per ended hour; the current hour reads 0.
            return if elapsed >= HOUR_SECS { final_value } else { 0 };
        }
        if elapsed <= 0 {
            0
        } else if elapsed >= self.span() {
            final_value
        } else {
            // i128: a viral Tweet's impressions times seconds would overflow i64 in the product.
            (i128::from(final_value) * i128::from(elapsed) / i128::from(self.span())) as i64
        }
    }

    /// What `/totals` reports at `now` for `series`: the sum over every hour of what the series
    /// would answer for it at `now`. Closed form: the settled hours are the running count at
    /// the first unsettled hour, and at most `settle_hours + 2` hours are still settling.
    pub(crate) fn total(self, series: &Series, now: i64) -> i64 {
        if self.hours == 0 {
            return series.at(now);
        }
        // The first hour with `h + span > now`; every hour before it is final.
        let first_unsettled = Hour::floor(now - self.span()).plus_hours(1);
        let mut before = series.at(first_unsettled.secs());
        let mut total = before;
        let mut hour = first_unsettled;
        while hour.secs() <= now {
            let after = series.at(hour.plus_hours(1).secs());
            total += self.reported(after - before, hour, now);
            before = after;
            hour = hour.plus_hours(1);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Metric, TweetId};
    use crate::sim::data::bucket;

    const SEED: u64 = 5;

    fn tweets() -> Vec<TweetId> {
        (0..12u32)
            .map(|k| TweetId::from_snowflake(1_700_000_000_000 + i64::from(k) * 9_999_999, k))
            .collect()
    }

    /// The slow definition: the sum of every hour's reported value from creation to `now`.
    fn summed(settle: Settle, tweet: TweetId, metric: Metric, now: i64) -> i64 {
        let mut h = Hour::floor(tweet.created_at()).plus_hours(-2);
        let mut sum = 0;
        while h.secs() <= now + HOUR_SECS {
            sum += settle.reported(bucket(SEED, tweet, metric, h), h, now);
            h = h.plus_hours(1);
        }
        sum
    }

    #[test]
    fn an_hour_grows_then_stays_and_the_future_reads_zero() {
        let settle = Settle::new(6);
        let (mut grew, mut partial_now) = (0, 0);
        for tweet in tweets() {
            for metric in [Metric::Impressions, Metric::Favorites, Metric::UrlClicks] {
                let h = Hour::floor(tweet.created_at()).plus_hours(1);
                let fin = bucket(SEED, tweet, metric, h);
                assert_eq!(settle.reported(fin, h, h.secs() - 1), 0, "future hour");
                assert_eq!(settle.reported(fin, h, h.secs()), 0, "at its very start");
                let mut last = 0;
                for step in 1..=7 * 4 {
                    let now = h.secs() + step * 900;
                    let v = settle.reported(fin, h, now);
                    // Moves toward the final value, never past it, whatever its sign.
                    assert!(v.abs() >= last && v.abs() <= fin.abs(), "{v} {last} {fin}");
                    assert!(v == 0 || v.signum() == fin.signum());
                    grew += usize::from(v.abs() > last);
                    if now < h.plus_hours(1).secs() && v != 0 && v != fin {
                        partial_now += 1;
                    }
                    last = v.abs();
                }
                let settled = h.plus_hours(7).secs();
                assert_eq!(
                    settle.reported(fin, h, settled - 1).abs() < fin.abs(),
                    fin != 0
                );
                for later in [settled, settled + 1, settled + 400 * HOUR_SECS] {
                    assert_eq!(settle.reported(fin, h, later), fin);
                }
            }
        }
        assert!(grew > 20 && partial_now > 5, "{grew} {partial_now}");
    }

    #[test]
    fn negative_buckets_settle_toward_their_final_value() {
        let settle = Settle::new(3);
        let h = Hour::floor(1_800_000_000);
        assert_eq!(settle.reported(-1, h, h.secs() + 3 * HOUR_SECS), 0);
        assert_eq!(settle.reported(-8, h, h.secs() + 2 * HOUR_SECS), -4);
        assert_eq!(settle.reported(-1, h, h.secs() + 4 * HOUR_SECS), -1);
    }

    #[test]
    fn totals_are_the_sum_of_the_reported_hours_at_any_now() {
        for hours in [1, 5, 36] {
            let settle = Settle::new(hours);
            for tweet in tweets().into_iter().take(5) {
                let born = tweet.created_at();
                for metric in [Metric::Impressions, Metric::Favorites, Metric::Replies] {
                    let series = Series::new(SEED, tweet, metric);
                    for offset in [
                        -HOUR_SECS, 0, 1, 1799, 3600, 5000, 40_000, 200_000, 9_000_000,
                    ] {
                        let now = born + offset;
                        assert_eq!(
                            settle.total(&series, now),
                            summed(settle, tweet, metric, now),
                            "S={hours} {tweet} {metric} +{offset}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zero_settle_hours_is_the_tidy_rule() {
        let settle = Settle::new(0);
        for tweet in tweets().into_iter().take(4) {
            let h = Hour::floor(tweet.created_at()).plus_hours(2);
            for metric in [Metric::Impressions, Metric::Favorites] {
                let fin = bucket(SEED, tweet, metric, h);
                assert_eq!(settle.reported(fin, h, h.secs() + 3599), 0);
                assert_eq!(settle.reported(fin, h, h.secs() + 3600), fin);
                let series = Series::new(SEED, tweet, metric);
                for now in [h.secs(), h.secs() + 1234, h.secs() + 99_999] {
                    assert_eq!(settle.total(&series, now), series.at(now));
                    assert_eq!(
                        settle.total(&series, now),
                        summed(settle, tweet, metric, now)
                    );
                }
            }
        }
    }
}
