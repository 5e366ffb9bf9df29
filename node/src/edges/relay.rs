//! Relaying a TCP connection and a QUIC stream, byte for byte. TCP → QUIC without a copy: reads
//! land in a `BytesMut` whose filled part is handed to quinn as `Bytes` (`write_chunk` keeps it).
//! QUIC → TCP through one 64 KiB buffer: quinn's chunks are a packet's worth each, and writing
//! them one by one (`read_chunk`) cost a syscall per packet and halved throughput; gathering
//! them first costs a copy but few writes. Used by the center (TCP forwards, TLS passthrough)
//! and the edge (its services).
//!
//! Each direction ends on EOF — then the other side's write half is closed (`finish` / TCP
//! shutdown) and the opposite direction goes on — or on an error, which resets the QUIC stream
//! (or stops reading it) so the far end learns at once, and ends the relay. A relay with no
//! byte in either direction for `idle` (`tunnel.relay_idle_secs`) ends the same way: an idle
//! client cannot hold one of the tunnel's streams for ever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xpod_tunnel::plane;

/// Bytes read from TCP at most per chunk.
const CHUNK: usize = 64 * 1024;
/// Application error code for a stream reset because its TCP side failed.
const TCP_FAILED: u32 = 2;
/// Application error code for a stream reset because the relay was idle too long.
const IDLE: u32 = 3;

/// Relays until both directions are done, on the tunnel's data plane (`xpod_tunnel::plane`:
/// the socket moves to the thread that drives the QUIC connection, so a packet wakes no other
/// thread). Dropping the future stops the relay. Returns (TCP → QUIC, QUIC → TCP) byte counts.
pub async fn relay(
    tcp: TcpStream,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    idle: Duration,
    limits: Option<std::sync::Arc<super::bandwidth::Pair>>,
) -> (u64, u64) {
    let tcp = match plane::into_plane_tcp(tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::debug!(error = %e, "cannot move the connection to the data plane");
            return (0, 0);
        }
    };
    plane::spawn(async move {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => relay_here(tcp, send, recv, idle, limits).await,
            Err(e) => {
                tracing::debug!(error = %e, "cannot register the connection on the data plane");
                (0, 0)
            }
        }
    })
    .await
    .unwrap_or((0, 0))
}

/// [`relay`] on the current runtime.
async fn relay_here(
    tcp: TcpStream,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    idle: Duration,
    limits: Option<std::sync::Arc<super::bandwidth::Pair>>,
) -> (u64, u64) {
    let (to_quic, to_tcp) = (
        limits.as_deref().map(|p| &p.up),
        limits.as_deref().map(|p| &p.down),
    );
    let (mut tr, mut tw) = tcp.into_split();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Milliseconds since `epoch` of the last byte either way.
    let epoch = tokio::time::Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    let up = async {
        let mut stop_rx = stop_rx.clone();
        let mut n = 0u64;
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let read = tokio::select! {
                r = tr.read_buf(&mut buf) => r,
                _ = stop_rx.changed() => {
                    let _ = send.reset(TCP_FAILED.into());
                    return n;
                }
            };
            match read {
                Ok(0) => {
                    let _ = send.finish();
                    return n;
                }
                Ok(k) => {
                    n += k as u64;
                    touch();
                    super::bandwidth::pace(to_quic, k).await;
                    if send.write_chunk(buf.split().freeze()).await.is_err() {
                        return n; // the stream is gone: its peer stopped or reset it
                    }
                }
                Err(_) => {
                    let _ = send.reset(TCP_FAILED.into());
                    return n;
                }
            }
        }
    };
    let down = async {
        let mut stop_rx = stop_rx.clone();
        let mut n = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let read = tokio::select! {
                r = recv.read(&mut buf) => r,
                _ = stop_rx.changed() => {
                    let _ = recv.stop(IDLE.into());
                    let _ = tw.shutdown().await;
                    return n;
                }
            };
            match read {
                Ok(Some(k)) => {
                    n += k as u64;
                    touch();
                    super::bandwidth::pace(to_tcp, k).await;
                    if tw.write_all(&buf[..k]).await.is_err() {
                        let _ = recv.stop(TCP_FAILED.into());
                        let _ = stop_tx.send(true);
                        return n;
                    }
                }
                Ok(None) => {
                    let _ = tw.shutdown().await;
                    return n;
                }
                Err(_) => {
                    // Reset by the far end, or the connection is gone: end both directions.
                    let _ = tw.shutdown().await;
                    let _ = stop_tx.send(true);
                    return n;
                }
            }
        }
    };
    let watchdog = async {
        loop {
            let quiet = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                tracing::debug!(?idle, "relay idle: closed");
                let _ = stop_tx.send(true);
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let both = async { tokio::join!(up, down) };
    tokio::pin!(both);
    tokio::select! {
        r = &mut both => r,
        () = watchdog => both.await,
    }
}
