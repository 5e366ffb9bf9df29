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
use xpod_integration::netns::Netns;
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
    // Heartbeats every second: the edge's pod list reaches the center quickly.
    let center = start_center(
        &tmp,
        "center-1",
        "[tunnel]\nedge_domain = \"edges.test\"\n\n[tunnel.presence]\nheartbeat_secs = 1\ninactive_after_secs = 3\noffline_after_secs = 6\n",
    );
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

/// An echo server on `ip`: every connection gets its bytes back.
fn start_echo(ip: std::net::IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut conn = conn;
                let _ = std::io::copy(&mut conn, &mut out);
                let _ = out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// [`start_backend`] on `ip`.
fn start_backend_on(ip: std::net::IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let l = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
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

/// A self-signed certificate for `name` and `openssl s_server -www` on `ip` serving it.
fn start_tls_service(
    dir: &std::path::Path,
    name: &str,
    ip: std::net::IpAddr,
) -> (std::process::Child, SocketAddr) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
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
        .expect("this test needs openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = SocketAddr::new(ip, xpod_integration::node::free_port());
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(addr.to_string())
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server does not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

fn transport_of(center: &NodeProcess, node: &str) -> Option<String> {
    let all = Curl::get(format!("{}/.cluster/nodes", center.url()))
        .bearer(&center.admin_key())
        .send()
        .json();
    all["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["nodeId"] == node && n["status"] == "online")?["capacity"]["transport"]
        .as_str()
        .map(str::to_string)
}

/// UDP really blocked: in a network namespace whose nftables drop every UDP packet, an edge
/// (`transport = "auto"`) joins and registers over TCP, and serves HTTP, TLS passthrough and a
/// TCP forward through it; once UDP passes again it moves to QUIC, and requests made all along
/// never fail.
#[test]
fn udp_blocked() {
    let ns = Netns::create();
    ns.block_udp();
    let tmp = TempDir::new("xpod-udp-blocked");
    let data = tmp.path().join("center-1");
    let d = data.to_str().unwrap();
    xpod_integration::mesh::xpod_ok(&["ca", "init", "--data-dir", d]);
    xpod_integration::mesh::xpod_ok(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "--node-id",
        "center-1",
        "--san",
        &ns.host_ip.to_string(),
        "--out",
        d,
    ]);
    let (tls_port, fwd_port) = (
        xpod_integration::node::free_port(),
        xpod_integration::node::free_port(),
    );
    let config = tmp.path().join("center.toml");
    std::fs::write(
        &config,
        format!(
            "[tunnel]\nedge_domain = \"edges.test\"\ntls_listen = \"{ip}:{tls_port}\"\n\n\
             [[tunnel.forwards]]\nlisten = \"{ip}:{fwd_port}\"\nnode = \"edge-nu\"\nservice = \"echo\"\n",
            ip = ns.host_ip
        ),
    )
    .unwrap();
    let center = NodeProcess::builder()
        .data_dir(&data)
        .ip(ns.host_ip)
        .env("XPOD_NODE_ID", "center-1")
        .arg("--config")
        .arg(&config)
        .start();
    let backend = start_backend_on(ns.host_ip);
    let echo = start_echo(ns.host_ip);
    let (mut tls_server, tls_addr) =
        start_tls_service(tmp.path(), "tls.edge-nu.edges.test", ns.host_ip);
    let token = new_token_with(&center, json!({"singleUse": true}));
    let edge_config = tmp.path().join("edge.toml");
    std::fs::write(
        &edge_config,
        format!(
            "role = \"edge\"\n\n[tunnel]\ntransport = \"auto\"\n\n\
             [[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\nkind = \"http\"\n\n\
             [[tunnel.services]]\nname = \"tls\"\nlocal = \"{tls_addr}\"\nkind = \"tls\"\n\n\
             [[tunnel.services]]\nname = \"echo\"\nlocal = \"{echo}\"\nkind = \"tcp\"\n"
        ),
    )
    .unwrap();
    let mut edge = NodeProcess::builder()
        .data_dir(tmp.path().join("edge-nu"))
        .ip(ns.ns_ip)
        .wrap(&["ip", "netns", "exec", &ns.name])
        .env("XPOD_NODE_ID", "edge-nu")
        .env("XPOD_TEST_QUIC_RETRY_MS", "2000")
        .arg("--config")
        .arg(&edge_config)
        .arg("--join")
        .arg(format!("{}:{}", ns.host_ip, center.port()))
        .arg("--token")
        .arg(token)
        .start();
    wait_online(&center, "edge-nu");
    assert_eq!(transport_of(&center, "edge-nu").as_deref(), Some("tcp"));
    assert!(
        edge.stderr().contains("trying TCP"),
        "the join went over TCP: {}",
        edge.stderr()
    );

    // HTTP, TLS passthrough and a TCP forward, all through the TCP transport.
    let port = center.port();
    let web = |host: &str| {
        Curl::get(format!("http://{host}:{port}/"))
            .arg("--resolve")
            .arg(format!("{host}:{port}:{}", ns.host_ip))
            .arg("--max-time")
            .arg("10")
            .send()
    };
    assert_eq!(
        web("web.edge-nu.edges.test").expect(200).text(),
        "hello from the edge"
    );
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(tmp.path().join("cert.pem"))
        .arg("--resolve")
        .arg(format!("tls.edge-nu.edges.test:{tls_port}:{}", ns.host_ip))
        .arg(format!("https://tls.edge-nu.edges.test:{tls_port}/"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "TLS passthrough over the TCP transport: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = std::net::TcpStream::connect((ns.host_ip, fwd_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"echo over tcp").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = String::new();
    std::io::Read::read_to_string(&mut s, &mut back).unwrap();
    assert_eq!(back, "echo over tcp");

    // The choice is remembered for this network (the edge's address towards the center):
    // restarted, the edge tries TCP first.
    let learned = tmp.path().join("edge-nu").join("transport.learned");
    let remembered = std::fs::read_to_string(&learned).unwrap_or_default();
    assert!(
        remembered.starts_with(&format!("{} ", ns.ns_ip)),
        "TCP remembered for this network: {remembered:?}"
    );
    edge.restart();
    let restarted = Instant::now();
    while !edge.stderr().contains("trying it first") {
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the restarted edge did not try TCP first: {}",
            edge.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_online(&center, "edge-nu");
    assert_eq!(
        web("web.edge-nu.edges.test").expect(200).text(),
        "hello from the edge"
    );

    // UDP passes again: the edge moves to QUIC while requests keep coming.
    ns.unblock_udp();
    let unblocked = Instant::now();
    let (mut sent, mut failed) = (0, Vec::new());
    while transport_of(&center, "edge-nu").as_deref() != Some("quic") {
        assert!(
            unblocked.elapsed() < Duration::from_secs(30),
            "the edge did not move back to QUIC: {}",
            edge.stderr()
        );
        let r = web("web.edge-nu.edges.test");
        sent += 1;
        if r.status != 200 {
            failed.push(r.status);
        }
    }
    for _ in 0..20 {
        let r = web("web.edge-nu.edges.test");
        sent += 1;
        if r.status != 200 {
            failed.push(r.status);
        }
    }
    println!(
        "udp blocked: moved back to QUIC {:.1} s after UDP passed again; {sent} requests meanwhile, {} failed",
        unblocked.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the move: {failed:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&learned).unwrap_or_default(),
        "",
        "QUIC works on this network again: TCP is no longer remembered"
    );
    let _ = tls_server.kill();
    let _ = tls_server.wait();
    drop(edge);
}

/// A network whose only way out is an HTTP proxy: in a network namespace where UDP is dropped
/// and TCP to the center is too, an edge with `HTTPS_PROXY` naming a real proxy (tinyproxy)
/// joins and registers over the TCP transport through `CONNECT`, and serves HTTP through its
/// center.
#[test]
fn through_an_http_proxy() {
    let tinyproxy = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("this test needs tinyproxy (the test command installs it)");
    let ns = Netns::create();
    ns.block_udp();
    let tmp = TempDir::new("xpod-proxy");
    let data = tmp.path().join("center-1");
    let d = data.to_str().unwrap();
    xpod_integration::mesh::xpod_ok(&["ca", "init", "--data-dir", d]);
    xpod_integration::mesh::xpod_ok(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "--node-id",
        "center-1",
        "--san",
        &ns.host_ip.to_string(),
        "--out",
        d,
    ]);
    let config = tmp.path().join("center.toml");
    std::fs::write(&config, "[tunnel]\nedge_domain = \"edges.test\"\n").unwrap();
    let center = NodeProcess::builder()
        .data_dir(&data)
        .ip(ns.host_ip)
        .env("XPOD_NODE_ID", "center-1")
        .arg("--config")
        .arg(&config)
        .start();
    // The namespace reaches the center only through the proxy.
    ns.block_tcp_to(ns.host_ip, center.port());
    let direct = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-sS", "-m", "2"])
        .arg(format!("http://{}:{}/", ns.host_ip, center.port()))
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "the namespace must not reach the center directly"
    );

    let proxy_port = xpod_integration::node::free_port();
    let log = tmp.path().join("tinyproxy.log");
    let conf = tmp.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {proxy_port}\nListen {ip}\nTimeout 600\nMaxClients 20\nLogLevel Connect\n\
             LogFile \"{log}\"\nConnectPort {port}\nUser nobody\nGroup nogroup\n",
            ip = ns.host_ip,
            log = log.display(),
            port = center.port()
        ),
    )
    .unwrap();
    // tinyproxy writes its log as `nobody`.
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mut proxy = std::process::Command::new(tinyproxy)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting tinyproxy");
    eventually(10, "tinyproxy listens", || {
        std::net::TcpStream::connect((ns.host_ip, proxy_port)).is_ok()
    });

    let backend = start_backend_on(ns.host_ip);
    let token = new_token_with(&center, json!({"singleUse": true}));
    let edge_config = tmp.path().join("edge.toml");
    std::fs::write(
        &edge_config,
        format!(
            "role = \"edge\"\n\n[tunnel]\ntransport = \"auto\"\n\n\
             [[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\nkind = \"http\"\n"
        ),
    )
    .unwrap();
    let edge = NodeProcess::builder()
        .data_dir(tmp.path().join("edge-px"))
        .ip(ns.ns_ip)
        .wrap(&["ip", "netns", "exec", &ns.name])
        .env("XPOD_NODE_ID", "edge-px")
        .env("HTTPS_PROXY", format!("http://{}:{proxy_port}", ns.host_ip))
        .arg("--config")
        .arg(&edge_config)
        .arg("--join")
        .arg(format!("{}:{}", ns.host_ip, center.port()))
        .arg("--token")
        .arg(token)
        .start();
    wait_online(&center, "edge-px");
    assert_eq!(transport_of(&center, "edge-px").as_deref(), Some("tcp"));
    let port = center.port();
    let r = Curl::get(format!("http://web.edge-px.edges.test:{port}/"))
        .arg("--resolve")
        .arg(format!("web.edge-px.edges.test:{port}:{}", ns.host_ip))
        .arg("--max-time")
        .arg("10")
        .send();
    assert_eq!(r.expect(200).text(), "hello from the edge");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains(&format!("CONNECT {}:{port}", ns.host_ip)),
        "the tunnel went through the proxy: {logged}"
    );
    drop(edge);
    let _ = proxy.kill();
    let _ = proxy.wait();
}
