//! `/.cluster/nodes/{nodeId}` writes (admin): `PATCH` sets what the cluster grants the node
//! (`sandboxSlots`, `podPrefixes`, `bandwidthBytesPerSec`), `POST …/revoke` revokes it (`crate::node_policy`). Both
//! are compare-and-set on the node's policy document and audited.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use xpod_storage::meta;

use super::{read_json, Ctx};
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetPolicy {
    /// Sandbox slots placement may use on the node (`null`: no grant).
    #[serde(default, deserialize_with = "some")]
    sandbox_slots: Option<Option<u32>>,
    /// Pod-id prefixes an edge may claim by reporting them (replaces the list).
    pod_prefixes: Option<Vec<String>>,
    /// Bytes per second the centers relay to and from the edge, each way (`null`: unlimited).
    #[serde(default, deserialize_with = "some")]
    bandwidth_bytes_per_sec: Option<Option<u64>>,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`).
fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The lowest limit accepted: below it a tunnel's own traffic would starve.
const MIN_BANDWIDTH: u64 = 1024;

/// Writes `f`'s change to a node's policy (compare-and-set, retried); the node must exist.
async fn change_policy(
    ctx: &Ctx,
    node_id: &str,
    f: impl Fn(&mut crate::node_policy::Policy),
) -> Result<crate::node_policy::Policy, ApiError> {
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

pub(super) async fn set_policy(
    ctx: &Ctx,
    node_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let input: SetPolicy = read_json(req).await?;
    crate::node_policy::validate_grant(
        input.sandbox_slots.flatten(),
        input.pod_prefixes.as_deref().unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    if let Some(Some(rate)) = input.bandwidth_bytes_per_sec {
        if rate < MIN_BANDWIDTH {
            return Err(ApiError::bad_request(format!(
                "bandwidthBytesPerSec {rate}: at least {MIN_BANDWIDTH} (or null for no limit)"
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
    })
    .await?;
    ctx.audit(
        "node.policy",
        &format!("node:{node_id}"),
        serde_json::to_value(&policy).unwrap_or_default(),
    )
    .await;
    Ok(body::json(
        StatusCode::OK,
        &serde_json::to_value(&policy).unwrap_or_default(),
    ))
}

/// Revokes a node: every center refuses it from now on and closes its live connections.
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
    Ok(body::json(
        StatusCode::OK,
        &serde_json::to_value(&policy).unwrap_or_default(),
    ))
}
