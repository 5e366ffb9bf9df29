//! The join exchange on ALPN `xpod-join/1`: how an edge with only a join token gets its node
//! certificate (ARCHITECTURE §3).
//!
//! The edge connects with [`bootstrap_client_config`] (the center is trusted only if its chain
//! holds the CA whose fingerprint the token carries), makes its key pair and CSR locally (the
//! private key never leaves it), opens one bidirectional stream and sends one message; the
//! center answers one message and the connection ends. A message is a `u32` big-endian length
//! (at most [`MAX_JOIN_MESSAGE`]) followed by that many bytes of JSON:
//!
//! ```text
//! edge → center  {"token": "xpt_…", "nodeId": "edge-1", "csr": "-----BEGIN CERTIFICATE REQUEST…"}
//! center → edge  {"ok": true, "nodeId": "edge-1", "cert": "<PEM>", "ca": "<PEM>"}
//!             or {"ok": false, "error": "join token has expired"}
//! ```
//!
//! The center checks, in order: the message shape, the token's syntax and that it names this
//! cluster's CA, the node id's syntax, the CSR (signed with [`ClusterCa::sign_csr`] as that node
//! id, role edge — which refuses a CSR asking for another id), and last the node's
//! [`JoinAuthority::authorize`] (token lookup, hash, expiry, single use, id uniqueness). The CSR
//! is checked *before* the authority so that a malformed CSR never burns a single-use token; the
//! certificate is released only if the authority agrees. Every refusal is logged.
//!
//! Every step on both sides is bounded ([`JOIN_STEP_TIMEOUT`], 10 s): nothing hangs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{close_code, quinn_client_config, unspecified_for, ALPN_JOIN};
use crate::identity::{
    bootstrap_client_config, validate_node_id, ClusterCa, IdentityError, JoinToken, NodeIdentity,
    NodeRole,
};

/// Largest join message accepted or sent (64 KiB; a CSR is well under 1 KiB).
pub const MAX_JOIN_MESSAGE: usize = 64 * 1024;
/// Bound on each step of a join (connect, send, receive), on both sides.
pub const JOIN_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the center waits for the edge to close after the answer (so the answer is
/// delivered before the connection goes away).
const LINGER: Duration = Duration::from_secs(3);
/// Validity of certificates issued to joining edges unless the authority says otherwise.
pub const DEFAULT_EDGE_CERT_DAYS: u32 = 365;

/// A boxed, sendable future (what [`JoinAuthority::authorize`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The node's side of joining: decides whether a token admits a node id, and holds the CA
/// that signs the certificate. Implemented by the node (token store lookup, secret hash check,
/// expiry, single use, node-id uniqueness); the endpoint does the transport and the signing.
pub trait JoinAuthority: Send + Sync + 'static {
    /// Whether `token` may join as `node_id`. `Err(reason)` refuses; the reason is sent to the
    /// edge as-is, so it must not reveal secrets. Called at most once per join attempt, after
    /// the request and its CSR were checked; when it returns `Ok` the certificate is sent, so
    /// this is where a single-use token is marked used.
    fn authorize<'a>(
        &'a self,
        token: &'a JoinToken,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// The cluster CA that signs joining edges' CSRs (must be the center's own CA).
    fn ca(&self) -> &ClusterCa;

    /// Validity of the certificates issued, in days.
    fn cert_validity_days(&self) -> u32 {
        DEFAULT_EDGE_CERT_DAYS
    }
}

/// Why a join failed, in words that name the problem.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The node id asked for is not a valid node id.
    #[error("invalid node id: {0}")]
    InvalidNodeId(IdentityError),
    /// The join token's CA fingerprint cannot be used.
    #[error("invalid join token: {0}")]
    InvalidToken(IdentityError),
    /// The center did not answer (nothing listening, network down, or too slow).
    #[error("center {center} unreachable: {detail}")]
    Unreachable {
        /// The address dialed.
        center: SocketAddr,
        /// What happened.
        detail: String,
    },
    /// The center's certificate chain does not contain the CA named by the token: this is not
    /// the cluster the token is for (or someone is in the middle).
    #[error("center {center} is not trusted: its CA does not match the join token's fingerprint")]
    FingerprintMismatch {
        /// The address dialed.
        center: SocketAddr,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake with {center} failed: {detail}")]
    Handshake {
        /// The address dialed.
        center: SocketAddr,
        /// The TLS/QUIC error.
        detail: String,
    },
    /// The center refused the join (bad or used token, bad CSR, busy, joins disabled).
    #[error("join refused by the center: {0}")]
    Refused(String),
    /// A step did not complete in time.
    #[error("join timed out while {0}")]
    Timeout(&'static str),
    /// The center's answer broke the join protocol or carried an unusable identity.
    #[error("join protocol error: {0}")]
    Protocol(String),
    /// The connection failed mid-exchange.
    #[error("connection to the center failed: {0}")]
    Connection(String),
    /// A local failure (socket, key generation, TLS configuration).
    #[error("join failed locally: {0}")]
    Local(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinRequest {
    token: String,
    node_id: String,
    csr: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl JoinResponse {
    fn refused(error: impl Into<String>) -> Self {
        JoinResponse {
            ok: false,
            node_id: None,
            cert: None,
            ca: None,
            error: Some(error.into()),
        }
    }
}

/// Writes one length-prefixed JSON message.
async fn write_message<T: Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<(), String> {
    let body = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
    if body.len() > MAX_JOIN_MESSAGE {
        return Err(format!(
            "message of {} bytes exceeds {MAX_JOIN_MESSAGE}",
            body.len()
        ));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    send.write_all(&buf).await.map_err(|e| e.to_string())
}

/// Reads one length-prefixed message (≤ [`MAX_JOIN_MESSAGE`]).
async fn read_message(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_JOIN_MESSAGE {
        return Err(format!(
            "message of {len} bytes exceeds the limit of {MAX_JOIN_MESSAGE}"
        ));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

/// Serves one join connection on the center (called by the endpoint for `xpod-join/1`).
pub(crate) async fn serve_join(conn: quinn::Connection, authority: &dyn JoinAuthority) {
    let remote = conn.remote_address();
    let step = JOIN_STEP_TIMEOUT;
    let (mut send, mut recv) = match tokio::time::timeout(step, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            warn!(%remote, error = %e, "join: connection ended before the request");
            return;
        }
        Err(_) => {
            warn!(%remote, "join refused: no request stream within 10 s");
            conn.close(close_code::PROTOCOL, b"no join request within 10 s");
            return;
        }
    };
    let body = match tokio::time::timeout(step, read_message(&mut recv)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            warn!(%remote, error = %e, "join refused: unreadable request");
            conn.close(close_code::PROTOCOL, b"unreadable join request");
            return;
        }
        Err(_) => {
            warn!(%remote, "join refused: request not received within 10 s");
            conn.close(
                close_code::PROTOCOL,
                b"join request not received within 10 s",
            );
            return;
        }
    };
    let response = match decide(&body, authority).await {
        Ok((node_id, cert)) => {
            info!(%remote, %node_id, "edge joined; certificate issued");
            JoinResponse {
                ok: true,
                node_id: Some(node_id),
                cert: Some(cert),
                ca: Some(authority.ca().cert_pem().to_string()),
                error: None,
            }
        }
        Err(reason) => {
            warn!(%remote, %reason, "join refused");
            JoinResponse::refused(reason)
        }
    };
    let code = if response.ok {
        close_code::DONE
    } else {
        close_code::JOIN_REFUSED
    };
    match tokio::time::timeout(step, write_message(&mut send, &response)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
            // Let the edge read the answer and close first.
            let _ = tokio::time::timeout(LINGER, conn.closed()).await;
        }
        Ok(Err(e)) => warn!(%remote, error = %e, "join: answer not delivered"),
        Err(_) => warn!(%remote, "join: answer not delivered within 10 s"),
    }
    conn.close(code, b"join finished");
}

/// Checks a join request; `Ok((node_id, cert_pem))` or the reason for refusing.
async fn decide(body: &[u8], authority: &dyn JoinAuthority) -> Result<(String, String), String> {
    let req: JoinRequest =
        serde_json::from_slice(body).map_err(|e| format!("malformed join request: {e}"))?;
    let token = JoinToken::parse(&req.token).map_err(|e| e.to_string())?;
    let ca = authority.ca();
    if token.ca_fingerprint != ca.fingerprint() {
        return Err("join token is for another cluster CA".into());
    }
    validate_node_id(&req.node_id).map_err(|e| e.to_string())?;
    let cert = ca
        .sign_csr(
            &req.csr,
            &req.node_id,
            NodeRole::Edge,
            authority.cert_validity_days(),
        )
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(JOIN_STEP_TIMEOUT, authority.authorize(&token, &req.node_id)).await {
        Ok(Ok(())) => Ok((req.node_id, cert)),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("the center could not check the token in time; retry later".into()),
    }
}

/// Joins the cluster through the center at `center`: returns the edge's new identity (its key,
/// the certificate the center issued for `node_id` with role edge, and the CA). Store it; from
/// then on the edge uses mutual TLS. Each step is bounded by [`JOIN_STEP_TIMEOUT`].
///
/// `server_name` is the TLS server name sent (SNI); the center is authenticated by the token's
/// CA fingerprint, not by name.
pub async fn join(
    center: SocketAddr,
    server_name: &str,
    token: &JoinToken,
    node_id: &str,
) -> Result<NodeIdentity, JoinError> {
    join_with_timeout(center, server_name, token, node_id, JOIN_STEP_TIMEOUT).await
}

/// [`join`] with another bound on each step.
pub async fn join_with_timeout(
    center: SocketAddr,
    server_name: &str,
    token: &JoinToken,
    node_id: &str,
    step: Duration,
) -> Result<NodeIdentity, JoinError> {
    join_over(center, server_name, token, node_id, step, false).await
}

/// How long an `Auto` join gives QUIC before it tries TCP.
pub const AUTO_QUIC_STEP: Duration = Duration::from_secs(3);

/// [`join`] by `transport`: over UDP, over TCP ([`super::tcp`]), or `Auto` — QUIC for
/// [`AUTO_QUIC_STEP`], then TCP when the center could not be reached.
pub async fn join_with_transport(
    center: SocketAddr,
    server_name: &str,
    token: &JoinToken,
    node_id: &str,
    transport: super::tcp::Transport,
) -> Result<NodeIdentity, JoinError> {
    use super::tcp::Transport;
    match transport {
        Transport::Quic => join(center, server_name, token, node_id).await,
        Transport::Tcp => {
            join_over(center, server_name, token, node_id, JOIN_STEP_TIMEOUT, true).await
        }
        Transport::Auto => {
            match join_over(center, server_name, token, node_id, AUTO_QUIC_STEP, false).await {
                Err(JoinError::Unreachable { detail, .. }) => {
                    tracing::info!(%center, %detail, "join: QUIC does not get through; trying TCP");
                    join_over(center, server_name, token, node_id, JOIN_STEP_TIMEOUT, true).await
                }
                other => other,
            }
        }
    }
}

async fn join_over(
    center: SocketAddr,
    server_name: &str,
    token: &JoinToken,
    node_id: &str,
    step: Duration,
    over_tcp: bool,
) -> Result<NodeIdentity, JoinError> {
    validate_node_id(node_id).map_err(JoinError::InvalidNodeId)?;
    let tls = bootstrap_client_config(&token.ca_fingerprint, &[ALPN_JOIN])
        .map_err(JoinError::InvalidToken)?;
    let (csr_pem, key_pem) =
        NodeIdentity::generate_csr(node_id).map_err(|e| JoinError::Local(e.to_string()))?;
    let client = quinn_client_config(tls).map_err(JoinError::Local)?;
    let (endpoint, target) = if over_tcp {
        super::tcp::connect(center)
            .await
            .map_err(|e| JoinError::Unreachable {
                center,
                detail: format!("over TCP: {e}"),
            })?
    } else {
        let endpoint = quinn::Endpoint::client(unspecified_for(&center))
            .map_err(|e| JoinError::Local(format!("cannot open a UDP socket: {e}")))?;
        (endpoint, center)
    };
    let result = exchange(
        &endpoint,
        client,
        target,
        server_name,
        token,
        node_id,
        &csr_pem,
        step,
    )
    .await;
    // Tell the center we are done (or give up) and let the close go out.
    endpoint.close(close_code::DONE, b"join finished");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let (cert, ca) = result?;

    let identity = NodeIdentity::from_pem(&cert, &key_pem, &ca)
        .map_err(|e| JoinError::Protocol(format!("the issued certificate is unusable: {e}")))?;
    let fingerprint = identity
        .ca_fingerprint()
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    if fingerprint != token.ca_fingerprint {
        return Err(JoinError::Protocol(
            "the center sent a CA that does not match the join token".into(),
        ));
    }
    let me = identity
        .identity()
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    if me.node_id != node_id || me.role != NodeRole::Edge {
        return Err(JoinError::Protocol(format!(
            "the certificate is for {} ({}), not edge {node_id}",
            me.node_id, me.role
        )));
    }
    Ok(identity)
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    center: SocketAddr,
    server_name: &str,
    token: &JoinToken,
    node_id: &str,
    csr_pem: &str,
    step: Duration,
) -> Result<(String, String), JoinError> {
    let connecting = endpoint
        .connect_with(client, center, server_name)
        .map_err(|e| JoinError::Local(format!("cannot connect to {center}: {e}")))?;
    let conn = match tokio::time::timeout(step, connecting).await {
        Err(_) => {
            return Err(JoinError::Unreachable {
                center,
                detail: format!("no answer within {}s", step.as_secs_f64()),
            })
        }
        Ok(Err(e)) => return Err(classify_connect_error(center, e)),
        Ok(Ok(conn)) => conn,
    };
    let io = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| conn_error(&conn, e.to_string()))?;
        let req = JoinRequest {
            token: token.to_text(),
            node_id: node_id.to_string(),
            csr: csr_pem.to_string(),
        };
        tokio::time::timeout(step, write_message(&mut send, &req))
            .await
            .map_err(|_| JoinError::Timeout("sending the join request"))?
            .map_err(|e| conn_error(&conn, e))?;
        let _ = send.finish();
        let body = tokio::time::timeout(step, read_message(&mut recv))
            .await
            .map_err(|_| JoinError::Timeout("waiting for the center's answer"))?
            .map_err(|e| conn_error(&conn, e))?;
        Ok::<_, JoinError>(body)
    };
    let body = io.await?;
    conn.close(close_code::DONE, b"joined");
    let resp: JoinResponse = serde_json::from_slice(&body)
        .map_err(|e| JoinError::Protocol(format!("malformed answer: {e}")))?;
    if !resp.ok {
        return Err(JoinError::Refused(
            resp.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    match (resp.node_id, resp.cert, resp.ca) {
        (Some(id), Some(cert), Some(ca)) if id == node_id => Ok((cert, ca)),
        (Some(id), Some(_), Some(_)) => Err(JoinError::Protocol(format!(
            "asked to join as {node_id:?}, the center answered for {id:?}"
        ))),
        _ => Err(JoinError::Protocol(
            "answer lacks nodeId, cert or ca".into(),
        )),
    }
}

/// A stream error, explained by the connection's close reason when there is one (e.g. the
/// center refused with an application close).
fn conn_error(conn: &quinn::Connection, detail: String) -> JoinError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            JoinError::Refused(String::from_utf8_lossy(&c.reason).into_owned())
        }
        Some(e) => JoinError::Connection(e.to_string()),
        None => JoinError::Connection(detail),
    }
}

fn classify_connect_error(center: SocketAddr, e: quinn::ConnectionError) -> JoinError {
    use quinn::ConnectionError as E;
    let text = e.to_string();
    // rustls reports the verifier's error inside `CertificateError::Other`, shown with `Debug`.
    let mismatch = text.contains(&IdentityError::FingerprintMismatch.to_string())
        || text.contains(&format!("{:?}", IdentityError::FingerprintMismatch));
    match e {
        E::TransportError(_) | E::ConnectionClosed(_) if mismatch => {
            JoinError::FingerprintMismatch { center }
        }
        E::TransportError(_) | E::ConnectionClosed(_) => JoinError::Handshake {
            center,
            detail: text,
        },
        E::ApplicationClosed(c) => {
            JoinError::Refused(String::from_utf8_lossy(&c.reason).into_owned())
        }
        E::TimedOut | E::Reset | E::LocallyClosed | E::VersionMismatch | E::CidsExhausted => {
            JoinError::Unreachable {
                center,
                detail: text,
            }
        }
    }
}
