//! The one parser of a request's Host (or a TLS server name): the name, lowercase, without port
//! and trailing dot, and which configured domain it falls under. Every rule that reads a host
//! name (pods in subdomain mode, edges' services, sandbox ports, HTTPS redirects) starts here.

/// A Host value that is not a host name (empty, too long, not ASCII, a bad port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Host header")]
pub struct BadHost;

/// A parsed Host header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The lowercase name without port and trailing dot (empty for an IPv6 literal).
    pub name: String,
    /// The port, if the value had one.
    pub port: Option<u16>,
    /// `[…]`: an IPv6 literal (never under a domain).
    pub ip_literal: bool,
}

impl Host {
    /// Parses `value` strictly: ASCII, 1–260 bytes, a numeric port if any.
    pub fn parse(value: &str) -> Result<Host, BadHost> {
        if value.is_empty() || value.len() > 260 || !value.is_ascii() {
            return Err(BadHost);
        }
        if let Some(rest) = value.strip_prefix('[') {
            let (_, after) = rest.split_once(']').ok_or(BadHost)?;
            let port = match after {
                "" => None,
                p => Some(parse_port(p.strip_prefix(':').ok_or(BadHost)?)?),
            };
            return Ok(Host {
                name: String::new(),
                port,
                ip_literal: true,
            });
        }
        let (name, port) = match value.rsplit_once(':') {
            Some((n, p)) => (n, Some(parse_port(p)?)),
            None => (value, None),
        };
        Ok(Host {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            port,
            ip_literal: false,
        })
    }

    /// The labels in front of `.domain` when the name is under `domain` (not `domain`
    /// itself): `a.b` for `a.b.<domain>`, `""` for `.<domain>` (an empty label, for the caller
    /// to refuse).
    pub fn under(&self, domain: &str) -> Option<&str> {
        if self.ip_literal {
            return None;
        }
        self.name
            .strip_suffix(domain.trim_end_matches('.'))
            .and_then(|p| p.strip_suffix('.'))
    }
}

fn parse_port(p: &str) -> Result<u16, BadHost> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadHost);
    }
    p.parse().map_err(|_| BadHost)
}

/// `name` without a trailing `:port` (for values already known to be well formed).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_strictly() {
        let h = Host::parse("Alice.Pods.Example.:8080").unwrap();
        assert_eq!(
            (h.name.as_str(), h.port, h.ip_literal),
            ("alice.pods.example", Some(8080), false)
        );
        assert_eq!(h.under("pods.example"), Some("alice"));
        assert_eq!(h.under("example"), Some("alice.pods"));
        assert_eq!(h.under("alice.pods.example"), None, "the domain itself");
        assert_eq!(h.under("s.example"), None, "not a label boundary");
        let v6 = Host::parse("[::1]:80").unwrap();
        assert!(v6.ip_literal && v6.port == Some(80) && v6.under("").is_none());
        for bad in ["", "a:b", "a:", "a:99999", "[::1", "[::1]x", "é.example"] {
            assert!(Host::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(strip_port("a.example:80"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
