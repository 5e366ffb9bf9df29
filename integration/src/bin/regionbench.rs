//! Benchmark (a program, not a test): what region-aware object storage costs, against the
//! direct path to the same buckets, in one run.
//!
//! Why: after a pod moves to a center in another region, its bytes stay in the old region's
//! bucket until the migration sync job has copied them; meanwhile every read goes through the
//! fallback chain (disk cache → own region → holding regions → the rest, see
//! `storage/src/regions.rs`), and a full read from another region is teed into the disk cache
//! and copied into the own region. That chain must cost little over fetching the object from the
//! remote bucket yourself, a cache hit must cost little over reading the file from disk, and the
//! sync job must move a pod's many small objects at a rate close to a plain sequential copy.
//!
//! Setup (everything on 127.0.0.1): a throwaway PostgreSQL (or `XPOD_TEST_PG_URL`), two moto S3
//! servers (bucket `xpod-a` on one, `xpod-b` on the other), and two centers started by
//! [`xpod_integration::mesh::start_centers`] with `XPOD_CONFIG` naming both buckets as
//! `storage.region_buckets` and `XPOD_REGION` `a` (center-1) and `b` (center-2), as in
//! `integration/tests/regions_s3.rs`. Center-2 runs with `XPOD_TEST_SYNC_HOLD=<file>`: while
//! that file exists its migration sync job waits. Through center-1 (region a): pod `reads` gets
//! `2 × repeats` objects of each size in `--sizes-mib`, pod `migrate` gets `--objects` objects of
//! `--object-kib` KiB (written by 8 parallel clients). Both pods are then migrated to center-2
//! with the hold file present, so nothing is copied up front. Blob keys are found with
//! ListObjectsV2 on `blobs/<pod>/` and matched to the objects by a 64-byte range read (size and
//! first bytes). Before anything is timed, a 64 KiB object of a third pod (`warm`, moved too) is
//! read through center-2 and directly from both buckets (discarded), so no figure carries
//! center-2's first connection to a bucket.
//!
//! What is compared (every timed read is one whole `GET`, body compared byte for byte with what
//! was written; "first byte" is from connect to the first response byte; figures are medians):
//!
//! 1. **First read through the fallback vs a direct GET from the remote bucket**: for each size,
//!    `repeats` objects: a direct GET of the blob key from a's moto, then the first GET through
//!    center-2 (must say `x-xpod-read-from: a`: streamed from a's bucket while teed into the
//!    cache, which is fsynced before the last byte is sent). Also how long after that read
//!    ended the copy appeared in b's bucket (HEAD polled every 25 ms); the next step waits for it.
//! 2. **Reads from region b vs a direct GET from b's bucket**: (a) the second GET through
//!    center-2 of each object of figure 1 (served from the disk cache, `cache`); (b) `repeats`
//!    other objects per size, first read only with a `Range: bytes=0-99` request through
//!    center-2 (served from a; that starts a background copy into b without caching), then —
//!    once the copy is in b's bucket — one full GET through center-2, served from b's bucket
//!    (`b`; this read also writes the cache file); (c) after each of those, a direct GET of the
//!    same key from b's moto. Ratios are (a)/(c) and (b)/(c).
//! 3. **Cache hit vs reading the cache file**: every object of figures 1 and 2 again, `repeats`
//!    rounds, alternating a GET through center-2 (`cache`) with reading the cache file itself
//!    (`<center-2 data dir>/cache/<hex sha256 of the blob key>`) with `std::fs` in 256 KiB
//!    reads, checked against the same bytes the same way. The file is in the page cache.
//! 4. **Migration sync throughput**: pod `migrate` (sorted before `reads`, so the sync job does
//!    it first; `reads` has all its bytes in b by then anyway). The hold file is removed and
//!    `GET /.cluster/pods/migrate` (admin key) is polled every 50 ms until `migrationStatus` is
//!    `done`. Reported: the time from removing the hold file (this includes up to 2 s until the
//!    job's next tick, `SYNC_EVERY`) and the steady rate from the first poll that saw progress
//!    ≥ 1 % to `done`, in MB/s and objects/s, with progress samples along the way and the CPU
//!    time center-2 used. The sync job copies one blob at a time (HEAD in b, GET from a, PUT
//!    into b with `If-None-Match: *`, one metadata update). The direct path: the same keys
//!    copied by this program, one at a time, GET from a's moto then PUT (`If-None-Match: *`)
//!    into another bucket on b's moto. Ratios are sync rate / direct rate.
//!
//! The HTTP client is a minimal blocking HTTP/1.1 client over `std::net::TcpStream` (one
//! request per connection, `Connection: close`); requests to moto are signed with SigV4
//! (`UNSIGNED-PAYLOAD`) by this program, so both paths use the same client. (A `curl` process
//! per request would add ~5 ms to each read.) Setup and checks use the `S3Server` helpers.
//!
//! ```text
//! cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin regionbench
//! XPOD_BIN=target/release/xpod target/release/regionbench
//! ```
//!
//! Options: `--sizes-mib 1,64` (object sizes of figures 1–3), `--repeats N` (objects per size
//! and set, and rounds of figure 3; default 3), `--objects N` (default 1000) and `--object-kib N`
//! (default 64) for figure 4, `--help`. Needs moto (`bash integration/run-tests.sh` installs it
//! into `target/s3venv`, or `XPOD_TEST_MOTO_SERVER`), PostgreSQL (`initdb`/`pg_ctl`, see
//! `integration/src/pg.rs`) or `XPOD_TEST_PG_URL`, and `curl`. Prints plain lines (problems
//! loudly, with `!!!`), then one JSON line with every figure. Nothing here asserts on timing;
//! the machine's load average is printed first and last: on a busy machine the figures are not
//! comparable.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;
use xpod_integration::s3::{moto_server_bin, S3Server, ACCESS_KEY, REGION, SECRET_KEY};

const BUCKET_A: &str = "xpod-a";
const BUCKET_B: &str = "xpod-b";
/// The bucket on b's moto that the direct copy of figure 4 writes into.
const BUCKET_DIRECT: &str = "direct-copy";
/// Sorts before [`READS_POD`]: the sync job takes pods in `pod_id` order.
const SYNC_POD: &str = "migrate";
const READS_POD: &str = "reads";
/// One small object read once by each path before anything is timed (discarded).
const WARM_POD: &str = "warm";
/// Parallel clients writing the sync pod's objects.
const WRITERS: usize = 8;
/// Read buffer of the HTTP client and of the cache-file reads.
const READ_BUF: usize = 256 * 1024;
/// Socket timeout of every request.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a copy into b's bucket may take to appear.
const LAND_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: usize = 1024 * 1024;
const MB: f64 = 1e6;

// ---------------------------------------------------------------------------------------------
// Options

struct Args {
    sizes_mib: Vec<usize>,
    repeats: usize,
    objects: usize,
    object_kib: usize,
}

const USAGE: &str = "regionbench [--sizes-mib 1,64] [--repeats 3] [--objects 1000] [--object-kib 64]   \
     (XPOD_BIN: the xpod binary; XPOD_TEST_MOTO_SERVER: moto_server; XPOD_TEST_PG_URL: an existing PostgreSQL)";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        sizes_mib: vec![1, 64],
        repeats: 3,
        objects: 1000,
        object_kib: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<String> {
            args.next().with_context(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| -> anyhow::Result<usize> {
            v.trim()
                .parse()
                .with_context(|| format!("{name} {v:?}: not a whole number"))
        };
        match arg.as_str() {
            "--sizes-mib" => {
                let v = value("--sizes-mib")?;
                a.sizes_mib = v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| num("--sizes-mib", s.to_string()))
                    .collect::<anyhow::Result<_>>()?;
                if a.sizes_mib.is_empty() || a.sizes_mib.contains(&0) {
                    bail!("--sizes-mib needs sizes of at least 1 MiB, e.g. 1,64");
                }
            }
            "--repeats" => a.repeats = num("--repeats", value("--repeats")?)?.clamp(1, 20),
            "--objects" => a.objects = num("--objects", value("--objects")?)?.max(1),
            "--object-kib" => a.object_kib = num("--object-kib", value("--object-kib")?)?.max(1),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; usage: {USAGE}"),
        }
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client: one request per connection.

/// What to do with a response body.
enum Sink<'a> {
    /// Keep it (small answers: JSON, XML).
    Keep,
    /// Compare it with these bytes as it arrives, keeping nothing.
    Compare(&'a [u8]),
}

struct Reply {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    /// The body, for [`Sink::Keep`].
    body: Vec<u8>,
    /// Body bytes received.
    bytes: u64,
    /// For [`Sink::Compare`]: `None` when the body equals the expected bytes, else why not.
    mismatch: Option<String>,
    /// From connecting to the first response byte.
    ttfb: Duration,
    /// From connecting to the last body byte.
    total: Duration,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "HTTP {}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Feeds body bytes to a [`Sink`].
struct BodyState<'a> {
    sink: Sink<'a>,
    body: Vec<u8>,
    off: usize,
    mismatch: Option<String>,
}

impl BodyState<'_> {
    fn feed(&mut self, chunk: &[u8]) {
        match self.sink {
            Sink::Keep => self.body.extend_from_slice(chunk),
            Sink::Compare(want) => {
                if self.mismatch.is_none() {
                    let end = self.off + chunk.len();
                    if end > want.len() {
                        self.mismatch = Some(format!(
                            "more than the expected {} bytes arrived",
                            want.len()
                        ));
                    } else if want[self.off..end] != *chunk {
                        let at = chunk
                            .iter()
                            .zip(&want[self.off..end])
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                        self.mismatch = Some(format!("bytes differ at offset {}", self.off + at));
                    }
                }
            }
        }
        self.off += chunk.len();
    }
    fn finish(&mut self) {
        if let Sink::Compare(want) = self.sink {
            if self.mismatch.is_none() && self.off != want.len() {
                self.mismatch = Some(format!("{} bytes, expected {}", self.off, want.len()));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request (`Host`, `Connection: close`, `Content-Length` added) and reads the whole
/// response: `Content-Length`, chunked (kept bodies only), or until the server closes.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    sink: Sink<'_>,
) -> anyhow::Result<Reply> {
    let what = || format!("{method} http://{addr}{path}");
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting for {}", what()))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .with_context(|| format!("sending {}", what()))?;
    if let Some(b) = body {
        s.write_all(b)
            .with_context(|| format!("sending the body of {}", what()))?;
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut acc = Vec::new();
    let mut ttfb = None;
    let head_end = loop {
        let n = s
            .read(&mut buf)
            .with_context(|| format!("reading the answer to {}", what()))?;
        if n == 0 {
            bail!(
                "{}: connection closed before a complete response head",
                what()
            );
        }
        ttfb.get_or_insert_with(|| start.elapsed());
        acc.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&acc, b"\r\n\r\n") {
            break i;
        }
        if acc.len() > 1 << 20 {
            bail!("{}: no end of the response head in 1 MiB", what());
        }
    };
    let head_text = std::str::from_utf8(&acc[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{}: bad status line {status_line:?}", what()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let prefix = acc.split_off(head_end + 4);
    let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let mut st = BodyState {
        sink,
        body: Vec::new(),
        off: 0,
        mismatch: None,
    };
    let mut received = 0u64;
    if no_body {
    } else if let (Some(n), false) = (length, chunked) {
        let first = prefix.len().min(n as usize);
        st.feed(&prefix[..first]);
        received += first as u64;
        while received < n {
            let want = (n - received).min(buf.len() as u64) as usize;
            let k = s
                .read(&mut buf[..want])
                .with_context(|| format!("reading the body of {}", what()))?;
            if k == 0 {
                bail!(
                    "{}: connection closed after {received} of {n} body bytes",
                    what()
                );
            }
            st.feed(&buf[..k]);
            received += k as u64;
        }
    } else {
        let mut raw = prefix;
        s.read_to_end(&mut raw)
            .with_context(|| format!("reading the body of {}", what()))?;
        let raw = if chunked { dechunk(&raw)? } else { raw };
        received = raw.len() as u64;
        st.feed(&raw);
    }
    let total = start.elapsed();
    st.finish();
    Ok(Reply {
        status,
        headers,
        body: st.body,
        bytes: received,
        mismatch: st.mismatch,
        ttfb: ttfb.unwrap_or(total),
        total,
    })
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(raw, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&raw[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(raw.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------------------------
// Direct S3 requests (SigV4, UNSIGNED-PAYLOAD) with the same client

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of `t`.
fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, sod) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The SigV4 headers for `method path` (no query) on `host`, signed at `date`.
fn sigv4(method: &str, host: &str, path: &str, date: &str) -> Vec<(String, String)> {
    let day = &date[..8];
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{date}\n\n\
         host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD"
    );
    let scope = format!("{day}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut k = hmac_sha256(format!("AWS4{SECRET_KEY}").as_bytes(), day.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        k = hmac_sha256(&k, part.as_bytes());
    }
    let sig = hex::encode(hmac_sha256(&k, to_sign.as_bytes()));
    vec![
        ("x-amz-date".into(), date.to_string()),
        ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
        (
            "Authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"
            ),
        ),
    ]
}

/// One moto server, addressed directly.
struct S3Direct {
    addr: SocketAddr,
}

impl S3Direct {
    fn request(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
        sink: Sink<'_>,
    ) -> anyhow::Result<Reply> {
        // Blob keys (`blobs/<pod>/<hex>`) need no percent-encoding.
        let path = format!("/{bucket}/{key}");
        let mut h = sigv4(
            method,
            &self.addr.to_string(),
            &path,
            &amz_date(SystemTime::now()),
        );
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        exchange(self.addr, method, &path, &h, body, sink)
    }
    fn exists(&self, bucket: &str, key: &str) -> anyhow::Result<bool> {
        let r = self.request("HEAD", bucket, key, &[], None, Sink::Keep)?;
        match r.status {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!("HEAD {bucket}/{key} on moto {}: HTTP {s}", self.addr),
        }
    }
    /// Polls until `bucket/key` exists; how long that took.
    fn wait_for(&self, bucket: &str, key: &str) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.exists(bucket, key)? {
                return Ok(start.elapsed());
            }
            if start.elapsed() > LAND_TIMEOUT {
                bail!(
                    "{bucket}/{key} did not appear on moto {} within {LAND_TIMEOUT:?}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests to the nodes

fn bearer(key: &str) -> (String, String) {
    ("Authorization".into(), format!("Bearer {key}"))
}

fn node_json(
    c: &NodeProcess,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut h = vec![bearer(key)];
    let bytes = body.map(|b| serde_json::to_vec(&b)).transpose()?;
    if bytes.is_some() {
        h.push(("Content-Type".into(), "application/json".into()));
    }
    let r = exchange(c.addr(), method, path, &h, bytes.as_deref(), Sink::Keep)?;
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()?
    };
    Ok((r.status, v))
}

fn put_object(c: &NodeProcess, key: &str, path: &str, body: &[u8]) -> anyhow::Result<()> {
    let h = vec![
        bearer(key),
        ("Content-Type".into(), "application/octet-stream".into()),
    ];
    let r = exchange(c.addr(), "PUT", path, &h, Some(body), Sink::Keep)?;
    if r.status != 201 {
        bail!("PUT {path}: HTTP {} {}", r.status, r.text());
    }
    Ok(())
}

fn migration_state(c: &NodeProcess, key: &str, pod: &str) -> anyhow::Result<(String, i64)> {
    let (st, v) = node_json(c, key, "GET", &format!("/.cluster/pods/{pod}"), None)?;
    if st != 200 {
        bail!("GET /.cluster/pods/{pod}: HTTP {st} {v}");
    }
    Ok((
        v["migrationStatus"].as_str().unwrap_or("").to_string(),
        v["migrationProgress"].as_i64().unwrap_or(-1),
    ))
}

// ---------------------------------------------------------------------------------------------
// Objects

/// Deterministic bytes for object `seed` (xorshift64, a word at a time).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// An object of pod `reads`.
struct Obj {
    /// The resource path, `/reads/…`.
    path: String,
    bytes: Vec<u8>,
    /// The blob key in the buckets.
    key: String,
}

/// The objects of one size: `first` for figure 1 (then 2a and 3), `own` for figure 2b.
struct SizeSet {
    mib: usize,
    first: Vec<Obj>,
    own: Vec<Obj>,
}

// ---------------------------------------------------------------------------------------------
// Figures

/// One timed read.
#[derive(Clone, Debug)]
struct Sample {
    ms: f64,
    ttfb_ms: f64,
    bytes: u64,
    /// `x-xpod-read-from`, or `moto-a`/`moto-b`/`file`.
    from: String,
}

struct Summary {
    n: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    ttfb_median_ms: f64,
    mbps: f64,
    from: BTreeMap<String, usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Summary {
    fn of(samples: &[Sample]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let ms: Vec<f64> = samples.iter().map(|s| s.ms).collect();
        let med = median(ms.clone());
        let bytes = median(samples.iter().map(|s| s.bytes as f64).collect());
        let mut from = BTreeMap::new();
        for s in samples {
            *from.entry(s.from.clone()).or_default() += 1;
        }
        Some(Summary {
            n: samples.len(),
            median_ms: med,
            min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: ms.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ttfb_median_ms: median(samples.iter().map(|s| s.ttfb_ms).collect()),
            mbps: bytes / MB / (med / 1000.0),
            from,
        })
    }
    fn to_json(s: &Option<Summary>) -> Value {
        match s {
            Some(s) => json!({
                "n": s.n,
                "median_ms": round3(s.median_ms),
                "min_ms": round3(s.min_ms),
                "max_ms": round3(s.max_ms),
                "first_byte_median_ms": round3(s.ttfb_median_ms),
                "mb_per_s": round(s.mbps),
                "served_from": s.from,
            }),
            None => Value::Null,
        }
    }
}

fn print_line(label: &str, s: &Option<Summary>) {
    match s {
        Some(s) => println!(
            "     {label:<34} median {:>9.2} ms  (min {:>8.2}, max {:>8.2})  {:>7.1} MB/s  first byte {:>7.2} ms  n={}  from {}",
            s.median_ms,
            s.min_ms,
            s.max_ms,
            s.mbps,
            s.ttfb_median_ms,
            s.n,
            s.from
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => println!("     {label:<34} no samples"),
    }
}

/// `a.median / b.median` (time ratio: above 1 means `a` is slower).
fn ratio(a: &Option<Summary>, b: &Option<Summary>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.median_ms > 0.0 => Some(a.median_ms / b.median_ms),
        _ => None,
    }
}

fn print_ratio(label: &str, r: Option<f64>) {
    match r {
        Some(r) => println!("     {label:<34} {r:.2}× the time"),
        None => println!("     {label:<34} n/a"),
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Bench {
    problems: Vec<String>,
}

impl Bench {
    fn problem(&mut self, what: String) {
        println!("     !!! {what}");
        self.problems.push(what);
    }

    /// A timed whole GET through a node, checked: status 200, the bytes, and (when given) the
    /// node that answered and the tier it read from.
    fn node_read(
        &mut self,
        c: &NodeProcess,
        key: &str,
        obj: &Obj,
        want_from: &str,
        what: &str,
    ) -> anyhow::Result<Sample> {
        let r = exchange(
            c.addr(),
            "GET",
            &obj.path,
            &[bearer(key)],
            None,
            Sink::Compare(&obj.bytes),
        )?;
        if r.status != 200 {
            bail!("{what}: GET {}: HTTP {}", obj.path, r.status);
        }
        let from = r.header("x-xpod-read-from").unwrap_or("?").to_string();
        if from != want_from {
            self.problem(format!(
                "{what}: GET {} was served from {from:?}, expected {want_from:?}: this sample measures another path",
                obj.path
            ));
        }
        if r.header("x-xpod-node") != Some("center-2") {
            self.problem(format!(
                "{what}: GET {} answered by {:?}, not center-2",
                obj.path,
                r.header("x-xpod-node")
            ));
        }
        if let Some(m) = &r.mismatch {
            self.problem(format!(
                "{what}: GET {} returned wrong bytes: {m}",
                obj.path
            ));
        }
        Ok(Sample {
            ms: ms(r.total),
            ttfb_ms: ms(r.ttfb),
            bytes: r.bytes,
            from,
        })
    }

    /// A timed whole GET of `obj`'s blob key straight from a moto server.
    fn s3_read(
        &mut self,
        s3: &S3Direct,
        bucket: &str,
        obj: &Obj,
        label: &str,
    ) -> anyhow::Result<Sample> {
        let r = s3.request(
            "GET",
            bucket,
            &obj.key,
            &[],
            None,
            Sink::Compare(&obj.bytes),
        )?;
        if r.status != 200 {
            bail!("direct GET {bucket}/{}: HTTP {}", obj.key, r.status);
        }
        if let Some(m) = &r.mismatch {
            self.problem(format!(
                "direct GET {bucket}/{} returned wrong bytes: {m}",
                obj.key
            ));
        }
        Ok(Sample {
            ms: ms(r.total),
            ttfb_ms: ms(r.ttfb),
            bytes: r.bytes,
            from: label.to_string(),
        })
    }

    /// A timed read of a cache file with `std::fs`, compared like an HTTP body.
    fn file_read(&mut self, path: &Path, obj: &Obj) -> anyhow::Result<Sample> {
        let start = Instant::now();
        let mut f =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; READ_BUF];
        let mut st = BodyState {
            sink: Sink::Compare(&obj.bytes),
            body: Vec::new(),
            off: 0,
            mismatch: None,
        };
        let mut ttfb = None;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            ttfb.get_or_insert_with(|| start.elapsed());
            if n == 0 {
                break;
            }
            st.feed(&buf[..n]);
        }
        let total = start.elapsed();
        st.finish();
        if let Some(m) = st.mismatch {
            self.problem(format!(
                "cache file {} of {} has wrong bytes: {m}",
                path.display(),
                obj.path
            ));
        }
        Ok(Sample {
            ms: ms(total),
            ttfb_ms: ms(ttfb.unwrap_or(total)),
            bytes: st.off as u64,
            from: "file".into(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) clock ticks of all CPUs since boot.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

fn clock_ticks_per_s() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds of `pid` and the machine's busy fraction between two points.
struct CpuMeter {
    pid: u32,
    proc0: Option<u64>,
    machine0: Option<(u64, u64)>,
}

impl CpuMeter {
    fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            proc0: cpu_ticks(pid),
            machine0: machine_ticks(),
        }
    }
    /// (CPU seconds of the process, machine busy fraction).
    fn stop(&self) -> (Option<f64>, Option<f64>) {
        let proc = match (self.proc0, cpu_ticks(self.pid)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clock_ticks_per_s()),
            _ => None,
        };
        let busy = match (self.machine0, machine_ticks()) {
            (Some((b0, t0)), Some((b1, t1))) => {
                Some(b1.saturating_sub(b0) as f64 / t1.saturating_sub(t0).max(1) as f64)
            }
            _ => None,
        };
        (proc, busy)
    }
}

// ---------------------------------------------------------------------------------------------
// Machine facts

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// The run

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut bench = Bench {
        problems: Vec::new(),
    };
    let load_start = loadavg();
    println!("regionbench: region-aware reads and the migration sync, two regions on two moto S3 servers");
    println!(
        "machine: {} CPUs ({}), {:.1} GiB RAM; load average at start: {load_start}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        mem_total_gib()
    );
    let moto = moto_server_bin();
    println!("moto: {}", moto.display());

    let tmp = TempDir::new("xpod-regionbench");
    let pg = PgServer::start()?;
    let (s3a, s3b) = (S3Server::start(), S3Server::start());
    s3a.create_bucket(BUCKET_A);
    s3b.create_bucket(BUCKET_B);
    s3b.create_bucket(BUCKET_DIRECT);
    let direct_a = S3Direct { addr: s3a.addr() };
    let direct_b = S3Direct { addr: s3b.addr() };
    let config = tmp.path().join("regions.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n\n\
             [[storage.region_buckets]]\nregion = \"a\"\nbucket = \"{BUCKET_A}\"\nendpoint = \"{}\"\n\n\
             [[storage.region_buckets]]\nregion = \"b\"\nbucket = \"{BUCKET_B}\"\nendpoint = \"{}\"\n",
            s3a.endpoint(),
            s3b.endpoint()
        ),
    )?;
    // While this file exists, center-2's migration sync job waits.
    let hold: PathBuf = tmp.path().join("hold-sync");
    std::fs::write(&hold, b"")?;
    let started = Instant::now();
    let centers = start_centers(&tmp, &pg, 2, |i| {
        vec![
            ("XPOD_CONFIG", config.display().to_string()),
            ("XPOD_REGION", if i == 1 { "a" } else { "b" }.to_string()),
            ("XPOD_TEST_SYNC_HOLD", hold.display().to_string()),
        ]
    });
    let (ca, cb) = (&centers[0], &centers[1]);
    let bin = ca.bin().display().to_string();
    let profile = if bin.contains("/release/") {
        "release"
    } else if bin.contains("/debug/") {
        "debug (figures are not representative)"
    } else {
        "unknown profile"
    };
    println!("binary: {bin} [{profile}]");
    if !bin.contains("/release/") {
        bench.problem(format!(
            "the xpod binary is not a release build ({bin}): set XPOD_BIN=target/release/xpod"
        ));
    }
    println!(
        "cluster (up in {:.1} s): center-1 {} region a → moto {} bucket {BUCKET_A}; center-2 {} region b → moto {} bucket {BUCKET_B}",
        started.elapsed().as_secs_f64(),
        ca.url(),
        s3a.endpoint(),
        cb.url(),
        s3b.endpoint()
    );
    let key = ca.admin_key();

    // Pods and objects, written in region a.
    for pod in [READS_POD, SYNC_POD, WARM_POD] {
        let (st, v) = node_json(
            ca,
            &key,
            "POST",
            "/.cluster/pods",
            Some(json!({ "podId": pod })),
        )?;
        if st != 201 {
            bail!("creating pod {pod}: HTTP {st} {v}");
        }
    }
    let r = args.repeats;
    let started = Instant::now();
    let mut seed = 1u64;
    let mut sets: Vec<SizeSet> = Vec::new();
    for &mib in &args.sizes_mib {
        let mut make = |kind: &str, i: usize| -> anyhow::Result<Obj> {
            seed += 1;
            let obj = Obj {
                path: format!("/{READS_POD}/{mib}mib-{kind}-{i}.bin"),
                bytes: content(seed, mib * MIB),
                key: String::new(),
            };
            put_object(ca, &key, &obj.path, &obj.bytes)?;
            Ok(obj)
        };
        let first = (0..r)
            .map(|i| make("first", i))
            .collect::<anyhow::Result<_>>()?;
        let own = (0..r)
            .map(|i| make("own", i))
            .collect::<anyhow::Result<_>>()?;
        sets.push(SizeSet { mib, first, own });
    }
    println!(
        "setup: pod {READS_POD}: {} objects ({}) written through center-1 in {:.1} s",
        2 * r * sets.len(),
        sets.iter()
            .map(|s| format!("{} × {} MiB", 2 * r, s.mib))
            .collect::<Vec<_>>()
            .join(" + "),
        started.elapsed().as_secs_f64()
    );
    let obj_bytes = args.object_kib * 1024;
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let key = &key;
                scope.spawn(move || -> anyhow::Result<()> {
                    for i in (w..args.objects).step_by(WRITERS) {
                        let body = content(1_000_000 + i as u64, obj_bytes);
                        put_object(ca, key, &format!("/{SYNC_POD}/o{i:05}.bin"), &body)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "setup: pod {SYNC_POD}: {} objects × {} KiB written through center-1 by {WRITERS} clients in {secs:.1} s ({:.0} objects/s, {:.1} MB/s)",
        args.objects,
        args.object_kib,
        args.objects as f64 / secs,
        (args.objects * obj_bytes) as f64 / MB / secs
    );

    // Blob keys, matched by size and first bytes.
    let keys = s3a.list_keys(BUCKET_A, &format!("blobs/{READS_POD}/"));
    if keys.len() != 2 * r * sets.len() {
        bail!(
            "bucket {BUCKET_A} holds {} blobs of pod {READS_POD}, expected {}",
            keys.len(),
            2 * r * sets.len()
        );
    }
    for k in &keys {
        let rep = direct_a.request(
            "GET",
            BUCKET_A,
            k,
            &[("Range", "bytes=0-63")],
            None,
            Sink::Keep,
        )?;
        if rep.status != 206 {
            bail!(
                "range GET {BUCKET_A}/{k}: HTTP {} {}",
                rep.status,
                rep.text()
            );
        }
        let total: usize = rep
            .header("content-range")
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("range GET {BUCKET_A}/{k}: no Content-Range"))?;
        let obj = sets
            .iter_mut()
            .flat_map(|s| s.first.iter_mut().chain(s.own.iter_mut()))
            .find(|o| o.bytes.len() == total && o.bytes[..64] == rep.body[..])
            .ok_or_else(|| anyhow!("blob {k} ({total} bytes) matches no object written"))?;
        obj.key = k.clone();
    }
    if let Some(o) = sets
        .iter()
        .flat_map(|s| s.first.iter().chain(&s.own))
        .find(|o| o.key.is_empty())
    {
        bail!("no blob in {BUCKET_A} matches {}", o.path);
    }
    let sync_keys = s3a.list_keys(BUCKET_A, &format!("blobs/{SYNC_POD}/"));
    if sync_keys.len() != args.objects {
        bail!(
            "bucket {BUCKET_A} holds {} blobs of pod {SYNC_POD}, expected {}",
            sync_keys.len(),
            args.objects
        );
    }

    let warm = Obj {
        path: format!("/{WARM_POD}/w.bin"),
        bytes: content(0, 64 * 1024),
        key: String::new(),
    };
    put_object(ca, &key, &warm.path, &warm.bytes)?;
    let warm = Obj {
        key: s3a
            .list_keys(BUCKET_A, &format!("blobs/{WARM_POD}/"))
            .pop()
            .ok_or_else(|| anyhow!("the warm-up object is not in {BUCKET_A}"))?,
        ..warm
    };

    // The pods move to region b; the sync job is held, so nothing is copied yet.
    for pod in [READS_POD, SYNC_POD, WARM_POD] {
        let (st, v) = node_json(
            ca,
            &key,
            "POST",
            &format!("/.cluster/pods/{pod}/migrate"),
            Some(json!({ "targetNode": "center-2" })),
        )?;
        if st != 202 {
            bail!("migrating {pod}: HTTP {st} {v}");
        }
        let state = migration_state(cb, &key, pod)?;
        if state != ("syncing".to_string(), 0) {
            bench.problem(format!(
                "pod {pod} after the migration: {state:?}, expected (\"syncing\", 0)"
            ));
        }
    }
    let in_b = s3b.list_keys(BUCKET_B, "blobs/").len();
    println!(
        "migrated {READS_POD}, {SYNC_POD} and {WARM_POD} to center-2 (region b), sync job held; blobs in {BUCKET_B}: {in_b}"
    );
    if in_b != 0 {
        bench.problem(format!(
            "{in_b} blobs are in {BUCKET_B} before any read: the figures below measure something else"
        ));
    }
    // Warm-up (discarded): center-2's first request to each bucket, moto's first GETs.
    bench.s3_read(&direct_a, BUCKET_A, &warm, "moto-a")?;
    bench.node_read(cb, &key, &warm, "a", "warm-up read")?;
    direct_b.wait_for(BUCKET_B, &warm.key)?;
    bench.s3_read(&direct_b, BUCKET_B, &warm, "moto-b")?;
    bench.node_read(cb, &key, &warm, "cache", "warm-up read")?;
    let cache_dir = cb.data_dir().join("cache");

    // 1–3, per size.
    let mut size_json = Vec::new();
    let mut summary: Vec<String> = Vec::new();
    for set in &sets {
        let mib = set.mib;
        println!("\n== {mib} MiB objects ({r} per set) ==");

        // 1. First read through b vs a direct GET from a's bucket.
        println!("  1. first read through center-2 (from region a, teed into the cache, copied into b) vs direct GET from a's bucket");
        let (mut direct_a_s, mut first_s, mut landed) = (Vec::new(), Vec::new(), Vec::new());
        for o in &set.first {
            direct_a_s.push(bench.s3_read(&direct_a, BUCKET_A, o, "moto-a")?);
            first_s.push(bench.node_read(cb, &key, o, "a", "first read")?);
            landed.push(ms(direct_b.wait_for(BUCKET_B, &o.key)?));
        }
        let direct_a_sum = Summary::of(&direct_a_s);
        let first_sum = Summary::of(&first_s);
        print_line("direct GET from a's bucket", &direct_a_sum);
        print_line("first GET through center-2", &first_sum);
        let r1 = ratio(&first_sum, &direct_a_sum);
        print_ratio("first through b / direct a", r1);
        let landed_med = median(landed.clone());
        println!(
            "     copy in b's bucket after the read ended: median {landed_med:.0} ms (max {:.0} ms)",
            landed.iter().copied().fold(0.0, f64::max)
        );

        // 2. Reads from region b vs a direct GET from b's bucket.
        println!("  2. reads from region b through center-2 vs direct GET from b's bucket");
        let (mut second_s, mut own_s, mut direct_b_s) = (Vec::new(), Vec::new(), Vec::new());
        for o in &set.first {
            second_s.push(bench.node_read(cb, &key, o, "cache", "second read")?);
            direct_b_s.push(bench.s3_read(&direct_b, BUCKET_B, o, "moto-b")?);
        }
        for o in &set.own {
            let rep = exchange(
                cb.addr(),
                "GET",
                &o.path,
                &[bearer(&key), ("Range".into(), "bytes=0-99".into())],
                None,
                Sink::Keep,
            )?;
            if rep.status != 206 || rep.body != o.bytes[..100] {
                bench.problem(format!(
                    "range read of {} through center-2: HTTP {}, {} bytes{}",
                    o.path,
                    rep.status,
                    rep.body.len(),
                    if rep.body == o.bytes[..100] {
                        ""
                    } else {
                        " (wrong bytes)"
                    }
                ));
            }
            let from = rep.header("x-xpod-read-from").unwrap_or("?");
            if from != "a" {
                bench.problem(format!(
                    "range read of {} was served from {from:?}, expected \"a\"",
                    o.path
                ));
            }
            direct_b.wait_for(BUCKET_B, &o.key)?;
            own_s.push(bench.node_read(cb, &key, o, "b", "read from b's bucket")?);
            direct_b_s.push(bench.s3_read(&direct_b, BUCKET_B, o, "moto-b")?);
        }
        let second_sum = Summary::of(&second_s);
        let own_sum = Summary::of(&own_s);
        let direct_b_sum = Summary::of(&direct_b_s);
        print_line("(a) second GET, from the cache", &second_sum);
        print_line("(b) from b's bucket (+ cache fill)", &own_sum);
        print_line("(c) direct GET from b's bucket", &direct_b_sum);
        let r2a = ratio(&second_sum, &direct_b_sum);
        let r2b = ratio(&own_sum, &direct_b_sum);
        print_ratio("(a) cache / direct b", r2a);
        print_ratio("(b) b's bucket via b / direct b", r2b);

        // 3. Cache hits vs reading the cache file.
        println!("  3. cache hit through center-2 vs reading the cache file with std::fs");
        let (mut hit_s, mut file_s) = (Vec::new(), Vec::new());
        for _ in 0..r {
            for o in set.first.iter().chain(&set.own) {
                let file = cache_dir.join(hex::encode(Sha256::digest(o.key.as_bytes())));
                let len = std::fs::metadata(&file)
                    .with_context(|| format!("cache file of {} ({})", o.path, file.display()))?
                    .len();
                if len != o.bytes.len() as u64 {
                    bench.problem(format!(
                        "cache file {} has {len} bytes, expected {}",
                        file.display(),
                        o.bytes.len()
                    ));
                }
                hit_s.push(bench.node_read(cb, &key, o, "cache", "cache hit")?);
                file_s.push(bench.file_read(&file, o)?);
            }
        }
        let hit_sum = Summary::of(&hit_s);
        let file_sum = Summary::of(&file_s);
        print_line("GET through center-2 (cache)", &hit_sum);
        print_line("std::fs read of the cache file", &file_sum);
        let r3 = ratio(&hit_sum, &file_sum);
        print_ratio("cache hit / file read", r3);

        let f = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}"));
        summary.push(format!(
            "{mib} MiB: first read via b / direct a {} · cache / direct b {} · b's bucket via b / direct b {} · cache hit / file read {}",
            f(r1),
            f(r2a),
            f(r2b),
            f(r3)
        ));
        size_json.push(json!({
            "mib": mib,
            "first_read": {
                "direct_a": Summary::to_json(&direct_a_sum),
                "through_b": Summary::to_json(&first_sum),
                "ratio": r1.map(round3),
                "copy_in_b_after_read_ms": { "median": round(landed_med), "all": landed.iter().map(|v| round(*v)).collect::<Vec<_>>() },
            },
            "region_b": {
                "second_read_cache": Summary::to_json(&second_sum),
                "read_from_b_bucket": Summary::to_json(&own_sum),
                "direct_b": Summary::to_json(&direct_b_sum),
                "ratio_cache": r2a.map(round3),
                "ratio_b_bucket": r2b.map(round3),
            },
            "cache_hit": {
                "through_b": Summary::to_json(&hit_sum),
                "file_read": Summary::to_json(&file_sum),
                "ratio": r3.map(round3),
            },
        }));
    }

    // 4. Migration sync throughput.
    let sync = sync_figure(
        &mut bench, &args, cb, &key, &hold, &direct_a, &direct_b, &sync_keys, &s3a, &s3b,
    )?;

    println!("\nsummary (ratios of medians; time ratios above 1 are slower than the direct path):");
    for l in &summary {
        println!("  {l}");
    }
    if let Some(r) = sync["ratio_end_to_end"].as_f64() {
        println!(
            "  sync rate / direct copy rate: end to end {r:.2}, steady {}",
            sync["ratio_steady"]
                .as_f64()
                .map_or("n/a".to_string(), |r| format!("{r:.2}"))
        );
    }
    let load_end = loadavg();
    println!("load average at the end: {load_end}");
    if bench.problems.is_empty() {
        println!("problems: none");
    } else {
        println!("!!! {} problem(s):", bench.problems.len());
        for p in &bench.problems {
            println!("!!!   {p}");
        }
    }
    let out = json!({
        "bench": "regionbench",
        "binary": bin,
        "release": bin.contains("/release/"),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "repeats": r,
        "sizes": size_json,
        "sync": sync,
        "problems": bench.problems,
    });
    println!("\n{out}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sync_figure(
    bench: &mut Bench,
    args: &Args,
    cb: &NodeProcess,
    key: &str,
    hold: &Path,
    direct_a: &S3Direct,
    direct_b: &S3Direct,
    sync_keys: &[String],
    s3a: &S3Server,
    s3b: &S3Server,
) -> anyhow::Result<Value> {
    let n = args.objects;
    let obj_bytes = args.object_kib * 1024;
    let total_mb = (n * obj_bytes) as f64 / MB;
    println!(
        "\n== 4. migration sync of pod {SYNC_POD}: {n} objects × {} KiB ({total_mb:.1} MB) from a to b ==",
        args.object_kib
    );
    let state = migration_state(cb, key, SYNC_POD)?;
    if state.0 != "syncing" {
        bench.problem(format!(
            "pod {SYNC_POD} is {state:?} before the hold file was removed"
        ));
    }
    let cpu = CpuMeter::start(cb.pid());
    let t0 = Instant::now();
    std::fs::remove_file(hold).context("removing the hold file")?;
    // (seconds since the hold file was removed, status, progress)
    let mut samples: Vec<(f64, String, i64)> = Vec::new();
    let timeout = Duration::from_secs(300.max(n as u64 / 2));
    let mut failed_seen = false;
    let done_at = loop {
        let (st, p) = migration_state(cb, key, SYNC_POD)?;
        let t = t0.elapsed().as_secs_f64();
        if st == "failed" && !failed_seen {
            failed_seen = true;
            bench.problem(format!(
                "the sync of {SYNC_POD} reported failed at {t:.1} s (it is retried)"
            ));
        }
        let done = st == "done";
        samples.push((t, st, p));
        if done {
            break t;
        }
        if t0.elapsed() > timeout {
            bail!("the sync of {SYNC_POD} was not done within {timeout:?}: last {samples:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (cpu_s, busy) = cpu.stop();
    let first = samples
        .iter()
        .find(|(_, st, p)| st == "syncing" && *p >= 1)
        .cloned();
    let e2e_obj_s = n as f64 / done_at;
    let e2e_mbps = total_mb / done_at;
    println!(
        "     from removing the hold file to done: {done_at:.2} s → {e2e_mbps:.2} MB/s, {e2e_obj_s:.0} objects/s (includes up to 2 s until the job's next tick)"
    );
    let steady = first.as_ref().and_then(|(t1, _, p1)| {
        let done_objs = (*p1 as usize * n).div_ceil(100);
        let secs = done_at - t1;
        (secs > 0.0 && done_objs < n).then(|| {
            let objs = (n - done_objs) as f64;
            (*t1, *p1, objs / secs, objs * obj_bytes as f64 / MB / secs)
        })
    });
    match steady {
        Some((t1, p1, obj_s, mbps)) => println!(
            "     steady, from the first poll showing progress ({p1} % at {t1:.2} s) to done: {mbps:.2} MB/s, {obj_s:.0} objects/s"
        ),
        None => bench.problem(
            "no poll saw progress between 1 % and 99 %: no steady rate (too few objects, or too fast for 50 ms polls)"
                .into(),
        ),
    }
    // A few samples, spread over the run, where the progress changed.
    let changes: Vec<&(f64, String, i64)> = samples
        .iter()
        .enumerate()
        .filter(|(i, s)| *i == 0 || samples[i - 1].2 != s.2 || samples[i - 1].1 != s.1)
        .map(|(_, s)| s)
        .collect();
    let step = changes.len().div_ceil(10).max(1);
    let mut shown: Vec<&(f64, String, i64)> = changes.iter().step_by(step).copied().collect();
    if let Some(last) = changes.last() {
        if !shown.iter().any(|s| std::ptr::eq(*s, *last)) {
            shown.push(last);
        }
    }
    println!(
        "     progress: {}",
        shown
            .iter()
            .map(|(t, st, p)| format!("{t:.1} s {st} {p} %"))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    println!(
        "     center-2 CPU during the sync: {}; machine busy {}",
        cpu_s.map_or("n/a".into(), |s| format!("{s:.2} s")),
        busy.map_or("n/a".into(), |b| format!("{:.0} %", b * 100.0))
    );
    let in_b = s3b.list_keys(BUCKET_B, &format!("blobs/{SYNC_POD}/"));
    if in_b.len() != n {
        bench.problem(format!(
            "after the sync {BUCKET_B} holds {} blobs of {SYNC_POD}, expected {n}",
            in_b.len()
        ));
    }
    for k in sync_keys.iter().step_by((n / 3).max(1)).take(3) {
        if s3b.get_object(BUCKET_B, k) != s3a.get_object(BUCKET_A, k) {
            bench.problem(format!("{k} in {BUCKET_B} differs from {BUCKET_A}"));
        }
    }

    // The direct path: the same keys, one at a time, GET from a then create-only PUT into b.
    let cpu_direct = CpuMeter::start(std::process::id());
    let t = Instant::now();
    for k in sync_keys {
        let g = direct_a.request("GET", BUCKET_A, k, &[], None, Sink::Keep)?;
        if g.status != 200 || g.body.len() != obj_bytes {
            bail!(
                "direct copy: GET {BUCKET_A}/{k}: HTTP {}, {} bytes",
                g.status,
                g.body.len()
            );
        }
        let p = direct_b.request(
            "PUT",
            BUCKET_DIRECT,
            k,
            &[
                ("Content-Type", "application/octet-stream"),
                ("If-None-Match", "*"),
            ],
            Some(&g.body),
            Sink::Keep,
        )?;
        if p.status != 200 {
            bail!(
                "direct copy: PUT {BUCKET_DIRECT}/{k}: HTTP {} {}",
                p.status,
                p.text()
            );
        }
    }
    let direct_s = t.elapsed().as_secs_f64();
    let (_, direct_busy) = cpu_direct.stop();
    let direct_obj_s = n as f64 / direct_s;
    let direct_mbps = total_mb / direct_s;
    println!(
        "     direct copy by this program (GET from a, PUT into b, one at a time): {direct_s:.2} s → {direct_mbps:.2} MB/s, {direct_obj_s:.0} objects/s; machine busy {}",
        direct_busy.map_or("n/a".into(), |b| format!("{:.0} %", b * 100.0))
    );
    let direct_count = s3b.list_keys(BUCKET_DIRECT, "blobs/").len();
    if direct_count != n {
        bench.problem(format!(
            "the direct copy left {direct_count} objects in {BUCKET_DIRECT}, expected {n}"
        ));
    }
    println!(
        "     ratio sync / direct (rate): end to end {:.2}{}",
        e2e_obj_s / direct_obj_s,
        steady.map_or(String::new(), |(_, _, obj_s, _)| format!(
            ", steady {:.2}",
            obj_s / direct_obj_s
        ))
    );
    Ok(json!({
        "objects": n,
        "object_kib": args.object_kib,
        "total_mb": round3(total_mb),
        "end_to_end_s": round3(done_at),
        "end_to_end_mb_per_s": round(e2e_mbps),
        "end_to_end_objects_per_s": round(e2e_obj_s),
        "steady": steady.map(|(t1, p1, obj_s, mbps)| json!({
            "from_s": round3(t1),
            "from_progress": p1,
            "mb_per_s": round(mbps),
            "objects_per_s": round(obj_s),
        })),
        "progress_samples": shown.iter().map(|(t, st, p)| json!([round3(*t), st, p])).collect::<Vec<_>>(),
        "polls": samples.len(),
        "center2_cpu_s": cpu_s.map(round3),
        "machine_busy": busy.map(round3),
        "direct": {
            "s": round3(direct_s),
            "mb_per_s": round(direct_mbps),
            "objects_per_s": round(direct_obj_s),
            "machine_busy": direct_busy.map(round3),
        },
        "ratio_end_to_end": round3(e2e_obj_s / direct_obj_s),
        "ratio_steady": steady.map(|(_, _, obj_s, _)| round3(obj_s / direct_obj_s)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(amz_date(t), "20000229T000000Z");
    }

    #[test]
    fn signature_matches_botocore() {
        // botocore's S3SigV4Auth (payload unsigned) for the same request, credentials and date.
        let h = sigv4(
            "GET",
            "127.0.0.1:9000",
            "/xpod-a/blobs/reads/abc",
            "20261128T125857Z",
        );
        assert!(h[2].1.ends_with(
            "Signature=74e9ce9adc7094a4769df32b42cf36ce8291dc4858daad0260d8bbdc084a0513"
        ));
    }

    #[test]
    fn hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
