//! Creating, placing, stopping and deleting sandboxes (the cluster side; the node side is
//! [`super::runner`]).
//!
//! **Placement**: candidates are the online nodes whose report (heartbeat capacity) offers
//! sandbox slots — never more than the cluster grants the node (`crate::node_policy`: an edge
//! offers none unless an admin granted slots; a revoked node none at all) — optionally within
//! a region or one named node. Their use is counted from the
//! store (live sandboxes placed there), so placements made a moment ago count at once. The
//! node with the most free slots wins (then most free memory, then CPU; ties at random). A
//! node that refuses (full, unknown image, unreachable) is skipped and the next one tried, up
//! to [`MAX_TRIES`].

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use xpod_storage::meta::{now_millis, NodeRecord, NodeStatus, NodeType};

use super::model::{self, Sandbox, Status};
use super::runner::{Report, StartRequest};
use crate::app::App;
use crate::reply::error::ApiError;

/// Nodes tried for one create.
pub const MAX_TRIES: usize = 3;
/// A center whose heartbeat is older than this is not placed on.
const CENTER_STALE_MS: i64 = 60_000;

/// A node's sandbox report: a center's own row (`capacity.sandboxes`) or an edge's heartbeat
/// (`capacity.capacity.sandboxes`, as its center recorded it).
pub fn report_of(n: &NodeRecord) -> Option<Report> {
    let v = match n.node_type {
        NodeType::Edge => &n.capacity["capacity"]["sandboxes"],
        _ => &n.capacity["sandboxes"],
    };
    serde_json::from_value(v.clone()).ok()
}

/// Whether `n` can take sandboxes now.
fn online(n: &NodeRecord, now: i64) -> bool {
    match n.node_type {
        NodeType::Edge => n.status == NodeStatus::Online && !n.attached_centers.is_empty(),
        _ => n.status == NodeStatus::Online && now - n.last_heartbeat < CENTER_STALE_MS,
    }
}

/// A candidate and its free capacity (from the store's live sandboxes).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub region: String,
    pub free_slots: i64,
    pub free_cpu: i64,
    pub free_memory_mb: i64,
}

/// The nodes that could run `sb`, best first.
pub async fn candidates(
    app: &App,
    sb: &Sandbox,
    region: Option<&str>,
    node: Option<&str>,
) -> Result<Vec<Candidate>, ApiError> {
    let now = now_millis();
    let nodes = app.meta.list_nodes().await?;
    let live = model::list(app.meta.as_ref(), None).await?;
    // Grants from the store itself, so a fresh grant (or its removal) counts at once.
    let mut policies = std::collections::HashMap::new();
    for d in app.meta.list_docs(crate::node_policy::KIND, None).await? {
        if let Ok(p) = serde_json::from_value::<crate::node_policy::Policy>(d.doc) {
            policies.insert(d.id, p);
        }
    }
    let mut out = Vec::new();
    for n in nodes {
        if region.is_some_and(|r| r != n.region) || node.is_some_and(|id| id != n.node_id) {
            continue;
        }
        let Some(mut r) = report_of(&n) else { continue };
        // A node's report is its own claim: placement never goes beyond what the cluster
        // grants it (an edge: nothing unless an admin granted slots).
        let policy = policies.remove(&n.node_id).unwrap_or_default();
        if policy.revoked_at.is_some() {
            continue;
        }
        r.slots = policy.slots(n.node_type, r.slots);
        if r.slots == 0 || !online(&n, now) {
            continue;
        }
        let here: Vec<&Sandbox> = live
            .iter()
            .filter(|s| s.node == n.node_id && s.status.is_live() && s.id != sb.id)
            .collect();
        let c = Candidate {
            node: n.node_id.clone(),
            region: n.region.clone(),
            free_slots: r.slots as i64 - here.len() as i64,
            free_cpu: r.cpu as i64 - here.iter().map(|s| s.resources.cpu as i64).sum::<i64>(),
            free_memory_mb: r.memory_mb as i64
                - here
                    .iter()
                    .map(|s| s.resources.memory_mb as i64)
                    .sum::<i64>(),
        };
        if c.free_slots >= 1
            && c.free_cpu >= sb.resources.cpu as i64
            && c.free_memory_mb >= sb.resources.memory_mb as i64
        {
            out.push(c);
        }
    }
    // Ties at random, then the most free capacity first.
    out.sort_by_key(|_| rand::random::<u32>());
    out.sort_by(|a, b| {
        (b.free_slots, b.free_memory_mb, b.free_cpu).cmp(&(
            a.free_slots,
            a.free_memory_mb,
            a.free_cpu,
        ))
    });
    Ok(out)
}

/// A sandbox event (`sandbox.created|started|stopped|deleted|failed`) to its owner's webhooks.
pub async fn emit(app: &Arc<App>, sb: &Sandbox, event: &str) {
    tracing::info!(sandbox = %sb.id, owner = %sb.owner, event, status = sb.status.as_str(), "sandbox event");
    let view = serde_json::to_value(sb.view()).unwrap_or_default();
    crate::webhooks::emit(app, &sb.owner, event, view, None).await;
}

/// Places and starts `sb` (already stored as `pending`); returns it as stored afterwards
/// (`running`, or `failed` with the reason).
pub async fn place_and_start(
    app: &Arc<App>,
    mut sb: Sandbox,
    region: Option<&str>,
    node: Option<&str>,
) -> Result<Sandbox, ApiError> {
    let start = StartRequest {
        image: sb.image.clone(),
        env: sb.env.clone(),
        resources: sb.resources,
        timeout: sb.timeout,
        network: sb.network,
    };
    let payload = Bytes::from(serde_json::to_vec(&start).unwrap_or_default());
    let mut why = Vec::new();
    let cands = candidates(app, &sb, region, node).await?;
    if cands.is_empty() {
        why.push(match (region, node) {
            (_, Some(n)) => {
                format!("node {n} is not online with a free sandbox slot for this size")
            }
            (Some(r), None) => {
                format!("no online node in region {r} has a free slot for this size")
            }
            (None, None) => "no online node has a free sandbox slot for this size (nodes offer slots with [sandbox] slots or XPOD_SANDBOX_SLOTS)".to_string(),
        });
    }
    for c in cands.into_iter().take(MAX_TRIES) {
        // Record where it goes before starting it, so capacity counts and requests route.
        let target = c.node.clone();
        if let Some(s) = model::update(app.meta.as_ref(), &sb.id, |s| {
            s.node = target.clone();
            true
        })
        .await?
        {
            sb = s;
        }
        let path = format!("/runner/{}/start", sb.id);
        let result = match super::client::call(
            app,
            &c.node,
            0,
            Method::POST,
            &path,
            payload.clone(),
        )
        .await
        {
            Ok(resp) => super::client::json_of(resp).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let now = now_millis();
                let stored = model::update(app.meta.as_ref(), &sb.id, |s| {
                    if s.status != Status::Pending {
                        return false; // deleted or changed meanwhile
                    }
                    s.status = Status::Running;
                    s.started_at = Some(now);
                    s.error = None;
                    true
                })
                .await?;
                let Some(stored) = stored else {
                    // Deleted while it started: stop it again.
                    let path = format!("/runner/{}/stop?remove=1", sb.id);
                    let _ = super::client::call(app, &c.node, 0, Method::POST, &path, Bytes::new())
                        .await;
                    return Err(ApiError::not_found(format!(
                        "sandbox {} was deleted while it started",
                        sb.id
                    )));
                };
                tracing::info!(sandbox = %sb.id, node = %c.node, "sandbox running");
                emit(app, &stored, "sandbox.started").await;
                return Ok(stored);
            }
            Err(e) => {
                tracing::info!(sandbox = %sb.id, node = %c.node, error = %e.message, "node refused the sandbox; trying the next");
                why.push(format!("{}: {}", c.node, e.message));
            }
        }
    }
    let reason = why.join("; ");
    let stored = model::update(app.meta.as_ref(), &sb.id, |s| {
        s.status = Status::Failed;
        s.error = Some(reason.clone());
        s.stopped_at = Some(now_millis());
        true
    })
    .await?
    .unwrap_or(sb);
    emit(app, &stored, "sandbox.failed").await;
    Ok(stored)
}

/// Asks the sandbox's node to stop it (best effort: a node that is gone has stopped it).
pub async fn stop_on_node(app: &Arc<App>, sb: &Sandbox, remove: bool) {
    let path = format!(
        "/runner/{}/stop{}",
        sb.id,
        if remove { "?remove=1" } else { "" }
    );
    if let Err(e) = super::client::call(app, &sb.node, 0, Method::POST, &path, Bytes::new()).await {
        tracing::info!(sandbox = %sb.id, node = %sb.node, error = %e.message, "could not reach the sandbox's node to stop it");
    }
}

/// Marks a sandbox stopped (if it is live) and tells its owner.
pub async fn mark_stopped(app: &Arc<App>, id: &str, reason: &str) -> Result<(), ApiError> {
    let now = now_millis();
    let mut changed = false;
    let stored = model::update(app.meta.as_ref(), id, |s| {
        if !s.status.is_live() {
            return false;
        }
        s.status = Status::Stopped;
        s.stopped_at = Some(now);
        s.error = Some(reason.to_string());
        changed = true;
        true
    })
    .await?;
    if let (true, Some(sb)) = (changed, stored) {
        tracing::info!(sandbox = id, reason, "sandbox stopped");
        emit(app, &sb, "sandbox.stopped").await;
    }
    Ok(())
}

/// Checks the owner's quota and stores `sb` as one step: creates of one owner are serialized
/// by the lease `quota:<owner>` (held for the check and the insert, at most 10 s), so two
/// racing creates on different centers cannot both pass the last free place.
pub async fn quota_then_create(app: &App, owner: &str, sb: &Sandbox) -> Result<(), ApiError> {
    let lease = format!("quota:{owner}");
    let holder = format!("{}:{}", app.node_id, sb.id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = now_millis();
        if app
            .meta
            .try_lease(&lease, &holder, now, now + 10_000)
            .await?
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(ApiError::unavailable(format!(
                "another create for owner {owner} is in progress; try again"
            ))
            .with_header(http::header::RETRY_AFTER, "1"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let result = async {
        check_quota(app, owner, sb).await?;
        if !model::create(app.meta.as_ref(), sb).await? {
            return Err(ApiError::conflict("sandbox id clash; try again"));
        }
        Ok(())
    }
    .await;
    if let Err(e) = app.meta.release_lease(&lease, &holder).await {
        tracing::debug!(error = %e, "quota lease not released (it expires)");
    }
    result
}

/// The per-owner quota check for one more sandbox of `want`'s size.
pub async fn check_quota(app: &App, owner: &str, want: &Sandbox) -> Result<(), ApiError> {
    let q = &app.config.sandbox;
    let live: Vec<Sandbox> = model::list(app.meta.as_ref(), Some(owner))
        .await?
        .into_iter()
        .filter(|s| s.status.is_live())
        .collect();
    let count = live.len() as u64;
    let cpu: u64 = live.iter().map(|s| s.resources.cpu as u64).sum();
    let mem: u64 = live.iter().map(|s| s.resources.memory_mb).sum();
    let over = |limit: &str, used: u64, asked: u64, max: u64| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "quota {limit} of owner {owner} exceeded: {used} in use + {asked} asked > {max}; stop or delete a sandbox first"
            ),
        )
        .with_details(json!({"limit": limit, "used": used, "asked": asked, "max": max}))
    };
    if count + 1 > q.quota_sandboxes as u64 {
        return Err(over("sandboxes", count, 1, q.quota_sandboxes as u64));
    }
    if cpu + want.resources.cpu as u64 > q.quota_cpu as u64 {
        return Err(over(
            "cpu",
            cpu,
            want.resources.cpu as u64,
            q.quota_cpu as u64,
        ));
    }
    if mem + want.resources.memory_mb > q.quota_memory_mb {
        return Err(over(
            "memoryMb",
            mem,
            want.resources.memory_mb,
            q.quota_memory_mb,
        ));
    }
    Ok(())
}
