//! Embedded SQLite backend, for a lone node or an edge.
//!
//! One connection behind a std [`Mutex`]: SQLite serializes writers anyway, and a single
//! connection means a write transaction never waits on another connection of this process.
//! Every call runs in [`tokio::task::spawn_blocking`] so disk I/O (and `fsync` under
//! `synchronous=FULL`) never blocks the async runtime. Writes use `BEGIN IMMEDIATE`, which takes
//! the write lock up front: the fence and precondition checks then see the state the write will
//! commit against, even if another process opened the same file.
//!
//! The change feed is in-process: this store is the only writer, so it sends the events itself
//! after each commit, and the feed is live from the moment the store opens.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;

use super::feed::FeedHub;
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

/// Numbered schema migrations, applied in order, each in its own IMMEDIATE transaction together
/// with its `schema_migrations` row, so a crash never leaves a half-applied version. Never edit
/// an applied entry: append a new version. Columns match the PostgreSQL backend.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE nodes (
    node_id          TEXT PRIMARY KEY,
    node_type        TEXT NOT NULL,
    region           TEXT NOT NULL,
    internal_address TEXT,
    public_address   TEXT,
    quic_address     TEXT,
    status           TEXT NOT NULL,
    attached_centers TEXT NOT NULL DEFAULT '[]',
    capacity         TEXT NOT NULL DEFAULT '{}',
    version          TEXT NOT NULL,
    last_heartbeat   INTEGER NOT NULL
);

CREATE TABLE pods (
    pod_id                TEXT PRIMARY KEY,
    base_url              TEXT NOT NULL,
    account_id            TEXT,
    node_id               TEXT NOT NULL,
    epoch                 INTEGER NOT NULL,
    access_mode           TEXT NOT NULL,
    migration_status      TEXT,
    migration_target_node TEXT,
    migration_progress    INTEGER,
    created_at            INTEGER NOT NULL
);

CREATE TABLE resources (
    pod_id       TEXT NOT NULL REFERENCES pods(pod_id),
    path         TEXT NOT NULL,
    parent       TEXT,
    is_container INTEGER NOT NULL,
    content_type TEXT,
    etag         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    blob_key     TEXT,
    regions      TEXT NOT NULL DEFAULT '[]',
    version      INTEGER NOT NULL,
    modified_at  INTEGER NOT NULL,
    deleted_at   INTEGER,
    PRIMARY KEY (pod_id, path)
);
CREATE INDEX resources_parent ON resources(pod_id, parent);
CREATE INDEX resources_blob_key ON resources(blob_key);

CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL,
    name         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    details  TEXT NOT NULL DEFAULT '{}',
    trace_id TEXT NOT NULL
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE join_tokens (
    token_id    TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    single_use  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT,
    use_count   INTEGER NOT NULL DEFAULT 0,
    revoked_at  INTEGER
);
CREATE INDEX join_tokens_created ON join_tokens(created_at, token_id);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE dns_txt (
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (name, value)
);
"#,
    ),
    (
        4,
        r#"
CREATE TABLE certs (
    id         TEXT PRIMARY KEY,
    names      TEXT NOT NULL,
    cert_pem   TEXT NOT NULL,
    key_sealed TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    issued_by  TEXT NOT NULL,
    issued_at  INTEGER NOT NULL
);
CREATE TABLE cluster_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    ),
    (
        5,
        r#"
CREATE TABLE docs (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX docs_owner ON docs(kind, owner, created_at, id);
CREATE INDEX docs_created ON docs(kind, created_at, id);
"#,
    ),
    (
        6,
        r#"
CREATE TABLE liveness (
    node_id    TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
"#,
    ),
];

/// The embedded metadata store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    hub: FeedHub,
    resources: super::feed::ResourceHub,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating the parent directory and the file if needed) and migrates the database
    /// at `path`.
    pub async fn open(path: &str) -> MetaResult<SqliteStore> {
        let path = path.to_string();
        let conn = blocking(move || {
            if let Some(dir) = Path::new(&path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        MetaError::Unavailable(format!("create directory {}: {e}", dir.display()))
                    })?;
                }
            }
            let conn = Connection::open(&path).db()?;
            configure(&conn, true)?;
            Ok(conn)
        })
        .await?;
        Self::init(conn).await
    }

    /// A private in-memory database (tests, throwaway nodes). Gone when the store is dropped.
    pub async fn open_in_memory() -> MetaResult<SqliteStore> {
        let conn = blocking(|| {
            let conn = Connection::open_in_memory().db()?;
            configure(&conn, false)?;
            Ok(conn)
        })
        .await?;
        Self::init(conn).await
    }

    async fn init(conn: Connection) -> MetaResult<SqliteStore> {
        let store = SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            hub: FeedHub::new(),
            resources: Default::default(),
        };
        store.call(migrate).await?;
        // The in-process feed cannot disconnect: it is live for the store's whole life.
        store.hub.set_live(true);
        Ok(store)
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> MetaResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        blocking(move || {
            // A panic while holding the lock leaves the mutex poisoned. The open transaction
            // was rolled back when it was dropped during unwinding, but we refuse to guess: the
            // store reports itself broken instead of panicking every caller in turn.
            let mut guard = conn
                .lock()
                .map_err(|_| MetaError::Backend("sqlite connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
    }
}

/// Runs blocking work off the async runtime; a panic or cancellation becomes an error.
async fn blocking<T, F>(f: F) -> MetaResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> MetaResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MetaError::Backend(format!("sqlite task failed: {e}")))?
}

/// Connection settings. `synchronous=FULL` makes every acknowledged commit durable across
/// kill -9 and power loss (WAL alone with NORMAL may lose the last commits on power loss).
fn configure(conn: &Connection, file: bool) -> MetaResult<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .db()?;
    // An in-memory database answers `memory`; a file must really be in WAL mode.
    if file && !mode.eq_ignore_ascii_case("wal") {
        return Err(MetaError::Backend(format!(
            "journal_mode=WAL refused (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL").db()?;
    conn.pragma_update(None, "foreign_keys", "ON").db()?;
    conn.busy_timeout(Duration::from_millis(5000)).db()?;
    Ok(())
}

/// Applies every migration not yet recorded in `schema_migrations`. Idempotent: a reopen
/// applies nothing; the version is re-checked inside the write transaction so two processes
/// opening the same file at once do not both apply it.
fn migrate(conn: &mut Connection) -> MetaResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .db()?;
    for &(version, sql) in MIGRATIONS {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let applied = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [version],
                |_| Ok(()),
            )
            .optional()
            .db()?
            .is_some();
        if !applied {
            tx.execute_batch(sql)
                .map_err(|e| MetaError::Backend(format!("migration {version}: {e}")))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now_millis()],
            )
            .db()?;
            tracing::info!(version, "applied sqlite metadata migration");
        }
        tx.commit().db()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error mapping
// ---------------------------------------------------------------------------------------------

/// Converts rusqlite results into [`MetaResult`] with `.db()?`. A local trait (not a `From`
/// impl) so the mapping stays private to this backend.
trait DbResultExt<T> {
    fn db(self) -> MetaResult<T>;
}

impl<T> DbResultExt<T> for rusqlite::Result<T> {
    fn db(self) -> MetaResult<T> {
        self.map_err(db_error)
    }
}

/// Lock contention (another process holds the file past `busy_timeout`) and I/O trouble are
/// transient: `Unavailable`, so callers retry. Everything else is a `Backend` error.
fn db_error(e: rusqlite::Error) -> MetaError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen
                    | ErrorCode::DiskFull
            ) =>
        {
            MetaError::Unavailable(e.to_string())
        }
        _ => MetaError::Backend(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Row mapping
// ---------------------------------------------------------------------------------------------

/// A text column holding an enum; an unknown value is a conversion error naming the column.
fn enum_col<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    parse(&s).ok_or_else(|| conversion_error(idx, format!("unknown value `{s}`")))
}

fn opt_enum_col<T>(
    row: &Row<'_>,
    idx: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(s) => parse(&s)
            .map(Some)
            .ok_or_else(|| conversion_error(idx, format!("unknown value `{s}`"))),
    }
}

/// A text column holding JSON.
fn json_col<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| conversion_error(idx, format!("bad json: {e}")))
}

fn conversion_error(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, msg.into())
}

fn to_json<T: serde::Serialize>(v: &T) -> MetaResult<String> {
    serde_json::to_string(v).map_err(|e| MetaError::Backend(format!("encode json: {e}")))
}

const NODE_COLS: &str = "node_id, node_type, region, internal_address, public_address, \
     quic_address, status, attached_centers, capacity, version, last_heartbeat";

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        node_id: row.get(0)?,
        node_type: enum_col(row, 1, NodeType::parse)?,
        region: row.get(2)?,
        internal_address: row.get(3)?,
        public_address: row.get(4)?,
        quic_address: row.get(5)?,
        status: enum_col(row, 6, NodeStatus::parse)?,
        attached_centers: json_col(row, 7)?,
        capacity: json_col(row, 8)?,
        version: row.get(9)?,
        last_heartbeat: row.get(10)?,
    })
}

const POD_COLS: &str = "pod_id, base_url, account_id, node_id, epoch, access_mode, \
     migration_status, migration_target_node, migration_progress, created_at";

fn pod_from_row(row: &Row<'_>) -> rusqlite::Result<PodRecord> {
    Ok(PodRecord {
        pod_id: row.get(0)?,
        base_url: row.get(1)?,
        account_id: row.get(2)?,
        node_id: row.get(3)?,
        epoch: row.get(4)?,
        access_mode: enum_col(row, 5, AccessMode::parse)?,
        migration_status: opt_enum_col(row, 6, MigrationStatus::parse)?,
        migration_target_node: row.get(7)?,
        migration_progress: row.get(8)?,
        created_at: row.get(9)?,
    })
}

const RESOURCE_COLS: &str = "pod_id, path, is_container, content_type, etag, size, blob_key, \
     regions, version, modified_at, deleted_at";

/// A resource row, live or tombstoned.
struct StoredResource {
    record: ResourceRecord,
    deleted: bool,
}

fn resource_from_row(row: &Row<'_>) -> rusqlite::Result<StoredResource> {
    Ok(StoredResource {
        record: ResourceRecord {
            pod_id: row.get(0)?,
            path: row.get(1)?,
            is_container: row.get(2)?,
            content_type: row.get(3)?,
            etag: row.get(4)?,
            size: row.get(5)?,
            blob_key: row.get(6)?,
            regions: json_col(row, 7)?,
            version: row.get(8)?,
            modified_at: row.get(9)?,
        },
        deleted: row.get::<_, Option<i64>>(10)?.is_some(),
    })
}

const API_KEY_COLS: &str = "key_id, secret_hash, name, owner, scopes, created_at, expires_at, \
     revoked_at, last_used_at";

fn api_key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: row.get(0)?,
        secret_hash: row.get(1)?,
        name: row.get(2)?,
        owner: row.get(3)?,
        scopes: json_col(row, 4)?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        last_used_at: row.get(8)?,
    })
}

const JOIN_TOKEN_COLS: &str = "token_id, secret_hash, description, created_by, created_at, \
     expires_at, single_use, used_at, used_by, use_count, revoked_at";

fn join_token_from_row(row: &Row<'_>) -> rusqlite::Result<JoinTokenRecord> {
    Ok(JoinTokenRecord {
        token_id: row.get(0)?,
        secret_hash: row.get(1)?,
        description: row.get(2)?,
        created_by: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        single_use: row.get(6)?,
        used_at: row.get(7)?,
        used_by: row.get(8)?,
        use_count: row.get(9)?,
        revoked_at: row.get(10)?,
    })
}

const DOC_COLS: &str = "kind, id, owner, version, updated_at, doc";

fn doc_from_row(row: &Row<'_>) -> rusqlite::Result<(DocRecord, String)> {
    Ok((
        DocRecord {
            kind: row.get(0)?,
            id: row.get(1)?,
            owner: row.get(2)?,
            version: row.get(3)?,
            updated_at: row.get(4)?,
            doc: serde_json::Value::Null,
        },
        row.get(5)?,
    ))
}

fn doc_json((mut doc, text): (DocRecord, String)) -> MetaResult<DocRecord> {
    doc.doc =
        serde_json::from_str(&text).map_err(|e| MetaError::Backend(format!("docs.doc: {e}")))?;
    Ok(doc)
}

const CERT_COLS: &str =
    "id, names, cert_pem, key_sealed, not_before, not_after, issued_by, issued_at";

fn cert_from_row(row: &Row<'_>) -> rusqlite::Result<(CertRecord, String)> {
    Ok((
        CertRecord {
            id: row.get(0)?,
            names: Vec::new(),
            cert_pem: row.get(2)?,
            key_sealed: row.get(3)?,
            not_before: row.get(4)?,
            not_after: row.get(5)?,
            issued_by: row.get(6)?,
            issued_at: row.get(7)?,
        },
        row.get(1)?,
    ))
}

/// Fills in the names (a JSON column) of a row read by [`cert_from_row`].
fn cert_names((mut cert, names): (CertRecord, String)) -> MetaResult<CertRecord> {
    cert.names = serde_json::from_str(&names)
        .map_err(|e| MetaError::Backend(format!("certs.names: {e}")))?;
    Ok(cert)
}

fn load_join_token(conn: &Connection, token_id: &str) -> MetaResult<Option<JoinTokenRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {JOIN_TOKEN_COLS} FROM join_tokens WHERE token_id = ?1"
    ))
    .db()?
    .query_row([token_id], join_token_from_row)
    .optional()
    .db()
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        details: json_col(row, 5)?,
        trace_id: row.get(6)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Transaction helpers
// ---------------------------------------------------------------------------------------------

fn load_pod(conn: &Connection, pod_id: &str) -> MetaResult<Option<PodRecord>> {
    conn.prepare_cached(&format!("SELECT {POD_COLS} FROM pods WHERE pod_id = ?1"))
        .db()?
        .query_row([pod_id], pod_from_row)
        .optional()
        .db()
}

/// Loads the pod and checks the fence: the first two steps of every resource write.
fn check_fence(tx: &Transaction<'_>, pod_id: &str, fence: &Fence) -> MetaResult<PodRecord> {
    let pod = load_pod(tx, pod_id)?.ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
    plan::check_fence(pod_id, &pod.node_id, pod.epoch, fence)?;
    Ok(pod)
}

/// The row at `path`, live or tombstoned.
fn load_resource(
    conn: &Connection,
    pod_id: &str,
    path: &str,
) -> MetaResult<Option<StoredResource>> {
    conn.prepare_cached(&format!(
        "SELECT {RESOURCE_COLS} FROM resources WHERE pod_id = ?1 AND path = ?2"
    ))
    .db()?
    .query_row([pod_id, path], resource_from_row)
    .optional()
    .db()
}

fn load_live(conn: &Connection, pod_id: &str, path: &str) -> MetaResult<Option<ResourceRecord>> {
    Ok(load_resource(conn, pod_id, path)?
        .filter(|r| !r.deleted)
        .map(|r| r.record))
}

/// Inserts or revives the row for `record.path` (clearing any tombstone). `record.version`
/// must already be the previous version + 1.
fn upsert_resource(tx: &Transaction<'_>, record: &ResourceRecord) -> MetaResult<()> {
    tx.prepare_cached(
        "INSERT INTO resources (pod_id, path, parent, is_container, content_type, etag, size,
                                blob_key, regions, version, modified_at, deleted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL)
         ON CONFLICT (pod_id, path) DO UPDATE SET
             parent = excluded.parent, is_container = excluded.is_container,
             content_type = excluded.content_type, etag = excluded.etag, size = excluded.size,
             blob_key = excluded.blob_key, regions = excluded.regions,
             version = excluded.version, modified_at = excluded.modified_at, deleted_at = NULL",
    )
    .db()?
    .execute(params![
        record.pod_id,
        record.path,
        parent_path(&record.path),
        record.is_container,
        record.content_type,
        record.etag,
        record.size,
        record.blob_key,
        to_json(&record.regions)?,
        record.version,
        record.modified_at,
    ])
    .db()?;
    Ok(())
}

/// A new etag for the live container `path`.
fn bump_container(tx: &Transaction<'_>, pod_id: &str, path: &str, now: i64) -> MetaResult<()> {
    tx.prepare_cached(
        "UPDATE resources SET etag = ?1, modified_at = ?2
         WHERE pod_id = ?3 AND path = ?4 AND deleted_at IS NULL",
    )
    .db()?
    .execute(params![new_etag(), now, pod_id, path])
    .db()?;
    Ok(())
}

/// The body of [`PodStore::put_resource`], inside one IMMEDIATE transaction: reads what the
/// rules need, then executes the plan of [`plan::plan_put`].
fn put_tx(
    tx: &Transaction<'_>,
    fence: &Fence,
    put: &PutResource,
    pre: &Precondition,
) -> MetaResult<PutOutcome> {
    plan::validate_put(put)?;
    check_fence(tx, &put.pod_id, fence)?;
    let pod_id = put.pod_id.as_str();
    let existing = load_resource(tx, pod_id, &put.path)?;
    let mut seen = HashMap::new();
    for p in plan::put_reads(&put.path) {
        if let Some(r) = load_resource(tx, pod_id, &p)? {
            seen.insert(
                p,
                plan::Seen {
                    version: r.record.version,
                    live: !r.deleted,
                },
            );
        }
    }
    let now = now_millis();
    let current = existing.as_ref().map(|r| (&r.record, !r.deleted));
    let plan = plan::plan_put(put, pre, current, &seen, now)?;
    for (a, version) in &plan.containers {
        upsert_resource(tx, &plan::container(pod_id, a, *version, now))?;
    }
    upsert_resource(tx, &plan.record)?;
    for c in &plan.bump {
        bump_container(tx, pod_id, c, now)?;
    }
    if let Some(old) = &plan.replaced_blob {
        retire_blob(tx, pod_id, &put.path, old, now)?;
    }
    Ok(PutOutcome {
        record: plan.record,
        created: plan.created,
        replaced_blob: plan.replaced_blob,
    })
}

/// The body of [`PodStore::delete_resource`], inside one IMMEDIATE transaction.
fn delete_tx(
    tx: &Transaction<'_>,
    fence: &Fence,
    pod_id: &str,
    path: &str,
    pre: &Precondition,
) -> MetaResult<Option<String>> {
    check_fence(tx, pod_id, fence)?;
    let live = load_live(tx, pod_id, path)?;
    let live = plan::check_delete(path, live.as_ref(), pre)?;
    let has_member = live.is_container
        && tx
            .prepare_cached(
                "SELECT 1 FROM resources
                 WHERE pod_id = ?1 AND parent = ?2 AND deleted_at IS NULL LIMIT 1",
            )
            .db()?
            .query_row([pod_id, path], |_| Ok(()))
            .optional()
            .db()?
            .is_some();
    let plan = plan::plan_delete(live, has_member)?;
    let now = now_millis();
    // The tombstone keeps its version history (+1: a delete is a write) but drops the blob key,
    // so it never counts as a reference once the caller deletes the blob.
    tx.prepare_cached(
        "UPDATE resources SET deleted_at = ?1, modified_at = ?1, version = version + 1,
                              blob_key = NULL
         WHERE pod_id = ?2 AND path = ?3",
    )
    .db()?
    .execute(params![now, pod_id, path])
    .db()?;
    if let Some(c) = &plan.bump {
        bump_container(tx, pod_id, c, now)?;
    }
    if let Some(old) = &plan.retired_blob {
        retire_blob(tx, pod_id, path, old, now)?;
    }
    Ok(plan.retired_blob)
}

/// Retires the blob of every row of `pod_id` ([`retire_blob`]), before the rows are dropped.
fn retire_pod_blobs(tx: &Transaction<'_>, pod_id: &str, now: i64) -> MetaResult<()> {
    let old: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT path, blob_key FROM resources WHERE pod_id = ?1 AND blob_key IS NOT NULL",
        )
        .db()?
        .query_map([pod_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    for (path, key) in old {
        retire_blob(tx, pod_id, &path, &key, now)?;
    }
    Ok(())
}

/// Records that `key` is no longer referenced (a [`RETIRED_BLOB`] document), in the transaction
/// that unreferenced it, so the blob GC waits out the grace period from now.
fn retire_blob(
    tx: &Transaction<'_>,
    pod_id: &str,
    path: &str,
    key: &str,
    now: i64,
) -> MetaResult<()> {
    let doc = serde_json::json!({ "path": path }).to_string();
    tx.prepare_cached(
        "INSERT INTO docs (kind, id, owner, version, created_at, updated_at, doc)
         VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5)
         ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner,
             version = docs.version + 1, updated_at = excluded.updated_at, doc = excluded.doc",
    )
    .db()?
    .execute(params![RETIRED_BLOB, key, pod_id, now, doc])
    .db()?;
    Ok(())
}

fn transfer_tx(tx: &Transaction<'_>, pod_id: &str, target: &str) -> MetaResult<PodRecord> {
    let pod = load_pod(tx, pod_id)?.ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
    let status = tx
        .prepare_cached("SELECT status FROM nodes WHERE node_id = ?1")
        .db()?
        .query_row([target], |r| enum_col(r, 0, NodeStatus::parse))
        .optional()
        .db()?
        .ok_or_else(|| MetaError::NotFound(format!("node {target}")))?;
    if status != NodeStatus::Online {
        return Err(MetaError::Conflict(format!(
            "node {target} is {}",
            status.as_str()
        )));
    }
    if pod.node_id == target {
        return Err(MetaError::Conflict(format!(
            "pod {pod_id} is already owned by node {target}"
        )));
    }
    tx.prepare_cached(
        "UPDATE pods SET node_id = ?1, epoch = epoch + 1, migration_status = ?2,
                         migration_target_node = ?1, migration_progress = 0
         WHERE pod_id = ?3",
    )
    .db()?
    .execute(params![target, MigrationStatus::Syncing.as_str(), pod_id])
    .db()?;
    load_pod(tx, pod_id)?
        .ok_or_else(|| MetaError::Backend(format!("pod {pod_id} vanished inside its transaction")))
}

fn immediate(conn: &mut Connection) -> MetaResult<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .db()
}

// ---------------------------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl MetaStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> MetaResult<()> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(())).db())
            .await
    }

    fn subscribe(&self) -> ChangeFeed {
        self.hub.subscribe()
    }

    async fn announce(&self, ev: &super::ResourceEvent) -> MetaResult<()> {
        self.resources.send(ev.clone());
        Ok(())
    }

    fn resource_events(&self) -> tokio::sync::broadcast::Receiver<super::ResourceEvent> {
        self.resources.subscribe()
    }
}

#[async_trait]
impl NodeStore for SqliteStore {
    async fn upsert_node(&self, node: &NodeRecord) -> MetaResult<()> {
        let node = node.clone();
        let centers = to_json(&node.attached_centers)?;
        let capacity = to_json(&node.capacity)?;
        self.call(move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO nodes ({NODE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (node_id) DO UPDATE SET
                     node_type = excluded.node_type, region = excluded.region,
                     internal_address = excluded.internal_address,
                     public_address = excluded.public_address,
                     quic_address = excluded.quic_address, status = excluded.status,
                     attached_centers = excluded.attached_centers, capacity = excluded.capacity,
                     version = excluded.version, last_heartbeat = excluded.last_heartbeat"
            ))
            .db()?
            .execute(params![
                node.node_id,
                node.node_type.as_str(),
                node.region,
                node.internal_address,
                node.public_address,
                node.quic_address,
                node.status.as_str(),
                centers,
                capacity,
                node.version,
                node.last_heartbeat,
            ])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn insert_node(&self, node: &NodeRecord) -> MetaResult<bool> {
        let node = node.clone();
        let centers = to_json(&node.attached_centers)?;
        let capacity = to_json(&node.capacity)?;
        self.call(move |c| {
            let inserted = c.prepare_cached(&format!(
                "INSERT INTO nodes ({NODE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (node_id) DO NOTHING"
            ))
            .db()?
            .execute(params![
                node.node_id,
                node.node_type.as_str(),
                node.region,
                node.internal_address,
                node.public_address,
                node.quic_address,
                node.status.as_str(),
                centers,
                capacity,
                node.version,
                node.last_heartbeat,
            ])
            .db()?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn get_node(&self, node_id: &str) -> MetaResult<Option<NodeRecord>> {
        let node_id = node_id.to_string();
        self.call(move |c| {
            c.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes WHERE node_id = ?1"))
                .db()?
                .query_row([node_id], node_from_row)
                .optional()
                .db()
        })
        .await
    }

    async fn list_nodes(&self) -> MetaResult<Vec<NodeRecord>> {
        self.call(|c| {
            c.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY node_id"))
                .db()?
                .query_map([], node_from_row)
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()
        })
        .await
    }

    async fn list_centers(&self) -> MetaResult<Vec<NodeRecord>> {
        self.call(|c| {
            c.prepare_cached(&format!(
                "SELECT {NODE_COLS} FROM nodes WHERE node_type = 'center' ORDER BY node_id"
            ))
            .db()?
            .query_map([], node_from_row)
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn touch_nodes(&self, node_ids: &[String], at_ms: i64) -> MetaResult<u64> {
        if node_ids.is_empty() {
            return Ok(0);
        }
        let ids = to_json(&node_ids)?;
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE nodes SET status = 'online', last_heartbeat = ?1
                     WHERE node_id IN (SELECT value FROM json_each(?2))",
                )
                .db()?
                .execute(params![at_ms, ids])
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn list_silent_edges(&self, before_ms: i64) -> MetaResult<Vec<NodeRecord>> {
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {NODE_COLS} FROM nodes WHERE node_type = 'edge' AND status <> 'offline'
                 AND last_heartbeat < ?1 ORDER BY node_id"
            ))
            .db()?
            .query_map([before_ms], node_from_row)
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }
}

#[async_trait]
impl PodStore for SqliteStore {
    async fn create_pod(&self, pod: &NewPod) -> MetaResult<PodRecord> {
        let pod = pod.clone();
        let record = self
            .call(move |c| {
                let tx = immediate(c)?;
                if load_pod(&tx, &pod.pod_id)?.is_some() {
                    return Err(MetaError::Conflict(format!("pod {} exists", pod.pod_id)));
                }
                let now = now_millis();
                let record = PodRecord {
                    pod_id: pod.pod_id,
                    base_url: pod.base_url,
                    account_id: pod.account_id,
                    node_id: pod.node_id,
                    epoch: 1,
                    access_mode: pod.access_mode,
                    migration_status: None,
                    migration_target_node: None,
                    migration_progress: None,
                    created_at: now,
                };
                tx.prepare_cached(&format!(
                    "INSERT INTO pods ({POD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, NULL, ?7)"
                ))
                .db()?
                .execute(params![
                    record.pod_id,
                    record.base_url,
                    record.account_id,
                    record.node_id,
                    record.epoch,
                    record.access_mode.as_str(),
                    record.created_at,
                ])
                .db()?;
                // A tombstoned root of an earlier pod with this id cannot exist: pods are never
                // deleted and `/` cannot be deleted, so the root is version 1.
                upsert_resource(&tx, &plan::container(&record.pod_id, "/", 1, now))?;
                tx.commit().db()?;
                Ok(record)
            })
            .await?;
        self.hub.send(FeedEvent::PodOwner {
            pod_id: record.pod_id.clone(),
            epoch: record.epoch,
        });
        Ok(record)
    }

    async fn get_pod(&self, pod_id: &str) -> MetaResult<Option<PodRecord>> {
        let pod_id = pod_id.to_string();
        self.call(move |c| load_pod(c, &pod_id)).await
    }

    async fn list_pods(&self) -> MetaResult<Vec<PodRecord>> {
        self.call(|c| {
            c.prepare_cached(&format!("SELECT {POD_COLS} FROM pods ORDER BY pod_id"))
                .db()?
                .query_map([], pod_from_row)
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()
        })
        .await
    }

    async fn rehome_pod(
        &self,
        pod_id: &str,
        from: &str,
        epoch: i64,
        to: &str,
    ) -> MetaResult<Option<PodRecord>> {
        let (pod_id, from, to) = (pod_id.to_string(), from.to_string(), to.to_string());
        let record = self
            .call(move |c| {
                let tx = immediate(c)?;
                let n = tx
                    .prepare_cached(
                        "UPDATE pods SET node_id = ?1, epoch = epoch + 1, migration_status = ?2,
                                         migration_target_node = ?1, migration_progress = 0
                         WHERE pod_id = ?3 AND node_id = ?4 AND epoch = ?5",
                    )
                    .db()?
                    .execute(params![
                        to,
                        MigrationStatus::Syncing.as_str(),
                        pod_id,
                        from,
                        epoch
                    ])
                    .db()?;
                let record = if n == 1 {
                    load_pod(&tx, &pod_id)?
                } else {
                    None
                };
                tx.commit().db()?;
                Ok(record)
            })
            .await?;
        if let Some(r) = &record {
            self.hub.send(FeedEvent::PodOwner {
                pod_id: r.pod_id.clone(),
                epoch: r.epoch,
            });
        }
        Ok(record)
    }

    async fn pods_owned_by(&self, node_id: &str) -> MetaResult<Vec<PodRecord>> {
        let node_id = node_id.to_string();
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {POD_COLS} FROM pods WHERE node_id = ?1 ORDER BY pod_id"
            ))
            .db()?
            .query_map([node_id], pod_from_row)
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn transfer_pod(&self, pod_id: &str, target_node: &str) -> MetaResult<PodRecord> {
        let (pod_id, target) = (pod_id.to_string(), target_node.to_string());
        let record = self
            .call(move |c| {
                let tx = immediate(c)?;
                let record = transfer_tx(&tx, &pod_id, &target)?;
                tx.commit().db()?;
                Ok(record)
            })
            .await?;
        self.hub.send(FeedEvent::PodOwner {
            pod_id: record.pod_id.clone(),
            epoch: record.epoch,
        });
        Ok(record)
    }

    /// Sets both columns as given (`None` clears), leaving owner, epoch and target untouched.
    async fn set_migration_state(
        &self,
        pod_id: &str,
        status: Option<MigrationStatus>,
        progress: Option<i32>,
    ) -> MetaResult<()> {
        let pod_id = pod_id.to_string();
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE pods SET migration_status = ?1, migration_progress = ?2
                     WHERE pod_id = ?3",
                )
                .db()?
                .execute(params![
                    status.map(MigrationStatus::as_str),
                    progress,
                    pod_id
                ])
                .db()?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("pod {pod_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn get_resource(&self, pod_id: &str, path: &str) -> MetaResult<Option<ResourceRecord>> {
        let (pod_id, path) = (pod_id.to_string(), path.to_string());
        self.call(move |c| load_live(c, &pod_id, &path)).await
    }

    async fn list_container(&self, pod_id: &str, path: &str) -> MetaResult<Vec<ResourceRecord>> {
        let (pod_id, path) = (pod_id.to_string(), path.to_string());
        self.call(move |c| {
            // One read transaction: the existence check and the listing see the same snapshot.
            let tx = c.transaction().db()?;
            match load_live(&tx, &pod_id, &path)? {
                Some(r) if r.is_container => {}
                _ => return Err(MetaError::NotFound(format!("container {path}"))),
            }
            let members = tx
                .prepare_cached(&format!(
                    "SELECT {RESOURCE_COLS} FROM resources
                     WHERE pod_id = ?1 AND parent = ?2 AND deleted_at IS NULL
                     ORDER BY path"
                ))
                .db()?
                .query_map([&pod_id, &path], resource_from_row)
                .db()?
                .map(|r| r.map(|s| s.record))
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()?;
            tx.commit().db()?;
            Ok(members)
        })
        .await
    }

    async fn put_resource(
        &self,
        fence: &Fence,
        put: &PutResource,
        pre: &Precondition,
    ) -> MetaResult<PutOutcome> {
        let (fence, put, pre) = (fence.clone(), put.clone(), pre.clone());
        self.call(move |c| {
            let tx = immediate(c)?;
            let outcome = put_tx(&tx, &fence, &put, &pre)?;
            tx.commit().db()?;
            Ok(outcome)
        })
        .await
    }

    async fn delete_resource(
        &self,
        fence: &Fence,
        pod_id: &str,
        path: &str,
        pre: &Precondition,
    ) -> MetaResult<Option<String>> {
        let (fence, pod_id, path, pre) = (
            fence.clone(),
            pod_id.to_string(),
            path.to_string(),
            pre.clone(),
        );
        self.call(move |c| {
            let tx = immediate(c)?;
            let blob = delete_tx(&tx, &fence, &pod_id, &path, &pre)?;
            tx.commit().db()?;
            Ok(blob)
        })
        .await
    }

    async fn referenced_blobs(&self, keys: &[String]) -> MetaResult<HashSet<String>> {
        let keys = keys.to_vec();
        self.call(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT 1 FROM resources WHERE blob_key = ?1 AND deleted_at IS NULL LIMIT 1",
                )
                .db()?;
            let mut found = HashSet::new();
            for key in keys {
                if stmt
                    .query_row([&key], |_| Ok(()))
                    .optional()
                    .db()?
                    .is_some()
                {
                    found.insert(key);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn drop_pod_rows(&self, pod_id: &str, if_owner: &str) -> MetaResult<u64> {
        let (pod_id, if_owner) = (pod_id.to_string(), if_owner.to_string());
        self.call(move |c| {
            let tx = immediate(c)?;
            match load_pod(&tx, &pod_id)? {
                Some(p) if p.node_id == if_owner => {}
                _ => return Ok(0),
            }
            retire_pod_blobs(&tx, &pod_id, now_millis())?;
            let n = tx
                .prepare_cached("DELETE FROM resources WHERE pod_id = ?1")
                .db()?
                .execute([&pod_id])
                .db()?;
            tx.commit().db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn blob_record(&self, pod_id: &str, key: &str) -> MetaResult<Option<ResourceRecord>> {
        let (pod_id, key) = (pod_id.to_string(), key.to_string());
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {RESOURCE_COLS} FROM resources
                 WHERE blob_key = ?1 AND pod_id = ?2 AND deleted_at IS NULL LIMIT 1"
            ))
            .db()?
            .query_row([&key, &pod_id], resource_from_row)
            .optional()
            .db()
            .map(|r| r.map(|s| s.record))
        })
        .await
    }

    async fn list_pod_blobs(&self, pod_id: &str) -> MetaResult<Vec<ResourceRecord>> {
        let pod_id = pod_id.to_string();
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {RESOURCE_COLS} FROM resources
                 WHERE pod_id = ?1 AND blob_key IS NOT NULL AND deleted_at IS NULL
                 ORDER BY path"
            ))
            .db()?
            .query_map([&pod_id], resource_from_row)
            .db()?
            .map(|r| r.map(|s| s.record))
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn add_blob_region(&self, key: &str, region: &str) -> MetaResult<u64> {
        let (key, region) = (key.to_string(), region.to_string());
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE resources SET regions = json_insert(regions, '$[#]', ?2)
                     WHERE blob_key = ?1
                       AND NOT EXISTS (SELECT 1 FROM json_each(regions) WHERE value = ?2)",
                )
                .db()?
                .execute([&key, &region])
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn export_pod(&self, pod_id: &str) -> MetaResult<Vec<MovedRow>> {
        let pod_id = pod_id.to_string();
        self.call(move |c| {
            if load_pod(c, &pod_id)?.is_none() {
                return Err(MetaError::NotFound(format!("pod {pod_id}")));
            }
            c.prepare_cached(&format!(
                "SELECT {RESOURCE_COLS} FROM resources WHERE pod_id = ?1 ORDER BY path"
            ))
            .db()?
            .query_map([&pod_id], |row| {
                let stored = resource_from_row(row)?;
                Ok(MovedRow {
                    record: stored.record,
                    deleted_at: row.get(10)?,
                })
            })
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn release_pod(&self, pod_id: &str, to: &str) -> MetaResult<PodRecord> {
        let (pod_id, to) = (pod_id.to_string(), to.to_string());
        let record = self
            .call(move |c| {
                let tx = immediate(c)?;
                let n = tx
                    .prepare_cached(
                        "UPDATE pods SET node_id = ?1, epoch = epoch + 1, migration_status = ?2,
                                         migration_target_node = ?1, migration_progress = 0
                         WHERE pod_id = ?3",
                    )
                    .db()?
                    .execute(params![to, MigrationStatus::Syncing.as_str(), pod_id])
                    .db()?;
                if n == 0 {
                    return Err(MetaError::NotFound(format!("pod {pod_id}")));
                }
                let record = load_pod(&tx, &pod_id)?
                    .ok_or_else(|| MetaError::NotFound(format!("pod {pod_id}")))?;
                tx.commit().db()?;
                Ok(record)
            })
            .await?;
        self.hub.send(FeedEvent::PodOwner {
            pod_id: record.pod_id.clone(),
            epoch: record.epoch,
        });
        Ok(record)
    }

    async fn adopt_pod(&self, adopt: &AdoptPod) -> MetaResult<Option<PodRecord>> {
        let adopt = adopt.clone();
        let record = self
            .call(move |c| {
                let tx = immediate(c)?;
                let n = tx
                    .prepare_cached(
                        "UPDATE pods SET node_id = ?1, epoch = epoch + 1, migration_status = ?2,
                                         migration_target_node = ?1, migration_progress = 0,
                                         account_id = ?3, access_mode = ?4
                         WHERE pod_id = ?5 AND node_id = ?6 AND epoch = ?7",
                    )
                    .db()?
                    .execute(params![
                        adopt.to,
                        MigrationStatus::Syncing.as_str(),
                        adopt.account_id,
                        adopt.access_mode.as_str(),
                        adopt.pod_id,
                        adopt.from,
                        adopt.epoch
                    ])
                    .db()?;
                if n == 0 {
                    return Ok(None);
                }
                retire_pod_blobs(&tx, &adopt.pod_id, now_millis())?;
                tx.prepare_cached("DELETE FROM resources WHERE pod_id = ?1")
                    .db()?
                    .execute([&adopt.pod_id])
                    .db()?;
                let regions = to_json(&[&adopt.source])?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO resources (pod_id, path, parent, is_container, content_type,
                                                etag, size, blob_key, regions, version,
                                                modified_at, deleted_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )
                    .db()?;
                for row in &adopt.rows {
                    let r = &row.record;
                    let regions = if r.blob_key.is_some() {
                        regions.as_str()
                    } else {
                        "[]"
                    };
                    insert
                        .execute(params![
                            adopt.pod_id,
                            r.path,
                            parent_path(&r.path),
                            r.is_container,
                            r.content_type,
                            r.etag,
                            r.size,
                            r.blob_key,
                            regions,
                            r.version,
                            r.modified_at,
                            row.deleted_at
                        ])
                        .db()?;
                }
                drop(insert);
                let record = load_pod(&tx, &adopt.pod_id)?;
                tx.commit().db()?;
                Ok(record)
            })
            .await?;
        if let Some(r) = &record {
            self.hub.send(FeedEvent::PodOwner {
                pod_id: r.pod_id.clone(),
                epoch: r.epoch,
            });
        }
        Ok(record)
    }
}

#[async_trait]
impl CertStore for SqliteStore {
    async fn put_txt(&self, name: &str, value: &str, expires_at: Millis) -> MetaResult<()> {
        let (name, value) = (name.to_string(), value.to_string());
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO dns_txt (name, value, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, value) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .db()?
            .execute(params![name, value, expires_at])
            .db()?;
            c.prepare_cached("DELETE FROM dns_txt WHERE expires_at <= ?1")
                .db()?
                .execute([now_millis()])
                .db()?;
            Ok(())
        })
        .await
    }

    async fn delete_txt(&self, name: &str, value: &str) -> MetaResult<bool> {
        let (name, value) = (name.to_string(), value.to_string());
        self.call(move |c| {
            let n = c
                .prepare_cached("DELETE FROM dns_txt WHERE name = ?1 AND value = ?2")
                .db()?
                .execute([&name, &value])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_txt(&self, name: &str) -> MetaResult<Vec<String>> {
        let name = name.to_string();
        self.call(move |c| {
            c.prepare_cached(
                "SELECT value FROM dns_txt WHERE name = ?1 AND expires_at > ?2 ORDER BY value",
            )
            .db()?
            .query_map(params![name, now_millis()], |r| r.get::<_, String>(0))
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn put_cert(&self, cert: &CertRecord) -> MetaResult<()> {
        let cert = cert.clone();
        let names = serde_json::to_string(&cert.names)
            .map_err(|e| MetaError::Invalid(format!("json: {e}")))?;
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO certs (id, names, cert_pem, key_sealed, not_before, not_after, issued_by, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET names = excluded.names, cert_pem = excluded.cert_pem,
                 key_sealed = excluded.key_sealed, not_before = excluded.not_before,
                 not_after = excluded.not_after, issued_by = excluded.issued_by, issued_at = excluded.issued_at",
            )
            .db()?
            .execute(params![
                cert.id,
                names,
                cert.cert_pem,
                cert.key_sealed,
                cert.not_before,
                cert.not_after,
                cert.issued_by,
                cert.issued_at
            ])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn get_cert(&self, id: &str) -> MetaResult<Option<CertRecord>> {
        let id = id.to_string();
        self.call(move |c| {
            c.prepare_cached(&format!("SELECT {CERT_COLS} FROM certs WHERE id = ?1"))
                .db()?
                .query_row([id], cert_from_row)
                .optional()
                .db()?
                .map(cert_names)
                .transpose()
        })
        .await
    }

    async fn list_certs(&self) -> MetaResult<Vec<CertRecord>> {
        self.call(|c| {
            c.prepare_cached(&format!("SELECT {CERT_COLS} FROM certs ORDER BY id"))
                .db()?
                .query_map([], cert_from_row)
                .db()?
                .collect::<rusqlite::Result<Vec<_>>>()
                .db()?
                .into_iter()
                .map(cert_names)
                .collect()
        })
        .await
    }

    async fn put_setting(&self, name: &str, value: &str) -> MetaResult<()> {
        let (name, value) = (name.to_string(), value.to_string());
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO cluster_settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .db()?
            .execute([name, value])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn get_setting(&self, name: &str) -> MetaResult<Option<String>> {
        let name = name.to_string();
        self.call(move |c| {
            c.prepare_cached("SELECT value FROM cluster_settings WHERE name = ?1")
                .db()?
                .query_row([name], |r| r.get::<_, String>(0))
                .optional()
                .db()
        })
        .await
    }

    async fn list_all_txt(&self) -> MetaResult<Vec<(String, String)>> {
        self.call(move |c| {
            c.prepare_cached(
                "SELECT name, value FROM dns_txt WHERE expires_at > ?1 ORDER BY name, value",
            )
            .db()?
            .query_map([now_millis()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> MetaResult<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(move |c| {
            let got = c
                .prepare_cached(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leases.expires_at <= ?3 OR leases.holder = excluded.holder
                     RETURNING holder",
                )
                .db()?
                .query_row(params![name, holder, now, until], |r| r.get::<_, String>(0))
                .optional()
                .db()?;
            Ok(got.is_some())
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> MetaResult<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(move |c| {
            let n = c
                .prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
                .db()?
                .execute([name, holder])
                .db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn renew_liveness(&self, node_id: &str, ttl_ms: i64) -> MetaResult<()> {
        let node_id = node_id.to_string();
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO liveness (node_id, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .db()?
            .execute(params![node_id, now_millis() + ttl_ms])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn liveness(&self) -> MetaResult<Vec<Liveness>> {
        self.call(move |c| {
            c.prepare_cached(
                "SELECT l.node_id, COALESCE(n.region, ''), ?1 - l.expires_at
                 FROM liveness l LEFT JOIN nodes n ON n.node_id = l.node_id ORDER BY l.node_id",
            )
            .db()?
            .query_map([now_millis()], |r| {
                Ok(Liveness {
                    node_id: r.get(0)?,
                    region: r.get(1)?,
                    expired_for_ms: r.get(2)?,
                })
            })
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }
}

#[async_trait]
impl DocStore for SqliteStore {
    async fn put_doc(&self, doc: &DocRecord, expect: i64, now: Millis) -> MetaResult<bool> {
        let body = serde_json::to_string(&doc.doc)
            .map_err(|e| MetaError::Invalid(format!("json: {e}")))?;
        let (kind, id, owner) = (doc.kind.clone(), doc.id.clone(), doc.owner.clone());
        self.call(move |c| {
            let n = if expect == 0 {
                c.prepare_cached(
                    "INSERT INTO docs (kind, id, owner, version, created_at, updated_at, doc)
                     VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5) ON CONFLICT (kind, id) DO NOTHING",
                )
                .db()?
                .execute(params![kind, id, owner, now, body])
                .db()?
            } else {
                c.prepare_cached(
                    "UPDATE docs SET owner = ?3, version = version + 1, updated_at = ?4, doc = ?5
                     WHERE kind = ?1 AND id = ?2 AND version = ?6",
                )
                .db()?
                .execute(params![kind, id, owner, now, body, expect])
                .db()?
            };
            Ok(n == 1)
        })
        .await
    }

    async fn get_doc(&self, kind: &str, id: &str) -> MetaResult<Option<DocRecord>> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DOC_COLS} FROM docs WHERE kind = ?1 AND id = ?2"
            ))
            .db()?
            .query_row([kind, id], doc_from_row)
            .optional()
            .db()?
            .map(doc_json)
            .transpose()
        })
        .await
    }

    async fn list_docs(&self, kind: &str, owner: Option<&str>) -> MetaResult<Vec<DocRecord>> {
        let (kind, owner) = (kind.to_string(), owner.map(str::to_string));
        self.call(move |c| {
            let rows = match owner {
                Some(o) => c
                    .prepare_cached(&format!(
                        "SELECT {DOC_COLS} FROM docs WHERE kind = ?1 AND owner = ?2 ORDER BY created_at, id"
                    ))
                    .db()?
                    .query_map([kind, o], doc_from_row)
                    .db()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db()?,
                None => c
                    .prepare_cached(&format!(
                        "SELECT {DOC_COLS} FROM docs WHERE kind = ?1 ORDER BY created_at, id"
                    ))
                    .db()?
                    .query_map([kind], doc_from_row)
                    .db()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .db()?,
            };
            rows.into_iter().map(doc_json).collect()
        })
        .await
    }

    async fn delete_doc(&self, kind: &str, id: &str, expect: i64) -> MetaResult<bool> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.call(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM docs WHERE kind = ?1 AND id = ?2 AND (?3 = 0 OR version = ?3)",
                )
                .db()?
                .execute(params![kind, id, expect])
                .db()?;
            Ok(n == 1)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> MetaResult<()> {
        let key = key.clone();
        let scopes = to_json(&key.scopes)?;
        self.call(move |c| {
            let tx = immediate(c)?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM api_keys WHERE key_id = ?1")
                .db()?
                .query_row([&key.key_id], |_| Ok(()))
                .optional()
                .db()?
                .is_some();
            if exists {
                return Err(MetaError::Conflict(format!(
                    "api key {} exists",
                    key.key_id
                )));
            }
            tx.prepare_cached(&format!(
                "INSERT INTO api_keys ({API_KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))
            .db()?
            .execute(params![
                key.key_id,
                key.secret_hash,
                key.name,
                key.owner,
                scopes,
                key.created_at,
                key.expires_at,
                key.revoked_at,
                key.last_used_at,
            ])
            .db()?;
            tx.commit().db()
        })
        .await
    }

    async fn get_api_key(&self, key_id: &str) -> MetaResult<Option<ApiKeyRecord>> {
        let key_id = key_id.to_string();
        self.call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE key_id = ?1"
            ))
            .db()?
            .query_row([key_id], api_key_from_row)
            .optional()
            .db()
        })
        .await
    }

    async fn list_api_keys(&self) -> MetaResult<Vec<ApiKeyRecord>> {
        self.call(|c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys ORDER BY created_at, key_id"
            ))
            .db()?
            .query_map([], api_key_from_row)
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn revoke_api_key(&self, key_id: &str, at: i64) -> MetaResult<()> {
        let key_id = key_id.to_string();
        let key_id_for_feed = key_id.clone();
        self.call(move |c| {
            // COALESCE keeps the first revocation time: revoking twice is not an error.
            let n = c
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE key_id = ?2",
                )
                .db()?
                .execute(params![at, key_id])
                .db()?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("api key {key_id}")));
            }
            Ok(())
        })
        .await?;
        self.hub.send(FeedEvent::Key {
            key_id: key_id_for_feed,
        });
        Ok(())
    }

    async fn touch_api_key(&self, key_id: &str, at: i64) -> MetaResult<()> {
        let key_id = key_id.to_string();
        self.call(move |c| {
            // Best effort: an unknown key is not an error (it may have been removed meanwhile).
            c.prepare_cached("UPDATE api_keys SET last_used_at = ?1 WHERE key_id = ?2")
                .db()?
                .execute(params![at, key_id])
                .db()?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_join_token(&self, t: &JoinTokenRecord) -> MetaResult<()> {
        let t = t.clone();
        self.call(move |c| {
            let tx = immediate(c)?;
            if load_join_token(&tx, &t.token_id)?.is_some() {
                return Err(MetaError::Conflict(format!(
                    "join token {} exists",
                    t.token_id
                )));
            }
            tx.prepare_cached(&format!(
                "INSERT INTO join_tokens ({JOIN_TOKEN_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))
            .db()?
            .execute(params![
                t.token_id,
                t.secret_hash,
                t.description,
                t.created_by,
                t.created_at,
                t.expires_at,
                t.single_use,
                t.used_at,
                t.used_by,
                t.use_count,
                t.revoked_at,
            ])
            .db()?;
            tx.commit().db()
        })
        .await
    }

    async fn get_join_token(&self, token_id: &str) -> MetaResult<Option<JoinTokenRecord>> {
        let token_id = token_id.to_string();
        self.call(move |c| load_join_token(c, &token_id)).await
    }

    async fn list_join_tokens(&self) -> MetaResult<Vec<JoinTokenRecord>> {
        self.call(|c| {
            c.prepare_cached(&format!(
                "SELECT {JOIN_TOKEN_COLS} FROM join_tokens ORDER BY created_at, token_id"
            ))
            .db()?
            .query_map([], join_token_from_row)
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }

    async fn use_join_token(
        &self,
        token_id: &str,
        node_id: &str,
        now: Millis,
    ) -> MetaResult<JoinTokenRecord> {
        let (token_id, node_id) = (token_id.to_string(), node_id.to_string());
        self.call(move |c| {
            // IMMEDIATE: the checks see the state the update commits against, even when another
            // process has the same file open. A failed check drops (rolls back) the transaction.
            let tx = immediate(c)?;
            let current = load_join_token(&tx, &token_id)?
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
            tx.prepare_cached(
                "UPDATE join_tokens SET used_at = COALESCE(used_at, ?2),
                     used_by = COALESCE(used_by, ?3), use_count = use_count + 1
                 WHERE token_id = ?1",
            )
            .db()?
            .execute(params![token_id, now, node_id])
            .db()?;
            let updated = load_join_token(&tx, &token_id)?.ok_or_else(|| {
                MetaError::Backend(format!(
                    "join token {token_id} vanished inside its transaction"
                ))
            })?;
            tx.commit().db()?;
            Ok(updated)
        })
        .await
    }

    async fn revoke_join_token(&self, token_id: &str, at: Millis) -> MetaResult<()> {
        let token_id = token_id.to_string();
        self.call(move |c| {
            // COALESCE keeps the first revocation time: revoking twice is not an error.
            let n = c
                .prepare_cached(
                    "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, ?1)
                     WHERE token_id = ?2",
                )
                .db()?
                .execute(params![at, token_id])
                .db()?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("join token {token_id}")));
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: &NewAudit) -> MetaResult<i64> {
        let entry = entry.clone();
        let details = to_json(&entry.details)?;
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO audit_log (at, actor, action, target, details, trace_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .db()?
            .execute(params![
                entry.at,
                entry.actor,
                entry.action,
                entry.target,
                details,
                entry.trace_id
            ])
            .db()?;
            // Safe: the connection is ours alone while the mutex is held.
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn list_audit(&self, limit: i64, before: Option<i64>) -> MetaResult<Vec<AuditEntry>> {
        if limit <= 0 {
            // SQLite reads a negative LIMIT as "no limit"; the caller asked for nothing.
            return Ok(Vec::new());
        }
        self.call(move |c| {
            c.prepare_cached(
                "SELECT id, at, actor, action, target, details, trace_id FROM audit_log
                 WHERE ?1 IS NULL OR id < ?1
                 ORDER BY id DESC LIMIT ?2",
            )
            .db()?
            .query_map(params![before, limit], audit_from_row)
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()
        })
        .await
    }
}
