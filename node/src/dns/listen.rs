//! The DNS listeners: UDP (rate limited per client network, [`super::rrl`]; at most
//! [`UDP_IN_FLIGHT`] queries answered at once) and TCP (at most [`TCP_CONNS`] connections, each
//! closed after [`TCP_IDLE`] without a message).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{reply, rrl, xfr, Dns, MAX_UDP};
use crate::app::App;

/// How long a TCP connection may sit idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once at most.
const TCP_CONNS: usize = 256;
/// UDP queries answered at once at most (more are dropped: the client retries).
const UDP_IN_FLIGHT: usize = 1024;
/// Serves DNS on `udp` and `tcp` (bound for `dns.listen` by the caller) until `shutdown`.
pub fn serve(
    app: Arc<App>,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr: SocketAddr = udp.local_addr()?;
    let dns = Arc::new(Dns::new(&app.config, app.meta.clone(), app.owners.clone())?);
    let udp = Arc::new(udp);
    tracing::info!(%addr, zone = %dns.zone, secondaries = ?dns.secondaries, "DNS serving");
    tokio::spawn(xfr::notify_loop(dns.clone(), shutdown.clone()));
    let udp_slots = Arc::new(tokio::sync::Semaphore::new(UDP_IN_FLIGHT));
    let tcp_slots = Arc::new(tokio::sync::Semaphore::new(TCP_CONNS));
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                r = udp.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { continue };
                    match dns.rrl.check(peer.ip()) {
                        rrl::Verdict::Answer => {}
                        rrl::Verdict::Truncate => {
                            if let Some(out) = truncated(&buf[..n]) {
                                let _ = udp.send_to(&out, peer).await;
                            }
                            continue;
                        }
                        rrl::Verdict::Drop => continue,
                    }
                    let Ok(permit) = udp_slots.clone().try_acquire_owned() else { continue };
                    let (dns, udp, bytes) = (dns.clone(), udp.clone(), buf[..n].to_vec());
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Some(out) = reply(&dns, &bytes, Some(MAX_UDP), peer.ip()).await {
                            let _ = udp.send_to(&out, peer).await;
                        }
                    });
                }
                r = tcp.accept() => {
                    let Ok((stream, peer)) = r else { continue };
                    let Ok(permit) = tcp_slots.clone().try_acquire_owned() else { continue };
                    let dns = dns.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        serve_tcp(dns, stream, peer.ip()).await
                    });
                }
            }
        }
    }))
}

/// An empty answer with TC set to the query in `bytes` (a rate-limited client retries over
/// TCP); nothing for a message that does not parse.
fn truncated(bytes: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(bytes).ok()?;
    let mut m = Message::error_msg(req.metadata.id, req.metadata.op_code, ResponseCode::NoError);
    m.metadata.truncation = true;
    m.queries.extend(req.queries.iter().cloned());
    m.to_vec().ok()
}

/// Length-prefixed messages (RFC 1035 §4.2.2, RFC 7766) until EOF or [`TCP_IDLE`].
async fn serve_tcp(dns: Arc<Dns>, mut s: tokio::net::TcpStream, peer: IpAddr) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(out) = reply(&dns, &msg, None, peer).await else {
            return;
        };
        let Ok(n) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if s.write_all(&framed).await.is_err() {
            return;
        }
    }
}
