//! Where a pod request goes, decided once per request ([`decide`]) behind a small trait
//! ([`Directory`]: the owner table, the node directory, the tunnels this node holds), so the
//! rules are tested here with fakes and the node only supplies the facts.
//!
//! - The owner table answers; this node → [`Route::Local`]; no such pod → [`Route::Missing`]
//!   (404 without authenticating), except over the mesh, where the sender believed it exists:
//!   then the local handler reads the store ([`Route::Local`]).
//! - A request that came over the mesh (`hops` set) for a pod this node's table gives to
//!   another node makes the table reload that pod once: the sender believed this node owns it,
//!   so one of the two views is stale.
//! - To another owner ([`route_to`]): a center → [`Route::Peer`]; an edge whose tunnel this node
//!   holds → [`Route::Edge`]; an edge attached to another center → [`Route::ViaCenter`]; a
//!   request forwarded [`MAX_HOPS`] times already → [`RouteError::Loop`].

use std::future::Future;

use crate::forward::MAX_HOPS;
use crate::owners::Owner;

/// Where a pod request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node serves it.
    Local,
    /// No such pod.
    Missing,
    /// Another center owns it: over the mesh to `owner`.
    Peer { owner: Owner },
    /// An edge owns it and this center holds its tunnel.
    Edge { owner: Owner },
    /// An edge owns it; `center` holds its tunnel.
    ViaCenter { owner: Owner, center: String },
}

/// What the directory knows of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub is_edge: bool,
    /// For an edge: the centers that hold its tunnel.
    pub attached_centers: Vec<String>,
    /// The node's last heartbeat (ms since the Unix epoch).
    pub last_seen: i64,
}

/// Why a request cannot be routed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The owner cannot be looked up or reached now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The pod's owner is an edge that no center holds a tunnel to now (503 `edge_offline`):
    /// its pods stay its own (the data lives there) until it is back.
    #[error("pod {pod_id} is owned by edge {edge}, which is offline (no tunnel to any center)")]
    EdgeOffline {
        pod_id: String,
        edge: String,
        /// Its last heartbeat (ms since the Unix epoch).
        last_seen: i64,
    },
    /// Forwarded too often: the nodes disagree about the owner (508).
    #[error("the request for pod {pod_id} was forwarded {hops} times without reaching its owner; the nodes disagree about who owns it")]
    Loop { pod_id: String, hops: u8 },
}

/// The facts a decision needs. See the module docs.
pub trait Directory: Send + Sync {
    /// This node's id.
    fn self_id(&self) -> &str;
    /// The pod's owner (from memory; loaded on a miss).
    fn owner(&self, pod_id: &str) -> impl Future<Output = Result<Option<Owner>, String>> + Send;
    /// Drops the cached owner of `pod_id`.
    fn forget(&self, pod_id: &str);
    /// The node `node_id`.
    fn node(&self, node_id: &str) -> impl Future<Output = Result<NodeInfo, String>> + Send;
    /// Whether this node holds the tunnel of edge `node_id`.
    fn holds_tunnel(&self, node_id: &str) -> bool;
}

/// Decides where the request for `pod_id` goes; `hops` is set when it came over the mesh.
pub async fn decide<D: Directory>(
    dir: &D,
    pod_id: &str,
    hops: Option<u8>,
) -> Result<Route, RouteError> {
    let lookup =
        |e: String| RouteError::Unavailable(format!("looking up the owner of pod {pod_id}: {e}"));
    let Some(owner) = dir.owner(pod_id).await.map_err(lookup)? else {
        return Ok(if hops.is_some() {
            Route::Local
        } else {
            Route::Missing
        });
    };
    if owner.node_id == dir.self_id() {
        return Ok(Route::Local);
    }
    let Some(hops) = hops else {
        return route_to(dir, pod_id, owner, 0).await;
    };
    // Sent here by a node that believes this one owns it: reload once before passing it on.
    dir.forget(pod_id);
    match dir.owner(pod_id).await.map_err(lookup)? {
        Some(o) if o.node_id != dir.self_id() => route_to(dir, pod_id, o, hops).await,
        _ => Ok(Route::Local),
    }
}

/// The route to `owner` (another node) for a request forwarded `hops` times already.
pub async fn route_to<D: Directory>(
    dir: &D,
    pod_id: &str,
    owner: Owner,
    hops: u8,
) -> Result<Route, RouteError> {
    if hops >= MAX_HOPS {
        return Err(RouteError::Loop {
            pod_id: pod_id.to_string(),
            hops,
        });
    }
    let node = dir.node(&owner.node_id).await.map_err(|e| {
        RouteError::Unavailable(format!(
            "pod {pod_id} is owned by node {}, which this node ({}) cannot reach: {e}",
            owner.node_id,
            dir.self_id()
        ))
    })?;
    if !node.is_edge {
        return Ok(Route::Peer { owner });
    }
    if dir.holds_tunnel(&owner.node_id) {
        return Ok(Route::Edge { owner });
    }
    match node
        .attached_centers
        .iter()
        .find(|c| c.as_str() != dir.self_id())
    {
        Some(center) => Ok(Route::ViaCenter {
            center: center.clone(),
            owner,
        }),
        None => Err(RouteError::EdgeOffline {
            pod_id: pod_id.to_string(),
            edge: owner.node_id,
            last_seen: node.last_seen,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    /// A fake directory: what the table says (and, after `forget`, what the store says).
    #[derive(Default)]
    struct Fake {
        me: String,
        table: Mutex<HashMap<String, String>>,
        store: HashMap<String, String>,
        nodes: HashMap<String, NodeInfo>,
        tunnels: HashSet<String>,
    }

    impl Directory for Fake {
        fn self_id(&self) -> &str {
            &self.me
        }
        async fn owner(&self, pod_id: &str) -> Result<Option<Owner>, String> {
            if pod_id == "broken" {
                return Err("database down".into());
            }
            let mut t = self.table.lock().unwrap();
            let node = match t.get(pod_id) {
                Some(n) => Some(n.clone()),
                None => self
                    .store
                    .get(pod_id)
                    .inspect(|n| {
                        t.insert(pod_id.to_string(), (*n).clone());
                    })
                    .cloned(),
            };
            Ok(node.map(|node_id| Owner { node_id, epoch: 1 }))
        }
        fn forget(&self, pod_id: &str) {
            self.table.lock().unwrap().remove(pod_id);
        }
        async fn node(&self, node_id: &str) -> Result<NodeInfo, String> {
            self.nodes
                .get(node_id)
                .cloned()
                .ok_or_else(|| format!("node {node_id} unknown"))
        }
        fn holds_tunnel(&self, node_id: &str) -> bool {
            self.tunnels.contains(node_id)
        }
    }

    fn center() -> NodeInfo {
        NodeInfo {
            is_edge: false,
            attached_centers: vec![],
            last_seen: 0,
        }
    }

    fn edge(centers: &[&str]) -> NodeInfo {
        NodeInfo {
            is_edge: true,
            attached_centers: centers.iter().map(|c| c.to_string()).collect(),
            last_seen: 0,
        }
    }

    fn fake() -> Fake {
        let mut f = Fake {
            me: "c1".into(),
            ..Default::default()
        };
        for (pod, node) in [
            ("mine", "c1"),
            ("theirs", "c2"),
            ("near", "e1"),
            ("far", "e2"),
            ("lost", "e3"),
        ] {
            f.store.insert(pod.into(), node.into());
        }
        f.nodes.insert("c1".into(), center());
        f.nodes.insert("c2".into(), center());
        f.nodes.insert("e1".into(), edge(&["c1"]));
        f.nodes.insert("e2".into(), edge(&["c2"]));
        f.nodes.insert("e3".into(), edge(&[]));
        f.tunnels.insert("e1".into());
        f
    }

    fn owner(n: &str) -> Owner {
        Owner {
            node_id: n.into(),
            epoch: 1,
        }
    }

    #[tokio::test]
    async fn every_route() {
        let f = fake();
        assert_eq!(decide(&f, "mine", None).await, Ok(Route::Local));
        assert_eq!(decide(&f, "nope", None).await, Ok(Route::Missing));
        assert_eq!(
            decide(&f, "nope", Some(1)).await,
            Ok(Route::Local),
            "the sender believed it exists"
        );
        assert_eq!(
            decide(&f, "theirs", None).await,
            Ok(Route::Peer { owner: owner("c2") })
        );
        assert_eq!(
            decide(&f, "near", None).await,
            Ok(Route::Edge { owner: owner("e1") })
        );
        assert_eq!(
            decide(&f, "far", None).await,
            Ok(Route::ViaCenter {
                owner: owner("e2"),
                center: "c2".into()
            })
        );
        assert!(
            matches!(decide(&f, "lost", None).await, Err(RouteError::EdgeOffline { edge, .. }) if edge == "e3")
        );
        assert!(
            matches!(decide(&f, "broken", None).await, Err(RouteError::Unavailable(m)) if m.contains("database down"))
        );
    }

    #[tokio::test]
    async fn a_stale_table_is_reloaded_once_over_the_mesh_and_loops_end() {
        let mut f = fake();
        // The table says c2; the store says this node (c1) owns it now.
        f.table.lock().unwrap().insert("moved".into(), "c2".into());
        f.store.insert("moved".into(), "c1".into());
        assert_eq!(
            decide(&f, "moved", None).await,
            Ok(Route::Peer { owner: owner("c2") }),
            "from a client: the table is believed"
        );
        assert_eq!(
            decide(&f, "moved", Some(1)).await,
            Ok(Route::Local),
            "reloaded"
        );
        // Still another node's after the reload: passed on, until the hop limit.
        assert_eq!(
            decide(&f, "theirs", Some(1)).await,
            Ok(Route::Peer { owner: owner("c2") })
        );
        assert_eq!(
            decide(&f, "theirs", Some(MAX_HOPS)).await,
            Err(RouteError::Loop {
                pod_id: "theirs".into(),
                hops: MAX_HOPS
            })
        );
    }
}
