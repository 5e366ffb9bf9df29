//! The supervisor's protocol on each connection the node opens over the control channel
//! ([`super::ctl`]): JSON lines. One connection per exec: the
//! client sends an [`ExecRequest`], then [`Input`] lines (stdin, end of stdin); the supervisor
//! answers with [`Event`] lines, the last one `end` (or `error`). Or one connection per port
//! connection: the client sends `{"connect": PORT}`, the supervisor dials `127.0.0.1:PORT` in
//! the sandbox and answers `connected` (then relays bytes both ways) or `error`. Or
//! `{"ping": true}`, answered `ready` (the node's start-up check). Or one connection per
//! terminal: `{"terminal": TerminalRequest}` ([`crate::terminal::TerminalRequest`]), answered
//! `connected` once the command runs in a PTY (or `error`), then terminal frames both ways
//! ([`crate::terminal::tty`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A command to run in the sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments (looked up in `PATH`).
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox (default `/work`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Wall-clock limit; the process group is killed after it (default: none).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Client → supervisor after the request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Input {
    /// Bytes for the command's stdin (base64).
    Stdin(String),
    /// No more stdin.
    Eof,
}

/// Supervisor → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Event {
    Start {
        pid: u32,
    },
    /// Output bytes, base64.
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// `exit_code` is the code, or 128 + the signal that ended it.
    #[serde(rename_all = "camelCase")]
    End {
        exit_code: i32,
        timed_out: bool,
    },
    Error {
        message: String,
    },
    /// The answer to a `{"connect": port}` request: bytes are relayed from now on.
    Connected,
    /// The answer to a `{"ping": true}` request: the supervisor is up.
    Ready,
}
