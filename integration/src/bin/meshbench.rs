//! Benchmark (a program, not a test): what the center mesh costs, against a real cluster.
//!
//! Why: any center answers for any pod by forwarding the request over the QUIC mesh to the pod's
//! owner. That hop must be cheap compared with asking the owner directly, and no worse than the
//! tool a user would otherwise put in front of a node (nginx `proxy_pass`); and when a pod moves,
//! every center must follow within milliseconds, not at the next periodic re-check.
//!
//! Setup: a throwaway PostgreSQL (or `XPOD_TEST_PG_URL`) and three centers `center-1..3` started
//! by [`xpod_integration::mesh::start_centers`] (one cluster CA, one PostgreSQL, one object
//! directory), used for everything. Pod `bench` (owned by center-1) holds a 100-byte
//! `small.txt`; pod `bench-mig` (starting on center-1) holds `x.txt`.
//!
//! What is compared:
//!
//! 1. Small GET throughput and latency with `wrk -t2 -c32 -d10s --latency` (after a 2 s
//!    warm-up run per target, discarded): (a) local: center-1 directly; (b) forwarded: center-2,
//!    which forwards center→center over the mesh to center-1; (c) nginx: `proxy_pass` to
//!    center-1 through an upstream with `keepalive 32` (nginx runs as a child process with its
//!    own prefix in a temp dir, `worker_processes 1`; installed with apt-get if missing, and the
//!    figure is skipped, loudly, if that fails). Ratios are forwarded/local and forwarded/nginx.
//!    For each run it also prints the CPU time per request (from `/proc/<pid>/stat`) of each
//!    center, of nginx, and of the rest of the machine (wrk, PostgreSQL, anything else running):
//!    on a 2-core machine the load generator and the database share the CPUs with the nodes, so
//!    CPU per request says more about the hop's cost than requests/s do.
//! 2. Migration propagation: 100 migrations of `bench-mig` alternating between center-1 and
//!    center-2, each requested from center-3 (so both the old and the new owner learn of it
//!    only through the change feed). Before each, one GET through every center warms its owner
//!    table. Every center is polled in a tight loop by its own threads (one for its owner table,
//!    `GET /.cluster/routes/bench-mig`; one for the data, `GET /bench-mig/x.txt`), from just
//!    before the migration request is sent. Reported, in ms from the moment the 202 was read,
//!    until the last center's first poll that saw the change had its answer: (a) every center's
//!    data GET is answered with `X-Xpod-Node: <new owner>`; (b) no center's table holds the old
//!    owner any more. Negative means before the 202 (the change feed can beat the response to
//!    the client). The resolution is one poll's round trip, printed alongside. The data GETs
//!    themselves repair a stale table (a center that forwards to the old owner and hears another
//!    node answer drops its entry), so (b) is the first of "change feed" and "repair by
//!    traffic"; a second pass of 100 migrations polls the tables only: (c) the change feed
//!    alone. Also counted: data polls answered other than 200, and data polls sent after the 202
//!    that the old owner still answered (there should be none).
//! 3. Resident memory (`VmRSS`, `VmHWM`) of each center after the runs.
//!
//! The HTTP client for setup, polling and migrations is a minimal blocking HTTP/1.1 client over
//! `std::net::TcpStream` (`Connection: close`, one request per connection): a `curl` process
//! per request costs ~5 ms, more than what is measured.
//!
//! ```text
//! cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin meshbench
//! XPOD_BIN=target/release/xpod target/release/meshbench
//! ```
//!
//! Prints plain lines, then one JSON line with every figure. Needs `wrk` on PATH, PostgreSQL
//! (`initdb`/`pg_ctl`) or `XPOD_TEST_PG_URL`, and nginx for the nginx figure. The machine's load
//! average is printed first: on a busy machine the throughput figures are not comparable.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};
use xpod_integration::edges::proc_kib;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{free_port, NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

const CENTERS: usize = 3;
const MIGRATIONS: usize = 100;
/// How long one migration may take to reach every center before it counts as timed out.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);
const WRK_ARGS: [&str; 3] = ["-t2", "-c32", "--latency"];
const WRK_SECONDS: u32 = 10;
const WRK_WARMUP_SECONDS: u32 = 2;

// ---------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client: one request per connection.

struct Resp {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
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
}

/// Sends one request with `Authorization: Bearer key` and `Connection: close`, reads the whole
/// response (`Content-Length`, chunked, or until close).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n"
    )
    .into_bytes();
    match body {
        Some((ctype, b)) => {
            req.extend_from_slice(
                format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            );
            req.extend_from_slice(b);
        }
        None => req.extend_from_slice(b"\r\n"),
    }
    s.write_all(&req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .with_context(|| format!("reading the answer to {method} {addr}{path}"))?;
    parse_response(&buf).with_context(|| format!("{method} {addr}{path}"))
}

fn parse_response(buf: &[u8]) -> anyhow::Result<Resp> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no complete response head ({} bytes)", buf.len()))?;
    let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(raw)?
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        raw.get(..n)
            .ok_or_else(|| anyhow!("body of {} bytes, Content-Length {n}", raw.len()))?
            .to_vec()
    } else {
        raw.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&raw[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = raw.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------------------------
// wrk

#[derive(Debug, Clone)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: String,
    /// CPU time per request (µs) of each process group, and of the rest of the machine.
    cpu_us_per_req: Vec<(String, f64)>,
    /// How busy the whole machine was during the run (0..1).
    machine_busy: f64,
}

impl WrkResult {
    fn to_json(&self) -> Value {
        let cpu: serde_json::Map<String, Value> = self
            .cpu_us_per_req
            .iter()
            .map(|(k, v)| (k.clone(), json!(round(*v))))
            .collect();
        json!({
            "rps": round(self.rps),
            "p50_ms": round3(self.p50_ms),
            "p99_ms": round3(self.p99_ms),
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "cpu_us_per_request": cpu,
            "machine_busy": round3(self.machine_busy),
        })
    }
}

/// A wrk duration (`812.00us`, `1.23ms`, `1.01s`, `1.50m`) in milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut requests = None;
    let mut non_2xx = 0;
    let mut socket_errors = String::new();
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, val)) = t.split_once(char::is_whitespace) {
                match pct {
                    "50%" => p50 = wrk_ms(val),
                    "99%" => p99 = wrk_ms(val),
                    "75%" | "90%" => {}
                    _ => in_dist = false,
                }
            } else {
                in_dist = false;
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(u64::MAX);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            socket_errors = v.trim().to_string();
        } else if t.contains(" requests in ") {
            requests = t.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    match (rps, p50, p99, requests) {
        (Some(rps), Some(p50_ms), Some(p99_ms), Some(requests)) => Ok(WrkResult {
            rps,
            p50_ms,
            p99_ms,
            requests,
            non_2xx,
            socket_errors,
            cpu_us_per_req: Vec::new(),
            machine_busy: 0.0,
        }),
        _ => bail!("could not parse wrk's output:\n{out}"),
    }
}

fn wrk(url: &str, key: &str, seconds: u32) -> anyhow::Result<WrkResult> {
    let out = Command::new("wrk")
        .args(WRK_ARGS)
        .arg(format!("-d{seconds}s"))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .arg(url)
        .output()
        .context("running wrk (is it installed? apt-get install -y wrk)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {url} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = parse_wrk(&stdout)?;
    if r.non_2xx > 0 {
        bail!(
            "wrk {url}: {} of {} responses were not 2xx/3xx: the figure would be meaningless\n{stdout}",
            r.non_2xx,
            r.requests
        );
    }
    Ok(r)
}

/// A warm-up run (discarded), then the measured run, with the CPU time each of `groups` (a
/// name and the pids, read when the run starts) spent on it.
fn wrk_measure(
    label: &str,
    url: &str,
    key: &str,
    groups: &[(String, Vec<u32>)],
) -> anyhow::Result<WrkResult> {
    wrk(url, key, WRK_WARMUP_SECONDS).with_context(|| format!("{label}: warm-up"))?;
    let ticks = |pids: &[u32]| pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>();
    let before: Vec<u64> = groups.iter().map(|(_, p)| ticks(p)).collect();
    let machine_before = machine_ticks();
    let mut r = wrk(url, key, WRK_SECONDS).with_context(|| label.to_string())?;
    let machine_after = machine_ticks();
    let used: Vec<u64> = groups
        .iter()
        .zip(&before)
        .map(|((_, p), b)| ticks(p).saturating_sub(*b))
        .collect();
    let us_per_req = |t: u64| t as f64 * 1e6 / clock_ticks_per_s() / r.requests.max(1) as f64;
    let mut cpu: Vec<(String, f64)> = groups
        .iter()
        .zip(&used)
        .map(|((name, _), t)| (name.clone(), us_per_req(*t)))
        .collect();
    if let (Some((busy0, total0)), Some((busy1, total1))) = (machine_before, machine_after) {
        let busy = busy1.saturating_sub(busy0);
        let rest = busy.saturating_sub(used.iter().sum());
        cpu.push(("rest".into(), us_per_req(rest)));
        r.machine_busy = busy as f64 / total1.saturating_sub(total0).max(1) as f64;
    }
    r.cpu_us_per_req = cpu;
    println!(
        "  {label:<10} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   ({} requests{})",
        r.rps,
        r.p50_ms,
        r.p99_ms,
        r.requests,
        if r.socket_errors.is_empty() {
            String::new()
        } else {
            format!(", socket errors: {}", r.socket_errors)
        }
    );
    println!(
        "  {:<10} CPU µs/request: {}; machine {:.0}% busy",
        "",
        r.cpu_us_per_req
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.machine_busy * 100.0
    );
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The parent pid of a process.
fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `pid` and its direct children.
fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        out.extend(
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| ppid(*p) == Some(pid)),
        );
    }
    out
}

/// (busy, total) clock ticks of all CPUs since boot, from the `cpu` line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// `getconf CLK_TCK` (100 on Linux unless told otherwise).
fn clock_ticks_per_s() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

// ---------------------------------------------------------------------------------------------
// nginx as a child process

/// nginx with its own prefix; stopped (SIGTERM to the master, then SIGKILL) on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its worker too; SIGKILL would orphan the worker.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx binary: on PATH or in /usr/sbin, else installed with apt-get (as root). `Err` says
/// why there is none.
fn find_or_install_nginx() -> Result<PathBuf, String> {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
        dirs.into_iter()
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    if !is_root() {
        return Err(
            "nginx is not installed and this is not root (apt-get install -y nginx)".into(),
        );
    }
    println!("nginx not found: apt-get install -y nginx …");
    let run = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let mut out = run(&["install", "-y", "nginx"]);
    if !matches!(&out, Ok(o) if o.status.success()) {
        let _ = run(&["update"]);
        out = run(&["install", "-y", "nginx"]);
    }
    match out {
        Ok(o) if o.status.success() => {
            find().ok_or_else(|| "apt-get installed nginx but no binary was found".into())
        }
        Ok(o) => Err(format!(
            "apt-get install -y nginx failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("running apt-get: {e}")),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn nginx_conf(dir: &Path, port: u16, upstream_port: u16) -> String {
    let d = dir.display();
    // As root the worker would switch to `nobody`; keep it as the user that owns the prefix.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream center1 {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://center1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
}}
"#
    )
}

/// Starts nginx in front of `upstream` and waits until a GET through it is answered by
/// center-1. Retries on another port if the free port was taken meanwhile.
fn start_nginx(
    bin: &Path,
    tmp: &TempDir,
    upstream: &NodeProcess,
    key: &str,
    path: &str,
) -> anyhow::Result<Nginx> {
    let dir = tmp.path().join("nginx");
    std::fs::create_dir_all(&dir)?;
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        std::fs::write(
            dir.join("nginx.conf"),
            nginx_conf(&dir, port, upstream.port()),
        )?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut nginx = Nginx {
            child,
            port,
            dir: dir.clone(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = nginx.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                last = format!(
                    "nginx exited with {status}: {err}{}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
                break;
            }
            if let Ok(r) = http(addr, "GET", path, key, None) {
                if r.status == 200 && r.header("x-xpod-node") == Some("center-1") {
                    return Ok(nginx);
                }
                last = format!("GET {path} through nginx: HTTP {}", r.status);
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not pass GET {path} to center-1 within 10 s ({last}); error.log:\n{}",
                    std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    bail!("nginx did not start: {last}")
}

// ---------------------------------------------------------------------------------------------
// The cluster

fn create_pod(c: &NodeProcess, key: &str, pod: &str) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&json!({ "podId": pod }))?;
    let r = http(
        c.addr(),
        "POST",
        "/.cluster/pods",
        key,
        Some(("application/json", &body)),
    )?;
    if r.status != 201 {
        bail!(
            "creating pod {pod}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

fn put(c: &NodeProcess, key: &str, path: &str, body: &[u8]) -> anyhow::Result<()> {
    let r = http(c.addr(), "PUT", path, key, Some(("text/plain", body)))?;
    if !matches!(r.status, 201 | 204) {
        bail!(
            "PUT {path}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

/// Waits until `GET path` through every center is answered 200 by `owner`.
fn wait_routed(
    centers: &[NodeProcess],
    key: &str,
    path: &str,
    owner: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut bad = None;
        for (i, c) in centers.iter().enumerate() {
            match http(c.addr(), "GET", path, key, None) {
                Ok(r) if r.status == 200 && r.header("x-xpod-node") == Some(owner) => {}
                Ok(r) => {
                    bad = Some(format!(
                        "center-{}: HTTP {} from {:?}",
                        i + 1,
                        r.status,
                        r.header("x-xpod-node")
                    ))
                }
                Err(e) => bad = Some(format!("center-{}: {e:#}", i + 1)),
            }
        }
        let Some(bad) = bad else { return Ok(()) };
        if Instant::now() > deadline {
            bail!(
                "GET {path} is not served by {owner} through every center within {within:?}: {bad}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The owner in a center's table for `pod` (`None`: not cached).
fn table_owner(addr: SocketAddr, key: &str, pod: &str) -> anyhow::Result<Option<String>> {
    let r = http(addr, "GET", &format!("/.cluster/routes/{pod}"), key, None)?;
    if r.status != 200 {
        bail!(
            "GET /.cluster/routes/{pod}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(r.json()?["owner"].as_str().map(str::to_string))
}

// ---------------------------------------------------------------------------------------------
// Migrations

const MIG_POD: &str = "bench-mig";
const MIG_PATH: &str = "/bench-mig/x.txt";

/// One migration's figures, in ms relative to the moment the 202 was read: negative when a
/// center had switched before the client had its answer.
struct MigrationTimes {
    call_ms: f64,
    /// Every center's data GET answered by the new owner (`None` in the feed-only pass).
    served_ms: Option<f64>,
    /// No center's table holds the old owner.
    tables_ms: f64,
    /// How long each poll request took (ms): the resolution of the figures.
    table_poll_ms: Vec<f64>,
    data_poll_ms: Vec<f64>,
    /// Statuses other than 200 the data polls got.
    non_200: Vec<u16>,
    /// Data polls sent after the 202 that the old owner still answered with 200.
    stale_after_202: usize,
}

/// What one poller saw: when the first poll that saw the change answered (`None`: not within
/// the timeout), and how long each poll took.
struct Seen {
    at: Option<Instant>,
    poll_ms: Vec<f64>,
}

/// Polls `check` until it says yes, `stop` is set or [`PROPAGATION_TIMEOUT`] passes.
fn poll_until(
    stop: &AtomicBool,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Seen> {
    let started = Instant::now();
    let mut seen = Seen {
        at: None,
        poll_ms: Vec::new(),
    };
    while started.elapsed() < PROPAGATION_TIMEOUT && !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let yes = check()?;
        let now = Instant::now();
        seen.poll_ms.push(ms(now - t));
        if yes {
            seen.at = Some(now);
            break;
        }
    }
    Ok(seen)
}

/// Migrates `bench-mig` from `old` to `new` through `via` while every center is polled, each
/// question (owner table; data GET, unless `data_gets` is false) in its own thread, from just
/// before the request until the change has reached all of them. `Ok(Err(_))` is a migration
/// that did not reach every center within [`PROPAGATION_TIMEOUT`].
fn migrate_and_poll(
    centers: &[NodeProcess],
    via: &NodeProcess,
    key: &str,
    old: &str,
    new: &str,
    data_gets: bool,
) -> anyhow::Result<Result<MigrationTimes, String>> {
    let body = serde_json::to_vec(&json!({ "targetNode": new }))?;
    let stop = AtomicBool::new(false);
    let sent = OnceLock::new();
    let (call, tables, served) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let (stop, sent) = (&stop, &sent);
        let table_threads: Vec<_> = centers
            .iter()
            .map(|c| {
                let addr = c.addr();
                scope.spawn(move || {
                    poll_until(stop, || {
                        let asked = Instant::now();
                        let owner = table_owner(addr, key, MIG_POD)?;
                        // An empty entry counts only once the migration was asked for (the
                        // periodic re-check may empty a table at any time).
                        Ok(match owner.as_deref() {
                            Some(o) => o != old,
                            None => sent.get().is_some_and(|s| asked >= *s),
                        })
                    })
                })
            })
            .collect();
        let data_threads: Vec<_> = centers
            .iter()
            .filter(|_| data_gets)
            .map(|c| {
                let addr = c.addr();
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    let seen = poll_until(stop, || {
                        let asked = Instant::now();
                        let r = http(addr, "GET", MIG_PATH, key, None)?;
                        let node = r.header("x-xpod-node").unwrap_or_default().to_string();
                        let yes = r.status == 200 && node == new;
                        answers.push((asked, r.status, node));
                        Ok(yes)
                    })?;
                    Ok((seen, answers))
                })
            })
            .collect();
        let started = *sent.get_or_init(Instant::now);
        let call = http(
            via.addr(),
            "POST",
            &format!("/.cluster/pods/{MIG_POD}/migrate"),
            key,
            Some(("application/json", &body)),
        )
        .and_then(|r| {
            let t0 = Instant::now();
            if r.status != 202 {
                bail!(
                    "migrating {MIG_POD} to {new}: HTTP {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            if r.json()?["nodeId"] != new {
                bail!("migrating {MIG_POD} to {new}: the answer names another node");
            }
            Ok((started, t0))
        });
        if call.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let (tables, served) = (join_all(table_threads), join_all(data_threads));
        Ok((call?, tables?, served?))
    })?;
    let (started, t0) = call;
    let (served, answers): (Vec<Seen>, Vec<Vec<Answer>>) = served.into_iter().unzip();
    let answers: Vec<&Answer> = answers.iter().flatten().collect();
    let non_200: Vec<u16> = answers.iter().filter(|a| a.1 != 200).map(|a| a.1).collect();
    let stale_after_202 = answers
        .iter()
        .filter(|a| a.0 >= t0 && a.1 == 200 && a.2 == old)
        .count();
    let late: Vec<String> = tables
        .iter()
        .enumerate()
        .filter(|(_, s)| s.at.is_none())
        .map(|(i, _)| format!("center-{} still holds {old} in its table", i + 1))
        .chain(
            served
                .iter()
                .enumerate()
                .filter(|(_, s)| s.at.is_none())
                .map(|(i, _)| format!("center-{} is not served by {new}", i + 1)),
        )
        .collect();
    if !late.is_empty() {
        return Ok(Err(format!(
            "{old} → {new}: after {PROPAGATION_TIMEOUT:?}: {}",
            late.join(", ")
        )));
    }
    // Signed: ms after the 202 (negative: before it).
    let since_202 = |at: Instant| {
        if at >= t0 {
            ms(at - t0)
        } else {
            -ms(t0 - at)
        }
    };
    let last = |v: &[Seen]| {
        v.iter()
            .flat_map(|s| s.at)
            .map(since_202)
            .fold(f64::MIN, f64::max)
    };
    Ok(Ok(MigrationTimes {
        call_ms: ms(t0 - started),
        served_ms: data_gets.then(|| last(&served)),
        tables_ms: last(&tables),
        table_poll_ms: tables.iter().flat_map(|s| s.poll_ms.clone()).collect(),
        data_poll_ms: served.iter().flat_map(|s| s.poll_ms.clone()).collect(),
        non_200,
        stale_after_202,
    }))
}

/// A data poll: when it was sent, the status, and `X-Xpod-Node`.
type Answer = (Instant, u16, String);

fn join_all<T>(
    v: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>,
) -> anyhow::Result<Vec<T>> {
    v.into_iter()
        .map(|h| h.join().map_err(|_| anyhow!("a poller panicked"))?)
        .collect()
}

struct MigrationPass {
    times: Vec<MigrationTimes>,
    timeouts: Vec<String>,
    /// Warm-ups after which some center's table did not hold the current owner.
    warm_misses: usize,
}

fn migration_pass(
    centers: &[NodeProcess],
    key: &str,
    owner: &mut String,
    data_gets: bool,
) -> anyhow::Result<MigrationPass> {
    let via = &centers[2];
    let mut pass = MigrationPass {
        times: Vec::new(),
        timeouts: Vec::new(),
        warm_misses: 0,
    };
    for _ in 0..MIGRATIONS {
        let old = owner.clone();
        let new = if old == "center-1" {
            "center-2"
        } else {
            "center-1"
        };
        // Warm every center's table: one GET through it, answered by the owner.
        let mut warm = true;
        for (i, c) in centers.iter().enumerate() {
            let r = http(c.addr(), "GET", MIG_PATH, key, None)?;
            if r.status != 200 || r.header("x-xpod-node") != Some(old.as_str()) {
                bail!(
                    "warm-up GET through center-{}: HTTP {} from {:?}, expected 200 from {old}",
                    i + 1,
                    r.status,
                    r.header("x-xpod-node")
                );
            }
            warm &= table_owner(c.addr(), key, MIG_POD)?.as_deref() == Some(old.as_str());
        }
        if !warm {
            pass.warm_misses += 1;
        }
        match migrate_and_poll(centers, via, key, &old, new, data_gets)? {
            Ok(t) => pass.times.push(t),
            Err(msg) => {
                println!("  !! {msg}");
                pass.timeouts.push(msg);
                // Let the straggler catch up before the next warm-up.
                wait_routed(centers, key, MIG_PATH, new, Duration::from_secs(70))?;
            }
        }
        *owner = new.to_string();
    }
    Ok(pass)
}

// ---------------------------------------------------------------------------------------------
// Figures

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    /// Nearest-rank percentiles.
    fn of(mut v: Vec<f64>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            p50: rank(0.50),
            p99: rank(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
    fn to_json(s: Option<Stats>) -> Value {
        match s {
            Some(s) => json!({
                "p50_ms": round3(s.p50),
                "p99_ms": round3(s.p99),
                "max_ms": round3(s.max),
                "mean_ms": round3(s.mean),
            }),
            None => Value::Null,
        }
    }
    fn line(label: &str, s: Option<Stats>) -> String {
        match s {
            Some(s) => format!(
                "  {label:<44} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   mean {:>7.2} ms",
                s.p50, s.p99, s.max, s.mean
            ),
            None => format!("  {label:<44} no samples"),
        }
    }
}

/// Prints a migration pass's figures and returns them as JSON.
fn report_pass(pass: &MigrationPass, data_gets: bool) -> Value {
    let of = |f: &dyn Fn(&MigrationTimes) -> Option<f64>| {
        Stats::of(pass.times.iter().filter_map(f).collect())
    };
    let call = of(&|t| Some(t.call_ms));
    let served = of(&|t| t.served_ms);
    let tables = of(&|t| Some(t.tables_ms));
    let all_polls = |f: &dyn Fn(&MigrationTimes) -> &Vec<f64>| {
        Stats::of(
            pass.times
                .iter()
                .flat_map(|t| f(t).iter().copied())
                .collect(),
        )
    };
    let table_poll = all_polls(&|t| &t.table_poll_ms);
    let data_poll = all_polls(&|t| &t.data_poll_ms);
    let before = |f: &dyn Fn(&MigrationTimes) -> Option<f64>| {
        pass.times
            .iter()
            .filter(|t| f(t).is_some_and(|v| v < 0.0))
            .count()
    };
    let served_before = before(&|t| t.served_ms);
    let tables_before = before(&|t| Some(t.tables_ms));
    println!("{}", Stats::line("migrate call (POST → 202)", call));
    if data_gets {
        println!(
            "{}",
            Stats::line("(a) 202 → every center served by new owner", served)
        );
        println!(
            "{}",
            Stats::line("(b) 202 → no table holds the old owner", tables)
        );
    } else {
        println!(
            "{}",
            Stats::line("(c) 202 → no table holds the old owner", tables)
        );
    }
    println!(
        "{}",
        Stats::line("one poll: GET /.cluster/routes/…", table_poll)
    );
    if data_gets {
        println!(
            "{}",
            Stats::line("one poll: GET /bench-mig/x.txt", data_poll)
        );
    }
    let n = pass.times.len();
    if data_gets {
        println!(
            "  every center already there when the 202 arrived: served {served_before} of {n}, tables {tables_before} of {n}"
        );
    } else {
        println!(
            "  every center already there when the 202 arrived: tables {tables_before} of {n}"
        );
    }
    let mut non_200 = std::collections::BTreeMap::<u16, usize>::new();
    for st in pass.times.iter().flat_map(|t| &t.non_200) {
        *non_200.entry(*st).or_default() += 1;
    }
    let stale: usize = pass.times.iter().map(|t| t.stale_after_202).sum();
    if data_gets {
        println!(
            "  data polls answered other than 200: {}; sent after the 202 and still answered 200 by the old owner: {stale}",
            if non_200.is_empty() {
                "none".to_string()
            } else {
                format!("{non_200:?} (status: count)")
            }
        );
    }
    println!(
        "  timeouts: {}; warm-ups leaving a table cold: {}",
        pass.timeouts.len(),
        pass.warm_misses
    );
    json!({
        "measured": pass.times.len(),
        "timeouts": pass.timeouts,
        "warm_misses": pass.warm_misses,
        "call": Stats::to_json(call),
        "all_served_by_new_owner": Stats::to_json(served),
        "no_table_holds_old_owner": Stats::to_json(tables),
        "poll_routes": Stats::to_json(table_poll),
        "poll_data": Stats::to_json(data_poll),
        "all_served_before_202": data_gets.then_some(served_before),
        "all_tables_before_202": tables_before,
        "data_polls_not_200": non_200.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "data_polls_after_202_served_by_old_owner": stale,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("meshbench   (no arguments; set XPOD_BIN to choose the xpod binary, XPOD_TEST_PG_URL to use an existing PostgreSQL)");
        return Ok(());
    }
    let load_start = loadavg();
    println!(
        "load average at start: {load_start} ({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pg = PgServer::start()?;
    let tmp = TempDir::new("xpod-meshbench");
    let started = Instant::now();
    let centers = start_centers(&tmp, &pg, CENTERS, |_| Vec::new());
    let bin = centers[0].bin().display().to_string();
    let profile = if bin.contains("/release/") {
        "release"
    } else if bin.contains("/debug/") {
        "debug (figures are not representative)"
    } else {
        "unknown"
    };
    println!("binary: {bin} [{profile}]");
    println!(
        "cluster: {CENTERS} centers on one PostgreSQL, up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        centers
            .iter()
            .enumerate()
            .map(|(i, c)| format!("center-{} {}", i + 1, c.url()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let key = centers[0].admin_key();

    create_pod(&centers[0], &key, "bench")?;
    create_pod(&centers[0], &key, MIG_POD)?;
    let small = {
        let mut b = b"meshbench: a small resource, one hundred bytes exactly, served by its owner center-1. ".to_vec();
        b.resize(100, b'.');
        b
    };
    put(&centers[0], &key, "/bench/small.txt", &small)?;
    put(&centers[0], &key, MIG_PATH, b"x")?;
    let started = Instant::now();
    wait_routed(
        &centers,
        &key,
        "/bench/small.txt",
        "center-1",
        Duration::from_secs(30),
    )?;
    wait_routed(
        &centers,
        &key,
        MIG_PATH,
        "center-1",
        Duration::from_secs(30),
    )?;
    println!(
        "mesh: every center reaches both pods ({:.1} s after the pods were written)",
        started.elapsed().as_secs_f64()
    );
    let r = http(centers[1].addr(), "GET", "/bench/small.txt", &key, None)?;
    if r.body != small {
        bail!("GET /bench/small.txt through center-2 returned other bytes");
    }

    // 1. Small GETs.
    println!(
        "\n1. GET /bench/small.txt ({} bytes, pod on center-1): wrk {} -d{WRK_SECONDS}s, after a {WRK_WARMUP_SECONDS} s warm-up",
        small.len(),
        WRK_ARGS.join(" ")
    );
    let groups: Vec<(String, Vec<u32>)> = centers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("center-{}", i + 1), vec![c.pid()]))
        .collect();
    let local = wrk_measure(
        "local",
        &format!("{}/bench/small.txt", centers[0].url()),
        &key,
        &groups,
    )?;
    let forwarded = wrk_measure(
        "forwarded",
        &format!("{}/bench/small.txt", centers[1].url()),
        &key,
        &groups,
    )?;
    let (nginx, nginx_skipped) = match find_or_install_nginx() {
        Ok(nginx_bin) => {
            let proxy = start_nginx(&nginx_bin, &tmp, &centers[0], &key, "/bench/small.txt")
                .context("starting nginx")?;
            let mut with_nginx = groups.clone();
            with_nginx.push(("nginx".into(), with_children(proxy.child.id())));
            let r = wrk_measure(
                "nginx",
                &format!("http://127.0.0.1:{}/bench/small.txt", proxy.port),
                &key,
                &with_nginx,
            )?;
            drop(proxy);
            (Some(r), None)
        }
        Err(why) => {
            println!("  !!!!!!!! nginx figure SKIPPED: {why} !!!!!!!!");
            (None, Some(why))
        }
    };
    println!(
        "  forwarded/local: throughput {:.2}, p50 {:.2}, p99 {:.2}",
        forwarded.rps / local.rps,
        forwarded.p50_ms / local.p50_ms,
        forwarded.p99_ms / local.p99_ms
    );
    if let Some(n) = &nginx {
        println!(
            "  forwarded/nginx: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            forwarded.rps / n.rps,
            forwarded.p50_ms / n.p50_ms,
            forwarded.p99_ms / n.p99_ms
        );
        println!(
            "  nginx/local:     throughput {:.2}, p50 {:.2}, p99 {:.2}",
            n.rps / local.rps,
            n.p50_ms / local.p50_ms,
            n.p99_ms / local.p99_ms
        );
    }

    // 2. Migrations.
    println!(
        "\n2. {MIGRATIONS} migrations of {MIG_POD} alternating center-1 ↔ center-2, each requested from center-3;\n   every center polled from its own threads, from just before the POST; figures are ms from the\n   202 until the last center's first poll that saw the change answered (negative: before the 202)"
    );
    let mut owner = "center-1".to_string();
    let pass = migration_pass(&centers, &key, &mut owner, true)?;
    let pass_json = report_pass(&pass, true);
    println!(
        "   {MIGRATIONS} more, polling the owner tables only (no data GETs: the change feed alone)"
    );
    let feed = migration_pass(&centers, &key, &mut owner, false)?;
    let feed_json = report_pass(&feed, false);
    // 3. Memory.
    println!("\n3. resident memory after the runs");
    let mut mem = serde_json::Map::new();
    for (i, c) in centers.iter().enumerate() {
        let id = format!("center-{}", i + 1);
        let rss = proc_kib(c.pid(), "VmRSS").context("reading VmRSS")?;
        let hwm = proc_kib(c.pid(), "VmHWM").context("reading VmHWM")?;
        println!(
            "  {id}: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        mem.insert(id, json!({ "vm_rss_kib": rss, "vm_hwm_kib": hwm }));
    }
    let load_end = loadavg();
    println!("load average at the end: {load_end}");

    let json = json!({
        "bench": "meshbench",
        "binary": bin,
        "centers": CENTERS,
        "load_avg_start": load_start,
        "load_avg_end": load_end,
        "small_get": {
            "bytes": small.len(),
            "wrk": format!("{} -d{WRK_SECONDS}s", WRK_ARGS.join(" ")),
            "local": local.to_json(),
            "forwarded": forwarded.to_json(),
            "nginx": nginx.as_ref().map(WrkResult::to_json),
            "nginx_skipped": nginx_skipped,
            "forwarded_over_local_rps": round3(forwarded.rps / local.rps),
            "forwarded_over_local_p50": round3(forwarded.p50_ms / local.p50_ms),
            "forwarded_over_local_p99": round3(forwarded.p99_ms / local.p99_ms),
            "forwarded_over_nginx_rps": nginx.as_ref().map(|n| round3(forwarded.rps / n.rps)),
            "forwarded_over_nginx_p50": nginx.as_ref().map(|n| round3(forwarded.p50_ms / n.p50_ms)),
            "forwarded_over_nginx_p99": nginx.as_ref().map(|n| round3(forwarded.p99_ms / n.p99_ms)),
        },
        "migration": {
            "count": MIGRATIONS,
            "requested_from": "center-3",
            "with_data_gets": pass_json,
            "feed_only": feed_json,
        },
        "memory": mem,
    });
    println!("{json}");
    Ok(())
}
