//! End-to-end tests of the QUIC endpoint layer (`xpod_tunnel::endpoint`) over real QUIC on
//! 127.0.0.1: joining with a token, mutual TLS on `xpod/1` and its refusals, the control-stream
//! driver (register, heartbeats), and the edge dialer (two centers, center restart on the same
//! port, no task leak across forced reconnects). Every wait is bounded, so a hang fails.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use xpod_tunnel::endpoint::join::BoxFuture;
use xpod_tunnel::endpoint::{
    close_code, driver, join, join_with_timeout, Accepted, Backoff, CenterEndpoint, CenterState,
    DialerConfig, DialerEvent, DialerHandle, DriverHandle, EdgeDialer, JoinAuthority, JoinError,
    ALPN_JOIN, ALPN_MESH,
};
use xpod_tunnel::identity::{
    bootstrap_client_config, client_config, peer_identity, ClusterCa, JoinToken, NodeIdentity,
    NodeRole, PeerIdentity,
};
use xpod_tunnel::proto::{ClientConfig, Event, Register, Role, ServerConfig, Session, Timers};

const LOCALHOST: &str = "127.0.0.1:0";

/// Fails the test instead of hanging.
async fn within<T>(secs: f64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs_f64(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// Polls `cond` every 10 ms until it holds.
async fn until(secs: f64, what: &str, mut cond: impl FnMut() -> bool) {
    within(secs, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn short_timers() -> Timers {
    Timers {
        // The heartbeat interval travels in whole seconds (≥ 1 s), so 1 s is the shortest.
        heartbeat_interval: Duration::from_secs(1),
        inactive_after: Duration::from_secs(3),
        offline_after: Duration::from_secs(6),
        ack_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(5),
    }
}

fn register(node_id: &str) -> Register {
    Register {
        node_id: node_id.into(),
        role: Role::Edge,
        version: "test".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        addresses: vec![],
        services: vec![],
        pods: vec![],
    }
}

struct TestAuthority {
    ca: ClusterCa,
    calls: AtomicUsize,
    refuse: Option<String>,
}

impl JoinAuthority for TestAuthority {
    fn authorize<'a>(
        &'a self,
        _token: &'a JoinToken,
        _node_id: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let refuse = self.refuse.clone();
        Box::pin(async move {
            match refuse {
                Some(reason) => Err(reason),
                None => Ok(()),
            }
        })
    }

    fn ca(&self) -> &ClusterCa {
        &self.ca
    }
}

/// A cluster CA (inside a join authority) and a center identity signed by it.
fn cluster(refuse: Option<&str>) -> (Arc<TestAuthority>, NodeIdentity) {
    let ca = ClusterCa::generate("test").unwrap();
    let center = ca
        .issue_node("center-1", NodeRole::Center, &[], &[], 30)
        .unwrap();
    let authority = Arc::new(TestAuthority {
        ca,
        calls: AtomicUsize::new(0),
        refuse: refuse.map(str::to_owned),
    });
    (authority, center)
}

/// A center endpoint whose accepted connections each get a server session; the test receives
/// the connections and all session events.
struct TestCenter {
    addr: SocketAddr,
    quinn: quinn::Endpoint,
    task: JoinHandle<()>,
    conns: mpsc::Receiver<(PeerIdentity, DriverHandle)>,
    events: mpsc::Receiver<(String, Event)>,
    live_tasks: Arc<AtomicUsize>,
}

impl TestCenter {
    fn start(
        addr: SocketAddr,
        identity: &NodeIdentity,
        join: Option<Arc<dyn JoinAuthority>>,
        timers: Timers,
    ) -> std::io::Result<TestCenter> {
        let mut center = match CenterEndpoint::bind(addr, identity, join) {
            Ok(c) => c,
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let center_id = center.identity().node_id.clone();
        let addr = center.local_addr();
        let quinn = center.endpoint().clone();
        let (conns_tx, conns) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(1024);
        let live_tasks = Arc::new(AtomicUsize::new(0));
        let live = live_tasks.clone();
        let task = tokio::spawn(async move {
            loop {
                live.store(center.live_tasks(), Ordering::SeqCst);
                let accepted = tokio::select! {
                    a = center.accept() => a,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                };
                match accepted {
                    Some(Accepted::Node { conn, peer }) => {
                        let session = Session::new_server(
                            ServerConfig {
                                center_id: center_id.clone(),
                                timers: timers.clone(),
                            },
                            peer.node_id.clone(),
                            tokio::time::Instant::now().into_std(),
                        );
                        let id = peer.node_id.clone();
                        let handle = driver::spawn_tagged(
                            conn,
                            session,
                            events_tx.clone(),
                            move |e| (id.clone(), e),
                            None,
                        );
                        let _ = conns_tx.send((peer, handle)).await;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        });
        Ok(TestCenter {
            addr,
            quinn,
            task,
            conns,
            events,
            live_tasks,
        })
    }

    /// Binds on exactly `addr`, retrying while the old socket is still being released.
    async fn start_on(addr: SocketAddr, identity: &NodeIdentity, timers: Timers) -> TestCenter {
        within(3.0, "rebinding the center's port", async {
            loop {
                match TestCenter::start(addr, identity, None, timers.clone()) {
                    Ok(c) => return c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
    }

    /// Drops the center endpoint (closing every connection) and waits until the port is free.
    async fn kill(self) {
        self.quinn
            .close(close_code::SHUTDOWN, b"center shutting down");
        self.task.abort();
        let _ = self.task.await;
        within(3.0, "center endpoint idle", self.quinn.wait_idle()).await;
    }

    async fn next_event(&mut self, what: &str, pred: impl Fn(&str, &Event) -> bool) -> Event {
        let events = &mut self.events;
        within(5.0, what, async {
            loop {
                let (id, e) = events.recv().await.expect("center events ended");
                if pred(&id, &e) {
                    return e;
                }
            }
        })
        .await
    }
}

async fn next_dialer_event(
    dialer: &mut DialerHandle,
    what: &str,
    pred: impl Fn(&DialerEvent) -> bool,
) -> DialerEvent {
    let events = dialer.events();
    within(5.0, what, async {
        loop {
            let e = events.recv().await.expect("dialer events ended");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
}

fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn quinn_client(tls: Arc<rustls::ClientConfig>) -> quinn::ClientConfig {
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}

async fn joined_edge(
    center: &TestCenter,
    authority: &TestAuthority,
    node_id: &str,
) -> NodeIdentity {
    let token = JoinToken::generate(&authority.ca.fingerprint()).unwrap();
    within(15.0, "join", join(center.addr, "center", &token, node_id))
        .await
        .expect("join succeeds")
}

// ---------------------------------------------------------------------------------------------
// Join

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_a_valid_token_yields_an_edge_identity() {
    let (authority, center_id) = cluster(None);
    let center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    let edge = joined_edge(&center, &authority, "edge-1").await;
    assert_eq!(
        peer_identity(&edge.cert_der().unwrap()).unwrap(),
        PeerIdentity {
            node_id: "edge-1".into(),
            role: NodeRole::Edge
        }
    );
    assert_eq!(edge.ca_pem, authority.ca.cert_pem());
    edge.validate().unwrap();
    assert_eq!(authority.calls.load(Ordering::SeqCst), 1);
    // The join task ends with its connection.
    until(5.0, "join task ended", || {
        center.live_tasks.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refused_by_the_authority_carries_its_reason() {
    let (authority, center_id) = cluster(Some("join token has already been used"));
    let center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    let token = JoinToken::generate(&authority.ca.fingerprint()).unwrap();
    let err = within(15.0, "join", join(center.addr, "center", &token, "edge-1"))
        .await
        .unwrap_err();
    match &err {
        JoinError::Refused(reason) => assert_eq!(reason, "join token has already been used"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(authority.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_another_ca_fingerprint_fails_at_tls() {
    let (authority, center_id) = cluster(None);
    let center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    let other = ClusterCa::generate("other").unwrap();
    let token = JoinToken::generate(&other.fingerprint()).unwrap();
    let err = within(15.0, "join", join(center.addr, "center", &token, "edge-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, JoinError::FingerprintMismatch { center: c } if c == center.addr),
        "{err:?}"
    );
    assert!(err.to_string().contains("fingerprint"), "{err}");
    assert_eq!(
        authority.calls.load(Ordering::SeqCst),
        0,
        "the authority was asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_names_a_silent_center_unreachable() {
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind(LOCALHOST).unwrap();
    let addr = silent.local_addr().unwrap();
    let ca = ClusterCa::generate("test").unwrap();
    let token = JoinToken::generate(&ca.fingerprint()).unwrap();
    let err = within(
        5.0,
        "join",
        join_with_timeout(addr, "center", &token, "edge-1", Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JoinError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_is_refused_when_the_center_does_not_accept_joins() {
    let (authority, center_id) = cluster(None);
    let center =
        TestCenter::start(LOCALHOST.parse().unwrap(), &center_id, None, short_timers()).unwrap();
    let token = JoinToken::generate(&authority.ca.fingerprint()).unwrap();
    let err = within(15.0, "join", join(center.addr, "center", &token, "edge-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JoinError::Refused(r) if r.contains("does not accept joins")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS and the control stream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_edge_registers_over_mtls_and_heartbeats_flow() {
    let (authority, center_id) = cluster(None);
    let mut center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    let edge = joined_edge(&center, &authority, "edge-1").await;

    let ep = client_endpoint();
    let tls = client_config(&edge, &[ALPN_MESH]).unwrap();
    let conn = within(
        5.0,
        "mTLS connect",
        ep.connect_with(quinn_client(tls), center.addr, "center")
            .unwrap(),
    )
    .await
    .unwrap();
    let (tx, mut edge_events) = mpsc::channel(64);
    let session = Session::new_client(
        ClientConfig {
            register: register("edge-1"),
            unix_ms_at_start: 0,
            timers: short_timers(),
        },
        tokio::time::Instant::now().into_std(),
    );
    let edge_driver = driver::spawn(conn, session, tx);

    let (peer, center_driver) = within(5.0, "Accepted::Node", center.conns.recv())
        .await
        .unwrap();
    assert_eq!(
        peer,
        PeerIdentity {
            node_id: "edge-1".into(),
            role: NodeRole::Edge
        }
    );
    let reg = center
        .next_event("PeerRegistered", |_, e| {
            matches!(e, Event::PeerRegistered(_))
        })
        .await;
    assert!(matches!(reg, Event::PeerRegistered(r) if r.node_id == "edge-1" && r.os == "linux"));
    let registered = within(5.0, "Registered", async {
        loop {
            if let Event::Registered(r) = edge_events.recv().await.unwrap() {
                return r;
            }
        }
    })
    .await;
    assert_eq!(registered.center_id, "center-1");
    assert_eq!(registered.heartbeat_secs, 1);
    assert!(edge_driver.is_established());
    assert_eq!(edge_driver.peer_id().as_deref(), Some("center-1"));
    assert_eq!(center_driver.peer_id().as_deref(), Some("edge-1"));

    // Two heartbeats reach the center within ~2 s, and the edge stays up (acks arrive).
    for seq in 1..=2u64 {
        let hb = center
            .next_event("heartbeat", |_, e| matches!(e, Event::Heartbeat(_)))
            .await;
        assert!(matches!(hb, Event::Heartbeat(h) if h.seq == seq));
    }
    assert!(!edge_driver.is_finished());

    // Commands travel both ways; Ping is answered by the session itself.
    let id = within(
        5.0,
        "send command",
        center_driver.send_command(xpod_tunnel::proto::CommandBody::Ping),
    )
    .await
    .unwrap();
    let reply = center
        .next_event("pong", |_, e| matches!(e, Event::CommandReplied(_)))
        .await;
    assert!(matches!(reply, Event::CommandReplied(r) if r.id == id && r.message == "pong"));

    // A polite close ends both drivers, each with exactly one Closed event.
    edge_driver.close("edge going away").await;
    within(5.0, "edge driver ends", edge_driver.finished()).await;
    within(5.0, "center driver ends", center_driver.finished()).await;
    let closed = center
        .next_event("Closed", |_, e| matches!(e, Event::Closed { .. }))
        .await;
    assert_eq!(
        closed,
        Event::Closed {
            reason: "the peer closed the session: edge going away".into()
        }
    );
    let mut closed_on_edge = 0;
    while let Ok(e) = edge_events.try_recv() {
        if matches!(e, Event::Closed { .. }) {
            closed_on_edge += 1;
        }
    }
    assert_eq!(closed_on_edge, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_connection_without_a_client_certificate_is_closed() {
    let (authority, center_id) = cluster(None);
    let mut center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    // Trusts the center (pinned CA) but presents no certificate, and gets ALPN xpod/1: it
    // offers the join protocol too, so the center shows its CA (as to a joining edge, which
    // the pinned check needs), but the center prefers xpod/1.
    let tls =
        bootstrap_client_config(&authority.ca.fingerprint(), &[ALPN_MESH, ALPN_JOIN]).unwrap();
    let ep = client_endpoint();
    let connecting = ep
        .connect_with(quinn_client(tls), center.addr, "center")
        .unwrap();
    let err = within(5.0, "closed by the center", async {
        match connecting.await {
            Ok(conn) => conn.closed().await,
            Err(e) => e,
        }
    })
    .await;
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, close_code::UNAUTHENTICATED);
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            assert!(reason.contains("client certificate"), "{reason}");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), center.conns.recv())
            .await
            .is_err(),
        "the unauthenticated connection reached accept()"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_fails_the_handshake() {
    let (authority, center_id) = cluster(None);
    let mut center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    let other = ClusterCa::generate("other").unwrap();
    let foreign = other
        .issue_node("edge-1", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    // Trusts our CA (so the client accepts the center) but presents the foreign certificate.
    let mixed = NodeIdentity {
        cert_pem: foreign.cert_pem.clone(),
        key_pem: foreign.key_pem.clone(),
        ca_pem: authority.ca.cert_pem().to_string(),
    };
    let tls = client_config(&mixed, &[ALPN_MESH]).unwrap();
    let ep = client_endpoint();
    let connecting = ep
        .connect_with(quinn_client(tls), center.addr, "center")
        .unwrap();
    let err = within(5.0, "handshake failure", async {
        match connecting.await {
            Ok(conn) => conn.closed().await,
            Err(e) => e,
        }
    })
    .await;
    // A TLS alert (transport-level CONNECTION_CLOSE), not an application close after a
    // completed handshake.
    assert!(
        matches!(err, quinn::ConnectionError::ConnectionClosed(_)),
        "expected a handshake failure, got {err:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), center.conns.recv())
            .await
            .is_err(),
        "the foreign certificate reached accept()"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_claiming_another_node_id_is_refused() {
    let (authority, center_id) = cluster(None);
    let mut center = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center_id,
        Some(authority.clone()),
        short_timers(),
    )
    .unwrap();
    let edge = authority
        .ca
        .issue_node("edge-1", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    let ep = client_endpoint();
    let tls = client_config(&edge, &[ALPN_MESH]).unwrap();
    let conn = within(
        5.0,
        "connect",
        ep.connect_with(quinn_client(tls), center.addr, "center")
            .unwrap(),
    )
    .await
    .unwrap();
    let (tx, mut edge_events) = mpsc::channel(64);
    let session = Session::new_client(
        ClientConfig {
            register: register("edge-2"),
            unix_ms_at_start: 0,
            timers: short_timers(),
        },
        tokio::time::Instant::now().into_std(),
    );
    let edge_driver = driver::spawn(conn, session, tx);
    let events = within(5.0, "Refused then Closed", async {
        let mut seen = vec![];
        loop {
            let e = edge_events.recv().await.unwrap();
            let last = matches!(e, Event::Closed { .. });
            seen.push(e);
            if last {
                return seen;
            }
        }
    })
    .await;
    assert!(
        matches!(&events[..], [Event::Refused(r), Event::Closed { .. }]
            if r.reason.contains("does not match certificate node id")),
        "{events:?}"
    );
    within(5.0, "edge driver ends", edge_driver.finished()).await;
    let (_, center_driver) = within(5.0, "accepted", center.conns.recv()).await.unwrap();
    within(5.0, "center driver ends", center_driver.finished()).await;
    let closed = center
        .next_event("center Closed", |_, e| matches!(e, Event::Closed { .. }))
        .await;
    assert!(matches!(closed, Event::Closed { reason } if reason.starts_with("refused:")));
}

// ---------------------------------------------------------------------------------------------
// Dialer

#[test]
fn backoff_is_jittered_exponential_and_capped() {
    let b = Backoff::default();
    assert_eq!(b.delay(1, 1.0), Duration::from_millis(500));
    assert_eq!(b.delay(1, 0.0), Duration::from_millis(250));
    assert_eq!(b.delay(2, 1.0), Duration::from_secs(1));
    assert_eq!(b.delay(3, 1.0), Duration::from_secs(2));
    assert_eq!(b.delay(4, 1.0), Duration::from_secs(4));
    assert_eq!(b.delay(5, 1.0), Duration::from_secs(5));
    assert_eq!(b.delay(1000, 1.0), Duration::from_secs(5));
    assert_eq!(b.delay(1000, 0.0), Duration::from_millis(2500));
    assert_eq!(b.reset_after, Duration::from_secs(10));
    for attempt in 1..50 {
        let d = b.delay(attempt, rand::random());
        assert!(d <= Duration::from_secs(5) && d >= Duration::from_millis(250));
    }
}

fn registered(d: &DialerHandle, i: usize) -> bool {
    matches!(d.status()[i].state, CenterState::Registered { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_keeps_both_centers_and_reconnects_to_a_restarted_one() {
    let (authority, center1_id) = cluster(None);
    let center2_id = authority
        .ca
        .issue_node("center-2", NodeRole::Center, &[], &[], 30)
        .unwrap();
    let edge = authority
        .ca
        .issue_node("edge-1", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    let mut c1 = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center1_id,
        None,
        short_timers(),
    )
    .unwrap();
    let mut c2 = TestCenter::start(
        LOCALHOST.parse().unwrap(),
        &center2_id,
        None,
        short_timers(),
    )
    .unwrap();
    let (a1, a2) = (c1.addr, c2.addr);
    let mut dialer = EdgeDialer::spawn(
        vec![a1, a2],
        "center",
        edge.clone(),
        register("edge-1"),
        short_timers(),
    )
    .unwrap();
    until(5.0, "registered with both centers", || {
        registered(&dialer, 0) && registered(&dialer, 1)
    })
    .await;
    for c in [&mut c1, &mut c2] {
        c.next_event("PeerRegistered", |id, e| {
            id == "edge-1" && matches!(e, Event::PeerRegistered(_))
        })
        .await;
    }
    let status = dialer.status();
    assert_eq!(
        status[0].state,
        CenterState::Registered {
            center_id: "center-1".into()
        }
    );
    assert_eq!(
        status[1].state,
        CenterState::Registered {
            center_id: "center-2".into()
        }
    );
    assert_eq!((status[0].connects, status[1].connects), (1, 1));
    assert_eq!(dialer.connection_tasks(), 2);
    assert_eq!(dialer.supervisor_tasks(), 2);
    next_dialer_event(&mut dialer, "Registered event", |e| {
        matches!(e.event, Event::Registered(_))
    })
    .await;

    // Center 1 goes away: the dialer backs off for it and keeps center 2.
    c1.kill().await;
    until(3.0, "center 1 noticed down", || !registered(&dialer, 0)).await;
    next_dialer_event(&mut dialer, "Closed from center 1", |e| {
        e.center == a1 && matches!(e.event, Event::Closed { .. })
    })
    .await;
    until(3.0, "backing off", || {
        matches!(
            dialer.status()[0].state,
            CenterState::BackingOff { .. } | CenterState::Connecting
        ) && dialer.status()[0].attempts >= 1
    })
    .await;
    assert!(registered(&dialer, 1), "center 2 was disturbed");

    // A new center on the same port: reconnected and registered within 3 s.
    let mut c1 = TestCenter::start_on(a1, &center1_id, short_timers()).await;
    let restarted = tokio::time::Instant::now();
    until(3.0, "re-registered with the restarted center", || {
        registered(&dialer, 0)
    })
    .await;
    let took = restarted.elapsed();
    c1.next_event("PeerRegistered after restart", |id, e| {
        id == "edge-1" && matches!(e, Event::PeerRegistered(_))
    })
    .await;
    assert_eq!(dialer.status()[0].connects, 2);
    assert_eq!(dialer.status()[1].connects, 1);
    assert_eq!(dialer.connection_tasks(), 2);
    eprintln!("re-registered {took:?} after the restart");

    // Shutdown ends every task and says goodbye to both centers.
    within(10.0, "dialer shutdown", dialer.shutdown()).await;
    c2.next_event(
        "Goodbye at center 2",
        |_, e| matches!(e, Event::Closed { reason } if reason.contains("edge shutting down")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_leaks_no_task_across_twenty_forced_reconnects() {
    let (authority, center_id) = cluster(None);
    let edge = authority
        .ca
        .issue_node("edge-1", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    let mut center =
        TestCenter::start(LOCALHOST.parse().unwrap(), &center_id, None, short_timers()).unwrap();
    let mut config = DialerConfig::new(
        vec![center.addr],
        "center",
        edge,
        register("edge-1"),
        short_timers(),
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        reset_after: Duration::from_secs(10),
    };
    let mut dialer = EdgeDialer::spawn_with(config).unwrap();
    // Drain dialer events in the background, as a node would.
    let mut events = std::mem::replace(dialer.events(), mpsc::channel(1).1);
    let drain = tokio::spawn(async move {
        let mut registered = 0usize;
        while let Some(e) = events.recv().await {
            if matches!(e.event, Event::Registered(_)) {
                registered += 1;
            }
        }
        registered
    });

    until(5.0, "first registration", || registered(&dialer, 0)).await;
    let baseline = (dialer.supervisor_tasks(), dialer.connection_tasks());
    assert_eq!(baseline, (1, 1));
    let center_baseline = center.live_tasks.load(Ordering::SeqCst);

    let mut old_drivers = vec![];
    for round in 0..20 {
        let (_, server) = within(5.0, "accepted", center.conns.recv()).await.unwrap();
        until(5.0, "server session established", || {
            server.is_established()
        })
        .await;
        until(5.0, "edge registered", || registered(&dialer, 0)).await;
        assert!(
            dialer.connection_tasks() <= 1,
            "round {round}: more than one connection task"
        );
        server
            .connection()
            .close(quinn::VarInt::from_u32(99), b"forced reconnect");
        old_drivers.push(server);
    }
    let (_, last) = within(5.0, "accepted", center.conns.recv()).await.unwrap();
    until(5.0, "registered after the last reconnect", || {
        registered(&dialer, 0) && last.is_established()
    })
    .await;
    assert_eq!(dialer.status()[0].connects, 21);
    // None of those sessions stayed up for `reset_after`, so the backoff kept growing.
    assert_eq!(dialer.status()[0].attempts, 20);
    assert_eq!(
        (dialer.supervisor_tasks(), dialer.connection_tasks()),
        baseline,
        "live tasks differ from the baseline after 20 reconnects"
    );
    for d in &old_drivers {
        within(5.0, "old server driver ended", d.finished()).await;
    }
    until(5.0, "center tasks back to baseline", || {
        center.live_tasks.load(Ordering::SeqCst) == center_baseline
    })
    .await;

    within(10.0, "dialer shutdown", dialer.shutdown()).await;
    within(5.0, "last server driver ended", last.finished()).await;
    let registrations = within(5.0, "event drain", drain).await.unwrap();
    assert_eq!(registrations, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_resets_after_a_session_stayed_up() {
    let (authority, center_id) = cluster(None);
    let edge = authority
        .ca
        .issue_node("edge-1", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    let mut center =
        TestCenter::start(LOCALHOST.parse().unwrap(), &center_id, None, short_timers()).unwrap();
    let mut config = DialerConfig::new(
        vec![center.addr],
        "center",
        edge,
        register("edge-1"),
        short_timers(),
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        reset_after: Duration::from_millis(150),
    };
    let dialer = EdgeDialer::spawn_with(config).unwrap();
    for _ in 0..4 {
        let (_, server) = within(5.0, "accepted", center.conns.recv()).await.unwrap();
        until(5.0, "registered", || {
            registered(&dialer, 0) && server.is_established()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(250)).await; // longer than reset_after
        server
            .connection()
            .close(quinn::VarInt::from_u32(99), b"forced reconnect");
        let connects = dialer.status()[0].connects;
        until(5.0, "reconnected", || {
            dialer.status()[0].connects > connects
        })
        .await;
        assert_eq!(
            dialer.status()[0].attempts,
            1,
            "the attempt counter was not reset"
        );
    }
    within(10.0, "dialer shutdown", dialer.shutdown()).await;
}
