//! The owner table: pod → (owner node, epoch), in memory (ARCHITECTURE §4, §5).
//!
//! - A hit answers from memory. A miss loads through the loader given at construction (the
//!   metadata store), **once per key however many requests wait** (single-flight: the first
//!   caller's load is shared by everyone who asks while it runs).
//! - [`OwnerTable::invalidate`] drops one key (a change-feed event `pod:<id>:<epoch>`), and
//!   [`OwnerTable::clear`] drops everything (the feed reconnected, or the periodic re-check).
//!   A load that was running when its key was invalidated still answers the callers that were
//!   waiting for it, but its result is not kept: the next caller loads again.
//! - "No such pod" is cached too, for [`NEGATIVE_TTL`] at most and for at most
//!   [`NEGATIVE_MAX`] names at once (beyond that, misses are not kept), so random names do not
//!   each cost a database query. A pod created anywhere is announced on the change feed, which
//!   invalidates its entry at once; the TTL bounds how long a lost notification can hide it.
//!
//! The table is a hint. Correctness comes from the epoch checks at the owner: a stale entry
//! costs one extra hop, never a misplaced write.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio::time::{Duration, Instant};

/// How long "no such pod" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Names remembered as missing at most (a bound on memory under random names).
pub const NEGATIVE_MAX: usize = 65_536;

/// Who owns a pod, and since which change of owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node_id: String,
    pub epoch: i64,
}

/// What a load returns: the owner (or the whole pod row, see [`OwnerTable`]), `None` for no
/// such pod, or an error message.
pub type LoadResult<V = Owner> = Result<Option<V>, String>;
type LoadFuture<V> = Pin<Box<dyn Future<Output = LoadResult<V>> + Send>>;
type Loader<V> = Arc<dyn Fn(String) -> LoadFuture<V> + Send + Sync>;

/// See the module docs. `V` is what is cached per pod: an [`Owner`], or (in the node) the
/// pod's whole row, so that routing and the handler share one lookup.
pub struct OwnerTable<V = Owner> {
    loader: Loader<V>,
    inner: Mutex<Inner<V>>,
    /// Lookups answered from memory.
    hits: std::sync::atomic::AtomicU64,
}

struct Inner<V> {
    /// Bumped by `clear`, so a load that started before it is not kept.
    generation: u64,
    slots: HashMap<String, Arc<OnceCell<Option<V>>>>,
    /// When each cached "no such pod" was loaded.
    missing: HashMap<String, Instant>,
    loads: u64,
}

impl<V> Default for Inner<V> {
    fn default() -> Self {
        Inner {
            generation: 0,
            slots: HashMap::new(),
            missing: HashMap::new(),
            loads: 0,
        }
    }
}

impl<V: Clone + Send + Sync + 'static> OwnerTable<V> {
    /// A table that loads misses with `loader`.
    pub fn new<F, Fut>(loader: F) -> OwnerTable<V>
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = LoadResult<V>> + Send + 'static,
    {
        OwnerTable {
            loader: Arc::new(move |pod| Box::pin(loader(pod))),
            inner: Mutex::default(),
            hits: Default::default(),
        }
    }

    /// The owner of `pod_id`: from memory, or loaded once for all concurrent callers.
    pub async fn owner(&self, pod_id: &str) -> LoadResult<V> {
        let (cell, generation) = {
            let mut inner = self.inner.lock().expect("poisoned");
            if inner
                .missing
                .get(pod_id)
                .is_some_and(|at| at.elapsed() >= NEGATIVE_TTL)
            {
                inner.missing.remove(pod_id);
                inner.slots.remove(pod_id);
            }
            let generation = inner.generation;
            let cell = inner.slots.entry(pod_id.to_string()).or_default().clone();
            (cell, generation)
        };
        if let Some(known) = cell.get() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(known.clone());
        }
        let loaded = cell
            .get_or_try_init(|| {
                self.inner.lock().expect("poisoned").loads += 1;
                (self.loader)(pod_id.to_string())
            })
            .await
            .cloned();
        if let Ok(found) = &loaded {
            let mut inner = self.inner.lock().expect("poisoned");
            let current = inner
                .slots
                .get(pod_id)
                .is_some_and(|c| Arc::ptr_eq(c, &cell));
            // Keep what was found only if nothing invalidated the key meanwhile; a miss only
            // while there is room for it.
            if current {
                if inner.generation != generation {
                    inner.slots.remove(pod_id);
                } else if found.is_none() && !inner.missing.contains_key(pod_id) {
                    if inner.missing.len() < NEGATIVE_MAX {
                        inner.missing.insert(pod_id.to_string(), Instant::now());
                    } else {
                        inner.slots.remove(pod_id);
                    }
                }
            }
        } else {
            // A failed load leaves an empty cell; drop it so the next caller retries.
            let mut inner = self.inner.lock().expect("poisoned");
            if inner
                .slots
                .get(pod_id)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                inner.slots.remove(pod_id);
            }
        }
        loaded
    }

    /// What the table holds for `pod_id` now, without loading (for diagnostics).
    pub fn peek(&self, pod_id: &str) -> Option<V> {
        let inner = self.inner.lock().expect("poisoned");
        inner
            .slots
            .get(pod_id)
            .and_then(|c| c.get().cloned().flatten())
    }

    /// Forgets `pod_id` (its owner or epoch changed).
    pub fn invalidate(&self, pod_id: &str) {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.slots.remove(pod_id);
        inner.missing.remove(pod_id);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.generation += 1;
        inner.slots.clear();
        inner.missing.clear();
    }

    /// How many entries are cached (or loading).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("poisoned").slots.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many lookups were answered from memory (for metrics).
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many loads ran since the table was made (for metrics and tests).
    pub fn loads(&self) -> u64 {
        self.inner.lock().expect("poisoned").loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::time::Duration;

    /// A "database" whose owner of every pod is `node-<epoch>`; loads take 20 ms and count.
    fn table(epoch: Arc<AtomicI64>, calls: Arc<AtomicUsize>) -> OwnerTable {
        OwnerTable::new(move |pod: String| {
            let epoch = epoch.clone();
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if pod == "missing" {
                    return Ok(None);
                }
                if pod == "broken" {
                    return Err("database down".into());
                }
                let e = epoch.load(Ordering::SeqCst);
                Ok(Some(Owner {
                    node_id: format!("node-{e}"),
                    epoch: e,
                }))
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_concurrent_misses_load_once() {
        let (epoch, calls) = (Arc::new(AtomicI64::new(1)), Arc::new(AtomicUsize::new(0)));
        let t = Arc::new(table(epoch, calls.clone()));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move { t.owner("alice").await }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().unwrap().node_id, "node-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for 100 waiters");
        // Hits do not load.
        t.owner("alice").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(t.loads(), 1);
    }

    #[tokio::test]
    async fn invalidate_and_clear_reload() {
        let (epoch, calls) = (Arc::new(AtomicI64::new(1)), Arc::new(AtomicUsize::new(0)));
        let t = table(epoch.clone(), calls.clone());
        assert_eq!(t.owner("alice").await.unwrap().unwrap().epoch, 1);
        epoch.store(2, Ordering::SeqCst);
        assert_eq!(t.owner("alice").await.unwrap().unwrap().epoch, 1, "cached");
        t.invalidate("alice");
        assert_eq!(t.owner("alice").await.unwrap().unwrap().epoch, 2);
        epoch.store(3, Ordering::SeqCst);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.owner("alice").await.unwrap().unwrap().epoch, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn misses_are_cached_briefly_and_errors_not_at_all() {
        let (epoch, calls) = (Arc::new(AtomicI64::new(1)), Arc::new(AtomicUsize::new(0)));
        let t = table(epoch, calls.clone());
        for _ in 0..100 {
            assert_eq!(t.owner("missing").await.unwrap(), None);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one load for 100 asks of a missing pod"
        );
        // The change feed announces it (created): found at once.
        t.invalidate("missing");
        assert_eq!(t.owner("missing").await.unwrap(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Without a notification the miss is forgotten after the TTL.
        tokio::time::sleep(NEGATIVE_TTL).await;
        assert_eq!(t.owner("missing").await.unwrap(), None);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(t.owner("broken").await.unwrap_err().contains("down"));
        assert!(t.owner("broken").await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        t.clear();
        assert!(t.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_overtaken_by_an_invalidation_is_not_kept() {
        let (epoch, calls) = (Arc::new(AtomicI64::new(1)), Arc::new(AtomicUsize::new(0)));
        let t = Arc::new(table(epoch.clone(), calls.clone()));
        let slow = tokio::spawn({
            let t = t.clone();
            async move { t.owner("alice").await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await; // the load is running
        epoch.store(2, Ordering::SeqCst);
        t.clear();
        // The waiter gets what its load read (epoch 1 or 2), but the table does not keep it.
        slow.await.unwrap().unwrap();
        assert_eq!(t.owner("alice").await.unwrap().unwrap().epoch, 2);
    }
}
