//! Background work for sandboxes.
//!
//! On every node: the runner's watchdog (every second) stops idle sandboxes and notices dead
//! ones; a center or lone node records that in the store at once, an edge reports it with its
//! next heartbeat. On the center holding lease `sandbox:reconcile` (every 2 s): a live sandbox
//! whose node reported after it started without listing it, or whose node went offline, is
//! marked stopped; one pending for over 2 minutes is marked failed (its placing node went
//! away); archived sandboxes past their grace period are removed (files included).

use std::sync::Arc;
use std::time::Duration;

use xpod_storage::meta::{self, now_millis, NodeStatus};

use super::lifecycle;
use super::model::{self, Status};
use crate::app::App;

const SWEEP_EVERY: Duration = Duration::from_secs(1);
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
const LEASE: &str = "sandbox:reconcile";
/// A report must be this much newer than the start to count as "does not run it".
const REPORT_SLACK_MS: i64 = 2_000;
/// A sandbox still pending after this long lost the node that was placing it.
const PENDING_MAX_MS: i64 = 120_000;
/// A node silent this long has lost its sandboxes.
const NODE_LOST_MS: i64 = 5 * 60_000;

/// Runs until `shutdown`; then stops this node's sandboxes (and, on a center, records them
/// stopped).
pub async fn run(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    let center = app.config.role != xpod_config::Role::Edge;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = sweep.tick() => {
                for (id, reason) in app.runner.sweep(&app.config).await {
                    if center {
                        if let Err(e) = lifecycle::mark_stopped(&app, &id, &reason).await {
                            tracing::warn!(sandbox = %id, error = %e.message, "could not record a stopped sandbox");
                        }
                    }
                }
            }
            _ = reconcile.tick(), if center => {
                let now = now_millis();
                match app.meta.try_lease(LEASE, &app.node_id, now, now + 10_000).await {
                    Ok(true) => {
                        if let Err(e) = reconcile_once(&app).await {
                            tracing::warn!(error = %e, "sandbox reconciliation failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "sandbox lease"),
                }
            }
        }
    }
    // Shutting down: this node's sandboxes stop with it; a center records that now (an edge's
    // center notices from its reports).
    let ids = app.runner.report(&app.config.sandbox).running;
    app.runner.stop_all(&app.config).await;
    if center {
        for id in ids {
            if let Err(e) = lifecycle::mark_stopped(&app, &id, "its node shut down").await {
                tracing::warn!(sandbox = %id, error = %e.message, "could not record a stopped sandbox");
            }
        }
    }
}

async fn reconcile_once(app: &Arc<App>) -> anyhow::Result<()> {
    let now = now_millis();
    // The rows of the nodes running sandboxes, read as needed (not every node of the cluster
    // every 2 s: thousands of edges may run none).
    let mut nodes: std::collections::HashMap<String, Option<meta::NodeRecord>> =
        std::collections::HashMap::new();
    for sb in model::list(app.meta.as_ref(), None).await? {
        match sb.status {
            Status::Running => {
                if !nodes.contains_key(&sb.node) {
                    let row = app.meta.get_node(&sb.node).await?;
                    nodes.insert(sb.node.clone(), row);
                }
                let Some(n) = nodes.get(&sb.node).and_then(Option::as_ref) else {
                    lifecycle::mark_stopped(app, &sb.id, "its node is gone")
                        .await
                        .ok();
                    continue;
                };
                let lost = n.status == NodeStatus::Offline || now - n.last_heartbeat > NODE_LOST_MS;
                let started = sb.started_at.unwrap_or(sb.created_at);
                let report = lifecycle::report_of(n);
                let unlisted = sb.node != app.node_id
                    && n.last_heartbeat > started + REPORT_SLACK_MS
                    && report.as_ref().is_some_and(|r| !r.running.contains(&sb.id));
                // Why, when the runner said (an edge's idle timeout, a process that ended).
                let reason = report
                    .as_ref()
                    .and_then(|r| r.ended.iter().find(|e| e.id == sb.id))
                    .map(|e| e.reason.clone());
                let here_gone = sb.node == app.node_id && !app.runner.has(&sb.id);
                if lost {
                    let why = format!("node {} is offline", sb.node);
                    lifecycle::mark_stopped(app, &sb.id, &why).await.ok();
                } else if unlisted || here_gone {
                    let why = reason
                        .as_deref()
                        .unwrap_or("its node no longer runs it (restarted or lost it)");
                    lifecycle::mark_stopped(app, &sb.id, why).await.ok();
                }
            }
            Status::Pending if now - sb.created_at > PENDING_MAX_MS => {
                // The node placing it went away mid-way: release the capacity and the quota.
                let why = "placement did not finish (the node placing it went away)";
                let failed = model::update(app.meta.as_ref(), &sb.id, |s| {
                    if s.status != Status::Pending {
                        return false;
                    }
                    s.status = Status::Failed;
                    s.error = Some(why.into());
                    s.stopped_at = Some(now);
                    true
                })
                .await?;
                if let Some(f) = failed.filter(|f| f.status == Status::Failed) {
                    if !f.node.is_empty() {
                        lifecycle::stop_on_node(app, &f, true).await;
                    }
                    lifecycle::emit(app, &f, "sandbox.failed").await;
                }
            }
            Status::Archived if sb.delete_after.is_some_and(|t| t <= now) => {
                if !sb.node.is_empty() {
                    lifecycle::stop_on_node(app, &sb, true).await;
                }
                if model::remove(app.meta.as_ref(), &sb.id).await? {
                    tracing::info!(sandbox = %sb.id, "archived sandbox removed after its grace period");
                    lifecycle::emit(app, &sb, "sandbox.deleted").await;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
