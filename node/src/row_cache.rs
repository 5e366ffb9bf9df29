//! The last known resource rows of the pods this node owns, kept for one purpose: to answer
//! reads while the metadata store cannot be reached (issue 18: "reads of cached data keep
//! working"). While the store answers, every read asks it (with the fencing check in the same
//! round trip) and nothing here is used.
//!
//! - Filled by the owner's reads (the row it read, or "no such resource") and kept exact by the
//!   owner's writes, which all go through this node while it owns the pod: a committed write
//!   puts its row here, a write whose outcome is unknown (the connection broke during the
//!   commit) removes the path.
//! - Keyed with the pod's epoch: a row remembered under another epoch is never recalled, so a
//!   node that owns a pod again does not trust what it knew the last time.
//! - The one staleness left: a partition that keeps this node from the store while other
//!   centers (which can reach it) move the pod and write to it; until the partition heals,
//!   this node may answer reads with what it last knew. Answers from here carry
//!   [`STALE_HEADER`].
//! - At most [`MAX_ROWS`]; past that everything is dropped (it refills from reads).

use std::collections::HashMap;
use std::sync::Mutex;

use xpod_storage::meta::ResourceRecord;

/// The most rows kept.
pub const MAX_ROWS: usize = 20_000;
/// The header on an answer whose metadata came from here.
pub const STALE_HEADER: &str = "x-xpod-metadata";
/// Its value.
pub const STALE_VALUE: &str = "cached; the metadata store is unreachable";

type Key = (String, String);

#[derive(Default)]
pub struct RowCache {
    rows: Mutex<HashMap<Key, (i64, Option<ResourceRecord>)>>,
}

impl RowCache {
    /// Remembers what the store said of `path` in `pod_id` at `epoch` (`None`: no resource).
    pub fn remember(&self, pod_id: &str, path: &str, epoch: i64, row: Option<&ResourceRecord>) {
        let mut rows = self.rows.lock().expect("poisoned");
        if rows.len() >= MAX_ROWS {
            rows.clear();
        }
        rows.insert(
            (pod_id.to_string(), path.to_string()),
            (epoch, row.cloned()),
        );
    }

    /// Forgets `path` (a write whose outcome is unknown).
    pub fn forget(&self, pod_id: &str, path: &str) {
        self.rows
            .lock()
            .expect("poisoned")
            .remove(&(pod_id.to_string(), path.to_string()));
    }

    /// What was last known of `path` at `epoch`: `None` if nothing (or only at another epoch).
    pub fn recall(&self, pod_id: &str, path: &str, epoch: i64) -> Option<Option<ResourceRecord>> {
        let rows = self.rows.lock().expect("poisoned");
        match rows.get(&(pod_id.to_string(), path.to_string())) {
            Some((e, row)) if *e == epoch => Some(row.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str) -> ResourceRecord {
        ResourceRecord {
            pod_id: "p".into(),
            path: path.into(),
            is_container: false,
            content_type: Some("text/plain".into()),
            etag: "e".into(),
            size: 1,
            blob_key: Some("b".into()),
            regions: vec![],
            version: 1,
            modified_at: 0,
        }
    }

    #[test]
    fn rows_are_recalled_at_their_epoch_only() {
        let c = RowCache::default();
        assert_eq!(c.recall("p", "/a", 1), None);
        c.remember("p", "/a", 1, Some(&row("/a")));
        c.remember("p", "/gone", 1, None);
        assert_eq!(c.recall("p", "/a", 1), Some(Some(row("/a"))));
        assert_eq!(c.recall("p", "/gone", 1), Some(None));
        assert_eq!(c.recall("p", "/a", 2), None, "another epoch");
        c.forget("p", "/a");
        assert_eq!(c.recall("p", "/a", 1), None);
    }
}
