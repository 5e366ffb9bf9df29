//! Effective ACLs in memory: for (pod, base URL, resource path), which ACL document governs the
//! resource (parsed) and how it applies, so an authorized request reads no ACL from the store
//! once its answer is known.
//!
//! Only `.acl` writes change an effective ACL, and every write of a pod goes through its owner:
//! the owner drops the pod's entries when it writes or deletes an `.acl`
//! (`crate::http::access`). A change of owner (change feed), a feed reset and the periodic
//! re-check drop them too (`crate::mesh::follow_feed`), so a node that owns a pod again never
//! trusts what it cached the last time. A load that started before a drop is not kept
//! (generations). At most [`MAX_ENTRIES`]; past that everything is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::solid::wac::Acl;

/// The most entries kept.
pub const MAX_ENTRIES: usize = 100_000;

/// The ACL that governs one resource.
#[derive(Debug)]
pub struct Effective {
    /// The stored ACL document, or the pod's default when there is no `.acl` up to the root
    /// (its owner and access mode, [`crate::solid::wac::default_root_acl`]).
    pub acl: Arc<Acl>,
    /// Whether `acl` is the pod's default (no `.acl` stored up to the root).
    pub default: bool,
    /// Whether it is the resource's own ACL (`acl:accessTo`) or inherited (`acl:default`).
    pub own: bool,
    /// The URL `acl:accessTo` / `acl:default` must name: the resource's, or the container's
    /// whose ACL it inherited.
    pub url: String,
}

/// Per pod: its generation, and base URL → path → answer (looked up by `&str`, no allocation).
type PodEntries = (u64, HashMap<String, HashMap<String, Arc<Effective>>>);

#[derive(Default)]
struct Inner {
    pods: HashMap<String, PodEntries>,
    entries: usize,
    /// Bumped by `clear`, so loads that began before it are not kept.
    epoch: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct AclCache {
    inner: Mutex<Inner>,
}

/// Where a load started: pass it back to [`AclCache::insert`].
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
}

impl AclCache {
    /// The cached answer for (`pod`, `base`, `path`), or a ticket to insert a loaded one.
    pub fn get(&self, pod: &str, base: &str, path: &str) -> Result<Arc<Effective>, Ticket> {
        let inner = self.inner.lock().expect("poisoned");
        let generation = inner.pods.get(pod).map_or(0, |(g, _)| *g);
        if let Some(e) = inner
            .pods
            .get(pod)
            .and_then(|(_, m)| m.get(base))
            .and_then(|m| m.get(path))
        {
            return Ok(e.clone());
        }
        Err(Ticket {
            epoch: inner.epoch,
            generation,
        })
    }

    /// Keeps a loaded answer unless the pod's entries were dropped since `ticket`.
    pub fn insert(&self, ticket: Ticket, pod: &str, base: &str, path: &str, e: Arc<Effective>) {
        let mut inner = self.inner.lock().expect("poisoned");
        let generation = inner.pods.get(pod).map_or(0, |(g, _)| *g);
        if inner.epoch != ticket.epoch || generation != ticket.generation {
            return;
        }
        if inner.entries >= MAX_ENTRIES {
            let epoch = inner.epoch + 1;
            *inner = Inner {
                epoch,
                ..Inner::default()
            };
            return;
        }
        let slot = inner
            .pods
            .entry(pod.to_string())
            .or_insert_with(|| (generation, HashMap::new()));
        if slot
            .1
            .entry(base.to_string())
            .or_default()
            .insert(path.to_string(), e)
            .is_none()
        {
            inner.entries += 1;
        }
    }

    /// Drops what is known of `pod` (an `.acl` of it changed, or its owner did).
    pub fn invalidate(&self, pod: &str) {
        let mut inner = self.inner.lock().expect("poisoned");
        let (generation, dropped) = match inner.pods.get_mut(pod) {
            Some((g, m)) => {
                *g += 1;
                (*g, std::mem::take(m).values().map(HashMap::len).sum())
            }
            None => (1, 0),
        };
        inner.entries -= dropped;
        inner
            .pods
            .entry(pod.to_string())
            .or_insert_with(|| (generation, HashMap::new()));
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().expect("poisoned");
        let epoch = inner.epoch + 1;
        *inner = Inner {
            epoch,
            ..Inner::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e() -> Arc<Effective> {
        Arc::new(Effective {
            acl: Arc::default(),
            default: true,
            own: false,
            url: "u".into(),
        })
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let c = AclCache::default();
        let t = c.get("p", "b", "/x").unwrap_err();
        c.invalidate("p");
        c.insert(t, "p", "b", "/x", e());
        assert!(c.get("p", "b", "/x").is_err());
        let t = c.get("p", "b", "/x").unwrap_err();
        c.insert(t, "p", "b", "/x", e());
        assert!(c.get("p", "b", "/x").is_ok());
        c.invalidate("p");
        assert!(c.get("p", "b", "/x").is_err());
        let t = c.get("q", "b", "/x").unwrap_err();
        c.clear();
        c.insert(t, "q", "b", "/x", e());
        assert!(c.get("q", "b", "/x").is_err());
    }
}
