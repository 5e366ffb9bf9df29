//! `xpod pods create|list|show|migrate`: the cluster's pods (admin key).

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};

use super::remote::{client, print, s, Remote};
use crate::client::ApiClient;

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
    /// Move a pod to another node. Routing follows at once (every center forwards requests for
    /// the pod to its new owner); writes racing the move fail with a retryable 503.
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

fn pod_line(p: &Value) {
    println!(
        "{:<24} {:<20} {:>5}  {:<18} {}",
        s(p, "podId"),
        s(p, "nodeId"),
        p.get("epoch").and_then(Value::as_i64).unwrap_or(0),
        s(p, "accessMode"),
        p.get("migrationStatus")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
}

pub(crate) async fn run(cmd: PodsCmd) -> anyhow::Result<()> {
    match cmd {
        PodsCmd::Create {
            pod,
            access_mode,
            remote,
        } => {
            let (_, v) = client(&remote)?
                .call(
                    Method::POST,
                    "/.cluster/pods",
                    Some(&json!({"podId": pod, "accessMode": access_mode})),
                )
                .await?;
            print(&remote, &v, |v| {
                println!(
                    "created pod {} on node {} ({})",
                    s(v, "podId"),
                    s(v, "nodeId"),
                    s(v, "baseUrl")
                )
            });
        }
        PodsCmd::List { remote } => {
            let (_, v) = client(&remote)?
                .call(Method::GET, "/.cluster/pods", None)
                .await?;
            print(&remote, &v, |v| {
                println!(
                    "{:<24} {:<20} {:>5}  {:<18} MIGRATION",
                    "POD", "NODE", "EPOCH", "ACCESS"
                );
                for p in v["pods"].as_array().into_iter().flatten() {
                    pod_line(p);
                }
            });
        }
        PodsCmd::Show { pod, remote } => {
            xpod_routing::target::validate_pod_id(&pod)?;
            let (_, v) = client(&remote)?
                .call(Method::GET, &format!("/.cluster/pods/{pod}"), None)
                .await?;
            print(&remote, &v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
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
            let (_, v) = c
                .call(
                    Method::POST,
                    &format!("/.cluster/pods/{pod}/migrate"),
                    Some(&json!({"targetNode": to})),
                )
                .await?;
            print(&remote, &v, |v| {
                println!(
                    "pod {} now belongs to {} (epoch {}); migration {}",
                    s(v, "podId"),
                    s(v, "nodeId"),
                    v["epoch"],
                    s(v, "migrationStatus")
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
        let (_, v) = c
            .call(Method::GET, &format!("/.cluster/pods/{pod}"), None)
            .await?;
        let status = v["migrationStatus"].as_str().unwrap_or("none").to_string();
        let progress = v["migrationProgress"].as_i64().unwrap_or(0).clamp(0, 100);
        if !json {
            let filled = (progress / 5) as usize;
            eprint!(
                "\r[{}{}] {progress:>3}%  {status}",
                "#".repeat(filled),
                "-".repeat(20 - filled)
            );
        }
        match status.as_str() {
            "done" | "none" => {
                if !json {
                    eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
                }
                return Ok(());
            }
            "failed" => {
                if !json {
                    eprintln!();
                }
                anyhow::bail!("migration of pod {pod} failed");
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
}
