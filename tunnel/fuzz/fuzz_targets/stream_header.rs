//! Fuzz target: arbitrary bytes as the start of a forwarded data stream, decoded whole and byte
//! by byte with `StreamHeader::decode`. Panics only if a decoder invariant breaks (see
//! `xpod_tunnel::proto::fuzz`). Run: `cargo +nightly fuzz run stream_header` in `tunnel/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xpod_tunnel::proto::fuzz::stream_header(data);
});
