//! The supervisor's protocol on each connection the node opens over the control channel
//! ([`super::ctl`]): JSON lines. One connection per exec: the
//! client sends an [`ExecRequest`], then [`Input`] lines (stdin, end of stdin); the supervisor
//! answers with [`Event`] lines, the last one `end` (or `error`). Or one connection per port
//! connection: the client sends `{"connect": PORT}`, the supervisor dials `127.0.0.1:PORT` in
//! the sandbox and answers `connected` (then relays bytes both ways) or `error`. Or
//! `{"ping": true}`, answered `ready` (the node's start-up check). Or one connection per
//! terminal: `{"terminal": TerminalRequest}`, answered `connected` once the command runs in a
//! PTY (or `error`), then terminal frames both ways ([`super::tty`]).

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

/// A command to run in a pseudo-terminal (`{"terminal": …}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerminalRequest {
    /// The program and its arguments; empty: the sandbox's shell (`$SHELL`, else `/bin/bash`
    /// when there is one, else `/bin/sh`).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Added to the environment (`TERM` is `xterm-256color` unless given).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the sandbox's `/work`, or the edge's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// The window's size (1..=1000 each).
    pub rows: u16,
    pub cols: u16,
}

impl TerminalRequest {
    /// Checks the shape; the message names the problem.
    pub fn check(&self) -> Result<(), String> {
        super::tty::check_size(self.rows, self.cols)?;
        if self.cmd.len() > 256 || self.cmd.iter().any(|a| a.contains('\0') || a.len() > 4096) {
            return Err("cmd: at most 256 arguments of at most 4096 bytes, no NUL".into());
        }
        if self.cmd.first().is_some_and(String::is_empty) {
            return Err("cmd: the program is empty".into());
        }
        if self.env.len() > 64 {
            return Err("env: at most 64 variables".into());
        }
        for (k, v) in &self.env {
            let bad = k.is_empty()
                || k.len() > 128
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || k.as_bytes()[0].is_ascii_digit();
            if bad || v.contains('\0') || v.len() > 4096 {
                return Err(format!("env: bad variable {k:?}"));
            }
        }
        if let Some(c) = &self.cwd {
            if !c.starts_with('/') || c.contains('\0') || c.len() > 4096 {
                return Err(format!("cwd {c:?}: expected an absolute path"));
            }
        }
        Ok(())
    }
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
