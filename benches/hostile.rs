//! Peak memory of the release binary against answers built to exhaust it, beside the shipped
//! units' memory limits (systemd `MemoryMax=512M`, Kubernetes `limits.memory: 256Mi`):
//!
//! - a gzip bomb: 2 MB of gzip that inflates to 2 GiB, the answer to every batch;
//! - a plain 2 GiB body, with a Content-Length and chunked;
//! - the simulator's own answers, for comparison.
//!
//! 1,000 public Tweets make 4 `/totals` batches, all in flight at once (`max_in_flight = 4`),
//! so four bombs are read at the same time. `cargo bench --bench hostile` prints, per case, the
//! exit code, the error the batches failed with and the peak resident set (VmHWM). Not run by
//! `cargo test`; `cargo clippy --all-targets` checks it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use engagement_ingest::sim::{self, Sim, World};

/// The memory limit of the Kubernetes CronJob, the tighter of the two shipped units.
const LIMIT_MIB: f64 = 256.0;

fn world() -> World {
    World::from_toml_str(
        r#"
seed = 3
[app]
consumer_key = "bench"
consumer_secret = "bench-secret"
bearer_token = "bench-bearer"
[[accounts]]
handle = "acme"
user_id = 1001
access_token = "1001-acme"
access_token_secret = "acme-secret"
tweets = 1
[public]
tweets = 1000
[tweets]
spread_days = 20
"#,
    )
    .expect("the bench world parses")
}

/// 16 MiB of zeros as one gzip member, repeated: `members` × 16 MiB inflated.
fn bomb(members: usize) -> Bytes {
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b'0'; 1 << 20];
    for _ in 0..16 {
        member.write_all(&block).unwrap();
    }
    let member = member.finish().unwrap();
    Bytes::from(member.repeat(members))
}

/// What the stand-in answers every request with.
#[derive(Clone)]
enum Case {
    Gzip(Bytes),
    /// A plain body of this many bytes, written in 1 MiB chunks.
    Plain(usize),
    /// As `Plain`, without a Content-Length (chunked transfer encoding).
    Chunked(usize),
}

/// A bare HTTP/1.1 server on 127.0.0.1:0 answering every request with `case`.
async fn serve(case: Case) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let case = case.clone();
            tokio::spawn(async move {
                // The request: its head, then as many bytes as its Content-Length says.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let framing = match &case {
                    Case::Gzip(body) => {
                        format!("content-encoding: gzip\r\ncontent-length: {}", body.len())
                    }
                    Case::Plain(n) => format!("content-length: {n}"),
                    Case::Chunked(_) => "transfer-encoding: chunked".to_string(),
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\
                     connection: close\r\n\r\n"
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                match case {
                    Case::Gzip(body) => {
                        let _ = socket.write_all(&body).await;
                    }
                    Case::Plain(n) | Case::Chunked(n) => {
                        let chunked = matches!(case, Case::Chunked(_));
                        let mut chunk = Vec::new();
                        if chunked {
                            chunk.extend_from_slice(b"100000\r\n");
                        }
                        chunk.extend(std::iter::repeat_n(b' ', 1 << 20));
                        if chunked {
                            chunk.extend_from_slice(b"\r\n");
                        }
                        for _ in 0..n >> 20 {
                            if socket.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Peak resident set of a process, from `/proc/<pid>/status` (VmHWM), in MiB.
fn vm_hwm(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `run --job totals` against `base_url` and returns (exit code, peak MiB, stderr's last
/// error line).
fn run(dir: &Path, config: &str, base_url: &str) -> (Option<i32>, f64, String) {
    let path = dir.join("config.toml");
    let text = config.replacen(
        &config
            .lines()
            .find(|l| l.starts_with("base_url"))
            .unwrap()
            .to_string(),
        &format!("base_url = {base_url:?}"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_engagement-ingest"))
        .args([
            "--config",
            &path.to_string_lossy(),
            "run",
            "--job",
            "totals",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak: f64 = 0.0;
    let started = Instant::now();
    let status = loop {
        if let Some(hwm) = vm_hwm(pid) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run hangs"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let error = stderr
        .lines()
        .rev()
        .find(|l| l.contains("error=") || l.contains("Batch failed"))
        .map(|l| {
            let at = l.find("error=").unwrap_or(0);
            l[at..].chars().take(110).collect()
        })
        .unwrap_or_default();
    (status.code(), peak, error)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = rt.block_on(async {
        sim::spawn_sim(Arc::new(Sim::new(world())), ([127, 0, 0, 1], 0).into())
            .await
            .unwrap()
    });
    let inventory = dir.path().join("tweets.csv");
    std::fs::write(&inventory, sim.sim.inventory_csv()).unwrap();
    let config = sim
        .sim
        .worker_config_toml(&sim.base_url(), &inventory.to_string_lossy())
        .replace(
            "path = \"engagement.sqlite\"",
            &format!("path = {:?}", dir.path().join("e.sqlite").to_string_lossy()),
        )
        .replace("[api]\n", "[api]\nmax_in_flight = 4\nretry_attempts = 5\n");
    let bomb = bomb(128);
    println!(
        "gzip bomb: {:.1} MB of gzip inflating to {} MiB; limit api.max_answer_mib = 16 (default)",
        bomb.len() as f64 / 1e6,
        128 * 16
    );
    let cases = [
        ("simulator answers", None),
        ("gzip bomb, 2 GiB inflated", Some(Case::Gzip(bomb))),
        ("plain body, 2 GiB", Some(Case::Plain(2 << 30))),
        ("chunked body, 2 GiB", Some(Case::Chunked(2 << 30))),
    ];
    println!(
        "{:<28} {:>5} {:>10} {:>8}  error",
        "case", "exit", "peak MiB", "of limit"
    );
    for (name, case) in cases {
        let url = match case {
            None => sim.base_url(),
            Some(case) => rt.block_on(serve(case)),
        };
        let (code, peak, error) = run(dir.path(), &config, &url);
        println!(
            "{name:<28} {:>5} {peak:>10.1} {:>7.0}%  {error}",
            code.map_or("-".into(), |c| c.to_string()),
            peak / LIMIT_MIB * 100.0
        );
    }
}
