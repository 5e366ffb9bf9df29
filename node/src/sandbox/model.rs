//! The cluster's record of a sandbox: a versioned document (`kind = "sandbox"`, owner = the
//! API key's owner) in the metadata store, and the typed helpers around it.
//!
//! Status: `pending` (placed, starting) → `running` → `stopped` (idle timeout, its runner
//! stopped or lost it) or `failed` (could not start); `archived` after a delete with a grace
//! period, until the cleanup removes it. Every write is a compare-and-set on the document's
//! version ([`update`] retries on a race).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xpod_storage::meta::{DocRecord, MetaResult, MetaStore, Millis};

/// The document kind.
pub const KIND: &str = "sandbox";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = SandboxStatus)]
pub enum Status {
    Pending,
    Running,
    Stopped,
    Failed,
    Archived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Archived => "archived",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "running" => Status::Running,
            "stopped" => Status::Stopped,
            "failed" => Status::Failed,
            "archived" => Status::Archived,
            _ => return None,
        })
    }
    /// Whether it holds capacity on its node (and counts against its owner's quota).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Pending | Status::Running)
    }
}

/// What a sandbox may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// CPU cores (counted against the node's `sandbox.cpu`; CPU time per process is limited
    /// by RLIMIT_CPU, the cores are not pinned: best-effort).
    #[serde(deserialize_with = "crate::api_types::int::one")]
    #[schema(minimum = 1, maximum = 64)]
    pub cpu: u32,
    /// Memory, MiB (counted against the node's `sandbox.memory_mb`; enforced per process as
    /// RLIMIT_AS).
    #[serde(deserialize_with = "crate::api_types::int::one")]
    #[schema(minimum = 16, maximum = 1048576)]
    pub memory_mb: u64,
    /// Processes and threads of the sandbox at once (RLIMIT_NPROC: enforced).
    #[serde(deserialize_with = "crate::api_types::int::one")]
    #[schema(minimum = 8, maximum = 4096)]
    pub max_procs: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: 1,
            memory_mb: 512,
            max_procs: 64,
        }
    }
}

/// A sandbox as the API shows it (the access token's hash is never serialized out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub id: String,
    pub owner: String,
    pub name: Option<String>,
    pub image: String,
    pub version: Option<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    /// Idle timeout, seconds: no exec and no port traffic for this long stops the sandbox.
    pub timeout: u64,
    /// Whether the sandbox has the host's network (default: only its own loopback).
    pub network: bool,
    /// Whether `<port>-<id>` is reachable without credentials.
    pub public: bool,
    pub annotations: BTreeMap<String, String>,
    pub status: Status,
    /// The node that runs (or ran) it.
    pub node: String,
    pub error: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub stopped_at: Option<Millis>,
    /// An archived sandbox is removed at this time.
    pub delete_after: Option<Millis>,
    /// SHA-256 (hex) of the sandbox's access token (for its private ports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub token_hash: String,
}

impl Sandbox {
    /// What the API answers: the sandbox without its token hash.
    pub fn view(&self) -> Sandbox {
        Sandbox {
            token_hash: String::new(),
            ..self.clone()
        }
    }
}

/// A new sandbox id: `sb` + 14 lowercase hex digits (a DNS label, so `<port>-<id>` is one too).
pub fn new_id() -> String {
    format!("sb{}", hex::encode(rand::random::<[u8; 7]>()))
}

/// Whether `id` has the shape of a sandbox id (before any lookup).
pub fn valid_id(id: &str) -> bool {
    xpod_routing::target::valid_sandbox_id(id)
}

fn parse(d: DocRecord) -> Option<(Sandbox, i64)> {
    match serde_json::from_value::<Sandbox>(d.doc) {
        Ok(s) => Some((s, d.version)),
        Err(e) => {
            tracing::error!(id = %d.id, error = %e, "unreadable sandbox record; skipped");
            None
        }
    }
}

fn doc(sb: &Sandbox) -> DocRecord {
    DocRecord {
        kind: KIND.into(),
        id: sb.id.clone(),
        owner: sb.owner.clone(),
        version: 0,
        updated_at: 0,
        doc: serde_json::to_value(sb).unwrap_or_default(),
    }
}

/// The sandbox and its version.
pub async fn get(meta: &dyn MetaStore, id: &str) -> MetaResult<Option<(Sandbox, i64)>> {
    Ok(meta.get_doc(KIND, id).await?.and_then(parse))
}

/// Every sandbox (of `owner` when given), oldest first.
pub async fn list(meta: &dyn MetaStore, owner: Option<&str>) -> MetaResult<Vec<Sandbox>> {
    Ok(meta
        .list_docs(KIND, owner)
        .await?
        .into_iter()
        .filter_map(parse)
        .map(|(s, _)| s)
        .collect())
}

/// Stores a new sandbox; false if the id exists.
pub async fn create(meta: &dyn MetaStore, sb: &Sandbox) -> MetaResult<bool> {
    meta.put_doc(&doc(sb), 0, xpod_storage::meta::now_millis())
        .await
}

/// Applies `change` to the stored sandbox and writes it back, retrying on a concurrent write.
/// `change` returns false to leave it as it is. `None` if the sandbox does not exist.
pub async fn update(
    meta: &dyn MetaStore,
    id: &str,
    mut change: impl FnMut(&mut Sandbox) -> bool,
) -> MetaResult<Option<Sandbox>> {
    for _ in 0..16 {
        let Some((mut sb, version)) = get(meta, id).await? else {
            return Ok(None);
        };
        if !change(&mut sb) {
            return Ok(Some(sb));
        }
        if meta
            .put_doc(&doc(&sb), version, xpod_storage::meta::now_millis())
            .await?
        {
            return Ok(Some(sb));
        }
    }
    Err(xpod_storage::meta::MetaError::Conflict(format!(
        "sandbox {id} kept changing under 16 attempts to update it"
    )))
}

/// Removes the sandbox record.
pub async fn remove(meta: &dyn MetaStore, id: &str) -> MetaResult<bool> {
    meta.delete_doc(KIND, id, 0).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_labels() {
        for _ in 0..100 {
            let id = new_id();
            assert!(valid_id(&id), "{id}");
            assert!(xpod_config::validate_pod_id(&format!("8080-{id}")).is_ok());
        }
        for bad in [
            "",
            "sb",
            "SB0123456789abcd",
            "sb0123456789abcX",
            "xx0123456789abcd",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn view_hides_the_token_hash() {
        let sb = Sandbox {
            id: new_id(),
            owner: "o".into(),
            name: None,
            image: "host".into(),
            version: None,
            env: Default::default(),
            resources: Resources::default(),
            timeout: 60,
            network: false,
            public: false,
            annotations: Default::default(),
            status: Status::Running,
            node: "n".into(),
            error: None,
            created_at: 1,
            started_at: None,
            stopped_at: None,
            delete_after: None,
            token_hash: "secret-hash".into(),
        };
        let v = serde_json::to_value(sb.view()).unwrap();
        assert!(v.get("tokenHash").is_none());
        assert_eq!(v["status"], "running");
        assert!(!v.to_string().contains("secret-hash"));
    }
}
