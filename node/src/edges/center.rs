//! A center's side of edges' tunnels: run each control session ([`edge_session`]), record the
//! pods an edge hosts, keep presence ([`sweep`]). The endpoint's accept loop is
//! `crate::front::quic`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;
use xpod_storage::meta::{self, NodeRecord, NodeStatus, NodeType};
use xpod_tunnel::endpoint::driver;
use xpod_tunnel::identity::PeerIdentity;
use xpod_tunnel::proto::{Event, PeerStatus, Register, ServerConfig, Session};

use crate::app::App;

/// How often (at most) the presence sweeper looks at the edges this center holds.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One edge's control session: presence from its registration and heartbeats.
pub async fn edge_session(app: Arc<App>, conn: quinn::Connection, peer: PeerIdentity) {
    let remote = conn.remote_address();
    // Shown with the edge's row (the dashboard's certificate column).
    let cert_not_after = xpod_tunnel::endpoint::peer_not_after(&conn);
    let session = Session::new_server(
        ServerConfig {
            center_id: app.node_id.clone(),
            timers: super::presence_timers(&app.config.tunnel.presence),
        },
        peer.node_id.clone(),
        tokio::time::Instant::now().into_std(),
    );
    // Boxed: a channel allocates room for 32 messages up front, and an `Event` is ~200
    // bytes (6 KiB per idle edge unboxed).
    let (tx, mut rx) = mpsc::channel::<Box<Event>>(64);
    let tunnel = conn.clone();
    let handle = driver::spawn_tagged(conn, session, tx, Box::new, None);
    let span = tracing::info_span!("edge", node = %peer.node_id, %remote);
    async move {
    // The pods the edge last said it hosts (synced into the cluster's pod table on change).
    let mut hosted: Vec<String> = Vec::new();
    // Presence is written when something changed, else once the stored heartbeat is half way
    // to looking inactive (the sweeper judges silence from it): most heartbeats of an idle
    // edge cost no database write, and none is judged inactive while it beats.
    let timers = super::presence_timers(&app.config.tunnel.presence);
    let refresh = timers.inactive_after.saturating_sub(timers.heartbeat_interval) / 2;
    let mut written: Option<(std::time::Instant, Option<String>)> = None;
    let mut goodbye = false;
    let mut serving_uplink = false;
    while let Some(event) = rx.recv().await {
        match *event {
            Event::PeerRegistered(reg) => {
                tracing::info!(version = %reg.version, os = %reg.os, arch = %reg.arch, "edge registered");
                update(&app, &peer.node_id, |n| {
                    registered(n, &reg, &app, remote);
                    if let Some(at) = cert_not_after {
                        n.capacity["certNotAfter"] = at.into();
                    }
                })
                .await;
                hosted = reg.pods.clone();
                claim_pods(&app, &peer.node_id, &hosted).await;
                // The edge's own requests to the cluster (its control stream was accepted
                // before the registration, so only its later streams come here).
                if !serving_uplink {
                    serving_uplink = true;
                    tokio::spawn(super::cluster_api::serve_edge(
                        app.clone(),
                        tunnel.clone(),
                        peer.node_id.clone(),
                    ));
                }
                // From now on requests for this edge's services go through this connection.
                app.edges.insert(&peer.node_id, tunnel.clone());
                // Moves onto this edge that were cut finish now (through this tunnel).
                super::pod_adopt::resume(&app, &peer.node_id, &hosted);
                // So it can reach another center if this one dies.
                super::learned::tell(&app, &peer.node_id);
            }
            Event::Heartbeat(hb) => {
                // A center that joined (or left) since: told within a heartbeat.
                super::learned::tell(&app, &peer.node_id);
                let pods = hb
                    .capacity
                    .as_deref()
                    .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
                    .and_then(|c| serde_json::from_value::<Vec<String>>(c["pods"].clone()).ok());
                if let Some(pods) = pods.filter(|p| *p != hosted) {
                    hosted = pods;
                    claim_pods(&app, &peer.node_id, &hosted).await;
                }
                let capacity = hb.capacity.clone();
                let unchanged = written
                    .as_ref()
                    .is_some_and(|(_, c)| capacity.is_none() || *c == capacity);
                if unchanged && written.as_ref().is_some_and(|(at, _)| at.elapsed() < refresh) {
                    app.metrics.heartbeat_unwritten();
                    continue;
                }
                if unchanged {
                    // Only the time: written with every other such heartbeat in one batch.
                    app.edges.touch(&peer.node_id);
                } else {
                    update(&app, &peer.node_id, |n| {
                        n.status = NodeStatus::Online;
                        n.last_heartbeat = meta::now_millis();
                        if let Some(c) = hb.capacity.as_deref().and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok()) {
                            // Services changed on the edge at runtime: its row shows them.
                            if c["services"].is_array() {
                                n.capacity["services"] = c["services"].clone();
                            }
                            n.capacity["capacity"] = c;
                        }
                    })
                    .await;
                }
                let kept = capacity.or_else(|| written.take().and_then(|(_, c)| c));
                written = Some((std::time::Instant::now(), kept));
            }
            Event::PeerStatusChanged(s) => {
                tracing::info!(status = ?s, "edge status changed");
                written = None;
                update(&app, &peer.node_id, |n| n.status = status_of(s)).await;
            }
            Event::CommandReceived(cmd) => {
                let (ok, message) = match acme_txt(&app, &peer.node_id, &cmd.body).await {
                    Ok(m) => (true, m),
                    Err(m) => {
                        tracing::warn!(command = ?cmd.body, why = %m, "edge command refused");
                        (false, m)
                    }
                };
                let _ = handle.reply(cmd.id, ok, message).await;
            }
            Event::Closed { reason } => {
                tracing::info!(%reason, "edge tunnel closed");
                goodbye = reason.starts_with(xpod_tunnel::proto::session::PEER_GOODBYE);
                break;
            }
            _ => {}
        }
    }
    // The session is over however it ended: requests for this edge fail fast from now on
    // (unless a newer connection of the same edge has taken over).
    if app.edges.remove(&peer.node_id, &tunnel) {
        app.edges.untouch(&peer.node_id);
        tracing::info!("no longer forwarding to this edge");
        if goodbye {
            // A graceful goodbye: the edge is gone now, not merely silent.
            update(&app, &peer.node_id, |n| n.status = NodeStatus::Offline).await;
        }
    }
    }
    .instrument(span)
    .await
}

/// An edge's DNS-01 record: `SetAcmeTxt`/`ClearAcmeTxt` for `_acme-challenge.<edge>.<edge
/// domain>` only (the name of its own certificate and its wildcard), into the shared TXT
/// table every center serves. Anything else is refused with the reason.
async fn acme_txt(
    app: &App,
    edge: &str,
    body: &xpod_tunnel::proto::CommandBody,
) -> Result<String, String> {
    use xpod_tunnel::proto::CommandBody;
    let domain = app
        .config
        .tunnel
        .edge_domain
        .as_deref()
        .ok_or("this center has no tunnel.edge_domain, so edges have no names to certify")?;
    let own = format!("_acme-challenge.{edge}.{}", domain.to_ascii_lowercase());
    let check = |name: &str| edge_may_set(edge, &own, name);
    match body {
        CommandBody::SetAcmeTxt { name, value } => {
            check(name)?;
            if value.is_empty() || value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err("a TXT value is 1-255 printable ASCII characters".into());
            }
            app.meta
                .put_txt(&own, value, meta::now_millis() + 3_600_000)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(name = %own, "edge published a DNS-01 challenge");
            Ok(format!("{own} TXT set"))
        }
        CommandBody::ClearAcmeTxt { name } => {
            check(name)?;
            let values = app.meta.list_txt(&own).await.map_err(|e| e.to_string())?;
            for v in &values {
                app.meta
                    .delete_txt(&own, v)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(format!("{own}: {} TXT record(s) removed", values.len()))
        }
        other => Err(format!("a center does not handle {other:?}")),
    }
}

/// Whether `edge` may set TXT records at `name`: only at `own`, its challenge name.
fn edge_may_set(edge: &str, own: &str, name: &str) -> Result<(), String> {
    if name.trim_end_matches('.').eq_ignore_ascii_case(own) {
        Ok(())
    } else {
        Err(format!(
            "edge {edge} may only set TXT records at {own}, not {name:?}"
        ))
    }
}

/// Records `edge` as the owner of the pods it hosts: a pod the cluster does not know is
/// created with the edge as its owner; a pod id the cluster already gives to another node is
/// left alone (logged: the edge cannot take it over).
/// Records the pods an edge reports hosting: those the cluster assigned to it already, and
/// new ids under a prefix its policy grants (`crate::node_policy`). Any other id is not
/// claimed (logged): a device never takes a free name by reporting it.
async fn claim_pods(app: &Arc<App>, edge: &str, pods: &[String]) {
    let policy = match crate::node_policy::load(app.meta.as_ref(), edge).await {
        Ok((p, _)) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the edge's policy; its new pods are not claimed now");
            crate::node_policy::Policy::default()
        }
    };
    for pod_id in pods {
        if xpod_routing::target::validate_pod_id(pod_id).is_err() {
            tracing::warn!(pod = %pod_id, "edge reported a pod id that is not valid; ignored");
            continue;
        }
        match app.meta.get_pod(pod_id).await {
            Ok(Some(p)) if p.node_id == edge => {}
            Ok(Some(p)) => {
                app.refusal(
                    None,
                    format!("node:{edge}"),
                    "refused.pod_claim",
                    pod_id.clone(),
                    serde_json::json!({"reason": "another node owns this pod id", "owner": p.node_id}),
                    String::new(),
                );
                tracing::warn!(pod = %pod_id, owner = %p.node_id, "edge hosts a pod whose id another node owns in the cluster; not claimed")
            }
            Ok(None) if !policy.may_claim(pod_id) => {
                app.refusal(
                    None,
                    format!("node:{edge}"),
                    "refused.pod_claim",
                    pod_id.clone(),
                    serde_json::json!({"reason": "not assigned to this edge and no granted prefix covers it"}),
                    String::new(),
                );
                tracing::warn!(pod = %pod_id, "edge reports a pod the cluster did not assign to it and no granted prefix covers; not claimed (assign it with POST /.cluster/pods {{\"nodeId\"}} or grant a prefix: xpod nodes set --pod-prefix)")
            }
            Ok(None) => {
                let new = meta::NewPod {
                    pod_id: pod_id.clone(),
                    base_url: app.pod_base_url(pod_id),
                    account_id: None,
                    node_id: edge.to_string(),
                    access_mode: meta::AccessMode::Private,
                };
                match app.meta.create_pod(&new).await {
                    Ok(_) => {
                        app.owners.invalidate(pod_id);
                        tracing::info!(pod = %pod_id, "pod hosted by this edge recorded")
                    }
                    Err(e) => {
                        tracing::warn!(pod = %pod_id, error = %e, "cannot record the edge's pod")
                    }
                }
            }
            Err(e) => tracing::warn!(pod = %pod_id, error = %e, "cannot check the edge's pod"),
        }
    }
}

fn status_of(s: PeerStatus) -> NodeStatus {
    match s {
        PeerStatus::Online => NodeStatus::Online,
        PeerStatus::Inactive => NodeStatus::Inactive,
        PeerStatus::Offline => NodeStatus::Offline,
    }
}

/// The node row after a registration: what the edge reported about itself.
fn registered(n: &mut NodeRecord, reg: &Register, app: &App, remote: std::net::SocketAddr) {
    n.node_type = NodeType::Edge;
    n.status = NodeStatus::Online;
    n.last_heartbeat = meta::now_millis();
    n.version = reg.version.clone();
    // Over TCP the remote is the bridge's virtual address, not the edge's.
    let tcp = xpod_tunnel::endpoint::tcp::is_virtual(&remote);
    n.quic_address = (!tcp).then(|| remote.to_string());
    if !n.attached_centers.contains(&app.node_id) {
        n.attached_centers.push(app.node_id.clone());
    }
    let services: Vec<_> = reg
        .services
        .iter()
        .map(
            |s| serde_json::json!({"name": s.name, "kind": format!("{:?}", s.kind).to_lowercase()}),
        )
        .collect();
    n.capacity = serde_json::json!({
        "os": reg.os, "arch": reg.arch, "addresses": reg.addresses, "services": services, "pods": reg.pods,
        "transport": if tcp { "tcp" } else { "quic" },
    });
}

/// Read-modify-write of a node row (created if missing), logging failures.
async fn update(app: &App, node_id: &str, f: impl FnOnce(&mut NodeRecord)) {
    let result = async {
        let mut n = app
            .meta
            .get_node(node_id)
            .await?
            .unwrap_or_else(|| NodeRecord {
                node_id: node_id.to_string(),
                node_type: NodeType::Edge,
                region: app.config.region.clone(),
                internal_address: None,
                public_address: None,
                quic_address: None,
                status: NodeStatus::Offline,
                attached_centers: Vec::new(),
                capacity: serde_json::json!({}),
                version: String::new(),
                last_heartbeat: 0,
            });
        f(&mut n);
        app.meta.upsert_node(&n).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(node = node_id, error = %e, "could not record edge presence");
    }
}

/// Marks the edges this center holds inactive/offline by the seed's timings, from their last
/// heartbeat — also for edges whose tunnel is gone, which no session reports any more.
pub async fn sweep(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let timers = super::presence_timers(&app.config.tunnel.presence);
    let mut tick = tokio::time::interval(SWEEP_EVERY.min(timers.heartbeat_interval));
    let mut touch = tokio::time::interval(super::registry::TOUCH_EVERY);
    touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                flush_heartbeats(&app).await;
                return;
            }
            _ = touch.tick() => {
                flush_heartbeats(&app).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        app.edges.pool.sweep();
        let now = meta::now_millis();
        // Only rows silent for longer than an edge may be: not a listing of every node.
        let before = now - timers.inactive_after.as_millis() as i64;
        let nodes = match app.meta.list_silent_edges(before).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "presence sweep skipped");
                continue;
            }
        };
        for n in nodes {
            if n.node_type != NodeType::Edge
                || n.status == NodeStatus::Offline
                || !n.attached_centers.contains(&app.node_id)
            {
                continue;
            }
            let silence = Duration::from_millis((now - n.last_heartbeat).max(0) as u64);
            let status = status_of(PeerStatus::after_silence(silence, &timers));
            if status != n.status {
                tracing::info!(node = %n.node_id, status = status.as_str(), "edge presence changed");
                update(&app, &n.node_id, |row| {
                    // Only if no heartbeat arrived meanwhile.
                    if row.last_heartbeat == n.last_heartbeat {
                        row.status = status;
                    }
                })
                .await;
            }
        }
    }
}

/// Writes the queued heartbeats ([`super::registry::EdgeRegistry::touch`]) in one statement.
async fn flush_heartbeats(app: &App) {
    let ids = app.edges.take_touched();
    if ids.is_empty() {
        return;
    }
    match app.meta.touch_nodes(&ids, meta::now_millis()).await {
        Ok(_) => app.metrics.heartbeats_batched(ids.len()),
        Err(e) => {
            tracing::warn!(edges = ids.len(), error = %e, "could not record edges' heartbeats")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::edge_may_set;

    #[test]
    fn an_edge_sets_challenges_only_for_its_own_name() {
        let own = "_acme-challenge.e1.edges.test";
        assert!(edge_may_set("e1", own, "_acme-challenge.e1.edges.test").is_ok());
        assert!(edge_may_set("e1", own, "_ACME-Challenge.E1.edges.test.").is_ok());
        for other in [
            "_acme-challenge.e2.edges.test",
            "_acme-challenge.edges.test",
            "_acme-challenge.x.e1.edges.test",
            "_acme-challenge.pods.test",
            "_acme-challenge.e1.edges.test.evil.com",
            "",
        ] {
            let e = edge_may_set("e1", own, other).unwrap_err();
            assert!(e.contains("may only set"), "{other}: {e}");
        }
    }
}
