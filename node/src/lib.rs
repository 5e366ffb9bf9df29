//! xpod-node: the `xpod` binary — CLI, listeners, HTTP API and the pod resource store.
//!
//! # Layout
//! - `main.rs`: thin — parse the CLI, hand over to [`cli::main`].
//! - [`cli`]: the command line (`up`, `config`, `ca`, `dns`, `certs`, and in its modules the
//!   remote commands: keys, join tokens, nodes, pods, sandboxes) and their `--help`.
//! - [`client`]: the small HTTP client the admin commands use.
//! - [`cluster_ca`]: the cluster CA and node certificate files (`xpod ca …`).
//! - [`install`]: the edge installer a center serves (`/install.sh`, signed manifest, binary).
//! - [`edges`]: joining, a center's QUIC endpoint with edge presence, an edge's tunnels.
//! - [`api_types`]: the HTTP API's request and response bodies, shared by the handlers, the
//!   CLI and the OpenAPI document.
//! - [`app`]: shared state, start-up (stores, node registration, first admin key), background
//!   loops (heartbeat, blob GC).
//! - [`mesh`]: connections between centers, the owner table's feed, pod request forwarding.
//! - [`outbound`]: requests to URLs clients chose (webhooks, WebIDs, issuers), never inside the
//!   network unless allowed.
//! - [`netio`]: small socket helpers (a stream with replayed first bytes, a reachable address).
//! - [`idle_copy`]: copying between two connections that ends when both are quiet too long.
//! - [`conn_limit`]: connections per client address and in total, per listener.
//! - [`front`]: where requests enter — the TCP listener (HTTP/1.1, HTTP/2), the TLS port
//!   (HTTPS, passthrough) and QUIC data streams from other nodes — all into [`http`].
//! - [`http`]: one request path — classify → authenticate → handler (ops, cluster API,
//!   `/api/v1`, pods) → JSON errors, node and trace headers, metrics.
//! - [`reply`]: what every handler answers with: `ApiError` (JSON errors, mapped once from the
//!   store's, the blobs' and routing's errors) and the response `Body` helpers.
//! - [`audit`]: refusals in the audit log, within a budget.
//! - [`auth`]: API keys (hashed, constant-time check) and the pod authorization seam.
//! - [`listeners`]: every socket a node serves, bound by the caller of [`run`].
//! - [`acl_cache`]: effective ACLs in memory, dropped when an `.acl` or a pod's owner changes.
//! - [`key_cache`]: API keys in memory, dropped on revocation by the change feed.
//! - [`row_cache`]: the owner's last known resource rows, for reads while the store is down.
//! - [`lease`]: this center's liveness lease as the node sees it (writes stop when it lapses).
//! - [`failover`]: renewing that lease, and moving dead centers' pods to live centers.
//! - [`memory`]: handing freed memory back to the system (glibc keeps it otherwise).
//! - [`metrics`]: Prometheus counters.
//! - [`oidc`]: Solid-OIDC's I/O — WebID profiles, issuers' keys, replayed proofs.
//! - [`notify`]: Solid notifications — announcing writes, the sockets connected here.
//! - [`node_policy`]: what the cluster grants each node (sandbox slots, pod prefixes) and node
//!   revocation.
//! - [`tasks`]: the node's long-running tasks, watched (the first failure stops the node).
//! - [`solid`]: RDF formats and content negotiation, PATCH (N3 Patch, SPARQL Update).
//! - [`sparql`]: SPARQL 1.1 queries over a pod's RDF documents (an index per pod, kept in step).
//! - [`special_ip`]: the special-purpose address ranges a tenant may not make the node reach.
//! - [`reload`]: runtime changes without a restart (SIGHUP, the API): services and forwards.
//! - [`regions`]: this node's view of the region buckets, the disk cache and the migration
//!   sync loop.
//! - [`certs`]: HTTPS certificates (ACME DNS-01 for centers and edges, sealed keys, files).
//! - [`dns`]: the centers' authoritative DNS (zone, TSIG, transfers, RFC 2136 pushes).
//! - [`sandbox`]: sandboxes (runner, supervisor, isolation, ports, the runner API).
//! - [`terminal`]: a command in a pseudo-terminal and the frames that carry it (sandbox and
//!   edge terminals).
//! - [`webhooks`]: signed webhooks for sandbox events and their delivery.
//!
//! Tests call [`run`] with [`Listeners`] they bound (e.g. `127.0.0.1:0`) and a shutdown future.

pub mod acl_cache;
pub mod api_types;
pub mod app;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod client;
pub mod cluster_ca;
pub mod conn_limit;
pub mod dns;
pub mod edges;
pub mod failover;
pub mod front;
pub mod http;
pub mod idle_copy;
pub mod install;
pub mod key_cache;
pub mod lease;
pub mod listeners;
pub mod memory;
pub mod mesh;
pub mod metrics;
pub mod netio;
pub mod node_policy;
pub mod notify;
pub mod oidc;
pub mod outbound;
pub mod regions;
pub mod reload;
pub mod reply;
pub mod row_cache;
pub mod sandbox;
pub mod solid;
pub mod sparql;
pub mod special_ip;
pub mod tasks;
pub mod terminal;
pub mod webhooks;

use std::future::Future;

use tokio::net::TcpListener;
use xpod_config::Config;

pub use app::App;
pub use listeners::Listeners;

/// Runs a node on `listener` until `shutdown` resolves (or one of its tasks fails: then that
/// error is returned), then drains in-flight requests and marks the node offline. `config.node_id` may be `auto` (resolved here).
pub async fn run(
    mut config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Listeners {
        http: listener,
        tls,
        quic,
        dns,
        forwards,
    } = listeners;
    let node_id = config.resolve_node_id()?;
    let addr = listener.local_addr()?;
    let base_url = config
        .http
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", netio::reachable(addr)));
    let app = App::open(config, base_url).await?;
    // Blobs of pods edges handed over are read through their tunnels until copied (and, on an
    // edge, blobs of pods it adopted, through a center).
    app.regions.set_remotes(edges::pod_adopt::resolver(&app));
    if let Some(key) = app::ensure_admin_key(&app).await? {
        // Deliberately on stdout and not in the log: the secret is shown once, here.
        println!(
            "Created the first admin API key (shown once; also saved to {}):\n  {key}",
            app.config.data_dir.join("admin.key").display()
        );
    }
    tracing::info!(node_id = %node_id, listen = %addr, url = %app.base_url, metadata = app.meta.backend(), objects = %app.blobs.url(), "xpod node serving");
    if let Err(e) = app.policies.refresh(app.meta.as_ref()).await {
        tracing::warn!(error = %e, "cannot load node policies yet");
    }
    if app.config.role == xpod_config::Role::Center {
        // Writes for this center's pods start with its lease.
        failover::Failover::new(app.clone()).renew().await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tasks::Tasks::default();
    if app.config.role == xpod_config::Role::Center {
        tasks.spawn_infallible(
            "failover",
            failover::run(failover::Failover::new(app.clone()), stop_rx.clone()),
        );
    }
    tasks.spawn_infallible(
        "node policies",
        node_policy::watch(
            app.meta.clone(),
            app.policies.clone(),
            {
                let app = app.clone();
                move |id: &str| {
                    let mut closed = false;
                    if let Some(conn) = app.edges.get(id) {
                        conn.close(node_policy::REVOKED_CODE.into(), b"node revoked");
                        closed = true;
                    }
                    closed | app.mesh.close_peer(id, b"node revoked")
                }
            },
            stop_rx.clone(),
        ),
    );
    if let Some(t) = start_tunnels(&app, quic, forwards, stop_rx.clone()).await? {
        tasks.watch("tunnels", t);
    }
    tasks.spawn_infallible("memory trim", memory::trim_loop(stop_rx.clone()));
    tasks.spawn_infallible(
        "SIGHUP reload",
        reload::on_sighup(app.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "dashboard digests",
        http::events::digest_loop(app.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "notifications",
        notify::follow(app.meta.clone(), app.notify.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "notification channel sweep",
        http::notify::sweep_loop(app.meta.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "change feed",
        mesh::follow_feed(app.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "region sync",
        regions::sync_loop(
            regions::SyncJob {
                meta: app.meta.clone(),
                regions: app.regions.clone(),
                node_id: app.node_id.clone(),
                mirror: Some(if app.config.role == xpod_config::Role::Edge {
                    edges::pod_adopt::mirror(&app)
                } else {
                    edges::pod_move::purge_hook(&app)
                }),
            },
            stop_rx.clone(),
        ),
    );
    if let Some((udp, tcp)) = dns {
        tasks.watch("dns", dns::serve(app.clone(), udp, tcp, stop_rx.clone())?);
    }
    // The TLS port (HTTPS and passthrough to edges).
    if let Some(listener) = tls {
        tasks.spawn(
            "https",
            front::https::serve(
                app.clone(),
                app.config.tunnel.edge_domain.clone(),
                listener,
                stop_rx.clone(),
            ),
        );
    }
    tasks.spawn_infallible("acme", certs::run(app.clone(), stop_rx.clone()));
    tasks.spawn_infallible(
        "sandboxes",
        sandbox::worker::run(app.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "webhooks",
        webhooks::deliver::run(app.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible(
        "rfc2136",
        dns::update::push_loop(app.clone(), stop_rx.clone()),
    );
    tasks.spawn_infallible("background", app.clone().background(stop_rx));
    // Serve until `shutdown`, or until a task fails (then drain and return its error).
    let failed = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop_serving = {
        let failed = failed.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = failed.notified() => {}
            }
        }
    };
    let serving = front::http::serve(app.clone(), listener, stop_serving);
    tokio::pin!(serving);
    let mut first_error = None;
    tokio::select! {
        _ = &mut serving => {}
        e = tasks.next_failure() => {
            tracing::error!(error = %format!("{e:#}"), "a task failed: stopping the node");
            first_error = Some(e);
            failed.notify_one();
            serving.await;
        }
    }
    let _ = stop_tx.send(true);
    if let Some(e) = tasks.join_all().await {
        first_error.get_or_insert(e);
    }
    if let Err(e) = app.heartbeat(xpod_storage::meta::NodeStatus::Offline).await {
        tracing::warn!(error = %e, "could not mark this node offline");
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Starts the QUIC side when this node has an identity (`<data_dir>/node.crt`): a center binds
/// its endpoint (UDP, same port number as HTTP unless `tunnel.quic_listen` says otherwise) and
/// accepts edges — and joins, when it holds the CA key — and serves `tunnel.tls_listen` (TLS
/// passthrough) and `[[tunnel.forwards]]` (TCP forwards); an edge keeps tunnels to its centers.
async fn start_tunnels(
    app: &std::sync::Arc<App>,
    quic: Option<std::net::UdpSocket>,
    forwards: Vec<(xpod_config::TunnelForward, TcpListener)>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context as _;
    let dir = &app.config.data_dir;
    let Some(identity) = edges::load_identity(dir)? else {
        tracing::info!("no node certificate in the data dir: QUIC tunnels are off");
        return Ok(None);
    };
    let cert_id = identity.identity()?.node_id;
    if let Ok(at) = xpod_tunnel::identity::not_after_ms(&identity.cert_der()?) {
        let _ = app.cert_not_after.set(at);
    }
    if cert_id != app.node_id {
        anyhow::bail!(
            "{} is for node {cert_id}, but this node is {} (set node_id = \"{cert_id}\" or issue a certificate for {})",
            dir.join(edges::NODE_CERT).display(),
            app.node_id,
            app.node_id
        );
    }
    match app.config.role {
        xpod_config::Role::Center => {
            let socket = quic.context(
                "a center with a node certificate needs its QUIC socket (Listeners::bind makes it)",
            )?;
            let quic = socket.local_addr()?;
            let authority: Option<std::sync::Arc<dyn xpod_tunnel::endpoint::JoinAuthority>> =
                if dir.join(cluster_ca::CA_KEY).exists() {
                    let ca = cluster_ca::load(dir)?;
                    Some(std::sync::Arc::new(edges::authority::TokenAuthority::new(
                        app.meta.clone(),
                        ca,
                        app.config.region.clone(),
                    )))
                } else {
                    None
                };
            let joins = authority.is_some();
            let endpoint =
                xpod_tunnel::endpoint::CenterEndpoint::from_socket(socket, &identity, authority)
                    .with_context(|| format!("binding the QUIC endpoint on udp/{quic}"))?;
            tracing::info!(quic = %endpoint.local_addr(), accepts_joins = joins, "QUIC endpoint serving edges and centers");
            // QUIC over TLS on TCP reaches the same endpoint (the HTTP and TLS ports take it).
            let _ = app.tunnel_tcp.set(endpoint.tcp());
            // The mesh dials other centers from this same endpoint and advertises its address.
            app.mesh.enable(
                endpoint.endpoint().clone(),
                xpod_tunnel::endpoint::mesh_client_config(&identity)?,
            );
            let _ = app
                .quic_address
                .set(advertised_quic(endpoint.local_addr(), &app.base_url));
            app.heartbeat(xpod_storage::meta::NodeStatus::Online)
                .await
                .context("publishing this center's QUIC address")?;
            let mut tasks = tokio::task::JoinSet::new();
            // TCP forwards (bound before start-up, so a taken port stops it), changed at runtime
            // by `reload`.
            reload::start_forwards(app, forwards, stop.clone()).await;
            tasks.spawn(
                app.mesh
                    .clone()
                    .run(app.meta.clone(), app.node_id.clone(), stop.clone()),
            );
            tasks.spawn(front::quic::center(app.clone(), endpoint, stop));
            Ok(Some(tokio::spawn(async move {
                tasks.join_all().await;
            })))
        }
        xpod_config::Role::Edge => {
            let centers = edges::edge::centers(&app.config.tunnel.centers, dir)?;
            if centers.is_empty() {
                tracing::warn!("edge without centers: set tunnel.centers (or join with --join)");
                return Ok(None);
            }
            let services = std::sync::Arc::new(
                edges::services::Services::from_config(&app.config.tunnel, &app.node_id).with_node(
                    std::sync::Arc::new(front::streams::EdgeNode(app.clone())),
                    app.tls.clone(),
                ),
            );
            reload::start_services(app, services.clone()).await;
            let app = app.clone();
            Ok(Some(tokio::spawn(async move {
                if let Err(e) = edges::edge::run(app, identity, centers, services, stop).await {
                    tracing::error!(error = %format!("{e:#}"), "edge tunnels stopped");
                }
            })))
        }
    }
}

/// The QUIC address other centers dial: the bound address, or — when bound to all interfaces —
/// the host of the base URL with the bound port.
fn advertised_quic(bound: std::net::SocketAddr, base_url: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = base_url
        .split("://")
        .nth(1)
        .unwrap_or(base_url)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = xpod_routing::host::strip_port(host);
    if host.is_empty() {
        return netio::reachable(bound).to_string();
    }
    format!("{host}:{}", bound.port())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
