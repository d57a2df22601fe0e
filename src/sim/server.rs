//! HTTP plumbing of the simulator: axum routes, gzip, request counting, and binding/serving in a
//! tokio task. Decisions are made by `Sim`; this module only translates HTTP to and from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::map_request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;

use crate::domain::Endpoint;

use super::auth::{self, SignedRequest};
use super::service::{Envelope, Reply, Sim};
use super::world::{Faults, World};

/// The stats name of the token endpoint.
const TOKEN_ENDPOINT: &str = "oauth2/token";

/// Stats status of a request whose connection was dropped (the `dropped` fault): no status was
/// sent, and 0 is no HTTP status.
pub const DROPPED_STATUS: u16 = 0;

/// A reader that fails: the body of a dropped answer. Hyper aborts the connection when a body
/// fails, before the response head is flushed, so the client sees the connection close without
/// a response (a transport error) rather than a status.
struct Severed;

impl tokio::io::AsyncRead for Severed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated dropped connection",
        )))
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        if self.dropped {
            return Body::from_stream(tokio_util::io::ReaderStream::new(Severed)).into_response();
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(Body::from(self.body_bytes()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        for (name, value) in self.rate.iter().flat_map(|r| r.pairs()) {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                headers.insert(n, v);
            }
        }
        response
    }
}

impl Sim {
    /// The simulator's routes, gzip-compressing every answer the client accepts gzip for.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/insights/engagement/{kind}", post(insights))
            .route("/oauth2/token", post(token))
            .route("/_sim/stats", get(stats))
            .route("/_sim/faults", post(set_faults))
            .fallback(not_found)
            .method_not_allowed_fallback(not_found)
            // Compress even tiny bodies: clients must cope with gzip on every answer.
            .layer(CompressionLayer::new().compress_when(SizeAbove::new(0)))
            // Outside the compression layer, so it reads the rewritten header.
            .layer(map_request(settle_accept_encoding))
            .with_state(self)
    }
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `Accept-Encoding` makes gzip acceptable, q-values read as RFC 9110 §12.5.3 says: an
/// explicit `gzip` (or `x-gzip`) entry with q > 0, else a `*` entry with q > 0. So `gzip;q=0`
/// refuses gzip even next to `*`, and `identity` alone does not accept it (the 406 of §1 [C]).
/// An entry whose q-value cannot be read is ignored, as tower-http's compression ignores it.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let entries = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','));
    for entry in entries {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding == "*" {
            &mut any
        } else {
            continue;
        };
        if let Some(q) = qvalue(parts) {
            *slot = Some(slot.map_or(q, |seen: u16| seen.max(q)));
        }
    }
    gzip.or(any).is_some_and(|q| q > 0)
}

/// An entry's q-value in thousandths (1000 without a `q` parameter), or `None` when it is not a
/// qvalue (`0`, `1`, `0.` to `0.999`, `1.000`).
fn qvalue<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    for param in params {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        let value = value.trim();
        let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
        let whole = match whole {
            "0" => 0,
            "1" => 1000,
            _ => return None,
        };
        if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
        return Some(whole + thousandths).filter(|q| *q <= 1000);
    }
    Some(1000)
}

/// Rewrites `Accept-Encoding` to what [`accepts_gzip`] decides, before the compression layer
/// reads it: tower-http does not read `*` as gzip, and the API's answers are gzip whenever gzip
/// is acceptable (§1 [I]).
async fn settle_accept_encoding(mut request: Request) -> Request {
    let coding = if accepts_gzip(request.headers()) {
        "gzip"
    } else {
        "identity"
    };
    request
        .headers_mut()
        .insert(ACCEPT_ENCODING, HeaderValue::from_static(coding));
    request
}

async fn insights(
    State(sim): State<Arc<Sim>>,
    Path(kind): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(endpoint) = Endpoint::from_name(&kind) else {
        return not_found(method, uri).await;
    };
    let authorization = header(&headers, AUTHORIZATION);
    let label = auth::claimed_label(sim.world(), authorization);
    let latency = sim.faults().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let envelope = Envelope {
        accepts_gzip: accepts_gzip(&headers),
        content_type: header(&headers, CONTENT_TYPE),
    };
    let req = SignedRequest {
        method: method.as_str(),
        host: header(&headers, HOST)
            .or(uri.authority().map(|a| a.as_str()))
            .unwrap_or_default(),
        path: uri.path(),
        query: uri.query(),
        authorization,
        body: &body,
    };
    let reply = sim.insights(endpoint, &req, envelope);
    let status = if reply.dropped {
        DROPPED_STATUS
    } else {
        reply.status
    };
    tracing::debug!(endpoint = endpoint.name(), credential = %label, status, "sim answered");
    sim.stats.request(endpoint.name(), &label, status);
    reply.into_response()
}

/// `POST /oauth2/token`: the app's bearer token for its client credentials, else X's 403.
async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = if auth::client_credentials_ok(sim.world(), header(&headers, AUTHORIZATION), &body)
    {
        Reply::json(
            200,
            json!({"token_type": "bearer", "access_token": sim.bearer_token()}),
        )
    } else {
        // The api.twitter.com error format (engagement-api §6.2), not this host's plain strings.
        let error = json!({"code": 99, "label": "authenticity_token_error", "message": "Unable to verify your credentials"});
        Reply::json(403, json!({ "errors": [error] }))
    };
    let label = if reply.status == 200 {
        "bearer"
    } else {
        "unknown"
    };
    sim.stats.request(TOKEN_ENDPOINT, label, reply.status);
    reply.into_response()
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    Reply::json(200, json!(sim.stats())).into_response()
}

/// `POST /_sim/faults`: replaces the fault settings; keys left out become 0.
async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let parsed: Result<Faults, String> =
        serde_json::from_slice(&body).map_err(|e| format!("Invalid faults: {e}"));
    match parsed.and_then(|f| sim.set_faults(f).map(|()| f)) {
        Ok(f) => Reply::json(200, json!({ "faults": f })),
        Err(e) => Reply::errors(400, [e]),
    }
    .into_response()
}

/// Wrong path or method: 404 (REF), in this host's error style; the text is a simulator choice.
async fn not_found(method: Method, uri: Uri) -> Response {
    Reply::errors(404, [format!("Not found: {method} {}", uri.path())]).into_response()
}

/// A simulator serving in a tokio task.
#[derive(Debug)]
pub struct SimHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The simulator, to read its Tweets, numbers and stats.
    pub sim: Arc<Sim>,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// `http://ADDR`, the base URL a worker should use.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Binds `listen` (tests pass `127.0.0.1:0`) and serves a simulator of `world` on the system clock.
pub async fn spawn(world: World, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    spawn_sim(Arc::new(Sim::new(world)), listen).await
}

/// Binds `listen` and serves `sim` (built with any clock) until [`SimHandle::shutdown`].
pub async fn spawn_sim(sim: Arc<Sim>, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let router = sim.clone().router();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    Ok(SimHandle {
        addr,
        sim,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_acceptable_by_name_or_star_with_a_positive_q() {
        for yes in [
            &["gzip"][..],
            &["gzip, deflate"],
            &["br;q=1.0, GZIP ; Q=0.001"],
            &["x-gzip"],
            &["*"],
            &["identity", "*;q=0.5"],
            &["gzip;q=1", "gzip;q=0"],
        ] {
            assert!(accepts(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &["identity"],
            &["deflate, br"],
            &["gzip;q=0"],
            &["gzip;q=0.000, *"],
            &["*;q=0"],
            &["gzip;q=2"],
            &["gzip;q=0.5000"],
            &["gzip;q=high"],
            &["gzipped"],
        ] {
            assert!(!accepts(no), "{no:?}");
        }
    }
}
