//! A cron schedule as the config writes it: seconds first, 6 or 7 fields, UTC. Parsing and the
//! firings around a time; when a schedule is run is the scheduler's business.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

/// A cron schedule with seconds (6 or 7 fields, as tokio-cron-scheduler expects), in UTC.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cron {
    source: String,
    parsed: croner::Cron,
}

impl Cron {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first firing strictly after `t`; `None` if the schedule never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.find_next_occurrence(&t, false).ok()
    }

    /// The last firing at or before `t`; `None` if the schedule never fired before.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.find_previous_occurrence(&t, true).ok()
    }

    /// The gap between the firings around `t` (the last at or before it and the next after it),
    /// seconds: the period a cycle is expected within at `t`, also for irregular schedules
    /// (business hours: 15 minutes by day, the night's gap at night). Without a firing before
    /// `t`, the gap between the next two.
    pub fn period_at(&self, t: DateTime<Utc>) -> Option<i64> {
        let next = self.next_after(t)?;
        let before = match self.last_at_or_before(t) {
            Some(before) => before,
            None => return Some((self.next_after(next)? - next).num_seconds().max(1)),
        };
        Some((next - before).num_seconds().max(1))
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Cron, String> {
        let fields = s.split_whitespace().count();
        if fields == 5 {
            return Err(format!(
                "{s:?} has 5 fields, but seconds come first: write 6 or 7 fields \
                 (sec min hour day month weekday [year]), e.g. \"0 */15 * * * *\""
            ));
        }
        let parser = CronParser::builder().seconds(Seconds::Required).build();
        let parsed = parser.parse(s).map_err(|e| {
            format!("{s:?} is not a cron schedule ({e}); write 6 or 7 fields, seconds first, e.g. \"0 */15 * * * *\"")
        })?;
        Ok(Cron {
            source: s.trim().to_string(),
            parsed,
        })
    }
}

impl TryFrom<String> for Cron {
    type Error = String;

    fn try_from(s: String) -> Result<Cron, String> {
        s.parse()
    }
}

impl From<Cron> for String {
    fn from(c: Cron) -> String {
        c.source
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cron").field(&self.source).finish()
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Cron) -> bool {
        self.source == other.source
    }
}
