//! The parse limit (issue 16): how close the worker's reading of an answer comes to what
//! inflating it costs anyway. For three recorded answers, gzipped once, it prints side by side,
//! in MB/s of inflated bytes:
//!
//! - (a) gzip decompression alone, the way the client inflates (`flate2`, chunks of 16 KiB as
//!   they arrive from the network, into a growing buffer);
//! - (b) decompression plus a plain byte scan: counting the `"` of the body with `memchr`;
//! - (c) the worker's full path: decompression plus the parse into rows the pipeline makes
//!   (`parse_nonzero_buckets` for the series, `parse_lifetime` for `/totals`, with the client's
//!   groupings);
//!
//! and the ratio of (c)'s time to (b)'s against the goal "within 2x". `cargo bench --bench
//! limit`. The answers are built here, deterministically, with the simulator's closed-form data
//! and in the simulator's layout (as `benches/stages.rs` does): a dense `/historical` answer of
//! 25 Tweets x 17 metrics x 28 days x 24 hours, a `/28hr` answer of 25 Tweets x 17 metrics x 29
//! hours, a `/totals` answer of 250 Tweets x 7 metrics. Each figure is the median of repeated
//! runs; they are noisy when other work shares the machine, so compare them within one run.

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use engagement_ingest::client::grouping;
use engagement_ingest::domain::{Endpoint, HOUR_SECS, Hour, JobKind};
use engagement_ingest::parse;

mod common;
use common::{NOW, series_body, totals_body, young_tweets};

/// Network chunks as the client receives them.
const CHUNK: usize = 16 * 1024;

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// Inflates `gz` as the client does: chunk by chunk into a gzip decoder writing into memory.
fn inflate(gz: &[u8]) -> Vec<u8> {
    let mut d = flate2::write::MultiGzDecoder::new(Vec::new());
    for chunk in gz.chunks(CHUNK) {
        d.write_all(chunk).unwrap();
    }
    d.finish().unwrap()
}

/// The median time of `f` over repeated runs (at least 5, for about `budget`).
fn median(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 5 || (started.elapsed() < budget && times.len() < 10_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn mbs(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("LIMIT_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    let series = Endpoint::Historical.metrics();
    let tweets = young_tweets(25, 24 * 60, 1);
    let day0 = Hour::floor(NOW - 28 * 24 * HOUR_SECS);
    let historical = series_body(&tweets, &series, day0, 28 * 24);
    let hr28_tweets = young_tweets(25, 48, 1);
    let hr28 = series_body(
        &hr28_tweets,
        &Endpoint::Hour28.metrics(),
        Hour::floor(NOW).plus_hours(-29),
        29,
    );
    let totals = totals_body(
        &young_tweets(250, 24 * 30, 100),
        &Endpoint::Totals.metrics(),
    );
    let cases = [
        ("historical 25x17x28dx24h", JobKind::Historical, historical),
        ("28hr 25x17x29h", JobKind::Hourly, hr28),
        ("totals 250x7", JobKind::Totals, totals),
    ];

    println!(
        "(b) scans by counting '\"' with memchr; (c) is inflate + parse into rows as the worker \
         does. MB/s of inflated bytes, median of runs; ratio = time (c) / time (b), goal <= 2.0."
    );
    println!(
        "{:<26} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "answer", "bytes", "gzip x", "(a) MB/s", "(b) MB/s", "(c) MB/s", "parse MB/s", "c/b"
    );
    for (name, kind, body) in &cases {
        let gz = gzip(body.as_bytes());
        let (group, levels) = grouping(*kind);
        let read = |bytes: &[u8]| match kind {
            JobKind::Totals => parse::parse_lifetime(bytes, &[(group, levels)]),
            _ => parse::parse_nonzero_buckets(bytes, &[(group, levels)]),
        };
        // The answers parse, and they inflate back to themselves.
        assert_eq!(inflate(&gz), body.as_bytes());
        let rows = read(body.as_bytes()).unwrap().groupings[group].len();
        assert!(rows > 0);

        let a = median(budget, || {
            black_box(inflate(black_box(&gz)));
        });
        let b = median(budget, || {
            let bytes = inflate(black_box(&gz));
            black_box(memchr::memchr_iter(b'"', &bytes).count());
        });
        let c = median(budget, || {
            let bytes = inflate(black_box(&gz));
            black_box(read(&bytes).unwrap());
        });
        let p = median(budget, || {
            black_box(read(black_box(body.as_bytes())).unwrap());
        });
        let n = body.len();
        println!(
            "{:<26} {:>9} {:>7.1} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>7.2}",
            name,
            n,
            n as f64 / gz.len() as f64,
            mbs(n, a),
            mbs(n, b),
            mbs(n, c),
            mbs(n, p),
            c.as_secs_f64() / b.as_secs_f64(),
        );
    }
}
