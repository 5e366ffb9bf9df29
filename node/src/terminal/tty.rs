//! Terminal frames: what a terminal connection carries, both ways, once the supervisor answered
//! `connected` to a `{"terminal": …}` request ([`super::TerminalRequest`]). A terminal
//! needs the window size to travel beside the bytes, which a plain byte relay cannot carry.
//!
//! | bytes    | meaning                                                    |
//! |----------|------------------------------------------------------------|
//! | `u8`     | kind: `01` data, `02` resize, `03` exit                    |
//! | `u16` BE | payload length                                             |
//! | payload  | data: 1..=[`MAX_DATA`] bytes; resize: rows `u16`, cols `u16`; exit: code `i32` |
//!
//! Data goes both ways (keystrokes in, output out); resize only towards the PTY; exit only from
//! it, last. Anything else is a protocol error that ends the connection: neither side trusts
//! the other (a sandbox's supervisor runs the sandbox's code's uid; a client is a client).

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Largest data payload of one frame.
pub const MAX_DATA: usize = 16 * 1024;
/// Largest terminal, in rows and in columns.
pub const MAX_SIZE: u16 = 1000;

const DATA: u8 = 0x01;
const RESIZE: u8 = 0x02;
const EXIT: u8 = 0x03;
const HEADER: usize = 3;

/// One terminal frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the terminal (keystrokes) or from it (output).
    Data(Bytes),
    /// The window's new size.
    Resize { rows: u16, cols: u16 },
    /// The command ended with this code (or 128 + the signal that ended it).
    Exit(i32),
}

/// Checks a window size: 1..=[`MAX_SIZE`] rows and columns.
pub fn check_size(rows: u16, cols: u16) -> Result<(), String> {
    if !(1..=MAX_SIZE).contains(&rows) || !(1..=MAX_SIZE).contains(&cols) {
        return Err(format!(
            "terminal size {rows}x{cols}: rows and cols must be 1..={MAX_SIZE}"
        ));
    }
    Ok(())
}

impl Frame {
    /// Appends the frame's encoding to `dst`. Data longer than [`MAX_DATA`] becomes several
    /// frames.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Data(b) => {
                for chunk in b.chunks(MAX_DATA) {
                    dst.put_u8(DATA);
                    dst.put_u16(chunk.len() as u16);
                    dst.put_slice(chunk);
                }
            }
            Frame::Resize { rows, cols } => {
                dst.put_u8(RESIZE);
                dst.put_u16(4);
                dst.put_u16(*rows);
                dst.put_u16(*cols);
            }
            Frame::Exit(code) => {
                dst.put_u8(EXIT);
                dst.put_u16(4);
                dst.put_i32(*code);
            }
        }
    }

    /// The frame's encoding.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Takes one frame off the front of `src`: `Ok(None)` until it is complete. An unknown
    /// kind, a wrong length or a bad size is an error as soon as its bytes are in.
    pub fn decode(src: &mut BytesMut) -> Result<Option<Frame>, String> {
        if src.len() < HEADER {
            return Ok(None);
        }
        let kind = src[0];
        let len = u16::from_be_bytes([src[1], src[2]]) as usize;
        match kind {
            DATA if len == 0 || len > MAX_DATA => {
                return Err(format!(
                    "a data frame of {len} bytes (expected 1..={MAX_DATA})"
                ))
            }
            RESIZE | EXIT if len != 4 => {
                return Err(format!(
                    "a frame of kind {kind} with {len} bytes (expected 4)"
                ))
            }
            DATA | RESIZE | EXIT => {}
            other => return Err(format!("unknown terminal frame kind 0x{other:02x}")),
        }
        if src.len() < HEADER + len {
            return Ok(None);
        }
        src.advance(HEADER);
        let mut payload = src.split_to(len);
        Ok(Some(match kind {
            DATA => Frame::Data(payload.freeze()),
            RESIZE => {
                let (rows, cols) = (payload.get_u16(), payload.get_u16());
                check_size(rows, cols)?;
                Frame::Resize { rows, cols }
            }
            _ => Frame::Exit(payload.get_i32()),
        }))
    }
}

/// Reads frames from a byte stream. [`FrameReader::next`] is cancel-safe (bytes read are kept
/// for the next call), so it can sit in a `select!`.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// A reader that starts with `early` (bytes already read past an answer line).
    pub fn with(early: &[u8]) -> Self {
        FrameReader {
            buf: BytesMut::from(early),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of the stream. A stream that ends inside a
    /// frame, or a bad frame, is an error.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> std::io::Result<Option<Frame>> {
        loop {
            match Frame::decode(&mut self.buf) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            self.buf.reserve(HEADER + MAX_DATA);
            if r.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the terminal connection ended inside a frame",
                    ))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_long_data_splits() {
        let long = Bytes::from(vec![7u8; MAX_DATA + 5]);
        let mut b = BytesMut::new();
        for f in [
            Frame::Data(Bytes::from_static(b"ls\r")),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::Exit(-1),
            Frame::Data(long.clone()),
        ] {
            f.encode(&mut b);
        }
        let mut got = Vec::new();
        while let Some(f) = Frame::decode(&mut b).unwrap() {
            got.push(f);
        }
        assert_eq!(got[0], Frame::Data(Bytes::from_static(b"ls\r")));
        assert_eq!(
            got[1],
            Frame::Resize {
                rows: 40,
                cols: 120
            }
        );
        assert_eq!(got[2], Frame::Exit(-1));
        assert_eq!(got[3], Frame::Data(long.slice(..MAX_DATA)));
        assert_eq!(got[4], Frame::Data(long.slice(MAX_DATA..)));
        assert!(b.is_empty());
    }

    #[test]
    fn partial_frames_wait_and_bad_frames_are_named() {
        let whole = Frame::Resize { rows: 2, cols: 3 }.to_bytes();
        let mut b = BytesMut::from(&whole[..5]);
        assert_eq!(Frame::decode(&mut b).unwrap(), None);
        b.extend_from_slice(&whole[5..]);
        assert!(Frame::decode(&mut b).unwrap().is_some());
        for (bytes, want) in [
            (&b"\x09\x00\x01x"[..], "unknown terminal frame kind 0x09"),
            (b"\x01\x00\x00", "a data frame of 0 bytes"),
            (b"\x01\x40\x01", "a data frame of 16385 bytes"),
            (b"\x02\x00\x03abc", "expected 4"),
            (b"\x02\x00\x04\x00\x00\x00\x50", "terminal size 0x80"),
            (b"\x02\x00\x04\x03\xe9\x00\x50", "terminal size 1001x80"),
        ] {
            let err = Frame::decode(&mut BytesMut::from(bytes)).unwrap_err();
            assert!(err.contains(want), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_what_decodes_encodes_back() {
        // A small xorshift: the same 20,000 inputs every run, biased towards valid headers.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = bytes.first_mut() {
                *b %= 5;
            }
            if bytes.len() > 2 {
                bytes[1] = 0;
                bytes[2] %= 8;
            }
            let mut buf = BytesMut::from(&bytes[..]);
            let mut consumed = 0;
            while let Ok(Some(f)) = Frame::decode(&mut buf) {
                let enc = f.to_bytes();
                assert_eq!(
                    &bytes[consumed..consumed + enc.len()],
                    &enc[..],
                    "{bytes:?}"
                );
                consumed += enc.len();
            }
        }
    }

    #[tokio::test]
    async fn the_reader_takes_frames_across_reads_and_names_a_cut_one() {
        let mut all = BytesMut::new();
        Frame::Data(Bytes::from_static(b"hello")).encode(&mut all);
        Frame::Exit(3).encode(&mut all);
        let (mut a, mut b) = tokio::io::duplex(4);
        let bytes = all.freeze();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            a.write_all(&bytes).await.unwrap();
            a.write_all(b"\x01\x00").await.unwrap();
        });
        let mut r = FrameReader::default();
        assert_eq!(
            r.next(&mut b).await.unwrap(),
            Some(Frame::Data(Bytes::from_static(b"hello")))
        );
        assert_eq!(r.next(&mut b).await.unwrap(), Some(Frame::Exit(3)));
        writer.await.unwrap();
        let err = r.next(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
