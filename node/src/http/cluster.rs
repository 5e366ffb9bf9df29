//! The cluster API under `/.cluster` (admin key on every route, but a pod's owner may read its
//! record and move it onto and off edges):
//! `GET/POST /pods`, `GET /pods/{podId}`, `POST /pods/{podId}/migrate` (in [`super::migrate`]),
//! `GET /routes/{podId}` (this node's owner-table entry, for diagnosing routing), `GET /nodes`,
//! `GET /nodes/{nodeId}` (with its policy), `PATCH /nodes/{nodeId}` and
//! `POST /nodes/{nodeId}/revoke` (in [`super::node_admin`]), `GET /nodes/{nodeId}/terminal`
//! (a terminal on an edge: [`super::terminal`]),
//! `GET/POST /tokens`, `DELETE /tokens/{tokenId}` (join tokens for edges),
//! `POST /dns/txt {name, value, ttlSeconds}`, `DELETE /dns/txt {name, value}`,
//! `GET /dns/txt/{name}` (`_acme-challenge.*` TXT records the centers' DNS serves, for ACME
//! DNS-01 by any client), `GET /certs` (the certificates in the store and what this node
//! serves), `POST /certs/renew` (the centers' certificate is renewed now, by whichever center
//! takes the ACME lease).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::{self, AccessMode, JoinTokenRecord, NewPod, PodRecord};
use xpod_tunnel::identity::JoinToken;

use super::{read_json, segments, Ctx};
use crate::api_types::cluster::{
    Certs, CreatePod, CreateToken, CreatedToken, DnsRecord, DnsRecords, NodeList, NodeView,
    PodList, RenewRequested, RouteView, ServedCert, StoredCert, TokenList, TxtRecord, TxtValues,
};
use crate::api_types::ErrorBody;
use crate::auth::require_admin;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    // A pod's owner may move it onto and off their edges, and follow the move: those two
    // check who may themselves.
    match (segments(rest).as_slice(), &method) {
        (["pods", pod_id, "migrate"], &Method::POST) => {
            let pod_id = pod_id.to_string();
            return super::migrate::migrate_pod(ctx, &pod_id, req).await;
        }
        (["pods", pod_id], &Method::GET) => return get_pod(ctx, pod_id).await,
        _ => {}
    }
    require_admin(&ctx.principal)?;
    match (segments(rest).as_slice(), &method) {
        (["pods"], &Method::GET) => list_pods(ctx).await,
        (["pods"], &Method::POST) => create_pod(ctx, req).await,
        (["pods"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["pods", _], _) => Err(ApiError::method_not_allowed("GET")),
        (["pods", _, "migrate"], _) => Err(ApiError::method_not_allowed("POST")),
        (["routes", pod_id], &Method::GET) => Ok(route(ctx, pod_id)),
        (["routes", _], _) => Err(ApiError::method_not_allowed("GET")),
        (["nodes"], &Method::GET) => list_nodes(ctx).await,
        (["nodes", node_id], &Method::GET) => get_node(ctx, node_id).await,
        (["nodes", node_id], &Method::PATCH) => {
            let node_id = node_id.to_string();
            super::node_admin::set_policy(ctx, &node_id, req).await
        }
        (["nodes", node_id, "revoke"], &Method::POST) => {
            let node_id = node_id.to_string();
            super::node_admin::revoke_node(ctx, &node_id).await
        }
        (["nodes", _, "revoke"], _) => Err(ApiError::method_not_allowed("POST")),
        (["nodes", node_id, "terminal"], &Method::GET) => {
            let node_id = node_id.to_string();
            node_terminal(ctx, &node_id, req).await
        }
        (["nodes", _, "terminal"], _) => Err(ApiError::method_not_allowed("GET")),
        (["nodes"], _) => Err(ApiError::method_not_allowed("GET")),
        (["nodes", _], _) => Err(ApiError::method_not_allowed("GET, PATCH")),
        (["tokens"], &Method::GET) => list_tokens(ctx).await,
        (["tokens"], &Method::POST) => create_token(ctx, req).await,
        (["tokens"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["tokens", id], &Method::DELETE) => revoke_token(ctx, id).await,
        (["tokens", _], _) => Err(ApiError::method_not_allowed("DELETE")),
        (["dns", "records"], &Method::GET) => dns_records(ctx).await,
        (["dns", "records"], _) => Err(ApiError::method_not_allowed("GET")),
        (["certs"], &Method::GET) => list_certs(ctx).await,
        (["certs"], _) => Err(ApiError::method_not_allowed("GET")),
        (["certs", "renew"], &Method::POST) => renew_certs(ctx).await,
        (["certs", "renew"], _) => Err(ApiError::method_not_allowed("POST")),
        (["dns", "txt"], &Method::POST) => put_txt(ctx, req).await,
        (["dns", "txt"], &Method::DELETE) => delete_txt(ctx, req).await,
        (["dns", "txt"], _) => Err(ApiError::method_not_allowed("POST, DELETE")),
        (["dns", "txt", name], &Method::GET) => get_txt(ctx, name).await,
        (["dns", "txt", _], _) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!(
            "no cluster API at /.cluster{rest}"
        ))),
    }
}

/// A terminal on an edge device, over a WebSocket (as `/api/v1/sandboxes/{id}/terminal`):
/// only when the edge's own configuration allows it (`[tunnel] terminal = true`).
#[utoipa::path(get, path = "/.cluster/nodes/{nodeId}/terminal", operation_id = "nodeTerminal", tag = "cluster",
    params(
        ("nodeId" = String, Path, description = "An edge"),
        ("cmd" = Option<Vec<String>>, Query, description = "The program, then each argument (repeated); none: the shell"),
        ("cwd" = Option<String>, Query, description = "Working directory (absolute; default: the home directory of the user xpod runs as)"),
        ("rows" = Option<u16>, Query, description = "Window rows, 1..=1000 (default 24)", minimum = 1, maximum = 1000),
        ("cols" = Option<u16>, Query, description = "Window columns, 1..=1000 (default 80)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 101, description = "A WebSocket carrying the terminal"),
        (status = 400, description = "A bad query, or a program the edge cannot run (`terminal_refused`)", body = ErrorBody),
        (status = 403, description = "`terminal_disabled`: the edge does not allow terminals", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is a center", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 429, description = "`too_many_terminals`: the edge runs as many as it may", body = ErrorBody),
        (status = 503, description = "The edge cannot be reached", body = ErrorBody),
    ))]
async fn node_terminal(
    ctx: &Ctx,
    node_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    super::terminal::node(ctx, node_id, req).await
}

/// Creates a pod, owned by this node or by `nodeId`.
#[utoipa::path(post, path = "/.cluster/pods", operation_id = "createPod", tag = "cluster",
    request_body = CreatePod,
    responses(
        (status = 201, description = "Created (Location: /.cluster/pods/{podId})", body = PodRecord),
        (status = 409, description = "The pod exists", body = ErrorBody),
    ))]
async fn create_pod(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreatePod = read_json(req).await?;
    xpod_routing::target::validate_pod_id(&input.pod_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let access_mode = input.access_mode.unwrap_or(AccessMode::Private);
    if let Some(account) = &input.account_id {
        crate::api_types::cluster::check_account(account).map_err(ApiError::bad_request)?;
    }
    let new = NewPod {
        pod_id: input.pod_id.clone(),
        base_url: ctx.app.pod_base_url(&input.pod_id),
        account_id: input
            .account_id
            .or_else(|| ctx.principal.owner().map(str::to_string)),
        node_id: match &input.node_id {
            None => ctx.app.node_id.clone(),
            Some(n) => {
                xpod_config::validate_node_id(n)
                    .map_err(|e| ApiError::bad_request(format!("nodeId: {e}")))?;
                if ctx.app.meta.get_node(n).await?.is_none() {
                    return Err(ApiError::not_found(format!(
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
    let mut resp = body::json(StatusCode::CREATED, &pod);
    if let Ok(v) = http::HeaderValue::from_str(&format!("/.cluster/pods/{}", pod.pod_id)) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}

/// Longest join-token lifetime (30 days) and the default (24 h).
const MAX_TOKEN_TTL: i64 = 30 * 86_400;
const DEFAULT_TOKEN_TTL: i64 = 86_400;

/// Creates a join token for an edge: the secret and the CA fingerprint, shown once; stored hashed.
#[utoipa::path(post, path = "/.cluster/tokens", operation_id = "createJoinToken", tag = "cluster",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token `xpt_<id>.<secret>.<CA fingerprint>`, shown once", body = CreatedToken),
        (status = 409, description = "This node has no cluster CA", body = ErrorBody),
    ))]
async fn create_token(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreateToken = read_json(req).await?;
    let ttl = input.ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
    if !(60..=MAX_TOKEN_TTL).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSeconds {ttl}: expected 60..={MAX_TOKEN_TTL}"
        )));
    }
    crate::node_policy::validate_grant(
        input.sandbox_slots,
        &input.pod_prefixes,
        &input.accept_pods,
    )
    .map_err(ApiError::bad_request)?;
    let description = input.description.unwrap_or_default();
    crate::api_types::printable("description", &description, 200).map_err(ApiError::bad_request)?;
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
        accept_pods: input.accept_pods,
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
    let created = CreatedToken {
        record,
        grant: granted.then_some(grant),
        token: token.to_text(),
        ca_fingerprint: fingerprint,
        warning: "this is the only time the token is shown; give it to the edge now".into(),
    };
    Ok(body::json(StatusCode::CREATED, &created))
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

/// Adds or renews an `_acme-challenge` TXT record that every center's DNS serves.
#[utoipa::path(post, path = "/.cluster/dns/txt", operation_id = "putTxt", tag = "cluster",
    request_body = TxtRecord,
    responses((status = 204, description = "Stored")))]
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

/// Removes an `_acme-challenge` TXT record.
#[utoipa::path(delete, path = "/.cluster/dns/txt", operation_id = "deleteTxt", tag = "cluster",
    request_body = TxtRecord,
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such record", body = ErrorBody),
    ))]
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
#[utoipa::path(get, path = "/.cluster/certs", operation_id = "listCerts", tag = "cluster",
    responses((status = 200, description = "The certificates", body = Certs)))]
async fn list_certs(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let stored = ctx.app.meta.list_certs().await?;
    let certificates = stored
        .iter()
        .map(|c| StoredCert {
            id: c.id.clone(),
            names: c.names.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            renew_at: crate::certs::renew_at(c),
            issued_by: c.issued_by.clone(),
            issued_at: c.issued_at,
        })
        .collect();
    let serving = ctx.app.tls.certs.current().map(|s| ServedCert {
        names: s.names.clone(),
        source: s.source.as_str().into(),
        serial: s.serial.clone(),
        not_before: s.not_before,
        not_after: s.not_after,
    });
    let certs = Certs {
        certificates,
        node: ctx.app.node_id.clone(),
        acme: ctx
            .app
            .config
            .acme
            .directory
            .as_deref()
            .map(crate::certs::issuer::directory_url),
        serving,
        manager: ctx.app.tls.status(),
        issued_here: ctx
            .app
            .tls
            .issued
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    Ok(body::json(StatusCode::OK, &certs))
}

/// Records a renewal request every center sees, and wakes this one's manager.
#[utoipa::path(post, path = "/.cluster/certs/renew", operation_id = "renewCerts", tag = "cluster",
    responses(
        (status = 202, description = "Requested: whichever center takes the ACME lease orders it; all serve it within seconds", body = RenewRequested),
        (status = 409, description = "`acme_disabled`: this node has no ACME directory", body = ErrorBody),
    ))]
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
    let requested = RenewRequested {
        requested_at: at,
        certificate: crate::certs::CENTER.into(),
    };
    Ok(body::json(StatusCode::ACCEPTED, &requested))
}

/// Every pod.
#[utoipa::path(get, path = "/.cluster/pods", operation_id = "listPods", tag = "cluster",
    responses((status = 200, description = "The pods", body = PodList)))]
async fn list_pods(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let pods = ctx.app.meta.list_pods().await?;
    Ok(body::json(StatusCode::OK, &PodList { pods }))
}

/// A pod: its owner node, epoch, access mode and migration state. For an admin, or the pod's
/// owner (a key of its account with access to it: `xpod pods migrate --wait` follows a move).
#[utoipa::path(get, path = "/.cluster/pods/{podId}", operation_id = "getPod", tag = "cluster",
    params(("podId" = String, Path)),
    responses(
        (status = 200, description = "The pod", body = PodRecord),
        (status = 401, description = "No API key", body = ErrorBody),
        (status = 403, description = "Neither an admin key nor one of the pod's owner", body = ErrorBody),
        (status = 404, description = "No such pod", body = ErrorBody),
    ))]
async fn get_pod(ctx: &Ctx, pod_id: &str) -> Result<Response<Body>, ApiError> {
    if ctx.principal.is_admin() {
        return match ctx.app.meta.get_pod(pod_id).await? {
            Some(pod) => Ok(body::json(StatusCode::OK, &pod)),
            None => Err(ApiError::not_found(format!("pod {pod_id} not found"))),
        };
    }
    require_admin(&ctx.principal).or_else(|e| match ctx.principal.pod_access(pod_id) {
        Some(_) => Ok(()),
        None => Err(e),
    })?;
    match ctx.app.meta.get_pod(pod_id).await? {
        Some(pod)
            if pod.account_id.is_some() && ctx.principal.owner() == pod.account_id.as_deref() =>
        {
            Ok(body::json(StatusCode::OK, &pod))
        }
        _ => Err(ApiError::forbidden(format!(
            "pod {pod_id}: only an admin key or a key of the pod's owner may read its record"
        ))),
    }
}

/// This node's owner-table entry for a pod (for diagnosing routing).
#[utoipa::path(get, path = "/.cluster/routes/{podId}", operation_id = "getRoute", tag = "cluster",
    params(("podId" = String, Path)),
    responses((status = 200, description = "The entry", body = RouteView)))]
fn route(ctx: &Ctx, pod_id: &str) -> Response<Body> {
    let cached = ctx.app.owners.peek(pod_id);
    let view = RouteView {
        pod_id: pod_id.to_string(),
        node: ctx.app.node_id.clone(),
        cached: cached.is_some(),
        owner: cached.as_ref().map(|o| o.node_id.clone()),
        epoch: cached.as_ref().map(|o| o.epoch),
        mesh_peers: ctx.app.mesh.live_peers(),
    };
    body::json(StatusCode::OK, &view)
}

/// Every node: role, region, status, last heartbeat, capacity, version.
#[utoipa::path(get, path = "/.cluster/nodes", operation_id = "listNodes", tag = "cluster",
    responses((status = 200, description = "The nodes", body = NodeList)))]
async fn list_nodes(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let nodes = ctx.app.meta.list_nodes().await?;
    Ok(body::json(StatusCode::OK, &NodeList { nodes }))
}

/// A node and what the cluster grants it.
#[utoipa::path(get, path = "/.cluster/nodes/{nodeId}", operation_id = "getNode", tag = "cluster",
    params(("nodeId" = String, Path)),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 404, description = "No such node", body = ErrorBody),
    ))]
async fn get_node(ctx: &Ctx, node_id: &str) -> Result<Response<Body>, ApiError> {
    let node = ctx
        .app
        .meta
        .get_node(node_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("node {node_id} not found")))?;
    let (policy, _) = crate::node_policy::load(ctx.app.meta.as_ref(), node_id)
        .await
        .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
    Ok(body::json(StatusCode::OK, &NodeView { node, policy }))
}

/// Every join token, never a secret.
#[utoipa::path(get, path = "/.cluster/tokens", operation_id = "listJoinTokens", tag = "cluster",
    responses((status = 200, description = "The tokens", body = TokenList)))]
async fn list_tokens(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let tokens = ctx.app.meta.list_join_tokens().await?;
    Ok(body::json(StatusCode::OK, &TokenList { tokens }))
}

/// Revokes a join token.
#[utoipa::path(delete, path = "/.cluster/tokens/{tokenId}", operation_id = "revokeJoinToken", tag = "cluster",
    params(("tokenId" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = ErrorBody),
    ))]
async fn revoke_token(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
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

/// The DNS zone as this center serves it now (SOA, NS, centers, pods, edges).
#[utoipa::path(get, path = "/.cluster/dns/records", operation_id = "dnsRecords", tag = "cluster",
    responses(
        (status = 200, description = "The zone", body = DnsRecords),
        (status = 404, description = "This node serves no DNS zone", body = ErrorBody),
    ))]
async fn dns_records(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
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
    let records = records
        .iter()
        .map(|r| DnsRecord {
            name: r.name.to_ascii(),
            kind: r.record_type().to_string(),
            ttl: r.ttl,
            data: r.data.to_string(),
        })
        .collect();
    let zone = ctx.app.config.dns.zone.clone();
    Ok(body::json(StatusCode::OK, &DnsRecords { zone, records }))
}

/// The TXT values at a challenge name.
#[utoipa::path(get, path = "/.cluster/dns/txt/{name}", operation_id = "getTxt", tag = "cluster",
    params(("name" = String, Path, pattern = r"^_acme-challenge(\.[A-Za-z0-9_-]{1,63})+\.?$", description = "`_acme-challenge.<DNS name>`")),
    responses((status = 200, description = "The values", body = TxtValues)))]
async fn get_txt(ctx: &Ctx, name: &str) -> Result<Response<Body>, ApiError> {
    let name = txt_name(name)?;
    let values = ctx.app.meta.list_txt(&name).await?;
    Ok(body::json(StatusCode::OK, &TxtValues { name, values }))
}
