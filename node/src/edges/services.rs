//! An edge's published services (`[[tunnel.services]]`), served on the data streams its
//! centers open.
//!
//! For each connection to a center, [`serve_connection`] accepts the streams the center opens
//! (the edge itself opens only the control stream, so every accepted stream is a data stream).
//! Each stream starts with a [`StreamHeader`]; the edge connects to the service's local address
//! and relays bytes both ways unchanged:
//! - `Http { service }` → a `kind = "http"` service (the center speaks HTTP/1.1 on the stream and
//!   has already added `Forwarded`/`X-Forwarded-*`; it keeps the stream for more requests, so
//!   the service sees one keep-alive connection per stream). An unknown service gets a minimal
//!   `HTTP/1.1 502` naming it.
//! - `TlsPassthrough { sni }` → the `kind = "tls"` service named by the SNI's service label
//!   (`<service>.<this node>.…`, or `web` for `<this node>.…`); the service terminates TLS.
//!   When that service is a `kind = "http"` one and this edge has a certificate for the name
//!   (`[acme]`: `<node>.<edge_domain>` and `*.<node>.<edge_domain>`, key kept on the edge),
//!   the edge terminates TLS itself and relays the plaintext to the service: end-to-end TLS
//!   the center cannot read.
//! - `Tcp { service }` → a `kind = "tcp"` service.
//! - `Pod`, `PodRequests`, `Runner`, `SandboxPort`, `SandboxTerminal`, `NodeTerminal` → this
//!   edge's own node ([`NodeStreams`],
//!   served by the front through the edge's request path); the center has already
//!   authenticated and authorized a pod request (see `crate::mesh::forward`).
//!
//! For TLS and TCP there is no protocol to answer an error in: an unknown service, a service of
//! another kind, or a local service that cannot be reached resets the stream.
//!
//! Tasks: the accept loop ends when the connection does; each stream task ends when its relay
//! does (either side's EOF/error, or the connection's end).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt as _;
use xpod_config::{ServiceKind, TunnelConfig, TunnelService};
use xpod_tunnel::proto::{self, StreamHeader, Target};

/// How long a center may take to send a stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Application error code for streams this edge refuses (not an HTTP target, bad header).
const STREAM_REFUSED: u32 = 1;

/// What an edge's own node serves on the streams its centers open: its pods (`Pod`,
/// `PodRequests`), its runner API (`Runner`), its sandboxes' ports (`SandboxPort`) and
/// terminals (`SandboxTerminal`). The
/// node's front implements it (`crate::front::streams::EdgeNode`), so this relay to local
/// services stays below the request path.
pub trait NodeStreams: Send + Sync {
    /// Serves one stream whose header named `target`; `rest` was read past the header.
    fn serve(
        &self,
        target: Target,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        rest: BytesMut,
        client_addr: Option<SocketAddr>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// The services an edge publishes, by name, with their kind and local address.
#[derive(Default)]
pub struct Services {
    /// This edge's node id (to find the service label in a TLS server name).
    node_id: String,
    /// The services, replaced whole at runtime (`crate::reload`); each stream reads it once.
    table: std::sync::RwLock<Arc<Table>>,
    /// This edge's own node: serves the streams for its pods, its runner API and its
    /// sandboxes' ports (none: such streams are reset).
    node: Option<Arc<dyn NodeStreams>>,
    /// This edge's certificates (for TLS it terminates itself).
    certs: Option<Arc<crate::certs::tls::Tls>>,
    /// The edge's own TLS termination (its ACME certificate), built on first use.
    tls: std::sync::OnceLock<Option<tokio_rustls::TlsAcceptor>>,
    /// How long a relay to a local service may stay idle (`tunnel.relay_idle_secs`).
    relay_idle: std::time::Duration,
}

/// One version of the published services.
#[derive(Debug, Default)]
struct Table {
    /// As configured, in order (what `list` hands back).
    list: Vec<TunnelService>,
    by_name: HashMap<String, (ServiceKind, SocketAddr)>,
    /// Services that want a PROXY protocol v2 header (`proxy_protocol = true`).
    proxy: HashSet<String>,
}

impl Table {
    fn new(list: &[TunnelService]) -> Table {
        Table {
            list: list.to_vec(),
            by_name: list
                .iter()
                .map(|s| (s.name.clone(), (s.kind, s.local)))
                .collect(),
            proxy: list
                .iter()
                .filter(|s| s.proxy_protocol)
                .map(|s| s.name.clone())
                .collect(),
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("node_id", &self.node_id)
            .field("table", &self.table())
            .field("serves_pods", &self.node.is_some())
            .finish()
    }
}

impl Services {
    /// From the (validated) `[tunnel]` configuration of edge `node_id`.
    pub fn from_config(tunnel: &TunnelConfig, node_id: &str) -> Services {
        Services {
            node_id: node_id.to_string(),
            table: std::sync::RwLock::new(Arc::new(Table::new(&tunnel.services))),
            node: None,
            certs: None,
            tls: Default::default(),
            relay_idle: tunnel.relay_idle(),
        }
    }

    /// Serves this edge's own streams (pods, runner, sandbox ports) with `node`, and
    /// terminates TLS with its certificates `certs`.
    pub fn with_node(
        mut self,
        node: Arc<dyn NodeStreams>,
        certs: Arc<crate::certs::tls::Tls>,
    ) -> Services {
        self.node = Some(node);
        self.certs = Some(certs);
        self
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The services published now, as configured.
    pub fn list(&self) -> Vec<TunnelService> {
        self.table().list.clone()
    }

    /// Publishes `list` instead (validated by the caller): streams opened from now on use it.
    pub fn replace(&self, list: &[TunnelService]) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Table::new(list));
    }

    /// Whether service `name` wants a PROXY protocol header.
    fn wants_proxy(&self, name: &str) -> bool {
        self.table().proxy.contains(name)
    }

    /// What the edge reports in its `Register`, sorted by name.
    pub fn advertised(&self) -> Vec<proto::Service> {
        let mut v: Vec<_> = self
            .table()
            .by_name
            .iter()
            .map(|(name, (kind, _))| proto::Service {
                name: name.clone(),
                kind: match kind {
                    ServiceKind::Http => proto::ServiceKind::Http,
                    ServiceKind::Tls => proto::ServiceKind::Tls,
                    ServiceKind::Tcp => proto::ServiceKind::Tcp,
                },
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The local address of service `name` if it is of `kind`; `Err` says why not.
    pub fn local(&self, name: &str, kind: ServiceKind) -> Result<SocketAddr, String> {
        match self.table().by_name.get(name) {
            Some((k, addr)) if *k == kind => Ok(*addr),
            Some((k, _)) => Err(format!(
                "service {name:?} is of kind {:?}, not {:?}",
                k.as_str(),
                kind.as_str()
            )),
            None => Err(format!("this edge publishes no service named {name:?}")),
        }
    }

    /// Whether this edge terminates TLS for `sni` itself: service `name` is `kind = "http"`
    /// and the edge's own certificate covers `sni`. The acceptor and the service's address.
    fn terminates(&self, name: &str, sni: &str) -> Option<(tokio_rustls::TlsAcceptor, SocketAddr)> {
        let local = self.http(name)?;
        let certs = self.certs.as_ref()?;
        certs.certs.for_name(sni)?;
        let acceptor = self
            .tls
            .get_or_init(|| match crate::certs::tls::server_config(certs.clone(), false) {
                Ok(c) => Some(tokio_rustls::TlsAcceptor::from(c)),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "no TLS configuration on this edge");
                    None
                }
            })
            .clone()?;
        Some((acceptor, local))
    }

    /// The local address of HTTP service `name`.
    pub fn http(&self, name: &str) -> Option<SocketAddr> {
        self.local(name, ServiceKind::Http).ok()
    }

    /// The service a TLS server name means on this edge: `<service>.<node>.…` → `service`,
    /// `<node>.…` → `web` (the center routed it by the same rule under its edge domain).
    pub fn service_for_sni(&self, sni: &str) -> Option<String> {
        let mut labels = sni.split('.');
        let first = labels.next()?;
        let second = labels.next();
        if second.is_some_and(|l| l.eq_ignore_ascii_case(&self.node_id)) {
            Some(first.to_ascii_lowercase())
        } else if first.eq_ignore_ascii_case(&self.node_id) {
            Some(xpod_routing::edge_host::DEFAULT_SERVICE.to_string())
        } else {
            None
        }
    }
}

/// Accepts the data streams of `conn` until the connection ends.
pub async fn serve_connection(conn: quinn::Connection, services: Arc<Services>) {
    let center = conn.remote_address();
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%center, error = %e, "data streams from this center end");
                return;
            }
        };
        tokio::spawn(serve_stream(send, recv, services.clone()));
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    services: Arc<Services>,
) {
    let header =
        match tokio::time::timeout(HEADER_TIMEOUT, xpod_tunnel::stream::accept(&mut recv)).await {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "bad data stream from a center; reset");
                refuse(send, recv);
                return;
            }
            Err(_) => {
                tracing::warn!("a center sent no stream header within {HEADER_TIMEOUT:?}; reset");
                refuse(send, recv);
                return;
            }
        };
    let (
        StreamHeader {
            target,
            client_addr,
        },
        rest,
    ) = header;
    let client = client_addr.map(|a| a.to_string()).unwrap_or_default();
    let service = match target {
        Target::Http { service } => service,
        Target::TlsPassthrough { sni } => {
            let name = services.service_for_sni(&sni);
            if let Some((acceptor, local)) =
                name.as_deref().and_then(|n| services.terminates(n, &sni))
            {
                return terminate(
                    send,
                    recv,
                    rest,
                    acceptor,
                    local,
                    &sni,
                    client_addr,
                    services.relay_idle,
                )
                .await;
            }
            let found = name
                .ok_or_else(|| format!("server name {sni:?} is not a name of this edge"))
                .and_then(|name| Ok((services.local(&name, ServiceKind::Tls)?, name)));
            return raw(send, recv, rest, found, "tls", client_addr, &services).await;
        }
        Target::Tcp { service } => {
            let found = services
                .local(&service, ServiceKind::Tcp)
                .map(|addr| (addr, service));
            return raw(send, recv, rest, found, "tcp", client_addr, &services).await;
        }
        // Pods, runner API, sandbox ports and terminals: the edge's own node (which resets what it does
        // not serve).
        target => {
            match &services.node {
                Some(node) => node.serve(target, send, recv, rest, client_addr).await,
                None => {
                    tracing::info!(?target, "stream target not served by this edge; reset");
                    refuse(send, recv);
                }
            }
            return;
        }
    };
    let Some(local) = services.http(&service) else {
        let why = services
            .local(&service, ServiceKind::Http)
            .err()
            .unwrap_or_default();
        tracing::info!(%service, %client, %why, "request for an unknown service");
        bad_gateway(&mut send, &why).await;
        return;
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(local))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(%service, %local, error = %e, "cannot reach the local service");
            bad_gateway(
                &mut send,
                &format!("service {service:?} ({local}) is not reachable on the edge: {e}"),
            )
            .await;
            return;
        }
        Err(_) => {
            tracing::warn!(%service, %local, "connecting to the local service timed out");
            bad_gateway(
                &mut send,
                &format!("service {service:?} ({local}) did not accept a connection within {CONNECT_TIMEOUT:?}"),
            )
            .await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    tracing::debug!(%service, %local, %client, "relaying a request");
    relay(send, recv, rest, tcp, services.relay_idle).await;
}

/// Serves a TLS passthrough or TCP stream: `found` is the local address and the service's name,
/// or why there is none (the stream is reset, as it is when the service cannot be reached).
/// A service with `proxy_protocol = true` first gets a PROXY v2 header: source the original
/// client (LOCAL if the center did not say), destination the service's local address.
async fn raw(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: BytesMut,
    found: Result<(SocketAddr, String), String>,
    kind: &'static str,
    client_addr: Option<SocketAddr>,
    services: &Services,
) {
    let client = client_addr.map(|a| a.to_string()).unwrap_or_default();
    let (local, service) = match found {
        Ok(f) => f,
        Err(why) => {
            tracing::info!(kind, %client, %why, "stream for no such service; reset");
            refuse(send, recv);
            return;
        }
    };
    let mut tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(local))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(%service, %local, error = %e, "cannot reach the local service; reset");
            refuse(send, recv);
            return;
        }
        Err(_) => {
            tracing::warn!(%service, %local, "connecting to the local service timed out; reset");
            refuse(send, recv);
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if services.wants_proxy(&service) {
        let header = proto::proxy_v2::encode(client_addr, local);
        if let Err(e) = tcp.write_all(&header).await {
            tracing::warn!(%service, %local, error = %e, "writing the PROXY header failed; reset");
            refuse(send, recv);
            return;
        }
    }
    tracing::debug!(kind, %service, %local, %client, "relaying a connection");
    relay(send, recv, rest, tcp, services.relay_idle).await;
}

/// Terminates a passed-through TLS connection with this edge's certificate and relays the
/// plaintext to the HTTP service at `local`. A failed handshake or an unreachable service
/// ends the stream.
#[allow(clippy::too_many_arguments)] // the stream, what was read of it, where to, and how
async fn terminate(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: BytesMut,
    acceptor: tokio_rustls::TlsAcceptor,
    local: SocketAddr,
    sni: &str,
    client_addr: Option<SocketAddr>,
    idle: std::time::Duration,
) {
    let io = tokio::io::join(crate::netio::Replay::new(rest.freeze(), recv), send);
    let mut tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(%sni, client = ?client_addr, error = %e, "TLS handshake at the edge failed");
            return;
        }
        Err(_) => {
            tracing::info!(%sni, client = ?client_addr, "TLS handshake at the edge timed out");
            return;
        }
    };
    let mut tcp =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(local)).await {
            Ok(Ok(t)) => t,
            _ => {
                tracing::warn!(%sni, %local, "cannot reach the local service for a TLS connection");
                let _ = tls.shutdown().await;
                return;
            }
        };
    let _ = tcp.set_nodelay(true);
    tracing::debug!(%sni, %local, client = ?client_addr, "TLS terminated at the edge");
    match crate::idle_copy::copy_bidirectional(&mut tls, &mut tcp, idle).await {
        Ok((up, down)) => tracing::debug!(up, down, "edge TLS relay done"),
        Err(e) => tracing::debug!(error = %e, "edge TLS relay ended"),
    }
}

/// Relays the stream and the local connection until both directions are done; the stream's
/// send side is finished when the local service closes its side (and vice versa).
async fn relay(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: BytesMut,
    mut tcp: tokio::net::TcpStream,
    idle: std::time::Duration,
) {
    if !rest.is_empty() {
        if let Err(e) = tcp.write_all(&rest).await {
            tracing::debug!(error = %e, "local service closed early");
            return;
        }
    }
    let (to_center, to_service) = super::relay::relay(tcp, send, recv, idle, None).await;
    tracing::debug!(to_center, to_service, "relay done");
}

fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let _ = send.reset(STREAM_REFUSED.into());
    let _ = recv.stop(STREAM_REFUSED.into());
}

/// A minimal `502 Bad Gateway` (text, `Connection: close`), then the stream's end.
async fn bad_gateway(send: &mut quinn::SendStream, message: &str) {
    let body = format!("502 Bad Gateway: {message}\n");
    let head = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = send.write_all(head.as_bytes()).await;
    let _ = send.write_all(body.as_bytes()).await;
    let _ = send.finish();
}
