//! A terminal on an edge device (issue 20): `xpod nodes shell EDGE` for an admin and
//! `/{pod}/-/terminal` for the owner of a pod on the edge (the WebSocket is
//! `crate::http::terminal`, which checked who may).
//!
//! The node that took the WebSocket opens a `NodeTerminal { node }` stream to the edge
//! ([`open`]): on the edge's tunnel, or through the center holding it, which passes the stream
//! on unread ([`serve_stream`]). The request line is an [`EdgeRequest`]: the terminal and who
//! asked, for the edge's own log. The edge decides for itself: only when its configuration
//! says `[tunnel] terminal = true` (else 403 `terminal_disabled`), at most [`MAX_SESSIONS`] at
//! once, as the user xpod runs as, in its home directory, with no limits but the device's.
//! It logs each session's start and end (who, for which pod, how long); the cluster's audit
//! log gets the same from the node that took the WebSocket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, BufReader};
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use crate::reply::error::ApiError;
use crate::terminal::pty::Session;
use crate::terminal::stream::{self, Terminal};
use crate::terminal::TerminalRequest;

/// Terminals an edge runs at once.
pub const MAX_SESSIONS: usize = 4;

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// Figures for `/metrics` (an edge's): terminals running on this device.
pub fn figures() -> Vec<crate::metrics::Figure> {
    vec![crate::metrics::Figure::gauge(
        "xpod_device_terminals_open",
        "Terminals running on this edge device for the cluster.",
        SESSIONS.load(Ordering::Relaxed) as f64,
    )]
}

/// A terminal request to an edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeRequest {
    pub terminal: TerminalRequest,
    /// Who asked, as the node that took the WebSocket authenticated them (for the log).
    pub actor: String,
    /// The pod whose terminal it is, when it came through `/{pod}/-/terminal`.
    #[serde(default)]
    pub pod: Option<String>,
}

/// One of the edge's [`MAX_SESSIONS`] while alive.
struct Slot;
impl Slot {
    fn take() -> Option<Slot> {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_SESSIONS {
            SESSIONS.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot)
    }
}
impl Drop for Slot {
    fn drop(&mut self) {
        SESSIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens a terminal on edge `node` for `req` (on this node when it is that edge).
pub async fn open(
    app: &Arc<App>,
    node: &str,
    req: EdgeRequest,
    client: Option<SocketAddr>,
) -> Result<Terminal, ApiError> {
    if node == app.node_id {
        let (session, slot) = start(app, &req)?;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(run(session, slot, theirs, Vec::new(), req));
        return Ok(Terminal {
            io: Box::new(ours),
            early: Vec::new(),
            guard: None,
        });
    }
    let header = StreamHeader {
        target: Target::NodeTerminal {
            node: node.to_string(),
        },
        client_addr: client,
    };
    let (send, recv) = crate::sandbox::client::open_stream(app, node, header).await?;
    stream::open(tokio::io::join(recv, send), &req, &format!("edge {node}")).await
}

/// Starts the terminal here, if this node's configuration allows it.
fn start(app: &App, req: &EdgeRequest) -> Result<(Session, Slot), ApiError> {
    if app.config.role != xpod_config::Role::Edge {
        return Err(ApiError::conflict(format!(
            "node {} is a center: terminals are for edge devices",
            app.node_id
        )));
    }
    if !app.config.tunnel.terminal {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "terminal_disabled",
            format!(
                "edge {} does not allow terminals: its own configuration has [tunnel] terminal = false (XPOD_TUNNEL_TERMINAL)",
                app.node_id
            ),
        ));
    }
    req.terminal.check().map_err(ApiError::bad_request)?;
    let slot = Slot::take().ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_terminals",
            format!(
                "edge {} runs {MAX_SESSIONS} terminals already; close one",
                app.node_id
            ),
        )
    })?;
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| std::path::Path::new(h).is_dir())
        .unwrap_or_else(|| app.config.data_dir.display().to_string());
    let session = Session::spawn(&req.terminal, &home, None)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "terminal_refused", why))?;
    Ok((session, slot))
}

/// Runs a started terminal on `conn` and logs its start and end.
async fn run<C>(session: Session, slot: Slot, conn: C, early: Vec<u8>, req: EdgeRequest)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let actor: String = req
        .actor
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    let pod = req.pod.as_deref().unwrap_or("-");
    tracing::info!(target: "xpod::audit", %actor, pod, cmd = ?req.terminal.cmd.first(), "terminal opened on this device");
    let started = Instant::now();
    let outcome = session.relay(conn, &early).await;
    drop(slot);
    tracing::info!(
        target: "xpod::audit",
        %actor,
        pod,
        seconds = started.elapsed().as_secs(),
        ok = outcome.is_ok(),
        "terminal closed on this device"
    );
}

/// A `NodeTerminal` stream (`rest`: bytes read past its header): served when it is for this
/// edge; on a center holding that edge's tunnel, passed on; otherwise reset.
pub async fn serve_stream(
    app: Arc<App>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: bytes::BytesMut,
    node: String,
    client: Option<SocketAddr>,
) {
    let inbound = std::io::Cursor::new(rest.freeze()).chain(recv);
    if node == app.node_id {
        let mut reader = BufReader::new(inbound);
        let Some(req) = stream::read_request::<EdgeRequest, _>(&mut reader).await else {
            tracing::info!("a terminal stream without its request; reset");
            let _ = send.reset(1u32.into());
            return;
        };
        let started = req.and_then(|req| Ok((start(&app, &req)?, req)));
        if !stream::answer(&mut send, &started).await {
            return;
        }
        match started {
            Ok(((session, slot), req)) => {
                run(
                    session,
                    slot,
                    tokio::io::join(reader, send),
                    Vec::new(),
                    req,
                )
                .await;
            }
            Err(e) => {
                tracing::info!(reason = %e.message, "a terminal on this device refused");
                let _ = send.finish();
            }
        }
        return;
    }
    // A center passing it on to the edge whose tunnel it holds (one hop, no further).
    let Some(conn) = app
        .edges
        .get(&node)
        .filter(|_| app.config.role == xpod_config::Role::Center)
    else {
        let _ = send.reset(1u32.into());
        return;
    };
    let header = StreamHeader {
        target: Target::NodeTerminal { node: node.clone() },
        client_addr: client,
    };
    let opened = tokio::time::timeout(
        crate::sandbox::client::OPEN_TIMEOUT,
        xpod_tunnel::stream::open(&conn, &header),
    )
    .await;
    match opened {
        Ok(Ok((next_send, next_recv))) => {
            let mut quic = tokio::io::join(inbound, send);
            let mut next = tokio::io::join(next_recv, next_send);
            let _ = tokio::io::copy_bidirectional(&mut quic, &mut next).await;
        }
        _ => {
            tracing::info!(%node, "cannot pass a terminal stream on to the edge");
            let _ = send.reset(1u32.into());
        }
    }
}
