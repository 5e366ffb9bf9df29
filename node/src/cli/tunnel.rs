//! `xpod reload` and `xpod tunnel show|expose|unexpose|forward|unforward`: an edge's services
//! and a center's TCP forwards changed on a running node, without a restart
//! (`crate::reload`; admin key of that node).

use clap::Subcommand;
use http::Method;

use super::remote::{client, print, Remote};
use crate::api_types::node::{PutForward, PutService, Tunnel, TunnelChange};
use crate::client::Answer;

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
    let a: Answer<TunnelChange> = client(&remote)?
        .send(Method::POST, "/api/v1/node/reload", None::<&()>)
        .await?;
    print(&remote, &a, summary);
    Ok(())
}

pub(crate) async fn run(cmd: TunnelCmd) -> anyhow::Result<()> {
    let (remote, method, path, body) = match cmd {
        TunnelCmd::Show { remote } => {
            let a: Answer<Tunnel> = client(&remote)?.get("/api/v1/node/tunnel").await?;
            print(&remote, &a, |t| {
                for svc in t.services.iter().flatten() {
                    println!("service {} {} → {}", svc.name, svc.kind, svc.local);
                }
                for f in t.forwards.iter().flatten() {
                    println!("forward {} → {}/{}", f.listen, f.node, f.service);
                }
                if t.services.is_none() && t.forwards.is_none() {
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
            Some(serde_json::to_value(PutService {
                local: local
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--local `{local}`: expected IP:PORT"))?,
                kind: Some(kind),
                proxy_protocol,
            })?),
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
            Some(serde_json::to_value(PutForward { node, service })?),
        ),
        TunnelCmd::Unforward { listen, remote } => (
            remote,
            Method::DELETE,
            format!("/api/v1/node/forwards/{listen}"),
            None,
        ),
    };
    let a: Answer<TunnelChange> = client(&remote)?.send(method, &path, body.as_ref()).await?;
    print(&remote, &a, summary);
    Ok(())
}

fn summary(c: &TunnelChange) {
    let o = &c.outcome;
    if o.applied.is_empty() {
        println!("nothing changed");
    }
    for line in &o.applied {
        println!("changed {line}");
    }
    for section in &o.restart_needed {
        println!("needs a restart: {section} (changed in the file, left as it runs)");
    }
    if let Some(note) = &c.note {
        println!("note: {note}");
    }
}
