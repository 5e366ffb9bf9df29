//! `/api/v1/node` (admin): this node's tunnel lists, changed without a restart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /api/v1/node/services/{name}` (an edge).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutService {
    /// Where the service listens on the edge: `IP:PORT` (IPv6 `[::1]:3000` is accepted too;
    /// the document describes IPv4).
    #[schema(value_type = String, example = "127.0.0.1:3000", pattern = "^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$")]
    pub local: std::net::SocketAddr,
    /// `http` (default), `tls` (passthrough by SNI) or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(http|tls|tcp)$")]
    pub kind: Option<String>,
    /// Send a PROXY protocol v2 header first (tcp).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// `PUT /api/v1/node/forwards/{listen}` (a center).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutForward {
    /// The edge.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub node: String,
    /// The edge's service.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub service: String,
}

/// What a reload or an API change did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// What changed, one line per list (`tunnel.services: +api −old`).
    pub applied: Vec<String>,
    /// Settings that differ from the running ones and take a restart.
    pub restart_needed: Vec<String>,
    /// Whether the change is in the configuration file (a reload) or lasts until the next
    /// reload or restart (an API change).
    pub persistent: bool,
}

/// What a reload or a change through the API did, with a note when it is not in the file.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TunnelChange {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// For a change that lasts until the next reload or restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /api/v1/node/tunnel`: the lists running now (`null` where the node has none).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Tunnel {
    /// An edge's services.
    pub services: Option<Vec<ServiceView>>,
    /// A center's forwards.
    pub forwards: Option<Vec<ForwardView>>,
}

/// A service an edge publishes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub name: String,
    pub local: String,
    pub kind: String,
    pub proxy_protocol: bool,
}

/// A TCP port a center forwards to an edge's service.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ForwardView {
    pub listen: String,
    pub node: String,
    pub service: String,
}
