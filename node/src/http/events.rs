//! `GET /api/v1/events` (admin): server-sent events telling the dashboard what changed, so it
//! fetches again only that (never a poll every second from the browser).
//!
//! One loop per node ([`digest_loop`]), running only while a stream is open, takes a digest of
//! each collection the dashboard shows once a second — `nodes`, `pods` (migration progress
//! included), `sandboxes`, `certs`, `audit` — and publishes them (`App::event_digests`), so
//! the store is read once whatever the number of dashboards. Each stream sends `event: changed`
//! with the names whose digest moved (all of them first), and a comment line after 5 s of
//! quiet, which keeps proxies from closing it and is how the node learns that a client went
//! (HTTP/1.1 tells only when a write fails), giving its slot back. At most [`MAX_STREAMS`]
//! streams per node (503 beyond); a stream ends when the client goes or the node drains.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Event streams one node serves at once.
pub const MAX_STREAMS: usize = 16;
/// How often the digests are taken.
const EVERY: Duration = Duration::from_secs(1);
/// A comment this often on a quiet stream: keeps proxies from closing it, and is how the node
/// learns that a client went (HTTP/1.1 tells only when a write fails), giving its slot back.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Holds one of the [`MAX_STREAMS`] slots.
struct Slot(Arc<App>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.event_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

fn digest(v: &impl serde::Serialize) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The digests of the collections now; a collection that cannot be read keeps no digest (it is
/// reported again once it can).
async fn digests(app: &App) -> BTreeMap<&'static str, u64> {
    let mut d = BTreeMap::new();
    if let Ok(n) = app.meta.list_nodes().await {
        d.insert("nodes", digest(&n));
    }
    if let Ok(p) = app.meta.list_pods().await {
        d.insert("pods", digest(&p));
    }
    if let Ok(s) = crate::sandbox::model::list(app.meta.as_ref(), None).await {
        let views: Vec<_> = s.iter().map(|s| s.view()).collect();
        d.insert("sandboxes", digest(&views));
    }
    if let Ok(c) = app.meta.list_certs().await {
        let ids: Vec<_> = c.iter().map(|c| (&c.id, c.not_after)).collect();
        d.insert("certs", digest(&ids));
    }
    if let Ok(a) = app.meta.list_audit(1, None).await {
        d.insert("audit", digest(&a.first().map(|e| e.id)));
    }
    d
}

/// The digests of the collections the dashboard shows (`App::event_digests`).
pub type Digests = BTreeMap<&'static str, u64>;

/// Publishes the digests once a second while a stream is open, until `stop`.
pub async fn digest_loop(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if app.event_streams.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let now = digests(&app).await;
        app.event_digests.send_if_modified(|d| {
            let changed = *d != now;
            *d = now;
            changed
        });
    }
}

/// The event stream (the caller checked the admin key).
#[utoipa::path(get, path = "/api/v1/events", operation_id = "events", tag = "node",
    responses(
        (status = 200, description = "`event: changed` with the collections (nodes, pods, sandboxes, certs, audit) whose content changed, checked once a second; a comment every 5 s", content_type = "text/event-stream", body = String),
        (status = 503, description = "16 streams are open on this node", body = crate::api_types::ErrorBody),
    ))]
pub fn stream(app: &Arc<App>) -> Result<Response<Body>, ApiError> {
    if app.event_streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        app.event_streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(format!(
            "this node already serves {MAX_STREAMS} event streams; try another center or later"
        )));
    }
    let mut rx = app.event_digests.subscribe();
    rx.mark_changed();
    let state = (app.clone(), Slot(app.clone()), rx, Digests::new());
    let events = futures_util::stream::unfold(state, |(app, slot, mut rx, last)| async move {
        loop {
            if app.draining.load(Ordering::Relaxed) {
                return None;
            }
            match tokio::time::timeout(KEEP_ALIVE, rx.changed()).await {
                Err(_) => {
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from_static(b": still here\n\n")),
                        (app, slot, rx, last),
                    ))
                }
                Ok(Err(_)) => return None,
                Ok(Ok(())) => {}
            }
            let now = rx.borrow_and_update().clone();
            let changed: Vec<&str> = now
                .iter()
                .filter(|(k, v)| last.get(*k) != Some(*v))
                .map(|(k, _)| *k)
                .collect();
            if !changed.is_empty() {
                let line = format!(
                    "event: changed\ndata: {}\n\n",
                    serde_json::json!({ "changed": changed })
                );
                return Some((Ok(Bytes::from(line)), (app, slot, rx, now)));
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body::stream(events))
        .map_err(|e| ApiError::internal(e.to_string()))
}
