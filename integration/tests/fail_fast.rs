//! Issue 18, "fail fast, never hang": a request to an edge or a center that was just killed
//! (`kill -9`: no goodbye, the QUIC connection just goes silent) answers a clear JSON 503 in
//! seconds, not after the 10 s idle timeout with a 502; following requests answer at once.
//! Two centers on PostgreSQL, an edge with an HTTP service (a backend in this process that
//! never answers `/slow`) and a pod.
//!
//! The bound asserted is 5 s (the target is 3 s; the figures are printed): what the test
//! guards against is the hang, on a machine that may be busy.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::edges::{new_token_with, start_edge_with_token, wait_online};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

const BOUND: Duration = Duration::from_secs(5);

/// An HTTP backend: `/slow` is read and never answered; anything else answers `ok`.
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
                    let slow = line.contains("/slow");
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    if slow {
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    let mut out = &conn;
                    let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    addr
}

fn web(center: &NodeProcess, path: &str) -> Curl {
    let host = "web.edge-1.edges.test";
    let port = center.port();
    Curl::get(format!("http://{host}:{port}{path}"))
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--max-time")
        .arg("20")
}

fn get(c: &NodeProcess, key: &str, path: &str) -> Resp {
    Curl::get(format!("{}{path}", c.url()))
        .bearer(key)
        .arg("--max-time")
        .arg("20")
        .send()
}

fn timed(f: impl FnOnce() -> Resp) -> (Resp, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn requests_to_a_killed_edge_or_center_fail_fast_with_a_clear_503() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-fail-fast");
    let config = tmp.path().join("center.toml");
    std::fs::write(
        &config,
        "[tunnel]\nedge_domain = \"edges.test\"\n\n[tunnel.presence]\nheartbeat_secs = 1\ninactive_after_secs = 3\noffline_after_secs = 6\n",
    )
    .unwrap();
    let mut centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_CONFIG", config.display().to_string())]
    });
    let key = centers[0].admin_key();
    let backend = start_backend();
    let token = new_token_with(
        &centers[0],
        json!({"singleUse": true, "podPrefixes": ["laptop"]}),
    );
    let mut edge = start_edge_with_token(
        &tmp,
        &centers[0],
        "edge-1",
        &format!("[[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\nkind = \"http\"\n"),
        &token,
    );
    wait_online(&centers[0], "edge-1");
    let edge_key = edge.admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", edge.url()))
        .bearer(&edge_key)
        .json(&json!({"podId": "laptop"}))
        .send()
        .expect(201);
    Curl::new("POST", format!("{}/.cluster/pods", centers[1].url()))
        .bearer(&key)
        .json(&json!({"podId": "central"}))
        .send()
        .expect(201);
    eventually(
        20,
        "both centers reach the edge's pod and each other",
        || {
            centers.iter().all(|c| {
                get(c, &key, "/laptop/").status == 200 && get(c, &key, "/central/").status == 200
            })
        },
    );
    assert_eq!(web(&centers[0], "/").send().expect(200).text(), "ok");

    // ---- The edge dies while a request waits on its service.
    let waiting = {
        let c = web(&centers[0], "/slow");
        std::thread::spawn(move || timed(|| c.send()))
    };
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    edge.kill9();
    let (r, _) = waiting.join().unwrap();
    let in_flight = killed.elapsed();
    assert_eq!(r.status, 503, "the waiting request: {r:?}");
    assert_eq!(r.json()["code"], "edge_unavailable", "{}", r.text());
    assert!(
        in_flight < BOUND,
        "the waiting request took {in_flight:?} after the kill"
    );

    let (r, first) = timed(|| web(&centers[0], "/").send());
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["code"], "edge_unavailable");
    assert!(
        first < Duration::from_secs(1),
        "the next request took {first:?}"
    );
    // The edge's pod, through the center that held the tunnel and through the other one.
    for c in &centers {
        let (r, took) = timed(|| get(c, &key, "/laptop/"));
        assert_eq!(r.status, 503, "{r:?}");
        let v = r.json();
        assert_eq!(v["code"], "edge_offline", "{v}");
        assert!(v["message"].as_str().unwrap().contains("last seen"), "{v}");
        assert_eq!(v["details"]["edge"], "edge-1", "{v}");
        assert!(took < BOUND, "{took:?}");
    }
    println!(
        "fail fast: killed edge → the waiting request 503 after {:.2} s, the next one after {:.3} s",
        in_flight.as_secs_f64(),
        first.as_secs_f64()
    );

    // ---- A center dies: a request for its pod through the other center.
    let killed = Instant::now();
    centers[1].kill9();
    let (r, took) = timed(|| get(&centers[0], &key, "/central/"));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["code"], "owner_unavailable", "{}", r.text());
    assert!(
        killed.elapsed() < BOUND,
        "a request for a dead center's pod took {took:?}"
    );
    let (r, next) = timed(|| get(&centers[0], &key, "/central/"));
    assert_eq!(r.status, 503, "{r:?}");
    println!(
        "fail fast: killed center → 503 after {:.2} s, the next one after {:.2} s",
        took.as_secs_f64(),
        next.as_secs_f64()
    );
}
