//! The HTTP API's request and response bodies: the types the handlers (`crate::http`) read and
//! answer and the CLI (`crate::cli`) sends and parses, so the two cannot drift apart. Their
//! schemas (utoipa) make the OpenAPI document (`crate::http::openapi`), with the constraints a
//! handler checks written next to the field, so a request the document calls valid is one the
//! handler accepts. Types answered as they are stored (`meta::PodRecord`, `meta::NodeRecord`,
//! `sandbox::model::Sandbox`, `webhooks::Webhook`, `node_policy::Policy`, `reload::Outcome`…)
//! derive their schemas where they are defined.
//!
//! - [`cluster`] — `/.cluster`: pods, nodes, join tokens, DNS, certificates;
//! - [`keys`] — `/api/v1/auth/api-keys` and the audit log;
//! - [`sandboxes`] — `/api/v1/sandboxes` and `/api/v1/runners`;
//! - [`webhooks`] — `/api/v1/webhooks`;
//! - [`node`] — `/api/v1/node`: this node's tunnel lists;
//! - [`ops`] — `/health`, `/health/detailed`, `/readiness`.

pub mod cluster;
pub mod keys;
pub mod node;
pub mod ops;
pub mod sandboxes;
pub mod webhooks;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error's body: a stable `code`, a message that names the problem, details (or null)
/// and the request's trace id (also in `X-Trace-Id`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// e.g. `bad_request`, `not_found`, `quota_exceeded`, `edge_offline`.
    pub code: String,
    pub message: String,
    pub details: serde_json::Value,
    pub trace_id: String,
}

/// Text of at most `max` characters and no control character (names, descriptions).
pub fn printable(what: &str, v: &str, max: usize) -> Result<(), String> {
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(format!(
            "{what}: expected at most {max} printable characters"
        ));
    }
    Ok(())
}

/// Integers as JSON has them: `3` and `3.0` are the same number (JSON Schema's `integer`
/// admits both), so request fields take either; `3.5`, `1e400` or a value out of the field's
/// range is refused with a message that says so.
pub mod int {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(i.into());
        }
        if let Some(u) = n.as_u64() {
            return Ok(u.into());
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e18 => Ok(f as i128),
            _ => Err(D::Error::custom(format!("expected an integer, got {n}"))),
        }
    }

    fn fit<T: TryFrom<i128>, E: Error>(v: i128) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    /// A required integer.
    pub fn one<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        fit(whole(d)?)
    }

    /// An optional integer (`null` or absent: `None`; use with `#[serde(default)]`).
    pub fn opt<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(deserialize_with = "whole")] i128);
        match Option::<W>::deserialize(d)? {
            None => Ok(None),
            Some(W(v)) => fit(v).map(Some),
        }
    }

    /// A field where a present `null` (`Some(None)`) differs from an absent one (`None`; use
    /// with `#[serde(default)]`).
    pub fn present<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        opt(d).map(Some)
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct T {
            #[serde(default, deserialize_with = "super::opt")]
            a: Option<u32>,
            #[serde(default, deserialize_with = "super::present")]
            b: Option<Option<i64>>,
        }

        fn parse(s: &str) -> Result<T, String> {
            serde_json::from_str(s).map_err(|e| e.to_string())
        }

        #[test]
        fn whole_numbers_in_either_form_and_nothing_else() {
            assert_eq!(parse(r#"{"a": 3}"#).unwrap().a, Some(3));
            assert_eq!(parse(r#"{"a": 3.0}"#).unwrap().a, Some(3));
            assert_eq!(parse(r#"{"a": null}"#).unwrap().a, None);
            assert_eq!(parse("{}").unwrap(), T { a: None, b: None });
            assert_eq!(parse(r#"{"b": null}"#).unwrap().b, Some(None));
            assert_eq!(parse(r#"{"b": -7.0}"#).unwrap().b, Some(Some(-7)));
            let e = parse(r#"{"a": 3.5}"#).unwrap_err();
            assert!(e.contains("expected an integer, got 3.5"), "{e}");
            let e = parse(r#"{"a": -1}"#).unwrap_err();
            assert!(e.contains("-1 is out of range"), "{e}");
            let e = parse(r#"{"a": 1e300}"#).unwrap_err();
            assert!(e.contains("expected an integer"), "{e}");
            let e = parse(r#"{"a": "3"}"#).unwrap_err();
            assert!(e.contains("invalid type: string"), "{e}");
        }
    }
}

/// Schemas of string maps with rules on their keys, which the derive cannot say.
pub mod maps {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::Object;

    fn map(key_pattern: &str, description: &str, nullable: bool) -> Object {
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[^\\x00]*$"))
            .max_length(Some(4096));
        let kind = if nullable {
            SchemaType::from_iter([Type::Object, Type::Null])
        } else {
            SchemaType::Type(Type::Object)
        };
        ObjectBuilder::new()
            .schema_type(kind)
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(key_pattern)),
            ))
            .additional_properties(Some(AdditionalProperties::from(value)))
            .max_properties(Some(64))
            .description(Some(description))
            .build()
    }

    /// A sandbox's environment.
    pub fn env() -> Object {
        map(
            "^[A-Za-z_][A-Za-z0-9_]{0,127}$",
            "Environment variables: at most 64; names of A-Z a-z 0-9 _ not starting with a \
             digit; values of at most 4096 characters without NUL",
            false,
        )
    }

    const ANNOTATIONS: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,128}$";
    const ANNOTATIONS_DOC: &str =
        "At most 64; keys of 1-128 printable characters; values of at most 4096 characters without NUL";

    /// A sandbox's annotations.
    pub fn annotations() -> Object {
        map(ANNOTATIONS, ANNOTATIONS_DOC, false)
    }

    /// A sandbox's annotations in a change (`null`: unchanged).
    pub fn annotations_or_null() -> Object {
        map(ANNOTATIONS, ANNOTATIONS_DOC, true)
    }
}
