//! The simulator itself: a world, its Tweets and numbers, an injectable clock, and the state a
//! running service keeps (nonces, budgets, stats, faults). Runs the insights check order; HTTP
//! plumbing lives in `server`, the answer body in `answer`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::domain::{Clock, Endpoint, Hour, Metric, TweetId, system_clock};

use super::auth::{Authenticator, Credential, SignedRequest};
use super::data;
use super::faults::{self, Fault};
use super::limits::{RateHeaders, RateLimiter};
use super::population::{self, SimTweet};
use super::query;
use super::realism::Realism;
use super::stats::{Recorder, Stats};
use super::window;
use super::world::{Faults, World};

/// The exact 406 body X sends without `Accept-Encoding: gzip` (TWEETINVI-584).
pub const GZIP_REQUIRED: &str = "This request requires gzip compression. Retry the request after setting 'Accept-Encoding' header in the request to 'gzip'.";
/// The 429 text (RUBY matches "rate limit"; the exact text is a simulator choice).
pub const RATE_LIMITED: &str = "Exceeded rate limit";
/// The 5xx text RUBY saw.
pub const INTERNAL_ERROR: &str = "internal server error";

/// An answer before it becomes HTTP.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    /// JSON text.
    body: String,
    /// Rate-limit headers (insights endpoints only).
    pub rate: Option<RateHeaders>,
    /// Cut the serialized body short (the `malformed` fault).
    pub truncate: bool,
    /// Close the connection instead of answering (the `dropped` fault).
    pub dropped: bool,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::raw(status, body.to_string())
    }

    /// An answer already written as JSON text.
    pub fn raw(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            rate: None,
            truncate: false,
            dropped: false,
        }
    }

    /// `{"errors":[…]}` in this API's plain-string style.
    pub fn errors(status: u16, messages: impl IntoIterator<Item = impl Into<String>>) -> Reply {
        let list: Vec<String> = messages.into_iter().map(Into::into).collect();
        Reply::json(status, json!({ "errors": list }))
    }

    /// The body bytes as sent.
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut bytes = self.body.clone().into_bytes();
        if self.truncate {
            bytes.truncate(bytes.len() / 2);
        }
        bytes
    }
}

/// What the HTTP layer read from an insights request's headers, besides the signed parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    /// Whether `Accept-Encoding` makes gzip acceptable (q-values read, see `server`).
    pub accepts_gzip: bool,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
}

/// One request's place in time: when it came, its number since start, and the fault drawn for it.
#[derive(Debug, Clone, Copy)]
struct Turn {
    now: i64,
    number: u64,
    fault: Fault,
}

/// A simulated Engagement API.
pub struct Sim {
    world: World,
    /// The world's `[realism]` knobs, resolved once.
    realism: Realism,
    tweets: Vec<SimTweet>,
    by_id: HashMap<TweetId, usize>,
    start_day: i64,
    clock: Clock,
    auth: Authenticator,
    limiter: RateLimiter,
    pub(crate) stats: Recorder,
    faults: Mutex<Faults>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.world.seed)
            .field("tweets", &self.tweets.len())
            .finish()
    }
}

impl Sim {
    /// A simulator on the system clock; Tweets are generated for today (UTC).
    pub fn new(world: World) -> Sim {
        Sim::with_clock(world, system_clock())
    }

    /// A simulator on `clock`; Tweets are generated for the UTC day `clock` reads now.
    pub fn with_clock(world: World, clock: Clock) -> Sim {
        let start_day = population::start_day(clock());
        let tweets = population::generate(&world, start_day);
        let by_id = tweets.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        Sim {
            limiter: RateLimiter::new(world.limits),
            faults: Mutex::new(world.faults),
            realism: world.realism(),
            world,
            tweets,
            by_id,
            start_day,
            clock,
            auth: Authenticator::default(),
            stats: Recorder::default(),
            requests: AtomicU64::new(0),
        }
    }

    /// The world this simulator serves.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The realism knobs in force.
    pub fn realism(&self) -> Realism {
        self.realism
    }

    /// Every Tweet of the world, deleted and protected ones included.
    pub fn tweets(&self) -> &[SimTweet] {
        &self.tweets
    }

    /// The world's Tweet with this ID.
    pub fn tweet(&self, id: TweetId) -> Option<&SimTweet> {
        self.by_id.get(&id).map(|i| &self.tweets[*i])
    }

    /// Midnight UTC of the day the Tweets were generated for.
    pub fn start_day(&self) -> i64 {
        self.start_day
    }

    /// The simulator's clock now.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// What `/totals` reports for `tweet` at `at_secs`: the sum of what the series would report
    /// at `at_secs` for every hour (with `settle_hours = 0`, the buckets of every hour that ended
    /// by then). `video_views` also counts the views of the Tweet that shares its video (§3.1
    /// [D]), which the series never do.
    pub fn total(&self, tweet: TweetId, metric: Metric, at_secs: i64) -> i64 {
        let own = |id| {
            self.settle()
                .total(&data::Series::new(self.world.seed, id, metric), at_secs)
        };
        let partner = match metric {
            Metric::VideoViews => self.tweet(tweet).and_then(|t| t.video_partner),
            _ => None,
        };
        own(tweet) + partner.map_or(0, own)
    }

    /// The final count of `metric` for `tweet` during `hour`: what every answer reports for it
    /// once it has settled.
    pub fn bucket(&self, tweet: TweetId, metric: Metric, hour: Hour) -> i64 {
        data::bucket(self.world.seed, tweet, metric, hour)
    }

    /// What an answer at `now` reports for `hour` of `tweet`'s `metric`: zero for a future hour,
    /// a growing share of [`Sim::bucket`] while the hour settles, the final value after.
    pub fn bucket_at(&self, tweet: TweetId, metric: Metric, hour: Hour, now: i64) -> i64 {
        self.settle()
            .reported(self.bucket(tweet, metric, hour), hour, now)
    }

    /// The world's settling rule.
    pub(crate) fn settle(&self) -> super::settle::Settle {
        super::settle::Settle::new(self.realism.settle_hours)
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// The fault settings in force.
    pub fn faults(&self) -> Faults {
        *self.faults.lock().expect("faults lock")
    }

    /// Replaces the fault settings (what `POST /_sim/faults` does).
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        *self.faults.lock().expect("faults lock") = faults;
        Ok(())
    }

    /// The inventory CSV of every Tweet: `tweet_id,owner`, public ones with an empty owner. A
    /// Tweet that changed hands is listed under its previous owner, as a stale export would.
    pub fn inventory_csv(&self) -> String {
        let mut out = String::from("tweet_id,owner\n");
        for t in &self.tweets {
            let owner = t.listed_owner.as_ref().map_or("", |h| h.as_str());
            out += &format!("{},{owner}\n", t.id);
        }
        out
    }

    /// The bearer token the simulator issues and accepts now.
    pub fn bearer_token(&self) -> String {
        self.auth.bearer(&self.world)
    }

    /// Invalidates the bearer token and issues `new` from now on: requests still carrying the
    /// old one get 401, as after `POST oauth2/invalidate_token`.
    pub fn rotate_bearer(&self, new: &str) {
        self.auth.rotate_bearer(new);
    }

    /// A worker config pointing at this simulator (see [`World::worker_config_toml`]).
    pub fn worker_config_toml(&self, base_url: &str, inventory_path: &str) -> String {
        self.world.worker_config_toml(base_url, inventory_path)
    }

    /// Answers one insights request, in the check order of engagement-api §12: faults, gzip,
    /// auth, budget, `Content-Type` (when required), body, credential rules, answer. Every reply
    /// carries the rate-limit headers; a `dropped` one is then never sent.
    pub(crate) fn insights(
        &self,
        endpoint: Endpoint,
        req: &SignedRequest,
        envelope: Envelope,
    ) -> Reply {
        let now = self.now();
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let fault = faults::draw(self.world.seed, n, &self.faults());
        let mut rate = self.limiter.peek(endpoint, now);
        let turn = Turn {
            now,
            number: n,
            fault,
        };
        let mut reply = self
            .insights_checked(endpoint, req, envelope, turn, &mut rate)
            .unwrap_or_else(|refusal| refusal);
        reply.rate = Some(rate);
        reply.truncate = fault == Fault::Malformed && reply.status == 200;
        // The request was read and answered (budget spent, nonce used), but the answer is lost on
        // the way back, as when a proxy or the network drops the connection.
        reply.dropped = fault == Fault::Dropped;
        reply
    }

    fn insights_checked(
        &self,
        endpoint: Endpoint,
        req: &SignedRequest,
        envelope: Envelope,
        Turn { now, number, fault }: Turn,
        rate: &mut RateHeaders,
    ) -> Result<Reply, Reply> {
        match fault {
            Fault::ServerError(status) => return Err(Reply::errors(status, [INTERNAL_ERROR])),
            Fault::RateLimited => return Err(Reply::errors(429, [RATE_LIMITED])),
            Fault::None | Fault::Malformed | Fault::Dropped => {}
        }
        if !envelope.accepts_gzip {
            return Err(Reply::errors(406, [GZIP_REQUIRED]));
        }
        let credential = self
            .auth
            .authenticate(&self.world, req, now)
            .map_err(|e| Reply::errors(401, [e.message()]))?;
        if let Credential::User(i) = credential {
            self.stats.handle(&self.world.accounts[i].handle);
        }
        *rate = match self.limiter.take(endpoint, now) {
            Ok(headers) => headers,
            Err(headers) => {
                *rate = headers;
                return Err(Reply::errors(429, [RATE_LIMITED]));
            }
        };
        let bad_request = |e: &dyn std::fmt::Display| Reply::errors(400, [e.to_string()]);
        // The header describes the body, so it is checked with the body: after gzip and auth (an
        // unauthenticated client learns nothing of the body rules, and a 401 or 406 is what
        // it must fix first) and after the budget, which every 400 spends (simulator choice).
        if self.realism.require_content_type {
            query::check_content_type(envelope.content_type).map_err(|e| bad_request(&e))?;
        }
        let query = query::parse(endpoint, req.body, &self.realism).map_err(|e| bad_request(&e))?;
        self.stats.tweets(endpoint.name(), &query.ids);
        let window = window::window(
            endpoint,
            query.start.as_deref(),
            query.end.as_deref(),
            now,
            &self.realism,
        )
        .map_err(|e| bad_request(&e))?;
        self.answer(endpoint, credential, &query, window.as_ref(), now, number)
    }
}
