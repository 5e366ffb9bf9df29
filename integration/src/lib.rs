//! Test support for xpod's multi-process tests and benchmarks.
//!
//! - [`pg`]: a real PostgreSQL per test (a throwaway cluster, or a fresh database on the server
//!   named by `XPOD_TEST_PG_URL`), used by the PostgreSQL metadata tests and multi-node tests.
//! - [`node`]: a real `xpod up` child process on a free port with its own data dir (kill -9,
//!   SIGTERM, restart), used by the end-to-end and multi-node tests and the benchmarks.
//! - [`edges`]: centers with a cluster CA, join tokens, edges that join, presence, memory.
//! - [`mesh`]: centers with certificates from one CA on one PostgreSQL, meshed over QUIC.
//! - [`s3`]: a real S3-compatible server (a throwaway `moto_server`) for the S3 region tests.
//! - [`curl`]: `curl` as the tests' HTTP client, so requests are what a user sends.

pub mod bind;
pub mod curl;
pub mod edges;
pub mod mesh;
pub mod node;
pub mod pebble;
pub mod pg;
pub mod s3;
