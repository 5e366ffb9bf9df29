//! A real `xpod` node as a child process, for end-to-end tests and benchmarks.
//!
//! The walk-through, durability, shutdown and multi-node tests need the binary a user runs, not
//! the library entry point: signals, exit codes, files on disk and the port it binds are part of
//! what they check. [`NodeProcess::start`] gives each test its own node:
//!
//! - a fresh temp dir (removed on drop unless the test panicked) holding the data dir `data/`
//!   and the node's stdout/stderr, one pair of files per start (`node-1.stderr`, …);
//! - a free loopback port (bind `127.0.0.1:0`, release, hand the port to `xpod up --listen`;
//!   if the node then fails to bind because someone else took it, it is retried on a new port);
//! - readiness by polling `GET /health` until it answers 200 with this node's id (30 s at most;
//!   the panic message carries the node's stderr).
//!
//! The binary is `target/<profile>/xpod` next to the test executable (build it first with
//! `cargo build -p xpod-node`), or `$XPOD_BIN`. The child gets the caller's environment minus
//! every `XPOD_*`/`CSS_*` variable (the node rejects unknown `XPOD_*` names such as `XPOD_BIN`),
//! plus what [`NodeBuilder::env`] adds.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a node may take to answer `/health` after it was spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `xpod` binary: `$XPOD_BIN`, else `xpod` in the `target/<profile>/` directory of the
/// running executable. Panics with a hint when it does not exist.
pub fn xpod_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XPOD_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "XPOD_BIN={} does not exist", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("the executable has a directory")
        .to_path_buf();
    // Tests run from target/<profile>/deps; bins from target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join(format!("xpod{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build it first: cargo build -p xpod-node",
        bin.display()
    );
    bin
}

/// A command for the `xpod` binary with the environment cleaned of `XPOD_*`/`CSS_*` variables.
pub fn xpod_command() -> Command {
    let mut cmd = Command::new(xpod_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("XPOD_") || k.starts_with("CSS_") {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// A directory under the system temp dir, removed on drop (kept, and its path printed, when the
/// thread is panicking so a failed test leaves its logs behind).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A free loopback port (bound and released; the caller must cope with a race).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Options for a node before it starts.
#[derive(Default)]
pub struct NodeBuilder {
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    data_dir: Option<PathBuf>,
    root: Option<PathBuf>,
    ip: Option<std::net::IpAddr>,
    wrap: Vec<OsString>,
    bin: Option<PathBuf>,
}

impl NodeBuilder {
    /// Runs this xpod binary instead of the workspace's (e.g. one an installer put in place).
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }
    /// Adds an environment variable for the node (e.g. `XPOD_DATABASE_URL`).
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Listens on `ip` instead of 127.0.0.1 (the port is still picked free on loopback).
    pub fn ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }
    /// Runs the node through `prefix` (e.g. `ip netns exec NS`), which must exec it.
    pub fn wrap(mut self, prefix: &[&str]) -> Self {
        self.wrap = prefix.iter().map(OsString::from).collect();
        self
    }
    /// Adds an argument after `xpod up --data-dir D --listen A`.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    /// Uses this data dir (its parent holds the logs and is not removed) instead of a temp one.
    pub fn data_dir(mut self, d: impl Into<PathBuf>) -> Self {
        let d = d.into();
        self.root = Some(
            d.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        );
        self.data_dir = Some(d);
        self
    }
    /// Starts the node and waits until it is healthy. Panics on failure.
    pub fn start(self) -> NodeProcess {
        let (temp, root, data_dir) = match (self.root, self.data_dir) {
            (Some(root), Some(d)) => (None, root, d),
            _ => {
                let t = TempDir::new("xpod-node");
                let root = t.path().to_path_buf();
                (Some(t), root.clone(), root.join("data"))
            }
        };
        let mut node = NodeProcess {
            bin: self.bin.unwrap_or_else(xpod_bin),
            env: self.env,
            args: self.args,
            ip: self.ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
            wrap: self.wrap,
            data_dir,
            root,
            port: 0,
            child: None,
            starts: 0,
            _temp: temp,
        };
        let mut last = String::new();
        for _ in 0..5 {
            node.port = free_port();
            match node.spawn_and_wait() {
                Ok(()) => return node,
                Err(StartError::PortTaken(stderr)) => last = stderr,
                Err(StartError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("xpod could not bind a free port in 5 attempts; last stderr:\n{last}");
    }
}

enum StartError {
    /// The node exited because its port was taken (a bind race): retry on another port.
    PortTaken(String),
    Failed(String),
}

/// A running `xpod up` child process. See the module docs.
pub struct NodeProcess {
    bin: PathBuf,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    ip: std::net::IpAddr,
    wrap: Vec<OsString>,
    data_dir: PathBuf,
    root: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
    _temp: Option<TempDir>,
}

impl NodeProcess {
    /// A node with a fresh data dir on a free port, healthy.
    pub fn start() -> NodeProcess {
        NodeBuilder::default().start()
    }
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash; the node's IP if it listens on another).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The temp dir holding the data dir and the logs.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The binary this node runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
    /// The process id of the current child. Panics when it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is not running").id()
    }
    /// The first admin key, from `<data-dir>/admin.key`.
    pub fn admin_key(&self) -> String {
        let p = self.data_dir.join("admin.key");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            .trim()
            .to_string()
    }
    /// The node id: the `XPOD_NODE_ID` it was given, else the one it persisted in
    /// `<data-dir>/.node-id`.
    pub fn node_id(&self) -> String {
        if let Some(id) = self.given_node_id() {
            return id;
        }
        let p = self.data_dir.join(".node-id");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            .trim()
            .to_string()
    }
    fn given_node_id(&self) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == "XPOD_NODE_ID")
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }
    /// `<root>/<data dir name>-<start>.<stream>`: nodes sharing a root keep separate logs.
    fn log_path(&self, stream: &str) -> PathBuf {
        let name = self
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into());
        self.root.join(format!("{name}-{}.{stream}", self.starts))
    }
    /// Everything the current (or last) process wrote to stdout.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log_path("stdout")).unwrap_or_default()
    }
    /// Everything the current (or last) process wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path("stderr")).unwrap_or_default()
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.starts += 1;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| StartError::Failed(format!("creating {}: {e}", self.root.display())))?;
        let out =
            File::create(self.log_path("stdout")).map_err(|e| StartError::Failed(e.to_string()))?;
        let err =
            File::create(self.log_path("stderr")).map_err(|e| StartError::Failed(e.to_string()))?;
        let mut cmd = xpod_command();
        if let Some((program, prefix)) = self.wrap.split_first() {
            let inner = cmd;
            cmd = Command::new(program);
            cmd.args(prefix).arg(inner.get_program());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
        }
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr().to_string());
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
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
                let stderr = self.stderr();
                if stderr.contains("cannot listen on") && stderr.contains("in use") {
                    return Err(StartError::PortTaken(stderr));
                }
                return Err(StartError::Failed(format!(
                    "xpod up exited with {status} before it was healthy; stderr:\n{stderr}"
                )));
            }
            if let Some((200, body)) = http_get(self.addr(), "/health") {
                // Make sure it is this node answering, not whoever else got the port.
                let id = self.given_node_id().unwrap_or_else(|| {
                    std::fs::read_to_string(self.data_dir.join(".node-id")).unwrap_or_default()
                });
                if !id.trim().is_empty() && body.contains(id.trim()) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = self.child.as_mut().map(Child::kill);
                let _ = self.child.as_mut().map(Child::wait);
                self.child = None;
                return Err(StartError::Failed(format!(
                    "xpod up did not answer GET /health within {START_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends SIGKILL and reaps the process (no drain, no shutdown hooks).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting (see [`NodeProcess::wait`]).
    pub fn sigterm(&self) {
        let pid = self.pid();
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(st.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node is not running");
        c.wait().expect("waiting for xpod")
    }

    /// SIGTERM, then wait for the exit (the node drains in-flight requests first).
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the node again with the same data dir and port (stopping it first with SIGKILL if
    /// it still runs) and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill9();
        let mut last = String::new();
        // The old socket may linger briefly; a restart must keep the port, so retry a few times.
        for attempt in 0..20 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::PortTaken(stderr)) => last = stderr,
                Err(StartError::Failed(msg)) => panic!("restart: {msg}"),
            }
            std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
        panic!(
            "restart: port {} stayed taken; last stderr:\n{last}",
            self.port
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("node logs: {}", self.root.display());
        }
    }
}

/// A minimal `GET` over a fresh connection: `(status, body)`, or `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
