//! Where a pod request goes: served here, or forwarded to the owner (ARCHITECTURE §5). The
//! rules are `xpod_routing::decide` (tested there with fakes); this module supplies this node's
//! facts ([`AppDirectory`]); the hop of a request that came over the mesh is a
//! [`xpod_routing::forward::MeshHop`] in its extensions, set only by `crate::front::streams`, so a
//! client cannot forge it.
//!
//! The table holds the whole pod row, so the handler of a request served here reads it from
//! memory too ([`pod_row`]): a pod GET costs no metadata round trip for the pod. Writes are
//! fenced by the epoch in their own transaction, so a stale row cannot misplace one.

use http::Request;
use hyper::body::Incoming;
use xpod_routing::decide::{Directory, NodeInfo, Route};
use xpod_routing::forward::MeshHop;
use xpod_routing::Owner;
use xpod_storage::meta::NodeType;

use crate::app::App;
use crate::reply::error::ApiError;

/// The facts of this node for [`xpod_routing::decide`]: its owner table (with the test
/// override), the node directory of the mesh, the tunnels it holds.
pub struct AppDirectory<'a>(pub &'a App);

impl Directory for AppDirectory<'_> {
    fn self_id(&self) -> &str {
        &self.0.node_id
    }

    async fn owner(&self, pod_id: &str) -> Result<Option<Owner>, String> {
        if let Some(node) = test_override(pod_id) {
            return Ok(Some(Owner {
                node_id: node,
                epoch: 0,
            }));
        }
        Ok(self.0.owners.owner(pod_id).await?.map(|p| Owner {
            node_id: p.node_id.clone(),
            epoch: p.epoch,
        }))
    }

    fn forget(&self, pod_id: &str) {
        self.0.owners.invalidate(pod_id);
    }

    async fn node(&self, node_id: &str) -> Result<NodeInfo, String> {
        let n = self.0.mesh.node(self.0.meta.as_ref(), node_id).await?;
        Ok(NodeInfo {
            is_edge: n.node_type == NodeType::Edge,
            attached_centers: n.attached_centers,
            last_seen: n.last_heartbeat,
        })
    }

    fn holds_tunnel(&self, node_id: &str) -> bool {
        self.0.edges.get(node_id).is_some()
    }
}

/// Decides where the request for `pod_id` goes (once per request; see
/// [`xpod_routing::decide`]).
pub async fn decide(app: &App, pod_id: &str, req: &Request<Incoming>) -> Result<Route, ApiError> {
    let hops = req.extensions().get::<MeshHop>().map(|h| h.hops);
    Ok(xpod_routing::decide::decide(&AppDirectory(app), pod_id, hops).await?)
}

/// The route to `owner`, which the handler learnt is the owner after all (a stale table).
pub async fn route_to(
    app: &App,
    pod_id: &str,
    owner: Owner,
    req: &Request<Incoming>,
) -> Result<Route, ApiError> {
    let hops = req.extensions().get::<MeshHop>().map_or(0, |h| h.hops);
    Ok(xpod_routing::decide::route_to(&AppDirectory(app), pod_id, owner, hops).await?)
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
