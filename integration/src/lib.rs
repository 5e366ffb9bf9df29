//! Test support for xpod's multi-process tests and benchmarks.
//!
//! - [`pg`]: a real PostgreSQL per test (a throwaway cluster, or a fresh database on the server
//!   named by `XPOD_TEST_PG_URL`), used by the PostgreSQL metadata tests and multi-node tests.

pub mod pg;
