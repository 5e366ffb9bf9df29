//! A pod moves from an edge to the cluster (issue 21, first slice: edge → center), as
//! instantly as between centers, with the regions' lazy model.
//!
//! `POST /.cluster/pods/{id}/migrate` on any center, for a pod an edge owns ([`from_edge`]):
//! 1. The center asks the edge to **release** the pod (a runner request over the edge's
//!    tunnel, or through the center that holds it: `POST /node/pods/{id}/release`). The edge,
//!    in one transaction of its own store, makes the target the pod's owner (so every local
//!    write is fenced from then on: nothing it acknowledges afterwards can be lost), then
//!    exports every row of the pod — tombstones, versions and etags included — and answers
//!    with them. Its metadata moves before the `202`: the new owner cannot answer a single GET
//!    (etag, ACL, listing) without it, and the rows are small (about 200 bytes each).
//! 2. The center **adopts** the pod in the shared store: one compare-and-set on the edge's
//!    ownership at the epoch it read, which imports the rows with their blobs marked as held by
//!    `edge:<node>`, makes the target the owner (epoch + 1, `syncing`) and notifies every node.
//!    If that fails (the pod moved meanwhile, the store is down) or the center dies between
//!    the release and the adoption, the pod refuses writes until the call is repeated: the
//!    edge never takes a released pod back by itself (another move may have adopted it, or an
//!    adoption may have committed with its answer lost), and a release is asked only while
//!    the cluster records the edge as the owner, so it may come again.
//! 3. `202` at once. The new owner serves every request; a blob it does not have yet is read
//!    from the edge through the tunnel (`GET /node/blobs?key=…`, [`EdgeSource`]), streamed to
//!    the client and copied into the region's bucket once (`xpod_storage::regions`), and the
//!    region sync (`crate::regions::sync_loop`) copies the rest with its progress. If the edge
//!    is offline, a blob not yet copied answers 503 naming `edge:<node>`; the sync goes on
//!    when it is back. The edge keeps the pod's rows and blobs meanwhile (it serves the blobs
//!    only of pods it released, and only blobs its rows name).
//! 4. **Purge.** A move is not a copy: when the new owner has every byte (its sync is `done`,
//!    [`purge_hook`]; or, for a pod moved on to another edge, that edge reports `done`), the
//!    cluster tells the edges the bytes came from (`edge:<node>` holders, [`edge_sources`]) to
//!    drop their copy (`POST /node/pods/{id}/purge`): the rows go at once, the blobs with the
//!    GC. Best effort: an edge that is away then keeps its copy until a later move of the pod
//!    replaces it.
//!
//! Only centers reach the edge's routes (runner requests come from the mTLS mesh or the edge's
//! own tunnel). Moves onto an edge: `super::pod_adopt`.

use std::ops::Range;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use xpod_storage::blobs::BlobError;
use xpod_storage::meta::{AdoptPod, MigrationStatus, MovedRow, PodRecord};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// An edge's pod moves run one at a time: a release waits for an adoption under way (so it
/// exports what was imported), an adoption for a release (`super::pod_adopt`).
pub static MOVES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The edge's routes (runner requests): release, purge, a blob.
pub const PREFIX: &str = "/node/pods/";
pub const BLOBS: &str = "/node/blobs";

/// The edge's answer to a release: the pod as it is now (released) and every row.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    pub pod: PodRecord,
    pub rows: Vec<MovedRow>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReleaseRequest {
    to: String,
}

/// Serves the edge's side of a move: `POST /node/pods/{id}/release` `{"to"}` and
/// `GET /node/blobs?key=K[&range=A-B]`.
pub async fn serve(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    if app.config.role != xpod_config::Role::Edge {
        return Err(ApiError::not_found(format!(
            "{path}: only an edge hands its pods over"
        )));
    }
    if path == BLOBS {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed("GET"));
        }
        return blob(app, query).await;
    }
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    match (rest.split_once('/'), method) {
        (Some((pod, "release")), &Method::POST) => {
            let req: ReleaseRequest = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("release: {e}")))?;
            release(app, pod, &req.to).await
        }
        (Some((pod, "purge")), &Method::POST) => purge(app, pod).await,
        _ => Err(ApiError::not_found(format!("no pod-move route at {path}"))),
    }
}

/// Hands the pod to `to`: fenced first, then exported. Also when an earlier release was never
/// adopted (the center that asked died before its adoption): a center asks only while the
/// cluster still records this edge as the owner, so the migrate call can simply be repeated.
async fn release(app: &Arc<App>, pod_id: &str, to: &str) -> Result<Response<Body>, ApiError> {
    let _one = MOVES.lock().await;
    match app.meta.get_pod(pod_id).await? {
        None => {
            return Err(ApiError::not_found(format!(
                "pod {pod_id} is not on this edge"
            )))
        }
        // Offered to this edge but never adopted: nothing here to hand over.
        Some(p) if p.node_id == crate::regions::CLUSTER => {
            return Err(ApiError::conflict(format!(
                "pod {pod_id} was offered to this edge but never adopted; its rows are in the cluster"
            )))
        }
        Some(_) => {}
    }
    let released = app.meta.release_pod(pod_id, to).await?;
    app.owners.invalidate(pod_id);
    let rows = app.meta.export_pod(pod_id).await?;
    tracing::info!(
        pod = pod_id,
        to,
        rows = rows.len(),
        "pod released to the cluster"
    );
    Ok(body::json(
        StatusCode::OK,
        &Released {
            pod: released,
            rows,
        },
    ))
}

/// Drops this edge's copy of a pod it handed over (rows now, blobs by the GC), once the
/// cluster has every byte: only of a pod another node owns here (never one it owns or was
/// offered).
async fn purge(app: &Arc<App>, pod_id: &str) -> Result<Response<Body>, ApiError> {
    let _one = MOVES.lock().await;
    let local = app
        .meta
        .get_pod(pod_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pod {pod_id} is not on this edge")))?;
    if local.node_id == app.node_id || local.node_id == crate::regions::CLUSTER {
        return Err(ApiError::conflict(format!(
            "pod {pod_id} is this edge's (or being moved onto it): its copy is not dropped"
        )));
    }
    let dropped = app.meta.drop_pod_rows(pod_id, &local.node_id).await?;
    tracing::info!(
        pod = pod_id,
        dropped,
        "the cluster has every byte of a pod this edge handed over: its copy here is dropped"
    );
    Ok(body::json(
        StatusCode::OK,
        &serde_json::json!({ "dropped": dropped }),
    ))
}

/// The edges holding bytes of `pod_id` for the cluster (`edge:<node>` holders of its rows),
/// but `except`.
pub async fn edge_sources(app: &App, pod_id: &str, except: &str) -> Vec<String> {
    let mut edges: Vec<String> = match app.meta.list_pod_blobs(pod_id).await {
        Ok(rows) => rows
            .iter()
            .flat_map(|r| r.regions.iter())
            .filter_map(|h| h.strip_prefix("edge:"))
            .filter(|e| *e != except)
            .map(str::to_string)
            .collect(),
        Err(e) => {
            tracing::warn!(pod = pod_id, error = %e, "cannot list the edges holding a pod's bytes");
            Vec::new()
        }
    };
    edges.sort();
    edges.dedup();
    edges
}

/// Tells `edges` to drop their copies of `pod_id` (best effort: an edge that is away keeps its
/// copy, which a later move of the pod replaces).
pub fn purge_on(app: &Arc<App>, pod_id: &str, edges: Vec<String>) {
    if edges.is_empty() {
        return;
    }
    let (app, pod_id) = (app.clone(), pod_id.to_string());
    tokio::spawn(async move {
        for edge in edges {
            let path = format!("{PREFIX}{pod_id}/purge");
            match crate::sandbox::client::call(&app, &edge, 0, Method::POST, &path, Bytes::new())
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(pod = %pod_id, %edge, "the edge dropped its copy of the pod")
                }
                Ok(r) => {
                    tracing::info!(pod = %pod_id, %edge, status = %r.status(), "the edge kept its copy of the pod")
                }
                Err(e) => {
                    tracing::info!(pod = %pod_id, %edge, error = %e.message, "cannot tell the edge to drop its copy of the pod; it keeps it")
                }
            }
        }
    });
}

/// On a center: once its sync has every byte of a pod, the edges it came from drop theirs.
pub fn purge_hook(app: &Arc<App>) -> crate::regions::Mirror {
    let app = Arc::downgrade(app);
    Arc::new(
        move |pod_id: String, status: MigrationStatus, _progress: Option<i32>| {
            let app = app.clone();
            Box::pin(async move {
                let Some(app) = app.upgrade() else { return };
                if status == MigrationStatus::Done {
                    let edges = edge_sources(&app, &pod_id, "").await;
                    purge_on(&app, &pod_id, edges);
                }
            })
        },
    )
}

fn parse_range(v: &str) -> Option<Range<u64>> {
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a < b).then_some(a..b)
}

/// `key=K[&range=A-B]` of a blob request: the key, the pod its key names, the range.
pub(super) fn blob_query(query: &str) -> Result<(String, String, Option<Range<u64>>), ApiError> {
    let mut key = None;
    let mut range = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("key", v)) => {
                key = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }
            Some(("range", v)) => {
                range = Some(parse_range(v).ok_or_else(|| {
                    ApiError::bad_request(format!("range {v:?}: expected START-END"))
                })?)
            }
            _ => {}
        }
    }
    let key = key.ok_or_else(|| ApiError::bad_request("key: required"))?;
    let pod_id = key
        .strip_prefix("blobs/")
        .and_then(|k| k.split_once('/'))
        .map(|(pod, _)| pod.to_string())
        .ok_or_else(|| ApiError::bad_request(format!("{key:?} is not a blob key")))?;
    Ok((key, pod_id, range))
}

/// One blob of a pod this edge released, and only one its rows name.
async fn blob(app: &Arc<App>, query: &str) -> Result<Response<Body>, ApiError> {
    let (key, pod_id, range) = blob_query(query)?;
    let pod_id = pod_id.as_str();
    let released = app
        .meta
        .get_pod(pod_id)
        .await?
        .is_some_and(|p| p.node_id != app.node_id);
    let named = app
        .meta
        .referenced_blobs(std::slice::from_ref(&key))
        .await?
        .contains(&key);
    if !released || !named {
        return Err(ApiError::not_found(format!(
            "blob {key} is not one of a pod this edge handed over"
        )));
    }
    let stream = match app.regions.own().store.get(&key, range).await {
        Ok(s) => s,
        Err(BlobError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("blob {key} is not here")))
        }
        Err(e) => return Err(ApiError::unavailable(format!("blob {key}: {e}"))),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body::stream(
            stream.map(|r| r.map_err(std::io::Error::other)),
        ))
        .unwrap_or_default())
}

/// The blobs of pods an edge handed over, read through its tunnel (a holder `edge:<node>` of
/// `xpod_storage::regions`).
#[derive(Debug)]
pub struct EdgeSource {
    app: Weak<App>,
    edge: String,
}

impl EdgeSource {
    pub fn new(app: Weak<App>, edge: &str) -> Self {
        EdgeSource {
            app,
            edge: edge.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl xpod_storage::blobs::RemoteSource for EdgeSource {
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
        let mut pq = format!("{BLOBS}?key={key_q}");
        if let Some(r) = &range {
            pq.push_str(&format!("&range={}-{}", r.start, r.end));
        }
        let resp =
            crate::sandbox::client::call(&app, &self.edge, 0, Method::GET, &pq, Bytes::new())
                .await
                .map_err(|e| BlobError::Body(format!("edge {}: {}", self.edge, e.message)))?;
        match resp.status() {
            StatusCode::OK => Ok(resp
                .into_body()
                .into_data_stream()
                .map(|r| r.map_err(|e| BlobError::Body(e.to_string())))
                .boxed()),
            StatusCode::NOT_FOUND => Err(BlobError::NotFound(key.to_string())),
            other => Err(BlobError::Body(format!(
                "edge {} answered {other} for blob {key}",
                self.edge
            ))),
        }
    }
}

/// The migrate call for a pod edge `edge` owns (in the shared store at `pod.epoch`): see the
/// module docs. The pod record after the move.
pub async fn from_edge(
    app: &Arc<App>,
    pod: &PodRecord,
    edge: &str,
    target: &str,
) -> Result<PodRecord, ApiError> {
    let payload = serde_json::to_vec(&serde_json::json!({ "to": target }))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let path = format!("{PREFIX}{}/release", pod.pod_id);
    let resp = crate::sandbox::client::call(app, edge, 0, Method::POST, &path, payload.into())
        .await
        .map_err(|e| edge_error(edge, e))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| edge_error(edge, ApiError::unavailable(e.to_string())))?
        .to_bytes();
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let why = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(ApiError::conflict(format!(
            "edge {edge} did not hand pod {} over: {why}",
            pod.pod_id
        )));
    }
    let released: Released = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("edge {edge}'s answer to a release: {e}")))?;
    // Test hook: this center dies between the release and the adoption.
    if std::env::var_os("XPOD_TEST_ABORT_AFTER_RELEASE").is_some() {
        tracing::error!("XPOD_TEST_ABORT_AFTER_RELEASE: aborting between release and adoption");
        std::process::abort();
    }
    let adopt = AdoptPod {
        pod_id: pod.pod_id.clone(),
        from: edge.to_string(),
        epoch: pod.epoch,
        to: target.to_string(),
        account_id: released.pod.account_id.clone(),
        access_mode: released.pod.access_mode,
        rows: released.rows,
        source: format!("edge:{edge}"),
    };
    // The edge refuses writes from now on; if the adoption fails it stays so (it never takes
    // the pod back by itself: another move may have adopted it, or this adoption may have
    // committed with its answer lost), and repeating the call finishes the move.
    match app.meta.adopt_pod(&adopt).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(ApiError::conflict(format!(
            "pod {} changed owner or epoch while edge {edge} handed it over; read it again (if the cluster still names {edge} its owner, repeat the call)",
            pod.pod_id
        ))),
        Err(e) => {
            tracing::error!(pod = %pod.pod_id, %edge, error = %e, "edge released a pod the cluster could not adopt; it refuses writes until the call is repeated");
            Err(ApiError::unavailable(format!(
                "edge {edge} handed pod {} over but the cluster could not take it ({e}); the pod refuses writes until this call is repeated",
                pod.pod_id
            ))
            .with_header(http::header::RETRY_AFTER, "2"))
        }
    }
}

/// An edge that cannot be asked, or whose answer was lost: the metadata lives on it, so the
/// cluster did not move the pod; if the edge did hand it over, repeating the call finishes it.
fn edge_error(edge: &str, e: ApiError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "edge_offline",
        format!(
            "edge {edge} holds this pod's metadata and could not be reached or did not answer ({}); the cluster did not move the pod (if the edge handed it over, it refuses writes until this call is repeated)",
            e.message
        ),
    )
    .with_header(http::header::RETRY_AFTER, "5")
}
