//! Per-account figures over a period (`query accounts`, the report's account table): Tweets
//! tracked and posted, the sums of their hourly buckets, the Tweet-hours behind those sums and
//! how many of them fetched coverage vouches for, and quote Tweets from the growth of totals.

use std::collections::{BTreeMap, HashMap};

use crate::store::sql::{Tx, named};

use crate::domain::{Hour, Metric};
use crate::store::rollup::{day_ceil, day_of};
use crate::store::{Store, StoreError, unknown_value};

/// Which accounts and period [`Store::account_figures`] reads.
#[derive(Debug, Clone, Copy)]
pub struct AccountsQuery<'a> {
    /// Start of the period, Unix seconds, hour-aligned by the caller. The sums are read from
    /// the daily rollups for the period's whole UTC days, and from the hourly buckets for the
    /// hours outside them: a period from 00:00 UTC to now reads rollups alone.
    pub since: i64,
    /// End of the period (exclusive), hour-aligned.
    pub until: i64,
    /// The time now: no bucket is stored after it.
    pub now: i64,
    /// Only these handles, compared case-insensitively; empty: every account.
    pub owners: &'a [String],
}

/// One account's figures over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountFigures {
    /// The handle as stored.
    pub owner: String,
    /// Its Tweets listed (not removed from the inventory) and created before the period's end.
    pub tweets_tracked: i64,
    /// Of those, the ones created in the period.
    pub tweets_posted: i64,
    /// Tweet-hours in the period: each tracked Tweet's hours from its creation hour (or the
    /// period's start) to the period's end.
    pub hours: i64,
    /// Of those, the hours inside fetched coverage (`/historical` cells up to where their fetch
    /// reached, `/28hr` windows), where a missing bucket is a zero. The sums are complete when
    /// this equals `hours`; outside coverage an hour is unknown, never zero.
    pub hours_known: i64,
    /// The sum of the stored hourly buckets on the period's days, per metric that has any.
    pub sums: BTreeMap<Metric, i64>,
    /// Quote Tweets (a `/totals`-only metric): the sum over the tracked Tweets of the growth of
    /// their lifetime totals over the period ([`TopBasis::Totals`](super::TopBasis::Totals)); `None` when that growth is
    /// unknown for any of them.
    pub quote_tweets: Option<i64>,
}

impl AccountsQuery<'_> {
    /// The whole UTC days of the period, `[from, to)`, whose sums the rollups hold; the hours
    /// before and after them are summed from `series`. A period that runs past the current hour
    /// takes its last day whole: no bucket is stored past now.
    fn whole_days(&self) -> (i64, i64) {
        let to = if self.until > Hour::floor(self.now).secs() {
            day_ceil(self.until)
        } else {
            day_of(self.until)
        };
        (day_ceil(self.since), to)
    }

    /// The spans of hours outside [`AccountsQuery::whole_days`], summed from `series`.
    fn edges(&self) -> Vec<(i64, i64)> {
        let (from, to) = self.whole_days();
        if from >= to {
            return vec![(self.since, self.until)];
        }
        [(self.since, from), (to, self.until)]
            .into_iter()
            .filter(|(a, b)| a < b)
            .collect()
    }
}

impl AccountFigures {
    /// The sum of `metric`'s buckets in the period (zero when none is stored).
    pub fn sum(&self, metric: Metric) -> i64 {
        self.sums.get(&metric).copied().unwrap_or(0)
    }

    /// Engagements per impression over the period; `None` without impressions.
    pub fn engagement_rate(&self) -> Option<f64> {
        let impressions = self.sum(Metric::Impressions);
        (impressions > 0).then(|| self.sum(Metric::Engagements) as f64 / impressions as f64)
    }

    /// Whether every Tweet-hour of the period is inside fetched coverage.
    pub fn is_complete(&self) -> bool {
        self.hours_known == self.hours
    }
}

/// The Tweets [`Store::account_figures`] counts: owned, listed, of the chosen owners (`:owners`,
/// a JSON array of lower-cased handles, or NULL for all).
fn account_tweets(tx: &Tx<'_>) -> String {
    format!(
        "w.owner IS NOT NULL AND w.removed_at IS NULL \
         AND (CAST(:owners AS TEXT) IS NULL OR lower(w.owner) IN {})",
        tx.json_texts(":owners")
    )
}

/// The start of the hour of `w.created_at`.
const CREATED_HOUR: &str = "(w.created_at - w.created_at % 3600)";

/// SQL for the number of hours starting in `[a, b)` (0 when empty), `a` and `b` SQL expressions
/// of Unix seconds (not negative: after 1970).
fn hours_sql(a: &str, b: &str) -> String {
    let ceil = |t: &str| format!("((({t}) + 3599) / 3600)");
    format!("max({} - {}, 0)", ceil(b), ceil(a))
}

impl Store {
    /// Per account with listed Tweets (of `q.owners`, when given), its figures over `q`'s
    /// period, by handle. Three statements whatever the number of Tweets: the Tweets (with their
    /// quote Tweets' growth), their coverage spans, and the bucket sums grouped by account and
    /// metric.
    pub fn account_figures(
        &self,
        q: &AccountsQuery<'_>,
    ) -> Result<Vec<AccountFigures>, StoreError> {
        let owners = (!q.owners.is_empty()).then(|| {
            let folded: Vec<String> = q
                .owners
                .iter()
                .map(|o| o.trim().trim_start_matches('@').to_ascii_lowercase())
                .collect();
            serde_json::Value::from(folded).to_string()
        });
        self.read(|conn| {
            let account_tweets = account_tweets(conn);
            let owners_in = conn.json_texts(":owners");
            let period = named![
                ":since" => q.since, ":until" => q.until, ":owners" => owners,
            ];
            // Per account, in SQL: its Tweets, those created in the period and their hours.
            let mut accounts: BTreeMap<String, AccountFigures> = BTreeMap::new();
            let mut stmt = conn.prepare(&format!(
                "SELECT w.owner, total(w.created_at < :until), \
                 total(w.created_at < :until AND w.created_at >= :since), \
                 total(CASE WHEN w.created_at < :until THEN {} END) \
                 FROM tweets AS w WHERE {account_tweets} GROUP BY w.owner",
                hours_sql(&format!("max({CREATED_HOUR}, :since)"), ":until")
            ))?;
            let mut rows = stmt.query(period)?;
            while let Some(r) = rows.next()? {
                let owner: String = r.get(0)?;
                let int = |i: usize| r.get::<f64>(i).map(|v| v as i64);
                accounts.insert(
                    owner.clone(),
                    AccountFigures {
                        owner,
                        tweets_tracked: int(1)?,
                        tweets_posted: int(2)?,
                        hours: int(3)?,
                        quote_tweets: Some(0),
                        ..AccountFigures::default()
                    },
                );
            }

            // The Tweet-hours inside coverage: each Tweet's `/historical` cells (disjoint, each
            // inside its 28 days) and its `/28hr` span, less the hours in both, counted from the
            // Tweet's creation hour. Hours are those starting inside a span, as
            // [`Coverage::hours_in`](super::Coverage::hours_in) counts them.
            let from = |span: &str| format!("max({span}, {CREATED_HOUR}, :since)");
            let cell_end = "min(c.fetched_until, c.cell + 2419200, :until)";
            let recent_end = "min(r.fetched_until, :until)";
            let both_end = "min(c.fetched_until, c.cell + 2419200, r.fetched_until, :until)";
            // Per Tweet (from the index of listed owned Tweets), its cells that overlap the
            // period by their key, and its /28hr span: seeks, however many cells are stored.
            let cells = "c.tweet_id = w.tweet_id AND c.cell < :until \
                 AND c.cell > :since - 2419200 AND c.fetched_until > :since";
            let recent =
                "r.tweet_id = w.tweet_id AND r.fetched_until > :since AND r.fetched_from < :until";
            let mut stmt = conn.prepare(&format!(
                "SELECT owner, total(hours) FROM ( \
                 SELECT w.owner, {} AS hours FROM tweets AS w CROSS JOIN coverage AS c \
                 WHERE {account_tweets} AND w.created_at < :until AND {cells} \
                 UNION ALL SELECT w.owner, {} FROM tweets AS w CROSS JOIN recent_coverage AS r \
                 WHERE {account_tweets} AND w.created_at < :until AND {recent} \
                 UNION ALL SELECT w.owner, -{} FROM tweets AS w CROSS JOIN recent_coverage AS r \
                 CROSS JOIN coverage AS c \
                 WHERE {account_tweets} AND w.created_at < :until AND {cells} AND {recent}) AS h \
                 GROUP BY owner",
                hours_sql(&from("c.cell"), cell_end),
                hours_sql(&from("r.fetched_from"), recent_end),
                hours_sql(&from("max(c.cell, r.fetched_from)"), both_end),
            ))?;
            let mut rows = stmt.query(period)?;
            while let Some(r) = rows.next()? {
                if let Some(account) = accounts.get_mut(&r.get::<String>(0)?) {
                    account.hours_known = r.get::<f64>(1)? as i64;
                }
            }

            // Quote Tweets by the totals rule ([`TopBasis::Totals`](super::TopBasis::Totals)): per Tweet its latest total
            // before the period's end less the last at or before its start (all of it for a
            // Tweet created in the period); unknown for the account when any Tweet's is.
            let mut stmt = conn.prepare(&format!(
                "SELECT owner, total(growth), count(*) - count(growth) FROM ( \
                 SELECT owner, CASE WHEN latest IS NULL THEN NULL \
                     WHEN created_at >= :since THEN latest ELSE latest - base END AS growth \
                 FROM (SELECT w.owner, w.created_at, \
                     (SELECT value FROM totals AS t WHERE t.tweet_id = w.tweet_id \
                      AND t.metric_id = :metric AND t.observed_at < :until \
                      ORDER BY t.observed_at DESC LIMIT 1) AS latest, \
                     (SELECT value FROM totals AS t WHERE t.tweet_id = w.tweet_id \
                      AND t.metric_id = :metric AND t.observed_at <= :since \
                      ORDER BY t.observed_at DESC LIMIT 1) AS base \
                 FROM tweets AS w WHERE {account_tweets} AND w.created_at < :until) AS v) AS g \
                 GROUP BY owner"
            ))?;
            let mut rows = stmt.query(named![
                ":since" => q.since, ":until" => q.until, ":owners" => owners,
                ":metric" => Metric::QuoteTweets.id(),
            ])?;
            while let Some(r) = rows.next()? {
                if let Some(account) = accounts.get_mut(&r.get::<String>(0)?) {
                    let unknown: i64 = r.get(2)?;
                    account.quote_tweets = (unknown == 0).then_some(r.get::<f64>(1)? as i64);
                }
            }

            // The buckets of the period, per account and metric: the rollups of each account's
            // whole days, less those of its removed Tweets (few, found by an index), and the
            // hours outside whole days summed from `series`.
            let (day_from, day_to) = q.whole_days();
            let days = named![
                ":day_from" => day_from, ":day_to" => day_to, ":owners" => owners,
            ];
            let mut sums: HashMap<(String, i64), (i64, i64)> = HashMap::new();
            let mut stmt = conn.prepare(&format!(
                "SELECT w.owner, w.metric_id, CAST(total(w.value) AS INTEGER), total(w.tweets) \
                 FROM account_days AS w WHERE w.metric_id IN (SELECT metric_id FROM metrics) \
                 AND w.day >= :day_from AND w.day < :day_to \
                 AND (CAST(:owners AS TEXT) IS NULL OR lower(w.owner) IN {owners_in}) \
                 GROUP BY w.owner, w.metric_id"
            ))?;
            let mut rows = stmt.query(days)?;
            while let Some(r) = rows.next()? {
                sums.insert((r.get(0)?, r.get(1)?), (r.get(2)?, r.get::<f64>(3)? as i64));
            }
            let mut stmt = conn.prepare(&format!(
                "SELECT w.owner, d.metric_id, CAST(total(d.value) AS INTEGER), count(*) \
                 FROM tweets AS w INDEXED BY tweets_removed JOIN tweet_days AS d USING (tweet_id) \
                 WHERE w.removed_at IS NOT NULL AND w.owner IS NOT NULL \
                 AND (CAST(:owners AS TEXT) IS NULL OR lower(w.owner) IN {owners_in}) \
                 AND d.day >= :day_from AND d.day < :day_to GROUP BY w.owner, d.metric_id"
            ))?;
            let mut rows = stmt.query(days)?;
            while let Some(r) = rows.next()? {
                if let Some((value, tweets)) = sums.get_mut(&(r.get(0)?, r.get(1)?)) {
                    *value = value.saturating_sub(r.get(2)?);
                    *tweets -= r.get::<i64>(3)?;
                }
            }
            // Per (Tweet, metric) the primary key finds the edge hours: only they are read.
            let mut stmt = conn.prepare(&format!(
                "SELECT w.owner, m.metric_id, CAST(total(s.value) AS INTEGER), count(*) \
                 FROM tweets AS w CROSS JOIN metrics AS m CROSS JOIN series AS s \
                 WHERE s.tweet_id = w.tweet_id AND s.metric_id = m.metric_id \
                 AND {account_tweets} AND s.hour >= :from AND s.hour < :to \
                 GROUP BY w.owner, m.metric_id"
            ))?;
            for (from, to) in q.edges() {
                let mut rows = stmt.query(named![
                    ":from" => from, ":to" => to, ":owners" => owners,
                ])?;
                while let Some(r) = rows.next()? {
                    let sum = sums.entry((r.get(0)?, r.get(1)?)).or_default();
                    sum.0 = sum.0.saturating_add(r.get(2)?);
                    sum.1 += r.get::<i64>(3)?;
                }
            }
            for ((owner, id), (value, tweets)) in sums {
                let metric = Metric::from_id(id)
                    .ok_or_else(|| unknown_value("account_days.metric_id", &id.to_string()))?;
                if let Some(account) = accounts.get_mut(&owner).filter(|_| tweets > 0) {
                    account.sums.insert(metric, value);
                }
            }
            Ok(accounts.into_values().collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Coverage;
    use super::*;
    use crate::domain::DAY_SECS;
    use crate::domain::HOUR_SECS;

    /// 2026-10-31T00:00:00Z.
    const NOW: i64 = 1_793_404_800;
    const H: i64 = HOUR_SECS;

    /// Overlapping spans count each hour once; edges off the hour count the hours starting
    /// inside them.
    #[test]
    fn covered_hours_count_each_hour_once() {
        let c = Coverage(vec![(0, 5 * H), (3 * H, 8 * H), (10 * H + 1, 12 * H)]);
        assert_eq!(c.hours_in(0, 20 * H), 8 + 1);
        assert_eq!(
            c.hours_in(4 * H, 11 * H),
            4,
            "hours 4..8; hour 10 starts before 10h+1s"
        );
        assert_eq!(c.hours_in(20 * H, 30 * H), 0);
        assert_eq!(Coverage::default().hours_in(0, H), 0);
    }

    /// Per account over the period: listed Tweets created before its end, those posted in it,
    /// the bucket sums of the period, the Tweet-hours and the covered ones, and quote Tweets
    /// from the growth of totals (unknown when any Tweet's is); removed and public Tweets and
    /// hours outside the period are left out; owners match in any case, with or without `@`.
    #[test]
    fn account_figures_sum_the_period_and_say_how_much_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let since = NOW - 2 * DAY_SECS;
        // 1: old; its cell reached NOW-30h, its /28hr window NOW-28h..NOW: 46 of 48 hours.
        store.put_tweet(1, Some("Acme"), NOW - 3 * DAY_SECS);
        store.put_cell(1, NOW - 20 * DAY_SECS, NOW, NOW - 30 * H);
        store.put_recent(1, NOW - 28 * H, NOW, NOW);
        store.put_bucket(1, Metric::Impressions, since - H, 500, NOW);
        store.put_bucket(1, Metric::Impressions, since, 70, NOW);
        store.put_bucket(1, Metric::Impressions, NOW - H, 30, NOW);
        store.put_bucket(1, Metric::Impressions, NOW, 9, NOW);
        store.put_bucket(1, Metric::Engagements, since, 7, NOW);
        store.put_total(1, Metric::QuoteTweets, since - 10, 2);
        store.put_total(1, Metric::QuoteTweets, NOW - 10, 5);
        store.put_total(1, Metric::QuoteTweets, NOW + 10, 50);
        // 2: posted in the period, 5 hours old, all covered by the /28hr window.
        store.put_tweet(2, Some("Acme"), NOW - 5 * H + 600);
        store.put_recent(2, NOW - 28 * H, NOW, NOW);
        store.put_bucket(2, Metric::Impressions, NOW - 2 * H, 10, NOW);
        store.put_total(2, Metric::QuoteTweets, NOW - 10, 1);
        // 3: created after the period; 4: removed; 5: public.
        store.put_tweet(3, Some("Acme"), NOW + H);
        store.put_bucket(3, Metric::Impressions, NOW + H, 1000, NOW);
        store.put_tweet(4, Some("Acme"), NOW - 3 * DAY_SECS);
        store.put_bucket(4, Metric::Impressions, since, 1000, NOW);
        store.put_removed(4, NOW);
        store.put_tweet(5, None, NOW - 3 * DAY_SECS);
        store.put_bucket(5, Metric::Impressions, since, 1000, NOW);
        // 6: no coverage, no quote Tweet totals.
        store.put_tweet(6, Some("bob"), NOW - 3 * DAY_SECS);
        store.put_bucket(6, Metric::Favorites, since + H, 4, NOW);

        let read = |owners: &[String]| {
            store
                .account_figures(&AccountsQuery {
                    since,
                    until: NOW,
                    now: NOW,
                    owners,
                })
                .unwrap()
        };
        let all = read(&[]);
        let acme = AccountFigures {
            owner: "Acme".into(),
            tweets_tracked: 2,
            tweets_posted: 1,
            hours: 48 + 5,
            hours_known: 46 + 5,
            sums: BTreeMap::from([(Metric::Impressions, 110), (Metric::Engagements, 7)]),
            quote_tweets: Some(3 + 1),
        };
        let bob = AccountFigures {
            owner: "bob".into(),
            tweets_tracked: 1,
            tweets_posted: 0,
            hours: 48,
            hours_known: 0,
            sums: BTreeMap::from([(Metric::Favorites, 4)]),
            quote_tweets: None,
        };
        assert_eq!(all, vec![acme.clone(), bob.clone()]);
        assert_eq!(acme.engagement_rate(), Some(7.0 / 110.0));
        assert_eq!(bob.engagement_rate(), None);
        assert!(!acme.is_complete());
        assert_eq!(read(&["BOB".into()]), vec![bob]);
        assert_eq!(read(&["@acme".into(), "nobody".into()]), vec![acme]);
        // A period before every Tweet: the account is there, with nothing tracked.
        let early = store
            .account_figures(&AccountsQuery {
                since: NOW - 10 * DAY_SECS,
                until: NOW - 9 * DAY_SECS,
                now: NOW,
                owners: &["acme".into()],
            })
            .unwrap();
        assert_eq!(
            (
                early[0].tweets_tracked,
                early[0].hours,
                early[0].quote_tweets
            ),
            (0, 0, Some(0))
        );
        assert!(early[0].sums.is_empty());
    }

    /// Sums read from the rollups' whole days and from the hours around them equal the sums of
    /// the hourly buckets of each account's listed Tweets, for periods on and off day
    /// boundaries, ending before now or running to it.
    #[test]
    fn sums_from_rollups_and_edge_hours_equal_the_hourly_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let start = NOW - 4 * DAY_SECS;
        for (t, owner) in [
            (1, Some("acme")),
            (2, Some("acme")),
            (3, Some("bob")),
            (4, None),
        ] {
            store.put_tweet(t, owner, start);
        }
        store.put_tweet(5, Some("acme"), start);
        // Every 5th hour of 4 days, a bucket; the current hour's too.
        for h in (0..4 * 24 + 1).step_by(5) {
            for t in 1..=5 {
                let v = (t * 7 + h) % 11 - 2;
                if v != 0 {
                    store.put_bucket(t, Metric::Impressions, start + h * H, v, NOW);
                }
            }
        }
        store.put_removed(5, NOW);
        let now = NOW + 20 * 60;
        let direct = |since: i64, until: i64| -> BTreeMap<String, i64> {
            let mut stmt = store
                .sqlite()
                .prepare(
                    "SELECT w.owner, sum(s.value) FROM series AS s JOIN tweets AS w USING (tweet_id) \
                     WHERE w.owner IS NOT NULL AND w.removed_at IS NULL AND s.metric_id = 1 \
                     AND s.hour >= ?1 AND s.hour < ?2 GROUP BY w.owner",
                )
                .unwrap();
            stmt.query_map(rusqlite::params![since, until], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        for (since, until) in [
            (start, NOW),
            (start + 5 * H, NOW - 7 * H),
            (start + 5 * H, start + 9 * H),
            (start + DAY_SECS, NOW + H),
            (start + 13 * H, NOW + H),
            (start, NOW - DAY_SECS + 3 * H),
        ] {
            let figures = store
                .account_figures(&AccountsQuery {
                    since,
                    until,
                    now,
                    owners: &[],
                })
                .unwrap();
            let got: BTreeMap<String, i64> = figures
                .iter()
                .filter(|a| a.sums.contains_key(&Metric::Impressions))
                .map(|a| (a.owner.clone(), a.sum(Metric::Impressions)))
                .collect();
            assert_eq!(got, direct(since, until), "period {since}..{until}");
        }
    }
}
