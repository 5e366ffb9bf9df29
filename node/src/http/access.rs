//! Who may do what to a pod resource (issue 17, Web Access Control).
//!
//! - API keys keep their scopes: `admin` and `pod:<id>` have every mode (Control too),
//!   `pod:<id>:read` reads. A center that authorized a request for its edge has every mode.
//! - Everyone else (anonymous, a WebID from Solid-OIDC) gets what the effective ACL
//!   grants: the resource's own `.acl`, else the nearest container's (`acl:default`), else the
//!   pod's default ([`wac::default_root_acl`]: the owner WebID given at creation, and the pod's
//!   access mode as a public authorization). An `.acl` is read and written with Control on the
//!   resource it belongs to, and only with it.
//! - Refused: 401 without an identity (or with credentials that were not accepted: their
//!   reason), else 403; both carry `WAC-Allow`.
//!
//! Effective ACLs are cached ([`crate::acl_cache`]); a write or delete of an `.acl` drops the
//! pod's entries ([`acl_changed`]).

use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{Method, Request, StatusCode};
use xpod_storage::meta::{AccessMode, PodRecord};

use super::resource;
pub use super::resource::{acl_link, acl_path, acl_subject};
use super::Ctx;
use crate::acl_cache::Effective;
use crate::auth::{Access, Principal};
use crate::reply::error::ApiError;
use crate::solid::rdf::{self, Format};
use crate::solid::wac::{self, Acl, Agent, Applies, Modes, NoGroups};

pub const WAC_ALLOW: HeaderName = HeaderName::from_static("wac-allow");

/// What the caller and the public may do with one resource.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub user: Modes,
    pub public: Modes,
}

impl Decision {
    pub fn header(&self) -> String {
        wac::wac_allow(self.user, self.public)
    }
}

pub use super::ldp::parent;

fn default_public(mode: AccessMode) -> Modes {
    match mode {
        AccessMode::Private => Modes::default(),
        AccessMode::PublicRead => Modes::READ,
        AccessMode::PublicReadWrite => Modes::READ.union(Modes::WRITE),
    }
}

/// The owner WebID of a pod: its `accountId` when that is an http(s) IRI.
fn owner_webid(pod: &PodRecord) -> Option<&str> {
    pod.account_id
        .as_deref()
        .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
}

/// The pod's default ACL (no `.acl` up to the root), as Turtle relative to its root.
pub fn default_acl_turtle(pod: &PodRecord) -> String {
    wac::default_root_acl(owner_webid(pod), default_public(pod.access_mode))
}

/// The effective ACL of `path`, from the cache or the store.
async fn effective(
    ctx: &Ctx,
    pod: &PodRecord,
    base: &str,
    path: &str,
) -> Result<Arc<Effective>, ApiError> {
    let app = &ctx.app;
    let ticket = match app.acls.get(&pod.pod_id, base, path) {
        Ok(e) => return Ok(e),
        Err(t) => t,
    };
    let mut candidates = vec![(path.to_string(), true)];
    let mut at = path.to_string();
    while let Some(p) = parent(&at) {
        candidates.push((p.clone(), false));
        at = p;
    }
    let mut found = None;
    for (resource, own) in candidates {
        let acl_at = acl_path(&resource);
        let Some(rec) = app.meta.get_resource(&pod.pod_id, &acl_at).await? else {
            continue;
        };
        let url = format!("{base}{}", xpod_routing::encode_path(&resource));
        let acl_url = format!("{base}{}", xpod_routing::encode_path(&acl_at));
        let format = rec
            .content_type
            .as_deref()
            .and_then(Format::of_media_type)
            .unwrap_or(Format::Turtle);
        let acl = match resource::read_all(ctx, &rec)
            .await
            .map(|b| rdf::parse(&b, format, &acl_url))
        {
            Ok(Ok(g)) => Acl::from_graph(&g),
            // An ACL that cannot be read grants nothing (and says so in the log).
            Ok(Err(e)) => {
                tracing::warn!(pod = %pod.pod_id, acl = %acl_at, error = %e, "unreadable ACL: it grants nothing");
                Acl::default()
            }
            Err(e) => return Err(e),
        };
        found = Some(Effective {
            acl: Arc::new(acl),
            default: false,
            own,
            url,
        });
        break;
    }
    let e = Arc::new(match found {
        Some(e) => e,
        None => {
            let acl_url = format!("{base}/.acl");
            let acl = rdf::parse(default_acl_turtle(pod).as_bytes(), Format::Turtle, &acl_url)
                .map(|g| Acl::from_graph(&g))
                .map_err(|e| ApiError::internal(format!("the pod's default ACL: {e}")))?;
            Effective {
                acl: Arc::new(acl),
                default: true,
                own: path == "/",
                url: format!("{base}/"),
            }
        }
    });
    app.acls.insert(ticket, &pod.pod_id, base, path, e.clone());
    Ok(e)
}

fn applies(e: &Effective) -> Applies<'_> {
    if e.own {
        Applies::Own(&e.url)
    } else {
        Applies::Inherited(&e.url)
    }
}

/// The modes `agent` has under `e`, `groups` holding the groups it was found a member of.
fn modes_under(e: &Effective, agent: Agent<'_>, groups: &dyn wac::Groups) -> Modes {
    e.acl.modes(applies(e), agent, groups)
}

/// Group documents read per decision at most.
pub const MAX_GROUP_DOCS: usize = 8;

/// Groups (named by `acl:agentGroup` in `e`) that `webid` is a `vcard:hasMember` of, read
/// from their documents: in this pod from the store, elsewhere over HTTP (`crate::oidc`, which
/// never reaches private addresses unless allowed).
async fn member_groups(
    ctx: &Ctx,
    pod: &PodRecord,
    base: &str,
    e: &Effective,
    webid: &str,
) -> Result<MemberOf, ApiError> {
    let mut member_of = std::collections::HashSet::new();
    let groups = e.acl.groups(applies(e));
    // Groups of other servers: their documents, fetched (and cached) by `crate::oidc`.
    for g in groups
        .iter()
        .filter(|g| !g.starts_with(base))
        .take(MAX_GROUP_DOCS)
    {
        if ctx.app.oidc.group_has_member(g, webid).await {
            member_of.insert(g.clone());
        }
    }
    let mut docs: Vec<String> = groups
        .into_iter()
        .filter_map(|g| {
            g.strip_prefix(base)
                .map(|rest| rest.split('#').next().unwrap_or("").to_string())
        })
        .collect();
    docs.sort();
    docs.dedup();
    for doc in docs.into_iter().take(MAX_GROUP_DOCS) {
        let Ok(path) = xpod_routing::parse_resource_path(&doc) else {
            continue;
        };
        let Some(rec) = ctx.app.meta.get_resource(&pod.pod_id, &path).await? else {
            continue;
        };
        let Some(format) = rec.content_type.as_deref().and_then(Format::of_media_type) else {
            continue;
        };
        let url = format!("{base}{doc}");
        let Ok(Ok(graph)) = resource::read_all(ctx, &rec)
            .await
            .map(|b| rdf::parse(&b, format, &url))
        else {
            continue;
        };
        let has_member =
            oxrdf::NamedNodeRef::new_unchecked("http://www.w3.org/2006/vcard/ns#hasMember");
        let Ok(member) = oxrdf::NamedNodeRef::new(webid) else {
            continue;
        };
        for s in graph.subjects_for_predicate_object(has_member, member) {
            if let oxrdf::NamedOrBlankNodeRef::NamedNode(g) = s {
                member_of.insert(g.as_str().to_string());
            }
        }
    }
    Ok(MemberOf(member_of))
}

struct MemberOf(std::collections::HashSet<String>);

impl wac::Groups for MemberOf {
    fn has_member(&self, group: &str, _webid: &str) -> bool {
        self.0.contains(group)
    }
}

/// What the key or center principal may do regardless of ACLs, if it is one.
fn by_scope(ctx: &Ctx, pod: &PodRecord) -> Option<Modes> {
    match &ctx.principal {
        Principal::Center { scoped: true, .. } => Some(Modes::ALL),
        Principal::Center { scoped: false, .. } => None,
        Principal::Key(_) => match ctx.principal.pod_access(&pod.pod_id) {
            Some(Access::Write) => Some(Modes::ALL),
            Some(Access::Read) => Some(Modes::READ),
            None => None,
        },
        Principal::Anonymous | Principal::WebId { .. } => None,
    }
}

/// The base URL of the pod as this request addresses it (`scheme://host[/<pod>]`).
pub fn base_of<B>(ctx: &Ctx, pod: &PodRecord, req: &Request<B>) -> String {
    let mount = resource::mount_of(ctx, &pod.pod_id, req.headers());
    format!("{}{mount}", resource::origin(req))
}

/// The `Origin` of a browser request from another origin than the one it addressed (and not
/// one of `[solid] trusted_origins`).
fn foreign_origin<B>(ctx: &Ctx, req: &Request<B>) -> Option<String> {
    let origin = req.headers().get(header::ORIGIN)?.to_str().ok()?.trim();
    let own = resource::origin(req);
    let trusted = origin.eq_ignore_ascii_case(&own)
        || ctx
            .app
            .config
            .solid
            .trusted_origins
            .iter()
            .any(|t| t.trim_end_matches('/').eq_ignore_ascii_case(origin));
    (!trusted).then(|| origin.to_string())
}

/// What the caller and the public may do with `path` (for an `.acl`: Control on its subject
/// decides everything).
pub async fn decide<B>(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    req: &Request<B>,
) -> Result<Decision, ApiError> {
    let base = base_of(ctx, pod, req);
    let (subject, is_acl) = match acl_subject(path) {
        Some(s) => (s, true),
        None => (path, false),
    };
    let e = effective(ctx, pod, &base, subject).await?;
    let origin = foreign_origin(ctx, req);
    let webid = match &ctx.principal {
        Principal::WebId { webid, .. } => Some(webid.as_str()),
        _ => None,
    };
    let agent = Agent {
        webid,
        origin: origin.as_deref(),
    };
    let public = modes_under(&e, Agent::default(), &NoGroups);
    let user = match (by_scope(ctx, pod), webid) {
        (Some(m), _) => m,
        (None, Some(w)) => {
            let groups = member_groups(ctx, pod, &base, &e, w).await?;
            modes_under(&e, agent, &groups)
        }
        (None, None) => modes_under(&e, agent, &NoGroups),
    };
    Ok(if is_acl {
        // Control on the subject is every mode on its ACL; nothing else is.
        let c = |m: Modes| {
            if m.control {
                Modes::ALL
            } else {
                Modes::default()
            }
        };
        Decision {
            user: c(user),
            public: c(public),
        }
    } else {
        Decision { user, public }
    })
}

/// Refuses unless `d` covers `need`: 401 for an anonymous caller (or the reason its
/// credentials were not accepted), 403 otherwise; both with `WAC-Allow`.
pub fn require(ctx: &Ctx, d: &Decision, need: Modes, what: &str) -> Result<(), ApiError> {
    if d.user.covers(need) {
        return Ok(());
    }
    let wanted = need.words();
    let err = if matches!(ctx.principal, Principal::Anonymous) {
        ctx.rejected.clone().unwrap_or_else(|| {
            ApiError::unauthorized(format!(
                "{what} needs {wanted} access, which is not public: authenticate (an API key, or a Solid-OIDC token)"
            ))
            .with_header(
                header::WWW_AUTHENTICATE,
                format!("DPoP algs=\"{}\"", crate::solid::dpop::ALGS_PARAM),
            )
        })
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs {wanted} access, which the ACL does not grant you"),
        )
    };
    // Added to what the error already says (a refused token's reason stays).
    let mut details = match err.details.clone() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    details.insert("need".into(), wanted.into());
    details.insert("wacAllow".into(), d.header().into());
    Err(err
        .with_details(serde_json::Value::Object(details))
        .with_header(WAC_ALLOW, d.header()))
}

/// The modes a method needs on its target (besides what a create needs on the container,
/// checked by the handler that knows whether the target exists).
pub fn needs(method: &Method) -> Modes {
    match *method {
        Method::GET | Method::HEAD => Modes::READ,
        Method::POST => Modes::APPEND,
        _ => Modes::WRITE,
    }
}

/// Checks `need` on `path`'s container (a create, a delete).
pub async fn require_on_parent<B>(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    req: &Request<B>,
    need: Modes,
) -> Result<(), ApiError> {
    let Some(container) = parent(path) else {
        return Ok(());
    };
    let d = decide(ctx, pod, &container, req).await?;
    require(
        ctx,
        &d,
        need,
        &format!("changing the members of {container}"),
    )
}

/// After a write or delete of `path`: an `.acl` drops the pod's cached decisions.
pub fn acl_changed(ctx: &Ctx, pod_id: &str, path: &str) {
    if acl_subject(path).is_some() {
        ctx.app.acls.invalidate(pod_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_paths_and_parents() {
        assert_eq!(acl_path("/a/b"), "/a/b.acl");
        assert_eq!(acl_path("/a/"), "/a/.acl");
        assert_eq!(acl_subject("/a/.acl"), Some("/a/"));
        assert_eq!(acl_subject("/a/b.acl"), Some("/a/b"));
        assert_eq!(acl_subject("/a/b"), None);
        assert_eq!(parent("/a/b"), Some("/a/".into()));
        assert_eq!(parent("/a/b/"), Some("/a/".into()));
        assert_eq!(parent("/a"), Some("/".into()));
        assert_eq!(parent("/"), None);
        assert_eq!(acl_link("/a/b c"), "<b%20c.acl>; rel=\"acl\"");
        assert_eq!(acl_link("/a/"), "<.acl>; rel=\"acl\"");
    }
}
