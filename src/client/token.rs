//! The app's bearer token: taken from the config or obtained once from the token endpoint
//! (`POST /oauth2/token`), renewed once after a 401, and the verdict on the app's own keys.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use serde::Deserialize;
use std::sync::atomic::Ordering;

use super::body::{ERROR_BODY_MAX, Limit, TOKEN_BODY_MAX, read_body};
use super::classify::{error_strings, redirect_note, send_error};
use super::{ApiClient, ApiError, Decision, classify};
use crate::auth;
use crate::config::Secret;
use crate::parse;

#[derive(Deserialize)]
struct TokenBody {
    token_type: String,
    access_token: String,
}

/// What the token endpoint says of the app's consumer key and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppVerdict {
    Accepted,
    /// Refused, with the endpoint's words.
    Refused(String),
    /// No answer (transport error): the keys could not be verified.
    Unknown(String),
}

impl ApiClient {
    /// Whether the token endpoint accepts the app's consumer key and secret: the cheapest
    /// request that tells the app's own keys apart from an account's token after a 401.
    pub async fn verify_app(&self) -> AppVerdict {
        // Without a configured bearer token, the keys' answer is the bearer token's: asked once
        // per cycle, shared with the batches that need it.
        let answer = if self.settings.bearer_token.is_none() {
            self.bearer().await.map(|_| ())
        } else {
            self.fetch_bearer().await.map(|_| ())
        };
        match answer {
            Ok(()) => AppVerdict::Accepted,
            Err(ApiError::Token(why)) => AppVerdict::Refused(why),
            Err(e) => AppVerdict::Unknown(e.to_string()),
        }
    }

    /// After a 401 on the obtained bearer token `refused`: whether to send again with a new
    /// one. The first batch to see it refused forgets it (once per client: a new token that is
    /// refused too is final); batches that sent the same old token concurrently just retry with
    /// whatever is current. A token from the config is never replaced (a new one cannot be had).
    pub(super) async fn forget_bearer(&self, refused: &Secret) -> bool {
        if self.settings.bearer_token.is_some() {
            return false;
        }
        let mut slot = self.bearer.lock().await;
        let current = matches!(slot.as_ref(), Some(Ok(t)) if t.expose() == refused.expose());
        if !current {
            return true; // already forgotten or replaced by another batch
        }
        if self.bearer_renewed.swap(true, Ordering::SeqCst) {
            return false;
        }
        *slot = None;
        true
    }

    /// The bearer token: from the config, or obtained once from the token endpoint.
    pub async fn bearer(&self) -> Result<Secret, ApiError> {
        let mut slot = self.bearer.lock().await;
        if let Some(known) = slot.as_ref() {
            return known.clone().map_err(ApiError::Token);
        }
        // A refusal is remembered, so a bad consumer secret costs one token request, not one per
        // batch; a transport error is not, and is retried with the batch that needed the token.
        let fetched = self.fetch_bearer().await;
        match &fetched {
            Ok(token) => *slot = Some(Ok(token.clone())),
            Err(ApiError::Token(msg)) => *slot = Some(Err(msg.clone())),
            Err(_) => {}
        }
        fetched
    }

    async fn fetch_bearer(&self) -> Result<Secret, ApiError> {
        let response = self
            .http
            .post(&self.settings.token_url)
            .header(AUTHORIZATION, auth::basic_header(&self.settings.app))
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .header(USER_AGENT, &self.settings.user_agent)
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| {
                let other_host =
                    origin(&self.settings.token_url) != origin(&self.settings.base_url);
                send_error(&self.settings.token_url, other_host, &e)
            })?;
        let status = response.status();
        let redirect = redirect_note(status.as_u16(), response.headers());
        let limit = if status.is_success() {
            Limit::Refuse(TOKEN_BODY_MAX)
        } else {
            Limit::Cut(ERROR_BODY_MAX)
        };
        let bytes = read_body(response, limit).await?;
        // 429 and 5xx say nothing of the keys: retried like any transient answer, never
        // remembered as a refusal.
        if classify(Some(status.as_u16())) == Decision::Retry {
            return Err(ApiError::Status {
                status: status.as_u16(),
                errors: error_strings(&bytes),
                unavailable: Vec::new(),
            });
        }
        if let Some(redirect) = redirect {
            return Err(ApiError::Unusable(format!(
                "the token endpoint answered HTTP {}: {redirect}",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(ApiError::Token(format!(
                "HTTP {}: {}; check app.consumer_key and app.consumer_secret",
                status.as_u16(),
                error_strings(&bytes).join("; ")
            )));
        }
        // Not a refusal of the keys: an answer that is not what the endpoint gives.
        let body: TokenBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Unusable(format!(
                "the token endpoint's answer: {}",
                parse::clean_text(&e.to_string(), 200)
            ))
        })?;
        if !body.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unusable(format!(
                "the token endpoint's token_type is {:?}, not \"bearer\"",
                parse::clean_text(&body.token_type, 40)
            )));
        }
        // It goes into an Authorization header: visible ASCII, of a sane length.
        let token = &body.access_token;
        if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::Unusable(format!(
                "the token endpoint's access_token ({} bytes) is not a usable header value",
                token.len()
            )));
        }
        tracing::debug!("obtained the app's bearer token from the token endpoint");
        Ok(Secret::new(body.access_token))
    }
}

/// Scheme, host and port of a URL, to tell whether two URLs are one server.
fn origin(url: &str) -> Option<(String, Option<String>, Option<u16>)> {
    let url = url::Url::parse(url).ok()?;
    Some((
        url.scheme().to_string(),
        url.host_str().map(str::to_string),
        url.port_or_known_default(),
    ))
}
