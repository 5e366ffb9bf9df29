//! Requests this node makes to URLs a client chose (webhook receivers, WebID profiles, identity
//! providers): the one place that resolves such a name, refuses special-purpose addresses
//! ([`crate::special_ip`]) unless allowed — checked on the resolved addresses, so a public name
//! pointing inside the network is refused too — connects (TLS with the system's roots for
//! `https`), sends one HTTP/1.1 request and reads at most a bounded body, all within a timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// An http(s) URL this node may request: `allow_private` lets it name loopback, private and
/// link-local addresses (and `localhost`).
pub fn check_url(url: &str, allow_private: bool) -> Result<Uri, String> {
    if url.len() > 2000 {
        return Err("url: at most 2000 characters".into());
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("url {url:?}: not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("url {url:?}: expected http:// or https://")),
    }
    let host = uri.host().ok_or_else(|| format!("url {url:?}: no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if let Some(range) = crate::special_ip::special(ip).filter(|_| !allow_private) {
            return Err(format!(
                "url {url:?}: {ip} is in {range}, not a public address"
            ));
        }
    } else if !allow_private && (bare == "localhost" || bare.ends_with(".localhost")) {
        return Err(format!("url {url:?}: localhost is not a public address"));
    }
    Ok(uri)
}

/// An answer: status, headers and at most the body limit's bytes of the body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends `req` (origin-form target; `Host` is set here) to `uri` and reads the answer's body up
/// to `body_limit` bytes (a longer body is an error when `strict`, else cut). Everything —
/// resolving, connecting, TLS, the exchange — within `timeout`.
pub async fn send(
    uri: &Uri,
    allow_private: bool,
    mut req: Request<Full<Bytes>>,
    timeout: Duration,
    body_limit: usize,
    strict: bool,
) -> Result<Answer, String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host.clone());
    if let Ok(v) = header::HeaderValue::from_str(&authority) {
        req.headers_mut().insert(header::HOST, v);
    }
    let exchange = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        if !allow_private {
            if let Some((a, range)) = addrs
                .iter()
                .find_map(|a| crate::special_ip::special(a.ip()).map(|r| (a, r)))
            {
                return Err(format!(
                    "{host} resolves to {}, in {range}, not a public address: refused",
                    a.ip()
                ));
            }
        }
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{host} has no address"))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        if https {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server name {host}: {e}"))?;
            let stream = tls_connector()
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), req, body_limit, strict).await
        } else {
            exchange(TokioIo::new(tcp), req, body_limit, strict).await
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {host} within {} s", timeout.as_secs()))?
}

async fn exchange<I>(
    io: I,
    req: Request<Full<Bytes>>,
    body_limit: usize,
    strict: bool,
) -> Result<Answer, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > body_limit {
                if strict {
                    return Err(format!("the answer is larger than {body_limit} bytes"));
                }
                out.extend_from_slice(&data[..body_limit - out.len()]);
                break;
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: out.into(),
    })
}

/// TLS to outside servers: the system's roots, ring.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}
