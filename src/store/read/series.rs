//! A Tweet's hourly series as stored, and the coverage rule that values its hours: a stored
//! bucket is its value, a missing hour inside fetched coverage is zero, outside it unknown.

use std::collections::BTreeMap;

use crate::store::sql::args;

use super::{TweetInfo, tweet_id};
use crate::domain::{Metric, TweetId};
use crate::store::{Store, StoreError, unknown_value};

/// One stored hourly bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bucket {
    pub tweet: TweetId,
    pub metric: Metric,
    /// Start of the hour, Unix seconds.
    pub hour: i64,
    pub value: i64,
}

/// One hour of a Tweet's series: the stored bucket, zero for an hour inside fetched coverage
/// that has none, `None` (unknown) outside coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesPoint {
    pub hour: i64,
    pub value: Option<i64>,
}

/// The half-open spans of hours whose buckets a Tweet's answers covered: its `/historical` cells
/// (from the Tweet's creation, up to where the fetch reached) and its `/28hr` window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage(pub Vec<(i64, i64)>);

impl Coverage {
    /// Whether `hour` lies inside a covered span.
    pub fn covers(&self, hour: i64) -> bool {
        self.0.iter().any(|(a, b)| *a <= hour && hour < *b)
    }

    /// The value of `hour`: the stored bucket, else zero inside coverage, else unknown.
    pub fn value(&self, stored: Option<i64>, hour: i64) -> Option<i64> {
        stored.or_else(|| self.covers(hour).then_some(0))
    }

    /// Adds a `/historical` cell starting at `cell`, fetched up to `fetched_until`, of a Tweet
    /// created at `created_at`: it covers hours from the Tweet's creation hour on.
    pub(super) fn add_cell(&mut self, created_at: i64, cell: i64, fetched_until: i64) {
        let created_hour = crate::domain::Hour::floor(created_at).secs();
        self.0.push((cell.max(created_hour), fetched_until));
    }

    /// Adds a `/28hr` window `[from, until)`.
    pub(super) fn add_recent(&mut self, from: i64, until: i64) {
        self.0.push((from, until));
    }

    /// How many hours starting in `[since, until)` lie inside a covered span (spans may
    /// overlap: each hour counts once).
    pub fn hours_in(&self, since: i64, until: i64) -> i64 {
        let ceil = |t: i64| crate::domain::Hour::ceil(t).secs();
        let mut spans: Vec<(i64, i64)> = self
            .0
            .iter()
            .map(|(a, b)| (ceil((*a).max(since)), ceil((*b).min(until))))
            .filter(|(a, b)| a < b)
            .collect();
        spans.sort_unstable();
        let (mut hours, mut reached) = (0, i64::MIN);
        for (a, b) in spans {
            let a = a.max(reached);
            if a < b {
                hours += (b - a) / crate::domain::HOUR_SECS;
                reached = b;
            }
        }
        hours
    }
}

impl Store {
    /// The metrics with buckets stored for `tweet`, in the domain's order.
    pub fn series_metrics(&self, tweet: TweetId) -> Result<Vec<Metric>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT metric_id FROM series WHERE tweet_id = ?1 ORDER BY metric_id",
            )?;
            let ids: Vec<i64> = stmt
                .query_map(args![tweet.get() as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(ids.into_iter().filter_map(Metric::from_id).collect())
        })
    }

    /// The stored buckets of (`tweet`, `metric`) whose hour lies in `[since, until)`, by hour.
    pub fn buckets(
        &self,
        tweet: TweetId,
        metric: Metric,
        since: i64,
        until: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hour, value FROM series WHERE tweet_id = ?1 AND metric_id = ?2 \
                 AND hour >= ?3 AND hour < ?4 ORDER BY hour",
            )?;
            stmt.query_map(args![tweet.get() as i64, metric.id(), since, until], |r| {
                Ok(Bucket {
                    tweet,
                    metric,
                    hour: r.get(0)?,
                    value: r.get(1)?,
                })
            })?
            .collect()
        })
    }

    /// Every stored bucket, by Tweet, metric and hour (the whole `series` table: for checks
    /// and small databases).
    pub fn all_buckets(&self) -> Result<Vec<Bucket>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT tweet_id, metric_id, hour, value FROM series \
                 ORDER BY tweet_id, metric_id, hour",
            )?;
            let mut rows = stmt.query(args![])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(1)?;
                out.push(Bucket {
                    tweet: tweet_id(r.get(0)?)?,
                    metric: Metric::from_id(id)
                        .ok_or_else(|| unknown_value("series.metric_id", &id.to_string()))?,
                    hour: r.get(2)?,
                    value: r.get(3)?,
                });
            }
            Ok(out)
        })
    }

    /// The spans of hours `tweet`'s answers covered (its cells counted from its creation hour).
    pub fn coverage(&self, tweet: &TweetInfo) -> Result<Coverage, StoreError> {
        let id = tweet.tweet.get() as i64;
        self.read(|conn| {
            let mut coverage = Coverage::default();
            let mut stmt =
                conn.prepare("SELECT cell, fetched_until FROM coverage WHERE tweet_id = ?1")?;
            for span in stmt.query_map(args![id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (cell, until) = span?;
                coverage.add_cell(tweet.created_at, cell, until);
            }
            let mut stmt = conn.prepare(
                "SELECT fetched_from, fetched_until FROM recent_coverage WHERE tweet_id = ?1",
            )?;
            for span in stmt.query_map(args![id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (from, until) = span?;
                coverage.add_recent(from, until);
            }
            Ok(coverage)
        })
    }

    /// Every hour of `[since, until)` (hour-aligned) of (`tweet`, `metric`), valued by the
    /// coverage rule of [`SeriesPoint`].
    pub fn series(
        &self,
        tweet: &TweetInfo,
        coverage: &Coverage,
        metric: Metric,
        since: i64,
        until: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let stored: BTreeMap<i64, i64> = self
            .buckets(tweet.tweet, metric, since, until)?
            .into_iter()
            .map(|b| (b.hour, b.value))
            .collect();
        Ok((since..until)
            .step_by(crate::domain::HOUR_SECS as usize)
            .map(|hour| SeriesPoint {
                hour,
                value: coverage.value(stored.get(&hour).copied(), hour),
            })
            .collect())
    }
}
