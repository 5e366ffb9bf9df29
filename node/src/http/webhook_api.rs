//! `/api/v1/webhooks`: the key owner's webhooks for sandbox events ([`crate::webhooks`]).
//! Scope `sandbox` (or `admin`) to change, `sandbox:read` to read; another owner's webhook is
//! a 404. The secret is in the creation answer and in `GET /webhooks/{id}` (for its owner),
//! never in listings or logs.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::{now_millis, DocRecord};

use super::{read_json, segments, Ctx};
use crate::api_types::webhooks::{
    CreateWebhook, CreatedWebhook, Deliveries, TestSent, WebhookList,
};
use crate::api_types::ErrorBody;
use crate::auth::{Access, Principal};
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::webhooks::{self, Delivery, Webhook, DELIVERY_KIND, EVENTS, KIND};

/// Webhooks per owner.
const MAX_PER_OWNER: usize = 50;

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
        (["webhooks"], &Method::GET) => list(ctx).await,
        (["webhooks"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["webhooks", id], &Method::GET) => get_one(ctx, id).await,
        (["webhooks", id], &Method::DELETE) => delete(ctx, id).await,
        (["webhooks", _], _) => Err(ApiError::method_not_allowed("GET, DELETE")),
        (["webhooks", id, "test"], &Method::POST) => test(ctx, id).await,
        (["webhooks", _, "test"], _) => Err(ApiError::method_not_allowed("POST")),
        (["webhooks", id, "deliveries"], &Method::GET) => deliveries(ctx, id).await,
        (["webhooks", _, "deliveries"], _) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    }
}

/// Creates a webhook for sandbox events (Standard Webhooks signatures).
#[utoipa::path(post, path = "/api/v1/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "The webhook with its secret (`whsec_…`)", body = CreatedWebhook),
        (status = 409, description = "The owner has 50 webhooks", body = ErrorBody),
    ))]
async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Write)?;
    let input: CreateWebhook = read_json(req).await?;
    webhooks::check_url(&input.url, ctx.app.config.sandbox.webhooks_allow_private)
        .map_err(ApiError::bad_request)?;
    if input.events.is_empty() || input.events.len() > 32 {
        return Err(ApiError::bad_request(format!(
            "events: expected 1 to 32 of *, {}",
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
        crate::api_types::printable("description", d, 500).map_err(ApiError::bad_request)?;
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
    let created = CreatedWebhook {
        webhook: hook.view(true),
        warning: "keep the secret: it verifies the webhook-signature header".into(),
    };
    Ok(body::json(StatusCode::CREATED, &created))
}

/// The key owner's webhooks, without secrets.
#[utoipa::path(get, path = "/api/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, description = "The webhooks", body = WebhookList)))]
async fn list(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Read)?;
    let webhooks: Vec<Webhook> = ctx
        .app
        .meta
        .list_docs(KIND, Some(&owner))
        .await?
        .into_iter()
        .filter_map(|d| serde_json::from_value::<Webhook>(d.doc).ok())
        .map(|h| h.view(false))
        .collect();
    Ok(body::json(StatusCode::OK, &WebhookList { webhooks }))
}

/// One webhook, with its secret for keys that may write.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        (status = 404, description = "No such webhook (or another owner's)", body = ErrorBody),
    ))]
async fn get_one(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Read)?;
    let (hook, _) = load(ctx, &owner, id).await?;
    // The secret only to keys that may write (sandbox:read is read-only everywhere).
    let with_secret = ctx.principal.sandbox_access() == Some(Access::Write);
    Ok(body::json(StatusCode::OK, &hook.view(with_secret)))
}

/// Deletes a webhook.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook (or another owner's)", body = ErrorBody),
    ))]
async fn delete(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
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

/// Sends a `webhook.test` event to this webhook.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", operation_id = "testWebhook", tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 202, description = "Queued", body = TestSent),
        (status = 404, description = "No such webhook (or another owner's)", body = ErrorBody),
    ))]
async fn test(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
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
    let message_id = ids
        .first()
        .ok_or_else(|| ApiError::unavailable("the test message could not be stored"))?
        .clone();
    Ok(body::json(StatusCode::ACCEPTED, &TestSent { message_id }))
}

/// The delivery log, newest first: every attempt (time, status code or error, duration).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", operation_id = "webhookDeliveries", tag = "webhooks",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The deliveries", body = Deliveries),
        (status = 404, description = "No such webhook (or another owner's)", body = ErrorBody),
    ))]
async fn deliveries(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    let owner = require(ctx, Access::Read)?;
    let (hook, _) = load(ctx, &owner, id).await?;
    let mut deliveries: Vec<Delivery> = ctx
        .app
        .meta
        .list_docs(DELIVERY_KIND, Some(&hook.id))
        .await?
        .into_iter()
        .filter_map(|d: DocRecord| serde_json::from_value(d.doc).ok())
        .collect();
    deliveries.reverse();
    Ok(body::json(StatusCode::OK, &Deliveries { deliveries }))
}
