//! A center's TCP port forwards (`[[tunnel.forwards]]`) and the pieces TLS passthrough shares.
//!
//! Each forward binds its own TCP listener (at start-up: a port that cannot be bound stops the
//! node with an error naming it; at runtime, `crate::reload` adds, retargets and stops them). Every accepted connection gets a new QUIC stream on the tunnel
//! of the forward's edge, starting with a [`StreamHeader`] `Tcp { service }` and the client's
//! address; then bytes are relayed both ways unchanged until both directions are done. An edge
//! whose tunnel this center does not hold, or a stream that cannot be opened within
//! [`OPEN_TIMEOUT`], closes the client's connection at once. The edge resets the stream for a
//! service it does not publish as `kind = "tcp"`, which also closes the client's connection.
//!
//! Tasks: [`accept_loop`] owns its connections' tasks (a `JoinSet`): it ends when `stop` turns
//! true and then aborts the connections still open, so nothing outlives the node's shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use xpod_config::TunnelForward;
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use xpod_routing::forward::OPEN_TIMEOUT;

/// Connections one client address may hold open on one forward; more are closed at once.
pub const PER_CLIENT: usize = 256;
/// Connections one forward holds open at most (each edge also has its relay budget).
pub const PER_FORWARD: usize = 10_000;

/// Accepts on `listener` until `stop` is true, running `handle` for each connection in a task
/// this loop owns; the tasks still running `drain` after the stop are aborted. `limits` bound
/// the connections per client address (over: closed at once) and in total (full: not accepting).
pub(crate) async fn accept_loop<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    drain: std::time::Duration,
    limits: crate::conn_limit::ConnLimits,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let mut conns = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let room = tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
                continue;
            }
            room = limits.room() => room,
        };
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Some(slot) = limits.admit(room, peer.ip()) else {
                        tracing::debug!(?local, %peer, "{what}: too many connections from this address; closed");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let conn = handle(tcp, peer);
                    conns.spawn(async move {
                        let _slot = slot;
                        conn.await
                    });
                }
                Err(e) => {
                    // E.g. too many open files: do not spin.
                    tracing::warn!(?local, error = %e, "{what}: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::debug!(?local, open = conns.len(), "{what}: listener stopped");
    drop(listener);
    if !drain.is_zero() {
        let _ =
            tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    }
    conns.shutdown().await;
}

/// Opens a stream to edge `node` with `header`, writes `prefix` (bytes already read from the
/// client) and relays `tcp` and the stream until both directions are done. Any failure before
/// the relay drops `tcp` (the client sees its connection closed).
pub(crate) async fn relay_to_edge(
    app: &App,
    node: &str,
    header: StreamHeader,
    prefix: &[u8],
    tcp: TcpStream,
) {
    let peer = header.client_addr;
    let Some(conn) = app.edges.get(node) else {
        tracing::info!(%node, ?peer, "no tunnel to this edge; connection closed");
        return;
    };
    let Some(_permit) = app.edges.relay_permit(node) else {
        tracing::warn!(%node, ?peer, "the edge's relay budget is spent; connection closed");
        return;
    };
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        let (mut send, recv) = xpod_tunnel::stream::open(&conn, &header)
            .await
            .map_err(|e| e.to_string())?;
        if !prefix.is_empty() {
            send.write_all(prefix).await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>((send, recv))
    })
    .await;
    let (send, recv) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%node, error = %e, "opening a stream to the edge failed; connection closed");
            return;
        }
        Err(_) => {
            tracing::info!(%node, "no stream to the edge within {OPEN_TIMEOUT:?}; connection closed");
            return;
        }
    };
    let idle = app.config.tunnel.relay_idle();
    let limits = super::forward::limits(app, node);
    let (up, down) = super::relay::relay(tcp, send, recv, idle, limits).await;
    tracing::debug!(%node, up, down, "relay to the edge done");
}

/// Binds every forward's listener (an error names the entry's address).
pub async fn bind(forwards: &[TunnelForward]) -> anyhow::Result<Vec<(TunnelForward, TcpListener)>> {
    use anyhow::Context as _;
    let mut out = Vec::with_capacity(forwards.len());
    for f in forwards {
        let l = TcpListener::bind(f.listen).await.with_context(|| {
            format!(
                "binding tunnel.forwards listen {} (node {}, service {})",
                f.listen, f.node, f.service
            )
        })?;
        out.push((f.clone(), l));
    }
    Ok(out)
}

/// Serves one forward until `stop`; each connection goes where `forward` says when it arrives
/// (`crate::reload` may change the target while it runs).
pub async fn serve(
    app: Arc<App>,
    forward: Arc<std::sync::RwLock<TunnelForward>>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    {
        let f = forward.read().unwrap_or_else(|e| e.into_inner());
        tracing::info!(listen = %f.listen, node = %f.node, service = %f.service, "TCP forward serving");
    }
    accept_loop(
        "tcp forward",
        listener,
        stop,
        std::time::Duration::ZERO,
        crate::conn_limit::ConnLimits::new(PER_CLIENT, PER_FORWARD),
        move |tcp, peer| {
            let app = app.clone();
            let (node, service) = {
                let f = forward.read().unwrap_or_else(|e| e.into_inner());
                (f.node.clone(), f.service.clone())
            };
            async move {
                let header = StreamHeader {
                    target: Target::Tcp { service },
                    client_addr: Some(peer),
                };
                relay_to_edge(&app, &node, header, &[], tcp).await;
            }
        },
    )
    .await;
}
