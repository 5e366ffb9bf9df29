//! PostgreSQL backend of [`MetaStore`]: the metadata that the centers of a cluster share.
//!
//! - **Pool**: a `deadpool-postgres` pool for queries and transactions.
//!   Connections use `NoTls` for now: TLS to the database is a later issue, so the server must be
//!   reached over a trusted network (loopback, a private network or a tunnel).
//! - **Migrations** ([`MIGRATIONS`]): numbered SQL steps recorded in `schema_migrations`, applied
//!   at start-up by one session holding `pg_advisory_lock(MIGRATION_LOCK)`, each step in its own
//!   transaction. Several nodes starting at once against an empty database serialize on the lock;
//!   the later ones find every version applied and do nothing.
//! - **Writes**: each resource write is one transaction that first locks the pod row
//!   (`SELECT … FOR UPDATE`), checks the [`Fence`], then the [`Precondition`] against the current
//!   row. The pod row lock serializes the writers of one pod, so concurrent
//!   `If-None-Match: *` puts cannot both succeed, and every read inside the transaction (the
//!   default READ COMMITTED level takes a fresh snapshot per statement) sees the latest state.
//! - **Change feed**: `create_pod` and `transfer_pod` run `pg_notify('xpod_pods', 'pod:<id>:<epoch>')`
//!   inside their transaction (delivered only on commit). A background task holds one dedicated
//!   connection (outside the pool) that `LISTEN`s and forwards notifications to the store's
//!   [`FeedHub`]; after every (re)connect it marks the hub live, which sends
//!   [`FeedEvent::Reset`] so subscribers reload. On a lost connection it reconnects with jittered
//!   exponential backoff (100 ms … 5 s). The task ends when the store is dropped.
//! - **Text ordering**: id and path columns use `COLLATE "C"` so listings are ordered bytewise,
//!   like the SQLite backend, whatever the database's default collation.
//!
//! Errors: connection failures and pool timeouts are [`MetaError::Unavailable`], unique
//! violations [`MetaError::Conflict`], anything else [`MetaError::Backend`] with the server's
//! message. The database URL (which may hold a password) is never logged or put in an error.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::feed::{FeedHub, ResourceEvent, ResourceHub};
use super::plan;
use super::{
    new_etag, now_millis, parent_path, AccessMode, ApiKeyRecord, AuditEntry, CertRecord,
    ChangeFeed, DocRecord, FeedEvent, Fence, JoinTokenRecord, Liveness, MetaError, MetaResult,
    MetaStore, MigrationStatus, Millis, NewAudit, NewPod, NodeRecord, NodeStatus, NodeType,
    PodRecord, Precondition, PutOutcome, PutResource, ResourceRecord, RETIRED_BLOB,
};
use super::{AdoptPod, MovedRow};
use super::{
    AuditStore, CertStore, DocStore, KeyStore, LeaseStore, NodeStore, PodStore, TokenStore,
};

/// The `pg_advisory_lock` key that serializes migrations across nodes (ASCII `xpodmigr`).
pub const MIGRATION_LOCK: i64 = 0x7870_6f64_6d69_6772;

/// The NOTIFY channel of resource events (Solid notifications).
pub const RESOURCE_CHANNEL: &str = "xpod_res";
/// The NOTIFY channel of the change feed.
pub const FEED_CHANNEL: &str = "xpod_pods";

/// Numbered schema migrations, applied in order; a version is never edited once released
/// (add a new one instead).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE nodes (
    node_id          TEXT COLLATE "C" PRIMARY KEY,
    node_type        TEXT NOT NULL,
    region           TEXT NOT NULL,
    internal_address TEXT,
    public_address   TEXT,
    quic_address     TEXT,
    status           TEXT NOT NULL,
    attached_centers JSONB NOT NULL DEFAULT '[]',
    capacity         JSONB NOT NULL DEFAULT '{}',
    version          TEXT NOT NULL,
    last_heartbeat   BIGINT NOT NULL
);
CREATE TABLE pods (
    pod_id                TEXT COLLATE "C" PRIMARY KEY,
    base_url              TEXT NOT NULL,
    account_id            TEXT,
    node_id               TEXT COLLATE "C" NOT NULL,
    epoch                 BIGINT NOT NULL,
    access_mode           TEXT NOT NULL,
    migration_status      TEXT,
    migration_target_node TEXT,
    migration_progress    INT,
    created_at            BIGINT NOT NULL
);
CREATE INDEX pods_node_idx ON pods (node_id);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE resources (
    pod_id       TEXT COLLATE "C" NOT NULL,
    path         TEXT COLLATE "C" NOT NULL,
    parent       TEXT COLLATE "C",
    is_container BOOLEAN NOT NULL,
    content_type TEXT,
    etag         TEXT NOT NULL,
    size         BIGINT NOT NULL DEFAULT 0,
    blob_key     TEXT COLLATE "C",
    regions      JSONB NOT NULL DEFAULT '[]',
    version      BIGINT NOT NULL,
    modified_at  BIGINT NOT NULL,
    deleted_at   BIGINT,
    PRIMARY KEY (pod_id, path)
);
CREATE INDEX resources_parent_idx ON resources (pod_id, parent);
CREATE INDEX resources_blob_key_idx ON resources (blob_key);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE api_keys (
    key_id       TEXT COLLATE "C" PRIMARY KEY,
    secret_hash  TEXT NOT NULL,
    name         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    scopes       JSONB NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    details  JSONB NOT NULL DEFAULT '{}',
    trace_id TEXT NOT NULL
);
"#,
    ),
    (
        4,
        r#"
CREATE TABLE join_tokens (
    token_id    TEXT COLLATE "C" PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    single_use  BOOLEAN NOT NULL,
    used_at     BIGINT,
    used_by     TEXT COLLATE "C",
    use_count   BIGINT NOT NULL DEFAULT 0,
    revoked_at  BIGINT
);
CREATE INDEX join_tokens_created_idx ON join_tokens (created_at, token_id);
"#,
    ),
    (
        5,
        r#"
CREATE TABLE dns_txt (
    name       TEXT COLLATE "C" NOT NULL,
    value      TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (name, value)
);
"#,
    ),
    (
        6,
        r#"
CREATE TABLE certs (
    id         TEXT COLLATE "C" PRIMARY KEY,
    names      JSONB NOT NULL,
    cert_pem   TEXT NOT NULL,
    key_sealed TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after  BIGINT NOT NULL,
    issued_by  TEXT NOT NULL,
    issued_at  BIGINT NOT NULL
);
CREATE TABLE cluster_settings (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    ),
    (
        7,
        r#"
CREATE TABLE docs (
    kind       TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    owner      TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc        JSONB NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX docs_owner_idx ON docs (kind, owner, created_at, id);
CREATE INDEX docs_created_idx ON docs (kind, created_at, id);
"#,
    ),
    (
        8,
        r#"
CREATE TABLE liveness (
    node_id    TEXT COLLATE "C" PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
"#,
    ),
];

/// The database's clock in milliseconds since the Unix epoch (the liveness leases' clock).
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// How long a caller waits for a pooled connection (or for a new one to be opened).
const POOL_WAIT: Duration = Duration::from_secs(10);
/// TCP connect timeout of every connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Feed reconnect backoff: first delay and cap.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// The feed connection re-issues `LISTEN` this often as a liveness probe.
const FEED_PROBE_EVERY: Duration = Duration::from_secs(30);
/// A feed round trip (LISTEN, probe) taking longer than this counts as a lost connection.
const FEED_ROUND_TRIP: Duration = Duration::from_secs(10);

/// The PostgreSQL metadata store. Dropping it stops its change-feed task.
pub struct PgStore {
    pool: Pool,
    hub: FeedHub,
    resources: ResourceHub,
    feed_app_name: String,
    /// Dropped with the store: the feed task sees the channel close and stops.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("feed_app_name", &self.feed_app_name)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects a pool of `pool_size` connections (at least 1), applies the migrations, and
    /// starts the change-feed task. The store uses up to `pool_size + 1` server connections
    /// (the pool plus the dedicated LISTEN connection).
    ///
    /// TLS to the database is not supported yet (`NoTls`; a later issue): use it only over a
    /// trusted network.
    pub async fn connect(url: &str, pool_size: usize) -> MetaResult<PgStore> {
        let mut pg_config = tokio_postgres::Config::from_str(url).map_err(|e| {
            // The parse error names the bad option, never the password.
            MetaError::Invalid(format!("database url: {e}"))
        })?;
        pg_config.connect_timeout(CONNECT_TIMEOUT);
        pg_config.keepalives(true);
        pg_config.keepalives_idle(Duration::from_secs(30));

        let mut pool_pg_config = pg_config.clone();
        pool_pg_config.application_name("xpod");
        let manager = Manager::from_config(
            pool_pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| MetaError::Backend(format!("building the connection pool: {e}")))?;

        {
            let client = get_client(&pool).await?;
            migrate(&client).await?;
        }

        let hub = FeedHub::new();
        let resources = ResourceHub::default();
        let feed_app_name = format!("xpod-feed-{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut feed_config = pg_config;
        feed_config.application_name(feed_app_name.clone());
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        tokio::spawn(feed_task(
            feed_config,
            hub.clone(),
            resources.clone(),
            shutdown_rx,
        ));

        Ok(PgStore {
            pool,
            hub,
            resources,
            feed_app_name,
            _shutdown: shutdown_tx,
        })
    }

    /// The `application_name` of this store's dedicated LISTEN connection (unique per store), so
    /// operators and tests can find it in `pg_stat_activity`.
    pub fn feed_application_name(&self) -> &str {
        &self.feed_app_name
    }

    async fn client(&self) -> MetaResult<Object> {
        get_client(&self.pool).await
    }
}

// ---------------------------------------------------------------- errors

/// True for errors that mean "the server cannot be reached / the connection broke".
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") // connection exception
            || c == SqlState::ADMIN_SHUTDOWN.code()
            || c == SqlState::CRASH_SHUTDOWN.code()
            || c == SqlState::CANNOT_CONNECT_NOW.code()
            || c == SqlState::TOO_MANY_CONNECTIONS.code();
    }
    if std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    // Kinds without a public accessor.
    let msg = e.to_string();
    msg.starts_with("timeout waiting for server") || msg.starts_with("error performing TLS")
}

/// Maps a driver error to a [`MetaError`].
fn pg_err(e: tokio_postgres::Error) -> MetaError {
    if is_connection_error(&e) {
        return MetaError::Unavailable(describe(&e));
    }
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return MetaError::Conflict(describe(&e));
    }
    MetaError::Backend(describe(&e))
}

/// The server's message (with detail) for a database error, else the driver's message chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(": ");
            s.push_str(d);
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

fn pool_err(e: PoolError) -> MetaError {
    match e {
        PoolError::Backend(e) => {
            let m = pg_err(e);
            match m {
                MetaError::Backend(s) => {
                    MetaError::Unavailable(format!("opening a connection: {s}"))
                }
                other => other,
            }
        }
        PoolError::Timeout(t) => MetaError::Unavailable(format!("connection pool timeout ({t:?})")),
        PoolError::Closed => MetaError::Unavailable("connection pool closed".into()),
        other => MetaError::Backend(format!("connection pool: {other}")),
    }
}

async fn get_client(pool: &Pool) -> MetaResult<Object> {
    pool.get().await.map_err(pool_err)
}

fn bad(what: &str, value: &str) -> MetaError {
    MetaError::Backend(format!("unexpected {what} `{value}` in the database"))
}

const CERT_COLS: &str =
    "id, names::text AS names, cert_pem, key_sealed, not_before, not_after, issued_by, issued_at";

const DOC_COLS: &str = "kind, id, owner, version, updated_at, doc::text AS doc";

fn doc_from_row(r: &Row) -> MetaResult<DocRecord> {
    let text: String = col(r, "doc")?;
    Ok(DocRecord {
        kind: col(r, "kind")?,
        id: col(r, "id")?,
        owner: col(r, "owner")?,
        version: col(r, "version")?,
        updated_at: col(r, "updated_at")?,
        doc: serde_json::from_str(&text)
            .map_err(|e| MetaError::Backend(format!("docs.doc: {e}")))?,
    })
}

fn cert_from_row(r: &Row) -> MetaResult<CertRecord> {
    Ok(CertRecord {
        id: col(r, "id")?,
        names: json_col(r, "names")?,
        cert_pem: col(r, "cert_pem")?,
        key_sealed: col(r, "key_sealed")?,
        not_before: col(r, "not_before")?,
        not_after: col(r, "not_after")?,
        issued_by: col(r, "issued_by")?,
        issued_at: col(r, "issued_at")?,
    })
}

fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, name: &str) -> MetaResult<T> {
    row.try_get(name)
        .map_err(|e| MetaError::Backend(format!("column {name}: {}", describe(&e))))
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> MetaResult<T> {
    let text: String = col(row, name)?;
    serde_json::from_str(&text).map_err(|e| MetaError::Backend(format!("column {name}: {e}")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> MetaResult<String> {
    serde_json::to_string(v).map_err(|e| MetaError::Invalid(format!("json: {e}")))
}

// ---------------------------------------------------------------- query helpers

async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> MetaResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.query(&st, params).await.map_err(pg_err)
}

async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> MetaResult<Option<Row>> {
    let mut rows = query(c, sql, params).await?;
    if rows.len() > 1 {
        return Err(MetaError::Backend(
            "query returned more than one row".into(),
        ));
    }
    Ok(rows.pop())
}

async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> MetaResult<u64> {
    let st = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.execute(&st, params).await.map_err(pg_err)
}

/// Records that `key` is no longer referenced (a [`RETIRED_BLOB`] document), in the transaction
/// that unreferenced it, so the blob GC waits out the grace period from now.
async fn retire_blob<C: GenericClient>(
    tx: &C,
    pod_id: &str,
    path: &str,
    key: &str,
    now: Millis,
) -> MetaResult<()> {
    let doc = serde_json::json!({ "path": path }).to_string();
    execute(
        tx,
        "INSERT INTO docs (kind, id, owner, version, created_at, updated_at, doc) \
         VALUES ($1, $2, $3, 1, $4, $4, $5::text::jsonb) \
         ON CONFLICT (kind, id) DO UPDATE SET owner = EXCLUDED.owner, \
             version = docs.version + 1, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc",
        &[&RETIRED_BLOB, &key, &pod_id, &now, &doc],
    )
    .await?;
    Ok(())
}

/// Retires the blob of every row of `pod_id` ([`retire_blob`]) in one statement, before the
/// rows are dropped.
async fn retire_pod_blobs<C: GenericClient>(tx: &C, pod_id: &str, now: Millis) -> MetaResult<()> {
    execute(
        tx,
        "INSERT INTO docs (kind, id, owner, version, created_at, updated_at, doc) \
         SELECT DISTINCT ON (blob_key) $1, blob_key, pod_id, 1, $3, $3, \
             jsonb_build_object('path', path) \
         FROM resources WHERE pod_id = $2 AND blob_key IS NOT NULL \
         ON CONFLICT (kind, id) DO UPDATE SET owner = EXCLUDED.owner, \
             version = docs.version + 1, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc",
        &[&RETIRED_BLOB, &pod_id, &now],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- migrations

/// Applies the missing [`MIGRATIONS`] on `client`'s session under the advisory lock.
async fn migrate(client: &Object) -> MetaResult<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    if let Err(e) = &unlock {
        // The lock is session-scoped: it goes away when this (then broken) connection closes.
        tracing::warn!(error = %describe(e), "releasing the migration lock failed");
    }
    result?;
    unlock.map_err(pg_err)?;
    Ok(())
}

async fn migrate_locked(client: &Object) -> MetaResult<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INT PRIMARY KEY,
                 applied_at BIGINT NOT NULL
             )",
        )
        .await
        .map_err(pg_err)?;
    let rows = client
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(pg_err)?;
    let mut applied = HashSet::new();
    for row in &rows {
        applied.insert(col::<i32>(row, "version")?);
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, "applying metadata migration");
        // A fresh transaction per step: `Object` derefs to the driver client; use SQL directly
        // so the `&Object` borrow stays shared.
        client.batch_execute("BEGIN").await.map_err(pg_err)?;
        let step = async {
            client.batch_execute(sql).await.map_err(pg_err)?;
            client
                .execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[version, &now_millis()],
                )
                .await
                .map_err(pg_err)?;
            client.batch_execute("COMMIT").await.map_err(pg_err)
        }
        .await;
        if let Err(e) = step {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(match e {
                MetaError::Backend(m) => MetaError::Backend(format!("migration {version}: {m}")),
                other => other,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- change feed

/// Owns the dedicated LISTEN connection; reconnects until the store is dropped.
async fn feed_task(
    config: tokio_postgres::Config,
    hub: FeedHub,
    resources: ResourceHub,
    mut shutdown: watch::Receiver<()>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let session = tokio::select! {
            r = feed_session(&config, &hub, &resources) => r,
            _ = shutdown.changed() => break,
        };
        hub.set_live(false);
        match session {
            // It was live for a while: start the backoff over.
            Ok(()) => backoff = BACKOFF_START,
            Err(e) => tracing::warn!(error = %e, "change feed: connection failed"),
        }
        // Jitter: sleep between half and all of the current delay.
        let half = backoff.as_millis() as u64 / 2;
        let delay = Duration::from_millis(half + rand::random_range(0..=half.max(1)));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
    hub.set_live(false);
    tracing::debug!("change feed task stopped");
}

/// One connection's life: connect, LISTEN, go live, forward notifications until the connection
/// ends. `Ok(())` if it went live (then ended), `Err` if it never went live.
async fn feed_session(
    config: &tokio_postgres::Config,
    hub: &FeedHub,
    resources: &ResourceHub,
) -> Result<(), String> {
    let (client, mut conn) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
    let forward_hub = hub.clone();
    let forward_resources = resources.clone();
    // Drives the connection: every message from the server passes through here.
    let drive = async move {
        loop {
            match futures_util::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == RESOURCE_CHANNEL => {
                    match ResourceEvent::parse(n.payload()) {
                        Some(ev) => forward_resources.send(ev),
                        None => tracing::warn!(
                            payload = n.payload(),
                            "resource feed: ignoring a malformed notification"
                        ),
                    }
                }
                Some(Ok(AsyncMessage::Notification(n))) => {
                    match FeedEvent::parse_payload(n.payload()) {
                        Some(ev) => forward_hub.send(ev),
                        None => tracing::warn!(
                            channel = n.channel(),
                            payload = n.payload(),
                            "change feed: ignoring a malformed notification"
                        ),
                    }
                }
                Some(Ok(AsyncMessage::Notice(n))) => {
                    tracing::debug!(message = n.message(), "change feed: server notice")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(describe(&e)),
                None => return Ok(()),
            }
        }
    };
    tokio::pin!(drive);

    let listen = format!("LISTEN {FEED_CHANNEL}; LISTEN {RESOURCE_CHANNEL}");
    tokio::select! {
        r = tokio::time::timeout(FEED_ROUND_TRIP, client.batch_execute(&listen)) => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("LISTEN: {}", describe(&e))),
            Err(_) => return Err("LISTEN timed out".into()),
        },
        r = &mut drive => return Err(format!("connection ended before LISTEN: {r:?}")),
    }
    hub.set_live(true);
    tracing::info!("change feed live");

    let mut probe = tokio::time::interval(FEED_PROBE_EVERY);
    probe.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            r = &mut drive => {
                match r {
                    Ok(()) => tracing::warn!("change feed: connection closed; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "change feed: connection lost; reconnecting"),
                }
                return Ok(());
            }
            _ = probe.tick() => {
                // Re-LISTEN is a no-op round trip; it also keeps `LISTEN …` as the session's
                // last query in pg_stat_activity.
                let ok = tokio::select! {
                    r = tokio::time::timeout(FEED_ROUND_TRIP, client.batch_execute(&listen)) => {
                        matches!(r, Ok(Ok(())))
                    }
                    r = &mut drive => {
                        tracing::warn!(result = ?r, "change feed: connection lost; reconnecting");
                        return Ok(());
                    }
                };
                if !ok {
                    tracing::warn!("change feed: liveness probe failed; reconnecting");
                    return Ok(());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- row mapping

const NODE_COLS: &str = "node_id, node_type, region, internal_address, public_address, \
     quic_address, status, attached_centers::text AS attached_centers, capacity::text AS capacity, \
     version, last_heartbeat";

fn node_from_row(row: &Row) -> MetaResult<NodeRecord> {
    let node_type: String = col(row, "node_type")?;
    let status: String = col(row, "status")?;
    Ok(NodeRecord {
        node_id: col(row, "node_id")?,
        node_type: NodeType::parse(&node_type).ok_or_else(|| bad("node_type", &node_type))?,
        region: col(row, "region")?,
        internal_address: col(row, "internal_address")?,
        public_address: col(row, "public_address")?,
        quic_address: col(row, "quic_address")?,
        status: NodeStatus::parse(&status).ok_or_else(|| bad("node status", &status))?,
        attached_centers: json_col(row, "attached_centers")?,
        capacity: json_col(row, "capacity")?,
        version: col(row, "version")?,
        last_heartbeat: col(row, "last_heartbeat")?,
    })
}

const POD_COLS: &str = "pod_id, base_url, account_id, node_id, epoch, access_mode, \
     migration_status, migration_target_node, migration_progress, created_at";

fn pod_from_row(row: &Row) -> MetaResult<PodRecord> {
    let access_mode: String = col(row, "access_mode")?;
    let migration_status: Option<String> = col(row, "migration_status")?;
    let migration_status = match migration_status {
        None => None,
        Some(s) => Some(MigrationStatus::parse(&s).ok_or_else(|| bad("migration_status", &s))?),
    };
    Ok(PodRecord {
        pod_id: col(row, "pod_id")?,
        base_url: col(row, "base_url")?,
        account_id: col(row, "account_id")?,
        node_id: col(row, "node_id")?,
        epoch: col(row, "epoch")?,
        access_mode: AccessMode::parse(&access_mode)
            .ok_or_else(|| bad("access_mode", &access_mode))?,
        migration_status,
        migration_target_node: col(row, "migration_target_node")?,
        migration_progress: col(row, "migration_progress")?,
        created_at: col(row, "created_at")?,
    })
}

const RES_COLS: &str = "pod_id, path, is_container, content_type, etag, size, blob_key, \
     regions::text AS regions, version, modified_at, deleted_at";

/// A resource row and its tombstone time (`None` = live).
fn resource_from_row(row: &Row) -> MetaResult<(ResourceRecord, Option<i64>)> {
    Ok((
        ResourceRecord {
            pod_id: col(row, "pod_id")?,
            path: col(row, "path")?,
            is_container: col(row, "is_container")?,
            content_type: col(row, "content_type")?,
            etag: col(row, "etag")?,
            size: col(row, "size")?,
            blob_key: col(row, "blob_key")?,
            regions: json_col(row, "regions")?,
            version: col(row, "version")?,
            modified_at: col(row, "modified_at")?,
        },
        col(row, "deleted_at")?,
    ))
}

const KEY_COLS: &str = "key_id, secret_hash, name, owner, scopes::text AS scopes, created_at, \
     expires_at, revoked_at, last_used_at";

fn key_from_row(row: &Row) -> MetaResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: col(row, "key_id")?,
        secret_hash: col(row, "secret_hash")?,
        name: col(row, "name")?,
        owner: col(row, "owner")?,
        scopes: json_col(row, "scopes")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        revoked_at: col(row, "revoked_at")?,
        last_used_at: col(row, "last_used_at")?,
    })
}

const JOIN_TOKEN_COLS: &str = "token_id, secret_hash, description, created_by, created_at, \
     expires_at, single_use, used_at, used_by, use_count, revoked_at";

fn join_token_from_row(row: &Row) -> MetaResult<JoinTokenRecord> {
    Ok(JoinTokenRecord {
        token_id: col(row, "token_id")?,
        secret_hash: col(row, "secret_hash")?,
        description: col(row, "description")?,
        created_by: col(row, "created_by")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        single_use: col(row, "single_use")?,
        used_at: col(row, "used_at")?,
        used_by: col(row, "used_by")?,
        use_count: col(row, "use_count")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

fn audit_from_row(row: &Row) -> MetaResult<AuditEntry> {
    Ok(AuditEntry {
        id: col(row, "id")?,
        at: col(row, "at")?,
        actor: col(row, "actor")?,
        action: col(row, "action")?,
        target: col(row, "target")?,
        details: json_col(row, "details")?,
        trace_id: col(row, "trace_id")?,
    })
}

// ---------------------------------------------------------------- write helpers

/// Locks the pod row (`FOR UPDATE`) and checks the fence.
async fn lock_pod_fenced<C: GenericClient>(tx: &C, pod_id: &str, fence: &Fence) -> MetaResult<()> {
    let row = query_opt(
        tx,
        "SELECT node_id, epoch FROM pods WHERE pod_id = $1 FOR UPDATE",
        &[&pod_id],
    )
    .await?
    .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
    let owner: String = col(&row, "node_id")?;
    let epoch: i64 = col(&row, "epoch")?;
    plan::check_fence(pod_id, &owner, epoch, fence)
}

/// The row at `path` (live or tombstoned), locked.
async fn resource_for_update<C: GenericClient>(
    tx: &C,
    pod_id: &str,
    path: &str,
) -> MetaResult<Option<(ResourceRecord, Option<i64>)>> {
    let sql =
        format!("SELECT {RES_COLS} FROM resources WHERE pod_id = $1 AND path = $2 FOR UPDATE");
    match query_opt(tx, &sql, &[&pod_id, &path]).await? {
        Some(row) => Ok(Some(resource_from_row(&row)?)),
        None => Ok(None),
    }
}

/// New etag and modification time for live containers (a member was added or removed).
async fn bump_containers<C: GenericClient>(
    tx: &C,
    pod_id: &str,
    paths: &BTreeSet<String>,
    now: i64,
) -> MetaResult<()> {
    for p in paths {
        execute(
            tx,
            "UPDATE resources SET etag = $3, modified_at = $4 \
             WHERE pod_id = $1 AND path = $2 AND deleted_at IS NULL",
            &[&pod_id, p, &new_etag(), &now],
        )
        .await?;
    }
    Ok(())
}

fn check_path(path: &str) -> MetaResult<()> {
    if !path.starts_with('/') {
        return Err(MetaError::Invalid(format!(
            "path `{path}` must start with /"
        )));
    }
    Ok(())
}

async fn notify<C: GenericClient>(tx: &C, pod_id: &str, epoch: i64) -> MetaResult<()> {
    let payload = FeedEvent::payload(pod_id, epoch);
    query(tx, "SELECT pg_notify($1, $2)", &[&FEED_CHANNEL, &payload]).await?;
    Ok(())
}

// ---------------------------------------------------------------- the trait

#[async_trait]
impl MetaStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> MetaResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }

    fn subscribe(&self) -> ChangeFeed {
        self.hub.subscribe()
    }

    async fn announce(&self, ev: &ResourceEvent) -> MetaResult<()> {
        let payload = ev.payload();
        // NOTIFY payloads are limited to 8000 bytes: a longer path is not announced.
        if payload.len() >= 8000 {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&RESOURCE_CHANNEL, &payload])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    fn resource_events(&self) -> tokio::sync::broadcast::Receiver<ResourceEvent> {
        self.resources.subscribe()
    }
}

#[async_trait]
impl NodeStore for PgStore {
    async fn upsert_node(&self, node: &NodeRecord) -> MetaResult<()> {
        let attached = to_json(&node.attached_centers)?;
        let capacity = to_json(&node.capacity)?;
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO nodes (node_id, node_type, region, internal_address, public_address, \
                 quic_address, status, attached_centers, capacity, version, last_heartbeat) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, $11) \
             ON CONFLICT (node_id) DO UPDATE SET node_type = EXCLUDED.node_type, \
                 region = EXCLUDED.region, internal_address = EXCLUDED.internal_address, \
                 public_address = EXCLUDED.public_address, quic_address = EXCLUDED.quic_address, \
                 status = EXCLUDED.status, attached_centers = EXCLUDED.attached_centers, \
                 capacity = EXCLUDED.capacity, version = EXCLUDED.version, \
                 last_heartbeat = EXCLUDED.last_heartbeat",
            &[
                &node.node_id,
                &node.node_type.as_str(),
                &node.region,
                &node.internal_address,
                &node.public_address,
                &node.quic_address,
                &node.status.as_str(),
                &attached,
                &capacity,
                &node.version,
                &node.last_heartbeat,
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_node(&self, node: &NodeRecord) -> MetaResult<bool> {
        let attached = to_json(&node.attached_centers)?;
        let capacity = to_json(&node.capacity)?;
        let client = self.client().await?;
        let inserted = execute(
            &client,
            "INSERT INTO nodes (node_id, node_type, region, internal_address, public_address, \
                 quic_address, status, attached_centers, capacity, version, last_heartbeat) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, $11) \
             ON CONFLICT (node_id) DO NOTHING",
            &[
                &node.node_id,
                &node.node_type.as_str(),
                &node.region,
                &node.internal_address,
                &node.public_address,
                &node.quic_address,
                &node.status.as_str(),
                &attached,
                &capacity,
                &node.version,
                &node.last_heartbeat,
            ],
        )
        .await?;
        Ok(inserted == 1)
    }

    async fn get_node(&self, node_id: &str) -> MetaResult<Option<NodeRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {NODE_COLS} FROM nodes WHERE node_id = $1");
        query_opt(&client, &sql, &[&node_id])
            .await?
            .as_ref()
            .map(node_from_row)
            .transpose()
    }

    async fn list_nodes(&self) -> MetaResult<Vec<NodeRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {NODE_COLS} FROM nodes ORDER BY node_id");
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn list_centers(&self) -> MetaResult<Vec<NodeRecord>> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {NODE_COLS} FROM nodes WHERE node_type = 'center' ORDER BY node_id");
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn touch_nodes(&self, node_ids: &[String], at_ms: i64) -> MetaResult<u64> {
        if node_ids.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE nodes SET status = 'online', last_heartbeat = $1 WHERE node_id = ANY($2)",
            &[&at_ms, &node_ids],
        )
        .await
    }

    async fn list_silent_edges(&self, before_ms: i64) -> MetaResult<Vec<NodeRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {NODE_COLS} FROM nodes WHERE node_type = 'edge' AND status <> 'offline' \
             AND last_heartbeat < $1 ORDER BY node_id"
        );
        query(&client, &sql, &[&before_ms])
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }
}

#[async_trait]
impl PodStore for PgStore {
    async fn create_pod(&self, pod: &NewPod) -> MetaResult<PodRecord> {
        if pod.pod_id.is_empty() {
            return Err(MetaError::Invalid("pod_id is empty".into()));
        }
        let now = now_millis();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let sql = format!(
            "INSERT INTO pods (pod_id, base_url, account_id, node_id, epoch, access_mode, created_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT (pod_id) DO NOTHING RETURNING {POD_COLS}"
        );
        let row = query_opt(
            &tx,
            &sql,
            &[
                &pod.pod_id,
                &pod.base_url,
                &pod.account_id,
                &pod.node_id,
                &pod.access_mode.as_str(),
                &now,
            ],
        )
        .await?
        .ok_or_else(|| MetaError::Conflict(format!("pod {} exists", pod.pod_id)))?;
        let record = pod_from_row(&row)?;
        // The root container. Rows of a pod id can only pre-exist if someone deleted the pod row
        // by hand; overwrite them as a fresh root then.
        execute(
            &tx,
            "INSERT INTO resources (pod_id, path, parent, is_container, content_type, etag, size, \
                 blob_key, regions, version, modified_at, deleted_at) \
             VALUES ($1, '/', NULL, TRUE, NULL, $2, 0, NULL, '[]', 1, $3, NULL) \
             ON CONFLICT (pod_id, path) DO UPDATE SET is_container = TRUE, content_type = NULL, \
                 etag = EXCLUDED.etag, size = 0, blob_key = NULL, regions = '[]', \
                 version = resources.version + 1, modified_at = EXCLUDED.modified_at, deleted_at = NULL",
            &[&pod.pod_id, &new_etag(), &now],
        )
        .await?;
        notify(&tx, &record.pod_id, record.epoch).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(record)
    }

    async fn get_pod(&self, pod_id: &str) -> MetaResult<Option<PodRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {POD_COLS} FROM pods WHERE pod_id = $1");
        query_opt(&client, &sql, &[&pod_id])
            .await?
            .as_ref()
            .map(pod_from_row)
            .transpose()
    }

    async fn list_pods(&self) -> MetaResult<Vec<PodRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {POD_COLS} FROM pods ORDER BY pod_id");
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(pod_from_row)
            .collect()
    }

    async fn transfer_pod(&self, pod_id: &str, target_node: &str) -> MetaResult<PodRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let owner_row = query_opt(
            &tx,
            "SELECT node_id FROM pods WHERE pod_id = $1 FOR UPDATE",
            &[&pod_id],
        )
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
        let owner: String = col(&owner_row, "node_id")?;
        let node_row = query_opt(
            &tx,
            "SELECT status FROM nodes WHERE node_id = $1",
            &[&target_node],
        )
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("node {target_node}")))?;
        let status: String = col(&node_row, "status")?;
        if status != NodeStatus::Online.as_str() {
            return Err(MetaError::Conflict(format!(
                "node {target_node} is {status}, not online"
            )));
        }
        if owner == target_node {
            return Err(MetaError::Conflict(format!(
                "pod {pod_id} is already owned by node {target_node}"
            )));
        }
        let sql = format!(
            "UPDATE pods SET node_id = $2, epoch = epoch + 1, migration_status = $3, \
                 migration_target_node = $2, migration_progress = 0 \
             WHERE pod_id = $1 RETURNING {POD_COLS}"
        );
        let row = query_opt(
            &tx,
            &sql,
            &[&pod_id, &target_node, &MigrationStatus::Syncing.as_str()],
        )
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
        let record = pod_from_row(&row)?;
        notify(&tx, &record.pod_id, record.epoch).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(record)
    }

    async fn rehome_pod(
        &self,
        pod_id: &str,
        from: &str,
        epoch: i64,
        to: &str,
    ) -> MetaResult<Option<PodRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let sql = format!(
            "UPDATE pods SET node_id = $4, epoch = epoch + 1, migration_status = $5, \
                 migration_target_node = $4, migration_progress = 0 \
             WHERE pod_id = $1 AND node_id = $2 AND epoch = $3 RETURNING {POD_COLS}"
        );
        let Some(row) = query_opt(
            &tx,
            &sql,
            &[
                &pod_id,
                &from,
                &epoch,
                &to,
                &MigrationStatus::Syncing.as_str(),
            ],
        )
        .await?
        else {
            return Ok(None);
        };
        let record = pod_from_row(&row)?;
        notify(&tx, &record.pod_id, record.epoch).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(record))
    }

    async fn pods_owned_by(&self, node_id: &str) -> MetaResult<Vec<PodRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {POD_COLS} FROM pods WHERE node_id = $1 ORDER BY pod_id");
        query(&client, &sql, &[&node_id])
            .await?
            .iter()
            .map(pod_from_row)
            .collect()
    }

    async fn set_migration_state(
        &self,
        pod_id: &str,
        status: Option<MigrationStatus>,
        progress: Option<i32>,
    ) -> MetaResult<()> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "UPDATE pods SET migration_status = $2, migration_progress = $3 WHERE pod_id = $1",
            &[&pod_id, &status.map(MigrationStatus::as_str), &progress],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::NotFound(format!("pod {pod_id}")));
        }
        Ok(())
    }

    async fn get_resource(&self, pod_id: &str, path: &str) -> MetaResult<Option<ResourceRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {RES_COLS} FROM resources WHERE pod_id = $1 AND path = $2 AND deleted_at IS NULL"
        );
        match query_opt(&client, &sql, &[&pod_id, &path]).await? {
            Some(row) => Ok(Some(resource_from_row(&row)?.0)),
            None => Ok(None),
        }
    }

    async fn get_resource_fenced(
        &self,
        pod_id: &str,
        path: &str,
        fence: &Fence,
    ) -> MetaResult<Option<ResourceRecord>> {
        let client = self.client().await?;
        // One round trip: the pod's owner and epoch, and the live row at `path` if any.
        let sql = format!(
            "SELECT p.node_id AS fence_owner, p.epoch AS fence_epoch, r.* FROM pods p \
             LEFT JOIN LATERAL (SELECT {RES_COLS} FROM resources \
               WHERE pod_id = $1 AND path = $2 AND deleted_at IS NULL) r ON true \
             WHERE p.pod_id = $1"
        );
        let row = query_opt(&client, &sql, &[&pod_id, &path])
            .await?
            .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
        let owner: String = col(&row, "fence_owner")?;
        let epoch: i64 = col(&row, "fence_epoch")?;
        if owner != fence.node_id || epoch != fence.epoch {
            return Err(MetaError::Fenced {
                pod_id: pod_id.to_string(),
                owner,
                epoch,
            });
        }
        if col::<Option<String>>(&row, "path")?.is_none() {
            return Ok(None);
        }
        Ok(Some(resource_from_row(&row)?.0))
    }

    async fn list_container(&self, pod_id: &str, path: &str) -> MetaResult<Vec<ResourceRecord>> {
        let mut client = self.client().await?;
        // One snapshot for the existence check and the listing.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let live = query_opt(
            &tx,
            "SELECT is_container FROM resources \
             WHERE pod_id = $1 AND path = $2 AND deleted_at IS NULL",
            &[&pod_id, &path],
        )
        .await?;
        match live {
            Some(row) if col::<bool>(&row, "is_container")? => {}
            _ => return Err(MetaError::NotFound(format!("container {path}"))),
        }
        let sql = format!(
            "SELECT {RES_COLS} FROM resources \
             WHERE pod_id = $1 AND parent = $2 AND deleted_at IS NULL ORDER BY path"
        );
        let members = query(&tx, &sql, &[&pod_id, &path])
            .await?
            .iter()
            .map(|r| resource_from_row(r).map(|(rec, _)| rec))
            .collect::<MetaResult<Vec<_>>>()?;
        tx.commit().await.map_err(pg_err)?;
        Ok(members)
    }

    async fn put_resource(
        &self,
        fence: &Fence,
        put: &PutResource,
        pre: &Precondition,
    ) -> MetaResult<PutOutcome> {
        plan::validate_put(put)?;
        let (pod_id, path) = (put.pod_id.as_str(), put.path.as_str());
        let regions = to_json(&put.regions)?;
        let now = now_millis();

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        lock_pod_fenced(&tx, pod_id, fence).await?;
        let current = resource_for_update(&tx, pod_id, path).await?;
        // Everything else the rules need, in one query.
        let wanted = plan::put_reads(path);
        let rows = query(
            &tx,
            "SELECT path, version, deleted_at FROM resources WHERE pod_id = $1 AND path = ANY($2)",
            &[&pod_id, &wanted],
        )
        .await?;
        let mut seen = HashMap::new();
        for row in &rows {
            let deleted: Option<i64> = col(row, "deleted_at")?;
            seen.insert(
                col::<String>(row, "path")?,
                plan::Seen {
                    version: col(row, "version")?,
                    live: deleted.is_none(),
                },
            );
        }
        let current = current.as_ref().map(|(r, deleted)| (r, deleted.is_none()));
        let plan = plan::plan_put(put, pre, current, &seen, now)?;

        for (a, version) in &plan.containers {
            execute(
                &tx,
                "INSERT INTO resources (pod_id, path, parent, is_container, content_type, etag, \
                     size, blob_key, regions, version, modified_at, deleted_at) \
                 VALUES ($1, $2, $3, TRUE, NULL, $4, 0, NULL, '[]', $5, $6, NULL) \
                 ON CONFLICT (pod_id, path) DO UPDATE SET parent = EXCLUDED.parent, \
                     is_container = TRUE, content_type = NULL, etag = EXCLUDED.etag, size = 0, \
                     blob_key = NULL, regions = '[]', version = EXCLUDED.version, \
                     modified_at = EXCLUDED.modified_at, deleted_at = NULL",
                &[&pod_id, a, &parent_path(a), &new_etag(), version, &now],
            )
            .await?;
        }
        let r = &plan.record;
        let sql = format!(
            "INSERT INTO resources (pod_id, path, parent, is_container, content_type, etag, size, \
                 blob_key, regions, version, modified_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $11, NULL) \
             ON CONFLICT (pod_id, path) DO UPDATE SET parent = EXCLUDED.parent, \
                 is_container = EXCLUDED.is_container, content_type = EXCLUDED.content_type, \
                 etag = EXCLUDED.etag, size = EXCLUDED.size, blob_key = EXCLUDED.blob_key, \
                 regions = EXCLUDED.regions, version = EXCLUDED.version, \
                 modified_at = EXCLUDED.modified_at, deleted_at = NULL \
             RETURNING {RES_COLS}"
        );
        let row = query_opt(
            &tx,
            &sql,
            &[
                &pod_id,
                &path,
                &parent_path(path),
                &r.is_container,
                &r.content_type,
                &r.etag,
                &r.size,
                &r.blob_key,
                &regions,
                &r.version,
                &now,
            ],
        )
        .await?
        .ok_or_else(|| MetaError::Backend("upsert returned no row".into()))?;
        let (record, _) = resource_from_row(&row)?;
        bump_containers(&tx, pod_id, &plan.bump, now).await?;
        if let Some(old) = &plan.replaced_blob {
            retire_blob(&tx, pod_id, path, old, now).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(PutOutcome {
            record,
            created: plan.created,
            replaced_blob: plan.replaced_blob,
        })
    }

    async fn delete_resource(
        &self,
        fence: &Fence,
        pod_id: &str,
        path: &str,
        pre: &Precondition,
    ) -> MetaResult<Option<String>> {
        check_path(path)?;
        let now = now_millis();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        lock_pod_fenced(&tx, pod_id, fence).await?;
        let current = resource_for_update(&tx, pod_id, path).await?;
        let live = current
            .as_ref()
            .filter(|(_, deleted)| deleted.is_none())
            .map(|(r, _)| r);
        let live = plan::check_delete(path, live, pre)?;
        let has_member = live.is_container
            && query_opt(
                &tx,
                "SELECT path FROM resources \
                 WHERE pod_id = $1 AND parent = $2 AND deleted_at IS NULL LIMIT 1",
                &[&pod_id, &path],
            )
            .await?
            .is_some();
        let plan = plan::plan_delete(live, has_member)?;
        execute(
            &tx,
            "UPDATE resources SET deleted_at = $3, modified_at = $3, version = version + 1, \
                 blob_key = NULL \
             WHERE pod_id = $1 AND path = $2",
            &[&pod_id, &path, &now],
        )
        .await?;
        bump_containers(&tx, pod_id, &plan.bump.iter().cloned().collect(), now).await?;
        if let Some(old) = &plan.retired_blob {
            retire_blob(&tx, pod_id, path, old, now).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(plan.retired_blob)
    }

    async fn referenced_blobs(&self, keys: &[String]) -> MetaResult<HashSet<String>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT DISTINCT blob_key FROM resources \
             WHERE blob_key = ANY($1) AND deleted_at IS NULL",
            &[&keys],
        )
        .await?;
        rows.iter().map(|r| col::<String>(r, "blob_key")).collect()
    }

    async fn drop_pod_rows(&self, pod_id: &str, if_owner: &str) -> MetaResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let owner = query_opt(
            &tx,
            "SELECT node_id FROM pods WHERE pod_id = $1 FOR UPDATE",
            &[&pod_id],
        )
        .await?;
        match owner {
            Some(r) if col::<String>(&r, "node_id")? == if_owner => {}
            _ => return Ok(0),
        }
        retire_pod_blobs(&tx, pod_id, now_millis()).await?;
        let n = execute(&tx, "DELETE FROM resources WHERE pod_id = $1", &[&pod_id]).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(n)
    }

    async fn blob_record(&self, pod_id: &str, key: &str) -> MetaResult<Option<ResourceRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {RES_COLS} FROM resources \
             WHERE blob_key = $1 AND pod_id = $2 AND deleted_at IS NULL LIMIT 1"
        );
        let rows = query(&client, &sql, &[&key, &pod_id]).await?;
        rows.first()
            .map(|r| resource_from_row(r).map(|(rec, _)| rec))
            .transpose()
    }

    async fn list_pod_blobs(&self, pod_id: &str) -> MetaResult<Vec<ResourceRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {RES_COLS} FROM resources \
             WHERE pod_id = $1 AND blob_key IS NOT NULL AND deleted_at IS NULL ORDER BY path"
        );
        let rows = query(&client, &sql, &[&pod_id]).await?;
        rows.iter()
            .map(|r| resource_from_row(r).map(|(rec, _)| rec))
            .collect()
    }

    async fn add_blob_region(&self, key: &str, region: &str) -> MetaResult<u64> {
        let client = self.client().await?;
        let add = serde_json::Value::from(vec![region]).to_string();
        execute(
            &client,
            "UPDATE resources SET regions = regions || $2::text::jsonb \
             WHERE blob_key = $1 AND NOT regions @> $2::text::jsonb",
            &[&key, &add],
        )
        .await
    }

    async fn export_pod(&self, pod_id: &str) -> MetaResult<Vec<MovedRow>> {
        let client = self.client().await?;
        if query_opt(&client, "SELECT 1 FROM pods WHERE pod_id = $1", &[&pod_id])
            .await?
            .is_none()
        {
            return Err(MetaError::NotFound(format!("pod {pod_id}")));
        }
        let sql = format!("SELECT {RES_COLS} FROM resources WHERE pod_id = $1 ORDER BY path");
        query(&client, &sql, &[&pod_id])
            .await?
            .iter()
            .map(|row| {
                let (record, deleted_at) = resource_from_row(row)?;
                Ok(MovedRow { record, deleted_at })
            })
            .collect()
    }

    async fn release_pod(&self, pod_id: &str, to: &str) -> MetaResult<PodRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let sql = format!(
            "UPDATE pods SET node_id = $2, epoch = epoch + 1, migration_status = $3, \
                 migration_target_node = $2, migration_progress = 0 \
             WHERE pod_id = $1 RETURNING {POD_COLS}"
        );
        let row = query_opt(
            &tx,
            &sql,
            &[&pod_id, &to, &MigrationStatus::Syncing.as_str()],
        )
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
        let record = pod_from_row(&row)?;
        notify(&tx, &record.pod_id, record.epoch).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(record)
    }

    async fn adopt_pod(&self, adopt: &AdoptPod) -> MetaResult<Option<PodRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let sql = format!(
            "UPDATE pods SET node_id = $4, epoch = epoch + 1, migration_status = $5, \
                 migration_target_node = $4, migration_progress = 0, account_id = $6, \
                 access_mode = $7 \
             WHERE pod_id = $1 AND node_id = $2 AND epoch = $3 RETURNING {POD_COLS}"
        );
        let Some(row) = query_opt(
            &tx,
            &sql,
            &[
                &adopt.pod_id,
                &adopt.from,
                &adopt.epoch,
                &adopt.to,
                &MigrationStatus::Syncing.as_str(),
                &adopt.account_id,
                &adopt.access_mode.as_str(),
            ],
        )
        .await?
        else {
            return Ok(None);
        };
        let record = pod_from_row(&row)?;
        retire_pod_blobs(&tx, &adopt.pod_id, now_millis()).await?;
        execute(
            &tx,
            "DELETE FROM resources WHERE pod_id = $1",
            &[&adopt.pod_id],
        )
        .await?;
        // One round trip for every row, however many: a JSON array read as a record set.
        let rows: Vec<serde_json::Value> = adopt
            .rows
            .iter()
            .map(|m| {
                let r = &m.record;
                let regions: Vec<&str> = if r.blob_key.is_some() {
                    vec![adopt.source.as_str()]
                } else {
                    Vec::new()
                };
                serde_json::json!({
                    "path": r.path, "parent": parent_path(&r.path),
                    "is_container": r.is_container, "content_type": r.content_type,
                    "etag": r.etag, "size": r.size, "blob_key": r.blob_key,
                    "regions": regions, "version": r.version,
                    "modified_at": r.modified_at, "deleted_at": m.deleted_at,
                })
            })
            .collect();
        execute(
            &tx,
            "INSERT INTO resources (pod_id, path, parent, is_container, content_type, etag, \
                 size, blob_key, regions, version, modified_at, deleted_at) \
             SELECT $1, x.path, x.parent, x.is_container, x.content_type, x.etag, x.size, \
                 x.blob_key, x.regions, x.version, x.modified_at, x.deleted_at \
             FROM jsonb_to_recordset($2::text::jsonb) AS x(path TEXT, parent TEXT, \
                 is_container BOOLEAN, content_type TEXT, etag TEXT, size BIGINT, \
                 blob_key TEXT, regions JSONB, version BIGINT, modified_at BIGINT, \
                 deleted_at BIGINT)",
            &[&adopt.pod_id, &to_json(&rows)?],
        )
        .await?;
        notify(&tx, &record.pod_id, record.epoch).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(record))
    }
}

#[async_trait]
impl CertStore for PgStore {
    async fn put_txt(&self, name: &str, value: &str, expires_at: Millis) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO dns_txt (name, value, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name, value) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            &[&name, &value, &expires_at],
        )
        .await?;
        // Expired records go as new ones come.
        execute(
            &client,
            "DELETE FROM dns_txt WHERE expires_at <= $1",
            &[&now_millis()],
        )
        .await?;
        Ok(())
    }

    async fn delete_txt(&self, name: &str, value: &str) -> MetaResult<bool> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "DELETE FROM dns_txt WHERE name = $1 AND value = $2",
            &[&name, &value],
        )
        .await?;
        Ok(n > 0)
    }

    async fn list_txt(&self, name: &str) -> MetaResult<Vec<String>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT value FROM dns_txt WHERE name = $1 AND expires_at > $2 ORDER BY value",
            &[&name, &now_millis()],
        )
        .await?;
        rows.iter().map(|r| col::<String>(r, "value")).collect()
    }

    async fn put_cert(&self, cert: &CertRecord) -> MetaResult<()> {
        let client = self.client().await?;
        let names = to_json(&cert.names)?;
        execute(
            &client,
            "INSERT INTO certs (id, names, cert_pem, key_sealed, not_before, not_after, issued_by, issued_at) \
             VALUES ($1, $2::text::jsonb, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET names = EXCLUDED.names, cert_pem = EXCLUDED.cert_pem, \
             key_sealed = EXCLUDED.key_sealed, not_before = EXCLUDED.not_before, \
             not_after = EXCLUDED.not_after, issued_by = EXCLUDED.issued_by, issued_at = EXCLUDED.issued_at",
            &[
                &cert.id,
                &names,
                &cert.cert_pem,
                &cert.key_sealed,
                &cert.not_before,
                &cert.not_after,
                &cert.issued_by,
                &cert.issued_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_cert(&self, id: &str) -> MetaResult<Option<CertRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {CERT_COLS} FROM certs WHERE id = $1");
        query_opt(&client, &sql, &[&id])
            .await?
            .map(|r| cert_from_row(&r))
            .transpose()
    }

    async fn list_certs(&self) -> MetaResult<Vec<CertRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {CERT_COLS} FROM certs ORDER BY id");
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(cert_from_row)
            .collect()
    }

    async fn put_setting(&self, name: &str, value: &str) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO cluster_settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value],
        )
        .await?;
        Ok(())
    }

    async fn get_setting(&self, name: &str) -> MetaResult<Option<String>> {
        let client = self.client().await?;
        query_opt(
            &client,
            "SELECT value FROM cluster_settings WHERE name = $1",
            &[&name],
        )
        .await?
        .map(|r| col::<String>(&r, "value"))
        .transpose()
    }

    async fn list_all_txt(&self) -> MetaResult<Vec<(String, String)>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT name, value FROM dns_txt WHERE expires_at > $1 ORDER BY name, value",
            &[&now_millis()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((col::<String>(r, "name")?, col::<String>(r, "value")?)))
            .collect()
    }
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> MetaResult<bool> {
        let client = self.client().await?;
        // One statement: the row lock of the upsert serializes racing callers.
        let row = query_opt(
            &client,
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leases.expires_at <= $3 OR leases.holder = EXCLUDED.holder \
             RETURNING holder",
            &[&name, &holder, &now, &until],
        )
        .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> MetaResult<bool> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await?;
        Ok(n > 0)
    }

    async fn renew_liveness(&self, node_id: &str, ttl_ms: i64) -> MetaResult<()> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO liveness (node_id, expires_at) VALUES ($1, {DB_NOW_MS} + $2) \
             ON CONFLICT (node_id) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        );
        execute(&client, &sql, &[&node_id, &ttl_ms]).await?;
        Ok(())
    }

    async fn liveness(&self) -> MetaResult<Vec<Liveness>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT l.node_id, COALESCE(n.region, '') AS region, \
                    {DB_NOW_MS} - l.expires_at AS expired_for_ms \
             FROM liveness l LEFT JOIN nodes n ON n.node_id = l.node_id ORDER BY l.node_id"
        );
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(Liveness {
                    node_id: col(r, "node_id")?,
                    region: col(r, "region")?,
                    expired_for_ms: col(r, "expired_for_ms")?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl DocStore for PgStore {
    async fn put_doc(&self, doc: &DocRecord, expect: i64, now: Millis) -> MetaResult<bool> {
        let client = self.client().await?;
        let body = to_json(&doc.doc)?;
        let n = if expect == 0 {
            execute(
                &client,
                "INSERT INTO docs (kind, id, owner, version, created_at, updated_at, doc) \
                 VALUES ($1, $2, $3, 1, $4, $4, $5::text::jsonb) ON CONFLICT (kind, id) DO NOTHING",
                &[&doc.kind, &doc.id, &doc.owner, &now, &body],
            )
            .await?
        } else {
            execute(
                &client,
                "UPDATE docs SET owner = $3, version = version + 1, updated_at = $4, \
                 doc = $5::text::jsonb WHERE kind = $1 AND id = $2 AND version = $6",
                &[&doc.kind, &doc.id, &doc.owner, &now, &body, &expect],
            )
            .await?
        };
        Ok(n == 1)
    }

    async fn get_doc(&self, kind: &str, id: &str) -> MetaResult<Option<DocRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {DOC_COLS} FROM docs WHERE kind = $1 AND id = $2");
        query_opt(&client, &sql, &[&kind, &id])
            .await?
            .map(|r| doc_from_row(&r))
            .transpose()
    }

    async fn list_docs(&self, kind: &str, owner: Option<&str>) -> MetaResult<Vec<DocRecord>> {
        let client = self.client().await?;
        let rows = match owner {
            Some(o) => {
                let sql = format!(
                    "SELECT {DOC_COLS} FROM docs WHERE kind = $1 AND owner = $2 ORDER BY created_at, id"
                );
                query(&client, &sql, &[&kind, &o]).await?
            }
            None => {
                let sql =
                    format!("SELECT {DOC_COLS} FROM docs WHERE kind = $1 ORDER BY created_at, id");
                query(&client, &sql, &[&kind]).await?
            }
        };
        rows.iter().map(doc_from_row).collect()
    }

    async fn delete_doc(&self, kind: &str, id: &str, expect: i64) -> MetaResult<bool> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "DELETE FROM docs WHERE kind = $1 AND id = $2 AND ($3::bigint = 0 OR version = $3::bigint)",
            &[&kind, &id, &expect],
        )
        .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> MetaResult<()> {
        let scopes = to_json(&key.scopes)?;
        let client = self.client().await?;
        let n = execute(
            &client,
            "INSERT INTO api_keys (key_id, secret_hash, name, owner, scopes, created_at, \
                 expires_at, revoked_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9) \
             ON CONFLICT (key_id) DO NOTHING",
            &[
                &key.key_id,
                &key.secret_hash,
                &key.name,
                &key.owner,
                &scopes,
                &key.created_at,
                &key.expires_at,
                &key.revoked_at,
                &key.last_used_at,
            ],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::Conflict(format!(
                "api key {} exists",
                key.key_id
            )));
        }
        Ok(())
    }

    async fn get_api_key(&self, key_id: &str) -> MetaResult<Option<ApiKeyRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE key_id = $1");
        query_opt(&client, &sql, &[&key_id])
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self) -> MetaResult<Vec<ApiKeyRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, key_id");
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn revoke_api_key(&self, key_id: &str, at: i64) -> MetaResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let n = execute(
            &tx,
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE key_id = $1",
            &[&key_id, &at],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::NotFound(format!("api key {key_id}")));
        }
        // Every node drops the key from its cache when this commits.
        let payload = FeedEvent::key_payload(key_id);
        query(&tx, "SELECT pg_notify($1, $2)", &[&FEED_CHANNEL, &payload]).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(())
    }

    async fn touch_api_key(&self, key_id: &str, at: i64) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1",
            &[&key_id, &at],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl TokenStore for PgStore {
    async fn create_join_token(&self, t: &JoinTokenRecord) -> MetaResult<()> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "INSERT INTO join_tokens (token_id, secret_hash, description, created_by, \
                 created_at, expires_at, single_use, used_at, used_by, use_count, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (token_id) DO NOTHING",
            &[
                &t.token_id,
                &t.secret_hash,
                &t.description,
                &t.created_by,
                &t.created_at,
                &t.expires_at,
                &t.single_use,
                &t.used_at,
                &t.used_by,
                &t.use_count,
                &t.revoked_at,
            ],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::Conflict(format!(
                "join token {} exists",
                t.token_id
            )));
        }
        Ok(())
    }

    async fn get_join_token(&self, token_id: &str) -> MetaResult<Option<JoinTokenRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {JOIN_TOKEN_COLS} FROM join_tokens WHERE token_id = $1");
        query_opt(&client, &sql, &[&token_id])
            .await?
            .as_ref()
            .map(join_token_from_row)
            .transpose()
    }

    async fn list_join_tokens(&self) -> MetaResult<Vec<JoinTokenRecord>> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {JOIN_TOKEN_COLS} FROM join_tokens ORDER BY created_at, token_id");
        query(&client, &sql, &[])
            .await?
            .iter()
            .map(join_token_from_row)
            .collect()
    }

    async fn use_join_token(
        &self,
        token_id: &str,
        node_id: &str,
        now: Millis,
    ) -> MetaResult<JoinTokenRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The row lock serializes racing uses: a later one waits here for the earlier one to
        // commit and then reads the row as it committed (READ COMMITTED re-reads a locked row),
        // so a single-use token is used once. A failed check drops (rolls back) the transaction.
        let sql =
            format!("SELECT {JOIN_TOKEN_COLS} FROM join_tokens WHERE token_id = $1 FOR UPDATE");
        let current = query_opt(&tx, &sql, &[&token_id])
            .await?
            .as_ref()
            .map(join_token_from_row)
            .transpose()?
            .ok_or_else(|| MetaError::NotFound(format!("join token {token_id}")))?;
        if current.revoked_at.is_some() {
            return Err(MetaError::Conflict(format!(
                "join token {token_id} was revoked"
            )));
        }
        if now >= current.expires_at {
            return Err(MetaError::Conflict(format!(
                "join token {token_id} expired"
            )));
        }
        if current.single_use && current.used_at.is_some() {
            return Err(MetaError::Conflict(format!(
                "join token {token_id} was already used"
            )));
        }
        let sql = format!(
            "UPDATE join_tokens SET used_at = COALESCE(used_at, $2), \
                 used_by = COALESCE(used_by, $3), use_count = use_count + 1 \
             WHERE token_id = $1 RETURNING {JOIN_TOKEN_COLS}"
        );
        let updated = query_opt(&tx, &sql, &[&token_id, &now, &node_id])
            .await?
            .as_ref()
            .map(join_token_from_row)
            .transpose()?
            .ok_or_else(|| {
                MetaError::Backend(format!(
                    "join token {token_id} vanished inside its transaction"
                ))
            })?;
        tx.commit().await.map_err(pg_err)?;
        Ok(updated)
    }

    async fn revoke_join_token(&self, token_id: &str, at: Millis) -> MetaResult<()> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE token_id = $1",
            &[&token_id, &at],
        )
        .await?;
        if n == 0 {
            return Err(MetaError::NotFound(format!("join token {token_id}")));
        }
        Ok(())
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, entry: &NewAudit) -> MetaResult<i64> {
        let details = to_json(&entry.details)?;
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "INSERT INTO audit_log (at, actor, action, target, details, trace_id) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6) RETURNING id",
            &[
                &entry.at,
                &entry.actor,
                &entry.action,
                &entry.target,
                &details,
                &entry.trace_id,
            ],
        )
        .await?
        .ok_or_else(|| MetaError::Backend("insert returned no id".into()))?;
        col(&row, "id")
    }

    async fn list_audit(&self, limit: i64, before: Option<i64>) -> MetaResult<Vec<AuditEntry>> {
        let limit = limit.max(0);
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT id, at, actor, action, target, details::text AS details, trace_id \
             FROM audit_log WHERE ($2::BIGINT IS NULL OR id < $2) ORDER BY id DESC LIMIT $1",
            &[&limit, &before],
        )
        .await?;
        rows.iter().map(audit_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted);
        assert_eq!(versions.first(), Some(&1));
    }

    #[test]
    fn migration_lock_is_positive_ascii() {
        assert_eq!(&MIGRATION_LOCK.to_be_bytes(), b"xpodmigr");
    }
}
