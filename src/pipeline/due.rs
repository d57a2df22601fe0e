//! Which kinds a cycle runs and how much of each: the selection (due or forced), whether a kind
//! is due by its schedule, and the scope of its work (in full, or catching up). Pure: it reads
//! the kinds' history handed to it.

use crate::config::ScheduleConfig;
use crate::domain::JobKind;
use crate::store::KindHistory;

/// Which kinds a cycle runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The kinds that are due by their `[schedule]` period, and what earlier cycles of the
    /// others left undone (`run` without `--job`): a CronJob sends what the daemon would.
    Due,
    /// These kinds in full, due or not (`run --job`, the daemon's triggers, `demo`).
    Forced(Vec<JobKind>),
}

impl Selection {
    /// The kinds a cycle of this selection considers.
    pub fn kinds(&self) -> Vec<JobKind> {
        match self {
            Selection::Due => JobKind::ALL.to_vec(),
            Selection::Forced(kinds) => kinds.clone(),
        }
    }
}

/// How much of a kind a cycle plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything the kind covers now.
    Full,
    /// Only what the full cycle that started at `since` left undone: Tweets it did not confirm,
    /// `/historical` cells it did not fetch or refresh. Refused accounts are not asked again.
    CatchUp { since: i64 },
}

/// Whether a kind is due, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindDue {
    pub kind: JobKind,
    /// Due by its schedule (or forced).
    pub due: bool,
    /// Forced by `--job` or a daemon trigger.
    pub forced: bool,
    /// Start of the last cycle that planned the kind in full.
    pub last_full_start: Option<i64>,
    /// The schedule's period, seconds.
    pub period: Option<i64>,
    /// When the kind is due next, when not due now (Unix seconds).
    pub next_due: Option<i64>,
}

/// How early a cycle may come and still count as due: a tenth of the period, at most a
/// minute, so a CronJob that starts a few seconds early still runs the kind and one that runs
/// more often than the schedule does not run it twice.
pub fn schedule_tolerance(period: i64) -> i64 {
    (period / 10).min(60)
}

impl KindDue {
    /// Whether `kind` is due at `now`: never run in full, or its schedule fired (less
    /// [`schedule_tolerance`]) after the firing its last full cycle served (the one nearest its
    /// start), so a `run` every 15 minutes runs each kind once per firing of its cron, as the
    /// daemon does, also for irregular schedules. A last full cycle that started in the future (the clock was set
    /// back) counts as due, so a clock correction never stalls collection.
    pub fn at(
        kind: JobKind,
        history: &KindHistory,
        schedule: &ScheduleConfig,
        now: i64,
    ) -> KindDue {
        let cron = schedule.of(kind);
        let utc = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let period = cron.period_at(utc(now));
        let (due, next_due) = match history.last_full_start {
            None => (true, None),
            Some(last) if last > now + 60 => {
                tracing::warn!(
                    kind = kind.name(),
                    "The last full cycle of this kind started in the future ({}): was the clock \
                     set back? Running it now",
                    crate::domain::iso_utc(last)
                );
                (true, None)
            }
            Some(last) => {
                // The firing the last full cycle served: the one nearest its start (a cycle a
                // few seconds early served the firing it anticipated, a late one the firing
                // before it; an off-schedule one, such as the very first, the nearer of the two).
                // The kind is due again at the firing after the one served.
                let tolerance = cron.period_at(utc(last)).map_or(0, schedule_tolerance);
                let before = cron.last_at_or_before(utc(last));
                let after = cron.next_after(utc(last));
                let served = match (before, after) {
                    (Some(b), Some(a)) if a.timestamp() - last < last - b.timestamp() => Some(a),
                    (Some(b), _) => Some(b),
                    (None, a) => a,
                };
                let next = served.and_then(|served| cron.next_after(served));
                match next {
                    Some(firing) => {
                        let next = firing.timestamp() - tolerance;
                        (now >= next, (now < next).then_some(next))
                    }
                    None => (false, None),
                }
            }
        };
        KindDue {
            kind,
            due,
            forced: false,
            last_full_start: history.last_full_start,
            period,
            next_due,
        }
    }

    /// A kind run in full because it was asked for.
    pub fn forced(
        kind: JobKind,
        history: &KindHistory,
        schedule: &ScheduleConfig,
        now: i64,
    ) -> KindDue {
        KindDue {
            due: true,
            forced: true,
            next_due: None,
            ..KindDue::at(kind, history, schedule, now)
        }
    }

    /// The scope of this kind's work in a cycle.
    pub fn scope(&self) -> Scope {
        match (self.due, self.last_full_start) {
            (false, Some(since)) => Scope::CatchUp { since },
            _ => Scope::Full,
        }
    }

    /// Why it is due or not, for people.
    pub fn reason(&self, now: i64) -> String {
        let ago = |t: i64| format!("{} ago", human_secs(now - t));
        let every = self
            .period
            .map_or(String::new(), |p| format!(", every {}", human_secs(p)));
        match (self.forced, self.due, self.last_full_start) {
            (true, _, _) => "asked for (--job)".to_string(),
            (_, true, None) => "due: never run".to_string(),
            (_, true, Some(last)) => format!("due: last full cycle {}{every}", ago(last)),
            (_, false, Some(last)) => format!(
                "not due: last full cycle {}{every}; due in {}",
                ago(last),
                self.next_due.map_or("?".into(), |n| human_secs(n - now))
            ),
            (_, false, None) => "not due".to_string(),
        }
    }
}

/// A duration in seconds, for people: `45s`, `14m05s`, `2h05m`, `3.2 days`.
pub fn human_secs(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=172_799 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{:.1} days", s as f64 / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn schedule(extra: &str) -> ScheduleConfig {
        let text =
            format!("[app]\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\n[schedule]\n{extra}\n");
        Config::parse("t.toml", &text, std::iter::empty())
            .unwrap()
            .schedule
    }

    /// The full cycles a `run` every 15 minutes (starting `offsets` seconds early or late) makes
    /// of `kind` over `days` from `t0`, as hours:minutes of the day.
    fn cron_job(schedule: &ScheduleConfig, kind: JobKind, t0: i64, days: i64) -> Vec<String> {
        let mut history = KindHistory::default();
        let mut fired = Vec::new();
        for i in 0..days * 96 {
            let now = t0 + i * 900 + [0, -5, 7][(i % 3) as usize];
            if KindDue::at(kind, &history, schedule, now).due {
                history.last_full_start = Some(now);
                let t = (now + 30).rem_euclid(86_400);
                fired.push(format!("{:02}:{:02}", t / 3600, t % 3600 / 60));
            }
        }
        fired
    }

    /// A kind is due when its schedule fired since its last full cycle (a few seconds early is
    /// on time), also for irregular schedules: business hours, a few times a day.
    #[test]
    fn kinds_are_due_at_their_schedules_firings() {
        let t0 = 1_795_219_200; // a UTC midnight
        let s = schedule(
            "totals = \"0 */15 8-17 * * *\"\nhourly = \"0 5 * * * *\"\nhistorical = \"0 0 1,2,12 * * *\"",
        );
        // The first cycle runs at once (never run), off the schedule; then the firings: 40.
        let totals = cron_job(&s, JobKind::Totals, t0, 1);
        assert_eq!(totals.len(), 41, "{totals:?}");
        assert_eq!(totals[..2], ["00:00", "08:00"]);
        assert!(
            totals[1..]
                .iter()
                .all(|t| ("08:00"..="17:45").contains(&t.as_str())),
            "{totals:?}"
        );
        let historical = cron_job(&s, JobKind::Historical, t0, 2);
        assert_eq!(
            historical,
            ["00:00", "02:00", "12:00", "01:00", "02:00", "12:00"],
            "each firing is served by the run at it"
        );
        let hourly = cron_job(&s, JobKind::Hourly, t0, 1);
        assert_eq!(hourly.len(), 24, "{hourly:?}");
        assert_eq!(hourly[..3], ["00:00", "01:15", "02:15"]);
        let daily = schedule("historical = \"0 30 3 * * *\"");
        assert_eq!(
            cron_job(&daily, JobKind::Historical, t0, 3),
            ["00:00", "03:30", "03:30"]
        );
        let every15 = schedule("totals = \"0 */15 * * * *\"");
        assert_eq!(cron_job(&every15, JobKind::Totals, t0, 1).len(), 96);
    }

    /// A last full cycle that started in the future (the clock was set back) makes the kind due.
    #[test]
    fn a_cycle_in_the_future_makes_the_kind_due() {
        let s = schedule("");
        let history = KindHistory {
            last_full_start: Some(1_800_000_000 + 3 * 86_400),
            ..KindHistory::default()
        };
        assert!(KindDue::at(JobKind::Historical, &history, &s, 1_800_000_000).due);
        let recent = KindHistory {
            last_full_start: Some(1_800_000_000 - 60),
            ..KindHistory::default()
        };
        let due = KindDue::at(JobKind::Historical, &recent, &s, 1_800_000_000);
        assert!(!due.due && due.next_due.is_some());
        assert_eq!(
            due.scope(),
            Scope::CatchUp {
                since: 1_800_000_000 - 60
            }
        );
    }
}
