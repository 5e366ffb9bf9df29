//! Data streams: [`open`] one (a bidirectional QUIC stream, its [`StreamHeader`] written
//! first) and [`accept`] one (its header read, at most [`MAX_STREAM_HEADER`] bytes). The one
//! place that does either, for every forwarder and server (pods over the mesh, edges'
//! services, sandbox ports, the runner API, relayed TCP).

use bytes::BytesMut;

use crate::proto::{StreamHeader, MAX_STREAM_HEADER};

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The connection is gone (the peer is unreachable until it reconnects).
    #[error("the connection is gone: {0}")]
    Lost(#[from] quinn::ConnectionError),
    /// The header could not be encoded or written.
    #[error("{0}")]
    Failed(String),
}

/// Opens a stream on `conn` and writes `header`; the caller speaks the target's protocol next.
pub async fn open(
    conn: &quinn::Connection,
    header: &StreamHeader,
) -> Result<(quinn::SendStream, quinn::RecvStream), OpenError> {
    let mut head = BytesMut::new();
    header
        .encode(&mut head)
        .map_err(|e| OpenError::Failed(e.to_string()))?;
    let (mut send, recv) = conn.open_bi().await?;
    send.write_all(&head)
        .await
        .map_err(|e| OpenError::Failed(format!("writing the stream header: {e}")))?;
    Ok((send, recv))
}

/// Reads a stream's header: `Ok(Some((header, rest)))` where `rest` holds the bytes read past
/// it (payload, for whoever serves the target), `Ok(None)` on a clean end before any byte.
/// A header over [`MAX_STREAM_HEADER`] bytes, a malformed one or a stream that ends inside it
/// is an error naming the problem. The caller bounds the time it may take.
pub async fn accept(
    recv: &mut quinn::RecvStream,
) -> Result<Option<(StreamHeader, BytesMut)>, String> {
    let mut buf = BytesMut::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(h) = StreamHeader::decode(&mut buf).map_err(|e| e.to_string())? {
            return Ok(Some((h, buf)));
        }
        if buf.len() >= MAX_STREAM_HEADER {
            return Err(format!(
                "stream header exceeds the {MAX_STREAM_HEADER}-byte cap"
            ));
        }
        match recv.read(&mut chunk).await.map_err(|e| e.to_string())? {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None if buf.is_empty() => return Ok(None),
            None => return Err("stream ended inside its header".into()),
        }
    }
}
