//! Issue 19: a per-edge bandwidth limit, set by the admin while everything runs and enforced by
//! the center (the edge is not trusted to limit itself). What an operator relies on:
//! - `xpod nodes set EDGE --bandwidth 256KiB` takes effect without a restart, both ways: the
//!   center paces what it relays from the edge (a download) and to it (an upload), every byte
//!   still arrives, and `/metrics` shows the limit and the waits it caused;
//! - `--bandwidth none` lifts it; a limit too low to keep a tunnel alive, or not a size, is
//!   refused with the reason.
//!
//! The throughput is printed, not asserted (the machine is shared); the limiter's arithmetic is
//! checked in virtual time by the unit tests of `edges::bandwidth`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_center, start_edge, wait_online};
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};

const DOWNLOAD: usize = 1024 * 1024;
const UPLOAD: usize = 512 * 1024;

/// GET: [`DOWNLOAD`] bytes. POST: reads the body, answers `got N`.
fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let body = if line.starts_with("POST") {
                    let mut got = vec![0u8; length];
                    if reader.read_exact(&mut got).is_err() {
                        return;
                    }
                    format!("got {}", got.len()).into_bytes()
                } else {
                    vec![b'd'; DOWNLOAD]
                };
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(&body);
            });
        }
    });
    port
}

fn metric(center: &NodeProcess, series: &str) -> Option<u64> {
    Curl::get(format!("{}/metrics", center.url()))
        .send()
        .expect(200)
        .text()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

fn nodes_set(center: &NodeProcess, args: &[&str]) -> (bool, String) {
    let out = xpod_command()
        .args(["nodes", "set", "laptop"])
        .args(args)
        .args(["--server", &center.url(), "--key", &center.admin_key()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Downloads through the center; the seconds it took.
fn download(center: &NodeProcess) -> f64 {
    let host = format!("web.laptop.edges.test:{}", center.port());
    let start = Instant::now();
    let r = Curl::get(format!("http://{host}/"))
        .arg("--resolve")
        .arg(format!("{host}:127.0.0.1"))
        .send()
        .expect(200);
    assert_eq!(r.body.len(), DOWNLOAD, "every byte arrives");
    start.elapsed().as_secs_f64()
}

fn upload(center: &NodeProcess) -> f64 {
    let host = format!("web.laptop.edges.test:{}", center.port());
    let start = Instant::now();
    let r = Curl::new("POST", format!("http://{host}/"))
        .arg("--resolve")
        .arg(format!("{host}:127.0.0.1"))
        .body(vec![b'u'; UPLOAD])
        .send()
        .expect(200);
    assert_eq!(r.text(), format!("got {UPLOAD}"));
    start.elapsed().as_secs_f64()
}

#[test]
fn an_edges_bandwidth_is_limited_both_ways_while_it_runs() {
    let tmp = TempDir::new("xpod-bandwidth");
    let center = start_center(&tmp, "center-1", "[tunnel]\nedge_domain = \"edges.test\"\n");
    let port = backend();
    let _edge = start_edge(
        &tmp,
        &center,
        "laptop",
        &format!("[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:{port}\"\n"),
    );
    wait_online(&center, "laptop");
    let limit = "xpod_edge_bandwidth_limit_bytes_per_second{edge=\"laptop\"}";
    let waits_down = "xpod_edge_bandwidth_waits_total{direction=\"down\",edge=\"laptop\"}";
    let waits_up = "xpod_edge_bandwidth_waits_total{direction=\"up\",edge=\"laptop\"}";

    let free = download(&center);
    assert_eq!(metric(&center, limit), None, "no limit, no limiter");

    // Refused: too low, not a size.
    let (ok, said) = nodes_set(&center, &["--bandwidth", "100"]);
    assert!(!ok && said.contains("at least 1024"), "{said}");
    let (ok, said) = nodes_set(&center, &["--bandwidth", "lots"]);
    assert!(!ok && said.contains("--bandwidth `lots`"), "{said}");

    // 256 KiB/s each way: effective within the policies' refresh, no restart.
    let (ok, said) = nodes_set(&center, &["--bandwidth", "256KiB"]);
    assert!(ok, "{said}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut limited = 0.0;
    while metric(&center, waits_down).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the limit never applied");
        limited = download(&center);
    }
    assert_eq!(metric(&center, limit), Some(256 * 1024));
    let up_limited = upload(&center);
    assert!(
        metric(&center, waits_up).unwrap_or(0) > 0,
        "the upload was not paced"
    );
    eprintln!(
        "1 MiB download: {free:.2} s free, {limited:.2} s at 256 KiB/s; 512 KiB upload at 256 KiB/s: {up_limited:.2} s"
    );

    // Lifted.
    let (ok, said) = nodes_set(&center, &["--bandwidth", "none"]);
    assert!(ok, "{said}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&center, limit).is_some() {
        assert!(Instant::now() < deadline, "the limit was never lifted");
        download(&center);
        std::thread::sleep(Duration::from_millis(200));
    }
}
