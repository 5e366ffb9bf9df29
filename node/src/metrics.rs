//! Prometheus metrics, rendered as text at `/metrics`. Counters are atomics or short
//! std-mutex sections that never cross an `.await`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    durations: Mutex<Histogram>,
    in_flight: AtomicI64,
    bytes_received: AtomicU64,
    blobs_collected: AtomicU64,
    audit_failures: AtomicU64,
    forwarded: AtomicU64,
    forward_streams: AtomicU64,
    failovers: AtomicU64,
    heartbeats_unwritten: AtomicU64,
    heartbeats_batched: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn record(&self, method: &str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut h) = self.durations.lock() {
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            let secs = elapsed.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    pub fn add_bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_blobs_collected(&self, n: u64) {
        self.blobs_collected.fetch_add(n, Ordering::Relaxed);
    }

    /// A pod request forwarded to its owner over the mesh.
    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream opened to forward a pod request (the others reused a pooled one).
    pub fn forward_stream_opened(&self) {
        self.forward_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeat_unwritten(&self) {
        self.heartbeats_unwritten.fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeats_batched(&self, n: usize) {
        self.heartbeats_batched
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn pod_failed_over(&self) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failed(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, node_id: &str, backend: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP xpod_build_info Build and node information.\n# TYPE xpod_build_info gauge"
        );
        let _ = writeln!(
            out,
            "xpod_build_info{{version=\"{}\",node=\"{}\",metadata=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            node_id,
            backend
        );
        let _ = writeln!(out, "# HELP xpod_http_requests_total HTTP requests by method and status.\n# TYPE xpod_http_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "xpod_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP xpod_http_request_duration_seconds Time to response headers.\n# TYPE xpod_http_request_duration_seconds histogram");
        if let Ok(h) = self.durations.lock() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let c = h.counts.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "xpod_http_request_duration_seconds_bucket{{le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "xpod_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "xpod_http_request_duration_seconds_sum {}", h.sum);
            let _ = writeln!(out, "xpod_http_request_duration_seconds_count {}", h.count);
        }
        let gauges = [
            (
                "xpod_http_in_flight_requests",
                "gauge",
                "Requests being served.",
                self.in_flight.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_http_body_bytes_received_total",
                "counter",
                "Resource body bytes stored.",
                self.bytes_received.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_blobs_collected_total",
                "counter",
                "Unreferenced blobs deleted.",
                self.blobs_collected.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_mesh_forwarded_requests_total",
                "counter",
                "Pod requests forwarded to their owner over the mesh.",
                self.forwarded.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_mesh_forward_streams_opened_total",
                "counter",
                "Streams opened to forward pod requests (every other forwarded request reused a pooled stream).",
                self.forward_streams.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_edge_heartbeats_unwritten_total",
                "counter",
                "Edge heartbeats that changed nothing and needed no database write.",
                self.heartbeats_unwritten.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_edge_heartbeats_batched_total",
                "counter",
                "Edge heartbeats written in batches (one statement a second for every such edge).",
                self.heartbeats_batched.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_pods_failed_over_total",
                "counter",
                "Pods of dead centers this node moved to a live center.",
                self.failovers.load(Ordering::Relaxed).to_string(),
            ),
            (
                "xpod_audit_failures_total",
                "counter",
                "Audit entries that could not be written.",
                self.audit_failures.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::default();
        {
            let _g = m.start();
            m.record("GET", 200, Duration::from_millis(3));
            m.record("GET", 200, Duration::from_millis(30));
            m.record("PUT", 412, Duration::from_millis(1));
        }
        let text = m.render("n1", "sqlite");
        assert!(
            text.contains("xpod_http_requests_total{method=\"GET\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("xpod_http_requests_total{method=\"PUT\",status=\"412\"} 1"));
        assert!(text.contains("xpod_http_request_duration_seconds_count 3"));
        assert!(text.contains("xpod_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("xpod_http_in_flight_requests 0"));
    }
}
