//! Who is calling: reads the `Authorization` header of an insights request and decides whether it
//! is the app's bearer token or a valid OAuth 1.0a user-context signature (engagement-api §6, §12.2).
//! Owns the nonce memory. Does not decide what a credential may read (`rules` does).

use std::collections::HashMap;
use std::sync::Mutex;

use super::oauth::{self, HeaderError};
use super::world::World;

/// Timestamps further than this from the simulator's clock are refused, and nonces are
/// remembered this long.
pub const TIMESTAMP_SKEW_SECS: i64 = 300;

/// A credential that passed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The app's bearer token (app-only).
    Bearer,
    /// The OAuth 1.0a token of `world.accounts[i]`.
    User(usize),
}

/// Why authentication failed; `Display` is the "Reason: …" part of the 401 body.
///
/// Only `Unknown Authorization Type` and `Access token not found` are documented by X [D]; every
/// other reason text is a simulator choice (engagement-api §6.3, §12.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Unknown Authorization Type")]
    UnknownType,
    #[error("Invalid or expired token")]
    InvalidBearer,
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error("Missing OAuth parameter: {0}")]
    Missing(&'static str),
    #[error("Unsupported oauth_signature_method: {0} (only HMAC-SHA1)")]
    SignatureMethod(String),
    #[error("Unsupported oauth_version: {0} (only 1.0)")]
    Version(String),
    #[error("Invalid consumer key")]
    ConsumerKey,
    #[error("Access token not found")]
    TokenNotFound,
    #[error("Invalid signature")]
    Signature,
    #[error("Invalid oauth_body_hash")]
    BodyHash,
    #[error("Timestamp out of bounds")]
    Timestamp,
    #[error("Nonce already used")]
    Nonce,
    #[error("Access token revoked")]
    Revoked,
}

impl AuthError {
    /// The whole 401 error string.
    pub fn message(&self) -> String {
        format!("Your account could not be authenticated. Reason: {self}")
    }
}

/// The parts of an HTTP request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The `Host` header as sent.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// The URL that was signed: the simulator is plain HTTP, the host is lower-cased and the
    /// default port dropped (RFC 5849 §3.4.1.2).
    fn base_url(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        let host = host.strip_suffix(":80").unwrap_or(&host);
        format!("http://{host}{}", self.path)
    }
}

enum Scheme<'a> {
    Bearer(&'a str),
    OAuth(&'a str),
}

fn scheme(authorization: Option<&str>) -> Option<Scheme<'_>> {
    let (name, rest) = authorization?.trim().split_once(char::is_whitespace)?;
    let rest = rest.trim();
    if name.eq_ignore_ascii_case("bearer") {
        Some(Scheme::Bearer(rest))
    } else if name.eq_ignore_ascii_case("oauth") {
        Some(Scheme::OAuth(rest))
    } else {
        None
    }
}

/// The stats label of the credential a request *claims*, before any check: `bearer`, the handle
/// whose access token the OAuth header names, or `unknown`.
pub fn claimed_label(world: &World, authorization: Option<&str>) -> String {
    match scheme(authorization) {
        Some(Scheme::Bearer(_)) => "bearer".into(),
        Some(Scheme::OAuth(rest)) => oauth::parse_params(rest)
            .ok()
            .and_then(|p| p.into_iter().find(|(k, _)| k == "oauth_token"))
            .and_then(|(_, token)| world.accounts.iter().find(|a| a.access_token == token))
            .map_or_else(|| "unknown".into(), |a| a.handle.to_string()),
        None => "unknown".into(),
    }
}

/// Whether a `POST /oauth2/token` request carries the app's client credentials
/// (`Basic base64(pct(key):pct(secret))`) and the form body `grant_type=client_credentials`.
pub fn client_credentials_ok(world: &World, authorization: Option<&str>, body: &[u8]) -> bool {
    use base64::Engine;
    let basic = authorization
        .and_then(|a| a.trim().split_once(char::is_whitespace))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some((key, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return false;
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    let grant = url::form_urlencoded::parse(body)
        .any(|(k, v)| k == "grant_type" && v == "client_credentials");
    grant
        && decode(key).as_deref() == Some(world.app.consumer_key.as_str())
        && decode(secret).as_deref() == Some(world.app.consumer_secret.as_str())
}

/// Checks credentials and remembers OAuth nonces.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// (token, nonce) → the request's timestamp.
    nonces: Mutex<HashMap<(String, String), i64>>,
    /// The bearer token issued now, when it was rotated away from the world's.
    bearer: Mutex<Option<String>>,
}

impl Authenticator {
    /// The bearer token `POST /oauth2/token` issues and requests must carry.
    pub fn bearer(&self, world: &World) -> String {
        let rotated = self.bearer.lock().expect("bearer lock").clone();
        rotated.unwrap_or_else(|| world.app.bearer_token.clone())
    }

    /// Invalidates the current bearer token and issues `new` from now on (what
    /// `POST oauth2/invalidate_token` followed by a new `POST oauth2/token` does).
    pub fn rotate_bearer(&self, new: &str) {
        *self.bearer.lock().expect("bearer lock") = Some(new.to_string());
    }

    /// Authenticates `req` at simulator time `now` (Unix seconds).
    pub fn authenticate(
        &self,
        world: &World,
        req: &SignedRequest,
        now: i64,
    ) -> Result<Credential, AuthError> {
        match scheme(req.authorization).ok_or(AuthError::UnknownType)? {
            Scheme::Bearer(token) if token == self.bearer(world) => Ok(Credential::Bearer),
            Scheme::Bearer(_) => Err(AuthError::InvalidBearer),
            Scheme::OAuth(rest) => self.verify_oauth(world, req, rest, now),
        }
    }

    fn verify_oauth(
        &self,
        world: &World,
        req: &SignedRequest,
        header: &str,
        now: i64,
    ) -> Result<Credential, AuthError> {
        let params = oauth::parse_params(header)?;
        let get = |key: &'static str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let need = |key: &'static str| get(key).ok_or(AuthError::Missing(key));

        let consumer_key = need("oauth_consumer_key")?;
        let nonce = need("oauth_nonce")?;
        let signature = need("oauth_signature")?;
        let method = need("oauth_signature_method")?;
        let timestamp = need("oauth_timestamp")?;
        let token = need("oauth_token")?;
        if method != "HMAC-SHA1" {
            return Err(AuthError::SignatureMethod(method.into()));
        }
        if let Some(v) = get("oauth_version").filter(|v| *v != "1.0") {
            return Err(AuthError::Version(v.into()));
        }
        if consumer_key != world.app.consumer_key {
            return Err(AuthError::ConsumerKey);
        }
        let (index, account) = world
            .accounts
            .iter()
            .enumerate()
            .find(|(_, a)| a.access_token == token)
            .ok_or(AuthError::TokenNotFound)?;

        // Query parameters are signed too; the JSON body is not (only form bodies would be).
        let mut signed = params.clone();
        if let Some(q) = req.query {
            signed.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let base = oauth::base_string(req.method, &req.base_url(), &signed);
        if !oauth::signature_matches(
            &world.app.consumer_secret,
            &account.access_token_secret,
            &base,
            signature,
        ) {
            return Err(AuthError::Signature);
        }
        // oauthlib adds oauth_body_hash for non-form bodies; it is signed above, and must match.
        if get("oauth_body_hash").is_some_and(|h| h != oauth::body_hash(req.body)) {
            return Err(AuthError::BodyHash);
        }
        let ts: i64 = timestamp.parse().map_err(|_| AuthError::Timestamp)?;
        if (ts - now).abs() > TIMESTAMP_SKEW_SECS {
            return Err(AuthError::Timestamp);
        }
        // Nonces are recorded only once the signature is known good, so nobody can burn them.
        {
            let mut nonces = self.nonces.lock().expect("nonce lock");
            nonces.retain(|_, seen| *seen >= now - TIMESTAMP_SKEW_SECS);
            if nonces
                .insert((token.to_string(), nonce.to_string()), ts)
                .is_some()
            {
                return Err(AuthError::Nonce);
            }
        }
        if account.revoked {
            return Err(AuthError::Revoked);
        }
        Ok(Credential::User(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    /// Signs like a client would, with this module's own primitives (the HTTP tests use
    /// oauth1-request instead).
    fn header(world: &World, extra: &[(&str, &str)], nonce: &str, ts: i64, secret: &str) -> String {
        let a = &world.accounts[0];
        let mut params: Vec<(String, String)> = [
            ("oauth_consumer_key", world.app.consumer_key.as_str()),
            ("oauth_nonce", nonce),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", &ts.to_string()),
            ("oauth_token", a.access_token.as_str()),
            ("oauth_version", "1.0"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let base = oauth::base_string(
            "POST",
            "http://sim.local:8080/insights/engagement/totals",
            &params,
        );
        params.push((
            "oauth_signature".into(),
            oauth::sign(&world.app.consumer_secret, secret, &base),
        ));
        let parts: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", oauth::pct(v)))
            .collect();
        format!("OAuth {}", parts.join(", "))
    }

    fn req<'a>(auth: &'a str, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            host: "SIM.local:8080",
            path: "/insights/engagement/totals",
            query: None,
            authorization: Some(auth),
            body,
        }
    }

    #[test]
    fn accepts_a_good_signature_once() {
        let world = World::demo(1);
        let auth = Authenticator::default();
        let h = header(&world, &[], "n1", NOW, "acme_news-secret");
        assert_eq!(
            auth.authenticate(&world, &req(&h, b"{}"), NOW),
            Ok(Credential::User(0))
        );
        assert_eq!(
            auth.authenticate(&world, &req(&h, b"{}"), NOW + 1),
            Err(AuthError::Nonce)
        );
        assert_eq!(claimed_label(&world, Some(&h)), "acme_news");
    }

    #[test]
    fn refuses_bad_secrets_stale_times_and_body_hashes() {
        let world = World::demo(1);
        let auth = Authenticator::default();
        let bad = header(&world, &[], "n2", NOW, "wrong");
        assert_eq!(
            auth.authenticate(&world, &req(&bad, b""), NOW),
            Err(AuthError::Signature)
        );
        let stale = header(&world, &[], "n3", NOW - 301, "acme_news-secret");
        assert_eq!(
            auth.authenticate(&world, &req(&stale, b""), NOW),
            Err(AuthError::Timestamp)
        );
        let hash = oauth::body_hash(b"{\"a\":1}");
        let hashed = header(
            &world,
            &[("oauth_body_hash", &hash)],
            "n4",
            NOW,
            "acme_news-secret",
        );
        assert_eq!(
            auth.authenticate(&world, &req(&hashed, b"{}"), NOW),
            Err(AuthError::BodyHash)
        );
        assert_eq!(
            auth.authenticate(&world, &req(&hashed, b"{\"a\":1}"), NOW),
            Ok(Credential::User(0))
        );
    }

    #[test]
    fn schemes_and_bearer_tokens() {
        let world = World::demo(1);
        let auth = Authenticator::default();
        let check = |h: &str| auth.authenticate(&world, &req(h, b""), NOW);
        assert_eq!(check("Bearer sim-bearer"), Ok(Credential::Bearer));
        assert_eq!(check("Bearer nope"), Err(AuthError::InvalidBearer));
        assert_eq!(check("Basic abc"), Err(AuthError::UnknownType));
        assert_eq!(
            check("OAuth oauth_nonce=\"x\""),
            Err(AuthError::Missing("oauth_consumer_key"))
        );
        assert_eq!(claimed_label(&world, Some("Basic abc")), "unknown");
        assert_eq!(
            AuthError::TokenNotFound.message(),
            "Your account could not be authenticated. Reason: Access token not found"
        );
    }
}
