//! `/-/dashboard`: the dashboard's files (`node/dashboard`, built by Vite into `dist/`, which is
//! committed and embedded here: building the binary needs no npm). Public static files — the
//! data comes from the admin APIs with the key the user signs in with, kept in the browser tab
//! (`sessionStorage`) — served with a strict Content-Security-Policy (this origin only, no
//! inline script or style, no framing; the terminal page, `terminal.html` with xterm.js, allows
//! inline styles).

use http::{HeaderValue, Method, Response, StatusCode};

use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

const INDEX: &[u8] = include_bytes!("../../dashboard/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../dashboard/dist/app.js");
const STYLE_CSS: &[u8] = include_bytes!("../../dashboard/dist/style.css");
const TERMINAL: &[u8] = include_bytes!("../../dashboard/dist/terminal.html");
const TERMINAL_JS: &[u8] = include_bytes!("../../dashboard/dist/terminal.js");
const TERMINAL_CSS: &[u8] = include_bytes!("../../dashboard/dist/terminal.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The terminal page's: the same, except that xterm.js styles its screen with `<style>`
/// elements it writes (colours, cell sizes), so inline styles are allowed there. Scripts stay
/// this origin's only, and the page shows nothing but the terminal.
const TERMINAL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Serves `file` (`""`: the page itself; `None`: `/-/dashboard` without the slash).
#[utoipa::path(get, path = "/-/dashboard/{file}", operation_id = "dashboard", tag = "ops", security(()),
    params(("file" = String, Path, description = "`` (the page), `app.js`, `style.css`, or the terminal page `terminal.html` (`?sandbox=ID` or `?node=EDGE`) with `terminal.js` and `terminal.css`")),
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
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    let (bytes, kind, csp) = match file {
        "" | "index.html" => (INDEX, HTML, CSP),
        "app.js" => (APP_JS, JS, CSP),
        "style.css" => (STYLE_CSS, CSS, CSP),
        "terminal.html" => (TERMINAL, HTML, TERMINAL_CSP),
        "terminal.js" => (TERMINAL_JS, JS, CSP),
        "terminal.css" => (TERMINAL_CSS, CSS, CSP),
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
        .header("content-security-policy", csp)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body::full(bytes))
        .map_err(|e| ApiError::internal(e.to_string()))
}
