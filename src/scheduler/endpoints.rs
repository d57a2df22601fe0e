//! The daemon's HTTP routes: `/metrics` (Prometheus text format) and `/healthz` (the verdict per
//! kind and the warnings a person should see), and the warning for serving them off loopback.
//! The sockets, their limits and timeouts are `crate::listener`'s; what the metrics count is
//! `crate::metrics`'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Daemon;
use crate::domain::JobKind;
use crate::metrics;
use crate::pipeline::Context;

/// `/metrics` and `/healthz` on the daemon's current context.
pub(super) fn router(daemon: Arc<Daemon>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .with_state(daemon)
}

/// The warning for endpoints served on `addr`, unless it is a loopback address.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "/metrics and /healthz are served without authentication on {addr}: anyone who can \
             reach it can read them. Bind 127.0.0.1, or restrict access with a firewall or network policy"
        )
    })
}

async fn serve_metrics(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        daemon.current().metrics.render(),
    )
}

async fn serve_health(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let (healthy, body) = health_report(&daemon.current());
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// `/healthz`: healthy while the last cycle of every kind ended `ok` within twice its period;
/// the body says which kind fails and why, then the conditions a person should see that do not
/// fail a kind (refused or paused accounts, a bad inventory line, an unreachable API).
pub(super) fn health_report(ctx: &Context) -> (bool, String) {
    let now = chrono::Utc::now();
    let verdict = metrics::health(&ctx.metrics, &ctx.config.schedule, &JobKind::ALL, now);
    let healthy = verdict.iter().all(|h| h.healthy);
    let mut body = String::from(if healthy { "ok\n" } else { "unhealthy\n" });
    for h in &verdict {
        body.push_str(&format!(
            "{}: {} ({})\n",
            h.kind.name(),
            if h.healthy { "ok" } else { "failing" },
            h.reason
        ));
    }
    for warning in ctx.metrics.warnings(now.timestamp()) {
        body.push_str(&format!("warning: {warning}\n"));
    }
    if let Some(problem) = &ctx.config_problem {
        body.push_str(&format!("warning: {problem}\n"));
    }
    (healthy, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_loopback_metrics_address_is_warned_about() {
        for quiet in [
            "127.0.0.1:9464",
            "127.3.2.1:9464",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:9464",
        ] {
            assert_eq!(exposure_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for exposed in [
            "0.0.0.0:9464",
            "10.0.0.5:9464",
            "[::]:9464",
            "[2001:db8::1]:9464",
        ] {
            let warning = exposure_warning(exposed.parse().unwrap()).expect(exposed);
            assert!(
                warning.contains(exposed) && warning.contains("without authentication"),
                "{warning}"
            );
        }
    }
}
