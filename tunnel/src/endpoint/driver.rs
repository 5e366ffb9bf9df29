//! Runs a [`Session`] over the control stream of one QUIC connection.
//!
//! The session is sans-IO; this is its I/O: one task per connection that
//! - opens (client) or accepts (server) the connection's **first bidirectional stream**, the
//!   control stream;
//! - reads bytes → [`FrameReader`] → [`Session::handle_frame`];
//! - drains [`Session::poll_transmit`] → [`FrameWriter`] → the stream (each write bounded by
//!   [`WRITE_TIMEOUT`], so a peer that stops reading cannot wedge the timers);
//! - sleeps until [`Session::poll_timeout`] and calls [`Session::handle_timeout`];
//! - delivers [`Session::poll_event`] through an `mpsc` channel, and takes commands
//!   (`send_command`, `reply`, `set_capacity`, `close`) from a [`DriverHandle`].
//!
//! Clocks: the session gets `tokio::time::Instant::now().into_std()` and its deadlines are
//! converted back with `tokio::time::Instant::from_std`, so the mapping is exact even under
//! tokio's paused test clock.
//!
//! The task ends when the session closes or the connection drops, and always emits exactly one
//! [`Event::Closed`] (the session's own, or `connection lost: …`). When *this* side ends the
//! session (it sent `Goodbye` or `Refused`), it finishes the stream and waits up to [`LINGER`]
//! for the peer to close the connection, so the last frame is delivered; when the peer ended it,
//! this side closes the connection at once. Either way the connection is closed when the task
//! ends, and nothing of it outlives the task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::{close_code, TaskGauge, TaskGuard};
use crate::proto::{
    CommandBody, Event, Frame, FrameReader, FrameWriter, Session, SessionError, Side,
};

/// Bound on writing one batch of control frames.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the side that ended the session waits for the peer to close the connection.
pub const LINGER: Duration = Duration::from_secs(3);
/// Largest chunk read from the control stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Why a [`DriverHandle`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The driver task has ended (session closed or connection lost).
    #[error("the session has ended")]
    Ended,
    /// The session refused the call in its current state.
    #[error(transparent)]
    Session(#[from] SessionError),
}

enum Cmd {
    Send(CommandBody, oneshot::Sender<Result<u64, SessionError>>),
    Reply {
        id: u64,
        ok: bool,
        message: String,
        done: oneshot::Sender<Result<(), SessionError>>,
    },
    Capacity(Option<String>),
    Close(String),
}

#[derive(Debug, Default)]
struct Shared {
    established: AtomicBool,
    peer_id: Mutex<Option<String>>,
}

/// Controls a running driver. Cheap to clone; dropping every handle does not stop the driver
/// (the session ends on its own terms, or with the connection).
#[derive(Clone)]
pub struct DriverHandle {
    cmds: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
    conn: quinn::Connection,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle")
            .field("remote", &self.conn.remote_address())
            .field("established", &self.is_established())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl DriverHandle {
    /// Sends a command; the id is matched by the peer's [`Event::CommandReplied`].
    pub async fn send_command(&self, body: CommandBody) -> Result<u64, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Send(body, tx))
            .await
            .map_err(|_| DriverError::Ended)?;
        Ok(rx.await.map_err(|_| DriverError::Ended)??)
    }

    /// Answers a command received as [`Event::CommandReceived`].
    pub async fn reply(
        &self,
        id: u64,
        ok: bool,
        message: impl Into<String>,
    ) -> Result<(), DriverError> {
        let (done, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Reply {
                id,
                ok,
                message: message.into(),
                done,
            })
            .await
            .map_err(|_| DriverError::Ended)?;
        Ok(rx.await.map_err(|_| DriverError::Ended)??)
    }

    /// Client: the capacity report (JSON) for the following heartbeats.
    pub async fn set_capacity(&self, capacity: Option<String>) -> Result<(), DriverError> {
        self.cmds
            .send(Cmd::Capacity(capacity))
            .await
            .map_err(|_| DriverError::Ended)
    }

    /// Ends the session politely (`Goodbye { reason }`); the driver then closes the connection.
    /// Does nothing if the driver has already ended.
    pub async fn close(&self, reason: impl Into<String>) {
        let _ = self.cmds.send(Cmd::Close(reason.into())).await;
    }

    /// Whether the handshake (Register/Registered) has completed.
    pub fn is_established(&self) -> bool {
        self.shared.established.load(Ordering::SeqCst)
    }

    /// The peer's node id (server: from the certificate; client: the center's, once registered).
    pub fn peer_id(&self) -> Option<String> {
        self.shared.peer_id.lock().expect("poisoned").clone()
    }

    /// Whether the driver task has ended.
    pub fn is_finished(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until the driver task has ended.
    pub async fn finished(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// The connection (e.g. to open data streams on it).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }
}

/// Spawns the driver for `session` on `conn`; events go to `events`. The session's side
/// decides who opens the control stream (the client).
pub fn spawn(
    conn: quinn::Connection,
    session: Session,
    events: mpsc::Sender<Event>,
) -> DriverHandle {
    spawn_tagged(conn, session, events, |e| e, None)
}

/// [`spawn`] with events mapped by `tag` before they are sent (e.g. to say which connection
/// they come from; `tag` may also record state), and the task counted in `gauge`.
pub fn spawn_tagged<T, F>(
    conn: quinn::Connection,
    session: Session,
    events: mpsc::Sender<T>,
    tag: F,
    gauge: Option<&TaskGauge>,
) -> DriverHandle
where
    T: Send + 'static,
    F: FnMut(Event) -> T + Send + 'static,
{
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (done_tx, done_rx) = watch::channel(false);
    let shared = Arc::new(Shared::default());
    let guard = gauge.map(TaskGauge::guard);
    let driver = Driver {
        conn: conn.clone(),
        session,
        events,
        tag,
        cmds: cmd_rx,
        shared: shared.clone(),
        closed_emitted: false,
    };
    tokio::spawn(driver.run(done_tx, guard));
    DriverHandle {
        cmds: cmd_tx,
        shared,
        done: done_rx,
        conn,
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

struct Driver<T, F> {
    conn: quinn::Connection,
    session: Session,
    events: mpsc::Sender<T>,
    tag: F,
    cmds: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    closed_emitted: bool,
}

/// How the control loop ended.
enum End {
    /// The session closed; `linger` if this side sent the closing frame.
    Session { linger: bool },
    /// The connection is gone (or unusable).
    Lost(String),
}

impl<T, F> Driver<T, F>
where
    T: Send + 'static,
    F: FnMut(Event) -> T + Send + 'static,
{
    async fn run(mut self, done: watch::Sender<bool>, _guard: Option<TaskGuard>) {
        let remote = self.conn.remote_address();
        let end = self.run_inner().await;
        match end {
            End::Session { linger } => {
                if linger {
                    let _ = tokio::time::timeout(LINGER, self.conn.closed()).await;
                }
                self.conn.close(close_code::DONE, b"session closed");
            }
            End::Lost(reason) => {
                debug!(%remote, %reason, "control stream ended with the connection");
                self.conn.close(close_code::DONE, b"session closed");
                if !self.closed_emitted {
                    self.emit(Event::Closed {
                        reason: format!("connection lost: {reason}"),
                    })
                    .await;
                }
            }
        }
        let _ = done.send(true);
    }

    async fn emit(&mut self, event: Event) {
        match &event {
            Event::Registered(r) => {
                self.shared.established.store(true, Ordering::SeqCst);
                *self.shared.peer_id.lock().expect("poisoned") = Some(r.center_id.clone());
            }
            Event::PeerRegistered(_) => self.shared.established.store(true, Ordering::SeqCst),
            Event::Closed { .. } => {
                self.closed_emitted = true;
                self.shared.established.store(false, Ordering::SeqCst);
            }
            _ => {}
        }
        let item = (self.tag)(event);
        // A dropped receiver only means nobody listens; the session still runs.
        let _ = self.events.send(item).await;
    }

    async fn run_inner(&mut self) -> End {
        if self.session.side() == Side::Server {
            *self.shared.peer_id.lock().expect("poisoned") =
                self.session.peer_id().map(str::to_owned);
        }
        let opened = match self.session.side() {
            Side::Client => self.conn.open_bi().await.map_err(|e| e.to_string()),
            Side::Server => {
                let deadline = self
                    .session
                    .poll_timeout()
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(10));
                tokio::select! {
                    r = self.conn.accept_bi() => r.map_err(|e| e.to_string()),
                    _ = tokio::time::sleep_until(deadline) => {
                        self.session.handle_timeout(now());
                        Err("the peer opened no control stream in time".to_string())
                    }
                }
            }
        };
        let (mut send, mut recv) = match opened {
            Ok(streams) => streams,
            Err(reason) => {
                while let Some(e) = self.session.poll_event() {
                    self.emit(e).await;
                }
                return End::Lost(reason);
            }
        };

        let mut reader = FrameReader::new();
        let mut writer = FrameWriter::new();
        let mut out = BytesMut::new();
        let mut cmds_open = true;
        let mut peer_finished = false;
        loop {
            while let Some(e) = self.session.poll_event() {
                self.emit(e).await;
            }
            let mut sent_close = false;
            while let Some(frame) = self.session.poll_transmit() {
                sent_close |= matches!(frame, Frame::Goodbye(_) | Frame::Refused(_));
                if let Err(e) = writer.write(&frame, &mut out) {
                    // Only our own frames can fail to encode (e.g. an oversized Register).
                    warn!(error = %e, frame = frame.name(), "cannot encode a control frame");
                    self.session
                        .close(format!("cannot encode a {} frame: {e}", frame.name()));
                }
            }
            // A close above may have queued more.
            while let Some(e) = self.session.poll_event() {
                self.emit(e).await;
            }
            while let Some(frame) = self.session.poll_transmit() {
                sent_close |= matches!(frame, Frame::Goodbye(_) | Frame::Refused(_));
                let _ = writer.write(&frame, &mut out);
            }
            if !out.is_empty() {
                match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(&out)).await {
                    Ok(Ok(())) => out.clear(),
                    Ok(Err(e)) => return End::Lost(e.to_string()),
                    Err(_) => {
                        return End::Lost(format!(
                            "the peer did not read the control stream for {}s",
                            WRITE_TIMEOUT.as_secs()
                        ))
                    }
                }
            }
            if self.session.is_closed() {
                let _ = send.finish();
                return End::Session { linger: sent_close };
            }

            let deadline = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                chunk = recv.read_chunk(READ_CHUNK, true), if !peer_finished => match chunk {
                    Ok(Some(chunk)) => {
                        reader.push(&chunk.bytes);
                        loop {
                            match reader.next_frame() {
                                Ok(Some(frame)) => {
                                    if let Err(e) = self.session.handle_frame(now(), frame) {
                                        debug!(error = %e, "protocol error from the peer");
                                    }
                                    if self.session.is_closed() {
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    self.session.close(format!("undecodable control stream: {e}"));
                                    break;
                                }
                            }
                        }
                    }
                    Ok(None) => {
                        peer_finished = true;
                        self.session.close("the peer finished the control stream without a Goodbye");
                    }
                    Err(e) => return End::Lost(e.to_string()),
                },
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    self.session.handle_timeout(now());
                }
                cmd = self.cmds.recv(), if cmds_open => match cmd {
                    None => cmds_open = false,
                    Some(Cmd::Send(body, tx)) => { let _ = tx.send(self.session.send_command(body)); }
                    Some(Cmd::Reply { id, ok, message, done }) => {
                        let _ = done.send(self.session.reply(id, ok, message));
                    }
                    Some(Cmd::Capacity(c)) => self.session.set_capacity(c),
                    Some(Cmd::Close(reason)) => self.session.close(reason),
                },
                e = self.conn.closed() => return End::Lost(e.to_string()),
            }
        }
    }
}
