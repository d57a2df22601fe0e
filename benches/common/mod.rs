//! What the benchmarks share: the time and seed of their generated inputs, and answers built
//! with the simulator's closed-form data in the simulator's layout. Each bench declares
//! `mod common;` (a folder, so that cargo does not take it for a bench of its own) and uses a
//! part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

use engagement_ingest::domain::{HOUR_SECS, Hour, Metric, TweetId};
use engagement_ingest::sim;

/// "Now" for every generated input: 2026-11-01T00:00Z.
pub const NOW: i64 = 1_793_491_200;
pub const SEED: u64 = 7;

/// `n` Tweets created `age_hours` (spread over the next hours) before NOW.
pub fn young_tweets(n: usize, age_hours: i64, salt: u32) -> Vec<TweetId> {
    (0..n)
        .map(|i| {
            let ms = (NOW - age_hours * HOUR_SECS) * 1000 + i as i64 * 997_000;
            TweetId::from_snowflake(ms, salt + i as u32)
        })
        .collect()
}

/// A dense series answer as the simulator writes it: Tweet → type → day → hour → "count".
pub fn series_body(tweets: &[TweetId], metrics: &[Metric], start: Hour, hours: i64) -> String {
    let mut out = String::new();
    let end = start.plus_hours(hours);
    write!(
        out,
        "{{\"start\":\"{start}\",\"end\":\"{end}\",\"by_hour\":{{"
    )
    .unwrap();
    for (ti, t) in tweets.iter().enumerate() {
        if ti > 0 {
            out.push(',');
        }
        write!(out, "\"{t}\":{{").unwrap();
        for (mi, m) in metrics.iter().enumerate() {
            if mi > 0 {
                out.push(',');
            }
            write!(out, "\"{m}\":{{").unwrap();
            let mut day = String::new();
            for h in 0..hours {
                let hour = start.plus_hours(h);
                let (d, hh) = hour.keys();
                if d != day {
                    if !day.is_empty() {
                        out.push_str("},");
                    }
                    write!(out, "\"{d}\":{{").unwrap();
                    day = d;
                } else {
                    out.push(',');
                }
                let v = sim::bucket(SEED, *t, *m, hour).max(0);
                write!(out, "\"{hh}\":\"{v}\"").unwrap();
            }
            out.push_str("}}");
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// A `/totals` answer: Tweet → type → "count".
pub fn totals_body(tweets: &[TweetId], metrics: &[Metric]) -> String {
    let mut out = String::from("{\"by_tweet\":{");
    for (ti, t) in tweets.iter().enumerate() {
        if ti > 0 {
            out.push(',');
        }
        write!(out, "\"{t}\":{{").unwrap();
        for (mi, m) in metrics.iter().enumerate() {
            if mi > 0 {
                out.push(',');
            }
            let v = sim::cumulative(SEED, *t, *m, NOW);
            write!(out, "\"{m}\":\"{v}\"").unwrap();
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}
