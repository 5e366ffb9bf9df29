//! `/.cluster` (admin): pods, nodes, join tokens, DNS and certificates.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xpod_storage::meta::{AccessMode, JoinTokenRecord, Millis, NodeRecord, PodRecord};

use crate::node_policy::Policy;

/// `POST /.cluster/pods`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePod {
    /// A DNS label, not `api`, `health`, `readiness`, `metrics` or `static`.
    #[schema(value_type = Label)]
    pub pod_id: String,
    /// Default `private`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// The account that owns it (default: the caller's key's owner): an owner name, or the
    /// owner's WebID (`http(s)://…`, whose agent then has every mode by the default ACL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^([A-Za-z0-9._-]{1,64}|https?://[^\s\x00-\x1f\x7f-\x9f]{1,2040})$")]
    pub account_id: Option<String>,
    /// The node that owns it (default: the node answering); it must be in the cluster. An edge
    /// keeps a pod assigned to it when it reports hosting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Label>)]
    pub node_id: Option<String>,
}

/// A pod or node id: a DNS label (1–63 of `a-z 0-9 -`, not starting or ending with `-`).
#[derive(ToSchema)]
#[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
pub struct Label(pub String);

/// `GET /.cluster/pods`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PodList {
    pub pods: Vec<PodRecord>,
}

/// `POST /.cluster/pods/{podId}/migrate`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigratePod {
    #[schema(value_type = Label)]
    pub target_node: String,
}

/// `GET /.cluster/routes/{podId}`: this node's owner-table entry for a pod.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    pub pod_id: String,
    /// The node answering.
    pub node: String,
    /// Whether the owner table holds the pod now.
    pub cached: bool,
    pub owner: Option<String>,
    pub epoch: Option<i64>,
    /// Mesh peers with a live connection.
    pub mesh_peers: usize,
}

/// `GET /.cluster/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeRecord>,
}

/// `GET /.cluster/nodes/{nodeId}`: the node and what the cluster grants it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: NodeRecord,
    pub policy: Policy,
}

/// `PATCH /.cluster/nodes/{nodeId}`: only the fields present change; `null` removes a grant.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPolicy {
    /// Sandbox slots placement may use on the node (`null`: no grant).
    #[serde(
        default,
        deserialize_with = "super::int::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u32>, maximum = 4096)]
    pub sandbox_slots: Option<Option<u32>>,
    /// Pod-id prefixes an edge may claim by reporting them (replaces the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<PodPrefix>>)]
    pub pod_prefixes: Option<Vec<String>>,
    /// Bytes per second the centers relay to and from the edge, each way, at least 1024
    /// (`null`: unlimited).
    #[serde(
        default,
        deserialize_with = "super::int::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>, minimum = 1024, maximum = 1099511627776_u64)]
    pub bandwidth_bytes_per_sec: Option<Option<u64>>,
    /// Accounts whose pods may be moved onto the edge (replaces the list; `*`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<AcceptedAccount>>, max_items = 100)]
    pub accept_pods: Option<Vec<String>>,
}

/// A pod-id prefix a node may claim: 1–50 of `a-z 0-9 -`, not starting with `-`.
#[derive(ToSchema)]
#[schema(pattern = "^[a-z0-9][a-z0-9-]{0,49}$")]
pub struct PodPrefix(pub String);

/// An account whose pods an edge accepts: `*` (any), an owner name, or a WebID.
#[derive(ToSchema)]
#[schema(pattern = r"^(\*|[A-Za-z0-9._-]{1,64}|https?://[^\s\x00-\x1f\x7f-\x9f]{1,2040})$")]
pub struct AcceptedAccount(pub String);

/// `POST /.cluster/tokens`: a join token for an edge.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    /// At most 200 printable characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,200}$")]
    pub description: Option<String>,
    /// Default 86400 (a day).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::int::opt"
    )]
    #[schema(minimum = 60, maximum = 2592000)]
    pub ttl_seconds: Option<i64>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_use: Option<bool>,
    /// Sandbox slots granted to the node that joins with this token.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::int::opt"
    )]
    #[schema(maximum = 4096)]
    pub sandbox_slots: Option<u32>,
    /// Pod-id prefixes the joining node may claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<PodPrefix>)]
    pub pod_prefixes: Vec<String>,
    /// Accounts whose pods may be moved onto the joining edge (`*`: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<AcceptedAccount>, max_items = 100)]
    pub accept_pods: Vec<String>,
}

/// `GET /.cluster/tokens`: every join token, never a secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<JoinTokenRecord>,
}

/// A new join token: its record, its grant and, this once, the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: JoinTokenRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Policy>,
    /// `xpt_<id>.<secret>.<CA fingerprint>`: shown only here.
    pub token: String,
    /// SHA-256 of the cluster CA's certificate (hex), as the token carries it.
    pub ca_fingerprint: String,
    pub warning: String,
}

/// `POST` and `DELETE /.cluster/dns/txt`: an `_acme-challenge` TXT record.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TxtRecord {
    /// `_acme-challenge.<DNS name>`: labels of 1–63 of `A-Z a-z 0-9 _ -`.
    #[schema(
        pattern = r"^_acme-challenge(\.[A-Za-z0-9_-]{1,63})+\.?$",
        max_length = 253
    )]
    pub name: String,
    /// 1–255 printable ASCII characters.
    #[schema(pattern = "^[\\x20-\\x7e]{1,255}$")]
    pub value: String,
    /// Default 600 (only when adding).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::int::opt"
    )]
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_seconds: Option<i64>,
}

/// `GET /.cluster/dns/txt/{name}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TxtValues {
    pub name: String,
    pub values: Vec<String>,
}

/// `GET /.cluster/dns/records`: the zone as this center serves it now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DnsRecords {
    pub zone: Option<String>,
    pub records: Vec<DnsRecord>,
}

/// One record of the zone.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    pub name: String,
    /// `SOA`, `NS`, `A`, `AAAA`, `TXT`…
    #[serde(rename = "type")]
    pub kind: String,
    pub ttl: u32,
    /// The record's data in zone-file form.
    pub data: String,
}

/// `GET /.cluster/certs`: the stored certificates (never keys), what this node serves and its
/// ACME manager's state.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Certs {
    pub certificates: Vec<StoredCert>,
    pub node: String,
    /// The ACME directory URL, if this node has one.
    pub acme: Option<String>,
    pub serving: Option<ServedCert>,
    pub manager: crate::certs::tls::Status,
    /// Certificates this node obtained since it started.
    pub issued_here: u64,
}

/// A certificate in the store.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredCert {
    /// `center`, or `edge:<node>`.
    pub id: String,
    pub names: Vec<String>,
    pub not_before: Millis,
    pub not_after: Millis,
    /// When the centers renew it.
    pub renew_at: Millis,
    pub issued_by: String,
    pub issued_at: Millis,
}

/// The certificate this node serves.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedCert {
    pub names: Vec<String>,
    /// `acme` or `self-signed`.
    pub source: String,
    pub serial: String,
    pub not_before: Millis,
    pub not_after: Millis,
}

/// `POST /.cluster/certs/renew`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewRequested {
    pub requested_at: Millis,
    pub certificate: String,
}

/// Checks a pod's `accountId` as the document describes it: an owner name (1–64 of
/// `A-Z a-z 0-9 . _ -`) or a WebID (`http://` or `https://` and 1–2040 characters without
/// spaces or control characters).
pub fn check_account(account: &str) -> Result<(), String> {
    xpod_config::validate_account(account).map_err(|e| format!("accountId: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_account_is_an_owner_name_or_a_webid() {
        use super::check_account as c;
        assert!(c("alice").is_ok());
        assert!(c("http://localhost:3000/alice/profile/card#me").is_ok());
        assert!(c("https://id.example/me").is_ok());
        for bad in [
            "",
            "a b",
            "ftp://x/y",
            "https://",
            "https://a b",
            "http://x\n",
            "ä",
        ] {
            let e = c(bad).unwrap_err();
            assert!(e.contains("accountId"), "{bad:?}: {e}");
        }
    }
}
