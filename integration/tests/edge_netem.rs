//! Issue 18: a bad link between an edge and its center — 100 ms each way (200 ms round trip)
//! and 5 % loss each way. HTTP through the tunnel still works: every small request answers,
//! and a 512 KiB download arrives byte-exact (its throughput is printed for the closing note).
//!
//! The link is [`xpod_integration::impair::Impair`], a UDP relay that delays and drops the
//! tunnel's QUIC packets: `tc netem` needs the kernel's `sch_netem`, which the machines these
//! tests run on lack. The edge uses `transport = "quic"`, so the bad link is all it has.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::edges::{new_token_with, start_center, wait_online};
use xpod_integration::impair::Impair;
use xpod_integration::node::{NodeProcess, TempDir};

/// The download: at 5 % loss and 200 ms a loss-based congestion controller carries about
/// MSS/RTT · 1.22/√p ≈ 33 KB/s (Mathis et al.), so half a MiB takes ~15 s.
const BIG: usize = 512 * 1024;

fn pattern() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// `GET /big` → 4 MiB of [`pattern`]; anything else → `small answer`.
fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let body = if line.contains("/big") {
                        pattern()
                    } else {
                        b"small answer".to_vec()
                    };
                    let mut out = &conn;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn http_through_the_tunnel_survives_200_ms_and_5_percent_loss() {
    let tmp = TempDir::new("xpod-netem");
    let center = start_center(&tmp, "center-1", "[tunnel]\nedge_domain = \"edges.test\"\n");
    let link = Impair::start(center.addr(), Duration::from_millis(100), 0.05);
    let backend = start_backend();
    let token = new_token_with(&center, json!({"singleUse": true}));
    let edge_config = tmp.path().join("edge.toml");
    std::fs::write(
        &edge_config,
        format!(
            "role = \"edge\"\n\n[tunnel]\ntransport = \"quic\"\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\nkind = \"http\"\n"
        ),
    )
    .unwrap();
    let joined = Instant::now();
    let _edge = NodeProcess::builder()
        .data_dir(tmp.path().join("edge-bad"))
        .env("XPOD_NODE_ID", "edge-bad")
        .arg("--config")
        .arg(&edge_config)
        .arg("--join")
        .arg(link.addr().to_string())
        .arg("--token")
        .arg(token)
        .start();
    wait_online(&center, "edge-bad");
    let joined = joined.elapsed();

    let port = center.port();
    let host = "web.edge-bad.edges.test";
    let get = |path: &str| {
        Curl::get(format!("http://{host}:{port}{path}"))
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg("--max-time")
            .arg("60")
            .send()
    };
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = get("/small");
        assert_eq!(r.status, 200, "a small request over the bad link: {r:?}");
        assert_eq!(r.text(), "small answer");
        slowest = slowest.max(t.elapsed());
    }
    let small = started.elapsed();
    let t = Instant::now();
    let r = get("/big");
    let took = t.elapsed();
    assert_eq!(
        r.status, 200,
        "the download over the bad link: {}",
        r.stderr
    );
    assert!(
        r.body == pattern(),
        "the download arrived changed ({} bytes)",
        r.body.len()
    );
    println!(
        "bad link (100 ms each way, 5 % loss each way): joined and online in {:.1} s; 20 small requests in {:.1} s (slowest {:.2} s); 512 KiB in {:.1} s = {:.0} KB/s",
        joined.as_secs_f64(),
        small.as_secs_f64(),
        slowest.as_secs_f64(),
        took.as_secs_f64(),
        BIG as f64 / 1000.0 / took.as_secs_f64()
    );
}
