//! What a request is for, from its Host header and path: one classifier for every target.
//!
//! Order: the host first — `<service>.<node>.<edge_domain>` / `<node>.<edge_domain>` is an edge's
//! service ([`Target::EdgeService`]), `<port>-<id>.<sandbox_domain>` a sandbox's port
//! ([`Target::SandboxPort`]), `<pod>.<pods_domain>` a pod (subdomain mode); then the path:
//! operations endpoints (`/health`, `/readiness`, `/metrics`, `/openapi.json`), the edge
//! installer (`/install.sh`, `/-/install/<file>`: [`Target::Install`]), the dashboard
//! (`/-/dashboard/…`: [`Target::Dashboard`]), the cluster API
//! (`/.cluster/…`), the `/api/v1/…` API, then pods. In subdomain mode a Host of
//! `<pod>.<pods-domain>` selects the pod and the whole path is the resource path; otherwise the
//! first path segment is the pod (path mode). Pod ids are DNS labels, so the reserved words
//! below can never be pod ids that collide with API paths.

use crate::edge_host::{route_of, EdgeRoute};
use crate::host::Host;
use crate::path::{parse_resource_path, PathError};

/// Words that cannot be pod ids because path mode would shadow them.
pub const RESERVED_POD_IDS: &[&str] = &["api", "health", "readiness", "metrics", "static"];

/// Settings that shape classification.
#[derive(Clone, Debug, Default)]
pub struct TargetConfig {
    /// Enables subdomain mode for `<pod>.<pods_domain>` (lowercase, no trailing dot).
    pub pods_domain: Option<String>,
    /// Edges' services at `<service>.<node>.<edge_domain>` (`tunnel.edge_domain`).
    pub edge_domain: Option<String>,
    /// Sandbox ports at `<port>-<id>.<sandbox_domain>` (`sandbox.domain`).
    pub sandbox_domain: Option<String>,
}

/// Operations endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsRoute {
    Health,
    HealthDetailed,
    Readiness,
    Metrics,
    OpenApi,
}

/// What a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Ops(OpsRoute),
    /// `/.cluster/<rest>`: the rest, without the leading `/.cluster`.
    Cluster(String),
    /// `/api/v1/<rest>`: the rest, without the leading `/api/v1`.
    Api(String),
    /// A resource of a pod: the decoded path within the pod.
    Pod {
        pod_id: String,
        path: String,
    },
    /// `/` in path mode: the node's landing document.
    Index,
    /// A service an edge published, by host; the edge's service decides about credentials.
    EdgeService(EdgeRoute),
    /// A port inside a sandbox, by host.
    SandboxPort {
        id: String,
        port: u16,
    },
    /// The edge installer: `/install.sh` (`"install.sh"`) and `/-/install/<file>` (the file
    /// name, not checked here). `-` can never be a pod id (no leading `-`).
    Install(String),
    /// The dashboard: `/-/dashboard` (`None`), `/-/dashboard/<file>` (`Some`, `""` for the page).
    Dashboard(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("invalid pod id `{id}`: {reason}")]
    BadPodId { id: String, reason: String },
    #[error("invalid Host header")]
    BadHost,
    /// A host under a configured domain that does not have the shape that domain requires.
    #[error("{0}")]
    BadName(String),
    #[error(transparent)]
    Path(#[from] PathError),
}

impl From<crate::host::BadHost> for TargetError {
    fn from(_: crate::host::BadHost) -> Self {
        TargetError::BadHost
    }
}

/// Validates a pod id: a DNS label (1–63 of `a-z0-9-`, no leading/trailing `-`), not reserved.
pub fn validate_pod_id(id: &str) -> Result<(), TargetError> {
    let bad = |reason: &str| TargetError::BadPodId {
        id: truncate(id),
        reason: reason.to_string(),
    };
    if let Err(reason) = xpod_config::validate_pod_id(id) {
        return Err(bad(&reason));
    }
    if RESERVED_POD_IDS.contains(&id) {
        return Err(bad("reserved word"));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_default).collect()
}

/// Whether `id` has the shape of a sandbox id: `sb` and 14 lowercase hex digits.
pub fn valid_sandbox_id(id: &str) -> bool {
    id.len() == 16
        && id.starts_with("sb")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `<port>-<id>.<domain>` → (port, id); `Ok(None)`: not a sandbox host (including deeper names).
pub fn sandbox_port(host: &Host, domain: &str) -> Result<Option<(u16, String)>, TargetError> {
    let Some(label) = host.under(domain) else {
        return Ok(None);
    };
    if label.contains('.') {
        return Ok(None);
    }
    let bad = || {
        TargetError::BadName(format!(
            "host {:?}: expected <port>-<sandboxId>.{domain}",
            host.name
        ))
    };
    let (port, id) = label.split_once('-').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    if !valid_sandbox_id(id) {
        return Err(bad());
    }
    Ok(Some((port, id.to_string())))
}

/// Classifies a request. `raw_path` is the URI path, still percent-encoded, without the query.
pub fn classify(
    cfg: &TargetConfig,
    host: Option<&str>,
    raw_path: &str,
) -> Result<Target, TargetError> {
    let host = host.map(Host::parse).transpose()?;
    if let (Some(h), Some(domain)) = (&host, cfg.edge_domain.as_deref()) {
        if let Some(route) = route_of(h, domain).map_err(TargetError::BadName)? {
            return Ok(Target::EdgeService(route));
        }
    }
    if let (Some(h), Some(domain)) = (&host, cfg.sandbox_domain.as_deref()) {
        if let Some((port, id)) = sandbox_port(h, domain)? {
            return Ok(Target::SandboxPort { id, port });
        }
    }
    if let Some(pod) = subdomain_pod(cfg, host.as_ref()) {
        validate_pod_id(&pod)?;
        return Ok(Target::Pod {
            pod_id: pod,
            path: parse_resource_path(raw_path)?,
        });
    }
    match raw_path {
        "/health" => return Ok(Target::Ops(OpsRoute::Health)),
        "/health/detailed" => return Ok(Target::Ops(OpsRoute::HealthDetailed)),
        "/readiness" => return Ok(Target::Ops(OpsRoute::Readiness)),
        "/metrics" => return Ok(Target::Ops(OpsRoute::Metrics)),
        "/openapi.json" => return Ok(Target::Ops(OpsRoute::OpenApi)),
        "" | "/" => return Ok(Target::Index),
        "/install.sh" => return Ok(Target::Install("install.sh".into())),
        _ => {}
    }
    if let Some(file) = raw_path.strip_prefix("/-/install/") {
        return Ok(Target::Install(file.to_string()));
    }
    if raw_path == "/-/dashboard" {
        return Ok(Target::Dashboard(None));
    }
    if let Some(file) = raw_path.strip_prefix("/-/dashboard/") {
        return Ok(Target::Dashboard(Some(file.to_string())));
    }
    if let Some(rest) = strip_segment_prefix(raw_path, "/.cluster") {
        return Ok(Target::Cluster(rest.to_string()));
    }
    if let Some(rest) = strip_segment_prefix(raw_path, "/api/v1") {
        return Ok(Target::Api(rest.to_string()));
    }
    // Path mode: /<pod>[/<resource path>]
    let rest = raw_path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let (pod_raw, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if pod_raw.contains('%') {
        return Err(TargetError::BadPodId {
            id: truncate(pod_raw),
            reason: "must not be percent-encoded".into(),
        });
    }
    if pod_raw == ".." || pod_raw == "." {
        return Err(PathError::DotSegment.into());
    }
    validate_pod_id(pod_raw)?;
    Ok(Target::Pod {
        pod_id: pod_raw.to_string(),
        path: parse_resource_path(tail)?,
    })
}

/// `/api/v1` matches `/api/v1` and `/api/v1/…`, not `/api/v1x`.
fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The pod named by the Host header in subdomain mode, if any (validated by the caller).
fn subdomain_pod(cfg: &TargetConfig, host: Option<&Host>) -> Option<String> {
    let (Some(domain), Some(host)) = (cfg.pods_domain.as_deref(), host) else {
        return None;
    };
    host.under(domain).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_mode() -> TargetConfig {
        TargetConfig::default()
    }

    fn sub() -> TargetConfig {
        TargetConfig {
            pods_domain: Some("pods.example.com".into()),
            ..Default::default()
        }
    }

    #[test]
    fn one_classifier_for_edges_sandboxes_and_pods() {
        let c = TargetConfig {
            pods_domain: Some("pods.example.com".into()),
            edge_domain: Some("edges.example.com".into()),
            sandbox_domain: Some("sb.example.com".into()),
        };
        let t = |h: &str| classify(&c, Some(h), "/x");
        assert_eq!(
            t("api.e1.edges.example.com:8080").unwrap(),
            Target::EdgeService(EdgeRoute {
                node: "e1".into(),
                service: "api".into()
            })
        );
        assert_eq!(
            t("E1.Edges.Example.Com.").unwrap(),
            Target::EdgeService(EdgeRoute {
                node: "e1".into(),
                service: "web".into()
            })
        );
        assert_eq!(
            t("8080-sb0123456789abcd.sb.example.com").unwrap(),
            Target::SandboxPort {
                id: "sb0123456789abcd".into(),
                port: 8080
            }
        );
        assert_eq!(
            t("alice.pods.example.com").unwrap(),
            Target::Pod {
                pod_id: "alice".into(),
                path: "/x".into()
            }
        );
        assert_eq!(
            t("example.com").unwrap(),
            Target::Pod {
                pod_id: "x".into(),
                path: "/".into()
            }
        );
        for bad in [
            "a.b.e1.edges.example.com",
            "0-sb0123456789abcd.sb.example.com",
            "80-nope.sb.example.com",
            "80.sb.example.com",
            "a.b.pods.example.com",
            "x:y",
        ] {
            assert!(t(bad).is_err(), "{bad} should be a 400");
        }
        // Deeper names under the sandbox domain are not sandbox hosts (nor errors).
        assert!(matches!(
            classify(&c, Some("a.b.sb.example.com"), "/p/x").unwrap(),
            Target::Pod { .. }
        ));
    }

    #[test]
    fn ops_and_apis() {
        let c = path_mode();
        assert_eq!(
            classify(&c, None, "/health").unwrap(),
            Target::Ops(OpsRoute::Health)
        );
        assert_eq!(
            classify(&c, None, "/metrics").unwrap(),
            Target::Ops(OpsRoute::Metrics)
        );
        assert_eq!(
            classify(&c, None, "/openapi.json").unwrap(),
            Target::Ops(OpsRoute::OpenApi)
        );
        assert_eq!(
            classify(&c, None, "/install.sh").unwrap(),
            Target::Install("install.sh".into())
        );
        assert_eq!(
            classify(&c, None, "/-/install/manifest.sig").unwrap(),
            Target::Install("manifest.sig".into())
        );
        assert_eq!(
            classify(&c, None, "/-/dashboard/").unwrap(),
            Target::Dashboard(Some(String::new()))
        );
        assert!(classify(&c, None, "/-/other").is_err());
        assert_eq!(
            classify(&c, None, "/.cluster/pods").unwrap(),
            Target::Cluster("/pods".into())
        );
        assert_eq!(
            classify(&c, None, "/api/v1/auth/api-keys").unwrap(),
            Target::Api("/auth/api-keys".into())
        );
        assert_eq!(classify(&c, None, "/").unwrap(), Target::Index);
    }

    #[test]
    fn path_mode_pods() {
        let c = path_mode();
        assert_eq!(
            classify(&c, Some("127.0.0.1:8080"), "/alice/notes/a.txt").unwrap(),
            Target::Pod {
                pod_id: "alice".into(),
                path: "/notes/a.txt".into()
            }
        );
        assert_eq!(
            classify(&c, None, "/alice").unwrap(),
            Target::Pod {
                pod_id: "alice".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            classify(&c, None, "/alice/").unwrap(),
            Target::Pod {
                pod_id: "alice".into(),
                path: "/".into()
            }
        );
        assert!(matches!(
            classify(&c, None, "/alice/../etc/passwd"),
            Err(TargetError::Path(PathError::DotSegment))
        ));
        assert!(matches!(
            classify(&c, None, "/../etc/passwd"),
            Err(TargetError::Path(PathError::DotSegment))
        ));
        assert!(matches!(
            classify(&c, None, "/Alice/x"),
            Err(TargetError::BadPodId { .. })
        ));
        assert!(matches!(
            classify(&c, None, "/al%69ce/x"),
            Err(TargetError::BadPodId { .. })
        ));
        assert!(matches!(
            classify(&c, None, "/api/x"),
            Err(TargetError::BadPodId { .. })
        ));
        assert!(matches!(
            classify(&c, None, "/alice/a%2fb"),
            Err(TargetError::Path(PathError::EncodedSeparator))
        ));
    }

    #[test]
    fn subdomain_mode() {
        let c = sub();
        assert_eq!(
            classify(&c, Some("Alice.Pods.Example.com:8443"), "/notes/").unwrap(),
            Target::Pod {
                pod_id: "alice".into(),
                path: "/notes/".into()
            }
        );
        // The whole path belongs to the pod, even /health.
        assert_eq!(
            classify(&c, Some("alice.pods.example.com"), "/health").unwrap(),
            Target::Pod {
                pod_id: "alice".into(),
                path: "/health".into()
            }
        );
        // Another host falls back to path mode.
        assert_eq!(
            classify(&c, Some("pods.example.com"), "/health").unwrap(),
            Target::Ops(OpsRoute::Health)
        );
        assert!(matches!(
            classify(&c, Some("a.b.pods.example.com"), "/"),
            Err(TargetError::BadPodId { .. })
        ));
        assert!(matches!(
            classify(&c, Some("x:y:z"), "/"),
            Err(TargetError::BadHost)
        ));
        assert_eq!(
            classify(&c, Some("[::1]:80"), "/health").unwrap(),
            Target::Ops(OpsRoute::Health)
        );
    }

    #[test]
    fn never_panics_on_junk() {
        let c = sub();
        for p in [
            "",
            "/",
            "//",
            "/%",
            "/%%",
            "/a%",
            "/a/%zz",
            "/\u{0}",
            "/.cluster",
            "/api/v1",
        ] {
            let _ = classify(&c, Some("\u{1}"), p);
            let _ = classify(&c, Some(""), p);
            let _ = classify(&c, None, p);
        }
    }
}

/// Randomised check of the invariants the pod handler relies on: whatever bytes arrive, an
/// accepted resource path is absolute, has no empty, `.` or `..` segment, and no control
/// character or backslash. (cargo-fuzz needs a nightly toolchain, which this project cannot use;
/// this runs on stable in every test run.)
#[cfg(test)]
mod invariants {
    use super::*;
    use rand::Rng as _;

    const ALPHABET: &[&str] = &[
        "/", "/", ".", "..", "%", "2", "e", "E", "f", "F", "5", "c", "0", "a", "-", "\\", "\u{0}",
        "\u{7f}", "é", "%2e", "%2F", "%00", "api", "v1",
    ];

    #[test]
    fn accepted_paths_are_safe() {
        let mut rng = rand::rng();
        let cfg = TargetConfig {
            pods_domain: Some("pods.example.com".into()),
            ..Default::default()
        };
        let mut accepted = 0;
        for _ in 0..200_000 {
            let n = rng.random_range(0..12);
            let raw: String = (0..n)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect();
            let raw = format!("/{raw}");
            let host = if rng.random_bool(0.5) {
                Some("a.pods.example.com")
            } else {
                None
            };
            if let Ok(Target::Pod { pod_id, path }) = classify(&cfg, host, &raw) {
                accepted += 1;
                assert!(
                    validate_pod_id(&pod_id).is_ok(),
                    "{raw:?} gave pod {pod_id:?}"
                );
                assert!(path.starts_with('/'), "{raw:?} → {path:?}");
                let body = path.strip_suffix('/').unwrap_or(&path);
                if body.is_empty() {
                    continue;
                }
                for seg in body[1..].split('/') {
                    assert!(
                        !seg.is_empty() && seg != "." && seg != "..",
                        "{raw:?} → {path:?}"
                    );
                }
                assert!(
                    !path.chars().any(|c| c.is_control() || c == '\\'),
                    "{raw:?} → {path:?}"
                );
            }
        }
        assert!(
            accepted > 1000,
            "the generator should produce valid paths too (got {accepted})"
        );
    }
}
