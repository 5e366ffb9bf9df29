//! What a forwarded request and its response look like (see [`super`]).

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri};

/// On a `PodRequests` stream: `<pod_id> <epoch> <hops>` of the request (set by the forwarder,
/// trusted only on streams from a mutually authenticated peer; anything a client sends under
/// this name is replaced).
pub const HOP: &str = "x-xpod-hop";
/// On a `PodRequests` stream: the original client's `ip:port`.
pub const CLIENT: &str = "x-xpod-client";

/// The request as the next hop gets it on the first hop: origin-form target, HTTP/1.1, no
/// hop-by-hop headers (nor `Expect`: this node already answered it), plus `Forwarded`,
/// `X-Forwarded-For` (appended), `X-Forwarded-Host` and `X-Forwarded-Proto` (`https` for a
/// request marked [`Https`]).
pub fn prepare<B>(req: Request<B>, host: &str, peer: SocketAddr) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let proto = if parts.extensions.get::<Https>().is_some() {
        "https"
    } else {
        "http"
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    parts.uri = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = http::Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    h.remove(header::EXPECT);
    if !h.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(header::HOST, v);
        }
    }
    let ip = peer.ip();
    let for_node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let host_q = host.replace(['"', '\\'], "");
    append(
        h,
        header::FORWARDED,
        &format!("for={for_node};host=\"{host_q}\";proto={proto}"),
    );
    append(
        h,
        HeaderName::from_static("x-forwarded-for"),
        &ip.to_string(),
    );
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    Request::from_parts(parts, body)
}

/// Adds `value` to a list header: `old, value` (several lines folded into one).
pub fn append(h: &mut HeaderMap, name: HeaderName, value: &str) {
    let old: Vec<&str> = h
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let joined = if old.is_empty() {
        value.to_string()
    } else {
        format!("{}, {value}", old.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        h.insert(name, v);
    }
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

/// The protocol a request asks to switch to: its `Upgrade` header, when `Connection` lists
/// `upgrade`.
pub fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Whether a request may be sent twice: an idempotent method without a body (what Go's
/// `http.Transport` retries on a reused connection too).
pub fn replayable(parts: &http::request::Parts) -> bool {
    let idempotent = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    let no_body = !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    idempotent && no_body && !parts.headers.contains_key(header::UPGRADE)
}

/// A copy of a [`replayable`] request with the body `empty`, to send again if a reused stream
/// closes under the original; `None` for anything else.
pub fn replay_of<B, E>(req: &Request<B>, empty: impl FnOnce() -> E) -> Option<Request<E>> {
    let (parts, _) = Request::new(()).into_parts();
    let mut parts = parts;
    parts.method = req.method().clone();
    parts.uri = req.uri().clone();
    parts.version = req.version();
    parts.headers = req.headers().clone();
    replayable(&parts).then(|| Request::from_parts(parts, empty()))
}

/// Marks a request that arrived over HTTPS (a request extension set by the TLS front); the
/// first hop forwards it as `X-Forwarded-Proto: https`.
#[derive(Clone, Copy, Debug)]
pub struct Https;

/// Set in the extensions of a request that arrived over the mesh or an edge's tunnel (from a
/// mutually authenticated peer's `HOP` header, never from a client's).
#[derive(Clone, Debug)]
pub struct MeshHop {
    /// The pod the request is for; a request for another pod is refused.
    pub pod_id: String,
    /// How many nodes forwarded it already.
    pub hops: u8,
    /// The epoch the sender believed.
    pub epoch: u64,
    /// The node that sent it (from its certificate; `center` on an edge's tunnel).
    pub from: String,
}

/// `scheme://host` of a request as its client made it: from `X-Forwarded-Proto` and
/// `X-Forwarded-Host` when a mutually authenticated node forwarded it (the request carries a
/// [`MeshHop`]), else from the listener it arrived on ([`Https`]) and `Host`.
pub fn public_origin<B>(req: &Request<B>) -> String {
    let h = req.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let forwarded = req.extensions().get::<MeshHop>().is_some();
    let proto = if forwarded {
        match text("x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        }
    } else if req.extensions().get::<Https>().is_some() {
        "https"
    } else {
        "http"
    };
    let host = forwarded
        .then(|| text("x-forwarded-host"))
        .flatten()
        .or_else(|| text(header::HOST.as_str()))
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{proto}://{}", host.to_ascii_lowercase())
}

/// The `HOP` header value for a pod request: `<pod_id> <epoch> <hops>`.
pub fn hop_value(pod_id: &str, epoch: u64, hops: u8) -> String {
    format!("{pod_id} {epoch} {hops}")
}

/// Parses a `HOP` header value; `None` for anything malformed.
pub fn parse_hop(v: &str) -> Option<(String, u64, u8)> {
    let mut it = v.split(' ');
    let pod = it.next().filter(|p| !p.is_empty())?;
    let epoch = it.next()?.parse().ok()?;
    let hops = it.next()?.parse().ok()?;
    it.next().is_none().then(|| (pod.to_string(), epoch, hops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn list_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        append(
            &mut h,
            HeaderName::from_static("x-forwarded-for"),
            "127.0.0.1",
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    }

    #[test]
    fn prepare_adds_forwarding_headers_and_origin_form() {
        let req = Request::builder()
            .uri("http://a.example/x?y=1")
            .header("connection", "keep-alive")
            .header("expect", "100-continue")
            .body(())
            .unwrap();
        let out = prepare(req, "a.example", "[2001:db8::1]:5".parse().unwrap());
        assert_eq!(out.uri(), "/x?y=1");
        let h = out.headers();
        assert!(!h.contains_key("connection") && !h.contains_key("expect"));
        assert_eq!(h["host"], "a.example");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=\"a.example\";proto=http"
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn a_request_that_came_over_https_is_forwarded_as_https() {
        let mut req = Request::get("/x").body(()).unwrap();
        req.extensions_mut().insert(Https);
        let out = prepare(req, "a.example", "192.0.2.1:5".parse().unwrap());
        assert_eq!(out.headers()["x-forwarded-proto"], "https");
        assert!(out.headers()["forwarded"]
            .to_str()
            .unwrap()
            .ends_with("proto=https"));
    }

    #[test]
    fn replay_only_bodiless_idempotent_requests() {
        let get = Request::get("/a").body(()).unwrap();
        assert!(replay_of(&get, || ()).is_some());
        let post = Request::post("/a").body(()).unwrap();
        assert!(replay_of(&post, || ()).is_none());
        let with_body = Request::get("/a")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert!(replay_of(&with_body, || ()).is_none());
    }

    #[test]
    fn hop_values_round_trip_and_bad_ones_are_refused() {
        assert_eq!(
            parse_hop(&hop_value("alice", 7, 2)),
            Some(("alice".into(), 7, 2))
        );
        for bad in [
            "",
            "alice",
            "alice 7",
            "alice x 1",
            "alice 7 300",
            "a 1 1 x",
            " 1 1",
        ] {
            assert_eq!(parse_hop(bad), None, "{bad:?}");
        }
    }
}
