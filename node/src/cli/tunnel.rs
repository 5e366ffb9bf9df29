//! `xpod reload` and `xpod tunnel show|expose|unexpose|forward|unforward`: an edge's services
//! and a center's TCP forwards changed on a running node, without a restart
//! (`crate::reload`; admin key of that node).

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};

use super::remote::{client, print, s, Remote};

#[derive(Subcommand)]
pub(crate) enum TunnelCmd {
    /// The services (edge) and TCP forwards (center) the node runs now.
    Show {
        #[command(flatten)]
        remote: Remote,
    },
    /// Publish (or change) a local service of this edge until the next reload or restart.
    Expose {
        /// The service's name (a DNS label: `<name>.<node>.<edge_domain>`).
        name: String,
        /// Where the edge reaches it, IP:PORT.
        #[arg(long)]
        local: String,
        /// http, tls or tcp.
        #[arg(long, default_value = "http")]
        kind: String,
        /// For tls and tcp: start each connection with a PROXY protocol v2 header.
        #[arg(long)]
        proxy_protocol: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop publishing a service of this edge (until the next reload or restart).
    Unexpose {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Forward a TCP port of this center to an edge's service (until the next reload or
    /// restart).
    Forward {
        /// The address to listen on, IP:PORT.
        listen: String,
        /// The edge's node id.
        #[arg(long)]
        node: String,
        /// The edge's service (kind = "tcp").
        #[arg(long)]
        service: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a TCP forward of this center (until the next reload or restart).
    Unforward {
        listen: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `xpod reload`: the node re-reads its configuration file, as on SIGHUP.
pub(crate) async fn reload(remote: Remote) -> anyhow::Result<()> {
    let (_, v) = client(&remote)?
        .call(Method::POST, "/api/v1/node/reload", None)
        .await?;
    print(&remote, &v, summary);
    Ok(())
}

pub(crate) async fn run(cmd: TunnelCmd) -> anyhow::Result<()> {
    let (remote, method, path, body) = match cmd {
        TunnelCmd::Show { remote } => {
            let (_, v) = client(&remote)?
                .call(Method::GET, "/api/v1/node/tunnel", None)
                .await?;
            print(&remote, &v, |v| {
                for svc in v["services"].as_array().into_iter().flatten() {
                    println!(
                        "service {} {} → {}",
                        s(svc, "name"),
                        s(svc, "kind"),
                        s(svc, "local")
                    );
                }
                for f in v["forwards"].as_array().into_iter().flatten() {
                    println!(
                        "forward {} → {}/{}",
                        s(f, "listen"),
                        s(f, "node"),
                        s(f, "service")
                    );
                }
                if v["services"].is_null() && v["forwards"].is_null() {
                    println!("this node runs no tunnels");
                }
            });
            return Ok(());
        }
        TunnelCmd::Expose {
            name,
            local,
            kind,
            proxy_protocol,
            remote,
        } => (
            remote,
            Method::PUT,
            format!("/api/v1/node/services/{name}"),
            Some(json!({"local": local, "kind": kind, "proxyProtocol": proxy_protocol})),
        ),
        TunnelCmd::Unexpose { name, remote } => (
            remote,
            Method::DELETE,
            format!("/api/v1/node/services/{name}"),
            None,
        ),
        TunnelCmd::Forward {
            listen,
            node,
            service,
            remote,
        } => (
            remote,
            Method::PUT,
            format!("/api/v1/node/forwards/{listen}"),
            Some(json!({"node": node, "service": service})),
        ),
        TunnelCmd::Unforward { listen, remote } => (
            remote,
            Method::DELETE,
            format!("/api/v1/node/forwards/{listen}"),
            None,
        ),
    };
    let (_, v) = client(&remote)?.call(method, &path, body.as_ref()).await?;
    print(&remote, &v, summary);
    Ok(())
}

fn summary(v: &Value) {
    let applied = v["applied"].as_array().cloned().unwrap_or_default();
    if applied.is_empty() {
        println!("nothing changed");
    }
    for line in applied {
        println!("changed {}", line.as_str().unwrap_or_default());
    }
    for section in v["restartNeeded"].as_array().into_iter().flatten() {
        println!(
            "needs a restart: {} (changed in the file, left as it runs)",
            section.as_str().unwrap_or_default()
        );
    }
    if let Some(note) = v["note"].as_str() {
        println!("note: {note}");
    }
}
