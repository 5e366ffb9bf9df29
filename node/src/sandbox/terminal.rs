//! Reaching a terminal in a sandbox wherever the sandbox runs ([`open`]), and the runner side
//! of a `SandboxTerminal` stream ([`serve_stream`]).
//!
//! On the sandbox's node the runner opens it ([`super::runner::Runner::terminal`]). From
//! another node it is a `SandboxTerminal` stream to that node (through the center holding an
//! edge's tunnel, which passes the stream on unread): the opener sends the
//! [`TerminalRequest`] as one JSON line, the runner answers one JSON line ([`Answer`]), then
//! both ends relay terminal frames ([`super::tty`]) as they are. The node that took the
//! client's WebSocket authenticated and authorized it (`crate::http::terminal`); only centers
//! open these streams (the mTLS mesh, an edge's own tunnel), as for ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};

use super::model::Sandbox;
use super::proto::TerminalRequest;
use crate::app::App;
use crate::reply::error::ApiError;

/// Longest request line a runner reads.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long the opener of a stream may take to send its request line.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);

/// The runner's answer to a terminal request on a stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Answer {
    /// Terminal frames from now on.
    Connected,
    /// Refused: the status, code and message the client gets.
    Error {
        status: u16,
        code: String,
        message: String,
    },
}

/// A byte stream carrying terminal frames.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// An open terminal: its frames on `io` (`early`: frame bytes already read), and what must
/// live as long as it (the sandbox's busy mark and command slot, on its own node).
pub struct Terminal {
    pub io: Box<dyn Conn>,
    pub early: Vec<u8>,
    pub guard: Option<Box<dyn Send>>,
}

/// Opens a terminal running `req` in sandbox `sb` (here, or on its node; `client` is the
/// client's address for the stream header).
pub async fn open(
    app: &Arc<App>,
    sb: &Sandbox,
    req: &TerminalRequest,
    client: Option<SocketAddr>,
) -> Result<Terminal, ApiError> {
    if sb.node == app.node_id {
        let conn = app
            .runner
            .terminal(&sb.id, req)
            .await
            .map_err(super::internal::err)?;
        let (stream, guard) = conn.split();
        return Ok(Terminal {
            io: Box::new(stream),
            early: Vec::new(),
            guard: Some(guard),
        });
    }
    let mut io = super::client::open_terminal(app, &sb.node, &sb.id, client).await?;
    let unreachable = |why: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!(
                "the terminal of sandbox {} on node {}: {why}",
                sb.id, sb.node
            ),
        )
    };
    let mut line = serde_json::to_vec(req).map_err(|e| ApiError::internal(e.to_string()))?;
    line.push(b'\n');
    io.write_all(&line)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let who = format!("node {}", sb.node);
    let answer = super::events::answer_line(&mut io, &who)
        .await
        .map_err(|e| unreachable(format!("{e:#}")))?;
    match serde_json::from_slice::<Answer>(&answer) {
        Ok(Answer::Connected) => Ok(Terminal {
            io: Box::new(io),
            early: Vec::new(),
            guard: None,
        }),
        Ok(Answer::Error {
            status,
            code,
            message,
        }) => Err(ApiError::new(
            StatusCode::from_u16(status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            known_code(&code),
            message,
        )),
        Err(e) => Err(unreachable(format!("an answer that is not one: {e}"))),
    }
}

/// The error codes a runner sends, as static strings (anything else is `runner_error`).
fn known_code(code: &str) -> &'static str {
    match code {
        "not_running_here" => "not_running_here",
        "too_many_execs" => "too_many_execs",
        "terminal_refused" => "terminal_refused",
        "sandbox_unavailable" => "sandbox_unavailable",
        "bad_request" => "bad_request",
        _ => "runner_error",
    }
}

/// The runner side of a `SandboxTerminal` stream (`rest`: bytes read past its header): served
/// when the sandbox runs here; on a center, passed on towards the node that runs it.
pub async fn serve_stream(
    app: Arc<App>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: bytes::BytesMut,
    id: String,
    client: Option<SocketAddr>,
) {
    let inbound = std::io::Cursor::new(rest.freeze()).chain(recv);
    if app.runner.has(&id) {
        let mut reader = BufReader::new(inbound);
        let read = super::events::read_line_bounded(&mut reader, MAX_REQUEST_LINE);
        let line = match tokio::time::timeout(REQUEST_WITHIN, read).await {
            Ok(Ok(Some(line))) => line,
            _ => {
                tracing::info!(sandbox = %id, "a terminal stream without its request; reset");
                let _ = send.reset(1u32.into());
                return;
            }
        };
        let opened = match serde_json::from_slice::<TerminalRequest>(&line) {
            Ok(req) => match req.check() {
                Ok(()) => app
                    .runner
                    .terminal(&id, &req)
                    .await
                    .map_err(super::internal::err),
                Err(why) => Err(ApiError::bad_request(why)),
            },
            Err(e) => Err(ApiError::bad_request(format!("terminal request: {e}"))),
        };
        let answer = match &opened {
            Ok(_) => Answer::Connected,
            Err(e) => Answer::Error {
                status: e.status.as_u16(),
                code: e.code.to_string(),
                message: e.message.clone(),
            },
        };
        let mut out = serde_json::to_vec(&answer).unwrap_or_default();
        out.push(b'\n');
        if send.write_all(&out).await.is_err() {
            return;
        }
        let Ok(conn) = opened else {
            let _ = send.finish();
            return;
        };
        let (mut stream, _guard) = conn.split();
        let mut quic = tokio::io::join(reader, send);
        let _ = tokio::io::copy_bidirectional(&mut quic, &mut stream).await;
        return;
    }
    if app.config.role == xpod_config::Role::Edge {
        tracing::info!(sandbox = %id, "a terminal stream for a sandbox this edge does not run; reset");
        let _ = send.reset(1u32.into());
        return;
    }
    // A center passing it on to the node that runs it.
    let node = match super::model::get(app.meta.as_ref(), &id).await {
        Ok(Some((sb, _))) if sb.node != app.node_id && !sb.node.is_empty() => sb.node,
        _ => {
            let _ = send.reset(1u32.into());
            return;
        }
    };
    match super::client::open_terminal(&app, &node, &id, client).await {
        Ok(mut next) => {
            let mut quic = tokio::io::join(inbound, send);
            let _ = tokio::io::copy_bidirectional(&mut quic, &mut next).await;
        }
        Err(e) => {
            tracing::info!(sandbox = %id, %node, error = %e.message, "cannot pass a terminal stream on");
            let _ = send.reset(1u32.into());
        }
    }
}
