//! `/{pod}/-/sparql`: the SPARQL 1.1 Protocol's query operation over the pod's RDF documents
//! (`crate::sparql`). `GET ?query=…`, `POST` with `application/sparql-query` or a form
//! (`query=…`); `default-graph-uri` and `named-graph-uri` narrow the dataset. Served by the
//! pod's owner (requests elsewhere are forwarded like any pod request). Anyone may ask; only
//! the documents the caller may read (Web Access Control, as for a GET of each) take part,
//! so an anonymous caller queries the public documents. Refused with a message that names the
//! problem: malformed queries (400), formats the client does not take (406), answers past the
//! limits (422), queries past the deadline or beyond the node's concurrent queries, or over
//! documents that cannot be read now (503).

use std::collections::HashSet;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use oxrdf::NamedNode;
use xpod_storage::meta::PodRecord;

use super::{access, read_small_body, resource, Ctx};
use crate::api_types::ErrorBody;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::solid::wac::Modes;
use crate::sparql::index::RefreshError;
use crate::sparql::query::{self, Limits, QueryError};

/// The endpoint's path in a pod.
pub const PATH: &str = "/-/sparql";
/// The longest query text accepted.
const MAX_QUERY: usize = 256 << 10;

/// The query, and the graphs the protocol names.
struct Request_ {
    text: String,
    default: Vec<NamedNode>,
    named: Vec<NamedNode>,
}

fn form(pairs: &str, out: &mut Request_, query: &mut Option<String>) -> Result<(), ApiError> {
    for pair in pairs.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace('+', " ");
        let v = percent_encoding::percent_decode_str(&v)
            .decode_utf8()
            .map_err(|_| ApiError::bad_request(format!("parameter `{k}`: not UTF-8")))?
            .into_owned();
        let graph = |v: &str| {
            NamedNode::new(v)
                .map_err(|e| ApiError::bad_request(format!("parameter `{k}`: not an IRI: {e}")))
        };
        match k {
            "query" if query.is_some() => {
                return Err(ApiError::bad_request("more than one `query` parameter"))
            }
            "query" => *query = Some(v),
            "default-graph-uri" => out.default.push(graph(&v)?),
            "named-graph-uri" => out.named.push(graph(&v)?),
            // Other parameters (e.g. a client's cache buster) are not the protocol's: ignored.
            _ => {}
        }
    }
    Ok(())
}

async fn read_request(req: Request<Incoming>) -> Result<(Request_, Option<String>), ApiError> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut out = Request_ {
        text: String::new(),
        default: Vec::new(),
        named: Vec::new(),
    };
    let mut text = None;
    form(req.uri().query().unwrap_or(""), &mut out, &mut text)?;
    if req.method() == Method::POST {
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let bytes = read_small_body(req, MAX_QUERY).await?;
        match media.as_str() {
            "application/sparql-query" => {
                if text.is_some() {
                    return Err(ApiError::bad_request(
                        "a query in the body and in the URL: give one",
                    ));
                }
                text = Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::bad_request("the query is not UTF-8")
                })?);
            }
            "application/x-www-form-urlencoded" => {
                let body = std::str::from_utf8(&bytes)
                    .map_err(|_| ApiError::bad_request("the form is not UTF-8"))?;
                form(body, &mut out, &mut text)?;
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Content-Type `{other}`: a query is sent as application/sparql-query or application/x-www-form-urlencoded"
                    ),
                ))
            }
        }
    }
    out.text = text.ok_or_else(|| {
        ApiError::bad_request(
            "no query: give `query` (GET ?query=…, or POST application/sparql-query)",
        )
    })?;
    if out.text.len() > MAX_QUERY {
        return Err(ApiError::bad_request(format!(
            "the query is longer than {MAX_QUERY} bytes"
        )));
    }
    Ok((out, accept))
}

/// Runs a query against a pod's RDF documents (SPARQL 1.1 Protocol, query operation).
#[utoipa::path(get, path = "/{podId}/-/sparql", operation_id = "sparqlQuery", tag = "pods",
    params(
        ("podId" = String, Path),
        ("query" = String, Query, description = "A SPARQL 1.1 query (SELECT, ASK, CONSTRUCT, DESCRIBE)"),
        ("default-graph-uri" = Option<Vec<String>>, Query, description = "The default graph: the union of these documents (default: every readable one)"),
        ("named-graph-uri" = Option<Vec<String>>, Query, description = "The named graphs (default: every readable document)"),
    ),
    responses(
        (status = 200, description = "SELECT/ASK: application/sparql-results+json (or +xml, text/csv, text/tab-separated-values by Accept); CONSTRUCT/DESCRIBE: text/turtle (or application/ld+json, application/n-triples)", content_type = "application/sparql-results+json", body = Object),
        (status = 400, description = "Not a SPARQL 1.1 query", body = ErrorBody),
        (status = 406, description = "The client accepts no format of this kind of query", body = ErrorBody),
        (status = 422, description = "The answer is past the row or byte limit, or the pod past the triples an index holds", body = ErrorBody),
        (status = 503, description = "Past the deadline, or the node runs as many queries as it takes", body = ErrorBody),
    ))]
pub async fn serve(
    ctx: &Ctx,
    pod: &PodRecord,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::method_not_allowed("GET, POST"));
    }
    let app = &ctx.app;
    // The head alone decides access; the body is the query, read first (a malformed one costs
    // no access decision).
    let (parts, body_in) = req.into_parts();
    let head = Request::from_parts(parts.clone(), ());
    let (request, accept) = read_request(Request::from_parts(parts, body_in)).await?;
    let query = query::parse(&request.text, &pod.base_url)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_query", e.to_string()))?;
    let Ok(slot) = app.sparql.slots.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable(format!(
            "this node runs {} SPARQL queries already; retry shortly",
            crate::sparql::MAX_RUNNING
        ))
        .with_header(header::RETRY_AFTER, "1"));
    };
    let (docs, readable) = documents_readable(ctx, pod, &head).await?;
    let index = app.sparql.pod(&pod.pod_id, &pod.base_url);
    index
        .refresh(&docs, |r| async move {
            resource::read_all(ctx, &r)
                .await
                .map_err(|e| format!("reading {}: {}", r.path, e.message))
        })
        .await
        .map_err(|e| match e {
            RefreshError::TooLarge(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "pod_too_large", m)
            }
            RefreshError::Read(m) => ApiError::unavailable(format!(
                "the pod's documents could not all be read for the query: {m}"
            )),
        })?;
    app.sparql.trim(&index);
    let allowed: HashSet<String> = readable.iter().map(|p| index.url_of(p)).collect();
    let limits = Limits::default();
    let cancel = spareval::CancellationToken::new();
    let timer = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limits.timeout).await;
            cancel.cancel();
        })
    };
    // A client that leaves stops its query too (this future is dropped, the guard cancels).
    let _leaving = CancelOnDrop(cancel.clone());
    let extra = (request.default, request.named);
    let started = std::time::Instant::now();
    let ran = tokio::task::spawn_blocking(move || {
        // The slot is the thread's: it is free when the evaluation ends, not when the client
        // leaves.
        let _slot = slot;
        let state = index.read();
        query::run(
            &state,
            &query,
            &allowed,
            &extra,
            accept.as_deref(),
            limits,
            cancel,
        )
    })
    .await;
    timer.abort();
    let answer = ran
        .map_err(|e| ApiError::internal(format!("the query's thread failed: {e}")))?
        .map_err(|e| {
            let (status, code) = match &e {
                QueryError::Syntax(_) => (StatusCode::BAD_REQUEST, "malformed_query"),
                QueryError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
                QueryError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "query_timeout"),
                QueryError::TooLarge(_) => (StatusCode::UNPROCESSABLE_ENTITY, "result_too_large"),
                QueryError::Evaluation(_) => (StatusCode::BAD_REQUEST, "query_failed"),
            };
            ApiError::new(status, code, e.to_string())
        })?;
    tracing::debug!(
        pod = %pod.pod_id,
        results = answer.count,
        ms = started.elapsed().as_millis() as u64,
        "sparql query"
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, answer.content_type)
        .header(header::VARY, "Accept")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(answer.body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The pod's documents and the paths of those the caller may read (as a GET of each would
/// decide).
async fn documents_readable<B>(
    ctx: &Ctx,
    pod: &PodRecord,
    req: &Request<B>,
) -> Result<(Vec<xpod_storage::meta::ResourceRecord>, Vec<String>), ApiError> {
    let docs = ctx.app.meta.list_pod_blobs(&pod.pod_id).await?;
    let mut readable = Vec::new();
    for d in &docs {
        if crate::solid::rdf::Format::of_media_type(d.content_type.as_deref().unwrap_or(""))
            .is_none()
        {
            continue;
        }
        let decision = access::decide(ctx, pod, &d.path, req).await?;
        if decision.user.covers(Modes::READ) {
            readable.push(d.path.clone());
        }
    }
    Ok((docs, readable))
}

/// Cancels a query when dropped (its request ended, answered or not).
struct CancelOnDrop(spareval::CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
