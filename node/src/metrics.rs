//! Prometheus metrics at `/metrics`, kept in a registry of the `prometheus` crate and rendered
//! in the text format (0.0.4).
//!
//! Two kinds:
//! - counted as things happen: requests per route, method and status with a latency histogram
//!   per route, body bytes, mesh forwarding by kind of hop, heartbeats, failovers, audit
//!   failures;
//! - sampled at the scrape from the state that owns them ([`Sample`]): the owner table's hits
//!   and loads, key loads, unaudited refusals, live tasks, the lease, connected edges and each
//!   edge's tunnel bytes (from its QUIC connection's own counters, so a series lives as long as
//!   the tunnel).
//!
//! - reported by the modules that own them as [`Figure`]s (region stores, the certificate
//!   manager, the sandbox runner): registered on first sight, set at every scrape.
//!
//! Labels are bounded: a route is a path template ([`crate::http::route_label`]), never a raw
//! path; the edge label is a node id, which the cluster issued.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Upper bounds (seconds) of the request-duration histograms.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    in_flight: IntGauge,
    bytes_received: IntCounter,
    blobs_collected: IntCounter,
    audit_failures: IntCounter,
    forwarded: IntCounterVec,
    forward_streams: IntCounter,
    failovers: IntCounter,
    heartbeats_unwritten: IntCounter,
    heartbeats_batched: IntCounter,
    sampled: Sampled,
    /// The families of [`Figure`]s, registered when first reported.
    figures: Mutex<HashMap<&'static str, Family>>,
    /// One scrape at a time: sampling sets counters to their sources' values.
    scrape: Mutex<()>,
}

/// One value a module reports for the scrape.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Label names and values (the same names for every figure of one family).
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (a count since the node started).
    Counter,
    Gauge,
}

impl Figure {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Figure {
        Figure {
            name,
            help,
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Figure {
        Figure {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// This figure with a label.
    pub fn with(mut self, label: &'static str, value: impl Into<String>) -> Figure {
        self.labels.push((label, value.into()));
        self
    }
}

enum Family {
    Counters(IntCounterVec),
    Gauges(GaugeVec),
}

/// The families whose values are read at the scrape.
struct Sampled {
    build: IntGaugeVec,
    owner_hits: IntCounter,
    owner_loads: IntCounter,
    key_loads: IntCounter,
    refusals_unaudited: IntCounter,
    alive_tasks: IntGauge,
    lease_valid: IntGauge,
    lease_remaining: Gauge,
    edges: IntGauge,
    tunnel_bytes: IntCounterVec,
    bandwidth_limit: IntGaugeVec,
    bandwidth_waits: IntCounterVec,
}

/// What the scrape reads from the rest of the node.
pub struct Sample<'a> {
    pub node_id: &'a str,
    pub backend: &'a str,
    pub owner_hits: u64,
    pub owner_loads: u64,
    pub key_loads: u64,
    pub refusals_unaudited: u64,
    pub alive_tasks: usize,
    pub lease_valid: bool,
    /// Seconds until the lease lapses (`None`: this node holds none).
    pub lease_remaining: Option<f64>,
    pub edges_connected: usize,
    /// Per connected edge: node id, bytes sent to it, bytes received from it.
    pub tunnel_bytes: Vec<(String, u64, u64)>,
    /// Per bandwidth-limited edge: node id, bytes per second, waits to it, waits from it.
    pub bandwidth: Vec<(String, u64, u64, u64)>,
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Registers `metric` in `r` and hands it back. Names are constants of this file: a clash is a
/// bug caught by the unit test below.
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, metric: M) -> M {
    r.register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(r, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid metric"))
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let sampled = Sampled {
            build: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("xpod_build_info", "Build and node information."),
                    &["version", "node", "metadata"],
                )
                .expect("valid metric"),
            ),
            owner_hits: counter(
                &r,
                "xpod_owner_table_hits_total",
                "Pod owner lookups answered from memory (the owner, or that there is no such pod).",
            ),
            owner_loads: counter(
                &r,
                "xpod_owner_loads_total",
                "Pod owners (or their absence) read from the metadata store by the owner table (its misses).",
            ),
            key_loads: counter(
                &r,
                "xpod_key_loads_total",
                "API keys read from the metadata store by the key cache.",
            ),
            refusals_unaudited: counter(
                &r,
                "xpod_refusals_unaudited_total",
                "Refusals beyond the audit budget (counted, not audited).",
            ),
            alive_tasks: gauge(
                &r,
                "xpod_runtime_alive_tasks",
                "Tasks alive in the node's async runtime.",
            ),
            lease_valid: gauge(
                &r,
                "xpod_lease_valid",
                "Whether this node may write for its pods now (its liveness lease runs; 1 on nodes without one).",
            ),
            lease_remaining: reg(
                &r,
                Gauge::new(
                    "xpod_lease_remaining_seconds",
                    "Seconds until this center's liveness lease lapses unless renewed (absent on nodes without one).",
                )
                .expect("valid metric"),
            ),
            edges: gauge(
                &r,
                "xpod_edges_connected",
                "Edges whose tunnel this node holds.",
            ),
            tunnel_bytes: counter_vec(
                &r,
                "xpod_tunnel_bytes_total",
                "Bytes on each connected edge's tunnel (QUIC datagrams, also when carried over TCP), by direction: tx to the edge, rx from it. Reset when the tunnel reconnects.",
                &["edge", "direction"],
            ),
            bandwidth_limit: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "xpod_edge_bandwidth_limit_bytes_per_second",
                        "An edge's bandwidth limit, each way, as this center enforces it (edges without one: absent).",
                    ),
                    &["edge"],
                )
                .expect("valid metric"),
            ),
            bandwidth_waits: counter_vec(
                &r,
                "xpod_edge_bandwidth_waits_total",
                "Times a relay to (up) or from (down) a bandwidth-limited edge waited for its limit.",
                &["edge", "direction"],
            ),
        };
        let forwarded = counter_vec(
            &r,
            "xpod_mesh_forwarded_requests_total",
            "Pod requests forwarded to their owner, by hop: peer (another center), edge (through the tunnel this node holds), via_center (to the center holding the edge's tunnel).",
            &["via"],
        );
        // Known label values start at 0, so a rate is defined before the first forward.
        for via in ["peer", "edge", "via_center"] {
            forwarded.with_label_values(&[via]);
        }
        Metrics {
            requests: counter_vec(
                &r,
                "xpod_http_requests_total",
                "HTTP requests by route (a path template), method and status.",
                &["route", "method", "status"],
            ),
            durations: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "xpod_http_request_duration_seconds",
                        "Time to response headers, by route.",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            in_flight: gauge(&r, "xpod_http_in_flight_requests", "Requests being served."),
            bytes_received: counter(
                &r,
                "xpod_http_body_bytes_received_total",
                "Resource body bytes stored.",
            ),
            blobs_collected: counter(
                &r,
                "xpod_blobs_collected_total",
                "Unreferenced blobs deleted.",
            ),
            audit_failures: counter(
                &r,
                "xpod_audit_failures_total",
                "Audit entries that could not be written.",
            ),
            forwarded,
            forward_streams: counter(
                &r,
                "xpod_mesh_forward_streams_opened_total",
                "Streams opened to forward pod requests (every other forwarded request reused a pooled stream).",
            ),
            failovers: counter(
                &r,
                "xpod_pods_failed_over_total",
                "Pods of dead centers this node moved to a live center.",
            ),
            heartbeats_unwritten: counter(
                &r,
                "xpod_edge_heartbeats_unwritten_total",
                "Edge heartbeats that changed nothing and needed no database write.",
            ),
            heartbeats_batched: counter(
                &r,
                "xpod_edge_heartbeats_batched_total",
                "Edge heartbeats written in batches (one statement a second for every such edge).",
            ),
            sampled,
            registry: r,
            figures: Mutex::new(HashMap::new()),
            scrape: Mutex::new(()),
        }
    }
}

/// Sets a counter that mirrors a monotonic source to the source's value.
fn mirror(c: &IntCounter, value: u64) {
    let now = c.get();
    if value >= now {
        c.inc_by(value - now);
    } else {
        // The source restarted (e.g. a table rebuilt): a counter reset, as Prometheus knows it.
        c.reset();
        c.inc_by(value);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(self)
    }

    /// A request served: `route` is its path template.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.durations
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn add_bytes_received(&self, n: u64) {
        self.bytes_received.inc_by(n);
    }

    pub fn add_blobs_collected(&self, n: u64) {
        self.blobs_collected.inc_by(n);
    }

    /// A pod request forwarded to its owner: `via` is `peer`, `edge` or `via_center`.
    pub fn forwarded(&self, via: &str) {
        self.forwarded.with_label_values(&[via]).inc();
    }

    /// A stream opened to forward a pod request (the others reused a pooled one).
    pub fn forward_stream_opened(&self) {
        self.forward_streams.inc();
    }

    pub fn heartbeat_unwritten(&self) {
        self.heartbeats_unwritten.inc();
    }

    pub fn heartbeats_batched(&self, n: usize) {
        self.heartbeats_batched.inc_by(n as u64);
    }

    pub fn pod_failed_over(&self) {
        self.failovers.inc();
    }

    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    /// Sets the families of `figures` to these values (a family missing from `figures` keeps
    /// none: its series end).
    fn take_figures(&self, figures: &[Figure]) {
        let mut families = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        for family in families.values() {
            match family {
                Family::Counters(c) => c.reset(),
                Family::Gauges(g) => g.reset(),
            }
        }
        for f in figures {
            let family = families.entry(f.name).or_insert_with(|| {
                let names: Vec<&str> = f.labels.iter().map(|(k, _)| *k).collect();
                let opts = Opts::new(f.name, f.help);
                match f.kind {
                    Kind::Counter => Family::Counters(reg(
                        &self.registry,
                        IntCounterVec::new(opts, &names).expect("valid metric"),
                    )),
                    Kind::Gauge => Family::Gauges(reg(
                        &self.registry,
                        GaugeVec::new(opts, &names).expect("valid metric"),
                    )),
                }
            });
            let values: Vec<&str> = f.labels.iter().map(|(_, v)| v.as_str()).collect();
            match family {
                Family::Counters(c) => {
                    if let Ok(c) = c.get_metric_with_label_values(&values) {
                        c.inc_by(f.value.max(0.0) as u64);
                    }
                }
                Family::Gauges(g) => {
                    if let Ok(g) = g.get_metric_with_label_values(&values) {
                        g.set(f.value);
                    }
                }
            }
        }
    }

    /// The Prometheus text exposition, after taking `sample` and the modules' `figures`.
    pub fn render(&self, sample: Sample<'_>, figures: &[Figure]) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.sampled;
        s.build.reset();
        s.build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), sample.node_id, sample.backend])
            .set(1);
        mirror(&s.owner_hits, sample.owner_hits);
        mirror(&s.owner_loads, sample.owner_loads);
        mirror(&s.key_loads, sample.key_loads);
        mirror(&s.refusals_unaudited, sample.refusals_unaudited);
        s.alive_tasks.set(sample.alive_tasks as i64);
        s.lease_valid.set(i64::from(sample.lease_valid));
        s.lease_remaining.set(sample.lease_remaining.unwrap_or(0.0));
        s.edges.set(sample.edges_connected as i64);
        // Only the edges connected now: a series ends with its tunnel.
        s.tunnel_bytes.reset();
        for (edge, tx, rx) in &sample.tunnel_bytes {
            s.tunnel_bytes
                .with_label_values(&[edge.as_str(), "tx"])
                .inc_by(*tx);
            s.tunnel_bytes
                .with_label_values(&[edge.as_str(), "rx"])
                .inc_by(*rx);
        }
        self.take_figures(figures);
        s.bandwidth_limit.reset();
        s.bandwidth_waits.reset();
        for (edge, rate, up, down) in &sample.bandwidth {
            s.bandwidth_limit
                .with_label_values(&[edge.as_str()])
                .set(i64::try_from(*rate).unwrap_or(i64::MAX));
            s.bandwidth_waits
                .with_label_values(&[edge.as_str(), "up"])
                .inc_by(*up);
            s.bandwidth_waits
                .with_label_values(&[edge.as_str(), "down"])
                .inc_by(*down);
        }
        let mut families = self.registry.gather();
        if sample.lease_remaining.is_none() {
            families.retain(|f| f.name() != "xpod_lease_remaining_seconds");
        }
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding the metrics failed: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample<'static> {
        Sample {
            node_id: "n1",
            backend: "sqlite",
            owner_hits: 7,
            owner_loads: 2,
            key_loads: 1,
            refusals_unaudited: 0,
            alive_tasks: 12,
            lease_valid: true,
            lease_remaining: None,
            edges_connected: 1,
            tunnel_bytes: vec![("laptop".into(), 1500, 300)],
            bandwidth: vec![("laptop".into(), 1024, 0, 3)],
        }
    }

    #[test]
    fn renders_per_route_counts_histograms_and_samples() {
        let m = Metrics::default();
        {
            let _g = m.start();
            m.record("/{pod}", "GET", 200, Duration::from_millis(3));
            m.record("/{pod}", "GET", 200, Duration::from_millis(30));
            m.record("/.cluster/pods", "PUT", 412, Duration::from_millis(1));
        }
        m.forwarded("peer");
        let text = m.render(sample(), &[]);
        for want in [
            "xpod_http_requests_total{method=\"GET\",route=\"/{pod}\",status=\"200\"} 2",
            "xpod_http_requests_total{method=\"PUT\",route=\"/.cluster/pods\",status=\"412\"} 1",
            "xpod_http_request_duration_seconds_count{route=\"/{pod}\"} 2",
            "xpod_http_request_duration_seconds_bucket{route=\"/{pod}\",le=\"0.005\"} 1",
            "xpod_http_in_flight_requests 0",
            "xpod_mesh_forwarded_requests_total{via=\"peer\"} 1",
            "xpod_owner_table_hits_total 7",
            "xpod_tunnel_bytes_total{direction=\"tx\",edge=\"laptop\"} 1500",
            "xpod_build_info{metadata=\"sqlite\",node=\"n1\",version=",
            "xpod_edge_bandwidth_waits_total{direction=\"down\",edge=\"laptop\"} 3",
            "xpod_edge_bandwidth_limit_bytes_per_second{edge=\"laptop\"} 1024",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        assert!(
            !text.contains("xpod_lease_remaining_seconds"),
            "no lease, no lease figure"
        );
        // A second scrape: mirrored counters follow their source; a gone edge's series ends.
        let mut later = sample();
        later.owner_hits = 9;
        later.tunnel_bytes.clear();
        later.bandwidth.clear();
        later.lease_remaining = Some(4.5);
        let figures = [
            Figure::counter("xpod_test_total", "A test counter.", 4).with("tier", "own"),
            Figure::gauge("xpod_test_bytes", "A test gauge.", 2.5),
        ];
        let text = m.render(later, &figures);
        assert!(text.contains("xpod_owner_table_hits_total 9"), "{text}");
        assert!(!text.contains("edge=\"laptop\""), "{text}");
        assert!(text.contains("xpod_test_total{tier=\"own\"} 4"), "{text}");
        assert!(
            text.contains("# HELP xpod_test_bytes A test gauge."),
            "{text}"
        );
        assert!(text.contains("xpod_test_bytes 2.5"), "{text}");
        // Set, not added to: the next scrape shows the source's value; a figure no longer
        // reported has no series.
        let text = m.render(sample(), &figures[..1]);
        assert!(text.contains("xpod_test_total{tier=\"own\"} 4"), "{text}");
        assert!(!text.contains("xpod_test_bytes 2.5"), "{text}");
        let mut later = sample();
        later.lease_remaining = Some(4.5);
        let text = m.render(later, &[]);
        assert!(text.contains("xpod_lease_remaining_seconds 4.5"), "{text}");
    }
}
