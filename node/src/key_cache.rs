//! API keys in memory, so an authenticated request costs no metadata round trip for its key.
//!
//! - A hit answers from memory; a miss reads the store and keeps what it found (unknown ids
//!   are not kept: a key minted a moment ago works at once).
//! - The change feed drops a key when it is revoked (`key:<id>`, sent in the revoking
//!   transaction), and drops everything when the feed reconnects or lags
//!   ([`crate::mesh::follow_feed`]): a revoked key stops working on every node as soon as the
//!   notification arrives. [`MAX_AGE`] bounds how long a lost notification can hide a
//!   revocation; expiry (`expires_at`) is checked on every request against the cached record.
//!   While the store is unreachable an aged record is still used (nobody can revoke it then).
//! - A load that an invalidation overtook is not kept (a generation counter), so a revocation
//!   that lands while a request is reading the old row cannot be undone by that read.
//! - At most [`MAX_KEYS`] entries; when full, the oldest half is dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xpod_storage::meta::{ApiKeyRecord, MetaError, MetaResult, MetaStore, Millis};

/// The safety net behind the change feed: a cached key is reread after this long.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// The most keys kept.
pub const MAX_KEYS: usize = 16_384;

#[derive(Default)]
pub struct KeyCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, (ApiKeyRecord, Instant)>,
    /// Bumped by every invalidation.
    generation: u64,
    loads: u64,
}

impl KeyCache {
    /// The record of key `key_id`: from memory, or read from `meta`.
    pub async fn get(
        &self,
        meta: &dyn MetaStore,
        key_id: &str,
    ) -> MetaResult<Option<ApiKeyRecord>> {
        let (generation, aged) = {
            let mut inner = self.inner.lock().expect("poisoned");
            let mut aged = None;
            if let Some((record, at)) = inner.keys.get(key_id) {
                if at.elapsed() < MAX_AGE {
                    return Ok(Some(record.clone()));
                }
                aged = inner.keys.remove(key_id);
            }
            inner.loads += 1;
            (inner.generation, aged)
        };
        let found = match meta.get_api_key(key_id).await {
            Err(MetaError::Unavailable(why)) => {
                // The store is unreachable, so nobody can revoke the key meanwhile either: the
                // aged record stays good until the store answers again.
                let Some((record, at)) = aged else {
                    return Err(MetaError::Unavailable(why));
                };
                let mut inner = self.inner.lock().expect("poisoned");
                if inner.generation == generation {
                    inner.keys.insert(key_id.to_string(), (record.clone(), at));
                }
                return Ok(Some(record));
            }
            other => other?,
        };
        if let Some(record) = &found {
            let mut inner = self.inner.lock().expect("poisoned");
            if inner.generation == generation {
                if inner.keys.len() >= MAX_KEYS {
                    let mut ages: Vec<Instant> = inner.keys.values().map(|(_, at)| *at).collect();
                    ages.sort_unstable();
                    let cut = ages[ages.len() / 2];
                    inner.keys.retain(|_, (_, at)| *at > cut);
                }
                inner
                    .keys
                    .insert(key_id.to_string(), (record.clone(), Instant::now()));
            }
        }
        Ok(found)
    }

    /// Notes that the key was used at `at` (so the next touch is a minute away).
    pub fn touched(&self, key_id: &str, at: Millis) {
        if let Some((record, _)) = self.inner.lock().expect("poisoned").keys.get_mut(key_id) {
            record.last_used_at = Some(at);
        }
    }

    /// Forgets `key_id` (it was revoked).
    pub fn invalidate(&self, key_id: &str) {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.generation += 1;
        inner.keys.remove(key_id);
    }

    /// Forgets every key (the change feed reconnected or lost events).
    pub fn clear(&self) {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.generation += 1;
        inner.keys.clear();
    }

    /// How many keys were read from the store (for metrics and tests).
    pub fn loads(&self) -> u64 {
        self.inner.lock().expect("poisoned").loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hits_do_not_read_the_store_and_a_revocation_is_seen_after_invalidate() {
        let dir = std::env::temp_dir().join(format!("xpod-keycache-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("meta.db").display());
        let meta = xpod_storage::meta::open(&url, 2).await.unwrap();
        let k = crate::auth::mint("t", "o", vec!["admin".into()], 1, None);
        meta.create_api_key(&k.record).await.unwrap();
        let cache = KeyCache::default();
        let id = &k.record.key_id;
        for _ in 0..10 {
            assert!(cache.get(meta.as_ref(), id).await.unwrap().is_some());
        }
        assert_eq!(cache.loads(), 1, "nine hits from memory");
        meta.revoke_api_key(id, 5).await.unwrap();
        let cached = cache.get(meta.as_ref(), id).await.unwrap().unwrap();
        assert!(cached.revoked_at.is_none(), "not yet told");
        cache.invalidate(id);
        let fresh = cache.get(meta.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(fresh.revoked_at, Some(5));
        assert!(cache
            .get(meta.as_ref(), "0123456789ab")
            .await
            .unwrap()
            .is_none());
        assert!(cache
            .get(meta.as_ref(), "0123456789ab")
            .await
            .unwrap()
            .is_none());
        assert_eq!(cache.loads(), 4, "unknown ids are not kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
