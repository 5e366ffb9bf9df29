//! HTTP forwarding through an edge tunnel, with the real binary: a center (cluster CA, its own
//! certificate, `XPOD_TUNNEL_EDGE_DOMAIN=edges.test`) and an edge that joined it and publishes
//! a tiny HTTP backend (running in this test process) as service `web` from its config file.
//! curl talks to the center's HTTP port with `--resolve`, as a client resolving the edge names
//! to the center would.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};

const BIG: usize = 20 * 1024 * 1024;
const UPLOAD: usize = 5 * 1024 * 1024;

fn xpod(args: &[&str]) -> std::process::Output {
    xpod_command().args(args).output().expect("running xpod")
}

/// The byte at offset `i` of the big download.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A one-request-per-connection HTTP/1.1 backend. `GET /big` answers 20 MiB of [`pattern`];
/// anything else answers `method=… path=… xff=… len=…` (the request body's length).
fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve_one(conn);
            });
        }
    });
    addr
}

fn serve_one(conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut length, mut chunked, mut xff) = (0usize, false, String::from("-"));
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "x-forwarded-for" => xff = value.to_string(),
                _ => {}
            }
        }
    }
    let received = if chunked {
        read_chunked(&mut reader)?
    } else {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        length
    };
    let mut out = conn;
    if path == "/big" {
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {BIG}\r\nconnection: close\r\n\r\n"
        )?;
        let block: Vec<u8> = (0..251 * 1024).map(pattern).collect();
        let mut sent = 0;
        while sent < BIG {
            let n = (BIG - sent).min(block.len());
            out.write_all(&block[..n])?; // block starts at a multiple of 251: pattern continues
            sent += n;
        }
    } else {
        let body = format!("method={method} path={path} xff={xff} len={received}\n");
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: yes\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
    }
    out.flush()
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0u8; n + 2];
        if n == 0 {
            let mut end = String::new();
            r.read_line(&mut end)?;
            return Ok(total);
        }
        r.read_exact(&mut chunk)?;
        total += n;
    }
}

/// A center with a CA (so it can sign joins), a certificate for `center-1`, and an edge domain.
fn start_center(tmp: &TempDir) -> NodeProcess {
    let data = tmp.path().join("center");
    let d = data.to_str().unwrap();
    assert!(xpod(&["ca", "init", "--data-dir", d]).status.success());
    let issued = xpod(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "--node-id",
        "center-1",
        "--san",
        "127.0.0.1",
        "--out",
        d,
    ]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    NodeProcess::builder()
        .data_dir(&data)
        .env("XPOD_NODE_ID", "center-1")
        .env("XPOD_TUNNEL_EDGE_DOMAIN", "edges.test")
        .start()
}

fn new_token(center: &NodeProcess) -> String {
    let v = Curl::new("POST", format!("{}/.cluster/tokens", center.url()))
        .bearer(&center.admin_key())
        .json(&json!({"singleUse": true}))
        .send()
        .expect(201)
        .json();
    v["token"].as_str().unwrap().to_string()
}

/// An edge that joins `center` and publishes `backend` as service `web` (config file).
fn start_edge(tmp: &TempDir, center: &NodeProcess, backend: SocketAddr) -> NodeProcess {
    let config = tmp.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "role = \"edge\"\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\nkind = \"http\"\n"
        ),
    )
    .unwrap();
    NodeProcess::builder()
        .data_dir(tmp.path().join("edge"))
        .env("XPOD_ROLE", "edge")
        .arg("--config")
        .arg(&config)
        .arg("--join")
        .arg(format!("127.0.0.1:{}", center.port()))
        .arg("--token")
        .arg(new_token(center))
        .start()
}

/// Waits (up to 15 s) until the center lists `node` online.
fn wait_online(center: &NodeProcess, node: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = Curl::get(format!("{}/.cluster/nodes", center.url()))
            .bearer(&center.admin_key())
            .send()
            .expect(200)
            .json();
        if let Some(n) = all["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["nodeId"] == node && n["status"] == "online")
        {
            return n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{node} never became online: {all}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A request to `http://<host>:<center port><path>`, `host` resolved to the center.
fn via(center: &NodeProcess, method: &str, host: &str, path: &str) -> Curl {
    let port = center.port();
    Curl::new(method, format!("http://{host}:{port}{path}"))
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
}

fn assert_json_error(resp: &Resp, status: u16, code: &str, mentions: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    let v = resp.json();
    assert_eq!(v["code"], code, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains(mentions),
        "{v} should mention {mentions}"
    );
}

#[test]
fn http_reaches_an_edge_service_through_the_center() {
    let tmp = TempDir::new("xpod-edge-fwd");
    let backend = start_backend();
    let center = start_center(&tmp);
    let mut edge = start_edge(&tmp, &center, backend);
    let id = edge.node_id();
    let row = wait_online(&center, &id);
    assert_eq!(
        row["capacity"]["services"],
        json!([{"name": "web", "kind": "http"}]),
        "the edge reports its services: {row}"
    );
    let web = format!("web.{id}.edges.test");

    // A simple GET: reaches the backend, with the client's address passed on.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        let r = via(&center, "GET", &web, "/hello?x=1").send();
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let resp = resp.expect(200);
    assert_eq!(
        resp.text(),
        "method=GET path=/hello?x=1 xff=127.0.0.1 len=0\n"
    );
    assert_eq!(resp.header("x-xpod-node"), Some("center-1"));
    assert_eq!(resp.header("x-backend"), Some("yes"));
    assert_eq!(
        resp.header("connection"),
        None,
        "hop-by-hop headers are not passed on"
    );

    // The bare node name means the service `web`; no credentials needed, none checked.
    let resp = via(&center, "GET", &format!("{id}.edges.test"), "/bare")
        .send()
        .expect(200);
    assert!(
        resp.text().starts_with("method=GET path=/bare "),
        "{}",
        resp.text()
    );

    // 20 MiB down, intact.
    let resp = via(&center, "GET", &web, "/big").send().expect(200);
    assert_eq!(resp.body.len(), BIG, "download length");
    if let Some(i) = (0..BIG).find(|&i| resp.body[i] != pattern(i)) {
        panic!("download differs at byte {i}");
    }

    // 5 MiB up, streamed through.
    let upload: Vec<u8> = (0..UPLOAD).map(|i| (i % 7) as u8).collect();
    let resp = via(&center, "POST", &web, "/upload")
        .header("Content-Type: application/octet-stream")
        .body(upload)
        .send()
        .expect(200);
    assert_eq!(
        resp.text(),
        format!("method=POST path=/upload xff=127.0.0.1 len={UPLOAD}\n")
    );

    // A service the edge does not publish: the edge answers 502 naming it.
    let resp = via(&center, "GET", &format!("nope.{id}.edges.test"), "/")
        .send()
        .expect(502);
    assert!(resp.text().contains("nope"), "{}", resp.text());
    assert_eq!(resp.header("x-xpod-node"), Some("center-1"));

    // An edge this center does not hold: a fast 503 JSON.
    let resp = via(&center, "GET", "web.ghost.edges.test", "/")
        .arg("--max-time")
        .arg("5")
        .send();
    assert_json_error(&resp, 503, "edge_unavailable", "ghost");

    // Names that are not DNS labels: 400, never forwarded.
    let resp = via(&center, "GET", "a.b.c.edges.test", "/").send();
    assert_eq!(resp.status, 400, "{resp:?}");

    // The center's own API still works on its own host.
    Curl::get(format!("{}/health", center.url()))
        .send()
        .expect(200);

    // The edge stops: requests for it fail fast with 503, never hang.
    assert!(edge.terminate().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let started = Instant::now();
        let resp = via(&center, "GET", &web, "/hello")
            .arg("--max-time")
            .arg("5")
            .send();
        assert_ne!(
            resp.status, 0,
            "request after the edge stopped timed out or failed: {resp:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        if resp.status == 503 {
            assert_json_error(&resp, 503, "edge_unavailable", &id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still no 503 5 s after the edge stopped: {resp:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A WebSocket echo service: echoes every message and, first, sends the `X-Forwarded-For` it
/// saw in the handshake as a text message.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
async fn start_ws_echo() -> SocketAddr {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut xff = String::from("-");
                let callback =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                        if let Some(v) = req.headers().get("x-forwarded-for") {
                            xff = v.to_str().unwrap_or("?").to_string();
                        }
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                if ws.send(Message::text(format!("xff={xff}"))).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_the_center() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let tmp = TempDir::new("xpod-edge-ws");
    let backend = start_ws_echo().await;
    // The harness is blocking (processes, curl): run it off the async workers.
    let (center, _edge, id) = tokio::task::block_in_place(|| {
        let center = start_center(&tmp);
        let edge = start_edge(&tmp, &center, backend);
        let id = edge.node_id();
        wait_online(&center, &id);
        (center, edge, id)
    });
    let port = center.port();
    let url = format!("ws://web.{id}.edges.test:{port}/chat");

    // The tunnel may take a moment to be usable after the edge shows online.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut ws, resp) = loop {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        match tokio_tungstenite::client_async(url.as_str(), tcp).await {
            Ok(ok) => break ok,
            Err(e) if Instant::now() < deadline => {
                eprintln!("websocket handshake not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("websocket handshake through the center failed: {e}"),
        }
    };
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()
            .get("x-xpod-node")
            .and_then(|v| v.to_str().ok()),
        Some("center-1")
    );

    let first = ws.next().await.expect("a first message").unwrap();
    assert_eq!(
        first,
        Message::text("xff=127.0.0.1"),
        "the handshake carried the client's address"
    );
    for i in 0..50 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    // A 4 MiB binary message crosses intact both ways.
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "binary echo differs"),
        other => panic!("expected a binary echo, got {other:?}"),
    }
    ws.close(None).await.unwrap();

    // A second WebSocket on a new connection works too.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let again = tokio_tungstenite::client_async(url.as_str(), tcp).await;
    assert!(again.is_ok(), "a second WebSocket works too: {again:?}");
}
