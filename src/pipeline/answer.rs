//! What an answer means for the job that asked it: the writes it makes (values, coverage,
//! status changes), what it left out, the Tweets a refusal names, and the batch's outcome.
//! Pure: no I/O, no store, no client; the batch sends and stores.

use std::collections::{HashMap, HashSet};

use crate::client::{ApiError, SERIES_GROUPING, TOTALS_GROUPING, grouping};
use crate::domain::StatusChange;
use crate::domain::{
    BatchOutcome, Credential, HOUR_SECS, Handle, Hour, JobKind, Metric, TweetId, TweetState,
    TweetStatus,
};
use crate::parse::{self, ParseError, Parsed};
use crate::planner::{Cell, Job};
use crate::store::{SeriesWrite, TotalsWrite};

/// Reads an answer's body as `kind` asks: lifetime totals are never negative, and zero buckets
/// of a series are not kept past the parse (they are never stored).
pub(super) fn parse(kind: JobKind, body: &[u8]) -> Result<Parsed, ParseError> {
    let grouping = grouping(kind);
    match kind {
        JobKind::Totals => parse::parse_lifetime(body, &[grouping]),
        JobKind::Hourly | JobKind::Historical => parse::parse_nonzero_buckets(body, &[grouping]),
    }
}

/// What an answered job writes.
#[derive(Debug)]
pub(super) enum Write {
    Totals(TotalsWrite),
    Series(SeriesWrite),
}

/// What an answer comes to for its job.
#[derive(Debug)]
pub(super) struct Answered {
    pub write: Write,
    /// `partial` when the answer lists Tweets as unavailable or unsupported, or leaves some
    /// out; `failed` when it names none of them; else `ok`.
    pub outcome: BatchOutcome,
    /// The batch's error text: the API's words for what it listed, and what it left out.
    pub error: Option<String>,
    /// What the answer left out, in words.
    pub shortfall: Option<String>,
    /// Values the answer carried: one per Tweet and metric (totals), or every bucket of the
    /// dense window (series), zeros included.
    pub received: usize,
}

/// Reads `parsed` for `job` at `now`; `window` is the `/historical` window asked for.
pub(super) fn answered(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    window: Option<(Hour, Hour)>,
    now: i64,
) -> Answered {
    let (write, coverage, received) = match job.kind {
        JobKind::Totals => {
            let (write, coverage) = totals_write(job, parsed, states, now);
            let received = write.values.len();
            (Write::Totals(write), coverage, received)
        }
        JobKind::Hourly | JobKind::Historical => {
            let (write, coverage) = series_write(job, parsed, states, window, now);
            let received = write
                .answered
                .iter()
                .map(|(_, _, from, to)| usize::try_from((to - from) / HOUR_SECS).unwrap_or(0))
                .sum();
            (Write::Series(write), coverage, received)
        }
    };
    let listed = coverage.unavailable > 0
        || !parsed.unsupported_impressions.is_empty()
        || !parsed.unsupported_video_views.is_empty();
    let shortfall = coverage.shortfall(job);
    let mut why: Vec<String> = Vec::new();
    if listed && !parsed.errors.is_empty() {
        why.push(parsed.errors.join("; "));
    }
    why.extend(shortfall.clone());
    let outcome = if coverage.answered_nothing(job) {
        BatchOutcome::Failed
    } else if listed || shortfall.is_some() {
        BatchOutcome::Partial
    } else {
        BatchOutcome::Ok
    };
    Answered {
        write,
        outcome,
        error: (!why.is_empty()).then(|| why.join("; ")),
        shortfall,
        received,
    }
}

/// What a failed request comes to for its job.
#[derive(Debug)]
pub(super) struct Failed {
    /// `unauthorized` when a credential was refused, `refused` when the job is sent again
    /// without the Tweets the API named, else `failed`.
    pub outcome: BatchOutcome,
    /// The batch's error text.
    pub error: String,
    /// The Tweets the refusal names.
    pub refusal: Refusal,
    /// Whether the job is sent again at once without them.
    pub resend: bool,
}

/// Reads `error` for `job`. `blamed`: a credential was refused (see the fallback); `may_resend`:
/// the job may still be sent again without named Tweets; `last_cause`: the last connection
/// failure the breaker saw; `authors` maps configured accounts' user ids.
pub(super) fn failed(
    job: &Job,
    error: &ApiError,
    authors: &HashMap<u64, Handle>,
    blamed: bool,
    may_resend: bool,
    last_cause: Option<String>,
) -> Failed {
    let refusal = refusal(job, error, authors);
    let resend = !refusal.is_empty() && may_resend;
    // A batch the breaker stopped after its own attempts failed: its own cause, once.
    let error = match (error, last_cause) {
        (ApiError::Unreachable(_), Some(cause)) => format!("connection failed: {cause}"),
        _ => error.to_string(),
    };
    let outcome = if blamed {
        BatchOutcome::Unauthorized
    } else if resend {
        BatchOutcome::Refused
    } else {
        BatchOutcome::Failed
    };
    Failed {
        outcome,
        error,
        refusal,
        resend,
    }
}

/// What an answer said of a job's Tweets, pair by pair. Only what it names counts: a requested
/// Tweet or metric it leaves out is unanswered (nothing stored or deleted for it, no coverage,
/// planned again), never a zero.
struct Coverage {
    /// Tweets the answer named in full: every pair asked of them that the API measures (those
    /// its `unsupported_*` lists refuse are answered by the list), over the whole window for
    /// the series.
    complete: Vec<TweetId>,
    /// Pairs the answer named, with the hours `[from, to)` it named them over (series only).
    named: Vec<(TweetId, Metric, i64, i64)>,
    /// Requested Tweets the answer neither named nor listed as unavailable.
    missing_tweets: Vec<TweetId>,
    /// Pairs of named Tweets missing from the answer, or (series) not covering the window.
    missing_pairs: Vec<(TweetId, Metric)>,
    /// Requested Tweets listed as unavailable.
    unavailable: usize,
    status_changes: Vec<StatusChange>,
}

impl Coverage {
    /// Reads `parsed` for `job`; `whole` says whether a pair's span is a full answer and gives
    /// the hours it covers (for the series: contiguous buckets, clipped to the window).
    fn of(
        job: &Job,
        parsed: &Parsed,
        grouping: &str,
        states: &HashMap<TweetId, TweetState>,
        span_hours: impl Fn(&parse::Span) -> Option<(i64, i64, bool)>,
    ) -> Coverage {
        let unavailable: HashSet<TweetId> = parsed.unavailable.iter().copied().collect();
        let no_video: HashSet<TweetId> = parsed.unsupported_video_views.iter().copied().collect();
        let no_impressions: HashSet<TweetId> =
            parsed.unsupported_impressions.iter().copied().collect();
        // What the API says it does not measure is not a zero to store (nor to delete over).
        let measured = |t: &TweetId, m: &Metric| match m {
            Metric::VideoViews => !no_video.contains(t),
            Metric::Impressions | Metric::Engagements => !no_impressions.contains(t),
            _ => true,
        };
        let empty = HashMap::new();
        let spans = parsed.named.get(grouping).unwrap_or(&empty);
        let detail = (!parsed.errors.is_empty()).then(|| parsed.errors.join("; "));
        let owner_answered = matches!(job.credential, Credential::UserContext { .. });
        let mut out = Coverage {
            complete: Vec::new(),
            named: Vec::new(),
            missing_tweets: Vec::new(),
            missing_pairs: Vec::new(),
            unavailable: 0,
            status_changes: Vec::new(),
        };
        for t in &job.tweets {
            if unavailable.contains(t) {
                out.unavailable += 1;
                out.status_changes
                    .push((*t, TweetStatus::Unavailable, detail.clone()));
                continue;
            }
            let (mut any, mut whole) = (false, true);
            for m in job.metrics.iter().filter(|m| measured(t, m)) {
                match spans.get(&(*t, *m)).and_then(&span_hours) {
                    Some((from, to, full)) => {
                        any = true;
                        out.named.push((*t, *m, from, to));
                        if !full {
                            whole = false;
                            out.missing_pairs.push((*t, *m));
                        }
                    }
                    None => {
                        whole = false;
                        out.missing_pairs.push((*t, *m));
                    }
                }
            }
            // A Tweet whose every asked metric is unsupported is answered by the lists alone.
            let listed = job.metrics.iter().all(|m| !measured(t, m));
            if !any && !listed {
                out.missing_pairs.retain(|(p, _)| p != t);
                out.missing_tweets.push(*t);
                continue;
            }
            if whole {
                out.complete.push(*t);
            }
            // A Tweet that answers again is active again (one forbidden to its owner only when
            // the owner's token answered).
            let revived = states.get(t).is_some_and(|s| match s.status {
                TweetStatus::Unavailable | TweetStatus::Protected => true,
                TweetStatus::Forbidden => owner_answered,
                TweetStatus::Active => false,
            });
            if revived {
                out.status_changes.push((*t, TweetStatus::Active, None));
            }
        }
        out
    }

    /// Whether the answer named nothing of what was asked: no Tweet, no unavailable list.
    fn answered_nothing(&self, job: &Job) -> bool {
        !job.tweets.is_empty() && self.missing_tweets.len() == job.tweets.len()
    }

    /// What the answer left out, in words (a few IDs, then a count), when it left anything.
    fn shortfall(&self, job: &Job) -> Option<String> {
        let ids = |v: &mut dyn Iterator<Item = String>, n: usize| {
            let shown: Vec<String> = v.take(5).collect();
            let more = n.saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{more}", shown.join(", "))
        };
        let mut parts = Vec::new();
        if !self.missing_tweets.is_empty() {
            parts.push(format!(
                "left out {} of the {} Tweets asked ({})",
                self.missing_tweets.len(),
                job.tweets.len(),
                ids(
                    &mut self.missing_tweets.iter().map(ToString::to_string),
                    self.missing_tweets.len()
                )
            ));
        }
        if !self.missing_pairs.is_empty() {
            let what = if job.kind == JobKind::Totals {
                "left out"
            } else {
                "left out or gave incomplete series for"
            };
            parts.push(format!(
                "{what} {} Tweet metrics ({})",
                self.missing_pairs.len(),
                ids(
                    &mut self.missing_pairs.iter().map(|(t, m)| format!("{t} {m}")),
                    self.missing_pairs.len()
                )
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "the answer {}: nothing stored for them, asked again next run",
                parts.join(" and ")
            )
        })
    }
}

/// The account whose token `job` uses, if any.
pub(super) fn account_of(job: &Job) -> Option<Handle> {
    match &job.credential {
        Credential::UserContext { account } => Some(account.clone()),
        Credential::Bearer => None,
    }
}

/// What an answered `/28hr` or `/historical` job stores. Each pair the answer named with
/// contiguous hourly buckets replaces its stored buckets over those hours, within the window
/// (the requested one for `/historical`, the echoed one for `/28hr`, else the hours the answer
/// spans); only Tweets named in full over the window count as covered.
fn series_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    window: Option<(Hour, Hour)>,
    fetched_at: i64,
) -> (SeriesWrite, Coverage) {
    let spans = parsed.named.get(SERIES_GROUPING);
    let (start, end) = window
        .map(|(s, e)| (s.secs(), e.secs()))
        .or_else(|| echoed_window(parsed))
        .or_else(|| {
            // Neither asked nor echoed: the hours the answer spans.
            let spans = spans?.values();
            let first = spans.clone().filter_map(|s| s.first).min()?;
            let last = spans.filter_map(|s| s.last).max()?;
            Some((first, last + HOUR_SECS))
        })
        .unwrap_or((
            Hour::floor(fetched_at - 28 * HOUR_SECS).secs(),
            Hour::ceil(fetched_at).secs(),
        ));
    let coverage = Coverage::of(job, parsed, SERIES_GROUPING, states, |span| {
        let (first, last) = (span.first?, span.last?);
        // Buckets with a hole between them say nothing certain of the hours in the hole.
        if (last - first) / HOUR_SECS + 1 != i64::from(span.leaves) {
            return None;
        }
        let (from, to) = (first.max(start), (last + HOUR_SECS).min(end));
        Some((from, to, span.covers(start, end)))
    });
    let ranges: HashMap<(TweetId, Metric), (i64, i64)> = coverage
        .named
        .iter()
        .map(|&(t, m, from, to)| ((t, m), (from, to)))
        .collect();
    let rows = parsed
        .groupings
        .get(SERIES_GROUPING)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let values = rows
        .iter()
        .filter_map(|r| Some((r.tweet?, r.metric?, r.bucket()?, r.value)))
        // Zero buckets are not stored (the range's delete covers them).
        .filter(|(t, m, h, v)| {
            *v != 0
                && ranges
                    .get(&(*t, *m))
                    .is_some_and(|(from, to)| (*from..*to).contains(&h.secs()))
        })
        .collect();
    let mut answered = coverage.named.clone();
    answered.sort();
    let write = SeriesWrite {
        source: job.endpoint,
        fetched_at,
        start,
        end,
        answered,
        values,
        cell: job.cell.map(Cell::start),
        covered: coverage.complete.clone(),
        status_changes: coverage.status_changes.clone(),
        handle: account_of(job),
        unsupported: unsupported(job, parsed),
    };
    (write, coverage)
}

/// The `start`/`end` the API echoed, widened to whole hours (seconds).
fn echoed_window(parsed: &Parsed) -> Option<(i64, i64)> {
    let secs = |s: &Option<String>| {
        chrono::DateTime::parse_from_rfc3339(s.as_deref()?)
            .ok()
            .map(|d| d.timestamp())
    };
    let (start, end) = (secs(&parsed.start)?, secs(&parsed.end)?);
    (start < end).then(|| (Hour::floor(start).secs(), Hour::ceil(end).secs()))
}

/// What an answered `/totals` job stores: the values the answer named, and `checked_at` for
/// the Tweets it named in full.
fn totals_write(
    job: &Job,
    parsed: &Parsed,
    states: &HashMap<TweetId, TweetState>,
    observed_at: i64,
) -> (TotalsWrite, Coverage) {
    let coverage = Coverage::of(job, parsed, TOTALS_GROUPING, states, |span| {
        (span.leaves > 0).then_some((0, 0, true))
    });
    let rows = parsed
        .groupings
        .get(TOTALS_GROUPING)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let asked: HashSet<(TweetId, Metric)> = job
        .tweets
        .iter()
        .flat_map(|t| job.metrics.iter().map(move |m| (*t, *m)))
        .collect();
    let named: HashSet<(TweetId, Metric)> =
        coverage.named.iter().map(|&(t, m, _, _)| (t, m)).collect();
    let mut values: Vec<(TweetId, Metric, i64)> = rows
        .iter()
        .filter_map(|r| Some((r.tweet?, r.metric?, r.value)))
        .filter(|(t, m, _)| asked.contains(&(*t, *m)) && named.contains(&(*t, *m)))
        .collect();
    values.sort_by_key(|(t, m, _)| (*t, *m));
    let write = TotalsWrite {
        observed_at,
        values,
        checked: coverage.complete.clone(),
        status_changes: coverage.status_changes.clone(),
        handle: account_of(job),
        unsupported: unsupported(job, parsed),
    };
    (write, coverage)
}

/// The (Tweet, metric) pairs an answer's `unsupported_*` lists refuse, among those asked for.
fn unsupported(job: &Job, parsed: &Parsed) -> Vec<(TweetId, Metric)> {
    let lists = [
        (
            &parsed.unsupported_impressions,
            &[Metric::Impressions, Metric::Engagements][..],
        ),
        (&parsed.unsupported_video_views, &[Metric::VideoViews][..]),
    ];
    lists
        .into_iter()
        .flat_map(|(ids, metrics)| {
            ids.iter()
                .flat_map(move |id| metrics.iter().map(move |m| (*id, *m)))
        })
        .filter(|(id, m)| job.tweets.contains(id) && job.metrics.contains(m))
        .collect()
}

/// What a refused request says about the Tweets it names.
#[derive(Debug, Default)]
pub(super) struct Refusal {
    /// Protected ones (400 "Tweet ID(s) are unavailable") and ones the owner's token may not
    /// read (403 "Forbidden to access tweets …"), with their new status.
    pub marked: Vec<StatusChange>,
    /// Ones the API says another configured account wrote ("… for author id N: …" where N is
    /// that account's `user_id`): collected under that account from now on.
    pub moved: Vec<(TweetId, Handle)>,
}

impl Refusal {
    pub fn is_empty(&self) -> bool {
        self.marked.is_empty() && self.moved.is_empty()
    }

    /// Whether it names `id`.
    pub fn names(&self, id: &TweetId) -> bool {
        self.marked.iter().any(|(t, _, _)| t == id) || self.moved.iter().any(|(t, _)| t == id)
    }
}

/// Reads the Tweets a refused request names; `authors` maps configured accounts' user ids.
fn refusal(job: &Job, error: &ApiError, authors: &HashMap<u64, Handle>) -> Refusal {
    let status = match error.status() {
        Some(403) if matches!(job.credential, Credential::UserContext { .. }) => {
            TweetStatus::Forbidden
        }
        Some(400) => TweetStatus::Protected,
        _ => return Refusal::default(),
    };
    let requested: HashSet<TweetId> = job.tweets.iter().copied().collect();
    let detail = (!error.api_errors().is_empty()).then(|| error.api_errors().join("; "));
    let mut out = Refusal {
        marked: error
            .unavailable_ids()
            .iter()
            .filter(|id| requested.contains(id))
            .map(|id| (*id, status, detail.clone()))
            .collect(),
        moved: Vec::new(),
    };
    for message in error.api_errors() {
        let lower = message.to_ascii_lowercase();
        if !(lower.contains("forbidden to access tweets") || lower.contains("are unavailable")) {
            continue;
        }
        let new_owner = author_id(message)
            .and_then(|a| authors.get(&a))
            .filter(|h| Some(*h) != account_of(job).as_ref());
        for id in ids_in(message) {
            if !requested.contains(&id) || out.names(&id) {
                continue;
            }
            match new_owner {
                Some(owner) => out.moved.push((id, owner.clone())),
                None => out.marked.push((id, status, Some(message.clone()))),
            }
        }
    }
    out
}

/// The author id in "Forbidden to access tweets for author id 18435372: …".
fn author_id(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("author id")? + "author id".len();
    let digits: String = lower[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Tweet IDs named in an API message: the numbers after its last ':' (separated by ',', ';' or spaces).
fn ids_in(message: &str) -> Vec<TweetId> {
    let tail = message.rsplit_once(':').map_or("", |(_, t)| t);
    tail.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Endpoint;
    use crate::store::{BatchRecord, Owner, RunStart, Store};
    use std::collections::BTreeSet;

    /// Answers that leave out any subset of Tweets, of pairs, or the last hours of a pair.
    mod left_out {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const METRICS: [Metric; 3] = [Metric::Impressions, Metric::Favorites, Metric::Retweets];
        const TWEETS: u64 = 4;
        /// Hours of the window.
        const HOURS: i64 = 6;

        /// Per Tweet, per metric: `None` left out, else how many of the window's hours (from
        /// its start) the answer gives, and their values.
        type Answer = Vec<Vec<Option<(usize, Vec<i64>)>>>;

        fn answer() -> impl Strategy<Value = (Vec<bool>, Answer)> {
            let pair = prop_oneof![
                1 => Just(None),
                4 => (1..=HOURS as usize, prop::collection::vec(-1i64..4, HOURS as usize))
                    .prop_map(Some),
            ];
            (
                prop::collection::vec(any::<bool>(), TWEETS as usize),
                prop::collection::vec(prop::collection::vec(pair, METRICS.len()), TWEETS as usize),
            )
        }

        fn tweet(n: u64) -> TweetId {
            TweetId::new(1_000 + n).unwrap()
        }

        /// The JSON of a series answer over `[start, start + HOURS)`.
        fn series_json(start: i64, tweets: &[bool], answer: &Answer) -> String {
            let mut grouping = serde_json::Map::new();
            for (t, present) in tweets.iter().enumerate() {
                if !present {
                    continue;
                }
                let mut metrics = serde_json::Map::new();
                for (m, pair) in answer[t].iter().enumerate() {
                    let Some((hours, values)) = pair else {
                        continue;
                    };
                    let mut days: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
                        BTreeMap::new();
                    for (h, value) in values.iter().enumerate().take(*hours) {
                        let at = chrono::DateTime::from_timestamp(start + h as i64 * HOUR_SECS, 0)
                            .unwrap();
                        days.entry(at.format("%Y-%m-%d").to_string())
                            .or_default()
                            .insert(at.format("%H").to_string(), value.to_string().into());
                    }
                    metrics.insert(
                        METRICS[m].as_str().into(),
                        serde_json::to_value(days).unwrap(),
                    );
                }
                grouping.insert(tweet(t as u64).to_string(), metrics.into());
            }
            serde_json::json!({ SERIES_GROUPING: grouping }).to_string()
        }

        fn totals_json(tweets: &[bool], answer: &Answer) -> String {
            let mut grouping = serde_json::Map::new();
            for (t, present) in tweets.iter().enumerate() {
                if !present {
                    continue;
                }
                let metrics: serde_json::Map<String, serde_json::Value> = answer[t]
                    .iter()
                    .enumerate()
                    .filter_map(|(m, pair)| {
                        let (_, values) = pair.as_ref()?;
                        Some((
                            METRICS[m].as_str().into(),
                            values[0].abs().to_string().into(),
                        ))
                    })
                    .collect();
                grouping.insert(tweet(t as u64).to_string(), metrics.into());
            }
            serde_json::json!({ TOTALS_GROUPING: grouping }).to_string()
        }

        fn record(run_id: i64, seq: i64, kind: JobKind, endpoint: Endpoint) -> BatchRecord {
            BatchRecord {
                run_id,
                seq,
                kind: kind.name(),
                endpoint,
                credential: "acme".into(),
                tweet_count: TWEETS as usize,
                attempts: 1,
                http_status: Some(200),
                outcome: BatchOutcome::Ok,
                error: None,
                started_at: 0,
                duration_ms: 0,
            }
        }

        fn job(kind: JobKind, endpoint: Endpoint, cell: Option<Cell>) -> Job {
            Job {
                kind,
                endpoint,
                credential: Credential::UserContext {
                    account: "acme".parse().unwrap(),
                },
                tweets: (0..TWEETS).map(tweet).collect(),
                metrics: METRICS.to_vec(),
                cell,
                refresh: false,
                served_from: None,
            }
        }

        fn store() -> (tempfile::TempDir, Store, i64) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
            let acme: Handle = "acme".parse().unwrap();
            store
                .sync_inventory((0..TWEETS).map(|n| (tweet(n), Some(&acme))), 1)
                .unwrap();
            let run = store.begin_run(&RunStart::new(&["historical"], 1)).unwrap();
            (dir, store, run)
        }

        /// Every stored bucket, as (Tweet, metric id, hour, value).
        fn stored(store: &Store) -> BTreeSet<(i64, i64, i64, i64)> {
            let buckets = store.all_buckets().unwrap();
            buckets
                .into_iter()
                .map(|b| (b.tweet.get() as i64, b.metric.id(), b.hour, b.value))
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// After a `/historical` batch the database holds everything it held before,
            /// except the buckets the answer named, which hold the answer's values; only the
            /// Tweets it named in full are covered.
            #[test]
            fn series_keep_all_but_what_the_answer_named(
                (first_tweets, first) in answer(),
                (tweets, second) in answer(),
            ) {
                let (_dir, mut store, run) = store();
                let cell = Cell::of(1_700_000_000);
                let start = cell.start();
                let now = start + HOURS * HOUR_SECS;
                let job = job(JobKind::Historical, Endpoint::Historical, Some(cell));
                let window = Some(cell.window(now));
                let states = HashMap::new();
                let mut expected: BTreeMap<(i64, i64, i64), i64> = BTreeMap::new();
                let mut covered_at: BTreeMap<i64, i64> = BTreeMap::new();
                for (seq, (tweets, answer)) in [(first_tweets, first), (tweets, second)].into_iter().enumerate() {
                    let fetched_at = now + seq as i64;
                    let body = series_json(start, &tweets, &answer);
                    let parsed = parse::parse_nonzero_buckets(body.as_bytes(), &[grouping(JobKind::Historical)]).unwrap();
                    let (write, _) = series_write(&job, &parsed, &states, window, fetched_at);
                    let rec = record(run, seq as i64 + 1, JobKind::Historical, Endpoint::Historical);
                    store.write_series_batch(&rec, &write).unwrap();
                    for (t, present) in tweets.iter().enumerate() {
                        if !present {
                            continue;
                        }
                        let id = tweet(t as u64).get() as i64;
                        for (m, pair) in answer[t].iter().enumerate() {
                            let Some((hours, values)) = pair else { continue };
                            for (h, v) in values.iter().enumerate().take(*hours) {
                                let key = (id, METRICS[m].id(), start + h as i64 * HOUR_SECS);
                                if *v == 0 { expected.remove(&key); } else { expected.insert(key, *v); }
                            }
                        }
                        let whole = answer[t].iter().all(|p| p.as_ref().is_some_and(|(h, _)| *h == HOURS as usize));
                        if whole {
                            covered_at.insert(id, fetched_at);
                        }
                    }
                    let expected_rows: BTreeSet<_> = expected.iter().map(|(&(t, m, h), &v)| (t, m, h, v)).collect();
                    prop_assert_eq!(stored(&store), expected_rows);
                    let coverage: BTreeMap<i64, i64> = store.fetched_cells().unwrap().into_iter()
                        .map(|c| (c.tweet.get() as i64, c.fetched_at)).collect();
                    prop_assert_eq!(&coverage, &covered_at);
                }
            }

            /// After a `/totals` batch every pair's latest value is the answer's if it named
            /// the pair, else what it was; `checked_at` moves only for Tweets named in full.
            #[test]
            fn totals_keep_all_but_what_the_answer_named(
                (first_tweets, first) in answer(),
                (tweets, second) in answer(),
            ) {
                let (_dir, mut store, run) = store();
                let job = job(JobKind::Totals, Endpoint::Totals, None);
                let states = HashMap::new();
                let mut latest: BTreeMap<(i64, i64), i64> = BTreeMap::new();
                let mut checked: BTreeMap<i64, i64> = BTreeMap::new();
                for (seq, (tweets, answer)) in [(first_tweets, first), (tweets, second)].into_iter().enumerate() {
                    let at = 100 + seq as i64;
                    let body = totals_json(&tweets, &answer);
                    let parsed = parse::parse_lifetime(body.as_bytes(), &[grouping(JobKind::Totals)]).unwrap();
                    let (write, _) = totals_write(&job, &parsed, &states, at);
                    store.write_totals_batch(&record(run, seq as i64 + 1, JobKind::Totals, Endpoint::Totals), &write).unwrap();
                    for (t, present) in tweets.iter().enumerate() {
                        if !present {
                            continue;
                        }
                        let id = tweet(t as u64).get() as i64;
                        for (m, pair) in answer[t].iter().enumerate() {
                            if let Some((_, values)) = pair {
                                latest.insert((id, METRICS[m].id()), values[0].abs());
                            }
                        }
                        if answer[t].iter().all(Option::is_some) {
                            checked.insert(id, at);
                        }
                    }
                    let got: BTreeMap<(i64, i64), i64> = store.latest_totals(Owner::Any).unwrap().into_iter()
                        .map(|t| ((t.tweet.get() as i64, t.metric.id()), t.value)).collect();
                    prop_assert_eq!(&got, &latest);
                    let got_checked: BTreeMap<i64, i64> = store.tweet_states().unwrap().into_iter()
                        .filter_map(|(id, s)| Some((id.get() as i64, s.totals_checked_at?))).collect();
                    prop_assert_eq!(&got_checked, &checked);
                }
            }
        }
    }

    #[test]
    fn ids_are_read_from_both_forbidden_message_forms() {
        assert_eq!(
            ids_in("Forbidden to access tweets: 1054424731825229824;"),
            vec!["1054424731825229824".parse::<TweetId>().unwrap()]
        );
        let old = "Forbidden to access tweets for author id 18435372: 640026211712786432, 640026277605339136";
        assert_eq!(ids_in(old).len(), 2);
        assert!(ids_in("internal server error").is_empty());
    }
    #[test]
    fn author_ids_are_read_from_the_2016_message_form() {
        let m = "Forbidden to access tweets for author id 18435372: 640026211712786432, 640026277605339136";
        assert_eq!(author_id(m), Some(18_435_372));
        assert_eq!(
            author_id("Forbidden to access tweets: 1054424731825229824;"),
            None
        );
    }

    /// Hand-built jobs and answers, read without a store or a client.
    mod fixtures {
        use super::*;

        fn id(n: u64) -> TweetId {
            TweetId::new(n).unwrap()
        }

        fn acme() -> Credential {
            Credential::UserContext {
                account: "acme".parse().unwrap(),
            }
        }

        fn totals_job(tweets: &[u64], metrics: &[Metric]) -> Job {
            Job {
                kind: JobKind::Totals,
                endpoint: Endpoint::Totals,
                credential: acme(),
                tweets: tweets.iter().map(|n| id(*n)).collect(),
                metrics: metrics.to_vec(),
                cell: None,
                refresh: false,
                served_from: None,
            }
        }

        fn hourly_job(tweets: &[u64], metrics: &[Metric]) -> Job {
            Job {
                kind: JobKind::Hourly,
                endpoint: Endpoint::Hour28,
                ..totals_job(tweets, metrics)
            }
        }

        /// `body` read as `job`'s kind reads it, then interpreted at `now`.
        fn answer(job: &Job, body: &str, states: &HashMap<TweetId, TweetState>) -> Answered {
            let parsed = parse(job.kind, body.as_bytes()).unwrap();
            answered(job, &parsed, states, None, 1_442_300_000)
        }

        fn totals(a: &Answered) -> &TotalsWrite {
            match &a.write {
                Write::Totals(w) => w,
                Write::Series(_) => panic!("a series write for a totals job"),
            }
        }

        fn series(a: &Answered) -> &SeriesWrite {
            match &a.write {
                Write::Series(w) => w,
                Write::Totals(_) => panic!("a totals write for a series job"),
            }
        }

        const FAV_RT: [Metric; 2] = [Metric::Favorites, Metric::Retweets];

        /// Every Tweet and metric named: `ok`, every value written, every Tweet checked.
        #[test]
        fn a_full_answer_writes_everything_and_is_ok() {
            let job = totals_job(&[11, 12], &FAV_RT);
            let a = answer(
                &job,
                r#"{"by_tweet": {"11": {"favorites": "3", "retweets": "4"},
                                 "12": {"favorites": "0", "retweets": "7"}}}"#,
                &HashMap::new(),
            );
            assert_eq!(a.outcome, BatchOutcome::Ok);
            assert_eq!((a.error.as_deref(), a.shortfall.as_deref()), (None, None));
            assert_eq!(a.received, 4);
            let w = totals(&a);
            assert_eq!(
                w.values,
                vec![
                    (id(11), Metric::Favorites, 3),
                    (id(11), Metric::Retweets, 4),
                    (id(12), Metric::Favorites, 0),
                    (id(12), Metric::Retweets, 7),
                ]
            );
            assert_eq!(w.checked, vec![id(11), id(12)]);
            assert!(w.status_changes.is_empty() && w.unsupported.is_empty());
            assert_eq!(w.handle, Some("acme".parse().unwrap()));
        }

        /// A Tweet left out and a metric left out are unanswered, never zeros: nothing written
        /// for them, the Tweet with a missing metric not checked, the batch `partial` with why.
        #[test]
        fn a_partial_answer_leaves_out_tweets_and_metrics() {
            let job = totals_job(&[11, 12, 13], &FAV_RT);
            let a = answer(
                &job,
                r#"{"by_tweet": {"11": {"favorites": "3", "retweets": "4"},
                                 "12": {"favorites": "5"}}}"#,
                &HashMap::new(),
            );
            assert_eq!(a.outcome, BatchOutcome::Partial);
            let w = totals(&a);
            assert_eq!(w.values.len(), 3);
            assert!(
                !w.values
                    .iter()
                    .any(|(t, m, _)| *t == id(12) && *m == Metric::Retweets)
            );
            assert_eq!(w.checked, vec![id(11)]);
            let why = "the answer left out 1 of the 3 Tweets asked (13) and left out 1 Tweet \
                       metrics (12 retweets): nothing stored for them, asked again next run";
            assert_eq!(a.shortfall.as_deref(), Some(why));
            assert_eq!(a.error.as_deref(), Some(why));
        }

        /// An answer that names none of the Tweets asked fails the batch.
        #[test]
        fn an_answer_naming_nothing_fails() {
            let job = totals_job(&[11, 12], &FAV_RT);
            let a = answer(&job, r#"{"by_tweet": {}}"#, &HashMap::new());
            assert_eq!(a.outcome, BatchOutcome::Failed);
            assert!(totals(&a).values.is_empty() && totals(&a).checked.is_empty());
            assert!(
                a.error
                    .unwrap()
                    .contains("left out 2 of the 2 Tweets asked")
            );
        }

        /// Unavailable Tweets are marked with the API's words; the batch is `partial`, and the
        /// Tweets that answered are stored and checked.
        #[test]
        fn unavailable_tweets_are_marked() {
            let job = totals_job(&[11, 12], &FAV_RT);
            let a = answer(
                &job,
                r#"{"errors": ["1 Tweet ID(s) are unavailable"], "unavailable_tweet_ids": ["12"],
                    "by_tweet": {"11": {"favorites": "3", "retweets": "4"}}}"#,
                &HashMap::new(),
            );
            assert_eq!(a.outcome, BatchOutcome::Partial);
            assert_eq!(a.shortfall, None);
            assert_eq!(a.error.as_deref(), Some("1 Tweet ID(s) are unavailable"));
            let w = totals(&a);
            assert_eq!(w.checked, vec![id(11)]);
            assert_eq!(
                w.status_changes,
                vec![(
                    id(12),
                    TweetStatus::Unavailable,
                    Some("1 Tweet ID(s) are unavailable".into())
                )]
            );
        }

        /// Metrics an `unsupported_*` list refuses are answered by the list: recorded as
        /// unsupported, not missing; a Tweet whose every asked metric is refused is answered too.
        #[test]
        fn unsupported_metrics_are_answered_by_their_lists() {
            let job = totals_job(&[11, 12], &[Metric::Impressions, Metric::VideoViews]);
            let a = answer(
                &job,
                r#"{"unsupported_for_impressions_engagements_tweet_ids": ["11", "12"],
                    "unsupported_for_video_views_tweet_ids": ["12"],
                    "by_tweet": {"11": {"impressions": "0", "video_views": "9"}}}"#,
                &HashMap::new(),
            );
            assert_eq!(a.outcome, BatchOutcome::Partial);
            assert_eq!(a.shortfall, None);
            let w = totals(&a);
            // 11's impressions read 0 and mean "not measured": not a value.
            assert_eq!(w.values, vec![(id(11), Metric::VideoViews, 9)]);
            assert_eq!(w.checked, vec![id(11), id(12)]);
            assert_eq!(
                w.unsupported,
                vec![
                    (id(11), Metric::Impressions),
                    (id(12), Metric::Impressions),
                    (id(12), Metric::VideoViews),
                ]
            );
        }

        /// A Tweet that answers again after being marked is active again; one forbidden to its
        /// owner only once the owner's token answers for it.
        #[test]
        fn a_tweet_that_answers_again_is_active_again() {
            let state = |status| TweetState {
                status,
                status_checked_at: Some(1),
                totals_checked_at: None,
                unsupported: 0,
                hourly_fetched_at: None,
            };
            let states = HashMap::from([
                (id(11), state(TweetStatus::Unavailable)),
                (id(12), state(TweetStatus::Forbidden)),
            ]);
            let body = r#"{"by_tweet": {"11": {"favorites": "1"}, "12": {"favorites": "2"}}}"#;
            let owner = answer(&totals_job(&[11, 12], &[Metric::Favorites]), body, &states);
            let active: Vec<TweetId> = totals(&owner)
                .status_changes
                .iter()
                .filter(|(_, s, _)| *s == TweetStatus::Active)
                .map(|(t, _, _)| *t)
                .collect();
            assert_eq!(active, vec![id(11), id(12)]);
            let bearer = Job {
                credential: Credential::Bearer,
                ..totals_job(&[11, 12], &[Metric::Favorites])
            };
            let public = answer(&bearer, body, &states);
            assert_eq!(
                totals(&public).status_changes,
                vec![(id(11), TweetStatus::Active, None)]
            );
        }

        /// A `/28hr` answer is bounded by the window it echoes, widened to whole hours; a pair
        /// named over all of it is covered, zero buckets are not written but counted received.
        #[test]
        fn an_echoed_window_bounds_a_series_answer() {
            let job = hourly_job(&[11], &[Metric::Favorites]);
            let a = answer(
                &job,
                r#"{"start": "2015-09-14T17:30:00Z", "end": "2015-09-14T19:10:00Z",
                    "by_hour": {"11": {"favorites": {"2015-09-14": {"17": "1", "18": "0", "19": "2"}}}}}"#,
                &HashMap::new(),
            );
            let w = series(&a);
            let at = |h: &str| {
                chrono::DateTime::parse_from_rfc3339(&format!("2015-09-14T{h}:00:00Z"))
                    .unwrap()
                    .timestamp()
            };
            assert_eq!((w.start, w.end), (at("17"), at("20")));
            assert_eq!(
                w.answered,
                vec![(id(11), Metric::Favorites, at("17"), at("20"))]
            );
            assert_eq!(
                w.values
                    .iter()
                    .map(|(_, _, h, v)| (h.secs(), *v))
                    .collect::<Vec<_>>(),
                vec![(at("17"), 1), (at("19"), 2)]
            );
            assert_eq!(w.covered, vec![id(11)]);
            assert_eq!(a.received, 3);
            assert_eq!(a.outcome, BatchOutcome::Ok);
        }

        /// Buckets with a hole between them say nothing certain of the hours in the hole: the
        /// pair is unanswered and the batch `partial`.
        #[test]
        fn a_series_with_a_hole_is_not_an_answer() {
            let job = hourly_job(&[11], &[Metric::Favorites, Metric::Retweets]);
            let a = answer(
                &job,
                r#"{"start": "2015-09-14T17:00:00Z", "end": "2015-09-14T20:00:00Z",
                    "by_hour": {"11": {"favorites": {"2015-09-14": {"17": "1", "19": "2"}},
                                       "retweets": {"2015-09-14": {"17": "0", "18": "0", "19": "3"}}}}}"#,
                &HashMap::new(),
            );
            let w = series(&a);
            assert_eq!(w.answered.len(), 1);
            assert_eq!(w.answered[0].1, Metric::Retweets);
            assert!(w.covered.is_empty());
            assert_eq!(a.outcome, BatchOutcome::Partial);
            assert!(
                a.shortfall.unwrap().contains(
                    "left out or gave incomplete series for 1 Tweet metrics (11 favorites)"
                )
            );
        }

        fn status(status: u16, errors: &[&str], unavailable: &[u64]) -> ApiError {
            ApiError::Status {
                status,
                errors: errors.iter().map(|e| e.to_string()).collect(),
                unavailable: unavailable.iter().map(|n| id(*n)).collect(),
            }
        }

        const NEW_FORM: &str = "Forbidden to access tweets: 1054424731825229824;";
        const OLD_FORM: &str = "Forbidden to access tweets for author id 18435372: 640026211712786432, 640026277605339136";

        /// A 403 to the owner's token names Tweets in both message forms: all are marked
        /// forbidden with the API's words, the rest of the job is sent again.
        #[test]
        fn a_403_names_tweets_in_both_message_forms() {
            let job = totals_job(
                &[
                    1054424731825229824,
                    640026211712786432,
                    640026277605339136,
                    99,
                ],
                &FAV_RT,
            );
            let error = status(403, &[NEW_FORM, OLD_FORM], &[]);
            let f = failed(&job, &error, &HashMap::new(), false, true, None);
            assert_eq!(f.outcome, BatchOutcome::Refused);
            assert!(f.resend);
            assert!(f.refusal.moved.is_empty());
            assert_eq!(
                f.refusal.marked,
                vec![
                    (
                        id(1054424731825229824),
                        TweetStatus::Forbidden,
                        Some(NEW_FORM.into())
                    ),
                    (
                        id(640026211712786432),
                        TweetStatus::Forbidden,
                        Some(OLD_FORM.into())
                    ),
                    (
                        id(640026277605339136),
                        TweetStatus::Forbidden,
                        Some(OLD_FORM.into())
                    ),
                ]
            );
            assert!(!f.refusal.names(&id(99)));
            assert_eq!(f.error, error.to_string());
            // Once the job has been sent again as often as it may, the refusal fails it.
            let last = failed(&job, &error, &HashMap::new(), false, false, None);
            assert_eq!((last.outcome, last.resend), (BatchOutcome::Failed, false));
        }

        /// "… for author id N" where N is another configured account's user id: its Tweets move
        /// to that account instead of being marked.
        #[test]
        fn a_403_naming_another_configured_author_moves_its_tweets() {
            let job = totals_job(&[1054424731825229824, 640026211712786432], &FAV_RT);
            let beta: Handle = "beta".parse().unwrap();
            let authors = HashMap::from([(18_435_372, beta.clone())]);
            let f = failed(
                &job,
                &status(403, &[NEW_FORM, OLD_FORM], &[]),
                &authors,
                false,
                true,
                None,
            );
            assert_eq!(f.refusal.moved, vec![(id(640026211712786432), beta)]);
            assert_eq!(f.refusal.marked.len(), 1);
            assert_eq!(f.refusal.marked[0].0, id(1054424731825229824));
        }

        /// A 400 listing `unavailable_tweet_ids` marks them protected; a 403 to the bearer token
        /// names nothing (it is not about the owner's access); a refused credential is
        /// `unauthorized`.
        #[test]
        fn refusals_by_status_and_credential() {
            let job = totals_job(&[11, 12], &FAV_RT);
            let protected = status(400, &["1 Tweet ID(s) are unavailable"], &[12, 77]);
            let f = failed(&job, &protected, &HashMap::new(), false, true, None);
            assert_eq!(
                f.refusal.marked,
                vec![(
                    id(12),
                    TweetStatus::Protected,
                    Some("1 Tweet ID(s) are unavailable".into())
                )]
            );
            let bearer = Job {
                credential: Credential::Bearer,
                ..job.clone()
            };
            let f = failed(
                &bearer,
                &status(403, &[NEW_FORM], &[]),
                &HashMap::new(),
                false,
                true,
                None,
            );
            assert!(f.refusal.is_empty() && !f.resend);
            assert_eq!(f.outcome, BatchOutcome::Failed);
            let f = failed(
                &job,
                &status(401, &["Unauthorized"], &[]),
                &HashMap::new(),
                true,
                true,
                None,
            );
            assert_eq!(f.outcome, BatchOutcome::Unauthorized);
        }

        /// A batch the breaker stopped names the connection failure behind it.
        #[test]
        fn an_unreachable_api_names_the_last_connection_failure() {
            let job = totals_job(&[11], &FAV_RT);
            let error = ApiError::Unreachable("the API cannot be reached".into());
            let cause = "http://127.0.0.1:9: Connection refused (os error 111)".to_string();
            let f = failed(
                &job,
                &error,
                &HashMap::new(),
                false,
                true,
                Some(cause.clone()),
            );
            assert_eq!(f.error, format!("connection failed: {cause}"));
            assert_eq!(f.outcome, BatchOutcome::Failed);
            let f = failed(&job, &error, &HashMap::new(), false, true, None);
            assert_eq!(f.error, "the API cannot be reached");
        }
    }
}
