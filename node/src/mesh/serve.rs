//! Serving the streams another center opens on the connection it dialed to this one.
//!
//! Each stream starts with a [`StreamHeader`]; `Pod { pod_id, epoch, hops }` streams are then
//! served as one HTTP/1.1 exchange through the same request path as the TCP listener
//! ([`crate::http::handle`]), with a [`MeshHop`] in the request's extensions and the original
//! client's address as the peer. The owner authenticates and authorizes the request itself
//! (keys live in the shared store). Any other target resets the stream.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt as _;
use xpod_tunnel::proto::Target;

use super::route::MeshHop;
use crate::app::App;
use crate::edges::services::read_header;

/// How long a peer may take to send a stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Application error code for streams this node refuses.
const STREAM_REFUSED: u32 = 1;

/// Accepts the streams of center `from`'s connection until it ends.
pub async fn peer(app: Arc<App>, conn: quinn::Connection, from: String) {
    tracing::info!(peer = %from, remote = %conn.remote_address(), "mesh connection accepted");
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(peer = %from, reason = %e, "mesh connection closed");
                return;
            }
        };
        tokio::spawn(stream(app.clone(), send, recv, from.clone()));
    }
}

async fn stream(
    app: Arc<App>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    from: String,
) {
    let (header, rest) = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(peer = %from, error = %e, "bad mesh stream; reset");
            let _ = send.reset(STREAM_REFUSED.into());
            return;
        }
        Err(_) => {
            tracing::warn!(peer = %from, "no stream header within {HEADER_TIMEOUT:?}; reset");
            let _ = send.reset(STREAM_REFUSED.into());
            return;
        }
    };
    let (pod_id, epoch, hops) = match header.target {
        Target::Pod {
            pod_id,
            epoch,
            hops,
        } => (pod_id, epoch, hops),
        Target::Runner { node, hops } => {
            let client = header
                .client_addr
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            let hop = crate::sandbox::internal::RunnerHop { node, hops };
            exchange(app, send, recv, rest, hop, client).await;
            return;
        }
        Target::SandboxPort { sandbox_id, port } => {
            crate::sandbox::ports::serve_stream(
                app,
                send,
                recv,
                rest,
                sandbox_id,
                port,
                header.client_addr,
            )
            .await;
            return;
        }
        other => {
            tracing::info!(peer = %from, target = ?other, "mesh stream target not served; reset");
            let _ = send.reset(STREAM_REFUSED.into());
            return;
        }
    };
    let client = header
        .client_addr
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let hop = MeshHop {
        pod_id,
        hops,
        epoch,
        from,
    };
    exchange(app, send, recv, rest, hop, client).await;
}

/// Serves one HTTP/1.1 exchange on a stream whose header was `Pod` or `Runner` (`rest`: bytes
/// read past the header): the request goes through [`crate::http::handle`] with `hop` (a
/// [`MeshHop`] or a [`crate::sandbox::internal::RunnerHop`]) in its extensions and `client` as
/// its peer.
pub async fn exchange<H: Clone + Send + Sync + 'static>(
    app: Arc<App>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: bytes::BytesMut,
    hop: H,
    client: std::net::SocketAddr,
) {
    let io = TokioIo::new(tokio::io::join(
        std::io::Cursor::new(rest.freeze()).chain(recv),
        send,
    ));
    let svc = service_fn(move |mut req| {
        req.extensions_mut().insert(hop.clone());
        crate::http::handle(app.clone(), client, req)
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(io, svc)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "mesh exchange ended with an error");
    }
}
