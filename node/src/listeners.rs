//! Every socket a node serves, bound by the caller of [`crate::run`]: `xpod up` binds them from
//! the configuration ([`Listeners::bind`], so a taken port stops start-up before anything else
//! happens); a test may bind its own (port 0) and read the addresses back.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use xpod_config::{Config, Role, TunnelForward};

/// See the module docs.
pub struct Listeners {
    /// HTTP (`http.listen`).
    pub http: TcpListener,
    /// The TLS port of a center (`tunnel.tls_listen`): HTTPS and passthrough to edges.
    pub tls: Option<TcpListener>,
    /// The QUIC endpoint of a center with a node certificate (`tunnel.quic_listen`, else the
    /// HTTP address's port on UDP).
    pub quic: Option<std::net::UdpSocket>,
    /// Authoritative DNS (`dns.listen`), UDP and TCP.
    pub dns: Option<(UdpSocket, TcpListener)>,
    /// A center's TCP forwards to edges' services (`[[tunnel.forwards]]`).
    pub forwards: Vec<(TunnelForward, TcpListener)>,
}

impl Listeners {
    /// An HTTP listener only (a lone node without tunnels, TLS or DNS).
    pub fn http_only(http: TcpListener) -> Listeners {
        Listeners {
            http,
            tls: None,
            quic: None,
            dns: None,
            forwards: Vec::new(),
        }
    }

    /// Binds every socket `config` asks for.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let http_addr = http.local_addr()?;
        let center = config.role == Role::Center;
        let tls = match (center, config.tunnel.tls_listen) {
            (true, Some(addr)) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding tunnel.tls_listen {addr}"))?,
            ),
            _ => None,
        };
        let has_identity = config.data_dir.join(crate::edges::NODE_CERT).exists();
        let quic = if center && has_identity {
            let addr: SocketAddr = config.tunnel.quic_listen.unwrap_or(http_addr);
            Some(
                std::net::UdpSocket::bind(addr)
                    .with_context(|| format!("binding the QUIC endpoint on udp/{addr}"))?,
            )
        } else {
            None
        };
        let dns = match config.dns.listen {
            Some(addr) => Some((
                UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("binding DNS (UDP) on {addr}"))?,
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding DNS (TCP) on {addr}"))?,
            )),
            None => None,
        };
        let forwards = if center && has_identity {
            crate::edges::tcp_forward::bind(&config.tunnel.forwards).await?
        } else {
            Vec::new()
        };
        Ok(Listeners {
            http,
            tls,
            quic,
            dns,
            forwards,
        })
    }
}
