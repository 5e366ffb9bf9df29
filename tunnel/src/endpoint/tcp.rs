//! The tunnel's second transport, for networks that block UDP: the very same QUIC connection
//! (same identities, join, control protocol and streams), its packets carried over one TLS
//! connection on TCP instead of UDP datagrams (issue 18).
//!
//! # Wire
//! TCP, then TLS 1.3 with ALPN [`ALPN_TCP`] (`xpod-tcp/1`; to a middlebox it is HTTPS), then
//! each QUIC packet as a `u16` big-endian length (1..=[`MAX_DATAGRAM`]) and its bytes, both
//! ways. Nothing else. The outer TLS authenticates nobody on purpose: the QUIC handshake inside
//! does (mutual TLS against the cluster CA for `xpod/1`, the token's CA fingerprint for a
//! join), exactly as over UDP, so whoever terminates or inspects the outer layer sees only QUIC
//! packets it can neither read nor forge. (The outer layer is there so the connection passes
//! where only TLS does.)
//!
//! # How QUIC runs over it
//! quinn drives an endpoint over any [`quinn::AsyncUdpSocket`]; a [`Bridge`] is one:
//! - on a center it wraps the real UDP socket and adds one *virtual peer address* per TLS
//!   connection ([`Bridge::attach`]): packets quinn sends to such an address go down that
//!   connection, packets read from it arrive from that address. One endpoint, so a center
//!   serves an edge the same whichever way its packets travel;
//! - on an edge ([`connect`]) it has no UDP socket at all, just the one TLS connection to the
//!   center, whose virtual address the dialer connects QUIC to.
//!
//! QUIC's loss recovery and congestion control still run; TCP never loses a packet, so they
//! see delay instead of loss. To keep that delay small, at most [`QUEUE`] packets wait to go
//! down one connection, and at most 4 × [`QUEUE`] received ones (from all connections) wait
//! for the endpoint: beyond that a packet is dropped, as a congested UDP path would, and QUIC
//! slows down.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// How an edge reaches its centers (`tunnel.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// QUIC, and TCP when QUIC does not get through (see the module docs).
    #[default]
    Auto,
    /// QUIC over UDP only.
    Quic,
    /// QUIC over TLS on TCP only.
    Tcp,
}

/// ALPN of the outer TLS connection that carries QUIC packets.
pub const ALPN_TCP: &[u8] = b"xpod-tcp/1";
/// The largest packet carried (quinn's packets are far smaller; a longer length is an error).
pub const MAX_DATAGRAM: usize = 16 * 1024;
/// Packets buffered per direction of one connection before new ones are dropped.
pub const QUEUE: usize = 256;
/// A connection that carries no packet for this long is closed (QUIC's keep-alives are far
/// more frequent; this ends connections that never carried QUIC).
pub const IDLE: Duration = Duration::from_secs(60);
/// Upper bound for the TCP connect and the outer TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A virtual address for the `n`th attached connection: `240.0.0.0/4` ("reserved for future
/// use", never a real peer), port 1.
fn virtual_addr(n: u32) -> SocketAddr {
    let n = n & 0x0fff_ffff;
    let ip = Ipv4Addr::from(0xf000_0000 | n);
    SocketAddr::new(IpAddr::V4(ip), 1)
}

/// Whether `addr` is one of [`Bridge`]'s virtual addresses.
pub fn is_virtual(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[0] & 0xf0 == 0xf0 && addr.port() == 1,
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| v4.octets()[0] & 0xf0 == 0xf0 && addr.port() == 1),
    }
}

/// A UDP socket for quinn whose peers may also be TLS connections. See the module docs.
pub struct Bridge {
    udp: Option<Arc<dyn AsyncUdpSocket>>,
    local: SocketAddr,
    peers: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    incoming_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    incoming_rx: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    next: AtomicU32,
    /// Which source `poll_recv` tries first, alternating so neither starves the other.
    udp_first: AtomicBool,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("local", &self.local)
            .field("udp", &self.udp.is_some())
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge over the real socket `udp` (a center), or over attached connections only.
    pub fn new(udp: Option<Arc<dyn AsyncUdpSocket>>) -> io::Result<Arc<Bridge>> {
        let local = match &udp {
            Some(s) => s.local_addr()?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let (incoming_tx, incoming_rx) = mpsc::channel(QUEUE * 4);
        Ok(Arc::new(Bridge {
            udp,
            local,
            peers: Mutex::default(),
            incoming_tx,
            incoming_rx: Mutex::new(incoming_rx),
            next: AtomicU32::new(1),
            udp_first: AtomicBool::new(true),
        }))
    }

    /// Carries QUIC packets over `stream` (after its TLS handshake) until either side ends it:
    /// returns the virtual address its packets come from and go to.
    /// `guard` is dropped when the connection ends (the caller's connection-limit slot).
    pub fn attach<S, G>(self: &Arc<Self>, stream: S, guard: G) -> SocketAddr
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
        G: Send + 'static,
    {
        let addr = virtual_addr(self.next.fetch_add(1, Ordering::Relaxed));
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        self.peers.lock().expect("poisoned").insert(addr, out_tx);
        let (read, write) = tokio::io::split(stream);
        let bridge = self.clone();
        tokio::spawn(async move {
            let writer = tokio::spawn(write_packets(write, out_rx));
            if let Err(e) = read_packets(read, addr, &bridge.incoming_tx).await {
                tracing::debug!(peer = %addr, error = %e, "TCP tunnel connection ended");
            }
            bridge.peers.lock().expect("poisoned").remove(&addr);
            writer.abort();
            drop(guard);
        });
        addr
    }

    /// How many TLS connections are attached now.
    pub fn attached(&self) -> usize {
        self.peers.lock().expect("poisoned").len()
    }

    fn poll_bridged(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.incoming_rx.lock().expect("poisoned");
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let next = if n == 0 {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(p)) => p,
                    // The bridge holds a sender itself: the channel never closes.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let (from, packet) = next;
            let len = packet.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&packet[..len]);
            meta[n] = RecvMeta {
                addr: from,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }
}

/// Reads length-prefixed packets from `read` into `to` as coming from `from`.
async fn read_packets<R: AsyncRead + Unpin>(
    mut read: R,
    from: SocketAddr,
    to: &mpsc::Sender<(SocketAddr, Bytes)>,
) -> io::Result<()> {
    loop {
        let len = match tokio::time::timeout(IDLE, read.read_u16()).await {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no packet for {} s", IDLE.as_secs()),
                ))
            }
            Ok(Ok(l)) => usize::from(l),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        if len == 0 || len > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a packet of {len} bytes (1..={MAX_DATAGRAM} allowed)"),
            ));
        }
        let mut packet = vec![0u8; len];
        read.read_exact(&mut packet).await?;
        // Full: dropped, as a congested path would (QUIC recovers and slows down).
        let _ = to.try_send((from, Bytes::from(packet)));
    }
}

/// Writes the packets of `from` to `write`, flushing when none is waiting.
async fn write_packets<W: AsyncWrite + Unpin>(write: W, mut from: mpsc::Receiver<Bytes>) {
    let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, write);
    while let Some(p) = from.recv().await {
        let mut next = Some(p);
        while let Some(p) = next {
            if w.write_u16(p.len() as u16).await.is_err() || w.write_all(&p).await.is_err() {
                return;
            }
            next = from.try_recv().ok();
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Always writable (bridged packets are queued or dropped, never blocked on).
#[derive(Debug)]
struct Writable;

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for Bridge {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        match &self.udp {
            Some(udp) => udp.clone().create_io_poller(),
            None => Box::pin(Writable),
        }
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if is_virtual(&transmit.destination) {
            let peer = self
                .peers
                .lock()
                .expect("poisoned")
                .get(&transmit.destination)
                .cloned();
            // A gone or congested peer: the packet is lost, as on UDP.
            if let Some(peer) = peer {
                let size = transmit
                    .segment_size
                    .unwrap_or(transmit.contents.len())
                    .max(1);
                for segment in transmit.contents.chunks(size) {
                    let _ = peer.try_send(Bytes::copy_from_slice(segment));
                }
            }
            return Ok(());
        }
        match &self.udp {
            Some(udp) => udp.try_send(transmit),
            None => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Some(udp) = &self.udp else {
            return self.poll_bridged(cx, bufs, meta);
        };
        if self.udp_first.fetch_xor(true, Ordering::Relaxed) {
            if let Poll::Ready(r) = udp.poll_recv(cx, bufs, meta) {
                return Poll::Ready(r);
            }
            self.poll_bridged(cx, bufs, meta)
        } else {
            if let Poll::Ready(r) = self.poll_bridged(cx, bufs, meta) {
                return Poll::Ready(r);
            }
            udp.poll_recv(cx, bufs, meta)
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.as_ref().map_or(1, |u| u.max_transmit_segments())
    }

    fn max_receive_segments(&self) -> usize {
        self.udp.as_ref().map_or(1, |u| u.max_receive_segments())
    }

    fn may_fragment(&self) -> bool {
        self.udp.as_ref().is_some_and(|u| u.may_fragment())
    }
}

/// The outer TLS server config of a center: its node certificate, ALPN [`ALPN_TCP`], no client
/// authentication (the QUIC handshake inside does it; see the module docs).
pub fn server_tls(
    identity: &crate::identity::NodeIdentity,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![identity.cert_der().map_err(|e| e.to_string())?],
            identity.key_der().map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![ALPN_TCP.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts the outer TLS of a TCP tunnel connection on a center and attaches it to `bridge`.
/// The caller saw the connection start with a TLS record.
/// `guard` is dropped when the connection ends.
pub async fn accept<S, G>(
    bridge: &Arc<Bridge>,
    tls: Arc<rustls::ServerConfig>,
    stream: S,
    guard: G,
) -> io::Result<SocketAddr>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "outer TLS handshake timed out"))??;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_TCP) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client did not ask for xpod-tcp/1",
        ));
    }
    Ok(bridge.attach(tls, guard))
}

/// The outer layer's server certificate is not what authenticates the center (see the module
/// docs): any is taken, its handshake signature still checked.
#[derive(Debug)]
struct OuterLayer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for OuterLayer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An edge's side: a TCP connection to `addr` (through `HTTPS_PROXY` if the environment names
/// one: [`super::proxy`]) with the outer TLS, and a client endpoint whose
/// only peer is that connection. Returns the endpoint and the address to connect QUIC to; the
/// connection ends when the endpoint is dropped (or the center closes it).
pub async fn connect(addr: SocketAddr) -> io::Result<(quinn::Endpoint, SocketAddr)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OuterLayer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_TCP.to_vec()];
    let proxy = super::proxy::Proxy::from_env(addr)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connecting = async {
        let tcp = match &proxy {
            Some(p) => {
                tracing::debug!(proxy = %p.addr, center = %addr, "TCP transport through the HTTP proxy");
                p.connect(addr).await?
            }
            None => tokio::net::TcpStream::connect(addr).await?,
        };
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::from(addr.ip());
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TCP/TLS to {addr} timed out"),
            )
        })??;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_TCP) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{addr} does not speak xpod-tcp/1"),
        ));
    }
    let bridge = Bridge::new(None)?;
    let center = bridge.attach(tls, ());
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        bridge,
        crate::plane::runtime(),
    )?;
    Ok((endpoint, center))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_are_recognised() {
        let a = virtual_addr(1);
        assert!(is_virtual(&a));
        assert!(is_virtual(&virtual_addr(u32::MAX)));
        assert!(!is_virtual(&"127.0.0.1:1".parse().unwrap()));
        assert!(!is_virtual(&"240.0.0.1:443".parse().unwrap()));
        assert_ne!(virtual_addr(1), virtual_addr(2));
    }

    #[tokio::test]
    async fn packets_cross_a_stream_both_ways_and_bad_lengths_end_it() {
        let bridge = Bridge::new(None).unwrap();
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let addr = bridge.attach(a, ());
        // Far side → bridge.
        b.write_u16(3).await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let got = std::future::poll_fn(|cx| {
            let mut buf = [0u8; 64];
            let mut bufs = [IoSliceMut::new(&mut buf)];
            let mut meta = [RecvMeta::default()];
            bridge
                .poll_bridged(cx, &mut bufs, &mut meta)
                .map(|r| r.map(|_| (meta[0].addr, buf[..meta[0].len].to_vec())))
        })
        .await
        .unwrap();
        assert_eq!(got, (addr, b"abc".to_vec()));
        // Bridge → far side, a GSO batch split into its packets.
        let t = Transmit {
            destination: addr,
            ecn: None,
            contents: b"xxyyz",
            segment_size: Some(2),
            src_ip: None,
        };
        bridge.try_send(&t).unwrap();
        let mut out = [0u8; 11];
        b.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"\x00\x02xx\x00\x02yy\x00\x01z");
        // A zero length is not a packet: the connection ends and the peer is forgotten.
        b.write_u16(0).await.unwrap();
        for _ in 0..100 {
            if bridge.attached() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(bridge.attached(), 0);
    }
}
