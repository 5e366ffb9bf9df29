//! A disk cache of immutable blobs, for regions whose object store is far away.
//!
//! Blob keys are immutable (`blobs/<pod>/<32 hex>`: the content under a key never changes), so
//! a cached copy can never go stale. There is no invalidation, only eviction when the cache is
//! full.
//!
//! # Layout
//! One flat directory. A key's file is named by the hex SHA-256 of the key (64 characters), so
//! any key is a safe file name. A write goes to a temp file `<sha>.<random>.tmp` in the same
//! directory; [`CacheWriter::commit`] checks the length, fsyncs the file, renames it into place
//! and fsyncs the directory. Readers and restarts therefore see a whole file or none, and a
//! write whose length differs from the expected one (a truncated read from the origin) is
//! discarded, never cached.
//!
//! # Index and eviction
//! An in-memory index (file name → size and recency) behind a mutex tracks what is held. After
//! each commit, least recently used files are deleted until the total is at most `max_bytes`
//! (sizes are file lengths, not allocated blocks). A hit marks its entry most recently used and
//! touches the file's mtime (at most once a minute per entry), so [`DiskCache::open`] rebuilds
//! the index, and roughly its LRU order, from a directory scan after a restart. An object larger
//! than the whole cache is not kept: its writer stops writing once it passes `max_bytes`, and
//! commit returns an error of kind [`std::io::ErrorKind::FileTooLarge`].
//!
//! # Races
//! Files are deleted outside the lock. An open file stays readable after it is unlinked (Unix),
//! so an eviction never cuts off a stream being served. A file that vanishes under the index
//! (deleted by hand, or evicted while a second writer of the same key committed it again) is a
//! miss, and the `get` that finds it gone drops its entry.
//!
//! One `DiskCache` per directory: `open` deletes the temp files it finds, which would include
//! another live instance's writes in progress.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

/// Chunk size of the streams [`DiskCache::get`] returns.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes a [`CacheWriter`] buffers before writing to its file.
const WRITE_BUFFER: usize = 256 * 1024;
/// A hit touches its file's mtime at most this often.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// Suffix of files being written (deleted by [`DiskCache::open`] as crash leftovers).
const TMP_SUFFIX: &str = ".tmp";

/// A size-bounded LRU cache of immutable blobs on local disk.
///
/// Cheap to clone (an `Arc` inside); every method takes `&self`.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

/// What the cache holds, keyed by file name (the hex SHA-256 of the blob key: the directory
/// scan on open knows file names, not keys).
#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    /// Recency order, tick → file name; the first entry is the least recently used.
    lru: BTreeMap<u64, String>,
    next_tick: u64,
    /// Sum of the entries' sizes.
    total: u64,
}

struct Entry {
    size: u64,
    tick: u64,
    /// When the file's mtime was last set (`None`: not since this process loaded it).
    touched: Option<Instant>,
}

impl Index {
    /// Inserts (or replaces) an entry as the most recently used.
    fn insert(&mut self, name: String, size: u64, touched: Option<Instant>) {
        self.remove(&name);
        let tick = self.next_tick;
        self.next_tick += 1;
        self.lru.insert(tick, name.clone());
        self.entries.insert(
            name,
            Entry {
                size,
                tick,
                touched,
            },
        );
        self.total += size;
    }

    fn remove(&mut self, name: &str) -> Option<Entry> {
        let entry = self.entries.remove(name)?;
        self.lru.remove(&entry.tick);
        self.total -= entry.size;
        Some(entry)
    }

    /// Marks an entry most recently used. `None`: not held; otherwise whether its file's mtime
    /// is due a touch (and the touch is then counted as done).
    fn mark_used(&mut self, name: &str, now: Instant) -> Option<bool> {
        let entry = self.entries.get_mut(name)?;
        let owned = self
            .lru
            .remove(&entry.tick)
            .unwrap_or_else(|| name.to_string());
        entry.tick = self.next_tick;
        self.next_tick += 1;
        self.lru.insert(entry.tick, owned);
        let due = entry
            .touched
            .is_none_or(|t| now.duration_since(t) >= TOUCH_INTERVAL);
        if due {
            entry.touched = Some(now);
        }
        Some(due)
    }

    /// Drops least recently used entries until the total is at most `max_bytes`; returns the
    /// file names to delete.
    fn evict(&mut self, max_bytes: u64) -> Vec<String> {
        let mut victims = Vec::new();
        while self.total > max_bytes {
            let Some((_, name)) = self.lru.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&name) {
                self.total -= entry.size;
            }
            victims.push(name);
        }
        victims
    }
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        // The critical sections cannot panic half-way; a poisoned index is still consistent.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the entry of a file that turned out to be missing, unless a commit of the same key
    /// has put a fresh file in place since.
    fn drop_missing(&self, name: &str, path: &Path) {
        let mut index = self.index();
        if !path.exists() {
            index.remove(name);
        }
    }
}

/// The cache file name of a key: hex SHA-256, so any key is safe.
fn file_name(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether a directory entry's name is a committed cache file (64 lowercase hex characters).
fn is_cache_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Prefixes an I/O error with what was being done, keeping its kind.
fn context(e: io::Error, what: fmt::Arguments<'_>) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Deletes a file; a missing file is fine, other failures are logged.
fn remove_file_logged(path: &Path, why: &str) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "{why}: deleting failed"),
    }
}

/// Async [`remove_file_logged`].
async fn remove_file_logged_async(path: &Path, why: &str) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "{why}: deleting failed"),
    }
}

impl DiskCache {
    /// Opens (creating it if needed) a cache in `dir` holding at most `max_bytes`.
    ///
    /// Rebuilds the index from the files present, least recently used first by mtime, so the
    /// cache survives restarts. Deletes leftover temp files (`*.tmp`, from a crash mid-write)
    /// and any other file that is not a cache file; subdirectories are left alone (logged).
    /// Then evicts down to `max_bytes` (which may have shrunk since the last run).
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> io::Result<DiskCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            context(
                e,
                format_args!("creating cache directory {}", dir.display()),
            )
        })?;
        let scan_err = |e| {
            context(
                e,
                format_args!("scanning cache directory {}", dir.display()),
            )
        };
        let mut found = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(scan_err)? {
            let item = item.map_err(scan_err)?;
            let path = item.path();
            let file_type = match item.file_type() {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cache scan: skipping an unreadable entry");
                    continue;
                }
            };
            if file_type.is_dir() {
                tracing::warn!(path = %path.display(), "cache scan: leaving a stray directory alone");
                continue;
            }
            let name = item.file_name();
            match name.to_str() {
                Some(n) if file_type.is_file() && is_cache_name(n) => match item.metadata() {
                    Ok(meta) => {
                        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((mtime, n.to_string(), meta.len()));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cache scan: skipping an unreadable file");
                    }
                },
                Some(n) if n.ends_with(TMP_SUFFIX) => {
                    remove_file_logged(&path, "cache scan: temp file left by a crash");
                }
                _ => {
                    tracing::warn!(path = %path.display(), "cache scan: deleting a file that is not a cache file");
                    remove_file_logged(&path, "cache scan: not a cache file");
                }
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, size) in found {
            index.insert(name, size, None);
        }
        for victim in index.evict(max_bytes) {
            remove_file_logged(&dir.join(victim), "cache eviction on open");
        }
        Ok(DiskCache {
            inner: Arc::new(Inner {
                dir,
                max_bytes,
                index: Mutex::new(index),
            }),
        })
    }

    /// Streams a cached blob, or the byte range `range` of it, in 256 KiB chunks, and marks it
    /// most recently used. `None`: a miss (not cached, or its file is gone or unreadable).
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Option<BoxStream<'static, Result<Bytes, io::Error>>> {
        let name = file_name(key);
        let touch = self.inner.index().mark_used(&name, Instant::now())?;
        let path = self.inner.dir.join(&name);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.inner.drop_missing(&name, &path);
                return None;
            }
            Err(e) => {
                tracing::warn!(%key, path = %path.display(), error = %e, "opening a cached blob failed; treating it as a miss");
                return None;
            }
        };
        if touch {
            // Best effort: the mtime only orders the index rebuilt after a restart.
            let std_file = file.into_std().await;
            if let Err(e) = std_file.set_modified(SystemTime::now()) {
                tracing::debug!(path = %path.display(), error = %e, "touching a cached blob failed");
            }
            file = tokio::fs::File::from_std(std_file);
        }
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match range {
            Some(r) => {
                if let Err(e) = file.seek(io::SeekFrom::Start(r.start)).await {
                    tracing::warn!(%key, path = %path.display(), error = %e, "seeking in a cached blob failed; treating it as a miss");
                    return None;
                }
                Box::new(file.take(r.end.saturating_sub(r.start)))
            }
            None => Box::new(file),
        };
        let key = key.to_string();
        Some(
            tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK)
                .map(move |r| r.map_err(|e| context(e, format_args!("reading cached blob {key}"))))
                .boxed(),
        )
    }

    /// Whether a blob is cached (does not change its recency).
    pub fn contains(&self, key: &str) -> bool {
        self.inner.index().entries.contains_key(&file_name(key))
    }

    /// How many blobs are cached.
    pub fn len(&self) -> usize {
        self.inner.index().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (the sum of the cached files' lengths).
    pub fn size(&self) -> u64 {
        self.inner.index().total
    }

    /// The most bytes the cache holds.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Drops a blob from the cache and deletes its file (a failure to delete is logged).
    pub fn remove(&self, key: &str) {
        let name = file_name(key);
        self.inner.index().remove(&name);
        remove_file_logged(&self.inner.dir.join(name), "removing a cached blob");
    }

    /// The committed file of a cached blob (does not change its recency), e.g. to upload from.
    /// The file may be evicted at any time: open it promptly (an open file stays readable) and
    /// treat `NotFound` as a miss.
    pub fn path_of(&self, key: &str) -> Option<PathBuf> {
        let name = file_name(key);
        let held = self.inner.index().entries.contains_key(&name);
        held.then(|| self.inner.dir.join(name))
    }

    /// Starts writing a blob into the cache: a new temp file (unique name, `.tmp` suffix) in the
    /// cache directory. Nothing is visible until [`CacheWriter::commit`]; dropping the writer
    /// deletes the temp file.
    pub fn writer(&self, key: &str) -> io::Result<CacheWriter> {
        let name = file_name(key);
        let tmp = self.inner.dir.join(format!(
            "{name}.{}{TMP_SUFFIX}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                context(
                    e,
                    format_args!("creating cache temp file {} for {key}", tmp.display()),
                )
            })?;
        Ok(CacheWriter {
            cache: Arc::clone(&self.inner),
            key: key.to_string(),
            name,
            tmp,
            file: Some(tokio::io::BufWriter::with_capacity(
                WRITE_BUFFER,
                tokio::fs::File::from_std(file),
            )),
            tmp_on_disk: true,
            written: 0,
            failed: false,
        })
    }
}

impl fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (entries, size) = {
            let index = self.inner.index();
            (index.entries.len(), index.total)
        };
        f.debug_struct("DiskCache")
            .field("dir", &self.inner.dir)
            .field("max_bytes", &self.inner.max_bytes)
            .field("entries", &entries)
            .field("size", &size)
            .finish()
    }
}

/// A blob being written into a [`DiskCache`], from [`DiskCache::writer`].
///
/// Write the body with [`CacheWriter::write`], then [`CacheWriter::commit`] with the length the
/// body should have. Dropping the writer without committing deletes its temp file.
pub struct CacheWriter {
    cache: Arc<Inner>,
    key: String,
    /// The committed file's name.
    name: String,
    tmp: PathBuf,
    /// `None` once the body passed `max_bytes` (the temp file is then deleted).
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    /// Whether the temp file exists and is this writer's to delete.
    tmp_on_disk: bool,
    written: u64,
    /// A write failed: the file may miss bytes, so commit refuses.
    failed: bool,
}

impl CacheWriter {
    /// Appends a chunk. Past the cache's `max_bytes` the bytes are only counted (the blob will
    /// not be kept; see [`CacheWriter::commit`]) and the temp file is deleted.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.written += chunk.len() as u64;
        if self.written > self.cache.max_bytes {
            if self.file.take().is_some() {
                remove_file_logged_async(&self.tmp, "dropping an over-size cache write").await;
                self.tmp_on_disk = false;
            }
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if let Err(e) = file.write_all(chunk).await {
            self.failed = true;
            return Err(context(
                e,
                format_args!(
                    "writing cache temp file {} for {}",
                    self.tmp.display(),
                    self.key
                ),
            ));
        }
        Ok(())
    }

    /// Bytes passed to [`CacheWriter::write`] so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the blob visible in the cache and returns its file. Fails, leaving nothing behind,
    /// if the bytes written differ from `expected_len` (kind `InvalidData`: a truncated body must
    /// never be cached), if an earlier write failed, or if the blob is larger than the whole
    /// cache (kind `FileTooLarge`: not kept). Otherwise flushes and fsyncs the file, renames it
    /// into place, fsyncs the directory, indexes it as most recently used, and evicts least
    /// recently used blobs until the cache is within `max_bytes` (never this one).
    pub async fn commit(mut self, expected_len: u64) -> io::Result<PathBuf> {
        match self.try_commit(expected_len).await {
            Ok(path) => Ok(path),
            Err(e) => {
                self.file = None;
                if self.tmp_on_disk {
                    remove_file_logged_async(&self.tmp, "discarding a failed cache write").await;
                    self.tmp_on_disk = false;
                }
                Err(e)
            }
        }
    }

    async fn try_commit(&mut self, expected_len: u64) -> io::Result<PathBuf> {
        let key = &self.key;
        if self.failed {
            return Err(io::Error::other(format!(
                "cache write for {key}: an earlier write failed; not cached"
            )));
        }
        if self.written != expected_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "cache write for {key}: got {} bytes, expected {expected_len}; not cached",
                    self.written
                ),
            ));
        }
        let max_bytes = self.cache.max_bytes;
        let Some(mut file) = self.file.take().filter(|_| self.written <= max_bytes) else {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "blob {key} is {} bytes, more than the whole cache ({max_bytes} bytes); not cached",
                    self.written
                ),
            ));
        };
        let tmp_err = |e| {
            context(
                e,
                format_args!(
                    "committing cache temp file {} for {key}",
                    self.tmp.display()
                ),
            )
        };
        file.flush().await.map_err(tmp_err)?;
        let file = file.into_inner();
        file.sync_all().await.map_err(tmp_err)?;
        drop(file);

        let dir = &self.cache.dir;
        let path = dir.join(&self.name);
        tokio::fs::rename(&self.tmp, &path).await.map_err(|e| {
            context(
                e,
                format_args!(
                    "renaming cache temp file {} to {} for {key}",
                    self.tmp.display(),
                    path.display()
                ),
            )
        })?;
        self.tmp_on_disk = false;
        let synced = async { tokio::fs::File::open(dir).await?.sync_all().await }.await;
        if let Err(e) = synced {
            // Not durable: take it back rather than report a commit that a crash could undo.
            self.cache.index().remove(&self.name);
            remove_file_logged_async(&path, "undoing a cache commit").await;
            return Err(context(
                e,
                format_args!("fsyncing cache directory {} for {key}", dir.display()),
            ));
        }

        let victims = {
            let mut index = self.cache.index();
            index.insert(self.name.clone(), self.written, Some(Instant::now()));
            // This entry is the most recently used and fits, so it is never a victim.
            index.evict(max_bytes)
        };
        for victim in victims {
            remove_file_logged_async(&dir.join(victim), "cache eviction").await;
        }
        Ok(path)
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        if self.tmp_on_disk {
            self.file = None;
            remove_file_logged(&self.tmp, "discarding an uncommitted cache write");
        }
    }
}

impl fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheWriter")
            .field("key", &self.key)
            .field("tmp", &self.tmp)
            .field("written", &self.written)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "xpod-cache-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ))
    }

    /// Names of the files in a directory, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    async fn put(cache: &DiskCache, key: &str, body: &[u8]) -> PathBuf {
        let mut w = cache.writer(key).unwrap();
        for chunk in body.chunks(3) {
            w.write(chunk).await.unwrap();
        }
        assert_eq!(w.written(), body.len() as u64);
        w.commit(body.len() as u64).await.unwrap()
    }

    async fn read(cache: &DiskCache, key: &str, range: Option<Range<u64>>) -> Option<Vec<u8>> {
        let mut s = cache.get(key, range).await?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        Some(out)
    }

    #[tokio::test]
    async fn round_trip_and_range() {
        let dir = temp_dir();
        let cache = DiskCache::open(&dir, 10 << 20).unwrap();
        assert!(cache.is_empty());
        let key = "blobs/alice/00112233445566778899aabbccddeeff";
        assert!(read(&cache, key, None).await.is_none());
        let path = put(&cache, key, b"hello world").await;
        assert_eq!(path, cache.path_of(key).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert!(cache.contains(key));
        assert_eq!((cache.len(), cache.size()), (1, 11));
        assert_eq!(read(&cache, key, None).await.unwrap(), b"hello world");
        assert_eq!(read(&cache, key, Some(6..11)).await.unwrap(), b"world");
        assert_eq!(read(&cache, key, Some(0..4)).await.unwrap(), b"hell");

        // Several 256 KiB chunks, and a range across a chunk boundary.
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = cache.writer("blobs/alice/big").unwrap();
        for chunk in big.chunks(64 * 1024) {
            w.write(chunk).await.unwrap();
        }
        w.commit(big.len() as u64).await.unwrap();
        assert_eq!(read(&cache, "blobs/alice/big", None).await.unwrap(), big);
        assert_eq!(
            read(&cache, "blobs/alice/big", Some(200_000..300_000))
                .await
                .unwrap(),
            &big[200_000..300_000]
        );

        // A file deleted under the cache is a miss, and its entry goes.
        std::fs::remove_file(&path).unwrap();
        assert!(read(&cache, key, None).await.is_none());
        assert!(!cache.contains(key));
        assert_eq!(cache.size(), big.len() as u64);
        cache.remove("blobs/alice/big");
        assert!(cache.is_empty());
        assert_eq!(cache.size(), 0);
        assert!(files(&dir).is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn eviction_is_least_recently_used() {
        let dir = temp_dir();
        let cache = DiskCache::open(&dir, 10).unwrap();
        let a = put(&cache, "blobs/p/a", b"aaaa").await;
        let b = put(&cache, "blobs/p/b", b"bbbb").await;
        // Reading A makes B the least recently used.
        assert_eq!(read(&cache, "blobs/p/a", None).await.unwrap(), b"aaaa");
        let c = put(&cache, "blobs/p/c", b"cccc").await;
        assert!(cache.contains("blobs/p/a"));
        assert!(!cache.contains("blobs/p/b"));
        assert!(cache.contains("blobs/p/c"));
        assert_eq!((cache.len(), cache.size()), (2, 8));
        assert!(a.exists() && !b.exists() && c.exists());
        // An object that fills the cache alone evicts everything else, but is kept.
        put(&cache, "blobs/p/d", b"dddddddddd").await;
        assert_eq!((cache.len(), cache.size()), (1, 10));
        assert!(cache.contains("blobs/p/d"));
        assert_eq!(files(&dir).len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn truncated_write_is_not_cached() {
        let dir = temp_dir();
        let cache = DiskCache::open(&dir, 1 << 20).unwrap();
        let mut w = cache.writer("blobs/p/short").unwrap();
        w.write(b"hello").await.unwrap();
        let err = w.commit(10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("got 5 bytes, expected 10"),
            "{err}"
        );
        assert!(!cache.contains("blobs/p/short"));
        assert!(cache.path_of("blobs/p/short").is_none());
        assert_eq!((cache.len(), cache.size()), (0, 0));
        assert!(files(&dir).is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn dropped_writer_leaves_no_temp_file() {
        let dir = temp_dir();
        let cache = DiskCache::open(&dir, 1 << 20).unwrap();
        let mut w = cache.writer("blobs/p/x").unwrap();
        w.write(&[7u8; 300_000]).await.unwrap();
        assert_eq!(files(&dir).len(), 1);
        assert!(files(&dir)[0].ends_with(".tmp"));
        drop(w);
        assert!(files(&dir).is_empty());
        assert!(!cache.contains("blobs/p/x"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn oversize_object_is_not_kept() {
        let dir = temp_dir();
        let cache = DiskCache::open(&dir, 10).unwrap();
        put(&cache, "blobs/p/small", b"small").await;
        let mut w = cache.writer("blobs/p/huge").unwrap();
        w.write(b"0123456789").await.unwrap();
        w.write(b"X").await.unwrap();
        // Past max_bytes the temp file is already gone.
        assert_eq!(files(&dir).len(), 1);
        assert_eq!(w.written(), 11);
        let err = w.commit(11).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(!cache.contains("blobs/p/huge"));
        // What was cached before stays.
        assert!(cache.contains("blobs/p/small"));
        assert_eq!((cache.len(), cache.size()), (1, 5));
        assert_eq!(files(&dir).len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn reopen_rebuilds_the_index() {
        let dir = temp_dir();
        {
            let cache = DiskCache::open(&dir, 100).unwrap();
            let a = put(&cache, "blobs/p/a", b"aaaa").await;
            let b = put(&cache, "blobs/p/b", b"bbbbbb").await;
            // A older than B on disk.
            let old = SystemTime::now() - Duration::from_secs(3600);
            let set = |p: &Path, t| {
                std::fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_modified(t)
                    .unwrap()
            };
            set(&a, old);
            set(&b, old + Duration::from_secs(60));
            // Leftovers of a crash and a stray file.
            let _leftover = std::mem::ManuallyDrop::new(cache.writer("blobs/p/c").unwrap());
            std::fs::write(dir.join("stray.txt"), b"?").unwrap();
            assert_eq!(files(&dir).len(), 4);
        }
        let cache = DiskCache::open(&dir, 100).unwrap();
        assert_eq!((cache.len(), cache.size()), (2, 10));
        assert!(cache.contains("blobs/p/a") && cache.contains("blobs/p/b"));
        assert_eq!(files(&dir).len(), 2, "temp and stray files deleted");
        // Reading A after the restart touches its mtime, so it is the newer one next time.
        assert_eq!(read(&cache, "blobs/p/a", None).await.unwrap(), b"aaaa");
        drop(cache);
        let cache = DiskCache::open(&dir, 5).unwrap();
        assert!(cache.contains("blobs/p/a"));
        assert!(!cache.contains("blobs/p/b"));
        assert_eq!((cache.len(), cache.size()), (1, 4));
        assert_eq!(files(&dir).len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }
}
