//! Region-aware blob reads: a disk cache, this node's region, then the regions that hold a blob,
//! then the rest — and lazy replication of what is read from elsewhere (ARCHITECTURE §7).
//!
//! Writes always go to the own region's store under a new immutable key (see
//! [`crate::blobs`]); the metadata row lists the regions whose bucket holds the blob. A read
//! ([`Regions::read`]) tries, in order:
//! 0. the memory tier ([`MemCache`]) — small blobs (≤ 64 KiB) read in full from the own
//!    region's store are kept there, so a hot small GET touches no file;
//! 1. the disk cache ([`DiskCache`]) — filled by full reads that came over the network;
//! 2. the own region's store;
//! 3. the regions the row says hold the blob, then every other configured region. A holder
//!    that is not a configured region — `edge:<node>`, an edge that gave its pod to the
//!    cluster (issue 21) — is reached through [`Regions::set_remotes`] and replicated from in
//!    the same way.
//!
//! A full read served by another region streams to the client while it is written to a cache
//! temp file; when the last byte has arrived (exactly the size metadata recorded) the file is
//! committed and copied into the own region's store in the background, and the own region is
//! added to the row's regions. Only one such copy per key runs in a node at a time (a claim in
//! memory); concurrent first readers meanwhile stream from the remote region without copying.
//! Small blobs are copied with a create-only put (`If-None-Match: *`), so two nodes copying
//! the same key cannot both write it; large ones (over [`SINGLE_PUT_MAX`]) with a multipart
//! upload (S3 completes it atomically, and the bytes under an immutable key are the same
//! whoever writes them). A read that fails or is cut off mid-stream drops its temp file:
//! nothing is cached or copied from it. A range read from another region is served as is and
//! starts a background copy of the whole blob.
//!
//! Deleted resources cannot come back from an old region: reads start from a live metadata row,
//! and a delete tombstones the row (its blob key is never referenced again).
//!
//! A region that fails (unreachable, 5xx after retries) is skipped; if no region could serve
//! and at least one failed, the error names the failed regions ([`RegionError::Unavailable`]).

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::blobs::{BlobError, BlobStore};
use crate::cache::{CacheWriter, DiskCache};
use crate::memcache::MemCache;
use crate::meta::MetaStore;

/// Blobs up to this size are copied with one create-only put; larger ones by multipart upload.
pub const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;
/// How long the sync job waits for a read's copy of the same key before copying anyway.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Part size of multipart copies.
const PART: usize = 8 * 1024 * 1024;

/// One region's store.
#[derive(Clone, Debug)]
pub struct Region {
    pub name: String,
    pub store: BlobStore,
}

/// Where a read was served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier of small blobs.
    Memory,
    Cache,
    /// A region's store (the own region or another).
    Region(String),
}

impl Tier {
    /// `cache` or the region's name.
    pub fn label(&self) -> &str {
        match self {
            Tier::Memory => "memory",
            Tier::Cache => "cache",
            Tier::Region(r) => r,
        }
    }
}

/// A blob read: its bytes and where they come from.
pub struct Read {
    pub stream: BoxStream<'static, Result<Bytes, BlobError>>,
    pub tier: Tier,
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("blob {0} is in no region's store")]
    NotFound(String),
    #[error("blob {key} could not be read: region(s) {} unavailable ({why})", regions.join(", "))]
    Unavailable {
        key: String,
        regions: Vec<String>,
        why: String,
    },
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct RegionStats {
    pub cache_hits: AtomicU64,
    /// Reads served from the memory tier.
    pub memory_hits: AtomicU64,
    pub own_reads: AtomicU64,
    pub remote_reads: AtomicU64,
    /// Blobs copied into the own region (by reads or the sync job).
    pub copies: AtomicU64,
    pub copy_failures: AtomicU64,
}

/// The memory tier's budget.
pub const MEMORY_TIER_BYTES: usize = 32 * 1024 * 1024;

/// Finds the source of a holder that is not a configured region (`edge:<node>`), if any.
pub type RemoteResolver =
    Arc<dyn Fn(&str) -> Option<Arc<dyn crate::blobs::RemoteSource>> + Send + Sync>;

/// The regions of a cluster as one node sees them. See the module docs.
pub struct Regions {
    own: Region,
    others: Vec<Region>,
    /// Holders of blobs that are not buckets (issue 21), set once the node is up.
    remotes: std::sync::OnceLock<RemoteResolver>,
    cache: Option<Arc<DiskCache>>,
    mem: MemCache,
    meta: Arc<dyn MetaStore>,
    copying: Arc<Mutex<HashSet<String>>>,
    pub stats: Arc<RegionStats>,
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions")
            .field("own", &self.own)
            .field("others", &self.others)
            .field("cache", &self.cache)
            .finish()
    }
}

/// Releases a copy claim when dropped.
struct Claim {
    key: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().expect("poisoned").remove(&self.key);
    }
}

impl Regions {
    /// `own` is this node's region; `others` every other region (in configuration order).
    pub fn new(
        own: Region,
        others: Vec<Region>,
        cache: Option<Arc<DiskCache>>,
        meta: Arc<dyn MetaStore>,
    ) -> Regions {
        Regions {
            own,
            others,
            remotes: std::sync::OnceLock::new(),
            cache,
            mem: MemCache::new(MEMORY_TIER_BYTES),
            meta,
            copying: Default::default(),
            stats: Default::default(),
        }
    }

    /// This node's region.
    pub fn own(&self) -> &Region {
        &self.own
    }

    /// The other regions.
    pub fn others(&self) -> &[Region] {
        &self.others
    }

    /// The disk cache, if enabled.
    pub fn cache(&self) -> Option<&Arc<DiskCache>> {
        self.cache.as_ref()
    }

    fn claim(&self, key: &str) -> Option<Claim> {
        let mut set = self.copying.lock().expect("poisoned");
        set.insert(key.to_string()).then(|| Claim {
            key: key.to_string(),
            set: self.copying.clone(),
        })
    }

    /// Sets how holders that are not regions (`edge:<node>`) are reached; once.
    pub fn set_remotes(&self, resolve: RemoteResolver) {
        let _ = self.remotes.set(resolve);
    }

    /// The regions to try for a blob the row says `holding` holds: own, holding (a configured
    /// region, or a remote holder the resolver knows), the rest.
    fn order(&self, holding: &[String]) -> Vec<Region> {
        let mut order = vec![self.own.clone()];
        for name in holding {
            if let Some(r) = self.others.iter().find(|r| &r.name == name) {
                order.push(r.clone());
            } else if let Some(source) = self.remotes.get().and_then(|resolve| resolve(name)) {
                order.push(Region {
                    name: name.clone(),
                    store: crate::blobs::BlobStore::remote(name, source),
                });
            }
        }
        for r in &self.others {
            if !holding.contains(&r.name) {
                order.push(r.clone());
            }
        }
        order
    }

    /// Streams blob `key` (`size` bytes, held by `holding` per metadata), or `range` of it.
    pub async fn read(
        self: &Arc<Self>,
        key: &str,
        size: u64,
        holding: &[String],
        range: Option<Range<u64>>,
    ) -> Result<Read, RegionError> {
        if let Some(b) = self.mem.get(key, range.clone()) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Read {
                stream: futures_util::stream::once(async move { Ok(b) }).boxed(),
                tier: Tier::Memory,
            });
        }
        if let Some(cache) = &self.cache {
            if let Some(s) = cache.get(key, range.clone()).await {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Read {
                    stream: s
                        .map(|r| r.map_err(|e| BlobError::Body(format!("reading the cache: {e}"))))
                        .boxed(),
                    tier: Tier::Cache,
                });
            }
        }
        let mut failed: Vec<(String, String)> = Vec::new();
        for region in self.order(holding) {
            let stream = match region.store.get(key, range.clone()).await {
                Ok(s) => s,
                Err(BlobError::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(region = %region.name, %key, error = %e, "region unavailable for a read");
                    failed.push((region.name.clone(), e.to_string()));
                    continue;
                }
            };
            let own = region.name == self.own.name;
            let tier = Tier::Region(region.name.clone());
            if own {
                self.stats.own_reads.fetch_add(1, Ordering::Relaxed);
                // A full read of a network store fills the cache (no copy: it is ours).
                let writer = match (&self.cache, range.is_none() && !region.store.is_local()) {
                    (Some(c), true) if size <= c.max_bytes() && !c.contains(key) => {
                        c.writer(key).ok()
                    }
                    _ => None,
                };
                let stream = match writer {
                    Some(w) => tee(stream, w, size, None),
                    None if range.is_none() && self.mem.admits(size) => {
                        self.keep_in_memory(key, size, stream).await
                    }
                    None => stream,
                };
                return Ok(Read { stream, tier });
            }
            self.stats.remote_reads.fetch_add(1, Ordering::Relaxed);
            let stream = match (range.is_none(), self.claim(key)) {
                (true, Some(claim)) => {
                    let writer = self
                        .cache
                        .as_ref()
                        .filter(|c| size <= c.max_bytes())
                        .and_then(|c| c.writer(key).ok());
                    match writer {
                        Some(w) => {
                            let this = self.clone();
                            let key = key.to_string();
                            let done: OnDone = Box::new(move |path: PathBuf| {
                                tokio::spawn(async move {
                                    this.copy_from_file(&key, &path, size, claim).await;
                                });
                            });
                            tee(stream, w, size, Some(done))
                        }
                        None => {
                            // No room in the cache: copy with a read of its own.
                            self.spawn_copy(key, size, region.clone(), claim);
                            stream
                        }
                    }
                }
                (false, Some(claim)) => {
                    self.spawn_copy(key, size, region.clone(), claim);
                    stream
                }
                (_, None) => stream, // a copy of this key is already under way
            };
            return Ok(Read { stream, tier });
        }
        if failed.is_empty() {
            Err(RegionError::NotFound(key.to_string()))
        } else {
            Err(RegionError::Unavailable {
                key: key.to_string(),
                why: failed
                    .iter()
                    .map(|(r, e)| format!("{r}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                regions: failed.into_iter().map(|(r, _)| r).collect(),
            })
        }
    }

    /// Reads a small blob (`size` bytes) in full and keeps it in the memory tier if exactly
    /// `size` bytes arrived; the bytes (and an error that cut the read short) are streamed on.
    async fn keep_in_memory(
        &self,
        key: &str,
        size: u64,
        mut stream: BoxStream<'static, Result<Bytes, BlobError>>,
    ) -> BoxStream<'static, Result<Bytes, BlobError>> {
        let mut buf = bytes::BytesMut::with_capacity(size as usize);
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) if (buf.len() + c.len()) as u64 <= size => buf.extend_from_slice(&c),
                Ok(c) => {
                    // More than the row says: serve it, keep nothing.
                    buf.extend_from_slice(&c);
                    failed = Some(None);
                    break;
                }
                Err(e) => {
                    failed = Some(Some(e));
                    break;
                }
            }
        }
        let bytes = buf.freeze();
        if failed.is_none() && bytes.len() as u64 == size {
            self.mem.put(key, bytes.clone());
        }
        let head = futures_util::stream::once(async move { Ok(bytes) });
        match failed {
            Some(Some(e)) => head
                .chain(futures_util::stream::once(async move { Err(e) }))
                .boxed(),
            Some(None) => head.chain(stream).boxed(),
            None => head.boxed(),
        }
    }

    fn spawn_copy(self: &Arc<Self>, key: &str, size: u64, from: Region, claim: Claim) {
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.copy_into_own(&key, size, &from).await {
                tracing::warn!(%key, from = %from.name, error = %e, "copying a blob into this region failed");
            }
            drop(claim);
        });
    }

    /// Copies blob `key` into the own region from the first region in `holding` (then the
    /// rest) that has it, unless the own region has it already; records the own region in
    /// metadata. Returns whether bytes were copied. Used by the migration sync; waits while a
    /// read-triggered copy of the same key is running.
    pub async fn ensure_local(
        self: &Arc<Self>,
        key: &str,
        size: u64,
        holding: &[String],
    ) -> Result<bool, RegionError> {
        // Wait for a read's copy of this key to finish — but not forever: a client that stops
        // reading holds its read's claim, and the sync must not hang on it (a second copy is
        // harmless: create-only, or the same bytes under an immutable key).
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let claim = loop {
            if let Some(c) = self.claim(key) {
                break Some(c);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(%key, "a read's copy is taking long; copying without waiting");
                break None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        if self.own.store.exists(key).await.unwrap_or(false) {
            self.record(key).await;
            return Ok(false);
        }
        let mut failed = Vec::new();
        for region in self.order(holding).into_iter().skip(1) {
            match self.copy_into_own(key, size, &region).await {
                Ok(()) => {
                    drop(claim);
                    return Ok(true);
                }
                Err(BlobError::NotFound(_)) => continue,
                Err(e) => failed.push((region.name.clone(), e.to_string())),
            }
        }
        drop(claim);
        if failed.is_empty() {
            Err(RegionError::NotFound(key.to_string()))
        } else {
            Err(RegionError::Unavailable {
                key: key.to_string(),
                why: failed
                    .iter()
                    .map(|(r, e)| format!("{r}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                regions: failed.into_iter().map(|(r, _)| r).collect(),
            })
        }
    }

    /// Streams `key` from `from` into the own region, checking the size (the caller holds the
    /// key's claim).
    async fn copy_into_own(&self, key: &str, size: u64, from: &Region) -> Result<(), BlobError> {
        let mut stream = from.store.get(key, None).await?;
        let dest = self.own.store.object_store();
        let path = ObjPath::from(key);
        let result: Result<bool, BlobError> = if size <= SINGLE_PUT_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            let mut fail = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) if (buf.len() + c.len()) as u64 <= size => buf.extend_from_slice(&c),
                    Ok(_) => {
                        fail = Some(BlobError::Body(format!(
                            "{key} in {} is larger than recorded",
                            from.name
                        )));
                        break;
                    }
                    Err(e) => {
                        fail = Some(e);
                        break;
                    }
                }
            }
            match fail {
                Some(e) => Err(e),
                None if buf.len() as u64 != size => Err(BlobError::Body(format!(
                    "{key} in {} has {} bytes, metadata says {size}",
                    from.name,
                    buf.len()
                ))),
                None => create_only(dest.as_ref(), &path, Bytes::from(buf)).await,
            }
        } else {
            let upload = dest.put_multipart(&path).await?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut n = 0u64;
            let mut fail = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        n += c.len() as u64;
                        if let Err(e) = w.wait_for_capacity(2).await {
                            fail = Some(e.into());
                            break;
                        }
                        w.write(&c);
                    }
                    Err(e) => {
                        fail = Some(e);
                        break;
                    }
                }
            }
            if fail.is_none() && n != size {
                fail = Some(BlobError::Body(format!(
                    "{key} in {} has {n} bytes, metadata says {size}",
                    from.name
                )));
            }
            match fail {
                Some(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
                None => w.finish().await.map(|_| true).map_err(BlobError::from),
            }
        };
        match result {
            Ok(created) => {
                if created {
                    self.stats.copies.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%key, from = %from.name, created, "blob copied into this region");
                self.record(key).await;
                Ok(())
            }
            Err(e) => {
                self.stats.copy_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Copies a committed cache file of `key` into the own region, then records it.
    async fn copy_from_file(&self, key: &str, file: &Path, size: u64, claim: Claim) {
        let result = upload_file(self.own.store.object_store().as_ref(), key, file, size).await;
        match result {
            Ok(created) => {
                if created {
                    self.stats.copies.fetch_add(1, Ordering::Relaxed);
                }
                self.record(key).await;
                drop(claim);
            }
            Err(e) => {
                self.stats.copy_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%key, error = %e, "copying a cached blob into this region failed");
            }
        }
    }

    async fn record(&self, key: &str) {
        if let Err(e) = self.meta.add_blob_region(key, &self.own.name).await {
            tracing::warn!(%key, error = %e, "recording a copied blob's region failed (the next read copies again)");
        }
    }
}

/// A create-only put: `Ok(true)` if this call created the object, `Ok(false)` if it existed.
async fn create_only(
    store: &dyn object_store::ObjectStore,
    path: &ObjPath,
    bytes: Bytes,
) -> Result<bool, BlobError> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Uploads a local file as `key`: create-only up to [`SINGLE_PUT_MAX`], multipart above (after
/// checking the key is absent). `Ok(false)`: the object was already there.
async fn upload_file(
    store: &dyn object_store::ObjectStore,
    key: &str,
    file: &Path,
    size: u64,
) -> Result<bool, BlobError> {
    use tokio::io::AsyncReadExt as _;
    let path = ObjPath::from(key);
    let io = |e: std::io::Error| BlobError::Body(format!("reading cached {key}: {e}"));
    if size <= SINGLE_PUT_MAX {
        let bytes = tokio::fs::read(file).await.map_err(io)?;
        return create_only(store, &path, Bytes::from(bytes)).await;
    }
    match store.head(&path).await {
        Ok(_) => return Ok(false),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut f = tokio::fs::File::open(file).await.map_err(io)?;
    let mut w = WriteMultipart::new_with_chunk_size(store.put_multipart(&path).await?, PART);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = w.abort().await;
                return Err(io(e));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = w.wait_for_capacity(2).await {
            let _ = w.abort().await;
            return Err(e.into());
        }
        w.write(&buf[..n]);
    }
    w.finish().await?;
    Ok(true)
}

type OnDone = Box<dyn FnOnce(PathBuf) + Send>;

/// How many chunks the cache writer may lag behind the response before the response waits.
const TEE_QUEUE: usize = 64;

/// Passes `inner` through while a task writes it to `writer` off the response path (the
/// response waits only when the disk is [`TEE_QUEUE`] chunks behind). When the stream has
/// delivered exactly `size` bytes and ended without an error, the task commits the cache file
/// (fsync and rename: not on the response path either) and calls `done` with its path. An
/// error, a short or long stream, or dropping the stream early (a client that went away)
/// discards the temp file. A stream dropped right after its last chunk (hyper stops polling
/// at Content-Length) still commits: every chunk is queued before it is handed on.
fn tee(
    inner: BoxStream<'static, Result<Bytes, BlobError>>,
    writer: CacheWriter,
    size: u64,
    done: Option<OnDone>,
) -> BoxStream<'static, Result<Bytes, BlobError>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(TEE_QUEUE);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_w = failed.clone();
    tokio::spawn(async move {
        let mut w = writer;
        while let Some(chunk) = rx.recv().await {
            if w.write(&chunk).await.is_err() || w.written() > size {
                return; // dropping the writer discards the temp file
            }
        }
        if w.written() != size || failed_w.load(Ordering::Acquire) {
            return;
        }
        match w.commit(size).await {
            Ok(path) => {
                if let Some(done) = done {
                    done(path);
                }
            }
            Err(e) => tracing::warn!(error = %e, "committing a cache file failed"),
        }
    });
    futures_util::stream::unfold((inner, Some(tx)), move |(mut inner, mut tx)| {
        let failed = failed.clone();
        async move {
            let item = inner.next().await?;
            match &item {
                Ok(chunk) => {
                    if let Some(t) = &tx {
                        if t.send(chunk.clone()).await.is_err() {
                            tx = None; // the writer gave up; the client still gets its bytes
                        }
                    }
                }
                Err(_) => {
                    failed.store(true, Ordering::Release);
                    tx = None;
                }
            }
            Some((item, (inner, tx)))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn chunks(n: usize, err_at: Option<usize>) -> BoxStream<'static, Result<Bytes, BlobError>> {
        futures_util::stream::iter((0..n).map(move |i| {
            if Some(i) == err_at {
                Err(BlobError::Body("cut".into()))
            } else {
                Ok(Bytes::from(vec![i as u8; 1000]))
            }
        }))
        .boxed()
    }

    async fn cache() -> (Arc<DiskCache>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("xpod-tee-{}", rand::random::<u64>()));
        (Arc::new(DiskCache::open(&dir, 1 << 30).unwrap()), dir)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    fn tmp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_full_read_commits_off_the_response_path_and_reports_the_file() {
        let (c, dir) = cache().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: OnDone = Box::new(move |p| {
            let _ = tx.send(p);
        });
        let mut s = tee(
            chunks(50, None),
            c.writer("k1").unwrap(),
            50_000,
            Some(done),
        );
        let mut got = 0;
        while let Some(b) = s.next().await {
            got += b.unwrap().len();
        }
        assert_eq!(got, 50_000);
        let path = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 50_000);
        assert!(c.contains("k1"));
        assert_eq!(tmp_files(&dir), 0);
    }

    #[tokio::test]
    async fn dropped_after_the_last_chunk_still_commits() {
        let (c, _dir) = cache().await;
        let mut s = tee(chunks(3, None), c.writer("k2").unwrap(), 3000, None);
        for _ in 0..3 {
            s.next().await.unwrap().unwrap();
        }
        drop(s); // like hyper at Content-Length: the end of the stream is never polled
        settle().await;
        assert!(c.contains("k2"));
    }

    #[tokio::test]
    async fn a_cut_short_or_failed_read_leaves_nothing() {
        let (c, dir) = cache().await;
        // The client goes away after 2 of 10 chunks.
        let mut s = tee(chunks(10, None), c.writer("cut").unwrap(), 10_000, None);
        s.next().await.unwrap().unwrap();
        s.next().await.unwrap().unwrap();
        drop(s);
        // The source fails in the middle.
        let s = tee(chunks(10, Some(5)), c.writer("err").unwrap(), 10_000, None);
        let _: Vec<_> = s.collect().await;
        // More bytes than the recorded size.
        let s = tee(chunks(10, None), c.writer("long").unwrap(), 9_000, None);
        let _: Vec<_> = s.collect().await;
        // Fewer.
        let s = tee(chunks(8, None), c.writer("short").unwrap(), 9_000, None);
        let _: Vec<_> = s.collect().await;
        settle().await;
        for k in ["cut", "err", "long", "short"] {
            assert!(!c.contains(k), "{k} must not be cached");
        }
        assert_eq!(tmp_files(&dir), 0, "temp files removed");
    }

    /// A node holding blobs, in memory; `down` makes every read fail.
    #[derive(Debug)]
    struct FakeNode {
        blobs: std::collections::HashMap<String, Bytes>,
        down: bool,
    }

    #[async_trait::async_trait]
    impl crate::blobs::RemoteSource for FakeNode {
        async fn get(
            &self,
            key: &str,
            range: Option<Range<u64>>,
        ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
            if self.down {
                return Err(BlobError::Body("the edge is offline".into()));
            }
            let b = self
                .blobs
                .get(key)
                .ok_or_else(|| BlobError::NotFound(key.into()))?;
            let b = match range {
                Some(r) => b.slice(r.start as usize..r.end as usize),
                None => b.clone(),
            };
            Ok(futures_util::stream::iter(vec![Ok(b)]).boxed())
        }
    }

    #[tokio::test]
    async fn a_remote_holder_is_read_and_copied_into_the_own_region_once() {
        let dir = std::env::temp_dir().join(format!("xpod-remote-{}", rand::random::<u64>()));
        let own = BlobStore::open(&format!("file://{}", dir.display())).unwrap();
        let meta = crate::meta::open("sqlite::memory:", 1).await.unwrap();
        let regions = Arc::new(Regions::new(
            Region {
                name: "local".into(),
                store: own.clone(),
            },
            Vec::new(),
            None,
            meta,
        ));
        let key = "blobs/p/0123456789abcdef0123456789abcdef";
        let bytes = Bytes::from(vec![7u8; 100_000]);
        let up = Arc::new(FakeNode {
            blobs: [(key.to_string(), bytes.clone())].into(),
            down: false,
        });
        let down = Arc::new(FakeNode {
            blobs: Default::default(),
            down: true,
        });
        regions.set_remotes(Arc::new(move |name: &str| match name {
            "edge:up" => Some(up.clone() as Arc<dyn crate::blobs::RemoteSource>),
            "edge:down" => Some(down.clone() as Arc<dyn crate::blobs::RemoteSource>),
            _ => None,
        }));
        let holding = ["edge:up".to_string()];
        let read = regions.read(key, 100_000, &holding, None).await.unwrap();
        assert_eq!(read.tier, Tier::Region("edge:up".into()));
        let got: Vec<Bytes> = read.stream.map(|b| b.unwrap()).collect().await;
        assert_eq!(got.concat(), bytes.to_vec());
        // Copied into the own region in the background: the next read is local.
        let mut tier = None;
        for _ in 0..50 {
            settle().await;
            let r = regions.read(key, 100_000, &holding, None).await.unwrap();
            tier = Some(r.tier);
            if tier == Some(Tier::Region("local".into())) {
                break;
            }
        }
        assert_eq!(tier, Some(Tier::Region("local".into())));
        assert_eq!(regions.stats.copies.load(Ordering::Relaxed), 1);
        // A holder that is down is named; one nobody knows is not a place to look.
        match regions
            .read("blobs/p/x", 10, &["edge:down".to_string()], None)
            .await
        {
            Err(RegionError::Unavailable { regions, .. }) => assert_eq!(regions, ["edge:down"]),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("read from a node that is down"),
        }
        assert!(matches!(
            regions
                .read("blobs/p/x", 10, &["edge:nobody".to_string()], None)
                .await,
            Err(RegionError::NotFound(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
