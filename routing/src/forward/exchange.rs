//! Sending one forwarded request (see [`super`]).
//!
//! A next hop that dies (killed, unplugged) sends nothing more, and QUIC notices only at its
//! idle timeout (10 s for tunnels). So while a request waits for its stream and its response
//! head, [`send`] probes the connection: a one-byte datagram every [`PROBE_EVERY`] (ack-eliciting:
//! a live peer acknowledges it within a round trip, whatever its application is doing). When
//! nothing at all has come from the peer for [`DEAD_AFTER`], the connection is closed
//! (`UNRESPONSIVE`): this request and every other one waiting on it fail at once with
//! [`ForwardError::Lost`], and the next requests find no connection (a 503 in milliseconds)
//! until the peer reconnects. A live peer over a lossy link would have to lose every probe and
//! every keep-alive for that long; a response that takes long is not cut (the probes are
//! answered meanwhile).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use xpod_tunnel::proto::StreamHeader;
use xpod_tunnel::stream::OpenError;

use super::pool::StreamPool;

/// Upper bound for opening a stream and starting the HTTP exchange on it.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting request probes its connection.
pub const PROBE_EVERY: Duration = Duration::from_millis(400);
/// A connection with nothing from the peer for this long while a request waits is dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(2000);

/// Resolves when `conn`'s peer has sent nothing for [`DEAD_AFTER`] (probing it meanwhile),
/// after closing the connection.
async fn unresponsive(conn: &quinn::Connection) -> String {
    // Nothing at all for a request answered within the first period (most of them).
    tokio::time::sleep(PROBE_EVERY).await;
    let mut heard = conn.stats().udp_rx.datagrams;
    let mut since = Instant::now();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tick.tick().await;
        let now = conn.stats().udp_rx.datagrams;
        if now != heard {
            (heard, since) = (now, Instant::now());
        } else if since.elapsed() >= DEAD_AFTER {
            let why = format!(
                "the next hop sent nothing for {} ms while the request waited: it is down",
                DEAD_AFTER.as_millis()
            );
            conn.close(
                xpod_tunnel::endpoint::close_code::UNRESPONSIVE,
                b"unresponsive",
            );
            tracing::warn!(peer = %conn.remote_address(), "closed a connection whose peer stopped answering");
            return why;
        }
        // Unsupported or failing datagrams: the keep-alives still show a live peer.
        let _ = conn.send_datagram(bytes::Bytes::from_static(&[0]));
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The connection to the next hop is gone: it is unavailable until it reconnects.
    #[error("the connection is gone: {0}")]
    Lost(String),
    /// No stream (or no HTTP exchange on it) within [`OPEN_TIMEOUT`], or the header failed.
    #[error("{0}")]
    Open(String),
    /// The exchange failed before the response head arrived.
    #[error("no response: {0}")]
    Failed(hyper::Error),
}

/// The bounds every forwarded body meets.
pub trait FwdBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + 'static
{
}

impl<B> FwdBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// Starts an HTTP/1.1 client connection over an open stream; its driver task (upgrades
/// allowed) ends when the stream or its connection closes, or the sender is dropped.
pub async fn handshake<B: FwdBody>(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<SendRequest<B>, hyper::Error> {
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded HTTP exchange ended with an error");
        }
    });
    Ok(sender)
}

/// A new stream with `header` and an HTTP/1.1 exchange on it, within [`OPEN_TIMEOUT`].
pub async fn open<B: FwdBody>(
    conn: &quinn::Connection,
    header: &StreamHeader,
) -> Result<SendRequest<B>, ForwardError> {
    let opening = async {
        let (send, recv) = xpod_tunnel::stream::open(conn, header)
            .await
            .map_err(|e| match e {
                OpenError::Lost(e) => ForwardError::Lost(e.to_string()),
                OpenError::Failed(why) => ForwardError::Open(why),
            })?;
        handshake(send, recv)
            .await
            .map_err(|e| ForwardError::Open(format!("HTTP handshake: {e}")))
    };
    tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .map_err(|_| {
            ForwardError::Open(format!(
                "no stream could be opened within {} s",
                OPEN_TIMEOUT.as_secs()
            ))
        })?
}

/// Sends `req` on an idle stream of `pool` for `key`, else on a new stream of `conn` that
/// starts with `header`, watching the connection meanwhile (see the module docs). A pooled stream that closes as the request goes out (the far side
/// ended an idle keep-alive connection) is replaced by a new one when hyper hands the request
/// back unsent, or with `replay` (see [`super::replay_of`]). Returns the response head and the
/// sender, which the caller checks in ([`StreamPool::checkin_when_ready`]) unless the
/// exchange was upgraded.
pub async fn send<K, B>(
    pool: &Arc<StreamPool<K, B>>,
    key: &K,
    conn: &quinn::Connection,
    header: &StreamHeader,
    req: Request<B>,
    replay: Option<Request<B>>,
) -> Result<Sent<B>, ForwardError>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    B: FwdBody,
{
    tokio::select! {
        sent = send_unwatched(pool, key, conn, header, req, replay) => sent,
        why = unresponsive(conn) => Err(ForwardError::Lost(why)),
    }
}

async fn send_unwatched<K, B>(
    pool: &Arc<StreamPool<K, B>>,
    key: &K,
    conn: &quinn::Connection,
    header: &StreamHeader,
    req: Request<B>,
    replay: Option<Request<B>>,
) -> Result<Sent<B>, ForwardError>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    B: FwdBody,
{
    if let Some(mut sender) = pool.checkout(key) {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok(Sent {
                    resp,
                    sender,
                    reused: true,
                })
            }
            Err(mut e) => {
                let again = e
                    .take_message()
                    .or(replay)
                    .ok_or_else(|| ForwardError::Failed(e.into_error()))?;
                tracing::debug!("a reused stream closed; sending on a new one");
                let mut sender = open(conn, header).await?;
                let resp = sender
                    .send_request(again)
                    .await
                    .map_err(ForwardError::Failed)?;
                return Ok(Sent {
                    resp,
                    sender,
                    reused: false,
                });
            }
        }
    }
    let mut sender = open(conn, header).await?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(ForwardError::Failed)?;
    Ok(Sent {
        resp,
        sender,
        reused: false,
    })
}

/// A forwarded request's response head, and the stream it came on.
pub struct Sent<B> {
    pub resp: Response<Incoming>,
    /// Check it in when the exchange was not upgraded.
    pub sender: SendRequest<B>,
    /// Whether a pooled stream carried it (else a new stream was opened).
    pub reused: bool,
}
