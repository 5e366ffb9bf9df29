//! Environment overrides: `XPOD_<SECTION>_<KEY>` and the seed's `CSS_*` aliases.
//!
//! The names come from a static table, not from splitting on `_`, because keys contain
//! underscores (`XPOD_HTTP_BASE_URL` is `http.base_url`). An `XPOD_*` variable wins over its
//! `CSS_*` alias; an empty value counts as unset.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::ConfigError;
use crate::model::{parse_region_buckets, Secret};
use crate::validate as v;
use crate::Config;

type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// One overridable key: its variable, its dotted key, the seed's aliases, how to set it.
struct EnvKey {
    var: &'static str,
    key: &'static str,
    aliases: &'static [&'static str],
    set: Setter,
}

const fn k(
    var: &'static str,
    key: &'static str,
    aliases: &'static [&'static str],
    set: Setter,
) -> EnvKey {
    EnvKey {
        var,
        key,
        aliases,
        set,
    }
}

/// A comma-separated list, entries trimmed, empty ones dropped.
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_string())
}

static TABLE: &[EnvKey] = &[
    k("XPOD_NODE_ID", "node_id", &["CSS_NODE_ID"], |c, s| {
        c.node_id = s.trim().into();
        Ok(())
    }),
    k("XPOD_ROLE", "role", &[], |c, s| {
        c.role = s.parse()?;
        Ok(())
    }),
    k("XPOD_REGION", "region", &["CSS_MINIO_REGION"], |c, s| {
        c.region = s.trim().into();
        Ok(())
    }),
    k("XPOD_DATA_DIR", "data_dir", &[], |c, s| {
        c.data_dir = PathBuf::from(s);
        Ok(())
    }),
    k("XPOD_HTTP_LISTEN", "http.listen", &[], |c, s| {
        c.http.listen = v::listen(s)?;
        Ok(())
    }),
    k("XPOD_HTTP_BASE_URL", "http.base_url", &[], |c, s| {
        c.http.base_url = some(s);
        Ok(())
    }),
    k("XPOD_HTTP_PODS_DOMAIN", "http.pods_domain", &[], |c, s| {
        c.http.pods_domain = some(s);
        Ok(())
    }),
    k(
        "XPOD_HTTP_MAX_CONNECTIONS",
        "http.max_connections",
        &[],
        |c, s| {
            c.http.max_connections = s
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of connections, got {s:?}"))?;
            Ok(())
        },
    ),
    k(
        "XPOD_HTTP_MAX_CONNECTIONS_PER_CLIENT",
        "http.max_connections_per_client",
        &[],
        |c, s| {
            c.http.max_connections_per_client = s
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of connections, got {s:?}"))?;
            Ok(())
        },
    ),
    k(
        "XPOD_DATABASE_URL",
        "database.url",
        &["CSS_DATABASE_URL"],
        |c, s| {
            c.database.url = Some(Secret::new(s.trim()));
            Ok(())
        },
    ),
    k(
        "XPOD_DATABASE_POOL_SIZE",
        "database.pool_size",
        &[],
        |c, s| {
            let n = s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer from 1 to 1024, got {s:?}"))?;
            c.database.pool_size = n;
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_OBJECTS_URL",
        "storage.objects_url",
        &[],
        |c, s| {
            c.storage.objects_url = some(s);
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_ENDPOINT",
        "storage.endpoint",
        &["CSS_MINIO_ENDPOINT"],
        |c, s| {
            c.storage.endpoint = some(s);
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_BUCKET",
        "storage.bucket",
        &["CSS_MINIO_BUCKET_NAME"],
        |c, s| {
            c.storage.bucket = some(s);
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_ACCESS_KEY",
        "storage.access_key",
        &["CSS_MINIO_ACCESS_KEY"],
        |c, s| {
            c.storage.access_key = some(s);
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_SECRET_KEY",
        "storage.secret_key",
        &["CSS_MINIO_SECRET_KEY"],
        |c, s| {
            c.storage.secret_key = Some(Secret::new(s.trim()));
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_S3_REGION",
        "storage.s3_region",
        &[],
        |c, s| {
            c.storage.s3_region = some(s);
            Ok(())
        },
    ),
    k(
        "XPOD_STORAGE_REGION_BUCKETS",
        "storage.region_buckets",
        &["CSS_MINIO_REGION_BUCKETS"],
        |c, s| {
            c.storage.region_buckets = parse_region_buckets(s)?;
            Ok(())
        },
    ),
    k(
        "XPOD_CACHE_PATH",
        "cache.path",
        &["CSS_CACHE_PATH"],
        |c, s| {
            c.cache.path = Some(PathBuf::from(s));
            Ok(())
        },
    ),
    k(
        "XPOD_CACHE_MAX_SIZE",
        "cache.max_size",
        &["CSS_CACHE_MAX_SIZE"],
        |c, s| {
            c.cache.max_size = s.parse()?;
            Ok(())
        },
    ),
    k(
        "XPOD_ROUTING_ENABLED",
        "routing.enabled",
        &["CSS_POD_ROUTING_ENABLED"],
        |c, s| {
            c.routing.enabled = v::parse_bool(s)?;
            Ok(())
        },
    ),
    k("XPOD_LOG_LEVEL", "log.level", &[], |c, s| {
        c.log.level = s.trim().into();
        Ok(())
    }),
    k("XPOD_LOG_FORMAT", "log.format", &[], |c, s| {
        c.log.format = s.parse()?;
        Ok(())
    }),
    k("XPOD_LOG_ACCESS", "log.access", &[], |c, s| {
        c.log.access = v::parse_bool(s)?;
        Ok(())
    }),
    k(
        "XPOD_TUNNEL_QUIC_LISTEN",
        "tunnel.quic_listen",
        &[],
        |c, s| {
            c.tunnel.quic_listen = Some(v::listen(s)?);
            Ok(())
        },
    ),
    k("XPOD_TUNNEL_CENTERS", "tunnel.centers", &[], |c, s| {
        c.tunnel.centers = s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect();
        Ok(())
    }),
    k(
        "XPOD_TUNNEL_EDGE_DOMAIN",
        "tunnel.edge_domain",
        &[],
        |c, s| {
            c.tunnel.edge_domain = some(s);
            Ok(())
        },
    ),
    k(
        "XPOD_TUNNEL_TLS_LISTEN",
        "tunnel.tls_listen",
        &[],
        |c, s| {
            c.tunnel.tls_listen = Some(v::listen(s)?);
            Ok(())
        },
    ),
    k("XPOD_TUNNEL_THREADS", "tunnel.threads", &[], |c, s| {
        c.tunnel.threads = Some(
            s.trim()
                .parse()
                .map_err(|_| format!("expected a number of threads, got {s:?}"))?,
        );
        Ok(())
    }),
    k(
        "XPOD_TUNNEL_RELAY_IDLE_SECS",
        "tunnel.relay_idle_secs",
        &[],
        |c, s| {
            c.tunnel.relay_idle_secs = Some(
                s.trim()
                    .parse()
                    .map_err(|_| format!("expected a number of seconds, got {s:?}"))?,
            );
            Ok(())
        },
    ),
    k("XPOD_TUNNEL_TRANSPORT", "tunnel.transport", &[], |c, s| {
        c.tunnel.transport = s.parse()?;
        Ok(())
    }),
    k("XPOD_TUNNEL_TERMINAL", "tunnel.terminal", &[], |c, s| {
        c.tunnel.terminal = v::parse_bool(s)?;
        Ok(())
    }),
    k(
        "XPOD_TUNNEL_ACCEPT_PODS",
        "tunnel.accept_pods",
        &[],
        |c, s| {
            c.tunnel.accept_pods = s
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            Ok(())
        },
    ),
    k("XPOD_DNS_LISTEN", "dns.listen", &[], |c, s| {
        c.dns.listen = Some(
            s.trim()
                .parse()
                .map_err(|_| format!("expected IP:PORT like 0.0.0.0:53, got {s:?}"))?,
        );
        Ok(())
    }),
    k("XPOD_DNS_ZONE", "dns.zone", &[], |c, s| {
        c.dns.zone = some(s);
        Ok(())
    }),
    k("XPOD_DNS_ADDRESSES", "dns.addresses", &[], |c, s| {
        c.dns.addresses = s
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("expected IP addresses separated by commas, got {a:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }),
    k("XPOD_DNS_TTL", "dns.ttl", &[], |c, s| {
        c.dns.ttl = s
            .trim()
            .parse()
            .map_err(|_| format!("expected seconds, got {s:?}"))?;
        Ok(())
    }),
    k(
        "XPOD_DNS_TSIG_KEY_NAME",
        "dns.tsig_key_name",
        &[],
        |c, s| {
            c.dns.tsig_key_name = some(s);
            Ok(())
        },
    ),
    k("XPOD_DNS_TSIG_SECRET", "dns.tsig_secret", &[], |c, s| {
        c.dns.tsig_secret = some(s).map(Secret::new);
        Ok(())
    }),
    k("XPOD_DNS_SECONDARIES", "dns.secondaries", &[], |c, s| {
        c.dns.secondaries = list(s)
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("expected IP:PORT entries separated by commas, got {a:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }),
    k(
        "XPOD_DNS_UPDATE_SERVER",
        "dns.update_server",
        &[],
        |c, s| {
            c.dns.update_server = Some(
                s.trim()
                    .parse()
                    .map_err(|_| format!("expected IP:PORT like 192.0.2.53:53, got {s:?}"))?,
            );
            Ok(())
        },
    ),
    k("XPOD_ACME_DIRECTORY", "acme.directory", &[], |c, s| {
        c.acme.directory = some(s);
        Ok(())
    }),
    k(
        "XPOD_ACME_DIRECTORY_CA",
        "acme.directory_ca",
        &[],
        |c, s| {
            c.acme.directory_ca = some(s).map(Into::into);
            Ok(())
        },
    ),
    k("XPOD_ACME_CONTACT", "acme.contact", &[], |c, s| {
        c.acme.contact = list(s);
        Ok(())
    }),
    k("XPOD_ACME_NAMES", "acme.names", &[], |c, s| {
        c.acme.names = list(s);
        Ok(())
    }),
    k("XPOD_ACME_KEY_SECRET", "acme.key_secret", &[], |c, s| {
        c.acme.key_secret = some(s).map(Secret::new);
        Ok(())
    }),
    k("XPOD_SANDBOX_SLOTS", "sandbox.slots", &[], |c, s| {
        c.sandbox.slots = s
            .trim()
            .parse()
            .map_err(|_| format!("expected a number of sandboxes, got {s:?}"))?;
        Ok(())
    }),
    k("XPOD_SANDBOX_DOMAIN", "sandbox.domain", &[], |c, s| {
        c.sandbox.domain = some(s);
        Ok(())
    }),
    k(
        "XPOD_FAILOVER_LEASE_TTL_SECS",
        "failover.lease_ttl_secs",
        &[],
        |c, s| {
            c.failover.lease_ttl_secs = s
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
            Ok(())
        },
    ),
    k(
        "XPOD_FAILOVER_STABILITY_WINDOW_SECS",
        "failover.stability_window_secs",
        &[],
        |c, s| {
            c.failover.stability_window_secs = s
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
            Ok(())
        },
    ),
];

/// `XPOD_*` names that belong to the CLI and the test harness, not to the config.
const RESERVED: &[&str] = &[
    "XPOD_CONFIG",
    "XPOD_SERVER",
    "XPOD_KEY",
    "XPOD_LOG",
    "XPOD_JOIN_TOKEN",
];
const RESERVED_PREFIX: &str = "XPOD_TEST_";

/// Every config variable with its dotted key, e.g. `("XPOD_HTTP_LISTEN", "http.listen")`.
pub fn env_vars() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE.iter().map(|e| (e.var, e.key))
}

/// Applies overrides from `env` to `config`. Each value is checked with the key's own rule, so
/// an error names the variable; cross-key rules are left to [`Config::validate`].
pub(crate) fn apply(config: &mut Config, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, _) in env {
        if name.starts_with("XPOD_")
            && !name.starts_with(RESERVED_PREFIX)
            && !RESERVED.contains(&name.as_str())
            && !TABLE.iter().any(|e| e.var == name)
        {
            return Err(ConfigError::UnknownEnv {
                var: name.clone(),
                hint: hint(name),
            });
        }
    }
    // Later entries win, as when a variable is set twice.
    let vars: HashMap<&str, &str> = env
        .iter()
        .filter(|(name, _)| name.starts_with("XPOD_") || name.starts_with("CSS_"))
        .map(|(n, val)| (n.as_str(), val.as_str()))
        .collect();
    for entry in TABLE {
        let chosen = std::iter::once(&entry.var)
            .chain(entry.aliases)
            .find_map(|var| {
                vars.get(var)
                    .filter(|val| !val.trim().is_empty())
                    .map(|val| (*var, *val))
            });
        let Some((var, value)) = chosen else { continue };
        (entry.set)(config, value)
            .and_then(|()| config.check_key(entry.key))
            .map_err(|message| ConfigError::InvalidEnv {
                var: var.to_string(),
                message,
            })?;
    }
    Ok(())
}

/// " (did you mean XPOD_X?)" for a near miss, else "".
fn hint(name: &str) -> String {
    TABLE
        .iter()
        .map(|e| (edit_distance(name, e.var), e.var))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map_or_else(String::new, |(_, var)| format!(" (did you mean {var}?)"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_key_has_a_variable_and_back() {
        let vars: Vec<_> = TABLE.iter().map(|e| e.key).collect();
        assert_eq!(
            vars,
            crate::check::KEYS,
            "env table and check::KEYS must list the same keys in the same order"
        );
        for e in TABLE {
            let suffix = e.key.replace('.', "_").to_ascii_uppercase();
            assert_eq!(e.var, format!("XPOD_{suffix}"), "{}", e.key);
        }
    }

    #[test]
    fn hints_near_misses_only() {
        assert_eq!(hint("XPOD_HTTP_LISTN"), " (did you mean XPOD_HTTP_LISTEN?)");
        assert_eq!(hint("XPOD_FOO"), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
