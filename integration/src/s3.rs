//! A real S3-compatible server for tests: a throwaway `moto_server` (PyPI `moto[s3]`).
//!
//! Tests of the S3 region buckets need a server that behaves like S3 on the wire: conditional
//! PUTs (`If-None-Match: *` → 412), multipart uploads, ranges, ListObjectsV2. moto does all of
//! these (it accepts any SigV4 credentials without checking the signature; an unsigned request
//! gets 403). [`S3Server::start`] gives each test its own server:
//!
//! - the binary is `$XPOD_TEST_MOTO_SERVER` (also accepted: `$XPOD_MOTO_SERVER`), else
//!   `target/s3venv/bin/moto_server` in the workspace, which `bash integration/run-tests.sh`
//!   creates; with neither, `start` panics: a test that needs S3 never skips silently;
//! - a free loopback port (if moto then cannot bind it because someone took it, it is retried on
//!   another), state in memory only, so every server starts empty;
//! - its output (werkzeug's request log) goes to `moto-N.log` in a temp dir that is removed on
//!   drop, or kept and its path printed when the test panicked;
//! - ready once moto logged `Running on` and answers HTTP (30 s at most; the panic names the log);
//! - drop (or [`S3Server::stop`]) kills it (SIGKILL) and reaps it; the port then refuses
//!   connections, which is how a test makes a region unreachable.
//!
//! The helpers ([`S3Server::create_bucket`], [`S3Server::put_object`], …) talk to it with `curl
//! --aws-sigv4`, so a test can set up and inspect buckets independently of the code under test.
//! [`S3Server::requests`] reads the request log back: every request moto answered, e.g.
//! `PUT /bucket/key` or `POST /bucket/key?uploads=`, to count how often an object was written.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::curl::{Curl, Resp};
use crate::node::{free_port, TempDir};

/// Any access key works with moto; this is the one the helpers sign with.
pub const ACCESS_KEY: &str = "xpod-test";
/// Any secret works with moto; this is the one the helpers sign with.
pub const SECRET_KEY: &str = "xpod-test-secret";
/// The region the helpers sign for (moto's default; buckets need no location constraint).
pub const REGION: &str = "us-east-1";
/// How long moto may take to answer HTTP after it was spawned (it takes about 1 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The message when no `moto_server` is available.
pub const MOTO_REQUIRED: &str = "moto_server (a real S3-compatible server) is required for this \
     test: run `bash integration/run-tests.sh` once, which installs it into target/s3venv, or set \
     XPOD_TEST_MOTO_SERVER to a moto_server binary (python3 -m venv DIR && DIR/bin/pip install \
     'moto[s3]>=5,<6' flask flask-cors)";

/// The `moto_server` binary: `$XPOD_TEST_MOTO_SERVER`, else `$XPOD_MOTO_SERVER`, else
/// `target/s3venv/bin/moto_server` in the workspace. Panics with [`MOTO_REQUIRED`] when none exists.
pub fn moto_server_bin() -> PathBuf {
    for var in ["XPOD_TEST_MOTO_SERVER", "XPOD_MOTO_SERVER"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "{var}={} does not exist. {MOTO_REQUIRED}",
                p.display()
            );
            return p;
        }
    }
    let p = workspace_root().join("target/s3venv/bin/moto_server");
    assert!(p.is_file(), "{} not found. {MOTO_REQUIRED}", p.display());
    p
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// One request from moto's log: `"PUT /bucket/key HTTP/1.1" 200 -` gives method `PUT`, target
/// `/bucket/key` and status 200.
///
/// The target is what werkzeug logs: the request path and query as an IRI, i.e. with most
/// percent-escapes decoded (`%26` → `&`, UTF-8 → text) but `%20`, `%25`, `%2F`, `%3F`, `%23`
/// kept. [`LoggedRequest::path`] decodes the path completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub target: String,
    pub status: u16,
}

impl LoggedRequest {
    /// The path, percent-decoded (`/bucket/a b`), without the query.
    pub fn path(&self) -> String {
        let raw = self.target.split('?').next().unwrap_or("");
        percent_decode(raw)
    }
    /// The query string as logged (after `?`), empty when there is none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// A throwaway moto S3 server owned by one test. See the module docs.
pub struct S3Server {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
    dir: TempDir,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint())
            .field("log", &self.log)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

enum StartError {
    /// moto exited because its port was taken (a bind race): retry on another port.
    PortTaken(String),
    Failed(String),
}

impl S3Server {
    /// An empty S3 server on a free loopback port, answering HTTP. Panics (never skips) when
    /// `moto_server` is missing or does not come up within [`START_TIMEOUT`].
    pub fn start() -> S3Server {
        let mut s = S3Server {
            bin: moto_server_bin(),
            port: 0,
            child: None,
            log: PathBuf::new(),
            starts: 0,
            dir: TempDir::new("xpod-s3"),
        };
        let mut last = String::new();
        for _ in 0..5 {
            s.port = free_port();
            match s.spawn_and_wait() {
                Ok(()) => return s,
                Err(StartError::PortTaken(log)) => last = log,
                Err(StartError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("moto_server could not bind a free port in 5 attempts; last log:\n{last}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.starts += 1;
        self.log = self.dir.path().join(format!("moto-{}.log", self.starts));
        let out = File::create(&self.log)
            .map_err(|e| StartError::Failed(format!("creating {}: {e}", self.log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| StartError::Failed(e.to_string()))?;
        let child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            // Log lines must reach the file as they happen (requests() reads it back).
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| StartError::Failed(format!("spawning {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.log_text();
                if log.contains("Address already in use") || log.contains("is in use by another") {
                    return Err(StartError::PortTaken(log));
                }
                return Err(StartError::Failed(format!(
                    "moto_server ({}) exited with {status} before it answered; log {}:\n{log}",
                    self.bin.display(),
                    self.log.display()
                )));
            }
            // "Running on" is logged after moto bound the port, so whoever answers is moto.
            if self.log_text().contains("Running on") && answers_http(self.addr()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(StartError::Failed(format!(
                    "moto_server did not answer HTTP on {} within {START_TIMEOUT:?}; log {}:\n{}",
                    self.addr(),
                    self.log.display(),
                    self.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:PORT`, for `AmazonS3Builder::with_endpoint` (path-style, allow HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// moto's log file (werkzeug's request log and any Python traceback).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything moto has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and reaps it; its port then refuses connections. Later calls
    /// are no-ops. The log stays readable ([`S3Server::requests`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A curl request signed with SigV4 ([`ACCESS_KEY`], [`REGION`]) to `path_and_query`
    /// (which starts with `/` and is already percent-encoded).
    pub fn signed(&self, method: &str, path_and_query: &str) -> Curl {
        Curl::new(method, format!("{}{path_and_query}", self.endpoint()))
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:s3"))
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .path_as_is()
    }

    /// Creates a bucket (a name of 3–63 lowercase letters, digits, `-`). Panics unless moto
    /// answers 200.
    #[track_caller]
    pub fn create_bucket(&self, name: &str) {
        let r = self
            .signed("PUT", &format!("/{}", encode_path(name)))
            .send();
        self.expect_ok(&r, &format!("CreateBucket {name}"));
    }

    /// Every key in `bucket` that starts with `prefix`, in S3's (lexicographic) order, via
    /// ListObjectsV2, following continuation tokens.
    #[track_caller]
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.list_keys_paged(bucket, prefix, 1000)
    }

    /// [`S3Server::list_keys`] with pages of at most `page_size` keys (`max-keys`).
    #[track_caller]
    pub fn list_keys_paged(&self, bucket: &str, prefix: &str, page_size: u32) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = format!(
                "/{}?list-type=2&max-keys={page_size}&prefix={}",
                encode_path(bucket),
                encode_component(prefix)
            );
            if let Some(t) = &token {
                q.push_str("&continuation-token=");
                q.push_str(&encode_component(t));
            }
            let r = self.signed("GET", &q).send();
            self.expect_ok(&r, &format!("ListObjectsV2 {bucket} prefix {prefix:?}"));
            let xml = r.text();
            keys.extend(xml_values(&xml, "Key"));
            let truncated =
                xml_values(&xml, "IsTruncated").first().map(String::as_str) == Some("true");
            if !truncated {
                return keys;
            }
            let next = xml_values(&xml, "NextContinuationToken").into_iter().next();
            assert!(
                next.is_some(),
                "ListObjectsV2 {bucket}: truncated page without NextContinuationToken: {xml}"
            );
            token = next;
        }
    }

    /// The object's bytes, or `None` when the key does not exist (404 NoSuchKey). Panics on any
    /// other answer, including a missing bucket.
    #[track_caller]
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = self.signed("GET", &object_path(bucket, key)).send();
        if r.status == 404 && r.text().contains("<Code>NoSuchKey</Code>") {
            return None;
        }
        self.expect_ok(&r, &format!("GetObject {bucket}/{key}"));
        Some(r.body)
    }

    /// Writes an object (unconditionally). Panics unless moto answers 200.
    #[track_caller]
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let r = self
            .signed("PUT", &object_path(bucket, key))
            // Without it curl sends form-urlencoded and moto (Flask) stores an EMPTY body.
            .header("Content-Type: application/octet-stream")
            // No `Expect: 100-continue` wait for big bodies.
            .header("Expect:")
            .body(bytes.to_vec())
            .send();
        self.expect_ok(&r, &format!("PutObject {bucket}/{key}"));
    }

    /// Every request moto logged so far, in order, as `METHOD TARGET`, e.g. `PUT /bucket/key`,
    /// `POST /bucket/key?uploads=`, `GET /bucket?list-type=2&prefix=` (see [`LoggedRequest`] for
    /// how the target is written). Includes the helpers' own requests and the readiness probe
    /// (`GET /`). A request is logged before its response is sent, so once a client has its
    /// answer the line is in the log.
    pub fn requests(&self) -> Vec<String> {
        self.request_log()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// [`S3Server::requests`] with each request's status.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        parse_request_log(&self.log_text())
    }

    /// How many times a whole-object write of `bucket/key` was attempted, whatever moto answered
    /// (a 412 counts too; filter [`S3Server::request_log`] by status for successful ones):
    /// PutObject and CopyObject (`PUT` without a query) plus multipart starts
    /// (`POST …?uploads`). Part uploads (`PUT …?partNumber=…`) and completes are not counted.
    pub fn write_attempts(&self, bucket: &str, key: &str) -> usize {
        let want = format!("/{bucket}/{key}");
        self.request_log()
            .iter()
            .filter(|r| r.path() == want)
            .filter(|r| match r.method.as_str() {
                "PUT" => r.query().is_empty(),
                "POST" => r
                    .query()
                    .split('&')
                    .any(|p| p == "uploads" || p == "uploads="),
                _ => false,
            })
            .count()
    }

    #[track_caller]
    fn expect_ok(&self, r: &Resp, what: &str) {
        assert!(
            r.status == 200,
            "{what} on moto at {}: status {} (curl exit {}, {}); body {:?}; moto log {}",
            self.endpoint(),
            r.status,
            r.curl_exit,
            r.stderr.trim(),
            r.text(),
            self.log.display()
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- helpers

/// Whether something on `addr` answers a plain HTTP request with an HTTP status line.
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 8];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf[..n].starts_with(b"HTTP/1.")
}

/// `/bucket/key` with the key percent-encoded (its `/` kept).
fn object_path(bucket: &str, key: &str) -> String {
    format!("/{}/{}", encode_path(bucket), encode_path(key))
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn encode_path(s: &str) -> String {
    encode(s, true)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
fn encode_component(s: &str) -> String {
    encode(s, false)
}

fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of every `<tag>…</tag>` element in `xml`, XML entities decoded. (Enough for S3's
/// flat list results; no nesting of the same tag, no attributes on it.)
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(xml_unescape(&rest[..j]));
        rest = &rest[j + close.len()..];
    }
    out
}

/// Decodes `&amp; &lt; &gt; &quot; &apos;` and numeric references (`&#13;`, `&#x1F;`).
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let n = if let Some(h) =
                        name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                    {
                        u32::from_str_radix(h, 16).ok()
                    } else if let Some(d) = name.strip_prefix('#') {
                        d.parse().ok()
                    } else {
                        None
                    };
                    n.and_then(char::from_u32)
                }
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops ANSI escape sequences (werkzeug colours the request line of 4xx/5xx answers).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The request lines of a werkzeug log:
/// `127.0.0.1 - - [28/Nov/2026 12:39:25] "PUT /bkt/key HTTP/1.1" 200 -`.
fn parse_request_log(log: &str) -> Vec<LoggedRequest> {
    let log = strip_ansi(log);
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("] \"")?;
            let (msg, tail) = rest.rsplit_once("\" ")?;
            let status: u16 = tail.split_whitespace().next()?.parse().ok()?;
            let (method, rest) = msg.split_once(' ')?;
            let (target, proto) = rest.rsplit_once(' ')?;
            if !proto.starts_with("HTTP/") || method.is_empty() {
                return None;
            }
            Some(LoggedRequest {
                method: method.to_string(),
                target: target.to_string(),
                status,
            })
        })
        .collect()
}

/// A config file's `[storage]` for two regions, `a` in bucket `xpod-a` on `a` and `b` in
/// `xpod-b` on `b` (the buckets must exist), with the helpers' credentials.
pub fn two_regions_toml(a: &S3Server, b: &S3Server) -> String {
    format!(
        "[storage]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n\n\
         [[storage.region_buckets]]\nregion = \"a\"\nbucket = \"xpod-a\"\nendpoint = \"{}\"\n\n\
         [[storage.region_buckets]]\nregion = \"b\"\nbucket = \"xpod-b\"\nendpoint = \"{}\"\n",
        a.endpoint(),
        b.endpoint()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a b/c&amp;d.txt</Key></Contents><Contents><Key>&lt;x&gt;&quot;&apos;&#38;&#x41;&bogus;&</Key></Contents><NextContinuationToken>t+/=</NextContinuationToken><Prefix/></ListBucketResult>"#;
        assert_eq!(
            xml_values(xml, "Key"),
            vec!["a b/c&d.txt".to_string(), "<x>\"'&A&bogus;&".to_string()]
        );
        assert_eq!(xml_values(xml, "IsTruncated"), vec!["true"]);
        assert_eq!(xml_values(xml, "NextContinuationToken"), vec!["t+/="]);
        assert!(xml_values(xml, "Prefix").is_empty());
        assert_eq!(xml_unescape("&amp;lt;"), "&lt;");
    }

    #[test]
    fn encoding() {
        assert_eq!(object_path("b", "a b/c&d~é"), "/b/a%20b/c%26d~%C3%A9");
        assert_eq!(encode_component("x/y+z"), "x%2Fy%2Bz");
        assert_eq!(percent_decode("/b/a%20b/%C3%A9%2"), "/b/a b/é%2");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn request_log() {
        let log = "\u{1b}[31m\u{1b}[1mWARNING: This is a development server.\u{1b}[0m\n \
 * Running on http://127.0.0.1:49381\n\
127.0.0.1 - - [28/Nov/2026 12:39:25] \"PUT /bkt/a%20b/c&d.txt HTTP/1.1\" 200 -\n\
127.0.0.1 - - [28/Nov/2026 12:39:25] \"POST /bkt/big?uploads= HTTP/1.1\" 200 -\n\
127.0.0.1 - - [28/Nov/2026 12:39:25] \"\u{1b}[33mGET /bkt/nope HTTP/1.1\u{1b}[0m\" 404 -\n\
127.0.0.1 - - [28/Nov/2026 12:39:25] \"PUT /bkt/big?partNumber=1&uploadId=x HTTP/1.1\" 200 -\n\
127.0.0.1 - - [28/Nov/2026 12:39:25] \"\u{1b}[31m\u{1b}[1mPUT /bkt/a%20b/c&d.txt HTTP/1.1\u{1b}[0m\" 412 -\n";
        let r = parse_request_log(log);
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!(
            r[0],
            LoggedRequest {
                method: "PUT".into(),
                target: "/bkt/a%20b/c&d.txt".into(),
                status: 200
            }
        );
        assert_eq!(r[0].path(), "/bkt/a b/c&d.txt");
        assert_eq!(r[1].query(), "uploads=");
        assert_eq!(r[2].method, "GET");
        assert_eq!(r[2].status, 404);
        assert_eq!(r[4].status, 412);
    }
}
