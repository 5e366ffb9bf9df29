//! Metadata: one trait ([`MetaStore`], the sum of per-domain parts: [`PodStore`],
//! [`NodeStore`], [`KeyStore`], [`TokenStore`], [`CertStore`], [`LeaseStore`], [`DocStore`],
//! [`AuditStore`]), two backends.
//!
//! - [`plan`]: the resource rules (fencing, shape, preconditions, twins, ancestors, versions,
//!   parent etags, retired blobs), written once; both backends read, plan and execute.
//! - [`feed`]: the change feed's hub and subscriptions.
//! - [`postgres`]: shared by centers. A connection pool, numbered migrations applied under an
//!   advisory lock, and a dedicated LISTEN connection for the change feed.
//! - [`sqlite`]: embedded, for a lone node or an edge. Same schema, same semantics, same tests
//!   (`conformance`, a test-only feature); its change feed is in-process.
//!
//! Rules every backend keeps (the conformance suite checks them):
//! - Timestamps are Unix milliseconds ([`Millis`]) computed by the caller's clock (`now_millis`).
//! - Every resource write runs in one transaction that first checks the [`Fence`] (this node
//!   owns the pod at the epoch it believes) and then the [`Precondition`] against the current row,
//!   so a lost race changes nothing.
//! - Deletes are tombstones; a tombstoned resource is invisible to reads and listings and is
//!   revived by a later put (with a new etag and a higher version).
//! - Paths are absolute within the pod: `/` is the root container, containers end with `/`,
//!   `parent("/a/b.txt") == "/a/"`. Validation of path syntax happens before the store (routing).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod feed;
pub mod plan;
pub mod postgres;
pub mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use feed::{Change, ChangeFeed, FeedEvent, ResourceEvent};

/// Unix time in milliseconds.
pub type Millis = i64;

/// The current wall-clock time in Unix milliseconds.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh random etag value (without quotes): 16 lowercase hex digits.
pub fn new_etag() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// The parent container of a path: `/a/b.txt` → `/a/`, `/a/b/` → `/a/`, `/` → `None`.
pub fn parent_path(path: &str) -> Option<&str> {
    if path == "/" || !path.starts_with('/') {
        return None;
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let idx = trimmed.rfind('/')?;
    Some(&path[..=idx])
}

/// Errors of the metadata layer. Messages name the thing they are about.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The named thing does not exist (`pod alice`, `node n1`, `resource /a.txt`, `api key k1`).
    #[error("{0} not found")]
    NotFound(String),
    /// The write conflicts with existing state (exists already, non-empty container, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An `If-Match`/`If-None-Match` precondition did not hold; nothing was written.
    #[error("precondition failed")]
    PreconditionFailed,
    /// This node does not own the pod at the epoch it believed; nothing was written.
    /// Retryable after refreshing the owner.
    #[error("pod {pod_id} is owned by node {owner} at epoch {epoch}")]
    Fenced {
        pod_id: String,
        owner: String,
        epoch: i64,
    },
    /// The input is invalid (names the field).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend cannot be reached now; retryable.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Any other backend failure.
    #[error("metadata store error: {0}")]
    Backend(String),
}

pub type MetaResult<T> = Result<T, MetaError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Center,
    Edge,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Center => "center",
            NodeType::Edge => "edge",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "center" => Some(NodeType::Center),
            "edge" => Some(NodeType::Edge),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Online,
    Inactive,
    Offline,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Inactive => "inactive",
            NodeStatus::Offline => "offline",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(NodeStatus::Online),
            "inactive" => Some(NodeStatus::Inactive),
            "offline" => Some(NodeStatus::Offline),
            _ => None,
        }
    }
}

/// A row of `nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub node_id: String,
    pub node_type: NodeType,
    pub region: String,
    pub internal_address: Option<String>,
    pub public_address: Option<String>,
    pub quic_address: Option<String>,
    pub status: NodeStatus,
    /// For an edge: the center(s) holding its tunnel.
    pub attached_centers: Vec<String>,
    /// Free/total capacity as reported (JSON object; empty object if none).
    pub capacity: serde_json::Value,
    pub version: String,
    pub last_heartbeat: Millis,
}

/// Per-pod access mode. Authorization decisions live behind one seam in the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    Private,
    PublicRead,
    PublicReadWrite,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Private => "private",
            AccessMode::PublicRead => "public-read",
            AccessMode::PublicReadWrite => "public-read-write",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private" => Some(AccessMode::Private),
            "public-read" => Some(AccessMode::PublicRead),
            "public-read-write" => Some(AccessMode::PublicReadWrite),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationStatus {
    Syncing,
    Done,
    Failed,
}

impl MigrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Syncing => "syncing",
            MigrationStatus::Done => "done",
            MigrationStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "syncing" => Some(MigrationStatus::Syncing),
            "done" => Some(MigrationStatus::Done),
            "failed" => Some(MigrationStatus::Failed),
            _ => None,
        }
    }
}

/// A row of `pods` (the seed's `identity_pod` plus `epoch` and `access_mode`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub pod_id: String,
    pub base_url: String,
    pub account_id: Option<String>,
    /// The owner node.
    pub node_id: String,
    /// Fencing token: +1 on every change of owner.
    pub epoch: i64,
    pub access_mode: AccessMode,
    pub migration_status: Option<MigrationStatus>,
    pub migration_target_node: Option<String>,
    pub migration_progress: Option<i32>,
    pub created_at: Millis,
}

/// Input of [`PodStore::create_pod`]. The pod starts at epoch 1 with its root container `/`.
#[derive(Clone, Debug)]
pub struct NewPod {
    pub pod_id: String,
    pub base_url: String,
    pub account_id: Option<String>,
    pub node_id: String,
    pub access_mode: AccessMode,
}

/// A live (not tombstoned) row of `resources`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRecord {
    pub pod_id: String,
    /// Absolute path within the pod; containers end with `/`.
    pub path: String,
    pub is_container: bool,
    /// `None` for containers.
    pub content_type: Option<String>,
    /// Strong etag value without quotes; changes on every write (for containers: also when a
    /// direct member is added or removed).
    pub etag: String,
    pub size: i64,
    /// Immutable blob key; `None` for containers.
    pub blob_key: Option<String>,
    /// Regions whose bucket holds the blob.
    pub regions: Vec<String>,
    /// +1 on every write of this path (including across tombstones).
    pub version: i64,
    pub modified_at: Millis,
}

/// A resource row as it moves with its pod from one store to another (issue 21): live or
/// tombstoned, with its version and etag, so conditional requests and versions go on across
/// the move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedRow {
    #[serde(flatten)]
    pub record: ResourceRecord,
    /// When it was deleted (a tombstone), or `None`.
    pub deleted_at: Option<Millis>,
}

/// Input of [`PodStore::adopt_pod`]: a pod exported from another store.
#[derive(Clone, Debug)]
pub struct AdoptPod {
    pub pod_id: String,
    /// The owner and epoch this store must still record (compare-and-set).
    pub from: String,
    pub epoch: i64,
    /// The new owner.
    pub to: String,
    pub account_id: Option<String>,
    pub access_mode: AccessMode,
    /// Every row of the pod in the source store ([`PodStore::export_pod`]).
    pub rows: Vec<MovedRow>,
    /// Where the rows' blobs are until they are copied: each row's `regions` becomes
    /// `[source]` (e.g. `edge:<node>`). Rows the store had for the pod are replaced, their
    /// blobs retired (the GC keeps those the new rows name).
    pub source: String,
}

/// Who believes they may write: the write fails with [`MetaError::Fenced`] unless the pod's
/// current owner is `node_id` at exactly `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub node_id: String,
    pub epoch: i64,
}

/// An etag condition of `If-Match` / `If-None-Match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtagCondition {
    /// `*`: any current representation.
    Any,
    /// A list of etag values (without quotes).
    Tags(Vec<String>),
}

impl EtagCondition {
    fn matches(&self, current: Option<&ResourceRecord>) -> bool {
        match (self, current) {
            (_, None) => false,
            (EtagCondition::Any, Some(_)) => true,
            (EtagCondition::Tags(tags), Some(r)) => tags.iter().any(|t| t == &r.etag),
        }
    }
}

/// Conditions evaluated inside the write transaction against the current (live) row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    pub if_match: Option<EtagCondition>,
    pub if_none_match: Option<EtagCondition>,
}

impl Precondition {
    /// True when the write may proceed given the current live row (or `None` if absent).
    pub fn holds(&self, current: Option<&ResourceRecord>) -> bool {
        if let Some(c) = &self.if_match {
            if !c.matches(current) {
                return false;
            }
        }
        if let Some(c) = &self.if_none_match {
            if c.matches(current) {
                return false;
            }
        }
        true
    }
}

/// Input of [`PodStore::put_resource`]. A path ending in `/` is a container (then `blob_key`,
/// `content_type` are `None` and `size` is 0).
#[derive(Clone, Debug)]
pub struct PutResource {
    pub pod_id: String,
    pub path: String,
    pub content_type: Option<String>,
    pub size: i64,
    pub blob_key: Option<String>,
    pub regions: Vec<String>,
}

/// Result of [`PodStore::put_resource`].
#[derive(Clone, Debug)]
pub struct PutOutcome {
    pub record: ResourceRecord,
    /// True if the path had no live row before.
    pub created: bool,
    /// The blob the previous live row pointed to, now unreferenced. It is retired (a
    /// [`RETIRED_BLOB`] document) in the same transaction; the blob GC deletes it after a grace
    /// period, so readers of the previous version finish.
    pub replaced_blob: Option<String>,
}

/// Document kind of a blob that a committed write stopped referencing (replaced or deleted):
/// id = the blob key, owner = the pod, `updated_at` = when. Written by `put_resource` and
/// `delete_resource` in their own transaction; the blob GC deletes the blob once the grace
/// period has passed since `updated_at`, then the document.
pub const RETIRED_BLOB: &str = "blob.retired";
/// Document kind of an upload in progress: id = the blob key, owner = the pod, `{node}`.
/// Written before the first byte is stored and refreshed (`put_doc`) while the upload runs;
/// deleted after the commit. The blob GC never deletes a blob whose record is fresh.
pub const PENDING_BLOB: &str = "blob.pending";

/// A row of `api_keys`. The secret itself is never stored: only its SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub key_id: String,
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub secret_hash: String,
    pub name: String,
    /// The account that owns the key (and what it creates).
    pub owner: String,
    /// `admin`, or `pod:<podId>` (read/write that pod), or `pod:<podId>:read`.
    pub scopes: Vec<String>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

/// A row of `join_tokens`: a token an edge presents to join the cluster. The secret itself is
/// never stored: only its SHA-256 (hex), which the caller compares in constant time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenRecord {
    /// 12 lowercase hex digits.
    pub token_id: String,
    /// SHA-256 (hex) of the secret. Never serialized.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub secret_hash: String,
    pub description: String,
    /// The actor that created the token, e.g. `key:<id>`.
    pub created_by: String,
    pub created_at: Millis,
    /// A use at or after this time fails.
    pub expires_at: Millis,
    /// A single-use token can be used once; a multi-use one until it expires or is revoked.
    pub single_use: bool,
    /// The time of the first use.
    pub used_at: Option<Millis>,
    /// The node id of the first use.
    pub used_by: Option<String>,
    /// How many uses succeeded.
    pub use_count: i64,
    pub revoked_at: Option<Millis>,
}

/// Input of [`AuditStore::append_audit`].
#[derive(Clone, Debug)]
pub struct NewAudit {
    pub at: Millis,
    /// Key id (or `anonymous`, `system`).
    pub actor: String,
    /// e.g. `pod.create`, `resource.put`, `apikey.revoke`.
    pub action: String,
    /// e.g. `alice`, `alice:/notes/a.txt`, `key k1`.
    pub target: String,
    pub details: serde_json::Value,
    pub trace_id: String,
}

/// A row of `audit_log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub trace_id: String,
}

/// A TLS certificate set in `certs` (ACME; ARCHITECTURE §9): the chain as PEM and its private
/// key sealed by the node (the store never sees it in the clear).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertRecord {
    /// `center` for the centers' shared certificate, `edge:<node>` for an edge's.
    pub id: String,
    /// The DNS names it covers, in the order ordered.
    pub names: Vec<String>,
    /// Leaf first, then intermediates.
    pub cert_pem: String,
    /// The private key, sealed (AEAD) with a key only the nodes know.
    pub key_sealed: String,
    pub not_before: Millis,
    pub not_after: Millis,
    /// The node that obtained it.
    pub issued_by: String,
    pub issued_at: Millis,
}

/// A versioned JSON document in `docs` (sandboxes, webhooks, webhook deliveries): the typed
/// layer lives in the node; the store keeps `(kind, id)` unique, indexes `(kind, owner)`, and
/// writes only when the caller's expected version matches (optimistic concurrency).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocRecord {
    pub kind: String,
    pub id: String,
    /// Who the document belongs to (an account, or the parent document's id).
    pub owner: String,
    /// 1 after the first write, +1 on every update.
    pub version: i64,
    pub updated_at: Millis,
    pub doc: serde_json::Value,
}

/// Every part of the store, to call its methods on a concrete backend (`dyn MetaStore` needs no
/// import): `use xpod_storage::meta::parts::*;`.
pub mod parts {
    pub use super::{
        AuditStore, CertStore, DocStore, KeyStore, LeaseStore, MetaStore, NodeStore, PodStore,
        TokenStore,
    };
}

/// Nodes and their presence (heartbeats, addresses, attached centers).
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Insert or replace the node's row.
    async fn upsert_node(&self, node: &NodeRecord) -> MetaResult<()>;

    /// Inserts `node` only if its id is free: `true` if this call inserted it, `false` if a
    /// row with that id exists (left unchanged). Atomic: of racing calls, one wins.
    async fn insert_node(&self, node: &NodeRecord) -> MetaResult<bool>;

    async fn get_node(&self, node_id: &str) -> MetaResult<Option<NodeRecord>>;

    /// Ordered by node_id.
    async fn list_nodes(&self) -> MetaResult<Vec<NodeRecord>>;

    /// The centers only, ordered by node_id (a mesh refresh every 2 s reads these, not the
    /// thousands of edges).
    async fn list_centers(&self) -> MetaResult<Vec<NodeRecord>>;

    /// Heartbeats of many nodes in one statement: each existing row of `node_ids` becomes
    /// online with `last_heartbeat = at_ms` (no row is created; other columns are kept).
    /// Returns how many rows changed. A center holding thousands of idle edges writes their
    /// presence this way, not one read-modify-write each.
    async fn touch_nodes(&self, node_ids: &[String], at_ms: i64) -> MetaResult<u64>;

    /// Edges not offline whose last heartbeat is older than `before_ms`, ordered by node_id:
    /// what a presence sweep has to look at (not every node).
    async fn list_silent_edges(&self, before_ms: i64) -> MetaResult<Vec<NodeRecord>>;
}

/// Pods and their resources: ownership and epochs, fenced conditional writes, listings, the blob references the GC and the region sync need.
#[async_trait]
pub trait PodStore: Send + Sync {
    /// Creates the pod at epoch 1 and its root container `/`, and notifies the change feed.
    /// `Conflict` if the pod id exists.
    async fn create_pod(&self, pod: &NewPod) -> MetaResult<PodRecord>;

    async fn get_pod(&self, pod_id: &str) -> MetaResult<Option<PodRecord>>;

    /// Ordered by pod_id.
    async fn list_pods(&self) -> MetaResult<Vec<PodRecord>>;

    /// Moves ownership in one transaction: `NotFound` for an unknown pod or node, `Conflict` if
    /// the target is not online or already the owner; else owner := target, epoch += 1,
    /// migration_status := syncing, migration_target_node := target, progress := 0; notifies.
    async fn transfer_pod(&self, pod_id: &str, target_node: &str) -> MetaResult<PodRecord>;

    /// Updates migration status/progress (no epoch change).
    async fn set_migration_state(
        &self,
        pod_id: &str,
        status: Option<MigrationStatus>,
        progress: Option<i32>,
    ) -> MetaResult<()>;

    async fn get_resource(&self, pod_id: &str, path: &str) -> MetaResult<Option<ResourceRecord>>;

    /// [`PodStore::get_resource`] for the owner that believes `fence`: `Fenced` if the pod is
    /// owned by another node or at another epoch now, `NotFound` if the pod is gone. The read
    /// path of a pod's owner, whose pod row comes from memory: the check of that belief rides
    /// on the same round trip (PostgreSQL: one query).
    async fn get_resource_fenced(
        &self,
        pod_id: &str,
        path: &str,
        fence: &Fence,
    ) -> MetaResult<Option<ResourceRecord>> {
        let pod = self
            .get_pod(pod_id)
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
        if pod.node_id != fence.node_id || pod.epoch != fence.epoch {
            return Err(MetaError::Fenced {
                pod_id: pod_id.to_string(),
                owner: pod.node_id,
                epoch: pod.epoch,
            });
        }
        self.get_resource(pod_id, path).await
    }

    /// Direct live members of a container, ordered by path. `NotFound` if the container is not live.
    async fn list_container(&self, pod_id: &str, path: &str) -> MetaResult<Vec<ResourceRecord>>;

    /// Fenced, conditional create-or-replace. Creates missing intermediate containers. Errors:
    /// `NotFound` (pod), `Fenced`, `PreconditionFailed`, `Conflict` (path is a container and the
    /// put is a document or vice versa, an ancestor is a document, `/a` vs `/a/` clash).
    async fn put_resource(
        &self,
        fence: &Fence,
        put: &PutResource,
        pre: &Precondition,
    ) -> MetaResult<PutOutcome>;

    /// Fenced, conditional tombstone. Returns the blob the row pointed to (now unreferenced,
    /// retired as a [`RETIRED_BLOB`] document in the same transaction).
    /// Errors: `NotFound` (pod or resource), `Fenced`, `PreconditionFailed`, `Conflict`
    /// (non-empty container, or the root container `/`).
    async fn delete_resource(
        &self,
        fence: &Fence,
        pod_id: &str,
        path: &str,
        pre: &Precondition,
    ) -> MetaResult<Option<String>>;

    /// The subset of `keys` that a live resource row still points to (for blob GC).
    async fn referenced_blobs(&self, keys: &[String]) -> MetaResult<HashSet<String>>;

    /// Live documents of a pod that have a blob, ordered by path (for the migration sync).
    async fn list_pod_blobs(&self, pod_id: &str) -> MetaResult<Vec<ResourceRecord>>;

    /// Drops every row of `pod_id` (tombstones too) if its owner is `if_owner`, in one
    /// transaction that retires their blobs (the GC deletes those no row names any more); the
    /// pod record stays. The rows dropped (0 when the owner differs or the pod is unknown). A
    /// copy a node keeps of a pod that moved away, once the new owner has every byte.
    async fn drop_pod_rows(&self, pod_id: &str, if_owner: &str) -> MetaResult<u64>;

    /// A live document of pod `pod_id` whose blob is `key` (its size and where it is held), if
    /// there is one.
    async fn blob_record(&self, pod_id: &str, key: &str) -> MetaResult<Option<ResourceRecord>>;

    /// Failover of a dead center's pod: in one compare-and-set, if the pod is still owned by
    /// `from` at `epoch`, owner := `to`, epoch += 1, migration syncing to `to` (its bytes may
    /// be in another region), and the change feed is notified. `None` if the pod is gone or
    /// no longer at (`from`, `epoch`): another center moved it first.
    async fn rehome_pod(
        &self,
        pod_id: &str,
        from: &str,
        epoch: i64,
        to: &str,
    ) -> MetaResult<Option<PodRecord>>;

    /// The pods `node_id` owns, ordered by pod_id.
    async fn pods_owned_by(&self, node_id: &str) -> MetaResult<Vec<PodRecord>>;

    /// Records that `region`'s bucket now holds blob `key` too (on every row pointing to it;
    /// idempotent). Returns how many rows changed.
    async fn add_blob_region(&self, key: &str, region: &str) -> MetaResult<u64>;

    /// Every resource row of a pod, tombstones included, ordered by path: what moves with the
    /// pod to another store. `NotFound` if the pod is gone.
    async fn export_pod(&self, pod_id: &str) -> MetaResult<Vec<MovedRow>>;

    /// Hands the pod to `to`, a node this store need not know (an edge's own store hands its
    /// pod to the cluster): owner := `to`, epoch += 1, migration syncing to `to`, progress 0;
    /// notifies. Every write fenced with the old owner fails from then on. `NotFound` if the
    /// pod is gone.
    async fn release_pod(&self, pod_id: &str, to: &str) -> MetaResult<PodRecord>;

    /// Takes over a pod exported from another store, in one transaction: if the pod is still
    /// owned by `from` at `epoch`, owner := `to`, epoch += 1, migration syncing to `to`,
    /// progress 0, account and access mode from the source, and the pod's rows replaced by
    /// `rows` (their regions := `[source]`); notifies. `None` if the pod is gone or no longer
    /// at (`from`, `epoch`).
    async fn adopt_pod(&self, adopt: &AdoptPod) -> MetaResult<Option<PodRecord>>;
}

/// Certificates, cluster settings and DNS TXT records (ACME DNS-01).
#[async_trait]
pub trait CertStore: Send + Sync {
    /// Adds (or renews) TXT record `value` at `name` (lowercase FQDN without the final dot)
    /// until `expires_at`; expired records are removed.
    async fn put_txt(&self, name: &str, value: &str, expires_at: Millis) -> MetaResult<()>;

    /// Removes one TXT record; whether it existed.
    async fn delete_txt(&self, name: &str, value: &str) -> MetaResult<bool>;

    /// The unexpired TXT values at `name`, sorted.
    async fn list_txt(&self, name: &str) -> MetaResult<Vec<String>>;

    /// Every unexpired TXT record as (name, value), sorted (for RFC 2136 pushes).
    async fn list_all_txt(&self) -> MetaResult<Vec<(String, String)>>;

    /// Inserts or replaces the certificate set `cert.id`.
    async fn put_cert(&self, cert: &CertRecord) -> MetaResult<()>;

    async fn get_cert(&self, id: &str) -> MetaResult<Option<CertRecord>>;

    /// Ordered by id.
    async fn list_certs(&self) -> MetaResult<Vec<CertRecord>>;

    /// A cluster-wide setting (e.g. the sealed ACME account): insert or replace.
    async fn put_setting(&self, name: &str, value: &str) -> MetaResult<()>;

    async fn get_setting(&self, name: &str) -> MetaResult<Option<String>>;
}

/// Leases with the database's atomicity (one holder at a time).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` until `until` if it is free, expired (`expires_at <= now`)
    /// or already `holder`'s (then extended). `true` if `holder` holds it after the call.
    /// Atomic: of racing callers at most one holds an unexpired lease.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> MetaResult<bool>;

    /// Gives the lease up if `holder` holds it; whether it did.
    async fn release_lease(&self, name: &str, holder: &str) -> MetaResult<bool>;

    /// Renews center `node_id`'s liveness lease until the store's clock + `ttl_ms`
    /// (PostgreSQL: the database's clock, the only clock the centers share; SQLite: this
    /// process's, the one node).
    async fn renew_liveness(&self, node_id: &str, ttl_ms: i64) -> MetaResult<()>;

    /// Every center that has held a liveness lease, with how long ago it ended by the store's
    /// clock (negative: still running). Ordered by node_id.
    async fn liveness(&self) -> MetaResult<Vec<Liveness>>;
}

/// A center's liveness lease as [`LeaseStore::liveness`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Liveness {
    pub node_id: String,
    /// The center's region (from its `nodes` row; empty if it has none).
    pub region: String,
    /// Milliseconds since the lease ended (negative while it runs).
    pub expired_for_ms: i64,
}

/// Versioned JSON documents by (kind, id): sandboxes, webhooks, node policies, blob bookkeeping.
#[async_trait]
pub trait DocStore: Send + Sync {
    /// Writes `doc` (its `version` and `updated_at` are set by the store: `expect + 1`, `now`):
    /// `expect = 0` creates it (false if `(kind, id)` exists), otherwise it updates only the
    /// row at version `expect` (false if it is gone or at another version).
    async fn put_doc(&self, doc: &DocRecord, expect: i64, now: Millis) -> MetaResult<bool>;

    async fn get_doc(&self, kind: &str, id: &str) -> MetaResult<Option<DocRecord>>;

    /// Documents of a kind (of one owner when given), oldest first (by id within a millisecond).
    async fn list_docs(&self, kind: &str, owner: Option<&str>) -> MetaResult<Vec<DocRecord>>;

    /// Deletes the row at version `expect` (any version when `expect = 0`); false if not there.
    async fn delete_doc(&self, kind: &str, id: &str, expect: i64) -> MetaResult<bool>;
}

/// API keys (hashed).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// `Conflict` if the key id exists.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> MetaResult<()>;

    async fn get_api_key(&self, key_id: &str) -> MetaResult<Option<ApiKeyRecord>>;

    /// Ordered by created_at, then key_id.
    async fn list_api_keys(&self) -> MetaResult<Vec<ApiKeyRecord>>;

    /// Sets revoked_at (idempotent: keeps the first time). `NotFound` for an unknown key.
    async fn revoke_api_key(&self, key_id: &str, at: Millis) -> MetaResult<()>;

    /// Best-effort last_used_at update.
    async fn touch_api_key(&self, key_id: &str, at: Millis) -> MetaResult<()>;
}

/// Join tokens for edges.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// `Conflict` if the token id exists.
    async fn create_join_token(&self, t: &JoinTokenRecord) -> MetaResult<()>;

    async fn get_join_token(&self, token_id: &str) -> MetaResult<Option<JoinTokenRecord>>;

    /// Ordered by created_at, then token_id.
    async fn list_join_tokens(&self) -> MetaResult<Vec<JoinTokenRecord>>;

    /// Atomically records a use by `node_id` at `now` and returns the updated row. In one
    /// statement or transaction, checked in this order: `NotFound` (unknown id);
    /// `Conflict("join token <id> was revoked")`; `Conflict("join token <id> expired")` when
    /// `now >= expires_at`; `Conflict("join token <id> was already used")` when single-use and
    /// `used_at` is set. Otherwise used_at := coalesce(used_at, now), used_by :=
    /// coalesce(used_by, node_id), use_count += 1. A failed use changes nothing. Of racing uses
    /// of a single-use token exactly one succeeds. The caller has already checked the secret
    /// hash in constant time.
    async fn use_join_token(
        &self,
        token_id: &str,
        node_id: &str,
        now: Millis,
    ) -> MetaResult<JoinTokenRecord>;

    /// Sets revoked_at (idempotent: keeps the first time). `NotFound` for an unknown token.
    async fn revoke_join_token(&self, token_id: &str, at: Millis) -> MetaResult<()>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, entry: &NewAudit) -> MetaResult<i64>;

    /// Newest first, at most `limit`, only ids below `before` when given.
    async fn list_audit(&self, limit: i64, before: Option<i64>) -> MetaResult<Vec<AuditEntry>>;
}

/// The metadata store: every part above, plus the backend's name, liveness and the change
/// feed. Both backends implement exactly these semantics (the conformance suite). Code that
/// needs one part can take that part (`&dyn KeyStore`, …); `dyn MetaStore` has them all.
#[async_trait]
pub trait MetaStore:
    NodeStore
    + PodStore
    + CertStore
    + LeaseStore
    + DocStore
    + KeyStore
    + TokenStore
    + AuditStore
    + 'static
{
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// A cheap round trip, for `/readiness`.
    async fn ping(&self) -> MetaResult<()>;

    /// A new subscription. Its first event is [`FeedEvent::Reset`] once the feed is live
    /// (for PostgreSQL: after LISTEN succeeded), and again after every reconnect.
    fn subscribe(&self) -> ChangeFeed;

    /// Announces a resource event to every node's [`MetaStore::resource_events`] (PostgreSQL:
    /// `NOTIFY xpod_res`; SQLite: in process). Called by the pod's owner after a write commits.
    async fn announce(&self, ev: &ResourceEvent) -> MetaResult<()>;

    /// Resource events announced from now on, by any node.
    fn resource_events(&self) -> tokio::sync::broadcast::Receiver<ResourceEvent>;
}

/// Opens a store by URL: `postgres://…` / `postgresql://…`, or `sqlite://PATH` /
/// `sqlite::memory:`. Applies migrations before returning.
pub async fn open(url: &str, pool_size: usize) -> MetaResult<Arc<dyn MetaStore>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url, pool_size).await?))
    } else if let Some(rest) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open(rest).await?))
    } else if url == "sqlite::memory:" {
        Ok(Arc::new(sqlite::SqliteStore::open_in_memory().await?))
    } else {
        Err(MetaError::Invalid(format!(
            "database url `{url}`: expected postgres://… or sqlite://PATH"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent_path("/"), None);
        assert_eq!(parent_path("/a.txt"), Some("/"));
        assert_eq!(parent_path("/a/"), Some("/"));
        assert_eq!(parent_path("/a/b.txt"), Some("/a/"));
        assert_eq!(parent_path("/a/b/"), Some("/a/"));
    }

    #[test]
    fn preconditions() {
        let r = ResourceRecord {
            pod_id: "p".into(),
            path: "/a".into(),
            is_container: false,
            content_type: None,
            etag: "e1".into(),
            size: 0,
            blob_key: None,
            regions: vec![],
            version: 1,
            modified_at: 0,
        };
        let none_star = Precondition {
            if_none_match: Some(EtagCondition::Any),
            ..Default::default()
        };
        assert!(none_star.holds(None));
        assert!(!none_star.holds(Some(&r)));
        let m = Precondition {
            if_match: Some(EtagCondition::Tags(vec!["e1".into()])),
            ..Default::default()
        };
        assert!(m.holds(Some(&r)));
        assert!(!m.holds(None));
        let stale = Precondition {
            if_match: Some(EtagCondition::Tags(vec!["e0".into()])),
            ..Default::default()
        };
        assert!(!stale.holds(Some(&r)));
    }
}
