//! The operations endpoints (`/health`, `/health/detailed`, `/readiness`): no credentials.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health`: the process answers.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub node_id: String,
}

/// `GET /health/detailed`: the node's checks of its stores.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDetailed {
    /// `ok` or `degraded`.
    pub status: String,
    pub node_id: String,
    pub version: String,
    pub region: String,
    pub checks: Checks,
}

/// What `/health/detailed` checked.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Checks {
    pub metadata: MetadataCheck,
    pub objects: ObjectsCheck,
}

/// The metadata store: reachable or not.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MetadataCheck {
    /// `sqlite` or `postgres`.
    pub backend: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// The object store (its URL, never credentials).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ObjectsCheck {
    pub url: String,
}

/// `GET /readiness`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}
