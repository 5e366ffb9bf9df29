//! Serving the streams other nodes open to this one: another center on the connection it
//! dialed ([`peer`]), or a center on an edge's tunnel ([`EdgeNode`], for the edge's own pods,
//! runner and sandbox ports).
//!
//! Each stream starts with a [`StreamHeader`](xpod_tunnel::proto::StreamHeader). `PodRequests` streams are keep-alive HTTP/1.1
//! connections ([`pod_requests`]): every request goes through the same request path as the TCP
//! listener ([`crate::http::handle`]) with a [`MeshHop`] built from its `x-xpod-hop` header and
//! its `x-xpod-client` as the peer (both removed first; a request without a valid `x-xpod-hop`
//! is answered 400). `Pod { pod_id, epoch, hops }` streams (one exchange each, from nodes of an
//! older version) and `Runner` streams are served by [`exchange`]. The owner authenticates and
//! authorizes the request itself (keys live in the shared store). Any other target resets the
//! stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt as _;
use xpod_routing::forward::headers as fwd_headers;
use xpod_tunnel::proto::Target;

use crate::app::App;
use xpod_routing::forward::MeshHop;

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
    let (header, rest) =
        match tokio::time::timeout(HEADER_TIMEOUT, xpod_tunnel::stream::accept(&mut recv)).await {
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
    serve_target(
        app,
        header.target,
        send,
        recv,
        rest,
        header.client_addr,
        from,
    )
    .await;
}

/// Serves one stream for `target` from `from` (a center's node id, or `center` on an edge's
/// tunnel): pod requests and the runner API through this node's request path, sandbox ports
/// through [`crate::sandbox::ports`], sandbox terminals through [`crate::sandbox::terminal`],
/// an edge device's terminal through [`crate::edges::terminal`]; any other target resets the
/// stream.
async fn serve_target(
    app: Arc<App>,
    target: Target,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: bytes::BytesMut,
    client_addr: Option<SocketAddr>,
    from: String,
) {
    let client = client_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    match target {
        Target::PodRequests => pod_requests(app, send, recv, rest, from).await,
        Target::Pod {
            pod_id,
            epoch,
            hops,
        } => {
            let hop = MeshHop {
                pod_id,
                hops,
                epoch,
                from,
            };
            exchange(app, send, recv, rest, hop, client).await;
        }
        Target::Runner { node, hops } => {
            let hop = crate::sandbox::internal::RunnerHop { node, hops };
            exchange(app, send, recv, rest, hop, client).await;
        }
        Target::SandboxPort { sandbox_id, port } => {
            crate::sandbox::ports::serve_stream(
                app,
                send,
                recv,
                rest,
                sandbox_id,
                port,
                client_addr,
            )
            .await;
        }
        Target::NodeTerminal { node } => {
            crate::edges::terminal::serve_stream(app, send, recv, rest, node, client_addr).await;
        }
        Target::SandboxTerminal { sandbox_id } => {
            crate::sandbox::terminal::serve_stream(app, send, recv, rest, sandbox_id, client_addr)
                .await;
        }
        other => {
            tracing::info!(peer = %from, target = ?other, "stream target not served; reset");
            let _ = send.reset(STREAM_REFUSED.into());
        }
    }
}

/// Serves a `PodRequests` stream (`rest`: bytes read past its header) from `from` (a center's
/// node id, or `center` on an edge's tunnel) until the sender closes it.
pub async fn pod_requests(
    app: Arc<App>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: bytes::BytesMut,
    from: String,
) {
    let io = TokioIo::new(tokio::io::join(
        std::io::Cursor::new(rest.freeze()).chain(recv),
        send,
    ));
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let (app, from) = (app.clone(), from.clone());
        async move {
            let h = req.headers_mut();
            let hop = h
                .remove(fwd_headers::HOP)
                .and_then(|v| fwd_headers::parse_hop(v.to_str().ok()?));
            let client = h
                .remove(fwd_headers::CLIENT)
                .and_then(|v| v.to_str().ok()?.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let Some((pod_id, epoch, hops)) = hop else {
                let e = crate::reply::error::ApiError::bad_request(format!(
                    "a request on a pod stream must name its pod, epoch and hops in {}",
                    fwd_headers::HOP
                ));
                return Ok(crate::reply::error::error_response(&e, "-"));
            };
            req.extensions_mut().insert(MeshHop {
                pod_id,
                hops,
                epoch,
                from,
            });
            crate::http::handle(app, client, req).await
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "pod request stream ended with an error");
    }
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

/// An edge's own node, serving the streams its centers open for it (see
/// [`crate::edges::services::NodeStreams`]): pod requests and the runner API through this
/// node's request path, sandbox ports through [`crate::sandbox::ports`]. Other targets reset.
pub struct EdgeNode(pub Arc<App>);

impl crate::edges::services::NodeStreams for EdgeNode {
    fn serve(
        &self,
        target: Target,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        rest: bytes::BytesMut,
        client_addr: Option<SocketAddr>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(serve_target(
            self.0.clone(),
            target,
            send,
            recv,
            rest,
            client_addr,
            "center".into(),
        ))
    }
}
