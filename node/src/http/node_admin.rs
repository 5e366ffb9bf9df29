//! `/.cluster/nodes/{nodeId}` writes (admin): `PATCH` sets what the cluster grants the node
//! (`sandboxSlots`, `podPrefixes`, `bandwidthBytesPerSec`), `POST …/revoke` revokes it (`crate::node_policy`). Both
//! are compare-and-set on the node's policy document and audited.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta;

use super::{read_json, Ctx};
use crate::api_types::cluster::SetPolicy;
use crate::api_types::ErrorBody;
use crate::node_policy::Policy;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// The lowest limit accepted: below it a tunnel's own traffic would starve.
const MIN_BANDWIDTH: u64 = 1024;
/// The highest limit accepted (1 TiB/s: no link is faster; above it, say `null`).
const MAX_BANDWIDTH: u64 = 1 << 40;

/// Writes `f`'s change to a node's policy (compare-and-set, retried); the node must exist.
async fn change_policy(
    ctx: &Ctx,
    node_id: &str,
    f: impl Fn(&mut Policy),
) -> Result<Policy, ApiError> {
    use crate::node_policy::{load, KIND};
    if ctx.app.meta.get_node(node_id).await?.is_none() {
        return Err(ApiError::not_found(format!("node {node_id} not found")));
    }
    for _ in 0..5 {
        let (mut policy, version) = load(ctx.app.meta.as_ref(), node_id)
            .await
            .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
        f(&mut policy);
        let doc = meta::DocRecord {
            kind: KIND.into(),
            id: node_id.into(),
            owner: node_id.into(),
            version,
            updated_at: 0,
            doc: serde_json::to_value(&policy).unwrap_or_default(),
        };
        if ctx
            .app
            .meta
            .put_doc(&doc, version, meta::now_millis())
            .await?
        {
            return Ok(policy);
        }
    }
    Err(ApiError::conflict(format!(
        "the policy of node {node_id} kept changing; retry"
    )))
}

/// Sets what the cluster grants a node: `sandboxSlots` (caps what it reports; an edge offers
/// none without a grant), `podPrefixes` (pod ids an edge may claim by reporting them),
/// `bandwidthBytesPerSec` (what the centers relay to and from an edge, each way), `acceptPods`
/// (accounts whose pods may be moved onto an edge).
#[utoipa::path(patch, path = "/.cluster/nodes/{nodeId}", operation_id = "setNodePolicy", tag = "cluster",
    params(("nodeId" = String, Path)),
    request_body = SetPolicy,
    responses(
        (status = 200, description = "The node's policy", body = Policy),
        (status = 404, description = "No such node", body = ErrorBody),
    ))]
pub(super) async fn set_policy(
    ctx: &Ctx,
    node_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let input: SetPolicy = read_json(req).await?;
    crate::node_policy::validate_grant(
        input.sandbox_slots.flatten(),
        input.pod_prefixes.as_deref().unwrap_or_default(),
        input.accept_pods.as_deref().unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    if let Some(Some(rate)) = input.bandwidth_bytes_per_sec {
        if !(MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(&rate) {
            return Err(ApiError::bad_request(format!(
                "bandwidthBytesPerSec {rate}: at least {MIN_BANDWIDTH} and at most {MAX_BANDWIDTH} (or null for no limit)"
            )));
        }
    }
    let policy = change_policy(ctx, node_id, |p| {
        if let Some(slots) = input.sandbox_slots {
            p.sandbox_slots = slots;
        }
        if let Some(rate) = input.bandwidth_bytes_per_sec {
            p.bandwidth_bytes_per_sec = rate;
        }
        if let Some(prefixes) = &input.pod_prefixes {
            p.pod_prefixes = prefixes.clone();
        }
        if let Some(accounts) = &input.accept_pods {
            p.accept_pods = accounts.clone();
        }
    })
    .await?;
    ctx.audit(
        "node.policy",
        &format!("node:{node_id}"),
        serde_json::to_value(&policy).unwrap_or_default(),
    )
    .await;
    Ok(body::json(StatusCode::OK, &policy))
}

/// Revokes a node: every center refuses its certificate from the next handshake and closes
/// its live connections; its id cannot join again.
#[utoipa::path(post, path = "/.cluster/nodes/{nodeId}/revoke", operation_id = "revokeNode", tag = "cluster",
    params(("nodeId" = String, Path)),
    responses(
        (status = 200, description = "The node's policy, with revokedAt", body = Policy),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node answering cannot revoke itself", body = ErrorBody),
    ))]
pub(super) async fn revoke_node(ctx: &Ctx, node_id: &str) -> Result<Response<Body>, ApiError> {
    if node_id == ctx.app.node_id {
        return Err(ApiError::conflict(format!(
            "node {node_id} is the node answering this request; revoke it through another center"
        )));
    }
    let actor = ctx.principal.actor();
    let now = meta::now_millis();
    let policy = change_policy(ctx, node_id, |p| {
        if p.revoked_at.is_none() {
            p.revoked_at = Some(now);
            p.revoked_by = Some(actor.clone());
        }
    })
    .await?;
    // This center closes its own connections to it at once; the others within their refresh.
    if let Some(conn) = ctx.app.edges.get(node_id) {
        conn.close(crate::node_policy::REVOKED_CODE.into(), b"node revoked");
    }
    ctx.app.mesh.close_peer(node_id, b"node revoked");
    let _ = ctx.app.policies.refresh(ctx.app.meta.as_ref()).await;
    ctx.audit("node.revoke", &format!("node:{node_id}"), json!({}))
        .await;
    tracing::warn!(node = node_id, "node revoked");
    Ok(body::json(StatusCode::OK, &policy))
}
