//! xpod storage: metadata with a change feed, and blob storage with immutable keys.
//!
//! # Layout
//! - [`meta`]: the [`meta::MetaStore`] trait and its two backends (PostgreSQL for centers,
//!   embedded SQLite for a lone node or an edge), the change feed, and the conformance suite
//!   that both backends pass (feature `conformance`, for tests: one test per check through
//!   `conformance_tests!`).
//! - [`blobs`]: resource bodies behind `object_store` under immutable keys (a new key per
//!   write), streamed in and out, with garbage collection of unreferenced blobs.
//! - [`memcache`]: small immutable blobs in memory (the hot path of small GETs).

pub mod blobs;
pub mod cache;
pub mod memcache;
pub mod meta;
pub mod regions;
