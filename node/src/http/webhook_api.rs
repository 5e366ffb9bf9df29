//! `/api/v1/webhooks`: the key owner's webhooks for sandbox events ([`crate::webhooks`]).
//! Scope `sandbox` (or `admin`) to change, `sandbox:read` to read; another owner's webhook is
//! a 404. The secret is in the creation answer and in `GET /webhooks/{id}` (for its owner),
//! never in listings or logs.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use xpod_storage::meta::{now_millis, DocRecord};

use super::{read_json, segments, Ctx};
use crate::auth::{Access, Principal};
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::webhooks::{self, Delivery, Webhook, DELIVERY_KIND, EVENTS, KIND};

/// Webhooks per owner.
const MAX_PER_OWNER: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Create {
    url: String,
    events: Vec<String>,
    description: Option<String>,
}

fn require(ctx: &Ctx, want: Access) -> Result<String, ApiError> {
    match (&ctx.principal, ctx.principal.sandbox_access()) {
        (Principal::Anonymous, _) => Err(ApiError::unauthorized(
            "an API key with the sandbox scope is required",
        )),
        (_, Some(have)) if have >= want => Ok(ctx.principal.owner().unwrap_or("admin").to_string()),
        (_, Some(_)) => Err(ApiError::forbidden(
            "this API key may only read webhooks (sandbox:read)",
        )),
        (_, None) => Err(ApiError::forbidden("this API key lacks the sandbox scope")),
    }
}

async fn load(ctx: &Ctx, owner: &str, id: &str) -> Result<(Webhook, i64), ApiError> {
    let not_found = || ApiError::not_found(format!("webhook {id} not found"));
    let doc = ctx
        .app
        .meta
        .get_doc(KIND, id)
        .await?
        .ok_or_else(not_found)?;
    if doc.owner != owner {
        ctx.refused_not_owner(format!("webhook:{id}"));
        return Err(not_found());
    }
    let hook = serde_json::from_value::<Webhook>(doc.doc).map_err(|_| not_found())?;
    Ok((hook, doc.version))
}

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match (segments(rest).as_slice(), &method) {
        (["webhooks"], &Method::POST) => create(ctx, req).await,
        (["webhooks"], &Method::GET) => {
            let owner = require(ctx, Access::Read)?;
            let hooks: Vec<serde_json::Value> = ctx
                .app
                .meta
                .list_docs(KIND, Some(&owner))
                .await?
                .into_iter()
                .filter_map(|d| serde_json::from_value::<Webhook>(d.doc).ok())
                .map(|h| h.view(false))
                .collect();
            Ok(body::json(StatusCode::OK, &json!({ "webhooks": hooks })))
        }
        (["webhooks"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["webhooks", id], &Method::GET) => {
            let owner = require(ctx, Access::Read)?;
            let (hook, _) = load(ctx, &owner, id).await?;
            // The secret only to keys that may write (sandbox:read is read-only everywhere).
            let with_secret = ctx.principal.sandbox_access() == Some(Access::Write);
            Ok(body::json(StatusCode::OK, &hook.view(with_secret)))
        }
        (["webhooks", id], &Method::DELETE) => {
            let owner = require(ctx, Access::Write)?;
            let (hook, version) = load(ctx, &owner, id).await?;
            ctx.app.meta.delete_doc(KIND, &hook.id, version).await?;
            ctx.audit("webhook.delete", &format!("webhook:{id}"), json!({}))
                .await;
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(body::empty())
                .unwrap_or_default())
        }
        (["webhooks", _], _) => Err(ApiError::method_not_allowed("GET, DELETE")),
        (["webhooks", id, "test"], &Method::POST) => {
            let owner = require(ctx, Access::Write)?;
            let (hook, _) = load(ctx, &owner, id).await?;
            let ids = webhooks::emit(
                &ctx.app,
                &owner,
                "webhook.test",
                json!({"webhookId": hook.id, "message": "a test event from xpod"}),
                Some(&hook.id),
            )
            .await;
            let id = ids
                .first()
                .ok_or_else(|| ApiError::unavailable("the test message could not be stored"))?;
            Ok(body::json(
                StatusCode::ACCEPTED,
                &json!({ "messageId": id }),
            ))
        }
        (["webhooks", _, "test"], _) => Err(ApiError::method_not_allowed("POST")),
        (["webhooks", id, "deliveries"], &Method::GET) => {
            let owner = require(ctx, Access::Read)?;
            let (hook, _) = load(ctx, &owner, id).await?;
            let mut log: Vec<Delivery> = ctx
                .app
                .meta
                .list_docs(DELIVERY_KIND, Some(&hook.id))
                .await?
                .into_iter()
                .filter_map(|d: DocRecord| serde_json::from_value(d.doc).ok())
                .collect();
            log.reverse();
            Ok(body::json(StatusCode::OK, &json!({ "deliveries": log })))
        }
        (["webhooks", _, "deliveries"], _) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    }
}

async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Write)?;
    let input: Create = read_json(req).await?;
    webhooks::check_url(&input.url, ctx.app.config.sandbox.webhooks_allow_private)
        .map_err(ApiError::bad_request)?;
    if input.events.is_empty() {
        return Err(ApiError::bad_request(format!(
            "events: expected at least one of *, {}",
            EVENTS.join(", ")
        )));
    }
    for e in &input.events {
        if e != "*" && !EVENTS.contains(&e.as_str()) {
            return Err(ApiError::bad_request(format!(
                "events: unknown event {e:?}; expected *, {}",
                EVENTS.join(", ")
            )));
        }
    }
    if let Some(d) = &input.description {
        if d.len() > 500 || d.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "description: at most 500 printable characters",
            ));
        }
    }
    let app = &ctx.app;
    if app.meta.list_docs(KIND, Some(&owner)).await?.len() >= MAX_PER_OWNER {
        return Err(ApiError::conflict(format!(
            "owner {owner} has {MAX_PER_OWNER} webhooks already; delete one first"
        )));
    }
    let hook = Webhook {
        id: format!("wh_{}", hex::encode(rand::random::<[u8; 8]>())),
        owner: owner.clone(),
        url: input.url,
        events: input.events,
        description: input.description,
        secret: webhooks::new_secret(),
        created_at: now_millis(),
        solid: None,
    };
    let doc = DocRecord {
        kind: KIND.into(),
        id: hook.id.clone(),
        owner,
        version: 0,
        updated_at: 0,
        doc: serde_json::to_value(&hook).unwrap_or_default(),
    };
    if !app.meta.put_doc(&doc, 0, hook.created_at).await? {
        return Err(ApiError::conflict("webhook id clash; try again"));
    }
    ctx.audit(
        "webhook.create",
        &format!("webhook:{}", hook.id),
        json!({"url": hook.url, "events": hook.events}),
    )
    .await;
    let mut v = hook.view(true);
    v["warning"] = json!("keep the secret: it verifies the webhook-signature header");
    Ok(body::json(StatusCode::CREATED, &v))
}
