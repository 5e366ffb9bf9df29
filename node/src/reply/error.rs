//! The one error type of the HTTP layer: every error answers JSON `{code, message, details,
//! traceId}` with the right status. Handlers return `Result<Response, ApiError>`.

use http::StatusCode;
use serde_json::{json, Value};
use xpod_storage::blobs::BlobError;
use xpod_storage::meta::MetaError;

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Extra headers (e.g. `WWW-Authenticate`, `Allow`, `Content-Range`).
    pub headers: Vec<(http::header::HeaderName, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            headers: Vec::new(),
        }
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
    pub fn with_header(mut self, name: http::header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
            .with_header(http::header::WWW_AUTHENTICATE, "Bearer realm=\"xpod\"")
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", msg)
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", msg)
    }
    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "a precondition (If-Match / If-None-Match) did not hold; nothing was changed",
        )
    }
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method not allowed here; allowed: {allow}"),
        )
        .with_header(http::header::ALLOW, allow)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
    }

    /// The JSON body for a request's trace id.
    pub fn body(&self, trace_id: &str) -> Value {
        json!({"code": self.code, "message": self.message, "details": self.details, "traceId": trace_id})
    }
}

/// 503 `edge_offline`: pod `pod_id` lives on edge `edge`, which no center reaches now; names
/// when it was last seen (`last_seen`: ms since the Unix epoch, 0 if never).
pub fn edge_offline(pod_id: &str, edge: &str, last_seen: i64) -> ApiError {
    let ago = (xpod_storage::meta::now_millis() - last_seen).max(0) / 1000;
    let when = if last_seen > 0 {
        format!("last seen {ago} s ago")
    } else {
        "never seen".to_string()
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "edge_offline",
        format!("pod {pod_id} lives on edge {edge}, which is offline ({when}); its data is there, so it answers again when the edge reconnects"),
    )
    .with_details(json!({"podId": pod_id, "edge": edge, "lastSeenMs": last_seen, "lastSeenSecondsAgo": ago}))
    .with_header(http::header::RETRY_AFTER, "5")
}

impl From<xpod_routing::decide::RouteError> for ApiError {
    fn from(e: xpod_routing::decide::RouteError) -> Self {
        use xpod_routing::decide::RouteError;
        match e {
            RouteError::Unavailable(msg) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "owner_unavailable", msg)
                    .with_header(http::header::RETRY_AFTER, "1")
            }
            RouteError::EdgeOffline {
                pod_id,
                edge,
                last_seen,
            } => edge_offline(&pod_id, &edge, last_seen),
            RouteError::Loop { pod_id, hops } => {
                tracing::warn!(pod = %pod_id, hops, "forwarding loop stopped");
                let msg = RouteError::Loop {
                    pod_id: pod_id.clone(),
                    hops,
                }
                .to_string();
                ApiError::new(StatusCode::LOOP_DETECTED, "loop_detected", msg)
                    .with_details(json!({"podId": pod_id, "hops": hops}))
            }
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            MetaError::Conflict(msg) => ApiError::conflict(msg),
            MetaError::PreconditionFailed => ApiError::precondition_failed(),
            MetaError::Fenced { pod_id, owner, epoch } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "wrong_owner",
                format!("pod {pod_id} moved to node {owner} (epoch {epoch}) while this write ran; nothing was written, retry"),
            )
            .with_details(json!({"podId": pod_id, "owner": owner, "epoch": epoch, "retryable": true}))
            .with_header(http::header::RETRY_AFTER, "1"),
            MetaError::Invalid(msg) => ApiError::bad_request(msg),
            MetaError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "metadata store unavailable");
                ApiError::unavailable("metadata store unavailable; retry later")
                    .with_header(http::header::RETRY_AFTER, "2")
            }
            MetaError::Backend(msg) => {
                tracing::error!(error = %msg, "metadata store error");
                ApiError::internal("metadata store error")
            }
        }
    }
}

impl From<xpod_storage::regions::RegionError> for ApiError {
    fn from(e: xpod_storage::regions::RegionError) -> Self {
        use xpod_storage::regions::RegionError;
        match e {
            RegionError::NotFound(key) => {
                tracing::error!(%key, "a live resource's blob is in no region's store");
                ApiError::internal("the resource's bytes are missing from every region")
            }
            RegionError::Unavailable { regions, why, .. } => {
                tracing::warn!(regions = ?regions, %why, "a read found no available region");
                if let Some(edge) = regions.iter().find_map(|r| r.strip_prefix("edge:")) {
                    // A pod that moved from an edge whose bytes are not all copied yet.
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "edge_offline",
                        format!(
                            "the resource's bytes are still only on edge {edge}, which the pod moved from, and it cannot be reached now; they are copied when it is back; retry later"
                        ),
                    )
                    .with_details(serde_json::json!({"edge": edge, "regions": regions}))
                    .with_header(http::header::RETRY_AFTER, "5");
                }
                if regions.iter().any(|r| r == crate::regions::CLUSTER) {
                    // On an edge: a pod moved onto it whose bytes are not all here yet.
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "cluster_unreachable",
                        format!(
                            "the resource's bytes are not on this edge yet and the cluster cannot give them now ({why}); retry later"
                        ),
                    )
                    .with_details(serde_json::json!({"regions": regions}))
                    .with_header(http::header::RETRY_AFTER, "5");
                }
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "region_unavailable",
                    format!(
                        "the resource's bytes are only in region(s) {} and that storage is unavailable; retry later",
                        regions.join(", ")
                    ),
                )
                .with_details(serde_json::json!({"regions": regions}))
                .with_header(http::header::RETRY_AFTER, "5")
            }
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body larger than the limit of {limit} bytes"),
            ),
            BlobError::Body(msg) => ApiError::bad_request(format!("request body: {msg}")),
            e @ BlobError::BodyIdle(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                e.to_string(),
            ),
            e @ BlobError::Busy => {
                ApiError::unavailable(e.to_string()).with_header(http::header::RETRY_AFTER, "5")
            }
            other => {
                tracing::error!(error = %other, "object store error");
                ApiError::unavailable("object store error; retry later")
            }
        }
    }
}

/// The HTTP response for `e`: its JSON body (with `trace_id`) and its extra headers.
pub fn error_response(e: &ApiError, trace_id: &str) -> http::Response<crate::reply::body::Body> {
    let mut resp = crate::reply::body::json(e.status, &e.body(trace_id));
    for (name, value) in &e.headers {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            resp.headers_mut().append(name.clone(), v);
        }
    }
    resp
}
