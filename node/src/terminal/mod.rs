//! Terminals: a command in a pseudo-terminal, reached over a connection (issue 20).
//!
//! - [`TerminalRequest`]: what to run and the window's size.
//! - [`pty`]: runs it in a PTY and relays terminal frames on a connection (the sandbox's
//!   supervisor, inside the sandbox; an edge, on the device).
//! - [`tty`]: the terminal frames (bytes, resize, exit).
//! - [`stream`]: a terminal on another node over a mesh or tunnel stream (one JSON request
//!   line, one JSON answer line, then frames).
//!
//! The WebSocket clients use is `crate::http::terminal`; a sandbox's terminal is opened by
//! `crate::sandbox::terminal`, an edge device's by `crate::edges::terminal`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod pty;
pub mod stream;
pub mod tty;

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
        tty::check_size(self.rows, self.cols)?;
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
