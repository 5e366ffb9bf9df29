//! The cluster API under `/.cluster` (admin key on every route):
//! `GET/POST /pods`, `GET /pods/{podId}`, `POST /pods/{podId}/migrate`,
//! `GET /routes/{podId}` (this node's owner-table entry, for diagnosing routing), `GET /nodes`,
//! `GET /nodes/{nodeId}` (with its policy), `PATCH /nodes/{nodeId}` and
//! `POST /nodes/{nodeId}/revoke` (in [`super::node_admin`]),
//! `GET/POST /tokens`, `DELETE /tokens/{tokenId}` (join tokens for edges),
//! `POST /dns/txt {name, value, ttlSeconds}`, `DELETE /dns/txt {name, value}`,
//! `GET /dns/txt/{name}` (`_acme-challenge.*` TXT records the centers' DNS serves, for ACME
//! DNS-01 by any client), `GET /certs` (the certificates in the store and what this node
//! serves), `POST /certs/renew` (the centers' certificate is renewed now, by whichever center
//! takes the ACME lease).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use xpod_storage::meta::{self, AccessMode, JoinTokenRecord, NewPod};
use xpod_tunnel::identity::JoinToken;

use super::{read_json, segments, Ctx};
use crate::auth::require_admin;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreatePod {
    pod_id: String,
    access_mode: Option<String>,
    account_id: Option<String>,
    /// The node that owns it (default: this one); an edge keeps it when it reports hosting it.
    node_id: Option<String>,
}

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    let method = req.method().clone();
    match (segments(rest).as_slice(), &method) {
        (["pods"], &Method::GET) => {
            let pods = ctx.app.meta.list_pods().await?;
            Ok(body::json(StatusCode::OK, &json!({"pods": pods})))
        }
        (["pods"], &Method::POST) => create_pod(ctx, req).await,
        (["pods"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["pods", pod_id], &Method::GET) => match ctx.app.meta.get_pod(pod_id).await? {
            Some(pod) => Ok(body::json(
                StatusCode::OK,
                &serde_json::to_value(pod).unwrap_or_default(),
            )),
            None => Err(ApiError::not_found(format!("pod {pod_id} not found"))),
        },
        (["pods", _], _) => Err(ApiError::method_not_allowed("GET")),
        (["pods", pod_id, "migrate"], &Method::POST) => {
            let pod_id = pod_id.to_string();
            migrate_pod(ctx, &pod_id, req).await
        }
        (["pods", _, "migrate"], _) => Err(ApiError::method_not_allowed("POST")),
        (["routes", pod_id], &Method::GET) => {
            let cached = ctx.app.owners.peek(pod_id);
            Ok(body::json(
                StatusCode::OK,
                &json!({
                    "podId": pod_id,
                    "node": ctx.app.node_id,
                    "cached": cached.is_some(),
                    "owner": cached.as_ref().map(|o| o.node_id.clone()),
                    "epoch": cached.as_ref().map(|o| o.epoch),
                    "meshPeers": ctx.app.mesh.live_peers(),
                }),
            ))
        }
        (["routes", _], _) => Err(ApiError::method_not_allowed("GET")),
        (["nodes"], &Method::GET) => {
            let nodes = ctx.app.meta.list_nodes().await?;
            Ok(body::json(StatusCode::OK, &json!({"nodes": nodes})))
        }
        (["nodes", node_id], &Method::GET) => match ctx.app.meta.get_node(node_id).await? {
            Some(n) => {
                let (policy, _) = crate::node_policy::load(ctx.app.meta.as_ref(), node_id)
                    .await
                    .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["policy"] = serde_json::to_value(policy).unwrap_or_default();
                Ok(body::json(StatusCode::OK, &v))
            }
            None => Err(ApiError::not_found(format!("node {node_id} not found"))),
        },
        (["nodes", node_id], &Method::PATCH) => {
            let node_id = node_id.to_string();
            super::node_admin::set_policy(ctx, &node_id, req).await
        }
        (["nodes", node_id, "revoke"], &Method::POST) => {
            let node_id = node_id.to_string();
            super::node_admin::revoke_node(ctx, &node_id).await
        }
        (["nodes", _, "revoke"], _) => Err(ApiError::method_not_allowed("POST")),
        (["nodes"], _) => Err(ApiError::method_not_allowed("GET")),
        (["nodes", _], _) => Err(ApiError::method_not_allowed("GET, PATCH")),
        (["tokens"], &Method::GET) => {
            let tokens = ctx.app.meta.list_join_tokens().await?;
            Ok(body::json(StatusCode::OK, &json!({"tokens": tokens})))
        }
        (["tokens"], &Method::POST) => create_token(ctx, req).await,
        (["tokens"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["tokens", id], &Method::DELETE) => {
            ctx.app
                .meta
                .revoke_join_token(id, meta::now_millis())
                .await?;
            ctx.audit("token.revoke", &format!("token:{id}"), json!({}))
                .await;
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(body::empty())
                .map_err(|e| ApiError::internal(e.to_string()))
        }
        (["tokens", _], _) => Err(ApiError::method_not_allowed("DELETE")),
        (["dns", "records"], &Method::GET) => {
            if ctx.app.config.dns.zone.is_none() {
                return Err(ApiError::not_found(
                    "this node serves no DNS zone (dns.zone is not set)",
                ));
            }
            let dns = crate::dns::Dns::new(
                &ctx.app.config,
                ctx.app.meta.clone(),
                ctx.app.owners.clone(),
            )
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            let records = dns
                .records()
                .await
                .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
            let rows: Vec<_> = records
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name.to_ascii(),
                        "type": r.record_type().to_string(),
                        "ttl": r.ttl,
                        "data": r.data.to_string(),
                    })
                })
                .collect();
            Ok(body::json(
                StatusCode::OK,
                &json!({"zone": ctx.app.config.dns.zone, "records": rows}),
            ))
        }
        (["dns", "records"], _) => Err(ApiError::method_not_allowed("GET")),
        (["certs"], &Method::GET) => list_certs(ctx).await,
        (["certs"], _) => Err(ApiError::method_not_allowed("GET")),
        (["certs", "renew"], &Method::POST) => renew_certs(ctx).await,
        (["certs", "renew"], _) => Err(ApiError::method_not_allowed("POST")),
        (["dns", "txt"], &Method::POST) => put_txt(ctx, req).await,
        (["dns", "txt"], &Method::DELETE) => delete_txt(ctx, req).await,
        (["dns", "txt"], _) => Err(ApiError::method_not_allowed("POST, DELETE")),
        (["dns", "txt", name], &Method::GET) => {
            let name = txt_name(name)?;
            let values = ctx.app.meta.list_txt(&name).await?;
            Ok(body::json(
                StatusCode::OK,
                &json!({"name": name, "values": values}),
            ))
        }
        (["dns", "txt", _], _) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!(
            "no cluster API at /.cluster{rest}"
        ))),
    }
}

async fn create_pod(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreatePod = read_json(req).await?;
    xpod_routing::target::validate_pod_id(&input.pod_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let access_mode = match input.access_mode.as_deref() {
        None => AccessMode::Private,
        Some(s) => AccessMode::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "accessMode `{s}`: expected private, public-read or public-read-write"
            ))
        })?,
    };
    let new = NewPod {
        pod_id: input.pod_id.clone(),
        base_url: ctx.app.pod_base_url(&input.pod_id),
        account_id: input
            .account_id
            .or_else(|| ctx.principal.owner().map(str::to_string)),
        node_id: match &input.node_id {
            None => ctx.app.node_id.clone(),
            Some(n) => {
                if ctx.app.meta.get_node(n).await?.is_none() {
                    return Err(ApiError::bad_request(format!(
                        "nodeId {n:?}: no such node in the cluster"
                    )));
                }
                n.clone()
            }
        },
        access_mode,
    };
    let pod = ctx.app.meta.create_pod(&new).await?;
    // A miss remembered here ends now (other nodes learn it from the change feed).
    ctx.app.owners.invalidate(&pod.pod_id);
    ctx.audit(
        "pod.create",
        &pod.pod_id,
        json!({"accessMode": access_mode.as_str(), "nodeId": pod.node_id}),
    )
    .await;
    let mut resp = body::json(
        StatusCode::CREATED,
        &serde_json::to_value(&pod).unwrap_or_default(),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("/.cluster/pods/{}", pod.pod_id)) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MigratePod {
    target_node: String,
}

/// Moves a pod to another node (ARCHITECTURE §6): one transaction makes the target the owner
/// with epoch + 1 and notifies every node; routing follows at once (owners check their own
/// ownership, so a node with a stale table forwards to the old owner, which passes it on).
/// 404: unknown pod or node; 409: target not online, or already the owner. Within a region
/// (one store) the status is `done` at once; to another region it stays `syncing` until the
/// new owner's sync job has copied the pod's blobs (`crate::regions::sync_loop`) — reads work
/// meanwhile through the fallback chain.
async fn migrate_pod(
    ctx: &Ctx,
    pod_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let input: MigratePod = read_json(req).await?;
    xpod_config::validate_node_id(&input.target_node)
        .map_err(|e| ApiError::bad_request(format!("targetNode: {e}")))?;
    let before = ctx.app.meta.get_pod(pod_id).await?;
    // An edge's pod data lives in the edge's own store: moving it needs a byte copy that does
    // not exist yet, so such moves are refused rather than left half-done.
    let target = ctx.app.meta.get_node(&input.target_node).await?;
    let source = match &before {
        Some(p) => ctx.app.meta.get_node(&p.node_id).await?,
        None => None,
    };
    for (node, role) in [(&target, "target"), (&source, "current owner")] {
        if let Some(n) = node
            .as_ref()
            .filter(|n| n.node_type == meta::NodeType::Edge)
        {
            return Err(ApiError::conflict(format!(
                "the {role} {} is an edge: moving pods to or from edges is not supported yet (the pod's data lives in the edge's own store)",
                n.node_id
            )));
        }
    }
    let moved = ctx
        .app
        .meta
        .transfer_pod(pod_id, &input.target_node)
        .await?;
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
            "from": before.map(|p| p.node_id),
            "to": moved.node_id,
            "epoch": moved.epoch,
        }),
    )
    .await;
    tracing::info!(pod = pod_id, to = %moved.node_id, epoch = moved.epoch, "pod migrated");
    let pod = ctx.app.meta.get_pod(pod_id).await?.unwrap_or(moved);
    Ok(body::json(
        StatusCode::ACCEPTED,
        &serde_json::to_value(pod).unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateToken {
    description: Option<String>,
    ttl_seconds: Option<i64>,
    single_use: Option<bool>,
    /// Granted to the node that joins with it (`crate::node_policy`).
    sandbox_slots: Option<u32>,
    #[serde(default)]
    pod_prefixes: Vec<String>,
}

/// Longest join-token lifetime (30 days) and the default (24 h).
const MAX_TOKEN_TTL: i64 = 30 * 86_400;
const DEFAULT_TOKEN_TTL: i64 = 86_400;

/// Creates a join token for an edge: the secret and the CA fingerprint, shown once; stored hashed.
async fn create_token(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreateToken = read_json(req).await?;
    let ttl = input.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
    if !(60..=MAX_TOKEN_TTL).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSeconds {ttl}: expected 60..={MAX_TOKEN_TTL}"
        )));
    }
    crate::node_policy::validate_grant(input.sandbox_slots, &input.pod_prefixes)
        .map_err(ApiError::bad_request)?;
    let description = input.description.unwrap_or_default();
    if description.len() > 200 || description.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "description: expected at most 200 printable characters",
        ));
    }
    let fingerprint = crate::cluster_ca::fingerprint(&ctx.app.config.data_dir)
        .map_err(|e| ApiError::internal(format!("reading the cluster CA: {e:#}")))?
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "this node has no cluster CA: run `xpod ca init --data-dir {}` (or copy the cluster's ca.crt there)",
                ctx.app.config.data_dir.display()
            ))
        })?;
    let token = JoinToken::generate(&fingerprint).map_err(|e| ApiError::internal(e.to_string()))?;
    let now = meta::now_millis();
    let record = JoinTokenRecord {
        token_id: token.id.clone(),
        secret_hash: token.secret_hash(),
        description,
        created_by: ctx.principal.actor(),
        created_at: now,
        expires_at: now + ttl * 1000,
        single_use: input.single_use.unwrap_or(true),
        used_at: None,
        used_by: None,
        use_count: 0,
        revoked_at: None,
    };
    let grant = crate::node_policy::Policy {
        sandbox_slots: input.sandbox_slots,
        pod_prefixes: input.pod_prefixes,
        ..Default::default()
    };
    let granted = grant != crate::node_policy::Policy::default();
    if granted {
        // Written before the token exists, so no join can see the token without its grant.
        let doc = meta::DocRecord {
            kind: crate::node_policy::TOKEN_GRANT.into(),
            id: record.token_id.clone(),
            owner: record.token_id.clone(),
            version: 0,
            updated_at: 0,
            doc: serde_json::to_value(&grant).unwrap_or_default(),
        };
        ctx.app.meta.put_doc(&doc, 0, now).await?;
    }
    ctx.app.meta.create_join_token(&record).await?;
    ctx.audit(
        "token.create",
        &format!("token:{}", record.token_id),
        json!({"expiresAt": record.expires_at, "singleUse": record.single_use, "grant": grant}),
    )
    .await;
    let mut value = serde_json::to_value(&record).unwrap_or_default();
    if granted {
        value["grant"] = serde_json::to_value(&grant).unwrap_or_default();
    }
    value["token"] = json!(token.to_text());
    value["caFingerprint"] = json!(fingerprint);
    value["warning"] = json!("this is the only time the token is shown; give it to the edge now");
    Ok(body::json(StatusCode::CREATED, &value))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TxtRecord {
    name: String,
    value: String,
    ttl_seconds: Option<i64>,
}

/// A TXT record name: `_acme-challenge.<DNS name>` (lowercased, no final dot). Only challenge
/// names can be set, so this API cannot shadow any other name of the zone.
fn txt_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let rest = n.strip_prefix("_acme-challenge.").ok_or_else(|| {
        ApiError::bad_request(format!(
            "name {name:?}: only _acme-challenge.<name> TXT records can be set"
        ))
    })?;
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if n.len() > 253 || !rest.split('.').all(label_ok) {
        return Err(ApiError::bad_request(format!(
            "name {name:?} is not a DNS name"
        )));
    }
    Ok(n)
}

async fn put_txt(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: TxtRecord = read_json(req).await?;
    let name = txt_name(&input.name)?;
    if input.value.is_empty()
        || input.value.len() > 255
        || !input.value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(ApiError::bad_request(
            "value: 1 to 255 printable ASCII characters",
        ));
    }
    let ttl = input.ttl_seconds.unwrap_or(600);
    if !(1..=86_400).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSeconds: 1..=86400, got {ttl}"
        )));
    }
    ctx.app
        .meta
        .put_txt(&name, &input.value, meta::now_millis() + ttl * 1000)
        .await?;
    ctx.audit("dns.txt.put", &name, json!({"ttlSeconds": ttl}))
        .await;
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn delete_txt(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: TxtRecord = read_json(req).await?;
    let name = txt_name(&input.name)?;
    if !ctx.app.meta.delete_txt(&name, &input.value).await? {
        return Err(ApiError::not_found(format!(
            "no TXT record {:?} at {name}",
            input.value
        )));
    }
    ctx.audit("dns.txt.delete", &name, json!({})).await;
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The stored certificate records (never their keys) and this node's view.
async fn list_certs(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let stored = ctx.app.meta.list_certs().await?;
    let rows: Vec<_> = stored
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "names": c.names,
                "notBefore": c.not_before,
                "notAfter": c.not_after,
                "renewAt": crate::certs::renew_at(c),
                "issuedBy": c.issued_by,
                "issuedAt": c.issued_at,
            })
        })
        .collect();
    let serving = ctx.app.tls.certs.current().map(|s| {
        json!({
            "names": s.names,
            "source": s.source,
            "serial": s.serial,
            "notBefore": s.not_before,
            "notAfter": s.not_after,
        })
    });
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "certificates": rows,
            "node": ctx.app.node_id,
            "acme": ctx.app.config.acme.directory.as_deref().map(crate::certs::issuer::directory_url),
            "serving": serving,
            "manager": ctx.app.tls.status(),
            "issuedHere": ctx.app.tls.issued.load(std::sync::atomic::Ordering::Relaxed),
        }),
    ))
}

/// Records a renewal request every center sees, and wakes this one's manager.
async fn renew_certs(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    if ctx.app.config.acme.directory.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "acme_disabled",
            "this node has no ACME directory (acme.directory is not set)",
        ));
    }
    let at = meta::now_millis();
    ctx.app
        .meta
        .put_setting(crate::certs::RENEW_SETTING, &at.to_string())
        .await?;
    ctx.app.tls.wake();
    ctx.audit("certs.renew", crate::certs::CENTER, json!({}))
        .await;
    Ok(body::json(
        StatusCode::ACCEPTED,
        &json!({"requestedAt": at, "certificate": crate::certs::CENTER}),
    ))
}
