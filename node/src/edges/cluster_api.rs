//! The cluster's answers to an edge's own requests (`super::uplink`), on the center holding its
//! tunnel: [`serve_edge`] accepts the `Target::Cluster` streams of one edge's tunnel (after its
//! control stream) and answers them **for that edge's identity only** (the certificate it
//! dialed with): nothing in a request names who asks, and only pods the cluster records that
//! edge as owning are answered (its pods moved onto it, `super::pod_adopt`):
//! - `GET /cluster/pods/{id}`: the pod and every row;
//! - `GET /cluster/blobs?key=K[&range=A-B]`: one blob of such a pod, read through this center's
//!   region chain (its buckets, or the tunnel of an edge the pod came from);
//! - `POST /cluster/pods/{id}/state`: the edge's sync progress; at `done` the cluster's copy of
//!   the pod is dropped, and so is that of an edge it came from (a move is not a copy).
//!
//! At most [`MAX_STREAMS`] at once per tunnel, a request body of at most [`MAX_BODY`] bytes, a
//! header within [`HEADER_TIMEOUT`].

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use xpod_storage::meta::{MigrationStatus, PodRecord};
use xpod_tunnel::proto::Target;

use super::pod_move::{blob_query, Released};
use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Streams an edge may have open to one center at once.
pub const MAX_STREAMS: usize = 16;
/// Largest request body an edge may send.
pub const MAX_BODY: usize = 64 * 1024;
/// How long an edge may take to send a stream's header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The QUIC error code for a stream a center refuses.
const REFUSED: u32 = 1;

/// The sync's state, reported by the edge (`POST /cluster/pods/{id}/state`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub status: MigrationStatus,
    pub progress: Option<i32>,
}

/// Center side: serves the streams edge `edge` opens on its tunnel `conn` until it closes.
pub async fn serve_edge(app: Arc<App>, conn: quinn::Connection, edge: String) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    loop {
        // A stream is taken only with a free slot: an edge that opens more waits (QUIC's
        // stream limit then holds it back), it never gets more served at once.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let (app, edge) = (app.clone(), edge.clone());
        tokio::spawn(async move {
            stream(app, send, recv, edge).await;
            drop(slot);
        });
    }
}

async fn stream(
    app: Arc<App>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    edge: String,
) {
    let rest = match tokio::time::timeout(HEADER_TIMEOUT, xpod_tunnel::stream::accept(&mut recv))
        .await
    {
        Ok(Ok(Some((h, rest)))) if h.target == Target::Cluster => rest,
        Ok(Ok(None)) => return,
        Ok(Ok(Some((h, _)))) => {
            tracing::warn!(%edge, target = ?h.target, "an edge opened a stream for a target it may not; reset");
            let _ = send.reset(REFUSED.into());
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%edge, error = %e, "bad stream from an edge; reset");
            let _ = send.reset(REFUSED.into());
            return;
        }
        Err(_) => {
            tracing::warn!(%edge, "an edge sent no stream header within {HEADER_TIMEOUT:?}; reset");
            let _ = send.reset(REFUSED.into());
            return;
        }
    };
    let io = TokioIo::new(tokio::io::join(
        std::io::Cursor::new(rest.freeze()).chain(recv),
        send,
    ));
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (app, edge) = (app.clone(), edge.clone());
        async move {
            let resp = match request(&app, &edge, req).await {
                Ok(r) => r,
                Err(e) => crate::reply::error::error_response(&e, "-"),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(error = %e, "a stream from an edge ended with an error");
    }
}

async fn request(
    app: &Arc<App>,
    edge: &str,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let body = limited
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("a request body from edge {edge} is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request(format!("a request body from edge {edge}: {e}"))
            }
        })?
        .to_bytes();
    serve_cluster(app, edge, &method, &path, &query, &body).await
}

/// The routes (see the module docs), for the pods the cluster records `edge` as the owner of: `GET /cluster/pods/{id}` (every row), `GET /cluster/blobs?key=K[&range=A-B]`
/// (one blob of such a pod), `POST /cluster/pods/{id}/state` (the sync's progress).
pub async fn serve_cluster(
    app: &Arc<App>,
    edge: &str,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    if path == "/cluster/blobs" {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed("GET"));
        }
        let (key, pod_id, range) = blob_query(query)?;
        owned_by(app, &pod_id, edge).await?;
        return blob(app, &pod_id, &key, range).await;
    }
    let rest = path.strip_prefix("/cluster/pods/").unwrap_or_default();
    let (pod_id, action) = rest.split_once('/').unwrap_or((rest, ""));
    xpod_routing::target::validate_pod_id(pod_id)
        .map_err(|e| ApiError::not_found(format!("{path}: {e}")))?;
    match (action, method) {
        ("", &Method::GET) => {
            let pod = owned_by(app, pod_id, edge).await?;
            let rows = app.meta.export_pod(pod_id).await?;
            Ok(body::json(StatusCode::OK, &Released { pod, rows }))
        }
        ("state", &Method::POST) => {
            let state: State = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))?;
            if state.progress.is_some_and(|p| !(0..=100).contains(&p)) {
                return Err(ApiError::bad_request("progress: expected 0..=100"));
            }
            owned_by(app, pod_id, edge).await?;
            app.meta
                .set_migration_state(pod_id, Some(state.status), state.progress)
                .await?;
            if state.status == MigrationStatus::Done {
                // The edge has every byte: the cluster's copy goes (a move is not a copy), and
                // so does that of an edge the pod came from.
                let sources = super::pod_move::edge_sources(app, pod_id, edge).await;
                let dropped = app.meta.drop_pod_rows(pod_id, edge).await?;
                tracing::info!(pod = pod_id, %edge, dropped, "a pod moved onto an edge is all there: the cluster's copy is dropped");
                super::pod_move::purge_on(app, pod_id, sources);
            }
            Ok(body::json(
                StatusCode::OK,
                &serde_json::json!({"recorded": true}),
            ))
        }
        _ => Err(ApiError::not_found(format!(
            "no cluster route at {method} {path}"
        ))),
    }
}

/// The pod, if the cluster records `edge` as its owner; else 409 (an edge asks only about pods
/// it adopts).
async fn owned_by(app: &App, pod_id: &str, edge: &str) -> Result<PodRecord, ApiError> {
    match app.meta.get_pod(pod_id).await? {
        Some(p) if p.node_id == edge => Ok(p),
        _ => Err(ApiError::conflict(format!(
            "the cluster does not record edge {edge} as the owner of pod {pod_id}"
        ))),
    }
}

async fn blob(
    app: &Arc<App>,
    pod_id: &str,
    key: &str,
    range: Option<Range<u64>>,
) -> Result<Response<Body>, ApiError> {
    let row = app.meta.blob_record(pod_id, key).await?.ok_or_else(|| {
        ApiError::not_found(format!("no document of pod {pod_id} has blob {key}"))
    })?;
    let read = app
        .regions
        .read(key, row.size.max(0) as u64, &row.regions, range)
        .await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body::stream(
            read.stream.map(|r| r.map_err(std::io::Error::other)),
        ))
        .unwrap_or_default())
}
