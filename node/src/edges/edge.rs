//! An edge's side: join once, then keep a tunnel to each configured center.
//!
//! `xpod edge --join HOST:PORT --token xpt_…` verifies the center against the token's CA
//! fingerprint, sends a CSR for this node's id (the key never leaves the edge), stores the
//! certificate it gets back in the data dir and remembers the center in `<data_dir>/centers`.
//! Later starts need only the data dir.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use tokio::sync::watch;
use xpod_tunnel::endpoint::dialer::Transport;
use xpod_tunnel::endpoint::{DialerConfig, EdgeDialer};
use xpod_tunnel::identity::{JoinToken, NodeIdentity};
use xpod_tunnel::proto::{Event, Register, Role, Timers};

use super::learned::host_port;
use super::services::{self, Services};
use super::{NODE_CERT, NODE_KEY};
use crate::cluster_ca::{write_new, CA_CERT};

/// The file listing the centers an edge joined through, one `HOST:PORT` per line.
pub const CENTERS_FILE: &str = "centers";

async fn resolve(center: &str) -> anyhow::Result<(SocketAddr, String)> {
    let hp = host_port(center)?;
    let host = hp
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(&hp)
        .to_string();
    let addr = tokio::net::lookup_host(&hp)
        .await
        .with_context(|| format!("resolving center {hp}"))?
        .next()
        .with_context(|| format!("center {hp} has no address"))?;
    Ok((addr, host))
}

/// Where the transport that got through is remembered per network and center
/// (`xpod_tunnel::endpoint::remembered`), in the data directory.
pub const TRANSPORTS_FILE: &str = "transport.learned";

/// Test hook: `XPOD_TEST_QUIC_RETRY_MS` — how often an edge on TCP tries QUIC again (instead of
/// every minute), so a test can watch it move back. Never set in production.
fn test_quic_retry() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var("XPOD_TEST_QUIC_RETRY_MS")
        .ok()?
        .parse()
        .ok()?;
    tracing::warn!(ms, "XPOD_TEST_QUIC_RETRY_MS: QUIC retry interval overridden (a test setting; never in production)");
    Some(std::time::Duration::from_millis(ms))
}

/// The tunnel crate's name for `tunnel.transport`.
fn transport_of(t: xpod_config::TunnelTransport) -> Transport {
    match t {
        xpod_config::TunnelTransport::Auto => Transport::Auto,
        xpod_config::TunnelTransport::Quic => Transport::Quic,
        xpod_config::TunnelTransport::Tcp => Transport::Tcp,
    }
}

/// Joins through `center` with `token` as `node_id` (over `transport`); saves the identity
/// and the center.
pub async fn join(
    data_dir: &Path,
    center: &str,
    token: &str,
    node_id: &str,
    transport: xpod_config::TunnelTransport,
) -> anyhow::Result<NodeIdentity> {
    let transport = transport_of(transport);
    if data_dir.join(NODE_CERT).exists() {
        bail!("{} already holds a node identity; this node has joined before (start it without --join)", data_dir.display());
    }
    let token = JoinToken::parse(token.trim()).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let (addr, host) = resolve(center).await?;
    let identity =
        xpod_tunnel::endpoint::join_with_transport(addr, &host, &token, node_id, transport)
            .await
            .with_context(|| format!("joining through {center}"))?;
    std::fs::create_dir_all(data_dir)?;
    write_new(&data_dir.join(NODE_KEY), &identity.key_pem, 0o600)?;
    write_new(&data_dir.join(NODE_CERT), &identity.cert_pem, 0o644)?;
    if !data_dir.join(CA_CERT).exists() {
        write_new(&data_dir.join(CA_CERT), &identity.ca_pem, 0o644)?;
    }
    let centers = data_dir.join(CENTERS_FILE);
    if !centers.exists() {
        write_new(&centers, &format!("{}\n", host_port(center)?), 0o644)?;
    }
    Ok(identity)
}

/// The centers to dial: the config's, else those saved at join.
pub fn centers(config_centers: &[String], data_dir: &Path) -> anyhow::Result<Vec<String>> {
    if !config_centers.is_empty() {
        return Ok(config_centers.to_vec());
    }
    let path = data_dir.join(CENTERS_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// How often an edge checks whether it should dial the centers it learned.
const FALLBACK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The addresses of `centers` and the TLS server name to use (the last one's host).
async fn resolve_all(centers: &[String]) -> anyhow::Result<(Vec<SocketAddr>, String)> {
    let mut addrs = Vec::new();
    let mut server_name = String::from("xpod-center");
    for c in centers {
        let (addr, host) = resolve(c).await?;
        addrs.push(addr);
        server_name = host;
    }
    Ok((addrs, server_name))
}

/// How often an edge checks whether the set of pods it hosts changed.
const PODS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The pods this edge hosts (owned by it in its local store), sorted.
async fn local_pods(app: &crate::app::App) -> Vec<String> {
    match app.meta.list_pods().await {
        Ok(pods) => {
            let mut ids: Vec<String> = pods
                .into_iter()
                .filter(|p| p.node_id == app.node_id)
                .map(|p| p.pod_id)
                .collect();
            ids.sort();
            ids
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this edge's pods");
            Vec::new()
        }
    }
}

/// The capacity report with the hosted pods, sent with every heartbeat: the centers record
/// this edge as the owner of these pods.
fn pods_report(app: &crate::app::App, pods: &[String], services: &Services) -> Option<String> {
    let services: Vec<_> = services
        .advertised()
        .iter()
        .map(
            |s| serde_json::json!({"name": s.name, "kind": format!("{:?}", s.kind).to_lowercase()}),
        )
        .collect();
    let mut r = serde_json::json!({ "pods": pods, "services": services });
    if app.config.sandbox.slots > 0 {
        r["sandboxes"] =
            serde_json::to_value(app.runner.report(&app.config.sandbox)).unwrap_or_default();
    }
    Some(r.to_string())
}

/// Keeps tunnels to `centers` until `shutdown`, serving `services` on the data streams the
/// centers open (one accept loop per live connection, replaced on reconnect, ended with it).
/// The pods this edge hosts go to the centers in `Register` and, when they change, with the
/// next heartbeats.
pub async fn run(
    app: Arc<crate::app::App>,
    identity: NodeIdentity,
    centers: Vec<String>,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let node_id = app.node_id.clone();
    let mut pods = local_pods(&app).await;
    let (mut addrs, server_name) = resolve_all(&centers).await?;
    let register = Register {
        node_id,
        role: Role::Edge,
        version: env!("CARGO_PKG_VERSION").to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        addresses: Vec::new(),
        services: services.advertised(),
        pods: pods.clone(),
    };
    // Per center: the connection (stable id) an accept loop serves, and that loop.
    let mut loops: HashMap<SocketAddr, (usize, tokio::task::JoinHandle<()>)> = HashMap::new();
    let transport = transport_of(app.config.tunnel.transport);
    let dial = |addrs: Vec<SocketAddr>, name: &str| {
        let mut config = DialerConfig::new(
            addrs,
            name,
            identity.clone(),
            register.clone(),
            Timers::default(),
        );
        config.transport = transport;
        config.remembered = Some(app.config.data_dir.join(TRANSPORTS_FILE));
        if let Some(retry) = test_quic_retry() {
            config.quic_retry = retry;
        }
        EdgeDialer::spawn_with(config)
    };
    let mut dialer = dial(addrs.clone(), &server_name)?;
    tracing::info!(centers = ?centers, pods = pods.len(), "keeping tunnels to the centers");
    let mut pods_tick = tokio::time::interval(PODS_EVERY);
    // The centers dialed now, and when a tunnel was last up (see `super::learned`).
    let mut dialed = centers.clone();
    let mut last_up = std::time::Instant::now();
    let mut fallback_tick = tokio::time::interval(FALLBACK_EVERY);
    let mut reported_sandboxes = crate::sandbox::runner::Report::default();
    let mut reported_services = services.advertised();
    // The edge's own certificate (`[acme]`): its TXT records go through a center.
    let (acme_tx, mut acme_rx) = tokio::sync::mpsc::channel::<crate::certs::issuer::TxtCommand>(4);
    let acme = tokio::spawn(crate::certs::run_edge(
        app.clone(),
        acme_tx,
        shutdown.clone(),
    ));
    let mut pending: HashMap<(SocketAddr, u64), tokio::sync::oneshot::Sender<Result<(), String>>> =
        HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.changed() => break,
            Some(cmd) = acme_rx.recv() => {
                // Any center will do: they all serve the same zone.
                let mut sent = None;
                for center in &addrs {
                    if let Ok(id) = dialer.send_command(*center, cmd.body.clone()).await {
                        sent = Some((*center, id));
                        break;
                    }
                }
                match sent {
                    Some(key) => {
                        pending.retain(|_, tx| !tx.is_closed());
                        pending.insert(key, cmd.reply);
                    }
                    None => {
                        let _ = cmd.reply.send(Err("no tunnel to a center is up".into()));
                    }
                }
                continue;
            }
            _ = fallback_tick.tick() => {
                let up = dialer
                    .status()
                    .iter()
                    .any(|s| matches!(s.state, xpod_tunnel::endpoint::dialer::CenterState::Registered { .. }));
                if up {
                    last_up = std::time::Instant::now();
                    continue;
                }
                if last_up.elapsed() < super::learned::FALLBACK_AFTER {
                    continue;
                }
                let want = super::learned::fallback(&centers, &super::learned::learned(&app.config.data_dir));
                if want == dialed {
                    continue;
                }
                match resolve_all(&want).await {
                    Ok((a, name)) => {
                        tracing::warn!(unreachable = ?dialed, now = ?want, "no tunnel for a while: dialing the centers learned from the cluster too");
                        dialer.shutdown().await;
                        dialer = dial(a.clone(), &name)?;
                        (addrs, dialed) = (a, want);
                        last_up = std::time::Instant::now();
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot resolve the learned centers"),
                }
                continue;
            }
            _ = pods_tick.tick() => {
                let now = local_pods(&app).await;
                // The whole report: running ones and why others stopped.
                let sandboxes = app.runner.report(&app.config.sandbox);
                // Services changed at runtime (`crate::reload`) too.
                let published = services.advertised();
                if now != pods || sandboxes != reported_sandboxes || published != reported_services {
                    if now != pods {
                        tracing::info!(pods = ?now, "hosted pods changed; telling the centers");
                    }
                    pods = now;
                    reported_sandboxes = sandboxes;
                    reported_services = published;
                    dialer.set_capacity(pods_report(&app, &pods, &services)).await;
                }
                continue;
            }
            ev = dialer.events().recv() => ev,
        };
        let Some(ev) = ev else { break };
        match ev.event {
            Event::Registered(r) => {
                tracing::info!(center = %ev.center, center_id = %r.center_id, "tunnel up");
                dialer
                    .set_capacity(pods_report(&app, &pods, &services))
                    .await;
                if let Some(conn) = dialer.connection(ev.center) {
                    app.uplinks.add(conn.clone());
                    let id = conn.stable_id();
                    let same = loops
                        .get(&ev.center)
                        .is_some_and(|(old, h)| *old == id && !h.is_finished());
                    if !same {
                        let task = tokio::spawn(services::serve_connection(conn, services.clone()));
                        if let Some((_, old)) = loops.insert(ev.center, (id, task)) {
                            old.abort();
                        }
                    }
                }
            }
            Event::Refused(r) => {
                tracing::error!(center = %ev.center, reason = %r.reason, "the center refused this edge")
            }
            Event::Closed { reason } => {
                tracing::warn!(center = %ev.center, %reason, "tunnel closed; reconnecting")
            }
            Event::CommandReplied(r) => {
                if let Some(tx) = pending.remove(&(ev.center, r.id)) {
                    let _ = tx.send(if r.ok { Ok(()) } else { Err(r.message) });
                }
            }
            Event::CommandReceived(cmd) => {
                let _ = dialer
                    .reply(
                        ev.center,
                        cmd.id,
                        false,
                        "this edge does not handle commands yet",
                    )
                    .await;
            }
            _ => {}
        }
    }
    dialer.shutdown().await;
    acme.abort();
    for (_, (_, task)) in loops {
        task.abort();
    }
    Ok(())
}
