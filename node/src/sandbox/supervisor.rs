//! `xpod sandbox-init`: PID 1 of a sandbox. Takes its connections from the node over the
//! inherited control channel ([`super::ctl`]; no socket in the sandbox's filesystem) and runs
//! each exec request as a child in its own process group, with the per-process limits applied,
//! streaming its output back ([`super::proto`]), or in a PTY for a terminal ([`crate::terminal::pty`]). It runs on a current-thread runtime: threads
//! count against the sandbox's process limit. It makes itself non-dumpable and the channel
//! close-on-exec, so the commands it runs (same uid) can neither ptrace it nor inherit or
//! open the channel.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::proto::{Event, ExecRequest, Input};
use super::Limits;
use crate::terminal::TerminalRequest;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Runs the supervisor until the node closes the control channel (descriptor `ctl_fd`).
pub fn main(ctl_fd: i32, limits: Limits) -> anyhow::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) has no memory effects; fstat/fcntl on a descriptor
    // number we are about to own.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(ctl_fd, &mut st) != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            anyhow::bail!("descriptor {ctl_fd} is not the node's control channel");
        }
        libc::fcntl(ctl_fd, libc::F_SETFD, libc::FD_CLOEXEC);
        let flags = libc::fcntl(ctl_fd, libc::F_GETFL);
        libc::fcntl(ctl_fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: the descriptor is open (fstat above) and nothing else in this process owns it.
    let ctl = unsafe { OwnedFd::from_raw_fd(ctl_fd) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctl = UnixStream::from_std(std::os::unix::net::UnixStream::from(ctl))
            .context("watching the control channel")?;
        loop {
            ctl.readable().await?;
            let fd = match ctl.try_io(tokio::io::Interest::READABLE, || {
                super::ctl::recv_fd(ctl.as_raw_fd())
            }) {
                Ok(Some(fd)) => fd,
                // The node is gone: so is the sandbox.
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e).context("reading the control channel"),
            };
            let conn = std::os::unix::net::UnixStream::from(fd);
            if conn.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(conn) = UnixStream::from_std(conn) else {
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = serve(conn, limits).await {
                    eprintln!("sandbox-init: {e:#}");
                }
            });
        }
    })
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, ev: &Event) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(ev)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    Ok(())
}

/// Relays the client's connection to `127.0.0.1:port` inside the sandbox.
async fn connect(
    r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    port: u64,
    early: Vec<u8>,
) -> anyhow::Result<()> {
    let Some(port) = u16::try_from(port).ok().filter(|p| *p > 0) else {
        let message = format!("port {port} is not a TCP port");
        return send(&mut w, &Event::Error { message }).await;
    };
    let mut tcp = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(t) => t,
        Err(e) => {
            let message = format!("nothing answers on port {port} in the sandbox: {e}");
            return send(&mut w, &Event::Error { message }).await;
        }
    };
    send(&mut w, &Event::Connected).await?;
    if !early.is_empty() {
        tcp.write_all(&early).await?;
    }
    let mut client = r.reunite(w)?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut tcp).await;
    Ok(())
}

/// Runs a command in a PTY for the client ([`crate::terminal::pty`]).
async fn terminal(
    r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    req: serde_json::Value,
    early: Vec<u8>,
    limits: Limits,
) -> anyhow::Result<()> {
    let session = serde_json::from_value::<TerminalRequest>(req)
        .map_err(|e| format!("bad terminal request: {e}"))
        .and_then(|req| {
            let limit = Box::new(move || limits.apply_per_process());
            crate::terminal::pty::Session::spawn(&req, "/work", Some(limit))
        });
    let session = match session {
        Ok(s) => s,
        Err(message) => return send(&mut w, &Event::Error { message }).await,
    };
    send(&mut w, &Event::Connected).await?;
    session.relay(r.reunite(w)?, &early).await?;
    Ok(())
}

async fn serve(conn: UnixStream, limits: Limits) -> anyhow::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).lines();
    let Some(first) = lines.next_line().await? else {
        return Ok(());
    };
    let first_value = serde_json::from_str::<serde_json::Value>(&first).ok();
    if first_value.as_ref().and_then(|v| v.get("ping")).is_some() {
        return send(&mut w, &Event::Ready).await;
    }
    if let Some(port) = first_value
        .as_ref()
        .and_then(|v| v.get("connect").and_then(|p| p.as_u64()))
    {
        let reader = lines.into_inner();
        let early = reader.buffer().to_vec();
        return connect(reader.into_inner(), w, port, early).await;
    }
    if let Some(t) = first_value.as_ref().and_then(|v| v.get("terminal")) {
        let reader = lines.into_inner();
        let early = reader.buffer().to_vec();
        return terminal(reader.into_inner(), w, t.clone(), early, limits).await;
    }
    let req: ExecRequest = match serde_json::from_str(&first) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("bad exec request: {e}");
            return send(&mut w, &Event::Error { message }).await;
        }
    };
    let Some((prog, args)) = req.cmd.split_first() else {
        let message = "cmd is empty".to_string();
        return send(&mut w, &Event::Error { message }).await;
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(&req.env)
        .current_dir(req.cwd.as_deref().unwrap_or("/work"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (setpgid, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            limits.apply_per_process();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("cannot run {prog:?}: {e}");
            return send(&mut w, &Event::Error { message }).await;
        }
    };
    let pid = child.id().unwrap_or(0);
    send(&mut w, &Event::Start { pid }).await?;
    let mut stdin = child.stdin.take();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(16);
    let pump = |mut s: Box<dyn tokio::io::AsyncRead + Unpin + Send>, stderr: bool| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let data = B64.encode(&buf[..n]);
                let ev = if stderr {
                    Event::Stderr { data }
                } else {
                    Event::Stdout { data }
                };
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        })
    };
    let p1 = pump(Box::new(out), false);
    let p2 = pump(Box::new(err), true);
    drop(tx);
    // Stdin from the client, until Eof or the connection's end.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Input>(&line) {
                Ok(Input::Stdin(b)) => {
                    let Ok(bytes) = B64.decode(b) else { break };
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&bytes).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(Input::Eof) | Err(_) => break,
            }
        }
        drop(stdin);
    });
    let deadline = req.timeout_secs.map(Duration::from_secs);
    let wait = async {
        while let Some(ev) = rx.recv().await {
            send(&mut w, &ev).await?;
        }
        anyhow::Ok(child.wait().await?)
    };
    let (status, timed_out) = match deadline {
        Some(d) => match tokio::time::timeout(d, wait).await {
            Ok(r) => (r?, false),
            Err(_) => {
                // SAFETY: kill(2) on the child's process group.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
                (child.wait().await?, true)
            }
        },
        None => (wait.await?, false),
    };
    let _ = (p1.await, p2.await);
    while let Ok(ev) = rx.try_recv() {
        send(&mut w, &ev).await?;
    }
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    send(
        &mut w,
        &Event::End {
            exit_code,
            timed_out,
        },
    )
    .await
}
