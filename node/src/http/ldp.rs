//! LDP vocabulary: `Link` type headers, container listings in Turtle and JSON-LD, etag and
//! range header parsing, and date formatting. Pure functions, unit-tested here.

use xpod_routing::encode_path;
use xpod_storage::meta::{EtagCondition, Millis, ResourceRecord};

const LDP: &str = "http://www.w3.org/ns/ldp#";

/// The `Link` header values (rel="type") of a resource (`rdf`: a document with an RDF media
/// type, an `ldp:RDFSource`).
pub fn type_links(path: &str, is_container: bool, rdf: bool) -> Vec<String> {
    let mut v = vec![format!("<{LDP}Resource>; rel=\"type\"")];
    if is_container {
        v.push(format!("<{LDP}Container>; rel=\"type\""));
        v.push(format!("<{LDP}BasicContainer>; rel=\"type\""));
    } else if rdf {
        v.push(format!("<{LDP}RDFSource>; rel=\"type\""));
    } else {
        v.push(format!("<{LDP}NonRDFSource>; rel=\"type\""));
    }
    if path == "/" {
        v.push("<http://www.w3.org/ns/pim/space#Storage>; rel=\"type\"".to_string());
    }
    v
}

/// The container of `path` (`None` for the root).
pub fn parent(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(trimmed[..=cut].to_string())
}

/// The `Link` to a resource's description resource (`<name>.meta`, a container's `.meta`),
/// relative to the resource.
pub fn describedby_link(path: &str) -> String {
    let target = if path.ends_with('/') {
        ".meta".to_string()
    } else {
        format!(
            "{}.meta",
            encode_path(path.rsplit('/').next().unwrap_or(""))
        )
    };
    format!("<{target}>; rel=\"describedby\"")
}

/// The last segment of a member path, as a relative IRI (`a.txt`, `sub/`), percent-encoded.
fn member_iri(member: &ResourceRecord) -> String {
    let trimmed = member.path.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or("");
    let mut iri = encode_path(name);
    if member.is_container {
        iri.push('/');
    }
    iri
}

fn rdf_types(is_container: bool) -> &'static str {
    if is_container {
        "ldp:Container, ldp:BasicContainer, ldp:Resource"
    } else {
        "ldp:Resource, ldp:NonRDFSource"
    }
}

/// The container listing in Turtle. IRIs are relative to the container's URL.
pub fn turtle(container: &ResourceRecord, members: &[ResourceRecord]) -> String {
    let mut out = String::from(
        "@prefix ldp: <http://www.w3.org/ns/ldp#>.\n@prefix dc: <http://purl.org/dc/terms/>.\n\
         @prefix stat: <http://www.w3.org/ns/posix/stat#>.\n@prefix xsd: <http://www.w3.org/2001/XMLSchema#>.\n\n",
    );
    out.push_str(&format!(
        "<> a {};\n    dc:modified \"{}\"^^xsd:dateTime",
        rdf_types(true),
        xsd_datetime(container.modified_at)
    ));
    if !members.is_empty() {
        let list: Vec<String> = members
            .iter()
            .map(|m| format!("<{}>", member_iri(m)))
            .collect();
        out.push_str(&format!(";\n    ldp:contains {}", list.join(", ")));
    }
    out.push_str(".\n");
    for m in members {
        out.push_str(&format!(
            "<{}> a {};\n    stat:size {};\n    dc:modified \"{}\"^^xsd:dateTime.\n",
            member_iri(m),
            rdf_types(m.is_container),
            m.size,
            xsd_datetime(m.modified_at)
        ));
    }
    out
}

/// The container listing in JSON-LD (compacted with a small context).
pub fn json_ld(container: &ResourceRecord, members: &[ResourceRecord]) -> serde_json::Value {
    let types = |c: bool| -> Vec<&str> {
        if c {
            vec!["ldp:Container", "ldp:BasicContainer", "ldp:Resource"]
        } else {
            vec!["ldp:Resource", "ldp:NonRDFSource"]
        }
    };
    let mut graph = vec![serde_json::json!({
        "@id": "",
        "@type": types(true),
        "dc:modified": {"@value": xsd_datetime(container.modified_at), "@type": "xsd:dateTime"},
        "ldp:contains": members.iter().map(|m| serde_json::json!({"@id": member_iri(m)})).collect::<Vec<_>>(),
    })];
    for m in members {
        graph.push(serde_json::json!({
            "@id": member_iri(m),
            "@type": types(m.is_container),
            "stat:size": m.size,
            "dc:modified": {"@value": xsd_datetime(m.modified_at), "@type": "xsd:dateTime"},
        }));
    }
    serde_json::json!({
        "@context": {
            "ldp": LDP,
            "dc": "http://purl.org/dc/terms/",
            "stat": "http://www.w3.org/ns/posix/stat#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
        },
        "@graph": graph,
    })
}

/// Parses an `If-Match` / `If-None-Match` value: `*` or a list of entity tags.
/// `weak_ok`: weak tags (`W/"x"`) count (If-None-Match's weak comparison) or are dropped
/// (If-Match's strong comparison, where a weak tag never matches).
pub fn parse_etags(value: &str, weak_ok: bool) -> Result<EtagCondition, String> {
    let v = value.trim();
    if v == "*" {
        return Ok(EtagCondition::Any);
    }
    if v.is_empty() {
        return Err("empty entity-tag list".to_string());
    }
    let mut tags = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (weak, quoted) = match part.strip_prefix("W/") {
            Some(q) => (true, q),
            None => (false, part),
        };
        let tag = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .filter(|t| !t.contains('"'))
            .ok_or_else(|| {
                format!(
                    "malformed entity tag `{}`: expected \"…\" or *",
                    part.chars().take(80).collect::<String>()
                )
            })?;
        if !weak || weak_ok {
            tags.push(tag.to_string());
        }
    }
    // Only weak tags given to If-Match leave an empty list: nothing can match, as RFC 9110 says.
    Ok(EtagCondition::Tags(tags))
}

/// The outcome of a `Range` header against a body of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// Serve the whole body (no header, another unit, several ranges, or a syntax error —
    /// RFC 9110 says to ignore what we do not understand).
    Full,
    /// Serve `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range.
pub fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeSpec::Full,
        (true, false) => match parse(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => RangeSpec::Full,
        },
        (false, _) => {
            let Some(start) = parse(a) else {
                return RangeSpec::Full;
            };
            let end = if b.is_empty() {
                Some(u64::MAX)
            } else {
                parse(b)
            };
            let Some(end) = end else {
                return RangeSpec::Full;
            };
            if end < start {
                return RangeSpec::Full;
            }
            if start >= size {
                return RangeSpec::Unsatisfiable;
            }
            RangeSpec::Partial {
                start,
                end: end.min(size - 1),
            }
        }
    }
}

/// `2026-11-28T03:22:27.123Z` from Unix milliseconds.
pub fn xsd_datetime(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days → (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `Last-Modified` value.
pub fn http_date(ms: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, container: bool) -> ResourceRecord {
        ResourceRecord {
            pod_id: "p".into(),
            path: path.into(),
            is_container: container,
            content_type: None,
            etag: "e".into(),
            size: 3,
            blob_key: None,
            regions: vec![],
            version: 1,
            modified_at: 0,
        }
    }

    #[test]
    fn turtle_lists_members() {
        let t = turtle(
            &rec("/notes/", true),
            &[rec("/notes/a.txt", false), rec("/notes/my dir/", true)],
        );
        assert!(t.contains("ldp:contains <a.txt>, <my%20dir/>."), "{t}");
        assert!(t.contains("<> a ldp:Container, ldp:BasicContainer, ldp:Resource"));
        let j = json_ld(&rec("/notes/", true), &[rec("/notes/a.txt", false)]);
        assert_eq!(j["@graph"][0]["ldp:contains"][0]["@id"], "a.txt");
    }

    #[test]
    fn etag_lists() {
        assert_eq!(parse_etags("*", false).unwrap(), EtagCondition::Any);
        assert_eq!(
            parse_etags("\"a\", \"b\"", false).unwrap(),
            EtagCondition::Tags(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_etags("W/\"a\"", true).unwrap(),
            EtagCondition::Tags(vec!["a".into()])
        );
        assert_eq!(
            parse_etags("W/\"a\"", false).unwrap(),
            EtagCondition::Tags(vec![])
        );
        assert!(parse_etags("abc", false).is_err());
        assert!(parse_etags("", false).is_err());
    }

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-3", 10), Partial { start: 0, end: 3 });
        assert_eq!(parse_range("bytes=5-", 10), Partial { start: 5, end: 9 });
        assert_eq!(parse_range("bytes=-4", 10), Partial { start: 6, end: 9 });
        assert_eq!(parse_range("bytes=-40", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=8-100", 10), Partial { start: 8, end: 9 });
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Full);
        assert_eq!(parse_range("items=0-1", 10), Full);
        assert_eq!(parse_range("bytes=5-2", 10), Full);
        assert_eq!(parse_range("bytes=x-2", 10), Full);
    }

    #[test]
    fn dates() {
        assert_eq!(xsd_datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xsd_datetime(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
