//! `/api/v1/sandboxes` and `/api/v1/runners` (scope `sandbox`; `sandbox:read` reads).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xpod_storage::meta::Millis;

use crate::sandbox::model::{Resources, Sandbox};
use crate::sandbox::replay::LogEntry;

/// `POST /api/v1/sandboxes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSandbox {
    /// At most 200 printable characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,200}$")]
    pub name: Option<String>,
    /// `host` (the host's /usr, read-only; the default) or an image a node offers
    /// (`[sandbox] images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub image: Option<String>,
    /// At most 100 printable characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,100}$")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = super::maps::env)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Idle timeout, seconds (default: the node's `[sandbox] idle_timeout_secs`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::int::opt"
    )]
    #[schema(minimum = 10, maximum = 604800)]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = super::maps::annotations)]
    pub annotations: BTreeMap<String, String>,
    /// The host's network (needs `sandbox:network` or admin; default: only its own loopback).
    #[serde(default)]
    pub network: bool,
    /// Ports reachable without credentials.
    #[serde(default)]
    pub public: bool,
    /// Place it only in this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,63}$")]
    pub region: Option<String>,
    /// Place it only on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub node: Option<String>,
}

/// `PATCH /api/v1/sandboxes/{id}`: only the fields present change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,200}$")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::int::opt"
    )]
    #[schema(minimum = 10, maximum = 604800)]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::maps::annotations_or_null)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
}

/// `GET /api/v1/sandboxes`: a page of the caller's sandboxes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
    /// Sandboxes matching the filters, on every page.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A new sandbox and, this once, its access token.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSandbox {
    #[serde(flatten)]
    pub sandbox: Sandbox,
    /// `sbt_…`: opens its private ports (`X-Sandbox-Token`); shown only here.
    pub access_token: String,
}

/// `GET /api/v1/sandboxes/{id}/logs`: the exec events after a cursor.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub events: Vec<LogEntry>,
    /// The last event's `seq` (the next request's cursor).
    pub cursor: u64,
    /// Whether older events were dropped.
    pub truncated: bool,
}

/// `GET /api/v1/runners`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunnerList {
    pub runners: Vec<RunnerView>,
}

/// A node offering sandbox capacity.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerView {
    pub id: String,
    /// `center` or `edge`.
    #[serde(rename = "type")]
    pub kind: String,
    pub region: String,
    pub status: String,
    pub last_heartbeat: Millis,
    pub capacity: RunnerCapacity,
    pub reported: RunnerUse,
    /// Live sandboxes placed on it.
    pub placed: usize,
}

/// What a runner offers.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerCapacity {
    pub slots: u32,
    pub cpu: u32,
    pub memory_mb: u64,
}

/// What a runner reports in use.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerUse {
    pub running: usize,
    pub cpu: u32,
    pub memory_mb: u64,
}
