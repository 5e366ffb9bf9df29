//! The typed control-stream messages ([`Frame`]) and their payload encoding.
//!
//! Each message has an explicit one-byte tag ([`FrameType`]) that is the frame's type byte, and a
//! payload of its fields in the order they are declared here (hand-written binary, not serde: the
//! bytes are pinned by golden tests and cannot drift with a library upgrade or a field reorder).
//! Changing a message's fields changes the wire format: bump [`VERSION`](super::VERSION).
//!
//! | tag  | message        | payload fields, in order                                              |
//! |------|----------------|-----------------------------------------------------------------------|
//! | `01` | Register       | node_id, role u8, version, os, arch, addresses\[], services\[name, kind u8], pods\[] |
//! | `02` | Registered     | node_id, center_id, heartbeat_secs u32 (≥ 1)                          |
//! | `03` | Refused        | reason                                                                |
//! | `04` | Heartbeat      | seq u64, sent_at_ms u64, capacity: `00` or `01` + u32-length JSON     |
//! | `05` | HeartbeatAck   | seq u64                                                               |
//! | `06` | Command        | id u64, kind u8 (`01` SetAcmeTxt name value, `02` ClearAcmeTxt name, `03` Ping) |
//! | `07` | CommandReply   | id u64, ok bool, message                                              |
//! | `08` | Goodbye        | reason                                                                |
//!
//! Roles: `01` center, `02` edge. Service kinds: `01` http, `02` tls, `03` tcp.

use bytes::BytesMut;

use super::codec::{Reader, Str, Writer};
use super::ProtoError;

/// The frame type byte: which control message a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// [`Register`]: client → server, first frame.
    Register = 0x01,
    /// [`Registered`]: server → client, handshake accepted.
    Registered = 0x02,
    /// [`Refused`]: server → client, handshake refused; the server closes.
    Refused = 0x03,
    /// [`Heartbeat`]: client → server, every heartbeat interval.
    Heartbeat = 0x04,
    /// [`HeartbeatAck`]: server → client, answers a heartbeat.
    HeartbeatAck = 0x05,
    /// [`Command`]: either way, after the handshake.
    Command = 0x06,
    /// [`CommandReply`]: answers a [`Command`] by id.
    CommandReply = 0x07,
    /// [`Goodbye`]: either way; the sender is closing the session.
    Goodbye = 0x08,
}

impl FrameType {
    /// The type for a tag byte, if this version defines one.
    pub fn from_u8(tag: u8) -> Option<Self> {
        Some(match tag {
            0x01 => FrameType::Register,
            0x02 => FrameType::Registered,
            0x03 => FrameType::Refused,
            0x04 => FrameType::Heartbeat,
            0x05 => FrameType::HeartbeatAck,
            0x06 => FrameType::Command,
            0x07 => FrameType::CommandReply,
            0x08 => FrameType::Goodbye,
            _ => return None,
        })
    }

    /// The message's name, for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Register => "Register",
            FrameType::Registered => "Registered",
            FrameType::Refused => "Refused",
            FrameType::Heartbeat => "Heartbeat",
            FrameType::HeartbeatAck => "HeartbeatAck",
            FrameType::Command => "Command",
            FrameType::CommandReply => "CommandReply",
            FrameType::Goodbye => "Goodbye",
        }
    }

    /// The "what" of errors about this frame's payload.
    fn what(self) -> &'static str {
        match self {
            FrameType::Register => "Register frame",
            FrameType::Registered => "Registered frame",
            FrameType::Refused => "Refused frame",
            FrameType::Heartbeat => "Heartbeat frame",
            FrameType::HeartbeatAck => "HeartbeatAck frame",
            FrameType::Command => "Command frame",
            FrameType::CommandReply => "CommandReply frame",
            FrameType::Goodbye => "Goodbye frame",
        }
    }
}

/// One control-stream frame: a typed control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server: who I am and what I offer.
    Register(Register),
    /// Server → client: accepted.
    Registered(Registered),
    /// Server → client: refused, with the reason.
    Refused(Refused),
    /// Client → server: still alive.
    Heartbeat(Heartbeat),
    /// Server → client: heartbeat received.
    HeartbeatAck(HeartbeatAck),
    /// Either way: do something and reply.
    Command(Command),
    /// Either way: the outcome of a command.
    CommandReply(CommandReply),
    /// Either way: closing, with the reason.
    Goodbye(Goodbye),
}

/// What kind of node a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// A center: public address, holds edges' tunnels.
    Center = 0x01,
    /// An edge: behind NAT, dials out.
    Edge = 0x02,
}

/// How a published service is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ServiceKind {
    /// HTTP: the center parses requests and adds `Forwarded` headers.
    Http = 0x01,
    /// TLS passthrough: raw bytes, the edge terminates TLS.
    Tls = 0x02,
    /// Plain TCP port forward.
    Tcp = 0x03,
}

/// A service an edge publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service's name (`web` in `web.<node>.<edge-domain>`).
    pub name: String,
    /// How it is forwarded.
    pub kind: ServiceKind,
}

/// The client's first frame. The server checks `node_id` against the id in the client's verified
/// certificate; everything else is the self-reported inventory shown in `GET /.cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The node id the client claims (must match its certificate).
    pub node_id: String,
    /// Center or edge.
    pub role: Role,
    /// The xpod version the client runs.
    pub version: String,
    /// Operating system (`linux`, `macos`, ...); may be empty.
    pub os: String,
    /// CPU architecture (`x86_64`, `aarch64`, ...); may be empty.
    pub arch: String,
    /// Addresses the client knows itself by (for display; never trusted for routing).
    pub addresses: Vec<String>,
    /// Services the client publishes.
    pub services: Vec<Service>,
    /// Pods the client owns, so the cluster can route their requests to it.
    pub pods: Vec<String>,
}

/// The server's acceptance of a [`Register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The client's node id, as verified.
    pub node_id: String,
    /// The accepting center's node id.
    pub center_id: String,
    /// How often the client must send a heartbeat, in seconds (at least 1).
    pub heartbeat_secs: u32,
}

/// The server's refusal of a [`Register`]; the server closes after sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why, in words an operator can act on.
    pub reason: String,
}

/// A client's liveness signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Strictly increasing per session, starting at 1.
    pub seq: u64,
    /// The sender's wall clock, Unix milliseconds (for display and skew; liveness uses the
    /// receiver's clock).
    pub sent_at_ms: u64,
    /// Optional capacity report, a JSON document (validated as JSON on both ends).
    pub capacity: Option<String>,
}

/// The server's answer to a [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The acknowledged heartbeat's `seq`.
    pub seq: u64,
}

/// A request for the peer to do something, answered by a [`CommandReply`] with the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique per sender and session, starting at 1.
    pub id: u64,
    /// What to do.
    pub body: CommandBody,
}

/// The commands this version defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    /// Publish a DNS TXT record (an edge asks its center, for ACME DNS-01). Tag `01`.
    SetAcmeTxt {
        /// The record's name (`_acme-challenge.<name>`).
        name: String,
        /// The record's value.
        value: String,
    },
    /// Remove a TXT record published with `SetAcmeTxt`. Tag `02`.
    ClearAcmeTxt {
        /// The record's name.
        name: String,
    },
    /// Round-trip check; the session answers it itself. Tag `03`.
    Ping,
}

/// The outcome of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// The command's id.
    pub id: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Details or the error, for logs and the operator.
    pub message: String,
}

/// The sender is closing the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Why.
    pub reason: String,
}

impl Frame {
    /// This frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Register(_) => FrameType::Register,
            Frame::Registered(_) => FrameType::Registered,
            Frame::Refused(_) => FrameType::Refused,
            Frame::Heartbeat(_) => FrameType::Heartbeat,
            Frame::HeartbeatAck(_) => FrameType::HeartbeatAck,
            Frame::Command(_) => FrameType::Command,
            Frame::CommandReply(_) => FrameType::CommandReply,
            Frame::Goodbye(_) => FrameType::Goodbye,
        }
    }

    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        self.frame_type().name()
    }

    /// Appends this frame's payload (without the frame header) to `dst`. On error `dst` may
    /// hold a partial payload; [`encode`](super::encode) truncates it.
    pub(crate) fn encode_payload(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let mut w = Writer::new(dst, self.frame_type().what());
        match self {
            Frame::Register(r) => {
                w.str(Str::Name, "node_id", &r.node_id)?;
                w.u8(r.role as u8);
                w.str(Str::Short, "version", &r.version)?;
                w.str(Str::Short, "os", &r.os)?;
                w.str(Str::Short, "arch", &r.arch)?;
                w.list("addresses", &r.addresses, |w, a| {
                    w.str(Str::Name, "addresses[]", a)
                })?;
                w.list("services", &r.services, |w, s| {
                    w.str(Str::Name, "services[].name", &s.name)?;
                    w.u8(s.kind as u8);
                    Ok(())
                })?;
                w.list("pods", &r.pods, |w, p| w.str(Str::Name, "pods[]", p))?;
            }
            Frame::Registered(r) => {
                w.str(Str::Name, "node_id", &r.node_id)?;
                w.str(Str::Name, "center_id", &r.center_id)?;
                if r.heartbeat_secs == 0 {
                    return Err(w.unencodable("field `heartbeat_secs` must be at least 1".into()));
                }
                w.u32(r.heartbeat_secs);
            }
            Frame::Refused(r) => w.str(Str::Text, "reason", &r.reason)?,
            Frame::Heartbeat(h) => {
                w.u64(h.seq);
                w.u64(h.sent_at_ms);
                match &h.capacity {
                    None => w.u8(0),
                    Some(json) => {
                        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(json) {
                            return Err(w.unencodable(format!("field `capacity` is not JSON: {e}")));
                        }
                        w.u8(1);
                        w.long_text("capacity", json)?;
                    }
                }
            }
            Frame::HeartbeatAck(a) => w.u64(a.seq),
            Frame::Command(c) => {
                w.u64(c.id);
                match &c.body {
                    CommandBody::SetAcmeTxt { name, value } => {
                        w.u8(0x01);
                        w.str(Str::Name, "name", name)?;
                        w.str(Str::Short, "value", value)?;
                    }
                    CommandBody::ClearAcmeTxt { name } => {
                        w.u8(0x02);
                        w.str(Str::Name, "name", name)?;
                    }
                    CommandBody::Ping => w.u8(0x03),
                }
            }
            Frame::CommandReply(r) => {
                w.u64(r.id);
                w.bool(r.ok);
                w.str(Str::Text, "message", &r.message)?;
            }
            Frame::Goodbye(g) => w.str(Str::Text, "reason", &g.reason)?,
        }
        Ok(())
    }

    /// Decodes one complete payload of type `ty`. All of `payload` must be consumed.
    pub(crate) fn decode_payload(ty: FrameType, payload: &[u8]) -> Result<Frame, ProtoError> {
        let mut r = Reader::new(payload, ty.what());
        let frame = match ty {
            FrameType::Register => {
                let node_id = r.str(Str::Name, "node_id")?;
                let role = match r.u8("role")? {
                    0x01 => Role::Center,
                    0x02 => Role::Edge,
                    b => {
                        return Err(ProtoError::UnknownType {
                            what: "node role",
                            tag: b,
                        })
                    }
                };
                let version = r.str(Str::Short, "version")?;
                let os = r.str(Str::Short, "os")?;
                let arch = r.str(Str::Short, "arch")?;
                let addresses = r.list("addresses", 3, |r| r.str(Str::Name, "addresses[]"))?;
                let services = r.list("services", 4, |r| {
                    let name = r.str(Str::Name, "services[].name")?;
                    let kind = match r.u8("services[].kind")? {
                        0x01 => ServiceKind::Http,
                        0x02 => ServiceKind::Tls,
                        0x03 => ServiceKind::Tcp,
                        b => {
                            return Err(ProtoError::UnknownType {
                                what: "service kind",
                                tag: b,
                            })
                        }
                    };
                    Ok(Service { name, kind })
                })?;
                let pods = r.list("pods", 3, |r| r.str(Str::Name, "pods[]"))?;
                Frame::Register(Register {
                    node_id,
                    role,
                    version,
                    os,
                    arch,
                    addresses,
                    services,
                    pods,
                })
            }
            FrameType::Registered => {
                let node_id = r.str(Str::Name, "node_id")?;
                let center_id = r.str(Str::Name, "center_id")?;
                let heartbeat_secs = r.u32("heartbeat_secs")?;
                if heartbeat_secs == 0 {
                    return Err(r.malformed("field `heartbeat_secs` must be at least 1".into()));
                }
                Frame::Registered(Registered {
                    node_id,
                    center_id,
                    heartbeat_secs,
                })
            }
            FrameType::Refused => Frame::Refused(Refused {
                reason: r.str(Str::Text, "reason")?,
            }),
            FrameType::Heartbeat => {
                let seq = r.u64("seq")?;
                let sent_at_ms = r.u64("sent_at_ms")?;
                let capacity = if r.bool("capacity")? {
                    let json = r.long_text("capacity")?;
                    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
                        return Err(r.malformed(format!("field `capacity` is not JSON: {e}")));
                    }
                    Some(json)
                } else {
                    None
                };
                Frame::Heartbeat(Heartbeat {
                    seq,
                    sent_at_ms,
                    capacity,
                })
            }
            FrameType::HeartbeatAck => Frame::HeartbeatAck(HeartbeatAck { seq: r.u64("seq")? }),
            FrameType::Command => {
                let id = r.u64("id")?;
                let body = match r.u8("kind")? {
                    0x01 => CommandBody::SetAcmeTxt {
                        name: r.str(Str::Name, "name")?,
                        value: r.str(Str::Short, "value")?,
                    },
                    0x02 => CommandBody::ClearAcmeTxt {
                        name: r.str(Str::Name, "name")?,
                    },
                    0x03 => CommandBody::Ping,
                    b => {
                        return Err(ProtoError::UnknownType {
                            what: "command kind",
                            tag: b,
                        })
                    }
                };
                Frame::Command(Command { id, body })
            }
            FrameType::CommandReply => Frame::CommandReply(CommandReply {
                id: r.u64("id")?,
                ok: r.bool("ok")?,
                message: r.str(Str::Text, "message")?,
            }),
            FrameType::Goodbye => Frame::Goodbye(Goodbye {
                reason: r.str(Str::Text, "reason")?,
            }),
        };
        r.finish()?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::proto::{encode, FrameError, FrameReader, PREFACE};

    /// Encodes `frame`, compares with the literal bytes, and decodes the literal bytes back.
    fn golden(frame: Frame, hex_bytes: &str) {
        let expected = hex::decode(hex_bytes.replace([' ', '\n'], "")).unwrap();
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf),
            hex::encode(&expected),
            "encoding of {frame:?}"
        );
        assert_eq!(Frame::check(&expected), Ok(expected.len()));
        assert_eq!(Frame::parse(&expected).unwrap(), frame);
    }

    fn register() -> Register {
        Register {
            node_id: "edge-1".into(),
            role: Role::Edge,
            version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            addresses: vec!["10.0.0.2:8443".into()],
            services: vec![Service {
                name: "web".into(),
                kind: ServiceKind::Http,
            }],
            pods: vec!["alice".into()],
        }
    }

    #[test]
    fn golden_register() {
        golden(
            Frame::Register(register()),
            "00000041 01
             0006 656467652d31
             02
             0005 302e312e30
             0005 6c696e7578
             0006 7838365f3634
             0001 000d 31302e302e302e323a38343433
             0001 0003 776562 01
             0001 0005 616c696365",
        );
    }

    #[test]
    fn golden_registered() {
        golden(
            Frame::Registered(Registered {
                node_id: "edge-1".into(),
                center_id: "center-a".into(),
                heartbeat_secs: 15,
            }),
            "00000016 02  0006 656467652d31  0008 63656e7465722d61  0000000f",
        );
    }

    #[test]
    fn golden_refused() {
        golden(
            Frame::Refused(Refused {
                reason: "no".into(),
            }),
            "00000004 03  0002 6e6f",
        );
    }

    #[test]
    fn golden_heartbeat() {
        golden(
            Frame::Heartbeat(Heartbeat {
                seq: 7,
                sent_at_ms: 1_700_000_000_000,
                capacity: Some(r#"{"cpus":4}"#.into()),
            }),
            "0000001f 04  0000000000000007  0000018bcfe56800  01 0000000a 7b2263707573223a347d",
        );
        golden(
            Frame::Heartbeat(Heartbeat {
                seq: 8,
                sent_at_ms: 0,
                capacity: None,
            }),
            "00000011 04  0000000000000008  0000000000000000  00",
        );
    }

    #[test]
    fn golden_heartbeat_ack() {
        golden(
            Frame::HeartbeatAck(HeartbeatAck { seq: 7 }),
            "00000008 05  0000000000000007",
        );
    }

    #[test]
    fn golden_commands() {
        golden(
            Frame::Command(Command {
                id: 1,
                body: CommandBody::SetAcmeTxt {
                    name: "_acme.e1".into(),
                    value: "tok".into(),
                },
            }),
            "00000018 06  0000000000000001  01 0008 5f61636d652e6531 0003 746f6b",
        );
        golden(
            Frame::Command(Command {
                id: 3,
                body: CommandBody::ClearAcmeTxt {
                    name: "_acme.e1".into(),
                },
            }),
            "00000013 06  0000000000000003  02 0008 5f61636d652e6531",
        );
        golden(
            Frame::Command(Command {
                id: 2,
                body: CommandBody::Ping,
            }),
            "00000009 06  0000000000000002  03",
        );
    }

    #[test]
    fn golden_command_reply() {
        golden(
            Frame::CommandReply(CommandReply {
                id: 1,
                ok: true,
                message: "done".into(),
            }),
            "0000000f 07  0000000000000001  01  0004 646f6e65",
        );
    }

    #[test]
    fn golden_goodbye() {
        golden(
            Frame::Goodbye(Goodbye {
                reason: "bye".into(),
            }),
            "00000005 08  0003 627965",
        );
    }

    #[test]
    fn round_trips_of_edge_values() {
        let frames = [
            Frame::Register(Register {
                node_id: "n".repeat(255),
                role: Role::Center,
                version: String::new(),
                os: String::new(),
                arch: "ünïcödé".into(),
                addresses: vec![],
                services: vec![
                    Service {
                        name: "a".into(),
                        kind: ServiceKind::Tls,
                    },
                    Service {
                        name: "b".into(),
                        kind: ServiceKind::Tcp,
                    },
                ],
                pods: (0..1000).map(|i| format!("pod-{i}")).collect(),
            }),
            Frame::Heartbeat(Heartbeat {
                seq: u64::MAX,
                sent_at_ms: u64::MAX,
                capacity: Some("null".into()),
            }),
            Frame::CommandReply(CommandReply {
                id: 0,
                ok: false,
                message: "multi\nline\ttext ✓".into(),
            }),
            Frame::Refused(Refused {
                reason: "r".repeat(u16::MAX as usize),
            }),
            Frame::Goodbye(Goodbye {
                reason: String::new(),
            }),
        ];
        for f in frames {
            let mut buf = BytesMut::new();
            encode(&f, &mut buf).unwrap();
            let n = Frame::check(&buf).unwrap();
            assert_eq!(n, buf.len());
            assert_eq!(Frame::parse(&buf).unwrap(), f);
        }
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            // Register whose node_id is empty.
            (
                "00000002 01 0000",
                "malformed Register frame: field `node_id` is empty",
            ),
            // Register with role 0x09.
            ("00000004 01 0001 61 09", "unknown node role 0x09"),
            // Registered with heartbeat 0.
            (
                "0000000a 02 0001 61 0001 62 00000000",
                "field `heartbeat_secs` must be at least 1",
            ),
            // Heartbeat whose capacity is not JSON.
            (
                "00000016 04 0000000000000001 0000000000000000 01 00000001 7b",
                "field `capacity` is not JSON",
            ),
            // Heartbeat with capacity tag 2.
            (
                "00000011 04 0000000000000001 0000000000000000 02",
                "field `capacity`: 0x02 is not a boolean",
            ),
            // Command kind 0x42.
            (
                "00000009 06 0000000000000001 42",
                "unknown command kind 0x42",
            ),
            // CommandReply with ok = 7.
            (
                "0000000b 07 0000000000000001 07 0000",
                "field `ok`: 0x07 is not a boolean",
            ),
            // SetAcmeTxt name with a newline.
            (
                "0000000e 06 0000000000000001 01 0001 0a 0000",
                "field `name` contains control character U+000A",
            ),
            // Register announcing 5 pods with none present.
            (
                "00000014 01 0001 61 02 0000 0000 0000 0000 0000 0005 00000000",
                "field `pods` announces 5 items",
            ),
        ];
        for (input, expected) in cases {
            let bytes = hex::decode(input.replace(' ', "")).unwrap();
            let err = Frame::parse(&bytes).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{input}: {err:?} does not contain {expected:?}"
            );
        }
    }

    #[test]
    fn truncated_frames_are_incomplete_until_the_header_says_otherwise() {
        let mut full = BytesMut::new();
        encode(&Frame::Register(register()), &mut full).unwrap();
        for cut in 0..full.len() {
            assert_eq!(
                Frame::check(&full[..cut]),
                Err(FrameError::Incomplete),
                "cut at {cut}"
            );
            assert!(Frame::parse(&full[..cut]).is_err());
        }
        // Through a reader, byte by byte after the preface.
        let mut r = FrameReader::new();
        r.push(&PREFACE);
        for (i, b) in full.iter().enumerate() {
            assert_eq!(r.next_frame().unwrap(), None, "early frame at {i}");
            r.push(&[*b]);
        }
        assert_eq!(r.next_frame().unwrap(), Some(Frame::Register(register())));
    }

    #[test]
    fn encode_refuses_what_decode_would_reject() {
        let mut bad = register();
        bad.node_id = "evil\u{1b}[31m".into();
        let err = encode(&Frame::Register(bad), &mut BytesMut::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot encode Register frame: field `node_id` contains control character U+001B at byte 4"
        );
        let hb = Heartbeat {
            seq: 1,
            sent_at_ms: 0,
            capacity: Some("{not json".into()),
        };
        assert!(encode(&Frame::Heartbeat(hb), &mut BytesMut::new()).is_err());
        let r = Registered {
            node_id: "a".into(),
            center_id: "b".into(),
            heartbeat_secs: 0,
        };
        assert!(encode(&Frame::Registered(r), &mut BytesMut::new()).is_err());
    }
}
