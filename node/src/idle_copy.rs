//! [`copy_bidirectional`]: tokio's `copy_bidirectional` that also ends after `idle` without a
//! byte in either direction, so a client that opens an upgraded or relayed connection and goes
//! quiet does not hold it (and what it holds on the far side) for ever. Used by the WebSocket
//! and TLS relays of edges and by sandbox port connections; QUIC relays have their own
//! (`edges::relay`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Milliseconds since an epoch of the last byte through any [`Touch`] sharing it.
struct Activity {
    epoch: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn quiet(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// An I/O object that records activity.
struct Touch<'a, T> {
    inner: &'a mut T,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touch<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touch<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways until both directions are done, an error, or `idle` without a byte (then
/// an error of kind `TimedOut`; the caller drops both ends, which closes them).
pub async fn copy_bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity {
        epoch: Instant::now(),
        last: AtomicU64::new(0),
    };
    let mut ta = Touch {
        inner: a,
        activity: &activity,
    };
    let mut tb = Touch {
        inner: b,
        activity: &activity,
    };
    let watchdog = async {
        loop {
            let quiet = activity.quiet();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut ta, &mut tb) => r,
        () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no byte either way for {idle:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_open_and_silence_ends_it() {
        let (mut a_out, mut a_in) = tokio::io::duplex(1024);
        let (mut b_in, mut b_out) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move {
            copy_bidirectional(&mut a_in, &mut b_in, Duration::from_secs(10)).await
        });
        // Bytes every 6 s for 30 s: never idle for 10 s.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            a_out.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_out.read_exact(&mut one).await.unwrap();
        }
        assert!(!copy.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        let err = copy.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
