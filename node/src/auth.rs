//! API keys and the authorization seam.
//!
//! A key is `xp_<id>_<secret>`: `id` is 12 lowercase hex digits (the lookup handle, safe to
//! show), `secret` 64 lowercase hex digits. Only SHA-256 of the whole key is stored; the check
//! looks the id up and compares hashes in constant time. Keys carry scopes: `admin`, or
//! `pod:<podId>` (read and write one pod), or `pod:<podId>:read`, or `sandbox` (create and
//! manage the owner's sandboxes) / `sandbox:network` (the same, and sandboxes with outbound
//! network) / `sandbox:read` (read only, everywhere).
//!
//! [`authorize_pod`] is the one place that decides pod access, so WAC/ACP can replace it later.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xpod_storage::meta::{AccessMode, ApiKeyRecord, MetaStore, Millis};

use crate::reply::error::ApiError;

/// How often `last_used_at` is refreshed.
const TOUCH_EVERY_MS: Millis = 60_000;

/// A freshly minted key: the full secret (shown once) and its stored record.
pub struct MintedKey {
    pub full: String,
    pub record: ApiKeyRecord,
}

/// SHA-256 (hex) of a full key string.
pub fn hash_key(full: &str) -> String {
    hex::encode(Sha256::digest(full.as_bytes()))
}

/// Makes a new key. `expires_at` is absolute (Unix ms).
pub fn mint(
    name: &str,
    owner: &str,
    scopes: Vec<String>,
    now: Millis,
    expires_at: Option<Millis>,
) -> MintedKey {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let full = format!("xp_{id}_{secret}");
    let record = ApiKeyRecord {
        key_id: id,
        secret_hash: hash_key(&full),
        name: name.to_string(),
        owner: owner.to_string(),
        scopes,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    MintedKey { full, record }
}

/// Splits `xp_<id>_<secret>` and checks its shape; `None` for anything else.
pub fn parse_key(full: &str) -> Option<(&str, &str)> {
    let rest = full.strip_prefix("xp_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex_ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex_ok(id, 12) && hex_ok(secret, 64)).then_some((id, secret))
}

/// The scopes a key may carry, for messages.
pub const SCOPES: &str =
    "admin, sandbox, sandbox:network, sandbox:read, pod:<podId>, pod:<podId>:read";

/// Validates a scope string.
pub fn validate_scope(scope: &str) -> Result<(), String> {
    if matches!(
        scope,
        "admin" | "sandbox" | "sandbox:network" | "sandbox:read"
    ) {
        return Ok(());
    }
    let Some(rest) = scope.strip_prefix("pod:") else {
        return Err(format!("scope `{scope}`: expected one of {SCOPES}"));
    };
    let pod = rest.strip_suffix(":read").unwrap_or(rest);
    xpod_routing::target::validate_pod_id(pod).map_err(|e| format!("scope `{scope}`: {e}"))
}

/// Validates an owner name: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_owner(owner: &str) -> Result<(), String> {
    let ok = !owner.is_empty()
        && owner.len() <= 64
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "owner {owner:?}: expected 1–64 letters, digits, `.`, `_` or `-`"
        ))
    }
}

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Principal {
    Anonymous,
    Key(ApiKeyRecord),
    /// On an edge: a pod request its center authenticated against the cluster's keys before
    /// sending it through the tunnel (`actor` as the center saw it). `scoped`: the key's scopes
    /// cover the pod and the center authorized the request; otherwise the caller is an
    /// authenticated agent with what the edge's ACLs give anyone (refused with 403, not 401).
    Center {
        actor: String,
        scoped: bool,
    },
    /// A Solid-OIDC identity (a verified DPoP or Bearer access token): Web Access Control
    /// decides what it may do.
    WebId {
        webid: String,
        issuer: String,
        client_id: Option<String>,
    },
}

impl Principal {
    /// The actor name for the audit log (never the secret).
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Key(k) => format!("key:{}", k.key_id),
            Principal::Center { actor, .. } => format!("{actor} (via center)"),
            Principal::WebId { webid, .. } => {
                format!("webid:{}", webid.chars().take(300).collect::<String>())
            }
        }
    }
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Key(k) if k.scopes.iter().any(|s| s == "admin"))
    }
    pub fn owner(&self) -> Option<&str> {
        match self {
            Principal::Anonymous | Principal::Center { .. } | Principal::WebId { .. } => None,
            Principal::Key(k) => Some(&k.owner),
        }
    }
    /// What the key may do with its owner's sandboxes: `admin` and `sandbox` write,
    /// `sandbox:read` reads.
    pub fn sandbox_access(&self) -> Option<Access> {
        let Principal::Key(k) = self else { return None };
        let mut best = None;
        for s in &k.scopes {
            match s.as_str() {
                "admin" | "sandbox" | "sandbox:network" => return Some(Access::Write),
                "sandbox:read" => best = Some(Access::Read),
                _ => {}
            }
        }
        best
    }

    /// Whether the key may create sandboxes with network (`admin`, `sandbox:network`).
    pub fn may_use_network(&self) -> bool {
        matches!(self, Principal::Key(k) if k.scopes.iter().any(|s| s == "admin" || s == "sandbox:network"))
    }

    /// What the principal may do with pod `pod_id` by its scopes (`None`: nothing).
    pub fn pod_access(&self, pod_id: &str) -> Option<Access> {
        if let Principal::Center { scoped, .. } = self {
            // A scoped key: the center checked this pod's access already.
            return scoped.then_some(Access::Write);
        }
        let Principal::Key(k) = self else { return None };
        let mut best = None;
        for s in &k.scopes {
            if s == "admin" {
                return Some(Access::Write);
            }
            if let Some(rest) = s.strip_prefix("pod:") {
                if rest == pod_id {
                    return Some(Access::Write);
                }
                if rest.strip_suffix(":read") == Some(pod_id) {
                    best = Some(Access::Read);
                }
            }
        }
        best
    }
}

/// What a request wants to do to a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

/// The header a center sets on a pod request it sends through an edge's tunnel after
/// authorizing it: the actor it authenticated.
pub const AUTHORIZED_BY_CENTER: &str = "x-xpod-authorized";

/// The header a center sets on a pod request it sends through an edge's tunnel for an API key
/// it authenticated whose scopes do not cover the pod (a separate header: an older edge that
/// does not know it sees an anonymous request, never a scoped one).
pub const AUTHENTICATED_BY_CENTER: &str = "x-xpod-authenticated";

/// On an edge, a pod request that came through its tunnel (`hop` is set only for streams a
/// center opened over mutual TLS) with [`AUTHORIZED_BY_CENTER`] was authenticated by the center:
/// `webid:<url>` is a Solid-OIDC identity (the edge's ACLs decide), anything else an API key the
/// center authorized for the pod; [`AUTHENTICATED_BY_CENTER`] a key it authenticated without
/// the pod in its scopes. Everywhere else (centers, lone nodes, the edge's own listener) the
/// headers mean nothing.
pub fn authorized_by_center(
    role: xpod_config::Role,
    hop: Option<&xpod_routing::forward::MeshHop>,
    headers: &http::HeaderMap,
) -> Option<Principal> {
    if role != xpod_config::Role::Edge {
        return None;
    }
    hop?;
    let Some(actor) = headers.get(AUTHORIZED_BY_CENTER) else {
        let actor = headers.get(AUTHENTICATED_BY_CENTER)?.to_str().ok()?;
        return Some(Principal::Center {
            actor: actor.chars().take(120).collect(),
            scoped: false,
        });
    };
    let actor = actor.to_str().ok()?;
    if let Some(webid) = actor.strip_prefix("webid:") {
        return Some(Principal::WebId {
            webid: webid.to_string(),
            issuer: "(checked by the center)".into(),
            client_id: None,
        });
    }
    Some(Principal::Center {
        actor: actor.chars().take(120).collect(),
        scoped: true,
    })
}

/// The credentials a request presents.
#[derive(Debug)]
pub enum Presented {
    Nothing,
    /// An API key (`Authorization: Bearer xp_…`, `X-Api-Key`, or on a WebSocket upgrade the
    /// subprotocol `xpod.key.<key>`).
    Key(String),
    /// A Solid-OIDC access token (`Authorization: DPoP …` with a `DPoP` proof, or a JWT as
    /// `Bearer`).
    Oidc {
        scheme: crate::oidc::Scheme,
        token: String,
    },
}

/// What `headers` present; 401 for an `Authorization` this node cannot read.
pub fn presented(headers: &http::HeaderMap) -> Result<Presented, ApiError> {
    use crate::oidc::Scheme;
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        let token = token.trim().to_string();
        let jwt = !token.starts_with("xp_") && token.split('.').count() == 3;
        return if scheme.eq_ignore_ascii_case("dpop") {
            Ok(Presented::Oidc {
                scheme: Scheme::DPoP,
                token,
            })
        } else if scheme.eq_ignore_ascii_case("bearer") && jwt {
            Ok(Presented::Oidc {
                scheme: Scheme::Bearer,
                token,
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Presented::Key(token))
        } else {
            Err(ApiError::unauthorized(
                "Authorization must use the Bearer scheme (an API key or a Solid-OIDC token) or DPoP",
            ))
        };
    }
    if let Some(v) = headers.get("x-api-key") {
        return Ok(Presented::Key(
            v.to_str()
                .map_err(|_| ApiError::unauthorized("X-Api-Key header is not valid text"))?
                .trim()
                .to_string(),
        ));
    }
    if let Some(key) = websocket_key(headers) {
        return Ok(Presented::Key(key));
    }
    Ok(Presented::Nothing)
}

/// The subprotocol prefix that carries an API key on a WebSocket upgrade: a browser's
/// WebSocket cannot send headers, so the dashboard's terminal offers `xpod.key.<key>` next to
/// the protocol it speaks (the server answers only the latter).
pub const WEBSOCKET_KEY_PREFIX: &str = "xpod.key.";

/// The key offered as a WebSocket subprotocol, on a WebSocket upgrade request only.
fn websocket_key(headers: &http::HeaderMap) -> Option<String> {
    let upgrade = headers.get(http::header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WEBSOCKET_KEY_PREFIX))
        .map(str::to_string)
}

/// A refused Solid-OIDC credential: 401, the RFC error as the code, the finer reason in
/// the details, and the challenge in `WWW-Authenticate`.
pub fn oidc_refusal(f: &crate::solid::dpop::Failure, scheme: crate::oidc::Scheme) -> ApiError {
    ApiError::new(http::StatusCode::UNAUTHORIZED, f.error, f.message.clone())
        .with_details(serde_json::json!({"reason": f.reason}))
        .with_header(http::header::WWW_AUTHENTICATE, f.challenge(scheme.name()))
}

/// The request's principal: no credentials → `Anonymous`; an API key or a Solid-OIDC token
/// (checked for a `method` request to public URL `url`) → who it names; anything else → 401.
pub async fn authenticate_request(
    headers: &http::HeaderMap,
    method: &str,
    url: &str,
    keys: &crate::key_cache::KeyCache,
    meta: &dyn MetaStore,
    oidc: &crate::oidc::Oidc,
    now: Millis,
) -> Result<Principal, ApiError> {
    match presented(headers)? {
        Presented::Nothing => Ok(Principal::Anonymous),
        Presented::Key(full) => check_key(&full, keys, meta, now).await,
        Presented::Oidc { scheme, token } => {
            let proof = headers.get("dpop").and_then(|v| v.to_str().ok());
            let id = oidc
                .authenticate(scheme, &token, proof, method, url, now / 1000)
                .await
                .map_err(|f| oidc_refusal(&f, scheme))?;
            Ok(Principal::WebId {
                webid: id.webid,
                issuer: id.issuer,
                client_id: id.client_id,
            })
        }
    }
}

/// Finds the key in `Authorization: Bearer` or `X-Api-Key` and checks it. No credentials →
/// `Anonymous`; bad, unknown, revoked or expired credentials → 401. (Solid-OIDC tokens are
/// checked only where a pod is served: [`authenticate_request`].)
pub async fn authenticate(
    headers: &http::HeaderMap,
    keys: &crate::key_cache::KeyCache,
    meta: &dyn MetaStore,
    now: Millis,
) -> Result<Principal, ApiError> {
    match presented(headers)? {
        Presented::Nothing => Ok(Principal::Anonymous),
        Presented::Key(full) => check_key(&full, keys, meta, now).await,
        Presented::Oidc { .. } => Err(ApiError::unauthorized(
            "Solid-OIDC tokens are not accepted here; use an API key",
        )),
    }
}

async fn check_key(
    full: &str,
    keys: &crate::key_cache::KeyCache,
    meta: &dyn MetaStore,
    now: Millis,
) -> Result<Principal, ApiError> {
    let invalid = || ApiError::unauthorized("invalid API key");
    let (id, _) = parse_key(full)
        .ok_or_else(|| ApiError::unauthorized("malformed API key: expected xp_<id>_<secret>"))?;
    let record = keys.get(meta, id).await?.ok_or_else(invalid)?;
    let presented_hash = hash_key(full);
    if !bool::from(
        presented_hash
            .as_bytes()
            .ct_eq(record.secret_hash.as_bytes()),
    ) {
        return Err(invalid());
    }
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthorized("API key revoked"));
    }
    if record.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthorized("API key expired"));
    }
    // Best effort and at most once a minute per key: a write (and an fsync) on every
    // authenticated GET would cost more than the GET. A failure must not fail the request.
    if record
        .last_used_at
        .is_none_or(|t| now - t >= TOUCH_EVERY_MS)
    {
        keys.touched(&record.key_id, now);
        if let Err(e) = meta.touch_api_key(&record.key_id, now).await {
            tracing::debug!(error = %e, "could not record key use");
        }
    }
    Ok(Principal::Key(record))
}

/// Requires an admin key: 401 without credentials, 403 with a non-admin key.
pub fn require_admin(p: &Principal) -> Result<(), ApiError> {
    match p {
        Principal::Anonymous => Err(ApiError::unauthorized("an admin API key is required")),
        _ if p.is_admin() => Ok(()),
        _ => Err(ApiError::forbidden("this API key lacks the admin scope")),
    }
}

/// The authorization seam for pod resources.
pub fn authorize_pod(
    p: &Principal,
    pod_id: &str,
    mode: AccessMode,
    want: Access,
) -> Result<(), ApiError> {
    let public = matches!(
        (mode, want),
        (AccessMode::PublicReadWrite, _) | (AccessMode::PublicRead, Access::Read)
    );
    if public {
        return Ok(());
    }
    match p.pod_access(pod_id) {
        Some(have) if have >= want => Ok(()),
        Some(_) => Err(ApiError::forbidden(format!(
            "this API key may only read pod {pod_id}"
        ))),
        None if matches!(p, Principal::Anonymous) => Err(ApiError::unauthorized(format!(
            "pod {pod_id} is private: an API key with access to it is required"
        ))),
        None => Err(ApiError::forbidden(format!(
            "this API key has no access to pod {pod_id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_may_offer_its_key_as_a_subprotocol_and_nothing_else_may() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "xpod.terminal, xpod.key.xp_abc_def".parse().unwrap(),
        );
        // Not an upgrade: the header means nothing.
        assert!(matches!(presented(&h).unwrap(), Presented::Nothing));
        h.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        assert!(matches!(presented(&h).unwrap(), Presented::Key(k) if k == "xp_abc_def"));
        // A header key wins over the subprotocol.
        h.insert("x-api-key", "xp_other_key".parse().unwrap());
        assert!(matches!(presented(&h).unwrap(), Presented::Key(k) if k == "xp_other_key"));
    }

    #[test]
    fn mint_and_parse() {
        let k = mint("ci", "admin", vec!["admin".into()], 1, None);
        let (id, secret) = parse_key(&k.full).unwrap();
        assert_eq!(id, k.record.key_id);
        assert_eq!(secret.len(), 64);
        assert_eq!(k.record.secret_hash, hash_key(&k.full));
        assert!(!k.record.secret_hash.contains(secret));
        for bad in [
            "",
            "xp_",
            "xp_abc_def",
            "yp_0123456789ab_",
            &k.full.to_uppercase(),
            &format!("{}0", k.full),
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn scopes_and_access() {
        assert!(validate_scope("admin").is_ok());
        assert!(validate_scope("pod:alice").is_ok());
        assert!(validate_scope("pod:alice:read").is_ok());
        assert!(validate_scope("pod:Alice").is_err());
        assert!(validate_scope("root").is_err());
        let reader = Principal::Key(mint("r", "o", vec!["pod:alice:read".into()], 0, None).record);
        let writer = Principal::Key(mint("w", "o", vec!["pod:alice".into()], 0, None).record);
        let private = AccessMode::Private;
        assert!(authorize_pod(&reader, "alice", private, Access::Read).is_ok());
        assert_eq!(
            authorize_pod(&reader, "alice", private, Access::Write)
                .unwrap_err()
                .status,
            403
        );
        assert!(authorize_pod(&writer, "alice", private, Access::Write).is_ok());
        assert_eq!(
            authorize_pod(&writer, "bob", private, Access::Read)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            authorize_pod(&Principal::Anonymous, "alice", private, Access::Read)
                .unwrap_err()
                .status,
            401
        );
        assert!(authorize_pod(
            &Principal::Anonymous,
            "alice",
            AccessMode::PublicRead,
            Access::Read
        )
        .is_ok());
        assert_eq!(
            authorize_pod(
                &Principal::Anonymous,
                "alice",
                AccessMode::PublicRead,
                Access::Write
            )
            .unwrap_err()
            .status,
            401
        );
        assert!(authorize_pod(
            &Principal::Anonymous,
            "alice",
            AccessMode::PublicReadWrite,
            Access::Write
        )
        .is_ok());
    }
}
