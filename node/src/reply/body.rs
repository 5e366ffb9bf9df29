//! Response bodies: one boxed type for empty, buffered and streamed bodies.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

/// The body type of every response.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed body; errors end the response early (the client sees a truncated body, never
/// wrong bytes).
pub fn stream<S, E>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let frames = s.map(|r| {
        r.map(Frame::data)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

/// A JSON response: any of the API's types (`crate::api_types`), or a `serde_json::Value`.
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(empty()))
}
