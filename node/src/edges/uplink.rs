//! Requests from an edge to the cluster, on the tunnels it dialed (`Target::Cluster` streams).
//!
//! Everything else on a tunnel is opened by the center; these few go the other way, for the
//! pods the cluster moves onto the edge (`super::pod_adopt`): their rows, their blobs, the sync's
//! progress. Each stream carries one HTTP/1.1 exchange.
//!
//! - Edge side: [`Uplinks`] holds the live tunnel connections (one per center, replaced on
//!   reconnect); [`call`] sends a request on the first that opens a stream.
//! - Center side: [`serve_edge`] accepts the streams of one edge's tunnel (after its control
//!   stream) and answers them through `super::pod_adopt::serve_cluster` **for that edge's
//!   identity only** (the certificate it dialed with): nothing in a request names who asks.
//!   At most [`MAX_STREAMS`] at once per tunnel, a request body of at most [`MAX_BODY`] bytes,
//!   a header within [`HEADER_TIMEOUT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt as _;
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Streams an edge may have open to one center at once.
pub const MAX_STREAMS: usize = 16;
/// Largest request body an edge may send.
pub const MAX_BODY: usize = 64 * 1024;
/// How long an edge may take to send a stream's header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for opening a stream to a center.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The QUIC error code for a stream a center refuses.
const REFUSED: u32 = 1;

/// An edge's live tunnel connections, one per center it dialed.
#[derive(Default)]
pub struct Uplinks {
    conns: Mutex<Vec<quinn::Connection>>,
}

impl Uplinks {
    /// Records a connection whose tunnel just came up (closed ones are dropped).
    pub fn add(&self, conn: quinn::Connection) {
        let mut v = self.conns.lock().expect("poisoned");
        v.retain(|c| c.close_reason().is_none() && c.stable_id() != conn.stable_id());
        v.push(conn);
    }

    fn live(&self) -> Vec<quinn::Connection> {
        let mut v = self.conns.lock().expect("poisoned");
        v.retain(|c| c.close_reason().is_none());
        v.clone()
    }
}

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

/// Center side: serves the streams edge `edge` opens on its tunnel `conn` until it closes.
pub async fn serve_edge(app: Arc<App>, conn: quinn::Connection, edge: String) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    loop {
        // A stream is taken only with a free slot: an edge that opens more waits (QUIC's
        // stream limit then holds it back), it never gets more served at once.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let (app, edge) = (app.clone(), edge.clone());
        tokio::spawn(async move {
            stream(app, send, recv, edge).await;
            drop(slot);
        });
    }
}

async fn stream(
    app: Arc<App>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    edge: String,
) {
    let rest = match tokio::time::timeout(HEADER_TIMEOUT, xpod_tunnel::stream::accept(&mut recv))
        .await
    {
        Ok(Ok(Some((h, rest)))) if h.target == Target::Cluster => rest,
        Ok(Ok(None)) => return,
        Ok(Ok(Some((h, _)))) => {
            tracing::warn!(%edge, target = ?h.target, "an edge opened a stream for a target it may not; reset");
            let _ = send.reset(REFUSED.into());
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%edge, error = %e, "bad stream from an edge; reset");
            let _ = send.reset(REFUSED.into());
            return;
        }
        Err(_) => {
            tracing::warn!(%edge, "an edge sent no stream header within {HEADER_TIMEOUT:?}; reset");
            let _ = send.reset(REFUSED.into());
            return;
        }
    };
    let io = TokioIo::new(tokio::io::join(
        std::io::Cursor::new(rest.freeze()).chain(recv),
        send,
    ));
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (app, edge) = (app.clone(), edge.clone());
        async move {
            let resp = match request(&app, &edge, req).await {
                Ok(r) => r,
                Err(e) => crate::reply::error::error_response(&e, "-"),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(error = %e, "a stream from an edge ended with an error");
    }
}

async fn request(
    app: &Arc<App>,
    edge: &str,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let body = limited
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("a request body from edge {edge} is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request(format!("a request body from edge {edge}: {e}"))
            }
        })?
        .to_bytes();
    super::pod_adopt::serve_cluster(app, edge, &method, &path, &query, &body).await
}
