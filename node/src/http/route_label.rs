//! The `route` label of the request metrics: a path template, from a bounded set whatever
//! clients send (`/.cluster/pods/{id}/migrate`, `/{pod}`, `edge-service`, …). A segment is
//! kept only if it is one of the APIs' own words; anything else is `{id}`, and paths deeper
//! than the APIs go are cut at [`MAX_SEGMENTS`].

use xpod_routing::{OpsRoute, Target};

/// The literal segments of the `/.cluster` and `/api/v1` routes.
pub(super) const WORDS: &[&str] = &[
    "api-keys",
    "audit",
    "auth",
    "certs",
    "deliveries",
    "dns",
    "events",
    "exec",
    "forwards",
    "logs",
    "migrate",
    "node",
    "nodes",
    "pods",
    "records",
    "reload",
    "renew",
    "revoke",
    "routes",
    "runners",
    "sandboxes",
    "services",
    "test",
    "terminal",
    "tokens",
    "tunnel",
    "txt",
    "webhooks",
];

/// Segments kept after the API prefix.
const MAX_SEGMENTS: usize = 4;

/// The label for a request classified as `target`; `None` (not classified) is `unrouted`.
pub fn of(target: Option<&Target>) -> String {
    let Some(target) = target else {
        return "unrouted".into();
    };
    match target {
        Target::Ops(route) => match route {
            OpsRoute::Health | OpsRoute::HealthDetailed => "/health",
            OpsRoute::Readiness => "/readiness",
            OpsRoute::Metrics => "/metrics",
            OpsRoute::OpenApi => "/openapi.json",
        }
        .into(),
        Target::Install(_) => "/-/install".into(),
        Target::Dashboard(_) => "/-/dashboard".into(),
        Target::Index => "/".into(),
        Target::EdgeService(_) => "edge-service".into(),
        Target::SandboxPort { .. } => "sandbox-port".into(),
        Target::Pod { .. } => "/{pod}".into(),
        Target::Cluster(rest) => template("/.cluster", rest),
        Target::Api(rest) => template("/api/v1", rest),
    }
}

fn template(prefix: &str, rest: &str) -> String {
    let mut out = prefix.to_string();
    let segments = rest.split('/').filter(|s| !s.is_empty());
    for (i, seg) in segments.enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("/…");
            break;
        }
        out.push('/');
        out.push_str(if WORDS.contains(&seg) { seg } else { "{id}" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_bounded() {
        let api = |rest: &str| of(Some(&Target::Api(rest.into())));
        assert_eq!(
            of(Some(&Target::Cluster("/pods/alice/migrate".into()))),
            "/.cluster/pods/{id}/migrate"
        );
        assert_eq!(api("/sandboxes/sb-1/exec"), "/api/v1/sandboxes/{id}/exec");
        assert_eq!(api("/auth/api-keys"), "/api/v1/auth/api-keys");
        // Whatever a client sends, the label is made of the APIs' words, {id} and a cut.
        assert_eq!(api("/x/y/z/w/v/u"), "/api/v1/{id}/{id}/{id}/{id}/…");
        assert_eq!(api("/pods/\"}\n"), "/api/v1/pods/{id}");
        assert_eq!(of(None), "unrouted");
        assert_eq!(
            of(Some(&Target::Pod {
                pod_id: "alice".into(),
                path: "/a".into()
            })),
            "/{pod}"
        );
    }
}
