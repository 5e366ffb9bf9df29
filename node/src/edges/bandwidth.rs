//! Per-edge bandwidth limits (issue 19), enforced by the center that holds the edge's tunnel:
//! the edge cannot be trusted to limit itself.
//!
//! The limit is the node policy's `bandwidthBytesPerSec` (`xpod nodes set EDGE --bandwidth
//! 10MB`, effective within the policies' refresh), applied per direction — to the edge
//! (requests, uploads) and from it (responses, downloads) — across everything this center
//! relays for the edge: HTTP to its services (bodies, and upgraded connections), its pods'
//! requests (bodies), TCP forwards and TLS passthrough. Headers are not counted. An edge with
//! tunnels to two centers can reach the limit through each.
//!
//! A [`Limiter`] is a token bucket of one second's worth that may go into debt: a chunk is
//! charged whole and waits until its debt is paid (bodies and raw relays), or — for an upgraded
//! connection, which cannot hold back bytes it reported written — the next chunk waits. A
//! chunk is never split, and the average rate holds.

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// One direction's bucket.
#[derive(Debug)]
pub struct Limiter {
    /// Bytes per second (0: unlimited).
    rate: AtomicU64,
    state: Mutex<Bucket>,
    /// How often a sender had to wait (for metrics and tests).
    waits: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative: the debt to wait off first.
    tokens: f64,
    at: Instant,
}

impl Limiter {
    fn new(rate: u64) -> Limiter {
        Limiter {
            rate: AtomicU64::new(rate),
            state: Mutex::new(Bucket {
                tokens: rate as f64,
                at: Instant::now(),
            }),
            waits: AtomicU64::new(0),
        }
    }

    /// Charges `n` bytes just sent; how long the next send must wait (`None`: not at all).
    pub fn charge(&self, n: usize) -> Option<Duration> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 || n == 0 {
            return None;
        }
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let burst = rate as f64;
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * burst).min(burst);
        b.at = now;
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            return None;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        Some(Duration::from_secs_f64(-b.tokens / burst))
    }

    /// Times a sender had to wait.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

/// An edge's two directions.
#[derive(Debug)]
pub struct Pair {
    /// To the edge.
    pub up: Limiter,
    /// From the edge.
    pub down: Limiter,
}

/// The limits of the edges this center relays for.
#[derive(Default)]
pub struct Bandwidth {
    by_edge: Mutex<HashMap<String, Arc<Pair>>>,
}

impl Bandwidth {
    /// The limiters of `edge` at `rate` bytes per second (`None`: unlimited, and none kept). A
    /// changed rate applies to relays already running.
    pub fn of(&self, edge: &str, rate: Option<u64>) -> Option<Arc<Pair>> {
        let mut map = self.by_edge.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rate) = rate.filter(|r| *r > 0) else {
            if let Some(p) = map.remove(edge) {
                // Relays holding it run unlimited from now on.
                p.up.rate.store(0, Ordering::Relaxed);
                p.down.rate.store(0, Ordering::Relaxed);
            }
            return None;
        };
        let pair = map
            .entry(edge.to_string())
            .or_insert_with(|| {
                Arc::new(Pair {
                    up: Limiter::new(rate),
                    down: Limiter::new(rate),
                })
            })
            .clone();
        pair.up.rate.store(rate, Ordering::Relaxed);
        pair.down.rate.store(rate, Ordering::Relaxed);
        Some(pair)
    }

    /// Per limited edge: (node id, rate, waits to the edge, waits from it).
    pub fn snapshot(&self) -> Vec<(String, u64, u64, u64)> {
        let map = self.by_edge.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    p.up.rate.load(Ordering::Relaxed),
                    p.up.waits(),
                    p.down.waits(),
                )
            })
            .collect()
    }
}

/// Waits off what [`Limiter::charge`] asked for.
pub async fn pace(limiter: Option<&Limiter>, n: usize) {
    if let Some(wait) = limiter.and_then(|l| l.charge(n)) {
        tokio::time::sleep(wait).await;
    }
}

/// A body whose data frames are paced by a limiter: a frame that goes over the limit is held
/// until its debt is paid, so even a short body keeps to the rate.
pub struct Paced<B> {
    inner: B,
    limits: Arc<Pair>,
    to_edge: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    held: Option<Frame<Bytes>>,
}

impl<B> Paced<B> {
    /// `inner` paced by `limits` in the direction `to_edge` (else from the edge).
    pub fn new(inner: B, limits: Arc<Pair>, to_edge: bool) -> Paced<B> {
        Paced {
            inner,
            limits,
            to_edge,
            sleep: None,
            held: None,
        }
    }

    fn limiter(&self) -> &Limiter {
        if self.to_edge {
            &self.limits.up
        } else {
            &self.limits.down
        }
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        loop {
            if paused(&mut self.sleep, cx) {
                return Poll::Pending;
            }
            if let Some(frame) = self.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
            let wait = match &frame {
                Some(Ok(f)) => f.data_ref().and_then(|d| self.limiter().charge(d.len())),
                _ => None,
            };
            match (wait, frame) {
                (Some(wait), Some(Ok(f))) => {
                    self.held = Some(f);
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
                (_, frame) => return Poll::Ready(frame),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection to the edge (an upgraded one) paced both ways: reads from it are `down`,
/// writes to it `up`.
pub struct PacedIo<T> {
    inner: T,
    limits: Arc<Pair>,
    read_sleep: Option<Pin<Box<Sleep>>>,
    write_sleep: Option<Pin<Box<Sleep>>>,
}

impl<T> PacedIo<T> {
    pub fn new(inner: T, limits: Arc<Pair>) -> PacedIo<T> {
        PacedIo {
            inner,
            limits,
            read_sleep: None,
            write_sleep: None,
        }
    }
}

/// Polls a pending pause; `true` while it still runs.
fn paused(sleep: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    if let Some(s) = sleep.as_mut() {
        if s.as_mut().poll(cx).is_pending() {
            return true;
        }
        *sleep = None;
    }
    false
}

impl<T: AsyncRead + Unpin> AsyncRead for PacedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if paused(&mut this.read_sleep, cx) {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if let Some(wait) = this.limits.down.charge(buf.filled().len() - before) {
                this.read_sleep = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PacedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if paused(&mut this.write_sleep, cx) {
            return Poll::Pending;
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            if let Some(wait) = this.limits.up.charge(*n) {
                this.write_sleep = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test(start_paused = true)]
    async fn the_average_rate_holds_in_virtual_time() {
        let bw = Bandwidth::default();
        let pair = bw.of("laptop", Some(100_000)).unwrap();
        // A second's worth goes at once; the next 500 kB take 5 s of (virtual) time.
        assert_eq!(pair.up.charge(100_000), None);
        let start = Instant::now();
        for _ in 0..50 {
            pace(Some(&pair.up), 10_000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((4.9..=5.1).contains(&took), "took {took} s");
        assert!(pair.up.waits() >= 49);
        // The other direction is its own bucket.
        assert_eq!(pair.down.charge(100_000), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_body_arrives_whole_at_the_rate() {
        let bw = Bandwidth::default();
        let pair = bw.of("laptop", Some(64 * 1024)).unwrap();
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..16)
            .map(|_| Ok(Frame::data(Bytes::from(vec![7u8; 16 * 1024]))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let start = Instant::now();
        let got = Paced::new(body, pair, false)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(got.len(), 256 * 1024);
        // 256 KiB at 64 KiB/s, the first second's worth free: 3 s, give or take a chunk.
        let took = start.elapsed().as_secs_f64();
        assert!((2.7..=3.3).contains(&took), "took {took} s");
    }

    #[test]
    fn removing_the_limit_frees_running_relays() {
        let bw = Bandwidth::default();
        let pair = bw.of("laptop", Some(1000)).unwrap();
        assert!(pair.up.charge(5000).is_some());
        assert!(bw.of("laptop", None).is_none());
        assert_eq!(pair.up.charge(5000), None, "unlimited once removed");
        assert!(bw.snapshot().is_empty());
        // A changed rate reaches the same limiters.
        let again = bw.of("laptop", Some(10)).unwrap();
        let faster = bw.of("laptop", Some(1_000_000)).unwrap();
        assert!(Arc::ptr_eq(&again, &faster));
    }
}
