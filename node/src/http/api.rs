//! The `/api/v1` API: API keys (`/auth/api-keys`) and the audit log (`/audit`, filters by
//! action, actor, target), admin key required; sandboxes, runners, webhooks and this node's
//! tunnel lists (`/node/…`) in their own modules.
//! A new key's secret is in the creation response only; it is stored as a hash.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::{self, ApiKeyRecord};

use super::{read_json, segments, Ctx};
use crate::api_types::keys::{AuditList, CreateKey, CreatedKey, KeyList};
use crate::api_types::ErrorBody;
use crate::auth::{self, require_admin};
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Longest accepted key lifetime.
const MAX_DAYS: i64 = 3650;

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match (segments(rest).as_slice(), &method) {
        (["auth", "api-keys"], &Method::GET) => list_keys(ctx).await,
        (["auth", "api-keys"], &Method::POST) => {
            require_admin(&ctx.principal)?;
            create_key(ctx, req).await
        }
        (["auth", "api-keys"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["auth", "api-keys", id], &Method::GET) => get_key(ctx, id).await,
        (["auth", "api-keys", id], &Method::DELETE) => revoke_key(ctx, id).await,
        (["auth", "api-keys", _], _) => Err(ApiError::method_not_allowed("GET, DELETE")),
        (["audit"], &Method::GET) => audit(ctx, req.uri().query().unwrap_or("")).await,
        (["audit"], _) => Err(ApiError::method_not_allowed("GET")),
        (["sandboxes", ..] | ["runners", ..], _) => super::sandboxes::handle(ctx, rest, req).await,
        (["webhooks", ..], _) => super::webhook_api::handle(ctx, rest, req).await,
        (["node", ..], _) => super::tunnel_api::handle(ctx, rest, req).await,
        (["events"], &Method::GET) => {
            require_admin(&ctx.principal)?;
            super::events::stream(&ctx.app)
        }
        (["events"], _) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    }
}

/// The audit listing's query: `limit` (1..=1000, default 100), `before` (an entry id), and
/// filters `action` (exact, or a prefix ending in `.`/`*`: `sandbox.`), `actor` (exact, e.g.
/// `key:<id>`), `target` (prefix, e.g. `sandbox:sb…`).
#[derive(Default)]
struct AuditQuery {
    limit: i64,
    before: Option<i64>,
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
}

/// The audit log, newest first, optionally filtered.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "audit", tag = "keys",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many entries (default 100)"),
        ("before" = Option<i64>, Query, description = "Only entries with a smaller id"),
        ("action" = Option<String>, Query, description = "An action, or a prefix ending in `.` or `*` (`sandbox.`)"),
        ("actor" = Option<String>, Query, description = "An actor, e.g. `key:<id>`"),
        ("target" = Option<String>, Query, description = "A target prefix, e.g. `sandbox:<id>`"),
    ),
    responses((status = 200, description = "The entries", body = AuditList)))]
async fn audit(ctx: &Ctx, query: &str) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    let q = audit_query(query)?;
    let entries = audit_search(ctx, &q).await?;
    Ok(body::json(StatusCode::OK, &AuditList { entries }))
}

/// Every API key, never a secret.
#[utoipa::path(get, path = "/api/v1/auth/api-keys", operation_id = "listApiKeys", tag = "keys",
    responses((status = 200, description = "The keys", body = KeyList)))]
async fn list_keys(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    let keys = ctx.app.meta.list_api_keys().await?;
    Ok(body::json(StatusCode::OK, &KeyList { keys }))
}

/// One API key, never its secret.
#[utoipa::path(get, path = "/api/v1/auth/api-keys/{keyId}", operation_id = "getApiKey", tag = "keys",
    params(("keyId" = String, Path)),
    responses(
        (status = 200, description = "The key", body = ApiKeyRecord),
        (status = 404, description = "No such key", body = ErrorBody),
    ))]
async fn get_key(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    match ctx.app.meta.get_api_key(id).await? {
        Some(k) => Ok(body::json(StatusCode::OK, &k)),
        None => Err(ApiError::not_found(format!("api key {id} not found"))),
    }
}

/// Revokes an API key: refused here at once, on other nodes when the change feed tells them.
#[utoipa::path(delete, path = "/api/v1/auth/api-keys/{keyId}", operation_id = "revokeApiKey", tag = "keys",
    params(("keyId" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = ErrorBody),
    ))]
async fn revoke_key(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    ctx.app.meta.revoke_api_key(id, meta::now_millis()).await?;
    // Here at once; other nodes when the change feed tells them (`key:<id>`).
    ctx.app.keys.invalidate(id);
    ctx.audit("apikey.revoke", &format!("key:{id}"), json!({}))
        .await;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(body::empty())
        .unwrap_or_default())
}

fn audit_query(q: &str) -> Result<AuditQuery, ApiError> {
    let mut out = AuditQuery {
        limit: 100,
        ..Default::default()
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let text = || {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        };
        let int = || {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("query `{k}`: expected an integer")))
        };
        match k {
            "limit" => {
                out.limit = int()?;
                if !(1..=1000).contains(&out.limit) {
                    return Err(ApiError::bad_request("query `limit`: expected 1..=1000"));
                }
            }
            "before" => out.before = Some(int()?),
            "action" => out.action = Some(text()),
            "actor" => out.actor = Some(text()),
            "target" => out.target = Some(text()),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{k}`: expected limit, before, action, actor or target"
                )))
            }
        }
    }
    Ok(out)
}

/// Pages through the log newest first until `limit` entries match (scanning at most
/// [`AUDIT_SCAN`] entries per request; `before` continues from the last one returned).
async fn audit_search(ctx: &Ctx, q: &AuditQuery) -> Result<Vec<meta::AuditEntry>, ApiError> {
    let filtered = q.action.is_some() || q.actor.is_some() || q.target.is_some();
    if !filtered {
        return Ok(ctx.app.meta.list_audit(q.limit, q.before).await?);
    }
    let matches = |e: &meta::AuditEntry| {
        q.action
            .as_deref()
            .is_none_or(|a| match a.strip_suffix('*') {
                Some(prefix) => e.action.starts_with(prefix),
                None if a.ends_with('.') => e.action.starts_with(a),
                None => e.action == a,
            })
            && q.actor.as_deref().is_none_or(|a| e.actor == a)
            && q.target.as_deref().is_none_or(|t| e.target.starts_with(t))
    };
    let (mut out, mut before, mut scanned) = (Vec::new(), q.before, 0);
    while scanned < AUDIT_SCAN {
        let page = ctx.app.meta.list_audit(1000, before).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        scanned += page.len();
        for e in page {
            if matches(&e) {
                out.push(e);
                if out.len() as i64 >= q.limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// Entries one filtered audit request looks through at most.
const AUDIT_SCAN: usize = 20_000;

/// Creates an API key; its secret is in this answer only (stored as a hash).
#[utoipa::path(post, path = "/api/v1/auth/api-keys", operation_id = "createApiKey", tag = "keys",
    request_body = CreateKey,
    responses((status = 201, description = "The key, shown once", body = CreatedKey)))]
async fn create_key(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreateKey = read_json(req).await?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: expected 1–200 printable characters",
        ));
    }
    if input.scopes.is_empty() {
        return Err(ApiError::bad_request(format!(
            "scopes: expected at least one of {}",
            auth::SCOPES
        )));
    }
    for s in &input.scopes {
        auth::validate_scope(s).map_err(ApiError::bad_request)?;
    }
    let now = meta::now_millis();
    let expires_at = match input.expires_in_days {
        None => None,
        Some(d) if (1..=MAX_DAYS).contains(&d) => Some(now + d * 86_400_000),
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "expiresInDays {d}: expected 1..={MAX_DAYS}"
            )))
        }
    };
    if let Some(owner) = &input.owner {
        auth::validate_owner(owner).map_err(ApiError::bad_request)?;
    }
    // A key the admin names no owner for is its own owner: its sandboxes, webhooks and quota
    // are its alone (never silently the admin's).
    let mut minted = auth::mint(name, "", input.scopes, now, expires_at);
    minted.record.owner = input
        .owner
        .unwrap_or_else(|| format!("key-{}", minted.record.key_id));
    ctx.app.meta.create_api_key(&minted.record).await?;
    ctx.audit(
        "apikey.create",
        &format!("key:{}", minted.record.key_id),
        json!({"name": name, "owner": minted.record.owner, "scopes": minted.record.scopes, "expiresAt": expires_at}),
    )
    .await;
    let created = CreatedKey {
        record: minted.record,
        key: minted.full,
        warning: "this is the only time the key is shown; store it now".into(),
    };
    Ok(body::json(StatusCode::CREATED, &created))
}
