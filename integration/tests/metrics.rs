//! Issue 19: `/metrics` as a Prometheus server scrapes it, from a center holding an edge's
//! tunnel. What an operator relies on:
//! - the exposition parses with Prometheus' own parser (PyPI `prometheus-client`, installed by
//!   the test runner): every family typed and helped;
//! - requests are counted per route, a path template, with a latency histogram per route; a
//!   client sending endless distinct paths cannot grow the number of series;
//! - each edge's tunnel bytes, both directions, grow with what went through it;
//! - the owner table's hits and misses, mesh forwards by kind of hop, and the lease are there;
//! - every metric the example Grafana dashboard (`deploy/grafana-dashboard.json`) queries exists.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_center, start_edge, wait_online};
use xpod_integration::node::{NodeProcess, TempDir};

const BODY: usize = 256 * 1024;

/// A backend answering every request with [`BODY`] bytes.
fn start_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(&vec![b'x'; BODY]);
            });
        }
    });
    port
}

fn scrape(node: &NodeProcess) -> String {
    Curl::get(format!("{}/metrics", node.url()))
        .send()
        .expect(200)
        .text()
}

/// The value of the series `series` (name with its labels, as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn python() -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/s3venv/bin/python");
    let candidates = [
        std::env::var("XPOD_TEST_WEBHOOKS_PYTHON").ok(),
        Some(venv.display().to_string()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import prometheus_client"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "this test needs a python with `prometheus-client` (PyPI): run `bash integration/run-tests.sh` \
             once (it installs it into target/s3venv), or set XPOD_TEST_WEBHOOKS_PYTHON",
        )
}

/// Parses `text` with prometheus_client's parser; the families' names and types.
fn parse_with_prometheus(text: &str) -> Vec<(String, String)> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    assert f.documentation, "no HELP for " + f.name
    print(f.name, f.type)
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus' parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

#[test]
fn a_center_is_scraped_per_route_per_edge_and_parses() {
    let tmp = TempDir::new("xpod-metrics");
    let center = start_center(&tmp, "center-1", "[tunnel]\nedge_domain = \"edges.test\"\n");
    let backend = start_backend();
    let _edge = start_edge(
        &tmp,
        &center,
        "laptop",
        &format!(
            "[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:{backend}\"\nkind = \"http\"\n"
        ),
    );
    wait_online(&center, "laptop");

    let before = scrape(&center);
    let rx = "xpod_tunnel_bytes_total{direction=\"rx\",edge=\"laptop\"}";
    let tx = "xpod_tunnel_bytes_total{direction=\"tx\",edge=\"laptop\"}";
    let (rx0, tx0) = (value(&before, rx).expect(rx), value(&before, tx).expect(tx));

    // Four requests to the edge's service through the center: 1 MiB comes back.
    let host = format!("web.laptop.edges.test:{}", center.port());
    for _ in 0..4 {
        let r = Curl::get(format!("http://{host}/"))
            .arg("--resolve")
            .arg(format!("{host}:127.0.0.1"))
            .send()
            .expect(200);
        assert_eq!(r.text().len(), BODY);
    }
    // A pod, written once and read three times.
    let admin = center.admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", center.url()))
        .bearer(&admin)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);
    Curl::new("PUT", format!("{}/alice/note.txt", center.url()))
        .bearer(&admin)
        .header("Content-Type: text/plain")
        .body("hello")
        .send()
        .expect(201);
    let hits0 = value(&scrape(&center), "xpod_owner_table_hits_total").unwrap();
    for _ in 0..3 {
        Curl::get(format!("{}/alice/note.txt", center.url()))
            .bearer(&admin)
            .send()
            .expect(200);
    }
    // A client sending many distinct paths.
    for i in 0..50 {
        Curl::get(format!("{}/api/v1/probe-{i}/x{i}", center.url()))
            .bearer(&admin)
            .send();
    }

    let text = scrape(&center);
    let rx1 = value(&text, rx).unwrap();
    let tx1 = value(&text, tx).unwrap();
    assert!(
        rx1 - rx0 >= (4 * BODY) as f64,
        "the edge sent 1 MiB through its tunnel; rx grew by {}",
        rx1 - rx0
    );
    assert!(tx1 > tx0, "requests went to the edge; tx did not grow");

    let served = "xpod_http_requests_total{method=\"GET\",route=\"edge-service\",status=\"200\"}";
    assert!(value(&text, served).unwrap() >= 4.0, "{text}");
    assert!(
        value(
            &text,
            "xpod_http_request_duration_seconds_count{route=\"edge-service\"}"
        )
        .unwrap()
            >= 4.0
    );
    let pod_reads = "xpod_http_requests_total{method=\"GET\",route=\"/{pod}\",status=\"200\"}";
    assert!(value(&text, pod_reads).unwrap() >= 3.0, "{text}");
    let hits = value(&text, "xpod_owner_table_hits_total").unwrap();
    assert!(
        hits - hits0 >= 3.0,
        "three reads of a known pod: hits grew by {}",
        hits - hits0
    );
    assert!(value(&text, "xpod_owner_loads_total").unwrap() >= 1.0);
    assert_eq!(
        value(&text, "xpod_mesh_forwarded_requests_total{via=\"peer\"}"),
        Some(0.0)
    );
    assert_eq!(value(&text, "xpod_lease_valid"), Some(1.0));
    assert_eq!(value(&text, "xpod_edges_connected"), Some(1.0));

    // Fifty distinct paths, one series.
    let routes: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("xpod_http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(routes.contains("/api/v1/{id}/{id}"), "{routes:?}");
    assert!(
        !routes.iter().any(|r| r.contains("probe")),
        "a raw path became a label: {routes:?}"
    );
    assert!(routes.len() < 12, "{routes:?}");

    // Prometheus' parser reads all of it.
    let families = parse_with_prometheus(&text);
    for (name, kind) in [
        ("xpod_http_requests", "counter"),
        ("xpod_http_request_duration_seconds", "histogram"),
        ("xpod_tunnel_bytes", "counter"),
        ("xpod_owner_table_hits", "counter"),
        ("xpod_lease_valid", "gauge"),
        ("xpod_blob_reads", "counter"),
        ("xpod_sandbox_slots", "gauge"),
    ] {
        assert!(
            families.iter().any(|(n, k)| n == name && k == kind),
            "no {kind} {name} in {families:?}"
        );
    }

    // The example dashboard queries only metrics that exist (two exist only on some nodes).
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json"),
    )
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let sometimes = [
        "xpod_lease_remaining_seconds", // centers holding a liveness lease
        "xpod_tls_certificate_expiry_seconds", // nodes serving HTTPS
    ];
    let mut queried = BTreeSet::new();
    for piece in dashboard.split("xpod_").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        queried.insert(format!("xpod_{name}"));
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        if sometimes.contains(&name.as_str()) {
            continue;
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
}
