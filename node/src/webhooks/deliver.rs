//! The delivery worker: on a center (or lone node) holding lease `webhooks:deliver`, every
//! second or when [`super::emit`] wakes it, every due pending delivery is attempted (up to
//! [`PARALLEL`] at once; the lease is extended before each send, so passes of two centers
//! never overlap). 2xx → `succeeded`; anything else (status, refusal, timeout) is
//! recorded and retried after [`BACKOFF_SECS`]`[n]`; after the last one → `failed`. Each write
//! is a compare-and-set on the delivery's version, so two centers never record one attempt
//! twice. Finished deliveries are kept [`KEEP_MS`] (the delivery log), then removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use xpod_storage::meta::{now_millis, DocRecord};

use super::{check_url, sign, wake, Attempt, Delivery, Webhook, DELIVERY_KIND, KIND};
use crate::app::App;

/// Waits after attempt 1, 2, …; one attempt more than entries in all.
pub const BACKOFF_SECS: &[i64] = &[1, 2, 5, 10, 30, 60, 300, 1800];
/// Deliveries attempted at once.
pub const PARALLEL: usize = 8;
/// Per attempt: connect, send, response head.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long finished deliveries stay in the log.
pub const KEEP_MS: i64 = 7 * 86_400_000;
const LEASE: &str = "webhooks:deliver";

/// Runs until `shutdown` (centers and lone nodes; an edge has no webhooks).
pub async fn run(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if app.config.role == xpod_config::Role::Edge {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = wake().notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = now_millis();
        match app
            .meta
            .try_lease(LEASE, &app.node_id, now, now + 15_000)
            .await
        {
            Ok(true) => {
                if let Err(e) = pass(&app).await {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "webhook lease"),
        }
    }
}

async fn pass(app: &Arc<App>) -> anyhow::Result<()> {
    let now = now_millis();
    let mut due = Vec::new();
    for doc in app.meta.list_docs(DELIVERY_KIND, None).await? {
        let Ok(d) = serde_json::from_value::<Delivery>(doc.doc.clone()) else {
            continue;
        };
        if d.status == "pending" && d.next_attempt_at <= now {
            due.push((doc, d));
        } else if d.status != "pending" && now - d.created_at > KEEP_MS {
            app.meta
                .delete_doc(DELIVERY_KIND, &doc.id, doc.version)
                .await?;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (doc, d) in due {
        while tasks.len() >= PARALLEL {
            tasks.join_next().await;
        }
        // Extend the lease before each send (a send takes at most TIMEOUT < the lease), so a
        // long pass never overlaps another center's: no message goes out twice at once.
        let now = now_millis();
        if !app
            .meta
            .try_lease(LEASE, &app.node_id, now, now + 15_000)
            .await?
        {
            break;
        }
        let app = app.clone();
        tasks.spawn(async move { attempt(&app, doc, d).await });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn attempt(app: &Arc<App>, doc: DocRecord, mut d: Delivery) {
    let hook = match app.meta.get_doc(KIND, &d.webhook_id).await {
        Ok(Some(h)) => serde_json::from_value::<Webhook>(h.doc).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(error = %e, "webhook lookup");
            return;
        }
    };
    let started = Instant::now();
    let result = match &hook {
        Some(h) => send(app, h, &d).await,
        None => Err("the webhook was deleted".to_string()),
    };
    let at = now_millis();
    let (status_code, error) = match &result {
        Ok(code) => (Some(*code), None),
        Err(e) => (None, Some(e.clone())),
    };
    d.attempts.push(Attempt {
        at,
        status_code,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let n = d.attempts.len();
    if matches!(result, Ok(c) if (200..300).contains(&c)) {
        d.status = "succeeded".into();
    } else if hook.is_none() || n > BACKOFF_SECS.len() {
        d.status = "failed".into();
    } else {
        d.next_attempt_at = at + BACKOFF_SECS[n - 1] * 1000;
    }
    tracing::info!(delivery = %d.id, webhook = %d.webhook_id, event = %d.event_type, attempt = n, result = ?result, status = %d.status, "webhook attempt");
    let mut next = doc.clone();
    next.doc = serde_json::to_value(&d).unwrap_or_default();
    if let Err(e) = app.meta.put_doc(&next, doc.version, at).await {
        tracing::warn!(error = %e, delivery = %d.id, "webhook attempt not recorded");
    }
}

/// One POST; the HTTP status, or why there was none.
async fn send(app: &App, hook: &Webhook, d: &Delivery) -> Result<u16, String> {
    let allow = app.config.sandbox.webhooks_allow_private;
    let uri = check_url(&hook.url, allow)?;
    let body = serde_json::to_vec(&d.payload).map_err(|e| e.to_string())?;
    let ts = now_millis() / 1000;
    let signature = sign(&hook.secret, &d.id, ts, &body)?;
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::post(pq)
        .header(
            header::CONTENT_TYPE,
            d.content_type.as_deref().unwrap_or("application/json"),
        )
        .header(
            header::USER_AGENT,
            concat!("xpod-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    // A little of the body is read (and dropped) so the receiver is not cut off mid-answer.
    let answer = crate::outbound::send(&uri, allow, req, TIMEOUT, 64 * 1024, false).await?;
    Ok(answer.status.as_u16())
}
