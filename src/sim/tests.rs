//! HTTP tests of the simulator: a real server on `127.0.0.1:0`, reqwest with gzip, and requests
//! signed by oauth1-request (an independent OAuth implementation).

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use oauth1_request as oauth;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::contract::IMPRESSIONS_MAX_AGE_SECS;
use super::*;
use crate::domain::{DAY_SECS, Endpoint, Hour, Metric, TweetId};

pub(super) const WORLD: &str = r#"
seed = 11
[app]
consumer_key = "sim-consumer"
consumer_secret = "sim-consumer-secret"
bearer_token = "sim-bearer"
[[accounts]]
handle = "acme"
user_id = 1001
access_token = "1001-acme"
access_token_secret = "acme-secret"
tweets = 40
[[accounts]]
handle = "bob"
user_id = 1002
access_token = "1002-bob"
access_token_secret = "bob-secret"
tweets = 10
[[accounts]]
handle = "gone"
user_id = 1003
access_token = "1003-gone"
access_token_secret = "gone-secret"
tweets = 2
revoked = true
[public]
tweets = 30
[tweets]
deleted = 4
protected = 2
"#;

pub(super) struct TestSim {
    pub(super) handle: SimHandle,
    pub(super) http: reqwest::Client,
}

pub(super) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

impl TestSim {
    pub(super) async fn start(world: World) -> TestSim {
        // A clock frozen at the real time: OAuth timestamps stay valid, hour boundaries stay put.
        let clock = ManualClock::new(chrono::Utc::now().timestamp());
        let sim = Arc::new(Sim::with_clock(world, clock.clock()));
        let handle = spawn_sim(sim, localhost()).await.unwrap();
        TestSim {
            handle,
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> TestSim {
        TestSim::start(World::from_toml_str(WORLD).unwrap()).await
    }

    pub(super) fn sim(&self) -> &Sim {
        &self.handle.sim
    }

    pub(super) fn url(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.handle.base_url(), endpoint.path())
    }

    fn account(&self, handle: &str) -> &Account {
        self.sim()
            .world()
            .accounts
            .iter()
            .find(|a| a.handle.as_str() == handle)
            .unwrap()
    }

    /// Active Tweets owned by `owner` (`None` = public), filtered by `keep`.
    pub(super) fn ids(
        &self,
        owner: Option<&str>,
        keep: impl Fn(&SimTweet) -> bool,
    ) -> Vec<TweetId> {
        self.sim()
            .tweets()
            .iter()
            .filter(|t| t.owner.as_ref().map(|h| h.as_str()) == owner && keep(t))
            .map(|t| t.id)
            .collect()
    }

    pub(super) fn young(&self, owner: Option<&str>) -> Vec<TweetId> {
        let now = self.sim().now();
        self.ids(owner, |t| {
            t.state == TweetState::Active && t.id.age_at(now) < IMPRESSIONS_MAX_AGE_SECS
        })
    }

    pub(super) fn with_state(&self, state: TweetState) -> Vec<TweetId> {
        self.sim()
            .tweets()
            .iter()
            .filter(|t| t.state == state)
            .map(|t| t.id)
            .collect()
    }

    /// An OAuth 1.0a header for `handle`, signed by oauth1-request.
    pub(super) fn oauth(
        &self,
        endpoint: Endpoint,
        handle: &str,
        nonce: Option<&str>,
        timestamp: Option<i64>,
    ) -> String {
        let app = &self.sim().world().app;
        let a = self.account(handle);
        self.sign(
            endpoint,
            &app.consumer_key,
            &a.access_token,
            &a.access_token_secret,
            nonce,
            timestamp,
        )
    }

    fn sign(
        &self,
        endpoint: Endpoint,
        consumer_key: &str,
        token: &str,
        token_secret: &str,
        nonce: Option<&str>,
        timestamp: Option<i64>,
    ) -> String {
        let app = &self.sim().world().app;
        let token = oauth::Token::from_parts(
            consumer_key,
            app.consumer_secret.as_str(),
            token,
            token_secret,
        );
        let mut b = oauth::Builder::with_token(token, oauth::HMAC_SHA1);
        b.version(true);
        b.nonce(nonce);
        b.timestamp(timestamp.map(|t| NonZeroU64::new(t as u64).unwrap()));
        b.post(self.url(endpoint), &())
    }

    async fn post_with(
        &self,
        client: &reqwest::Client,
        endpoint: Endpoint,
        auth: &str,
        body: &Value,
    ) -> (u16, HeaderMap, Value) {
        let resp = client
            .post(self.url(endpoint))
            .header("Authorization", auth)
            .json(body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(super) async fn post(&self, endpoint: Endpoint, auth: &str, body: &Value) -> (u16, Value) {
        let (status, _, body) = self.post_with(&self.http, endpoint, auth, body).await;
        (status, body)
    }

    async fn stats(&self) -> Stats {
        let url = format!("{}/_sim/stats", self.handle.base_url());
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub(super) fn per_tweet(ids: &[TweetId], types: &[&str]) -> Value {
    json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types,
        "groupings": {"per tweet": {"group_by": ["tweet.id", "engagement.type"]}},
    })
}

pub(super) const BEARER: &str = "Bearer sim-bearer";
pub(super) const PUBLIC: [&str; 5] = [
    "favorites",
    "retweets",
    "quote_tweets",
    "replies",
    "video_views",
];

pub(super) fn errors(body: &Value) -> Vec<String> {
    serde_json::from_value(body["errors"].clone()).unwrap_or_default()
}

fn unauthenticated(reason: &str) -> Vec<String> {
    vec![format!(
        "Your account could not be authenticated. Reason: {reason}"
    )]
}

#[tokio::test]
async fn bearer_totals_are_the_sims_own_numbers() {
    let t = TestSim::default().await;
    let ids: Vec<TweetId> = t
        .ids(None, |s| s.state == TweetState::Active)
        .into_iter()
        .take(8)
        .collect();
    let (status, headers, body) = t
        .post_with(&t.http, Endpoint::Totals, BEARER, &per_tweet(&ids, &PUBLIC))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["x-per-minute-limit"],
        UNLIMITED.to_string().as_str()
    );
    assert!(
        headers.contains_key("x-per-minute-reset") && !headers.contains_key("x-per-second-limit")
    );
    let grouping = body["per tweet"].as_object().unwrap();
    assert_eq!(grouping.len(), ids.len());
    let now = t.sim().now();
    for id in &ids {
        let leaves = grouping[&id.to_string()].as_object().unwrap();
        assert_eq!(leaves.len(), PUBLIC.len());
        for m in PUBLIC {
            let expected = t.sim().total(*id, m.parse().unwrap(), now).to_string();
            assert_eq!(leaves[m], Value::String(expected), "{id} {m}");
        }
    }
    assert!(body.get("errors").is_none() && body.get("unavailable_tweet_ids").is_none());
    t.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn user_totals_add_impressions_and_list_partial_failures() {
    let t = TestSim::default().await;
    let now = t.sim().now();
    let young = t.young(Some("acme"))[0];
    let old = t.ids(Some("acme"), |s| {
        s.state == TweetState::Active && s.id.age_at(now) > IMPRESSIONS_MAX_AGE_SECS
    })[0];
    // A deleted Tweet, whoever wrote it, is not ownership-checked.
    let deleted = t.with_state(TweetState::Deleted)[0];
    let body = per_tweet(
        &[young, old, deleted],
        &["impressions", "engagements", "favorites"],
    );
    let auth = t.oauth(Endpoint::Totals, "acme", None, None);
    let (status, body) = t.post(Endpoint::Totals, &auth, &body).await;
    assert_eq!(status, 200, "{body}");
    let g = &body["per tweet"];
    for m in [Metric::Impressions, Metric::Engagements, Metric::Favorites] {
        assert_eq!(
            g[young.to_string()][m.as_str()],
            t.sim().total(young, m, now).to_string().as_str()
        );
    }
    assert_eq!(
        g[old.to_string()]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["favorites"]
    );
    assert!(g.get(deleted.to_string()).is_none());
    assert_eq!(body["unavailable_tweet_ids"], json!([deleted.to_string()]));
    assert_eq!(
        body["unsupported_for_impressions_engagements_tweet_ids"],
        json!([old.to_string()])
    );
    let errs = errors(&body);
    assert_eq!(errs[0], "1 Tweet ID(s) are unavailable");
    assert!(
        errs[1].starts_with("Impressions & engagements for tweets older than 90 days ("),
        "{errs:?}"
    );
    assert!(errs[1].ends_with(") are not supported"));
}

#[tokio::test]
async fn type_first_and_type_only_groupings_nest_in_order() {
    let t = TestSim::default().await;
    let ids: Vec<TweetId> = t.young(Some("acme")).into_iter().take(3).collect();
    let body = json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": ["impressions", "replies"],
        "groupings": {
            "by type": {"group_by": ["engagement.type", "tweet.id"]},
            "Grand Totals": {"group_by": ["engagement.type"]},
        },
    });
    let (status, body) = t
        .post(
            Endpoint::Totals,
            &t.oauth(Endpoint::Totals, "acme", None, None),
            &body,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let now = t.sim().now();
    let sum: i64 = ids
        .iter()
        .map(|id| t.sim().total(*id, Metric::Replies, now))
        .sum();
    assert_eq!(body["Grand Totals"]["replies"], sum.to_string().as_str());
    assert_eq!(body["by type"]["impressions"].as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn wrong_signature_is_refused() {
    let t = TestSim::default().await;
    let app = &t.sim().world().app;
    let auth = t.sign(
        Endpoint::Totals,
        &app.consumer_key,
        "1001-acme",
        "not-acme-secret",
        None,
        None,
    );
    let (status, body) = t
        .post(
            Endpoint::Totals,
            &auth,
            &per_tweet(&t.young(Some("acme")), &PUBLIC),
        )
        .await;
    assert_eq!(
        (status, errors(&body)),
        (401, unauthenticated("Invalid signature"))
    );
}

#[tokio::test]
async fn stale_timestamp_is_refused() {
    let t = TestSim::default().await;
    let stale = t.sim().now() - TIMESTAMP_SKEW_SECS - 60;
    let auth = t.oauth(Endpoint::Totals, "acme", None, Some(stale));
    let (status, body) = t
        .post(
            Endpoint::Totals,
            &auth,
            &per_tweet(&t.young(Some("acme")), &PUBLIC),
        )
        .await;
    assert_eq!(
        (status, errors(&body)),
        (401, unauthenticated("Timestamp out of bounds"))
    );
}

#[tokio::test]
async fn replayed_nonce_is_refused() {
    let t = TestSim::default().await;
    let auth = t.oauth(Endpoint::Totals, "acme", Some("once-only"), None);
    let body = per_tweet(&t.young(Some("acme")), &PUBLIC);
    assert_eq!(t.post(Endpoint::Totals, &auth, &body).await.0, 200);
    let (status, body) = t.post(Endpoint::Totals, &auth, &body).await;
    assert_eq!(
        (status, errors(&body)),
        (401, unauthenticated("Nonce already used"))
    );
}

#[tokio::test]
async fn unknown_token_and_revoked_token_are_refused() {
    let t = TestSim::default().await;
    let app = &t.sim().world().app;
    let body = per_tweet(&t.young(Some("acme")), &PUBLIC);
    let auth = t.sign(
        Endpoint::Totals,
        &app.consumer_key,
        "9999-nobody",
        "x",
        None,
        None,
    );
    let (status, resp) = t.post(Endpoint::Totals, &auth, &body).await;
    assert_eq!(
        (status, errors(&resp)),
        (401, unauthenticated("Access token not found"))
    );
    let auth = t.sign(
        Endpoint::Totals,
        "other-app",
        "1001-acme",
        "acme-secret",
        None,
        None,
    );
    let (status, resp) = t.post(Endpoint::Totals, &auth, &body).await;
    assert_eq!(
        (status, errors(&resp)),
        (401, unauthenticated("Invalid consumer key"))
    );
    let gone = t.ids(Some("gone"), |_| true);
    let (status, resp) = t
        .post(
            Endpoint::Totals,
            &t.oauth(Endpoint::Totals, "gone", None, None),
            &per_tweet(&gone, &PUBLIC),
        )
        .await;
    assert_eq!(
        (status, errors(&resp)),
        (401, unauthenticated("Access token revoked"))
    );
    let (status, resp) = t.post(Endpoint::Totals, "Basic abc", &body).await;
    assert_eq!(
        (status, errors(&resp)),
        (401, unauthenticated("Unknown Authorization Type"))
    );
    let (status, resp) = t.post(Endpoint::Totals, "Bearer wrong", &body).await;
    assert_eq!(
        (status, errors(&resp)),
        (401, unauthenticated("Invalid or expired token"))
    );
}

#[tokio::test]
async fn foreign_tweets_refuse_the_whole_request() {
    let t = TestSim::default().await;
    let mine = t.young(Some("acme"))[0];
    let bobs = t.ids(Some("bob"), |s| s.state == TweetState::Active)[0];
    let public = t.young(None)[0];
    let auth = t.oauth(Endpoint::Totals, "acme", None, None);
    let (status, body) = t
        .post(
            Endpoint::Totals,
            &auth,
            &per_tweet(&[bobs, mine, public], &PUBLIC),
        )
        .await;
    assert_eq!(status, 403);
    // One string per foreign author, authors and IDs ascending (simulator choice, 2016 form).
    let public_author = t.sim().tweet(public).unwrap().author_id;
    assert_eq!(
        errors(&body),
        [
            format!("Forbidden to access tweets for author id 1002: {bobs}"),
            format!("Forbidden to access tweets for author id {public_author}: {public}"),
        ]
    );
}

#[tokio::test]
async fn forbidden_ids_of_one_author_are_sorted_in_one_message() {
    let t = TestSim::default().await;
    let mut bobs = t.ids(Some("bob"), |s| s.state == TweetState::Active);
    bobs.truncate(3);
    bobs.reverse();
    let auth = t.oauth(Endpoint::Totals, "acme", None, None);
    let (status, body) = t
        .post(Endpoint::Totals, &auth, &per_tweet(&bobs, &PUBLIC))
        .await;
    bobs.sort();
    let ids: Vec<String> = bobs.iter().map(ToString::to_string).collect();
    assert_eq!(
        (status, errors(&body)),
        (
            403,
            vec![format!(
                "Forbidden to access tweets for author id 1002: {}",
                ids.join(", ")
            )]
        )
    );
}

/// `WORLD` with two of acme's Tweets now owned by bob.
fn reowned_world() -> World {
    World::from_toml_str(&format!(
        "{WORLD}[[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 2\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn reowned_tweets_are_refused_to_the_old_owner_naming_the_new_one() {
    let t = TestSim::start(reowned_world()).await;
    let moved: Vec<TweetId> = t
        .sim()
        .tweets()
        .iter()
        .filter(|s| s.is_reowned())
        .map(|s| s.id)
        .collect();
    assert_eq!(moved.len(), 2);
    for id in &moved {
        let s = t.sim().tweet(*id).unwrap();
        assert_eq!(s.owner.as_ref().unwrap().as_str(), "bob");
        assert_eq!(s.listed_owner.as_ref().unwrap().as_str(), "acme");
        assert_eq!((s.author_id, s.state), (1002, TweetState::Active));
    }
    let mine = t.young(Some("acme"))[0];
    let mut sorted = moved.clone();
    sorted.sort();
    let ids: Vec<String> = sorted.iter().map(ToString::to_string).collect();
    let body = per_tweet(&[moved[1], mine, moved[0]], &["favorites", "replies"]);
    let (status, resp) = t
        .post(
            Endpoint::Totals,
            &t.oauth(Endpoint::Totals, "acme", None, None),
            &body,
        )
        .await;
    assert_eq!(
        (status, errors(&resp)),
        (
            403,
            vec![format!(
                "Forbidden to access tweets for author id 1002: {}",
                ids.join(", ")
            )]
        )
    );
}

#[tokio::test]
async fn reowned_tweets_are_read_with_the_new_owners_token() {
    let t = TestSim::start(reowned_world()).await;
    let moved: Vec<TweetId> = t
        .sim()
        .tweets()
        .iter()
        .filter(|s| s.is_reowned())
        .map(|s| s.id)
        .collect();
    let bobs_own = t.ids(Some("bob"), |s| {
        s.state == TweetState::Active && !s.is_reowned()
    })[0];
    let mut ids = moved.clone();
    ids.push(bobs_own);
    let (status, resp) = t
        .post(
            Endpoint::Totals,
            &t.oauth(Endpoint::Totals, "bob", None, None),
            &per_tweet(&ids, &["favorites", "replies"]),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let now = t.sim().now();
    for id in &ids {
        for m in [Metric::Favorites, Metric::Replies] {
            assert_eq!(
                resp["per tweet"][id.to_string()][m.as_str()],
                t.sim().total(*id, m, now).to_string().as_str(),
                "{id} {m:?}"
            );
        }
    }
    assert!(resp.get("errors").is_none());
}

#[tokio::test]
async fn inventory_lists_reowned_tweets_under_the_old_owner() {
    let sim = Sim::new(reowned_world());
    let csv = sim.inventory_csv();
    let moved: Vec<&SimTweet> = sim.tweets().iter().filter(|s| s.is_reowned()).collect();
    assert_eq!(moved.len(), 2);
    for s in moved {
        assert!(csv.contains(&format!("\n{},acme\n", s.id)), "{}", s.id);
    }
    let listed = |h: &str| {
        csv.lines()
            .filter(|l| l.ends_with(&format!(",{h}")))
            .count()
    };
    // Inventory: acme still has all 40, bob his own 10; the API gives bob 12.
    assert_eq!((listed("acme"), listed("bob")), (40, 10));
    let owned = |h: &str| {
        sim.tweets()
            .iter()
            .filter(|s| s.owner.as_ref().is_some_and(|o| o.as_str() == h))
            .count()
    };
    assert_eq!((owned("acme"), owned("bob")), (38, 12));
}

#[tokio::test]
async fn dropped_connections_are_transport_errors_and_heal() {
    let mut world = World::from_toml_str(WORLD).unwrap();
    world.faults.dropped = 1.0;
    let t = TestSim::start(world).await;
    let body = per_tweet(&t.young(None), &PUBLIC);
    let send = || {
        t.http
            .post(t.url(Endpoint::Totals))
            .header("Authorization", BEARER)
            .json(&body)
            .send()
    };
    for _ in 0..3 {
        let err = send()
            .await
            .expect_err("a dropped connection is not a response");
        assert!(!err.is_status() && err.status().is_none(), "{err:?}");
    }
    let stats = t.stats().await;
    assert_eq!(
        stats.requests,
        [RequestCount {
            endpoint: "totals".into(),
            credential: "bearer".into(),
            status: DROPPED_STATUS,
            count: 3,
        }]
    );
    t.sim().set_faults(Faults::default()).unwrap();
    assert_eq!(t.post(Endpoint::Totals, BEARER, &body).await.0, 200);
    // And back again over HTTP.
    let url = format!("{}/_sim/faults", t.handle.base_url());
    let set = t.http.post(&url).json(&json!({"dropped": 1.0})).send();
    assert_eq!(set.await.unwrap().status(), 200);
    assert!(send().await.is_err());
    let bad = t.http.post(&url).json(&json!({"dropped": 1.5})).send();
    assert_eq!(bad.await.unwrap().status(), 400);
}

#[tokio::test]
async fn bearer_may_not_read_impressions() {
    let t = TestSim::default().await;
    let body = per_tweet(&t.young(None), &["favorites", "impressions", "engagements"]);
    let (status, body) = t.post(Endpoint::Totals, BEARER, &body).await;
    assert_eq!(
        (status, errors(&body)),
        (
            403,
            vec!["Forbidden to access metrics: impressions, engagements".into()]
        )
    );
    let (status, _) = t
        .post(
            Endpoint::Hour28,
            BEARER,
            &per_tweet(&t.young(None)[..1], &["favorites"]),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn more_than_250_ids_is_a_bad_request() {
    let t = TestSim::default().await;
    let ids: Vec<TweetId> = (1..=251).map(|n| TweetId::new(n).unwrap()).collect();
    let (status, body) = t
        .post(Endpoint::Totals, BEARER, &per_tweet(&ids, &PUBLIC))
        .await;
    assert_eq!(
        (status, errors(&body)),
        (
            400,
            vec!["Too many Tweet IDs: 251 (at most 250 per request)".into()]
        )
    );
}

#[tokio::test]
async fn unknown_or_unaccepted_types_are_bad_requests() {
    let t = TestSim::default().await;
    let ids = t.young(None);
    let (status, body) = t
        .post(Endpoint::Totals, BEARER, &per_tweet(&ids, &["likes"]))
        .await;
    assert_eq!(
        (status, errors(&body)),
        (400, vec!["Unknown engagement type: likes".into()])
    );
    let (status, body) = t
        .post(Endpoint::Totals, BEARER, &per_tweet(&ids, &["url_clicks"]))
        .await;
    assert_eq!(
        (status, errors(&body)),
        (
            400,
            vec!["Engagement type url_clicks is not supported by /totals".into()]
        )
    );
}

#[tokio::test]
async fn time_grouping_on_totals_gets_the_documented_text() {
    let t = TestSim::default().await;
    let mut body = per_tweet(&t.young(None), &PUBLIC);
    body["groupings"] =
        json!({"hourly": {"group_by": ["tweet.id", "engagement.type", "engagement.hour"]}});
    let (status, body) = t.post(Endpoint::Totals, BEARER, &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        errors(&body),
        [
            "One or more of the groupBys you have specified are not supported: (engagement.hour). Please adjust your request and try again."
        ]
    );
}

#[tokio::test]
async fn missing_gzip_is_not_acceptable() {
    let t = TestSim::default().await;
    let plain = reqwest::Client::builder().no_gzip().build().unwrap();
    let (status, headers, body) = t
        .post_with(
            &plain,
            Endpoint::Totals,
            BEARER,
            &per_tweet(&t.young(None), &PUBLIC),
        )
        .await;
    assert_eq!(status, 406);
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(body, json!({"errors": [GZIP_REQUIRED]}));
    assert!(headers.contains_key("x-per-minute-remaining"));
}

#[tokio::test]
async fn answers_are_gzip_encoded() {
    let t = TestSim::default().await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = raw
        .post(t.url(Endpoint::Totals))
        .header("Authorization", BEARER)
        .header("Accept-Encoding", "gzip")
        .json(&per_tweet(&t.young(None), &PUBLIC))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let bytes = resp.bytes().await.unwrap();
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut json)
        .unwrap();
    assert!(serde_json::from_str::<Value>(&json).unwrap()["per tweet"].is_object());
}

#[tokio::test]
async fn protected_tweets_refuse_the_request_with_400() {
    let t = TestSim::default().await;
    let protected = t.with_state(TweetState::Protected)[0];
    let (status, body) = t
        .post(
            Endpoint::Totals,
            BEARER,
            &per_tweet(&[t.young(None)[0], protected], &PUBLIC),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errors": ["1 Tweet ID(s) are unavailable"], "unavailable_tweet_ids": [protected.to_string()]})
    );
}

#[tokio::test]
async fn stats_count_requests_by_endpoint_credential_and_status() {
    let t = TestSim::default().await;
    let body = per_tweet(&t.young(Some("acme")), &PUBLIC);
    t.post(Endpoint::Totals, BEARER, &body).await;
    t.post(Endpoint::Totals, BEARER, &body).await;
    t.post(
        Endpoint::Totals,
        &t.oauth(Endpoint::Totals, "acme", None, None),
        &body,
    )
    .await;
    let bad = t.sign(
        Endpoint::Totals,
        "sim-consumer",
        "1002-bob",
        "wrong",
        None,
        None,
    );
    t.post(Endpoint::Totals, &bad, &body).await;
    t.post(Endpoint::Totals, "Basic x", &body).await;
    let stats = t.stats().await;
    let row = |endpoint: &str, credential: &str, status: u16, count: u64| RequestCount {
        endpoint: endpoint.into(),
        credential: credential.into(),
        status,
        count,
    };
    assert_eq!(
        stats.requests,
        [
            row("totals", "acme", 200, 1),
            row("totals", "bearer", 200, 2),
            row("totals", "bob", 401, 1),
            row("totals", "unknown", 401, 1)
        ]
    );
    // bob's request failed authentication, so only acme is a billed handle.
    assert_eq!(stats.unique_handles, ["acme".parse().unwrap()]);
}

#[tokio::test]
async fn oauth2_token_issues_the_bearer_for_client_credentials() {
    let t = TestSim::default().await;
    let url = format!("{}/oauth2/token", t.handle.base_url());
    let form = |basic: &str| {
        t.http
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body("grant_type=client_credentials")
    };
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode("sim-consumer:sim-consumer-secret");
    let resp: Value = form(&good).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        resp,
        json!({"token_type": "bearer", "access_token": "sim-bearer"})
    );
    let bad = base64::engine::general_purpose::STANDARD.encode("sim-consumer:nope");
    let resp = form(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 99);
    let stats = t.stats().await;
    assert_eq!(stats.count("oauth2/token"), 2);
}

#[tokio::test]
async fn per_minute_budget_gives_429_with_headers() {
    let mut world = World::from_toml_str(WORLD).unwrap();
    world.limits.totals = EndpointLimit {
        per_minute: 2,
        per_second: 0,
    };
    let t = TestSim::start(world).await;
    let body = per_tweet(&t.young(None), &PUBLIC);
    for remaining in ["1", "0"] {
        let (status, headers, _) = t.post_with(&t.http, Endpoint::Totals, BEARER, &body).await;
        assert_eq!(
            (status, headers["x-per-minute-remaining"].to_str().unwrap()),
            (200, remaining)
        );
    }
    let (status, headers, resp) = t.post_with(&t.http, Endpoint::Totals, BEARER, &body).await;
    assert_eq!(
        (status, errors(&resp)),
        (429, vec![RATE_LIMITED.to_string()])
    );
    let reset: i64 = headers["x-per-minute-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(reset % 60, 0);
    assert!(reset > t.sim().now() && reset <= t.sim().now() + 60);
}

#[tokio::test]
async fn faults_can_be_injected_and_healed() {
    let t = TestSim::default().await;
    let url = format!("{}/_sim/faults", t.handle.base_url());
    let body = per_tweet(&t.young(None), &PUBLIC);
    let set = |v: Value| t.http.post(&url).json(&v).send();
    assert_eq!(
        set(json!({"server_error": 1.0})).await.unwrap().status(),
        200
    );
    let (status, resp) = t.post(Endpoint::Totals, BEARER, &body).await;
    assert!(status == 500 || status == 503);
    assert_eq!(errors(&resp), [INTERNAL_ERROR]);
    set(json!({"malformed": 1.0})).await.unwrap();
    let (status, resp) = t.post(Endpoint::Totals, BEARER, &body).await;
    assert!(
        status == 200 && resp.is_string(),
        "a truncated body is not JSON: {resp}"
    );
    assert_eq!(set(json!({"bogus": 1})).await.unwrap().status(), 400);
    set(json!({})).await.unwrap();
    assert_eq!(t.post(Endpoint::Totals, BEARER, &body).await.0, 200);
    assert_eq!(t.sim().faults(), Faults::default());
}

#[tokio::test]
async fn other_paths_and_methods_are_404() {
    let t = TestSim::default().await;
    let base = t.handle.base_url();
    let get = t.http.get(t.url(Endpoint::Totals)).send().await.unwrap();
    assert_eq!(get.status(), 404);
    let other = t
        .http
        .post(format!("{base}/insights/engagement/daily"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.unwrap();
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("/insights/engagement/daily")
    );
}

#[tokio::test]
async fn hour28_series_are_the_sims_hourly_buckets() {
    let t = TestSim::default().await;
    let id = t.young(Some("acme"))[0];
    let body = json!({
        "tweet_ids": [id.to_string()],
        "engagement_types": ["impressions", "favorites"],
        "groupings": {
            "series": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]},
            "window": {"group_by": ["engagement.type"]},
        },
    });
    let (status, resp) = t
        .post(
            Endpoint::Hour28,
            &t.oauth(Endpoint::Hour28, "acme", None, None),
            &body,
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let now = t.sim().now();
    let (start, end) = (Hour::floor(now - 28 * 3600), Hour::ceil(now));
    assert_eq!(resp["start"], start.to_string().as_str());
    assert_eq!(resp["end"], end.to_string().as_str());
    let mut hours = 0;
    let mut favorites = 0;
    let mut h = start;
    while h < end {
        let (day, hh) = h.keys();
        let ended = h.plus_hours(1).secs() <= now;
        let expected = if ended {
            t.sim().bucket(id, Metric::Favorites, h)
        } else {
            0
        };
        assert_eq!(
            resp["series"][id.to_string()]["favorites"][&day][&hh],
            expected.to_string().as_str()
        );
        favorites += expected;
        hours += 1;
        h = h.plus_hours(1);
    }
    assert!(hours >= 28);
    assert_eq!(resp["window"]["favorites"], favorites.to_string().as_str());
}

#[tokio::test]
async fn historical_windows_sum_to_totals_and_refuse_bad_ranges() {
    let t = TestSim::default().await;
    let now = t.sim().now();
    let id = t.ids(Some("bob"), |s| {
        s.state == TweetState::Active && s.id.age_at(now) > 4 * DAY_SECS
    })[0];
    let start = Hour::floor(id.created_at());
    let end = start.plus_hours(24 * 3);
    let body = json!({
        "start": start.to_string(),
        "end": end.to_string(),
        "tweet_ids": [id.to_string()],
        "engagement_types": ["replies", "url_clicks"],
        "groupings": {"sum": {"group_by": ["tweet.id", "engagement.type"]}},
    });
    let auth = t.oauth(Endpoint::Historical, "bob", None, None);
    let (status, resp) = t.post(Endpoint::Historical, &auth, &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["sum"][id.to_string()]["replies"],
        t.sim()
            .total(id, Metric::Replies, end.secs())
            .to_string()
            .as_str()
    );
    let mut long = body.clone();
    long["end"] = json!(start.plus_hours(24 * 29).to_string());
    let (status, _) = t
        .post(
            Endpoint::Historical,
            &t.oauth(Endpoint::Historical, "bob", None, None),
            &long,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn two_sims_started_the_same_day_agree() {
    let a = Sim::new(World::from_toml_str(WORLD).unwrap());
    let b = Sim::new(World::from_toml_str(WORLD).unwrap());
    if a.start_day() == b.start_day() {
        assert_eq!(a.tweets(), b.tweets());
        assert_eq!(a.inventory_csv(), b.inventory_csv());
    }
    assert!(a.tweets().iter().all(|t| t.id.created_at() < a.start_day()));
    assert!(
        a.tweets()
            .iter()
            .all(|t| t.id.created_at() >= a.start_day() - 120 * DAY_SECS)
    );
}

#[tokio::test]
async fn serve_cli_exports_inventory_and_config_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let world_path = dir.path().join("world.toml");
    std::fs::write(&world_path, WORLD).unwrap();
    let (config, inventory) = (
        dir.path().join("worker.toml"),
        dir.path().join("tweets.csv"),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let task = {
        let (w, c, i, s) = (
            world_path.clone(),
            config.clone(),
            inventory.clone(),
            stop.clone(),
        );
        tokio::spawn(async move { serve_cli(&w, localhost(), Some(&c), Some(&i), s).await })
    };
    // The config is written before serving starts; poll for it with a bound.
    let mut text = String::new();
    for _ in 0..200 {
        if let Ok(t) = std::fs::read_to_string(&config) {
            text = t;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cfg: toml::Table = toml::from_str(&text).expect("worker config written");
    assert_eq!(
        cfg["inventory"]["path"].as_str(),
        Some(inventory.display().to_string().as_str())
    );
    let base = cfg["api"]["base_url"].as_str().unwrap().to_string();
    let csv = std::fs::read_to_string(&inventory).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("tweet_id,owner"));
    assert_eq!(lines.clone().count(), 40 + 10 + 2 + 30);
    assert_eq!(lines.filter(|l| l.ends_with(',')).count(), 30);
    let stats = reqwest::get(format!("{base}/_sim/stats")).await.unwrap();
    assert_eq!(stats.status(), 200);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_cli_reports_a_bad_world() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("world.toml");
    std::fs::write(&path, "seed = 1\n[app]\nconsumer_key = \"k\"\n").unwrap();
    let err = serve_cli(&path, localhost(), None, None, Default::default())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("world.toml") && text.contains("consumer_secret"),
        "{text}"
    );
}

#[tokio::test]
async fn a_full_historical_batch_is_dense_and_zero_filled() {
    let t = TestSim::default().await;
    let ids: Vec<TweetId> = t
        .ids(Some("acme"), |s| s.state == TweetState::Active)
        .into_iter()
        .take(25)
        .collect();
    let types: Vec<&str> = Metric::ALL
        .iter()
        .filter(|m| super::contract::accepts(Endpoint::Historical, **m))
        .map(|m| m.as_str())
        .collect();
    let body = json!({
        "tweet_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "engagement_types": types,
        "groupings": {"s": {"group_by": ["engagement.type", "tweet.id", "engagement.day", "engagement.hour"]}},
    });
    let auth = t.oauth(Endpoint::Historical, "acme", None, None);
    let (status, resp) = t.post(Endpoint::Historical, &auth, &body).await;
    assert_eq!(status, 200, "{resp}");
    let leaves: usize = resp["s"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|by_id| by_id.as_object().unwrap().values())
        .flat_map(|by_day| by_day.as_object().unwrap().values())
        .map(|hours| hours.as_object().unwrap().len())
        .sum();
    assert_eq!(leaves, 17 * 25 * 28 * 24);
}

#[tokio::test]
async fn tweets_older_than_1800_days_report_zero_video_views() {
    let mut world = World::from_toml_str(WORLD).unwrap();
    let old: TweetId = "1067094924124872705".parse().unwrap(); // 2018-11-26
    world.public.tweets = TweetSpec::List(vec![old]);
    world.tweets.deleted = TweetSpec::Count(0);
    world.tweets.protected = TweetSpec::Count(0);
    let t = TestSim::start(world).await;
    let (status, body) = t
        .post(Endpoint::Totals, BEARER, &per_tweet(&[old], &PUBLIC))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["unsupported_for_video_views_tweet_ids"],
        json!([old.to_string()])
    );
    assert_eq!(body["per tweet"][old.to_string()]["video_views"], "0");
    let favorites = t
        .sim()
        .total(old, Metric::Favorites, t.sim().now())
        .to_string();
    assert_eq!(
        body["per tweet"][old.to_string()]["favorites"],
        favorites.as_str()
    );
}

/// `WORLD` with a `[realism]` section of `knobs`.
fn world_with(knobs: &str) -> World {
    World::from_toml_str(&format!("{WORLD}\n[realism]\n{knobs}\n")).unwrap()
}

/// A bearer `/totals` request with exactly these headers and `body` as text (no `Content-Type`
/// unless given), sent by a client that neither asks for nor decodes gzip by itself.
async fn post_raw(t: &TestSim, headers: &[(&str, &str)], body: &Value) -> (u16, HeaderMap, Value) {
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut req = raw
        .post(t.url(Endpoint::Totals))
        .header("Authorization", BEARER)
        .body(body.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let bytes = resp.bytes().await.unwrap();
    let text = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    (status, headers, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn content_type_is_refused_only_when_the_world_requires_it() {
    let t = TestSim::start(world_with("require_content_type = true")).await;
    let body = per_tweet(&t.young(None), &PUBLIC);
    let gzip = ("Accept-Encoding", "gzip");
    let (status, headers, resp) = post_raw(&t, &[gzip], &body).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(
        errors(&resp),
        ["Content-Type is missing: send Content-Type: application/json with a JSON request body"]
    );
    assert!(headers.contains_key("x-per-minute-remaining"));
    let (status, _, resp) = post_raw(&t, &[gzip, ("Content-Type", "text/plain")], &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        errors(&resp),
        [
            "Content-Type \"text/plain\" is not supported: send Content-Type: application/json with a JSON request body"
        ]
    );
    let json_utf8 = ("Content-Type", "Application/JSON; charset=utf-8");
    let (status, _, resp) = post_raw(&t, &[gzip, json_utf8], &body).await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp["per tweet"].is_object());
    // Gzip and auth come first: their refusals win over a missing Content-Type.
    let (status, _, _) = post_raw(&t, &[], &body).await;
    assert_eq!(status, 406);
    t.handle.shutdown().await.unwrap();

    let tidy = TestSim::default().await;
    let body = per_tweet(&tidy.young(None), &PUBLIC);
    let (status, _, resp) = post_raw(&tidy, &[gzip], &body).await;
    assert_eq!(status, 200, "not required in a tidy world: {resp}");
    tidy.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn accept_encoding_q_values_decide_gzip() {
    let t = TestSim::default().await;
    let body = per_tweet(&t.young(None), &PUBLIC);
    for refused in ["gzip;q=0", "identity", "gzip;q=0, *;q=1", "*;q=0"] {
        let (status, headers, resp) = post_raw(&t, &[("Accept-Encoding", refused)], &body).await;
        assert_eq!(status, 406, "{refused}: {resp}");
        assert_eq!(resp, json!({"errors": [GZIP_REQUIRED]}), "{refused}");
        assert!(headers.get("content-encoding").is_none(), "{refused}");
    }
    for accepted in [
        "*",
        "identity;q=1, *;q=0.5",
        "deflate, gzip;q=0.2",
        "x-gzip",
    ] {
        let (status, headers, resp) = post_raw(&t, &[("Accept-Encoding", accepted)], &body).await;
        assert_eq!(status, 200, "{accepted}: {resp}");
        assert_eq!(headers["content-encoding"], "gzip", "{accepted}");
        assert!(resp["per tweet"].is_object(), "{accepted}");
    }
    t.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn realistic_historical_takes_integer_ids_and_offsets_and_rounds_the_end() {
    let t = TestSim::start(
        World::from_toml_str(&WORLD.replace("seed = 11", "seed = 11\nrealistic = true")).unwrap(),
    )
    .await;
    let now = t.sim().now();
    let id = t.ids(Some("bob"), |s| {
        s.state == TweetState::Active && s.id.age_at(now) > 4 * DAY_SECS
    })[0];
    let start = Hour::floor(id.created_at());
    let end = start.plus_hours(24);
    let iso = |h: Hour| h.to_string().replace('Z', "");
    let body = json!({
        "start": format!("{}.000Z", iso(start)),
        "end": format!("{}+00:00", iso(end).replace(":00:00", ":37:00")),
        "tweet_ids": [id.get()],
        "engagement_types": ["replies"],
        "groupings": {"sum": {"group_by": ["tweet.id", "engagement.type"]}},
    });
    let auth = t.oauth(Endpoint::Historical, "bob", None, None);
    let (status, resp) = t.post(Endpoint::Historical, &auth, &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["start"], start.to_string().as_str());
    assert_eq!(resp["end"], end.plus_hours(1).to_string().as_str());
    assert!(resp["sum"][id.to_string()]["replies"].is_string(), "{resp}");
    // Older than the 365-day lookback: refused, naming the first hour served.
    let mut old = body.clone();
    old["start"] = json!("2016-01-01T00:00:00Z");
    old["end"] = json!("2016-01-02T00:00:00Z");
    let auth = t.oauth(Endpoint::Historical, "bob", None, None);
    let (status, resp) = t.post(Endpoint::Historical, &auth, &old).await;
    assert_eq!(status, 400);
    let floor = Hour::floor(now).secs() - 365 * DAY_SECS;
    assert_eq!(
        errors(&resp),
        [format!(
            "start (2016-01-01T00:00:00Z) is before the earliest available data, {}: engagement data is limited to the last 365 days",
            crate::domain::iso_utc(floor)
        )]
    );
    t.handle.shutdown().await.unwrap();
}
