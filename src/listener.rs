//! The daemon's HTTP listener (`/metrics`, `/healthz`): HTTP/1 with a bounded number of
//! connections, each closed when its request head is late, when it idles, or when it has lived
//! too long, so that clients of the port cannot take the descriptors and memory the cycles need.
//! It owns sockets and their limits, not the routes.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one connection may take, and how many connections there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. At the cap nothing more is accepted: new connections wait in
    /// the kernel's backlog, where they hold no descriptor of ours, until one closes.
    pub max_connections: usize,
    /// A connection must send a complete request head within this time after it is accepted,
    /// and again after each response (hyper restarts the timer when a keep-alive connection
    /// goes idle), else it is closed: this is the idle timeout too.
    pub header_read: Duration,
    /// A connection is closed this long after it was accepted, whatever it is doing.
    pub lifetime: Duration,
}

impl Limits {
    /// The daemon's limits. A Prometheus scrape is one small request that needs one connection,
    /// sends its head at once and is answered in milliseconds; 64 connections leave room for
    /// several scrapers and people with curl, and stay far below the 1,024 open files a process
    /// may be left with.
    pub const METRICS: Limits = Limits {
        max_connections: 64,
        header_read: Duration::from_secs(5),
        lifetime: Duration::from_secs(60),
    };
}

/// How long the accept loop pauses after an error that is not the connection's own (out of
/// descriptors, out of memory): accepting again at once would fail again at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this interval for accept errors.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` within `limits` until `stop` is cancelled; then stops accepting,
/// closes the port, lets requests in progress finish (closing idle connections at once) and
/// returns once every connection is closed (at most `limits.lifetime` later).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut errors = Throttle::new(ACCEPT_LOG_INTERVAL);
    loop {
        // A slot first: at the cap, connections wait in the backlog rather than in our memory.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(stream, app.clone(), limits, stop.clone(), slot));
                tracing::trace!(peer = %peer, "Metrics connection accepted");
            }
            // The connection's own failure (reset before it was accepted): the next one is fine.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "A metrics connection failed before it was accepted");
            }
            Err(e) => {
                if let Some(suppressed) = errors.note(Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        suppressed,
                        "The metrics listener cannot accept connections; retrying (more such errors in the next minute are not logged)"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection within `limits`; its slot is released when it closes.
async fn connection(
    stream: TcpStream,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let mut conn =
        pin!(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app)));
    let mut lifetime = pin!(tokio::time::sleep(limits.lifetime));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                // A late request head ends here too, as an error.
                if let Err(e) = result {
                    tracing::debug!(error = %e, "Metrics connection closed");
                }
                return;
            }
            () = &mut lifetime => {
                // Dropping the connection closes the socket.
                tracing::debug!(lifetime = ?limits.lifetime, "Metrics connection closed: it lived too long");
                return;
            }
            () = stop.cancelled(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// An accept error that concerns only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Lets one event through per interval and counts the ones held back.
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: `Some(events held back since the last one let through)` when this one
    /// goes through, `None` when it is held back.
    fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    use super::*;

    /// Generous bound for things that happen within a second when the machine is idle.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn short(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            header_read: Duration::from_millis(300),
            lifetime: Duration::from_secs(30),
        }
    }

    struct Server {
        addr: std::net::SocketAddr,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(app: axum::Router, limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, limits, stop.clone()));
        Server { addr, stop, task }
    }

    fn hello() -> axum::Router {
        axum::Router::new().route("/", get(|| async { "hello" }))
    }

    /// Reads until the server closes the connection; what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got))
            .await
            .expect("the server closes the connection")
            .expect("a clean close");
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn request(stream: &mut TcpStream, path: &str) {
        let head = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_request_is_closed_after_the_header_timeout() {
        let server = start(hello(), short(4)).await;
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(read_to_close(&mut silent).await, "");
        // The port still serves.
        let mut next = TcpStream::connect(server.addr).await.unwrap();
        request(&mut next, "/").await;
        let answer = read_to_close(&mut next).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
        let server = start(hello(), short(4)).await;
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: te").await.unwrap();
        assert_eq!(read_to_close(&mut slow).await, "");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
        let server = start(hello(), short(4)).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        request(&mut client, "/").await;
        // HTTP/1.1 keeps the connection open after the answer; the server closes it once idle.
        let answer = read_to_close(&mut client).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
        assert!(!answer.contains("connection: close"), "{answer}");
    }

    #[tokio::test]
    async fn a_connection_is_closed_at_the_end_of_its_lifetime_whatever_it_does() {
        let app = axum::Router::new().route("/stuck", get(std::future::pending::<&str>));
        let limits = Limits {
            lifetime: Duration::from_millis(300),
            ..short(4)
        };
        let server = start(app, limits).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        request(&mut client, "/stuck").await;
        assert_eq!(read_to_close(&mut client).await, "");
    }

    /// Requests on more connections than the cap: never more than the cap served at once, and
    /// each one answered as slots free.
    #[tokio::test]
    async fn no_more_connections_than_the_cap_are_served_at_once() {
        #[derive(Default)]
        struct Gate {
            inside: AtomicUsize,
            peak: AtomicUsize,
            open: Notify,
        }
        let gate = Arc::new(Gate::default());
        let app = axum::Router::new().route(
            "/",
            get({
                let gate = Arc::clone(&gate);
                move || async move {
                    let inside = gate.inside.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.peak.fetch_max(inside, Ordering::SeqCst);
                    gate.open.notified().await;
                    gate.inside.fetch_sub(1, Ordering::SeqCst);
                    "through"
                }
            }),
        );
        let limits = Limits {
            header_read: Duration::from_secs(30),
            ..short(2)
        };
        let server = start(app, limits).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            let mut client = TcpStream::connect(server.addr).await.unwrap();
            request(&mut client, "/").await;
            clients.push(tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = client.read(&mut buf).await.unwrap();
                String::from_utf8_lossy(&buf[..n]).into_owned()
            }));
        }
        for released in 0..5 {
            let deadline = Instant::now() + DEADLINE;
            let expect = (5 - released).min(2);
            while gate.inside.load(Ordering::SeqCst) < expect {
                assert!(Instant::now() < deadline, "{released} released");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Time for a connection beyond the cap to get in, if the cap let it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(gate.inside.load(Ordering::SeqCst), expect);
            // Wake one handler: its client reads the answer and hangs up, which frees the slot.
            gate.open.notify_one();
        }
        for client in clients {
            let answer = tokio::time::timeout(DEADLINE, client)
                .await
                .unwrap()
                .unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        assert_eq!(gate.peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stopping_closes_the_port_and_idle_connections_and_returns() {
        let limits = Limits {
            header_read: Duration::from_secs(30),
            ..short(4)
        };
        let server = start(hello(), limits).await;
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        request(&mut idle, "/").await;
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        server.stop.cancel();
        tokio::time::timeout(DEADLINE, server.task)
            .await
            .expect("serve returns once stopped")
            .unwrap();
        assert_eq!(read_to_close(&mut idle).await, "");
        let refused = TcpStream::connect(server.addr).await;
        assert!(refused.is_err(), "the port is closed");
    }

    #[test]
    fn the_throttle_lets_one_event_through_per_interval_and_counts_the_others() {
        let mut throttle = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(throttle.note(t0), Some(0));
        assert_eq!(throttle.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(throttle.note(t0 + Duration::from_secs(59)), None);
        assert_eq!(throttle.note(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(throttle.note(t0 + Duration::from_secs(61)), None);
        assert_eq!(throttle.note(t0 + Duration::from_secs(200)), Some(1));
    }
}
