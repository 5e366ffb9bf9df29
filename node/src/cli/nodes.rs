//! `xpod nodes list|show|set|shell|revoke`: the cluster's nodes, what each is granted
//! (`crate::node_policy`: sandbox slots, pod prefixes), a shell on an edge
//! ([`super::shell`]) and revocation (admin key).

use clap::Subcommand;
use http::Method;

use super::remote::{client, or_dash, print, Remote};
use crate::api_types::cluster::{NodeList, NodeView, SetPolicy};
use crate::client::Answer;
use crate::node_policy::Policy;

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
        /// An account whose pods may be moved onto this edge (repeatable; replaces the list;
        /// `*` for any account's). The device's own `[tunnel] accept_pods` counts as well.
        #[arg(long = "accept-pods", value_name = "ACCOUNT")]
        accept_pods: Vec<String>,
        /// Remove every account from the grant's `acceptPods`.
        #[arg(long, conflicts_with = "accept_pods")]
        clear_accept_pods: bool,
        /// Bytes per second the centers relay to and from this edge, each way (`10MB`,
        /// `512KiB`); `none` removes the limit.
        #[arg(long, value_name = "RATE")]
        bandwidth: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// A shell on an edge device, in a terminal: `xpod nodes shell EDGE [-- CMD ARGS…]`, as
    /// the user xpod runs as there. Only when the edge's own configuration allows it
    /// (`[tunnel] terminal = true`); audited; the exit code is the command's.
    Shell {
        node_id: String,
        /// Working directory on the device (default: the home directory).
        #[arg(long)]
        cwd: Option<String>,
        /// The program and its arguments (default: the shell).
        #[arg(last = true)]
        cmd: Vec<String>,
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
            let a: Answer<NodeView> = client(&remote)?
                .get(&format!("/.cluster/nodes/{node_id}"))
                .await?;
            print(&remote, &a, |v| {
                let n = &v.node;
                println!(
                    "{} ({}, {}, {})",
                    n.node_id,
                    n.node_type.as_str(),
                    n.region,
                    n.status.as_str()
                );
                let p = &v.policy;
                let slots = p
                    .sandbox_slots
                    .map_or("no grant".to_string(), |n| n.to_string());
                println!("sandbox slots granted: {slots}");
                println!("pod prefixes: {:?}", p.pod_prefixes);
                if !p.accept_pods.is_empty() {
                    println!("accepts pods of: {:?}", p.accept_pods);
                }
                if let Some(rate) = p.bandwidth_bytes_per_sec {
                    println!(
                        "bandwidth: {} per second each way",
                        xpod_config::ByteSize(rate)
                    );
                }
                if let Some(at) = p.revoked_at {
                    println!("REVOKED at {at} by {}", or_dash(&p.revoked_by));
                }
            });
            Ok(())
        }
        NodesCmd::Set {
            node_id,
            sandbox_slots,
            pod_prefixes,
            clear_pod_prefixes,
            accept_pods,
            clear_accept_pods,
            bandwidth,
            remote,
        } => {
            check_id(&node_id)?;
            let mut body = SetPolicy::default();
            match bandwidth.as_deref() {
                None => {}
                Some("none") => body.bandwidth_bytes_per_sec = Some(None),
                Some(rate) => {
                    let b: xpod_config::ByteSize = rate.parse().map_err(|e| {
                        anyhow::anyhow!("--bandwidth `{rate}`: {e} (e.g. 10MB, 512KiB or none)")
                    })?;
                    body.bandwidth_bytes_per_sec = Some(Some(b.bytes()));
                }
            }
            match sandbox_slots.as_deref() {
                None => {}
                Some("none") => body.sandbox_slots = Some(None),
                Some(n) => {
                    let n: u32 = n.parse().map_err(|_| {
                        anyhow::anyhow!("--sandbox-slots `{n}`: expected a number or `none`")
                    })?;
                    body.sandbox_slots = Some(Some(n));
                }
            }
            if clear_pod_prefixes {
                body.pod_prefixes = Some(Vec::new());
            } else if !pod_prefixes.is_empty() {
                body.pod_prefixes = Some(pod_prefixes);
            }
            if clear_accept_pods {
                body.accept_pods = Some(Vec::new());
            } else if !accept_pods.is_empty() {
                body.accept_pods = Some(accept_pods);
            }
            if body.sandbox_slots.is_none()
                && body.bandwidth_bytes_per_sec.is_none()
                && body.pod_prefixes.is_none()
                && body.accept_pods.is_none()
            {
                anyhow::bail!(
                    "nothing to set: give --sandbox-slots, --pod-prefix, --clear-pod-prefixes, --accept-pods, --clear-accept-pods or --bandwidth"
                );
            }
            let a: Answer<Policy> = client(&remote)?
                .send(
                    Method::PATCH,
                    &format!("/.cluster/nodes/{node_id}"),
                    Some(&body),
                )
                .await?;
            print(&remote, &a, |_| println!("node {node_id}: {}", a.json));
            Ok(())
        }
        NodesCmd::Shell {
            node_id,
            cwd,
            cmd,
            remote,
        } => {
            check_id(&node_id)?;
            let path = format!("/.cluster/nodes/{node_id}/terminal");
            let query = super::shell::query(&cmd, cwd.as_deref());
            let code = super::shell::run(&remote, &path, &query).await?;
            std::process::exit(code);
        }
        NodesCmd::Revoke { node_id, remote } => {
            check_id(&node_id)?;
            let a: Answer<Policy> = client(&remote)?
                .send(
                    Method::POST,
                    &format!("/.cluster/nodes/{node_id}/revoke"),
                    None::<&()>,
                )
                .await?;
            print(&remote, &a, |_| {
                println!("revoked node {node_id}: every center refuses it from now on")
            });
            Ok(())
        }
    }
}

async fn nodes_list(remote: Remote) -> anyhow::Result<()> {
    let a: Answer<NodeList> = client(&remote)?.get("/.cluster/nodes").await?;
    print(&remote, &a, |list| {
        println!(
            "{:<22} {:<7} {:<10} {:<9} {:>9}  {:<9} HELD BY",
            "NODE", "TYPE", "REGION", "STATUS", "SEEN", "TRANSPORT"
        );
        let now = xpod_storage::meta::now_millis();
        for n in &list.nodes {
            let seen = match n.last_heartbeat {
                t if t > 0 => format!("{}s ago", (now - t).max(0) / 1000),
                _ => "never".to_string(),
            };
            // An edge's tunnel: QUIC over UDP, or over TCP (`tunnel.transport`).
            let transport = n.capacity["transport"].as_str().unwrap_or("-");
            println!(
                "{:<22} {:<7} {:<10} {:<9} {:>9}  {:<9} {}",
                n.node_id,
                n.node_type.as_str(),
                n.region,
                n.status.as_str(),
                seen,
                transport,
                n.attached_centers.join(",")
            );
        }
    });
    Ok(())
}
