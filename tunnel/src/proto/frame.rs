//! The control stream's envelope: the connection preface and length-prefixed frames.
//!
//! Each direction of the control stream starts with the 6-byte [`PREFACE`] (`"XPOD"` + version
//! u16), then carries frames: `u32` big-endian payload length, `u8` [`FrameType`], payload.
//! Decoding follows mini-redis: [`Frame::check`] says how long the next frame is (or that it is
//! [`Incomplete`](FrameError::Incomplete)) without allocating, then [`Frame::parse`] decodes
//! exactly those bytes. The length is checked against [`MAX_FRAME`] and the type byte against
//! the known types as soon as the 5-byte header is in, so an oversized or unknown frame is
//! rejected before any of its payload is buffered.
//!
//! [`FrameReader`] accumulates bytes from the stream and yields frames; [`FrameWriter`] writes
//! the preface before its first frame. Nothing outside `tunnel::proto` frames bytes by hand.

use bytes::{Buf, BufMut, BytesMut};

use super::control::{Frame, FrameType};
use super::{FrameError, ProtoError};

/// Preface magic: the first four bytes on each direction of a control stream.
pub const MAGIC: [u8; 4] = *b"XPOD";
/// The protocol version this build speaks (the preface's u16).
pub const VERSION: u16 = 1;
/// The whole preface: `58 50 4f 44 00 01`.
pub const PREFACE: [u8; 6] = [
    MAGIC[0],
    MAGIC[1],
    MAGIC[2],
    MAGIC[3],
    (VERSION >> 8) as u8,
    VERSION as u8,
];
/// Frame header: `u32` payload length + `u8` type.
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest control-frame payload accepted or sent (1 MiB). Control messages are small; the cap
/// bounds what a peer can make this node buffer.
pub const MAX_FRAME: usize = 1 << 20;

/// Checks whether `src` starts with a complete, supported preface. `Ok(len)` is the preface's
/// length (6). A wrong magic is reported as soon as four bytes are in.
pub fn check_preface(src: &[u8]) -> Result<usize, FrameError> {
    if let Some(offset) = src.iter().zip(MAGIC).position(|(got, want)| *got != want) {
        return Err(ProtoError::BadPreface {
            offset,
            found: src[offset],
        }
        .into());
    }
    if src.len() < PREFACE.len() {
        return Err(FrameError::Incomplete);
    }
    let theirs = u16::from_be_bytes([src[4], src[5]]);
    if theirs != VERSION {
        return Err(ProtoError::UnsupportedVersion {
            theirs,
            ours: VERSION,
        }
        .into());
    }
    Ok(PREFACE.len())
}

impl Frame {
    /// Checks whether `src` starts with a complete frame and returns its total length (header
    /// included). Never allocates; rejects an oversized length or unknown type as soon as the
    /// header is in.
    pub fn check(src: &[u8]) -> Result<usize, FrameError> {
        if src.len() < 4 {
            return Err(FrameError::Incomplete);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if len as u64 > MAX_FRAME as u64 {
            return Err(ProtoError::TooLarge {
                what: "control frame",
                len: len as u64,
                max: MAX_FRAME,
            }
            .into());
        }
        let Some(&tag) = src.get(4) else {
            return Err(FrameError::Incomplete);
        };
        if FrameType::from_u8(tag).is_none() {
            return Err(ProtoError::UnknownType {
                what: "control frame type",
                tag,
            }
            .into());
        }
        let total = FRAME_HEADER_LEN + len as usize;
        if src.len() < total {
            return Err(FrameError::Incomplete);
        }
        Ok(total)
    }

    /// Decodes one frame from exactly the bytes [`Frame::check`] measured.
    pub fn parse(src: &[u8]) -> Result<Frame, ProtoError> {
        let total = match Frame::check(src) {
            Ok(total) => total,
            Err(FrameError::Invalid(e)) => return Err(e),
            Err(FrameError::Incomplete) => {
                return Err(ProtoError::Malformed {
                    what: "control frame",
                    problem: format!("truncated: only {} bytes", src.len()),
                })
            }
        };
        if total != src.len() {
            return Err(ProtoError::Malformed {
                what: "control frame",
                problem: format!("{} bytes after the frame's end", src.len() - total),
            });
        }
        let ty = FrameType::from_u8(src[4]).expect("check validated the type");
        Frame::decode_payload(ty, &src[FRAME_HEADER_LEN..])
    }
}

/// Appends one frame (header + payload) to `dst`. Fails, leaving `dst` as it was, if a field
/// breaks a limit of the format or the payload exceeds [`MAX_FRAME`].
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let start = dst.len();
    dst.put_u32(0); // patched below
    dst.put_u8(frame.frame_type() as u8);
    if let Err(e) = frame.encode_payload(dst) {
        dst.truncate(start);
        return Err(e);
    }
    let len = dst.len() - start - FRAME_HEADER_LEN;
    if len > MAX_FRAME {
        dst.truncate(start);
        return Err(ProtoError::Unencodable {
            what: "control frame",
            problem: format!(
                "{} payload is {len} bytes, the cap is {MAX_FRAME}",
                frame.name()
            ),
        });
    }
    dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes the receiving half of a control stream: checks the preface, then yields frames.
///
/// Push bytes as they arrive and call [`next_frame`](Self::next_frame) until it returns
/// `Ok(None)`; the buffer then holds at most one partial frame (≤ [`MAX_FRAME`] + header) plus
/// the last pushed chunk. After an error the reader stays failed and returns the same error.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
    preface_seen: bool,
    failed: Option<ProtoError>,
}

impl FrameReader {
    /// A reader expecting the preface first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Ignored once the reader has failed.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the first protocol error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.decode_next();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        }
        result
    }

    fn decode_next(&mut self) -> Result<Option<Frame>, ProtoError> {
        if !self.preface_seen {
            match check_preface(&self.buf) {
                Ok(n) => {
                    self.buf.advance(n);
                    self.preface_seen = true;
                }
                Err(FrameError::Incomplete) => return Ok(None),
                Err(FrameError::Invalid(e)) => return Err(e),
            }
        }
        match Frame::check(&self.buf) {
            Ok(n) => {
                let raw = self.buf.split_to(n);
                Frame::parse(&raw).map(Some)
            }
            // No reservation from the announced length: the buffer grows only with bytes that
            // actually arrive.
            Err(FrameError::Incomplete) => Ok(None),
            Err(FrameError::Invalid(e)) => Err(e),
        }
    }

    /// Whether the preface has been received and accepted.
    pub fn preface_seen(&self) -> bool {
        self.preface_seen
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes the sending half of a control stream: the preface, then frames.
#[derive(Debug, Default)]
pub struct FrameWriter {
    preface_sent: bool,
}

impl FrameWriter {
    /// A writer that will emit the preface before its first frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `frame` to `dst`, preceded by the preface if this is the first write. On error
    /// nothing is written (and the preface is still owed).
    pub fn write(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let start = dst.len();
        if !self.preface_sent {
            dst.put_slice(&PREFACE);
        }
        if let Err(e) = encode(frame, dst) {
            dst.truncate(start);
            return Err(e);
        }
        self.preface_sent = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::control::{Goodbye, HeartbeatAck};

    fn ack(seq: u64) -> Frame {
        Frame::HeartbeatAck(HeartbeatAck { seq })
    }

    #[test]
    fn preface_golden_bytes() {
        assert_eq!(PREFACE, *b"XPOD\x00\x01");
        assert_eq!(hex::encode(PREFACE), "58504f440001");
        assert_eq!(check_preface(&PREFACE), Ok(6));
    }

    #[test]
    fn preface_errors() {
        assert_eq!(check_preface(b"XP"), Err(FrameError::Incomplete));
        assert_eq!(check_preface(b""), Err(FrameError::Incomplete));
        assert_eq!(check_preface(b"XPOD\x00"), Err(FrameError::Incomplete));
        // Wrong bytes are refused as soon as they differ, without waiting for four.
        let err = check_preface(b"GET ").unwrap_err();
        assert_eq!(
            err,
            FrameError::Invalid(ProtoError::BadPreface {
                offset: 0,
                found: b'G'
            })
        );
        assert!(err.to_string().contains("not speaking xpod/1"), "{err}");
        assert_eq!(
            check_preface(b"G"),
            Err(ProtoError::BadPreface {
                offset: 0,
                found: b'G'
            }
            .into())
        );
        assert_eq!(
            check_preface(b"XPOST"),
            Err(ProtoError::BadPreface {
                offset: 3,
                found: b'S'
            }
            .into())
        );
        let err = check_preface(b"XPOD\x00\x02").unwrap_err();
        assert_eq!(
            err,
            FrameError::Invalid(ProtoError::UnsupportedVersion { theirs: 2, ours: 1 })
        );
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn writer_sends_preface_once() {
        let mut w = FrameWriter::new();
        let mut buf = BytesMut::new();
        w.write(&ack(1), &mut buf).unwrap();
        w.write(&ack(2), &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf),
            "58504f440001\
             0000000805 0000000000000001\
             0000000805 0000000000000002"
                .replace(' ', "")
        );
    }

    #[test]
    fn byte_by_byte_decoding() {
        let frames = vec![
            ack(1),
            Frame::Goodbye(Goodbye {
                reason: "bye".into(),
            }),
            ack(u64::MAX),
        ];
        let mut bytes = BytesMut::new();
        let mut w = FrameWriter::new();
        for f in &frames {
            w.write(f, &mut bytes).unwrap();
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            r.push(&[*b]);
            while let Some(f) = r.next_frame().unwrap() {
                got.push((i, f));
            }
        }
        // Each frame appears exactly when its last byte arrives.
        let ends: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            ends,
            vec![6 + 13 - 1, 6 + 13 + 10 - 1, 6 + 13 + 10 + 13 - 1]
        );
        assert_eq!(got.into_iter().map(|(_, f)| f).collect::<Vec<_>>(), frames);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn oversized_length_rejected_before_its_data() {
        // Only the 4 length bytes have arrived: 1 MiB + 1.
        let mut r = FrameReader::new();
        r.push(&PREFACE);
        r.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
        let err = r.next_frame().unwrap_err();
        assert_eq!(
            err,
            ProtoError::TooLarge {
                what: "control frame",
                len: MAX_FRAME as u64 + 1,
                max: MAX_FRAME
            }
        );
        assert_eq!(
            err.to_string(),
            "control frame of 1048577 bytes exceeds the 1048576-byte cap"
        );
        // The reader stays failed and buffers nothing more.
        r.push(&[0; 1024]);
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.next_frame().unwrap_err(), err);
        // Exactly the cap is fine (and only incomplete here).
        let mut hdr = (MAX_FRAME as u32).to_be_bytes().to_vec();
        hdr.push(FrameType::Goodbye as u8);
        assert_eq!(Frame::check(&hdr), Err(FrameError::Incomplete));
        assert!(matches!(
            Frame::check(&u32::MAX.to_be_bytes()),
            Err(FrameError::Invalid(ProtoError::TooLarge { .. }))
        ));
    }

    #[test]
    fn unknown_type_rejected_from_header() {
        let err = Frame::check(&[0, 0, 0, 3, 0x7f]).unwrap_err();
        assert_eq!(
            err,
            FrameError::Invalid(ProtoError::UnknownType {
                what: "control frame type",
                tag: 0x7f
            })
        );
        assert_eq!(err.to_string(), "unknown control frame type 0x7f");
        assert!(Frame::check(&[0, 0, 0, 0, 0x00]).is_err());
    }

    #[test]
    fn truncated_and_trailing_payloads_are_errors() {
        // HeartbeatAck with a 7-byte payload (seq needs 8).
        let err = Frame::parse(&hex::decode("0000000705 00000000000001".replace(' ', "")).unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed HeartbeatAck frame: truncated in field `seq`: 8 more bytes needed, 7 left"
        );
        // HeartbeatAck with a 9-byte payload.
        let err =
            Frame::parse(&hex::decode("0000000905 000000000000000100".replace(' ', "")).unwrap())
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed HeartbeatAck frame: 1 unexpected trailing bytes"
        );
        // parse() given fewer or more bytes than the frame.
        assert!(Frame::parse(&[0, 0, 0, 8, 5, 0]).is_err());
        assert!(Frame::parse(&hex::decode("0000000805000000000000000101").unwrap()).is_err());
        // Bad UTF-8 in a Goodbye reason.
        let err = Frame::parse(&hex::decode("0000000408 0002 ff fe".replace(' ', "")).unwrap())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed Goodbye frame: field `reason`: invalid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn encode_refuses_oversized_and_invalid_frames_without_writing() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let huge = Frame::Heartbeat(crate::proto::Heartbeat {
            seq: 1,
            sent_at_ms: 0,
            capacity: Some(format!("\"{}\"", "x".repeat(MAX_FRAME))),
        });
        let err = encode(&huge, &mut buf).unwrap_err();
        assert!(err.to_string().contains("the cap is 1048576"), "{err}");
        assert_eq!(&buf[..], b"keep");
        let mut w = FrameWriter::new();
        let bad = Frame::Goodbye(Goodbye {
            reason: "x".repeat(70_000),
        });
        assert!(w.write(&bad, &mut buf).is_err());
        assert_eq!(&buf[..], b"keep");
        // The preface is still owed after a failed write.
        w.write(&ack(1), &mut buf).unwrap();
        assert_eq!(&buf[4..10], &PREFACE);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = FrameReader::new();
        r.push(b"\x16\x03\x01\x02\x00"); // a TLS ClientHello
        assert!(matches!(r.next_frame(), Err(ProtoError::BadPreface { .. })));
        let mut r = FrameReader::new();
        r.push(&PREFACE);
        r.push(&[0, 0, 0, 1, 0x01, 0xff]); // Register with a 1-byte payload
        assert!(matches!(r.next_frame(), Err(ProtoError::Malformed { .. })));
    }
}
