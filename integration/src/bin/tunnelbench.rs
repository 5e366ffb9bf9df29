//! Benchmark (a program, not a test): xpod's edge tunnels against a direct connection and
//! against rathole, on this machine, in one run.
//!
//! Why: an edge tunnel is only worth using if it costs little — throughput close to the direct
//! path, latency that does not explode under concurrency, a few MiB per process, and a center
//! that can hold many idle edges cheaply. rathole (a popular Rust reverse tunnel) is the yardstick.
//!
//! How (everything on 127.0.0.1, one run):
//! 1. **Throughput**: `iperf3 -c … -t 10 -J` (single stream), both directions (`-R` too),
//!    reading `end.sum_received.bits_per_second`, against one `iperf3 -s`: direct; through an
//!    xpod TCP forward (client → center's `[[tunnel.forwards]]` port → QUIC tunnel → edge →
//!    iperf3, the edge publishing it as a `kind = "tcp"` service); through rathole with its plain
//!    TCP transport; through rathole with its Noise transport; and `xpod_tcp`: the same through a
//!    second edge whose tunnel uses the TCP transport (`tunnel.transport = "tcp"`: QUIC over TLS
//!    on TCP). Ratios are path / direct.
//! 2. **HTTP**: `wrk -t2 -c32 -d10s --latency` (requests/s, p50, p99) against one small
//!    keep-alive HTTP/1.1 backend (hyper, in this process on its own tokio runtime, a ~100-byte
//!    body): direct; through the center's HTTP port with `Host: web.edge-1.edges.test` (the
//!    edge's `web` service) and `web.edge-tcp.edges.test` (the TCP-transport edge); through
//!    rathole (TCP transport).
//! 3. **Memory**: VmRSS of the xpod center and edge and of the rathole servers and clients after
//!    setup (idle), their peak VmRSS sampled every 100 ms during the iperf3/wrk runs that go
//!    through them, and VmHWM at the end. Also the CPU time (utime + stime) each spent per run.
//! 4. **1,000 idle edges**: a fresh center (its own CA); VmRSS before, then 1,000 simulated edges
//!    connect and register and stay connected (10 s by default), VmRSS after: MiB total and KiB
//!    per edge; the center's CPU while they are idle, counted from half the hold (at most 30 s)
//!    after they registered, past their first heartbeats. The edges are simulated in this
//!    process with the tunnel crate's own pieces, as the real edge uses them
//!    (`edge_client_config` = mutual TLS + the tunnel's transport settings and keep-alive, a
//!    client `Session` with `Register`, the control-stream `driver`, and an answer to the
//!    center's `POST /node/centers`), each with its own node certificate issued from the
//!    center's `ca.key`; they share one quinn client endpoint (one UDP socket, so no
//!    open-files limit matters; the center's side of each connection is the same as for a real
//!    edge). Registration is checked in `GET /.cluster/nodes` (online edges counted).
//!
//! ```text
//! cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin tunnelbench
//! XPOD_BIN=target/release/xpod RATHOLE_BIN=/path/to/rathole target/release/tunnelbench
//! ```
//!
//! Options: `--seconds N` (each iperf3/wrk run, default 10), `--connections N` (wrk's `-c`,
//! default 32), `--edges N` (default 1000),
//! `--hold N` (seconds the simulated edges stay connected before the measurement, default 10),
//! `--skip-iperf` (only the HTTP, memory and idle-edges parts).
//! Needs `iperf3`, `wrk` and `rathole` (`$RATHOLE_BIN`, else on PATH) and `curl`; a missing
//! tool skips the figures that need it (printed loudly) and the rest still runs. Every helper
//! process is killed when the program ends, also on error. Prints plain lines, then one JSON
//! line with every figure.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::edges::{proc_kib, start_center, start_edge, wait_online};
use xpod_integration::node::{free_port, NodeProcess, TempDir};
use xpod_tunnel::identity::{ClusterCa, NodeIdentity, NodeRole};
use xpod_tunnel::proto::{ClientConfig, Event, Register, Role, Service, ServiceKind, Session};

const EDGE: &str = "edge-1";
const EDGE_HOST: &str = "web.edge-1.edges.test";
/// The same edge's twin on the TCP transport (`tunnel.transport = "tcp"`).
const EDGE_TCP: &str = "edge-tcp";
const EDGE_TCP_HOST: &str = "web.edge-tcp.edges.test";
/// The backend's answer: exactly 100 bytes.
const BODY: &[u8] =
    b"tunnelbench backend: hello from the small keep-alive HTTP/1.1 server, 100 bytes of body text.......\n";
const MARKER: &str = "tunnelbench backend";

// ---------------------------------------------------------------------------------------------
// Helper processes

/// A helper process, killed (and reaped) when dropped — also when the program fails or panics.
struct Killed {
    name: String,
    child: Child,
}

impl Killed {
    fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> anyhow::Result<Killed> {
        let out = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Killed {
            name: name.to_string(),
            child,
        })
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Fails (with the log) if the process already exited.
    fn check_running(&mut self, log_dir: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(log_dir.join(format!("{}.log", self.name)))
                .unwrap_or_default();
            bail!("{} exited with {status}:\n{log}", self.name);
        }
        Ok(())
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `program` can be run at all (spawned; its exit status does not matter).
fn runnable(program: &Path, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Waits (up to 10 s) until something accepts on `addr`.
fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One `GET /` over a fresh connection with `Host: host`: `(status, body)`.
fn http_get(addr: SocketAddr, host: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// Retries `GET /` through `addr` (up to 20 s) until the backend answers.
fn wait_backend_through(addr: SocketAddr, host: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http_get(addr, host);
        if let Some((200, body)) = &got {
            if body.contains(MARKER) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the backend does not answer through {what} ({addr}, Host {host}): last answer {got:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP backend

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

/// The backend on its own 2-thread tokio runtime (dropping the runtime stops it).
fn start_backend() -> anyhow::Result<(tokio::runtime::Runtime, SocketAddr)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("backend")
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("backend listener");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(hello))
                    .await;
            });
        }
    });
    Ok((rt, addr))
}

// ---------------------------------------------------------------------------------------------
// Memory and CPU of processes

/// Samples VmRSS of `pids` every 100 ms, keeping each one's peak, until finished.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (peak, &pid) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(proc_kib(pid, "VmRSS").unwrap_or(0));
                }
                if s.load(Ordering::Relaxed) {
                    return peaks;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { stop, handle }
    }
    /// Peak VmRSS (KiB) of each pid, in order.
    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// CPU time (user + system) a process has used, in seconds (clock ticks at 100 Hz).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A process whose memory is reported.
#[derive(Clone)]
struct Watched {
    name: &'static str,
    pid: u32,
}

/// Per process: idle VmRSS, peak VmRSS under load (over every run through it), VmHWM.
#[derive(Default)]
struct MemBook {
    idle: BTreeMap<&'static str, u64>,
    peak: BTreeMap<&'static str, u64>,
    pids: BTreeMap<&'static str, u32>,
}

impl MemBook {
    fn idle(&mut self, w: &[Watched]) {
        for p in w {
            self.idle
                .insert(p.name, proc_kib(p.pid, "VmRSS").unwrap_or(0));
            self.pids.insert(p.name, p.pid);
        }
    }
    fn peaks(&mut self, w: &[Watched], peaks: &[u64]) {
        for (p, &k) in w.iter().zip(peaks) {
            let e = self.peak.entry(p.name).or_default();
            *e = (*e).max(k);
        }
    }
}

/// Runs `f` while sampling `watched`: its result, per-process peak VmRSS (KiB) and CPU seconds.
fn under_load<T>(
    watched: &[Watched],
    book: &mut MemBook,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> (anyhow::Result<T>, Value) {
    let cpu0: Vec<f64> = watched
        .iter()
        .map(|w| cpu_secs(w.pid).unwrap_or(0.0))
        .collect();
    let sampler = Sampler::start(watched.iter().map(|w| w.pid).collect());
    let r = f();
    let peaks = sampler.finish();
    book.peaks(watched, &peaks);
    let mut procs = serde_json::Map::new();
    for ((w, peak), c0) in watched.iter().zip(&peaks).zip(&cpu0) {
        let cpu = cpu_secs(w.pid).unwrap_or(0.0) - c0;
        procs.insert(
            w.name.to_string(),
            json!({"rss_peak_kib": peak, "cpu_s": round(cpu)}),
        );
    }
    (r, Value::Object(procs))
}

/// `xpod-center 7.80, xpod-edge 7.18` from a load record of [`under_load`].
fn cpu_note(load: &Value) -> String {
    load.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {:.2}", v["cpu_s"].as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// iperf3 and wrk

/// One single-stream iperf3 run to 127.0.0.1:`port`: bits/s received.
fn iperf3(port: u16, secs: u64, reverse: bool) -> anyhow::Result<f64> {
    let mut last = String::new();
    // The server runs one test at a time and a tunnel may still be settling: retry a little.
    for _ in 0..4 {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-c", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "5000"]);
        if reverse {
            cmd.arg("-R");
        }
        let out = cmd.output().context("running iperf3")?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            if bps > 0.0 && v.get("error").is_none() {
                return Ok(bps);
            }
        }
        last = v["error"].as_str().map(str::to_string).unwrap_or_else(|| {
            format!(
                "exit {}, stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("iperf3 to port {port}: {last}")
}

#[derive(Debug, Clone)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: String,
}

/// `283.00us` / `1.23ms` / `2.00s` → milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    for (unit, factor) in [
        ("us", 0.001),
        ("ms", 1.0),
        ("s", 1000.0),
        ("m", 60_000.0),
        ("h", 3_600_000.0),
    ] {
        if let Some(n) = s.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|v| v * factor);
        }
    }
    None
}

fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: String::new(),
    };
    let mut in_dist = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("50%"), Some(v)) => w.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
                (Some("99%"), Some(v)) => w.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
                (Some(p), Some(_)) if p.ends_with('%') => {}
                _ => in_dist = false,
            }
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            w.socket_errors = v.trim().to_string();
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            w.requests = n.trim().parse().unwrap_or(0);
        }
    }
    if w.rps.is_nan() || w.p50_ms.is_nan() || w.p99_ms.is_nan() {
        bail!("could not read wrk's output:\n{out}");
    }
    Ok(w)
}

/// `wrk -t2 -c<conns> -d<secs>s --latency` against `http://addr/` with an optional Host header.
fn wrk(addr: SocketAddr, host: Option<&str>, conns: u32, secs: u64) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if let Some(h) = host {
        cmd.arg("-H").arg(format!("Host: {h}"));
    }
    let out = cmd
        .arg(format!("http://{addr}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text)
}

// ---------------------------------------------------------------------------------------------
// rathole

/// A rathole server and client: `ports[service]` is the server's public port for it.
struct Rathole {
    server: Killed,
    client: Killed,
    ports: BTreeMap<&'static str, u16>,
}

/// `rathole --genkey` → (private, public), base64.
fn rathole_keys(bin: &Path) -> anyhow::Result<(String, String)> {
    let out = Command::new(bin)
        .arg("--genkey")
        .output()
        .context("rathole --genkey")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut private = None;
    let mut public = None;
    while let Some(l) = lines.next() {
        if l.starts_with("Private Key") {
            private = lines.next().map(str::to_string);
        } else if l.starts_with("Public Key") {
            public = lines.next().map(str::to_string);
        }
    }
    match (private, public) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("unexpected `rathole --genkey` output:\n{text}"),
    }
}

fn start_rathole(
    bin: &Path,
    dir: &Path,
    label: &'static str,
    noise: bool,
    services: &[(&'static str, SocketAddr)],
) -> anyhow::Result<Rathole> {
    let control = free_port();
    let (mut server, mut client) = (
        format!("[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n"),
        format!("[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n"),
    );
    if noise {
        let (private, public) = rathole_keys(bin)?;
        server += &format!(
            "[server.transport]\ntype = \"noise\"\n\n[server.transport.noise]\nlocal_private_key = \"{private}\"\n\n"
        );
        client += &format!(
            "[client.transport]\ntype = \"noise\"\n\n[client.transport.noise]\nremote_public_key = \"{public}\"\n\n"
        );
    }
    let mut ports = BTreeMap::new();
    for (name, local) in services {
        let port = free_port();
        ports.insert(*name, port);
        server += &format!(
            "[server.services.{name}]\ntoken = \"bench-{name}\"\nbind_addr = \"127.0.0.1:{port}\"\n\n"
        );
        client += &format!(
            "[client.services.{name}]\ntoken = \"bench-{name}\"\nlocal_addr = \"{local}\"\n\n"
        );
    }
    let (sfile, cfile) = (
        dir.join(format!("rathole-server-{label}.toml")),
        dir.join(format!("rathole-client-{label}.toml")),
    );
    std::fs::write(&sfile, server)?;
    std::fs::write(&cfile, client)?;
    let mut server = Killed::spawn(
        &format!("rathole-server-{label}"),
        Command::new(bin).arg("--server").arg(&sfile),
        dir,
    )?;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], control)))
        .and_then(|_| server.check_running(dir))
        .with_context(|| format!("rathole server ({label})"))?;
    let mut client = Killed::spawn(
        &format!("rathole-client-{label}"),
        Command::new(bin).arg("--client").arg(&cfile),
        dir,
    )?;
    std::thread::sleep(Duration::from_millis(200));
    client
        .check_running(dir)
        .with_context(|| format!("rathole client ({label})"))?;
    Ok(Rathole {
        server,
        client,
        ports,
    })
}

// ---------------------------------------------------------------------------------------------
// 1,000 simulated edges

/// What the simulated edges saw.
struct SimOutcome {
    connected: usize,
    registered: usize,
    connect_failures: Vec<String>,
    closed: usize,
    last_close: Option<String>,
    connect_secs: f64,
}

/// `n` simulated edges `sim-0000…` connect to the center at `addr` (one shared quinn endpoint,
/// at most 64 handshakes at once) and register; `while_up` runs once all registered (or after
/// 60 s), then they say goodbye.
async fn simulate_edges(
    addr: SocketAddr,
    ids: Vec<(String, NodeIdentity)>,
    while_up: impl FnOnce() -> anyhow::Result<Value> + Send + 'static,
) -> anyhow::Result<(SimOutcome, Value)> {
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into())
        .context("binding the simulated edges' UDP socket")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Event)>(4096);
    let registered = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let last_close = Arc::new(Mutex::new(None::<String>));
    let drain = {
        let (registered, closed, last_close) =
            (registered.clone(), closed.clone(), last_close.clone());
        tokio::spawn(async move {
            while let Some((_, ev)) = rx.recv().await {
                match ev {
                    Event::Registered(_) => {
                        registered.fetch_add(1, Ordering::SeqCst);
                    }
                    Event::Refused(r) => {
                        *last_close.lock().unwrap() = Some(format!("refused: {}", r.reason));
                    }
                    Event::Closed { reason } => {
                        closed.fetch_add(1, Ordering::SeqCst);
                        *last_close.lock().unwrap() = Some(reason);
                    }
                    _ => {}
                }
            }
        })
    };
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (node_id, identity)) in ids.into_iter().enumerate() {
        let (endpoint, tx, limit) = (endpoint.clone(), tx.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore");
            let cfg = xpod_tunnel::endpoint::edge_client_config(&identity)
                .map_err(|e| format!("{node_id}: client config: {e}"))?;
            let connecting = endpoint
                .connect_with(cfg, addr, "127.0.0.1")
                .map_err(|e| format!("{node_id}: {e}"))?;
            let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
                .await
                .map_err(|_| format!("{node_id}: handshake timed out"))?
                .map_err(|e| format!("{node_id}: {e}"))?;
            let session = Session::new_client(
                ClientConfig {
                    register: Register {
                        node_id: node_id.clone(),
                        role: Role::Edge,
                        version: "tunnelbench".into(),
                        os: std::env::consts::OS.into(),
                        arch: std::env::consts::ARCH.into(),
                        addresses: Vec::new(),
                        services: vec![Service {
                            name: "web".into(),
                            kind: ServiceKind::Http,
                        }],
                        pods: Vec::new(),
                    },
                    unix_ms_at_start: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    timers: Default::default(),
                },
                tokio::time::Instant::now().into_std(),
            );
            tokio::spawn(answer_runner_streams(conn.clone()));
            Ok::<_, String>(xpod_tunnel::endpoint::driver::spawn_tagged(
                conn,
                session,
                tx,
                move |e| (i, e),
                None,
            ))
        });
    }
    drop(tx);
    let mut drivers = Vec::new();
    let mut connect_failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => connect_failures.push(e),
            Err(e) => connect_failures.push(e.to_string()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while registered.load(Ordering::SeqCst) + closed.load(Ordering::SeqCst) < drivers.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let measured = tokio::task::spawn_blocking(while_up)
        .await
        .map_err(|e| anyhow::anyhow!("measurement panicked: {e}"))??;
    let outcome = SimOutcome {
        connected: drivers.len(),
        registered: registered.load(Ordering::SeqCst),
        connect_failures,
        closed: closed.load(Ordering::SeqCst),
        last_close: last_close.lock().unwrap().clone(),
        connect_secs,
    };
    for d in &drivers {
        d.close("tunnelbench done").await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for d in &drivers {
            d.finished().await;
        }
    })
    .await;
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    drain.abort();
    Ok((outcome, measured))
}

/// What a real edge does with the streams its center opens (the center tells a registering
/// edge the cluster's centers, `POST /node/centers` on a `Runner` stream): read the request
/// (header, then HTTP/1.1 with a `content-length` body) and answer `204`. Without it the
/// center would hold every call open until its timeout and try again later, which no real
/// edge makes it do.
async fn answer_runner_streams(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let Ok(Some((_header, mut buf))) = xpod_tunnel::stream::accept(&mut recv).await else {
                return;
            };
            let mut chunk = [0u8; 1024];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                match recv.read(&mut chunk).await {
                    Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let _ = send
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
            let _ = send.finish();
        });
    }
}

/// Online nodes whose id starts with `prefix`, per the center's `GET /.cluster/nodes`.
fn online_count(center: &NodeProcess, prefix: &str) -> anyhow::Result<usize> {
    let resp = Curl::get(format!("{}/.cluster/nodes", center.url()))
        .bearer(&center.admin_key())
        .arg("--max-time")
        .arg("30")
        .send();
    if resp.status != 200 {
        bail!(
            "GET /.cluster/nodes: HTTP {} {}{}",
            resp.status,
            resp.text(),
            resp.stderr
        );
    }
    let v = resp.json();
    Ok(v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|n| {
                    n["status"] == "online"
                        && n["nodeId"]
                            .as_str()
                            .is_some_and(|id| id.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0))
}

fn many_edges(tmp: &TempDir, n: usize, hold: Duration) -> anyhow::Result<Value> {
    let center = start_center(tmp, "center-big", "");
    let pid = center.pid();
    std::thread::sleep(Duration::from_secs(2));
    let before = proc_kib(pid, "VmRSS").context("reading the center's VmRSS")?;
    let cpu_before = cpu_secs(pid).unwrap_or(0.0);
    let data = center.data_dir();
    let ca = ClusterCa::from_pem(
        &std::fs::read_to_string(data.join("ca.crt"))?,
        &std::fs::read_to_string(data.join("ca.key"))?,
    )
    .context("loading the center's CA")?;
    let issued = Instant::now();
    let ids = (0..n)
        .map(|i| {
            let id = format!("sim-{i:04}");
            let identity = ca.issue_node(&id, NodeRole::Edge, &[], &[], 30)?;
            Ok((id, identity))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "issued {n} edge certificates in {:.2} s",
        issued.elapsed().as_secs_f64()
    );
    let center = Arc::new(center);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sim-edges")
        .enable_all()
        .build()?;
    let c = center.clone();
    let (outcome, measured) = rt.block_on(simulate_edges(center.addr(), ids, move || {
        let registered_at = Instant::now();
        let sampler = Sampler::start(vec![pid]);
        let online_early = online_count(&c, "sim-")?;
        // Idle means after the first heartbeats (each edge's first is written in full):
        // CPU is counted from two heartbeat intervals after registration, or half the hold.
        let settle = (hold / 2).min(Duration::from_secs(30));
        std::thread::sleep(settle.saturating_sub(registered_at.elapsed()));
        let settled_at = Instant::now();
        let cpu0 = cpu_secs(pid).unwrap_or(0.0);
        std::thread::sleep(hold.saturating_sub(registered_at.elapsed()));
        let cpu = cpu_secs(pid).unwrap_or(0.0) - cpu0;
        let idle_s = settled_at.elapsed().as_secs_f64();
        let held = registered_at.elapsed().as_secs_f64();
        let after = proc_kib(pid, "VmRSS").unwrap_or(0);
        let hwm = proc_kib(pid, "VmHWM").unwrap_or(0);
        let peak = sampler.finish()[0];
        let online = online_count(&c, "sim-")?;
        Ok(json!({
            "online_after_connect": online_early,
            "online": online,
            "rss_after_kib": after,
            "rss_peak_during_hold_kib": peak,
            "vm_hwm_kib": hwm,
            "held_s": round(held),
            "settle_s": round(settle.as_secs_f64()),
            "center_cpu_pct_during_hold": round(100.0 * cpu / idle_s.max(0.001)),
        }))
    }))?;
    drop(rt);
    std::thread::sleep(Duration::from_secs(3));
    let after_disconnect = proc_kib(pid, "VmRSS").unwrap_or(0);
    let cpu_total = cpu_secs(pid).unwrap_or(0.0) - cpu_before;
    let after = measured["rss_after_kib"].as_u64().unwrap_or(0);
    let delta = after.saturating_sub(before);
    let per_edge = delta as f64 / n.max(1) as f64;
    let mut out = json!({
        "edges": n,
        "connected": outcome.connected,
        "registered": outcome.registered,
        "connect_failures": outcome.connect_failures.len(),
        "sessions_closed_early": outcome.closed,
        "connect_and_register_s": round(outcome.connect_secs),
        "rss_before_kib": before,
        "rss_delta_mib": round(mib(delta)),
        "kib_per_edge": round(per_edge),
        "rss_after_disconnect_kib": after_disconnect,
        "center_cpu_s_total": round(cpu_total),
    });
    if let (Value::Object(o), Value::Object(m)) = (&mut out, measured) {
        o.extend(m);
    }
    if let Some(e) = outcome.connect_failures.first() {
        println!(
            "  WARNING: {} edges failed to connect, e.g. {e}",
            outcome.connect_failures.len()
        );
    }
    if let Some(r) = &outcome.last_close {
        if outcome.closed > 0 {
            println!(
                "  WARNING: {} sessions closed before the end, last: {r}",
                outcome.closed
            );
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

struct Args {
    seconds: u64,
    connections: u32,
    edges: usize,
    hold: u64,
    /// Skip the iperf3 part (to profile or tune the HTTP path alone).
    skip_iperf: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10,
        connections: 32,
        edges: 1000,
        hold: 10,
        skip_iperf: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| name.to_string())
        };
        match arg.as_str() {
            "--seconds" => a.seconds = num("--seconds")?.max(1),
            "--connections" => a.connections = num("--connections")?.clamp(2, 10_000) as u32,
            "--edges" => a.edges = num("--edges")? as usize,
            "--hold" => a.hold = num("--hold")?,
            "--skip-iperf" => a.skip_iperf = true,
            "-h" | "--help" => {
                println!("tunnelbench [--seconds N] [--connections N] [--edges N] [--hold N] [--skip-iperf]   (XPOD_BIN: the xpod binary; RATHOLE_BIN: rathole)");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; usage: tunnelbench [--seconds N] [--connections N] [--edges N] [--hold N] [--skip-iperf]"),
        }
    }
    Ok(a)
}

/// The first three fields of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn gbit(bps: f64) -> f64 {
    bps / 1e9
}

/// Records a failed or skipped figure: printed loudly and kept for the JSON line.
fn problem(problems: &mut Vec<String>, what: String) {
    println!("!!! {what}");
    problems.push(what);
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let secs = args.seconds;
    let conns = args.connections;
    let tmp = TempDir::new("xpod-tunnelbench");
    let logs = tmp.path().to_path_buf();
    let mut problems: Vec<String> = Vec::new();

    // Tools.
    let have_iperf3 = runnable(Path::new("iperf3"), "--version");
    let have_wrk = runnable(Path::new("wrk"), "--version");
    let rathole: Option<PathBuf> = {
        let p = std::env::var_os("RATHOLE_BIN")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("rathole"));
        runnable(&p, "--version").then_some(p)
    };
    if !have_iperf3 {
        problem(
            &mut problems,
            "SKIPPED: every throughput figure (iperf3 is not installed / not on PATH)".into(),
        );
    }
    if !have_wrk {
        problem(
            &mut problems,
            "SKIPPED: every HTTP requests/s and latency figure (wrk is not installed / not on PATH)"
                .into(),
        );
    }
    if rathole.is_none() {
        problem(&mut problems, "SKIPPED: every rathole figure (rathole not found: set RATHOLE_BIN or put rathole on PATH)".into());
    }

    // The backends: HTTP (in process) and iperf3 -s.
    let (backend_rt, backend) = start_backend()?;
    let iperf_port = free_port();
    let iperf_addr = SocketAddr::from(([127, 0, 0, 1], iperf_port));
    let iperf_server = if have_iperf3 {
        let k = Killed::spawn(
            "iperf3-server",
            Command::new("iperf3").args(["-s", "-p", &iperf_port.to_string()]),
            &logs,
        )?;
        wait_listening(iperf_addr)?;
        Some(k)
    } else {
        None
    };

    // xpod: a center with a TCP forward to edge-1's iperf3, and edge-1 publishing both.
    let (fwd, fwd_tcp) = (free_port(), free_port());
    let center = start_center(
        &tmp,
        "center-1",
        &format!(
            "[tunnel]\nedge_domain = \"edges.test\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd}\"\nnode = \"{EDGE}\"\nservice = \"iperf\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd_tcp}\"\nnode = \"{EDGE_TCP}\"\nservice = \"iperf\"\n"
        ),
    );
    let edge = start_edge(
        &tmp,
        &center,
        EDGE,
        &format!(
            "[[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\n\n\
             [[tunnel.services]]\nname = \"iperf\"\nlocal = \"{iperf_addr}\"\nkind = \"tcp\"\n"
        ),
    );
    let edge_tcp = start_edge(
        &tmp,
        &center,
        EDGE_TCP,
        &format!(
            "[tunnel]\ntransport = \"tcp\"\n\n\
             [[tunnel.services]]\nname = \"web\"\nlocal = \"{backend}\"\n\n\
             [[tunnel.services]]\nname = \"iperf\"\nlocal = \"{iperf_addr}\"\nkind = \"tcp\"\n"
        ),
    );
    let bin = center.bin().display().to_string();
    let profile = if bin.contains("/release/") {
        "release"
    } else if bin.contains("/debug/") {
        "debug (figures are not representative)"
    } else {
        "unknown"
    };
    println!("xpod binary: {bin} [{profile}]");
    println!(
        "tools: iperf3 {}, wrk {}, rathole {}",
        if have_iperf3 { "yes" } else { "MISSING" },
        if have_wrk { "yes" } else { "MISSING" },
        rathole
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "MISSING".into())
    );
    println!(
        "cores: {}; logs and configs: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        logs.display()
    );
    let load_start = loadavg();
    println!("load average at start: {load_start}");
    if load_start
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > 1.0)
    {
        problem(
            &mut problems,
            format!(
                "WARNING: the machine is busy (load average {load_start}): figures will be noisy"
            ),
        );
    }
    wait_online(&center, EDGE);
    wait_backend_through(backend, "backend", "the direct path")?;
    let center_http = center.addr();
    wait_backend_through(center_http, EDGE_HOST, "the xpod center")?;
    wait_online(&center, EDGE_TCP);
    wait_backend_through(
        center_http,
        EDGE_TCP_HOST,
        "the xpod center (TCP transport)",
    )?;
    let xpod_procs = vec![
        Watched {
            name: "xpod-center",
            pid: center.pid(),
        },
        Watched {
            name: "xpod-edge",
            pid: edge.pid(),
        },
    ];
    let xpod_tcp_procs = vec![
        Watched {
            name: "xpod-center",
            pid: center.pid(),
        },
        Watched {
            name: "xpod-edge-tcp",
            pid: edge_tcp.pid(),
        },
    ];
    let mut book = MemBook::default();
    std::thread::sleep(Duration::from_secs(1));
    book.idle(&xpod_procs);

    // rathole: one pair with the TCP transport (iperf + web), one with Noise (iperf, and web
    // only to know when it is ready).
    let mut rh_tcp: Option<Rathole> = None;
    let mut rh_noise: Option<Rathole> = None;
    if let Some(bin) = &rathole {
        for (label, noise) in [("tcp", false), ("noise", true)] {
            let started = start_rathole(
                bin,
                &logs,
                label,
                noise,
                &[("iperf", iperf_addr), ("web", backend)],
            )
            .and_then(|r| {
                let web = SocketAddr::from(([127, 0, 0, 1], r.ports["web"]));
                wait_backend_through(web, "backend", &format!("rathole ({label})"))?;
                Ok(r)
            });
            match started {
                Ok(r) if noise => rh_noise = Some(r),
                Ok(r) => rh_tcp = Some(r),
                Err(e) => problem(
                    &mut problems,
                    format!("SKIPPED: rathole ({label}) figures: setup failed: {e:#}"),
                ),
            }
        }
    }
    let rh_procs = |r: &Rathole, label: &str| -> Vec<Watched> {
        let (s, c): (&'static str, &'static str) = if label == "tcp" {
            ("rathole-server-tcp", "rathole-client-tcp")
        } else {
            ("rathole-server-noise", "rathole-client-noise")
        };
        vec![
            Watched {
                name: s,
                pid: r.server.pid(),
            },
            Watched {
                name: c,
                pid: r.client.pid(),
            },
        ]
    };
    let tcp_procs = rh_tcp.as_ref().map(|r| rh_procs(r, "tcp"));
    let noise_procs = rh_noise.as_ref().map(|r| rh_procs(r, "noise"));
    std::thread::sleep(Duration::from_millis(500));
    for p in [&tcp_procs, &noise_procs].into_iter().flatten() {
        book.idle(p);
    }

    // 1. iperf3.
    let mut iperf_json = serde_json::Map::new();
    let mut iperf_rows: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    if have_iperf3 && !args.skip_iperf {
        let mut paths: Vec<(&str, u16, Vec<Watched>)> = vec![
            ("direct", iperf_port, vec![]),
            ("xpod", fwd, xpod_procs.clone()),
            ("xpod_tcp", fwd_tcp, xpod_tcp_procs.clone()),
        ];
        if let (Some(r), Some(p)) = (&rh_tcp, &tcp_procs) {
            paths.push(("rathole_tcp", r.ports["iperf"], p.clone()));
        }
        if let (Some(r), Some(p)) = (&rh_noise, &noise_procs) {
            paths.push(("rathole_noise", r.ports["iperf"], p.clone()));
        }
        println!("\n== iperf3 single stream, {secs} s per direction (Gbit/s)");
        for (name, port, procs) in paths {
            let mut row = json!({});
            let mut got = [None, None];
            let mut cpu = [String::new(), String::new()];
            for (k, reverse) in [false, true].into_iter().enumerate() {
                let dir = if reverse { "s2c" } else { "c2s" };
                let (r, load) = under_load(&procs, &mut book, || iperf3(port, secs, reverse));
                match r {
                    Ok(bps) => {
                        got[k] = Some(bps);
                        row[format!("{dir}_gbit_s")] = json!(round(gbit(bps)));
                    }
                    Err(e) => {
                        row[format!("{dir}_gbit_s")] = Value::Null;
                        problem(&mut problems, format!("FAILED: iperf3 {name} {dir}: {e:#}"));
                    }
                }
                cpu[k] = cpu_note(&load);
                row[format!("{dir}_load")] = load;
            }
            println!(
                "  {name:<14} client→server {:>7}   server→client (-R) {:>7}",
                got[0].map_or("-".into(), |b| format!("{:.2}", gbit(b))),
                got[1].map_or("-".into(), |b| format!("{:.2}", gbit(b))),
            );
            for (dir, note) in ["client→server", "server→client"].iter().zip(&cpu) {
                if !note.is_empty() {
                    println!("      {dir} CPU seconds: {note}");
                }
            }
            iperf_rows.push((name.to_string(), got[0], got[1]));
            iperf_json.insert(name.to_string(), row);
        }
        if let Some((_, d_up, d_down)) = iperf_rows.iter().find(|r| r.0 == "direct").cloned() {
            for (name, up, down) in &iperf_rows {
                if name == "direct" {
                    continue;
                }
                let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
                let (ru, rd) = (ratio(*up, d_up), ratio(*down, d_down));
                println!(
                    "  ratio {name:<14} vs direct: client→server {}   server→client {}",
                    ru.map_or("-".into(), |r| format!("{r:.3}")),
                    rd.map_or("-".into(), |r| format!("{r:.3}")),
                );
                if let Some(row) = iperf_json.get_mut(name) {
                    row["c2s_ratio"] = json!(ru.map(|r| (r * 1000.0).round() / 1000.0));
                    row["s2c_ratio"] = json!(rd.map(|r| (r * 1000.0).round() / 1000.0));
                }
            }
        }
    }

    // 2. wrk.
    let mut wrk_json = serde_json::Map::new();
    if have_wrk {
        let mut paths: Vec<(&str, SocketAddr, Option<&str>, Vec<Watched>)> = vec![
            ("direct", backend, None, vec![]),
            ("xpod", center_http, Some(EDGE_HOST), xpod_procs.clone()),
            (
                "xpod_tcp",
                center_http,
                Some(EDGE_TCP_HOST),
                xpod_tcp_procs.clone(),
            ),
        ];
        if let (Some(r), Some(p)) = (&rh_tcp, &tcp_procs) {
            let web = SocketAddr::from(([127, 0, 0, 1], r.ports["web"]));
            paths.push(("rathole_tcp", web, None, p.clone()));
        }
        println!(
            "\n== wrk -t2 -c{conns} -d{secs}s --latency, {}-byte body",
            BODY.len()
        );
        let mut direct_rps = None;
        for (name, addr, host, procs) in paths {
            let (r, load) = under_load(&procs, &mut book, || wrk(addr, host, conns, secs));
            match r {
                Ok(w) => {
                    if name == "direct" {
                        direct_rps = Some(w.rps);
                    }
                    let ratio = direct_rps.map(|d| w.rps / d);
                    let note = cpu_note(&load);
                    println!(
                        "  {name:<14} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms{}{}{}",
                        w.rps,
                        w.p50_ms,
                        w.p99_ms,
                        match ratio {
                            Some(r) if name != "direct" => format!("   ratio vs direct {r:.3}"),
                            _ => String::new(),
                        },
                        if w.non_2xx > 0 || !w.socket_errors.is_empty() {
                            format!(
                                "   (non-2xx {}, socket errors: {})",
                                w.non_2xx,
                                if w.socket_errors.is_empty() {
                                    "none"
                                } else {
                                    w.socket_errors.as_str()
                                }
                            )
                        } else {
                            String::new()
                        },
                        if note.is_empty() {
                            String::new()
                        } else {
                            format!("\n      CPU seconds: {note}")
                        }
                    );
                    if w.non_2xx > 0 {
                        problem(
                            &mut problems,
                            format!("WARNING: wrk {name}: {} non-2xx responses", w.non_2xx),
                        );
                    }
                    wrk_json.insert(
                        name.to_string(),
                        json!({
                            "rps": round(w.rps),
                            "p50_ms": (w.p50_ms * 1000.0).round() / 1000.0,
                            "p99_ms": (w.p99_ms * 1000.0).round() / 1000.0,
                            "requests": w.requests,
                            "non_2xx": w.non_2xx,
                            "socket_errors": w.socket_errors,
                            "rps_ratio": ratio.filter(|_| name != "direct").map(|r| (r * 1000.0).round() / 1000.0),
                            "load": load,
                        }),
                    );
                }
                Err(e) => {
                    problem(&mut problems, format!("FAILED: wrk {name}: {e:#}"));
                    wrk_json.insert(
                        name.to_string(),
                        json!({"error": format!("{e:#}"), "load": load}),
                    );
                }
            }
        }
    }

    // 3. Memory.
    println!(
        "\n== resident memory (MiB): idle after setup / peak under load (100 ms samples) / VmHWM"
    );
    let mut mem_json = serde_json::Map::new();
    for (name, pid) in &book.pids {
        let idle = book.idle.get(name).copied().unwrap_or(0);
        let peak = book.peak.get(name).copied();
        let hwm = proc_kib(*pid, "VmHWM").unwrap_or(0);
        println!(
            "  {name:<22} idle {:>6.1}   peak {:>6}   VmHWM {:>6.1}",
            mib(idle),
            peak.map_or("-".into(), |p| format!("{:.1}", mib(p))),
            mib(hwm)
        );
        mem_json.insert(
            name.to_string(),
            json!({"rss_idle_kib": idle, "rss_peak_load_kib": peak, "vm_hwm_kib": hwm}),
        );
    }

    // Everything but the many-edges center is done: free the CPU for it.
    drop(rh_tcp);
    drop(rh_noise);
    drop(edge);
    drop(center);
    drop(iperf_server);
    backend_rt.shutdown_background();

    // 4. Many idle edges.
    let many = if args.edges > 0 {
        println!(
            "\n== a fresh center with {} simulated idle edges (held {} s)",
            args.edges, args.hold
        );
        match many_edges(&tmp, args.edges, Duration::from_secs(args.hold)) {
            Ok(v) => {
                println!(
                    "  connected {} / registered {} in {:.1} s; online in /.cluster/nodes: {} (right after: {})",
                    v["connected"], v["registered"], v["connect_and_register_s"].as_f64().unwrap_or(0.0),
                    v["online"], v["online_after_connect"]
                );
                println!(
                    "  center VmRSS before {:.1} MiB, with the edges {:.1} MiB (+{:.1} MiB, {:.1} KiB per edge); peak {:.1} MiB; VmHWM {:.1} MiB; after they left {:.1} MiB",
                    mib(v["rss_before_kib"].as_u64().unwrap_or(0)),
                    mib(v["rss_after_kib"].as_u64().unwrap_or(0)),
                    v["rss_delta_mib"].as_f64().unwrap_or(0.0),
                    v["kib_per_edge"].as_f64().unwrap_or(0.0),
                    mib(v["rss_peak_during_hold_kib"].as_u64().unwrap_or(0)),
                    mib(v["vm_hwm_kib"].as_u64().unwrap_or(0)),
                    mib(v["rss_after_disconnect_kib"].as_u64().unwrap_or(0)),
                );
                println!(
                    "  center CPU while holding them idle (from {:.0} s after they registered): {:.1} % of one core",
                    v["settle_s"].as_f64().unwrap_or(0.0),
                    v["center_cpu_pct_during_hold"].as_f64().unwrap_or(0.0)
                );
                let online = v["online"].as_u64().unwrap_or(0) as usize;
                if online != args.edges {
                    problem(
                        &mut problems,
                        format!(
                            "WARNING: only {online} of {} simulated edges online",
                            args.edges
                        ),
                    );
                }
                v
            }
            Err(e) => {
                problem(&mut problems, format!("FAILED: many idle edges: {e:#}"));
                json!({"error": format!("{e:#}")})
            }
        }
    } else {
        Value::Null
    };

    let load_end = loadavg();
    println!("load average at the end: {load_end}");
    let out = json!({
        "bench": "tunnelbench",
        "load_average_start": load_start,
        "load_average_end": load_end,
        "wrk_connections": conns,
        "binary": bin,
        "seconds": secs,
        "iperf3": iperf_json,
        "wrk": wrk_json,
        "memory": mem_json,
        "many_edges": many,
        "problems": problems,
    });
    println!("\n{out}");
    Ok(())
}
