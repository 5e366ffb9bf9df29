//! The node's shared state and its start-up: open the stores, register this node, make sure a
//! lone node has an admin key, and run the background loops (heartbeat, blob GC).
//!
//! The blob GC (every 10 minutes, rules in [`xpod_storage::blobs`]) deletes a blob only when
//! no upload and no reader can need it: never while its upload's pending record is fresh
//! (refreshed every minute, expired after 10 minutes), nor while a resource points to it, nor
//! within 30 minutes of its retirement (replaced or deleted), nor when younger than an hour.
//! Test hook: `XPOD_TEST_GC=every_ms,min_age_ms,grace_ms[,lease_ms]` runs it often with small
//! ages (the refresh is then a tenth of the lease).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use xpod_config::{Config, Role};
use xpod_routing::TargetConfig;
use xpod_storage::blobs::{BlobStore, GcRules};
use xpod_storage::meta::{self, MetaStore, NodeRecord, NodeStatus, NodeType, PodRecord};

use crate::auth;
use crate::metrics::Metrics;

/// How often this node refreshes its `nodes` row (seed: 15 s).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often unreferenced blobs are collected (the ages: [`GcRules::default`]).
const GC_EVERY: Duration = Duration::from_secs(600);

/// The GC's period and rules: the defaults, or `XPOD_TEST_GC` (see the module docs).
fn gc_settings() -> (Duration, GcRules) {
    let Ok(v) = std::env::var("XPOD_TEST_GC") else {
        return (GC_EVERY, GcRules::default());
    };
    let ms: Vec<u64> = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    let ms = |i: usize| ms.get(i).copied().map(Duration::from_millis);
    let mut rules = GcRules::default();
    let every = ms(0).unwrap_or(GC_EVERY).max(Duration::from_millis(10));
    rules.min_age = ms(1).unwrap_or(rules.min_age);
    rules.delete_grace = ms(2).unwrap_or(rules.delete_grace);
    if let Some(lease) = ms(3) {
        rules.pending_lease = lease;
        rules.pending_refresh = (lease / 10).max(Duration::from_millis(10));
    }
    tracing::warn!(
        ?every,
        ?rules,
        "XPOD_TEST_GC: blob GC timing overridden (a test setting; never in production)"
    );
    (every, rules)
}

/// Everything a request handler needs.
pub struct App {
    pub config: Config,
    pub node_id: String,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: BlobStore,
    /// Every region's store, the disk cache, fallback reads and copies (`blobs` is the own
    /// region's store, where writes go).
    pub regions: Arc<xpod_storage::regions::Regions>,
    pub metrics: Metrics,
    pub target: TargetConfig,
    /// `http://host:port` as clients reach this node (config or listen address).
    pub base_url: String,
    /// Largest accepted resource body.
    pub max_body: u64,
    /// A center: the edges whose tunnel it holds (for forwarding to their services).
    pub edges: crate::edges::registry::EdgeRegistry,
    /// An edge: its live tunnels, for its own requests to the cluster (`crate::edges::uplink`).
    pub uplinks: crate::edges::registry::Uplinks,
    /// Pod → its row (owner, epoch, access mode, migration), in memory: routing and the pod
    /// handler share this one lookup (kept fresh by the change feed: `mesh::follow_feed`).
    pub owners: Arc<xpod_routing::OwnerTable<Arc<PodRecord>>>,
    /// API keys in memory (dropped on revocation by the change feed).
    pub keys: crate::key_cache::KeyCache,
    /// The webhook channels of the pods this node owns, as last read.
    pub solid_hooks: crate::notify::HookCache,
    /// The notification sockets connected to this node.
    pub notify: Arc<crate::notify::Hub>,
    /// Solid-OIDC: issuers' keys, WebID profiles, recent proofs.
    pub oidc: crate::oidc::Oidc,
    /// The last known resource rows of this node's pods, for reads while the store is
    /// unreachable.
    pub rows: crate::row_cache::RowCache,
    /// Effective ACLs in memory (dropped when an `.acl` or the pod's owner changes).
    pub acls: crate::acl_cache::AclCache,
    /// The SPARQL indexes of the pods this node owns, built on the first query.
    pub sparql: crate::sparql::Indexes,
    /// Connections to the other centers.
    pub mesh: Arc<crate::mesh::peers::Mesh>,
    /// When this node's certificate (`node.crt`) expires, ms since the Unix epoch, once its
    /// tunnels started (published with its heartbeat).
    pub cert_not_after: std::sync::OnceLock<i64>,
    /// The dashboard's collection digests, published by `http::events::digest_loop`.
    pub event_digests: tokio::sync::watch::Sender<std::collections::BTreeMap<&'static str, u64>>,
    /// Event streams served now (`http::events`, bounded).
    pub event_streams: std::sync::atomic::AtomicUsize,
    /// Set when the HTTP listener starts draining: endless streams (events) end.
    pub draining: std::sync::atomic::AtomicBool,
    /// Bandwidth limiters of the edges this center relays for (from their policies).
    pub bandwidth: crate::edges::bandwidth::Bandwidth,
    /// What changes without a restart (an edge's services, a center's forwards).
    pub reload: crate::reload::state::Reloader,
    /// The QUIC address other nodes dial (a center with a QUIC endpoint), for its `nodes` row.
    pub quic_address: std::sync::OnceLock<String>,
    /// A center with a QUIC endpoint: where tunnel connections over TCP go
    /// ([`xpod_tunnel::endpoint::tcp`]).
    pub tunnel_tcp: std::sync::OnceLock<xpod_tunnel::endpoint::TcpEntry>,
    /// Certificates served on the HTTPS port and the ACME manager's status.
    pub tls: Arc<crate::certs::tls::Tls>,
    /// The sandboxes this node runs (`[sandbox] slots`).
    pub runner: crate::sandbox::runner::Runner,
    /// What the cluster grants each node (sandbox slots, pod prefixes, revocation).
    pub policies: Arc<crate::node_policy::Policies>,
    /// This center's liveness lease as last renewed ([`crate::failover`] renews it): pod
    /// writes stop when it lapses.
    pub lease: Arc<crate::lease::Lease>,
    /// The budget of audited refusals.
    pub refusals: crate::audit::Budget,
    /// How often the blob GC runs, and its rules (uploads read `pending_refresh`).
    pub gc_every: Duration,
    pub gc: GcRules,
}

impl App {
    /// Opens the stores and registers the node. `config.node_id` must be resolved.
    pub async fn open(config: Config, base_url: String) -> anyhow::Result<Arc<App>> {
        let node_id = config.node_id.clone();
        let db_url = config.database_url();
        let meta = meta::open(&db_url, config.database.pool_size)
            .await
            .with_context(|| format!("opening the metadata store ({})", redact_url(&db_url)))?;
        let regions = crate::regions::open(&config, meta.clone())?;
        let blobs = regions.own().store.clone();
        let domain = |d: &Option<String>| {
            d.as_deref()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        };
        let target = TargetConfig {
            pods_domain: config.http.pods_domain.clone(),
            edge_domain: domain(&config.tunnel.edge_domain),
            sandbox_domain: domain(&config.sandbox.domain),
        };
        let owners = {
            let meta = meta.clone();
            Arc::new(xpod_routing::OwnerTable::new(move |pod_id: String| {
                let meta = meta.clone();
                async move {
                    meta.get_pod(&pod_id)
                        .await
                        .map(|p| p.map(Arc::new))
                        .map_err(|e| e.to_string())
                }
            }))
        };
        let (gc_every, gc) = gc_settings();
        let app = Arc::new(App {
            owners,
            keys: Default::default(),
            acls: Default::default(),
            sparql: Default::default(),
            notify: Default::default(),
            solid_hooks: Default::default(),
            oidc: crate::oidc::Oidc::new(&config.solid),
            mesh: Default::default(),
            reload: Default::default(),
            bandwidth: Default::default(),
            draining: Default::default(),
            event_streams: Default::default(),
            event_digests: tokio::sync::watch::Sender::new(Default::default()),
            cert_not_after: Default::default(),
            quic_address: Default::default(),
            tunnel_tcp: Default::default(),
            tls: Default::default(),
            node_id,
            meta,
            blobs,
            regions,
            metrics: Metrics::default(),
            target,
            base_url,
            max_body: 64 * 1024 * 1024 * 1024,
            edges: Default::default(),
            uplinks: Default::default(),
            runner: Default::default(),
            policies: Default::default(),
            refusals: Default::default(),
            rows: Default::default(),
            lease: Arc::new(crate::lease::Lease::new(config.role == Role::Center)),
            gc_every,
            gc,
            config,
        });
        app.heartbeat(NodeStatus::Online)
            .await
            .context("registering this node in the metadata store")?;
        Ok(app)
    }

    /// Writes this node's row with a fresh heartbeat.
    pub async fn heartbeat(&self, status: NodeStatus) -> anyhow::Result<()> {
        let node = NodeRecord {
            node_id: self.node_id.clone(),
            node_type: match self.config.role {
                Role::Center => NodeType::Center,
                Role::Edge => NodeType::Edge,
            },
            region: self.config.region.clone(),
            internal_address: Some(self.base_url.clone()),
            public_address: Some(self.base_url.clone()),
            quic_address: self.quic_address.get().cloned(),
            status,
            attached_centers: Vec::new(),
            // A center's public addresses, for every center's DNS server (`crate::dns`).
            capacity: {
                let mut c = serde_json::json!({});
                if !self.config.dns.addresses.is_empty() {
                    c["dns"] = serde_json::json!({"addresses": self.config.dns.addresses});
                }
                if let Some(at) = self.cert_not_after.get() {
                    c["certNotAfter"] = (*at).into();
                }
                // What this node offers and runs (placement, reconciliation).
                if self.config.sandbox.slots > 0 {
                    c["sandboxes"] = serde_json::to_value(self.runner.report(&self.config.sandbox))
                        .unwrap_or_default();
                }
                c
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            last_heartbeat: meta::now_millis(),
        };
        self.meta.upsert_node(&node).await?;
        Ok(())
    }

    /// Writes a refusal to the audit log in the background, within the budget of
    /// [`crate::audit`] (`client`: `None` for the node's own refusals).
    pub fn refusal(
        self: &Arc<Self>,
        client: Option<std::net::IpAddr>,
        actor: String,
        action: &str,
        target: String,
        details: serde_json::Value,
        trace_id: String,
    ) {
        if !self.refusals.take(client) {
            return;
        }
        let entry = meta::NewAudit {
            at: meta::now_millis(),
            actor,
            action: action.to_string(),
            target,
            details,
            trace_id,
        };
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(e) = app.meta.append_audit(&entry).await {
                app.metrics.audit_failed();
                tracing::error!(error = %e, action = %entry.action, "audit entry lost");
            }
        });
    }

    /// The base URL of a pod as clients see it.
    pub fn pod_base_url(&self, pod_id: &str) -> String {
        match &self.config.http.pods_domain {
            Some(domain) => {
                let scheme = self.base_url.split("://").next().unwrap_or("http");
                format!("{scheme}://{pod_id}.{domain}/")
            }
            None => format!("{}/{pod_id}/", self.base_url),
        }
    }

    /// Background loops until `shutdown` fires: heartbeat and blob garbage collection.
    pub async fn background(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        let mut gc = tokio::time::interval(self.gc_every);
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        gc.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = beat.tick() => {
                    if let Err(e) = self.heartbeat(NodeStatus::Online).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
                _ = gc.tick() => {
                    match self.blobs.collect_garbage(self.meta.as_ref(), &self.gc).await {
                        Ok(n) => {
                            self.metrics.add_blobs_collected(n as u64);
                            if n > 0 { tracing::info!(deleted = n, "collected unreferenced blobs"); }
                        }
                        Err(e) => tracing::warn!(error = %e, "blob garbage collection failed"),
                    }
                }
            }
        }
    }
}

/// Creates the first admin key of a lone node: only when `<data_dir>/admin.key` does not exist
/// and the store holds no key at all. Prints it once (stdout, not the log) and writes the file
/// with mode 0600. Returns the key if one was created.
pub async fn ensure_admin_key(app: &App) -> anyhow::Result<Option<String>> {
    let path = app.config.data_dir.join("admin.key");
    if path.exists() || !app.meta.list_api_keys().await?.is_empty() {
        return Ok(None);
    }
    let key = auth::mint(
        "bootstrap admin",
        "admin",
        vec!["admin".into()],
        meta::now_millis(),
        None,
    );
    app.meta.create_api_key(&key.record).await?;
    write_secret_file(&path, &format!("{}\n", key.full))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(key.full))
}

/// Writes a file readable by its owner only (temp file + rename, so it is never half written).
fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite:///x/meta.db"), "sqlite:///x/meta.db");
    }
}
