//! The data plane: the runtime that moves tunnel bytes.
//!
//! Every QUIC endpoint of the process ([`CenterEndpoint`](crate::endpoint::CenterEndpoint),
//! [`EdgeDialer`](crate::endpoint::EdgeDialer)) and the TCP↔QUIC relays built on them run on one
//! dedicated tokio runtime — by default a current-thread runtime on its own OS thread named
//! `xpod-tunnel`. Everything else (HTTP, the store, DNS) stays on the main multi-thread runtime
//! and uses the same connections and streams from there: quinn's streams and tokio's wakers work
//! across runtimes.
//!
//! Why: one relayed packet passes through three tasks — the TCP reader or writer, quinn's
//! connection driver (crypto, congestion control) and its endpoint driver (the UDP socket). On a
//! multi-thread runtime they land on different workers and every packet costs cross-thread
//! wake-ups; profiles showed no single hot spot, with scheduler and wake-up time a visible share
//! (≈ 8 %) and the rest spread over crypto, copies and quinn. On one thread the
//! wake-ups are queue pushes. Measured with `tunnelbench` on 2 cores (README, "Benchmarks"):
//! a TCP forward went from 2.0 to 2.5–2.75 Gbit/s.
//!
//! A center with many cores and many busy edges can give the plane more threads
//! (`tunnel.threads`, [`configure`]): then it is a multi-thread runtime of its own, which still
//! keeps tunnel work from competing with HTTP handlers for the same workers.
//!
//! How things get onto the plane:
//! - [`runtime`] is a `quinn::Runtime` that spawns quinn's drivers on the plane, registers the UDP
//!   socket with the plane's reactor and arms timers on the plane's clock, whoever calls
//!   `connect` or `accept`.
//! - [`spawn`] runs a future there and returns a [`Task`] that aborts it when dropped, so a caller
//!   on the main runtime that is cancelled (a `JoinSet` shut down) cancels the work too.
//! - [`TcpStream`](tokio::net::TcpStream)s accepted on the main runtime are moved over with
//!   [`into_plane_tcp`] (deregistered there, registered with the plane's reactor inside the
//!   task), so their readiness events wake the relay on its own thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Threads of the plane when nobody configured it.
pub const DEFAULT_THREADS: usize = 1;
/// The most threads [`configure`] accepts.
pub const MAX_THREADS: usize = 64;

static PLANE: OnceLock<Plane> = OnceLock::new();
/// Serializes starting the plane (so two callers never start two).
static INIT: Mutex<()> = Mutex::new(());

struct Plane {
    handle: Handle,
    threads: usize,
}

/// Why [`configure`] refused.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("tunnel threads must be 1..={MAX_THREADS}, got {0}")]
    Threads(usize),
    #[error(
        "the tunnel data plane already runs with {running} thread(s); {wanted} asked too late"
    )]
    AlreadyStarted { running: usize, wanted: usize },
    #[error("cannot start the tunnel data plane: {0}")]
    Start(#[source] std::io::Error),
}

/// Starts the plane with `threads` threads. Call it once, before the first endpoint is bound;
/// calling it again with the same number is fine, with another number is an error (the plane
/// is already running).
pub fn configure(threads: usize) -> Result<(), PlaneError> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(PlaneError::Threads(threads));
    }
    let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if PLANE.get().is_none() {
        let started = start(threads).map_err(PlaneError::Start)?;
        let _ = PLANE.set(started); // cannot be taken: `INIT` is held and it was empty
    }
    let running = PLANE.get().map_or(threads, |p| p.threads);
    if running != threads {
        return Err(PlaneError::AlreadyStarted {
            running,
            wanted: threads,
        });
    }
    Ok(())
}

fn start(threads: usize) -> std::io::Result<Plane> {
    let handle = if threads == 1 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("xpod-tunnel".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        handle
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("xpod-tunnel")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        // The plane lives as long as the process.
        std::mem::forget(rt);
        handle
    };
    tracing::debug!(threads, "tunnel data plane started");
    Ok(Plane { handle, threads })
}

fn plane() -> &'static Plane {
    if let Some(p) = PLANE.get() {
        return p;
    }
    let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
    // A process that cannot start one thread and an epoll instance cannot run a node either.
    PLANE.get_or_init(|| start(DEFAULT_THREADS).expect("the tunnel data plane starts"))
}

/// The plane's runtime handle (starting the plane with [`DEFAULT_THREADS`] if nobody did).
pub fn handle() -> &'static Handle {
    &plane().handle
}

/// The number of threads the plane runs with.
pub fn threads() -> usize {
    plane().threads
}

/// A `quinn::Runtime` whose drivers, UDP socket and timers live on the plane.
pub fn runtime() -> Arc<dyn quinn::Runtime> {
    Arc::new(PlaneRuntime(handle().clone()))
}

/// Runs `future` on the plane. Dropping the returned [`Task`] aborts it.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Task(handle().spawn(future))
}

/// Takes a socket off the current runtime's reactor, to be registered on the plane with
/// `tokio::net::TcpStream::from_std` inside a task [`spawn`]ed there.
pub fn into_plane_tcp(tcp: tokio::net::TcpStream) -> std::io::Result<std::net::TcpStream> {
    tcp.into_std()
}

/// A task on the plane; resolves to `None` if it panicked or was aborted. Aborts the task when
/// dropped.
#[derive(Debug)]
pub struct Task<T>(JoinHandle<T>);

impl<T> Future for Task<T> {
    type Output = Option<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct PlaneRuntime(Handle);

impl quinn::Runtime for PlaneRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        // A tokio `Sleep` binds to the timer of the runtime current at its creation.
        let _on_plane = self.0.enter();
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _on_plane = self.0.enter();
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_refuses_zero_and_too_many() {
        assert!(matches!(configure(0), Err(PlaneError::Threads(0))));
        assert!(matches!(
            configure(MAX_THREADS + 1),
            Err(PlaneError::Threads(_))
        ));
    }

    #[tokio::test]
    async fn tasks_run_on_the_plane_thread_and_abort_on_drop() {
        let name = spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("xpod-tunnel"));

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = spawn(async move {
            let _tx = tx; // dropped when the task is aborted
            std::future::pending::<()>().await
        });
        drop(task);
        // The sender is dropped by the abort: the receiver sees the channel closed.
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn a_tcp_stream_moves_to_the_plane() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.unwrap();
            back
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let std_tcp = into_plane_tcp(tcp).unwrap();
        spawn(async move {
            let mut tcp = tokio::net::TcpStream::from_std(std_tcp).unwrap();
            let mut buf = [0u8; 4];
            tcp.read_exact(&mut buf).await.unwrap();
            buf.reverse();
            tcp.write_all(&buf).await.unwrap();
        })
        .await
        .unwrap();
        assert_eq!(&client.await.unwrap(), b"gnip");
    }
}
