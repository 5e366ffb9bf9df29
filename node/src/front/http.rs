//! The HTTP listener: accept loop, one hyper connection task per client, graceful drain. On a
//! center with a QUIC endpoint, a connection that starts with a TLS record is an edge's tunnel
//! over TCP (`xpod-tcp/1`, [`xpod_tunnel::endpoint::tcp`]) and goes there instead.
//! Connections are bounded per client address and in total (`http.max_connections_per_client`,
//! `http.max_connections`; `crate::conn_limit`).
//!
//! Connections speak HTTP/1.1 or HTTP/2 (prior knowledge on plain TCP, ALPN `h2` on TLS;
//! hyper-util's auto builder tells them apart by the connection preface), with the same
//! handlers. HTTP/1.1 is served with upgrades enabled (WebSocket through the edge forwarder);
//! HTTP/2 connections carry at most [`H2_MAX_STREAMS`] concurrent streams. The drain is our own (hyper-util's `GracefulShutdown` cannot watch an upgradeable HTTP/1
//! connection): every connection task watches a stop flag, tells hyper to finish the request
//! in flight and close, and holds a token whose drop the drain waits for. Connections already
//! upgraded to another protocol are not waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::app::App;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(30);
/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;
/// Concurrent streams (requests) one HTTP/2 connection may carry.
pub const H2_MAX_STREAMS: u32 = 256;

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// [`DRAIN`] for in-flight requests.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; `recv` yields `None` once all are dropped.
    let (live_tx, mut live_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    let limits = crate::conn_limit::ConnLimits::new(
        app.config.http.max_connections_per_client,
        app.config.http.max_connections,
    );
    loop {
        let room = tokio::select! {
            _ = &mut shutdown => break,
            room = limits.room() => room,
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = limits.admit(room, peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let live = live_tx.clone();
        let (app, stop) = (app.clone(), stop_rx.clone());
        tokio::spawn(
            async move {
                // A TLS record on the plain HTTP port: a tunnel connection over TCP (an edge
                // whose UDP is blocked), when this center has a QUIC endpoint.
                if let Some(entry) = app.tunnel_tcp.get() {
                    let mut first = [0u8; 1];
                    let peeked =
                        tokio::time::timeout(Duration::from_secs(30), stream.peek(&mut first))
                            .await;
                    if matches!(peeked, Ok(Ok(1))) && first[0] == TLS_HANDSHAKE {
                        // It keeps its connection slot (the limits per client and in total)
                        // for its whole life, not the drain token.
                        drop(live);
                        match entry.accept(stream, slot).await {
                            Ok(v) => tracing::info!(%peer, virtual_addr = %v, "tunnel connection over TCP"),
                            Err(e) => tracing::info!(%peer, error = %e, "TLS on the HTTP port that is no tunnel; closed"),
                        }
                        return;
                    }
                }
                serve_connection(app, stream, peer, false, stop, (live, slot)).await
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    // Streams that would run for ever (event streams) end now.
    app.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    drop(live_tx);
    tokio::select! {
        _ = live_rx.recv() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("drain timeout: closing remaining connections"),
    }
}

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on one connection until it ends; when `stop` turns
/// true the requests in flight finish and the connection closes. `token` is dropped at the end (the
/// drain waits for it).
pub async fn serve_connection<I, T>(
    app: Arc<App>,
    io: I,
    peer: SocketAddr,
    https: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
    token: T,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if https {
            req.extensions_mut().insert(crate::http::Https);
        }
        crate::http::handle(app.clone(), peer, req)
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(token);
}
