//! [`Config::validate`]: every key's rule in one `match`, so the file, the environment and CLI
//! overrides are held to the same rules.

use std::collections::HashSet;

use crate::error::ConfigError;
use crate::validate as v;
use crate::{Config, ServiceKind};

/// Every dotted key that has a rule, in file order.
pub(crate) const KEYS: &[&str] = &[
    "node_id",
    "role",
    "region",
    "data_dir",
    "http.listen",
    "http.base_url",
    "http.pods_domain",
    "http.max_connections",
    "http.max_connections_per_client",
    "database.url",
    "database.pool_size",
    "storage.objects_url",
    "storage.endpoint",
    "storage.bucket",
    "storage.access_key",
    "storage.secret_key",
    "storage.s3_region",
    "storage.region_buckets",
    "cache.path",
    "cache.max_size",
    "routing.enabled",
    "log.level",
    "log.format",
    "log.access",
    "tunnel.quic_listen",
    "tunnel.centers",
    "tunnel.edge_domain",
    "tunnel.tls_listen",
    "tunnel.threads",
    "tunnel.relay_idle_secs",
    "tunnel.transport",
    "tunnel.terminal",
    "tunnel.accept_pods",
    "dns.listen",
    "dns.zone",
    "dns.addresses",
    "dns.ttl",
    "dns.tsig_key_name",
    "dns.tsig_secret",
    "dns.secondaries",
    "dns.update_server",
    "acme.directory",
    "acme.directory_ca",
    "acme.contact",
    "acme.names",
    "acme.key_secret",
    "sandbox.slots",
    "sandbox.domain",
    "failover.lease_ttl_secs",
    "failover.stability_window_secs",
];

impl Config {
    /// The rule for one key, on its own (no cross-key rules). `Err` lacks the key name.
    pub(crate) fn check_key(&self, key: &str) -> Result<(), String> {
        match key {
            "node_id" => v::node_id_setting(&self.node_id),
            "region" => v::region(&self.region),
            "data_dir" => v::non_empty(&self.data_dir.to_string_lossy(), "a directory path"),
            "http.base_url" => self.http.base_url.as_deref().map_or(Ok(()), v::base_url),
            "http.pods_domain" => self.http.pods_domain.as_deref().map_or(Ok(()), v::dns_name),
            "http.max_connections" => match self.http.max_connections {
                1..=1_000_000 => Ok(()),
                n => Err(format!("expected 1..=1000000 connections, got {n}")),
            },
            "http.max_connections_per_client" => {
                let (n, max) = (self.http.max_connections_per_client, self.http.max_connections);
                if n <= max {
                    Ok(())
                } else {
                    Err(format!("expected 0 (no limit) ..= http.max_connections ({max}), got {n}"))
                }
            }
            "database.url" => self.database.url.as_ref().map_or(Ok(()), |u| {
                v::secret_url(u.expose(), &["postgres://", "postgresql://", "sqlite://"])
            }),
            "database.pool_size" => v::pool_size(self.database.pool_size),
            "storage.objects_url" => self
                .storage
                .objects_url
                .as_deref()
                .map_or(Ok(()), v::objects_url),
            "storage.endpoint" => self.storage.endpoint.as_deref().map_or(Ok(()), v::endpoint),
            "storage.bucket" => self.storage.bucket.as_deref().map_or(Ok(()), v::bucket),
            "storage.access_key" => self
                .storage
                .access_key
                .as_deref()
                .map_or(Ok(()), |k| v::non_empty(k, "an access key")),
            "storage.secret_key" => self
                .storage
                .secret_key
                .as_ref()
                .map_or(Ok(()), |k| v::non_empty(k.expose(), "a secret key")),
            "storage.s3_region" => self
                .storage
                .s3_region
                .as_deref()
                .map_or(Ok(()), |r| v::non_empty(r, "an S3 region like us-east-1")),
            "storage.region_buckets" => {
                let mut seen = HashSet::new();
                for rb in &self.storage.region_buckets {
                    v::region(&rb.region).and_then(|()| v::region_bucket(&rb.bucket))?;
                    if let Some(e) = &rb.endpoint {
                        v::endpoint(e)?;
                    }
                    if !seen.insert(rb.region.as_str()) {
                        return Err(format!("region {:?} is listed twice", rb.region));
                    }
                }
                Ok(())
            }
            "cache.path" => self.cache.path.as_ref().map_or(Ok(()), |p| {
                v::non_empty(&p.to_string_lossy(), "a directory path")
            }),
            "cache.max_size" if self.cache.max_size.bytes() == 0 => {
                Err("expected a size above zero, like 50GB".into())
            }
            "log.level" => v::log_level(&self.log.level),
            "tunnel.centers" => {
                if self.tunnel.centers.len() > 4 {
                    return Err(format!(
                        "expected at most 4 centers, got {}",
                        self.tunnel.centers.len()
                    ));
                }
                self.tunnel.centers.iter().try_for_each(|c| v::host_port(c))
            }
            "tunnel.accept_pods" => self
                .tunnel
                .accept_pods
                .iter()
                .try_for_each(|a| if a == "*" { Ok(()) } else { v::validate_account(a) }),
            "tunnel.edge_domain" => self
                .tunnel
                .edge_domain
                .as_deref()
                .map_or(Ok(()), v::dns_name),
            // Enums, bools, the socket address: their type is their rule.
            "dns.zone" => self.dns.zone.as_deref().map_or(Ok(()), v::dns_name),
            "dns.ttl" if !(1..=86_400).contains(&self.dns.ttl) => {
                Err(format!("expected 1..=86400 seconds, got {}", self.dns.ttl))
            }
            "dns.tsig_key_name" => self.dns.tsig_key_name.as_deref().map_or(Ok(()), v::dns_name),
            "dns.tsig_secret" => self.dns.tsig_secret.as_ref().map_or(Ok(()), |s| {
                v::base64_key(s.expose())
            }),
            "tunnel.threads" => match self.tunnel.threads {
                None | Some(1..=64) => Ok(()),
                Some(n) => Err(format!("expected 1..=64 threads, got {n}")),
            },
            "tunnel.relay_idle_secs" => match self.tunnel.relay_idle_secs {
                None | Some(1..=86_400) => Ok(()),
                Some(n) => Err(format!("expected 1..=86400 seconds, got {n}")),
            },
            "sandbox.slots" => match self.sandbox.slots {
                0..=1000 => Ok(()),
                n => Err(format!("expected 0..=1000 sandboxes, got {n}")),
            },
            "sandbox.domain" => self.sandbox.domain.as_deref().map_or(Ok(()), v::dns_name),
            "failover.lease_ttl_secs" if !(2..=300).contains(&self.failover.lease_ttl_secs) => {
                Err(format!(
                    "expected 2..=300 seconds, got {}",
                    self.failover.lease_ttl_secs
                ))
            }
            "failover.stability_window_secs"
                if !(1..=3600).contains(&self.failover.stability_window_secs) =>
            {
                Err(format!(
                    "expected 1..=3600 seconds, got {}",
                    self.failover.stability_window_secs
                ))
            }
            "acme.directory" => self.acme.directory.as_deref().map_or(Ok(()), |d| {
                match d {
                    "letsencrypt" | "letsencrypt-staging" => Ok(()),
                    _ if d.starts_with("https://") && d.len() > 8 => Ok(()),
                    _ => Err(format!(
                        "expected an https:// directory URL, `letsencrypt` or `letsencrypt-staging`, got {d:?}"
                    )),
                }
            }),
            "acme.contact" => self.acme.contact.iter().try_for_each(|c| {
                if c.starts_with("mailto:") && c.len() > 7 && !c.contains(char::is_whitespace) {
                    Ok(())
                } else {
                    Err(format!("expected mailto:ADDRESS entries, got {c:?}"))
                }
            }),
            "acme.names" => self.acme.names.iter().try_for_each(|n| {
                v::dns_name(n.strip_prefix("*.").unwrap_or(n))
                    .map_err(|e| format!("{e} (a name or *.name)"))
            }),
            "acme.key_secret" => self.acme.key_secret.as_ref().map_or(Ok(()), |k| {
                if k.expose().chars().count() >= 32 {
                    Ok(())
                } else {
                    Err("expected at least 32 characters (e.g. `openssl rand -hex 32`)".into())
                }
            }),
            _ => Ok(()),
        }
    }

    /// Rules that involve more than one key.
    fn check_cross(&self) -> Result<(), (&'static str, String)> {
        if self.acme.directory.is_some() && self.role == crate::Role::Edge {
            if self.tunnel.edge_domain.is_none() {
                return Err((
                    "tunnel.edge_domain",
                    "required on an edge with acme.directory (its certificate is for <node>.<edge_domain> and *.<node>.<edge_domain>; the same as its centers')".into(),
                ));
            }
        } else if self.acme.directory.is_some() {
            if self.acme.key_secret.is_none() {
                return Err((
                    "acme.key_secret",
                    "required when acme.directory is set (seals private keys in the metadata store; the same on every center)".into(),
                ));
            }
            if self.acme.names.is_empty()
                && self.dns.zone.is_none()
                && self.http.pods_domain.is_none()
            {
                return Err((
                    "acme.names",
                    "nothing to obtain: set acme.names, or dns.zone / http.pods_domain".into(),
                ));
            }
        }
        let d = &self.dns;
        if d.tsig_key_name.is_some() != d.tsig_secret.is_some() {
            return Err((
                "dns.tsig_secret",
                "dns.tsig_key_name and dns.tsig_secret go together (set both or neither)".into(),
            ));
        }
        if (!d.secondaries.is_empty() || d.update_server.is_some()) && d.tsig_key_name.is_none() {
            return Err((
                "dns.tsig_key_name",
                "required with dns.secondaries or dns.update_server (transfers and updates are TSIG-signed)".into(),
            ));
        }
        if d.update_server.is_some() && d.zone.is_none() {
            return Err((
                "dns.zone",
                "required when dns.update_server is set (the zone the updates are for)".into(),
            ));
        }
        if self.dns.listen.is_some() && self.dns.zone.is_none() {
            return Err((
                "dns.zone",
                "required when dns.listen is set (the zone this center answers for)".into(),
            ));
        }
        let s = &self.storage;
        match (&s.access_key, &s.secret_key) {
            (Some(_), None) => Err((
                "storage.secret_key",
                "required when storage.access_key is set (or remove both)".into(),
            )),
            (None, Some(_)) => Err((
                "storage.access_key",
                "required when storage.secret_key is set (or remove both)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The name spaces of the cluster do not overlap: `tunnel.edge_domain` (`<node>.<it>`, set
    /// by a device's name), `http.pods_domain` (`<pod>.<it>`), `sandbox.domain`
    /// (`<port>-<id>.<it>`) are each different from `dns.zone` (whose apex names `ns` and the
    /// centers) and none is another or below another, so no name a device, a pod or a sandbox
    /// gets can shadow one of another kind.
    fn check_domains(&self) -> Result<(), (&'static str, String)> {
        let below_or_same = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
        let spaces = [
            ("tunnel.edge_domain", self.tunnel.edge_domain.as_deref()),
            ("http.pods_domain", self.http.pods_domain.as_deref()),
            ("sandbox.domain", self.sandbox.domain.as_deref()),
        ];
        for (i, (key, a)) in spaces.iter().enumerate() {
            let Some(a) = a else { continue };
            if self.dns.zone.as_deref() == Some(a) {
                return Err((
                    key,
                    format!("{a:?} is dns.zone itself, whose names (ns, the centers) it would share; use a name below it, e.g. \"{}.{a}\"", key.split(['.', '_']).nth(1).unwrap_or("x")),
                ));
            }
            for (other, b) in &spaces[i + 1..] {
                let Some(b) = b else { continue };
                if below_or_same(a, b) || below_or_same(b, a) {
                    return Err((
                        key,
                        format!("{a:?} overlaps {other} {b:?}: a name of one could shadow a name of the other; give each its own domain, neither below the other"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every key; `location` names where the values came from in the error.
    pub(crate) fn validate_at(&self, location: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::InvalidValue {
            location: location.to_string(),
            key: key.to_string(),
            message,
        };
        for key in KEYS {
            self.check_key(key).map_err(|m| invalid(key, m))?;
        }
        self.check_cross().map_err(|(key, m)| invalid(key, m))?;
        self.check_domains().map_err(|(key, m)| invalid(key, m))?;
        self.check_services().map_err(|(key, m)| invalid(&key, m))?;
        self.check_presence()
            .map_err(|m| invalid("tunnel.presence", m))?;
        self.check_forwards().map_err(|(key, m)| invalid(&key, m))?;
        self.check_sandbox().map_err(|(key, m)| invalid(&key, m))?;
        for o in &self.solid.trusted_origins {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.split_once("://").map_or("", |(_, r)| r).contains('/')
                && o.len() <= 300;
            if !ok {
                return Err(invalid(
                    "solid.trusted_origins",
                    format!("{o:?}: expected an origin like https://app.example (no path)"),
                ));
            }
        }
        if !(10..=3600).contains(&self.solid.proof_max_age_secs) {
            return Err(invalid(
                "solid.proof_max_age_secs",
                format!(
                    "expected 10..=3600 seconds, got {}",
                    self.solid.proof_max_age_secs
                ),
            ));
        }
        Ok(())
    }

    /// The rest of `[sandbox]` (file only): capacity and quotas above 0, image names that are
    /// labels with absolute directories.
    fn check_sandbox(&self) -> Result<(), (String, String)> {
        let s = &self.sandbox;
        let key = |k: &str| format!("sandbox.{k}");

        if s.slots > 0 && (s.cpu == 0 || s.memory_mb < 64) {
            return Err((
                key("cpu"),
                "a node with slots needs cpu ≥ 1 and memory_mb ≥ 64".into(),
            ));
        }

        if !(10..=7 * 86_400).contains(&s.idle_timeout_secs) {
            return Err((
                key("idle_timeout_secs"),
                format!("expected 10..=604800 seconds, got {}", s.idle_timeout_secs),
            ));
        }
        if s.uid_base < 1000 || s.uid_base > u32::MAX - 100_000 {
            return Err((
                key("uid_base"),
                format!("expected 1000..={}, got {}", u32::MAX - 100_000, s.uid_base),
            ));
        }
        for (name, dir) in &s.images {
            if let Err(why) = v::validate_pod_id(name) {
                return Err((key("images"), why.replacen("a pod id", "an image name", 1)));
            }
            if name == "host" || !dir.is_absolute() {
                return Err((
                    key(&format!("images.{name}")),
                    "expected an absolute directory under a name other than `host`".into(),
                ));
            }
        }
        if s.quota_sandboxes == 0 || s.quota_cpu == 0 || s.quota_memory_mb == 0 {
            return Err((
                key("quota_sandboxes"),
                "quotas must be above 0 (quota_sandboxes, quota_cpu, quota_memory_mb)".into(),
            ));
        }
        Ok(())
    }

    /// `tunnel.tls_listen` and `[[tunnel.forwards]]`: ports above 0, every listen address used
    /// once (also against each other), node ids and service names valid; TLS passthrough needs
    /// `tunnel.edge_domain`. (File only, so not in [`KEYS`].)
    fn check_forwards(&self) -> Result<(), (String, String)> {
        let t = &self.tunnel;
        let mut seen = HashSet::new();
        if let Some(addr) = t.tls_listen {
            let key = "tunnel.tls_listen".to_string();
            if addr.port() == 0 {
                return Err((
                    key,
                    format!("expected IP:PORT with a port above 0, got {addr}"),
                ));
            }
            if t.edge_domain.is_none() && self.acme.directory.is_none() {
                return Err((
                    key,
                    "the TLS port serves edges (set tunnel.edge_domain) and/or HTTPS with ACME certificates (set acme.directory): set one"
                        .into(),
                ));
            }
            seen.insert(addr);
        }
        for (i, f) in t.forwards.iter().enumerate() {
            let key = |field: &str| format!("tunnel.forwards[{i}].{field}");
            if f.listen.port() == 0 {
                return Err((
                    key("listen"),
                    format!("expected IP:PORT with a port above 0, got {}", f.listen),
                ));
            }
            if !seen.insert(f.listen) {
                return Err((
                    key("listen"),
                    format!(
                        "{} is already used by tunnel.tls_listen or another forward",
                        f.listen
                    ),
                ));
            }
            v::validate_node_id(&f.node).map_err(|why| (key("node"), why))?;
            if let Err(why) = v::validate_pod_id(&f.service) {
                return Err((
                    key("service"),
                    why.replacen("a pod id", "a service name", 1),
                ));
            }
        }
        Ok(())
    }

    /// `[[tunnel.services]]`: names are DNS labels and unique; kinds `http`, `tls`, `tcp`.
    /// (No environment variable sets services, so they are not in [`KEYS`].)
    /// `[tunnel.presence]`: file only (no environment variables), checked as a whole.
    fn check_presence(&self) -> Result<(), String> {
        let p = &self.tunnel.presence;
        if !(1..=3600).contains(&p.heartbeat_secs) {
            return Err(format!(
                "heartbeat_secs: expected 1..=3600, got {}",
                p.heartbeat_secs
            ));
        }
        if p.inactive_after_secs < 2 * p.heartbeat_secs {
            return Err(format!(
                "inactive_after_secs ({}) must be at least twice heartbeat_secs ({})",
                p.inactive_after_secs, p.heartbeat_secs
            ));
        }
        if p.offline_after_secs <= p.inactive_after_secs {
            return Err(format!(
                "offline_after_secs ({}) must be above inactive_after_secs ({})",
                p.offline_after_secs, p.inactive_after_secs
            ));
        }
        Ok(())
    }

    fn check_services(&self) -> Result<(), (String, String)> {
        let mut seen = HashSet::new();
        for (i, s) in self.tunnel.services.iter().enumerate() {
            let key = |field: &str| format!("tunnel.services[{i}].{field}");
            // Same rule as a pod id: one DNS label.
            if let Err(why) = v::validate_pod_id(&s.name) {
                return Err((key("name"), why.replacen("a pod id", "a service name", 1)));
            }
            if !seen.insert(s.name.as_str()) {
                return Err((key("name"), format!("service {:?} is listed twice", s.name)));
            }
            if s.local.port() == 0 {
                return Err((
                    key("local"),
                    format!("expected IP:PORT with a port above 0, got {}", s.local),
                ));
            }
            if s.proxy_protocol && s.kind == ServiceKind::Http {
                return Err((
                    key("proxy_protocol"),
                    "PROXY protocol is for kind \"tls\" or \"tcp\"; HTTP services get Forwarded/X-Forwarded-For headers".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn load(toml: &str) -> Result<Config, String> {
        Config::from_toml_str(toml, "test.toml", &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn services_load_with_http_as_default_kind() {
        let c = load(
            "role = \"edge\"\n[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:3000\"\n\n[[tunnel.services]]\nname = \"api\"\nlocal = \"[::1]:8080\"\nkind = \"http\"\n",
        )
        .unwrap();
        assert_eq!(c.tunnel.services.len(), 2);
        assert_eq!(c.tunnel.services[0].name, "web");
        assert_eq!(
            c.tunnel.services[0].local,
            "127.0.0.1:3000".parse().unwrap()
        );
        assert_eq!(c.tunnel.services[0].kind.as_str(), "http");
    }

    #[test]
    fn bad_services_are_refused_naming_the_entry() {
        let cases = [
            (
                "name = \"Web\"\nlocal = \"127.0.0.1:3000\"",
                "tunnel.services[0].name",
            ),
            (
                "name = \"a.b\"\nlocal = \"127.0.0.1:3000\"",
                "expected a service name",
            ),
            (
                "name = \"-x\"\nlocal = \"127.0.0.1:3000\"",
                "tunnel.services[0].name",
            ),
            ("name = \"web\"\nlocal = \"127.0.0.1:0\"", "port above 0"),
            ("name = \"web\"\nlocal = \"localhost:3000\"", "local"),
            (
                "name = \"web\"\nlocal = \"127.0.0.1:3000\"\nkind = \"udp\"",
                "kind",
            ),
            (
                "name = \"web\"\nlocal = \"127.0.0.1:3000\"\nport = 1",
                "port",
            ),
        ];
        for (entry, expected) in cases {
            let err = load(&format!("[[tunnel.services]]\n{entry}\n")).unwrap_err();
            assert!(err.contains(expected), "{entry}: {err}");
        }
        let err = load("[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:3000\"\n[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:3001\"\n").unwrap_err();
        assert!(
            err.contains("tunnel.services[1].name") && err.contains("listed twice"),
            "{err}"
        );
    }

    #[test]
    fn tls_and_tcp_services_and_forwards_load() {
        let c = load(
            "role = \"edge\"\n[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:3443\"\nkind = \"tls\"\n[[tunnel.services]]\nname = \"ssh\"\nlocal = \"127.0.0.1:22\"\nkind = \"tcp\"\n",
        )
        .unwrap();
        assert_eq!(c.tunnel.services[0].kind.as_str(), "tls");
        assert_eq!(c.tunnel.services[1].kind.as_str(), "tcp");
        let c = load(
            "[tunnel]\nedge_domain = \"edges.test\"\ntls_listen = \"0.0.0.0:443\"\n[[tunnel.forwards]]\nlisten = \"0.0.0.0:2222\"\nnode = \"edge-1\"\nservice = \"ssh\"\n",
        )
        .unwrap();
        assert_eq!(c.tunnel.tls_listen, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(c.tunnel.forwards[0].node, "edge-1");
        assert_eq!(c.tunnel.forwards[0].listen.port(), 2222);
    }

    #[test]
    fn overlapping_name_spaces_are_refused() {
        let cases = [
            (
                "[tunnel]\nedge_domain = \"x.test\"\n[http]\npods_domain = \"x.test\"\n",
                "tunnel.edge_domain",
                "overlaps http.pods_domain",
            ),
            (
                "[tunnel]\nedge_domain = \"e.x.test\"\n[http]\npods_domain = \"x.test\"\n",
                "tunnel.edge_domain",
                "overlaps",
            ),
            (
                "[http]\npods_domain = \"x.test\"\n[sandbox]\ndomain = \"sb.x.test\"\n",
                "http.pods_domain",
                "overlaps sandbox.domain",
            ),
            (
                "[tunnel]\nedge_domain = \"x.test\"\n[sandbox]\ndomain = \"x.test\"\n",
                "tunnel.edge_domain",
                "overlaps sandbox.domain",
            ),
            (
                "[http]\npods_domain = \"x.test\"\n[dns]\nzone = \"x.test\"\n",
                "http.pods_domain",
                "dns.zone itself",
            ),
        ];
        for (toml, key, expected) in cases {
            let err = load(toml).unwrap_err();
            assert!(err.contains(key) && err.contains(expected), "{toml}: {err}");
        }
        // Siblings inside the zone are the intended layout.
        load("[tunnel]\nedge_domain = \"edges.x.test\"\n[http]\npods_domain = \"pods.x.test\"\n[sandbox]\ndomain = \"sb.x.test\"\n[dns]\nzone = \"x.test\"\n").unwrap();
        // A name that merely ends alike is not below: "podsx.test" is not under "x.test".
        load("[tunnel]\nedge_domain = \"x.test\"\n[http]\npods_domain = \"podsx.test\"\n").unwrap();
    }

    #[test]
    fn bad_forwards_are_refused_naming_the_entry() {
        let fwd = |body: &str| {
            format!("[tunnel]\nedge_domain = \"edges.test\"\n[[tunnel.forwards]]\n{body}\n")
        };
        let cases = [
            (fwd("listen = \"0.0.0.0:0\"\nnode = \"e1\"\nservice = \"ssh\""), "tunnel.forwards[0].listen"),
            (fwd("listen = \"localhost:22\"\nnode = \"e1\"\nservice = \"ssh\""), "listen"),
            (fwd("listen = \"0.0.0.0:2222\"\nnode = \"E 1\"\nservice = \"ssh\""), "tunnel.forwards[0].node"),
            (fwd("listen = \"0.0.0.0:2222\"\nnode = \"e1\"\nservice = \"a.b\""), "expected a service name"),
            (fwd("listen = \"0.0.0.0:2222\"\nnode = \"e1\""), "service"),
            (fwd("listen = \"0.0.0.0:2222\"\nnode = \"e1\"\nservice = \"ssh\"\nport = 1"), "port"),
            (
                format!("{}[[tunnel.forwards]]\nlisten = \"0.0.0.0:2222\"\nnode = \"e2\"\nservice = \"db\"\n", fwd("listen = \"0.0.0.0:2222\"\nnode = \"e1\"\nservice = \"ssh\"")),
                "tunnel.forwards[1].listen",
            ),
            (
                "[tunnel]\nedge_domain = \"edges.test\"\ntls_listen = \"0.0.0.0:443\"\n[[tunnel.forwards]]\nlisten = \"0.0.0.0:443\"\nnode = \"e1\"\nservice = \"ssh\"\n".to_string(),
                "already used by tunnel.tls_listen",
            ),
            ("[tunnel]\ntls_listen = \"0.0.0.0:443\"\n".to_string(), "set tunnel.edge_domain"),
        ];
        for (toml, expected) in cases {
            let err = load(&toml).unwrap_err();
            assert!(err.contains(expected), "{toml}: {err}");
        }
    }
}
