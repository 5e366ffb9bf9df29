//! Terminals over a WebSocket (issue 20), served by whichever node took the request; the
//! terminal itself runs where the sandbox does ([`crate::sandbox::terminal`]) or on the edge
//! device ([`crate::edges::terminal`]):
//! - `GET /api/v1/sandboxes/{id}/terminal` ([`sandbox`]): what exec needs, the sandbox
//!   owner's key with the `sandbox` scope, or admin;
//! - `GET /.cluster/nodes/{nodeId}/terminal` ([`node`]): an admin, to an edge;
//! - `GET /{pod}/-/terminal` ([`pod`]): an admin or a key that may write the pod, to the edge
//!   that holds it.
//!
//! An edge opens one only when its own configuration allows it. The query names the command
//! and the window: `cmd` (repeated: the program, then each argument; none: the shell), `cwd`,
//! `rows` and `cols` (default 24 × 80). The key comes as for any API call, or — a browser's
//! WebSocket cannot send headers — as the subprotocol `xpod.key.<key>` offered next to
//! [`SUBPROTOCOL`], the one answered. Once upgraded, the WebSocket carries
//! - binary messages both ways: the terminal's bytes (keystrokes in, output out);
//! - text messages from the client: `{"resize":{"rows":R,"cols":C}}` (anything else closes
//!   the socket with 1003 and the reason);
//! - one text message from the server when the command ends, `{"exit":{"code":N}}`, then a
//!   normal close.
//!
//! The terminal is opened before the `101` answer, so every refusal (no such sandbox, not
//! running, no command slot, a program that does not exist) is an ordinary HTTP error.
//! Bounds: messages of at most [`MAX_MESSAGE`]; no terminal bytes either way for
//! [`IDLE`] closes it; the key is read again every [`KEY_RECHECK`] and a revoked or expired
//! key closes it (1008); the sandbox's command slots and limits hold as for exec, an edge's
//! own bound on its terminals too. Every session is audited when it starts
//! (`sandbox.terminal`, `node.terminal`) and ends (`….end`: how long, the exit code or why it
//! ended).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use xpod_storage::meta::{self, NewAudit};

use super::Ctx;
use crate::app::App;
use crate::auth::Principal;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::terminal::stream::Terminal;
use crate::terminal::tty::{Frame, FrameReader};
use crate::terminal::TerminalRequest;

/// A pod's terminal, under the pod.
pub const POD_PATH: &str = "/-/terminal";
/// Largest WebSocket message taken from a client.
pub const MAX_MESSAGE: usize = 1 << 20;
/// A terminal with no bytes either way for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// How often the caller's key is read again (a revoked key ends its terminals).
pub const KEY_RECHECK: Duration = Duration::from_secs(10);
/// How often the server pings (a client that vanished is noticed).
const PING_EVERY: Duration = Duration::from_secs(30);

/// Kinds of terminal ([`Session::kind`]) and how sessions end ([`End::label`]), for `/metrics`.
const KINDS: [&str; 2] = ["sandbox", "node"];
const ENDS: [&str; 6] = [
    "exit",
    "client_left",
    "idle",
    "key_revoked",
    "bad_message",
    "terminal_lost",
];
/// Terminals open on this node, by kind.
static OPEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Terminal sessions ended on this node, by kind and how.
static ENDED: [[AtomicU64; 6]; 2] = [
    [const { AtomicU64::new(0) }; 6],
    [const { AtomicU64::new(0) }; 6],
];

/// Figures for `/metrics`: terminals open here, and sessions ended by how.
pub fn figures() -> Vec<crate::metrics::Figure> {
    use crate::metrics::Figure;
    let mut out = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        out.push(
            Figure::gauge(
                "xpod_terminals_open",
                "Terminal WebSockets open on this node (sandbox: a sandbox's; node: an edge device's).",
                OPEN[k].load(Ordering::Relaxed) as f64,
            )
            .with("kind", *kind),
        );
        for (e, ended) in ENDS.iter().enumerate() {
            out.push(
                Figure::counter(
                    "xpod_terminal_sessions_total",
                    "Terminal sessions this node served, by how they ended.",
                    ENDED[k][e].load(Ordering::Relaxed),
                )
                .with("kind", *kind)
                .with("ended", *ended),
            );
        }
    }
    out
}

/// The terminal asked for in the query. The message names the problem.
fn parse_query(query: &str) -> Result<TerminalRequest, String> {
    let mut req = TerminalRequest {
        cmd: Vec::new(),
        env: Default::default(),
        cwd: None,
        rows: 24,
        cols: 80,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("query `{k}`: not UTF-8"))?
            .into_owned();
        let size = |v: &str| {
            v.parse::<u16>()
                .map_err(|_| format!("query `{k}`: expected 1..=1000, got {v:?}"))
        };
        match k {
            "cmd" => req.cmd.push(v),
            "cwd" => req.cwd = Some(v),
            "rows" => req.rows = size(&v)?,
            "cols" => req.cols = size(&v)?,
            other => {
                return Err(format!(
                    "unknown query parameter `{other}` (expected cmd, cwd, rows, cols)"
                ))
            }
        }
    }
    req.check()?;
    Ok(req)
}

/// The subprotocol a terminal speaks, answered when the client offers it (a browser that
/// offers subprotocols — the key, `xpod.key.…`, is one — needs one answered).
pub const SUBPROTOCOL: &str = "xpod.terminal";

/// The `Sec-WebSocket-Accept` value for a WebSocket upgrade request, and whether the client
/// offered [`SUBPROTOCOL`]; 426 for anything else.
fn websocket_accept(req: &Request<Incoming>, what: &str) -> Result<(String, bool), ApiError> {
    let h = req.headers();
    let is_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let offered = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    match (is_ws, h.get("sec-websocket-key")) {
        (true, Some(key)) => Ok((
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            offered,
        )),
        _ => Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("{what} is a WebSocket: send an Upgrade: websocket request"),
        )
        .with_header(header::UPGRADE, "websocket")),
    }
}

/// `GET /api/v1/sandboxes/{id}/terminal` for a sandbox the caller may run commands in
/// (`sb`, checked by the caller).
pub async fn sandbox(
    ctx: &Ctx,
    sb: crate::sandbox::model::Sandbox,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let term = parse_query(req.uri().query().unwrap_or("")).map_err(ApiError::bad_request)?;
    let accept = websocket_accept(&req, "a terminal")?;
    let terminal = crate::sandbox::terminal::open(&ctx.app, &sb, &term, Some(ctx.peer)).await?;
    let target = format!("sandbox:{}", sb.id);
    ctx.audit(
        "sandbox.terminal",
        &target,
        json!({"cmd": term.cmd.first(), "rows": term.rows, "cols": term.cols,
               "client": ctx.peer.ip().to_string()}),
    )
    .await;
    upgrade(ctx, req, accept, terminal, target, "sandbox.terminal.end")
}

/// `GET /.cluster/nodes/{nodeId}/terminal`: a terminal on an edge device, for an admin
/// (checked by the caller). The edge's own configuration decides whether it opens.
pub async fn node(
    ctx: &Ctx,
    node_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    edge(ctx, node_id, None, req).await
}

/// `GET /{pod}/-/terminal` (here, whoever owns the pod): a terminal on the edge device that
/// holds the pod, for an admin or a key that may write the pod. API keys only.
pub async fn pod(
    app: Arc<App>,
    peer: std::net::SocketAddr,
    trace_id: &str,
    pod_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let principal = crate::auth::authenticate(
        req.headers(),
        &app.keys,
        app.meta.as_ref(),
        meta::now_millis(),
    )
    .await?;
    match principal.pod_access(pod_id) {
        Some(crate::auth::Access::Write) => {}
        _ if matches!(principal, Principal::Anonymous) => {
            return Err(ApiError::unauthorized(format!(
                "the terminal of pod {pod_id} needs an API key that may write the pod, or an admin key"
            )))
        }
        _ => {
            return Err(ApiError::forbidden(format!(
                "this API key may not open the terminal of pod {pod_id}: that needs write access to the pod, or admin"
            )))
        }
    }
    let rec = app
        .meta
        .get_pod(pod_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pod {pod_id} not found")))?;
    let ctx = Ctx {
        app,
        trace_id: trace_id.to_string(),
        principal,
        peer,
        rejected: None,
    };
    edge(&ctx, &rec.node_id, Some(pod_id), req).await
}

/// A terminal on edge `node_id` (for `pod`, when it came through the pod's path).
async fn edge(
    ctx: &Ctx,
    node_id: &str,
    pod: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let rec = ctx
        .app
        .meta
        .get_node(node_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("node {node_id} not found")))?;
    if rec.node_type != meta::NodeType::Edge {
        let what = match pod {
            Some(p) => format!("pod {p} is on center {node_id}"),
            None => format!("node {node_id} is a center"),
        };
        return Err(ApiError::conflict(format!(
            "{what}: terminals are for edge devices"
        )));
    }
    let term = parse_query(req.uri().query().unwrap_or("")).map_err(ApiError::bad_request)?;
    let accept = websocket_accept(&req, "a terminal")?;
    let edge_req = crate::edges::terminal::EdgeRequest {
        terminal: term.clone(),
        actor: ctx.principal.actor(),
        pod: pod.map(str::to_string),
    };
    let terminal =
        crate::edges::terminal::open(&ctx.app, node_id, edge_req, Some(ctx.peer)).await?;
    let target = format!("node:{node_id}");
    ctx.audit(
        "node.terminal",
        &target,
        json!({"pod": pod, "cmd": term.cmd.first(), "rows": term.rows, "cols": term.cols,
               "client": ctx.peer.ip().to_string()}),
    )
    .await;
    upgrade(ctx, req, accept, terminal, target, "node.terminal.end")
}

/// Answers `101` and runs the session on the upgraded connection.
fn upgrade(
    ctx: &Ctx,
    mut req: Request<Incoming>,
    (accept, offered): (String, bool),
    terminal: Terminal,
    target: String,
    end_action: &'static str,
) -> Result<Response<Body>, ApiError> {
    let upgrade = hyper::upgrade::on(&mut req);
    let session = Session {
        app: ctx.app.clone(),
        principal: ctx.principal.clone(),
        trace_id: ctx.trace_id.clone(),
        target,
        end_action,
    };
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "terminal upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        session.run(ws, terminal).await;
    });
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept);
    if offered {
        b = b.header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    }
    b.body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A client's control message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    resize: Size,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    rows: u16,
    cols: u16,
}

/// How a session ended, for the audit, the close frame and the metrics.
enum End {
    Exit(i32),
    ClientLeft,
    Idle,
    KeyRevoked,
    BadMessage(String),
    TerminalLost(String),
}

impl End {
    /// The index of its label in [`ENDS`].
    fn label(&self) -> usize {
        match self {
            End::Exit(_) => 0,
            End::ClientLeft => 1,
            End::Idle => 2,
            End::KeyRevoked => 3,
            End::BadMessage(_) => 4,
            End::TerminalLost(_) => 5,
        }
    }
}

/// One terminal session: who, for the audit and the key recheck.
struct Session {
    app: Arc<App>,
    principal: Principal,
    trace_id: String,
    target: String,
    end_action: &'static str,
}

impl Session {
    /// The index of its kind in [`KINDS`].
    fn kind(&self) -> usize {
        usize::from(!self.end_action.starts_with("sandbox."))
    }

    async fn run<S>(self, ws: tokio_tungstenite::WebSocketStream<S>, terminal: Terminal)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let started = Instant::now();
        OPEN[self.kind()].fetch_add(1, Ordering::Relaxed);
        let (mut tx, mut rx) = ws.split();
        let Terminal { io, early, guard } = terminal;
        let (mut term_rd, mut term_wr) = tokio::io::split(io);
        let mut frames = FrameReader::with(&early);
        // Milliseconds since `started` of the last terminal bytes, either way.
        let active = AtomicU64::new(0);
        let touch = || active.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // Three loops, so that neither direction waits for the other: keys (client → terminal),
        // output (terminal → client, and pings) and the watch (idle, the key). The first to
        // end ends the session.
        let keys = async {
            let mut keys_open = true;
            loop {
                let m = match rx.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(_)) | None => return End::ClientLeft,
                };
                let frame = match m {
                    Message::Binary(b) if !b.is_empty() => {
                        touch();
                        Frame::Data(b)
                    }
                    Message::Text(t) => {
                        let size = match serde_json::from_str::<Control>(&t) {
                            Ok(c) => c.resize,
                            Err(e) => {
                                return End::BadMessage(format!(
                                "text messages are {{\"resize\":{{\"rows\":R,\"cols\":C}}}}: {e}"
                            ))
                            }
                        };
                        if let Err(e) = crate::terminal::tty::check_size(size.rows, size.cols) {
                            return End::BadMessage(e);
                        }
                        Frame::Resize {
                            rows: size.rows,
                            cols: size.cols,
                        }
                    }
                    Message::Close(_) => return End::ClientLeft,
                    _ => continue,
                };
                // A terminal that no longer takes keys has ended: its exit frame is still to
                // be read (by the output loop).
                if keys_open && term_wr.write_all(&frame.to_bytes()).await.is_err() {
                    keys_open = false;
                }
            }
        };
        let output = async {
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.tick().await;
            loop {
                tokio::select! {
                    f = frames.next(&mut term_rd) => match f {
                        Ok(Some(Frame::Data(b))) => {
                            touch();
                            if tx.send(Message::Binary(b)).await.is_err() {
                                return End::ClientLeft;
                            }
                        }
                        Ok(Some(Frame::Exit(code))) => return End::Exit(code),
                        Ok(Some(Frame::Resize { .. })) => {
                            return End::TerminalLost("the terminal sent a resize".into())
                        }
                        Ok(None) => {
                            return End::TerminalLost("it closed without an exit code".into())
                        }
                        Err(e) => return End::TerminalLost(e.to_string()),
                    },
                    _ = ping.tick() => if tx.send(Message::Ping(Bytes::new())).await.is_err() {
                        return End::ClientLeft;
                    },
                }
            }
        };
        let watch = async {
            let mut every = tokio::time::interval(KEY_RECHECK);
            every.tick().await;
            loop {
                every.tick().await;
                let last = Duration::from_millis(active.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) >= IDLE {
                    return End::Idle;
                }
                if !self.key_still_valid().await {
                    return End::KeyRevoked;
                }
            }
        };
        let end = tokio::select! {
            e = keys => e,
            e = output => e,
            e = watch => e,
        };
        drop((term_rd, term_wr, guard));
        OPEN[self.kind()].fetch_sub(1, Ordering::Relaxed);
        ENDED[self.kind()][end.label()].fetch_add(1, Ordering::Relaxed);
        let (code, reason, details) = match &end {
            End::Exit(c) => {
                let text = json!({"exit": {"code": c}}).to_string();
                let _ = tx.send(Message::Text(text.into())).await;
                (
                    CloseCode::Normal,
                    "exited".to_string(),
                    json!({"exitCode": c}),
                )
            }
            End::ClientLeft => (
                CloseCode::Normal,
                String::new(),
                json!({"ended": "client left"}),
            ),
            End::Idle => (
                CloseCode::Normal,
                format!("idle for {} minutes", IDLE.as_secs() / 60),
                json!({"ended": "idle"}),
            ),
            End::KeyRevoked => (
                CloseCode::Policy,
                "the API key was revoked or expired".to_string(),
                json!({"ended": "key revoked"}),
            ),
            End::BadMessage(why) => (
                CloseCode::Unsupported,
                why.clone(),
                json!({"ended": "bad message"}),
            ),
            End::TerminalLost(why) => {
                tracing::info!(target = %self.target, why, "a terminal ended without its exit code");
                (
                    CloseCode::Error,
                    format!("the terminal was lost: {why}"),
                    json!({"ended": "terminal lost"}),
                )
            }
        };
        if !matches!(end, End::ClientLeft) {
            // A close reason is at most 123 bytes.
            let reason: String = reason.chars().take(100).collect();
            let close = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tx.send(Message::Close(Some(close))).await;
        }
        let mut details = details;
        details["seconds"] = json!(started.elapsed().as_secs());
        self.audit_end(details).await;
    }

    /// Whether the key that opened the terminal still works (a store that cannot be read
    /// changes nothing: nobody can revoke a key then either).
    async fn key_still_valid(&self) -> bool {
        let Principal::Key(k) = &self.principal else {
            return true;
        };
        match self.app.keys.get(self.app.meta.as_ref(), &k.key_id).await {
            Ok(Some(r)) => {
                r.revoked_at.is_none() && r.expires_at.is_none_or(|e| e > meta::now_millis())
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn audit_end(&self, details: serde_json::Value) {
        let entry = NewAudit {
            at: meta::now_millis(),
            actor: self.principal.actor(),
            action: self.end_action.to_string(),
            target: self.target.clone(),
            details,
            trace_id: self.trace_id.clone(),
        };
        if let Err(e) = self.app.meta.append_audit(&entry).await {
            self.app.metrics.audit_failed();
            tracing::error!(error = %e, action = self.end_action, "audit entry lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_command_and_the_window() {
        let r = parse_query("cmd=ls&cmd=-l+%2Fwork&rows=40&cols=120&cwd=%2Ftmp").unwrap();
        assert_eq!(r.cmd, ["ls", "-l /work"]);
        assert_eq!((r.rows, r.cols), (40, 120));
        assert_eq!(r.cwd.as_deref(), Some("/tmp"));
        let r = parse_query("").unwrap();
        assert!(r.cmd.is_empty());
        assert_eq!((r.rows, r.cols), (24, 80));
        for (q, want) in [
            ("rows=0", "rows and cols must be 1..=1000"),
            ("cols=70000", "query `cols`: expected 1..=1000"),
            ("shell=bash", "unknown query parameter `shell`"),
            ("cmd=", "the program is empty"),
            ("cwd=work", "expected an absolute path"),
            ("cmd=%ff", "not UTF-8"),
        ] {
            let e = parse_query(q).unwrap_err();
            assert!(e.contains(want), "{q}: {e}");
        }
    }
}
