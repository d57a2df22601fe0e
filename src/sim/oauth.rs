//! OAuth 1.0a HMAC-SHA1 verification, written independently of the worker's signer (RFC 5849 and
//! X's "creating a signature" page): header parsing, the signature base string and a constant-time
//! signature check. No policy here; `auth` decides what a result means.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha1::{Digest, Sha1};

/// RFC 3986 unreserved characters stay; everything else is `%XX`.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes as OAuth requires (upper-case hex, unreserved set only).
pub fn pct(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Why an `OAuth …` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Malformed OAuth parameter: {0}")]
    Malformed(String),
    #[error("Duplicate OAuth parameter: {0}")]
    Duplicate(String),
}

/// Reads the `key="value"` pairs after `OAuth ` (percent-decoded), in header order.
pub fn parse_params(header_rest: &str) -> Result<Vec<(String, String)>, HeaderError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in header_rest
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| HeaderError::Malformed(part.to_string()))?;
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| HeaderError::Malformed(part.to_string()))?;
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| HeaderError::Malformed(part.into()))
        };
        let key = decode(key.trim())?;
        if out.iter().any(|(k, _)| *k == key) {
            return Err(HeaderError::Duplicate(key));
        }
        out.push((key, decode(value)?));
    }
    Ok(out)
}

/// The signature base string: `METHOD&pct(base_url)&pct(sorted k=v pairs)`.
///
/// `params` are decoded pairs (OAuth header parameters plus any query or form parameters);
/// `oauth_signature` and `realm` are left out here, as RFC 5849 §3.4.1.3.1 says.
pub fn base_string(method: &str, base_url: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature" && k != "realm")
        .map(|(k, v)| (pct(k), pct(v)))
        .collect();
    encoded.sort();
    let joined = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        pct(base_url),
        pct(&joined)
    )
}

fn mac(consumer_secret: &str, token_secret: &str, base: &str) -> Hmac<Sha1> {
    let key = format!("{}&{}", pct(consumer_secret), pct(token_secret));
    let mut mac =
        Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(base.as_bytes());
    mac
}

/// The base64 HMAC-SHA1 signature of `base` (tests use it to build known-good requests).
#[cfg(test)]
pub fn sign(consumer_secret: &str, token_secret: &str, base: &str) -> String {
    B64.encode(
        mac(consumer_secret, token_secret, base)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `signature_b64` signs `base` with these secrets, compared in constant time.
pub fn signature_matches(
    consumer_secret: &str,
    token_secret: &str,
    base: &str,
    signature_b64: &str,
) -> bool {
    match B64.decode(signature_b64) {
        Ok(sig) => mac(consumer_secret, token_secret, base)
            .verify_slice(&sig)
            .is_ok(),
        Err(_) => false,
    }
}

/// `oauth_body_hash` of a body: base64(SHA1(body)).
pub fn body_hash(body: &[u8]) -> String {
    B64.encode(Sha1::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X's documented example request ("Creating a signature"), engagement-api.md §6.3.
    fn doc_params() -> Vec<(String, String)> {
        let header = r#"oauth_consumer_key="xvz1evFS4wEEPTGEFPHBog", oauth_nonce="kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg", oauth_signature="tnnArxj06cWHq44gCs1OSKk%2FjLY%3D", oauth_signature_method="HMAC-SHA1", oauth_timestamp="1318622958", oauth_token="370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb", oauth_version="1.0""#;
        let mut params = parse_params(header).unwrap();
        params.push(("include_entities".into(), "true".into()));
        params.push((
            "status".into(),
            "Hello Ladies + Gentlemen, a signed OAuth request!".into(),
        ));
        params
    }

    const CS: &str = "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw";
    const TS: &str = "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE";

    #[test]
    fn x_docs_vector_api_twitter_com() {
        let base = base_string(
            "post",
            "https://api.twitter.com/1.1/statuses/update.json",
            &doc_params(),
        );
        assert!(base.starts_with("POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key"));
        assert_eq!(sign(CS, TS, &base), "hCtSmYh+iHYCEqBWrE7C7hYmtUk=");
        assert!(signature_matches(
            CS,
            TS,
            &base,
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        ));
        assert!(!signature_matches(
            CS,
            "wrong",
            &base,
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        ));
        assert!(!signature_matches(CS, TS, &base, "not base64!"));
    }

    #[test]
    fn x_docs_vector_api_x_com() {
        let base = base_string(
            "POST",
            "https://api.x.com/1.1/statuses/update.json",
            &doc_params(),
        );
        assert!(signature_matches(
            CS,
            TS,
            &base,
            "Ls93hJiZbQ3akF3HF3x1Bz8/zU4="
        ));
    }

    #[test]
    fn header_parsing_decodes_and_refuses_junk() {
        let p = parse_params(r#"realm="x", oauth_signature="a%2Fb%3D""#).unwrap();
        assert_eq!(p[1], ("oauth_signature".into(), "a/b=".into()));
        assert!(matches!(
            parse_params("oauth_nonce=abc"),
            Err(HeaderError::Malformed(_))
        ));
        assert!(matches!(
            parse_params(r#"a="1",a="2""#),
            Err(HeaderError::Duplicate(_))
        ));
    }

    #[test]
    fn body_hash_of_empty_body() {
        assert_eq!(body_hash(b""), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    }
}
