//! `/-/dashboard`: the dashboard's files (`node/dashboard`, built by Vite into `dist/`, which is
//! committed and embedded here: building the binary needs no npm). Public static files — the
//! data comes from the admin APIs with the key the user signs in with, kept in the browser tab
//! (`sessionStorage`) — served with a strict Content-Security-Policy (this origin only, no
//! inline script or style, no framing).

use http::{HeaderValue, Method, Response, StatusCode};

use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

const INDEX: &[u8] = include_bytes!("../../dashboard/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../dashboard/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../../dashboard/dist/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Serves `file` (`""`: the page itself; `None`: `/-/dashboard` without the slash).
#[utoipa::path(get, path = "/-/dashboard/{file}", operation_id = "dashboard", tag = "ops", security(()),
    params(("file" = String, Path, description = "`` (the page), `app.js` or `app.css`")),
    responses(
        (status = 200, description = "The file, with a strict Content-Security-Policy", content_type = "text/html", body = String),
        (status = 404, description = "No such file", body = crate::api_types::ErrorBody),
    ))]
pub fn serve(method: &Method, file: Option<&str>) -> Result<Response<Body>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    let Some(file) = file else {
        // Relative asset URLs need the trailing slash.
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut().insert(
            http::header::LOCATION,
            HeaderValue::from_static("/-/dashboard/"),
        );
        return Ok(r);
    };
    let (bytes, kind) = match file {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        other => {
            return Err(ApiError::not_found(format!(
                "the dashboard has no file {:?}",
                other.chars().take(64).collect::<String>()
            )))
        }
    };
    Response::builder()
        .header(http::header::CONTENT_TYPE, kind)
        .header(http::header::CACHE_CONTROL, "no-cache")
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body::full(bytes))
        .map_err(|e| ApiError::internal(e.to_string()))
}
