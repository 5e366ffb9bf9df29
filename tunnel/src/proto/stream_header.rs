//! The header at the start of every forwarded data stream: which target the stream is for and,
//! optionally, the original client's address.
//!
//! Either side may open a data stream (a center forwards a request to an edge; a center forwards
//! to another center's pod). The opener writes the header, then the forwarded bytes; the
//! acceptor decodes the header incrementally ([`StreamHeader::decode`]) and hands the rest of the
//! stream, unchanged, to whatever serves the target.
//!
//! | bytes    | meaning                                                                    |
//! |----------|----------------------------------------------------------------------------|
//! | `a1`     | [`STREAM_HEADER_MAGIC`]: `a` marks an xpod stream header, `1` its version  |
//! | `u16` BE | length of what follows, capped so the whole header is ≤ [`MAX_STREAM_HEADER`] |
//! | `u8`     | target tag, then its fields (below)                                        |
//! | `u8`     | client address: `00` none; `04` IPv4 (4 bytes) + port u16; `06` IPv6 (16) + port |
//!
//! | tag  | target          | fields                                   |
//! |------|-----------------|------------------------------------------|
//! | `01` | Http            | service                                  |
//! | `02` | TlsPassthrough  | sni                                      |
//! | `03` | Tcp             | service                                  |
//! | `04` | Pod             | pod_id, epoch u64, hops u8               |
//! | `05` | SandboxPort     | sandbox_id, port u16 (not 0)             |
//! | `06` | Runner          | node, hops u8                            |
//! | `07` | PodRequests     | (none)                                   |
//! | `08` | SandboxTerminal | sandbox_id                               |
//! | `09` | NodeTerminal    | node                                     |
//! | `0a` | Cluster         | (none)                                   |
//!
//! Strings are a `u16` length then UTF-8: 1..=255 bytes, no control characters. IPv6 flow info
//! and scope id are not carried (they mean nothing on another host).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BytesMut};

use super::codec::{Reader, Str, Writer};
use super::{FrameError, ProtoError};

/// First byte of every data stream: magic and version in one.
pub const STREAM_HEADER_MAGIC: u8 = 0xa1;
/// Largest header accepted or sent, magic and length included (4 KiB).
pub const MAX_STREAM_HEADER: usize = 4096;
/// Magic + `u16` length.
const PREFIX_LEN: usize = 3;
const WHAT: &str = "stream header";

/// What a data stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP service the receiving edge published.
    Http {
        /// The service's name.
        service: String,
    },
    /// A TLS connection relayed as raw bytes; the receiver terminates TLS for `sni`.
    TlsPassthrough {
        /// The server name from the ClientHello.
        sni: String,
    },
    /// A TCP service the receiving edge published (port forward).
    Tcp {
        /// The service's name.
        service: String,
    },
    /// A request for a pod, forwarded to the node believed to own it.
    Pod {
        /// The pod.
        pod_id: String,
        /// The ownership epoch the sender believed; the receiver checks it.
        epoch: u64,
        /// How many nodes forwarded this request already (loop detection).
        hops: u8,
    },
    /// The sandbox runner API (start, exec, stop, logs) of node `node`, as one HTTP/1.1
    /// exchange: served by `node`, passed on towards it by a center that is not `node`.
    Runner {
        /// The node that runs the sandbox.
        node: String,
        /// How many nodes forwarded this request already (loop detection).
        hops: u8,
    },
    /// A keep-alive HTTP/1.1 connection of pod requests: each request names its pod, epoch and
    /// hop count, and its client, in headers (`xpod_routing::forward`), so one stream serves
    /// any number of requests for any pods (the forwarder pools these streams).
    PodRequests,
    /// A port inside a sandbox on the receiving node.
    SandboxPort {
        /// The sandbox.
        sandbox_id: String,
        /// The port inside it (1..=65535).
        port: u16,
    },
    /// A terminal (a command in a PTY) in a sandbox on the receiving node: a JSON request line,
    /// an answer line, then terminal frames (`xpod_node::sandbox::tty`), relayed as they are.
    SandboxTerminal {
        /// The sandbox.
        sandbox_id: String,
    },
    /// A terminal on edge `node`'s device, in the same form as [`Target::SandboxTerminal`]:
    /// served by `node` (if its config allows it), passed on to it by the center holding its
    /// tunnel.
    NodeTerminal {
        /// The edge.
        node: String,
    },
    /// Opened by an edge on its tunnel: a keep-alive HTTP/1.1 connection of requests from the
    /// edge to the cluster (the rows and blobs of pods it adopts), served by the center that
    /// accepts it for that edge's identity only.
    Cluster,
}

/// The header of one data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// Where the stream goes.
    pub target: Target,
    /// The original client's address, when the opener knows it (for `Forwarded` / PROXY v2).
    pub client_addr: Option<SocketAddr>,
}

impl StreamHeader {
    /// Checks whether `src` starts with a complete header and returns its length. A wrong magic
    /// byte or an oversized length is an error as soon as those bytes are in.
    pub fn check(src: &[u8]) -> Result<usize, FrameError> {
        let Some(&magic) = src.first() else {
            return Err(FrameError::Incomplete);
        };
        if magic != STREAM_HEADER_MAGIC {
            return Err(ProtoError::Malformed {
                what: WHAT,
                problem: format!(
                    "first byte is 0x{magic:02x}, expected 0x{STREAM_HEADER_MAGIC:02x} \
                     (not an xpod data stream, or a newer header version)"
                ),
            }
            .into());
        }
        if src.len() < PREFIX_LEN {
            return Err(FrameError::Incomplete);
        }
        let len = u16::from_be_bytes([src[1], src[2]]) as usize;
        let total = PREFIX_LEN + len;
        if total > MAX_STREAM_HEADER {
            return Err(ProtoError::TooLarge {
                what: WHAT,
                len: total as u64,
                max: MAX_STREAM_HEADER,
            }
            .into());
        }
        if src.len() < total {
            return Err(FrameError::Incomplete);
        }
        Ok(total)
    }

    /// Decodes exactly the bytes [`StreamHeader::check`] measured.
    pub fn parse(src: &[u8]) -> Result<StreamHeader, ProtoError> {
        let total = match StreamHeader::check(src) {
            Ok(total) => total,
            Err(FrameError::Invalid(e)) => return Err(e),
            Err(FrameError::Incomplete) => {
                return Err(ProtoError::Malformed {
                    what: WHAT,
                    problem: format!("truncated: only {} bytes", src.len()),
                })
            }
        };
        if total != src.len() {
            return Err(ProtoError::Malformed {
                what: WHAT,
                problem: format!("{} bytes after the header's end", src.len() - total),
            });
        }
        let mut r = Reader::new(&src[PREFIX_LEN..], WHAT);
        let target = match r.u8("target")? {
            0x01 => Target::Http {
                service: r.str(Str::Name, "service")?,
            },
            0x02 => Target::TlsPassthrough {
                sni: r.str(Str::Name, "sni")?,
            },
            0x03 => Target::Tcp {
                service: r.str(Str::Name, "service")?,
            },
            0x04 => Target::Pod {
                pod_id: r.str(Str::Name, "pod_id")?,
                epoch: r.u64("epoch")?,
                hops: r.u8("hops")?,
            },
            0x05 => {
                let sandbox_id = r.str(Str::Name, "sandbox_id")?;
                let port = r.u16("port")?;
                if port == 0 {
                    return Err(r.malformed("field `port` is 0".into()));
                }
                Target::SandboxPort { sandbox_id, port }
            }
            0x06 => Target::Runner {
                node: r.str(Str::Name, "node")?,
                hops: r.u8("hops")?,
            },
            0x07 => Target::PodRequests,
            0x08 => Target::SandboxTerminal {
                sandbox_id: r.str(Str::Name, "sandbox_id")?,
            },
            0x09 => Target::NodeTerminal {
                node: r.str(Str::Name, "node")?,
            },
            0x0a => Target::Cluster,
            tag => {
                return Err(ProtoError::UnknownType {
                    what: "stream target",
                    tag,
                })
            }
        };
        let client_addr = match r.u8("client_addr")? {
            0x00 => None,
            0x04 => {
                let ip: [u8; 4] = r.bytes(4, "client_addr")?.try_into().expect("4 bytes");
                Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(ip)),
                    r.u16("client_addr port")?,
                ))
            }
            0x06 => {
                let ip: [u8; 16] = r.bytes(16, "client_addr")?.try_into().expect("16 bytes");
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(ip)),
                    r.u16("client_addr port")?,
                ))
            }
            tag => {
                return Err(ProtoError::UnknownType {
                    what: "client address family",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(StreamHeader {
            target,
            client_addr,
        })
    }

    /// Incremental decoding from a stream's receive buffer: `Ok(Some(header))` removes the
    /// header's bytes from `buf` and leaves whatever followed (the forwarded data) in it;
    /// `Ok(None)` means read more and call again.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<StreamHeader>, ProtoError> {
        match StreamHeader::check(buf) {
            Ok(n) => {
                let header = StreamHeader::parse(&buf[..n])?;
                buf.advance(n);
                Ok(Some(header))
            }
            Err(FrameError::Incomplete) => Ok(None),
            Err(FrameError::Invalid(e)) => Err(e),
        }
    }

    /// Appends the header to `dst`. Fails, leaving `dst` as it was, if a string breaks the rules
    /// or a sandbox port is 0.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let start = dst.len();
        let result = self.encode_inner(dst);
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }

    fn encode_inner(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let start = dst.len();
        let mut w = Writer::new(dst, WHAT);
        w.u8(STREAM_HEADER_MAGIC);
        w.u16(0); // patched below
        match &self.target {
            Target::Http { service } => {
                w.u8(0x01);
                w.str(Str::Name, "service", service)?;
            }
            Target::TlsPassthrough { sni } => {
                w.u8(0x02);
                w.str(Str::Name, "sni", sni)?;
            }
            Target::Tcp { service } => {
                w.u8(0x03);
                w.str(Str::Name, "service", service)?;
            }
            Target::Pod {
                pod_id,
                epoch,
                hops,
            } => {
                w.u8(0x04);
                w.str(Str::Name, "pod_id", pod_id)?;
                w.u64(*epoch);
                w.u8(*hops);
            }
            Target::SandboxPort { sandbox_id, port } => {
                w.u8(0x05);
                w.str(Str::Name, "sandbox_id", sandbox_id)?;
                if *port == 0 {
                    return Err(w.unencodable("field `port` is 0".into()));
                }
                w.u16(*port);
            }
            Target::Runner { node, hops } => {
                w.u8(0x06);
                w.str(Str::Name, "node", node)?;
                w.u8(*hops);
            }
            Target::PodRequests => w.u8(0x07),
            Target::SandboxTerminal { sandbox_id } => {
                w.u8(0x08);
                w.str(Str::Name, "sandbox_id", sandbox_id)?;
            }
            Target::NodeTerminal { node } => {
                w.u8(0x09);
                w.str(Str::Name, "node", node)?;
            }
            Target::Cluster => w.u8(0x0a),
        }
        match self.client_addr {
            None => w.u8(0x00),
            Some(SocketAddr::V4(a)) => {
                w.u8(0x04);
                w.dst.extend_from_slice(&a.ip().octets());
                w.u16(a.port());
            }
            Some(SocketAddr::V6(a)) => {
                w.u8(0x06);
                w.dst.extend_from_slice(&a.ip().octets());
                w.u16(a.port());
            }
        }
        // Strings are ≤ 255 bytes, so the largest header (~270 bytes) is far below the cap.
        let total = dst.len() - start;
        debug_assert!(total <= MAX_STREAM_HEADER);
        let len = (total - PREFIX_LEN) as u16;
        dst[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(header: StreamHeader, hex_bytes: &str) {
        let expected = hex::decode(hex_bytes.replace([' ', '\n'], "")).unwrap();
        let mut buf = BytesMut::new();
        header.encode(&mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf),
            hex::encode(&expected),
            "encoding of {header:?}"
        );
        assert_eq!(StreamHeader::check(&expected), Ok(expected.len()));
        assert_eq!(StreamHeader::parse(&expected).unwrap(), header);
    }

    #[test]
    fn golden_http() {
        golden(
            StreamHeader {
                target: Target::Http {
                    service: "web".into(),
                },
                client_addr: None,
            },
            "a1 0007  01 0003 776562  00",
        );
    }

    #[test]
    fn golden_tls_passthrough_with_ipv4_client() {
        golden(
            StreamHeader {
                target: Target::TlsPassthrough {
                    sni: "e1.example".into(),
                },
                client_addr: Some("203.0.113.7:51000".parse().unwrap()),
            },
            "a1 0014  02 000a 65312e6578616d706c65  04 cb007107 c738",
        );
    }

    #[test]
    fn golden_tcp_with_ipv6_client() {
        golden(
            StreamHeader {
                target: Target::Tcp {
                    service: "ssh".into(),
                },
                client_addr: Some("[2001:db8::1]:22".parse().unwrap()),
            },
            "a1 0019  03 0003 737368  06 20010db8000000000000000000000001 0016",
        );
    }

    #[test]
    fn golden_pod() {
        golden(
            StreamHeader {
                target: Target::Pod {
                    pod_id: "alice".into(),
                    epoch: 42,
                    hops: 1,
                },
                client_addr: None,
            },
            "a1 0012  04 0005 616c696365 000000000000002a 01  00",
        );
    }

    #[test]
    fn golden_sandbox_port() {
        golden(
            StreamHeader {
                target: Target::SandboxPort {
                    sandbox_id: "sb1".into(),
                    port: 3000,
                },
                client_addr: None,
            },
            "a1 0009  05 0003 736231 0bb8  00",
        );
    }

    #[test]
    fn golden_runner() {
        golden(
            StreamHeader {
                target: Target::Runner {
                    node: "e1".into(),
                    hops: 1,
                },
                client_addr: None,
            },
            "a1 0007  06 0002 6531 01  00",
        );
    }

    #[test]
    fn golden_pod_requests() {
        golden(
            StreamHeader {
                target: Target::PodRequests,
                client_addr: None,
            },
            "a1 0002  07  00",
        );
    }

    #[test]
    fn golden_sandbox_terminal() {
        golden(
            StreamHeader {
                target: Target::SandboxTerminal {
                    sandbox_id: "sb1".into(),
                },
                client_addr: None,
            },
            "a1 0007  08 0003 736231  00",
        );
    }

    #[test]
    fn golden_node_terminal() {
        golden(
            StreamHeader {
                target: Target::NodeTerminal { node: "e1".into() },
                client_addr: None,
            },
            "a1 0006  09 0002 6531  00",
        );
    }

    #[test]
    fn golden_cluster() {
        golden(
            StreamHeader {
                target: Target::Cluster,
                client_addr: None,
            },
            "a1 0002  0a  00",
        );
    }

    #[test]
    fn incremental_decode_leaves_the_payload() {
        let header = StreamHeader {
            target: Target::Pod {
                pod_id: "alice".into(),
                epoch: 7,
                hops: 0,
            },
            client_addr: Some("10.1.2.3:4000".parse().unwrap()),
        };
        let mut wire = BytesMut::new();
        header.encode(&mut wire).unwrap();
        let header_len = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            match StreamHeader::decode(&mut buf).unwrap() {
                None => assert!(i + 1 < header_len, "complete at byte {i} but not decoded"),
                Some(h) => {
                    assert_eq!(i + 1, header_len);
                    assert_eq!(h, header);
                    assert!(buf.is_empty());
                    buf.extend_from_slice(&wire[i + 1..]);
                    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
                    return;
                }
            }
        }
        panic!("never decoded");
    }

    #[test]
    fn oversized_length_rejected_before_its_data() {
        let err = StreamHeader::check(&[0xa1, 0x10, 0x00]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream header of 4099 bytes exceeds the 4096-byte cap"
        );
        assert_eq!(
            StreamHeader::check(&[0xa1, 0x0f, 0xfd]),
            Err(FrameError::Incomplete)
        ); // exactly 4096
    }

    #[test]
    fn bad_input_is_an_error_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("16030100", "first byte is 0x16, expected 0xa1"),
            ("a1 0001 0b", "unknown stream target 0x0b"),
            ("a1 0005 01 0000 00 00", "field `service` is empty"),
            (
                "a1 0005 01 0001 07 00",
                "field `service` contains control character U+0007",
            ),
            ("a1 0005 02 0001 ff 00", "field `sni`: invalid UTF-8"),
            ("a1 0009 05 0003 736231 0000 00", "field `port` is 0"),
            (
                "a1 0007 01 0003 776562 05",
                "unknown client address family 0x05",
            ),
            (
                "a1 0009 01 0003 776562 04 0102",
                "truncated in field `client_addr`",
            ),
            (
                "a1 0008 01 0003 776562 00 00",
                "1 unexpected trailing bytes",
            ),
            ("a1 0004 01 0003 77", "truncated in field `service`"),
        ];
        for (input, expected) in cases {
            let bytes = hex::decode(input.replace(' ', "")).unwrap();
            let err = match StreamHeader::decode(&mut BytesMut::from(&bytes[..])) {
                Err(e) => e.to_string(),
                Ok(h) => panic!("{input}: decoded {h:?}"),
            };
            assert!(
                err.contains(expected),
                "{input}: {err:?} does not contain {expected:?}"
            );
        }
    }

    #[test]
    fn encode_validates_like_decode() {
        let mut buf = BytesMut::from(&b"x"[..]);
        for target in [
            Target::Http {
                service: String::new(),
            },
            Target::TlsPassthrough { sni: "a\nb".into() },
            Target::Tcp {
                service: "s".repeat(256),
            },
            Target::SandboxPort {
                sandbox_id: "sb".into(),
                port: 0,
            },
        ] {
            let err = StreamHeader {
                target,
                client_addr: None,
            }
            .encode(&mut buf)
            .unwrap_err();
            assert!(matches!(err, ProtoError::Unencodable { .. }), "{err}");
            assert_eq!(&buf[..], b"x");
        }
        // The longest possible header fits the cap.
        let longest = StreamHeader {
            target: Target::Pod {
                pod_id: "p".repeat(255),
                epoch: u64::MAX,
                hops: u8::MAX,
            },
            client_addr: Some("[::1]:1".parse().unwrap()),
        };
        let mut buf = BytesMut::new();
        longest.encode(&mut buf).unwrap();
        assert!(buf.len() <= MAX_STREAM_HEADER);
        assert_eq!(StreamHeader::parse(&buf).unwrap(), longest);
    }
}
