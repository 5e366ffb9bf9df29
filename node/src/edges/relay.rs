//! Relaying a TCP connection and a QUIC stream, byte for byte. TCP → QUIC without a copy: reads
//! land in a `BytesMut` whose filled part is handed to quinn as `Bytes` (`write_chunk` keeps it).
//! QUIC → TCP through one 64 KiB buffer: quinn's chunks are a packet's worth each, and writing
//! them one by one (`read_chunk`) cost a syscall per packet and halved throughput; gathering
//! them first costs a copy but few writes. Used by the center (TCP forwards, TLS passthrough)
//! and the edge (its services).
//!
//! Each direction ends on EOF — then the other side's write half is closed (`finish` / TCP
//! shutdown) and the opposite direction goes on — or on an error, which resets the QUIC stream
//! (or stops reading it) so the far end learns at once, and ends the relay.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xpod_tunnel::plane;

/// Bytes read from TCP at most per chunk.
const CHUNK: usize = 64 * 1024;
/// Application error code for a stream reset because its TCP side failed.
const TCP_FAILED: u32 = 2;

/// Relays until both directions are done, on the tunnel's data plane (`xpod_tunnel::plane`:
/// the socket moves to the thread that drives the QUIC connection, so a packet wakes no other
/// thread). Dropping the future stops the relay. Returns (TCP → QUIC, QUIC → TCP) byte counts.
pub async fn relay(tcp: TcpStream, send: quinn::SendStream, recv: quinn::RecvStream) -> (u64, u64) {
    let tcp = match plane::into_plane_tcp(tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::debug!(error = %e, "cannot move the connection to the data plane");
            return (0, 0);
        }
    };
    plane::spawn(async move {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => relay_here(tcp, send, recv).await,
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
) -> (u64, u64) {
    let (mut tr, mut tw) = tcp.into_split();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let up = async {
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
        let mut n = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(k)) => {
                    n += k as u64;
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
    tokio::join!(up, down)
}
