//! Starting a sandbox and running commands in it.
//!
//! Host layout of a sandbox, under its `root`: `work/` (mounted at `/work`, the only writable
//! place besides a private `/tmp`), `sandbox.log` (bwrap's and the supervisor's own output).
//! The root and everything else is read-only; `/tmp` is private, in memory and capped at
//! 64 MiB. When the node runs as root, bwrap runs as `uid` (an unprivileged host uid of this
//! sandbox's own) so process limits hold; `work/` belongs to it. The xpod binary is mounted
//! read-only at `/.xpod-init`, so it must be readable by that uid (it is, in `/usr/local/bin`
//! or any 0755 path).
//!
//! The node reaches the supervisor over the control channel it hands to bwrap as an inherited
//! descriptor ([`super::ctl`]), never through a path, and trusts nothing it sends
//! ([`super::events`]: bounded lines, event rate and buffers; a command past its timeout gets
//! the sandbox killed from outside, through a pidfd of bwrap, so a recycled pid is never hit).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use tokio::io::AsyncWriteExt as _;

use super::proto::{Event, ExecRequest, Input};
use super::Limits;

/// What a sandbox is made of.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Host directory for this sandbox (created).
    pub root: PathBuf,
    /// The xpod binary (its supervisor).
    pub xpod_bin: PathBuf,
    /// Host uid (and gid) to run as when the node is root.
    pub uid: u32,
    /// Whether the sandbox gets outbound internet ([`super::net`]; default: only its own
    /// loopback). Never the host's network.
    pub network: bool,
    pub limits: Limits,
    /// Environment of every command (on top of `PATH`, `HOME`).
    pub env: BTreeMap<String, String>,
    /// The image: the host directory mounted read-only at `/usr` (`/usr` for the host's).
    pub usr: PathBuf,
    /// PID 1 instead of xpod's supervisor (`None`: `/.xpod-init sandbox-init`). It gets the
    /// control channel as descriptor 3. Tests use it to play a hostile supervisor.
    pub init: Option<Vec<String>>,
}

pub use super::killer::Killer;

/// A running sandbox; killed (with everything in it) when dropped.
pub struct Sandbox {
    child: tokio::process::Child,
    /// The node's end of the control channel.
    ctl: std::os::unix::net::UnixStream,
    killer: Killer,
    /// slirp4netns, for a sandbox with network.
    _net: Option<super::net::Net>,
    pub root: PathBuf,
}

/// The bwrap arguments for `spec` (without the program).
pub fn bwrap_args(spec: &Spec) -> Vec<String> {
    let root = spec.root.display();
    let mut a: Vec<String> = [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        // A private /tmp in memory, capped at 64 MiB.
        "--size",
        "67108864",
        "--tmpfs",
        "/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.splice(
        0..0,
        [
            "--ro-bind".to_string(),
            spec.usr.display().to_string(),
            "/usr".to_string(),
        ],
    );
    if spec.network {
        // Its own namespace all the same; `net::attach` gives it outbound-only network.
        a.extend([
            "--ro-bind".into(),
            format!("{root}/resolv.conf"),
            "/etc/resolv.conf".into(),
        ]);
    }
    a.extend([
        "--bind".into(),
        format!("{root}/work"),
        "/work".into(),
        "--ro-bind".into(),
        spec.xpod_bin.display().to_string(),
        "/.xpod-init".into(),
        // Everything else read-only, the root included.
        "--remount-ro".into(),
        "/".into(),
        "--chdir".into(),
        "/work".into(),
        "--clearenv".into(),
        "--setenv".into(),
        "PATH".into(),
        "/usr/local/bin:/usr/bin:/bin".into(),
        "--setenv".into(),
        "HOME".into(),
        "/work".into(),
    ]);
    for (k, v) in &spec.env {
        a.extend(["--setenv".into(), k.clone(), v.clone()]);
    }
    a
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Sandbox {
    /// Creates the directories and starts the sandbox; returns once its supervisor answers.
    pub async fn start(spec: &Spec) -> anyhow::Result<Sandbox> {
        let work = spec.root.join("work");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let root = is_root();
        if root {
            std::os::unix::fs::chown(&work, Some(spec.uid), Some(spec.uid))
                .with_context(|| format!("chown {}", work.display()))?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&spec.root, std::fs::Permissions::from_mode(0o711))?;
        }
        let log = std::fs::File::create(spec.root.join("sandbox.log"))?;
        if spec.network {
            std::fs::write(
                spec.root.join("resolv.conf"),
                format!("nameserver {}\n", super::net::DNS),
            )?;
        }
        let limits = serde_json::to_string(&spec.limits)?;
        let (ctl, theirs) =
            std::os::unix::net::UnixStream::pair().context("making the control channel")?;
        let mut cmd = tokio::process::Command::new("bwrap");
        cmd.args(bwrap_args(spec)).arg("--");
        match &spec.init {
            Some(init) => cmd.args(init),
            None => cmd.args(["/.xpod-init", "sandbox-init", "--limits", &limits]),
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let (theirs_fd, uid) = (theirs.as_raw_fd(), spec.uid);
        // SAFETY: only async-signal-safe calls (dup2, fcntl, setgroups, setgid, setuid) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The control channel becomes descriptor 3 (dup2 clears close-on-exec).
                if theirs_fd == super::ctl::CTL_FD {
                    libc::fcntl(theirs_fd, libc::F_SETFD, 0);
                } else if libc::dup2(theirs_fd, super::ctl::CTL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if root
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .context("starting bwrap (apt-get install bubblewrap)")?;
        // Only the sandbox holds the other end now: if it dies, the node sees the channel close.
        drop(theirs);
        let bwrap_pid = child.id();
        let killer = Killer::new(bwrap_pid);
        let mut sb = Sandbox {
            child,
            ctl,
            killer,
            _net: None,
            root: spec.root.clone(),
        };
        let ready = async {
            let mut conn = super::ctl::open(&sb.ctl)?;
            conn.write_all(b"{\"ping\":true}\n").await?;
            match super::events::answer(&mut conn).await? {
                Event::Ready => Ok(()),
                other => bail!("unexpected answer to a ping: {other:?}"),
            }
        };
        if let Err(e) = ready.await {
            bail!(
                "the sandbox did not start ({e:#}): {}",
                std::fs::read_to_string(spec.root.join("sandbox.log")).unwrap_or_default()
            );
        }
        if spec.network {
            let pid = bwrap_pid.context("bwrap has no pid")?;
            sb._net = Some(
                super::net::attach(pid, &spec.root.join("sandbox.log"))
                    .await
                    .context("giving the sandbox its network")?,
            );
        }
        Ok(sb)
    }

    /// Runs `req` with `stdin` and returns every event, the last one `end` or `error`.
    pub async fn exec(&self, req: &ExecRequest, stdin: &[u8]) -> anyhow::Result<Vec<Event>> {
        let mut rx = self.exec_stream(req, stdin).await?;
        let mut events = Vec::new();
        while let Some(ev) = rx.recv().await {
            events.push(ev);
        }
        Ok(events)
    }

    /// Runs `req` with `stdin`; its events arrive on the receiver as they happen, the last one
    /// `end` or `error` (a supervisor that goes away mid-command yields an `error`).
    pub async fn exec_stream(
        &self,
        req: &ExecRequest,
        stdin: &[u8],
    ) -> anyhow::Result<tokio::sync::mpsc::Receiver<Event>> {
        let conn = super::ctl::open(&self.ctl).context("the sandbox's supervisor is gone")?;
        let (r, w) = conn.into_split();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = serde_json::to_vec(req)?;
        out.push(b'\n');
        if !stdin.is_empty() {
            out.extend(serde_json::to_vec(&Input::Stdin(b64.encode(stdin)))?);
            out.push(b'\n');
        }
        out.extend(serde_json::to_vec(&Input::Eof)?);
        out.push(b'\n');
        let deadline = req.timeout_secs.map(|t| {
            tokio::time::Instant::now() + Duration::from_secs(t) + super::events::TIMEOUT_GRACE
        });
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(super::events::pump(
            r,
            w,
            out,
            deadline,
            self.killer.clone(),
            tx,
        ));
        Ok(rx)
    }

    /// A byte stream to `127.0.0.1:port` inside the sandbox (its supervisor dials it in the
    /// sandbox's network namespace and relays).
    pub async fn connect(&self, port: u16) -> anyhow::Result<tokio::net::UnixStream> {
        let mut conn = super::ctl::open(&self.ctl).context("the sandbox's supervisor is gone")?;
        let mut line = serde_json::to_vec(&serde_json::json!({ "connect": port }))?;
        line.push(b'\n');
        conn.write_all(&line).await?;
        match super::events::answer(&mut conn).await? {
            Event::Connected => Ok(conn),
            Event::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the sandbox's supervisor: {other:?}"),
        }
    }

    /// A terminal: `req` runs in a PTY inside the sandbox; the stream carries terminal frames
    /// ([`crate::terminal::tty`]) from now on. `Ok(Err(reason))`: the supervisor refused the request
    /// (a program that does not exist…); `Err`: the supervisor could not be asked.
    pub async fn terminal(
        &self,
        req: &crate::terminal::TerminalRequest,
    ) -> anyhow::Result<Result<tokio::net::UnixStream, String>> {
        let mut conn = super::ctl::open(&self.ctl).context("the sandbox's supervisor is gone")?;
        let mut line = serde_json::to_vec(&serde_json::json!({ "terminal": req }))?;
        line.push(b'\n');
        conn.write_all(&line).await?;
        match super::events::answer(&mut conn).await? {
            Event::Connected => Ok(Ok(conn)),
            Event::Error { message } => Ok(Err(message)),
            other => bail!("unexpected answer from the sandbox's supervisor: {other:?}"),
        }
    }

    /// Kills the sandbox from outside without waiting (any task may hold this).
    pub fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// Whether bwrap (and so the sandbox) is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the sandbox and everything in it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// The host path of `/work`.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }
}

/// stdout, stderr (decoded) and the exit code of an exec's events.
pub fn outcome(events: &[Event]) -> (Vec<u8>, Vec<u8>, Option<i32>, bool) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut out, mut err, mut code, mut timed_out) = (Vec::new(), Vec::new(), None, false);
    for e in events {
        match e {
            Event::Stdout { data } => out.extend(b64.decode(data).unwrap_or_default()),
            Event::Stderr { data } => err.extend(b64.decode(data).unwrap_or_default()),
            Event::End {
                exit_code,
                timed_out: t,
            } => {
                code = Some(*exit_code);
                timed_out = *t;
            }
            _ => {}
        }
    }
    (out, err, code, timed_out)
}
