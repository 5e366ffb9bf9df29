//! The runner API: what a node that runs sandboxes answers, for the node that took the
//! client's request (itself, or another node over a `Runner` stream — see [`super::client`]).
//! Never reachable from a client: only requests carrying a [`RunnerHop`] (set by the mesh or
//! tunnel stream server for streams a verified center opened) or local calls get here. The
//! node that took the client's request authenticated and authorized it already.
//!
//! Routes (`{id}` a sandbox id):
//! - `POST /runner/{id}/start` — [`StartRequest`] → 200 `{}`, or 409 `no_capacity`, 400, 500.
//! - `POST /runner/{id}/exec` — [`ExecBody`] → 200, `application/x-ndjson`: numbered events
//!   (`start`, `stdout`/`stderr` with base64 `data`, `end` or `error`), streamed as they happen.
//! - `GET /runner/{id}/logs?cursor=N&limit=M` → the events after `N`.
//! - `POST /runner/{id}/stop?remove=1` → stops it (and deletes its files).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::proto::ExecRequest;
use super::runner::{RunnerError, StartRequest};
use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// Set on a request that arrived on a `Runner` stream.
#[derive(Clone, Debug)]
pub struct RunnerHop {
    /// The node the request is for.
    pub node: String,
    /// How many nodes forwarded it already.
    pub hops: u8,
}

/// A command to run, as the API takes it.
#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecBody {
    /// The program and its arguments (none with NUL; the program not empty).
    #[schema(min_items = 1)]
    pub cmd: Vec<String>,
    /// Variables added to the sandbox's environment (names without `=` or NUL).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Wall-clock limit in seconds (the process group is killed after it).
    #[serde(default, deserialize_with = "crate::api_types::int::opt")]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout: Option<u64>,
    /// Text for the command's stdin.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Bytes for the command's stdin, base64 (instead of `stdin`).
    #[serde(default)]
    pub stdin_base64: Option<String>,
}

impl ExecBody {
    /// Checks the shape; the message names the problem.
    pub fn check(&self) -> Result<(), String> {
        if self.cmd.is_empty() || self.cmd[0].is_empty() {
            return Err(
                "cmd: expected a program and its arguments, e.g. [\"echo\", \"hi\"]".into(),
            );
        }
        if self.cmd.iter().any(|a| a.contains('\0')) {
            return Err("cmd: arguments may not contain NUL".into());
        }
        if self.stdin.is_some() && self.stdin_base64.is_some() {
            return Err("give stdin or stdinBase64, not both".into());
        }
        if let Some(t) = self.timeout {
            if !(1..=86_400).contains(&t) {
                return Err(format!("timeout: expected 1..=86400 seconds, got {t}"));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("env: bad variable name {k:?}"));
            }
        }
        Ok(())
    }

    fn stdin_bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.stdin, &self.stdin_base64) {
            (Some(t), _) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("stdinBase64: {e}")),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// A runner's refusal as the API answers it.
pub fn err(e: RunnerError) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.code,
        e.message,
    )
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn query_u64(query: &str, name: &str) -> Result<Option<u64>, ApiError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("query `{name}`: expected an integer"))
            });
        }
    }
    Ok(None)
}

/// Serves one runner request.
pub async fn serve(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    query: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (id, op) = match segs.as_slice() {
        ["runner", id, op] if super::model::valid_id(id) => (*id, *op),
        _ => return Err(ApiError::not_found(format!("no runner API at {path}"))),
    };
    match (op, method) {
        ("start", &Method::POST) => {
            let req: StartRequest = parse_json(&body)?;
            app.runner.start(&app.config, id, &req).await.map_err(err)?;
            Ok(body::json(StatusCode::OK, &json!({"node": app.node_id})))
        }
        ("exec", &Method::POST) => {
            let req: ExecBody = parse_json(&body)?;
            req.check().map_err(ApiError::bad_request)?;
            let stdin = req.stdin_bytes().map_err(ApiError::bad_request)?;
            let exec = ExecRequest {
                cmd: req.cmd,
                env: req.env,
                cwd: req.cwd,
                timeout_secs: req.timeout,
            };
            let rx = app.runner.exec(id, &exec, &stdin).await.map_err(err)?;
            let lines = futures_util::stream::unfold(rx, |mut rx| async move {
                let entry = rx.recv().await?;
                let mut line = serde_json::to_vec(&entry).unwrap_or_default();
                line.push(b'\n');
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
            });
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/x-ndjson")
                .header(http::header::CACHE_CONTROL, "no-store")
                .body(body::stream(lines))
                .unwrap_or_default())
        }
        ("logs", &Method::GET) => {
            let cursor = query_u64(query, "cursor")?.unwrap_or(0);
            let limit = query_u64(query, "limit")?.unwrap_or(1000).clamp(1, 10_000) as usize;
            let (events, truncated) = app.runner.logs(id, cursor, limit).map_err(err)?;
            let next = events.last().map_or(cursor, |e| e.seq);
            Ok(body::json(
                StatusCode::OK,
                &json!({"events": events, "cursor": next, "truncated": truncated}),
            ))
        }
        ("stop", &Method::POST) => {
            let remove = query_u64(query, "remove")?.unwrap_or(0) == 1;
            let was = app.runner.stop(&app.config, id, remove).await;
            Ok(body::json(StatusCode::OK, &json!({"wasRunning": was})))
        }
        _ => Err(ApiError::method_not_allowed(
            "POST (start, exec, stop), GET (logs)",
        )),
    }
}
