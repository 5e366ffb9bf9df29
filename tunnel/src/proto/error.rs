//! Errors of the wire protocol: one enum for everything a peer can get wrong ([`ProtoError`]),
//! and the two-way result of a `check` ([`FrameError`]: "need more bytes" or "invalid").
//!
//! Every message names the problem — which frame or field, which length against which cap — so a
//! log line about a refused peer says what to fix without a packet capture.

/// A protocol error: the bytes or the sequence of frames a peer sent cannot be accepted.
///
/// A session that hits one closes (sending `Goodbye` with this error's text); the connection is
/// then dropped and the peer's dialer reconnects. Retrying with the same bytes would fail again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The control stream did not start with `XPOD`. Reported at the first byte that differs,
    /// as soon as it arrives (so the error is the same however the bytes were split).
    #[error(
        "the control stream does not start with the xpod preface \"XPOD\" (byte {offset} is 0x{found:02x}); \
         the peer is not speaking xpod/1"
    )]
    BadPreface {
        /// Position of the first wrong byte (0..=3).
        offset: usize,
        /// The byte found there.
        found: u8,
    },
    /// The preface named a protocol version this node does not speak.
    #[error(
        "the peer speaks xpod protocol version {theirs}, this node speaks version {ours}; \
         run the same xpod release on both nodes"
    )]
    UnsupportedVersion {
        /// The version in the peer's preface.
        theirs: u16,
        /// The version this build speaks.
        ours: u16,
    },
    /// A length prefix above the cap, rejected before any of its bytes are buffered.
    #[error("{what} of {len} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// What was too large ("control frame", "stream header").
        what: &'static str,
        /// The announced length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// A type or tag byte this version does not define.
    #[error("unknown {what} 0x{tag:02x}")]
    UnknownType {
        /// Which kind of tag ("control frame type", "stream target", ...).
        what: &'static str,
        /// The byte received.
        tag: u8,
    },
    /// Bytes that do not decode: truncated or trailing fields, invalid strings, bad booleans.
    #[error("malformed {what}: {problem}")]
    Malformed {
        /// The frame or header being decoded.
        what: &'static str,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// A value this side was asked to send breaks a limit of the format (too long a string,
    /// a control character in a name, a frame over the cap); nothing was written.
    #[error("cannot encode {what}: {problem}")]
    Unencodable {
        /// The frame or header being encoded.
        what: &'static str,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// A well-formed frame that is not allowed here (before the handshake, a second `Register`,
    /// a reply to a command never sent, ...).
    #[error("protocol violation: {0}")]
    Violation(String),
}

/// The result of checking whether a buffer holds a complete unit (a frame, a preface, a stream
/// header): either more bytes are needed, or what is there can never become valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes yet; read more and check again. Not an error of the peer.
    #[error("incomplete: more bytes are needed")]
    Incomplete,
    /// The bytes received so far are already invalid; no amount of further input helps.
    #[error(transparent)]
    Invalid(#[from] ProtoError),
}
