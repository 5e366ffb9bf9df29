//! Test support for xpod's multi-process tests and benchmarks.
//!
//! - [`pg`]: a real PostgreSQL per test (a throwaway cluster, or a fresh database on the server
//!   named by `XPOD_TEST_PG_URL`), used by the PostgreSQL metadata tests and multi-node tests.
//! - [`node`]: a real `xpod up` child process on a free port with its own data dir (kill -9,
//!   SIGTERM, restart), used by the end-to-end and multi-node tests and the benchmarks.
//! - [`edges`]: centers with a cluster CA, join tokens, edges that join, presence, memory.
//! - [`mesh`]: centers with certificates from one CA on one PostgreSQL, meshed over QUIC.
//! - [`netns`]: a network namespace on a veth pair (UDP blocked with nftables).
//! - [`impair`]: a UDP relay that adds delay and loss (a bad link without `tc netem`).
//! - [`s3`]: a real S3-compatible server (a throwaway `moto_server`) for the S3 region tests.
//! - [`curl`]: `curl` as the tests' HTTP client, so requests are what a user sends.
//! - [`terminal`]: a terminal WebSocket client (keys, resizes, output, exit code).
//! - [`eventually`]: waiting for a condition with a deadline.

pub mod bind;
pub mod curl;
pub mod edges;
pub mod impair;
pub mod mesh;
pub mod netns;
pub mod node;
pub mod pebble;
pub mod pg;
pub mod s3;
pub mod terminal;

/// Polls `f` every 200 ms until it gives a value, for at most `secs` seconds (then panics,
/// saying `what` did not happen).
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
