//! Opening a data stream: one bidirectional QUIC stream, its [`StreamHeader`] written first.
//! The one place that does it, for every forwarder (pods over the mesh, edges' services,
//! sandbox ports, the runner API, relayed TCP).

use bytes::BytesMut;

use crate::proto::StreamHeader;

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
