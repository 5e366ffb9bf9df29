//! Starting a sandbox and running commands in it.
//!
//! Host layout of a sandbox, under its `root`: `work/` (mounted at `/work`, the only writable
//! place besides a private `/tmp`), `ctl/` (mounted at `/.xpod`: the supervisor's socket),
//! `sandbox.log` (bwrap's and the supervisor's own output). The root and everything else is
//! read-only; `/tmp` is private, in memory and capped at 64 MiB. When the node runs as root, bwrap
//! runs as `uid` (an unprivileged host uid of this sandbox's own) so process limits hold;
//! `work/` and `ctl/` belong to it. The xpod binary is mounted read-only at `/.xpod-init`, so
//! it must be readable by that uid (it is, in `/usr/local/bin` or any 0755 path).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

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
    /// Whether the sandbox shares the host's network (default: only its own loopback).
    pub network: bool,
    pub limits: Limits,
    /// Environment of every command (on top of `PATH`, `HOME`).
    pub env: BTreeMap<String, String>,
    /// The image: the host directory mounted read-only at `/usr` (`/usr` for the host's).
    pub usr: PathBuf,
}

/// A running sandbox; killed (with everything in it) when dropped.
pub struct Sandbox {
    child: tokio::process::Child,
    socket: PathBuf,
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
        a.extend(
            [
                "--share-net",
                "--ro-bind-try",
                "/etc/resolv.conf",
                "/etc/resolv.conf",
            ]
            .map(String::from),
        );
    }
    a.extend([
        "--bind".into(),
        format!("{root}/work"),
        "/work".into(),
        "--bind".into(),
        format!("{root}/ctl"),
        "/.xpod".into(),
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
        let (work, ctl) = (spec.root.join("work"), spec.root.join("ctl"));
        for d in [&work, &ctl] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let root = is_root();
        if root {
            for d in [&work, &ctl] {
                std::os::unix::fs::chown(d, Some(spec.uid), Some(spec.uid))
                    .with_context(|| format!("chown {}", d.display()))?;
            }
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&spec.root, std::fs::Permissions::from_mode(0o711))?;
        }
        let log = std::fs::File::create(spec.root.join("sandbox.log"))?;
        let limits = serde_json::to_string(&spec.limits)?;
        let mut cmd = tokio::process::Command::new("bwrap");
        cmd.args(bwrap_args(spec))
            .args([
                "--",
                "/.xpod-init",
                "sandbox-init",
                "--socket",
                "/.xpod/ctl.sock",
                "--limits",
            ])
            .arg(&limits)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if root {
            let uid = spec.uid;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .context("starting bwrap (apt-get install bubblewrap)")?;
        let sb = Sandbox {
            child,
            socket: ctl.join("ctl.sock"),
            root: spec.root.clone(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut polls = 0u32;
        loop {
            if tokio::net::UnixStream::connect(&sb.socket).await.is_ok() {
                return Ok(sb);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the sandbox did not start within 10 s: {}",
                    std::fs::read_to_string(spec.root.join("sandbox.log")).unwrap_or_default()
                );
            }
            // The supervisor is usually up within a few ms: poll finely at first.
            let step = if polls < 200 { 1 } else { 20 };
            polls += 1;
            tokio::time::sleep(Duration::from_millis(step)).await;
        }
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
        let conn = tokio::net::UnixStream::connect(&self.socket)
            .await
            .context("the sandbox's supervisor is gone")?;
        let (r, mut w) = conn.into_split();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = serde_json::to_vec(req)?;
        out.push(b'\n');
        if !stdin.is_empty() {
            out.extend(serde_json::to_vec(&Input::Stdin(b64.encode(stdin)))?);
            out.push(b'\n');
        }
        out.extend(serde_json::to_vec(&Input::Eof)?);
        out.push(b'\n');
        w.write_all(&out).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            // Keep the write half open until the end: closing it would end stdin early.
            let _w = w;
            let mut lines = BufReader::new(r).lines();
            loop {
                let ev = match lines.next_line().await {
                    Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => ev,
                        Err(e) => Event::Error {
                            message: format!("bad event from the sandbox's supervisor: {e}"),
                        },
                    },
                    Ok(None) | Err(_) => Event::Error {
                        message: "the sandbox's supervisor went away during the command".into(),
                    },
                };
                let last = matches!(ev, Event::End { .. } | Event::Error { .. });
                if tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// A byte stream to `127.0.0.1:port` inside the sandbox (its supervisor dials it in the
    /// sandbox's network namespace and relays).
    pub async fn connect(&self, port: u16) -> anyhow::Result<tokio::net::UnixStream> {
        let mut conn = tokio::net::UnixStream::connect(&self.socket)
            .await
            .context("the sandbox's supervisor is gone")?;
        let mut line = serde_json::to_vec(&serde_json::json!({ "connect": port }))?;
        line.push(b'\n');
        conn.write_all(&line).await?;
        // Read the answer byte by byte: what follows it belongs to the caller.
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            use tokio::io::AsyncReadExt as _;
            if conn.read(&mut byte).await? == 0 {
                bail!("the sandbox's supervisor closed the connection");
            }
            if byte[0] == b'\n' {
                break;
            }
            answer.push(byte[0]);
            if answer.len() > 4096 {
                bail!("the sandbox's supervisor sent an overlong answer");
            }
        }
        match serde_json::from_slice::<Event>(&answer)? {
            Event::Connected => Ok(conn),
            Event::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the sandbox's supervisor: {other:?}"),
        }
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
