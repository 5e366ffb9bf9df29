//! The `/api/v1` API. For now: API keys (`/auth/api-keys`) and the audit log (`/audit`), admin
//! key required.
//! A new key's secret is in the creation response only; it is stored as a hash.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use xpod_storage::meta;

use super::body::{self, Body};
use super::error::ApiError;
use super::{read_json, segments, Ctx};
use crate::auth::{self, require_admin};

/// Longest accepted key lifetime.
const MAX_DAYS: i64 = 3650;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateKey {
    name: String,
    scopes: Vec<String>,
    expires_in_days: Option<i64>,
    owner: Option<String>,
}

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match (segments(rest).as_slice(), &method) {
        (["auth", "api-keys"], &Method::GET) => {
            require_admin(&ctx.principal)?;
            let keys = ctx.app.meta.list_api_keys().await?;
            Ok(body::json(StatusCode::OK, &json!({"keys": keys})))
        }
        (["auth", "api-keys"], &Method::POST) => {
            require_admin(&ctx.principal)?;
            create_key(ctx, req).await
        }
        (["auth", "api-keys"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["auth", "api-keys", id], &Method::GET) => {
            require_admin(&ctx.principal)?;
            match ctx.app.meta.get_api_key(id).await? {
                Some(k) => Ok(body::json(
                    StatusCode::OK,
                    &serde_json::to_value(k).unwrap_or_default(),
                )),
                None => Err(ApiError::not_found(format!("api key {id} not found"))),
            }
        }
        (["auth", "api-keys", id], &Method::DELETE) => {
            require_admin(&ctx.principal)?;
            ctx.app.meta.revoke_api_key(id, meta::now_millis()).await?;
            ctx.audit("apikey.revoke", &format!("key:{id}"), json!({}))
                .await;
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(body::empty())
                .unwrap_or_default())
        }
        (["auth", "api-keys", _], _) => Err(ApiError::method_not_allowed("GET, DELETE")),
        (["audit"], &Method::GET) => {
            require_admin(&ctx.principal)?;
            let (limit, before) = audit_query(req.uri().query().unwrap_or(""))?;
            let entries = ctx.app.meta.list_audit(limit, before).await?;
            Ok(body::json(StatusCode::OK, &json!({"entries": entries})))
        }
        (["audit"], _) => Err(ApiError::method_not_allowed("GET")),
        (["sandboxes", ..] | ["runners", ..], _) => super::sandboxes::handle(ctx, rest, req).await,
        (["webhooks", ..], _) => super::webhook_api::handle(ctx, rest, req).await,
        _ => Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    }
}

/// `?limit=N&before=ID` of the audit listing (limit 1..=1000, default 100).
fn audit_query(q: &str) -> Result<(i64, Option<i64>), ApiError> {
    let (mut limit, mut before) = (100, None);
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n: i64 = v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("query `{k}`: expected an integer")))?;
        match k {
            "limit" if (1..=1000).contains(&n) => limit = n,
            "limit" => return Err(ApiError::bad_request("query `limit`: expected 1..=1000")),
            "before" => before = Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{k}`: expected limit or before"
                )))
            }
        }
    }
    Ok((limit, before))
}

async fn create_key(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreateKey = read_json(req).await?;
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name: expected 1–200 printable characters",
        ));
    }
    if input.scopes.is_empty() {
        return Err(ApiError::bad_request(
            "scopes: expected at least one of admin, pod:<podId>, pod:<podId>:read",
        ));
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
    let owner = input
        .owner
        .unwrap_or_else(|| ctx.principal.owner().unwrap_or("admin").to_string());
    let minted = auth::mint(name, &owner, input.scopes, now, expires_at);
    ctx.app.meta.create_api_key(&minted.record).await?;
    ctx.audit(
        "apikey.create",
        &format!("key:{}", minted.record.key_id),
        json!({"name": name, "scopes": minted.record.scopes, "expiresAt": expires_at}),
    )
    .await;
    let mut value = serde_json::to_value(&minted.record).unwrap_or_default();
    value["key"] = json!(minted.full);
    value["warning"] = json!("this is the only time the key is shown; store it now");
    Ok(body::json(StatusCode::CREATED, &value))
}
