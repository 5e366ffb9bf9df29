//! The TCP transport through an HTTP proxy (`HTTPS_PROXY`), for networks where the only way
//! out is a proxy: `CONNECT center:port`, then the same TLS and QUIC as without one
//! ([`super::tcp::connect`]). QUIC over UDP cannot go through an HTTP proxy, so on such a
//! network `auto` ends up on TCP by itself.
//!
//! Read like curl does: `HTTPS_PROXY` (or `https_proxy`), then `ALL_PROXY` (or `all_proxy`);
//! `NO_PROXY` (or `no_proxy`) lists addresses reached directly (`*`, an IP, or `ip:port`).
//! The proxy is `http://[user:password@]host[:port]` (port 80 if none; `https://` proxies are
//! refused with the reason). Credentials go in `Proxy-Authorization: Basic` and are never
//! logged. The proxy's answer is read byte by byte up to its blank line (nothing of the
//! tunnel's own bytes is consumed), at most [`MAX_ANSWER`] bytes; anything but `2xx` is an
//! error naming the proxy's status line.

use std::io;
use std::net::SocketAddr;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The most bytes of the proxy's answer to `CONNECT` read before giving up.
pub const MAX_ANSWER: usize = 8192;

/// An HTTP proxy to reach a center through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` of the proxy.
    pub addr: String,
    /// `user:password`, if the URL had one.
    credentials: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

impl Proxy {
    /// Parses a proxy URL (see the module docs).
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "the proxy must be an http:// URL (a {scheme}:// proxy is not supported)"
                ))
            }
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c.to_string()), h),
            None => (None, rest),
        };
        if host.is_empty() || host.contains('/') {
            return Err("the proxy URL names no host (expected http://host:port)".into());
        }
        let has_port = match host.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => {
                p.parse::<u16>()
                    .map_err(|_| format!("the proxy port {p:?} is not a number"))?;
                true
            }
            _ => false,
        };
        let addr = if has_port {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Proxy { addr, credentials })
    }

    /// The proxy the environment names for `target`, if any (see the module docs).
    pub fn from_env(target: SocketAddr) -> Result<Option<Proxy>, String> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let Some(url) = var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]) else {
            return Ok(None);
        };
        if let Some(no) = var(&["NO_PROXY", "no_proxy"]) {
            if bypassed(&no, target) {
                return Ok(None);
            }
        }
        Proxy::parse(&url)
            .map(Some)
            .map_err(|e| format!("HTTPS_PROXY: {e}"))
    }

    /// A TCP connection to `target` through the proxy.
    pub async fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("the proxy {}: {e}", self.addr)))?;
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(c);
            req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut answer = Vec::with_capacity(256);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= MAX_ANSWER {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the proxy {} answered CONNECT with more than {MAX_ANSWER} bytes of headers",
                        self.addr
                    ),
                ));
            }
            let b = s.read_u8().await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the proxy {} closed before answering CONNECT: {e}",
                        self.addr
                    ),
                )
            })?;
            answer.push(b);
        }
        let status_line = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let ok = status_line
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.len() == 3 && code.starts_with('2'));
        if !status_line.starts_with("HTTP/1.") || !ok {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "the proxy {} refused CONNECT {target}: {status_line:?}",
                    self.addr
                ),
            ));
        }
        Ok(s)
    }
}

/// Whether `NO_PROXY` (`no`) lists `target`.
fn bypassed(no: &str, target: SocketAddr) -> bool {
    no.split(',').map(str::trim).any(|e| {
        e == "*"
            || e == target.to_string()
            || e.trim_start_matches('[').trim_end_matches(']') == target.ip().to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_read_and_bad_ones_named() {
        let p = Proxy::parse("http://proxy.corp:3128").unwrap();
        assert_eq!(p.addr, "proxy.corp:3128");
        assert_eq!(p.credentials, None);
        let p = Proxy::parse("http://alice:s3cret@10.0.0.1:8080/").unwrap();
        assert_eq!(p.addr, "10.0.0.1:8080");
        assert_eq!(p.credentials.as_deref(), Some("alice:s3cret"));
        assert!(!format!("{p:?}").contains("s3cret"), "no secret in Debug");
        assert_eq!(Proxy::parse("10.0.0.1").unwrap().addr, "10.0.0.1:80");
        assert_eq!(Proxy::parse("[::1]:3128").unwrap().addr, "[::1]:3128");
        assert!(Proxy::parse("https://p:443")
            .unwrap_err()
            .contains("https:// proxy is not supported"));
        assert!(Proxy::parse("http://p:port")
            .unwrap_err()
            .contains("not a number"));
        assert!(Proxy::parse("http://").unwrap_err().contains("no host"));
    }

    #[test]
    fn no_proxy_lists_addresses_reached_directly() {
        let t: SocketAddr = "203.0.113.7:443".parse().unwrap();
        assert!(bypassed("*", t));
        assert!(bypassed("localhost, 203.0.113.7", t));
        assert!(bypassed("203.0.113.7:443", t));
        assert!(!bypassed("203.0.113.8,203.0.113.7:444", t));
    }

    #[tokio::test]
    async fn a_refusal_and_an_endless_answer_are_errors_naming_the_proxy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n".to_vec(),
                vec![b'x'; MAX_ANSWER + 10],
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&answer).await;
            }
        });
        let p = Proxy::parse(&format!("http://{addr}")).unwrap();
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = p.connect(target).await.unwrap_err().to_string();
        assert!(e.contains("refused CONNECT") && e.contains("407"), "{e}");
        let e = p.connect(target).await.unwrap_err().to_string();
        assert!(e.contains("more than 8192 bytes"), "{e}");
    }
}
