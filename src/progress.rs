//! The progress reporter: logs a cycle's batches done per kind and when the rest should be done,
//! from the metrics it reads. It only logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Limit;
use crate::domain::JobKind;
use crate::metrics::Metrics;

/// the configured limits (or, for an unlimited endpoint, at the rate seen so far).
pub struct Progress {
    metrics: Arc<Metrics>,
    kinds: Vec<JobKind>,
    limits: Vec<(JobKind, Limit)>,
    started: Instant,
}

impl Progress {
    /// A reporter of `kinds`, each paced at its `limits`, for a cycle that began at `started`.
    pub fn new(
        metrics: Arc<Metrics>,
        kinds: Vec<JobKind>,
        limits: Vec<(JobKind, Limit)>,
        started: Instant,
    ) -> Progress {
        Progress {
            metrics,
            kinds,
            limits,
            started,
        }
    }

    /// Logs a line every `every` (the first after one period) until the task is aborted.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
            let mut parts = Vec::new();
            let mut eta = Some(0.0_f64);
            let states: Vec<_> = self.kinds.iter().map(|k| self.metrics.kind(*k)).collect();
            let all_done: usize = states.iter().map(|s| s.done.min(s.planned)).sum();
            let overall = (all_done > 0).then(|| all_done as f64 / elapsed);
            for &kind in &self.kinds {
                let state = self.metrics.kind(kind);
                let (done, planned) = (state.done.min(state.planned), state.planned);
                parts.push(format!("{} {done}/{planned}", kind.name()));
                let left = (planned - done) as f64;
                let limit = self.limits.iter().find(|(k, _)| *k == kind).map(|(_, l)| l);
                let configured = limit.and_then(|l| {
                    let per_minute = l.per_minute.map(|n| f64::from(n.get()) / 60.0);
                    let per_second = l.per_second.map(|n| f64::from(n.get()));
                    match (per_minute, per_second) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                });
                let seen = (done > 0).then(|| done as f64 / elapsed);
                eta = match (eta, configured.or(seen).or(overall)) {
                    _ if left == 0.0 => eta,
                    (Some(e), Some(rate)) => Some(e.max(left / rate)),
                    _ => None,
                };
            }
            let eta = eta.map_or_else(|| "unknown".to_string(), |e| format!("{:.0}s", e.ceil()));
            tracing::info!(batches = %parts.join(", "), eta = %eta, "Progress");
        }
    }
}
