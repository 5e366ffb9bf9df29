//! The tunnel's wire protocol, sans-IO: every byte xpod nodes exchange over `xpod/1` QUIC
//! connections is encoded and decoded here and nowhere else (ARCHITECTURE §8).
//!
//! Nothing in this module touches a socket, a task or the system clock. Drivers (the quinn
//! endpoints) push received bytes in, pull frames and timeouts out, and pass the current
//! [`Instant`](std::time::Instant) to every call, so the whole protocol — handshake, heartbeats,
//! liveness, commands — is unit-tested with a virtual clock (quinn-proto's style).
//!
//! # Wire format
//!
//! One QUIC connection carries one bidirectional **control stream** and one stream per forwarded
//! request or TCP connection.
//!
//! Control stream, each direction:
//!
//! | bytes            | meaning                                                          |
//! |------------------|------------------------------------------------------------------|
//! | `58 50 4f 44`    | preface magic `"XPOD"` (once, first)                             |
//! | `00 01`          | preface: protocol version, u16 big-endian (once)                 |
//! | `u32` BE         | frame: payload length, at most [`MAX_FRAME`] (1 MiB)             |
//! | `u8`             | frame: type ([`FrameType`]: `01` Register … `08` Goodbye)        |
//! | payload          | the message's fields in a fixed order (see [`control`])          |
//!
//! Field encodings inside payloads: integers big-endian; `bool` and option tags are one byte
//! `00`/`01`; strings are a `u16` byte length then UTF-8 (capacity JSON: `u32` length); lists are
//! a `u16` count then the items. Decoding is strict — trailing bytes, unknown tags, non-canonical
//! booleans and invalid strings are errors — so every decodable frame has exactly one encoding.
//!
//! Data stream, first bytes ([`StreamHeader`]):
//!
//! | bytes      | meaning                                                                  |
//! |------------|--------------------------------------------------------------------------|
//! | `a1`       | magic and version (`a` = xpod stream header, `1` = version 1)            |
//! | `u16` BE   | length of the rest, at most [`MAX_STREAM_HEADER`] − 3                    |
//! | `u8`       | target tag, `01` Http … `0a` Cluster (table in `stream_header.rs`)       |
//! | fields     | the target's fields                                                      |
//! | `u8` …     | client address: `00` none, `04` + 4-byte IP + u16 port, `06` + 16 + u16  |
//!
//! After the header the stream carries the forwarded bytes unchanged.
//!
//! # Layout
//!
//! - `frame.rs` — the preface, the frame envelope (`check` then `parse`, an `Incomplete` error
//!   when more bytes are needed), [`FrameReader`] and [`FrameWriter`].
//! - `control.rs` — the typed control messages ([`Frame`]) and their payload encoding.
//! - `stream_header.rs` — the header on every data stream ([`StreamHeader`], [`Target`]).
//! - `session.rs` — the control-stream state machine for both sides ([`Session`]).
//! - `codec.rs` — primitive field encodings and string rules shared by the above.
//! - `error.rs` — [`ProtoError`] and [`FrameError`].
//! - `fuzz.rs` — decoder entry points shared by `tunnel/fuzz` (cargo-fuzz, nightly) and the
//!   stable randomized test that stands in for fuzzing in `cargo test`.

mod codec;
pub mod control;
mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod proxy_v2;
pub mod session;
pub mod stream_header;

pub use control::{
    Command, CommandBody, CommandReply, Frame, FrameType, Goodbye, Heartbeat, HeartbeatAck,
    Refused, Register, Registered, Role, Service, ServiceKind,
};
pub use error::{FrameError, ProtoError};
pub use frame::{
    check_preface, encode, FrameReader, FrameWriter, FRAME_HEADER_LEN, MAGIC, MAX_FRAME, PREFACE,
    VERSION,
};
pub use session::{
    ClientConfig, Event, PeerStatus, ServerConfig, Session, SessionError, Side, Timers,
};
pub use stream_header::{StreamHeader, Target, MAX_STREAM_HEADER, STREAM_HEADER_MAGIC};
