//! Centers an edge learns from the cluster, so an edge configured with one center can reach
//! another when that one dies (issue 18).
//!
//! - A center, when an edge registers and on its heartbeats, tells it the QUIC addresses of
//!   the cluster's live centers ([`tell`]; not again within [`RETELL_AFTER`] if the list is the
//!   same, so an edge that reconnects or beats often costs nothing): `POST /node/centers` `{"centers": ["host:port", …]}` on a `Runner`
//!   stream of the edge's tunnel (only a center can open one: mutual TLS with a center
//!   certificate; an older edge answers 404 and nothing changes).
//! - The edge keeps them in `<data_dir>/centers.learned` ([`serve`]: at most [`MAX_LEARNED`]
//!   valid `HOST:PORT` entries, written whole through a temporary file), besides the centers it
//!   was configured or joined with.
//! - When none of its centers has held a tunnel for [`FALLBACK_AFTER`], the edge dials its
//!   centers and the learned ones together (`crate::edges::edge`), at most [`MAX_DIALED`].

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use xpod_storage::meta::{self, NodeStatus};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// The file of learned centers, one `HOST:PORT` per line.
pub const LEARNED_FILE: &str = "centers.learned";
/// The most centers an edge keeps from what a center told it.
pub const MAX_LEARNED: usize = 16;
/// How long an edge goes without any tunnel before it dials the learned centers too.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(3);
/// The most centers an edge dials at once.
pub const MAX_DIALED: usize = 4;
/// An edge told a list is not told the same list again within this (it reconnects, often).
const RETELL_AFTER: Duration = Duration::from_secs(600);
/// Upper bound for telling an edge.
const TELL_TIMEOUT: Duration = Duration::from_secs(10);
/// A center whose heartbeat is older than this is not told to edges.
const FRESH: i64 = 60_000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Centers {
    centers: Vec<String>,
}

/// `https://host:port/` or `host:port` → `host:port`.
pub fn host_port(center: &str) -> anyhow::Result<String> {
    let s = center.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("quic://"))
        .unwrap_or(s);
    let s = s.trim_end_matches('/');
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(s.to_string()),
        _ => anyhow::bail!("center `{center}`: expected HOST:PORT of the center's QUIC endpoint (e.g. center1.example.com:8443)"),
    }
}

/// The path of the runner-stream API that takes the list.
pub const PATH: &str = "/node/centers";

/// The QUIC addresses of the cluster's live centers (sorted), from the mesh's view of the
/// nodes (refreshed every 2 s): telling an edge costs no listing of every node (10,000 edges
/// registering at once made that quadratic).
fn live_centers(app: &App) -> Vec<String> {
    let now = meta::now_millis();
    let mut out: Vec<String> = app
        .mesh
        .known_centers()
        .iter()
        .filter(|n| n.status == NodeStatus::Online && now - n.last_heartbeat < FRESH)
        .filter_map(|n| n.quic_address.clone())
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_LEARNED);
    out
}

/// A center tells edge `edge` (whose tunnel it holds) the cluster's live centers, unless it
/// told it the same list within [`RETELL_AFTER`]. Cheap when there is nothing to tell (a
/// hash of a short list): called on the edge's registration and on each of its heartbeats,
/// so a center that joins later reaches every edge within a heartbeat.
pub fn tell(app: &std::sync::Arc<App>, edge: &str) {
    let centers = live_centers(app);
    if centers.is_empty() {
        return;
    }
    let body = serde_json::to_vec(&Centers { centers }).unwrap_or_default();
    let digest = {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    };
    if !app.edges.first_telling(edge, digest, RETELL_AFTER) {
        return;
    }
    let (app, edge) = (app.clone(), edge.to_string());
    tokio::spawn(async move {
        let call =
            crate::sandbox::client::call(&app, &edge, 0, Method::POST, PATH, Bytes::from(body));
        match tokio::time::timeout(TELL_TIMEOUT, call).await {
            Ok(Ok(r)) if r.status().is_success() => {
                tracing::debug!(edge = %edge, "told the edge the cluster's centers")
            }
            Ok(Ok(r)) => {
                tracing::info!(edge = %edge, status = %r.status(), "the edge did not take the list of centers (an older version?)")
            }
            Ok(Err(e)) => {
                app.edges.untold(&edge);
                tracing::debug!(edge = %edge, error = %e.message, "could not tell the edge the centers");
            }
            Err(_) => {
                app.edges.untold(&edge);
                tracing::debug!(edge = %edge, "telling the edge the centers timed out");
            }
        }
    });
}

/// An edge takes the list from a center (the caller checked it came on a `Runner` stream).
pub fn serve(app: &App, method: &Method, payload: &[u8]) -> Result<Response<Body>, ApiError> {
    if app.config.role != xpod_config::Role::Edge {
        return Err(ApiError::not_found("only edges learn centers"));
    }
    if method != Method::POST {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let list: Centers = serde_json::from_slice(payload)
        .map_err(|e| ApiError::bad_request(format!("the list of centers: {e}")))?;
    if list.centers.len() > MAX_LEARNED {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_LEARNED} centers, got {}",
            list.centers.len()
        )));
    }
    let mut lines = String::new();
    for c in &list.centers {
        let hp = host_port(c).map_err(|e| ApiError::bad_request(e.to_string()))?;
        lines.push_str(&hp);
        lines.push('\n');
    }
    let path = app.config.data_dir.join(LEARNED_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| ApiError::internal(format!("saving the learned centers: {e}")))?;
    tracing::info!(centers = ?list.centers, "learned the cluster's centers");
    Ok(body::json(StatusCode::OK, &serde_json::json!({})))
}

/// The centers this edge learned (empty if none).
pub fn learned(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join(LEARNED_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(MAX_LEARNED)
        .map(str::to_string)
        .collect()
}

/// The centers to dial when none of `configured` has held a tunnel for a while: `configured`
/// first, then the learned ones, without duplicates, at most [`MAX_DIALED`].
pub fn fallback(configured: &[String], learned: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in configured.iter().chain(learned) {
        if !out.contains(c) && out.len() < MAX_DIALED {
            out.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_keeps_the_configured_first_and_bounds_the_rest() {
        let conf = vec!["a:1".to_string()];
        let learned: Vec<String> = ["a:1", "b:1", "c:1", "d:1", "e:1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(fallback(&conf, &learned), ["a:1", "b:1", "c:1", "d:1"]);
        assert_eq!(fallback(&conf, &[]), ["a:1"]);
    }
}
