//! `/openapi.json`, generated: every operation is a `#[utoipa::path]` on the handler that
//! serves it, and every body a type of [`crate::api_types`] (or a stored type) that the handler
//! reads or answers, so the document changes with the code. Built once per process. Added
//! here: the info, the two ways to present an API key, and a `default` error answer
//! ([`ErrorBody`]) on every operation, since any of them can refuse a malformed request, a
//! missing key or an unavailable store.

use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use http::{Method, Response};

use crate::api_types::ErrorBody;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "xpod",
        description = "A Solid pod server node. Pods are served in path mode (/{podId}/...) or \
            subdomain mode ({podId}.<pods_domain>). Every response carries X-Xpod-Node (the node \
            that served it) and X-Trace-Id; every error is JSON {code, message, details, traceId}."
    ),
    paths(
        super::ops::health,
        super::ops::health_detailed,
        super::ops::readiness,
        super::ops::metrics,
        serve,
        super::cluster::list_pods,
        super::cluster::create_pod,
        super::cluster::get_pod,
        super::migrate::migrate_pod,
        super::cluster::route,
        super::cluster::list_nodes,
        super::cluster::get_node,
        super::node_admin::set_policy,
        super::node_admin::revoke_node,
        super::cluster::list_tokens,
        super::cluster::create_token,
        super::cluster::revoke_token,
        super::cluster::put_txt,
        super::cluster::delete_txt,
        super::cluster::get_txt,
        super::cluster::dns_records,
        super::cluster::list_certs,
        super::cluster::renew_certs,
        super::api::list_keys,
        super::api::create_key,
        super::api::get_key,
        super::api::revoke_key,
        super::api::audit,
        super::sandboxes::list,
        super::sandboxes::create,
        super::sandboxes::get_one,
        super::sandboxes::patch,
        super::sandboxes::delete,
        super::sandboxes::exec,
        super::sandboxes::terminal,
        super::cluster::node_terminal,
        super::sandboxes::logs,
        super::sandboxes::runners,
        super::sandboxes::runner,
        super::webhook_api::list,
        super::webhook_api::create,
        super::webhook_api::get_one,
        super::webhook_api::delete,
        super::webhook_api::test,
        super::webhook_api::deliveries,
        super::tunnel_api::show,
        super::tunnel_api::reload,
        super::tunnel_api::put_service,
        super::tunnel_api::delete_service,
        super::tunnel_api::put_forward,
        super::tunnel_api::delete_forward,
        super::events::stream,
        super::pods::get,
        super::pods::put,
        super::pods::post,
        super::pods::delete,
        super::sparql::serve,
        super::dashboard::serve,
        crate::install::serve_script,
        crate::install::serve,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Additions),
    security(("bearer" = []), ("apiKey" = [])),
)]
struct Doc;

struct Additions;

impl Modify for Additions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        doc.info.license = None;
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, xp_<id>_<secret>"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        let error = ResponseBuilder::new()
            .description("An error: what was refused and why")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("default".into())
                    .or_insert_with(|| error.clone().into());
            }
        }
    }
}

/// This document: OpenAPI 3.1, generated from the handlers and their types.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "ops", security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub fn serve(method: &Method) -> Result<Response<Body>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body::full(json()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The document as JSON, built on first use.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| Doc::openapi().to_pretty_json().unwrap_or_default())
}

/// The document, for tests and tools.
pub fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(super::json()).expect("the document is JSON")
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
        out
    }

    /// The API's routes and the document's paths are made of the same words: a route added to
    /// the handlers without its `#[utoipa::path]` (or the other way round) fails here.
    #[test]
    fn the_document_names_every_api_route() {
        let doc = doc();
        let mut words = BTreeSet::new();
        for (path, _, _) in operations(&doc) {
            let Some(rest) = path
                .strip_prefix("/.cluster/")
                .or_else(|| path.strip_prefix("/api/v1/"))
            else {
                continue;
            };
            for seg in rest.split('/').filter(|s| !s.starts_with('{')) {
                words.insert(seg.to_string());
            }
        }
        let known: BTreeSet<String> = super::super::route_label::WORDS
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(words, known, "path words in the document vs the router's");
        let ops = operations(&doc).len();
        assert!(ops >= 56, "{ops} operations");
    }

    #[test]
    fn every_operation_is_named_once_answers_success_and_documents_errors() {
        let doc = doc();
        let mut ids = BTreeSet::new();
        for (path, method, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(ids.insert(id.clone()), "operationId {id} twice");
            let responses = op["responses"].as_object().expect("responses");
            // Success is a 2xx, or the 101 of a WebSocket.
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s == "101"),
                "{method} {path}: no success answer"
            );
            assert!(
                responses.contains_key("default"),
                "{method} {path}: no default error"
            );
            assert!(
                op.get("tags").is_some(),
                "{method} {path}: not in a group (tag)"
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "{} references", found.len());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a schema reference"));
            assert!(schemas.contains_key(name), "{r} resolves to nothing");
        }
    }

    /// The handlers refuse unknown fields (`deny_unknown_fields`); the document says so, so a
    /// client that misspells a field learns it from the document too.
    #[test]
    fn request_schemas_refuse_what_the_handlers_refuse() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "CreatePod",
            "CreateKey",
            "CreateToken",
            "CreateSandbox",
            "PatchSandbox",
            "CreateWebhook",
            "SetPolicy",
            "TxtRecord",
            "PutService",
            "PutForward",
            "MigratePod",
            "ExecBody",
        ] {
            assert_eq!(
                schemas[name]["additionalProperties"],
                Value::Bool(false),
                "{name}: the handler refuses unknown fields, so must the document"
            );
        }
    }
}
