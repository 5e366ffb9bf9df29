//! `xpod nodes list|show|set|revoke`: the cluster's nodes, what each is granted
//! (`crate::node_policy`: sandbox slots, pod prefixes) and revocation (admin key).

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};

use super::remote::{client, print, s, Remote};

#[derive(Subcommand)]
pub(crate) enum NodesCmd {
    /// List nodes: type, region, status, last heartbeat, an edge's transport (quic or tcp), the
    /// centers holding each edge.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// One node: its row and what the cluster grants it.
    Show {
        node_id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Grant a node sandbox slots or pod-id prefixes, or limit an edge's bandwidth. An edge offers no sandboxes unless
    /// granted slots, and claims no pod id the cluster did not assign it unless the id starts
    /// with a granted prefix.
    Set {
        node_id: String,
        /// Sandbox slots placement may use on the node (caps what it reports); `none` removes
        /// the grant.
        #[arg(long)]
        sandbox_slots: Option<String>,
        /// A pod-id prefix the edge may claim (repeatable; replaces the list). `--pod-prefix ""`
        /// is refused; use `--clear-pod-prefixes` to remove them all.
        #[arg(long = "pod-prefix")]
        pod_prefixes: Vec<String>,
        /// Remove every pod-id prefix.
        #[arg(long, conflicts_with = "pod_prefixes")]
        clear_pod_prefixes: bool,
        /// Bytes per second the centers relay to and from this edge, each way (`10MB`,
        /// `512KiB`); `none` removes the limit.
        #[arg(long, value_name = "RATE")]
        bandwidth: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a node: every center refuses its certificate from the next handshake on and
    /// closes its live tunnel within seconds; its id cannot join again.
    Revoke {
        node_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn check_id(id: &str) -> anyhow::Result<()> {
    xpod_config::validate_node_id(id).map_err(|e| anyhow::anyhow!("node id `{id}`: {e}"))
}

pub(crate) async fn run(cmd: NodesCmd) -> anyhow::Result<()> {
    match cmd {
        NodesCmd::List { remote } => nodes_list(remote).await,
        NodesCmd::Show { node_id, remote } => {
            check_id(&node_id)?;
            let (_, v) = client(&remote)?
                .call(Method::GET, &format!("/.cluster/nodes/{node_id}"), None)
                .await?;
            print(&remote, &v, |v| {
                println!(
                    "{} ({}, {}, {})",
                    s(v, "nodeId"),
                    s(v, "nodeType"),
                    s(v, "region"),
                    s(v, "status")
                );
                let p = &v["policy"];
                let slots = p["sandboxSlots"]
                    .as_u64()
                    .map_or("no grant".to_string(), |n| n.to_string());
                println!("sandbox slots granted: {slots}");
                println!("pod prefixes: {}", p["podPrefixes"]);
                if let Some(rate) = p["bandwidthBytesPerSec"].as_u64() {
                    println!(
                        "bandwidth: {} per second each way",
                        xpod_config::ByteSize(rate)
                    );
                }
                if let Some(at) = p["revokedAt"].as_i64() {
                    println!("REVOKED at {at} by {}", s(p, "revokedBy"));
                }
            });
            Ok(())
        }
        NodesCmd::Set {
            node_id,
            sandbox_slots,
            pod_prefixes,
            clear_pod_prefixes,
            bandwidth,
            remote,
        } => {
            check_id(&node_id)?;
            let mut body = json!({});
            match bandwidth.as_deref() {
                None => {}
                Some("none") => body["bandwidthBytesPerSec"] = Value::Null,
                Some(rate) => {
                    let b: xpod_config::ByteSize = rate.parse().map_err(|e| {
                        anyhow::anyhow!("--bandwidth `{rate}`: {e} (e.g. 10MB, 512KiB or none)")
                    })?;
                    body["bandwidthBytesPerSec"] = json!(b.bytes());
                }
            }
            match sandbox_slots.as_deref() {
                None => {}
                Some("none") => body["sandboxSlots"] = Value::Null,
                Some(n) => {
                    let n: u32 = n.parse().map_err(|_| {
                        anyhow::anyhow!("--sandbox-slots `{n}`: expected a number or `none`")
                    })?;
                    body["sandboxSlots"] = json!(n);
                }
            }
            if clear_pod_prefixes {
                body["podPrefixes"] = json!([]);
            } else if !pod_prefixes.is_empty() {
                body["podPrefixes"] = json!(pod_prefixes);
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                anyhow::bail!(
                    "nothing to set: give --sandbox-slots, --pod-prefix, --clear-pod-prefixes or --bandwidth"
                );
            }
            let (_, v) = client(&remote)?
                .call(
                    Method::PATCH,
                    &format!("/.cluster/nodes/{node_id}"),
                    Some(&body),
                )
                .await?;
            print(&remote, &v, |v| println!("node {node_id}: {v}"));
            Ok(())
        }
        NodesCmd::Revoke { node_id, remote } => {
            check_id(&node_id)?;
            let (_, v) = client(&remote)?
                .call(
                    Method::POST,
                    &format!("/.cluster/nodes/{node_id}/revoke"),
                    None,
                )
                .await?;
            print(&remote, &v, |_| {
                println!("revoked node {node_id}: every center refuses it from now on")
            });
            Ok(())
        }
    }
}

async fn nodes_list(remote: Remote) -> anyhow::Result<()> {
    let (_, v) = client(&remote)?
        .call(Method::GET, "/.cluster/nodes", None)
        .await?;
    print(&remote, &v, |v| {
        println!(
            "{:<22} {:<7} {:<10} {:<9} {:>9}  {:<9} HELD BY",
            "NODE", "TYPE", "REGION", "STATUS", "SEEN", "TRANSPORT"
        );
        let now = xpod_storage::meta::now_millis();
        for n in v["nodes"].as_array().into_iter().flatten() {
            let seen = match n["lastHeartbeat"].as_i64() {
                Some(t) if t > 0 => format!("{}s ago", (now - t).max(0) / 1000),
                _ => "never".to_string(),
            };
            let held: Vec<&str> = n["attachedCenters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            // An edge's tunnel: QUIC over UDP, or over TCP (`tunnel.transport`).
            let transport = n["capacity"]["transport"].as_str().unwrap_or("-");
            println!(
                "{:<22} {:<7} {:<10} {:<9} {:>9}  {:<9} {}",
                s(n, "nodeId"),
                s(n, "nodeType"),
                s(n, "region"),
                s(n, "status"),
                seen,
                transport,
                held.join(",")
            );
        }
    });
    Ok(())
}
