//! How messy the simulator is: the `[realism]` section of the world file and the `realistic`
//! preset. Every knob is off in a world that does not mention it (the tidy simulator of the
//! worker's other tests); `realistic = true` turns on every knob the section leaves out. Each
//! knob is deterministic from the seed (and the request's number, where it varies per request).

use serde::Deserialize;

use super::contract;

/// How Tweets are ordered in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TweetOrder {
    /// In the order the request listed them.
    Request,
    /// By ID, ascending (the reference examples answer sorted).
    Sorted,
    /// In an order drawn from the seed and the request's number.
    Shuffled,
}

/// Which text a 403 for Tweets the token may not read carries (§8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForbiddenForm {
    /// One string per author, naming the author: "Forbidden to access tweets for author id N: a, b".
    #[serde(rename = "2016")]
    Author,
    /// The documented current form, no author: "Forbidden to access tweets: a, b;".
    Current,
    /// Either, drawn per request.
    Mixed,
}

/// Whether a partial 200 (unavailable or too old Tweets) carries an `errors` list (Q13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialErrors {
    /// Always, next to the `*_tweet_ids` lists.
    Always,
    /// Never: only the lists, as the reference example shows.
    Never,
    /// Either, drawn per request.
    Mixed,
}

/// The `[realism]` section as written: a key left out is off, or the preset's value under
/// `realistic = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealismSpec {
    /// An hour's numbers keep growing for this many hours after the hour ends, then stay; the
    /// current hour has partial counts. 0: an ended hour is final, the current hour reads 0.
    pub settle_hours: Option<u32>,
    /// Order of the Tweets in an answer.
    pub tweet_order: Option<TweetOrder>,
    /// Types, days, hours, groupings and the meta keys in an order other than asked.
    pub shuffle_keys: Option<bool>,
    /// The text of a 403 for Tweets the token may not read.
    pub forbidden_form: Option<ForbiddenForm>,
    /// Whether partial 200s carry `errors`.
    pub partial_errors: Option<PartialErrors>,
    /// Share of Tweets with a video whose video another Tweet of the world also carries:
    /// `/totals` `video_views` counts the views of both, the series only the Tweet's own (§3.1).
    pub shared_videos: Option<f64>,
    /// Integer `tweet_ids`, fractional seconds (`.000Z`) and `+00:00` offsets are accepted, as the
    /// official samples send them (§2.2).
    pub lenient_input: Option<bool>,
    /// A request without `Content-Type: application/json` is refused with 400 (§1).
    pub require_content_type: Option<bool>,
    /// `/historical` echoes `end` rounded up to the hour, as the reference does (§5.1).
    pub round_end: Option<bool>,
    /// `/historical` serves only this many days back from now (the newer overview, Q5);
    /// 0: back to 2014-09-01.
    pub lookback_days: Option<u32>,
}

/// The knobs in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Realism {
    pub settle_hours: u32,
    pub tweet_order: TweetOrder,
    pub shuffle_keys: bool,
    pub forbidden_form: ForbiddenForm,
    pub partial_errors: PartialErrors,
    pub shared_videos: f64,
    pub lenient_input: bool,
    pub require_content_type: bool,
    pub round_end: bool,
    pub lookback_days: u32,
}

impl Realism {
    /// Every knob off: the tidy simulator.
    pub const TIDY: Realism = Realism {
        settle_hours: 0,
        tweet_order: TweetOrder::Request,
        shuffle_keys: false,
        forbidden_form: ForbiddenForm::Author,
        partial_errors: PartialErrors::Always,
        shared_videos: 0.0,
        lenient_input: false,
        require_content_type: false,
        round_end: false,
        lookback_days: 0,
    };

    /// `realistic = true`: every knob on.
    pub const REALISTIC: Realism = Realism {
        settle_hours: 36,
        tweet_order: TweetOrder::Shuffled,
        shuffle_keys: true,
        forbidden_form: ForbiddenForm::Mixed,
        partial_errors: PartialErrors::Mixed,
        shared_videos: 0.3,
        lenient_input: true,
        require_content_type: true,
        round_end: true,
        lookback_days: contract::NEWER_LOOKBACK_DAYS,
    };

    /// The knobs of `spec` over the preset's (`realistic`) or tidy values.
    pub fn resolve(realistic: bool, spec: &RealismSpec) -> Realism {
        let base = if realistic {
            Realism::REALISTIC
        } else {
            Realism::TIDY
        };
        Realism {
            settle_hours: spec.settle_hours.unwrap_or(base.settle_hours),
            tweet_order: spec.tweet_order.unwrap_or(base.tweet_order),
            shuffle_keys: spec.shuffle_keys.unwrap_or(base.shuffle_keys),
            forbidden_form: spec.forbidden_form.unwrap_or(base.forbidden_form),
            partial_errors: spec.partial_errors.unwrap_or(base.partial_errors),
            shared_videos: spec.shared_videos.unwrap_or(base.shared_videos),
            lenient_input: spec.lenient_input.unwrap_or(base.lenient_input),
            require_content_type: spec
                .require_content_type
                .unwrap_or(base.require_content_type),
            round_end: spec.round_end.unwrap_or(base.round_end),
            lookback_days: spec.lookback_days.unwrap_or(base.lookback_days),
        }
    }

    /// Checks the values the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.shared_videos) {
            return Err(format!(
                "realism.shared_videos = {}: a share must be between 0 and 1",
                self.shared_videos
            ));
        }
        if self.settle_hours > 24 * 28 {
            return Err(format!(
                "realism.settle_hours = {}: at most 672 (4 weeks)",
                self.settle_hours
            ));
        }
        Ok(())
    }
}
