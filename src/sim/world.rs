//! The simulator's world file: which app, accounts and Tweets exist, and how the service behaves
//! (limits, faults). Parsing and validation only; generating the Tweets is `population`'s job.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::domain::{Endpoint, Handle, TweetId};

use super::realism::{Realism, RealismSpec};

/// A parsed and validated world file (design.md §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Drives every generated ID, number and fault.
    pub seed: u64,
    /// The one approved app.
    pub app: App,
    /// Tweet owners who authorized the app.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Tweets by authors that are not configured accounts.
    #[serde(default)]
    pub public: Public,
    /// How generated Tweets are spread and which ones are deleted or protected.
    #[serde(default)]
    pub tweets: TweetsConfig,
    /// App-wide request budgets per endpoint.
    #[serde(default)]
    pub limits: Limits,
    /// Injected failures.
    #[serde(default)]
    pub faults: Faults,
    /// Turns on every `[realism]` knob the section leaves out.
    #[serde(default)]
    pub realistic: bool,
    /// How messy the answers are (see `realism`).
    #[serde(default)]
    pub realism: RealismSpec,
}

/// The app's client credentials and the bearer token `POST /oauth2/token` issues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub bearer_token: String,
}

/// An account whose OAuth 1.0a tokens the app holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub handle: Handle,
    pub user_id: u64,
    pub access_token: String,
    pub access_token_secret: String,
    /// The account's own Tweets.
    #[serde(default)]
    pub tweets: TweetSpec,
    /// A revoked token is known but refused (401).
    #[serde(default)]
    pub revoked: bool,
}

/// The `[public]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Public {
    #[serde(default)]
    pub tweets: TweetSpec,
}

/// The `[tweets]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TweetsConfig {
    /// Generated Tweets are created over `[start_day − spread_days, start_day)`.
    #[serde(default = "default_spread_days")]
    pub spread_days: u32,
    /// Tweets answered as unavailable.
    #[serde(default)]
    pub deleted: TweetSpec,
    /// Tweets refused as the API refuses protected Tweets.
    #[serde(default)]
    pub protected: TweetSpec,
    /// Tweets that changed hands: listed in the inventory under one account, owned by another.
    #[serde(default)]
    pub reowned: Vec<Reowned>,
}

/// One `[[tweets.reowned]]` entry: Tweets of `from` that the API now attributes to `to`.
///
/// ```toml
/// [[tweets.reowned]]
/// from = "acme"   # the account the exported inventory still names
/// to = "bob"      # the account that owns them now, per the API
/// count = 2       # chosen from `from`'s Tweets by the seed; or ids = ["…"] from its list
/// ```
///
/// The exported inventory lists them under `from`; the API answers as if `to` wrote them (its
/// token reads them, `from`'s is refused with 403, the 403 names `to`'s user_id as the author).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reowned {
    pub from: Handle,
    pub to: Handle,
    /// How many of `from`'s Tweets (chosen from the seed, never two entries the same Tweet).
    #[serde(default)]
    pub count: u32,
    /// Or exactly these Tweets of `from`'s `accounts.tweets` list.
    #[serde(default, deserialize_with = "id_list")]
    pub ids: Vec<TweetId>,
}

impl Reowned {
    /// How many Tweets this entry moves.
    pub fn len(&self) -> usize {
        self.count as usize + self.ids.len()
    }

    /// Whether it moves none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A list of Tweet IDs written as strings or integers, like the lists of a `TweetSpec`.
fn id_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TweetId>, D::Error> {
    Ok(Vec::<IdEntry>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

fn default_spread_days() -> u32 {
    120
}

impl Default for TweetsConfig {
    fn default() -> Self {
        TweetsConfig {
            spread_days: default_spread_days(),
            deleted: TweetSpec::default(),
            protected: TweetSpec::default(),
            reowned: Vec::new(),
        }
    }
}

/// Either a number of Tweets to generate (or choose, for `deleted`/`protected`) or explicit IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TweetSpec {
    Count(u32),
    List(Vec<TweetId>),
}

impl Default for TweetSpec {
    fn default() -> Self {
        TweetSpec::Count(0)
    }
}

impl TweetSpec {
    /// The explicit IDs, empty for a count.
    pub fn listed(&self) -> &[TweetId] {
        match self {
            TweetSpec::Count(_) => &[],
            TweetSpec::List(ids) => ids,
        }
    }

    /// How many Tweets this spec stands for.
    pub fn len(&self) -> usize {
        match self {
            TweetSpec::Count(n) => *n as usize,
            TweetSpec::List(ids) => ids.len(),
        }
    }

    /// Whether it stands for no Tweet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// Hand-written so that `tweets = 120` and `tweets = ["1", 2]` both work and a wrong value gets a
// message naming what was expected (an untagged enum would only say "did not match any variant").
impl<'de> Deserialize<'de> for TweetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = TweetSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count of Tweets or a list of Tweet IDs (strings or integers)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TweetSpec, E> {
                u32::try_from(v).map(TweetSpec::Count).map_err(|_| {
                    E::custom(format!(
                        "invalid Tweet count {v}: expected 0 to {}",
                        u32::MAX
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TweetSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TweetSpec, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<IdEntry>()? {
                    ids.push(id.0);
                }
                Ok(TweetSpec::List(ids))
            }
        }
        d.deserialize_any(SpecVisitor)
    }
}

/// One Tweet ID in a world list, written as a string or an integer.
struct IdEntry(TweetId);

impl<'de> Deserialize<'de> for IdEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = IdEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Tweet ID (a string of digits or a positive integer)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdEntry, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdEntry, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdEntry, E> {
                v.parse().map(IdEntry).map_err(E::custom)
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// The `[limits]` section: app-wide budgets per endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub totals: EndpointLimit,
    #[serde(default, rename = "28hr")]
    pub hour28: EndpointLimit,
    #[serde(default)]
    pub historical: EndpointLimit,
}

impl Limits {
    /// The budget of `endpoint`.
    pub fn of(&self, endpoint: Endpoint) -> EndpointLimit {
        match endpoint {
            Endpoint::Totals => self.totals,
            Endpoint::Hour28 => self.hour28,
            Endpoint::Historical => self.historical,
        }
    }
}

/// Requests allowed per fixed minute and per fixed second; 0 = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLimit {
    #[serde(default)]
    pub per_minute: u32,
    #[serde(default)]
    pub per_second: u32,
}

impl EndpointLimit {
    /// Whether either budget is set.
    pub fn is_set(&self) -> bool {
        self.per_minute > 0 || self.per_second > 0
    }
}

/// The `[faults]` section, also the body of `POST /_sim/faults` (keys left out are 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Probability of a 500/503 `internal server error`.
    pub server_error: f64,
    /// Probability of a 429 whatever the budget says.
    pub rate_limited: f64,
    /// Probability of a 200 whose JSON body is cut short.
    pub malformed: f64,
    /// Probability that the connection is dropped after the request is read, with no complete
    /// response: the client sees a transport error, not a status.
    pub dropped: f64,
    /// Delay added to every insights request.
    pub latency_ms: u64,
}

impl Faults {
    /// Checks that the probabilities are probabilities.
    pub fn validate(&self) -> Result<(), String> {
        let probs = [
            ("server_error", self.server_error),
            ("rate_limited", self.rate_limited),
            ("malformed", self.malformed),
            ("dropped", self.dropped),
        ];
        for (key, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "faults.{key} = {p}: a probability must be between 0 and 1"
                ));
            }
        }
        let sum: f64 = probs.iter().map(|(_, p)| p).sum();
        if sum > 1.0 {
            return Err(format!(
                "faults: server_error + rate_limited + malformed + dropped = {sum}, more than 1"
            ));
        }
        Ok(())
    }
}

/// Why a world file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot read world file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("world file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("world file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl World {
    /// Reads and validates a world file.
    pub fn load(path: &Path) -> Result<World, WorldError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WorldError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates world TOML (errors name the source as `<string>`).
    pub fn from_toml_str(text: &str) -> Result<World, WorldError> {
        Self::parse(text, "<string>")
    }

    fn parse(text: &str, path: &str) -> Result<World, WorldError> {
        let world: World = toml::from_str(text).map_err(|source| WorldError::Parse {
            path: path.to_string(),
            source,
        })?;
        world.validate().map_err(|message| WorldError::Invalid {
            path: path.to_string(),
            message,
        })?;
        Ok(world)
    }

    /// Checks what the TOML types cannot: uniqueness, counts and references between sections.
    pub fn validate(&self) -> Result<(), String> {
        let mut handles = HashSet::new();
        let mut tokens = HashSet::new();
        let mut user_ids = HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let at = format!("accounts[{i}] ({})", a.handle);
            if !handles.insert(a.handle.as_str().to_ascii_lowercase()) {
                return Err(format!("{at}: handle {} appears twice", a.handle));
            }
            if !tokens.insert(a.access_token.as_str()) {
                return Err(format!(
                    "{at}: access_token {:?} is used by another account",
                    a.access_token
                ));
            }
            if !user_ids.insert(a.user_id) {
                return Err(format!(
                    "{at}: user_id {} is used by another account",
                    a.user_id
                ));
            }
            if a.access_token.is_empty() || a.access_token_secret.is_empty() {
                return Err(format!(
                    "{at}: access_token and access_token_secret must not be empty"
                ));
            }
        }
        if self.app.consumer_key.is_empty() || self.app.bearer_token.is_empty() {
            return Err("app: consumer_key and bearer_token must not be empty".into());
        }
        if self.tweets.spread_days == 0 {
            return Err("tweets.spread_days must be at least 1".into());
        }

        let mut listed = BTreeSet::new();
        let owned = self
            .accounts
            .iter()
            .map(|a| (format!("accounts.{}.tweets", a.handle), &a.tweets));
        for (key, spec) in owned.chain([("public.tweets".to_string(), &self.public.tweets)]) {
            for id in spec.listed() {
                if !listed.insert(*id) {
                    return Err(format!("{key}: Tweet {id} is listed twice in the world"));
                }
            }
        }
        let total =
            self.accounts.iter().map(|a| a.tweets.len()).sum::<usize>() + self.public.tweets.len();
        let mut marked = BTreeSet::new();
        for (key, spec) in [
            ("tweets.deleted", &self.tweets.deleted),
            ("tweets.protected", &self.tweets.protected),
        ] {
            for id in spec.listed() {
                if !listed.contains(id) {
                    return Err(format!(
                        "{key}: Tweet {id} is not in any accounts.tweets or public.tweets list \
                         (only listed Tweets can be named; use a count to mark generated ones)"
                    ));
                }
                if !marked.insert(*id) {
                    return Err(format!("{key}: Tweet {id} is already deleted or protected"));
                }
            }
        }
        let reowned = self.validate_reowned()?;
        // Counted deleted/protected Tweets are chosen among the Tweets that did not change hands.
        let wanted = self.tweets.deleted.len() + self.tweets.protected.len();
        if wanted > total - reowned {
            let others = if reowned > 0 {
                format!(" that are not tweets.reowned ({reowned} are)")
            } else {
                String::new()
            };
            return Err(format!(
                "tweets.deleted + tweets.protected = {wanted}, but the world has only {} Tweets{others}",
                total - reowned
            ));
        }
        self.faults.validate()?;
        self.realism().validate()
    }

    /// The realism knobs in force: `[realism]` over the `realistic` preset.
    pub fn realism(&self) -> Realism {
        Realism::resolve(self.realistic, &self.realism)
    }

    /// The index of the account with `handle` (handles compare case-insensitively, as X's do).
    pub fn account_index(&self, handle: &Handle) -> Option<usize> {
        self.accounts
            .iter()
            .position(|a| a.handle.as_str().eq_ignore_ascii_case(handle.as_str()))
    }

    /// Checks `[[tweets.reowned]]`; returns how many Tweets change hands.
    fn validate_reowned(&self) -> Result<usize, String> {
        let mut moved = vec![0usize; self.accounts.len()];
        let mut named = BTreeSet::new();
        for (i, r) in self.tweets.reowned.iter().enumerate() {
            let at = format!("tweets.reowned[{i}]");
            let account = |key: &str, h: &Handle| {
                self.account_index(h).ok_or_else(|| {
                    format!("{at}.{key}: {h} is not a configured account (only [[accounts]] can own Tweets)")
                })
            };
            let (from, to) = (account("from", &r.from)?, account("to", &r.to)?);
            if from == to {
                return Err(format!("{at}: from and to are both {}", r.from));
            }
            if r.count > 0 && !r.ids.is_empty() {
                return Err(format!("{at}: give count or ids, not both"));
            }
            if r.is_empty() {
                return Err(format!(
                    "{at}: moves no Tweet (give count = N or ids = [\"…\"])"
                ));
            }
            let from_list = self.accounts[from].tweets.listed();
            for id in &r.ids {
                if !from_list.contains(id) {
                    return Err(format!(
                        "{at}.ids: Tweet {id} is not in accounts.{}.tweets \
                         (only listed Tweets can be named; use count to move generated ones)",
                        self.accounts[from].handle
                    ));
                }
                if !named.insert(*id) {
                    return Err(format!("{at}.ids: Tweet {id} is already reowned"));
                }
            }
            moved[from] += r.len();
            let available = self.accounts[from].tweets.len();
            if moved[from] > available {
                let key = if r.ids.is_empty() { "count" } else { "ids" };
                return Err(format!(
                    "{at}.{key}: {} has only {available} Tweets, but tweets.reowned moves {} of them",
                    self.accounts[from].handle, moved[from]
                ));
            }
        }
        Ok(moved.iter().sum())
    }

    /// The built-in world of the `demo` command: three accounts, 200 public Tweets, 3 deleted.
    pub fn demo(seed: u64) -> World {
        let account = |handle: &str, user_id: u64, tweets: u32| Account {
            handle: handle.parse().expect("demo handles are valid"),
            user_id,
            access_token: format!("{user_id}-{handle}"),
            access_token_secret: format!("{handle}-secret"),
            tweets: TweetSpec::Count(tweets),
            revoked: false,
        };
        World {
            seed,
            app: App {
                consumer_key: "sim-consumer".into(),
                consumer_secret: "sim-consumer-secret".into(),
                bearer_token: "sim-bearer".into(),
            },
            accounts: vec![
                account("acme_news", 1001, 80),
                account("bistro_bob", 1002, 60),
                account("civic_lab", 1003, 40),
            ],
            public: Public {
                tweets: TweetSpec::Count(200),
            },
            tweets: TweetsConfig {
                spread_days: 120,
                deleted: TweetSpec::Count(3),
                protected: TweetSpec::Count(0),
                reowned: Vec::new(),
            },
            limits: Limits::default(),
            faults: Faults::default(),
            realistic: false,
            realism: RealismSpec::default(),
        }
    }

    /// A worker config (TOML) that points at a simulator of this world at `base_url`: the
    /// config's own serde types, written with the keys that differ from their defaults.
    pub fn worker_config_toml(&self, base_url: &str, inventory_path: &str) -> String {
        use crate::config::raw::{
            ApiConfig, InventoryConfig, Limit, RawAccount, RawApp, RawConfig,
        };
        let base = base_url.trim_end_matches('/');
        // The worker paces itself by the simulator's budgets: copied where set, 0 (unlimited)
        // where the simulator has none, so the worker's contract-sized defaults do not apply.
        let limit = |e: Endpoint| {
            let l = self.limits.of(e);
            Limit {
                per_minute: std::num::NonZeroU32::new(l.per_minute),
                per_second: std::num::NonZeroU32::new(l.per_second),
            }
        };
        let mut raw = RawConfig {
            api: ApiConfig {
                base_url: base.parse().expect("the simulator's address is a URL"),
                token_url: format!("{base}/oauth2/token")
                    .parse()
                    .expect("so is its token URL"),
                ..ApiConfig::default()
            },
            app: RawApp {
                consumer_key: Some(self.app.consumer_key.clone()),
                consumer_secret: Some(self.app.consumer_secret.clone()),
                ..RawApp::default()
            },
            // `user_id` lets the worker read the author id in a 403 "Forbidden to access tweets
            // for author id N: …" as one of its own accounts (a Tweet that changed hands).
            accounts: self
                .accounts
                .iter()
                .map(|a| RawAccount {
                    handle: Some(a.handle.as_str().to_string()),
                    user_id: Some(a.user_id),
                    access_token: Some(a.access_token.clone()),
                    access_token_secret: Some(a.access_token_secret.clone()),
                    ..RawAccount::default()
                })
                .collect(),
            inventory: InventoryConfig {
                path: inventory_path.into(),
                ..InventoryConfig::default()
            },
            ..RawConfig::default()
        };
        // What the worker cannot learn from the API: how far back /historical serves, and how
        // long numbers settle (the worker's 48 h default covers the realistic preset's 36 h).
        let realism = self.realism();
        raw.historical.lookback = (realism.lookback_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(realism.lookback_days) * 86_400));
        let settle = std::time::Duration::from_secs(u64::from(realism.settle_hours + 1) * 3600);
        raw.historical.settle_after = raw.historical.settle_after.max(settle);
        // The worker calls the `/28hr` job kind "hourly".
        raw.limits.totals = limit(Endpoint::Totals);
        raw.limits.hourly = limit(Endpoint::Hour28);
        raw.limits.historical = limit(Endpoint::Historical);
        let toml = raw
            .to_toml()
            .expect("the config's types always serialize to TOML");
        let mut out = String::from(
            "# Written by `engagement-ingest sim`: a worker config for this simulator.\n\
             # The bearer token is obtained from token_url.\n\n",
        );
        out.push_str(&toml);
        out
    }
}

/// The built-in demo world (see [`World::demo`]).
pub fn demo_world(seed: u64) -> World {
    World::demo(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
seed = 7
[app]
consumer_key = "sim-consumer"
consumer_secret = "sim-consumer-secret"
bearer_token = "sim-bearer"
"#;

    fn err(text: &str) -> String {
        World::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
seed = 7
[app]
consumer_key = "sim-consumer"
consumer_secret = "sim-consumer-secret"
bearer_token = "sim-bearer"
[[accounts]]
handle = "acme"
user_id = 1001
access_token = "1001-acme"
access_token_secret = "acme-secret"
tweets = 120
[[accounts]]
handle = "listed"
user_id = 1002
access_token = "1002-listed"
access_token_secret = "listed-secret"
tweets = ["1067094924124872705", 1070059276213702656]
revoked = true
[public]
tweets = 500
[tweets]
spread_days = 120
deleted = ["1067094924124872705"]
protected = 2
[limits]
totals = { per_minute = 0, per_second = 0 }
"28hr" = { per_minute = 5 }
historical = { per_minute = 0 }
[faults]
server_error = 0.1
rate_limited = 0.0
malformed = 0.0
dropped = 0.05
latency_ms = 0
"#;
        let w = World::from_toml_str(text).unwrap();
        assert_eq!(w.accounts[1].tweets.len(), 2);
        assert!(w.accounts[1].revoked);
        assert_eq!(w.limits.of(Endpoint::Hour28).per_minute, 5);
        assert_eq!(w.tweets.protected, TweetSpec::Count(2));
        assert_eq!(w.faults.server_error, 0.1);
        assert_eq!(w.faults.dropped, 0.05);
    }

    #[test]
    fn defaults_apply_to_a_minimal_world() {
        let w = World::from_toml_str(MINIMAL).unwrap();
        assert_eq!(w.tweets.spread_days, 120);
        assert!(w.accounts.is_empty() && w.public.tweets.is_empty());
        assert!(!w.limits.of(Endpoint::Totals).is_set());
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err(&format!("{MINIMAL}colour = 1\n")).contains("colour"));
        assert!(
            err(&format!(
                "{MINIMAL}[limits]\nhourly = {{ per_minute = 1 }}\n"
            ))
            .contains("hourly")
        );
        assert!(
            err(&format!("{MINIMAL}[faults]\nserver_errors = 0.5\n")).contains("server_errors")
        );
    }

    #[test]
    fn bad_values_say_what_and_where() {
        let e = err(&format!("{MINIMAL}[public]\ntweets = [\"12x\"]\n"));
        assert!(e.contains("12x") && e.contains("line"), "{e}");
        let e = err(&format!("{MINIMAL}[public]\ntweets = -3\n"));
        assert!(e.contains("invalid Tweet count -3"), "{e}");
        let e = err(&format!("{MINIMAL}[faults]\nmalformed = 1.5\n"));
        assert!(e.contains("faults.malformed"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[public]\ntweets = 2\n[tweets]\ndeleted = 3\n"
        ));
        assert!(e.contains("only 2 Tweets"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[public]\ntweets = 2\n[tweets]\ndeleted = [\"5\"]\n"
        ));
        assert!(e.contains("tweets.deleted: Tweet 5"), "{e}");
        let e = err(&format!("{MINIMAL}[public]\ntweets = [\"5\", 5]\n"));
        assert!(e.contains("listed twice"), "{e}");
    }

    const TWO_ACCOUNTS: &str = r#"
[[accounts]]
handle = "acme"
user_id = 1001
access_token = "1001-acme"
access_token_secret = "acme-secret"
tweets = 3
[[accounts]]
handle = "bob"
user_id = 1002
access_token = "1002-bob"
access_token_secret = "bob-secret"
tweets = ["1067094924124872705", "1070059276213702656"]
"#;

    #[test]
    fn reowned_tweets_parse_by_count_or_ids() {
        let text = format!(
            "{MINIMAL}{TWO_ACCOUNTS}\n[[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 2\n\
             [[tweets.reowned]]\nfrom = \"Bob\"\nto = \"acme\"\nids = [1070059276213702656]\n"
        );
        let w = World::from_toml_str(&text).unwrap();
        assert_eq!(w.tweets.reowned.len(), 2);
        assert_eq!(w.tweets.reowned[0].count, 2);
        assert_eq!(
            w.tweets.reowned[1].ids,
            ["1070059276213702656".parse::<TweetId>().unwrap()]
        );
        assert_eq!(w.account_index(&w.tweets.reowned[1].from), Some(1));
    }

    #[test]
    fn bad_reowned_entries_name_the_key() {
        let entry = |body: &str| {
            err(&format!(
                "{MINIMAL}{TWO_ACCOUNTS}\n[[tweets.reowned]]\n{body}\n"
            ))
        };
        let e = entry("from = \"acme\"\nto = \"carol\"\ncount = 1");
        assert!(
            e.contains("tweets.reowned[0].to: carol is not a configured account"),
            "{e}"
        );
        let e = entry("from = \"nobody\"\nto = \"bob\"\ncount = 1");
        assert!(e.contains("tweets.reowned[0].from: nobody"), "{e}");
        let e = entry("from = \"acme\"\nto = \"bob\"\ncount = 4");
        assert!(
            e.contains("tweets.reowned[0].count: acme has only 3 Tweets"),
            "{e}"
        );
        let e = entry("from = \"acme\"\nto = \"acme\"\ncount = 1");
        assert!(e.contains("tweets.reowned[0]: from and to"), "{e}");
        let e = entry("from = \"acme\"\nto = \"bob\"");
        assert!(e.contains("tweets.reowned[0]: moves no Tweet"), "{e}");
        let e = entry("from = \"bob\"\nto = \"acme\"\nids = [\"5\"]");
        assert!(
            e.contains("tweets.reowned[0].ids: Tweet 5 is not in accounts.bob.tweets"),
            "{e}"
        );
        let e = entry("from = \"acme\"\nto = \"bob\"\ncounts = 1");
        assert!(e.contains("counts"), "{e}");
        // Two entries together may not move more than the account has.
        let e = err(&format!(
            "{MINIMAL}{TWO_ACCOUNTS}\n[[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 2\n\
             [[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 2\n"
        ));
        assert!(e.contains("tweets.reowned[1].count"), "{e}");
        // Counted deleted Tweets are chosen among the ones that did not change hands.
        let e = err(&format!(
            "{MINIMAL}{TWO_ACCOUNTS}\n[tweets]\ndeleted = 4\n[[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 2\n"
        ));
        assert!(
            e.contains("only 3 Tweets that are not tweets.reowned"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_accounts_are_refused() {
        let acc = "[[accounts]]\nhandle = \"acme\"\nuser_id = 1\naccess_token = \"t\"\naccess_token_secret = \"s\"\n";
        let e = err(&format!("{MINIMAL}{acc}{acc}"));
        assert!(
            e.contains("accounts[1] (acme)") && e.contains("twice"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}[[accounts]]\nhandle = \"a-b\"\n"));
        assert!(e.contains("a-b"), "{e}");
    }

    #[test]
    fn worker_config_is_valid_toml_with_limits() {
        let mut w = World::demo(1);
        w.limits.hour28 = EndpointLimit {
            per_minute: 60,
            per_second: 2,
        };
        let text = w.worker_config_toml("http://127.0.0.1:4000", "tweets \"x\".csv");
        assert!(text.starts_with("# Written by `engagement-ingest sim`"));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            v["api"]["token_url"].as_str(),
            Some("http://127.0.0.1:4000/oauth2/token")
        );
        assert_eq!(v["inventory"]["path"].as_str(), Some("tweets \"x\".csv"));
        assert_eq!(v["accounts"].as_array().unwrap().len(), 3);
        assert_eq!(v["limits"]["hourly"]["per_second"].as_integer(), Some(2));
        assert_eq!(v["limits"]["totals"]["per_minute"].as_integer(), Some(0));
        assert!(v["app"].get("bearer_token").is_none());
        assert_eq!(v["accounts"][1]["user_id"].as_integer(), Some(1002));
        // The worker reads it: unset simulator budgets become "unlimited", set ones are copied.
        let config =
            crate::config::Config::parse("exported.toml", &text, std::iter::empty()).unwrap();
        assert_eq!(config.limits.totals.per_minute, None);
        assert_eq!(config.limits.hourly.per_minute.map(|n| n.get()), Some(60));
        assert_eq!(config.accounts[1].user_id, Some(1002));
    }
}
