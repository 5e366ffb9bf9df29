//! Webhooks for sandbox events, signed per the Standard Webhooks spec
//! (<https://www.standardwebhooks.com>).
//!
//! A webhook (document kind `webhook`, owner = the API key's owner) has a URL, the event types
//! it wants and a secret `whsec_<base64 of 32 random bytes>`. [`emit`] stores one delivery per
//! subscribed webhook (kind `webhook_delivery`, owner = the webhook's id) and wakes the worker
//! ([`deliver`]), which POSTs the payload `{"type", "timestamp", "data"}` with `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{ts}.{body}")>`,
//! retries on anything but 2xx with backoff, and records every attempt (the delivery log).
//!
//! Destinations in any special-purpose range (loopback, private, link-local, CGNAT, NAT64, 6to4,
//! …: [`crate::special_ip`]) are refused at
//! create (literal IPs) and at delivery (every resolved address; the request goes to the checked
//! address) unless `[sandbox] webhooks_allow_private`.

pub mod deliver;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use xpod_storage::meta::{now_millis, DocRecord, Millis};

use crate::app::App;

pub const KIND: &str = "webhook";
pub const DELIVERY_KIND: &str = "webhook_delivery";

/// The event types a webhook may ask for.
pub const EVENTS: &[&str] = &[
    "sandbox.created",
    "sandbox.started",
    "sandbox.stopped",
    "sandbox.deleted",
    "sandbox.failed",
    "webhook.test",
];

/// A webhook as stored.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub owner: String,
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `whsec_…`: only to keys that may write, and always in the creation answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    pub created_at: Millis,
    /// A Solid notification channel (WebhookChannel2023): the topic's pod path and the URL
    /// base its subscriber used (the messages name resources with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solid: Option<SolidTopic>,
}

/// What a Solid WebhookChannel2023 channel listens to.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SolidTopic {
    pub pod: String,
    pub path: String,
    pub base: String,
    pub end_at: Millis,
}

impl Webhook {
    pub fn wants(&self, event: &str) -> bool {
        event == "webhook.test" || self.events.iter().any(|e| e == "*" || e == event)
    }
    /// The API view (the secret only when asked).
    pub fn view(&self, with_secret: bool) -> Webhook {
        let mut v = self.clone();
        if !with_secret {
            v.secret.clear();
        }
        v
    }
}

/// One attempt of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub at: Millis,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A message to one webhook and its attempts.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Millis,
    pub created_at: Millis,
    /// The body's media type (default `application/json`; Solid notifications are JSON-LD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    )
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` keyed
/// with the secret's bytes (base64 after `whsec_`).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| format!("webhook secret is not base64: {e}"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{msg_id}.{timestamp}.").as_bytes());
    ctx.update(body);
    Ok(format!("v1,{}", b64.encode(ctx.sign().as_ref())))
}

/// Whether deliveries to `ip` are refused (unless private destinations are allowed): every
/// special-purpose range ([`crate::special_ip`]).
pub fn forbidden(ip: IpAddr) -> bool {
    crate::special_ip::special(ip).is_some()
}

/// Checks a webhook URL's shape (and a literal IP against [`forbidden`]).
pub fn check_url(url: &str, allow_private: bool) -> Result<http::Uri, String> {
    crate::outbound::check_url(url, allow_private).map_err(|e| {
        if e.contains("not a public address") {
            format!(
                "{e}; deliveries there are refused unless [sandbox] webhooks_allow_private = true"
            )
        } else {
            e
        }
    })
}

/// Wakes the delivery worker.
pub fn wake() -> &'static tokio::sync::Notify {
    static WAKE: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    WAKE.get_or_init(tokio::sync::Notify::new)
}

/// RFC 3339 UTC time of Unix milliseconds.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Stores a delivery of `event` to every webhook of `owner` that wants it (only `only`, when
/// given) and wakes the worker. Never fails its caller; returns the message ids.
pub async fn emit(
    app: &Arc<App>,
    owner: &str,
    event: &str,
    data: serde_json::Value,
    only: Option<&str>,
) -> Vec<String> {
    let hooks = match app.meta.list_docs(KIND, Some(owner)).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, event, "webhooks not listed; event not delivered");
            return Vec::new();
        }
    };
    let now = now_millis();
    let mut ids = Vec::new();
    for h in hooks {
        let Ok(hook) = serde_json::from_value::<Webhook>(h.doc) else {
            continue;
        };
        if only.is_some_and(|id| id != hook.id) || !hook.wants(event) {
            continue;
        }
        let payload = serde_json::json!({"type": event, "timestamp": rfc3339(now), "data": data});
        if let Some(id) = enqueue(app, &hook.id, event, payload, None).await {
            ids.push(id);
        }
    }
    if !ids.is_empty() {
        wake().notify_one();
    }
    ids
}

/// Stores one delivery of `payload` (the body as sent) to webhook `hook_id`; its id, or `None`
/// when it could not be stored (logged). The caller wakes the worker ([`wake`]).
pub async fn enqueue(
    app: &App,
    hook_id: &str,
    event: &str,
    payload: serde_json::Value,
    content_type: Option<&str>,
) -> Option<String> {
    let now = now_millis();
    let d = Delivery {
        id: format!("msg_{}", hex::encode(rand::random::<[u8; 12]>())),
        webhook_id: hook_id.to_string(),
        event_type: event.to_string(),
        payload,
        status: "pending".into(),
        attempts: Vec::new(),
        next_attempt_at: now,
        created_at: now,
        content_type: content_type.map(str::to_string),
    };
    let doc = DocRecord {
        kind: DELIVERY_KIND.into(),
        id: d.id.clone(),
        owner: hook_id.to_string(),
        version: 0,
        updated_at: 0,
        doc: serde_json::to_value(&d).unwrap_or_default(),
    };
    match app.meta.put_doc(&doc, 0, now).await {
        Ok(_) => Some(d.id),
        Err(e) => {
            tracing::warn!(error = %e, webhook = %hook_id, event, "delivery not stored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_spec_example() {
        // From the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_destinations() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::10.0.0.1",
            "198.18.0.1",
        ] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["93.184.216.34", "2606:4700::1111", "100.128.0.1"] {
            assert!(!forbidden(good.parse().unwrap()), "{good}");
        }
        assert!(check_url("http://127.0.0.1:9/x", false).is_err());
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(check_url("http://[::1]/x", false).is_err());
        assert!(check_url("http://localhost/x", false).is_err());
        assert!(check_url("ftp://example.com/x", false).is_err());
        assert!(check_url("https://example.com/hook", false).is_ok());
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
