//! Fuzz target: arbitrary bytes as a DNS request over UDP and over TCP, through the whole
//! request path of a center's DNS server (see `xpod_node::dns::fuzz`). Panics only if an
//! invariant breaks. Run: `cargo +nightly fuzz run dns_packet` in `node/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = xpod_node::dns::fuzz::packet(data);
});
