//! The client's settings, resolved from the config: where the API is, the app's and the accounts'
//! credentials, pacing, retries and answer size. It maps the config; it sends nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use super::RetryPolicy;
use crate::auth::{AppKeys, UserToken};
use crate::config::{Config, Secret};
use crate::domain::{Endpoint, Handle};

/// Per-endpoint pacing, from the config's `[limits]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointLimit {
    pub per_minute: Option<NonZeroU32>,
    pub per_second: Option<NonZeroU32>,
}

/// Everything the client needs, resolved from the config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: String,
    pub token_url: String,
    pub timeout: Duration,
    pub user_agent: String,
    pub max_in_flight: usize,
    pub app: AppKeys,
    pub bearer_token: Option<Secret>,
    pub accounts: HashMap<Handle, UserToken>,
    pub limits: HashMap<Endpoint, EndpointLimit>,
    pub retry: RetryPolicy,
    /// The most bytes an answer may have, on the wire and once inflated.
    pub max_answer_bytes: usize,
}

impl ClientSettings {
    /// A digest of every setting, secrets included (it is compared, never shown), telling
    /// whether a reloaded config needs a new client.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.base_url, &self.token_url, self.timeout).hash(&mut h);
        (&self.user_agent, self.max_in_flight).hash(&mut h);
        (&self.app.consumer_key, self.app.consumer_secret.expose()).hash(&mut h);
        self.bearer_token.as_ref().map(Secret::expose).hash(&mut h);
        let mut accounts: Vec<_> = self
            .accounts
            .iter()
            .map(|(handle, t)| {
                let secret = t.access_token_secret.expose();
                (handle.to_string(), &t.access_token, secret)
            })
            .collect();
        accounts.sort();
        accounts.hash(&mut h);
        for e in Endpoint::ALL {
            let limit = self.limits.get(&e).copied().unwrap_or_default();
            (limit.per_minute, limit.per_second).hash(&mut h);
        }
        format!("{:?}", self.retry).hash(&mut h);
        self.max_answer_bytes.hash(&mut h);
        h.finish()
    }
}

impl From<&Config> for ClientSettings {
    /// The client's settings, taken from the config. Paused accounts get no token: nothing can
    /// be signed with it.
    fn from(config: &Config) -> ClientSettings {
        let limit = |e: Endpoint| {
            let l = config.limit(e);
            EndpointLimit {
                per_minute: l.per_minute,
                per_second: l.per_second,
            }
        };
        ClientSettings {
            base_url: config.api.base_url.as_str().to_string(),
            token_url: config.api.token_url.as_str().to_string(),
            timeout: config.api.timeout,
            user_agent: config.api.user_agent.clone(),
            max_in_flight: config.api.max_in_flight,
            app: AppKeys {
                consumer_key: config.app.consumer_key.clone(),
                consumer_secret: config.app.consumer_secret.clone(),
            },
            bearer_token: config.app.bearer_token.clone(),
            accounts: config
                .accounts
                .iter()
                .filter(|a| a.enabled)
                .map(|a| {
                    let token = UserToken {
                        access_token: a.access_token.clone(),
                        access_token_secret: a.access_token_secret.clone(),
                    };
                    (a.handle.clone(), token)
                })
                .collect(),
            limits: Endpoint::ALL.into_iter().map(|e| (e, limit(e))).collect(),
            retry: RetryPolicy {
                max_attempts: config.api.retry_attempts,
                max_elapsed: config.api.retry_max_elapsed,
                min_delay: config.api.retry_min_delay,
                ..RetryPolicy::default()
            },
            max_answer_bytes: config.api.max_answer_mib as usize * 1024 * 1024,
        }
    }
}
