//! The HTTP listener: accept loop, one hyper connection task per client, graceful drain.
//!
//! Connections are served with upgrades enabled (WebSocket through the edge forwarder). The
//! drain is our own (hyper-util's `GracefulShutdown` cannot watch an upgradeable HTTP/1
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

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// [`DRAIN`] for in-flight requests.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; `recv` yields `None` once all are dropped.
    let (live_tx, mut live_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = service_fn(move |req| crate::http::handle(app.clone(), peer, req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let live = live_tx.clone();
        tokio::spawn(
            async move {
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
                drop(live);
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    drop(live_tx);
    tokio::select! {
        _ = live_rx.recv() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("drain timeout: closing remaining connections"),
    }
}

/// The address a client would use to reach `addr` (0.0.0.0 → 127.0.0.1).
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    a
}
