//! Small socket helpers shared by the fronts, the edges, sandboxes and terminals: a stream
//! whose first bytes were already read ([`Replay`]), the address a client would use for a
//! bound one ([`reachable`]), and bounded line reads from a peer that is not trusted
//! ([`read_line_bounded`], [`answer_line`]).

use std::net::SocketAddr;

/// A stream whose first bytes were already read (a ClientHello looked at for its SNI): they
/// are read again first, then the stream itself.
pub struct Replay<S> {
    head: bytes::Bytes,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(head: impl Into<bytes::Bytes>, inner: S) -> Self {
        Replay {
            head: head.into(),
            inner,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Replay<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            let head = self.head.split_to(n);
            buf.put_slice(&head);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The address a client would use to reach `addr` (0.0.0.0 → 127.0.0.1).
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    a
}

/// Reads one `\n`-terminated line of at most `max` bytes (without the newline). `Ok(None)` at
/// a clean end of stream; an overlong or unterminated line is an error, and nothing beyond
/// `max` bytes is ever buffered.
pub async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = tokio::io::AsyncBufReadExt::fill_buf(r).await?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a line without its end",
                ))
            };
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {max} bytes"),
            ));
        }
        line.extend_from_slice(&buf[..take]);
        tokio::io::AsyncBufReadExt::consume(r, take + usize::from(done));
        if done {
            return Ok(Some(line));
        }
    }
}

/// Reads one answer line (≤ 4 KiB, within `within`) byte by byte: what follows it belongs to
/// the caller. `who` names the other end in errors.
pub async fn answer_line<R: tokio::io::AsyncRead + Unpin>(
    conn: &mut R,
    who: &str,
    within: std::time::Duration,
) -> anyhow::Result<Vec<u8>> {
    let read = async {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            use tokio::io::AsyncReadExt as _;
            if conn.read(&mut byte).await? == 0 {
                anyhow::bail!("{who} closed the connection");
            }
            if byte[0] == b'\n' {
                return Ok(line);
            }
            line.push(byte[0]);
            if line.len() > 4096 {
                anyhow::bail!("{who} sent an overlong answer");
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| anyhow::anyhow!("{who} did not answer within {within:?}"))?
}
