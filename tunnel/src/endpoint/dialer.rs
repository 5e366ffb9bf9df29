//! The edge's dialer: one `xpod/1` connection **per center**, each kept up independently
//! (ARCHITECTURE §8; the issue asks for HA to two centers).
//!
//! Each center gets a supervisor task that loops: connect (mutual TLS with
//! [`edge_client_config`](super::edge_client_config), bounded by
//! [`DialerConfig::connect_timeout`]) → run a fresh client [`Session`] (which sends `Register`
//! again) through a [`driver`](super::driver) task → when it
//! ends, wait a jittered exponential [`Backoff`] → again. The backoff's attempt counter resets
//! only after a connection stayed up for [`Backoff::reset_after`] (10 s), so a center that
//! accepts and drops at once cannot cause a reconnect storm.
//!
//! No leak across reconnects: the per-connection driver task owns the connection and ends with
//! it (it closes the connection on the way out); the supervisor keeps no per-connection state
//! after it. Both kinds of task are counted ([`DialerHandle::supervisor_tasks`],
//! [`DialerHandle::connection_tasks`]). All connections share one UDP socket, which is what a
//! NAT sees.
//!
//! # Transports
//! [`DialerConfig::transport`]: QUIC over UDP, the same QUIC over TLS on TCP
//! ([`super::tcp`], for networks that block UDP), or `Auto` (the default), like a careful
//! client: QUIC first; TCP as well after a head start of [`TCP_HEAD_START`] or as soon as QUIC
//! fails; the first that connects is kept, and remembered (per network and center, across
//! restarts: [`super::remembered`]) as the one to start with next time. While on TCP, QUIC is
//! tried again every [`DialerConfig::quic_retry`] ([`QUIC_RETRY`]); when it
//! connects, a session starts on it and, once registered, the TCP one says goodbye (the center
//! sends new requests to the newest registration, so none is dropped).
//!
//! Events from every connection arrive on one channel tagged with the center's address
//! ([`DialerEvent`]). **Drain it**: drivers wait for room in the channel, and a full channel
//! stalls their sessions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::driver::{self, DriverError, DriverHandle, LINGER};
use super::server::EndpointError;
use super::{close_code, TaskGauge, TaskGuard};
use crate::identity::NodeIdentity;
use crate::proto::{ClientConfig, CommandBody, Event, Register, Session, Timers};

/// Capacity of the event channel.
const EVENT_CAPACITY: usize = 1024;
/// In `Auto`, how long QUIC has alone before TCP is tried as well.
pub const TCP_HEAD_START: Duration = Duration::from_millis(500);
/// In `Auto` on TCP, how often QUIC is tried again.
pub const QUIC_RETRY: Duration = Duration::from_secs(60);

pub use super::tcp::Transport;

/// A connection and, for TCP, the endpoint that carries it (dropped with it).
struct Link {
    conn: quinn::Connection,
    tcp: Option<quinn::Endpoint>,
}

impl Link {
    fn name(&self) -> &'static str {
        if self.tcp.is_some() {
            "tcp"
        } else {
            "quic"
        }
    }
}

/// Jittered exponential backoff between connection attempts to one center.
///
/// The delay before retry `n` (1-based) is uniformly random in `[d/2, d]` where
/// `d = min(initial · 2^(n-1), max)`: the first retry comes after at most `initial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first delay (500 ms).
    pub initial: Duration,
    /// Upper bound of any delay (5 s).
    pub max: Duration,
    /// A connection that stayed up this long resets the attempt counter (10 s).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (1-based) with `jitter` in `[0, 1]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .initial
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// Everything an [`EdgeDialer`] needs.
#[derive(Debug, Clone)]
pub struct DialerConfig {
    /// The centers' QUIC addresses; one connection is kept to each.
    pub centers: Vec<SocketAddr>,
    /// TLS server name sent (centers are authenticated by certificate, not by name).
    pub server_name: String,
    /// This edge's identity (certificate, key, CA).
    pub identity: NodeIdentity,
    /// What to register as on every connection.
    pub register: Register,
    /// Session timings (the center's heartbeat interval wins; see `proto::session`).
    pub timers: Timers,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Bound on one connection attempt (QUIC + TLS handshake).
    pub connect_timeout: Duration,
    /// QUIC over UDP, over TCP, or both ([`Transport`]).
    pub transport: Transport,
    /// In `Auto` on TCP, how often QUIC is tried again ([`QUIC_RETRY`]).
    pub quic_retry: Duration,
    /// In `Auto`, the file where the transport that got through is remembered per network and
    /// center, across restarts ([`super::remembered`]); `None`: for this run only.
    pub remembered: Option<std::path::PathBuf>,
}

impl DialerConfig {
    /// A config with the default backoff and a 5 s connect timeout.
    pub fn new(
        centers: Vec<SocketAddr>,
        server_name: impl Into<String>,
        identity: NodeIdentity,
        register: Register,
        timers: Timers,
    ) -> Self {
        DialerConfig {
            centers,
            server_name: server_name.into(),
            identity,
            register,
            timers,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            transport: Transport::default(),
            quic_retry: QUIC_RETRY,
            remembered: None,
        }
    }
}

/// What the dialer is doing about one center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CenterState {
    /// A connection attempt is in progress.
    Connecting,
    /// Connected; `Register` sent, no answer yet.
    Connected,
    /// Registered with the center whose node id is given.
    Registered {
        /// The center's node id.
        center_id: String,
    },
    /// Waiting before the next attempt.
    BackingOff {
        /// When the next attempt starts.
        retry_at: std::time::Instant,
    },
    /// The dialer has shut down.
    Stopped,
}

/// The dialer's view of one center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CenterStatus {
    /// The center's address.
    pub addr: SocketAddr,
    /// What is happening now.
    pub state: CenterState,
    /// Failed attempts since the last connection that stayed up (0 when healthy).
    pub attempts: u32,
    /// Connections established so far.
    pub connects: u64,
    /// Why the last connection or attempt ended.
    pub last_error: Option<String>,
}

/// A session event from the connection to `center`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialerEvent {
    /// The center's address, as configured.
    pub center: SocketAddr,
    /// The session's event.
    pub event: Event,
}

struct Slot {
    status: CenterStatus,
    driver: Option<DriverHandle>,
}

type Slots = Arc<Mutex<Vec<Slot>>>;

fn update(slots: &Slots, index: usize, f: impl FnOnce(&mut Slot)) {
    let mut slots = slots.lock().expect("poisoned");
    f(&mut slots[index]);
}

/// Starts dialers. See the module documentation.
pub struct EdgeDialer;

impl EdgeDialer {
    /// Starts keeping a connection to each of `centers`, with the default backoff.
    pub fn spawn(
        centers: Vec<SocketAddr>,
        server_name: &str,
        identity: NodeIdentity,
        register: Register,
        timers: Timers,
    ) -> Result<DialerHandle, EndpointError> {
        Self::spawn_with(DialerConfig::new(
            centers,
            server_name,
            identity,
            register,
            timers,
        ))
    }

    /// Starts a dialer from a full config. Must be called inside a tokio runtime.
    pub fn spawn_with(config: DialerConfig) -> Result<DialerHandle, EndpointError> {
        let client = super::edge_client_config(&config.identity)?;
        let bind: SocketAddr = if config.centers.iter().any(SocketAddr::is_ipv6) {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint =
            client_endpoint(bind).map_err(|source| EndpointError::Bind { addr: bind, source })?;
        let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let slots: Slots = Arc::new(Mutex::new(
            config
                .centers
                .iter()
                .map(|&addr| Slot {
                    status: CenterStatus {
                        addr,
                        state: CenterState::Connecting,
                        attempts: 0,
                        connects: 0,
                        last_error: None,
                    },
                    driver: None,
                })
                .collect(),
        ));
        let supervisors_gauge = TaskGauge::new();
        let connections_gauge = TaskGauge::new();
        let config = Arc::new(config);
        let memory = Arc::new(super::remembered::TransportMemory::open(
            config.remembered.clone(),
        ));
        let supervisors = (0..config.centers.len())
            .map(|index| {
                let sup = Supervisor {
                    index,
                    addr: config.centers[index],
                    config: config.clone(),
                    endpoint: endpoint.clone(),
                    client: client.clone(),
                    slots: slots.clone(),
                    events: events_tx.clone(),
                    shutdown: shutdown_rx.clone(),
                    connections: connections_gauge.clone(),
                    memory: memory.clone(),
                };
                tokio::spawn(sup.run(supervisors_gauge.guard()))
            })
            .collect();
        Ok(DialerHandle {
            shutdown,
            events,
            slots,
            supervisors,
            supervisors_gauge,
            connections_gauge,
            endpoint,
        })
    }
}

/// Controls a running dialer. Dropping it stops the dialer too (without waiting).
pub struct DialerHandle {
    shutdown: watch::Sender<bool>,
    events: mpsc::Receiver<DialerEvent>,
    slots: Slots,
    supervisors: Vec<JoinHandle<()>>,
    supervisors_gauge: TaskGauge,
    connections_gauge: TaskGauge,
    endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for DialerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialerHandle")
            .field("status", &self.status())
            .finish()
    }
}

impl DialerHandle {
    /// Per center, in the configured order.
    pub fn status(&self) -> Vec<CenterStatus> {
        let slots = self.slots.lock().expect("poisoned");
        slots.iter().map(|s| s.status.clone()).collect()
    }

    /// Session events of every connection. Keep draining it.
    pub fn events(&mut self) -> &mut mpsc::Receiver<DialerEvent> {
        &mut self.events
    }

    /// Sends a command on the session with `center`, if it is up.
    pub async fn send_command(
        &self,
        center: SocketAddr,
        body: CommandBody,
    ) -> Result<u64, DriverError> {
        self.driver(center)
            .ok_or(DriverError::Ended)?
            .send_command(body)
            .await
    }

    /// Answers a command that the center at `center` sent.
    pub async fn reply(
        &self,
        center: SocketAddr,
        id: u64,
        ok: bool,
        message: impl Into<String>,
    ) -> Result<(), DriverError> {
        self.driver(center)
            .ok_or(DriverError::Ended)?
            .reply(id, ok, message)
            .await
    }

    /// Sets the capacity report (JSON) that every live session sends with its next heartbeats.
    /// Sessions started later begin without one: call it again after each `Registered`.
    pub async fn set_capacity(&self, capacity: Option<String>) {
        let drivers: Vec<DriverHandle> = {
            let slots = self.slots.lock().expect("poisoned");
            slots.iter().filter_map(|s| s.driver.clone()).collect()
        };
        for d in drivers {
            let _ = d.set_capacity(capacity.clone()).await;
        }
    }

    /// The live connection to `center`, if any (e.g. to open data streams).
    pub fn connection(&self, center: SocketAddr) -> Option<quinn::Connection> {
        self.driver(center).map(|d| d.connection().clone())
    }

    fn driver(&self, center: SocketAddr) -> Option<DriverHandle> {
        let slots = self.slots.lock().expect("poisoned");
        slots
            .iter()
            .find(|s| s.status.addr == center)
            .and_then(|s| s.driver.clone())
    }

    /// Supervisor tasks alive (one per center until shutdown).
    pub fn supervisor_tasks(&self) -> usize {
        self.supervisors_gauge.live()
    }

    /// Per-connection tasks alive (at most one per center).
    pub fn connection_tasks(&self) -> usize {
        self.connections_gauge.live()
    }

    /// Says goodbye to every center, closes the connections and waits for every task to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.supervisors) {
            let _ = task.await;
        }
        self.endpoint
            .close(close_code::SHUTDOWN, b"edge shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

struct Supervisor {
    index: usize,
    addr: SocketAddr,
    config: Arc<DialerConfig>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    slots: Slots,
    events: mpsc::Sender<DialerEvent>,
    shutdown: watch::Receiver<bool>,
    connections: TaskGauge,
    /// `Auto`: whether the last connection that worked on this network went over TCP.
    memory: Arc<super::remembered::TransportMemory>,
}

/// Resolves when shutdown is asked for or the handle is gone.
async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Supervisor {
    async fn run(self, _guard: TaskGuard) {
        let mut attempts: u32 = 0;
        loop {
            update(&self.slots, self.index, |s| {
                s.status.state = CenterState::Connecting
            });
            let mut shutdown = self.shutdown.clone();
            let connected = tokio::select! {
                r = self.connect() => r,
                _ = stopping(&mut shutdown) => break,
            };
            match connected {
                Ok(link) => {
                    let started = tokio::time::Instant::now();
                    let name = link.name();
                    let (mut link, mut driver) = (link.tcp, self.start_session(link.conn, name));
                    let every = self.config.quic_retry.max(Duration::from_millis(100));
                    let mut retry =
                        tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    let stop = loop {
                        tokio::select! {
                            _ = driver.finished() => break false,
                            _ = stopping(&mut shutdown) => break true,
                            _ = retry.tick(), if link.is_some() && self.config.transport == Transport::Auto => {
                                // On TCP: does QUIC get through again? Make before break.
                                let Ok(conn) = self.connect_quic().await else { continue };
                                let quic = self.start_session(conn, "quic");
                                let up = tokio::time::timeout(self.config.connect_timeout, async {
                                    while !quic.is_established() && !quic.is_finished() {
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    quic.is_established()
                                })
                                .await
                                .unwrap_or(false);
                                if !up {
                                    quic.close("not registered in time").await;
                                    continue;
                                }
                                info!(center = %self.addr, "QUIC gets through again: leaving TCP");
                                self.memory.remember(self.addr, false);
                                driver.close("moving to QUIC").await;
                                let _ = tokio::time::timeout(LINGER + Duration::from_secs(1), driver.finished()).await;
                                (driver, link) = (quic, None);
                            }
                        }
                    };
                    if stop {
                        driver.close("edge shutting down").await;
                        let _ = tokio::time::timeout(
                            LINGER + Duration::from_secs(1),
                            driver.finished(),
                        )
                        .await;
                    }
                    update(&self.slots, self.index, |s| s.driver = None);
                    drop(driver);
                    drop(link);
                    if stop {
                        break;
                    }
                    if started.elapsed() >= self.config.backoff.reset_after {
                        attempts = 0;
                    }
                }
                Err(e) => {
                    debug!(center = %self.addr, error = %e, "connection attempt failed");
                    update(&self.slots, self.index, |s| s.status.last_error = Some(e));
                }
            }
            attempts = attempts.saturating_add(1);
            let delay = self.config.backoff.delay(attempts, rand::random::<f64>());
            let retry_at = tokio::time::Instant::now() + delay;
            update(&self.slots, self.index, |s| {
                s.status.attempts = attempts;
                s.status.state = CenterState::BackingOff {
                    retry_at: retry_at.into_std(),
                };
            });
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at) => {}
                _ = stopping(&mut shutdown) => break,
            }
        }
        update(&self.slots, self.index, |s| {
            s.status.state = CenterState::Stopped;
            s.driver = None;
        });
    }

    /// One connection by the configured transport (see the module docs).
    async fn connect(&self) -> Result<Link, String> {
        match self.config.transport {
            Transport::Quic => self
                .connect_quic()
                .await
                .map(|conn| Link { conn, tcp: None }),
            Transport::Tcp => self.connect_tcp().await,
            Transport::Auto => {
                let tcp_first = self.memory.prefers_tcp(self.addr);
                if tcp_first {
                    info!(center = %self.addr, "TCP got through last time on this network: trying it first");
                }
                let link = race(self.connect_quic_link(), self.connect_tcp(), tcp_first).await?;
                self.memory.remember(self.addr, link.tcp.is_some());
                Ok(link)
            }
        }
    }

    async fn connect_quic_link(&self) -> Result<Link, String> {
        self.connect_quic()
            .await
            .map(|conn| Link { conn, tcp: None })
    }

    async fn connect_quic(&self) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), self.addr, &self.config.server_name)
            .map_err(|e| format!("cannot dial {}: {e}", self.addr))?;
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(format!("connecting to {}: {e}", self.addr)),
            Err(_) => Err(format!(
                "no answer from {} within {}s",
                self.addr,
                self.config.connect_timeout.as_secs_f64()
            )),
        }
    }

    /// QUIC over TLS on TCP to the same address (see [`super::tcp`]).
    async fn connect_tcp(&self) -> Result<Link, String> {
        let (endpoint, center) = super::tcp::connect(self.addr)
            .await
            .map_err(|e| format!("TCP to {}: {e}", self.addr))?;
        let connecting = endpoint
            .connect_with(self.client.clone(), center, &self.config.server_name)
            .map_err(|e| format!("cannot dial {} over TCP: {e}", self.addr))?;
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(Link {
                conn,
                tcp: Some(endpoint),
            }),
            Ok(Err(e)) => Err(format!("connecting to {} over TCP: {e}", self.addr)),
            Err(_) => Err(format!("no QUIC answer from {} over TCP", self.addr)),
        }
    }

    fn start_session(&self, conn: quinn::Connection, transport: &'static str) -> DriverHandle {
        debug!(center = %self.addr, transport, "connected");
        let now = tokio::time::Instant::now().into_std();
        let session = Session::new_client(
            ClientConfig {
                register: self.config.register.clone(),
                unix_ms_at_start: unix_ms(),
                timers: self.config.timers.clone(),
            },
            now,
        );
        let (slots, index, center) = (self.slots.clone(), self.index, self.addr);
        let tag = move |event: Event| {
            update(&slots, index, |s| match &event {
                Event::Registered(r) => {
                    info!(%center, center_id = %r.center_id, "registered with center");
                    s.status.state = CenterState::Registered {
                        center_id: r.center_id.clone(),
                    };
                }
                Event::Refused(r) => {
                    warn!(%center, reason = %r.reason, "center refused the registration");
                    s.status.last_error = Some(format!("refused: {}", r.reason));
                }
                // Keep a refusal's reason: it says more than the close that follows it.
                Event::Closed { reason } if !matches!(&s.status.last_error, Some(e) if e.starts_with("refused: ")) =>
                {
                    s.status.last_error = Some(reason.clone());
                }
                _ => {}
            });
            DialerEvent { center, event }
        };
        let driver = driver::spawn_tagged(
            conn,
            session,
            self.events.clone(),
            tag,
            Some(&self.connections),
        );
        update(&self.slots, self.index, |s| {
            s.status.state = CenterState::Connected;
            s.status.connects += 1;
            s.status.last_error = None;
            s.driver = Some(driver.clone());
        });
        driver
    }
}

/// The first of `first` and `second` to connect (see the module docs): `first` alone for
/// [`TCP_HEAD_START`] or until it fails, then both; `tcp_first` swaps their order.
async fn race<'a, Q, T>(quic: Q, tcp: T, tcp_first: bool) -> Result<Link, String>
where
    Q: std::future::Future<Output = Result<Link, String>> + Send + 'a,
    T: std::future::Future<Output = Result<Link, String>> + Send + 'a,
{
    type Attempt<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Link, String>> + Send + 'a>>;
    let (first, second): (Attempt<'a>, Attempt<'a>) = if tcp_first {
        (Box::pin(tcp), Box::pin(quic))
    } else {
        (Box::pin(quic), Box::pin(tcp))
    };
    let (mut first, mut second) = (first, Some(second));
    let mut second_started = false;
    let head = tokio::time::sleep(TCP_HEAD_START);
    tokio::pin!(head);
    let (mut first_err, mut first_done) = (None, false);
    loop {
        tokio::select! {
            r = &mut first, if !first_done => match r {
                Ok(link) => return Ok(link),
                Err(e) => {
                    first_err = Some(e);
                    first_done = true;
                    second_started = true;
                }
            },
            _ = &mut head, if !second_started => second_started = true,
            r = async { second.as_mut().expect("present").await }, if second_started && second.is_some() => match r {
                Ok(link) => return Ok(link),
                Err(e) => {
                    second = None;
                    if first_done {
                        return Err(format!("{}; {e}", first_err.unwrap_or_default()));
                    }
                    first_err = Some(format!("{}; {e}", first_err.unwrap_or_default()));
                }
            },
        }
        if first_done && second.is_none() {
            return Err(first_err.unwrap_or_default());
        }
    }
}

/// A client-only endpoint on `bind` (dual-stack when IPv6, as `quinn::Endpoint::client`) whose
/// drivers run on the data plane (see `crate::plane`).
fn client_endpoint(bind: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "cannot make the UDP socket dual-stack");
        }
    }
    socket.bind(&bind.into())?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        crate::plane::runtime(),
    )
}
