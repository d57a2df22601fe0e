//! Reading an answer's body as it arrives: gzip inflated here, both the bytes on the wire and
//! the inflated ones bounded (`api.max_answer_mib`), error bodies cut to their first part.

use reqwest::header::CONTENT_ENCODING;

use super::ApiError;
use super::classify::error_chain;
use crate::parse;

/// sends (its messages name at most 25 Tweet IDs each).
pub(super) const ERROR_BODY_MAX: usize = 64 * 1024;

/// The most a token endpoint's answer may have.
pub(super) const TOKEN_BODY_MAX: usize = 64 * 1024;

/// How much of a body is read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Limit {
    /// Past this many bytes (on the wire or inflated) the answer is refused.
    Refuse(usize),
    /// Past this many bytes the rest is not read.
    Cut(usize),
}

/// A `Write` into memory that refuses to grow past `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other("over the answer size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a body as it arrives, inflating gzip here, counting both the bytes on the wire and the
/// inflated ones against `limit`: a 2 MB gzip that inflates to 2 GiB costs at most the limit.
pub(super) async fn read_body(
    mut response: reqwest::Response,
    limit: Limit,
) -> Result<Vec<u8>, ApiError> {
    let (max, refuse) = match limit {
        Limit::Refuse(n) => (n, true),
        Limit::Cut(n) => (n, false),
    };
    let too_large = |what| ApiError::TooLarge { limit: max, what };
    let encoding = response.headers().get(CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let gzip = match encoding.as_deref() {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return Err(ApiError::Unusable(format!(
                "Content-Encoding {:?} (only gzip is asked for)",
                parse::clean_text(other, 40)
            )));
        }
    };
    if refuse && response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large("Content-Length"));
    }
    let capped = Capped {
        buf: Vec::new(),
        max,
        over: false,
    };
    // The inflater writes into the capped buffer as it goes, so no chunk can inflate past it.
    let mut body = if gzip {
        Body::Gzip(Box::new(flate2::write::MultiGzDecoder::new(capped)))
    } else {
        Body::Plain(capped)
    };
    let mut wire = 0usize;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(ApiError::Transport(error_chain(&e))),
        };
        wire += chunk.len();
        if wire > max {
            if refuse {
                return Err(too_large("on the wire"));
            }
            break;
        }
        if let Err(e) = body.write_all(&chunk) {
            if body.sink().over {
                if refuse {
                    return Err(too_large(if gzip { "inflated" } else { "on the wire" }));
                }
                return Ok(body.into_bytes());
            }
            return Err(ApiError::Unusable(format!(
                "the gzip stream is broken: {e}"
            )));
        }
    }
    if let Body::Gzip(d) = &mut body
        && let Err(e) = d.try_finish()
    {
        if d.get_ref().over {
            if refuse {
                return Err(too_large("inflated"));
            }
        } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // The stream ended before gzip's end: cut short on the way.
            return Err(ApiError::Transport(format!(
                "the gzip stream ends early: {e}"
            )));
        } else if refuse {
            return Err(ApiError::Unusable(format!(
                "the gzip stream is broken: {e}"
            )));
        }
    }
    Ok(body.into_bytes())
}

/// A body being read: as sent, or inflated on the way.
enum Body {
    Plain(Capped),
    Gzip(Box<flate2::write::MultiGzDecoder<Capped>>),
}

impl Body {
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Body::Plain(c) => c.write_all(data),
            Body::Gzip(d) => d.write_all(data),
        }
    }

    fn sink(&self) -> &Capped {
        match self {
            Body::Plain(c) => c,
            Body::Gzip(d) => d.get_ref(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Plain(c) => c.buf,
            // What was inflated so far, whether or not the stream could finish.
            Body::Gzip(mut d) => std::mem::take(&mut d.get_mut().buf),
        }
    }
}
