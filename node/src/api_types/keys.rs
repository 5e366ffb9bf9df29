//! API keys (`/api/v1/auth/api-keys`) and the audit log (`/api/v1/audit`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xpod_storage::meta::{ApiKeyRecord, AuditEntry};

/// `POST /api/v1/auth/api-keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// 1–200 printable characters, not only spaces.
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// `admin`, `sandbox`, `sandbox:network`, `sandbox:read`, `pod:<podId>` or
    /// `pod:<podId>:read`.
    #[schema(min_items = 1, value_type = Vec<Scope>)]
    pub scopes: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::api_types::int::opt"
    )]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
    /// Whose sandboxes, webhooks and quota the key uses (default: the key is its own owner,
    /// `key-<keyId>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub owner: Option<String>,
}

/// A scope of an API key.
#[derive(ToSchema)]
#[schema(
    pattern = "^(admin|sandbox|sandbox:network|sandbox:read|pod:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:read)?)$"
)]
pub struct Scope(pub String);

/// `GET /api/v1/auth/api-keys`: every key, never a secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKeyRecord>,
}

/// A new key: its record and, this once, the key itself.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: ApiKeyRecord,
    /// `xp_<keyId>_<secret>`: shown only here.
    pub key: String,
    pub warning: String,
}

/// `GET /api/v1/audit`: entries, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}
