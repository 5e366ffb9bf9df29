//! Reaching a terminal in a sandbox wherever the sandbox runs ([`open`]), and the runner side
//! of a `SandboxTerminal` stream ([`serve_stream`]).
//!
//! On the sandbox's node the runner opens it ([`super::runner::Runner::terminal`]). From
//! another node it is a `SandboxTerminal` stream to that node (through the center holding an
//! edge's tunnel, which passes the stream on unread), speaking [`crate::terminal::stream`]:
//! the [`TerminalRequest`] as one JSON line, one JSON answer line, then terminal frames. The
//! node that took the client's WebSocket authenticated and authorized it
//! (`crate::http::terminal`); only centers open these streams (the mTLS mesh, an edge's own
//! tunnel), as for ports.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, BufReader};

use super::model::Sandbox;
use crate::app::App;
use crate::reply::error::ApiError;
use crate::terminal::stream::{self, Terminal};
use crate::terminal::TerminalRequest;

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
    let io = super::client::open_terminal(app, &sb.node, &sb.id, client).await?;
    stream::open(io, req, &format!("node {} (sandbox {})", sb.node, sb.id)).await
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
        let Some(req) = stream::read_request::<TerminalRequest, _>(&mut reader).await else {
            tracing::info!(sandbox = %id, "a terminal stream without its request; reset");
            let _ = send.reset(1u32.into());
            return;
        };
        let opened = match req {
            Ok(req) => match req.check() {
                Ok(()) => app
                    .runner
                    .terminal(&id, &req)
                    .await
                    .map_err(super::internal::err),
                Err(why) => Err(ApiError::bad_request(why)),
            },
            Err(e) => Err(e),
        };
        if !stream::answer(&mut send, &opened).await {
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
