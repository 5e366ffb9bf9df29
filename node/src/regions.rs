//! The node's regions (ARCHITECTURE §7): which store is whose, from the configuration, and the
//! migration sync job that finishes moving a pod's bytes after it changed region.
//!
//! Stores: this node's region (`region`) writes to its entry in `storage.region_buckets` if
//! there is one, else to `storage.objects_url` (default `file://<data_dir>/objects`). Every
//! other entry of `storage.region_buckets` is another region, read when a blob is not in the own
//! region. A bucket is a name on `endpoint` (the entry's, else `storage.endpoint`; AWS when
//! neither is set), `s3://NAME`, or a local directory `file:///path`.
//!
//! Sync: a migration (`POST /.cluster/pods/{id}/migrate`) leaves the pod `syncing` when the
//! target node is in another region. The new owner's [`sync_loop`] finds such pods (every
//! [`SYNC_EVERY`]) and copies each blob the own region lacks, at most [`SYNC_PARALLEL`] at a
//! time (the throttle: live traffic keeps most of the bandwidth), updating `migration_progress`
//! in order as it goes and setting `done` at the end — or `failed` (retried on the next round)
//! when a region cannot be read. A pod that moved from an edge (its bytes held by `edge:<node>`,
//! `crate::edges::pod_move`) stays `syncing` while that edge is offline, and goes on when it is
//! back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use xpod_config::Config;
use xpod_storage::blobs::{BlobStore, S3Location};
use xpod_storage::cache::DiskCache;
use xpod_storage::meta::{self, MetaStore, MigrationStatus};
use xpod_storage::regions::{Region, RegionError, Regions};

/// On an edge, the holder of an adopted pod's blobs until they are copied: the cluster, read
/// through a center (`crate::edges::pod_adopt`).
pub const CLUSTER: &str = "cluster";

/// How often the sync job looks for pods to finish.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Blobs copied at the same time by the sync job.
pub const SYNC_PARALLEL: usize = 4;

fn open_store(config: &Config, bucket: &str, endpoint: Option<&str>) -> anyhow::Result<BlobStore> {
    if bucket.starts_with("file://") {
        return BlobStore::open(bucket).with_context(|| format!("opening {bucket}"));
    }
    let s = &config.storage;
    let location = S3Location {
        bucket: bucket.strip_prefix("s3://").unwrap_or(bucket).to_string(),
        endpoint: endpoint.or(s.endpoint.as_deref()).map(str::to_string),
        region: s.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
        access_key: s.access_key.clone(),
        secret_key: s.secret_key.as_ref().map(|k| k.expose().to_string()),
    };
    BlobStore::open_s3(&location).with_context(|| format!("opening bucket {}", location.bucket))
}

/// The regions of `config`, with the disk cache at `cache.path` (`cache.max_size`).
pub fn open(config: &Config, meta: Arc<dyn MetaStore>) -> anyhow::Result<Arc<Regions>> {
    let buckets = &config.storage.region_buckets;
    let own_store = match buckets.iter().find(|b| b.region == config.region) {
        Some(b) => open_store(config, &b.bucket, b.endpoint.as_deref())?,
        None => {
            let url = config.objects_url();
            if url.starts_with("s3://") {
                open_store(config, &url, None)?
            } else {
                BlobStore::open(&url).context("opening the object store")?
            }
        }
    };
    let others = buckets
        .iter()
        .filter(|b| b.region != config.region)
        .map(|b| {
            Ok(Region {
                name: b.region.clone(),
                store: open_store(config, &b.bucket, b.endpoint.as_deref())
                    .with_context(|| format!("region {}", b.region))?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_dir = config.cache_dir();
    let cache = DiskCache::open(&cache_dir, config.cache.max_size.bytes())
        .with_context(|| format!("opening the disk cache in {}", cache_dir.display()))?;
    Ok(Arc::new(Regions::new(
        Region {
            name: config.region.clone(),
            store: own_store,
        },
        others,
        Some(Arc::new(cache)),
        meta,
    )))
}

/// Told every migration state the sync records: on an edge, the cluster, which shows the
/// progress of a pod moved onto it (`crate::edges::pod_adopt::mirror`); on a center, the edges
/// a finished pod's bytes came from, which drop their copy (`crate::edges::pod_move::purge_hook`).
pub type Mirror = Arc<
    dyn Fn(String, MigrationStatus, Option<i32>) -> futures_util::future::BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// What the migration sync works with: the metadata, the regions, this node's id, and who
/// else hears of its progress.
pub struct SyncJob {
    pub meta: Arc<dyn MetaStore>,
    pub regions: Arc<Regions>,
    pub node_id: String,
    pub mirror: Option<Mirror>,
}

impl SyncJob {
    async fn record(
        &self,
        pod_id: &str,
        status: MigrationStatus,
        progress: Option<i32>,
    ) -> Result<(), meta::MetaError> {
        self.meta
            .set_migration_state(pod_id, Some(status), progress)
            .await?;
        if let Some(m) = &self.mirror {
            m(pod_id.to_string(), status, progress).await;
        }
        Ok(())
    }
}

/// Whether a holder that cannot be read now is worth waiting for (the move is not failing):
/// an edge a pod moved from, or, on an edge, the cluster it reads an adopted pod from.
fn waits_for(holder: &str) -> bool {
    holder.starts_with("edge:") || holder == CLUSTER
}

/// Finishes the migrations to this node: see the module docs.
///
/// Test hook: while the file named by `XPOD_TEST_SYNC_HOLD` exists, the job waits (so a test
/// can observe reads through the fallback chain before the job copies everything).
pub async fn sync_loop(job: SyncJob, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    let hold = std::env::var_os("XPOD_TEST_SYNC_HOLD").map(std::path::PathBuf::from);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if hold.as_ref().is_some_and(|h| h.exists()) {
            continue;
        }
        let pods = match job.meta.list_pods().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "migration sync skipped");
                continue;
            }
        };
        for pod in pods.into_iter().filter(|p| {
            p.node_id == job.node_id
                && matches!(
                    p.migration_status,
                    Some(MigrationStatus::Syncing) | Some(MigrationStatus::Failed)
                )
        }) {
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                r = sync_pod(&job, &pod.pod_id) => { report(&job, &pod.pod_id, r).await; false }
            };
            if stop {
                return;
            }
        }
    }
}

async fn report(job: &SyncJob, pod_id: &str, result: anyhow::Result<(usize, usize)>) {
    // Bytes still only on an edge that is offline (or, on an edge, only in the cluster it
    // cannot reach now): the move is not failing, it waits (it stays `syncing` at its
    // progress, and the next round goes on).
    if let Err(e) = &result {
        let holder = e
            .chain()
            .find_map(|c| match c.downcast_ref::<RegionError>() {
                Some(RegionError::Unavailable { regions, .. }) => {
                    regions.iter().find(|r| waits_for(r)).cloned()
                }
                _ => None,
            });
        if let Some(holder) = holder {
            tracing::info!(pod = pod_id, %holder, "migration sync waits for the holder to come back");
            return;
        }
    }
    let (status, progress) = match &result {
        Ok((copied, total)) => {
            tracing::info!(pod = pod_id, copied, blobs = total, "migration sync done");
            (MigrationStatus::Done, Some(100))
        }
        Err(e) => {
            tracing::warn!(pod = pod_id, error = %format!("{e:#}"), "migration sync failed; retrying");
            (MigrationStatus::Failed, None)
        }
    };
    if let Err(e) = job.record(pod_id, status, progress).await {
        tracing::warn!(pod = pod_id, error = %e, "recording the migration state failed");
    }
}

/// Copies every blob of `pod_id` that the own region lacks. Returns (copied, total).
async fn sync_pod(job: &SyncJob, pod_id: &str) -> anyhow::Result<(usize, usize)> {
    let own = job.regions.own().name.clone();
    let blobs = job.meta.list_pod_blobs(pod_id).await?;
    let total = blobs.len();
    let mut copied = 0;
    let mut last_pct = -1;
    // Copies run SYNC_PARALLEL at a time; results come back in order, so progress is monotonic.
    let regions = job.regions.clone();
    let mut copies = futures_util::stream::iter(blobs.into_iter().map(move |r| {
        let (own, regions) = (own.clone(), regions.clone());
        futures_util::FutureExt::boxed(async move {
            if r.regions.contains(&own) {
                return Ok(false);
            }
            let key = r.blob_key.clone().unwrap_or_default();
            regions
                .ensure_local(&key, r.size.max(0) as u64, &r.regions)
                .await
                .with_context(|| format!("copying {} ({key})", r.path))
        })
    }))
    .buffered(SYNC_PARALLEL)
    .enumerate();
    while let Some((i, done)) = futures_util::StreamExt::next(&mut copies).await {
        // Still ours? A later migration moved it on: that node finishes it.
        if i % 50 == 0 {
            match job.meta.get_pod(pod_id).await? {
                Some(p) if p.node_id == job.node_id => {}
                _ => return Ok((copied, total)),
            }
        }
        if done? {
            copied += 1;
        }
        let pct = ((i + 1) * 100 / total.max(1)) as i32;
        // Progress is written at most once per percent (and never 100 before the end).
        if pct != last_pct && pct < 100 {
            last_pct = pct;
            job.record(pod_id, MigrationStatus::Syncing, Some(pct))
                .await?;
        }
    }
    Ok((copied, total))
}

/// Region storage figures for `/metrics`.
pub fn figures(regions: &Regions) -> Vec<crate::metrics::Figure> {
    use crate::metrics::Figure;
    use std::sync::atomic::Ordering::Relaxed;
    let s = &regions.stats;
    let mut out: Vec<Figure> = [
        ("memory", &s.memory_hits),
        ("cache", &s.cache_hits),
        ("own", &s.own_reads),
        ("remote", &s.remote_reads),
    ]
    .into_iter()
    .map(|(tier, v)| {
        Figure::counter(
            "xpod_blob_reads_total",
            "Blob reads by tier (memory, disk cache, own region, another region).",
            v.load(Relaxed),
        )
        .with("tier", tier)
    })
    .collect();
    out.push(Figure::counter(
        "xpod_blob_copies_total",
        "Blobs copied into this region.",
        s.copies.load(Relaxed),
    ));
    out.push(Figure::counter(
        "xpod_blob_copy_failures_total",
        "Blob copies into this region that failed.",
        s.copy_failures.load(Relaxed),
    ));
    if let Some(c) = regions.cache() {
        out.push(Figure::gauge(
            "xpod_cache_bytes",
            "Bytes in the disk cache.",
            c.size() as f64,
        ));
        out.push(Figure::gauge(
            "xpod_cache_max_bytes",
            "The disk cache's bound.",
            c.max_bytes() as f64,
        ));
    }
    out
}

/// Whether a move of a pod from `from` to `to` needs a byte copy: the nodes are in different
/// regions, or one is an edge (whose bytes are its own, whatever its region is called).
pub fn needs_sync(from: Option<&meta::NodeRecord>, to: Option<&meta::NodeRecord>) -> bool {
    match (from, to) {
        (Some(a), Some(b)) => {
            a.region != b.region
                || a.node_type == meta::NodeType::Edge
                || b.node_type == meta::NodeType::Edge
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's environment form: `CSS_MINIO_REGION=bj`, `CSS_MINIO_REGION_BUCKETS=bj:…,gz:…`
    /// on one `CSS_MINIO_ENDPOINT` — the own region writes to its bucket, the other is read.
    #[tokio::test]
    async fn seed_environment_names_the_regions() {
        let dir = std::env::temp_dir().join(format!(
            "xpod-regions-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let env: Vec<(String, String)> = [
            ("CSS_MINIO_REGION", "bj"),
            ("CSS_MINIO_REGION_BUCKETS", "bj:xpod-bj,gz:xpod-gz"),
            ("CSS_MINIO_ENDPOINT", "http://127.0.0.1:9"),
            ("CSS_MINIO_ACCESS_KEY", "k"),
            ("CSS_MINIO_SECRET_KEY", "s"),
            ("XPOD_DATA_DIR", dir.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::load(None, &env).unwrap();
        config.validate().unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let meta = meta::open(&format!("sqlite://{}/meta.db", dir.display()), 1)
            .await
            .unwrap();
        let regions = open(&config, meta).unwrap();
        assert_eq!(regions.own().name, "bj");
        assert_eq!(regions.own().store.url(), "s3://xpod-bj");
        let others: Vec<_> = regions
            .others()
            .iter()
            .map(|r| (r.name.as_str(), r.store.url()))
            .collect();
        assert_eq!(others, [("gz", "s3://xpod-gz")]);
        assert!(regions
            .cache()
            .is_some_and(|c| c.max_bytes() == 50_000_000_000));
        std::fs::remove_dir_all(&dir).ok();
    }
}
