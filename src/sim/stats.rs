//! What the simulator was asked: request counts by endpoint, credential and status, and the
//! handles that made authenticated user-context requests (X bills by unique handles).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::domain::Handle;

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

/// The body of `GET /_sim/stats`, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: Vec<RequestCount>,
    pub unique_handles: Vec<Handle>,
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
        let s = r.snapshot();
        assert_eq!(s.requests[0].endpoint, "28hr");
        assert_eq!(s.requests[1].count, 2);
        assert_eq!(s.count("totals"), 2);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"requests":[{"endpoint":"28hr","credential":"acme","status":200,"count":1},{"endpoint":"totals","credential":"bearer","status":200,"count":2}],"unique_handles":["acme"]}"#
        );
    }
}
