//! A center's QUIC endpoint: where edges' tunnels and other centers' mesh connections enter.

use std::sync::Arc;

use tokio::sync::watch;
use xpod_tunnel::endpoint::{Accepted, CenterEndpoint};
use xpod_tunnel::identity::NodeRole;

use crate::app::App;
use crate::edges::center;

/// Accepts connections until `shutdown`, then closes the endpoint (edges reconnect elsewhere):
/// a revoked node is refused (and audited), an edge's tunnel runs its control session, another
/// center's connection serves its streams ([`super::streams::peer`]).
pub async fn center(
    app: Arc<App>,
    mut endpoint: CenterEndpoint,
    mut shutdown: watch::Receiver<bool>,
) {
    let sweeper = tokio::spawn(center::sweep(app.clone(), shutdown.clone()));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = endpoint.accept() => a,
        };
        match accepted {
            Some(Accepted::Node { conn, peer })
                if !crate::node_policy::admitted(
                    app.meta.as_ref(),
                    &app.policies,
                    &peer.node_id,
                )
                .await =>
            {
                tracing::warn!(node = %peer.node_id, remote = %conn.remote_address(), "a revoked node connected: refused");
                conn.close(crate::node_policy::REVOKED_CODE.into(), b"node revoked");
                app.refusal(
                    Some(conn.remote_address().ip()),
                    format!("node:{}", peer.node_id),
                    "refused.node_revoked",
                    format!("node:{}", peer.node_id),
                    serde_json::json!({"remote": conn.remote_address().to_string()}),
                    String::new(),
                );
            }
            Some(Accepted::Node { conn, peer }) if peer.role == NodeRole::Edge => {
                tokio::spawn(center::edge_session(app.clone(), conn, peer));
            }
            Some(Accepted::Node { conn, peer }) => {
                // Another center: it forwards pod requests to this node (crate::mesh).
                tokio::spawn(super::streams::peer(app.clone(), conn, peer.node_id));
            }
            Some(_) => {}
            None => break,
        }
    }
    endpoint.shutdown().await;
    let _ = sweeper.await;
}
