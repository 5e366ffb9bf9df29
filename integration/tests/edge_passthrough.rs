//! TLS passthrough and TCP port forwards through an edge tunnel, with the real binary: a center
//! (cluster CA, its own certificate, `tunnel.tls_listen`, `[[tunnel.forwards]]`) and an edge
//! `edge-1` that joined it and publishes `openssl s_server` as its `kind = "tls"` service `web`
//! and an echo server (in this test process) as its `kind = "tcp"` service `echo`.
//!
//! TLS: curl trusts only the edge's self-signed certificate and reaches the center's TLS port
//! with `--resolve`: the handshake succeeding proves the bytes went through unchanged and the
//! edge terminated TLS (the center has no such certificate). Needs `openssl` and `curl`; a
//! missing tool fails the test naming it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::node::{free_port, xpod_command, NodeProcess, TempDir};

const EDGE: &str = "edge-1";
const MIB: usize = 1024 * 1024;

fn xpod(args: &[&str]) -> Output {
    xpod_command().args(args).output().expect("running xpod")
}

/// Runs a required external tool; a missing one fails the test naming it.
fn tool(name: &str) -> Command {
    if Command::new(name)
        .arg(if name == "openssl" {
            "version"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!("this test needs `{name}` on PATH and it is not installed");
    }
    Command::new(name)
}

/// Kills a helper process when the test ends (also on panic).
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 10 s) until something accepts on `addr`.
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A self-signed P-256 certificate for `name` (cert.pem, key.pem in `dir`), and
/// `openssl s_server -www` serving it on a free port.
fn start_tls_service(dir: &Path, name: &str) -> (Killed, SocketAddr) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = tool("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .args(["-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = tool("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(addr.to_string())
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting openssl s_server");
    let child = Killed(child);
    wait_listening(addr);
    (child, addr)
}

/// An echo server: every connection gets its bytes back until it closes its side.
fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let mut out = conn.try_clone().unwrap();
                let mut conn = conn;
                let _ = std::io::copy(&mut conn, &mut out);
                let _ = out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A service that expects a PROXY protocol v2 header and answers what it said:
/// `src=<addr> dst=<addr>\n` (or `error=<why>\n`), then closes.
fn start_whoami() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let answer = loop {
                    match xpod_tunnel::proto::proxy_v2::decode(&buf) {
                        Ok(Some((Some((src, dst)), _))) => break format!("src={src} dst={dst}\n"),
                        Ok(Some((None, _))) => break "local\n".to_string(),
                        Err(e) => break format!("error={e}\n"),
                        Ok(None) => {}
                    }
                    let mut b = [0u8; 64];
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => break "error=eof before a PROXY header\n".to_string(),
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                };
                let _ = conn.write_all(answer.as_bytes());
            });
        }
    });
    addr
}

/// A center with a CA, a certificate for `center-1`, TLS passthrough on `tls` and forwards
/// `fwd_echo` → edge-1/echo, `fwd_wrong_kind` → edge-1/web (a TLS service), `fwd_ghost` →
/// ghost/echo (an edge that never connects), `fwd_whoami` → edge-1/whoami (PROXY v2).
fn start_center(
    tmp: &TempDir,
    tls: u16,
    fwd_echo: u16,
    fwd_wrong_kind: u16,
    fwd_ghost: u16,
    fwd_whoami: u16,
) -> NodeProcess {
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
    let config = tmp.path().join("center.toml");
    std::fs::write(
        &config,
        format!(
            "[tunnel]\nedge_domain = \"edges.test\"\ntls_listen = \"127.0.0.1:{tls}\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd_echo}\"\nnode = \"{EDGE}\"\nservice = \"echo\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd_wrong_kind}\"\nnode = \"{EDGE}\"\nservice = \"web\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd_ghost}\"\nnode = \"ghost\"\nservice = \"echo\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd_whoami}\"\nnode = \"{EDGE}\"\nservice = \"whoami\"\n"
        ),
    )
    .unwrap();
    NodeProcess::builder()
        .data_dir(&data)
        .env("XPOD_NODE_ID", "center-1")
        .arg("--config")
        .arg(&config)
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

fn start_edge(
    tmp: &TempDir,
    center: &NodeProcess,
    tls: SocketAddr,
    echo: SocketAddr,
    whoami: SocketAddr,
) -> NodeProcess {
    let config = tmp.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "role = \"edge\"\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"{tls}\"\nkind = \"tls\"\n\n\
             [[tunnel.services]]\nname = \"echo\"\nlocal = \"{echo}\"\nkind = \"tcp\"\n\n\
             [[tunnel.services]]\nname = \"whoami\"\nlocal = \"{whoami}\"\nkind = \"tcp\"\nproxy_protocol = true\n"
        ),
    )
    .unwrap();
    NodeProcess::builder()
        .data_dir(tmp.path().join("edge"))
        .env("XPOD_ROLE", "edge")
        .env("XPOD_NODE_ID", EDGE)
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

/// `curl https://<name>:<port>/` resolved to the center's TLS port, trusting only `cacert`.
fn curl_tls(name: &str, port: u16, cacert: &Path) -> Output {
    tool("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(cacert)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .expect("running curl")
}

/// Connects to `port`, sends a little, and expects the connection closed (EOF or reset) within
/// 5 s without any byte back.
fn assert_closed(port: u16, what: &str) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: got {n} bytes back, expected the connection closed"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) => {}
        Err(e) => panic!(
            "{what}: expected the connection closed, got {e} after {:?}",
            started.elapsed()
        ),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what}: closing took {:?}",
        started.elapsed()
    );
}

#[test]
fn tls_passthrough_and_tcp_forwards_reach_edge_services() {
    let tmp = TempDir::new("xpod-edge-pass");
    let web = format!("web.{EDGE}.edges.test");
    let (_s_server, tls_service) = start_tls_service(tmp.path(), &web);
    let cacert = tmp.path().join("cert.pem");
    let echo = start_echo();
    let whoami = start_whoami();
    let (tls, fwd_echo, fwd_wrong, fwd_ghost, fwd_whoami) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let center = start_center(&tmp, tls, fwd_echo, fwd_wrong, fwd_ghost, fwd_whoami);
    let edge = start_edge(&tmp, &center, tls_service, echo, whoami);
    assert_eq!(edge.node_id(), EDGE);
    let row = wait_online(&center, EDGE);
    assert_eq!(
        row["capacity"]["services"],
        json!([
            {"name": "echo", "kind": "tcp"},
            {"name": "web", "kind": "tls"},
            {"name": "whoami", "kind": "tcp"}
        ]),
        "the edge reports its services: {row}"
    );

    // TLS passthrough: curl verifies the EDGE's certificate through the center.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = curl_tls(&web, tls, &cacert);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "curl through the center's TLS port failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("s_server"),
        "not the s_server status page: {body}"
    );
    // The bare node name means the service `web` (the certificate does not cover that name, so
    // curl must refuse it — after a handshake with the edge's certificate).
    let out = curl_tls(&format!("{EDGE}.edges.test"), tls, &cacert);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(60),
        "expected a name mismatch (the edge's cert): {err}"
    );

    // Names the center cannot route: the connection is closed, quickly.
    for name in [
        "web.ghost.edges.test",
        "nope.edge-1.edges.test",
        "example.com",
    ] {
        let started = Instant::now();
        let out = curl_tls(name, tls, &cacert);
        assert!(!out.status.success(), "{name}: curl succeeded");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name}: took {:?}",
            started.elapsed()
        );
        let code = out.status.code();
        assert!(
            matches!(code, Some(35) | Some(56)),
            "{name}: curl exit {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Not TLS at all: closed.
    assert_closed(tls, "plain text on the TLS port");

    // TCP forward: 1 MiB of patterned bytes echoed back identical.
    let data: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8).collect();
    let mut s = TcpStream::connect(("127.0.0.1", fwd_echo)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(MIB);
    s.read_to_end(&mut back)
        .expect("reading the echo (EOF after the echo's end)");
    w.join().unwrap();
    assert_eq!(back.len(), MIB, "echoed length");
    if let Some(i) = (0..MIB).find(|&i| back[i] != data[i]) {
        panic!("echo differs at byte {i}");
    }

    // PROXY protocol v2: the service with proxy_protocol = true learns the client's exact
    // address and port (the echo above got no header: its bytes came back unchanged).
    let mut s = TcpStream::connect(("127.0.0.1", fwd_whoami)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer,
        format!("src={} dst={whoami}\n", s.local_addr().unwrap()),
        "the PROXY header names the client and the service"
    );

    // A forward to a service of another kind, or to an edge that is not connected: closed.
    assert_closed(fwd_wrong, "forward to a tls service");
    assert_closed(fwd_ghost, "forward to an edge without a tunnel");

    // The center's HTTP side is unaffected.
    Curl::get(format!("{}/health", center.url()))
        .send()
        .expect(200);

    // Shutdown with a forwarded connection still open: the center stops promptly and the
    // client's connection is closed (the relay task does not outlive the node).
    let mut open = TcpStream::connect(("127.0.0.1", fwd_echo)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    open.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    open.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");
    let mut center = center;
    let started = Instant::now();
    center.sigterm();
    while center.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the center still runs 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(center.wait().success(), "center exit status");
    let mut rest = Vec::new();
    match open.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}
