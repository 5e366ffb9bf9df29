//! A pod moves onto an edge (issue 21: center → edge, and edge → edge through the cluster), as
//! instantly as between centers, with the regions' lazy model. The other way is
//! `super::pod_move`.
//!
//! `POST /.cluster/pods/{id}/migrate` with an edge as the target, on any center:
//! 1. **Consent** ([`prepare`]). The center offers the pod to the edge (a runner request:
//!    `POST /node/pods/{id}/accept` with its account). The edge takes it only if its own
//!    `[tunnel] accept_pods` names the account (or `*`), or the cluster's grant for it does
//!    (`acceptPods`, `xpod nodes set --accept-pods`, or a join token's), which the center says;
//!    otherwise `403 pods_not_accepted`, naming both settings. So a pod lands only on a device
//!    that takes that owner's pods: never another owner's by accident. The edge records the
//!    pod as offered, owned by [`CLUSTER`] in its store (requests for it are refused with a
//!    retryable 503, never a 404; old rows of a pod it released once can then never be
//!    released again). The caller must be an admin or the pod's owner (`crate::http::cluster`).
//! 2. **Fence.** The cluster makes the edge the owner (epoch + 1, `syncing`): every write at
//!    the old owner fails at the fence from then on. From an edge, that is `super::pod_move`'s
//!    release (the old edge fences its own store) and adoption into the shared store.
//! 3. **Hand-over** ([`hand_over`]): the center tells the edge (`POST /node/pods/{id}/adopt`);
//!    the edge *pulls* the pod's rows from the cluster (`GET /cluster/pods/{id}` on a tunnel it
//!    dialed, `super::uplink`: answered only while the cluster records this edge as the owner)
//!    and imports them into its own store in one compare-and-set on the placeholder, its blobs
//!    held by [`CLUSTER`]. A repeated hand-over of a pod the edge already owns is a no-op, so
//!    if the edge was unreachable at this step (the pod then answers 503), repeating the call
//!    finishes the move, and so does the edge's next registration ([`resume`]). The metadata
//!    moves before the `202`, as from an edge.
//! 4. **Bytes after.** The edge reads a blob it lacks through a center (`GET /cluster/blobs`,
//!    [`ClusterSource`]): the center reads it through its own region chain — its buckets, or
//!    the old edge's tunnel — and streams it; the edge copies it into its own store once. The
//!    edge never holds bucket credentials. Its region sync (`crate::regions::sync_loop`) copies
//!    the rest and reports each percent to the cluster ([`mirror`]: `POST
//!    /cluster/pods/{id}/state`), so `migrationProgress` and `xpod pods migrate --wait` follow.
//!    It survives a restart of the edge: the rows are in its store, the sync starts again.
//! 5. **Purge.** When the edge reports `done`, the cluster drops its copy of the pod (rows at
//!    once, blobs with the GC: a move to a device is not a copy in the cloud), and an edge the
//!    pod came from drops its own (`super::pod_move::purge_on`).
//!
//! An edge's moves (release, accept, adopt, purge) run one at a time (`super::pod_move::MOVES`).

use std::ops::Range;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use xpod_storage::blobs::BlobError;
use xpod_storage::meta::{AccessMode, AdoptPod, MigrationStatus, NewPod, PodRecord};

use super::pod_move::{Released, PREFIX};
use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// The holder of an adopted pod's blobs on an edge until they are copied (the cluster, through
/// a center), and the owner an edge records for a pod offered to it.
pub use crate::regions::CLUSTER;

use super::pod_move::MOVES;

/// The largest answer with a pod's rows an edge reads (about a million rows).
const MAX_EXPORT: usize = 256 << 20;

/// What a center offers an edge (`POST /node/pods/{id}/accept`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Offer {
    account_id: Option<String>,
    /// The cluster's grant for the edge accepts the account.
    granted: bool,
    access_mode: AccessMode,
    base_url: String,
}

/// A runner request's answer as an error the migrate call passes on (the edge's own message).
async fn edge_answer(edge: &str, resp: Response<Body>) -> Result<Bytes, ApiError> {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::unavailable(format!("edge {edge}'s answer was cut: {e}")))?
        .to_bytes();
    if status.is_success() {
        return Ok(bytes);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = match v["code"].as_str() {
        Some("pods_not_accepted") => "pods_not_accepted",
        Some("cluster_unreachable") => "cluster_unreachable",
        _ => "edge_refused",
    };
    let message = v["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect());
    Err(ApiError::new(status, code, message))
}

/// Step 1 (center): offers `pod` to edge `edge`; `Ok` when the edge takes it (see the module
/// docs).
pub async fn prepare(app: &Arc<App>, pod: &PodRecord, edge: &str) -> Result<(), ApiError> {
    // From the store, not the copy in memory: a grant just given counts at once.
    let (policy, _) = crate::node_policy::load(app.meta.as_ref(), edge)
        .await
        .map_err(|e| ApiError::unavailable(format!("reading edge {edge}'s grant: {e:#}")))?;
    let granted = policy.accepts_pods_of(pod.account_id.as_deref());
    let offer = Offer {
        account_id: pod.account_id.clone(),
        granted,
        access_mode: pod.access_mode,
        base_url: pod.base_url.clone(),
    };
    let payload = serde_json::to_vec(&offer).map_err(|e| ApiError::internal(e.to_string()))?;
    let path = format!("{PREFIX}{}/accept", pod.pod_id);
    let resp =
        crate::sandbox::client::call(app, edge, 0, Method::POST, &path, payload.into()).await?;
    edge_answer(edge, resp).await.map(drop)
}

/// Step 3 (center): tells edge `edge`, which the cluster records as `pod_id`'s owner, to take
/// the pod's rows. Repeating it is harmless.
pub async fn hand_over(app: &Arc<App>, pod_id: &str, edge: &str) -> Result<(), ApiError> {
    let path = format!("{PREFIX}{pod_id}/adopt");
    let resp =
        crate::sandbox::client::call(app, edge, 0, Method::POST, &path, Bytes::new()).await?;
    edge_answer(edge, resp).await.map(drop)
}

/// Center, when edge `edge` registers: hands over again every pod the cluster records as moved
/// onto it (`syncing`) that it does not report hosting — a move cut after the fence (the
/// center died, or the edge was unreachable) finishes when the edge comes back.
pub fn resume(app: &Arc<App>, edge: &str, hosted: &[String]) {
    let (app, edge, hosted) = (app.clone(), edge.to_string(), hosted.to_vec());
    tokio::spawn(async move {
        let pods = match app.meta.list_pods().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%edge, error = %e, "cannot look for moves onto this edge to finish");
                return;
            }
        };
        for p in pods.into_iter().filter(|p| {
            p.node_id == edge
                && p.migration_status == Some(MigrationStatus::Syncing)
                && !hosted.contains(&p.pod_id)
        }) {
            match hand_over(&app, &p.pod_id, &edge).await {
                Ok(()) => {
                    tracing::info!(pod = %p.pod_id, %edge, "a move onto this edge that was cut is finished")
                }
                Err(e) => {
                    tracing::warn!(pod = %p.pod_id, %edge, error = %e.message, "a move onto this edge that was cut could not be finished; repeat the migrate call")
                }
            }
        }
    });
}

/// An edge's pod-move routes (runner requests from a center): an offer and a hand-over here,
/// the rest (release, purge, a blob) in `super::pod_move`.
pub async fn serve(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let action = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .filter(|(_, action)| matches!(*action, "accept" | "adopt"));
    match action {
        Some((pod_id, action)) if app.config.role == xpod_config::Role::Edge => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed("POST"));
            }
            serve_node(app, pod_id, action, body).await
        }
        _ => super::pod_move::serve(app, method, path, query, body).await,
    }
}

/// The edge's side of an offer and a hand-over.
async fn serve_node(
    app: &Arc<App>,
    pod_id: &str,
    action: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    xpod_routing::target::validate_pod_id(pod_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match action {
        "accept" => {
            let offer: Offer = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("accept: {e}")))?;
            accept(app, pod_id, offer).await
        }
        "adopt" => adopt(app, pod_id).await,
        _ => Err(ApiError::not_found(format!(
            "no pod-move action {action:?}"
        ))),
    }
}

async fn accept(app: &Arc<App>, pod_id: &str, offer: Offer) -> Result<Response<Body>, ApiError> {
    if offer.base_url.len() > 2048 {
        return Err(ApiError::bad_request("baseUrl: longer than 2048 bytes"));
    }
    let own =
        crate::node_policy::accepts(&app.config.tunnel.accept_pods, offer.account_id.as_deref());
    if !(own || offer.granted) {
        let whose = offer
            .account_id
            .as_deref()
            .map_or("pods without an account".to_string(), |a| {
                format!("pods of account {a}")
            });
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "pods_not_accepted",
            format!(
                "edge {} does not accept {whose}: neither its own [tunnel] accept_pods (XPOD_TUNNEL_ACCEPT_PODS) nor the cluster's grant for it (xpod nodes set {} --accept-pods ACCOUNT) names the account",
                app.node_id, app.node_id
            ),
        ));
    }
    let _one = MOVES.lock().await;
    match app.meta.get_pod(pod_id).await? {
        Some(p) if p.node_id == app.node_id => {
            return Err(ApiError::conflict(format!(
                "edge {} already hosts a pod {pod_id} of its own",
                app.node_id
            )))
        }
        // Released by this edge before: its old rows are not the pod any more. Marked as
        // offered (owner `cluster`), so nothing releases them back to the cluster.
        Some(_) => {
            app.meta.release_pod(pod_id, CLUSTER).await?;
        }
        None => {
            let placeholder = NewPod {
                pod_id: pod_id.to_string(),
                base_url: offer.base_url,
                account_id: offer.account_id,
                node_id: CLUSTER.to_string(),
                access_mode: offer.access_mode,
            };
            app.meta.create_pod(&placeholder).await?;
        }
    }
    app.owners.invalidate(pod_id);
    Ok(body::json(
        StatusCode::OK,
        &serde_json::json!({"accepted": true}),
    ))
}

async fn adopt(app: &Arc<App>, pod_id: &str) -> Result<Response<Body>, ApiError> {
    let _one = MOVES.lock().await;
    let local = app.meta.get_pod(pod_id).await?;
    if let Some(p) = local.as_ref().filter(|p| p.node_id == app.node_id) {
        return Ok(body::json(StatusCode::OK, p));
    }
    let resp = super::uplink::call(
        app,
        Method::GET,
        &format!("/cluster/pods/{pod_id}"),
        Bytes::new(),
    )
    .await?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_EXPORT)
        .collect()
        .await
        .map_err(|e| ApiError::unavailable(format!("the cluster's rows of pod {pod_id}: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(ApiError::conflict(format!(
            "the cluster did not give pod {pod_id}'s rows to this edge ({status}): {}",
            v["message"].as_str().unwrap_or("no reason given")
        )));
    }
    let export: Released = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("the cluster's rows of pod {pod_id}: {e}")))?;
    let local = match local {
        Some(p) => p,
        None => {
            // Not offered first (a hand-over repeated after this edge lost its store, say).
            let placeholder = NewPod {
                pod_id: pod_id.to_string(),
                base_url: export.pod.base_url.clone(),
                account_id: export.pod.account_id.clone(),
                node_id: CLUSTER.to_string(),
                access_mode: export.pod.access_mode,
            };
            app.meta.create_pod(&placeholder).await?
        }
    };
    let rows = export.rows.len();
    let adopt = AdoptPod {
        pod_id: pod_id.to_string(),
        from: local.node_id.clone(),
        epoch: local.epoch,
        to: app.node_id.clone(),
        account_id: export.pod.account_id.clone(),
        access_mode: export.pod.access_mode,
        rows: export.rows,
        source: CLUSTER.to_string(),
    };
    let record = app.meta.adopt_pod(&adopt).await?.ok_or_else(|| {
        ApiError::conflict(format!(
            "pod {pod_id} changed in this edge's store while it was adopted; repeat the call"
        ))
    })?;
    app.owners.invalidate(pod_id);
    tracing::info!(
        pod = pod_id,
        rows,
        "pod adopted from the cluster; its bytes follow"
    );
    Ok(body::json(StatusCode::OK, &record))
}

/// Resolves the holders of this node's regions that are not regions: `edge:<node>` (a pod
/// that moved from an edge) and, on an edge, [`CLUSTER`] (a pod it adopted).
pub fn resolver(app: &Arc<App>) -> xpod_storage::regions::RemoteResolver {
    let edge_node = app.config.role == xpod_config::Role::Edge;
    let app = Arc::downgrade(app);
    Arc::new(move |name: &str| {
        if name == CLUSTER && edge_node {
            let app = app.upgrade()?;
            return Some(
                Arc::new(ClusterSource::new(&app)) as Arc<dyn xpod_storage::blobs::RemoteSource>
            );
        }
        let edge = name.strip_prefix("edge:")?;
        Some(
            Arc::new(super::pod_move::EdgeSource::new(app.clone(), edge))
                as Arc<dyn xpod_storage::blobs::RemoteSource>,
        )
    })
}

/// On an edge: the blobs of adopted pods, read from the cluster through a center (the holder
/// [`CLUSTER`] of `xpod_storage::regions`).
#[derive(Debug)]
pub struct ClusterSource {
    app: Weak<App>,
}

impl ClusterSource {
    pub fn new(app: &Arc<App>) -> Self {
        ClusterSource {
            app: Arc::downgrade(app),
        }
    }
}

#[async_trait::async_trait]
impl xpod_storage::blobs::RemoteSource for ClusterSource {
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let app = self
            .app
            .upgrade()
            .ok_or_else(|| BlobError::Body("the node is shutting down".into()))?;
        let key_q = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
        let mut pq = format!("/cluster/blobs?key={key_q}");
        if let Some(r) = &range {
            pq.push_str(&format!("&range={}-{}", r.start, r.end));
        }
        let resp = super::uplink::call(&app, Method::GET, &pq, Bytes::new())
            .await
            .map_err(|e| BlobError::Body(e.message))?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .into_body()
                .into_data_stream()
                .map(|r| r.map_err(|e| BlobError::Body(e.to_string())))
                .boxed()),
            StatusCode::NOT_FOUND => Err(BlobError::NotFound(key.to_string())),
            other => {
                let bytes = http_body_util::Limited::new(resp.into_body(), 64 << 10)
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                Err(BlobError::Body(format!(
                    "the cluster answered {other} for blob {key}: {}",
                    v["message"].as_str().unwrap_or("no reason given")
                )))
            }
        }
    }
}

/// On an edge: the sync's state of an adopted pod, told to the cluster (best effort: a lost
/// report is followed by the next one, and the last is `done`).
pub fn mirror(app: &Arc<App>) -> crate::regions::Mirror {
    let app = Arc::downgrade(app);
    Arc::new(
        move |pod_id: String, status: MigrationStatus, progress: Option<i32>| {
            let app = app.clone();
            Box::pin(async move {
                let Some(app) = app.upgrade() else { return };
                let Ok(payload) =
                    serde_json::to_vec(&super::cluster_api::State { status, progress })
                else {
                    return;
                };
                let path = format!("/cluster/pods/{pod_id}/state");
                let sent = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    super::uplink::call(&app, Method::POST, &path, payload.into()),
                )
                .await;
                match sent {
                    Ok(Ok(r)) if r.status().is_success() => {}
                    Ok(Ok(r)) => {
                        tracing::debug!(pod = %pod_id, status = %r.status(), "the cluster did not record the sync's state")
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(pod = %pod_id, error = %e.message, "cannot tell the cluster the sync's state")
                    }
                    Err(_) => {
                        tracing::debug!(pod = %pod_id, "telling the cluster the sync's state timed out")
                    }
                }
            })
        },
    )
}
