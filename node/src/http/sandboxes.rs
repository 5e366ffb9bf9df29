//! `/api/v1/sandboxes` and `/api/v1/runners` (shapes after the seed's CodePod API).
//!
//! Every sandbox belongs to the owner of the API key that created it; a key of another owner
//! gets 404 for it (an admin key sees every sandbox). Scopes: `sandbox` (or `admin`) to
//! create and change, `sandbox:read` to read. Requests that need the sandbox's node (exec,
//! logs, ports, terminals) go there wherever they arrive ([`crate::sandbox::client`];
//! terminals: [`super::terminal`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::now_millis;

use super::{read_json, read_small_body, segments, Ctx};
use crate::api_types::sandboxes::{
    CreateSandbox, CreatedSandbox, Logs, PatchSandbox, RunnerCapacity, RunnerList, RunnerUse,
    RunnerView, SandboxList,
};
use crate::api_types::ErrorBody;
use crate::auth::{Access, Principal};
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::sandbox::internal::ExecBody;
use crate::sandbox::lifecycle;
use crate::sandbox::model::{self, Sandbox, Status};
use crate::sandbox::replay::LogEntry;

/// Longest grace period of a delete: 30 days.
const MAX_GRACE_SECS: u64 = 30 * 86_400;

fn require(ctx: &Ctx, want: Access) -> Result<String, ApiError> {
    match (&ctx.principal, ctx.principal.sandbox_access()) {
        (Principal::Anonymous, _) => Err(ApiError::unauthorized(
            "an API key with the sandbox scope is required",
        )),
        (_, Some(have)) if have >= want => Ok(ctx.principal.owner().unwrap_or("admin").to_string()),
        (_, Some(_)) => Err(ApiError::forbidden(
            "this API key may only read sandboxes (sandbox:read)",
        )),
        (_, None) => Err(ApiError::forbidden("this API key lacks the sandbox scope")),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("sandbox {id} not found"))
}

/// The sandbox if the caller may see it (its owner, or an admin); 404 otherwise.
async fn visible(ctx: &Ctx, owner: &str, id: &str) -> Result<Sandbox, ApiError> {
    if !model::valid_id(id) {
        return Err(not_found(id));
    }
    match model::get(ctx.app.meta.as_ref(), id).await? {
        Some((sb, _)) if sb.owner == owner || ctx.principal.is_admin() => Ok(sb),
        Some(_) => {
            ctx.refused_not_owner(format!("sandbox:{id}"));
            Err(not_found(id))
        }
        None => Err(not_found(id)),
    }
}

fn check_text(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    crate::api_types::printable(what, v, max).map_err(ApiError::bad_request)
}

fn check_map(what: &str, m: &BTreeMap<String, String>, env: bool) -> Result<(), ApiError> {
    if m.len() > 64 {
        return Err(ApiError::bad_request(format!("{what}: at most 64 entries")));
    }
    for (k, v) in m {
        let bad_key = k.is_empty()
            || k.chars().count() > 128
            || if env {
                !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    || k.as_bytes()[0].is_ascii_digit()
            } else {
                k.chars().any(char::is_control)
            };
        if bad_key {
            return Err(ApiError::bad_request(format!("{what}: bad key {k:?}")));
        }
        if v.chars().count() > 4096 || v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "{what}.{k}: at most 4096 characters, no NUL"
            )));
        }
    }
    Ok(())
}

fn check_timeout(t: u64) -> Result<(), ApiError> {
    if !(10..=7 * 86_400).contains(&t) {
        return Err(ApiError::bad_request(format!(
            "timeout: expected 10..=604800 seconds of idleness, got {t}"
        )));
    }
    Ok(())
}

/// Routes `/api/v1/sandboxes…` (`rest` starts with `/sandboxes`) and `/api/v1/runners…`.
pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let segs = segments(rest);
    match (segs.as_slice(), &method) {
        (["runners"], &Method::GET) => runners(ctx, None).await,
        (["runners", id], &Method::GET) => runner(ctx, id).await,
        (["runners", ..], _) => Err(ApiError::method_not_allowed("GET")),
        (["sandboxes"], &Method::POST) => create(ctx, req).await,
        (["sandboxes"], &Method::GET) => list(ctx, req.uri().query().unwrap_or("")).await,
        (["sandboxes"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["sandboxes", id], &Method::GET) => get_one(ctx, id).await,
        (["sandboxes", id], &Method::PATCH) => patch(ctx, id, req).await,
        (["sandboxes", id], &Method::DELETE) => {
            delete(ctx, id, req.uri().query().unwrap_or("")).await
        }
        (["sandboxes", _], _) => Err(ApiError::method_not_allowed("GET, PATCH, DELETE")),
        (["sandboxes", id, "exec"], &Method::POST) => exec(ctx, id, req).await,
        (["sandboxes", _, "exec"], _) => Err(ApiError::method_not_allowed("POST")),
        (["sandboxes", id, "terminal"], &Method::GET) => terminal(ctx, id, req).await,
        (["sandboxes", _, "terminal"], _) => Err(ApiError::method_not_allowed("GET")),
        (["sandboxes", id, "logs"], &Method::GET) => {
            logs(ctx, id, req.uri().query().unwrap_or("")).await
        }
        (["sandboxes", _, "logs"], _) => Err(ApiError::method_not_allowed("GET")),
        (["sandboxes", id, "ports", port, ..], _) => {
            let id = id.to_string();
            let port = port.to_string();
            let prefix = format!("/api/v1/sandboxes/{id}/ports/{port}");
            crate::sandbox::ports::by_path(
                &ctx.app,
                &ctx.principal,
                ctx.peer,
                &ctx.trace_id,
                (&id, &port, &prefix),
                req,
            )
            .await
        }
        _ => Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    }
}

/// Creates a sandbox: placed on the node with the most free capacity, answered once it runs.
#[utoipa::path(post, path = "/api/v1/sandboxes", operation_id = "createSandbox", tag = "sandboxes",
    request_body = CreateSandbox,
    responses(
        (status = 201, description = "Running, with its access token (shown once)", body = CreatedSandbox),
        (status = 403, description = "The key lacks the sandbox (or sandbox:network) scope", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: details.limit names the quota (sandboxes, cpu, memoryMb)", body = ErrorBody),
        (status = 503, description = "`no_capacity`: no node took it (details: the failed sandbox); Retry-After", body = ErrorBody),
    ))]
async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Write)?;
    let input: CreateSandbox = read_json(req).await?;
    let app = &ctx.app;
    if input.network && !ctx.principal.may_use_network() {
        return Err(ApiError::forbidden(
            "network: true needs a key with the sandbox:network scope (or admin)",
        ));
    }
    if let Some(n) = &input.name {
        check_text("name", n, 200)?;
    }
    if let Some(r) = &input.region {
        check_text("region", r, 63)?;
    }
    if let Some(v) = &input.version {
        check_text("version", v, 100)?;
    }
    check_map("env", &input.env, true)?;
    check_map("annotations", &input.annotations, false)?;
    let image = input.image.unwrap_or_else(|| "host".into());
    if image != "host" && xpod_config::validate_pod_id(&image).is_err() {
        return Err(ApiError::bad_request(format!(
            "image {image:?}: expected `host` or the name of an image the nodes offer"
        )));
    }
    let resources = input.resources.unwrap_or_default();
    if !(1..=64).contains(&resources.cpu)
        || !(16..=1 << 20).contains(&resources.memory_mb)
        || !(8..=4096).contains(&resources.max_procs)
    {
        return Err(ApiError::bad_request(
            "resources: expected cpu 1..=64, memoryMb 16..=1048576, maxProcs 8..=4096",
        ));
    }
    let timeout = input
        .timeout
        .unwrap_or(app.config.sandbox.idle_timeout_secs);
    check_timeout(timeout)?;
    if let Some(n) = &input.node {
        xpod_config::validate_node_id(n)
            .map_err(|e| ApiError::bad_request(format!("node: {e}")))?;
    }
    let token = format!("sbt_{}", hex::encode(rand::random::<[u8; 24]>()));
    let sb = Sandbox {
        id: model::new_id(),
        owner: owner.clone(),
        name: input.name,
        image,
        version: input.version,
        env: input.env,
        resources,
        timeout,
        network: input.network,
        public: input.public,
        annotations: input.annotations,
        status: Status::Pending,
        node: String::new(),
        error: None,
        created_at: now_millis(),
        started_at: None,
        stopped_at: None,
        delete_after: None,
        token_hash: crate::auth::hash_key(&token),
    };
    lifecycle::quota_then_create(app, &owner, &sb).await?;
    ctx.audit(
        "sandbox.create",
        &format!("sandbox:{}", sb.id),
        json!({"image": sb.image, "resources": sb.resources}),
    )
    .await;
    lifecycle::emit(app, &sb, "sandbox.created").await;
    let stored =
        lifecycle::place_and_start(app, sb, input.region.as_deref(), input.node.as_deref()).await?;
    if stored.status == Status::Failed {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            format!(
                "sandbox {} could not be placed: {}",
                stored.id,
                stored.error.as_deref().unwrap_or("no node took it")
            ),
        )
        .with_details(serde_json::to_value(stored.view()).unwrap_or_default());
        e = e.with_header(http::header::RETRY_AFTER, "5");
        return Err(e);
    }
    let created = CreatedSandbox {
        sandbox: stored.view(),
        access_token: token,
    };
    Ok(body::json(StatusCode::CREATED, &created))
}

/// The caller's sandboxes (every owner's with an admin key), oldest first unless `order=desc`.
#[utoipa::path(get, path = "/api/v1/sandboxes", operation_id = "listSandboxes", tag = "sandboxes",
    params(
        ("status" = Option<Status>, Query, description = "Only sandboxes in this state"),
        ("image" = Option<String>, Query, description = "Only sandboxes of this image"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("offset" = Option<i64>, Query, minimum = 0, description = "Sandboxes to skip"),
        ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "By creation time (default asc)"),
    ),
    responses((status = 200, description = "A page", body = SandboxList)))]
async fn list(ctx: &Ctx, query: &str) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Read)?;
    let (mut status, mut image, mut limit, mut offset, mut desc) =
        (None, None, 100usize, 0usize, false);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .to_string();
        let int = |v: &str| -> Result<usize, ApiError> {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("query `{k}`: expected an integer")))
        };
        match k {
            "status" => {
                status = Some(Status::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(
                        "query `status`: expected pending, running, stopped, failed or archived",
                    )
                })?)
            }
            "image" => image = Some(v),
            "limit" => {
                limit = int(&v)?;
                if !(1..=1000).contains(&limit) {
                    return Err(ApiError::bad_request("query `limit`: expected 1..=1000"));
                }
            }
            "offset" => {
                offset = int(&v)?;
                if offset > i64::MAX as usize {
                    return Err(ApiError::bad_request("query `offset`: expected 0..=2^63-1"));
                }
            }
            "order" => {
                desc = match v.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(ApiError::bad_request("query `order`: expected asc or desc")),
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{k}`: expected status, image, limit, offset, order"
                )))
            }
        }
    }
    let scope = if ctx.principal.is_admin() {
        None
    } else {
        Some(owner.as_str())
    };
    let mut all: Vec<Sandbox> = model::list(ctx.app.meta.as_ref(), scope)
        .await?
        .into_iter()
        .filter(|s| status.is_none_or(|st| s.status == st))
        .filter(|s| image.as_deref().is_none_or(|i| s.image == i))
        .collect();
    if desc {
        all.reverse();
    }
    let total = all.len();
    let sandboxes: Vec<Sandbox> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(Sandbox::view)
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &SandboxList {
            sandboxes,
            total,
            limit,
            offset,
        },
    ))
}

/// Changes a sandbox's name, idle timeout, annotations or public flag.
#[utoipa::path(patch, path = "/api/v1/sandboxes/{id}", operation_id = "patchSandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "`sb` and 14 hex digits")),
    request_body = PatchSandbox,
    responses(
        (status = 200, description = "The sandbox as changed", body = Sandbox),
        (status = 404, description = "No such sandbox (or another owner's)", body = ErrorBody),
    ))]
async fn patch(ctx: &Ctx, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Write)?;
    visible(ctx, &owner, id).await?;
    let p: PatchSandbox = read_json(req).await?;
    if let Some(n) = &p.name {
        check_text("name", n, 200)?;
    }
    if let Some(a) = &p.annotations {
        check_map("annotations", a, false)?;
    }
    if let Some(t) = p.timeout {
        check_timeout(t)?;
    }
    let sb = model::update(ctx.app.meta.as_ref(), id, |s| {
        if let Some(n) = &p.name {
            s.name = Some(n.clone());
        }
        if let Some(t) = p.timeout {
            s.timeout = t;
        }
        if let Some(a) = &p.annotations {
            s.annotations = a.clone();
        }
        if let Some(pb) = p.public {
            s.public = pb;
        }
        true
    })
    .await?
    .ok_or_else(|| not_found(id))?;
    ctx.audit(
        "sandbox.update",
        &format!("sandbox:{id}"),
        json!({"name": p.name, "timeout": p.timeout, "public": p.public}),
    )
    .await;
    Ok(body::json(StatusCode::OK, &sb.view()))
}

/// Stops and deletes a sandbox now (204), or archives it and deletes it after `gracePeriod`
/// seconds (202).
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}", operation_id = "deleteSandbox", tag = "sandboxes",
    params(
        ("id" = String, Path, description = "`sb` and 14 hex digits"),
        ("gracePeriod" = Option<u32>, Query, minimum = 1, maximum = 2592000, description = "Archive now, delete after this many seconds"),
    ),
    responses(
        (status = 202, description = "Archived", body = Sandbox),
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such sandbox (or another owner's)", body = ErrorBody),
    ))]
async fn delete(ctx: &Ctx, id: &str, query: &str) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Write)?;
    let sb = visible(ctx, &owner, id).await?;
    let mut grace = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "gracePeriod" => {
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_GRACE_SECS).contains(s))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query `gracePeriod`: expected 1..={MAX_GRACE_SECS} seconds"
                        ))
                    })?;
                grace = Some(secs);
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{k}`: expected gracePeriod"
                )))
            }
        }
    }
    let app = &ctx.app;
    if sb.status.is_live() {
        lifecycle::stop_on_node(app, &sb, grace.is_none()).await;
    }
    match grace {
        Some(secs) => {
            let now = now_millis();
            let stored = model::update(app.meta.as_ref(), id, |s| {
                if s.status.is_live() {
                    s.stopped_at = Some(now);
                }
                s.status = Status::Archived;
                s.delete_after = Some(now + (secs as i64) * 1000);
                true
            })
            .await?
            .ok_or_else(|| not_found(id))?;
            ctx.audit(
                "sandbox.archive",
                &format!("sandbox:{id}"),
                json!({"gracePeriod": secs}),
            )
            .await;
            lifecycle::emit(app, &stored, "sandbox.stopped").await;
            Ok(body::json(StatusCode::ACCEPTED, &stored.view()))
        }
        None => {
            if !sb.status.is_live() && !sb.node.is_empty() {
                // Its files stay until removed: ask its node (best effort).
                lifecycle::stop_on_node(app, &sb, true).await;
            }
            model::remove(app.meta.as_ref(), id).await?;
            ctx.audit("sandbox.delete", &format!("sandbox:{id}"), json!({}))
                .await;
            lifecycle::emit(app, &sb, "sandbox.deleted").await;
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(body::empty())
                .unwrap_or_default())
        }
    }
}

/// One sandbox.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}", operation_id = "getSandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "`sb` and 14 hex digits")),
    responses(
        (status = 200, description = "The sandbox", body = Sandbox),
        (status = 404, description = "No such sandbox (or another owner's)", body = ErrorBody),
    ))]
async fn get_one(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Read)?;
    let sb = visible(ctx, &owner, id).await?;
    Ok(body::json(StatusCode::OK, &sb.view()))
}

async fn running(ctx: &Ctx, id: &str, want: Access) -> Result<Sandbox, ApiError> {
    let owner = require(ctx, want)?;
    let sb = visible(ctx, &owner, id).await?;
    if sb.status != Status::Running {
        return Err(ApiError::conflict(format!(
            "sandbox {id} is {}, not running",
            sb.status.as_str()
        )));
    }
    Ok(sb)
}

/// Runs a command in a running sandbox; its events stream back as they happen, one JSON object
/// per line (`LogEntry`: start, stdout and stderr as base64, end with the exit code, error).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/exec", operation_id = "execSandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "`sb` and 14 hex digits")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "The command's events", content_type = "application/x-ndjson", body = LogEntry),
        (status = 404, description = "No such sandbox (or another owner's)", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    ))]
async fn exec(ctx: &Ctx, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let sb = running(ctx, id, Access::Write).await?;
    let raw = read_small_body(req, 8 << 20).await?;
    let parsed: ExecBody = super::parse_json(&raw)?;
    parsed.check().map_err(ApiError::bad_request)?;
    ctx.audit(
        "sandbox.exec",
        &format!("sandbox:{id}"),
        json!({"cmd": parsed.cmd.first()}),
    )
    .await;
    let path = format!("/runner/{id}/exec");
    let resp =
        crate::sandbox::client::call(&ctx.app, &sb.node, 0, Method::POST, &path, raw).await?;
    if !resp.status().is_success() {
        crate::sandbox::client::json_of(resp).await?;
        return Err(ApiError::internal("the runner failed"));
    }
    Ok(resp)
}

/// A command in a terminal (a PTY) in a running sandbox, over a WebSocket: binary messages are
/// the terminal's bytes both ways; the client sends `{"resize":{"rows":R,"cols":C}}` as text;
/// the server sends `{"exit":{"code":N}}` when the command ends, then closes. Needs what exec
/// needs. See `crate::http::terminal`.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/terminal", operation_id = "sandboxTerminal", tag = "sandboxes",
    params(
        ("id" = String, Path, description = "`sb` and 14 hex digits"),
        ("cmd" = Option<Vec<String>>, Query, description = "The program, then each argument (repeated); none: the sandbox's shell"),
        ("cwd" = Option<String>, Query, description = "Working directory (absolute; default /work)"),
        ("rows" = Option<u16>, Query, description = "Window rows, 1..=1000 (default 24)", minimum = 1, maximum = 1000),
        ("cols" = Option<u16>, Query, description = "Window columns, 1..=1000 (default 80)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 101, description = "A WebSocket carrying the terminal"),
        (status = 400, description = "A bad query, or a program the sandbox cannot run (`terminal_refused`)", body = ErrorBody),
        (status = 404, description = "No such sandbox (or another owner's)", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 429, description = "`too_many_execs`: the sandbox runs as many commands as it may", body = ErrorBody),
    ))]
async fn terminal(ctx: &Ctx, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let sb = running(ctx, id, Access::Write).await?;
    super::terminal::sandbox(ctx, sb, req).await
}

/// Replays a running sandbox's exec events after a cursor.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/logs", operation_id = "sandboxLogs", tag = "sandboxes",
    params(
        ("id" = String, Path, description = "`sb` and 14 hex digits"),
        ("cursor" = Option<u64>, Query, description = "The last `seq` seen (default 0)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "At most this many events (default 1000)"),
    ),
    responses(
        (status = 200, description = "The events", body = Logs),
        (status = 404, description = "No such sandbox (or another owner's)", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    ))]
async fn logs(ctx: &Ctx, id: &str, query: &str) -> Result<Response<Body>, ApiError> {
    let sb = running(ctx, id, Access::Read).await?;
    let mut q = String::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !matches!(k, "cursor" | "limit")
            || !v.bytes().all(|b| b.is_ascii_digit())
            || v.is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "query `{k}`: expected cursor=<n> and/or limit=<n>"
            )));
        }
        q.push(if q.is_empty() { '?' } else { '&' });
        q.push_str(pair);
    }
    let path = format!("/runner/{id}/logs{q}");
    let resp =
        crate::sandbox::client::call(&ctx.app, &sb.node, 0, Method::GET, &path, Bytes::new())
            .await?;
    let v = crate::sandbox::client::json_of(resp).await?;
    let logs: Logs = serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the runner's logs: {e}"),
        )
    })?;
    Ok(body::json(StatusCode::OK, &logs))
}

/// Nodes offering sandbox capacity: what they offer, report in use, and have placed.
#[utoipa::path(get, path = "/api/v1/runners", operation_id = "listRunners", tag = "sandboxes",
    responses((status = 200, description = "The runners", body = RunnerList)))]
async fn runners(ctx: &Ctx, one: Option<&str>) -> Result<Response<Body>, ApiError> {
    require(ctx, Access::Read)?;
    let app: &Arc<crate::app::App> = &ctx.app;
    let live = model::list(app.meta.as_ref(), None).await?;
    let mut out = Vec::new();
    for n in app.meta.list_nodes().await? {
        if one.is_some_and(|id| id != n.node_id) {
            continue;
        }
        let Some(r) = lifecycle::report_of(&n) else {
            continue;
        };
        if r.slots == 0 {
            continue;
        }
        let placed = live
            .iter()
            .filter(|s| s.node == n.node_id && s.status.is_live())
            .count();
        out.push(RunnerView {
            id: n.node_id.clone(),
            kind: n.node_type.as_str().into(),
            region: n.region.clone(),
            status: n.status.as_str().into(),
            last_heartbeat: n.last_heartbeat,
            capacity: RunnerCapacity {
                slots: r.slots,
                cpu: r.cpu,
                memory_mb: r.memory_mb,
            },
            reported: RunnerUse {
                running: r.running.len(),
                cpu: r.used_cpu,
                memory_mb: r.used_memory_mb,
            },
            placed,
        });
    }
    match one {
        Some(id) => out
            .pop()
            .map(|r| body::json(StatusCode::OK, &r))
            .ok_or_else(|| ApiError::not_found(format!("runner {id} not found"))),
        None => Ok(body::json(StatusCode::OK, &RunnerList { runners: out })),
    }
}

/// One runner.
#[utoipa::path(get, path = "/api/v1/runners/{nodeId}", operation_id = "getRunner", tag = "sandboxes",
    params(("nodeId" = String, Path)),
    responses(
        (status = 200, description = "The runner", body = RunnerView),
        (status = 404, description = "No such runner", body = ErrorBody),
    ))]
async fn runner(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    runners(ctx, Some(id)).await
}
