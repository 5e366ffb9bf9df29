//! An interactive terminal from this one to a terminal WebSocket of the API
//! (`xpod sandbox shell`, `xpod nodes shell`; see `crate::http::terminal` for what the socket
//! carries).
//!
//! When stdin is a terminal it is put in raw mode (keys go to the remote terminal as typed,
//! `^C` included) and restored on the way out; this terminal's size is sent at the start and
//! on every `SIGWINCH`. When stdin is not a terminal (a script, a pipe), its bytes are sent as
//! they are and its end becomes `^D`, so `echo 'make; exit' | xpod sandbox shell ID` works.
//! The exit code is the remote command's (255 when the terminal ended without one).

use std::io::Write as _;
use std::os::fd::AsRawFd as _;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use super::remote::Remote;

/// The query naming a command (none: the shell) and a working directory.
pub(crate) fn query(cmd: &[String], cwd: Option<&str>) -> String {
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut query: Vec<String> = cmd.iter().map(|c| format!("cmd={}", enc(c))).collect();
    if let Some(c) = cwd {
        query.push(format!("cwd={}", enc(c)));
    }
    query.join("&")
}

/// The window size of the terminal on `fd` (rows, cols), if it is one.
fn window_size(fd: i32) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer, which points to a live one.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row.min(1000), ws.ws_col.min(1000)))
}

/// Raw mode on stdin while alive; the old settings come back on drop.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: tcgetattr/tcsetattr on stdin with live termios structs.
        unsafe {
            let mut old: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut old) != 0 {
                return None;
            }
            let mut raw = old;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode(old))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe {
            libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.0);
        }
    }
}

/// The message of an error answer's JSON body, or the body.
fn error_message(body: Option<&[u8]>) -> String {
    let body = body.unwrap_or_default();
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Opens the terminal WebSocket at `path` (a query is added: `rows`, `cols`, and `query`),
/// relays this terminal to it until it ends, and returns the remote exit code.
pub(crate) async fn run(remote: &Remote, path: &str, query: &str) -> anyhow::Result<i32> {
    let stdin_tty = window_size(std::io::stdin().as_raw_fd()).is_some();
    let (rows, cols) = window_size(std::io::stdout().as_raw_fd()).unwrap_or((24, 80));
    let base = remote.server.trim_end_matches('/');
    let Some(authority) = base.strip_prefix("http://") else {
        anyhow::bail!(
            "--server `{base}`: expected http://HOST:PORT (https is not supported by the CLI yet)"
        );
    };
    let sep = if query.is_empty() { "" } else { "&" };
    let url = format!("ws://{authority}{path}?rows={rows}&cols={cols}{sep}{query}");
    let mut req = url
        .as_str()
        .into_client_request()
        .context("the terminal's URL")?;
    if let Some(k) = super::remote::key(remote) {
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {k}").parse().context("the API key")?,
        );
    }
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let (ws, _) = match tokio_tungstenite::client_async(req, tcp).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            anyhow::bail!(
                "{} {}: {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                error_message(resp.body().as_deref())
            );
        }
        Err(e) => return Err(e).context("opening the terminal"),
    };
    let raw = if stdin_tty { RawMode::enter() } else { None };
    let (mut tx, mut rx) = ws.split();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    // Stdin is read by a thread of its own (it may be a terminal, a pipe or a file); a few
    // chunks wait in the channel at most.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            let n = std::io::Read::read(&mut stdin, &mut buf).unwrap_or(0);
            if keys_tx.blocking_send(buf[..n].to_vec()).is_err() || n == 0 {
                return;
            }
        }
    });
    let mut stdin_open = true;
    let mut code = None;
    let mut why = None;
    loop {
        tokio::select! {
            chunk = keys.recv(), if stdin_open => {
                let chunk = chunk.unwrap_or_default();
                let bytes = if chunk.is_empty() {
                    stdin_open = false;
                    if stdin_tty { continue }
                    // The end of piped input is what ^D at a line's start means.
                    b"\x04".to_vec()
                } else {
                    chunk
                };
                if tx.send(Message::Binary(bytes.into())).await.is_err() {
                    break;
                }
            }
            _ = winch.recv() => {
                if let Some((rows, cols)) = window_size(std::io::stdout().as_raw_fd()) {
                    let text = json!({"resize": {"rows": rows, "cols": cols}}).to_string();
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&b)?;
                    out.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(c) = serde_json::from_str::<Value>(&t).ok().and_then(|v| v["exit"]["code"].as_i64()) {
                        code = Some(c as i32);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    why = frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty() && r != "exited");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    why = Some(e.to_string());
                    break;
                }
                None => break,
            }
        }
    }
    drop(raw);
    match code {
        Some(c) => Ok(c),
        None => {
            eprintln!(
                "\r\nxpod: the terminal ended without an exit code{}",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
            Ok(255)
        }
    }
}
