//! `report`: one self-contained HTML page of tables and inline SVG charts (drawn with plotters'
//! SVG backend, in [`charts`]) from the store's typed reads. The page references no script,
//! stylesheet, font or image, so it opens without a network; its only links are the Tweets'
//! own pages on x.com. This module only reads: it never writes the database, and where the page
//! goes is the caller's business.

mod charts;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::domain::{DAY_SECS, HOUR_SECS, Handle, Hour, JobKind, Metric, TweetId, iso_utc};
use crate::store::{
    AccountFigures, AccountsQuery, DailyQuery, Freshness, Owner, Store, StoreError, TopBasis,
    TopQuery, TopTweet,
};
use charts::{CHART_SIZE, Line, LineChart, Multiples, PALETTE};

/// How many Tweets the top table lists.
const TOP_TABLE: usize = 10;
/// How many of them get a curve of their first hours.
const TOP_CURVES: usize = 5;
/// The curves cover each Tweet's first hours after it was posted.
const CURVE_HOURS: i64 = 72;
/// Small multiples: at most this many panels side by side.
const PANEL_COLUMNS: usize = 4;
const NO_DATA: &str = "<p class=\"empty\">No data in this period.</p>\n";

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start of the period, Unix seconds.
    pub since: i64,
    /// End of the period (exclusive), Unix seconds; at most `now`.
    pub until: i64,
    /// The generation time, Unix seconds: what ages count from.
    pub now: i64,
    /// Only this account's Tweets (any letter case).
    pub owner: Option<Handle>,
    /// How the page names the database (its path).
    pub database: String,
}

/// A rendered page.
#[derive(Debug)]
pub struct Page {
    pub html: String,
    /// How many SVG charts the page holds (each panel of small multiples is one).
    pub charts: usize,
}

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the database: {}", driver_message(.0))]
    Store(#[from] StoreError),
    #[error("cannot draw the chart {chart:?}: {message}")]
    Chart { chart: String, message: String },
}

/// A read's error as the database words it.
fn driver_message(e: &StoreError) -> String {
    match e {
        StoreError::Db(e) => e.to_string(),
        e => e.to_string(),
    }
}

/// Renders the page for `options` from `store`. All reads share one snapshot, so the page is
/// one consistent state even while a writer commits batches (WAL).
pub fn render(store: &Store, options: &Options) -> Result<Page, ReportError> {
    let data = store.snapshot(|store| Data::load(store, options))?;
    let mut page = Html::default();
    page.header(&data, options);
    page.accounts(&data);
    page.daily(&data)?;
    page.top(&data)?;
    page.freshness(&data, options.now)?;
    Ok(page.finish())
}

/// `text` with the five characters that matter to HTML (`& < > " '`) replaced by entities, safe
/// inside elements and quoted attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A Tweet's ID as a link to its page on X.
fn tweet_link(tweet: TweetId) -> String {
    format!("<a href=\"https://x.com/i/status/{tweet}\">{tweet}</a>")
}

/// What the page shows, read in one go.
struct Data {
    tweets: i64,
    owned: i64,
    accounts: Vec<String>,
    /// Per account with listed Tweets, its figures over the period.
    figures: Vec<AccountFigures>,
    /// The UTC days of the period, as days since the epoch.
    days: std::ops::RangeInclusive<i64>,
    daily_impressions: BTreeMap<String, BTreeMap<i64, i64>>,
    daily_engagements: BTreeMap<String, BTreeMap<i64, i64>>,
    top: Vec<TopTweet>,
    /// Cumulative impressions by hours since posting, for the first of `top`; `None` when no
    /// bucket of the Tweet's first hours is stored.
    curves: Vec<Option<Vec<(f64, f64)>>>,
    freshness: Vec<Freshness>,
}

impl Data {
    fn load(store: &Store, o: &Options) -> Result<Data, StoreError> {
        let owner = o
            .owner
            .as_ref()
            .map_or(Owner::Any, |h| Owner::AnyCase(h.as_str()));
        let counts = store.tweet_counts(owner)?;
        // The Tweets with the most impressions in the period (sums of their hourly buckets),
        // with their engagements over the same hours.
        let top = store.top_tweets(&TopQuery {
            metric: Metric::Impressions,
            since: o.since,
            until: Some(o.until),
            owner,
            limit: TOP_TABLE,
            basis: TopBasis::Series,
            only_positive: true,
        })?;
        let curves = top
            .iter()
            .take(TOP_CURVES)
            .map(|t| first_hours(store, t.tweet, t.created_at, o.until))
            .collect::<Result<_, _>>()?;
        let owners: Vec<String> = o.owner.iter().map(|h| h.to_string()).collect();
        let figures = store.account_figures(&AccountsQuery {
            since: o.since,
            until: o.until,
            now: o.now,
            owners: &owners,
        })?;
        let freshness = JobKind::ALL
            .into_iter()
            .map(|kind| store.freshness(kind))
            .collect::<Result<_, _>>()?;
        Ok(Data {
            tweets: counts.listed,
            owned: counts.owned,
            accounts: store.owners(owner)?,
            figures,
            days: o.since.div_euclid(DAY_SECS)..=(o.until - 1).div_euclid(DAY_SECS),
            daily_impressions: daily(store, Metric::Impressions, o, owner)?,
            daily_engagements: daily(store, Metric::Engagements, o, owner)?,
            top,
            curves,
            freshness,
        })
    }
}

/// Per account and UTC day (days since the epoch), the sum of `metric`'s hourly buckets that
/// start inside the period.
fn daily(
    store: &Store,
    metric: Metric,
    o: &Options,
    owner: Owner<'_>,
) -> Result<BTreeMap<String, BTreeMap<i64, i64>>, StoreError> {
    let mut out: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
    for p in store.daily(&DailyQuery {
        metric,
        since: o.since,
        until: Some(o.until),
        owner,
    })? {
        out.entry(p.owner).or_default().insert(p.day, p.value);
    }
    Ok(out)
}

/// Cumulative impressions of a Tweet at the end of each of its first hours (ended by `until`),
/// as (hours since posting, impressions), from (0, 0). Hours not stored count as zero, as they
/// do inside fetched coverage; `None` when none of these hours is stored at all.
fn first_hours(
    store: &Store,
    tweet: TweetId,
    created_at: i64,
    until: i64,
) -> Result<Option<Vec<(f64, f64)>>, StoreError> {
    let first = Hour::floor(created_at);
    let end = created_at + CURVE_HOURS * HOUR_SECS;
    let buckets: BTreeMap<i64, i64> = store
        .buckets(tweet, Metric::Impressions, first.secs(), end)?
        .into_iter()
        .map(|b| (b.hour, b.value))
        .collect();
    if buckets.is_empty() {
        return Ok(None);
    }
    let mut points = vec![(0.0, 0.0)];
    let mut total: i64 = 0;
    let mut hour = first;
    while hour.secs() < end && hour.plus_hours(1).secs() <= until {
        total = total.saturating_add(buckets.get(&hour.secs()).copied().unwrap_or(0));
        let at = (hour.plus_hours(1).secs().min(end) - created_at) as f64 / HOUR_SECS as f64;
        points.push((at, total as f64));
        hour = hour.plus_hours(1);
    }
    Ok(Some(points))
}

/// The page being written, and how many charts it holds.
#[derive(Default)]
struct Html {
    body: String,
    charts: usize,
}

impl Html {
    fn header(&mut self, data: &Data, o: &Options) {
        let days = (o.until - o.since) as f64 / DAY_SECS as f64;
        let _ = writeln!(
            self.body,
            "<h1>Engagement report</h1>\n<p class=\"period\">{} to {} UTC \
             <span class=\"note\">({} days)</span></p>",
            escape_html(&short_utc(o.since)),
            escape_html(&short_utc(o.until)),
            short_number(days)
        );
        let account = match &o.owner {
            Some(h) => format!("@{h}"),
            None => "all".to_string(),
        };
        // Many accounts are named in the table below, not here.
        let accounts = match data.accounts.len() {
            0 => "none".to_string(),
            1..=10 => data.accounts.join(", "),
            _ => "one row each in the table below".to_string(),
        };
        let rows = [
            ("Database", o.database.clone()),
            ("Account", account),
            (
                "Tweets",
                format!(
                    "{} listed: {} owned, {} public",
                    data.tweets,
                    data.owned,
                    data.tweets - data.owned
                ),
            ),
            ("Accounts", format!("{}: {accounts}", data.accounts.len())),
            (
                "Generated",
                format!(
                    "{} by engagement-ingest {}",
                    iso_utc(o.now),
                    env!("CARGO_PKG_VERSION")
                ),
            ),
        ];
        self.body.push_str("<dl class=\"meta\">\n");
        for (term, value) in rows {
            let _ = writeln!(self.body, "<dt>{term}</dt><dd>{}</dd>", escape_html(&value));
        }
        self.body.push_str("</dl>\n");
    }

    /// One row per account: its Tweets and figures over the period, with the coverage behind
    /// them, and a row of totals.
    fn accounts(&mut self, data: &Data) {
        self.body.push_str(
            "<h2>Per account</h2>\n<p class=\"note\">Sums of the hourly buckets inside the \
             period. Tweets tracked: listed and posted before the period's end; of those, the ones posted \
             in the period. Coverage: the Tweet-hours of the period known from fetched series, \
             of all its Tweet-hours; below 100% the sums leave unknown hours out (they are not \
             zeros).</p>\n",
        );
        if data.figures.is_empty() {
            self.body.push_str(NO_DATA);
            return;
        }
        self.body.push_str(
            "<table class=\"accounts\">\n<thead><tr><th>account</th><th class=\"num\">Tweets tracked</th>\
             <th class=\"num\">posted in period</th><th class=\"num\">impressions</th>\
             <th class=\"num\">engagements</th><th class=\"num\">engagement rate</th>\
             <th class=\"num\">favorites</th><th class=\"num\">retweets</th>\
             <th class=\"num\">replies</th><th class=\"num\">video views</th>\
             <th class=\"num\">coverage</th></tr></thead>\n<tbody>\n",
        );
        let mut total = AccountFigures {
            owner: "all accounts".to_string(),
            ..AccountFigures::default()
        };
        for f in &data.figures {
            self.account_row("td", &format!("@{}", f.owner), f);
            // Saturating: a hostile API's counts near i64::MAX must not end the page.
            let add = |a: &mut i64, b: i64| *a = a.saturating_add(b);
            add(&mut total.tweets_tracked, f.tweets_tracked);
            add(&mut total.tweets_posted, f.tweets_posted);
            add(&mut total.hours, f.hours);
            add(&mut total.hours_known, f.hours_known);
            for (metric, sum) in &f.sums {
                add(total.sums.entry(*metric).or_default(), *sum);
            }
        }
        self.body.push_str("</tbody>\n");
        if data.figures.len() > 1 {
            self.body.push_str("<tfoot>\n");
            self.account_row("th", "all accounts", &total);
            self.body.push_str("</tfoot>\n");
        }
        self.body.push_str("</table>\n");
    }

    /// One row of the per-account table, in `cell` elements (`td`, or `th` for totals).
    fn account_row(&mut self, cell: &str, name: &str, f: &AccountFigures) {
        let coverage = if f.hours > 0 {
            format!(
                "{}% <span class=\"note\">{}/{}&nbsp;h</span>",
                short_percent(f.hours_known, f.hours),
                f.hours_known,
                f.hours
            )
        } else {
            "n/a".to_string()
        };
        let class = if f.is_complete() {
            "num"
        } else {
            "num partial"
        };
        let _ = write!(self.body, "<tr><{cell}>{}</{cell}>", escape_html(name));
        for value in [
            f.tweets_tracked,
            f.tweets_posted,
            f.sum(Metric::Impressions),
            f.sum(Metric::Engagements),
        ] {
            let _ = write!(self.body, "<{cell} class=\"num\">{value}</{cell}>");
        }
        let _ = write!(
            self.body,
            "<{cell} class=\"num\">{}</{cell}>",
            rate(f.sum(Metric::Engagements), f.sum(Metric::Impressions))
        );
        for metric in [
            Metric::Favorites,
            Metric::Retweets,
            Metric::Replies,
            Metric::VideoViews,
        ] {
            let _ = write!(
                self.body,
                "<{cell} class=\"num\">{}</{cell}>",
                f.sum(metric)
            );
        }
        let _ = writeln!(
            self.body,
            "<{cell} class=\"{class}\">{coverage}</{cell}></tr>"
        );
    }

    /// Small multiples per metric: one panel per account, every panel on the same y axis.
    fn daily(&mut self, data: &Data) -> Result<(), ReportError> {
        let x = *data.days.start() as f64
            ..(*data.days.end() as f64).max(*data.days.start() as f64 + 1.0);
        let day_label = |v: f64| {
            if v.fract() != 0.0 {
                return String::new();
            }
            chrono::DateTime::from_timestamp(v as i64 * DAY_SECS, 0)
                .map(|d| d.format("%m-%d").to_string())
                .unwrap_or_default()
        };
        let columns = data.accounts.len().clamp(1, PANEL_COLUMNS);
        let width = CHART_SIZE.0 / columns as u32;
        let size = (width, if columns == 1 { 300 } else { 200 });
        for (metric, values, color) in [
            (Metric::Impressions, &data.daily_impressions, PALETTE[0]),
            (Metric::Engagements, &data.daily_engagements, PALETTE[1]),
        ] {
            let _ = writeln!(
                self.body,
                "<h2>Daily {metric} per account</h2>\n<p class=\"note\">Sums of the hourly \
                 buckets per UTC day (month-day); the first and the last day of the period may \
                 be partial. An hour without a stored bucket counts as zero. All panels share \
                 one y axis; each is titled with the account's total.</p>"
            );
            if values.is_empty() {
                self.body.push_str(NO_DATA);
                continue;
            }
            // Every account gets a panel, zero on days without buckets.
            let series: Vec<(String, Vec<(f64, f64)>)> = data
                .accounts
                .iter()
                .map(|account| {
                    let days = values.get(account);
                    let points = data
                        .days
                        .clone()
                        .map(|day| {
                            let v = days.and_then(|d| d.get(&day)).copied().unwrap_or(0);
                            (day as f64, v as f64)
                        })
                        .collect();
                    let total: i64 =
                        days.map_or(0, |d| d.values().fold(0, |a, v| a.saturating_add(*v)));
                    (
                        format!("@{account}: {}", short_number(total as f64)),
                        points,
                    )
                })
                .collect();
            let multiples = Multiples {
                x: x.clone(),
                y_max: charts::y_top(series.iter().flat_map(|s| s.1.iter().map(|p| p.1))),
                x_label: &day_label,
                size,
                color,
                markers: data.days.clone().count() <= 45,
            };
            let _ = writeln!(
                self.body,
                "<div class=\"multiples\" style=\"grid-template-columns: repeat({columns}, 1fr)\">"
            );
            for (title, points) in &series {
                let svg = charts::panel(&multiples, title, points)?;
                self.chart(&svg, &format!("Daily {metric} of {title}"));
            }
            self.body.push_str("</div>\n");
        }
        Ok(())
    }

    fn top(&mut self, data: &Data) -> Result<(), ReportError> {
        self.body.push_str(
            "<h2>Top Tweets by impressions in the period</h2>\n<p class=\"note\">Sums of the \
             hourly buckets inside the period. Engagement rate = engagements / impressions. \
             Each Tweet ID links to the Tweet on x.com.</p>\n",
        );
        if data.top.is_empty() {
            self.body.push_str(NO_DATA);
            return Ok(());
        }
        self.body.push_str(
            "<table>\n<thead><tr><th>#</th><th>Tweet</th><th>account</th><th>posted (UTC)</th>\
             <th class=\"num\">impressions</th><th class=\"num\">engagements</th>\
             <th class=\"num\">engagement rate</th></tr></thead>\n<tbody>\n",
        );
        for (i, t) in data.top.iter().enumerate() {
            // Ranked by impressions over the period's series: every Tweet has both sums.
            let (impressions, engagements) = (t.value, t.engagements.unwrap_or(0));
            let _ = writeln!(
                self.body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                i + 1,
                tweet_link(t.tweet),
                escape_html(t.owner.as_deref().unwrap_or("(public)")),
                escape_html(&short_utc(t.created_at)),
                impressions,
                engagements,
                rate(engagements, impressions)
            );
        }
        self.body.push_str("</tbody>\n</table>\n");

        let mut lines = Vec::new();
        let mut missing = Vec::new();
        for (t, curve) in data.top.iter().zip(&data.curves) {
            let label = match &t.owner {
                Some(owner) => format!("{} (@{owner})", t.tweet),
                None => t.tweet.to_string(),
            };
            match curve {
                Some(points) => lines.push(Line {
                    label,
                    points: points.clone(),
                }),
                None => missing.push(label),
            }
        }
        if !missing.is_empty() {
            let _ = writeln!(
                self.body,
                "<p class=\"note\">No hourly data stored for the first {CURVE_HOURS} hours of: {}.</p>",
                escape_html(&missing.join(", "))
            );
        }
        if lines.is_empty() {
            return Ok(());
        }
        let title = format!(
            "Cumulative impressions in the first {CURVE_HOURS} hours after posting (top {})",
            lines.len()
        );
        let hours = |v: f64| format!("{v}");
        let svg = charts::line_chart(&LineChart {
            title: &title,
            x: 0.0..CURVE_HOURS as f64,
            x_desc: "hours since posting",
            y_desc: "impressions (cumulative)",
            x_label: &hours,
            lines: &lines,
            markers: false,
        })?;
        self.chart(&svg, &title);
        Ok(())
    }

    fn freshness(&mut self, data: &Data, now: i64) -> Result<(), ReportError> {
        self.body.push_str(
            "<h2>Freshness</h2>\n<p class=\"note\">The last successful run (status ok) of each \
             kind, and the last run of any outcome.</p>\n<table>\n<thead><tr><th>kind</th>\
             <th>last success (UTC)</th><th>age</th><th>last run (UTC)</th><th>its status</th>\
             </tr></thead>\n<tbody>\n",
        );
        for f in &data.freshness {
            let (ok_at, age) = match f.last_ok {
                Some(t) => (iso_utc(t), format_age(now - t)),
                None => ("never".to_string(), "n/a".to_string()),
            };
            let (run_at, status) = match &f.last_run {
                Some((t, status)) => (iso_utc(*t), status.as_str().to_string()),
                None => ("never".to_string(), "n/a".to_string()),
            };
            let _ = writeln!(
                self.body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.kind,
                escape_html(&ok_at),
                escape_html(&age),
                escape_html(&run_at),
                escape_html(&status)
            );
        }
        self.body.push_str("</tbody>\n</table>\n");
        if data.freshness.iter().all(|f| f.last_ok.is_none()) {
            self.body
                .push_str("<p class=\"empty\">No successful run yet.</p>\n");
            return Ok(());
        }
        let title = "Time since the last successful run of each kind";
        let svg = charts::freshness_chart(title, &data.freshness, now)?;
        self.chart(&svg, title);
        Ok(())
    }

    /// Adds an SVG chart, labelled for screen readers.
    fn chart(&mut self, svg: &str, title: &str) {
        let labelled = svg.replacen(
            "<svg ",
            &format!("<svg role=\"img\" aria-label=\"{}\" ", escape_html(title)),
            1,
        );
        self.body.push_str("<figure>\n");
        self.body.push_str(&labelled);
        self.body.push_str("</figure>\n");
        self.charts += 1;
    }

    fn finish(self) -> Page {
        let mut html = String::with_capacity(self.body.len() + 2048);
        html.push_str(concat!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            // Nothing may be fetched: the page is all there is.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<title>Engagement report</title>\n<style>\n",
            "body { font-family: system-ui, sans-serif; color: #222; margin: 1.5rem auto; max-width: 1100px; padding: 0 1rem; }\n",
            "h1 { font-size: 1.6rem; margin-bottom: .3rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }\n",
            "p.period { font-size: 1.15rem; font-weight: 600; margin-top: 0; }\n",
            "dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }\n",
            "dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; overflow-wrap: anywhere; }\n",
            "table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }\n",
            "th, td { border-bottom: 1px solid #e4e4e4; padding: .25rem .6rem; text-align: left; white-space: nowrap; }\n",
            ".num { text-align: right; } .partial { color: #9a5b00; }\n",
            "table.accounts th, table.accounts td { padding: .2rem .3rem; font-size: .85rem; }\n",
            "table.accounts thead th { white-space: normal; vertical-align: bottom; }\n",
            "tfoot th { border-top: 2px solid #bbb; text-align: right; } tfoot th:first-child { text-align: left; }\n",
            ".note { color: #555; font-size: .9rem; font-weight: normal; } .empty { font-style: italic; color: #a33; }\n",
            "figure { margin: .5rem 0; } svg { max-width: 100%; height: auto; }\n",
            ".multiples { display: grid; gap: 0; } .multiples figure { margin: 0; }\n",
            "a { color: #1d5fa0; }\n",
            "</style>\n</head>\n<body>\n",
        ));
        html.push_str(&self.body);
        html.push_str("</body>\n</html>\n");
        Page {
            html,
            charts: self.charts,
        }
    }
}

/// `part / whole` as a percentage with one decimal, `100` only when whole.
fn short_percent(part: i64, whole: i64) -> String {
    if part >= whole {
        return "100".to_string();
    }
    // Never rounds up to 100 when an hour is missing.
    let tenths = (1000 * part / whole.max(1)) as f64 / 10.0;
    format!("{tenths:.1}")
}

/// `part / whole` as a percentage with two decimals, `n/a` without a whole.
fn rate(part: i64, whole: i64) -> String {
    if whole > 0 {
        format!("{:.2}%", 100.0 * part as f64 / whole as f64)
    } else {
        "n/a".to_string()
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC), for tables.
fn short_utc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// A duration in seconds as a person reads it: `45 s ago`, `12 min ago`, `5 h ago`, `3 d ago`.
fn format_age(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 60 {
        format!("{secs} s ago")
    } else if secs < 90 * 60 {
        format!("{} min ago", secs / 60)
    } else if secs < 2 * DAY_SECS {
        format!("{} h ago", (secs + HOUR_SECS / 2) / HOUR_SECS)
    } else {
        format!("{} d ago", (secs + DAY_SECS / 2) / DAY_SECS)
    }
}

/// An axis value in few characters: `950`, `12.5k`, `3M`.
fn short_number(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = format!("{scaled:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunStatus;
    use crate::store::Store;

    const NOW: i64 = 1_793_404_800; // 2026-10-31T00:00:00Z

    fn options(since: i64, owner: Option<&str>) -> Options {
        Options {
            since,
            until: NOW,
            now: NOW,
            owner: owner.map(|h| h.parse().unwrap()),
            database: "test.sqlite".to_string(),
        }
    }

    /// A migrated database in a temporary folder.
    fn database() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.sqlite")).unwrap();
        (dir, store)
    }

    #[test]
    fn escape_html_neutralises_markup_and_quotes() {
        assert_eq!(
            escape_html(r#"<script>alert('x')</script> & "q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape_html("plain café"), "plain café");
    }

    /// A path chosen to break the page, shown as text.
    #[test]
    fn the_database_path_is_escaped_in_the_page() {
        let (_dir, store) = database();
        let mut o = options(NOW - 7 * DAY_SECS, None);
        o.database = "/tmp/<img src=x onerror=alert(1)>.sqlite".to_string();
        let page = render(&store, &o).unwrap();
        assert!(!page.html.contains("<img"), "{}", page.html);
        assert!(
            page.html
                .contains("&lt;img src=x onerror=alert(1)&gt;.sqlite")
        );
    }

    #[test]
    fn an_empty_database_renders_a_page_that_says_so() {
        let (_dir, store) = database();
        let page = render(&store, &options(NOW - 30 * DAY_SECS, None)).unwrap();
        assert_eq!(page.charts, 0);
        assert!(!page.html.contains("<svg"));
        assert!(page.html.contains("No data in this period."));
        assert!(page.html.contains("No successful run yet."));
        assert!(page.html.ends_with("</html>\n"));
    }

    /// Buckets before the period, and another account's with `--owner`, are not counted; a
    /// Tweet's curve is cumulative from its posting.
    #[test]
    fn the_period_and_the_owner_bound_what_is_counted() {
        let (_dir, store) = database();
        let created = NOW - 3 * DAY_SECS - 1800; // half past the hour
        for (id, owner) in [(101_i64, "acme"), (202, "bob")] {
            store.put_tweet(id, Some(owner), created);
        }
        let first = Hour::floor(created).secs();
        let bucket = |id: i64, metric: Metric, hour: i64, value: i64| {
            store.put_bucket(id, metric, hour, value, NOW);
        };
        bucket(101, Metric::Impressions, first, 1000);
        bucket(101, Metric::Impressions, first + 2 * HOUR_SECS, 30);
        bucket(101, Metric::Engagements, first + 2 * HOUR_SECS, 3);
        bucket(202, Metric::Impressions, first + 2 * HOUR_SECS, 500);

        // The period starts after acme's first bucket.
        let o = options(first + HOUR_SECS, None);
        let data = Data::load(&store, &o).unwrap();
        let top: Vec<(i64, i64, i64)> = data
            .top
            .iter()
            .map(|t| (t.tweet.get() as i64, t.value, t.engagements.unwrap_or(0)))
            .collect();
        assert_eq!(top, vec![(202, 500, 0), (101, 30, 3)]);
        let acme_curve = data.curves[1].as_ref().unwrap();
        assert_eq!(acme_curve[0], (0.0, 0.0));
        assert_eq!(
            acme_curve[1],
            (0.5, 1000.0),
            "the first hour ends 30 min in"
        );
        assert_eq!(acme_curve[2], (1.5, 1000.0));
        assert_eq!(acme_curve[3], (2.5, 1030.0));
        assert_eq!(acme_curve.last().unwrap(), &(72.0, 1030.0));

        let data = Data::load(&store, &options(first - HOUR_SECS, Some("acme"))).unwrap();
        assert_eq!(data.accounts, vec!["acme".to_string()]);
        let days: i64 = data.daily_impressions["acme"].values().sum();
        assert_eq!(days, 1030);
        assert!(!data.daily_impressions.contains_key("bob"));
        let page = render(&store, &options(first - HOUR_SECS, Some("acme"))).unwrap();
        assert_eq!(
            page.charts, 3,
            "two daily charts and the curves; no run yet"
        );
        assert!(page.html.contains("<td class=\"num\">1030</td>"));
    }

    /// Freshness reads whole kind names from `runs.kinds`, and only `ok` runs count as success.
    #[test]
    fn freshness_is_the_last_ok_run_of_each_kind() {
        let (_dir, store) = database();
        for (kinds, started, status) in [
            ("totals,hourly", NOW - 7200, "ok"),
            ("totals", NOW - 600, "partial"),
            ("historical", NOW - 300, "failed"),
        ] {
            store.put_run(kinds, started, started + 60, status);
        }
        let f: Vec<_> = JobKind::ALL
            .into_iter()
            .map(|k| store.freshness(k).unwrap())
            .collect();
        assert_eq!(f[0].last_ok, Some(NOW - 7140));
        assert_eq!(f[0].last_run, Some((NOW - 600, RunStatus::Partial)));
        assert_eq!(f[1].last_ok, Some(NOW - 7140));
        assert_eq!(f[2].last_ok, None);
        assert_eq!(f[2].last_run, Some((NOW - 300, RunStatus::Failed)));
        let page = render(&store, &options(NOW - DAY_SECS, None)).unwrap();
        assert_eq!(page.charts, 1);
        assert!(page.html.contains("totals: 2 h ago"), "{}", page.html);
        assert!(page.html.contains("historical: never succeeded"));
    }

    /// WAL: a reader renders while a writer holds an open write transaction, and sees the last
    /// committed state, not the writer's uncommitted rows.
    #[test]
    fn a_page_renders_while_a_writer_holds_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let writer = Store::open(&path).unwrap();
        writer.begin_write();
        writer.put_run("totals", NOW - 60, NOW - 60, "ok");
        let reader = Store::open_read_only(&path).unwrap();
        let page = render(&reader, &options(NOW - DAY_SECS, None)).unwrap();
        assert!(page.html.contains("No successful run yet."));
        writer.commit_write();
        let page = render(&reader, &options(NOW - DAY_SECS, None)).unwrap();
        assert!(page.html.contains("totals: 1 min ago"), "{}", page.html);
    }

    /// A coverage one hour short of whole never reads 100%.
    #[test]
    fn coverage_percentages_never_round_a_hole_up_to_whole() {
        assert_eq!(short_percent(2999, 3000), "99.9");
        assert_eq!(short_percent(1, 3), "33.3");
        assert_eq!(short_percent(3000, 3000), "100");
        assert_eq!(rate(5, 200), "2.50%");
        assert_eq!(rate(5, 0), "n/a");
    }

    /// A chart with more lines than distinct colours is refused rather than repeating one.
    #[test]
    fn a_line_chart_never_repeats_a_colour() {
        let line = |i: usize| Line {
            label: format!("line {i}"),
            points: vec![(0.0, i as f64), (1.0, 2.0 * i as f64)],
        };
        let label = |v: f64| format!("{v}");
        let chart = |n: usize| {
            let lines: Vec<Line> = (0..n).map(line).collect();
            charts::line_chart(&LineChart {
                title: "t",
                x: 0.0..1.0,
                x_desc: "x",
                y_desc: "y",
                x_label: &label,
                lines: &lines,
                markers: false,
            })
        };
        let svg = chart(PALETTE.len()).unwrap();
        for color in PALETTE {
            let hex = format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2);
            assert_eq!(
                svg.matches(&hex).count(),
                2,
                "{hex}: its line and its legend row"
            );
        }
        assert!(svg.contains("line 9") && !svg.contains("more"));
        let err = chart(PALETTE.len() + 1).unwrap_err().to_string();
        assert!(
            err.contains("11 lines, but only 10 distinct colours"),
            "{err}"
        );
    }

    /// The per-account table: a row per account with its sums, and the totals.
    #[test]
    fn the_account_table_has_a_row_per_account_and_the_totals() {
        let (_dir, store) = database();
        let created = NOW - 2 * DAY_SECS;
        store.put_tweet(101, Some("acme"), created);
        store.put_tweet(202, Some("bob"), created);
        let hour = Hour::floor(created).secs() + HOUR_SECS;
        store.put_bucket(101, Metric::Impressions, hour, 400, NOW);
        store.put_bucket(101, Metric::Engagements, hour, 10, NOW);
        store.put_bucket(202, Metric::Impressions, hour, 100, NOW);
        let page = render(&store, &options(NOW - 7 * DAY_SECS, None)).unwrap();
        let table = page
            .html
            .split_once("<table class=\"accounts\">")
            .unwrap()
            .1
            .split_once("</table>")
            .unwrap()
            .0;
        assert!(
            table.contains(
                "<tr><td>@acme</td><td class=\"num\">1</td><td class=\"num\">1</td>\
                 <td class=\"num\">400</td><td class=\"num\">10</td><td class=\"num\">2.50%</td>"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "<tr><th>all accounts</th><th class=\"num\">2</th><th class=\"num\">2</th>\
                 <th class=\"num\">500</th><th class=\"num\">10</th><th class=\"num\">2.00%</th>"
            ),
            "{table}"
        );
    }

    #[test]
    fn ages_and_axis_numbers_read_short() {
        assert_eq!(format_age(-5), "0 s ago");
        assert_eq!(format_age(59), "59 s ago");
        assert_eq!(format_age(12 * 60 + 5), "12 min ago");
        assert_eq!(format_age(5 * HOUR_SECS + 1200), "5 h ago");
        assert_eq!(format_age(3 * DAY_SECS), "3 d ago");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(950.0), "950");
        assert_eq!(short_number(12_500.0), "12.5k");
        assert_eq!(short_number(3_000_000.0), "3M");
        assert_eq!(short_number(2.5), "2.5");
    }
}
