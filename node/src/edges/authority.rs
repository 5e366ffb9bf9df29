//! Joining: decides whether a join token admits a node id (and gives the node what the token
//! grants, `crate::node_policy`). Refusals are logged (never with the
//! secret) and sent to the edge in words that reveal nothing about which tokens exist.

use std::sync::Arc;

use xpod_storage::meta::{self, MetaError, MetaStore, NodeRecord, NodeStatus, NodeType};
use xpod_tunnel::endpoint::{BoxFuture, JoinAuthority};
use xpod_tunnel::identity::{ClusterCa, JoinToken};

pub struct TokenAuthority {
    meta: Arc<dyn MetaStore>,
    ca: ClusterCa,
    region: String,
}

impl TokenAuthority {
    pub fn new(meta: Arc<dyn MetaStore>, ca: ClusterCa, region: String) -> TokenAuthority {
        TokenAuthority { meta, ca, region }
    }

    async fn check(&self, token: &JoinToken, node_id: &str) -> Result<(), String> {
        let unavailable = |e: MetaError| {
            tracing::error!(error = %e, "join: metadata store unavailable");
            "the center cannot check join tokens right now; retry later".to_string()
        };
        let refused = "join token refused: unknown, revoked or wrong secret".to_string();
        let Some(record) = self
            .meta
            .get_join_token(&token.id)
            .await
            .map_err(unavailable)?
        else {
            return Err(refused);
        };
        if !token.verify_secret(&record.secret_hash) {
            return Err(refused);
        }
        if self
            .meta
            .get_node(node_id)
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Err(format!(
                "node id {node_id} is already taken in this cluster; join with another id"
            ));
        }
        let now = meta::now_millis();
        match self.meta.use_join_token(&token.id, node_id, now).await {
            Ok(_) => {}
            Err(MetaError::Conflict(msg)) => return Err(msg),
            Err(MetaError::NotFound(_)) => return Err(refused),
            Err(e) => return Err(unavailable(e)),
        }
        // Claim the id atomically: of two joins racing for one id, exactly one gets it (the
        // other's token is spent; it is told the id is taken).
        let placeholder = NodeRecord {
            node_id: node_id.to_string(),
            node_type: NodeType::Edge,
            region: self.region.clone(),
            internal_address: None,
            public_address: None,
            quic_address: None,
            status: NodeStatus::Offline,
            attached_centers: Vec::new(),
            capacity: serde_json::json!({}),
            version: String::new(),
            last_heartbeat: 0,
        };
        if !self
            .meta
            .insert_node(&placeholder)
            .await
            .map_err(unavailable)?
        {
            return Err(format!(
                "node id {node_id} is already taken in this cluster; join with another id"
            ));
        }
        // What the token grants (sandbox slots, pod prefixes) becomes the node's policy.
        if let Err(e) =
            crate::node_policy::grant_from_token(self.meta.as_ref(), &token.id, node_id).await
        {
            tracing::warn!(node_id, error = %format!("{e:#}"), "join: the token's grant was not applied; set it with `xpod nodes set`");
        }
        Ok(())
    }
}

impl JoinAuthority for TokenAuthority {
    fn authorize<'a>(
        &'a self,
        token: &'a JoinToken,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let result = self.check(token, node_id).await;
            match &result {
                Ok(()) => tracing::info!(token_id = %token.id, node_id, "edge joined"),
                Err(reason) => {
                    tracing::warn!(token_id = %token.id, node_id, %reason, "join refused")
                }
            }
            result
        })
    }

    fn ca(&self) -> &ClusterCa {
        &self.ca
    }
}
