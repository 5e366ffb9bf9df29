//! End-to-end: the walk-through of a lone node, driven the way a user drives it — the
//! real `xpod` binary as a child process, `curl` as the client, the CLI as a second process.
//!
//! Why here and not in the node's own tests: these check what only exists across process
//! boundaries — the first admin key written to disk and printed once, bytes surviving `kill -9`,
//! SIGTERM draining an upload and closing the listener, exit codes and one-line CLI errors, and
//! every status/header/body a client sees on the wire (paths sent as-is, binary bodies, ranges).
//!
//! Needs `curl` on PATH and the binary built first: `cargo build -p xpod-node`
//! (or `XPOD_BIN=/path/to/xpod`).

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};

/// A node plus the checks that hold for every response from it.
struct Client {
    base: String,
    node_id: String,
}

impl Client {
    fn new(node: &NodeProcess) -> Client {
        Client {
            base: node.url(),
            node_id: node.node_id(),
        }
    }
    fn req(&self, method: &str, path: &str) -> Curl {
        Curl::new(method, format!("{}{path}", self.base))
    }
    /// Sends and checks that the response names this node (`X-Xpod-Node`) and has a trace id.
    #[track_caller]
    fn send(&self, c: Curl) -> Resp {
        let r = c.send();
        assert_ne!(
            r.status, 0,
            "no response: curl exit {} {}",
            r.curl_exit, r.stderr
        );
        assert_eq!(
            r.header("x-xpod-node"),
            Some(self.node_id.as_str()),
            "X-Xpod-Node on {} {:?}",
            r.status,
            r.headers
        );
        r
    }
}

/// The binary test body: every byte value, repeated.
fn binary_body(repeats: usize) -> Vec<u8> {
    (0..repeats).flat_map(|_| 0u8..=255).collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// An error response: the status, JSON `{code, message, details, traceId}`, and the trace id
/// equal to the `X-Trace-Id` header.
#[track_caller]
fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "status; body {:?}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "error content-type: {:?}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["code"], code, "error code in {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error message in {v}"
    );
    assert!(
        v.as_object().unwrap().contains_key("details"),
        "error details in {v}"
    );
    let trace = v["traceId"]
        .as_str()
        .unwrap_or_else(|| panic!("traceId in {v}"));
    assert!(!trace.is_empty());
    assert_eq!(
        r.header("x-trace-id"),
        Some(trace),
        "traceId matches X-Trace-Id"
    );
}

fn create_pod(c: &Client, key: &str, body: Value) -> Resp {
    c.send(c.req("POST", "/.cluster/pods").bearer(key).json(&body))
}

#[test]
fn walkthrough() {
    let node = NodeProcess::start();
    let c = Client::new(&node);
    let key = node.admin_key();
    assert!(
        key.starts_with("xp_"),
        "admin.key holds an API key: {key:?}"
    );
    assert!(
        node.stdout().contains(&key),
        "the first admin key is printed once on stdout"
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(node.data_dir().join("admin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "admin.key must not be readable by group/others: {mode:o}"
        );
    }

    // --- pods
    let r = create_pod(&c, &key, json!({"podId": "alice"})).expect(201);
    assert_eq!(r.json()["podId"], "alice");
    assert_error(
        &create_pod(&c, &key, json!({"podId": "alice"})),
        409,
        "conflict",
    );
    assert_error(
        &create_pod(&c, &key, json!({"podId": "Bad_Id"})),
        400,
        "bad_request",
    );

    // --- a binary document round trip
    let body = binary_body(40);
    let r = c.send(
        c.req("PUT", "/alice/notes/a.txt")
            .bearer(&key)
            .header("Content-Type: text/plain")
            .body(body.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let etag1 = r.header("etag").expect("ETag on create").to_string();
    assert!(
        etag1.starts_with('"') && etag1.ends_with('"'),
        "strong quoted ETag: {etag1}"
    );

    let r = c
        .send(c.req("GET", "/alice/notes/a.txt").bearer(&key))
        .expect(200);
    assert!(
        r.body == body,
        "GET returns the bytes that were PUT ({} vs {} bytes)",
        r.body.len(),
        body.len()
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("etag"), Some(etag1.as_str()));

    // --- container listings
    let r = c
        .send(c.req("GET", "/alice/notes/").bearer(&key))
        .expect(200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/turtle")),
        "{:?}",
        r.headers
    );
    let ttl = r.text();
    assert!(
        ttl.contains("ldp:contains") && ttl.contains("<a.txt>"),
        "Turtle listing names a.txt:\n{ttl}"
    );
    let r = c
        .send(
            c.req("GET", "/alice/notes/")
                .bearer(&key)
                .header("Accept: application/ld+json"),
        )
        .expect(200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/ld+json")),
        "{:?}",
        r.headers
    );
    let ld = r.json();
    let container = ld["@graph"]
        .as_array()
        .and_then(|g| g.iter().find(|n| n["@id"] == ""))
        .unwrap_or_else(|| panic!("container node in {ld}"));
    let contains: Vec<&str> = container["ldp:contains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["@id"].as_str())
        .collect();
    assert_eq!(contains, ["a.txt"], "JSON-LD listing: {ld}");

    // --- preconditions
    let v2 = b"second version".to_vec();
    let r = c.send(
        c.req("PUT", "/alice/notes/a.txt")
            .bearer(&key)
            .header("Content-Type: text/plain")
            .header(format!("If-Match: {etag1}"))
            .body(v2.clone()),
    );
    assert!(
        r.status == 204 || r.status == 200,
        "replace with the current ETag: {} {}",
        r.status,
        r.text()
    );
    let etag2 = r.header("etag").expect("ETag on replace").to_string();
    assert_ne!(etag1, etag2, "a new version has a new ETag");
    let r = c.send(
        c.req("PUT", "/alice/notes/a.txt")
            .bearer(&key)
            .header("Content-Type: text/plain")
            .header(format!("If-Match: {etag1}"))
            .body(b"lost update".to_vec()),
    );
    assert_error(&r, 412, "precondition_failed");
    let r = c.send(
        c.req("PUT", "/alice/notes/a.txt")
            .bearer(&key)
            .header("Content-Type: text/plain")
            .header("If-None-Match: *")
            .body(b"create-only".to_vec()),
    );
    assert_error(&r, 412, "precondition_failed");
    let r = c
        .send(c.req("GET", "/alice/notes/a.txt").bearer(&key))
        .expect(200);
    assert_eq!(r.body, v2, "failed preconditions changed nothing");
    assert_eq!(r.header("etag"), Some(etag2.as_str()));

    // Put the binary body back for the range request.
    let r = c.send(
        c.req("PUT", "/alice/notes/a.txt")
            .bearer(&key)
            .header("Content-Type: text/plain")
            .body(body.clone()),
    );
    assert!(r.status == 204 || r.status == 200, "{}", r.status);

    // --- ranges
    let r = c
        .send(
            c.req("GET", "/alice/notes/a.txt")
                .bearer(&key)
                .header("Range: bytes=0-3"),
        )
        .expect(206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-3/{}", body.len()).as_str())
    );
    assert_eq!(r.body, body[..4]);
    let r = c
        .send(
            c.req("GET", "/alice/notes/a.txt")
                .bearer(&key)
                .header("Range: bytes=300-301"),
        )
        .expect(206);
    assert_eq!(r.body, body[300..302]);

    // --- authentication and strict paths
    let r = c.send(c.req("GET", "/alice/notes/a.txt"));
    assert_error(&r, 401, "unauthorized");
    assert!(
        r.header("www-authenticate").is_some(),
        "401 names the scheme"
    );
    assert!(
        !r.body.windows(4).any(|w| w == &body[..4]),
        "no content leaks in a 401"
    );
    assert_error(
        &c.send(
            c.req("GET", "/alice/../etc/passwd")
                .path_as_is()
                .bearer(&key),
        ),
        400,
        "bad_request",
    );
    assert_error(
        &c.send(
            c.req("GET", "/alice/notes/../../etc/passwd")
                .path_as_is()
                .bearer(&key),
        ),
        400,
        "bad_request",
    );
    assert_error(
        &c.send(c.req("GET", "/alice/a%2Fb").bearer(&key)),
        400,
        "bad_request",
    );
    assert_error(
        &c.send(
            c.req("PUT", "/alice/a%2Fb")
                .bearer(&key)
                .header("Content-Type: text/plain")
                .body("x"),
        ),
        400,
        "bad_request",
    );

    // --- POST with Slug
    let r = c
        .send(
            c.req("POST", "/alice/notes/")
                .bearer(&key)
                .header("Slug: b.txt")
                .header("Content-Type: text/plain")
                .body("bee"),
        )
        .expect(201);
    assert_eq!(r.header("location"), Some("/alice/notes/b.txt"));
    let r = c
        .send(c.req("GET", "/alice/notes/b.txt").bearer(&key))
        .expect(200);
    assert_eq!(r.text(), "bee");

    // --- HEAD and OPTIONS
    let r = c
        .send(c.req("HEAD", "/alice/notes/b.txt").bearer(&key))
        .expect(200);
    assert!(r.body.is_empty(), "HEAD has no body");
    assert_eq!(r.header("content-length"), Some("3"));
    assert!(r.header("etag").is_some());
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = c.send(c.req("OPTIONS", "/alice/notes/").bearer(&key));
    assert!(r.status == 204 || r.status == 200, "{}", r.status);
    let allow = r.header("allow").expect("Allow on OPTIONS").to_string();
    for m in ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"] {
        assert!(allow.contains(m), "container Allow {allow:?} has {m}");
    }
    let r = c.send(c.req("OPTIONS", "/alice/notes/b.txt").bearer(&key));
    let allow = r.header("allow").expect("Allow on OPTIONS").to_string();
    assert!(
        allow.contains("PUT") && allow.contains("GET") && !allow.contains("POST"),
        "document Allow: {allow:?}"
    );

    // --- deletes
    assert_error(
        &c.send(c.req("DELETE", "/alice/notes/").bearer(&key)),
        409,
        "conflict",
    );
    c.send(c.req("DELETE", "/alice/notes/a.txt").bearer(&key))
        .expect(204);
    assert_error(
        &c.send(c.req("GET", "/alice/notes/a.txt").bearer(&key)),
        404,
        "not_found",
    );
    let r = c
        .send(
            c.req("GET", "/alice/notes/")
                .bearer(&key)
                .header("Accept: application/ld+json"),
        )
        .expect(200);
    let listing = r.text();
    assert!(
        listing.contains("b.txt") && !listing.contains("a.txt"),
        "listing after delete: {listing}"
    );
    // The container still holds b.txt, so it is not deleted either.
    c.send(c.req("GET", "/alice/notes/b.txt").bearer(&key))
        .expect(200);

    // --- API keys
    let r = c
        .send(
            c.req("POST", "/api/v1/auth/api-keys")
                .bearer(&key)
                .json(&json!({"name": "reader", "scopes": ["pod:alice:read"]})),
        )
        .expect(201);
    let created = r.json();
    let reader = created["key"]
        .as_str()
        .expect("the new key is in the creation response")
        .to_string();
    let reader_id = created["keyId"].as_str().expect("keyId").to_string();
    assert!(
        reader.starts_with(&format!("xp_{reader_id}_")),
        "{reader} / {reader_id}"
    );
    c.send(c.req("GET", "/alice/notes/b.txt").bearer(&reader))
        .expect(200);
    let r = c.send(
        c.req("PUT", "/alice/notes/b.txt")
            .bearer(&reader)
            .header("Content-Type: text/plain")
            .body("overwrite"),
    );
    assert_error(&r, 403, "forbidden");
    assert_error(
        &c.send(c.req("GET", "/api/v1/auth/api-keys").bearer(&reader)),
        403,
        "forbidden",
    );
    assert_eq!(
        c.send(c.req("GET", "/alice/notes/b.txt").bearer(&key))
            .text(),
        "bee",
        "the refused PUT wrote nothing"
    );

    let listed = c
        .send(
            c.req("GET", "/api/v1/auth/api-keys")
                .header(format!("X-Api-Key: {key}")),
        )
        .expect(200);
    let text = listed.text();
    for full in [&key, &reader] {
        let secret = full.rsplit('_').next().unwrap();
        assert!(
            !text.contains(secret),
            "the key list contains a secret: {text}"
        );
        assert!(
            !text.contains(&sha256_hex(full.as_bytes())),
            "the key list contains a key hash: {text}"
        );
    }
    let keys = listed.json()["keys"]
        .as_array()
        .cloned()
        .expect("keys array");
    assert!(keys.len() >= 2, "{text}");
    for k in &keys {
        let o = k.as_object().unwrap();
        for field in ["key", "secret", "secretHash", "secret_hash", "hash"] {
            assert!(!o.contains_key(field), "key record exposes `{field}`: {k}");
        }
    }
    assert!(
        keys.iter()
            .any(|k| k["keyId"] == reader_id.as_str() && k["name"] == "reader"),
        "{text}"
    );
    assert_error(
        &c.send(c.req("GET", "/api/v1/auth/api-keys")),
        401,
        "unauthorized",
    );

    c.send(
        c.req("DELETE", &format!("/api/v1/auth/api-keys/{reader_id}"))
            .bearer(&key),
    )
    .expect(204);
    assert_error(
        &c.send(c.req("GET", "/alice/notes/b.txt").bearer(&reader)),
        401,
        "unauthorized",
    );
    assert_error(
        &c.send(
            c.req("GET", "/alice/notes/b.txt")
                .header(format!("X-Api-Key: {reader}")),
        ),
        401,
        "unauthorized",
    );
    // A key that was never issued, in the right shape.
    let forged = format!("xp_{reader_id}_{}", "0".repeat(64));
    assert_error(
        &c.send(c.req("GET", "/alice/notes/b.txt").bearer(&forged)),
        401,
        "unauthorized",
    );

    // --- a public-read pod
    create_pod(
        &c,
        &key,
        json!({"podId": "pub", "accessMode": "public-read"}),
    )
    .expect(201);
    c.send(
        c.req("PUT", "/pub/hello.txt")
            .bearer(&key)
            .header("Content-Type: text/plain")
            .body("hello world"),
    )
    .expect(201);
    let r = c.send(c.req("GET", "/pub/hello.txt")).expect(200);
    assert_eq!(r.text(), "hello world");
    assert_error(
        &c.send(
            c.req("PUT", "/pub/hello.txt")
                .header("Content-Type: text/plain")
                .body("defaced"),
        ),
        401,
        "unauthorized",
    );
    assert_error(
        &c.send(c.req("DELETE", "/pub/hello.txt")),
        401,
        "unauthorized",
    );
    assert_eq!(c.send(c.req("GET", "/pub/hello.txt")).text(), "hello world");

    // --- operations endpoints
    let r = c.send(c.req("GET", "/metrics")).expect(200);
    let metrics = r.text();
    assert!(
        metrics.contains("xpod_http_requests_total{"),
        "metrics:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("xpod_http_requests_total{") && l.contains("status=\"201\"")),
        "201s were counted:\n{metrics}"
    );
    let r = c.send(c.req("GET", "/openapi.json")).expect(200);
    let spec = r.json();
    assert!(
        spec["paths"].as_object().is_some_and(|p| !p.is_empty()),
        "openapi has paths"
    );
    c.send(c.req("GET", "/readiness")).expect(200);
    let h = c.send(c.req("GET", "/health")).expect(200).json();
    assert_eq!(h["nodeId"], c.node_id.as_str());
    // Unknown API routes are JSON errors too.
    assert_error(
        &c.send(c.req("GET", "/api/v1/nosuch").bearer(&key)),
        404,
        "not_found",
    );
    assert_error(
        &c.send(c.req("GET", "/nosuchpod/x").bearer(&key)),
        404,
        "not_found",
    );
}

#[test]
fn durability_after_kill9() {
    let mut node = NodeProcess::start();
    let c = Client::new(&node);
    let key = node.admin_key();
    create_pod(&c, &key, json!({"podId": "dura"})).expect(201);
    let bodies: Vec<Vec<u8>> = (0..20u8)
        .map(|i| {
            let mut b = binary_body(i as usize + 1);
            b.extend_from_slice(format!("resource {i}").as_bytes());
            b
        })
        .collect();
    let mut etags = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let r = c
            .send(
                c.req("PUT", &format!("/dura/d/r{i:02}.bin"))
                    .bearer(&key)
                    .header("Content-Type: application/octet-stream")
                    .body(b.clone()),
            )
            .expect(201);
        etags.push(r.header("etag").unwrap().to_string());
    }
    let node_id = c.node_id.clone();

    node.kill9();
    assert!(node.stdout().contains(&key));
    node.restart();

    let c = Client::new(&node);
    assert_eq!(c.node_id, node_id, "the node id survives a restart");
    assert!(
        !node.stdout().contains("xp_"),
        "no new admin key is minted on restart: {}",
        node.stdout()
    );
    assert_eq!(node.admin_key(), key);
    for (i, b) in bodies.iter().enumerate() {
        let r = c
            .send(c.req("GET", &format!("/dura/d/r{i:02}.bin")).bearer(&key))
            .expect(200);
        assert!(
            r.body == *b,
            "r{i:02}.bin differs after kill -9 ({} vs {} bytes)",
            r.body.len(),
            b.len()
        );
        assert_eq!(
            r.header("etag"),
            Some(etags[i].as_str()),
            "r{i:02}.bin ETag"
        );
    }
    let ld = c
        .send(
            c.req("GET", "/dura/d/")
                .bearer(&key)
                .header("Accept: application/ld+json"),
        )
        .expect(200)
        .json();
    let container = ld["@graph"]
        .as_array()
        .and_then(|g| g.iter().find(|n| n["@id"] == ""))
        .unwrap()
        .clone();
    let mut names: Vec<String> = container["ldp:contains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@id"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let want: Vec<String> = (0..20).map(|i| format!("r{i:02}.bin")).collect();
    assert_eq!(names, want);
}

/// Polls `/metrics` until more than `n` requests are in flight (the scrape itself is one).
fn wait_in_flight(c: &Client, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = c.send(c.req("GET", "/metrics")).expect(200).text();
        let v: i64 = m
            .lines()
            .find_map(|l| l.strip_prefix("xpod_http_in_flight_requests "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no xpod_http_in_flight_requests in\n{m}"));
        if v > n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never reached the node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn graceful_shutdown_drains_an_upload() {
    let mut node = NodeProcess::start();
    let c = Client::new(&node);
    let key = node.admin_key();
    create_pod(&c, &key, json!({"podId": "slow"})).expect(201);

    let total = 2 * 1024 * 1024;
    let body: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let half = total / 2;
    // curl streams stdin (-T -), rate-limited; we hold back the second half until after SIGTERM,
    // so the upload is certainly in flight when the signal arrives.
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "-T",
            "-",
            "--limit-rate",
            "1M",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
        ])
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .arg(format!("{}/slow/big.bin", node.url()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = curl.stdin.take().unwrap();
    stdin.write_all(&body[..half]).unwrap();
    stdin.flush().unwrap();
    wait_in_flight(&c, 1);

    node.sigterm();
    // The listener closes: new connections are refused while the upload is still running.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(node.addr()) {
            // Refused, or reset when the connect raced the listener's close: either way the
            // node takes no new connections.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => panic!("unexpected connect error after SIGTERM: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert!(node.is_running(), "the node waits for the in-flight upload");
    let r = Curl::get(format!("{}/health", node.url())).send();
    assert_eq!(r.status, 0, "a new request after SIGTERM gets no answer");
    assert_eq!(r.curl_exit, 7, "curl: couldn't connect: {}", r.stderr);

    stdin.write_all(&body[half..]).unwrap();
    drop(stdin);
    let out = curl.wait_with_output().unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        code,
        "201",
        "the in-flight upload completes; curl stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = node.wait();
    assert!(
        status.success(),
        "node exit status after SIGTERM: {status}; stderr:\n{}",
        node.stderr()
    );

    // And what was acknowledged is stored.
    node.restart();
    let c = Client::new(&node);
    let r = c
        .send(c.req("GET", "/slow/big.bin").bearer(&key))
        .expect(200);
    assert!(
        r.body == body,
        "drained upload stored intact ({} of {} bytes)",
        r.body.len(),
        body.len()
    );
}

/// Runs `xpod <args>` in an empty temp dir (so no ./xpod-data is picked up).
fn xpod(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    xpod_command()
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("running xpod")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_one_line_error(o: &Output, mentions: &str) {
    assert!(
        !o.status.success(),
        "expected failure; stdout {} stderr {}",
        out(o),
        err(o)
    );
    let e = err(o);
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "one line on stderr, got:\n{e}"
    );
    assert!(e.contains(mentions), "stderr names `{mentions}`: {e}");
}

#[test]
fn cli_manages_pods_and_keys() {
    let node = NodeProcess::start();
    let c = Client::new(&node);
    let key = node.admin_key();
    let url = node.url();
    let cwd = TempDir::new("xpod-cli");
    let remote = ["--server", url.as_str(), "--key", key.as_str()];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&remote);
        xpod(&cwd, &all, &[])
    };

    let o = run(&["pods", "create", "bob"]);
    assert!(o.status.success(), "pods create: {}", err(&o));
    assert!(out(&o).contains("bob"), "{}", out(&o));
    let o = run(&["pods", "create", "bob"]);
    assert_one_line_error(&o, "409");

    let o = run(&["pods", "list"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o)
            .lines()
            .any(|l| l.split_whitespace().next() == Some("bob")),
        "pods list shows bob:\n{}",
        out(&o)
    );

    let o = run(&["pods", "show", "bob"]);
    assert!(o.status.success(), "{}", err(&o));
    let shown: Value = serde_json::from_str(&out(&o)).expect("pods show prints JSON");
    assert_eq!(shown["podId"], "bob");

    let o = run(&["keys", "create", "--name", "x", "--scope", "pod:bob"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let new_key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("xp_"))
        .unwrap_or_else(|| panic!("keys create prints the key:\n{text}"))
        .to_string();
    let key_id = new_key.split('_').nth(1).unwrap().to_string();
    c.send(
        c.req("PUT", "/bob/from-cli.txt")
            .bearer(&new_key)
            .header("Content-Type: text/plain")
            .body("hi"),
    )
    .expect(201);
    assert_eq!(
        c.send(c.req("GET", "/bob/from-cli.txt").bearer(&new_key))
            .expect(200)
            .text(),
        "hi"
    );

    let o = run(&["keys", "list"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains(&key_id), "{}", out(&o));
    assert!(
        !out(&o).contains(new_key.rsplit('_').next().unwrap()),
        "keys list never shows a secret"
    );

    let o = run(&["keys", "revoke", &key_id]);
    assert!(o.status.success(), "{}", err(&o));
    assert_error(
        &c.send(c.req("GET", "/bob/from-cli.txt").bearer(&new_key)),
        401,
        "unauthorized",
    );

    let o = run(&["pods", "show", "nosuch"]);
    assert_one_line_error(&o, "nosuch");
    // A wrong key is a one-line error too, not a stack trace.
    let o = xpod(
        &cwd,
        &["pods", "list", "--server", &url, "--key", &new_key],
        &[],
    );
    assert_one_line_error(&o, "401");
    // The same through the environment.
    let o = xpod(
        &cwd,
        &["pods", "list"],
        &[("XPOD_SERVER", &url), ("XPOD_KEY", &key)],
    );
    assert!(
        o.status.success() && out(&o).contains("bob"),
        "{} {}",
        out(&o),
        err(&o)
    );
}

#[test]
fn config_errors_fail_before_binding() {
    let dir = TempDir::new("xpod-cfg");
    // Hold a port: if `up` got as far as binding it would say so instead of naming the config error.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "region = \"local\"\nbogus_key = 1\n").unwrap();
    let o = xpod(
        &dir,
        &[
            "up",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            data_s,
            "--listen",
            &listen,
        ],
        &[],
    );
    assert_one_line_error(&o, "bogus_key");
    assert!(!err(&o).contains("cannot listen"), "{}", err(&o));

    let bad = dir.path().join("bad-section.toml");
    std::fs::write(&bad, "[http]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n").unwrap();
    let o = xpod(
        &dir,
        &[
            "up",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            data_s,
            "--listen",
            &listen,
        ],
        &[],
    );
    assert_one_line_error(&o, "listn");

    let o = xpod(
        &dir,
        &["up", "--data-dir", data_s],
        &[("XPOD_HTTP_LISTEN", "abc")],
    );
    assert_one_line_error(&o, "XPOD_HTTP_LISTEN");

    let o = xpod(
        &dir,
        &["up", "--data-dir", data_s, "--listen", &listen],
        &[("XPOD_BOGUS", "1")],
    );
    assert_one_line_error(&o, "XPOD_BOGUS");
    assert!(!err(&o).contains("cannot listen"), "{}", err(&o));

    let o = xpod(
        &dir,
        &[
            "up",
            "--config",
            dir.path().join("missing.toml").to_str().unwrap(),
            "--data-dir",
            data_s,
            "--listen",
            &listen,
        ],
        &[],
    );
    assert_one_line_error(&o, "missing.toml");

    assert!(
        !data.exists(),
        "a refused configuration leaves no data dir behind"
    );
    assert!(!dir.path().join("xpod-data").exists(), "nor a default one");
    drop(held);
}
