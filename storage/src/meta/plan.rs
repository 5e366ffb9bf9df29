//! The resource rules, written once: both backends read what a write needs inside their
//! transaction, ask the planner what to do, and execute its plan. The rules:
//!
//! - **fencing** ([`check_fence`]): a write is only for the node that owns the pod at the epoch
//!   it believes;
//! - **shape** ([`validate_put`]): a container (`…/`) has no blob, content type or size;
//! - **preconditions**: `If-Match` / `If-None-Match` against the live row;
//! - **twins**: `/a` and `/a/` never both live; an ancestor that is a live document is a clash;
//! - **ancestors**: missing (or tombstoned) ancestors become live containers, root first, each
//!   one version above whatever row was there;
//! - **versions**: a write is one version above the row it replaces (tombstones included);
//! - **parent etags**: every container that gains or changes a member gets a new etag;
//! - **retired blobs**: a blob the write replaces is returned for retirement.

use std::collections::{BTreeSet, HashMap};

use super::{
    new_etag, parent_path, Fence, MetaError, MetaResult, Millis, Precondition, PutResource,
    ResourceRecord,
};

/// Fails with `Fenced` unless `fence` is the pod's current owner and epoch.
pub fn check_fence(pod_id: &str, owner: &str, epoch: i64, fence: &Fence) -> MetaResult<()> {
    if owner != fence.node_id || epoch != fence.epoch {
        return Err(MetaError::Fenced {
            pod_id: pod_id.to_string(),
            owner: owner.to_string(),
            epoch,
        });
    }
    Ok(())
}

/// A container carries no blob, content type or size.
pub fn validate_put(put: &PutResource) -> MetaResult<()> {
    if !put.path.starts_with('/') {
        return Err(MetaError::Invalid(format!(
            "path `{}` must start with /",
            put.path
        )));
    }
    if put.path.ends_with('/')
        && (put.blob_key.is_some() || put.content_type.is_some() || put.size != 0)
    {
        return Err(MetaError::Invalid(format!(
            "container {}: blob_key and content_type must be None and size 0",
            put.path
        )));
    }
    Ok(())
}

/// Ancestor containers of `path`, from `/` down to its direct parent.
pub fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = parent_path(path);
    while let Some(p) = cur {
        out.push(p.to_string());
        cur = parent_path(p);
    }
    out.reverse();
    out
}

/// The path of the other kind at the same place: `/a` ↔ `/a/` (`None` for `/`).
pub fn twin(path: &str) -> Option<String> {
    if path == "/" {
        None
    } else if let Some(doc) = path.strip_suffix('/') {
        Some(doc.to_string())
    } else {
        Some(format!("{path}/"))
    }
}

/// The other rows a put of `path` must see (besides the row at `path` itself): its ancestors,
/// their twins and its own twin.
pub fn put_reads(path: &str) -> Vec<String> {
    let ancestors = ancestors(path);
    let mut wanted = ancestors.clone();
    wanted.extend(ancestors.iter().filter_map(|a| twin(a)));
    wanted.extend(twin(path));
    wanted
}

/// What a row read for the planner says: its version and whether it is live (not tombstoned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub version: i64,
    pub live: bool,
}

/// What a put does, in order: create `containers` (path, version; root first), write `record`,
/// give every container in `bump` a new etag, retire `replaced_blob`.
#[derive(Debug)]
pub struct PutPlan {
    pub containers: Vec<(String, i64)>,
    pub record: ResourceRecord,
    pub bump: BTreeSet<String>,
    pub created: bool,
    pub replaced_blob: Option<String>,
}

/// Plans a put of `put` under `pre`, given the row at its path (`current`: the record and
/// whether it is live) and what [`put_reads`] found (`seen`, by path; absent = no row).
pub fn plan_put(
    put: &PutResource,
    pre: &Precondition,
    current: Option<(&ResourceRecord, bool)>,
    seen: &HashMap<String, Seen>,
    now: Millis,
) -> MetaResult<PutPlan> {
    let path = put.path.as_str();
    let live = current.filter(|(_, live)| *live).map(|(r, _)| r);
    if !pre.holds(live) {
        return Err(MetaError::PreconditionFailed);
    }
    let is_live = |p: &str| seen.get(p).is_some_and(|s| s.live);
    if let Some(t) = twin(path) {
        if is_live(&t) {
            return Err(MetaError::Conflict(format!(
                "{t} exists, clashes with {path}"
            )));
        }
    }
    let ancestors = ancestors(path);
    for a in &ancestors {
        if let Some(doc) = twin(a) {
            if is_live(&doc) {
                return Err(MetaError::Conflict(format!(
                    "{doc} is a document, not a container"
                )));
            }
        }
    }
    let mut bump = BTreeSet::new();
    let mut containers = Vec::new();
    for a in ancestors {
        if is_live(&a) {
            continue;
        }
        let version = seen.get(&a).map_or(1, |s| s.version + 1);
        if let Some(p) = parent_path(&a) {
            bump.insert(p.to_string());
        }
        containers.push((a, version));
    }
    // Always, not only on create: a container's representation lists its members' metadata,
    // so a replaced member changes it too.
    if let Some(p) = parent_path(path) {
        bump.insert(p.to_string());
    }
    let record = ResourceRecord {
        pod_id: put.pod_id.clone(),
        path: put.path.clone(),
        is_container: path.ends_with('/'),
        content_type: put.content_type.clone(),
        etag: new_etag(),
        size: put.size,
        blob_key: put.blob_key.clone(),
        regions: put.regions.clone(),
        version: current.map_or(1, |(r, _)| r.version + 1),
        modified_at: now,
    };
    let replaced_blob = live
        .and_then(|r| r.blob_key.clone())
        .filter(|old| put.blob_key.as_ref() != Some(old));
    Ok(PutPlan {
        containers,
        record,
        bump,
        created: live.is_none(),
        replaced_blob,
    })
}

/// The first rules of a delete of `path`, given its live row: not the root (`Conflict`), live
/// (`NotFound`), the precondition. Returns the row. The caller then asks whether a container
/// has live members and plans with [`plan_delete`].
pub fn check_delete<'a>(
    path: &str,
    live: Option<&'a ResourceRecord>,
    pre: &Precondition,
) -> MetaResult<&'a ResourceRecord> {
    if path == "/" {
        return Err(MetaError::Conflict(
            "the root container / cannot be deleted".into(),
        ));
    }
    let live = live.ok_or_else(|| MetaError::NotFound(format!("resource {path}")))?;
    if !pre.holds(Some(live)) {
        return Err(MetaError::PreconditionFailed);
    }
    Ok(live)
}

/// What a delete does: tombstone the row (version + 1, no blob key, so it never counts as a
/// reference), give `bump` a new etag, retire `retired_blob`.
#[derive(Debug, PartialEq, Eq)]
pub struct DeletePlan {
    pub bump: Option<String>,
    pub retired_blob: Option<String>,
}

/// Plans the delete of `live` (checked by [`check_delete`]); `has_member`: whether the
/// container has a live member (ignored for a document).
pub fn plan_delete(live: &ResourceRecord, has_member: bool) -> MetaResult<DeletePlan> {
    if live.is_container && has_member {
        return Err(MetaError::Conflict(format!(
            "container {} is not empty",
            live.path
        )));
    }
    Ok(DeletePlan {
        bump: parent_path(&live.path).map(str::to_string),
        retired_blob: live.blob_key.clone(),
    })
}

/// A fresh container row at `path` with `version`.
pub fn container(pod_id: &str, path: &str, version: i64, now: Millis) -> ResourceRecord {
    ResourceRecord {
        pod_id: pod_id.to_string(),
        path: path.to_string(),
        is_container: true,
        content_type: None,
        etag: new_etag(),
        size: 0,
        blob_key: None,
        regions: Vec::new(),
        version,
        modified_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &str, blob: Option<&str>) -> PutResource {
        PutResource {
            pod_id: "p".into(),
            path: path.into(),
            content_type: blob.map(|_| "text/plain".into()),
            size: if blob.is_some() { 5 } else { 0 },
            blob_key: blob.map(str::to_string),
            regions: vec![],
        }
    }

    #[test]
    fn ancestors_root_first() {
        assert_eq!(ancestors("/"), Vec::<String>::new());
        assert_eq!(ancestors("/a.txt"), vec!["/"]);
        assert_eq!(ancestors("/a/b/c.txt"), vec!["/", "/a/", "/a/b/"]);
        assert_eq!(ancestors("/a/b/"), vec!["/", "/a/"]);
    }

    #[test]
    fn twins() {
        assert_eq!(twin("/"), None);
        assert_eq!(twin("/a"), Some("/a/".into()));
        assert_eq!(twin("/a/"), Some("/a".into()));
    }

    #[test]
    fn a_deep_put_creates_its_ancestors_root_first_and_bumps_their_parents() {
        let seen = HashMap::from([
            (
                "/".to_string(),
                Seen {
                    version: 1,
                    live: true,
                },
            ),
            (
                "/a/".to_string(),
                Seen {
                    version: 3,
                    live: false,
                },
            ),
        ]);
        let plan = plan_put(
            &put("/a/b/c.txt", Some("k")),
            &Precondition::default(),
            None,
            &seen,
            9,
        )
        .unwrap();
        assert_eq!(
            plan.containers,
            vec![("/a/".to_string(), 4), ("/a/b/".to_string(), 1)]
        );
        assert_eq!(
            plan.bump.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["/", "/a/", "/a/b/"]
        );
        assert!(plan.created && plan.record.version == 1 && plan.replaced_blob.is_none());
    }

    #[test]
    fn twins_and_document_ancestors_clash_and_replacements_retire_the_old_blob() {
        let live = |v| Seen {
            version: v,
            live: true,
        };
        let seen = HashMap::from([("/a".to_string(), live(1))]);
        let e = plan_put(&put("/a/", None), &Precondition::default(), None, &seen, 1).unwrap_err();
        assert!(matches!(e, MetaError::Conflict(m) if m.contains("clashes")));
        let e = plan_put(
            &put("/a/x", Some("k")),
            &Precondition::default(),
            None,
            &seen,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, MetaError::Conflict(m) if m.contains("is a document")));
        let old = container("p", "/f", 2, 0);
        let old = ResourceRecord {
            is_container: false,
            blob_key: Some("old".into()),
            ..old
        };
        let plan = plan_put(
            &put("/f", Some("new")),
            &Precondition::default(),
            Some((&old, true)),
            &HashMap::new(),
            1,
        )
        .unwrap();
        assert_eq!(plan.replaced_blob.as_deref(), Some("old"));
        assert!(!plan.created && plan.record.version == 3);
        assert!(validate_put(&PutResource {
            size: 1,
            ..put("/c/", None)
        })
        .is_err());
        assert!(check_fence(
            "p",
            "n1",
            2,
            &Fence {
                node_id: "n1".into(),
                epoch: 1
            }
        )
        .is_err());
    }
}
