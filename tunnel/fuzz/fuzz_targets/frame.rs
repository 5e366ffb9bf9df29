//! Fuzz target: arbitrary bytes as the receiving half of a control stream (preface, then
//! frames), fed whole and in chunks to `FrameReader`. Panics only if a decoder invariant breaks
//! (see `xpod_tunnel::proto::fuzz`). Run: `cargo +nightly fuzz run frame` in `tunnel/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xpod_tunnel::proto::fuzz::control_stream(data);
});
