//! What the cluster grants a node beyond its certificate (issue 15: a device is never trusted
//! beyond its own name).
//!
//! One versioned document per node (kind [`KIND`], id = node id), written by the admin API
//! (`PATCH /.cluster/nodes/{id}`, `POST /.cluster/nodes/{id}/revoke`; CLI `xpod nodes set` and
//! `xpod nodes revoke`):
//! - `sandboxSlots`: the most sandbox slots placement uses on this node, whatever it reports.
//!   An edge without a grant offers none; a center without one offers what it reports.
//! - `podPrefixes`: pod ids an edge may bring into the cluster by reporting them (`laptop-` lets
//!   it claim `laptop-notes`). Without one, an edge keeps only pods the cluster assigned to it
//!   (`POST /.cluster/pods {"nodeId": …}`); it never squats a free id.
//! - `bandwidthBytesPerSec`: what the centers relay to and from an edge, each way, at most
//!   (`crate::edges::bandwidth`).
//! - `acceptPods`: accounts whose pods may be moved onto an edge (`*`: any account's), besides
//!   those the device's own `[tunnel] accept_pods` names (`crate::edges::pod_adopt`).
//! - `revokedAt`: the node is refused at every center's next handshake (mesh or tunnel), its live
//!   connections are closed within [`REFRESH`] (+ the close), and it cannot join again under
//!   that id (the id stays taken).
//!
//! A join token can carry a grant (`xpod tokens create --sandbox-slots N --pod-prefix P`; a
//! [`TOKEN_GRANT`] document keyed by the token's id): the node that joins with it starts with
//! that policy.
//!
//! Every node keeps the documents in memory ([`Policies`]), refreshed every [`REFRESH`]; the
//! handshake check reads the store itself, so a revocation holds from the moment it is written.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xpod_storage::meta::{MetaStore, Millis, NodeType};

/// The document kind.
pub const KIND: &str = "node_policy";
/// The document kind of a join token's grant (id = the token's id).
pub const TOKEN_GRANT: &str = "token_grant";

/// How often every node reloads the policies (and closes what a revocation ended).
pub const REFRESH: Duration = Duration::from_secs(2);
/// The QUIC close code for a revoked node.
pub const REVOKED_CODE: u32 = 0x15;

/// One node's grants.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_slots: Option<u32>,
    #[serde(default)]
    pub pod_prefixes: Vec<String>,
    /// Bytes per second the centers relay to and from this edge, each way
    /// (`crate::edges::bandwidth`; `None`: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Accounts whose pods may be moved onto this edge (`*`: any account's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_pods: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl Policy {
    /// The sandbox slots placement may use on a node of `kind` that reports `reported`.
    pub fn slots(&self, kind: NodeType, reported: u32) -> u32 {
        match (kind, self.sandbox_slots) {
            (_, Some(cap)) => reported.min(cap),
            (NodeType::Edge, None) => 0,
            (_, None) => reported,
        }
    }

    /// Whether this grant lets a pod of `account` (`None`: no account) be moved onto the edge.
    pub fn accepts_pods_of(&self, account: Option<&str>) -> bool {
        accepts(&self.accept_pods, account)
    }

    /// Whether an edge may bring `pod_id` into the cluster by reporting it.
    pub fn may_claim(&self, pod_id: &str) -> bool {
        self.pod_prefixes
            .iter()
            .any(|p| !p.is_empty() && pod_id.starts_with(p.as_str()))
    }
}

/// Whether a list of accepted accounts (a grant's or `[tunnel] accept_pods`) takes a pod of
/// `account`: it names the account, or `*` (the only way a pod without an account is taken).
pub fn accepts(list: &[String], account: Option<&str>) -> bool {
    list.iter()
        .any(|a| a == "*" || account.is_some_and(|acc| acc == a))
}

/// Checks a grant's values (the API's and the CLI's input): slots 0..=4096, prefixes 1–50 of
/// `a-z 0-9 -`, not starting with `-`, accepted accounts (`*` or an account, at most 100).
pub fn validate_grant(
    slots: Option<u32>,
    prefixes: &[String],
    accept_pods: &[String],
) -> Result<(), String> {
    if accept_pods.len() > 100 {
        return Err(format!(
            "acceptPods: {} accounts: at most 100",
            accept_pods.len()
        ));
    }
    for a in accept_pods.iter().filter(|a| *a != "*") {
        xpod_config::validate_account(a).map_err(|e| format!("acceptPods: {e}"))?;
    }
    if let Some(n) = slots.filter(|n| *n > 4096) {
        return Err(format!("sandboxSlots {n}: expected 0..=4096"));
    }
    for p in prefixes {
        let ok = !p.is_empty()
            && p.len() <= 50
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-');
        if !ok {
            return Err(format!(
                "podPrefixes: {p:?}: expected 1–50 of a-z, 0-9, `-`, not starting with `-`"
            ));
        }
    }
    Ok(())
}

/// Gives `node_id` (just joined with token `token_id`) the grant the token carries, if any.
pub async fn grant_from_token(
    meta: &dyn MetaStore,
    token_id: &str,
    node_id: &str,
) -> anyhow::Result<()> {
    let Some(grant) = meta.get_doc(TOKEN_GRANT, token_id).await? else {
        return Ok(());
    };
    let policy: Policy = serde_json::from_value(grant.doc)?;
    let doc = xpod_storage::meta::DocRecord {
        kind: KIND.into(),
        id: node_id.into(),
        owner: node_id.into(),
        version: 0,
        updated_at: 0,
        doc: serde_json::to_value(&policy)?,
    };
    // A new id has no policy yet; if it somehow has, the admin's stays.
    meta.put_doc(&doc, 0, xpod_storage::meta::now_millis())
        .await?;
    Ok(())
}

/// A node's policy from the store (the default when it has none).
pub async fn load(meta: &dyn MetaStore, node_id: &str) -> anyhow::Result<(Policy, i64)> {
    Ok(match meta.get_doc(KIND, node_id).await? {
        Some(d) => (serde_json::from_value(d.doc).unwrap_or_default(), d.version),
        None => (Policy::default(), 0),
    })
}

/// Every node's policy, in memory.
#[derive(Default)]
pub struct Policies {
    map: RwLock<HashMap<String, Policy>>,
}

impl Policies {
    pub fn get(&self, node_id: &str) -> Policy {
        self.map
            .read()
            .expect("poisoned")
            .get(node_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn is_revoked(&self, node_id: &str) -> bool {
        self.get(node_id).revoked_at.is_some()
    }

    /// Reloads from the store; returns the ids that are revoked now.
    pub async fn refresh(&self, meta: &dyn MetaStore) -> anyhow::Result<Vec<String>> {
        let mut map = HashMap::new();
        for d in meta.list_docs(KIND, None).await? {
            if let Ok(p) = serde_json::from_value::<Policy>(d.doc) {
                map.insert(d.id, p);
            }
        }
        let revoked = map
            .iter()
            .filter(|(_, p)| p.revoked_at.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        *self.map.write().expect("poisoned") = map;
        Ok(revoked)
    }
}

/// Whether `node_id` may be served at a handshake: the store decides (so a revocation holds at
/// once); if it cannot be read, the copy in memory does.
pub async fn admitted(meta: &dyn MetaStore, policies: &Policies, node_id: &str) -> bool {
    match load(meta, node_id).await {
        Ok((p, _)) => p.revoked_at.is_none(),
        Err(e) => {
            tracing::warn!(node = node_id, error = %e, "policy check from memory (store unavailable)");
            !policies.is_revoked(node_id)
        }
    }
}

/// Reloads the policies every [`REFRESH`] and hands every revoked node to `close`, which closes
/// its live connections and says whether there were any.
pub async fn watch(
    meta: Arc<dyn MetaStore>,
    policies: Arc<Policies>,
    close: impl Fn(&str) -> bool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        match policies.refresh(meta.as_ref()).await {
            Ok(revoked) => {
                for id in revoked {
                    if close(&id) {
                        tracing::warn!(node = %id, "revoked node: its connection is closed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reload node policies"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_offers_nothing_ungranted_and_never_more_than_granted() {
        let none = Policy::default();
        assert_eq!(none.slots(NodeType::Edge, 8), 0);
        assert_eq!(none.slots(NodeType::Center, 8), 8);
        let four = Policy {
            sandbox_slots: Some(4),
            ..Policy::default()
        };
        assert_eq!(
            four.slots(NodeType::Edge, 1000),
            4,
            "a self-report is capped"
        );
        assert_eq!(four.slots(NodeType::Edge, 2), 2);
        assert_eq!(four.slots(NodeType::Center, 8), 4);
    }

    #[test]
    fn claims_need_a_granted_prefix() {
        let p = Policy {
            pod_prefixes: vec!["laptop-".into(), String::new()],
            ..Policy::default()
        };
        assert!(p.may_claim("laptop-notes"));
        assert!(!p.may_claim("bank"));
        assert!(!Policy::default().may_claim("bank"));
    }
}
