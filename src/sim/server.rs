//! HTTP plumbing of the simulator: axum routes, gzip, request counting, and binding/serving in a
//! tokio task. Decisions are made by `Sim`; this module only translates HTTP to and from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;

use crate::domain::Endpoint;

use super::auth::{self, SignedRequest};
use super::service::{Reply, Sim};
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
            .with_state(self)
    }
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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
    let accepts_gzip = headers.get_all(ACCEPT_ENCODING).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("gzip"))
    });
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
    let reply = sim.insights(endpoint, &req, accepts_gzip);
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
