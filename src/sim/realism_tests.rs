//! End-to-end tests of the `[realism]` knobs that shape answers (settling, order, forms).

use std::sync::Arc;

use serde_json::{Value, json};

use super::tests::{BEARER, PUBLIC, TestSim, WORLD, errors, localhost, per_tweet};
use super::*;
use crate::domain::{Endpoint, HOUR_SECS, Hour, Metric, TweetId};

/// `WORLD` with these `[realism]` lines.
fn world(knobs: &str) -> World {
    World::from_toml_str(&format!("{WORLD}\n[realism]\n{knobs}\n")).unwrap()
}

/// A test simulator on `clock`, which the test moves; requests must then carry its time.
async fn start_on(world: World, clock: &ManualClock) -> TestSim {
    let sim = Arc::new(Sim::with_clock(world, clock.clock()));
    TestSim {
        handle: spawn_sim(sim, localhost()).await.unwrap(),
        http: reqwest::Client::new(),
    }
}

impl TestSim {
    /// A request signed for `handle` at the simulator's time (its clock may have moved).
    async fn post_as(&self, endpoint: Endpoint, handle: &str, body: &Value) -> (u16, Value) {
        let auth = self.oauth(endpoint, handle, None, Some(self.sim().now()));
        self.post(endpoint, &auth, body).await
    }

    /// The body text exactly as sent (after gzip), for its key order.
    async fn post_raw(&self, endpoint: Endpoint, auth: &str, body: &Value) -> (u16, String) {
        let resp = self
            .http
            .post(self.url(endpoint))
            .header("Authorization", auth)
            .json(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// The `keys` that occur in `raw` as object keys, in the order of their first occurrence.
fn key_order<S: AsRef<str>>(raw: &str, keys: &[S]) -> Vec<String> {
    let mut found: Vec<(usize, String)> = keys
        .iter()
        .filter_map(|k| {
            let k = k.as_ref();
            raw.find(&format!("\"{k}\":")).map(|at| (at, k.to_string()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn series_body(ids: &[TweetId], types: &[&str]) -> Value {
    json!({
        "tweet_ids": strings(ids),
        "engagement_types": types,
        "groupings": {
            "series": {"group_by": ["tweet.id", "engagement.type", "engagement.day", "engagement.hour"]},
            "window": {"group_by": ["engagement.type"]},
        },
    })
}

/// Every (hour, value) of `id`'s `metric` in a `series` grouping.
fn series_values(resp: &Value, id: TweetId, metric: Metric) -> Vec<(Hour, i64)> {
    let mut out = Vec::new();
    for (day, hours) in resp["series"][id.to_string()][metric.as_str()]
        .as_object()
        .unwrap()
    {
        for (hh, v) in hours.as_object().unwrap() {
            let hour = Hour::from_keys(day, hh).unwrap();
            out.push((hour, v.as_str().unwrap().parse().unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn hours_settle_over_settle_hours_then_stay_and_totals_follow() {
    // 40 minutes into an hour, so the current hour has a partial count.
    let clock = ManualClock::new(Hour::floor(chrono::Utc::now().timestamp()).secs() + 2400);
    let now0 = clock.clock()();
    let mut w = world("settle_hours = 3");
    // Young Tweets, whose last hours still move.
    let ids: Vec<TweetId> = [3, 10, 20]
        .iter()
        .map(|h| TweetId::from_snowflake((now0 - h * HOUR_SECS - 700) * 1000, 1))
        .collect();
    w.accounts[0].tweets = TweetSpec::List(ids.clone());
    // No counted marks: they could land on these Tweets.
    (w.tweets.deleted, w.tweets.protected) = (TweetSpec::Count(0), TweetSpec::Count(0));
    let t = start_on(w, &clock).await;
    let types = ["impressions", "favorites"];
    let (status, first) = t
        .post_as(Endpoint::Hour28, "acme", &series_body(&ids, &types))
        .await;
    assert_eq!(status, 200, "{first}");
    let (mut unsettled, mut partial_current) = (0, 0);
    for &id in &ids {
        for metric in [Metric::Impressions, Metric::Favorites] {
            for (hour, v) in series_values(&first, id, metric) {
                assert_eq!(v, t.sim().bucket_at(id, metric, hour, now0), "{id} {hour}");
                let fin = t.sim().bucket(id, metric, hour);
                if hour == Hour::floor(now0) {
                    partial_current += usize::from(v != 0 && v != fin);
                } else if v != fin {
                    unsettled += 1;
                }
            }
        }
    }
    assert!(
        unsettled > 3 && partial_current > 0,
        "{unsettled} {partial_current}"
    );

    // /totals at now is what the series would answer for every hour, at now.
    let (status, totals) = t
        .post_as(Endpoint::Totals, "acme", &per_tweet(&ids, &types))
        .await;
    assert_eq!(status, 200, "{totals}");
    for &id in &ids {
        let mut sum = 0;
        let mut h = Hour::floor(id.created_at());
        while h.secs() <= now0 {
            sum += t.sim().bucket_at(id, Metric::Impressions, h, now0);
            h = h.plus_hours(1);
        }
        assert_eq!(sum, t.sim().total(id, Metric::Impressions, now0));
        assert_eq!(
            totals["per tweet"][id.to_string()]["impressions"],
            sum.to_string().as_str()
        );
    }

    // Past the settle window every hour answered then is final, and then it stays.
    clock.advance(5 * HOUR_SECS);
    let (_, settled) = t
        .post_as(Endpoint::Hour28, "acme", &series_body(&ids, &types))
        .await;
    clock.advance(30 * HOUR_SECS);
    let (_, later) = t
        .post_as(Endpoint::Historical, "acme", &{
            let mut b = series_body(&ids, &types);
            b["start"] = json!(Hour::floor(now0).plus_hours(-20).to_string());
            b["end"] = json!(Hour::floor(now0).plus_hours(1).to_string());
            b
        })
        .await;
    let later: Vec<(Hour, i64)> = series_values(&later, ids[2], Metric::Impressions);
    let mut checked = 0;
    for (hour, v) in series_values(&settled, ids[2], Metric::Impressions) {
        if hour <= Hour::floor(now0) {
            assert_eq!(
                v,
                t.sim().bucket(ids[2], Metric::Impressions, hour),
                "{hour}"
            );
            if let Some((_, again)) = later.iter().find(|(h, _)| *h == hour) {
                assert_eq!(*again, v, "{hour} moved after settling");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 21);
}

#[tokio::test]
async fn tweets_come_back_in_request_order_by_default_and_sorted_when_asked() {
    for (knobs, sorted) in [("", false), ("tweet_order = \"sorted\"", true)] {
        let t = TestSim::start(world(knobs)).await;
        let mut ids = t.ids(None, |s| s.state == TweetState::Active);
        ids.truncate(8);
        ids.sort();
        ids.reverse();
        let mut deleted = t.with_state(TweetState::Deleted);
        deleted.sort();
        deleted.reverse();
        let asked: Vec<TweetId> = ids.iter().chain(&deleted).copied().collect();
        let (status, raw) = t
            .post_raw(Endpoint::Totals, BEARER, &per_tweet(&asked, &PUBLIC))
            .await;
        assert_eq!(status, 200, "{raw}");
        let body: Value = serde_json::from_str(&raw).unwrap();
        let expect = |mut v: Vec<TweetId>| {
            if sorted {
                v.sort();
            }
            strings(&v)
        };
        assert_eq!(
            key_order(&raw, &strings(&ids)),
            expect(ids.clone()),
            "{knobs}"
        );
        assert_eq!(
            body["unavailable_tweet_ids"],
            json!(expect(deleted.clone()))
        );
    }
}

#[tokio::test]
async fn shuffled_tweets_change_order_between_requests_but_not_content() {
    let t = TestSim::start(world("tweet_order = \"shuffled\"")).await;
    let tidy = TestSim::start(world("")).await;
    let mut ids = t.ids(None, |s| s.state == TweetState::Active);
    ids.truncate(6);
    let body = per_tweet(&ids, &PUBLIC);
    let (_, expected) = tidy.post(Endpoint::Totals, BEARER, &body).await;
    let mut orders = Vec::new();
    for _ in 0..6 {
        let (status, raw) = t.post_raw(Endpoint::Totals, BEARER, &body).await;
        assert_eq!(status, 200, "{raw}");
        assert_eq!(serde_json::from_str::<Value>(&raw).unwrap(), expected);
        orders.push(key_order(&raw, &strings(&ids)));
    }
    assert!(orders.iter().any(|o| *o != strings(&ids)), "{orders:?}");
    assert!(orders.iter().any(|o| *o != orders[0]), "{orders:?}");
}

/// The top-level keys, the type keys and the hour keys of a `/28hr` answer, in body order.
fn orders_of(raw: &str) -> [Vec<String>; 3] {
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
    let types: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
    [
        key_order(
            raw,
            &["start", "end", "series", "window", "unavailable_tweet_ids"],
        ),
        key_order(raw, &types),
        key_order(raw, &hours),
    ]
}

#[tokio::test]
async fn shuffled_keys_reorder_the_raw_body_and_keep_its_content() {
    let t = TestSim::start(world("shuffle_keys = true")).await;
    let tidy = TestSim::start(world("")).await;
    let mut ids = t.young(Some("acme"));
    ids.truncate(2);
    ids.push(t.with_state(TweetState::Deleted)[0]);
    let body = series_body(
        &ids,
        &["impressions", "engagements", "favorites", "url_clicks"],
    );
    let auth = |s: &TestSim| s.oauth(Endpoint::Hour28, "acme", None, None);
    let (_, tidy_raw) = tidy.post_raw(Endpoint::Hour28, &auth(&tidy), &body).await;
    let [top, types, hours] = orders_of(&tidy_raw);
    // Tidy: meta keys sorted (serde_json's map), then the groupings; types in `Metric::ALL`
    // order; hours ascending from the window's first.
    assert_eq!(
        top,
        ["end", "start", "unavailable_tweet_ids", "series", "window"]
    );
    assert_eq!(
        types,
        ["impressions", "engagements", "favorites", "url_clicks"]
    );
    let first = Hour::floor(t.sim().now() - 28 * HOUR_SECS).keys().1;
    let mut ascending: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
    ascending.rotate_left(first.parse().unwrap());
    assert_eq!(hours, ascending);

    let tidy_value: Value = serde_json::from_str(&tidy_raw).unwrap();
    let mut changed = [false; 3];
    for _ in 0..6 {
        let (status, raw) = t.post_raw(Endpoint::Hour28, &auth(&t), &body).await;
        assert_eq!(status, 200, "{raw}");
        assert_eq!(serde_json::from_str::<Value>(&raw).unwrap(), tidy_value);
        let drawn = orders_of(&raw);
        for (i, (d, tidy)) in drawn.iter().zip([&top, &types, &hours]).enumerate() {
            changed[i] |= d != tidy;
        }
    }
    assert_eq!(changed, [true; 3]);
}

#[tokio::test]
async fn the_current_forbidden_form_is_one_string_without_author() {
    let t = TestSim::start(world("forbidden_form = \"current\"")).await;
    let mine = t.young(Some("acme"))[0];
    let mut foreign = t.ids(Some("bob"), |s| s.state == TweetState::Active);
    foreign.truncate(2);
    foreign.push(t.young(None)[0]);
    foreign.reverse();
    let asked: Vec<TweetId> = foreign.iter().copied().chain([mine]).collect();
    let auth = t.oauth(Endpoint::Totals, "acme", None, None);
    let (status, body) = t
        .post(Endpoint::Totals, &auth, &per_tweet(&asked, &PUBLIC))
        .await;
    foreign.sort();
    let text = format!(
        "Forbidden to access tweets: {};",
        strings(&foreign).join(", ")
    );
    assert_eq!((status, errors(&body)), (403, vec![text]));

    // One ID: exactly the FAQ's shape.
    let auth = t.oauth(Endpoint::Totals, "acme", None, None);
    let (_, body) = t
        .post(Endpoint::Totals, &auth, &per_tweet(&foreign[..1], &PUBLIC))
        .await;
    assert_eq!(
        errors(&body),
        [format!("Forbidden to access tweets: {};", foreign[0])]
    );
}

#[tokio::test]
async fn mixed_forms_send_both_texts_across_requests() {
    let t = TestSim::start(world(
        "forbidden_form = \"mixed\"\npartial_errors = \"mixed\"",
    ))
    .await;
    let bobs = t.ids(Some("bob"), |s| s.state == TweetState::Active)[0];
    let young = t.young(Some("acme"))[0];
    let deleted = t.with_state(TweetState::Deleted)[0];
    let (mut forms, mut with_errors) = (Vec::new(), Vec::new());
    for _ in 0..12 {
        let auth = t.oauth(Endpoint::Totals, "acme", None, None);
        let (_, body) = t
            .post(Endpoint::Totals, &auth, &per_tweet(&[bobs], &PUBLIC))
            .await;
        forms.push(errors(&body)[0].contains("author id"));
        let auth = t.oauth(Endpoint::Totals, "acme", None, None);
        let (status, body) = t
            .post(
                Endpoint::Totals,
                &auth,
                &per_tweet(&[young, deleted], &PUBLIC),
            )
            .await;
        assert_eq!(
            (status, &body["unavailable_tweet_ids"]),
            (200, &json!([deleted.to_string()]))
        );
        with_errors.push(body.get("errors").is_some());
    }
    assert!(forms.contains(&true) && forms.contains(&false), "{forms:?}");
    assert!(
        with_errors.contains(&true) && with_errors.contains(&false),
        "{with_errors:?}"
    );
}

#[tokio::test]
async fn partial_200s_can_come_without_errors() {
    let t = TestSim::start(world("partial_errors = \"never\"")).await;
    let now = t.sim().now();
    let young = t.young(Some("acme"))[0];
    let old = t.ids(Some("acme"), |s| {
        s.state == TweetState::Active && s.id.age_at(now) > contract::IMPRESSIONS_MAX_AGE_SECS
    })[0];
    let deleted = t.with_state(TweetState::Deleted)[0];
    let auth = t.oauth(Endpoint::Totals, "acme", None, None);
    let (status, body) = t
        .post(
            Endpoint::Totals,
            &auth,
            &per_tweet(&[young, old, deleted], &["impressions", "favorites"]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Only the lists, as REF's example shows (Q13).
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["unavailable_tweet_ids"], json!([deleted.to_string()]));
    assert_eq!(
        body["unsupported_for_impressions_engagements_tweet_ids"],
        json!([old.to_string()])
    );
    assert!(body["per tweet"][young.to_string()]["impressions"].is_string());
}

#[tokio::test]
async fn shared_video_totals_add_the_partners_views_and_series_do_not() {
    let t = TestSim::start(world("shared_videos = 1.0")).await;
    let now = t.sim().now();
    let seed = t.sim().world().seed;
    let paired = |owner: Option<&str>, min_age: i64| {
        t.ids(owner, |s| {
            s.state == TweetState::Active && s.video_partner.is_some() && s.id.age_at(now) > min_age
        })
    };
    let public = paired(None, 0);
    assert!(!public.is_empty());
    let (_, body) = t
        .post(Endpoint::Totals, BEARER, &per_tweet(&public, &PUBLIC))
        .await;
    let mut differ = 0;
    for id in &public {
        let partner = t.sim().tweet(*id).unwrap().video_partner.unwrap();
        let own = cumulative(seed, *id, Metric::VideoViews, now);
        let both = own + cumulative(seed, partner, Metric::VideoViews, now);
        assert_eq!(t.sim().total(*id, Metric::VideoViews, now), both);
        assert_eq!(
            body["per tweet"][id.to_string()]["video_views"],
            both.to_string().as_str()
        );
        differ += usize::from(both != own);
        // Other types are the Tweet's own.
        let favorites = cumulative(seed, *id, Metric::Favorites, now).to_string();
        assert_eq!(
            body["per tweet"][id.to_string()]["favorites"],
            favorites.as_str()
        );
    }
    assert!(differ > 0);

    // The series count only the Tweet's own views: its first three days, where they are.
    let id = paired(Some("acme"), 4 * crate::domain::DAY_SECS)[0];
    let start = Hour::floor(id.created_at());
    let mut body = series_body(&[id], &["video_views"]);
    body["start"] = json!(start.to_string());
    body["end"] = json!(start.plus_hours(72).to_string());
    let (status, resp) = t.post_as(Endpoint::Historical, "acme", &body).await;
    assert_eq!(status, 200, "{resp}");
    let own = cumulative(seed, id, Metric::VideoViews, start.plus_hours(72).secs());
    assert!(own > 0);
    assert_eq!(resp["window"]["video_views"], own.to_string().as_str());
    for (h, v) in series_values(&resp, id, Metric::VideoViews) {
        assert_eq!(v, t.sim().bucket(id, Metric::VideoViews, h));
    }
}
