//! What an attempt's result means: the typed failures ([`ApiError`]), which of them are worth
//! another attempt ([`classify`]), and the words of error bodies, redirects and failed sends.

use reqwest::header::{HeaderMap, LOCATION};

use crate::domain::{Handle, TweetId};
use crate::parse::{self, ParseError};

/// What to do with one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Done,
    Retry,
    GiveUp,
}

/// Retry policy by HTTP status (`None` = no response: transport error or timeout).
/// 429 and 5xx are transient; every other 4xx means the request itself is wrong or refused.
pub fn classify(status: Option<u16>) -> Decision {
    match status {
        None => Decision::Retry,
        Some(s) if (200..300).contains(&s) => Decision::Done,
        Some(429) => Decision::Retry,
        Some(s) if s >= 500 => Decision::Retry,
        Some(_) => Decision::GiveUp,
    }
}

/// A request that did not yield a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("transport error: {0}")]
    Transport(String),
    /// No connection could be made, or no answer came in time (connection refused, DNS, TLS,
    /// timeout): the API may be unreachable. The text is the root cause, with the URL.
    #[error("{0}")]
    Connect(String),
    /// As [`ApiError::Connect`], to a token endpoint on another host than the API.
    #[error("{0}")]
    TokenConnect(String),
    /// Not sent: consecutive connection failures showed the API unreachable this cycle.
    #[error("{0}")]
    Unreachable(String),
    #[error("HTTP {status}: {}", if errors.is_empty() { "(no error text)".to_string() } else { errors.join("; ") })]
    Status {
        status: u16,
        errors: Vec<String>,
        /// `unavailable_tweet_ids` of the error body (protected Tweets refuse the whole request).
        unavailable: Vec<TweetId>,
    },
    #[error("HTTP 200 with an unreadable body: {0}")]
    Body(#[from] ParseError),
    /// The answer is larger than `api.max_answer_mib` allows, on the wire or inflated.
    #[error("the answer is larger than {limit} MiB ({what}); nothing of it is stored (api.max_answer_mib)", limit = limit / (1024 * 1024))]
    TooLarge { limit: usize, what: &'static str },
    /// An answer that asking again would not mend: an unknown encoding, a broken gzip stream,
    /// a token that cannot be a header value.
    #[error("unusable answer: {0}")]
    Unusable(String),
    #[error("no access token configured for account {0}")]
    NoToken(Handle),
    #[error("could not obtain a bearer token from the token endpoint: {0}")]
    Token(String),
    #[error("not sent: shutting down")]
    Cancelled,
}

impl ApiError {
    pub(super) fn decision(&self) -> Decision {
        match self {
            ApiError::Transport(_)
            | ApiError::Connect(_)
            | ApiError::TokenConnect(_)
            | ApiError::Body(ParseError::Truncated(_)) => Decision::Retry,
            ApiError::Status { status, .. } => classify(Some(*status)),
            // The same bytes would come again: not worth the quota.
            ApiError::Body(_) | ApiError::TooLarge { .. } | ApiError::Unusable(_) => {
                Decision::GiveUp
            }
            ApiError::NoToken(_)
            | ApiError::Token(_)
            | ApiError::Cancelled
            | ApiError::Unreachable(_) => Decision::GiveUp,
        }
    }

    /// The HTTP status, when a response came back.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Body(_) => Some(200),
            _ => None,
        }
    }

    /// Tweets the error body lists as unavailable.
    pub fn unavailable_ids(&self) -> &[TweetId] {
        match self {
            ApiError::Status { unavailable, .. } => unavailable,
            _ => &[],
        }
    }

    /// The API's `errors` strings, when it sent any.
    pub fn api_errors(&self) -> &[String] {
        match self {
            ApiError::Status { errors, .. } => errors,
            _ => &[],
        }
    }
}

/// transport error.
pub(super) fn send_error(url: &str, token_host: bool, e: &reqwest::Error) -> ApiError {
    if e.is_connect() || e.is_timeout() {
        let cause = root_cause(e);
        let cause = if e.is_timeout() && !cause.to_ascii_lowercase().contains("timed out") {
            format!("no answer within api.timeout ({cause})")
        } else {
            cause
        };
        let message = format!("{}: {cause}", url.trim_end_matches('/'));
        if token_host {
            ApiError::TokenConnect(message)
        } else {
            ApiError::Connect(message)
        }
    } else if e.is_builder() {
        // A header value that cannot be sent (a token with a line break, say): sending again
        // would fail the same way.
        ApiError::Unusable(format!("cannot build the request: {}", root_cause(e)))
    } else {
        ApiError::Transport(error_chain(e))
    }
}

/// The innermost error of a chain: the OS error of a refused connection, the resolver's words.
pub(super) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// The `errors` strings of an error body, or the start of a body that is not JSON; both made
/// safe to show ([`parse::clean_text`]).
pub(super) fn error_strings(body: &[u8]) -> Vec<String> {
    match parse::error_info(body) {
        Some((errors, _)) => errors,
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![parse::clean_text(text, 200)]
            }
        }
    }
}

/// be fixed.
pub(super) fn redirect_note(status: u16, headers: &HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let location = headers
        .get(LOCATION)
        .map(|l| parse::clean_text(&String::from_utf8_lossy(l.as_bytes()), 200));
    Some(match location {
        Some(l) => format!("redirected to {l}; redirects are not followed (check api.base_url)"),
        None => "a redirect without a Location; redirects are not followed".to_string(),
    })
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which answers are retried: the table issue 4 builds on.
    #[test]
    fn classification_table() {
        let table = [
            (None, Decision::Retry),
            (Some(200), Decision::Done),
            (Some(400), Decision::GiveUp),
            (Some(401), Decision::GiveUp),
            (Some(403), Decision::GiveUp),
            (Some(404), Decision::GiveUp),
            (Some(406), Decision::GiveUp),
            (Some(429), Decision::Retry),
            (Some(500), Decision::Retry),
            (Some(502), Decision::Retry),
            (Some(503), Decision::Retry),
            (Some(301), Decision::GiveUp),
            (Some(307), Decision::GiveUp),
            (Some(308), Decision::GiveUp),
        ];
        for (status, expected) in table {
            assert_eq!(classify(status), expected, "{status:?}");
        }
        // A body cut short on the way is asked again; one that will never parse is not.
        let errors = [
            (
                ApiError::Body(ParseError::Truncated("eof".into())),
                Decision::Retry,
            ),
            (ApiError::Transport("reset".into()), Decision::Retry),
            (
                ApiError::Body(ParseError::Json("x".into())),
                Decision::GiveUp,
            ),
            (ApiError::Body(ParseError::NotAnObject), Decision::GiveUp),
            (
                ApiError::Body(ParseError::Shape {
                    grouping: "g".into(),
                    detail: "d".into(),
                }),
                Decision::GiveUp,
            ),
            (
                ApiError::TooLarge {
                    limit: 1,
                    what: "inflated",
                },
                Decision::GiveUp,
            ),
            (ApiError::Unusable("header".into()), Decision::GiveUp),
        ];
        for (error, expected) in errors {
            assert_eq!(error.decision(), expected, "{error:?}");
        }
    }

    #[test]
    fn error_bodies_of_both_shapes_are_read() {
        assert_eq!(
            error_strings(br#"{"errors":["internal server error"]}"#),
            vec!["internal server error"]
        );
        assert_eq!(
            error_strings(br#"{"errors":[{"code":99,"label":"x","message":"Unable to verify your credentials"}]}"#),
            vec!["Unable to verify your credentials"]
        );
        assert_eq!(error_strings(b"Bad Gateway"), vec!["Bad Gateway"]);
    }
}
