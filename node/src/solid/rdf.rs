//! RDF representations of a resource: which media types are RDF, which one a client asked for
//! (`Accept` with q-values), parsing with errors that name line and column, and serialising.
//!
//! A document is stored once, as the client sent it; another RDF format is produced on read.
//! Conversion works on documents up to [`MAX_RDF`] bytes (parsing and serialising hold the
//! graph in memory). JSON-LD remote contexts are never fetched: a document that needs one is
//! stored as sent and served only as sent ([`RdfError::RemoteContext`]).

use std::fmt;

use oxjsonld::{JsonLdParser, JsonLdSerializer};
use oxrdf::{Graph, GraphName, Triple};
use oxttl::{NTriplesParser, NTriplesSerializer, TurtleParser, TurtleSerializer};

/// The largest RDF document this node parses, converts or patches (bytes).
pub const MAX_RDF: usize = 16 << 20;

/// The RDF formats a pod serves and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Turtle,
    JsonLd,
    NTriples,
}

/// Every format, in the order a client without a preference gets them.
pub const FORMATS: [Format; 3] = [Format::Turtle, Format::JsonLd, Format::NTriples];

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Turtle => "text/turtle",
            Format::JsonLd => "application/ld+json",
            Format::NTriples => "application/n-triples",
        }
    }

    /// The format of a `Content-Type` value (parameters ignored), if it is RDF.
    pub fn of_media_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/turtle" | "application/x-turtle" => Some(Format::Turtle),
            "application/ld+json" => Some(Format::JsonLd),
            "application/n-triples" => Some(Format::NTriples),
            _ => None,
        }
    }
}

/// Why a body is not usable RDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdfError {
    /// A syntax error at `line`, `column` (1-based).
    Syntax {
        line: u64,
        column: u64,
        message: String,
    },
    /// JSON-LD that refers to a remote `@context`, which this node does not fetch.
    RemoteContext(String),
    /// Valid syntax, but not one graph (a named graph in JSON-LD).
    NotAGraph(String),
    /// Larger than [`MAX_RDF`].
    TooLarge,
}

impl fmt::Display for RdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdfError::Syntax {
                line,
                column,
                message,
            } => write!(f, "line {line}, column {column}: {message}"),
            RdfError::RemoteContext(url) => write!(
                f,
                "the JSON-LD refers to the remote context <{url}>, which this server does not fetch"
            ),
            RdfError::NotAGraph(why) => f.write_str(why),
            RdfError::TooLarge => write!(f, "RDF documents are limited to {MAX_RDF} bytes"),
        }
    }
}

/// The q-value a media range list gives `media_type` (RFC 9110 §12.5.1: the most specific
/// matching range decides; no `Accept` at all accepts everything).
pub fn quality(accept: &[(String, f32)], media_type: &str) -> f32 {
    let (ty, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    let mut best: Option<(u8, f32)> = None;
    for (range, q) in accept {
        let specificity = if range == media_type {
            3
        } else if range.strip_suffix("/*") == Some(ty) {
            2
        } else if range == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, *q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// Parses an `Accept` value into (lower-cased media range, q) pairs; malformed parts are skipped.
pub fn parse_accept(accept: &str) -> Vec<(String, f32)> {
    accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let range = it.next()?.trim().to_ascii_lowercase();
            if !range.contains('/') {
                return None;
            }
            let mut q = 1.0f32;
            for p in it {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = v
                            .trim()
                            .parse::<f32>()
                            .ok()
                            .filter(|q| (0.0..=1.0).contains(q))?;
                    }
                }
            }
            Some((range, q))
        })
        .collect()
}

/// The RDF format to answer with, for a resource stored as `stored`: the one `accept` prefers
/// (ties go to `stored`, so the bytes are served as they are); `None` when `accept` refuses
/// every RDF format (406).
pub fn negotiate(accept: Option<&str>, stored: Format) -> Option<Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(stored);
    };
    let ranges = parse_accept(accept);
    if ranges.is_empty() {
        return Some(stored);
    }
    let mut best = (stored, quality(&ranges, stored.media_type()));
    for f in FORMATS {
        let q = quality(&ranges, f.media_type());
        if q > best.1 {
            best = (f, q);
        }
    }
    (best.1 > 0.0).then_some(best.0)
}

fn syntax(e: &oxttl::TurtleSyntaxError) -> RdfError {
    let at = e.location().start;
    RdfError::Syntax {
        line: at.line + 1,
        column: at.column + 1,
        message: e.message().to_string(),
    }
}

/// Parses `bytes` as `format` with `base` as the base IRI.
pub fn parse(bytes: &[u8], format: Format, base: &str) -> Result<Graph, RdfError> {
    if bytes.len() > MAX_RDF {
        return Err(RdfError::TooLarge);
    }
    let mut graph = Graph::new();
    match format {
        Format::Turtle => {
            let parser = TurtleParser::new()
                .with_base_iri(base)
                .map_err(|e| RdfError::NotAGraph(format!("base IRI <{base}>: {e}")))?;
            for t in parser.for_slice(bytes) {
                graph.insert(&t.map_err(|e| syntax(&e))?);
            }
        }
        Format::NTriples => {
            for t in NTriplesParser::new().for_slice(bytes) {
                graph.insert(&t.map_err(|e| syntax(&e))?);
            }
        }
        Format::JsonLd => {
            let parser = JsonLdParser::new()
                .with_base_iri(base)
                .map_err(|e| RdfError::NotAGraph(format!("base IRI <{base}>: {e}")))?;
            let remote = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
            let seen = remote.clone();
            let quads = parser
                .for_slice(bytes)
                .with_load_document_callback(move |url, _| {
                    *seen.lock().expect("poisoned") = Some(url.to_string());
                    Err("remote contexts are not fetched".into())
                });
            for q in quads {
                let q = match q {
                    Ok(q) => q,
                    Err(e) => {
                        if let Some(url) = remote.lock().expect("poisoned").take() {
                            return Err(RdfError::RemoteContext(url));
                        }
                        let (line, column) = e
                            .location()
                            .map_or((1, 1), |l| (l.start.line + 1, l.start.column + 1));
                        return Err(RdfError::Syntax {
                            line,
                            column,
                            message: e.to_string(),
                        });
                    }
                };
                if q.graph_name != GraphName::DefaultGraph {
                    return Err(RdfError::NotAGraph(
                        "a Solid resource is one graph; named graphs (`@graph` with an `@id`) are not accepted"
                            .into(),
                    ));
                }
                graph.insert(&Triple::from(q));
            }
        }
    }
    Ok(graph)
}

/// Common prefixes for readable Turtle.
const PREFIXES: [(&str, &str); 8] = [
    ("rdf", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"),
    ("ldp", "http://www.w3.org/ns/ldp#"),
    ("acl", "http://www.w3.org/ns/auth/acl#"),
    ("foaf", "http://xmlns.com/foaf/0.1/"),
    ("solid", "http://www.w3.org/ns/solid/terms#"),
    ("dc", "http://purl.org/dc/terms/"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ("vcard", "http://www.w3.org/2006/vcard/ns#"),
];

/// Serialises `graph` as `format`; IRIs under `base` are written relative to it where the
/// format allows (Turtle, JSON-LD).
pub fn serialize(graph: &Graph, format: Format, base: &str) -> Vec<u8> {
    // Writing to a Vec cannot fail; a base or prefix the serialiser refuses is skipped.
    let mut out = Vec::new();
    match format {
        Format::Turtle => {
            let mut s = TurtleSerializer::new();
            for (p, iri) in PREFIXES {
                s = s.clone().with_prefix(p, iri).unwrap_or(s);
            }
            s = s.clone().with_base_iri(base).unwrap_or(s);
            let mut w = s.for_writer(&mut out);
            for t in graph.iter() {
                let _ = w.serialize_triple(t);
            }
            let _ = w.finish();
        }
        Format::NTriples => {
            let mut w = NTriplesSerializer::new().for_writer(&mut out);
            for t in graph.iter() {
                let _ = w.serialize_triple(t);
            }
        }
        Format::JsonLd => {
            let mut s = JsonLdSerializer::new();
            s = s.clone().with_base_iri(base).unwrap_or(s);
            let mut w = s.for_writer(&mut out);
            for t in graph.iter() {
                let _ = w.serialize_quad(t.in_graph(GraphName::DefaultGraph.as_ref()));
            }
            let _ = w.finish();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://pod.example/alice/notes.ttl";

    #[test]
    fn media_types_are_recognised_with_parameters() {
        assert_eq!(
            Format::of_media_type("text/turtle; charset=utf-8"),
            Some(Format::Turtle)
        );
        assert_eq!(
            Format::of_media_type("Application/LD+JSON"),
            Some(Format::JsonLd)
        );
        assert_eq!(Format::of_media_type("text/plain"), None);
    }

    #[test]
    fn negotiation_follows_q_values_and_prefers_the_stored_format() {
        let t = Format::Turtle;
        assert_eq!(negotiate(None, t), Some(t));
        assert_eq!(negotiate(Some("*/*"), t), Some(t));
        assert_eq!(
            negotiate(Some("application/ld+json"), t),
            Some(Format::JsonLd)
        );
        assert_eq!(
            negotiate(Some("text/turtle;q=0.5, application/ld+json;q=0.9"), t),
            Some(Format::JsonLd)
        );
        assert_eq!(
            negotiate(Some("application/ld+json;q=0.9, */*;q=0.9"), t),
            Some(t),
            "a tie goes to the stored format"
        );
        assert_eq!(
            negotiate(Some("application/n-triples, text/turtle;q=0"), t),
            Some(Format::NTriples)
        );
        assert_eq!(negotiate(Some("text/html"), t), None);
        assert_eq!(negotiate(Some("text/*;q=0.1"), Format::JsonLd), Some(t));
        // A malformed q is skipped, not an error.
        assert_eq!(
            negotiate(Some("text/turtle;q=abc"), Format::JsonLd),
            Some(Format::JsonLd)
        );
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let e = parse(
            b"@prefix ex: <http://e/>.\nex:a ex:b \"unterminated .\n",
            Format::Turtle,
            BASE,
        )
        .unwrap_err();
        match e {
            RdfError::Syntax { line, .. } => assert_eq!(line, 2, "{e}"),
            other => panic!("{other:?}"),
        }
        let e = parse(b"{\"@id\": ", Format::JsonLd, BASE).unwrap_err();
        assert!(matches!(e, RdfError::Syntax { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn turtle_json_ld_and_n_triples_round_trip() {
        let ttl = b"@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n<#me> foaf:name \"Alice\"; foaf:knows <https://bob.example/#me>.\n";
        let g = parse(ttl, Format::Turtle, BASE).unwrap();
        assert_eq!(g.len(), 2);
        for f in FORMATS {
            let bytes = serialize(&g, f, BASE);
            let back = parse(&bytes, f, BASE)
                .unwrap_or_else(|e| panic!("{f:?}: {e}\n{}", String::from_utf8_lossy(&bytes)));
            assert_eq!(back, g, "{f:?}:\n{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn remote_json_ld_contexts_are_not_fetched() {
        let doc = br##"{"@context": "https://schema.org/", "@id": "#x", "name": "X"}"##;
        assert_eq!(
            parse(doc, Format::JsonLd, BASE).unwrap_err(),
            RdfError::RemoteContext("https://schema.org/".into())
        );
    }

    #[test]
    fn named_graphs_are_refused() {
        let doc =
            br#"{"@id": "https://e/g", "@graph": [{"@id": "https://e/a", "https://e/p": "v"}]}"#;
        assert!(matches!(
            parse(doc, Format::JsonLd, BASE),
            Err(RdfError::NotAGraph(_))
        ));
    }
}
