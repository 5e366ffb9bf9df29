//! Where a pod request goes: served here, or forwarded to the owner (ARCHITECTURE §5).
//!
//! The owner table answers from memory. A request that came over the mesh ([`MeshHop`] in its
//! extensions — set only by [`super::serve`], so a client cannot forge it) for a pod this
//! node's table says it does not own makes the table reload that pod once from the metadata
//! store before forwarding on: the sender believed this node was the owner, so one of the two
//! views is stale. The hop count bounds any remaining loop (508).
//!
//! The table holds the whole pod row, so the handler of a request served here reads it from
//! memory too ([`pod_row`]): a pod GET costs no metadata round trip for the pod. Writes are
//! fenced by the epoch in their own transaction, so a stale row cannot misplace one.

use http::Request;
use hyper::body::Incoming;
use xpod_routing::Owner;

use crate::app::App;
use crate::http::error::ApiError;

/// Set on a request that arrived over the mesh.
#[derive(Clone, Debug)]
pub struct MeshHop {
    /// The pod the stream was opened for; the request inside must be for it.
    pub pod_id: String,
    /// How many nodes forwarded it already.
    pub hops: u8,
    /// The epoch the sender believed.
    pub epoch: u64,
    /// The node that sent it (from its certificate; `center` on an edge's tunnel).
    pub from: String,
}

/// The decision for one pod request.
#[derive(Debug)]
pub enum Decision {
    /// This node owns it.
    Local,
    /// No such pod (from the owner table, which remembers misses briefly): 404 without
    /// authenticating or reading the store again.
    Missing,
    /// Forward to this owner.
    Forward(Owner),
}

/// Decides where the request for `pod_id` goes.
pub async fn decide(
    app: &App,
    pod_id: &str,
    req: &Request<Incoming>,
) -> Result<Decision, ApiError> {
    let owner = lookup(app, pod_id).await?;
    let Some(owner) = owner else {
        // Over the mesh the sender believed it exists: let the local handler read the store.
        if req.extensions().get::<MeshHop>().is_some() {
            return Ok(Decision::Local);
        }
        return Ok(Decision::Missing);
    };
    if owner.node_id == app.node_id {
        return Ok(Decision::Local);
    }
    if req.extensions().get::<MeshHop>().is_none() {
        return Ok(Decision::Forward(owner));
    }
    // Sent here by a node that thinks we own it: reload once before passing it on.
    app.owners.invalidate(pod_id);
    match lookup(app, pod_id).await? {
        Some(o) if o.node_id != app.node_id => Ok(Decision::Forward(o)),
        _ => Ok(Decision::Local),
    }
}

async fn lookup(app: &App, pod_id: &str) -> Result<Option<Owner>, ApiError> {
    if let Some(node) = test_override(pod_id) {
        return Ok(Some(Owner {
            node_id: node,
            epoch: 0,
        }));
    }
    Ok(pod_row(app, pod_id).await?.map(|p| Owner {
        node_id: p.node_id.clone(),
        epoch: p.epoch,
    }))
}

/// The pod's row from the owner table (memory; loaded once on a miss).
pub async fn pod_row(
    app: &App,
    pod_id: &str,
) -> Result<Option<std::sync::Arc<xpod_storage::meta::PodRecord>>, ApiError> {
    app.owners
        .owner(pod_id)
        .await
        .map_err(|e| ApiError::unavailable(format!("looking up the owner of pod {pod_id}: {e}")))
}

/// `XPOD_TEST_OWNER_OVERRIDE=pod=node[,pod=node…]`: this node believes `node` owns `pod`
/// whatever the store says. For tests of loop protection only (two nodes that each believe the
/// other owns a pod); never set in production.
fn test_override(pod_id: &str) -> Option<String> {
    let v = std::env::var("XPOD_TEST_OWNER_OVERRIDE").ok()?;
    v.split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(pod, _)| *pod == pod_id)
        .map(|(_, node)| node.to_string())
}
