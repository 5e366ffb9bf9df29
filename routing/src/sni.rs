//! Sans-IO parsing of the server name (SNI, RFC 6066 §3) from the first bytes of a TLS
//! connection: the ClientHello (RFC 8446 §4.1.2), possibly spread over several TLS records.
//!
//! [`parse_sni`] is called with everything read so far and says whether it needs more bytes
//! (`Err(SniError::Incomplete)`), found a name (`Ok(Some(name))`, lowercased and checked as a DNS
//! name), found a ClientHello without one (`Ok(None)`), or gave up. A ClientHello longer than
//! [`MAX_CLIENT_HELLO`] is refused so a caller's buffer stays bounded. Never panics.

/// The largest ClientHello (handshake message body) accepted: 16 KiB.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST_NAME: u8 = 0x00;

/// Why no server name came out of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniError {
    /// More bytes are needed to decide.
    Incomplete,
    /// The bytes are not the start of a TLS connection (not a handshake record).
    NotTls,
    /// A TLS handshake, but broken or not acceptable; the text says what.
    Malformed(String),
}

impl std::fmt::Display for SniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SniError::Incomplete => f.write_str("incomplete TLS ClientHello"),
            SniError::NotTls => f.write_str("not a TLS connection"),
            SniError::Malformed(what) => write!(f, "malformed TLS ClientHello: {what}"),
        }
    }
}

impl std::error::Error for SniError {}

fn malformed(what: impl Into<String>) -> SniError {
    SniError::Malformed(what.into())
}

/// The server name of the ClientHello at the start of `buf`. See the module docs.
pub fn parse_sni(buf: &[u8]) -> Result<Option<String>, SniError> {
    let hello = client_hello(buf)?;
    parse_client_hello(&hello).map(|(name, _)| name)
}

/// Whether the complete ClientHello at the start of `buf` offers ALPN protocol `proto`.
pub fn offers_alpn(buf: &[u8], proto: &[u8]) -> bool {
    client_hello(buf)
        .and_then(|h| parse_client_hello(&h))
        .is_ok_and(|(_, alpn)| alpn.iter().any(|p| p.as_slice() == proto))
}

/// Reassembles the ClientHello handshake message body from the records at the start of `buf`.
fn client_hello(buf: &[u8]) -> Result<Vec<u8>, SniError> {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        // The record header: type, version (3.x), length.
        if let Some(&t) = rest.first() {
            if t != CONTENT_HANDSHAKE {
                return Err(if handshake.is_empty() {
                    SniError::NotTls
                } else {
                    malformed(format!("record of type {t} inside the ClientHello"))
                });
            }
        }
        if let Some(&major) = rest.get(1) {
            if major != 0x03 {
                return Err(if handshake.is_empty() {
                    SniError::NotTls
                } else {
                    malformed("bad record version")
                });
            }
        }
        if rest.len() < RECORD_HEADER {
            return Err(SniError::Incomplete);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err(malformed("empty handshake record"));
        }
        if len > MAX_CLIENT_HELLO + 4 {
            return Err(malformed(format!("record of {len} bytes")));
        }
        let available = rest.len() - RECORD_HEADER;
        let take = len.min(available);
        handshake.extend_from_slice(&rest[RECORD_HEADER..RECORD_HEADER + take]);
        // The handshake header: type, 24-bit length.
        if let Some(&t) = handshake.first() {
            if t != HANDSHAKE_CLIENT_HELLO {
                return Err(malformed(format!(
                    "handshake message type {t}, expected a ClientHello (1)"
                )));
            }
        }
        if handshake.len() >= 4 {
            let body = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body > MAX_CLIENT_HELLO {
                return Err(malformed(format!(
                    "ClientHello of {body} bytes exceeds the {MAX_CLIENT_HELLO}-byte cap"
                )));
            }
            if handshake.len() >= 4 + body {
                // Complete (bytes of a following message in the same record are ignored).
                handshake.truncate(4 + body);
                return Ok(handshake.split_off(4));
            }
        }
        if take < len {
            return Err(SniError::Incomplete);
        }
        rest = &rest[RECORD_HEADER + len..];
    }
}

/// A cursor over a complete ClientHello body; running out of bytes is malformed.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SniError> {
        if self.buf.len() < n {
            return Err(malformed(format!("truncated in {what}")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, SniError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, SniError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a 1- or 2-byte length prefix.
    fn vec8(&mut self, what: &str) -> Result<&'a [u8], SniError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    fn vec16(&mut self, what: &str) -> Result<&'a [u8], SniError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

/// The server name and the ALPN protocols a ClientHello body names.
fn parse_client_hello(body: &[u8]) -> Result<(Option<String>, Vec<Vec<u8>>), SniError> {
    let mut r = Reader { buf: body };
    let version = r.u16("legacy_version")?;
    if version >> 8 != 0x03 {
        return Err(malformed(format!("client version 0x{version:04x}")));
    }
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(malformed("cipher_suites length"));
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(malformed("no compression methods"));
    }
    if r.buf.is_empty() {
        return Ok((None, Vec::new())); // no extensions at all
    }
    let extensions = r.vec16("extensions")?;
    if !r.buf.is_empty() {
        return Err(malformed("bytes after the extensions"));
    }
    let mut r = Reader { buf: extensions };
    let mut seen = Vec::new();
    let mut name = None;
    let mut alpn = Vec::new();
    while !r.buf.is_empty() {
        let ty = r.u16("extension type")?;
        let data = r.vec16("extension data")?;
        if seen.contains(&ty) {
            return Err(malformed(format!("extension {ty} appears twice")));
        }
        seen.push(ty);
        if ty == EXT_SERVER_NAME {
            name = server_name(data)?;
        }
        if ty == EXT_ALPN {
            let mut r = Reader { buf: data };
            let mut list = Reader {
                buf: r.vec16("ALPN protocol list")?,
            };
            while !list.buf.is_empty() {
                alpn.push(list.vec8("ALPN protocol")?.to_vec());
            }
        }
    }
    Ok((name, alpn))
}

/// The `application_layer_protocol_negotiation` extension (RFC 7301).
const EXT_ALPN: u16 = 16;

/// The `server_name` extension's data: a list with (at most one) `host_name`.
fn server_name(data: &[u8]) -> Result<Option<String>, SniError> {
    let mut r = Reader { buf: data };
    let list = r.vec16("server_name_list")?;
    if !r.buf.is_empty() {
        return Err(malformed("bytes after server_name_list"));
    }
    if list.is_empty() {
        return Err(malformed("empty server_name_list"));
    }
    let mut r = Reader { buf: list };
    let mut host = None;
    while !r.buf.is_empty() {
        let ty = r.u8("server name type")?;
        let name = r.vec16("server name")?;
        if ty == NAME_TYPE_HOST_NAME {
            if host.is_some() {
                return Err(malformed("two host names"));
            }
            host = Some(dns_name(name)?);
        }
    }
    Ok(host)
}

/// `name` lowercased, if it is a DNS name: ASCII letters, digits and hyphens in labels of 1–63
/// bytes that neither start nor end with a hyphen, 253 bytes at most, no trailing dot.
fn dns_name(name: &[u8]) -> Result<String, SniError> {
    if name.is_empty() || name.len() > 253 {
        return Err(malformed(format!("host name of {} bytes", name.len())));
    }
    for label in name.split(|&b| b == b'.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-');
        if !ok {
            return Err(malformed(format!(
                "host name {:?} is not a DNS name",
                String::from_utf8_lossy(name)
            )));
        }
    }
    // All ASCII, checked above.
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    /// `openssl s_client -connect 127.0.0.1:PORT -servername web.n1.edges.test` (OpenSSL 3.0),
    /// the first record as captured by a plain socket.
    const OPENSSL_HELLO: &[&str] = &[
    "160301013e0100013a0303ff2a3090cf76fd5c3bc9c5aab533241b2fba6dbbc2e076957fb41fe97c89041420264d3700",
    "0bf8693f6222520ac18eba384a1614cc77352465e3b878d006d11225003e130213031301c02cc030009fcca9cca8ccaa",
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000b3",
    "0000001600140000117765622e6e312e65646765732e74657374000b000403000102000a00160014001d0017001e0019",
    "001801000101010201030104002300000016000000170000000d002a0028040305030603080708080809080a080b0804",
    "08050806040105010601030303010302040205020602002b0009080304030303020301002d0002010100330026002400",
    "1d0020422258be0a89656b43586020e1739e10d58ecb2a0f1595f206d67d02a4e47c24",
    ];
    /// The same with `-noservername`.
    const OPENSSL_HELLO_NO_SNI: &[&str] = &[
    "16030101240100012003035adf46b6bc61ce3882b92bda834db89fcfb4b8b7136db9a98b11004b07d5a602208a685113",
    "1a01a1d7b8210445c2a93767b99c36f201b5968519525d72a1421f62003e130213031301c02cc030009fcca9cca8ccaa",
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000099",
    "000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000016000000170000000d",
    "002a0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602002b0009",
    "080304030303020301002d00020101003300260024001d0020f8bd29c3e09159bddb607ac67425f4834eee6d2c7da7e7",
    "94066c317c4bba7856",
    ];

    fn unhex(lines: &[&str]) -> Vec<u8> {
        let s: String = lines.concat();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A ClientHello built by hand (RFC 8446 §4.1.2) with the given extensions.
    fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        let mut ext = Vec::new();
        for (ty, data) in extensions {
            ext.extend_from_slice(&ty.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        hs
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0x00];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (0, data)
    }

    /// `handshake` split into records of at most `max` bytes.
    fn records(handshake: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in handshake.chunks(max) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn real_openssl_client_hello() {
        let hello = unhex(OPENSSL_HELLO);
        assert_eq!(parse_sni(&hello), Ok(Some("web.n1.edges.test".into())));
        // Followed by more data (the client's next flight): still the same answer.
        let mut more = hello.clone();
        more.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        assert_eq!(parse_sni(&more), Ok(Some("web.n1.edges.test".into())));
        assert_eq!(parse_sni(&unhex(OPENSSL_HELLO_NO_SNI)), Ok(None));
    }

    #[test]
    fn byte_by_byte_is_incomplete_until_the_last_byte() {
        for lines in [OPENSSL_HELLO, OPENSSL_HELLO_NO_SNI] {
            let hello = unhex(lines);
            for n in 0..hello.len() {
                assert_eq!(parse_sni(&hello[..n]), Err(SniError::Incomplete), "at {n}");
            }
        }
    }

    #[test]
    fn hello_split_over_records() {
        let hs = hello_with(&[(0x000a, vec![0, 2, 0, 0x1d]), sni_ext(b"API.E1.Edges.Test")]);
        for max in [1, 3, 10, 50, hs.len()] {
            let wire = records(&hs, max);
            assert_eq!(
                parse_sni(&wire),
                Ok(Some("api.e1.edges.test".into())),
                "{max}"
            );
            for n in 0..wire.len() {
                assert_eq!(
                    parse_sni(&wire[..n]),
                    Err(SniError::Incomplete),
                    "{max} at {n}"
                );
            }
        }
    }

    #[test]
    fn not_tls_is_said_at_once() {
        assert_eq!(parse_sni(b""), Err(SniError::Incomplete));
        assert_eq!(parse_sni(b"G"), Err(SniError::NotTls));
        assert_eq!(parse_sni(b"GET / HTTP/1.1\r\n"), Err(SniError::NotTls));
        assert_eq!(parse_sni(&[0x16, 0x02]), Err(SniError::NotTls));
        assert_eq!(
            parse_sni(&[0x17, 0x03, 0x03, 0, 1, 0]),
            Err(SniError::NotTls)
        );
    }

    #[test]
    fn malformed_hellos_are_errors() {
        let bad = |wire: Vec<u8>, what: &str| match parse_sni(&wire) {
            Err(SniError::Malformed(m)) => assert!(m.contains(what), "{m:?} lacks {what:?}"),
            other => panic!("{what}: {other:?}"),
        };
        // A ServerHello, not a ClientHello.
        let mut hs = hello_with(&[]);
        hs[0] = 0x02;
        bad(records(&hs, 100), "expected a ClientHello");
        // An oversized ClientHello is refused from its header alone.
        bad(
            vec![0x16, 3, 1, 0, 4, 0x01, 0x00, 0x40, 0x01],
            "exceeds the 16384-byte cap",
        );
        // Names that are not DNS names.
        for name in [
            &b"a..b"[..],
            b"-a.b",
            b"a_b.c",
            b"a.b.",
            b"",
            b"\xffx",
            &[b'a'; 254],
        ] {
            bad(records(&hello_with(&[sni_ext(name)]), 16384), "host name");
        }
        // Duplicate extensions, truncated extension data.
        bad(
            records(&hello_with(&[sni_ext(b"a.b"), sni_ext(b"c.d")]), 16384),
            "twice",
        );
        let mut hs = hello_with(&[sni_ext(b"a.b")]);
        let len = hs.len();
        hs[len - 7] += 1; // the server_name_list length
        bad(records(&hs, 16384), "server");
        // A record of another type in the middle.
        let hs = hello_with(&[sni_ext(b"a.b")]);
        let mut wire = records(&hs[..10], 100);
        wire.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        bad(wire, "record of type 23");
        // Without extensions: no name.
        let mut hs = hello_with(&[]);
        hs.truncate(hs.len() - 2);
        hs[3] -= 2;
        assert_eq!(parse_sni(&records(&hs, 100)), Ok(None));
    }

    /// Stands in for a cargo-fuzz target (cargo-fuzz needs a nightly toolchain): 100k mutations
    /// of real ClientHellos (bit flips, byte changes, truncations, insertions) must never panic,
    /// and a name that comes out is always a lowercase DNS name.
    #[test]
    fn random_mutations_never_panic() {
        let seeds = [
            unhex(OPENSSL_HELLO),
            unhex(OPENSSL_HELLO_NO_SNI),
            records(&hello_with(&[sni_ext(b"web.e1.edges.test")]), 7),
        ];
        let mut rng = rand::rng();
        for i in 0..100_000 {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..rng.random_range(1..6) {
                if input.is_empty() {
                    break;
                }
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..5) {
                    0 => input[at] ^= 1 << rng.random_range(0..8),
                    1 => input[at] = rng.random(),
                    2 => input.truncate(at),
                    3 => input.insert(at, rng.random()),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            if let Ok(Some(name)) = parse_sni(&input) {
                assert!(dns_name(name.as_bytes()).is_ok() && name == name.to_ascii_lowercase());
            }
        }
    }
}
