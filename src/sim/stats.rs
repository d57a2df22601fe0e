//! What the simulator was asked: request counts by endpoint, credential and status, the handles
//! that made authenticated user-context requests (X bills by unique handles), and how often each
//! Tweet was asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::domain::{Handle, TweetId};

/// One row of `GET /_sim/stats`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestCount {
    /// `totals`, `28hr`, `historical` or `oauth2/token`.
    pub endpoint: String,
    /// `bearer`, an account's handle, or `unknown`.
    pub credential: String,
    /// The status sent; `DROPPED_STATUS` (0) when the connection was dropped instead.
    pub status: u16,
    pub count: u64,
}

/// How often one Tweet was in the `tweet_ids` of an endpoint's requests that passed
/// authentication and the budget and had a valid body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TweetCount {
    /// `totals`, `28hr` or `historical`.
    pub endpoint: String,
    pub tweet_id: TweetId,
    pub count: u64,
}

/// The body of `GET /_sim/stats`, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: Vec<RequestCount>,
    pub unique_handles: Vec<Handle>,
    #[serde(default)]
    pub tweets: Vec<TweetCount>,
}

impl Stats {
    /// Requests counted for `endpoint` (any credential and status).
    pub fn count(&self, endpoint: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .map(|r| r.count)
            .sum()
    }
}

/// Thread-safe counters behind [`Stats`].
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// (endpoint, credential, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    handles: BTreeSet<Handle>,
    /// (endpoint, Tweet) → requests that asked for it.
    tweets: BTreeMap<(String, TweetId), u64>,
}

impl Recorder {
    /// Counts one answered request.
    pub fn request(&self, endpoint: &str, credential: &str, status: u16) {
        let mut inner = self.inner.lock().expect("stats lock");
        *inner
            .requests
            .entry((endpoint.to_string(), credential.to_string(), status))
            .or_default() += 1;
    }

    /// Counts the Tweets of one request of `endpoint` that is going to be answered.
    pub fn tweets(&self, endpoint: &str, ids: &[TweetId]) {
        let mut inner = self.inner.lock().expect("stats lock");
        for id in ids {
            *inner.tweets.entry((endpoint.to_string(), *id)).or_default() += 1;
        }
    }

    /// Notes a handle whose token passed authentication.
    pub fn handle(&self, handle: &Handle) {
        self.inner
            .lock()
            .expect("stats lock")
            .handles
            .insert(handle.clone());
    }

    /// A sorted snapshot.
    pub fn snapshot(&self) -> Stats {
        let inner = self.inner.lock().expect("stats lock");
        Stats {
            requests: inner
                .requests
                .iter()
                .map(|((endpoint, credential, status), count)| RequestCount {
                    endpoint: endpoint.clone(),
                    credential: credential.clone(),
                    status: *status,
                    count: *count,
                })
                .collect(),
            unique_handles: inner.handles.iter().cloned().collect(),
            tweets: inner
                .tweets
                .iter()
                .map(|((endpoint, tweet_id), count)| TweetCount {
                    endpoint: endpoint.clone(),
                    tweet_id: *tweet_id,
                    count: *count,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_and_sort() {
        let r = Recorder::default();
        r.request("totals", "bearer", 200);
        r.request("28hr", "acme", 200);
        r.request("totals", "bearer", 200);
        r.handle(&"acme".parse().unwrap());
        let (a, b) = (TweetId::new(20).unwrap(), TweetId::new(10).unwrap());
        r.tweets("totals", &[a, b]);
        r.tweets("totals", &[a]);
        let s = r.snapshot();
        let tweets: Vec<(u64, u64)> = s
            .tweets
            .iter()
            .map(|t| (t.tweet_id.get(), t.count))
            .collect();
        assert_eq!(tweets, [(10, 1), (20, 2)]);
        assert_eq!(s.requests[0].endpoint, "28hr");
        assert_eq!(s.requests[1].count, 2);
        assert_eq!(s.count("totals"), 2);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"requests":[{"endpoint":"28hr","credential":"acme","status":200,"count":1},{"endpoint":"totals","credential":"bearer","status":200,"count":2}],"unique_handles":["acme"],"tweets":[{"endpoint":"totals","tweet_id":"10","count":1},{"endpoint":"totals","tweet_id":"20","count":2}]}"#
        );
    }
}
