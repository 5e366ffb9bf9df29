//! A center's liveness lease and the automatic failover of a dead center's pods (ARCHITECTURE
//! "Failover").
//!
//! Every center runs [`run`]: once a second it
//! 1. renews its own lease when half of the TTL has passed since the last attempt
//!    ([`xpod_storage::meta::LeaseStore::renew_liveness`], bounded by half the TTL; the local
//!    view of it is [`crate::lease::Lease`], which fences this node's writes when it lapses);
//! 2. if its own lease has been renewed on time for at least TTL + window (so after an outage
//!    of the database every center has had time to renew before anyone judges the others),
//!    looks for centers whose lease has stayed ended for longer than the stability window,
//!    and moves each of their pods to a live center in one compare-and-set per pod
//!    ([`xpod_storage::meta::PodStore::rehome_pod`]: epoch + 1, change-feed event, so every
//!    center and the DNS zone follow at once). Targets: the live (and not revoked) centers of
//!    the dead center's region, else every such center, spread by the pod's id. Centers race for the same pods;
//!    the compare-and-set lets exactly one move each. Each move is audited (`pod.failover`).
//!
//! A center that comes back sees in the change feed that it no longer owns those pods and
//! serves them through the mesh; it takes nothing back by itself. Pods of edges never move
//! (their data lives on the edge): edges hold no lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_storage::meta::{self, Liveness, MetaStore};

/// How often the loop looks.
const TICK: Duration = Duration::from_secs(1);

/// What the loop needs: the node's store, lease, id, `[failover]` and metrics.
pub struct Failover {
    app: Arc<crate::app::App>,
    meta: Arc<dyn MetaStore>,
    config: xpod_config::FailoverConfig,
}

impl Failover {
    pub fn new(app: Arc<crate::app::App>) -> Failover {
        Failover {
            meta: app.meta.clone(),
            config: app.config.failover.clone(),
            app,
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.lease_ttl_secs)
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.stability_window_secs)
    }

    /// Renews this node's lease once (at most half the TTL): whether it succeeded.
    pub async fn renew(&self) -> bool {
        let sent = Instant::now();
        let ttl = self.ttl();
        let call = self
            .meta
            .renew_liveness(&self.app.node_id, ttl.as_millis() as i64);
        match tokio::time::timeout(ttl / 2, call).await {
            Ok(Ok(())) => {
                self.app.lease.renewed(sent, ttl);
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "liveness lease: renewal failed");
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?ttl / 2, "liveness lease: renewal timed out");
                false
            }
        }
    }

    /// One look for dead centers; returns how many pods this node moved.
    pub async fn rehome_dead(&self) -> meta::MetaResult<usize> {
        let all = self.meta.liveness().await?;
        let window_ms = self.window().as_millis() as i64;
        // A revoked center may still renew its lease; it never receives pods.
        let live: Vec<&Liveness> = all
            .iter()
            .filter(|l| l.expired_for_ms < 0 && !self.app.policies.is_revoked(&l.node_id))
            .collect();
        let mut moved = 0;
        for dead in all.iter().filter(|l| l.expired_for_ms > window_ms) {
            let pods = self.meta.pods_owned_by(&dead.node_id).await?;
            if pods.is_empty() {
                continue;
            }
            let Some(targets) = targets_for(dead, &live) else {
                tracing::warn!(dead = %dead.node_id, pods = pods.len(), "failover: no live center to take the pods of a dead center");
                continue;
            };
            for pod in pods {
                let to = pick(&targets, &pod.pod_id);
                let Some(rec) = self
                    .meta
                    .rehome_pod(&pod.pod_id, &dead.node_id, pod.epoch, to)
                    .await?
                else {
                    continue; // another center moved it first
                };
                moved += 1;
                self.app.metrics.pod_failed_over();
                tracing::info!(pod = %rec.pod_id, from = %dead.node_id, to = %rec.node_id, epoch = rec.epoch, lease_ended_ms_ago = dead.expired_for_ms, "failover: pod re-homed");
                let entry = meta::NewAudit {
                    at: meta::now_millis(),
                    actor: format!("node:{}", self.app.node_id),
                    action: "pod.failover".into(),
                    target: rec.pod_id.clone(),
                    details: json!({
                        "from": dead.node_id,
                        "to": rec.node_id,
                        "epoch": rec.epoch,
                        "leaseEndedMsAgo": dead.expired_for_ms,
                    }),
                    trace_id: String::new(),
                };
                if let Err(e) = self.meta.append_audit(&entry).await {
                    self.app.metrics.audit_failed();
                    tracing::error!(error = %e, pod = %rec.pod_id, "audit entry of a failover lost");
                }
            }
        }
        Ok(moved)
    }
}

/// The live centers that may take `dead`'s pods: those of its region, else all (`None`: none).
fn targets_for<'a>(dead: &Liveness, live: &[&'a Liveness]) -> Option<Vec<&'a str>> {
    let same: Vec<&str> = live
        .iter()
        .filter(|l| l.region == dead.region && l.node_id != dead.node_id)
        .map(|l| l.node_id.as_str())
        .collect();
    if !same.is_empty() {
        return Some(same);
    }
    let any: Vec<&str> = live
        .iter()
        .filter(|l| l.node_id != dead.node_id)
        .map(|l| l.node_id.as_str())
        .collect();
    (!any.is_empty()).then_some(any)
}

/// The target of `pod_id` among `targets` (sorted by id): the same on every center that sees
/// the same live set, spread evenly.
fn pick<'a>(targets: &[&'a str], pod_id: &str) -> &'a str {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    targets[(h % targets.len() as u64) as usize]
}

/// Renews this center's lease and re-homes dead centers' pods until `shutdown` fires.
pub async fn run(f: Failover, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut renew = tokio::time::interval(f.ttl() / 2);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await; // the node renewed once before it started serving
    let mut look = tokio::time::interval(TICK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let judge_after = f.ttl() + f.window();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = renew.tick() => {
                f.renew().await;
            }
            _ = look.tick() => {
                if !f.config.enabled
                    || f.app.lease.healthy_for(Instant::now()).is_none_or(|h| h < judge_after)
                {
                    continue;
                }
                if let Err(e) = f.rehome_dead().await {
                    tracing::warn!(error = %e, "failover: looking for dead centers failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(id: &str, region: &str, expired: i64) -> Liveness {
        Liveness {
            node_id: id.into(),
            region: region.into(),
            expired_for_ms: expired,
        }
    }

    #[test]
    fn targets_prefer_the_dead_centers_region_and_spread() {
        let (a, b, c) = (l("a", "eu", -1), l("b", "eu", -1), l("c", "us", -1));
        let live = [&a, &b, &c];
        let dead = l("d", "eu", 20_000);
        assert_eq!(targets_for(&dead, &live), Some(vec!["a", "b"]));
        let far = l("e", "ap", 20_000);
        assert_eq!(targets_for(&far, &live), Some(vec!["a", "b", "c"]));
        assert_eq!(targets_for(&far, &[]), None);
        let targets = ["a", "b", "c"];
        let mut seen = std::collections::HashSet::new();
        for i in 0..60 {
            let pod = format!("pod-{i}");
            assert_eq!(pick(&targets, &pod), pick(&targets, &pod), "stable");
            seen.insert(pick(&targets, &pod));
        }
        assert_eq!(seen.len(), 3, "spread over every target");
    }
}
