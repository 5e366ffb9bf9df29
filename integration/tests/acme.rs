//! Automatic HTTPS against a real ACME server: Pebble (Debian package, installed by
//! `integration/run-tests.sh`) validating DNS-01 challenges through an xpod center's own DNS
//! server, two centers on one throwaway PostgreSQL, curl and a rustls client as HTTPS clients.
//!
//! - Exactly one center orders the certificate (`*.<pods domain>` and the zone apex); both
//!   serve it; curl trusting only Pebble's root reaches a pod over HTTPS at either center;
//!   a name no certificate covers fails the handshake; plain HTTP for a covered name is
//!   redirected, health checks are not.
//! - `xpod certs renew`: both centers serve the new certificate; a keep-alive connection opened
//!   before keeps working.
//! - With the directory down, ordering fails, backs off (longer each time), and both centers
//!   keep serving the certificate they have.
//! - A short certificate lifetime: the certificate is replaced before it expires, by itself.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::eventually;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{free_port, xpod_command, NodeProcess, TempDir};
use xpod_integration::pebble::Pebble;
use xpod_integration::pg::PgServer;

const ZONE: &str = "cluster.test";
const PODS: &str = "pods.cluster.test";
const SECRET: &str = "test-seal-secret-0123456789abcdef0123456789";

fn certs(c: &NodeProcess, key: &str) -> Value {
    Curl::get(format!("{}/.cluster/certs", c.url()))
        .bearer(key)
        .send()
        .expect(200)
        .json()
}

/// The serial a center serves once it serves an ACME certificate.
fn acme_serial(v: &Value) -> Option<String> {
    (v["serving"]["source"] == "acme").then(|| v["serving"]["serial"].as_str().unwrap().to_string())
}

/// curl over HTTPS to `host` at 127.0.0.1:`port`, trusting only `root`.
fn https(method: &str, host: &str, port: u16, path: &str, root: &Path) -> Curl {
    Curl::new(method, format!("https://{host}:{port}{path}"))
        .arg("--cacert")
        .arg(root.to_str().unwrap())
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
}

fn acme_env(dns_port: u16, tls_port: u16, pebble: &Pebble) -> Vec<(&'static str, String)> {
    vec![
        ("XPOD_DNS_LISTEN", format!("127.0.0.1:{dns_port}")),
        ("XPOD_DNS_ZONE", ZONE.into()),
        ("XPOD_DNS_ADDRESSES", "127.0.0.1".into()),
        ("XPOD_HTTP_PODS_DOMAIN", PODS.into()),
        ("XPOD_TUNNEL_TLS_LISTEN", format!("127.0.0.1:{tls_port}")),
        ("XPOD_ACME_DIRECTORY", pebble.directory_url()),
        (
            "XPOD_ACME_DIRECTORY_CA",
            pebble.directory_ca().display().to_string(),
        ),
        ("XPOD_ACME_CONTACT", "mailto:ops@cluster.test".into()),
        ("XPOD_ACME_KEY_SECRET", SECRET.into()),
    ]
}

/// One HTTP/1.1 keep-alive connection over TLS (rustls), trusting only `root`.
struct KeepAlive {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    host: String,
}

impl KeepAlive {
    fn connect(host: &str, port: u16, root: &Path) -> KeepAlive {
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(root).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn =
            rustls::ClientConnection::new(Arc::new(config), host.to_string().try_into().unwrap())
                .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        KeepAlive {
            tls,
            host: host.into(),
        }
    }

    /// GET `path` on this connection: status and body.
    fn get(&mut self, path: &str, key: &str) -> (u16, String) {
        write!(
            self.tls,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\r\n",
            self.host
        )
        .unwrap();
        self.tls.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.tls
                .read_exact(&mut byte)
                .expect("reading the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        let mut body = vec![0u8; len];
        self.tls.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The leaf certificate this connection was made with (DER).
    fn leaf(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }
}

#[test]
fn two_centers_share_one_acme_certificate_and_serve_pods_over_https() {
    let tmp = TempDir::new("xpod-acme");
    let pg = PgServer::start().expect("PostgreSQL");
    let dns = [free_port(), free_port()];
    let tls = [free_port(), free_port()];
    let mut pebble = Pebble::start(
        &tmp.path().join("pebble"),
        &format!("127.0.0.1:{}", dns[0]),
        None,
    )
    .expect("Pebble");
    let centers = start_centers(&tmp, &pg, 2, |i| acme_env(dns[i - 1], tls[i - 1], &pebble));
    let key = centers[0].admin_key();

    // Both serve an ACME certificate, the same one, and exactly one center ordered it.
    let serials: Vec<String> = centers
        .iter()
        .map(|c| {
            eventually(90, "an ACME certificate is served", || {
                acme_serial(&certs(c, &key))
            })
        })
        .collect();
    assert_eq!(
        serials[0], serials[1],
        "both centers serve the same certificate"
    );
    let views: Vec<Value> = centers.iter().map(|c| certs(c, &key)).collect();
    let issued: Vec<u64> = views
        .iter()
        .map(|v| v["issuedHere"].as_u64().unwrap())
        .collect();
    assert_eq!(
        issued.iter().sum::<u64>(),
        1,
        "exactly one order: {issued:?}"
    );
    let stored = views[0]["certificates"].as_array().unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["names"], json!([ZONE, format!("*.{PODS}")]));
    let issuer = if issued[0] == 1 {
        "center-1"
    } else {
        "center-2"
    };
    assert_eq!(stored[0]["issuedBy"], issuer);
    let text = views[0].to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("v1."),
        "no key material in the API"
    );

    // A pod over HTTPS at either center, trusting only Pebble's root.
    let root = pebble.root().expect("Pebble's root");
    let host = format!("alice.{PODS}");
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&key)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);
    https("PUT", &host, tls[0], "/hello.txt", &root)
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body("hello over https")
        .send()
        .expect(201);
    for port in tls {
        let r = https("GET", &host, port, "/hello.txt", &root)
            .bearer(&key)
            .send()
            .expect(200);
        assert_eq!(r.text(), "hello over https");
    }
    // ALPN offers h2 and HTTP/1.1: curl gets what it asks for, from the same handlers.
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                flag,
            ])
            .arg("--cacert")
            .arg(&root)
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", tls[0]))
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .arg(format!("https://{host}:{}/hello.txt", tls[0]))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{want} 200"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The apex name is covered too.
    https("GET", ZONE, tls[1], "/health", &root)
        .send()
        .expect(200);

    // A name no certificate covers: a handshake failure, not someone else's certificate.
    let r: Resp = https("GET", "other.test", tls[0], "/health", &root).send();
    assert_eq!(r.status, 0, "no HTTP response for an unknown name");
    assert_ne!(r.curl_exit, 0);
    assert!(
        r.stderr.to_lowercase().contains("alert") || r.stderr.contains("SSL"),
        "a TLS failure: {}",
        r.stderr
    );

    // Plain HTTP for a covered name → 308 to HTTPS; health stays on HTTP.
    let r = Curl::get(format!("{}/hello.txt?x=1", centers[1].url()))
        .header(format!("Host: {host}"))
        .send()
        .expect(308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://{host}:{}/hello.txt?x=1", tls[1]).as_str())
    );
    Curl::get(format!("{}/health", centers[1].url()))
        .header(format!("Host: {ZONE}"))
        .send()
        .expect(200);
    Curl::get(format!("{}/.cluster/nodes", centers[1].url()))
        .header(format!("Host: {ZONE}"))
        .send()
        .expect(308);

    // The CLI's view.
    let out = xpod_command()
        .args(["certs", "list", "--server"])
        .arg(centers[1].url())
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("center") && text.contains(issuer), "{text}");
    assert!(
        text.contains(&format!("serves: acme certificate, serial {}", serials[0])),
        "{text}"
    );

    // Renewal on request: a keep-alive connection made before keeps working after both
    // centers switched; new connections see the new certificate.
    let mut before = KeepAlive::connect(&host, tls[1], &root);
    assert_eq!(
        before.get("/hello.txt", &key),
        (200, "hello over https".into())
    );
    let out = xpod_command()
        .args(["certs", "renew", "--server"])
        .arg(centers[0].url())
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let renewed: Vec<String> = centers
        .iter()
        .map(|c| {
            eventually(60, "the renewed certificate is served", || {
                acme_serial(&certs(c, &key)).filter(|s| *s != serials[0])
            })
        })
        .collect();
    assert_eq!(renewed[0], renewed[1]);
    assert_eq!(
        before.get("/hello.txt", &key),
        (200, "hello over https".into())
    );
    let after = KeepAlive::connect(&host, tls[1], &root);
    assert_ne!(
        before.leaf(),
        after.leaf(),
        "a new connection gets the new certificate"
    );
    let total: u64 = centers
        .iter()
        .map(|c| certs(c, &key)["issuedHere"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total, 2,
        "one order for the first certificate, one for the renewal"
    );

    // The directory goes down: ordering fails and backs off; the current certificate stays.
    pebble.stop();
    Curl::new("POST", format!("{}/.cluster/certs/renew", centers[1].url()))
        .bearer(&key)
        .send()
        .expect(202);
    for c in &centers {
        let first = eventually(60, "a failed order is reported", || {
            let v = certs(c, &key);
            (v["manager"]["failures"].as_u64() >= Some(1)).then_some(v)
        });
        assert!(
            first["manager"]["lastError"].as_str().unwrap_or("").len() > 10,
            "{first}"
        );
        assert_eq!(acme_serial(&first).as_deref(), Some(renewed[0].as_str()));
        let (failed_at, next) = (
            xpod_storage::meta::now_millis(),
            first["manager"]["nextAttemptAt"].as_i64().unwrap(),
        );
        assert!(
            next - failed_at >= 5_000,
            "backs off, not a tight loop: {first}"
        );
    }
    let second = eventually(60, "a second failure, later", || {
        let v = certs(&centers[0], &key);
        (v["manager"]["failures"].as_u64() >= Some(2)).then_some(v)
    });
    let wait =
        second["manager"]["nextAttemptAt"].as_i64().unwrap() - xpod_storage::meta::now_millis();
    assert!(
        wait >= 15_000,
        "the second backoff is longer than the first: {second}"
    );
    for port in tls {
        https("GET", &host, port, "/hello.txt", &root)
            .bearer(&key)
            .send()
            .expect(200);
    }
}

#[test]
fn a_short_lived_certificate_is_replaced_before_it_expires() {
    let tmp = TempDir::new("xpod-acme-renew");
    let pg = PgServer::start().expect("PostgreSQL");
    let (dns, tls) = (free_port(), free_port());
    let _pebble = Pebble::start(
        &tmp.path().join("pebble"),
        &format!("127.0.0.1:{dns}"),
        Some(24),
    )
    .expect("Pebble");
    let pebble = &_pebble;
    let centers = start_centers(&tmp, &pg, 1, |_| acme_env(dns, tls, pebble));
    let key = centers[0].admin_key();
    let first = eventually(60, "a first certificate", || {
        let v = certs(&centers[0], &key);
        acme_serial(&v).map(|s| (s, v["serving"]["notAfter"].as_i64().unwrap()))
    });
    let lifetime = {
        let v = certs(&centers[0], &key);
        v["serving"]["notAfter"].as_i64().unwrap() - v["serving"]["notBefore"].as_i64().unwrap()
    };
    assert!(
        lifetime <= 30_000,
        "Pebble honoured the short lifetime: {lifetime} ms"
    );
    let root = pebble.root().unwrap();
    let mut conn = KeepAlive::connect(ZONE, tls, &root);
    assert_eq!(conn.get("/health", &key).0, 200);
    let (second, seen_at) = eventually(40, "a renewed certificate", || {
        acme_serial(&certs(&centers[0], &key))
            .filter(|s| *s != first.0)
            .map(|s| (s, xpod_storage::meta::now_millis()))
    });
    assert_ne!(second, first.0);
    assert!(
        seen_at < first.1,
        "replaced {} ms before the old one expired",
        first.1 - seen_at
    );
    assert_eq!(
        conn.get("/health", &key).0,
        200,
        "the open connection survived"
    );
    let fresh = KeepAlive::connect(ZONE, tls, &root);
    assert_ne!(conn.leaf(), fresh.leaf());
}

/// A plain HTTP service on loopback that answers every request with `body` (the edge's
/// published service).
fn http_service(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn an_edge_gets_its_own_certificate_and_terminates_tls_behind_its_center() {
    let tmp = TempDir::new("xpod-acme-edge");
    let pg = PgServer::start().expect("PostgreSQL");
    let (dns, tls) = (free_port(), free_port());
    let pebble = Pebble::start(
        &tmp.path().join("pebble"),
        &format!("127.0.0.1:{dns}"),
        None,
    )
    .expect("Pebble");
    let centers = start_centers(&tmp, &pg, 1, |_| {
        let mut env = acme_env(dns, tls, &pebble);
        env.push(("XPOD_TUNNEL_EDGE_DOMAIN", format!("edges.{ZONE}")));
        env
    });
    let key = centers[0].admin_key();
    let service = http_service("hello from the edge");
    let edge = xpod_integration::edges::start_edge(
        &tmp,
        &centers[0],
        "edge-a",
        &format!(
            "[tunnel]\nedge_domain = \"edges.{ZONE}\"\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:{service}\"\nkind = \"http\"\n\n\
             [acme]\ndirectory = \"{}\"\ndirectory_ca = \"{}\"\n",
            pebble.directory_url(),
            pebble.directory_ca().display()
        ),
    );
    xpod_integration::edges::wait_online(&centers[0], "edge-a");
    let edge_key = edge.admin_key();
    let view = eventually(90, "the edge serves its ACME certificate", || {
        let v = certs(&edge, &edge_key);
        acme_serial(&v).map(|_| v)
    });
    assert_eq!(
        view["serving"]["names"],
        json!([
            format!("edge-a.edges.{ZONE}"),
            format!("*.edge-a.edges.{ZONE}")
        ])
    );
    // The key stayed on the edge: 0600 in its data dir, nothing about it in the cluster store.
    let key_file = edge.data_dir().join("acme/key.pem");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    }
    let stored = certs(&centers[0], &key)["certificates"].clone();
    assert!(
        stored
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] == "center"),
        "only the centers' certificate is in the shared store: {stored}"
    );

    // Through the center's TLS port: passed through, terminated by the edge with its own
    // certificate (verified against Pebble's root for the edge's name), relayed to the service.
    let root = pebble.root().expect("Pebble's root");
    for host in [
        format!("web.edge-a.edges.{ZONE}"),
        format!("edge-a.edges.{ZONE}"),
    ] {
        let r = https("GET", &host, tls, "/", &root).send().expect(200);
        assert_eq!(r.text(), "hello from the edge");
    }
    // The center's own certificate does not cover edge names: it is the edge's that answered.
    let center_names = certs(&centers[0], &key)["serving"]["names"].clone();
    assert_eq!(center_names, json!([ZONE, format!("*.{PODS}")]));
    let conn = KeepAlive::connect(&format!("web.edge-a.edges.{ZONE}"), tls, &root);
    let center_conn = KeepAlive::connect(ZONE, tls, &root);
    assert_ne!(conn.leaf(), center_conn.leaf());
    // The challenge records were cleaned up.
    let txt = Curl::get(format!(
        "{}/.cluster/dns/txt/_acme-challenge.edge-a.edges.{ZONE}",
        centers[0].url()
    ))
    .bearer(&key)
    .send()
    .expect(200)
    .json();
    assert_eq!(txt["values"], json!([]), "{txt}");
}
