//! The control-stream state machine, for both ends, without I/O.
//!
//! A [`Session`] is created by the dialing side ([`Session::new_client`]: an edge, or a center
//! dialing another center) or the accepting side ([`Session::new_server`], given the node id read
//! from the peer's verified certificate). The driver feeds it decoded frames
//! ([`handle_frame`](Session::handle_frame)) and timer expiries
//! ([`handle_timeout`](Session::handle_timeout)), and drains what it produces:
//! [`poll_transmit`](Session::poll_transmit) (frames to write, after the
//! [`PREFACE`](super::PREFACE) — use a [`FrameWriter`](super::FrameWriter)),
//! [`poll_timeout`](Session::poll_timeout) (when to call `handle_timeout` next) and
//! [`poll_event`](Session::poll_event). Every call takes `now`; the session never reads a clock.
//!
//! Protocol:
//! 1. The client sends `Register`. The server compares its `node_id` with the certificate's: a
//!    mismatch is answered `Refused` and the session closes; otherwise `Registered` (carrying
//!    the heartbeat interval). Before that, any other frame is a protocol error, and either side
//!    closes if the handshake takes longer than [`Timers::handshake_timeout`].
//! 2. The client sends `Heartbeat` every interval (15 s); the server answers `HeartbeatAck`. The
//!    server reports the peer [`Inactive`](PeerStatus::Inactive) after 60 s without a heartbeat
//!    and [`Offline`](PeerStatus::Offline) after 5 min, then closes. The client closes after 45 s
//!    without an ack, so its dialer reconnects instead of waiting on a dead path.
//! 3. Either side may send `Command`s, answered by `CommandReply` with the same id. `Ping` is
//!    answered by the session itself.
//! 4. A protocol error closes the session: the session queues `Goodbye` with the error's text
//!    and reports [`Event::Closed`]; `handle_frame` also returns the error.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::control::{
    Command, CommandBody, CommandReply, Frame, Goodbye, Heartbeat, HeartbeatAck, Refused, Register,
    Registered,
};
use super::ProtoError;

/// The session's timings. The defaults are the seed's (ARCHITECTURE §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// Server: the heartbeat interval it tells clients in `Registered` (whole seconds, ≥ 1 s).
    pub heartbeat_interval: Duration,
    /// Server: a peer without a heartbeat for this long is [`PeerStatus::Inactive`].
    pub inactive_after: Duration,
    /// Server: a peer without a heartbeat for this long is [`PeerStatus::Offline`] and the
    /// session closes.
    pub offline_after: Duration,
    /// Client: close after this long without a `HeartbeatAck` (or `Registered`). At least three
    /// heartbeat intervals are always allowed, whatever this says.
    pub ack_timeout: Duration,
    /// Both: close if the handshake has not completed after this long.
    pub handshake_timeout: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heartbeat_interval: Duration::from_secs(15),
            inactive_after: Duration::from_secs(60),
            offline_after: Duration::from_secs(5 * 60),
            ack_timeout: Duration::from_secs(45),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Configuration of the dialing side.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// What to register as (its `node_id` must be the one in this node's certificate).
    pub register: Register,
    /// The wall clock (Unix ms) at the `now` given to [`Session::new_client`]; heartbeats report
    /// `sent_at_ms` relative to it, so the session still reads no clock.
    pub unix_ms_at_start: u64,
    /// Timings.
    pub timers: Timers,
}

/// Configuration of the accepting side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id, sent in `Registered`.
    pub center_id: String,
    /// Timings.
    pub timers: Timers,
}

/// Which end of the control stream a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Dialed the connection and registers.
    Client,
    /// Accepted the connection and checks the registration.
    Server,
}

/// A peer's liveness as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerStatus {
    /// Heard from within [`Timers::inactive_after`].
    Online,
    /// Silent for at least [`Timers::inactive_after`].
    Inactive,
    /// Silent for at least [`Timers::offline_after`].
    Offline,
}

impl PeerStatus {
    /// The status after `silence` without a heartbeat. The presence registry uses this too, so a
    /// node whose connection dropped ages on the same timings as one whose session is open.
    pub fn after_silence(silence: Duration, timers: &Timers) -> PeerStatus {
        if silence >= timers.offline_after {
            PeerStatus::Offline
        } else if silence >= timers.inactive_after {
            PeerStatus::Inactive
        } else {
            PeerStatus::Online
        }
    }
}

/// Something the driver should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Client: the server accepted the registration.
    Registered(Registered),
    /// Server: the peer registered; its self-reported inventory (the node id is verified).
    PeerRegistered(Register),
    /// Client: the server refused the registration (a [`Event::Closed`] follows).
    Refused(Refused),
    /// Server: a heartbeat arrived (already acknowledged); carries the capacity report.
    Heartbeat(Heartbeat),
    /// A command from the peer; answer it with [`Session::reply`].
    CommandReceived(Command),
    /// The peer answered a command sent with [`Session::send_command`].
    CommandReplied(CommandReply),
    /// Server: the peer's liveness changed (`Online` right after registration).
    PeerStatusChanged(PeerStatus),
    /// The session is over; flush [`Session::poll_transmit`], then close the connection.
    Closed {
        /// Why, for the log.
        reason: String,
    },
}

/// A call the session cannot honour in its current state (a bug in the driver, not the peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Commands and replies need a completed handshake.
    #[error("the session is not registered yet; commands are sent only after Registered")]
    NotEstablished,
    /// The session has closed.
    #[error("the session is closed")]
    Closed,
    /// `reply` for an id the peer never sent, or already answered.
    #[error("no command {0} from the peer is awaiting a reply")]
    UnknownCommand(u64),
}

/// Commands from the peer awaiting our reply; a peer that sends more is violating the protocol
/// (it bounds the memory a peer can make this session hold).
pub const MAX_PENDING_COMMANDS: usize = 1024;
/// How the reason of [`Event::Closed`] starts when the peer ended the session with a
/// `Goodbye` (a graceful close, as opposed to a timeout or a protocol error).
pub const PEER_GOODBYE: &str = "the peer closed the session: ";

/// Longest `Goodbye`/`Refused` reason sent; longer ones are cut at a character boundary.
const MAX_REASON: usize = 1024;
/// Largest heartbeat interval a client accepts from a server.
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
enum State {
    Handshake { deadline: Instant },
    Established,
    Closed,
}

#[derive(Debug)]
struct ClientState {
    register: Register,
    start: Instant,
    unix_ms_at_start: u64,
    center_id: Option<String>,
    interval: Duration,
    ack_timeout: Duration,
    next_heartbeat: Instant,
    last_ack: Instant,
    last_sent_seq: u64,
    capacity: Option<String>,
}

#[derive(Debug)]
struct ServerState {
    verified_peer_id: String,
    center_id: String,
    last_heartbeat: Instant,
    last_seq: u64,
    status: PeerStatus,
    registered: bool,
}

#[derive(Debug)]
enum Ends {
    Client(Box<ClientState>),
    Server(ServerState),
}

/// One control stream's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Session {
    ends: Ends,
    timers: Timers,
    state: State,
    transmits: VecDeque<Frame>,
    events: VecDeque<Event>,
    next_command_id: u64,
    /// Commands we sent, awaiting the peer's reply.
    awaiting_reply: BTreeSet<u64>,
    /// Commands the peer sent, awaiting our reply.
    to_answer: BTreeSet<u64>,
}

impl Session {
    /// The dialing side. Queues `Register` at once.
    pub fn new_client(cfg: ClientConfig, now: Instant) -> Session {
        let mut s = Session::new(
            Ends::Client(Box::new(ClientState {
                register: cfg.register.clone(),
                start: now,
                unix_ms_at_start: cfg.unix_ms_at_start,
                center_id: None,
                interval: cfg.timers.heartbeat_interval,
                ack_timeout: cfg.timers.ack_timeout,
                next_heartbeat: now,
                last_ack: now,
                last_sent_seq: 0,
                capacity: None,
            })),
            cfg.timers,
            now,
        );
        s.transmits.push_back(Frame::Register(cfg.register));
        s
    }

    /// The accepting side. `verified_peer_id` is the node id from the peer's certificate, as
    /// verified by mutual TLS; the peer's `Register` must claim the same id.
    pub fn new_server(
        cfg: ServerConfig,
        verified_peer_id: impl Into<String>,
        now: Instant,
    ) -> Session {
        Session::new(
            Ends::Server(ServerState {
                verified_peer_id: verified_peer_id.into(),
                center_id: cfg.center_id,
                last_heartbeat: now,
                last_seq: 0,
                status: PeerStatus::Online,
                registered: false,
            }),
            cfg.timers,
            now,
        )
    }

    fn new(ends: Ends, timers: Timers, now: Instant) -> Session {
        Session {
            ends,
            state: State::Handshake {
                deadline: now + timers.handshake_timeout,
            },
            timers,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_command_id: 1,
            awaiting_reply: BTreeSet::new(),
            to_answer: BTreeSet::new(),
        }
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        match self.ends {
            Ends::Client(_) => Side::Client,
            Ends::Server(_) => Side::Server,
        }
    }

    /// Whether the handshake has completed and the session is open.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    /// Whether the session is over (frames may still be waiting in `poll_transmit`).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The peer's node id: the verified id on a server; the center's id once registered on a
    /// client.
    pub fn peer_id(&self) -> Option<&str> {
        match &self.ends {
            Ends::Client(c) => c.center_id.as_deref(),
            Ends::Server(s) => Some(&s.verified_peer_id),
        }
    }

    /// Server: the peer's liveness (`None` on a client or before registration).
    pub fn peer_status(&self) -> Option<PeerStatus> {
        match &self.ends {
            Ends::Server(s) if s.registered => Some(s.status),
            _ => None,
        }
    }

    /// Client: the capacity report (JSON) to carry in the following heartbeats.
    pub fn set_capacity(&mut self, capacity: Option<String>) {
        if let Ends::Client(c) = &mut self.ends {
            c.capacity = capacity;
        }
    }

    /// Processes one frame received from the peer. A protocol error closes the session (a
    /// `Goodbye` is queued and [`Event::Closed`] reported) and is returned for the log. Frames
    /// arriving after the session closed are ignored.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtoError> {
        let result = match self.state {
            State::Closed => return Ok(()),
            State::Handshake { .. } => self.on_handshake_frame(now, frame),
            State::Established => self.on_established_frame(now, frame),
        };
        if let Err(e) = &result {
            self.close(e.to_string());
        }
        result
    }

    fn on_handshake_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtoError> {
        if let Frame::Goodbye(g) = frame {
            self.closed_by_peer(g);
            return Ok(());
        }
        match (&mut self.ends, frame) {
            (Ends::Server(s), Frame::Register(reg)) => {
                if reg.node_id != s.verified_peer_id {
                    let reason = format!(
                        "node id {:?} does not match certificate node id {:?}",
                        reg.node_id, s.verified_peer_id
                    );
                    self.transmits.push_back(Frame::Refused(Refused {
                        reason: cut(&reason),
                    }));
                    self.state = State::Closed;
                    self.events.push_back(Event::Closed {
                        reason: format!("refused: {reason}"),
                    });
                    return Ok(());
                }
                let heartbeat_secs = self
                    .timers
                    .heartbeat_interval
                    .as_secs()
                    .clamp(1, u32::MAX as u64) as u32;
                self.transmits.push_back(Frame::Registered(Registered {
                    node_id: reg.node_id.clone(),
                    center_id: s.center_id.clone(),
                    heartbeat_secs,
                }));
                s.last_heartbeat = now;
                s.status = PeerStatus::Online;
                s.registered = true;
                self.state = State::Established;
                self.events.push_back(Event::PeerRegistered(reg));
                self.events
                    .push_back(Event::PeerStatusChanged(PeerStatus::Online));
                Ok(())
            }
            (Ends::Client(c), Frame::Registered(r)) => {
                if r.node_id != c.register.node_id {
                    return Err(ProtoError::Violation(format!(
                        "the center registered node {:?}, but this node is {:?}",
                        r.node_id, c.register.node_id
                    )));
                }
                c.interval = Duration::from_secs(r.heartbeat_secs as u64).min(MAX_HEARTBEAT);
                c.ack_timeout = self.timers.ack_timeout.max(c.interval * 3);
                c.next_heartbeat = now + c.interval;
                c.last_ack = now;
                c.center_id = Some(r.center_id.clone());
                self.state = State::Established;
                self.events.push_back(Event::Registered(r));
                Ok(())
            }
            (Ends::Client(_), Frame::Refused(r)) => {
                let reason = format!("refused by the center: {}", r.reason);
                self.events.push_back(Event::Refused(r));
                self.state = State::Closed;
                self.events.push_back(Event::Closed { reason });
                Ok(())
            }
            (Ends::Server(_), f) => Err(ProtoError::Violation(format!(
                "{} frame before the handshake completed (expected Register)",
                f.name()
            ))),
            (Ends::Client(_), f) => Err(ProtoError::Violation(format!(
                "{} frame before the handshake completed (expected Registered or Refused)",
                f.name()
            ))),
        }
    }

    fn on_established_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtoError> {
        match (&mut self.ends, frame) {
            (_, Frame::Goodbye(g)) => {
                self.closed_by_peer(g);
                Ok(())
            }
            (_, Frame::Command(c)) => self.on_command(c),
            (_, Frame::CommandReply(r)) => {
                if !self.awaiting_reply.remove(&r.id) {
                    return Err(ProtoError::Violation(format!(
                        "CommandReply for command {}, which was never sent or was already answered",
                        r.id
                    )));
                }
                self.events.push_back(Event::CommandReplied(r));
                Ok(())
            }
            (Ends::Server(s), Frame::Heartbeat(h)) => {
                if h.seq <= s.last_seq {
                    return Err(ProtoError::Violation(format!(
                        "Heartbeat seq {} after seq {}; sequence numbers must increase",
                        h.seq, s.last_seq
                    )));
                }
                s.last_seq = h.seq;
                s.last_heartbeat = now;
                self.transmits
                    .push_back(Frame::HeartbeatAck(HeartbeatAck { seq: h.seq }));
                if s.status != PeerStatus::Online {
                    s.status = PeerStatus::Online;
                    self.events
                        .push_back(Event::PeerStatusChanged(PeerStatus::Online));
                }
                self.events.push_back(Event::Heartbeat(h));
                Ok(())
            }
            (Ends::Server(s), Frame::Register(r)) => Err(ProtoError::Violation(format!(
                "second Register (as {:?}); the peer is already registered as {:?}",
                r.node_id, s.verified_peer_id
            ))),
            (Ends::Client(c), Frame::HeartbeatAck(a)) => {
                if a.seq == 0 || a.seq > c.last_sent_seq {
                    return Err(ProtoError::Violation(format!(
                        "HeartbeatAck for seq {}, but the last heartbeat sent was seq {}",
                        a.seq, c.last_sent_seq
                    )));
                }
                c.last_ack = now;
                Ok(())
            }
            (Ends::Server(_), f) => Err(ProtoError::Violation(format!(
                "unexpected {} frame from a client",
                f.name()
            ))),
            (Ends::Client(_), f) => Err(ProtoError::Violation(format!(
                "unexpected {} frame from a server after the handshake",
                f.name()
            ))),
        }
    }

    fn on_command(&mut self, c: Command) -> Result<(), ProtoError> {
        if self.to_answer.contains(&c.id) {
            return Err(ProtoError::Violation(format!(
                "command id {} reused while still awaiting its reply",
                c.id
            )));
        }
        if c.body == CommandBody::Ping {
            self.transmits.push_back(Frame::CommandReply(CommandReply {
                id: c.id,
                ok: true,
                message: "pong".into(),
            }));
            return Ok(());
        }
        if self.to_answer.len() >= MAX_PENDING_COMMANDS {
            return Err(ProtoError::Violation(format!(
                "more than {MAX_PENDING_COMMANDS} commands awaiting a reply"
            )));
        }
        self.to_answer.insert(c.id);
        self.events.push_back(Event::CommandReceived(c));
        Ok(())
    }

    fn closed_by_peer(&mut self, g: Goodbye) {
        self.state = State::Closed;
        self.events.push_back(Event::Closed {
            reason: format!("{PEER_GOODBYE}{}", g.reason),
        });
    }

    /// Sends a command to the peer; returns its id, which the matching
    /// [`Event::CommandReplied`] carries.
    pub fn send_command(&mut self, body: CommandBody) -> Result<u64, SessionError> {
        match self.state {
            State::Established => {}
            State::Handshake { .. } => return Err(SessionError::NotEstablished),
            State::Closed => return Err(SessionError::Closed),
        }
        let id = self.next_command_id;
        self.next_command_id += 1;
        self.awaiting_reply.insert(id);
        self.transmits
            .push_back(Frame::Command(Command { id, body }));
        Ok(id)
    }

    /// Answers a command received as [`Event::CommandReceived`].
    pub fn reply(
        &mut self,
        id: u64,
        ok: bool,
        message: impl Into<String>,
    ) -> Result<(), SessionError> {
        match self.state {
            State::Established => {}
            State::Handshake { .. } => return Err(SessionError::NotEstablished),
            State::Closed => return Err(SessionError::Closed),
        }
        if !self.to_answer.remove(&id) {
            return Err(SessionError::UnknownCommand(id));
        }
        let message = cut_to(&message.into(), super::codec::MAX_TEXT);
        self.transmits
            .push_back(Frame::CommandReply(CommandReply { id, ok, message }));
        Ok(())
    }

    /// Closes the session: queues `Goodbye { reason }` and reports [`Event::Closed`]. Does
    /// nothing if already closed.
    pub fn close(&mut self, reason: impl Into<String>) {
        if self.is_closed() {
            return;
        }
        let reason = reason.into();
        self.transmits.push_back(Frame::Goodbye(Goodbye {
            reason: cut(&reason),
        }));
        self.state = State::Closed;
        self.events.push_back(Event::Closed { reason });
    }

    /// Runs the timers that are due at `now`: heartbeats, liveness, ack and handshake timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Handshake { deadline } => {
                if now >= deadline {
                    let waiting_for = match self.side() {
                        Side::Client => "Registered from the center",
                        Side::Server => "Register from the peer",
                    };
                    let secs = self.timers.handshake_timeout.as_secs_f64();
                    self.close(format!(
                        "handshake timed out: no {waiting_for} within {secs}s"
                    ));
                }
            }
            State::Established => match &mut self.ends {
                Ends::Client(c) => {
                    if now >= c.last_ack + c.ack_timeout {
                        let reason = format!(
                            "no HeartbeatAck for {}s; the connection is presumed dead",
                            c.ack_timeout.as_secs_f64()
                        );
                        self.close(reason);
                        return;
                    }
                    if now >= c.next_heartbeat {
                        c.last_sent_seq += 1;
                        let elapsed = now.saturating_duration_since(c.start).as_millis();
                        let sent_at_ms = c
                            .unix_ms_at_start
                            .saturating_add(elapsed.min(u64::MAX as u128) as u64);
                        self.transmits.push_back(Frame::Heartbeat(Heartbeat {
                            seq: c.last_sent_seq,
                            sent_at_ms,
                            capacity: c.capacity.clone(),
                        }));
                        // Keep the cadence; if the driver was late, do not burst to catch up.
                        c.next_heartbeat += c.interval;
                        if c.next_heartbeat <= now {
                            c.next_heartbeat = now + c.interval;
                        }
                    }
                }
                Ends::Server(s) => {
                    let silence = now.saturating_duration_since(s.last_heartbeat);
                    let status = PeerStatus::after_silence(silence, &self.timers);
                    // Report each step, in order, even if the driver was late for one.
                    if status != PeerStatus::Online && s.status == PeerStatus::Online {
                        s.status = PeerStatus::Inactive;
                        self.events
                            .push_back(Event::PeerStatusChanged(PeerStatus::Inactive));
                    }
                    if status == PeerStatus::Offline && s.status != PeerStatus::Offline {
                        s.status = PeerStatus::Offline;
                        self.events
                            .push_back(Event::PeerStatusChanged(PeerStatus::Offline));
                        let secs = self.timers.offline_after.as_secs_f64();
                        self.close(format!("the peer is offline: no heartbeat for {secs}s"));
                    }
                }
            },
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Handshake { deadline } => Some(deadline),
            State::Established => match &self.ends {
                Ends::Client(c) => Some(c.next_heartbeat.min(c.last_ack + c.ack_timeout)),
                Ends::Server(s) => match s.status {
                    PeerStatus::Online => Some(s.last_heartbeat + self.timers.inactive_after),
                    PeerStatus::Inactive => Some(s.last_heartbeat + self.timers.offline_after),
                    PeerStatus::Offline => None,
                },
            },
        }
    }

    /// The next frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmits.pop_front()
    }

    /// The next event for the driver, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn cut(s: &str) -> String {
    cut_to(s, MAX_REASON)
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    //! The session under a virtual clock, with a `Pair` harness (after quinn-proto's
    //! `tests/util.rs`) that carries frames between a client and a server through the real
    //! encoder and [`FrameReader`](crate::proto::FrameReader).

    use bytes::BytesMut;

    use super::*;
    use crate::proto::control::{Role, Service, ServiceKind};
    use crate::proto::{FrameReader, FrameWriter};

    const SECOND: Duration = Duration::from_secs(1);

    /// One direction of the control stream.
    struct Wire {
        writer: FrameWriter,
        reader: FrameReader,
        /// Frames written while blocked are lost (a dead path).
        blocked: bool,
    }

    impl Wire {
        fn new() -> Wire {
            Wire {
                writer: FrameWriter::new(),
                reader: FrameReader::new(),
                blocked: false,
            }
        }

        /// Encodes `frame` and returns what the other end decodes from the bytes.
        fn carry(&mut self, frame: &Frame) -> Vec<Frame> {
            let mut bytes = BytesMut::new();
            self.writer
                .write(frame, &mut bytes)
                .expect("session produced an unencodable frame");
            if self.blocked {
                return Vec::new();
            }
            self.reader.push(&bytes);
            let mut out = Vec::new();
            while let Some(f) = self
                .reader
                .next_frame()
                .expect("peer sent undecodable bytes")
            {
                out.push(f);
            }
            out
        }
    }

    struct Pair {
        epoch: Instant,
        now: Instant,
        client: Session,
        server: Session,
        c2s: Wire,
        s2c: Wire,
        /// Events with the virtual time (since `epoch`) they were polled at.
        client_events: Vec<(Duration, Event)>,
        server_events: Vec<(Duration, Event)>,
        client_errors: Vec<ProtoError>,
        server_errors: Vec<ProtoError>,
    }

    fn register(node_id: &str) -> Register {
        Register {
            node_id: node_id.into(),
            role: Role::Edge,
            version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            addresses: vec!["192.168.1.20".into()],
            services: vec![Service {
                name: "web".into(),
                kind: ServiceKind::Http,
            }],
            pods: vec!["alice".into()],
        }
    }

    impl Pair {
        /// A client claiming `claimed_id` and a server whose TLS layer verified `verified_id`.
        fn new(claimed_id: &str, verified_id: &str) -> Pair {
            let epoch = Instant::now(); // the only clock read: the virtual clock's origin
            let client = Session::new_client(
                ClientConfig {
                    register: register(claimed_id),
                    unix_ms_at_start: 1_000_000,
                    timers: Timers::default(),
                },
                epoch,
            );
            let server = Session::new_server(
                ServerConfig {
                    center_id: "center-a".into(),
                    timers: Timers::default(),
                },
                verified_id,
                epoch,
            );
            Pair {
                epoch,
                now: epoch,
                client,
                server,
                c2s: Wire::new(),
                s2c: Wire::new(),
                client_events: Vec::new(),
                server_events: Vec::new(),
                client_errors: Vec::new(),
                server_errors: Vec::new(),
            }
        }

        fn connected() -> Pair {
            let mut pair = Pair::new("edge-1", "edge-1");
            pair.drive();
            assert!(pair.client.is_established() && pair.server.is_established());
            pair
        }

        fn elapsed(&self) -> Duration {
            self.now - self.epoch
        }

        /// Moves frames both ways until neither side has anything to send.
        fn drive(&mut self) {
            loop {
                let mut moved = false;
                while let Some(f) = self.client.poll_transmit() {
                    moved = true;
                    for f in self.c2s.carry(&f) {
                        if let Err(e) = self.server.handle_frame(self.now, f) {
                            self.server_errors.push(e);
                        }
                    }
                }
                while let Some(f) = self.server.poll_transmit() {
                    moved = true;
                    for f in self.s2c.carry(&f) {
                        if let Err(e) = self.client.handle_frame(self.now, f) {
                            self.client_errors.push(e);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
            let t = self.elapsed();
            while let Some(e) = self.client.poll_event() {
                self.client_events.push((t, e));
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push((t, e));
            }
        }

        fn next_timeout(&self) -> Option<Instant> {
            [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
        }

        /// Jumps to the earliest timer (if before `limit`), fires it, and drives.
        fn step_until(&mut self, limit: Duration) -> bool {
            match self.next_timeout() {
                Some(t) if t <= self.epoch + limit => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.server.handle_timeout(self.now);
                    self.drive();
                    true
                }
                _ => {
                    self.now = self.epoch + limit;
                    false
                }
            }
        }

        fn run_until(&mut self, limit: Duration) {
            while self.step_until(limit) {}
        }

        fn status_changes(&self) -> Vec<(Duration, PeerStatus)> {
            self.server_events
                .iter()
                .filter_map(|(t, e)| match e {
                    Event::PeerStatusChanged(s) => Some((*t, *s)),
                    _ => None,
                })
                .collect()
        }
    }

    fn closed_reason(events: &[(Duration, Event)]) -> Option<(Duration, String)> {
        events.iter().find_map(|(t, e)| match e {
            Event::Closed { reason } => Some((*t, reason.clone())),
            _ => None,
        })
    }

    #[test]
    fn handshake_ok() {
        let pair = Pair::connected();
        assert_eq!(
            pair.client_events,
            vec![(
                Duration::ZERO,
                Event::Registered(Registered {
                    node_id: "edge-1".into(),
                    center_id: "center-a".into(),
                    heartbeat_secs: 15
                })
            )]
        );
        assert_eq!(
            pair.server_events,
            vec![
                (Duration::ZERO, Event::PeerRegistered(register("edge-1"))),
                (Duration::ZERO, Event::PeerStatusChanged(PeerStatus::Online)),
            ]
        );
        assert_eq!(pair.client.peer_id(), Some("center-a"));
        assert_eq!(pair.server.peer_id(), Some("edge-1"));
        assert_eq!(pair.server.peer_status(), Some(PeerStatus::Online));
        assert_eq!(pair.client.peer_status(), None);
        // The first heartbeat is one interval away.
        assert_eq!(pair.client.poll_timeout(), Some(pair.epoch + 15 * SECOND));
    }

    #[test]
    fn node_id_mismatch_is_refused_and_closed() {
        let mut pair = Pair::new("edge-2", "edge-1");
        pair.drive();
        let expected = r#"node id "edge-2" does not match certificate node id "edge-1""#;
        assert_eq!(
            pair.client_events
                .iter()
                .map(|(_, e)| e.clone())
                .collect::<Vec<_>>(),
            vec![
                Event::Refused(Refused {
                    reason: expected.into()
                }),
                Event::Closed {
                    reason: format!("refused by the center: {expected}")
                },
            ]
        );
        assert_eq!(
            pair.server_events,
            vec![(
                Duration::ZERO,
                Event::Closed {
                    reason: format!("refused: {expected}")
                }
            )]
        );
        assert!(pair.client.is_closed() && pair.server.is_closed());
        assert_eq!(pair.server.peer_status(), None);
        assert!(pair.client_errors.is_empty() && pair.server_errors.is_empty());
        assert_eq!(pair.next_timeout(), None);
    }

    #[test]
    fn heartbeats_keep_the_peer_online_for_an_hour() {
        let mut pair = Pair::connected();
        pair.run_until(3600 * SECOND);
        assert_eq!(
            pair.status_changes(),
            vec![(Duration::ZERO, PeerStatus::Online)]
        );
        let heartbeats: Vec<(Duration, u64, u64)> = pair
            .server_events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Heartbeat(h) => Some((*t, h.seq, h.sent_at_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(heartbeats.len(), 240, "one every 15 s for an hour");
        assert_eq!(heartbeats[0], (15 * SECOND, 1, 1_015_000));
        assert_eq!(heartbeats[239], (3600 * SECOND, 240, 4_600_000));
        assert!(!pair.client.is_closed() && !pair.server.is_closed());
        assert!(pair.client_errors.is_empty() && pair.server_errors.is_empty());
    }

    #[test]
    fn silent_client_goes_inactive_at_60s_and_offline_at_5min() {
        let mut pair = Pair::connected();
        pair.run_until(30 * SECOND); // heartbeats at 15 s and 30 s arrive
        pair.c2s.blocked = true; // then nothing more reaches the server
        pair.run_until(600 * SECOND);
        assert_eq!(
            pair.status_changes(),
            vec![
                (Duration::ZERO, PeerStatus::Online),
                (90 * SECOND, PeerStatus::Inactive), // 30 s + 60 s, exactly
                (330 * SECOND, PeerStatus::Offline), // 30 s + 5 min, exactly
            ]
        );
        let (at, reason) = closed_reason(&pair.server_events).unwrap();
        assert_eq!(at, 330 * SECOND);
        assert_eq!(reason, "the peer is offline: no heartbeat for 300s");
        assert_eq!(pair.server.peer_status(), Some(PeerStatus::Offline));
    }

    #[test]
    fn inactive_not_one_millisecond_early() {
        let mut pair = Pair::connected();
        pair.c2s.blocked = true;
        let just_before = pair.epoch + 60 * SECOND - Duration::from_millis(1);
        pair.server.handle_timeout(just_before);
        assert_eq!(pair.server.poll_event(), None);
        pair.server.handle_timeout(pair.epoch + 60 * SECOND);
        assert_eq!(
            pair.server.poll_event(),
            Some(Event::PeerStatusChanged(PeerStatus::Inactive))
        );
        // A late driver still sees both steps, in order.
        pair.server.handle_timeout(pair.epoch + 3600 * SECOND);
        assert_eq!(
            pair.server.poll_event(),
            Some(Event::PeerStatusChanged(PeerStatus::Offline))
        );
    }

    #[test]
    fn heartbeat_after_inactive_brings_the_peer_back_online() {
        let mut pair = Pair::connected();
        pair.c2s.blocked = true;
        pair.server.handle_timeout(pair.epoch + 60 * SECOND);
        pair.now = pair.epoch + 61 * SECOND;
        pair.server
            .handle_frame(
                pair.now,
                Frame::Heartbeat(Heartbeat {
                    seq: 1,
                    sent_at_ms: 0,
                    capacity: None,
                }),
            )
            .unwrap();
        let events: Vec<Event> = std::iter::from_fn(|| pair.server.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                Event::PeerStatusChanged(PeerStatus::Inactive),
                Event::PeerStatusChanged(PeerStatus::Online),
                Event::Heartbeat(Heartbeat {
                    seq: 1,
                    sent_at_ms: 0,
                    capacity: None
                }),
            ]
        );
        assert_eq!(
            pair.server.poll_transmit(),
            Some(Frame::HeartbeatAck(HeartbeatAck { seq: 1 }))
        );
        assert_eq!(pair.server.poll_timeout(), Some(pair.epoch + 121 * SECOND));
    }

    #[test]
    fn client_closes_after_45s_without_acks() {
        let mut pair = Pair::connected();
        pair.run_until(30 * SECOND); // acked at 15 s and 30 s
        pair.s2c.blocked = true; // acks are lost from now on
        pair.run_until(600 * SECOND);
        let (at, reason) = closed_reason(&pair.client_events).unwrap();
        assert_eq!(at, 75 * SECOND); // last ack at 30 s + 45 s
        assert_eq!(
            reason,
            "no HeartbeatAck for 45s; the connection is presumed dead"
        );
        assert!(pair.client.is_closed());
        // The client's Goodbye reached the server, which closed too.
        let (at, reason) = closed_reason(&pair.server_events).unwrap();
        assert_eq!(at, 75 * SECOND);
        assert!(reason.contains("no HeartbeatAck for 45s"), "{reason}");
        assert_eq!(pair.next_timeout(), None);
    }

    #[test]
    fn commands_and_replies_are_matched_by_id() {
        let mut pair = Pair::connected();
        // Before the handshake nobody may send commands.
        let mut fresh = Pair::new("edge-1", "edge-1");
        assert_eq!(
            fresh.client.send_command(CommandBody::Ping),
            Err(SessionError::NotEstablished)
        );
        assert_eq!(
            fresh.server.send_command(CommandBody::Ping),
            Err(SessionError::NotEstablished)
        );
        fresh.drive();

        // Edge → center: publish then clear a TXT record; answered out of order.
        let set = CommandBody::SetAcmeTxt {
            name: "_acme-challenge.edge-1.example".into(),
            value: "tok".into(),
        };
        let clear = CommandBody::ClearAcmeTxt {
            name: "_acme-challenge.edge-1.example".into(),
        };
        let a = pair.client.send_command(set.clone()).unwrap();
        let b = pair.client.send_command(clear.clone()).unwrap();
        assert_eq!((a, b), (1, 2));
        pair.drive();
        let received: Vec<Command> = pair
            .server_events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::CommandReceived(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            received,
            vec![Command { id: 1, body: set }, Command { id: 2, body: clear }]
        );
        pair.server.reply(2, false, "no such record").unwrap();
        pair.server.reply(1, true, "published").unwrap();
        assert_eq!(
            pair.server.reply(1, true, "again"),
            Err(SessionError::UnknownCommand(1))
        );
        pair.drive();
        let replies: Vec<CommandReply> = pair
            .client_events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::CommandReplied(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            replies,
            vec![
                CommandReply {
                    id: 2,
                    ok: false,
                    message: "no such record".into()
                },
                CommandReply {
                    id: 1,
                    ok: true,
                    message: "published".into()
                },
            ]
        );

        // Center → edge: Ping is answered by the session itself.
        let p = pair.server.send_command(CommandBody::Ping).unwrap();
        assert_eq!(p, 1, "ids are per sender");
        pair.drive();
        assert!(pair
            .client_events
            .iter()
            .all(|(_, e)| !matches!(e, Event::CommandReceived(_))));
        assert!(pair.server_events.iter().any(|(_, e)| *e
            == Event::CommandReplied(CommandReply {
                id: 1,
                ok: true,
                message: "pong".into()
            })));

        // A reply nobody asked for is a protocol error.
        let err = pair
            .client
            .handle_frame(
                pair.now,
                Frame::CommandReply(CommandReply {
                    id: 99,
                    ok: true,
                    message: String::new(),
                }),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("command 99, which was never sent"),
            "{err}"
        );
        assert!(pair.client.is_closed());
        assert_eq!(
            pair.client.send_command(CommandBody::Ping),
            Err(SessionError::Closed)
        );
    }

    #[test]
    fn a_second_register_is_an_error() {
        let mut pair = Pair::connected();
        let err = pair
            .server
            .handle_frame(pair.now, Frame::Register(register("edge-1")))
            .unwrap_err();
        assert_eq!(
            err,
            ProtoError::Violation(
                r#"second Register (as "edge-1"); the peer is already registered as "edge-1""#
                    .into()
            )
        );
        assert!(pair.server.is_closed());
        // The server says why before closing.
        pair.drive();
        let (_, reason) = closed_reason(&pair.client_events).unwrap();
        assert!(
            reason.starts_with("the peer closed the session: protocol violation: second Register"),
            "{reason}"
        );
    }

    #[test]
    fn frames_before_the_handshake_are_errors() {
        let now = Instant::now();
        let mut server = Session::new_server(
            ServerConfig {
                center_id: "c".into(),
                timers: Timers::default(),
            },
            "edge-1",
            now,
        );
        let err = server
            .handle_frame(
                now,
                Frame::Heartbeat(Heartbeat {
                    seq: 1,
                    sent_at_ms: 0,
                    capacity: None,
                }),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol violation: Heartbeat frame before the handshake completed (expected Register)"
        );
        assert!(server.is_closed());
        assert!(matches!(server.poll_transmit(), Some(Frame::Goodbye(_))));
        assert!(matches!(server.poll_event(), Some(Event::Closed { .. })));
        // Later frames are ignored.
        assert_eq!(
            server.handle_frame(now, Frame::Register(register("edge-1"))),
            Ok(())
        );
        assert_eq!(server.poll_transmit(), None);

        let mut client = Session::new_client(
            ClientConfig {
                register: register("edge-1"),
                unix_ms_at_start: 0,
                timers: Timers::default(),
            },
            now,
        );
        assert!(matches!(client.poll_transmit(), Some(Frame::Register(_))));
        let err = client
            .handle_frame(
                now,
                Frame::Command(Command {
                    id: 1,
                    body: CommandBody::Ping,
                }),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Command frame before the handshake completed"),
            "{err}"
        );
    }

    #[test]
    fn handshake_times_out() {
        let mut pair = Pair::new("edge-1", "edge-1");
        pair.c2s.blocked = true; // the Register is lost
        pair.drive();
        pair.run_until(60 * SECOND);
        let (at, reason) = closed_reason(&pair.server_events).unwrap();
        assert_eq!(at, 10 * SECOND);
        assert_eq!(
            reason,
            "handshake timed out: no Register from the peer within 10s"
        );
        let (at, reason) = closed_reason(&pair.client_events).unwrap();
        assert_eq!(at, 10 * SECOND);
        assert!(reason.contains("no Registered from the center"), "{reason}");
    }

    #[test]
    fn peer_misbehaviour_is_a_violation() {
        let mut pair = Pair::connected();
        pair.run_until(15 * SECOND);
        // Heartbeat sequence numbers must increase.
        let err = pair
            .server
            .handle_frame(
                pair.now,
                Frame::Heartbeat(Heartbeat {
                    seq: 1,
                    sent_at_ms: 0,
                    capacity: None,
                }),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("Heartbeat seq 1 after seq 1"),
            "{err}"
        );

        let mut pair = Pair::connected();
        let err = pair
            .client
            .handle_frame(pair.now, Frame::HeartbeatAck(HeartbeatAck { seq: 5 }))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("HeartbeatAck for seq 5, but the last heartbeat sent was seq 0"),
            "{err}"
        );

        let mut pair = Pair::connected();
        let err = pair
            .client
            .handle_frame(
                pair.now,
                Frame::Heartbeat(Heartbeat {
                    seq: 1,
                    sent_at_ms: 0,
                    capacity: None,
                }),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("unexpected Heartbeat frame from a server"),
            "{err}"
        );

        // A command id reused while pending, and too many pending commands.
        let mut pair = Pair::connected();
        let set = |id| {
            Frame::Command(Command {
                id,
                body: CommandBody::ClearAcmeTxt { name: "n".into() },
            })
        };
        pair.server.handle_frame(pair.now, set(7)).unwrap();
        let err = pair.server.handle_frame(pair.now, set(7)).unwrap_err();
        assert!(err.to_string().contains("command id 7 reused"), "{err}");
        let mut pair = Pair::connected();
        for id in 0..MAX_PENDING_COMMANDS as u64 {
            pair.server.handle_frame(pair.now, set(id)).unwrap();
        }
        let err = pair
            .server
            .handle_frame(pair.now, set(u64::MAX))
            .unwrap_err();
        assert!(err.to_string().contains("more than 1024 commands"), "{err}");
    }

    #[test]
    fn server_heartbeat_interval_is_adopted_by_the_client() {
        let now = Instant::now();
        let timers = Timers {
            heartbeat_interval: 30 * SECOND,
            ..Timers::default()
        };
        let mut server = Session::new_server(
            ServerConfig {
                center_id: "c".into(),
                timers,
            },
            "edge-1",
            now,
        );
        let mut client = Session::new_client(
            ClientConfig {
                register: register("edge-1"),
                unix_ms_at_start: 0,
                timers: Timers::default(),
            },
            now,
        );
        server
            .handle_frame(now, client.poll_transmit().unwrap())
            .unwrap();
        client
            .handle_frame(now, server.poll_transmit().unwrap())
            .unwrap();
        assert_eq!(client.poll_timeout(), Some(now + 30 * SECOND));
        // The ack timeout stretches to three intervals (90 s), not the configured 45 s.
        client.handle_timeout(now + 30 * SECOND);
        client.handle_timeout(now + 60 * SECOND);
        assert!(!client.is_closed());
        client.handle_timeout(now + 90 * SECOND);
        assert!(client.is_closed());
    }

    #[test]
    fn capacity_rides_on_heartbeats_and_close_is_polite() {
        let mut pair = Pair::connected();
        pair.client.set_capacity(Some(r#"{"cpus":8}"#.into()));
        pair.run_until(15 * SECOND);
        assert!(pair.server_events.iter().any(|(_, e)| matches!(
            e,
            Event::Heartbeat(Heartbeat { seq: 1, capacity: Some(c), .. }) if c == r#"{"cpus":8}"#
        )));
        pair.client.close("shutting down");
        pair.client.close("twice is harmless");
        pair.drive();
        assert_eq!(
            closed_reason(&pair.server_events).unwrap().1,
            "the peer closed the session: shutting down"
        );
        assert_eq!(
            closed_reason(&pair.client_events).unwrap().1,
            "shutting down"
        );
        assert_eq!(pair.next_timeout(), None);
    }
}
