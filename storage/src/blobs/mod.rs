//! Resource bodies under immutable keys.
//!
//! Every write goes to a new key (`blobs/<pod>/<32 hex>`); metadata then points at it in a
//! transaction of its own. A crash before that commit leaves an orphan blob (collected by
//! [`BlobStore::collect_garbage`]), never a half-written resource, because readers only follow
//! keys that metadata committed. Bodies stream in and out in chunks; nothing holds a whole body
//! in memory. Local files are fsynced (file and directory) before the metadata commit.
//!
//! A blob is deleted only when nobody can need it any more:
//! - An upload records its key as pending (a [`PENDING_BLOB`](crate::meta::PENDING_BLOB) document) before the first byte
//!   and refreshes it while it runs ([`PendingUpload`]); the GC keeps a blob whose record is
//!   fresher than the lease, however long the upload takes (the object's date says nothing: on
//!   S3 a multipart object is dated when its upload began).
//! - A replaced or deleted blob is retired, not deleted: the committing transaction writes a
//!   [`RETIRED_BLOB`](crate::meta::RETIRED_BLOB) document, and the GC deletes the blob only after a grace period, so
//!   readers of the previous version (which may re-GET ranges) finish.
//! - The GC reads, per candidate and in this order, the pending record, the live references and
//!   the retired record; each write publishes the next one before removing the previous one, so
//!   no interleaving lets a needed blob through. Objects younger than the minimum age are never
//!   candidates (a second guard, for orphans of a crash).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

mod gc;
pub use gc::{GcRules, PendingUpload};

/// Bytes buffered before a part is handed to an S3 store (parts must be ≥ 5 MiB there).
const CHUNK: usize = 8 * 1024 * 1024;
/// The same for a local-filesystem store (any part size works; less memory per upload).
const LOCAL_CHUNK: usize = 1024 * 1024;
/// Parts in flight at once (bounds memory to about `chunk * (MAX_INFLIGHT + 1)` per upload).
const MAX_INFLIGHT: usize = 2;
/// Request-body bytes all uploads of this process may buffer at once. An upload reserves its
/// share (`chunk * (MAX_INFLIGHT + 1)`) once it passes [`SMALL_UPLOAD`] bytes, waiting up to
/// [`BODY_IDLE`] for room ([`BlobError::Busy`] then): however many clients upload, the
/// buffers stay within this.
pub const UPLOAD_MEMORY: usize = 512 << 20;
/// Uploads this small need no reservation (their bytes are bounded by the connection limits).
pub const SMALL_UPLOAD: u64 = 64 * 1024;
/// How long an upload may go without a byte of its body ([`BlobError::BodyIdle`] then).
pub const BODY_IDLE: Duration = Duration::from_secs(60);

/// The process's upload buffer budget, in KiB.
static UPLOAD_BUDGET: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(UPLOAD_MEMORY >> 10)));

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object store url `{0}`: expected file:///absolute/path or s3://bucket")]
    BadUrl(String),
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body failed: {0}")]
    Body(String),
    #[error("no byte of the request body for {0:?}")]
    BodyIdle(Duration),
    #[error("too many uploads in progress; retry later")]
    Busy,
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Where an S3 bucket is and how to sign for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// `http(s)://host[:port]` or `host[:port]` (then https). `None`: AWS.
    pub endpoint: Option<String>,
    /// The S3 signing region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

/// reqwest (under object_store) needs a process-wide rustls provider; this build has ring only.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A blob written by [`BlobStore::put_stream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub key: String,
    pub size: u64,
}

/// A holder of blobs that is not a bucket: a node that still has them (issue 21: an edge that
/// gave its pod to the cluster, reached through its tunnel). Only reads are asked of it.
#[async_trait::async_trait]
pub trait RemoteSource: Send + Sync + std::fmt::Debug {
    /// Blob `key`, or `range` of it; `NotFound` if the source does not have it.
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError>;
}

/// The object store of this node's region.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// For `file://` stores: the root directory, so reads can bypass object_store's 8 KiB
    /// chunked file reader (about 5× slower than large reads; see [`BlobStore::get`]).
    local_root: Option<std::path::PathBuf>,
    /// For a [`RemoteSource`]: reads go there ([`BlobStore::remote`]).
    remote: Option<Arc<dyn RemoteSource>>,
}

impl BlobStore {
    /// Opens a local store by URL: `file:///path` (created if missing). S3 buckets:
    /// [`BlobStore::open_s3`].
    pub fn open(url: &str) -> Result<BlobStore, BlobError> {
        let path = url
            .strip_prefix("file://")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| BlobError::BadUrl(url.to_string()))?;
        std::fs::create_dir_all(path)
            .map_err(|e| BlobError::Body(format!("cannot create {path}: {e}")))?;
        let fs = LocalFileSystem::new_with_prefix(path)?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(BlobStore {
            store: Arc::new(fs),
            url: url.to_string(),
            local_root: Some(path.into()),
            remote: None,
        })
    }

    /// Opens an S3 bucket (AWS, MinIO, any S3-compatible server). `endpoint` set: that server,
    /// path-style requests (`http://` allowed); unset: AWS, virtual-hosted style. Timeouts: 5 s
    /// to connect, 10 min per request (large bodies stream through one request); retries: 3
    /// with exponential backoff from 100 ms, within 15 s.
    pub fn open_s3(s3: &S3Location) -> Result<BlobStore, BlobError> {
        use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
        use object_store::{BackoffConfig, ClientOptions, RetryConfig};
        install_crypto_provider();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(600))
                    .with_allow_http(true),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
            });
        if let Some(e) = &s3.endpoint {
            let e = if e.contains("://") {
                e.clone()
            } else {
                format!("https://{e}")
            };
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let (Some(k), Some(s)) = (&s3.access_key, &s3.secret_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        Ok(BlobStore {
            store: Arc::new(b.build()?),
            url: format!("s3://{}", s3.bucket),
            local_root: None,
            remote: None,
        })
    }

    /// A store whose reads go to `source` (named `name`, e.g. `edge:<node>`). It is only ever
    /// read: nothing is written to a node that gave its pod away (its put would land in an
    /// empty in-memory store, never used).
    pub fn remote(name: &str, source: Arc<dyn RemoteSource>) -> BlobStore {
        BlobStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            url: name.to_string(),
            local_root: None,
            remote: Some(source),
        }
    }

    /// Whether this store is a local directory (reads cost no network; not worth caching).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A fresh immutable key for a pod.
    fn new_key(pod_id: &str) -> String {
        format!("blobs/{pod_id}/{}", hex::encode(rand::random::<[u8; 16]>()))
    }

    /// Streams a body into a new blob (unrecorded: for uploads the GC may see, use
    /// [`PendingUpload`] and [`BlobStore::put_stream_at`]).
    pub async fn put_stream<S, E>(
        &self,
        pod_id: &str,
        body: S,
        limit: Option<u64>,
    ) -> Result<StoredBlob, BlobError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        self.put_stream_at(&Self::new_key(pod_id), body, limit)
            .await
    }

    /// Streams a body into a new blob under `key` (from [`PendingUpload::key`]). On any error
    /// (body error, limit, store) the partial upload is aborted and nothing is left under the key.
    pub async fn put_stream_at<S, E>(
        &self,
        key: &str,
        mut body: S,
        limit: Option<u64>,
    ) -> Result<StoredBlob, BlobError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let key = key.to_string();
        let upload = self
            .store
            .put_multipart(&ObjPath::from(key.as_str()))
            .await?;
        let chunk_size = if self.local_root.is_some() {
            LOCAL_CHUNK
        } else {
            CHUNK
        };
        let mut writer = WriteMultipart::new_with_chunk_size(upload, chunk_size);
        let mut size: u64 = 0;
        let mut reserved = None;
        let failure = loop {
            let next = match tokio::time::timeout(BODY_IDLE, body.next()).await {
                Ok(next) => next,
                Err(_) => break Some(BlobError::BodyIdle(BODY_IDLE)),
            };
            match next {
                None => break None,
                Some(Err(e)) => break Some(BlobError::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if let Some(limit) = limit.filter(|l| size > *l) {
                        break Some(BlobError::TooLarge { limit });
                    }
                    if reserved.is_none() && size > SMALL_UPLOAD {
                        let kib = (chunk_size * (MAX_INFLIGHT + 1)) >> 10;
                        let room = UPLOAD_BUDGET.clone().acquire_many_owned(kib as u32);
                        match tokio::time::timeout(BODY_IDLE, room).await {
                            Ok(Ok(permit)) => reserved = Some(permit),
                            _ => break Some(BlobError::Busy),
                        }
                    }
                    if let Err(e) = writer.wait_for_capacity(MAX_INFLIGHT).await {
                        break Some(e.into());
                    }
                    writer.write(&chunk);
                }
            }
        };
        match failure {
            Some(err) => {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(%key, error = %e, "aborting a failed upload");
                }
                Err(err)
            }
            None => {
                writer.finish().await?;
                Ok(StoredBlob { key, size })
            }
        }
    }

    /// Streams a blob, or the byte range `range` of it.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        if let Some(remote) = &self.remote {
            return remote.get(key, range).await;
        }
        if let Some(root) = &self.local_root {
            return Self::get_local(root.join(key), key, range).await;
        }
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self
            .store
            .get_opts(&ObjPath::from(key), opts)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => BlobError::NotFound(key.to_string()),
                other => BlobError::Store(other),
            })?;
        Ok(res
            .into_stream()
            .map(|r| r.map_err(BlobError::from))
            .boxed())
    }

    /// Reads a local blob file in 256 KiB chunks (keys are ours: `blobs/<pod>/<hex>`, so the
    /// joined path stays under the root).
    async fn get_local(
        path: std::path::PathBuf,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => BlobError::NotFound(key.to_string()),
                _ => BlobError::Body(format!("reading blob {key}: {e}")),
            })?;
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| BlobError::Body(format!("reading blob {key}: {e}")))?;
                Box::new(file.take(r.end.saturating_sub(r.start)))
            }
            None => Box::new(file),
        };
        let key = key.to_string();
        Ok(
            tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
                .map(move |r| r.map_err(|e| BlobError::Body(format!("reading blob {key}: {e}"))))
                .boxed(),
        )
    }

    /// Deletes a blob; a missing blob is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&ObjPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a blob exists.
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.store.head(&ObjPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{DocRecord, MetaStore, PENDING_BLOB, RETIRED_BLOB};
    use futures_util::stream;

    fn temp_store() -> (BlobStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "xpod-blobs-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let store = BlobStore::open(&format!("file://{}", dir.display())).unwrap();
        (store, dir)
    }

    async fn read_all(store: &BlobStore, key: &str, range: Option<Range<u64>>) -> Vec<u8> {
        let mut s = store.get(key, range).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn round_trip_and_range() {
        let (store, dir) = temp_store();
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let blob = store
            .put_stream("alice", stream::iter(chunks), None)
            .await
            .unwrap();
        assert_eq!(blob.size, 11);
        assert!(blob.key.starts_with("blobs/alice/"));
        assert_eq!(read_all(&store, &blob.key, None).await, b"hello world");
        assert_eq!(read_all(&store, &blob.key, Some(0..4)).await, b"hell");
        // Each write gets a new key: nothing is overwritten in place.
        let again = store
            .put_stream(
                "alice",
                stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]),
                None,
            )
            .await
            .unwrap();
        assert_ne!(again.key, blob.key);
        assert_eq!(read_all(&store, &blob.key, Some(6..11)).await, b"world");
        store.delete(&blob.key).await.unwrap();
        assert!(!store.exists(&blob.key).await.unwrap());
        assert!(matches!(
            store.get(&blob.key, None).await,
            Err(BlobError::NotFound(_))
        ));
        store.delete(&blob.key).await.unwrap();
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn failed_body_leaves_nothing() {
        let (store, dir) = temp_store();
        let chunks: Vec<Result<Bytes, String>> = vec![
            Ok(Bytes::from(vec![7u8; 1000])),
            Err("client went away".to_string()),
        ];
        let err = store
            .put_stream("bob", stream::iter(chunks), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::Body(ref m) if m.contains("client went away")),
            "{err}"
        );
        let over: Vec<Result<Bytes, String>> = vec![Ok(Bytes::from(vec![1u8; 100]))];
        let err = store
            .put_stream("bob", stream::iter(over), Some(10))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { limit: 10 }));
        let mut listing = store.store.list(None);
        let mut left = Vec::new();
        while let Some(m) = listing.next().await {
            left.push(m.unwrap().location.to_string());
        }
        assert!(left.is_empty(), "aborted uploads left objects: {left:?}");
        std::fs::remove_dir_all(dir).ok();
    }

    fn one_chunk(b: &'static [u8]) -> stream::Iter<std::vec::IntoIter<Result<Bytes, String>>> {
        stream::iter(vec![Ok(Bytes::from_static(b))])
    }

    async fn memory_meta() -> Arc<dyn MetaStore> {
        Arc::new(
            crate::meta::sqlite::SqliteStore::open_in_memory()
                .await
                .unwrap(),
        )
    }

    fn rules(min_age_ms: u64, lease_ms: u64, grace_ms: u64) -> GcRules {
        GcRules {
            min_age: Duration::from_millis(min_age_ms),
            pending_lease: Duration::from_millis(lease_ms),
            pending_refresh: Duration::from_millis(lease_ms / 5),
            delete_grace: Duration::from_millis(grace_ms),
        }
    }

    fn doc(kind: &str, key: &str) -> DocRecord {
        DocRecord {
            kind: kind.into(),
            id: key.into(),
            owner: "alice".into(),
            version: 0,
            updated_at: 0,
            doc: serde_json::json!({}),
        }
    }

    /// An upload running far longer than the lease (and the minimum age) is kept while it
    /// refreshes its record; once finished, unreferenced and unrecorded, it is collected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_keeps_uploads_in_progress() {
        let (store, dir) = temp_store();
        let meta = memory_meta().await;
        let gc = rules(0, 300, 0);
        let pending = PendingUpload::begin(meta.clone(), "alice", "n1", gc.pending_refresh)
            .await
            .unwrap();
        let key = pending.key().to_string();
        assert!(key.starts_with("blobs/alice/"));
        let rec = meta.get_doc(PENDING_BLOB, &key).await.unwrap().unwrap();
        assert_eq!(
            (rec.owner.as_str(), rec.doc["node"].as_str()),
            ("alice", Some("n1"))
        );
        store
            .put_stream_at(&key, one_chunk(b"in flight"), None)
            .await
            .unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(store.collect_garbage(meta.as_ref(), &gc).await.unwrap(), 0);
            assert!(
                store.exists(&key).await.unwrap(),
                "an upload in progress was collected"
            );
        }
        let rec = meta.get_doc(PENDING_BLOB, &key).await.unwrap().unwrap();
        assert!(rec.version > 2, "the record was refreshed: {rec:?}");
        pending.finish().await;
        assert_eq!(meta.get_doc(PENDING_BLOB, &key).await.unwrap(), None);
        assert_eq!(store.collect_garbage(meta.as_ref(), &gc).await.unwrap(), 1);
        assert!(!store.exists(&key).await.unwrap());

        // A dropped upload stops refreshing: its record expires and the GC forgets it.
        let dropped = PendingUpload::begin(meta.clone(), "alice", "n1", gc.pending_refresh)
            .await
            .unwrap();
        let key = dropped.key().to_string();
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let rec = meta.get_doc(PENDING_BLOB, &key).await.unwrap().unwrap();
        assert_eq!(rec.version, 1, "a dropped upload is not refreshed: {rec:?}");
        store.collect_garbage(meta.as_ref(), &gc).await.unwrap();
        assert_eq!(meta.get_doc(PENDING_BLOB, &key).await.unwrap(), None);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A record that stopped being refreshed (a crashed upload) expires: record and blob go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_expires_stale_uploads() {
        let (store, dir) = temp_store();
        let meta = memory_meta().await;
        let blob = store
            .put_stream("alice", one_chunk(b"orphan"), None)
            .await
            .unwrap();
        let now = crate::meta::now_millis();
        assert!(meta
            .put_doc(&doc(PENDING_BLOB, &blob.key), 0, now - 2_000)
            .await
            .unwrap());
        assert_eq!(
            store
                .collect_garbage(meta.as_ref(), &rules(0, 10_000, 0))
                .await
                .unwrap(),
            0
        );
        assert!(store.exists(&blob.key).await.unwrap());
        assert_eq!(
            store
                .collect_garbage(meta.as_ref(), &rules(0, 1_000, 0))
                .await
                .unwrap(),
            1
        );
        assert!(!store.exists(&blob.key).await.unwrap());
        assert_eq!(meta.get_doc(PENDING_BLOB, &blob.key).await.unwrap(), None);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A retired blob stays for the grace period, then goes with its record, even when the
    /// object is younger than the minimum age; an unrecorded young object stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_waits_out_the_grace_period() {
        let (store, dir) = temp_store();
        let meta = memory_meta().await;
        let old = store
            .put_stream("alice", one_chunk(b"v1"), None)
            .await
            .unwrap();
        let young = store
            .put_stream("alice", one_chunk(b"new"), None)
            .await
            .unwrap();
        let now = crate::meta::now_millis();
        assert!(meta
            .put_doc(&doc(RETIRED_BLOB, &old.key), 0, now - 2_000)
            .await
            .unwrap());
        // Within the grace period: kept, whatever the minimum age (the unrecorded one goes).
        assert_eq!(
            store
                .collect_garbage(meta.as_ref(), &rules(0, 1_000, 10_000))
                .await
                .unwrap(),
            1
        );
        assert!(store.exists(&old.key).await.unwrap());
        assert!(!store.exists(&young.key).await.unwrap());
        // Past it: deleted by the sweep although younger than the minimum age; a young
        // unrecorded object is not.
        let young = store
            .put_stream("alice", one_chunk(b"new"), None)
            .await
            .unwrap();
        assert_eq!(
            store
                .collect_garbage(meta.as_ref(), &rules(3_600_000, 1_000, 1_000))
                .await
                .unwrap(),
            1
        );
        assert!(!store.exists(&old.key).await.unwrap());
        assert!(store.exists(&young.key).await.unwrap());
        assert_eq!(meta.get_doc(RETIRED_BLOB, &old.key).await.unwrap(), None);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(
            BlobStore::open("s3://bucket"),
            Err(BlobError::BadUrl(_))
        ));
        assert!(matches!(
            BlobStore::open("file://relative"),
            Err(BlobError::BadUrl(_))
        ));
    }
}
