//! A reader for the answers' usual shape, over the body's bytes: the top object, each grouping
//! nested by its levels (Tweet → type → day → hour in the series answers), every key a plain
//! string and every value a count written as up to 13 decimal digits.
//!
//! It checks what the generic reader checks (JSON shape, keys, Tweet IDs, metric names, dates,
//! hours 0–23, counts within [`MAX_COUNT`], repeated keys, [`MAX_LEAVES`]), and it gives up on
//! anything else: an escape or a control character in a key, a count written another way, an
//! unknown metric, a repeated key, a value that is not what its level expects, a body that is
//! not JSON. Giving up returns `None`, and the generic reader then reads the body and decides:
//! a body this reader accepts reads the same in both (tests below), and every error comes from
//! the generic reader.

use serde::de::IgnoredAny;
use serde_json::Value;

use super::{DayCache, GroupBy, MAX_COUNT, MAX_LEAVES, META_KEYS, Row, Seen, Sink, Top};
use crate::domain::{Metric, TweetId};

/// Deepest nesting of a value outside the groupings this reader lets serde_json read: below
/// serde_json's own limit, so that a value nested close to it is left to the generic reader
/// (which reads it one level deeper).
const NESTING_MAX: usize = 100;

/// Reads `body` into `top`; `None` when the generic reader must read it instead (`top` is then
/// to be thrown away).
pub(super) fn read(body: &[u8], top: &mut Top<'_>) -> Option<()> {
    let mut r = Reader { b: body, i: 0 };
    r.byte(b'{')?;
    top.object = true;
    if !r.close(b'}') {
        loop {
            let key = r.key()?;
            r.byte(b':')?;
            if let Some(i) = top.groupings.iter().position(|(n, _)| *n == key) {
                if top.rows[i].is_some() {
                    return None;
                }
                let levels = top.groupings[i].1;
                let mut rows = Vec::new();
                let mut named = Default::default();
                let (mut unknown, mut shape, mut day) = (Vec::new(), None, DayCache::default());
                let mut sink = Sink {
                    skip_zero: top.skip_zero_buckets && levels.contains(&GroupBy::Hour),
                    min: top.min_count,
                    rows: &mut rows,
                    named: &mut named,
                    pair: None,
                    leaves: 0,
                    unknown: &mut unknown,
                    shape: &mut shape,
                    day: &mut day,
                };
                let blank = Row {
                    tweet: None,
                    metric: None,
                    day: None,
                    hour: None,
                    value: 0,
                };
                r.level(levels, 0, &blank, &mut sink)?;
                drop(sink);
                top.rows[i] = Some(rows);
                top.named[i] = named;
            } else if META_KEYS.contains(&key) {
                let value: Value = r.foreign()?;
                top.meta.insert(key.to_string(), value);
            } else {
                r.foreign::<IgnoredAny>()?;
            }
            if r.close(b'}') {
                break;
            }
            r.byte(b',')?;
        }
    }
    r.ws();
    (r.i == body.len()).then_some(())
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Takes `c` after any blanks.
    #[inline]
    fn byte(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// Whether the next byte after any blanks is `c` (then taken).
    #[inline]
    fn close(&mut self, c: u8) -> bool {
        self.byte(c).is_some()
    }

    /// A key: a string without escapes or control characters.
    fn key(&mut self) -> Option<&'a str> {
        self.byte(b'"')?;
        let start = self.i;
        let len = self.b[start..].iter().position(|&c| c == b'"')?;
        let raw = &self.b[start..start + len];
        if raw.iter().any(|&c| c < 0x20 || c == b'\\') {
            return None;
        }
        self.i = start + len + 1;
        std::str::from_utf8(raw).ok()
    }

    /// A count: a string of 1 to 13 decimal digits after an optional `-` (series buckets can
    /// be negative: un-likes within the hour), at most [`MAX_COUNT`] either way. Whether a
    /// negative count is allowed is the sink's check, as for the generic reader.
    #[inline]
    fn count(&mut self) -> Option<i64> {
        self.byte(b'"')?;
        let negative = self.b.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let digits = self.b[self.i..]
            .iter()
            .take(14)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > 13 || self.b.get(self.i + digits) != Some(&b'"') {
            return None;
        }
        let n = self.b[self.i..self.i + digits]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        self.i += digits + 1;
        (n <= MAX_COUNT).then_some(if negative { -n } else { n })
    }

    /// A value outside the groupings, read by serde_json from where it starts.
    fn foreign<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        self.ws();
        let rest = &self.b[self.i..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        let value = values.next()?.ok()?;
        let end = values.byte_offset();
        if nesting(&rest[..end]) > NESTING_MAX {
            return None;
        }
        self.i += end;
        Some(value)
    }

    /// One level of a grouping below `row`: an object keyed by `levels[depth]`, or a count
    /// below the last level.
    fn level(
        &mut self,
        levels: &[GroupBy],
        depth: usize,
        row: &Row,
        sink: &mut Sink<'_>,
    ) -> Option<()> {
        let Some(&level) = levels.get(depth) else {
            let value = self.count()?;
            return leaf(sink, row, value);
        };
        if level == GroupBy::Hour && depth + 1 == levels.len() {
            return self.hours(row, sink);
        }
        self.byte(b'{')?;
        if self.close(b'}') {
            return Some(());
        }
        let mut seen = Seen::default();
        let mut mask = 0u64;
        loop {
            let key = self.key()?;
            let next = match level {
                GroupBy::TweetId => {
                    let id: TweetId = key.parse().ok()?;
                    seen.insert(id.get() as i64).then_some(())?;
                    Row {
                        tweet: Some(id),
                        ..*row
                    }
                }
                GroupBy::EngagementType => {
                    let metric: Metric = key.parse().ok()?;
                    let bit = 1u64 << metric.id();
                    (mask & bit == 0).then_some(())?;
                    mask |= bit;
                    Row {
                        metric: Some(metric),
                        ..*row
                    }
                }
                GroupBy::Day => {
                    let secs = day_secs(key, &mut *sink.day)?;
                    seen.insert(secs).then_some(())?;
                    Row {
                        day: Some(secs),
                        ..*row
                    }
                }
                GroupBy::Hour => {
                    let hour = hour(key.as_bytes())?;
                    let bit = 1u64 << hour;
                    (mask & bit == 0).then_some(())?;
                    mask |= bit;
                    Row {
                        hour: Some(hour),
                        ..*row
                    }
                }
            };
            self.byte(b':')?;
            self.level(levels, depth + 1, &next, sink)?;
            if self.close(b'}') {
                return Some(());
            }
            self.byte(b',')?;
        }
    }

    /// The last level when it is the hour: `{"HH": "count", …}`, the bulk of a series answer.
    #[inline]
    fn hours(&mut self, row: &Row, sink: &mut Sink<'_>) -> Option<()> {
        self.byte(b'{')?;
        if self.close(b'}') {
            return Some(());
        }
        let mut seen = 0u32;
        loop {
            self.ws();
            let h = match self.b.get(self.i..self.i + 4)? {
                [b'"', a, b, b'"'] => hour(&[*a, *b])?,
                _ => return None,
            };
            self.i += 4;
            let bit = 1u32 << h;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            self.byte(b':')?;
            let value = self.count()?;
            leaf(
                sink,
                &Row {
                    hour: Some(h),
                    ..*row
                },
                value,
            )?;
            if self.close(b'}') {
                return Some(());
            }
            self.byte(b',')?;
        }
    }
}

/// Takes one count, as the generic reader does.
#[inline]
fn leaf(sink: &mut Sink<'_>, row: &Row, value: i64) -> Option<()> {
    if sink.leaves == MAX_LEAVES || value < sink.min {
        return None;
    }
    sink.leaves += 1;
    sink.push(row, value);
    Some(())
}

/// An hour key: two digits, 00 to 23.
#[inline]
fn hour(key: &[u8]) -> Option<u8> {
    match key {
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => {
            Some((a - b'0') * 10 + (b - b'0')).filter(|h| *h < 24)
        }
        _ => None,
    }
}

/// A day key's Unix seconds: `YYYY-MM-DD` read directly, anything else as the generic reader
/// reads it.
fn day_secs(key: &str, cache: &mut DayCache) -> Option<i64> {
    let b = key.as_bytes();
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10))
    {
        let date = chrono::NaiveDate::from_ymd_opt(y as i32, m, d)?;
        return Some(date.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
    }
    cache.secs(key)
}

/// The deepest nesting of arrays and objects in `json` (valid JSON).
fn nesting(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &c in json {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{ParseError, Parsed, finish, parse_generic, parse_with};
    use super::*;
    use crate::test_rng::Rng;

    const SERIES: &[GroupBy] = &[
        GroupBy::TweetId,
        GroupBy::EngagementType,
        GroupBy::Day,
        GroupBy::Hour,
    ];
    const TOTALS: &[GroupBy] = &[GroupBy::TweetId, GroupBy::EngagementType];

    /// Reads `body` both ways: the generic reader's answer, and whether this reader took it.
    /// Whenever it does, the answers are equal, and the public path gives the generic answer.
    fn both(
        body: &[u8],
        groupings: &[(&str, &[GroupBy])],
        skip_zero: bool,
        min: i64,
    ) -> (Result<Parsed, ParseError>, bool) {
        let generic = parse_generic(body, groupings, skip_zero, min);
        let mut top = Top::new(groupings, skip_zero, min);
        let fast = read(body, &mut top).map(|()| finish(top, groupings));
        if let Some(fast) = &fast {
            assert_eq!(fast, &generic, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse_with(body, groupings, skip_zero, min), generic);
        (generic, fast.is_some())
    }

    /// A JSON tree with its keys as written (escapes included).
    enum J {
        Obj(Vec<(String, J)>),
        Raw(String),
    }

    /// What a generated answer looks like.
    struct Style {
        /// Blanks between tokens.
        blanks: bool,
        /// Keys written with `\u` escapes now and then.
        escapes: bool,
        /// Meta and unknown keys at the top.
        extras: bool,
        /// Counts may be negative (series buckets).
        negatives: bool,
        /// Whether a key was escaped.
        escaped: std::cell::Cell<bool>,
    }

    fn key(rng: &mut Rng, style: &Style, key: &str) -> String {
        if style.escapes && rng.chance(10) {
            style.escaped.set(true);
            key.chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect()
        } else {
            key.to_string()
        }
    }

    fn count(rng: &mut Rng, style: &Style) -> String {
        let n = match rng.below(4) {
            0 => 0,
            1 => rng.below(10),
            2 => rng.below(100_000),
            _ => rng.below(MAX_COUNT as u64 + 1),
        };
        let sign = if style.negatives && rng.chance(30) {
            "-"
        } else {
            ""
        };
        format!("\"{sign}{n}\"")
    }

    /// A grouping of `levels` with random keys in a random order.
    fn grouping(rng: &mut Rng, style: &Style, levels: &[GroupBy]) -> J {
        let Some((&level, rest)) = levels.split_first() else {
            return J::Raw(count(rng, style));
        };
        let mut keys: Vec<String> = match level {
            GroupBy::TweetId => (0..1 + rng.below(3))
                .map(|i| match rng.below(3) {
                    0 => (i + 1).to_string(),
                    _ => (1 + rng.below(i64::MAX as u64 - 1)).to_string(),
                })
                .collect(),
            GroupBy::EngagementType => {
                let mut all = Metric::ALL.to_vec();
                rng.shuffle(&mut all);
                all.truncate(1 + rng.below(4) as usize);
                all.iter().map(|m| m.as_str().to_string()).collect()
            }
            GroupBy::Day => {
                let first = 1 + rng.below(27);
                (0..1 + rng.below(2))
                    .map(|d| format!("2026-{:02}-{:02}", 1 + rng.below(12), first + d))
                    .collect()
            }
            GroupBy::Hour => (0..24)
                .filter(|_| rng.chance(40))
                .map(|h| format!("{h:02}"))
                .collect(),
        };
        keys.sort();
        keys.dedup();
        rng.shuffle(&mut keys);
        J::Obj(
            keys.iter()
                .map(|k| (key(rng, style, k), grouping(rng, style, rest)))
                .collect(),
        )
    }

    fn render(rng: &mut Rng, style: &Style, j: &J, out: &mut String) {
        let blank = |rng: &mut Rng, out: &mut String| {
            if style.blanks {
                out.push_str(["", "", " ", "\n", "\t", "\r\n  "][rng.below(6) as usize]);
            }
        };
        match j {
            J::Raw(s) => out.push_str(s),
            J::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    blank(rng, out);
                    out.push('"');
                    out.push_str(k);
                    out.push('"');
                    blank(rng, out);
                    out.push(':');
                    blank(rng, out);
                    render(rng, style, v, out);
                    blank(rng, out);
                }
                out.push('}');
            }
        }
    }

    /// A generated answer of one grouping `g`.
    fn answer(rng: &mut Rng, style: &Style, levels: &[GroupBy]) -> String {
        let mut top = vec![("g".to_string(), grouping(rng, style, levels))];
        if style.extras {
            let raw = |s: &str| J::Raw(s.to_string());
            top.push(("start".into(), raw(r#""2026-11-01T00:00:00Z""#)));
            top.push((
                "errors".into(),
                raw(r#"["a \"quoted\" \u00e9 error", {"message": "m\n"}]"#),
            ));
            top.push(("unavailable_tweet_ids".into(), raw(r#"["5", 6, "x"]"#)));
            top.push((
                "other".into(),
                raw(r#"{"nested": [1, -2.5e3, true, null, {"g": {}}], "s": "}\\"}"#),
            ));
            rng.shuffle(&mut top);
        }
        let mut out = String::new();
        render(rng, style, &J::Obj(top), &mut out);
        out
    }

    fn style(rng: &mut Rng) -> Style {
        Style {
            blanks: rng.chance(50),
            escapes: rng.chance(30),
            extras: rng.chance(50),
            negatives: rng.chance(50),
            escaped: Default::default(),
        }
    }

    proptest! {
        /// Generated answers in any key order, with blanks, extra keys and escaped keys, read
        /// the same both ways; those without escapes are taken by this reader.
        #[test]
        fn generated_answers_read_the_same(seed in any::<u64>()) {
            let mut rng = Rng(seed);
            let style = style(&mut rng);
            let levels = if rng.chance(50) { SERIES } else { TOTALS };
            let body = answer(&mut rng, &style, levels);
            let negatives = style.negatives;
            let (skip, min) = (rng.chance(50), if !negatives && rng.chance(50) { 0 } else { -MAX_COUNT });
            let (generic, fast) = both(body.as_bytes(), &[("g", levels)], skip, min);
            let generic = generic.unwrap_or_else(|e| panic!("{e}: {body}"));
            prop_assert!(!generic.groupings["g"].is_empty() || skip);
            prop_assert_eq!(fast, !style.escaped.get(), "{}", body);
        }

        /// Answers cut short or with a byte changed read the same both ways; cut ones are
        /// errors in both.
        #[test]
        fn damaged_answers_read_the_same(seed in any::<u64>()) {
            let mut rng = Rng(seed);
            let style = style(&mut rng);
            let levels = if rng.chance(50) { SERIES } else { TOTALS };
            let body = answer(&mut rng, &style, levels).into_bytes();
            let groupings: &[(&str, &[GroupBy])] = &[("g", levels)];
            let cut = rng.below(body.len() as u64) as usize;
            let (got, _) = both(&body[..cut], groupings, true, 0);
            prop_assert!(got.is_err());
            let mut changed = body.clone();
            let at = rng.below(body.len() as u64) as usize;
            let bytes = b"\"{}[],:\\x0-9 \x01\xff";
            changed[at] = bytes[rng.below(bytes.len() as u64) as usize];
            let _ = both(&changed, groupings, false, -MAX_COUNT);
        }
    }

    /// The usual shapes are taken by this reader, and what it gives up on reads as the generic
    /// reader reads it (an error or not).
    #[test]
    fn what_this_reader_takes() {
        let taken = [
            &br#"{"g": {"1": {"favorites": {"2026-11-01": {"00": "1", "23": "0"}}}}}"#[..],
            br#"  {"start":"x","g":{},"end":"y"}  "#,
            br#"{"g": {"1": {"favorites": {"2026-11-01": {}}}, "2": {}}}"#,
            // A negative bucket (an un-like within the hour) where negatives are allowed.
            br#"{"g": {"1": {"favorites": {"2026-11-01": {"03": "-1", "04": "-0"}}}}}"#,
        ];
        for body in taken {
            let (got, fast) = both(body, &[("g", SERIES)], true, -MAX_COUNT);
            assert!(got.is_ok() && fast, "{}", String::from_utf8_lossy(body));
        }
        // Where counts are never negative (/totals), a negative one is the generic reader's
        // error.
        let negative = br#"{"g": {"1": {"favorites": "-5"}}}"#;
        let (got, fast) = both(negative, &[("g", TOTALS)], false, 0);
        assert!(got.is_err() && !fast);
        let left = [
            // Counts as numbers, with blanks or signs, or past 13 digits.
            &br#"{"g": {"1": {"favorites": 5}}}"#[..],
            br#"{"g": {"1": {"favorites": " 5"}}}"#,
            br#"{"g": {"1": {"favorites": "+5"}}}"#,
            br#"{"g": {"1": {"favorites": "-"}}}"#,
            br#"{"g": {"1": {"favorites": "--5"}}}"#,
            br#"{"g": {"1": {"favorites": "00000000000005"}}}"#,
            br#"{"g": {"1": {"favorites": ""}}}"#,
            // Keys with escapes, unknown metrics, repeated keys.
            br#"{"g": {"\u0031": {"favorites": "5"}}}"#,
            br#"{"g": {"1": {"media_clicks": "5", "favorites": "1"}}}"#,
            br#"{"g": {"1": {"favorites": "5", "favorites": "6"}}}"#,
            br#"{"g": {}, "g": {}}"#,
            // Values deeper than the reader reads outside a grouping; not JSON.
            br#"{"g": {}, "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
            br#"{"g": {"1": {"favorites": "5"}},}"#,
            br#"{"g": {"1": {"favorites": "5"}}} {}"#,
            b"\xef\xbb\xbf{}",
        ];
        for body in left {
            let (_, fast) = both(body, &[("g", TOTALS)], false, -MAX_COUNT);
            assert!(!fast, "{}", String::from_utf8_lossy(body));
        }
        // Values nested deeply (near serde_json's limit, or past it) are left to the generic
        // reader, under an unknown key or a kept one.
        for key in ["x", "errors"] {
            for depth in [127, 1000] {
                let deep = format!(
                    r#"{{"g": {{}}, "{key}": {}{}}}"#,
                    "[".repeat(depth),
                    "]".repeat(depth)
                );
                let (_, fast) = both(deep.as_bytes(), &[("g", TOTALS)], false, 0);
                assert!(!fast, "{key} {depth}");
            }
        }
    }

    /// Day keys read directly give the dates chrono reads.
    #[test]
    fn day_keys_as_chrono_reads_them() {
        let mut cache = DayCache::default();
        for key in [
            "2026-11-01",
            "2024-02-29",
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "0000-01-01",
            "9999-12-31",
            "2026-1-01",
            "2026-01-1x",
            "+2026-01-01",
            "2026/01/01",
        ] {
            assert_eq!(
                day_secs(key, &mut cache),
                DayCache::default().secs(key),
                "{key}"
            );
        }
    }

    /// A grouping past MAX_LEAVES is the generic reader's error.
    #[test]
    fn too_many_leaves() {
        let mut body = String::from(r#"{"g": {"1": {"favorites": {"#);
        let days = MAX_LEAVES / 24 + 1;
        let day0 = chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap();
        for d in 0..days {
            if d > 0 {
                body.push(',');
            }
            let day = day0 + chrono::Days::new(d as u64);
            body.push_str(&format!("\"{day}\":{{"));
            for h in 0..24 {
                body.push_str(&format!("{}\"{h:02}\":\"0\"", if h > 0 { "," } else { "" }));
            }
            body.push('}');
        }
        body.push_str("}}}}");
        let (got, fast) = both(body.as_bytes(), &[("g", SERIES)], true, 0);
        assert!(
            matches!(&got, Err(ParseError::Shape { detail, .. }) if detail.contains("more than")),
            "{got:?}"
        );
        assert!(!fast);
    }
}
