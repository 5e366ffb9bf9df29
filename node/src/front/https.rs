//! A center's TLS port (`tunnel.tls_listen`): HTTPS for the names it holds certificates for,
//! and TLS passthrough for edge names.
//!
//! The center reads the client's first bytes (at most [`HELLO_TIMEOUT`], and no more than the
//! ClientHello: [`xpod_routing::sni::parse_sni`] caps it at 16 KiB) until the server name is
//! known. A name `<service>.<node>.<edge_domain>` or `<node>.<edge_domain>` (service `web`) goes
//! to that edge: a new QUIC stream with a [`StreamHeader`] `TlsPassthrough { sni }` and the
//! client's address, then the buffered ClientHello, then raw bytes both ways — the edge's
//! `kind = "tls"` service terminates TLS with its own certificate, the center never sees the
//! plaintext. Every other hello goes to rustls with the bytes replayed: the certificate is
//! picked by SNI from [`crate::certs::Tls`] (swapped in memory on renewal; open connections keep
//! theirs), a name no certificate covers — or no name — gets a handshake failure alert, and an
//! accepted connection is served like the HTTP port (requests carry [`crate::http::Https`]).
//!
//! Tasks: see [`crate::edges::tcp_forward::accept_loop`]; at shutdown HTTPS connections finish
//! the request in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use xpod_routing::edge_host::edge_route;
use xpod_routing::sni::{parse_sni, SniError};
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use crate::edges::tcp_forward::{accept_loop, relay_to_edge};

/// How long a client may take to send its ClientHello (and to finish the handshake).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);
/// A bound on the bytes read before the name is known (the ClientHello itself is capped at
/// 16 KiB; this leaves room for the record headers of a hello split into many records).
const MAX_BUFFERED: usize = 64 * 1024;

/// Serves `listener` until `stop`; `edge_domain` is `tunnel.edge_domain` (no passthrough
/// without it).
pub async fn serve(
    app: Arc<App>,
    edge_domain: Option<String>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(listen = ?listener.local_addr().ok(), ?edge_domain, "HTTPS / TLS passthrough serving");
    let edge_domain: Option<Arc<str>> = edge_domain.map(Into::into);
    let acceptor =
        tokio_rustls::TlsAcceptor::from(crate::certs::tls::server_config(app.tls.clone(), true)?);
    let conn_stop = stop.clone();
    // Relays to edges are cut after the drain; HTTPS connections finish their request.
    let limits = crate::conn_limit::ConnLimits::new(
        app.config.http.max_connections_per_client,
        app.config.http.max_connections,
    );
    accept_loop("tls", listener, stop, DRAIN, limits, move |tcp, peer| {
        let app = app.clone();
        let edge_domain = edge_domain.clone();
        let acceptor = acceptor.clone();
        let stop = conn_stop.clone();
        async move {
            let mut tcp = tcp;
            let (sni, hello) =
                match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut tcp)).await {
                    Ok(Ok(v)) => v,
                    Ok(Err(why)) => {
                        tracing::info!(%peer, %why, "TLS: connection closed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS: no ClientHello within {HELLO_TIMEOUT:?}; connection closed");
                        return;
                    }
                };
            if let Some(entry) = app.tunnel_tcp.get() {
                if xpod_routing::sni::offers_alpn(&hello, xpod_tunnel::endpoint::tcp::ALPN_TCP) {
                    let io = crate::netio::Replay::new(hello, tcp);
                    // This task (and its connection slot) lasts as long as the connection.
                    let (ended, end) = tokio::sync::oneshot::channel::<()>();
                    match entry.accept(io, ended).await {
                        Ok(v) => {
                            tracing::info!(%peer, virtual_addr = %v, "tunnel connection over TCP (TLS port)");
                            let _ = end.await;
                        }
                        Err(e) => tracing::info!(%peer, error = %e, "tunnel connection over TCP failed"),
                    }
                    return;
                }
            }
            let route = match (&sni, &edge_domain) {
                (Some(sni), Some(domain)) => match edge_route(Some(sni), domain) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::info!(%peer, %sni, error = %e, "TLS passthrough: bad edge name; connection closed");
                        return;
                    }
                },
                _ => None,
            };
            if let (Some(route), Some(sni)) = (route, sni.clone()) {
                tracing::debug!(%peer, %sni, node = %route.node, service = %route.service, "TLS passthrough to an edge");
                let header = StreamHeader {
                    target: Target::TlsPassthrough { sni },
                    client_addr: Some(peer),
                };
                relay_to_edge(&app, &route.node, header, &hello, tcp).await;
                return;
            }
            let io = crate::netio::Replay::new(hello, tcp);
            let tls = match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, sni = ?sni, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, sni = ?sni, "TLS handshake not done within {HELLO_TIMEOUT:?}");
                    return;
                }
            };
            crate::front::http::serve_connection(app, tls, peer, true, stop, ()).await;
        }
    })
    .await;
    Ok(())
}

/// Reads the ClientHello: its server name (if any) and every byte read (to be replayed).
async fn read_hello(tcp: &mut TcpStream) -> Result<(Option<String>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match parse_sni(&buf) {
            Ok(name) => return Ok((name, buf)),
            Err(SniError::Incomplete) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the ClientHello: {e}"))?;
        if n == 0 {
            return Err("EOF before the ClientHello's end".into());
        }
        if buf.len() + n > MAX_BUFFERED {
            return Err(format!(
                "more than {MAX_BUFFERED} bytes without a complete ClientHello"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
