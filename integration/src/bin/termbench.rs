//! Benchmark (a program, not a test): what a sandbox terminal costs against a PTY on the host.
//!
//! Setup: a throwaway PostgreSQL (or `XPOD_TEST_PG_URL`) and two centers `center-1..2`, real
//! bubblewrap; one sandbox pinned to center-1. Three paths to the same kind of terminal:
//! - **direct**: a PTY in this process (`xpod_node::terminal::pty`, the code the sandbox's
//!   supervisor runs), no sandbox, no network;
//! - **local**: the WebSocket `/api/v1/sandboxes/{id}/terminal` on center-1, the sandbox's node;
//! - **remote**: the same WebSocket on center-2 (frames over the mesh to center-1).
//!
//! 1. Keystroke echo: `cat` in the terminal, one byte sent, the time until the terminal echoes
//!    it back (the PTY's own echo), N times in a row. Median and p99.
//! 2. Output: `head -c 32000000 /dev/zero | tr '\0' a` in the terminal, the time from the
//!    request to the exit code; MB/s. Peer: the same command by exec (`POST …/exec`, NDJSON
//!    with base64 output) on center-1.
//!
//! Usage: `cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin termbench`
//! then `XPOD_BIN=target/release/xpod target/release/termbench [N]`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use xpod_integration::curl::Curl;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::TempDir;
use xpod_integration::pg::PgServer;
use xpod_node::terminal::pty::Session;
use xpod_node::terminal::tty::{Frame, FrameReader};
use xpod_node::terminal::TerminalRequest;

const OUTPUT: &str = "head -c 32000000 /dev/zero | tr '\\0' a";
const OUTPUT_BYTES: f64 = 32_000_000.0;

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (q(0.5), q(0.99))
}

fn request(cmd: &[&str]) -> TerminalRequest {
    TerminalRequest {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        cwd: None,
        rows: 24,
        cols: 80,
    }
}

/// Echo round trips (ms) on a PTY in this process.
async fn direct_echo(n: usize) -> Vec<f64> {
    let session = Session::spawn(&request(&["cat"]), "/", None).expect("a PTY");
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { session.relay(theirs, &[]).await });
    let (mut rd, mut wr) = tokio::io::split(ours);
    let mut frames = FrameReader::default();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        wr.write_all(&Frame::Data(bytes::Bytes::from_static(b"x")).to_bytes())
            .await
            .unwrap();
        loop {
            match frames.next(&mut rd).await.unwrap() {
                Some(Frame::Data(b)) if b.contains(&b'x') => break,
                Some(_) => {}
                None => panic!("the PTY ended"),
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

/// Seconds to run `OUTPUT` on a PTY in this process, to its exit code.
async fn direct_output() -> f64 {
    let t = Instant::now();
    let session = Session::spawn(&request(&["sh", "-c", OUTPUT]), "/", None).expect("a PTY");
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { session.relay(theirs, &[]).await });
    let (mut rd, _wr) = tokio::io::split(ours);
    let mut frames = FrameReader::default();
    let mut bytes = 0usize;
    loop {
        match frames.next(&mut rd).await.unwrap() {
            Some(Frame::Data(b)) => bytes += b.len(),
            Some(Frame::Exit(_)) | None => break,
            Some(_) => {}
        }
    }
    assert!(bytes as f64 >= OUTPUT_BYTES, "only {bytes} bytes");
    t.elapsed().as_secs_f64()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(base: &str, key: &str, id: &str, query: &str) -> Ws {
    let url = format!(
        "{}/api/v1/sandboxes/{id}/terminal?{query}",
        base.replacen("http://", "ws://", 1)
    );
    let authority = url.trim_start_matches("ws://").split('/').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("a terminal")
        .0
}

/// Echo round trips (ms) through the WebSocket at `base`.
async fn ws_echo(base: &str, key: &str, id: &str, n: usize) -> Vec<f64> {
    let mut ws = connect(base, key, id, "cmd=cat").await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ws.send(Message::Binary(b"x".to_vec().into()))
            .await
            .unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.contains(&b'x') => break,
                Some(Ok(_)) => {}
                other => panic!("the terminal ended: {other:?}"),
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = ws.close(None).await;
    out
}

/// Seconds to run `OUTPUT` through the WebSocket at `base`, to its exit code.
async fn ws_output(base: &str, key: &str, id: &str) -> f64 {
    let t = Instant::now();
    let q = format!("cmd=sh&cmd=-c&cmd={}", enc(OUTPUT));
    let mut ws = connect(base, key, id, &q).await;
    let mut bytes = 0usize;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => bytes += b.len(),
            Some(Ok(Message::Text(_))) | Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
    assert!(bytes as f64 >= OUTPUT_BYTES, "only {bytes} bytes");
    t.elapsed().as_secs_f64()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Seconds to run `OUTPUT` by exec (NDJSON, base64 output) on `base`.
fn exec_output(base: &str, key: &str, id: &str) -> f64 {
    let t = Instant::now();
    let r = Curl::new("POST", format!("{base}/api/v1/sandboxes/{id}/exec"))
        .bearer(key)
        .json(&json!({"cmd": ["sh", "-c", OUTPUT]}))
        .send()
        .expect(200);
    let secs = t.elapsed().as_secs_f64();
    assert!(r.text().contains("\"type\":\"end\""), "exec did not end");
    secs
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let pg = PgServer::start().expect("PostgreSQL");
    let tmp = TempDir::new("xpod-termbench");
    let centers = start_centers(&tmp, &pg, 2, |i| {
        if i == 1 {
            vec![("XPOD_SANDBOX_SLOTS", "2".to_string())]
        } else {
            vec![]
        }
    });
    let key = centers[0].admin_key();
    let v: Value = Curl::new("POST", format!("{}/api/v1/sandboxes", centers[0].url()))
        .bearer(&key)
        .json(&json!({"node": "center-1", "timeout": 3600}))
        .send()
        .expect(201)
        .json();
    let id = v["id"].as_str().unwrap().to_string();
    let (local, remote) = (centers[0].url(), centers[1].url());
    let rt = tokio::runtime::Runtime::new().unwrap();

    println!("termbench: {n} keystrokes per path; output {OUTPUT_BYTES:.0} bytes ({OUTPUT})");
    // Warm up each path once.
    rt.block_on(async {
        direct_echo(10).await;
        ws_echo(&local, &key, &id, 10).await;
        ws_echo(&remote, &key, &id, 10).await;
    });
    let (d50, d99) = stats(rt.block_on(direct_echo(n)));
    let (l50, l99) = stats(rt.block_on(ws_echo(&local, &key, &id, n)));
    let (r50, r99) = stats(rt.block_on(ws_echo(&remote, &key, &id, n)));
    println!("\nkeystroke echo   p50 ms   p99 ms   p50 vs direct");
    println!("direct PTY     {d50:>8.3} {d99:>8.3}");
    println!("local (WS)     {l50:>8.3} {l99:>8.3}   {:>6.1}x", l50 / d50);
    println!("remote (mesh)  {r50:>8.3} {r99:>8.3}   {:>6.1}x", r50 / d50);

    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::INFINITY, f64::min);
    let d = best(&|| rt.block_on(direct_output()));
    let l = best(&|| rt.block_on(ws_output(&local, &key, &id)));
    let r = best(&|| rt.block_on(ws_output(&remote, &key, &id)));
    let e = best(&|| exec_output(&local, &key, &id));
    let mbps = |s: f64| OUTPUT_BYTES / s / 1e6;
    println!("\noutput (best of 3)   s       MB/s   vs direct");
    println!("direct PTY       {d:>7.3} {:>9.1}", mbps(d));
    println!(
        "local (WS)       {l:>7.3} {:>9.1}   {:>6.2}x",
        mbps(l),
        l / d
    );
    println!(
        "remote (mesh)    {r:>7.3} {:>9.1}   {:>6.2}x",
        mbps(r),
        r / d
    );
    println!(
        "exec (NDJSON)    {e:>7.3} {:>9.1}   {:>6.2}x",
        mbps(e),
        e / d
    );
    println!(
        "{}",
        json!({
            "echo_ms_p50": {"direct": d50, "local": l50, "remote": r50},
            "echo_ms_p99": {"direct": d99, "local": l99, "remote": r99},
            "output_mb_s": {"direct": mbps(d), "local": mbps(l), "remote": mbps(r), "exec": mbps(e)},
        })
    );
    std::thread::sleep(Duration::from_millis(100));
}
