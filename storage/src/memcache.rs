//! Small immutable blobs in memory: the hot path of small GETs without a file open, a read
//! and a blocking-pool hand-off per request.
//!
//! Blob keys are immutable (the content under a key never changes), so a cached copy can never
//! be stale; entries leave only by eviction. Only blobs of at most [`MAX_OBJECT`] bytes are kept,
//! and at most `max_bytes` in all; when full, the oldest entries go first (FIFO: a hit does not
//! reorder, which keeps hits lock-light). `max_bytes = 0` disables it.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;

/// The largest blob kept in memory.
pub const MAX_OBJECT: u64 = 64 * 1024;

#[derive(Debug)]
pub struct MemCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl MemCache {
    /// A cache of at most `max_bytes`.
    pub fn new(max_bytes: usize) -> MemCache {
        MemCache {
            max_bytes,
            inner: Mutex::default(),
        }
    }

    /// Whether a blob of `size` bytes would be kept.
    pub fn admits(&self, size: u64) -> bool {
        size <= MAX_OBJECT && (size as usize) <= self.max_bytes
    }

    /// The blob, or `range` of it (clamped to its length), if held.
    pub fn get(&self, key: &str, range: Option<Range<u64>>) -> Option<Bytes> {
        let inner = self.inner.lock().expect("poisoned");
        let b = inner.blobs.get(key)?;
        Some(match range {
            None => b.clone(),
            Some(r) => {
                let len = b.len() as u64;
                b.slice(r.start.min(len) as usize..r.end.min(len) as usize)
            }
        })
    }

    /// Keeps `blob` under `key` (if small enough), evicting the oldest entries to make room.
    pub fn put(&self, key: &str, blob: Bytes) {
        if !self.admits(blob.len() as u64) {
            return;
        }
        let mut inner = self.inner.lock().expect("poisoned");
        if inner.blobs.contains_key(key) {
            return;
        }
        while inner.bytes + blob.len() > self.max_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(b) = inner.blobs.remove(&old) {
                inner.bytes -= b.len();
            }
        }
        inner.bytes += blob.len();
        inner.order.push_back(key.to_string());
        inner.blobs.insert(key.to_string(), blob);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("poisoned").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_blobs_within_the_budget_and_slices_ranges() {
        let c = MemCache::new(10);
        c.put("a", Bytes::from_static(b"12345"));
        c.put("b", Bytes::from_static(b"67890"));
        assert_eq!(c.get("a", Some(1..3)).unwrap(), &b"23"[..]);
        assert_eq!(c.get("a", Some(3..99)).unwrap(), &b"45"[..]);
        c.put("c", Bytes::from_static(b"abc"));
        assert!(c.get("a", None).is_none(), "the oldest went first");
        assert_eq!(c.get("b", None).unwrap(), &b"67890"[..]);
        assert!(c.bytes() <= 10);
        c.put("huge", Bytes::from(vec![0u8; 11]));
        assert!(c.get("huge", None).is_none(), "larger than the whole cache");
        let off = MemCache::new(0);
        off.put("a", Bytes::from_static(b"x"));
        assert!(off.get("a", None).is_none());
        let big = MemCache::new(1 << 30);
        big.put("big", Bytes::from(vec![0u8; MAX_OBJECT as usize + 1]));
        assert!(big.get("big", None).is_none(), "only small blobs");
    }
}
