//! An edge's own requests to the cluster, on the tunnels it dialed (`Target::Cluster` streams,
//! one HTTP/1.1 exchange each; answered by `super::cluster_api`).
//!
//! Everything else on a tunnel is opened by the center; these few go the other way, for the
//! pods the cluster moves onto the edge (`super::pod_adopt`): their rows, their blobs, the
//! sync's progress. `super::registry::Uplinks` holds the live tunnel connections (one per
//! center, replaced on reconnect); [`call`] sends a request on the first that opens a stream.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Upper bound for opening a stream to a center.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unreachable",
        format!("this edge cannot reach the cluster: {why}"),
    )
    .with_header(header::RETRY_AFTER, "2")
}

/// Sends one request to the cluster through a center this edge holds a tunnel to.
pub async fn call(
    app: &App,
    method: Method,
    path_and_query: &str,
    payload: Bytes,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let conns = app.uplinks.live();
    if conns.is_empty() {
        return Err(unavailable("no tunnel to a center is up"));
    }
    let header = StreamHeader {
        target: Target::Cluster,
        client_addr: None,
    };
    let mut last = String::new();
    for conn in conns {
        let open = tokio::time::timeout(OPEN_TIMEOUT, xpod_tunnel::stream::open(&conn, &header));
        let (send, recv) = match open.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = e.to_string();
                continue;
            }
            Err(_) => {
                last = format!("no stream within {OPEN_TIMEOUT:?}");
                continue;
            }
        };
        let io = TokioIo::new(tokio::io::join(recv, send));
        let (mut sender, c) = hyper::client::conn::http1::handshake::<_, Body>(io)
            .await
            .map_err(|e| unavailable(format!("HTTP handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = c.await {
                tracing::debug!(error = %e, "request to the cluster ended with an error");
            }
        });
        let req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, "cluster")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body::full(payload))
            .map_err(|e| ApiError::internal(format!("building a request to the cluster: {e}")))?;
        return sender
            .send_request(req)
            .await
            .map_err(|e| unavailable(format!("the request failed: {e}")));
    }
    Err(unavailable(last))
}
