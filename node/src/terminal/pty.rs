//! A command in a pseudo-terminal, driven by terminal frames ([`super::tty`]) on a connection.
//! The sandbox's supervisor runs it for `/api/v1/sandboxes/{id}/terminal`, inside the sandbox
//! (its own `/dev/pts`) and with the sandbox's per-process limits; an edge runs it on the
//! device for `xpod nodes shell` (`crate::edges::terminal`), as the user xpod runs as.
//!
//! The PTY's slave side is opened from the master (`TIOCGPTPEER`), never by a path; the child
//! starts a new session with the slave as its controlling terminal, so job control, `^C` and
//! window-size signals behave as in any terminal. The relay keeps at most one data frame of
//! keystrokes and one of output in hand: a client that stops reading stops the command's
//! output (the PTY's buffer fills), not the node's memory. When the client goes, the master is
//! closed (the kernel hangs the session up), and what is still running after
//! [`HANGUP_GRACE`] is killed.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use super::tty::{Frame, FrameReader, MAX_DATA};
use super::TerminalRequest;

/// How long the command's output is still read after it exits (what it wrote last, and what
/// processes it left behind write before they notice the hangup).
pub const DRAIN: Duration = Duration::from_millis(300);
/// How long a command may take to end after the client went (and its terminal hung up) before
/// its process group is killed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// A command running in a PTY.
pub struct Session {
    master: AsyncFd<OwnedFd>,
    child: tokio::process::Child,
    pid: i32,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn set_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which points to a live one.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// A new PTY of `rows` × `cols`: (master, non-blocking; slave).
fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain descriptor calls; each descriptor is owned as soon as it exists.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(last_error());
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(last_error());
        }
        let s = libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            return Err(last_error());
        }
        let slave = OwnedFd::from_raw_fd(s);
        set_size(m, rows, cols)?;
        let flags = libc::fcntl(m, libc::F_GETFL);
        if flags < 0 || libc::fcntl(m, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(last_error());
        }
        Ok((master, slave))
    }
}

/// The program for an empty `cmd`: `$SHELL`, else bash when there is one, else sh.
fn default_shell(env: &std::collections::BTreeMap<String, String>) -> String {
    if let Some(s) = env
        .get("SHELL")
        .cloned()
        .or_else(|| std::env::var("SHELL").ok())
        .filter(|s| !s.is_empty())
    {
        return s;
    }
    if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash".into()
    } else {
        "/bin/sh".into()
    }
}

impl Session {
    /// Starts `req` in a new PTY (`cwd` unless the request names one). `limit` runs in the
    /// child before the command (the sandbox's rlimits); it must be async-signal-safe. The
    /// error says why it could not start.
    pub fn spawn(
        req: &TerminalRequest,
        cwd: &str,
        limit: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Result<Self, String> {
        req.check()?;
        let (master, slave) =
            open_pty(req.rows, req.cols).map_err(|e| format!("cannot open a terminal: {e}"))?;
        let (prog, args) = match req.cmd.split_first() {
            Some((p, a)) => (p.clone(), a.to_vec()),
            None => (default_shell(&req.env), Vec::new()),
        };
        let stdio = || {
            slave
                .try_clone()
                .map(Stdio::from)
                .map_err(|e| format!("cannot open a terminal: {e}"))
        };
        let mut cmd = tokio::process::Command::new(&prog);
        cmd.args(&args)
            .env("TERM", "xterm-256color")
            .envs(&req.env)
            .current_dir(req.cwd.as_deref().unwrap_or(cwd))
            .stdin(stdio()?)
            .stdout(stdio()?)
            .stderr(stdio()?)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (setsid, ioctl, setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(limit) = &limit {
                    limit();
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {prog:?}: {e}"))?;
        // The parent keeps no slave descriptor: the master reads EIO once the command and what
        // it started have all closed the terminal.
        drop(cmd);
        drop(slave);
        let pid = child.id().unwrap_or(0) as i32;
        // SAFETY: an OwnedFd's descriptor is open, and stays the same, for as long as it lives
        // (the AsyncFd owns it).
        let master = unsafe { AsyncFd::register(master) }
            .map_err(|e| format!("cannot watch the terminal: {e}"))?;
        Ok(Session { master, child, pid })
    }

    /// Relays between the PTY and `conn` (terminal frames; `early`: bytes of `conn` already
    /// read) until the command ends (an exit frame is sent) or the client goes.
    pub async fn relay<C>(mut self, conn: C, early: &[u8]) -> io::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(conn);
        let mut frames = FrameReader::with(early);
        let mut keys = BytesMut::new();
        let mut buf = vec![0u8; MAX_DATA];
        let mut status = None;
        let mut output_open = true;
        let drain = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(drain);
        let client_left = loop {
            if status.is_some() && !output_open {
                break false;
            }
            tokio::select! {
                r = self.master.readable(), if output_open => {
                    let mut ready = r?;
                    match ready.try_io(|fd| read_fd(fd.get_ref().as_raw_fd(), &mut buf)) {
                        // EIO: nothing has the terminal open any more.
                        Ok(Ok(0)) | Ok(Err(_)) => output_open = false,
                        Ok(Ok(n)) => {
                            let frame = Frame::Data(Bytes::copy_from_slice(&buf[..n]));
                            if wr.write_all(&frame.to_bytes()).await.is_err() {
                                break true;
                            }
                        }
                        Err(_would_block) => {}
                    }
                }
                r = self.master.writable(), if !keys.is_empty() => {
                    let mut ready = r?;
                    match ready.try_io(|fd| write_fd(fd.get_ref().as_raw_fd(), &keys)) {
                        Ok(Ok(n)) => keys.advance(n),
                        Ok(Err(_)) => keys.clear(),
                        Err(_would_block) => {}
                    }
                }
                f = frames.next(&mut rd), if keys.is_empty() && status.is_none() => match f {
                    Ok(Some(Frame::Data(b))) => keys.extend_from_slice(&b),
                    Ok(Some(Frame::Resize { rows, cols })) => {
                        // The kernel tells the foreground process group (SIGWINCH).
                        let _ = set_size(self.master.get_ref().as_raw_fd(), rows, cols);
                    }
                    // A client sends no exit; a bad frame or the end: the client is gone.
                    Ok(Some(Frame::Exit(_))) | Ok(None) | Err(_) => break true,
                },
                s = self.child.wait(), if status.is_none() => {
                    status = Some(s?);
                    drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                }
                () = &mut drain, if status.is_some() && output_open => output_open = false,
            }
        };
        if client_left {
            let Session {
                master,
                mut child,
                pid,
            } = self;
            drop(master);
            if tokio::time::timeout(HANGUP_GRACE, child.wait())
                .await
                .is_err()
                && pid > 0
            {
                // SAFETY: kill(2) on the command's process group (its session's first group).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = child.wait().await;
            }
            return Ok(());
        }
        let status = status.expect("the loop ends after the exit");
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        wr.write_all(&Frame::Exit(code).to_bytes()).await?;
        wr.shutdown().await
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read(2) into a live buffer of the length given.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last_error());
    }
    Ok(n as usize)
}

fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: write(2) from a live buffer of the length given.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    //! Real PTYs on this host (no sandbox needed: the supervisor's part is the same code).
    use super::*;

    fn req(cmd: &[&str], rows: u16, cols: u16) -> TerminalRequest {
        TerminalRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
            cwd: None,
            rows,
            cols,
        }
    }

    /// Runs `r`, sends `input` frames, returns (output, exit code).
    async fn run(r: TerminalRequest, input: Vec<Frame>) -> (String, Option<i32>) {
        let session = Session::spawn(&r, "/", None).unwrap();
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(async move { session.relay(theirs, &[]).await });
        let (mut rd, mut wr) = tokio::io::split(ours);
        for f in input {
            wr.write_all(&f.to_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut frames = FrameReader::default();
        let mut out = Vec::new();
        let mut code = None;
        while let Ok(Some(f)) = frames.next(&mut rd).await {
            match f {
                Frame::Data(b) => out.extend_from_slice(&b),
                Frame::Exit(c) => code = Some(c),
                Frame::Resize { .. } => panic!("a resize from the terminal"),
            }
        }
        relay.await.unwrap().unwrap();
        (String::from_utf8_lossy(&out).into_owned(), code)
    }

    #[tokio::test]
    async fn a_command_sees_a_terminal_of_its_size_and_its_exit_code_comes_back() {
        let (out, code) = run(
            req(&["sh", "-c", "test -t 0 && stty size && exit 7"], 33, 101),
            vec![],
        )
        .await;
        assert!(out.contains("33 101"), "{out:?}");
        assert_eq!(code, Some(7));
    }

    #[tokio::test]
    async fn keystrokes_go_in_and_a_resize_reaches_the_command() {
        let script = "read a; echo got:$a; read b; stty size; exit 0";
        let (out, code) = run(
            req(&["sh", "-c", script], 24, 80),
            vec![
                Frame::Data(Bytes::from_static(b"hello\r")),
                Frame::Resize {
                    rows: 50,
                    cols: 132,
                },
                Frame::Data(Bytes::from_static(b"\r")),
            ],
        )
        .await;
        assert!(out.contains("got:hello"), "{out:?}");
        assert!(out.contains("50 132"), "{out:?}");
        assert_eq!(code, Some(0));
    }

    #[tokio::test]
    async fn ctrl_c_interrupts_the_foreground_command() {
        // `sleep` in the foreground; ^C (the terminal's intr character) ends it with SIGINT.
        let (_, code) = run(
            req(&["sleep", "30"], 24, 80),
            vec![Frame::Data(Bytes::from_static(b"\x03"))],
        )
        .await;
        assert_eq!(code, Some(128 + libc::SIGINT));
    }

    #[tokio::test]
    async fn a_client_that_goes_hangs_the_command_up() {
        let session = Session::spawn(&req(&["sleep", "30"], 24, 80), "/", None).unwrap();
        let pid = session.pid;
        let (ours, theirs) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { session.relay(theirs, &[]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(ours);
        relay.await.unwrap().unwrap();
        // SAFETY: kill with signal 0 only checks for the process.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the command outlived its terminal");
    }

    #[test]
    fn a_command_that_cannot_start_is_named() {
        let Err(e) = Session::spawn(&req(&["/no/such/program"], 24, 80), "/", None) else {
            panic!("started");
        };
        assert!(e.contains("/no/such/program"), "{e}");
        let Err(e) = Session::spawn(&req(&["sh"], 0, 80), "/", None) else {
            panic!("started");
        };
        assert!(e.contains("rows and cols"), "{e}");
    }
}
