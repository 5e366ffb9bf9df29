//! A center's TLS passthrough (`tunnel.tls_listen`).
//!
//! The center reads the client's first bytes (at most [`HELLO_TIMEOUT`], and no more than the
//! ClientHello: [`xpod_routing::sni::parse_sni`] caps it at 16 KiB) until the server name is
//! known. A name `<service>.<node>.<edge_domain>` or `<node>.<edge_domain>` (service `web`) goes
//! to that edge: a new QUIC stream with a [`StreamHeader`] `TlsPassthrough { sni }` and the
//! client's address, then the buffered ClientHello, then raw bytes both ways — the edge's
//! `kind = "tls"` service terminates TLS with its own certificate, the center never sees the
//! plaintext. Anything else (not TLS, no SNI, another name, an edge whose tunnel this center does
//! not hold) closes the connection: the center has no certificates of its own for this port yet,
//! so it cannot answer a handshake itself.
//!
//! Tasks: see [`super::tcp_forward::accept_loop`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use xpod_routing::sni::{parse_sni, SniError};
use xpod_tunnel::proto::{StreamHeader, Target};

use super::tcp_forward::{accept_loop, relay_to_edge};
use crate::app::App;
use xpod_routing::edge_host::edge_route;

/// How long a client may take to send its ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A bound on the bytes read before the name is known (the ClientHello itself is capped at
/// 16 KiB; this leaves room for the record headers of a hello split into many records).
const MAX_BUFFERED: usize = 64 * 1024;

/// Serves `listener` until `stop`; `edge_domain` is `tunnel.edge_domain`.
pub async fn serve(
    app: Arc<App>,
    edge_domain: String,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    tracing::info!(listen = ?listener.local_addr().ok(), %edge_domain, "TLS passthrough serving");
    let edge_domain: Arc<str> = edge_domain.into();
    accept_loop("tls passthrough", listener, stop, move |tcp, peer| {
        let app = app.clone();
        let edge_domain = edge_domain.clone();
        async move {
            let mut tcp = tcp;
            let (sni, hello) =
                match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut tcp)).await {
                    Ok(Ok(v)) => v,
                    Ok(Err(why)) => {
                        tracing::info!(%peer, %why, "TLS passthrough: connection closed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS passthrough: no ClientHello within {HELLO_TIMEOUT:?}; connection closed");
                        return;
                    }
                };
            let route = match edge_route(Some(&sni), &edge_domain) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tracing::info!(%peer, %sni, "TLS passthrough: not an edge name; connection closed");
                    return;
                }
                Err(e) => {
                    tracing::info!(%peer, %sni, error = %e, "TLS passthrough: bad edge name; connection closed");
                    return;
                }
            };
            tracing::debug!(%peer, %sni, node = %route.node, service = %route.service, "TLS passthrough to an edge");
            let header = StreamHeader {
                target: Target::TlsPassthrough { sni },
                client_addr: Some(peer),
            };
            relay_to_edge(&app, &route.node, header, &hello, tcp).await;
        }
    })
    .await;
}

/// Reads until the server name is known: the name and every byte read (to be replayed).
async fn read_hello(tcp: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match parse_sni(&buf) {
            Ok(Some(name)) => return Ok((name, buf)),
            Ok(None) => return Err("ClientHello without a server name".into()),
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
