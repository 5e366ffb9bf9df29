//! The blob garbage collector and the records it honours (see the parent module's docs):
//! [`GcRules`], [`PendingUpload`] (an upload's pending record, refreshed while it runs) and
//! [`BlobStore::collect_garbage`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

use super::{BlobError, BlobStore};
use crate::meta::{DocRecord, MetaStore, PENDING_BLOB, RETIRED_BLOB};

/// The timing rules of blob deletion (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcRules {
    /// Objects younger than this are never collected (orphans of a crash wait this long).
    pub min_age: Duration,
    /// A pending-upload record not refreshed for this long belongs to a dead upload.
    pub pending_lease: Duration,
    /// How often an upload refreshes its record (well below `pending_lease`).
    pub pending_refresh: Duration,
    /// How long a replaced or deleted blob stays for readers of the previous version.
    pub delete_grace: Duration,
}

impl Default for GcRules {
    fn default() -> Self {
        GcRules {
            min_age: Duration::from_secs(3600),
            pending_lease: Duration::from_secs(600),
            pending_refresh: Duration::from_secs(60),
            delete_grace: Duration::from_secs(1800),
        }
    }
}

/// An upload's claim on a new key: its [`PENDING_BLOB`] record, refreshed in the background
/// until [`PendingUpload::finish`] (which deletes it) or drop (then it expires).
pub struct PendingUpload {
    meta: Arc<dyn MetaStore>,
    key: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl PendingUpload {
    /// Claims a fresh key of `pod_id` for an upload by `node_id`: records it as pending (before
    /// any byte is stored), then refreshes the record every `refresh`.
    pub async fn begin(
        meta: Arc<dyn MetaStore>,
        pod_id: &str,
        node_id: &str,
        refresh: Duration,
    ) -> Result<PendingUpload, BlobError> {
        let key = BlobStore::new_key(pod_id);
        let doc = DocRecord {
            kind: PENDING_BLOB.to_string(),
            id: key.clone(),
            owner: pod_id.to_string(),
            version: 0,
            updated_at: 0,
            doc: serde_json::json!({ "node": node_id }),
        };
        let created = meta
            .put_doc(&doc, 0, crate::meta::now_millis())
            .await
            .map_err(|e| BlobError::Body(format!("recording upload {key}: {e}")))?;
        if !created {
            return Err(BlobError::Body(format!("upload {key} is recorded already")));
        }
        let refresher = tokio::spawn(refresh_pending(meta.clone(), doc, refresh));
        Ok(PendingUpload {
            meta,
            key,
            refresher,
        })
    }

    /// The key to upload to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops refreshing and deletes the record (after the commit, or after a failed commit's
    /// blob was deleted).
    pub async fn finish(self) {
        self.refresher.abort();
        if let Err(e) = self.meta.delete_doc(PENDING_BLOB, &self.key, 0).await {
            tracing::warn!(key = %self.key, error = %e, "deleting an upload record failed; it expires");
        }
    }
}

impl Drop for PendingUpload {
    /// Dropped without [`PendingUpload::finish`] (the request went away, perhaps with its commit
    /// still landing): the record stops being refreshed and expires after the lease.
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Keeps a pending record fresh: `put_doc` at its current version every `every`.
async fn refresh_pending(meta: Arc<dyn MetaStore>, doc: DocRecord, every: Duration) {
    let mut version = 1;
    loop {
        tokio::time::sleep(every).await;
        let now = crate::meta::now_millis();
        match meta.put_doc(&doc, version, now).await {
            Ok(true) => version += 1,
            // Gone (expired and swept while the store was unreachable): record it again.
            Ok(false) => match meta.put_doc(&doc, 0, now).await {
                Ok(true) => version = 1,
                Ok(false) => match meta.get_doc(PENDING_BLOB, &doc.id).await {
                    Ok(Some(d)) => version = d.version,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(key = %doc.id, error = %e, "refreshing an upload record failed")
                    }
                },
                Err(e) => {
                    tracing::warn!(key = %doc.id, error = %e, "refreshing an upload record failed")
                }
            },
            Err(e) => {
                tracing::warn!(key = %doc.id, error = %e, "refreshing an upload record failed")
            }
        }
    }
}

impl BlobStore {
    /// One pass of the blob GC; returns how many blobs were deleted. First retired blobs past
    /// the grace period (whatever the object's age) and expired pending records; then every
    /// object older than `min_age` that is neither pending (fresh record), referenced, nor
    /// retired within the grace period.
    pub async fn collect_garbage(
        &self,
        meta: &dyn MetaStore,
        rules: &GcRules,
    ) -> Result<usize, BlobError> {
        let mut deleted = self.sweep_records(meta, rules).await?;
        let cutoff = chrono_cutoff(rules.min_age);
        let mut listing = self.store.list(Some(&ObjPath::from("blobs")));
        let mut batch = Vec::new();
        while let Some(item) = listing.next().await {
            let meta_obj = item?;
            if meta_obj.last_modified.timestamp_millis() > cutoff {
                continue;
            }
            batch.push(meta_obj.location.to_string());
            if batch.len() >= 500 {
                deleted += self
                    .delete_unneeded(meta, rules, std::mem::take(&mut batch))
                    .await?;
            }
        }
        if !batch.is_empty() {
            deleted += self.delete_unneeded(meta, rules, batch).await?;
        }
        Ok(deleted)
    }

    /// Deletes the blobs of retired records past the grace period (unless referenced again),
    /// then the records; forgets pending records past the lease.
    async fn sweep_records(
        &self,
        meta: &dyn MetaStore,
        rules: &GcRules,
    ) -> Result<usize, BlobError> {
        let skipped =
            |e: crate::meta::MetaError| BlobError::Body(format!("garbage collection skipped: {e}"));
        let now = crate::meta::now_millis();
        let mut deleted = 0;
        for d in meta.list_docs(RETIRED_BLOB, None).await.map_err(skipped)? {
            if now - d.updated_at <= rules.delete_grace.as_millis() as i64 {
                continue;
            }
            let key = d.id.as_str();
            let live = meta
                .referenced_blobs(std::slice::from_ref(&d.id))
                .await
                .map_err(skipped)?;
            if key.starts_with("blobs/") && !live.contains(key) {
                self.delete(key).await?;
                deleted += 1;
            }
            // At its version: retired again meanwhile (a newer record) means wait again.
            meta.delete_doc(RETIRED_BLOB, key, d.version)
                .await
                .map_err(skipped)?;
        }
        for d in meta.list_docs(PENDING_BLOB, None).await.map_err(skipped)? {
            if now - d.updated_at > rules.pending_lease.as_millis() as i64 {
                meta.delete_doc(PENDING_BLOB, &d.id, d.version)
                    .await
                    .map_err(skipped)?;
            }
        }
        Ok(deleted)
    }

    /// Deletes the listed objects nobody needs. The order of the reads matters: pending record,
    /// then references, then retired record (a write publishes each before removing the one
    /// before it: pending → committed row → retired record).
    async fn delete_unneeded(
        &self,
        meta: &dyn MetaStore,
        rules: &GcRules,
        keys: Vec<String>,
    ) -> Result<usize, BlobError> {
        let skipped =
            |e: crate::meta::MetaError| BlobError::Body(format!("garbage collection skipped: {e}"));
        let now = crate::meta::now_millis();
        let pending: std::collections::HashSet<String> = meta
            .list_docs(PENDING_BLOB, None)
            .await
            .map_err(skipped)?
            .into_iter()
            .filter(|d| now - d.updated_at <= rules.pending_lease.as_millis() as i64)
            .map(|d| d.id)
            .collect();
        let keys: Vec<String> = keys.into_iter().filter(|k| !pending.contains(k)).collect();
        let live = meta.referenced_blobs(&keys).await.map_err(skipped)?;
        let mut n = 0;
        for key in keys.iter().filter(|k| !live.contains(*k)) {
            let retired = meta.get_doc(RETIRED_BLOB, key).await.map_err(skipped)?;
            if retired.is_some_and(|d| now - d.updated_at <= rules.delete_grace.as_millis() as i64)
            {
                continue;
            }
            self.delete(key).await?;
            n += 1;
        }
        Ok(n)
    }
}

fn chrono_cutoff(min_age: Duration) -> i64 {
    crate::meta::now_millis() - min_age.as_millis() as i64
}
