//! A terminal on another node, over a mesh or tunnel stream (`SandboxTerminal`,
//! `NodeTerminal`): the opener sends one JSON request line ([`open`]), the node that runs the
//! terminal reads it ([`read_request`]) and answers one JSON line ([`Answer`], [`answer`]);
//! then both ends carry terminal frames ([`super::tty`]) as they are.

use std::time::Duration;

use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};

use crate::reply::error::ApiError;

/// Longest request line read.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long the opener of a stream may take to send its request line.
pub const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// How long the node that runs the terminal may take to answer (it starts the command first).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The answer to a terminal request on a stream.
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
/// live as long as it (a sandbox's busy mark and command slot, on its own node).
pub struct Terminal {
    pub io: Box<dyn Conn>,
    pub early: Vec<u8>,
    pub guard: Option<Box<dyn Send>>,
}

/// The error codes a terminal's node sends, as static strings (anything else is
/// `terminal_error`).
fn known_code(code: &str) -> &'static str {
    match code {
        "not_running_here" => "not_running_here",
        "too_many_execs" => "too_many_execs",
        "too_many_terminals" => "too_many_terminals",
        "terminal_refused" => "terminal_refused",
        "terminal_disabled" => "terminal_disabled",
        "sandbox_unavailable" => "sandbox_unavailable",
        "bad_request" => "bad_request",
        _ => "terminal_error",
    }
}

/// Sends `request` on `io`, a fresh stream to `who` (a node), and reads the answer: the
/// terminal, or the refusal as the API answers it.
pub async fn open<S: Conn>(
    mut io: S,
    request: &impl Serialize,
    who: &str,
) -> Result<Terminal, ApiError> {
    let unreachable = |why: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("a terminal on {who}: {why}"),
        )
    };
    let mut line = serde_json::to_vec(request).map_err(|e| ApiError::internal(e.to_string()))?;
    line.push(b'\n');
    io.write_all(&line)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let answer = crate::netio::answer_line(&mut io, who, ANSWER_WITHIN)
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

/// Reads the request line of a terminal stream: `None` when none came in time (or it was
/// overlong: the stream is then reset), else the request or why it is not one.
pub async fn read_request<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Option<Result<T, ApiError>> {
    let read = crate::netio::read_line_bounded(reader, MAX_REQUEST_LINE);
    match tokio::time::timeout(REQUEST_WITHIN, read).await {
        Ok(Ok(Some(line))) => Some(
            serde_json::from_slice(&line)
                .map_err(|e| ApiError::bad_request(format!("terminal request: {e}"))),
        ),
        _ => None,
    }
}

/// Writes the answer line for `outcome`; false when the stream is gone.
pub async fn answer<T>(send: &mut quinn::SendStream, outcome: &Result<T, ApiError>) -> bool {
    let answer = match outcome {
        Ok(_) => Answer::Connected,
        Err(e) => Answer::Error {
            status: e.status.as_u16(),
            code: e.code.to_string(),
            message: e.message.clone(),
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    send.write_all(&out).await.is_ok()
}
