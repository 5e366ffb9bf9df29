//! What every handler answers with, shared by the front, the handlers and the forwarders
//! (which therefore need not import the HTTP front):
//! - [`body`]: the response body type and its constructors (JSON, bytes, streams);
//! - [`error`]: `ApiError`, the one JSON error shape, and its mapping from the store's, the
//!   blobs' and routing's errors.

pub mod body;
pub mod error;
