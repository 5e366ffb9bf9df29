//! Value rules shared by the file, the environment and [`crate::Config::validate`]. Each returns
//! `Err("expected ..., got ...")` without the key: callers prefix the key or the variable.

/// A node id: 1..=63 characters of `[a-z0-9-]`, not starting or ending with `-`.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    dns_label(id).map_err(|why| format!("expected a node id ({LABEL_FORM}), got {id:?}: {why}"))
}

/// A pod id, with the same rule as a DNS label: 1..=63 characters of `[a-z0-9-]`, not starting
/// or ending with `-`.
pub fn validate_pod_id(id: &str) -> Result<(), String> {
    dns_label(id).map_err(|why| format!("expected a pod id ({LABEL_FORM}), got {id:?}: {why}"))
}

/// An account: an owner name (1–64 letters, digits, `.`, `_` or `-`) or a WebID (`http://` or
/// `https://` and 1–2040 more characters, no spaces or control characters).
pub fn validate_account(account: &str) -> Result<(), String> {
    let owner = (1..=64).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let webid = ["https://", "http://"]
        .iter()
        .find_map(|s| account.strip_prefix(s))
        .is_some_and(|rest| {
            (1..=2040).contains(&rest.chars().count())
                && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if owner || webid {
        Ok(())
    } else {
        Err(format!(
            "expected an account: an owner name (1–64 letters, digits, `.`, `_` or `-`) or a WebID (http:// or https://, no spaces), got {account:?}"
        ))
    }
}

const LABEL_FORM: &str = "1-63 of a-z, 0-9, '-', not starting or ending with '-'";

fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > 63 {
        return Err("longer than 63 characters");
    }
    if let Some(c) = s
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(if c.is_ascii_uppercase() {
            "uppercase letter"
        } else {
            "character other than a-z, 0-9, '-'"
        });
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("starts or ends with '-'");
    }
    Ok(())
}

pub(crate) fn node_id_setting(id: &str) -> Result<(), String> {
    if id == "auto" {
        return Ok(());
    }
    dns_label(id)
        .map_err(|why| format!("expected \"auto\" or a node id ({LABEL_FORM}), got {id:?}: {why}"))
}

pub(crate) fn region(r: &str) -> Result<(), String> {
    dns_label(r).map_err(|why| format!("expected a region name ({LABEL_FORM}), got {r:?}: {why}"))
}

/// S3 bucket naming: 3..=63 of `[a-z0-9.-]`, starting and ending with a letter or digit.
pub(crate) fn bucket(b: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-'))
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a bucket name (3-63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit), got {b:?}"
        ))
    }
}

/// A TSIG secret: standard base64 (with padding) of at least 16 bytes.
pub(crate) fn base64_key(s: &str) -> Result<(), String> {
    let s = s.trim();
    let body = s.trim_end_matches('=');
    let ok = s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !ok {
        return Err("expected standard base64 (what tsig-keygen prints as `secret`)".into());
    }
    if body.len() * 3 / 4 < 16 {
        return Err("expected a secret of at least 16 bytes".into());
    }
    Ok(())
}

/// A lowercase DNS name: labels as in [`validate_pod_id`], total length ≤ 253, no trailing dot.
pub(crate) fn dns_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("expected a lowercase DNS name like pods.example.com (labels of {LABEL_FORM}, at most 253 characters), got {name:?}: {why}")
    };
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        dns_label(label).map_err(|why| bad(&format!("label {label:?}: {why}")))?;
    }
    Ok(())
}

/// `HOST:PORT` of a peer: a DNS name or an IP (IPv6 in brackets) and a port 1–65535.
pub(crate) fn host_port(s: &str) -> Result<(), String> {
    let bad = || format!("expected HOST:PORT (e.g. center1.example.com:8443), got {s:?}");
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad()),
    }
    dns_name(&host.to_ascii_lowercase()).map_err(|_| bad())
}

pub(crate) fn listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("expected HOST:PORT with an IP host, e.g. 0.0.0.0:8080 or [::]:8080, got {s:?}")
    })
}

/// `http(s)://host[:port]`: no path, no trailing slash.
pub(crate) fn base_url(u: &str) -> Result<(), String> {
    let form =
        "expected http://HOST[:PORT] or https://HOST[:PORT] with no path and no trailing '/'";
    let Some(rest) = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
    else {
        return Err(format!(
            "{form}, got {u:?}: scheme must be http:// or https://"
        ));
    };
    if u.ends_with('/') {
        return Err(format!("{form}, got {u:?}: remove the trailing '/'"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("{form}, got {u:?}: a path is not supported"));
    }
    authority(rest).map_err(|why| format!("{form}, got {u:?}: {why}"))
}

fn authority(a: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(v6) = a.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or("unclosed '['")?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "bad IPv6 address")?;
        match after {
            "" => ("v6", None),
            p => (
                "v6",
                Some(p.strip_prefix(':').ok_or("expected ':' after ']'")?),
            ),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err("host may contain only letters, digits, '.', '-'");
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| "port must be a number 0-65535")?;
    }
    Ok(())
}

/// Checks a URL's scheme against a list. Never echoes the value: it may hold a password.
pub(crate) fn secret_url(u: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = schemes.join(", ");
    match schemes.iter().find(|s| u.starts_with(**s)) {
        Some(s) if u.len() > s.len() => Ok(()),
        Some(s) => Err(format!(
            "expected a URL starting with one of {expected}, got only {s:?}"
        )),
        None => {
            let scheme = u.split_once("://").map_or("(none)", |(s, _)| s);
            Err(format!("expected a URL starting with one of {expected}, got scheme {scheme:?} (value not shown)"))
        }
    }
}

pub(crate) fn objects_url(u: &str) -> Result<(), String> {
    let ok = ["file://", "s3://"]
        .iter()
        .any(|s| u.len() > s.len() && u.starts_with(s));
    if ok && !u.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "expected a URL like file:///var/lib/xpod/objects or s3://bucket, got {u:?}"
        ))
    }
}

/// A region's bucket: a bucket name, `s3://NAME` or `file:///absolute/path`.
pub(crate) fn region_bucket(b: &str) -> Result<(), String> {
    if let Some(path) = b.strip_prefix("file://") {
        return if path.starts_with('/') && path.len() > 1 {
            Ok(())
        } else {
            Err(format!("expected file:///absolute/path, got {b:?}"))
        };
    }
    bucket(b.strip_prefix("s3://").unwrap_or(b))
}

/// An S3 endpoint: `host[:port]` or `http(s)://host[:port]` (the seed accepted both).
pub(crate) fn endpoint(e: &str) -> Result<(), String> {
    let form = "expected HOST[:PORT] or http(s)://HOST[:PORT]";
    let rest = match e.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{form}, got {e:?}: scheme {scheme:?} is not http or https"
            ))
        }
        None => e,
    };
    authority(rest.trim_end_matches('/')).map_err(|why| format!("{form}, got {e:?}: {why}"))
}

pub(crate) fn non_empty(s: &str, what: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        Err(format!("expected {what}, got an empty string"))
    } else {
        Ok(())
    }
}

pub(crate) fn log_level(s: &str) -> Result<(), String> {
    if s.trim().is_empty() || s.contains(char::is_control) {
        Err(format!(
            "expected a tracing filter like \"info\" or \"info,xpod_routing=debug\", got {s:?}"
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn pool_size(n: usize) -> Result<(), String> {
    if (1..=1024).contains(&n) {
        Ok(())
    } else {
        Err(format!("expected a pool size from 1 to 1024, got {n}"))
    }
}

pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true/false/1/0/yes/no, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "node-1", "0", &"a".repeat(63)] {
            assert!(validate_node_id(ok).is_ok(), "{ok}");
            assert!(validate_pod_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
            assert!(validate_node_id(bad).is_err(), "{bad}");
            assert!(validate_pod_id(bad).is_err(), "{bad}");
        }
        assert!(node_id_setting("auto").is_ok());
    }

    #[test]
    fn base64_keys() {
        assert!(base64_key("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==").is_ok());
        assert!(base64_key("short=").is_err());
        assert!(base64_key("not base64 at all!!!").is_err());
        assert!(base64_key("c2VjcmV0LXNlY3JldC1zZWNyZXQ=====").is_err());
    }

    #[test]
    fn dns_names() {
        assert!(dns_name("pods.example.com").is_ok());
        assert!(dns_name("localhost").is_ok());
        for bad in [
            "",
            "a..b",
            "a.",
            ".a",
            "Pods.example.com",
            "a_b.com",
            "-a.com",
        ] {
            assert!(dns_name(bad).is_err(), "{bad}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(dns_name(&long).is_err());
    }

    #[test]
    fn base_urls() {
        for ok in [
            "http://a",
            "https://pods.example.com",
            "http://127.0.0.1:8080",
            "http://[::1]:80",
            "https://[::1]",
        ] {
            assert!(base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://a",
            "a.com",
            "http://a/",
            "http://a/x",
            "http://",
            "http://a:x",
            "http://a:99999",
            "http://[::1",
            "http://a b",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_urls_never_echo_the_value() {
        let err = secret_url("mysql://u:hunter2@h/db", &["postgres://"]).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(secret_url("postgres://u:p@h/db", &["postgres://"]).is_ok());
        assert!(secret_url("postgres://", &["postgres://"]).is_err());
    }

    #[test]
    fn endpoints_buckets_bools() {
        assert!(endpoint("minio:9000").is_ok());
        assert!(endpoint("http://minio:9000").is_ok());
        assert!(endpoint("ftp://minio").is_err());
        assert!(bucket("xpod-bj").is_ok());
        assert!(bucket("ab").is_err());
        assert!(bucket("Xpod").is_err());
        assert!(region_bucket("s3://xpod-bj").is_ok());
        assert!(region_bucket("file:///srv/xpod-bj").is_ok());
        assert!(region_bucket("file://relative").is_err());
        assert!(region_bucket("s3://X").is_err());
        assert_eq!(parse_bool("YES"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("on").is_err());
    }
}
