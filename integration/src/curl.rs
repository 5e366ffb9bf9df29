//! `curl` as the HTTP client of end-to-end tests.
//!
//! The tests drive a node with the client users actually use, so what they see is what a user
//! sees on the wire (no client library smoothing over headers, paths or bodies). One request is
//! one `curl -sS -D - -w '%{http_code}'` run: stdout carries the response head, the body and the
//! three-digit status; request bodies go in through stdin (`--data-binary @-`) so binary bytes
//! pass unchanged. Nothing is retried and no redirect is followed.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

/// A request to send with curl.
#[derive(Clone, Debug)]
pub struct Curl {
    method: String,
    url: String,
    args: Vec<String>,
    body: Option<Vec<u8>>,
}

/// What curl got back.
#[derive(Clone, Debug)]
pub struct Resp {
    /// HTTP status; 0 when no response came (see `curl_exit` and `stderr`).
    pub status: u16,
    /// Response headers in order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// curl's exit code.
    pub curl_exit: i32,
    pub stderr: String,
}

impl Curl {
    pub fn new(method: &str, url: impl Into<String>) -> Curl {
        Curl {
            method: method.to_string(),
            url: url.into(),
            args: Vec::new(),
            body: None,
        }
    }
    pub fn get(url: impl Into<String>) -> Curl {
        Curl::new("GET", url)
    }
    /// A request header, `"Name: value"`.
    pub fn header(mut self, h: impl Into<String>) -> Curl {
        self.args.push("-H".into());
        self.args.push(h.into());
        self
    }
    /// `Authorization: Bearer <key>`.
    pub fn bearer(self, key: &str) -> Curl {
        self.header(format!("Authorization: Bearer {key}"))
    }
    /// The request body, sent byte for byte.
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Curl {
        self.body = Some(b.into());
        self
    }
    /// A JSON body with `Content-Type: application/json`.
    pub fn json(self, v: &Value) -> Curl {
        self.header("Content-Type: application/json")
            .body(serde_json::to_vec(v).expect("json"))
    }
    /// Sends the path exactly as written (no `..` squashing).
    pub fn path_as_is(self) -> Curl {
        self.arg("--path-as-is")
    }
    /// Any other curl argument.
    pub fn arg(mut self, a: impl Into<String>) -> Curl {
        self.args.push(a.into());
        self
    }

    /// Runs curl and parses its output. Panics only if curl cannot be run.
    pub fn send(self) -> Resp {
        let head = self.method == "HEAD";
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-w", "%{http_code}"]);
        if head {
            // `-I` prints the head on stdout; `-X HEAD` would wait for a body that never comes.
            cmd.arg("-I");
        } else {
            cmd.args(["-D", "-", "-X", &self.method]);
        }
        if self.body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.args(&self.args).arg(&self.url);
        cmd.stdin(if self.body.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running curl (is it installed?)");
        if let Some(b) = self.body {
            let mut stdin = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                let _ = stdin.write_all(&b);
            });
        }
        let out = child.wait_with_output().expect("waiting for curl");
        parse(
            &out.stdout,
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn parse(stdout: &[u8], curl_exit: i32, stderr: String) -> Resp {
    assert!(
        stdout.len() >= 3,
        "curl wrote no status code; exit {curl_exit}; stderr: {stderr}"
    );
    let (rest, code) = stdout.split_at(stdout.len() - 3);
    let status: u16 = std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = rest;
    let mut headers = Vec::new();
    // Skip interim (1xx) heads; the last head is the response's.
    while rest.starts_with(b"HTTP/") {
        let end = find(rest, b"\r\n\r\n").map(|i| i + 4).unwrap_or(rest.len());
        let block = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end..];
        let interim = block
            .split_whitespace()
            .nth(1)
            .is_some_and(|c| c.starts_with('1'));
        if interim {
            continue;
        }
        headers = block
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        break;
    }
    Resp {
        status,
        headers,
        body: rest.to_vec(),
        curl_exit,
        stderr,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Resp {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a header.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): status {} {:?}",
                self.status,
                self.text()
            )
        })
    }
    /// Panics with the whole response unless the status is `want`.
    #[track_caller]
    pub fn expect(self, want: u16) -> Resp {
        assert_eq!(
            self.status,
            want,
            "unexpected status; headers {:?}; body {:?}; curl stderr {:?}",
            self.headers,
            self.text(),
            self.stderr
        );
        self
    }
}
