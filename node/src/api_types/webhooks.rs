//! `/api/v1/webhooks` (scope `sandbox`; `sandbox:read` reads).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::webhooks::{Delivery, Webhook};

/// `POST /api/v1/webhooks`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://`; not an address of this machine or a private network unless the
    /// node allows it (`[webhooks] allow_private`).
    #[schema(pattern = "^https?://[A-Za-z0-9.-]{1,200}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]{0,200})?$")]
    pub url: String,
    /// Event types, or `*` for all.
    #[schema(min_items = 1, max_items = 32, value_type = Vec<EventType>)]
    pub events: Vec<String>,
    /// At most 500 printable characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,500}$")]
    pub description: Option<String>,
}

/// An event a webhook may ask for (`crate::webhooks::EVENTS`), or `*`.
#[derive(ToSchema)]
#[schema(pattern = "^(\\*|sandbox\\.(created|started|stopped|deleted|failed)|webhook\\.test)$")]
pub struct EventType(pub String);

/// `GET /api/v1/webhooks`: the owner's webhooks, without secrets.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// A new webhook, with its secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub warning: String,
}

/// `POST /api/v1/webhooks/{id}/test`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSent {
    /// The delivery's id (see `deliveries`).
    pub message_id: String,
}

/// `GET /api/v1/webhooks/{id}/deliveries`: newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}
