//! A center's QUIC endpoint: one UDP port that serves mutual-TLS `xpod/1` connections and
//! certificate-less `xpod-join/1` connections.
//!
//! Why one rustls config for both: quinn takes exactly one `ServerConfig` per endpoint, and
//! ARCHITECTURE §2 wants one port. So the client verifier built here *offers* client
//! authentication and fully verifies any certificate presented (webpki chain to the cluster CA
//! as the only root, EKU clientAuth, then [`peer_identity`] must parse it as a node
//! certificate), but lets a client without a certificate complete the handshake — that is what
//! a joining edge is. The ALPN then decides:
//! - `xpod/1` **with** a verified certificate → [`Accepted::Node`] for the node to run a
//!   session on; the peer's identity comes from the certificate only.
//! - `xpod/1` **without** one → closed at once with
//!   [`close_code::UNAUTHENTICATED`](super::close_code::UNAUTHENTICATED) and a reason.
//! - `xpod-join/1` → handled here by a spawned task ([`super::join`]), if the center was bound
//!   with a [`JoinAuthority`]; otherwise closed with `JOIN_REFUSED`.
//!
//! A certificate from another CA, or a non-node certificate, fails the handshake itself.
//!
//! The verifier wraps rustls' `WebPkiClientVerifier` with `allow_unauthenticated()`; it lives
//! here rather than in `identity::tls` because only this endpoint needs the optional variant.
//! Every handshake runs in its own task (so a slow client never delays others) bounded by
//! [`HANDSHAKE_TIMEOUT`](super::HANDSHAKE_TIMEOUT); joins are limited to [`MAX_CONCURRENT_JOINS`].

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use super::join::{serve_join, JoinAuthority};
use super::{close_code, TaskGauge, ALPN_JOIN, ALPN_MESH, HANDSHAKE_TIMEOUT};
use crate::identity::{peer_identity, IdentityError, NodeIdentity, NodeRole, PeerIdentity};

/// Joins handled at the same time; more are closed with `BUSY`.
pub const MAX_CONCURRENT_JOINS: usize = 64;
/// Authenticated connections waiting for [`CenterEndpoint::accept`].
const ACCEPT_BACKLOG: usize = 256;

/// Why a center endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The node identity is unusable (bad PEM, not a node certificate, ...).
    #[error("node identity: {0}")]
    Identity(#[from] IdentityError),
    /// A center endpoint needs a center certificate: edges check the role of what they dial.
    #[error(
        "a center endpoint needs a center certificate, but this node's certificate is for a {0}"
    )]
    NotACenter(NodeRole),
    /// The join authority's CA is not the CA of this node's certificate.
    #[error("the join authority's CA ({authority}) is not this node's cluster CA ({node})")]
    CaMismatch {
        /// Fingerprint of the authority's CA.
        authority: String,
        /// Fingerprint of the CA in the node identity.
        node: String,
    },
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An authenticated connection, ready for the node to run a session on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Accepted {
    /// An `xpod/1` connection whose client certificate verified against the cluster CA.
    Node {
        /// The connection (the client opens the control stream; see [`super::driver`]).
        conn: quinn::Connection,
        /// Who the peer is, read from its verified certificate.
        peer: PeerIdentity,
    },
}

/// A center's QUIC endpoint. Dropping it closes the endpoint and every connection on it.
pub struct CenterEndpoint {
    endpoint: quinn::Endpoint,
    accepted: mpsc::Receiver<Accepted>,
    local_addr: SocketAddr,
    gauge: TaskGauge,
    node: PeerIdentity,
    tcp: TcpEntry,
}

/// What a center needs to take QUIC over TCP ([`super::tcp`]) into its endpoint: the bridge
/// its UDP socket is wrapped in and the outer TLS config.
#[derive(Clone, Debug)]
pub struct TcpEntry {
    pub bridge: Arc<super::tcp::Bridge>,
    pub tls: Arc<rustls::ServerConfig>,
}

impl TcpEntry {
    /// Takes one TCP tunnel connection (it starts with a TLS record) into the endpoint;
    /// `guard` is dropped when it ends.
    pub async fn accept<S, G>(&self, stream: S, guard: G) -> std::io::Result<SocketAddr>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        G: Send + 'static,
    {
        super::tcp::accept(&self.bridge, self.tls.clone(), stream, guard).await
    }
}

impl std::fmt::Debug for CenterEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CenterEndpoint")
            .field("local_addr", &self.local_addr)
            .field("node", &self.node)
            .finish()
    }
}

impl CenterEndpoint {
    /// Binds the endpoint on `addr` (UDP) with this center's identity. Join connections are
    /// served only if `join` is given; its [`JoinAuthority::ca`] signs the edges' CSRs and must
    /// be the CA of `identity`.
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &NodeIdentity,
        join: Option<Arc<dyn JoinAuthority>>,
    ) -> Result<CenterEndpoint, EndpointError> {
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|source| EndpointError::Bind { addr, source })?;
        Self::from_socket(socket, identity, join)
    }

    /// [`CenterEndpoint::bind`] on a UDP socket the caller bound.
    pub fn from_socket(
        socket: std::net::UdpSocket,
        identity: &NodeIdentity,
        join: Option<Arc<dyn JoinAuthority>>,
    ) -> Result<CenterEndpoint, EndpointError> {
        let addr = socket.local_addr().map_err(|source| EndpointError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let node = identity.identity()?;
        if node.role != NodeRole::Center {
            return Err(EndpointError::NotACenter(node.role));
        }
        if let Some(authority) = &join {
            let ours = identity.ca_fingerprint()?;
            let theirs = authority.ca().fingerprint();
            if ours != theirs {
                return Err(EndpointError::CaMismatch {
                    authority: theirs,
                    node: ours,
                });
            }
        }
        let server_config = quinn_server_config(identity)?;
        // A reset key derived from the node's private key survives restarts, so a restarted
        // center answers its old connections' packets with a valid stateless reset and edges
        // reconnect at once instead of waiting for the idle timeout.
        let mut endpoint_config =
            quinn::EndpointConfig::new(Arc::new(stateless_reset_key(identity)?));
        // quinn's default ids carry a check keyed per process: a restarted center would drop its
        // old connections' packets as "invalid CID" instead of resetting them. Plain random ids
        // have no such check (resets stay rate-limited by quinn).
        endpoint_config.cid_generator(|| Box::new(RandomCids));
        // Drivers, socket and timers on the data plane (see `crate::plane`).
        let runtime = crate::plane::runtime();
        // The UDP socket inside a bridge, so QUIC packets that come over TCP reach the same
        // endpoint (`super::tcp`).
        let udp = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| EndpointError::Bind { addr, source })?;
        let bridge = super::tcp::Bridge::new(Some(udp))
            .map_err(|source| EndpointError::Bind { addr, source })?;
        let tcp = TcpEntry {
            bridge: bridge.clone(),
            tls: super::tcp::server_tls(identity).map_err(EndpointError::Tls)?,
        };
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            bridge,
            runtime,
        )
        .map_err(|source| EndpointError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| EndpointError::Bind { addr, source })?;
        let (tx, accepted) = mpsc::channel(ACCEPT_BACKLOG);
        let gauge = TaskGauge::new();
        let ctx = Arc::new(AcceptContext {
            accepted: tx,
            join,
            joins: Arc::new(Semaphore::new(MAX_CONCURRENT_JOINS)),
            gauge: gauge.clone(),
        });
        let guard = gauge.guard();
        tokio::spawn(accept_loop(endpoint.clone(), ctx, guard));
        info!(%local_addr, node_id = %node.node_id, "QUIC endpoint listening (xpod/1, xpod-join/1)");
        Ok(CenterEndpoint {
            endpoint,
            accepted,
            local_addr,
            gauge,
            node,
            tcp,
        })
    }

    /// The entry for tunnel connections over TCP (see [`super::tcp`]).
    pub fn tcp(&self) -> TcpEntry {
        self.tcp.clone()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This center's own identity (from its certificate).
    pub fn identity(&self) -> &PeerIdentity {
        &self.node
    }

    /// The next authenticated connection; `None` once the endpoint is closed.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.accepted.recv().await
    }

    /// The underlying quinn endpoint, e.g. to dial other centers from the same port.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Tasks this endpoint has alive (accept loop, handshakes in progress, joins).
    pub fn live_tasks(&self) -> usize {
        self.gauge.live()
    }

    /// Closes the endpoint and every connection on it, then waits (at most 2 s) until the peers
    /// have been told, so the port is free again when this returns.
    pub async fn shutdown(self) {
        self.endpoint
            .close(close_code::SHUTDOWN, b"center shutting down");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
    }
}

impl Drop for CenterEndpoint {
    fn drop(&mut self) {
        self.endpoint
            .close(close_code::SHUTDOWN, b"center shutting down");
    }
}

struct AcceptContext {
    accepted: mpsc::Sender<Accepted>,
    join: Option<Arc<dyn JoinAuthority>>,
    joins: Arc<Semaphore>,
    gauge: TaskGauge,
}

async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<AcceptContext>, _guard: super::TaskGuard) {
    while let Some(incoming) = endpoint.accept().await {
        if ctx.accepted.is_closed() {
            // The CenterEndpoint was dropped.
            incoming.refuse();
            break;
        }
        let guard = ctx.gauge.guard();
        tokio::spawn(handshake(incoming, ctx.clone(), guard));
    }
    debug!("QUIC accept loop ended");
}

async fn handshake(incoming: quinn::Incoming, ctx: Arc<AcceptContext>, _guard: super::TaskGuard) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            warn!(%remote, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            warn!(%remote, "QUIC handshake timed out");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<HandshakeData>().ok())
        .and_then(|d| d.protocol);
    match alpn.as_deref() {
        Some(ALPN_MESH) => {
            let peer = match verified_peer(&conn) {
                Ok(peer) => peer,
                Err(reason) => {
                    warn!(%remote, %reason, "xpod/1 connection refused");
                    conn.close(close_code::UNAUTHENTICATED, reason.as_bytes());
                    return;
                }
            };
            debug!(%remote, node_id = %peer.node_id, role = %peer.role, "node connected");
            if peer.role == NodeRole::Center {
                // Another center opens its forwarded requests' streams on this connection
                // (an edge only opens its control stream: see `center_transport`).
                conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(super::MAX_STREAMS));
            }
            if ctx
                .accepted
                .send(Accepted::Node {
                    conn: conn.clone(),
                    peer,
                })
                .await
                .is_err()
            {
                conn.close(close_code::SHUTDOWN, b"center shutting down");
            }
        }
        Some(ALPN_JOIN) => {
            let Some(authority) = ctx.join.clone() else {
                warn!(%remote, "join attempt refused: this center does not accept joins");
                conn.close(
                    close_code::JOIN_REFUSED,
                    b"this center does not accept joins",
                );
                return;
            };
            let Ok(_permit) = ctx.joins.clone().try_acquire_owned() else {
                warn!(%remote, "join attempt refused: too many joins in progress");
                conn.close(close_code::BUSY, b"too many joins in progress; retry later");
                return;
            };
            serve_join(conn, authority.as_ref()).await;
        }
        other => {
            // rustls only negotiates a protocol from our list, so this is unreachable in
            // practice; close rather than guess.
            let shown = other.map(String::from_utf8_lossy);
            warn!(%remote, alpn = ?shown, "connection with an unexpected ALPN closed");
            conn.close(close_code::PROTOCOL, b"unsupported ALPN");
        }
    }
}

/// The identity of an `xpod/1` peer from its verified certificate, or why there is none.
pub fn verified_peer(conn: &quinn::Connection) -> Result<PeerIdentity, String> {
    let certs = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok());
    let Some(end_entity) = certs.as_deref().and_then(|c| c.first()) else {
        return Err("xpod/1 requires a client certificate signed by the cluster CA".into());
    };
    peer_identity(end_entity).map_err(|e| format!("client certificate: {e}"))
}

/// When the verified certificate of a peer expires (ms since the Unix epoch), if it has one.
pub fn peer_not_after(conn: &quinn::Connection) -> Option<i64> {
    let certs = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())?;
    crate::identity::not_after_ms(certs.first()?).ok()
}

fn quinn_server_config(identity: &NodeIdentity) -> Result<quinn::ServerConfig, EndpointError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca_der()?)
        .map_err(|e| IdentityError::InvalidCertificate(format!("CA: {e}")))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    let verifier = Arc::new(OptionalNodeClientVerifier { inner });
    let tls_err = |e: rustls::Error| EndpointError::Tls(e.to_string());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ChainByAlpn::new(identity, &provider)?));
    tls.alpn_protocols = vec![ALPN_MESH.to_vec(), ALPN_JOIN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| EndpointError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(center_transport());
    Ok(config)
}

/// The certificate chain a center shows: its node certificate alone to peers speaking
/// `xpod/1` (edges and centers, which hold the cluster CA and check against it), and the
/// chain with the CA to a joining edge (`xpod-join/1`, which has only the CA's fingerprint
/// from its token and checks the CA it is shown against that). The shorter chain keeps a
/// center's first flight within one datagram: quinn keeps, per connection and for its
/// lifetime, a send buffer sized for ten datagrams once it has sent two at once (13 KiB per
/// idle edge).
#[derive(Debug)]
struct ChainByAlpn {
    node: Arc<rustls::sign::CertifiedKey>,
    with_ca: Arc<rustls::sign::CertifiedKey>,
}

impl ChainByAlpn {
    fn new(
        identity: &NodeIdentity,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, EndpointError> {
        let key = provider
            .key_provider
            .load_private_key(identity.key_der()?)
            .map_err(|e| EndpointError::Tls(e.to_string()))?;
        let cert = identity.cert_der()?;
        Ok(ChainByAlpn {
            node: Arc::new(rustls::sign::CertifiedKey::new(
                vec![cert.clone()],
                key.clone(),
            )),
            with_ca: Arc::new(rustls::sign::CertifiedKey::new(
                vec![cert, identity.ca_der()?],
                key,
            )),
        })
    }
}

impl rustls::server::ResolvesServerCert for ChainByAlpn {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let joining = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ALPN_JOIN));
        Some(if joining {
            self.with_ca.clone()
        } else {
            self.node.clone()
        })
    }
}

/// Streams a peer may open on a connection to a center before it is known to be a center.
pub const PEER_STREAMS_BEFORE_ROLE: u32 = 8;

/// The tunnels' transport settings, but a connecting peer may open only
/// [`PEER_STREAMS_BEFORE_ROLE`] bidirectional streams and no unidirectional one: quinn sets up
/// state for every stream a peer may open as soon as the connection exists (4,096 of them
/// took ~400 KiB per idle edge), and an edge opens just its control stream. A verified center
/// gets [`super::MAX_STREAMS`] right after the handshake.
fn center_transport() -> Arc<quinn::TransportConfig> {
    let mut t = super::transport_settings();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(PEER_STREAMS_BEFORE_ROLE));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

/// Client verification against the cluster CA that lets certificate-less clients (joining
/// edges) through; see the module docs for why, and where they are stopped.
#[derive(Debug)]
struct OptionalNodeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for OptionalNodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        peer_identity(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// HMAC key for stateless resets: SHA-256 of a label and the node's private key (DER). Stable
/// across restarts of the same node, unguessable without its key.
fn stateless_reset_key(identity: &NodeIdentity) -> Result<ring::hmac::Key, EndpointError> {
    use sha2::{Digest, Sha256};
    let key = identity.key_der()?;
    let mut h = Sha256::new();
    h.update(b"xpod quic stateless reset v1");
    h.update(key.secret_der());
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize()))
}

/// 8-byte random connection ids without a per-process validity check (see `bind`).
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }
    fn cid_len(&self) -> usize {
        8
    }
    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}
