//! The configuration types, their defaults and how they deserialize. No I/O here.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::size::ByteSize;
use crate::validate;

/// The whole configuration of one node. See `config/examples/xpod.toml` for every key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `"auto"` until [`Config::resolve_node_id`]; then a valid id.
    pub node_id: String,
    /// What this node does in the cluster.
    pub role: Role,
    /// The region this node is in (a DNS-label-like name).
    pub region: String,
    /// Where the node keeps its state (`.node-id`, embedded SQLite, local objects).
    pub data_dir: PathBuf,
    /// `[http]`
    pub http: HttpConfig,
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[cache]`
    pub cache: CacheConfig,
    /// `[routing]`
    pub routing: RoutingConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[tunnel]`
    pub tunnel: TunnelConfig,
    /// `[dns]`
    pub dns: DnsConfig,
    /// `[acme]`
    pub acme: AcmeConfig,
    /// `[sandbox]`
    pub sandbox: SandboxConfig,
    /// `[solid]`
    pub solid: SolidConfig,
    /// `[failover]`
    pub failover: FailoverConfig,
}

/// `[failover]`: centers' liveness leases and the automatic failover of a dead center's pods
/// (issue 18). The TTL and the window also from `XPOD_FAILOVER_LEASE_TTL_SECS` and
/// `XPOD_FAILOVER_STABILITY_WINDOW_SECS`. Every center of a cluster should use the same values.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Re-home the pods of a center whose lease has ended (this center takes part). Default
    /// true. Off, this center still renews its lease and fences itself.
    pub enabled: bool,
    /// A center's liveness lease (seconds, on the database's clock), renewed every half of
    /// it. A center that could not renew it in time stops writing for its pods. Default 10.
    pub lease_ttl_secs: u64,
    /// How long a lease must have stayed ended before the center's pods move (seconds), so a
    /// short pause or partition cannot make two owners. Default 15.
    pub stability_window_secs: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            enabled: true,
            lease_ttl_secs: 10,
            stability_window_secs: 15,
        }
    }
}

/// `[solid]`: Solid-OIDC on this node's pods (issue 17). File only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolidConfig {
    /// WebID profiles, OpenID configurations and key sets may be fetched from loopback,
    /// private and link-local addresses (an identity provider on the same network, tests).
    /// Default false: a token naming such a URL is refused, so no client can make the node
    /// reach inside its network.
    pub allow_private_fetch: bool,
    /// The oldest DPoP proof accepted (seconds). Default 120, as the Community Solid Server.
    pub proof_max_age_secs: u64,
    /// Web origins (`https://app.example`) trusted like the server's own: a browser page there
    /// acts with all of its user's modes, without `acl:origin`. Default: none.
    pub trusted_origins: Vec<String>,
}

impl Default for SolidConfig {
    fn default() -> Self {
        SolidConfig {
            allow_private_fetch: false,
            proof_max_age_secs: 120,
            trusted_origins: Vec::new(),
        }
    }
}

/// `[sandbox]`: the sandboxes this node runs, and the cluster's sandbox API (ARCHITECTURE
/// "Sandboxes"). File only (no environment variables).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// How many sandboxes this node runs at once (0: none; it still serves the API). Default 0.
    pub slots: u32,
    /// CPU cores offered to sandboxes (the sum of their `resources.cpu`). Default 2.
    pub cpu: u32,
    /// Memory offered to sandboxes, MiB (the sum of their `resources.memoryMb`). Default 4096.
    pub memory_mb: u64,
    /// `<port>-<sandboxId>.<domain>` reaches a port inside a sandbox. Default: unset (only
    /// `/api/v1/sandboxes/{id}/ports/{port}/…`).
    pub domain: Option<String>,
    /// A sandbox without exec or port traffic for this long stops (seconds; a create may ask
    /// for another value). Default 900.
    pub idle_timeout_secs: u64,
    /// Named images: name → a root file system directory (its `usr/` is the sandbox's `/usr`).
    /// The image `host` (the host's `/usr`, read-only) always exists.
    pub images: std::collections::BTreeMap<String, PathBuf>,
    /// Sandbox `n` of this node runs as host uid `uid_base + n` (when the node runs as root).
    /// Default 200000.
    pub uid_base: u32,
    /// Per-owner quota: sandboxes (pending or running) at once. Default 10.
    pub quota_sandboxes: u32,
    /// Per-owner quota: CPU cores of running sandboxes. Default 16.
    pub quota_cpu: u32,
    /// Per-owner quota: memory of running sandboxes, MiB. Default 32768.
    pub quota_memory_mb: u64,
    /// Webhooks may deliver to loopback, private and link-local addresses. Default false.
    pub webhooks_allow_private: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            slots: 0,
            cpu: 2,
            memory_mb: 4096,
            domain: None,
            idle_timeout_secs: 900,
            images: Default::default(),
            uid_base: 200_000,
            quota_sandboxes: 10,
            quota_cpu: 16,
            quota_memory_mb: 32_768,
            webhooks_allow_private: false,
        }
    }
}

/// `[acme]`: automatic HTTPS certificates for a center by ACME DNS-01 (ARCHITECTURE §9).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The ACME directory URL, or `letsencrypt` / `letsencrypt-staging`. `None`: no ACME.
    pub directory: Option<String>,
    /// A PEM file of extra roots to trust for the directory's own HTTPS (a test CA like
    /// Pebble's). Default: the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// Account contacts (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// The names of the centers' certificate. Default: `dns.zone` and `*.<http.pods_domain>`.
    pub names: Vec<String>,
    /// Seals the certificates' private keys and the ACME account key in the metadata store.
    /// The same value on every center; at least 32 characters. Required with `directory`.
    pub key_secret: Option<Secret>,
}

/// `[dns]`: the authoritative DNS server of a center for the cluster's zone.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// UDP and TCP address to serve DNS on. `None`: no DNS server.
    pub listen: Option<SocketAddr>,
    /// The zone this cluster is authoritative for (`http.pods_domain` and `tunnel.edge_domain`
    /// are answered when they are inside it). Required with `listen`.
    pub zone: Option<String>,
    /// This center's public addresses: what names routed to it resolve to. Shared with the
    /// other centers through the metadata store.
    pub addresses: Vec<std::net::IpAddr>,
    /// TTL of answers, in seconds (short: owners move). Default 30.
    pub ttl: u32,
    /// The TSIG key (HMAC-SHA256) that authenticates zone transfers and RFC 2136 updates: its
    /// name, as the other server knows it.
    pub tsig_key_name: Option<String>,
    /// The key's secret, base64 (what `tsig-keygen` prints).
    pub tsig_secret: Option<Secret>,
    /// Secondaries (`IP:PORT`): AXFR is allowed from their IPs when signed with the TSIG key,
    /// and they get a NOTIFY when the zone changes.
    pub secondaries: Vec<SocketAddr>,
    /// RFC 2136 mode: push the zone's records to this primary (`IP:PORT`) with TSIG-signed
    /// dynamic updates, for a zone hosted elsewhere.
    pub update_server: Option<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: None,
            zone: None,
            addresses: Vec::new(),
            ttl: 30,
            tsig_key_name: None,
            tsig_secret: None,
            secondaries: Vec::new(),
            update_server: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: "auto".into(),
            role: Role::default(),
            region: "local".into(),
            data_dir: PathBuf::from("./xpod-data"),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            cache: CacheConfig::default(),
            routing: RoutingConfig::default(),
            log: LogConfig::default(),
            tunnel: TunnelConfig::default(),
            dns: DnsConfig::default(),
            acme: AcmeConfig::default(),
            sandbox: SandboxConfig::default(),
            solid: SolidConfig::default(),
            failover: FailoverConfig::default(),
        }
    }
}

/// The node's role. TOML `"center"` or `"edge"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A center node (the default).
    #[default]
    Center,
    /// An edge node, reached through a tunnel.
    Edge,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "center" => Ok(Role::Center),
            "edge" => Ok(Role::Edge),
            _ => Err(format!("expected \"center\" or \"edge\", got {s:?}")),
        }
    }
}

/// `[http]`: the one listening port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to bind, an IP and a port. Default `127.0.0.1:8080`.
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// Public URL `http(s)://host[:port]`, no trailing slash.
    pub base_url: Option<String>,
    /// Enables subdomain mode: pods are served at `<pod>.<pods_domain>`.
    pub pods_domain: Option<String>,
    /// Client connections served at once, 1..=1000000. Default 10000.
    pub max_connections: usize,
    /// Connections one client address may hold at once, 0 (no limit: a node behind a proxy
    /// that connects from one address) ..= max_connections. Default 256.
    pub max_connections_per_client: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            base_url: None,
            pods_domain: None,
            max_connections: 10_000,
            max_connections_per_client: 256,
        }
    }
}

fn de_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    validate::listen(&s).map_err(serde::de::Error::custom)
}

/// `[database]`: where metadata lives.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://`, `postgresql://` or `sqlite://`. `None`: embedded SQLite at `<data_dir>/meta.db`.
    pub url: Option<Secret>,
    /// Connection pool size, 1..=1024. Default 16.
    pub pool_size: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            pool_size: 16,
        }
    }
}

/// `[storage]`: where objects live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `file://...` or `s3://...`. `None`: `file://<data_dir>/objects`.
    pub objects_url: Option<String>,
    /// S3 endpoint, `host[:port]` or `http(s)://host[:port]`.
    pub endpoint: Option<String>,
    /// Default bucket.
    pub bucket: Option<String>,
    /// S3 access key id.
    pub access_key: Option<String>,
    /// S3 secret key.
    pub secret_key: Option<Secret>,
    /// The S3 signing region. `None`: `us-east-1` (what MinIO and most S3-compatible servers
    /// expect).
    pub s3_region: Option<String>,
    /// Per-region buckets. TOML: an array of `{ region, bucket }` tables, or the string form
    /// `"bj:xpod-bj,gz:xpod-gz"` (the only form in the environment).
    #[serde(deserialize_with = "de_region_buckets")]
    pub region_buckets: Vec<RegionBucket>,
}

/// One entry of `storage.region_buckets`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionBucket {
    /// Region name, same rule as [`Config::region`].
    pub region: String,
    /// Bucket name (S3 rules) on `endpoint` (else `storage.endpoint`), `s3://NAME`, or a local
    /// directory `file:///absolute/path` (development and tests).
    pub bucket: String,
    /// This region's S3 endpoint, if it is not `storage.endpoint` (tables only).
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Parses `REGION:BUCKET[,REGION:BUCKET...]`. Only the form; names are checked by validation.
pub(crate) fn parse_region_buckets(s: &str) -> Result<Vec<RegionBucket>, String> {
    s.split(',')
        .map(|item| match item.trim().split_once(':') {
            Some((r, b)) if !r.trim().is_empty() && !b.trim().is_empty() => {
                Ok(RegionBucket { region: r.trim().into(), bucket: b.trim().into(), endpoint: None })
            }
            _ => Err(format!(
                "expected REGION:BUCKET[,REGION:BUCKET...] like \"bj:xpod-bj,gz:xpod-gz\", got {s:?} (bad item {:?})",
                item.trim()
            )),
        })
        .collect()
}

fn de_region_buckets<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<RegionBucket>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<RegionBucket>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "an array of { region, bucket } tables or a string \"bj:xpod-bj,gz:xpod-gz\"",
            )
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            parse_region_buckets(s).map_err(E::custom)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(rb) = seq.next_element()? {
                out.push(rb);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// `[cache]`: the local object cache.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache directory. `None`: `<data_dir>/cache` (see [`Config::cache_dir`]).
    pub path: Option<PathBuf>,
    /// Upper bound of the cache. Default `50GB`.
    pub max_size: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            path: None,
            max_size: ByteSize(50_000_000_000),
        }
    }
}

/// `[routing]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Route pods to their home node. Default `true`.
    pub enabled: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig { enabled: true }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive. Default `"info"`.
    pub level: String,
    /// Output format. Default text.
    pub format: LogFormat,
    /// One `served` line per HTTP request (method, path, status, time, trace id) at info, target
    /// `xpod::access`. Default off, as in Caddy and Traefik: it costs a write per request, and
    /// the request counters are in `/metrics` anyway. Responses with a 5xx status are logged at
    /// warn either way.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::default(),
            access: false,
        }
    }
}

/// `[tunnel]`: the QUIC endpoint (centers) and the centers an edge dials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelConfig {
    /// UDP address of this node's QUIC endpoint (mesh and edge tunnels). `None`: the address
    /// of `http.listen` (one port number for TCP and UDP). Used only by a node that has a node
    /// certificate (`<data_dir>/node.crt`).
    pub quic_listen: Option<SocketAddr>,
    /// For an edge: the centers it keeps a tunnel to, `HOST:PORT` of their QUIC endpoints (1–4).
    pub centers: Vec<String>,
    /// The DNS zone of edge names: `<node>.<edge_domain>`, `<service>.<node>.<edge_domain>`.
    pub edge_domain: Option<String>,
    /// For an edge: the local services it publishes through its centers
    /// (`[[tunnel.services]]`; file only, no environment variable).
    pub services: Vec<TunnelService>,
    /// For a center: a TCP address for TLS passthrough (file only, no environment variable).
    /// A connection whose ClientHello names `<service>.<node>.<edge_domain>` or
    /// `<node>.<edge_domain>` (service `web`) is relayed as raw bytes to that edge's
    /// `kind = "tls"` service, which terminates TLS with its own certificate. Any other name (or
    /// none) closes the connection: the center holds no certificates of its own for this port
    /// yet. Requires `edge_domain`.
    pub tls_listen: Option<SocketAddr>,
    /// For a center: public TCP ports that map to edges' `kind = "tcp"` services
    /// (`[[tunnel.forwards]]`; file only, no environment variable).
    pub forwards: Vec<TunnelForward>,
    /// `[tunnel.presence]`: heartbeat and liveness timings (a center tells its edges the
    /// heartbeat interval).
    pub presence: PresenceConfig,
    /// Threads of the tunnel's data plane (QUIC endpoints and TCP relays), 1–64; `None`: 1, a
    /// dedicated thread, which carried the most per core in measurements. More for a center
    /// whose tunnels need more than one core of crypto.
    pub threads: Option<usize>,
    /// Seconds a relayed connection (TCP forward, TLS passthrough, an edge's TCP/TLS service)
    /// may pass without a byte either way before it is closed, 1–86400; `None`: 600.
    pub relay_idle_secs: Option<u64>,
    /// For an edge: how it reaches its centers — `auto` (QUIC, and the same QUIC over TLS on
    /// TCP when UDP does not get through), `quic` or `tcp`. Default `auto`.
    pub transport: TunnelTransport,
    /// For an edge: whether the cluster may open a terminal on this device (`xpod nodes
    /// shell`, `/{pod}/-/terminal`): a shell as the user xpod runs as, for the cluster's admins
    /// and the owners of the pods on it. Off by default: only the device's own configuration
    /// turns it on.
    pub terminal: bool,
    /// For an edge: the accounts whose pods the cluster may move onto this device
    /// (`POST /.cluster/pods/{id}/migrate` with this edge as the target, by an admin or the
    /// pod's owner); `"*"`: any account's. Empty by default: the device takes no pod (unless
    /// the cluster's grant for it names the account: `xpod nodes set --accept-pods`).
    pub accept_pods: Vec<String>,
}

/// `tunnel.transport`. TOML `"auto"`, `"quic"` or `"tcp"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelTransport {
    /// QUIC first, TCP as well when QUIC does not connect soon.
    #[default]
    Auto,
    /// QUIC over UDP only.
    Quic,
    /// QUIC over TLS on TCP only.
    Tcp,
}

impl std::str::FromStr for TunnelTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(TunnelTransport::Auto),
            "quic" => Ok(TunnelTransport::Quic),
            "tcp" => Ok(TunnelTransport::Tcp),
            _ => Err(format!("expected \"auto\", \"quic\" or \"tcp\", got {s:?}")),
        }
    }
}

impl TunnelConfig {
    /// How long a relay may stay idle ([`TunnelConfig::relay_idle_secs`], default 10 min).
    pub fn relay_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.relay_idle_secs.unwrap_or(600))
    }
}

/// `[tunnel.presence]`: the seed's timings by default — heartbeat every 15 s, a node is
/// inactive after 60 s and offline after 5 min without one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Heartbeat interval, seconds (1..=3600). Default 15.
    pub heartbeat_secs: u64,
    /// Silence after which a node is inactive, seconds. Default 60.
    pub inactive_after_secs: u64,
    /// Silence after which a node is offline and its tunnel closed, seconds. Default 300.
    pub offline_after_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            heartbeat_secs: 15,
            inactive_after_secs: 60,
            offline_after_secs: 300,
        }
    }
}

/// One `[[tunnel.forwards]]` entry on a center: every connection to `listen` is relayed to the
/// `kind = "tcp"` service `service` of edge `node`, through that edge's tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelForward {
    /// The TCP address the center binds, `IP:PORT`.
    pub listen: SocketAddr,
    /// The edge's node id.
    pub node: String,
    /// The edge's service name (a DNS label).
    pub service: String,
}

/// One `[[tunnel.services]]` entry: a local service an edge publishes, reached through a center
/// as `<name>.<node>.<edge_domain>` (the service `web` also as `<node>.<edge_domain>`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelService {
    /// The service's name: a DNS label, unique among the edge's services.
    pub name: String,
    /// Where the edge reaches it, `IP:PORT` (e.g. `127.0.0.1:3000`).
    pub local: SocketAddr,
    /// How it is forwarded (default `http`).
    #[serde(default)]
    pub kind: ServiceKind,
    /// For `tls` and `tcp` services: start each connection to the local service with a PROXY
    /// protocol v2 header carrying the original client's address (default off). HTTP services
    /// get `Forwarded`/`X-Forwarded-For` instead.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// How a published service is forwarded. TOML `"http"`, `"tls"` or `"tcp"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// HTTP/1.1: the center parses requests and adds `Forwarded`/`X-Forwarded-*`.
    #[default]
    Http,
    /// TLS passthrough: reached through a center's `tunnel.tls_listen` by SNI; the service
    /// terminates TLS itself.
    Tls,
    /// Plain TCP: reached through a center's `[[tunnel.forwards]]` entry naming it.
    Tcp,
}

impl ServiceKind {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Http => "http",
            ServiceKind::Tls => "tls",
            ServiceKind::Tcp => "tcp",
        }
    }
}

/// Log output format. TOML `"text"` or `"json"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected \"text\" or \"json\", got {s:?}")),
        }
    }
}

/// A string that must never reach a log: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (a connection, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
