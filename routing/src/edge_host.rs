//! Edge names: `<service>.<node>.<edge_domain>` and `<node>.<edge_domain>` (ARCHITECTURE §5,
//! §8), from a Host header or a TLS server name. Strict: labels must be valid node ids and
//! service names; anything deeper is an error (the node answers 400, or closes a TLS
//! connection), never a panic.

use crate::host::Host;

/// The service a bare `<node>.<edge_domain>` means.
pub const DEFAULT_SERVICE: &str = "web";

/// Where an edge host points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRoute {
    /// The edge's node id.
    pub node: String,
    /// The service it published.
    pub service: String,
}

/// `Host` → an edge route, when the host is under `edge_domain`: `<node>.<edge_domain>` or
/// `<service>.<node>.<edge_domain>` (case-insensitive, port and one trailing dot ignored).
/// `Ok(None)`: not an edge host (including `edge_domain` itself). Names that are not DNS labels,
/// or deeper names, are a 400.
pub fn edge_route(host: Option<&str>, edge_domain: &str) -> Result<Option<EdgeRoute>, String> {
    let Some(raw) = host else { return Ok(None) };
    let parsed = Host::parse(raw).map_err(|_| format!("host {raw:?} is not a valid host name"))?;
    route_of(&parsed, edge_domain)
}

/// [`edge_route`] of a parsed host.
pub fn route_of(host: &Host, edge_domain: &str) -> Result<Option<EdgeRoute>, String> {
    let domain = edge_domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(prefix) = host.under(&domain) else {
        return Ok(None);
    };
    let name = &host.name;
    let labels: Vec<&str> = prefix.split('.').collect();
    let (service, node) = match labels[..] {
        [node] => (DEFAULT_SERVICE, node),
        [service, node] => (service, node),
        _ => {
            return Err(format!(
                "host {name:?}: expected <node>.{domain} or <service>.<node>.{domain}"
            ))
        }
    };
    xpod_config::validate_node_id(node).map_err(|e| format!("host {name:?}: {e}"))?;
    xpod_config::validate_pod_id(service).map_err(|e| {
        format!(
            "host {name:?}: {}",
            e.replacen("a pod id", "a service name", 1)
        )
    })?;
    Ok(Some(EdgeRoute {
        node: node.to_string(),
        service: service.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str) -> Result<Option<(String, String)>, String> {
        edge_route(Some(host), "edges.test").map(|r| r.map(|r| (r.service, r.node)))
    }

    #[test]
    fn edge_hosts_parse_strictly() {
        let ok = |s: &str, n: &str| Ok(Some((s.to_string(), n.to_string())));
        assert_eq!(route("web.e1.edges.test"), ok("web", "e1"));
        assert_eq!(route("API.E1.Edges.Test:8080"), ok("api", "e1"));
        assert_eq!(route("e1.edges.test."), ok("web", "e1"));
        assert_eq!(route("edges.test"), Ok(None));
        assert_eq!(route("pods.example.com"), Ok(None));
        assert_eq!(route("xedges.test"), Ok(None));
        assert_eq!(route("[::1]:80"), Ok(None));
        assert_eq!(edge_route(None, "edges.test").unwrap(), None);
        for bad in [
            "a.b.e1.edges.test",
            ".edges.test",
            "-x.edges.test",
            "web..edges.test",
            "we_b.e1.edges.test",
        ] {
            assert!(route(bad).is_err(), "{bad} should be a 400");
        }
        assert!(route("w_b.e1.edges.test")
            .unwrap_err()
            .contains("a service name"));
    }
}
