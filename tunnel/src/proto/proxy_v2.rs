//! PROXY protocol version 2 headers (the HAProxy spec, "The PROXY protocol", §2.2), sans-IO.
//!
//! An edge writes one before relaying a TLS-passthrough or TCP stream to a local service that
//! asked for it (`proxy_protocol = true`), so the service learns the original client's address
//! the way it would behind HAProxy or an AWS NLB. Encoding only what xpod sends: command PROXY
//! over TCP (IPv4 or IPv6; a mixed pair is sent as IPv6 with the IPv4 address mapped), or
//! command LOCAL with family UNSPEC when the client's address is unknown. No TLVs.
//! [`decode`] parses exactly those shapes, for tests and for services written in Rust.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a connection from `source` to `destination`; `None` → a LOCAL header (the
/// receiver uses the connection's own addresses).
pub fn encode(source: Option<SocketAddr>, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    let Some(source) = source else {
        out.extend_from_slice(&[0x20, 0x00, 0, 0]); // v2 LOCAL, UNSPEC, no addresses
        return out;
    };
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 bytes
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]); // v2 PROXY, TCP over IPv6, 36 bytes
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A decoded header: `(source, destination)` for PROXY, `None` for LOCAL.
pub type Addresses = Option<(SocketAddr, SocketAddr)>;

/// Decodes a header at the start of `buf`: `Ok(Some((addresses, header_len)))`, `Ok(None)` if
/// more bytes are needed, or an error naming what is wrong.
pub fn decode(buf: &[u8]) -> Result<Option<(Addresses, usize)>, String> {
    let have = buf.len().min(SIGNATURE.len());
    if buf[..have] != SIGNATURE[..have] {
        return Err("not a PROXY protocol v2 header (bad signature)".into());
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let total = 16 + len;
    match (buf[12], buf[13]) {
        (0x20, _) => Ok(Some((None, total))),
        (0x21, 0x11) if len >= 12 => {
            let ip = |o: usize| IpAddr::from([body[o], body[o + 1], body[o + 2], body[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            let addrs = (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            );
            Ok(Some((Some(addrs), total)))
        }
        (0x21, 0x21) if len >= 36 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                IpAddr::from(a)
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            let addrs = (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            );
            Ok(Some((Some(addrs), total)))
        }
        (vc, fam) => Err(format!(
            "unsupported PROXY v2 version/command {vc:#04x} or family {fam:#04x} (length {len})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Golden bytes, checked by hand against the spec's layout (§2.2: signature, ver/cmd,
    /// fam/proto, length, src addr, dst addr, src port, dst port).
    #[test]
    fn ipv4_golden_bytes() {
        let h = encode(Some(addr("192.0.2.10:54321")), addr("127.0.0.1:3000"));
        let want: Vec<u8> = [
            &SIGNATURE[..],
            &[0x21, 0x11, 0x00, 0x0c],
            &[192, 0, 2, 10],
            &[127, 0, 0, 1],
            &54321u16.to_be_bytes(),
            &3000u16.to_be_bytes(),
        ]
        .concat();
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn local_when_the_client_is_unknown() {
        let h = encode(None, addr("127.0.0.1:1"));
        assert_eq!(&h[12..], &[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(decode(&h).unwrap(), Some((None, 16)));
    }

    #[test]
    fn ipv6_and_mixed_families_round_trip() {
        for (s, d) in [
            ("[2001:db8::1]:443", "[::1]:8443"),
            ("192.0.2.1:1000", "[::1]:22"),
            ("[2001:db8::7]:9", "127.0.0.1:22"),
        ] {
            let h = encode(Some(addr(s)), addr(d));
            assert_eq!(h.len(), 52, "{s} → {d}");
            let (got, used) = decode(&h).unwrap().unwrap();
            assert_eq!(used, 52);
            let (gs, gd) = got.unwrap();
            assert_eq!(gs.port(), addr(s).port());
            assert_eq!(gd.port(), addr(d).port());
            assert_eq!(v6(gs.ip()), v6(addr(s).ip()));
            assert_eq!(v6(gd.ip()), v6(addr(d).ip()));
        }
    }

    #[test]
    fn decode_needs_whole_headers_and_rejects_others() {
        let h = encode(Some(addr("10.0.0.1:5")), addr("10.0.0.2:6"));
        for cut in 0..h.len() {
            assert_eq!(decode(&h[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut with_payload = h.clone();
        with_payload.extend_from_slice(b"SSH-2.0");
        let (a, used) = decode(&with_payload).unwrap().unwrap();
        assert_eq!(used, h.len());
        assert_eq!(a, Some((addr("10.0.0.1:5"), addr("10.0.0.2:6"))));
        assert!(decode(b"GET / HTTP/1.1\r\n")
            .unwrap_err()
            .contains("signature"));
        let mut v1 = h.clone();
        v1[12] = 0x11;
        assert!(decode(&v1).unwrap_err().contains("unsupported"));
    }
}
