//! Credentials and request signing: OAuth 1.0a HMAC-SHA1 (via `oauth1-request`) for a Tweet
//! owner's token, the app's bearer token, and obtaining that bearer token from `POST /oauth2/token`.
//! It signs; it does not decide which credential a request needs (the planner does).

use oauth1_request as oauth;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::Secret;

/// The app's consumer credentials.
#[derive(Debug, Clone)]
pub struct AppKeys {
    pub consumer_key: String,
    pub consumer_secret: Secret,
}

/// One account's access token.
#[derive(Debug, Clone)]
pub struct UserToken {
    pub access_token: String,
    pub access_token_secret: Secret,
}

/// Fixed nonce and timestamp, for known-answer tests only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pinned<'a> {
    pub nonce: Option<&'a str>,
    pub timestamp: Option<u64>,
}

/// The `Authorization` header value for an OAuth 1.0a request. `url` is the exact URL sent
/// (scheme and host lower-case, no default port, no query); `params` are query or form
/// parameters (none for the Engagement API, whose JSON body is not signed).
pub fn oauth1_header(
    method: &str,
    url: &str,
    app: &AppKeys,
    user: &UserToken,
    params: &[(&str, &str)],
    pinned: Pinned<'_>,
) -> String {
    let token = oauth::Token::from_parts(
        app.consumer_key.as_str(),
        app.consumer_secret.expose(),
        user.access_token.as_str(),
        user.access_token_secret.expose(),
    );
    let mut builder = oauth::Builder::with_token(token, oauth::HMAC_SHA1);
    builder.version(true);
    if let Some(nonce) = pinned.nonce {
        builder.nonce(nonce);
    }
    if let Some(ts) = pinned.timestamp.and_then(std::num::NonZeroU64::new) {
        builder.timestamp(ts);
    }
    let list = oauth::ParameterList::new(params.to_vec());
    builder.authorize(method, url, &list)
}

/// The `Authorization` header value for a bearer token.
pub fn bearer_header(token: &Secret) -> String {
    format!("Bearer {}", token.expose())
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `Authorization: Basic …` value for `POST /oauth2/token` (key and secret percent-encoded
/// first, as X documents).
pub fn basic_header(app: &AppKeys) -> String {
    use base64::Engine;
    let raw = format!(
        "{}:{}",
        utf8_percent_encode(&app.consumer_key, RFC3986),
        utf8_percent_encode(app.consumer_secret.expose(), RFC3986)
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_app() -> (AppKeys, UserToken) {
        (
            AppKeys {
                consumer_key: "xvz1evFS4wEEPTGEFPHBog".into(),
                consumer_secret: Secret::new("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"),
            },
            UserToken {
                access_token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb".into(),
                access_token_secret: Secret::new("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"),
            },
        )
    }

    fn signature_of(header: &str) -> String {
        let start = header.find("oauth_signature=\"").unwrap() + "oauth_signature=\"".len();
        let enc = &header[start..start + header[start..].find('"').unwrap()];
        percent_encoding::percent_decode_str(enc)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    /// X's "Creating a signature" example (engagement-api.md §6.3), reproduced exactly for both hosts.
    #[test]
    fn signature_matches_the_documented_example() {
        let (app, user) = doc_app();
        let pinned = Pinned {
            nonce: Some("kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            timestamp: Some(1_318_622_958),
        };
        let params = [
            ("include_entities", "true"),
            (
                "status",
                "Hello Ladies + Gentlemen, a signed OAuth request!",
            ),
        ];
        for (host, expected) in [
            ("api.twitter.com", "hCtSmYh+iHYCEqBWrE7C7hYmtUk="),
            ("api.x.com", "Ls93hJiZbQ3akF3HF3x1Bz8/zU4="),
        ] {
            let url = format!("https://{host}/1.1/statuses/update.json");
            let header = oauth1_header("POST", &url, &app, &user, &params, pinned);
            assert!(header.starts_with("OAuth "), "{header}");
            assert!(header.contains("oauth_version=\"1.0\""));
            assert_eq!(signature_of(&header), expected, "host {host}");
        }
    }

    #[test]
    fn unpinned_headers_use_fresh_nonces() {
        let (app, user) = doc_app();
        let url = "https://data-api.twitter.com/insights/engagement/totals";
        let a = oauth1_header("POST", url, &app, &user, &[], Pinned::default());
        let b = oauth1_header("POST", url, &app, &user, &[], Pinned::default());
        assert_ne!(a, b);
        assert!(!a.contains(app.consumer_secret.expose()));
    }

    #[test]
    fn basic_header_matches_the_documented_vector() {
        let app = AppKeys {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog".into(),
            consumer_secret: Secret::new("L8qq9PZyRg6ieKGEKhZolGC0vJWLw8iEJ88DRdyOg"),
        };
        assert_eq!(
            basic_header(&app),
            "Basic eHZ6MWV2RlM0d0VFUFRHRUZQSEJvZzpMOHFxOVBaeVJnNmllS0dFS2hab2xHQzB2SldMdzhpRUo4OERSZHlPZw=="
        );
    }
}
