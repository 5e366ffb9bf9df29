//! `POST /.cluster/pods/{podId}/migrate`: a pod moves to another node with one call — between
//! centers (`transfer_pod`), from an edge (`crate::edges::pod_move`), onto an edge
//! (`crate::edges::pod_adopt`), or from one edge to another (both). Who may: an admin; a move
//! onto or off an edge also the pod's owner. Every move is audited (`pod.migrate`, with
//! `fromEdge` and `toEdge`), a refused consent too (`refused.pod_migrate`), and counted
//! (`xpod_pod_migrations_total{from,to,result}`).

use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::{self, PodRecord};

use super::{read_json, Ctx};
use crate::api_types::cluster::MigratePod;
use crate::api_types::ErrorBody;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Kinds of node, by index in [`MOVES`].
const KINDS: [&str; 2] = ["center", "edge"];
/// How a call ended, by index in [`MOVES`].
const RESULTS: [&str; 3] = ["moved", "refused", "failed"];
/// Calls this node answered: [from][to][result].
static MOVES: [[[AtomicU64; 3]; 2]; 2] = [
    [
        [const { AtomicU64::new(0) }; 3],
        [const { AtomicU64::new(0) }; 3],
    ],
    [
        [const { AtomicU64::new(0) }; 3],
        [const { AtomicU64::new(0) }; 3],
    ],
];

/// Figures for `/metrics`: the migrate calls this node answered, by kind of node and result.
pub fn figures() -> Vec<crate::metrics::Figure> {
    let mut out = Vec::new();
    for (f, from) in KINDS.iter().enumerate() {
        for (t, to) in KINDS.iter().enumerate() {
            for (r, result) in RESULTS.iter().enumerate() {
                out.push(
                    crate::metrics::Figure::counter(
                        "xpod_pod_migrations_total",
                        "Pod moves this node was asked for, by the kind of node they were from and to, and how they ended (moved; refused: 4xx; failed: 5xx).",
                        MOVES[f][t][r].load(Ordering::Relaxed),
                    )
                    .with("from", *from)
                    .with("to", *to)
                    .with("result", *result),
                );
            }
        }
    }
    out
}

/// Moves a pod to another node (ARCHITECTURE §6): one transaction makes the target the owner
/// with epoch + 1 and notifies every node; routing follows at once (owners check their own
/// ownership, so a node with a stale table forwards to the old owner, which passes it on).
/// 404: unknown pod or node; 409: target not online, or already the owner. Within a region
/// (one store) the status is `done` at once; to another region, from an edge or onto one it
/// stays `syncing` until the new owner's sync job has copied the pod's blobs
/// (`crate::regions::sync_loop`) — reads work meanwhile through the fallback chain.
///
/// Who: an admin; a move onto or off an edge also the pod's owner (a key of the pod's account
/// that may write the pod). From an edge: `crate::edges::pod_move`; onto one:
/// `crate::edges::pod_adopt` (the edge must accept the account's pods).
#[utoipa::path(post, path = "/.cluster/pods/{podId}/migrate", operation_id = "migratePod", tag = "cluster",
    params(("podId" = String, Path)),
    request_body = MigratePod,
    responses(
        (status = 202, description = "Moved: the new owner and epoch; `migrationStatus` says whether bytes still sync", body = PodRecord),
        (status = 401, description = "No API key", body = ErrorBody),
        (status = 403, description = "Neither an admin nor (for a move onto or off an edge) the pod's owner; or `pods_not_accepted`: the target edge does not accept the pod's account (its `[tunnel] accept_pods` and the cluster's grant for it)", body = ErrorBody),
        (status = 404, description = "No such pod or node", body = ErrorBody),
        (status = 409, description = "The target is offline or already the owner", body = ErrorBody),
        (status = 503, description = "`edge_offline`: an edge the move needs cannot be reached (a repeated call finishes a move that was cut)", body = ErrorBody),
    ))]
pub(super) async fn migrate_pod(
    ctx: &Ctx,
    pod_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let mut kinds = (0, 0);
    let answer = migrate(ctx, pod_id, req, &mut kinds).await;
    let result = match &answer {
        Ok(_) => 0,
        Err(e) if e.status.is_client_error() => 1,
        Err(_) => 2,
    };
    MOVES[kinds.0][kinds.1][result].fetch_add(1, Ordering::Relaxed);
    answer
}

/// The call; `kinds` learns whether the pod is on an edge and the target one (1) or not (0).
async fn migrate(
    ctx: &Ctx,
    pod_id: &str,
    req: Request<Incoming>,
    kinds: &mut (usize, usize),
) -> Result<Response<Body>, ApiError> {
    if matches!(ctx.principal, crate::auth::Principal::Anonymous) {
        return Err(ApiError::unauthorized("an API key is required"));
    }
    let input: MigratePod = read_json(req).await?;
    xpod_config::validate_node_id(&input.target_node)
        .map_err(|e| ApiError::bad_request(format!("targetNode: {e}")))?;
    let before = ctx.app.meta.get_pod(pod_id).await?;
    let target = ctx.app.meta.get_node(&input.target_node).await?;
    let source = match &before {
        Some(p) => ctx.app.meta.get_node(&p.node_id).await?,
        None => None,
    };
    let is_edge = |n: &Option<meta::NodeRecord>| {
        n.as_ref()
            .is_some_and(|n| n.node_type == meta::NodeType::Edge)
    };
    let (from_edge, to_edge) = (is_edge(&source), is_edge(&target));
    *kinds = (usize::from(from_edge), usize::from(to_edge));
    may_migrate(ctx, before.as_ref(), from_edge || to_edge)?;
    let Some(pod) = &before else {
        return Err(ApiError::not_found(format!("pod {pod_id} not found")));
    };
    let Some(t) = &target else {
        return Err(ApiError::not_found(format!(
            "node {} not found",
            input.target_node
        )));
    };
    if to_edge {
        if t.status != meta::NodeStatus::Online {
            return Err(ApiError::conflict(format!(
                "the target {} is not online",
                t.node_id
            )));
        }
        if pod.node_id == t.node_id {
            // Already the edge's in the cluster: a move cut before the edge took the rows
            // (or a repeated call) is finished by handing them over again.
            crate::edges::pod_adopt::hand_over(&ctx.app, pod_id, &t.node_id)
                .await
                .map_err(|e| cut(&t.node_id, e))?;
            let pod = ctx.app.meta.get_pod(pod_id).await?.unwrap_or(pod.clone());
            return Ok(body::json(StatusCode::ACCEPTED, &pod));
        }
        if let Err(e) = crate::edges::pod_adopt::prepare(&ctx.app, pod, &t.node_id).await {
            if e.status == StatusCode::FORBIDDEN {
                ctx.app.refusal(
                    Some(ctx.peer.ip()),
                    ctx.principal.actor(),
                    "refused.pod_migrate",
                    pod_id.to_string(),
                    json!({"to": t.node_id, "reason": e.message}),
                    ctx.trace_id.clone(),
                );
            }
            return Err(e);
        }
    }
    let moved = match (&source, from_edge) {
        (Some(edge), true) => {
            if t.status != meta::NodeStatus::Online {
                return Err(ApiError::conflict(format!(
                    "the target {} is not online",
                    t.node_id
                )));
            }
            // The pod's metadata lives on the edge: it moves into the shared store first.
            crate::edges::pod_move::from_edge(&ctx.app, pod, &edge.node_id, &t.node_id).await?
        }
        _ => {
            ctx.app
                .meta
                .transfer_pod(pod_id, &input.target_node)
                .await?
        }
    };
    ctx.app.owners.invalidate(pod_id);
    if !crate::regions::needs_sync(source.as_ref(), target.as_ref()) {
        ctx.app
            .meta
            .set_migration_state(pod_id, Some(meta::MigrationStatus::Done), Some(100))
            .await?;
    }
    ctx.audit(
        "pod.migrate",
        pod_id,
        json!({
            "from": pod.node_id,
            "to": moved.node_id,
            "epoch": moved.epoch,
            "fromEdge": from_edge,
            "toEdge": to_edge,
        }),
    )
    .await;
    tracing::info!(pod = pod_id, to = %moved.node_id, epoch = moved.epoch, "pod migrated");
    if to_edge {
        // Test hook: this center dies between the fence and the hand-over.
        if std::env::var_os("XPOD_TEST_ABORT_BEFORE_HAND_OVER").is_some() {
            tracing::error!("XPOD_TEST_ABORT_BEFORE_HAND_OVER: aborting before the hand-over");
            std::process::abort();
        }
        // The cluster names the edge the owner (every write elsewhere is fenced); the edge
        // now takes the rows.
        crate::edges::pod_adopt::hand_over(&ctx.app, pod_id, &t.node_id)
            .await
            .map_err(|e| cut(&t.node_id, e))?;
    }
    let pod = ctx.app.meta.get_pod(pod_id).await?.unwrap_or(moved);
    Ok(body::json(StatusCode::ACCEPTED, &pod))
}

/// An admin may move any pod; the pod's owner (a key of its account that may write it) only
/// onto or off an edge (`edge_move`). Other keys: 403.
fn may_migrate(ctx: &Ctx, pod: Option<&PodRecord>, edge_move: bool) -> Result<(), ApiError> {
    if ctx.principal.is_admin() {
        return Ok(());
    }
    let owner = pod.is_some_and(|p| {
        p.account_id.is_some()
            && ctx.principal.owner() == p.account_id.as_deref()
            && ctx.principal.pod_access(&p.pod_id) == Some(crate::auth::Access::Write)
    });
    match (owner, edge_move) {
        (true, true) => Ok(()),
        (true, false) => Err(ApiError::forbidden(
            "a pod's owner may move it onto or off an edge; moves between centers need an admin API key",
        )),
        (false, _) => Err(ApiError::forbidden(
            "moving a pod needs an admin API key, or (onto or off an edge) a key of the pod's owner that may write it",
        )),
    }
}

/// The cluster names the edge the owner but the edge has not taken the pod's rows: the pod
/// refuses requests until the call is repeated.
fn cut(edge: &str, e: ApiError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "edge_offline",
        format!(
            "the cluster made edge {edge} the owner, but the edge did not take the pod's rows ({}); the pod answers 503 until this call is repeated",
            e.message
        ),
    )
    .with_header(http::header::RETRY_AFTER, "5")
}
