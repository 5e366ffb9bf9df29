//! Random names cost nothing much (real binary, SQLite, its own DNS): 200 requests for a pod
//! that does not exist — over HTTP and over DNS — read the store about once (the owner table
//! remembers the miss briefly; `xpod_owner_loads_total`), and a pod created then is found at
//! once. A burst of 600 UDP queries from one network is rate limited: some are answered, some
//! get a truncated answer (retry over TCP), the rest nothing, and TCP still answers.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::node::{free_port, NodeProcess};

fn owner_loads(node: &NodeProcess) -> u64 {
    let text = Curl::get(format!("{}/metrics", node.url()))
        .send()
        .expect(200)
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix("xpod_owner_loads_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("xpod_owner_loads_total")
}

/// A DNS query for `name` A, id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[test]
fn random_names_and_query_floods_are_cheap() {
    let dns_port = free_port();
    let node = NodeProcess::builder()
        .env("XPOD_DNS_LISTEN", format!("127.0.0.1:{dns_port}"))
        .env("XPOD_DNS_ZONE", "cluster.test")
        .env("XPOD_HTTP_PODS_DOMAIN", "pods.cluster.test")
        .start();
    let key = node.admin_key();

    // HTTP: a missing pod, 100 times, with and without a key: 404 every time, ~one load.
    let before = owner_loads(&node);
    for i in 0..100 {
        let mut c = Curl::get(format!("{}/ghost/x.txt", node.url()));
        if i % 2 == 0 {
            c = c.bearer(&key);
        }
        assert_eq!(c.send().status, 404);
    }
    // DNS: the same name, 100 times (sequentially, within the rate limit).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..100u16 {
        sock.send_to(
            &query(i, "ghost.pods.cluster.test"),
            ("127.0.0.1", dns_port),
        )
        .unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        assert_eq!(buf[3] & 0x0f, 3, "NXDOMAIN for a missing pod ({n} bytes)");
    }
    let loads = owner_loads(&node) - before;
    assert!(
        loads <= 4,
        "200 asks for a missing pod read the store {loads} times"
    );

    // Created now: found at once, over HTTP and DNS.
    Curl::new("POST", format!("{}/.cluster/pods", node.url()))
        .bearer(&key)
        .json(&json!({"podId": "ghost", "accessMode": "public-read"}))
        .send()
        .expect(201);
    assert_ne!(
        Curl::get(format!("{}/ghost/", node.url())).send().status,
        404,
        "the new pod is found at once"
    );
    sock.send_to(
        &query(7, "ghost.pods.cluster.test"),
        ("127.0.0.1", dns_port),
    )
    .unwrap();
    sock.recv_from(&mut buf).unwrap();
    assert_eq!(buf[3] & 0x0f, 0, "NOERROR once the pod exists");

    // A flood from one network: 600 queries at once.
    std::thread::sleep(Duration::from_secs(3)); // the bucket refills
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    // Answers are read on their own thread while the queries go out, so none is lost here.
    let reader = flood.try_clone().unwrap();
    let counts = std::thread::spawn(move || {
        let (mut answered, mut truncated) = (0, 0);
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match reader.recv_from(&mut buf) {
                Ok(_) if buf[2] & 0x02 != 0 => truncated += 1,
                Ok(_) => answered += 1,
                Err(_) => break,
            }
        }
        (answered, truncated)
    });
    for i in 0..600u16 {
        flood
            .send_to(&query(i, "cluster.test"), ("127.0.0.1", dns_port))
            .unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2)); // let the server's socket drain
        }
    }
    let (answered, truncated) = counts.join().unwrap();
    eprintln!("flood of 600: {answered} answered, {truncated} truncated");
    assert!((150..400).contains(&answered), "{answered} answered");
    assert!(truncated >= 20, "{truncated} truncated (retry over TCP)");
    // TCP is not limited.
    let out = std::process::Command::new("dig")
        .args([
            "+tcp",
            "+short",
            "-p",
            &dns_port.to_string(),
            "@127.0.0.1",
            "cluster.test",
            "SOA",
        ])
        .output()
        .expect("dig");
    assert!(!out.stdout.is_empty(), "TCP answers during the flood");
}

/// One client address holds at most `http.max_connections_per_client` connections (more are
/// closed at once); another address is served meanwhile.
#[test]
fn connections_are_bounded_per_client() {
    let node = NodeProcess::builder()
        .env("XPOD_HTTP_MAX_CONNECTIONS_PER_CLIENT", "50")
        .start();
    // The harness's own health checks came from this address too: let the server finish
    // closing them (a slot is freed when its connection task ends, a moment after the client
    // saw the end of the response), or one of them may still hold a slot below.
    std::thread::sleep(Duration::from_millis(500));
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(std::net::TcpStream::connect(node.addr()).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let closed = held
        .iter_mut()
        .map(|s| {
            use std::io::Read as _;
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .filter(|c| *c)
        .count();
    assert_eq!(
        closed, 30,
        "the connections past 50 from one address are closed"
    );
    // Another address (127.0.0.2 is loopback too) is served.
    let r = Curl::get(format!("http://127.0.0.1:{}/health", node.port()))
        .arg("--interface")
        .arg("127.0.0.2")
        .send();
    assert_eq!(r.status, 200, "{}", r.stderr);
    // Once they go, the address is served again.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        Curl::get(format!("{}/health", node.url())).send().status,
        200
    );
}

/// 500 uploads that send 1 MiB each and then stall, to a public-read-write pod (per-address
/// limit off: they all come from one address here): the node stays within its upload budget (RSS printed; < 384 MiB asserted), other
/// clients are served meanwhile, and when the uploaders go nothing half-written is left.
#[test]
fn stalled_uploads_are_bounded() {
    use std::io::Write as _;
    use std::net::TcpStream;
    let node = NodeProcess::builder()
        .env("XPOD_HTTP_MAX_CONNECTIONS_PER_CLIENT", "0")
        .start();
    let key = node.admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", node.url()))
        .bearer(&key)
        .json(&json!({"podId": "drop", "accessMode": "public-read-write"}))
        .send()
        .expect(201);
    let before = xpod_integration::edges::proc_kib(node.pid(), "VmRSS").unwrap();
    let mib = vec![b'x'; 1 << 20];
    let mut uploads = Vec::new();
    for i in 0..500 {
        let mut s = TcpStream::connect(node.addr()).unwrap();
        write!(
            s,
            "PUT /drop/f{i}.bin HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            8 << 20
        )
        .unwrap();
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = s.write_all(&mib); // what the kernel takes; the rest never comes
        uploads.push(s);
    }
    std::thread::sleep(Duration::from_secs(3));
    let during = xpod_integration::edges::proc_kib(node.pid(), "VmRSS").unwrap();
    eprintln!(
        "node RSS: {} MiB before, {} MiB with 500 stalled uploads",
        before / 1024,
        during / 1024
    );
    let r = Curl::get(format!("{}/health", node.url()))
        .arg("--max-time")
        .arg("5")
        .send();
    assert_eq!(r.status, 200, "another client is served");
    // Without the upload budget the same run measured 455 MiB (each upload's buffer filled).
    assert!(during < 384 * 1024, "RSS {} MiB", during / 1024);
    drop(uploads);
    std::thread::sleep(Duration::from_secs(1));
    let listing = Curl::get(format!("{}/drop/", node.url()))
        .send()
        .expect(200)
        .text();
    assert!(
        !listing.contains("f1.bin"),
        "nothing half-written: {listing}"
    );
}
