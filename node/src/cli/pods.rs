//! `xpod pods create|list|show|migrate`: the cluster's pods (admin key).

use clap::Subcommand;
use http::Method;
use xpod_storage::meta::{AccessMode, MigrationStatus, PodRecord};

use super::remote::{client, print, Remote};
use crate::api_types::cluster::{CreatePod, MigratePod, PodList};
use crate::client::{Answer, ApiClient};

#[derive(Subcommand)]
pub(crate) enum PodsCmd {
    /// Create a pod owned by the node you talk to.
    Create {
        /// Pod id: 1–63 of a-z, 0-9 and '-' (it becomes a DNS label in subdomain mode).
        pod: String,
        /// private (default: a key with access is needed), public-read or public-read-write.
        #[arg(long, default_value = "private")]
        access_mode: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List pods with their owner node and epoch.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one pod (owner, epoch, migration state).
    Show {
        pod: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move a pod to another node: a center, or an edge device (onto an edge only if it accepts
    /// the pod's account: its `[tunnel] accept_pods`, or `xpod nodes set EDGE --accept-pods`).
    /// Routing follows at once (every center forwards requests for the pod to its new owner);
    /// writes racing the move fail with a retryable 503. An admin key moves any pod; the pod's
    /// owner may move it onto and off edges.
    Migrate {
        pod: String,
        /// The node that will own the pod (must be online).
        #[arg(long = "to", value_name = "NODE")]
        to: String,
        /// Wait until the migration is done, showing its progress.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

fn pod_line(p: &PodRecord) {
    println!(
        "{:<24} {:<20} {:>5}  {:<18} {}",
        p.pod_id,
        p.node_id,
        p.epoch,
        p.access_mode.as_str(),
        p.migration_status.map_or("", MigrationStatus::as_str)
    );
}

pub(crate) async fn run(cmd: PodsCmd) -> anyhow::Result<()> {
    match cmd {
        PodsCmd::Create {
            pod,
            access_mode,
            remote,
        } => {
            let access_mode = AccessMode::parse(&access_mode).ok_or_else(|| {
                anyhow::anyhow!(
                    "--access-mode `{access_mode}`: expected private, public-read or public-read-write"
                )
            })?;
            let body = CreatePod {
                pod_id: pod,
                access_mode: Some(access_mode),
                account_id: None,
                node_id: None,
            };
            let a: Answer<PodRecord> = client(&remote)?
                .send(Method::POST, "/.cluster/pods", Some(&body))
                .await?;
            print(&remote, &a, |p| {
                println!(
                    "created pod {} on node {} ({})",
                    p.pod_id, p.node_id, p.base_url
                )
            });
        }
        PodsCmd::List { remote } => {
            let a: Answer<PodList> = client(&remote)?.get("/.cluster/pods").await?;
            print(&remote, &a, |list| {
                println!(
                    "{:<24} {:<20} {:>5}  {:<18} MIGRATION",
                    "POD", "NODE", "EPOCH", "ACCESS"
                );
                for p in &list.pods {
                    pod_line(p);
                }
            });
        }
        PodsCmd::Show { pod, remote } => {
            xpod_routing::target::validate_pod_id(&pod)?;
            let a: Answer<PodRecord> = client(&remote)?
                .get(&format!("/.cluster/pods/{pod}"))
                .await?;
            print(&remote, &a, |_| {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&a.json).unwrap_or_default()
                )
            });
        }
        PodsCmd::Migrate {
            pod,
            to,
            wait,
            remote,
        } => {
            xpod_routing::target::validate_pod_id(&pod)?;
            xpod_config::validate_node_id(&to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            let c = client(&remote)?;
            let a: Answer<PodRecord> = c
                .send(
                    Method::POST,
                    &format!("/.cluster/pods/{pod}/migrate"),
                    Some(&MigratePod { target_node: to }),
                )
                .await?;
            print(&remote, &a, |p| {
                println!(
                    "pod {} now belongs to {} (epoch {}); migration {}",
                    p.pod_id,
                    p.node_id,
                    p.epoch,
                    p.migration_status.map_or("-", MigrationStatus::as_str)
                )
            });
            if wait {
                wait_migrated(&c, &pod, remote.json).await?;
            }
        }
    }
    Ok(())
}

/// Polls the pod until its migration is `done` (or `failed`), with a progress bar on stderr.
async fn wait_migrated(c: &ApiClient, pod: &str, json: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let p: PodRecord = c.get(&format!("/.cluster/pods/{pod}")).await?.body;
        let progress = i64::from(p.migration_progress.unwrap_or(0)).clamp(0, 100);
        let status = p.migration_status.map_or("none", MigrationStatus::as_str);
        if !json {
            let filled = (progress / 5) as usize;
            eprint!(
                "\r[{}{}] {progress:>3}%  {status}",
                "#".repeat(filled),
                "-".repeat(20 - filled)
            );
        }
        match p.migration_status {
            None | Some(MigrationStatus::Done) => {
                if !json {
                    eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
                }
                return Ok(());
            }
            Some(MigrationStatus::Failed) => {
                if !json {
                    eprintln!();
                }
                anyhow::bail!("migration of pod {pod} failed");
            }
            Some(MigrationStatus::Syncing) => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
        }
    }
}
