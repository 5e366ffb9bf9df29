//! Evaluating a query over a [`super::PodIndex`]: the caller's graphs only, a deadline, a
//! result-size limit, and the format the client accepts. Synchronous (the evaluator is not
//! `Send`): the endpoint runs it in a blocking thread.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use oxrdf::NamedNode;
use sparesults::{QueryResultsFormat, QueryResultsSerializer};
use spareval::{CancellationToken, QueryEvaluationError, QueryEvaluator, QueryResults};
use spargebra::{Query, SparqlParser};

use super::index::State;
use super::view::Readable;
use crate::solid::rdf::{self, Format};

/// How long a query may run, how many rows (or triples) and bytes it may answer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub max_rows: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_rows: 100_000,
            max_bytes: 32 << 20,
        }
    }
}

/// Why a query has no answer; each says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Not SPARQL 1.1 Query (the parser's message).
    Syntax(String),
    /// The client accepts no format this kind of query can be answered in.
    NotAcceptable(String),
    /// Ran past the deadline.
    Timeout(Duration),
    /// The answer is larger than the limits.
    TooLarge(String),
    /// The evaluator failed.
    Evaluation(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Syntax(m) => write!(f, "not a SPARQL 1.1 query: {m}"),
            QueryError::NotAcceptable(m) => f.write_str(m),
            QueryError::Timeout(d) => write!(
                f,
                "the query ran longer than {} s and was stopped; narrow it (a LIMIT, fewer optional parts)",
                d.as_secs()
            ),
            QueryError::TooLarge(m) => f.write_str(m),
            QueryError::Evaluation(m) => write!(f, "the query failed: {m}"),
        }
    }
}

/// Parses `text`, relative IRIs against `base`.
pub fn parse(text: &str, base: &str) -> Result<Query, QueryError> {
    SparqlParser::new()
        .with_base_iri(base)
        .map_err(|e| QueryError::Syntax(e.to_string()))?
        .parse_query(text)
        .map_err(|e| QueryError::Syntax(e.to_string()))
}

/// An answer: its media type and bytes.
#[derive(Debug)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Rows (SELECT), triples (CONSTRUCT, DESCRIBE) or 1 (ASK).
    pub count: usize,
}

/// The query's dataset: the protocol's `default-graph-uri` / `named-graph-uri` (`extra`:
/// `(default, named)`), or else the query's `FROM` / `FROM NAMED`; without either, the default
/// graph is the union of every graph and every graph is named. What the caller may not read
/// is out of the [`Readable`] view whatever is asked.
fn dataset_of(
    prepared: &mut spareval::PreparedQuery<'_>,
    query: &Query,
    extra: &(Vec<NamedNode>, Vec<NamedNode>),
) {
    let spec = prepared.dataset_mut();
    if !extra.0.is_empty() || !extra.1.is_empty() {
        spec.set_default_graph(extra.0.iter().cloned().map(Into::into).collect());
        spec.set_available_named_graphs(extra.1.iter().cloned().map(Into::into).collect());
    } else if query.dataset().is_none() {
        spec.set_default_graph_as_union();
    }
}

/// The results format for SELECT and ASK: JSON unless `accept` prefers XML, CSV or TSV.
fn results_format(accept: Option<&str>) -> Result<QueryResultsFormat, QueryError> {
    let formats = [
        QueryResultsFormat::Json,
        QueryResultsFormat::Xml,
        QueryResultsFormat::Csv,
        QueryResultsFormat::Tsv,
    ];
    pick(accept, &formats, |f| f.media_type(), &["application/json"]).ok_or_else(|| {
        QueryError::NotAcceptable(
            "SELECT and ASK answer application/sparql-results+json, application/sparql-results+xml, text/csv or text/tab-separated-values".into(),
        )
    })
}

/// The RDF format for CONSTRUCT and DESCRIBE: Turtle unless `accept` prefers another.
fn graph_format(accept: Option<&str>) -> Result<Format, QueryError> {
    pick(accept, &rdf::FORMATS, |f| f.media_type(), &[]).ok_or_else(|| {
        QueryError::NotAcceptable(
            "CONSTRUCT and DESCRIBE answer text/turtle, application/ld+json or application/n-triples".into(),
        )
    })
}

/// The first of `formats` (by the client's q, then our order) that `accept` takes; `aliases`
/// are extra media types that mean the first format.
fn pick<F: Copy>(
    accept: Option<&str>,
    formats: &[F],
    media: impl Fn(F) -> &'static str,
    aliases: &[&str],
) -> Option<F> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return formats.first().copied();
    };
    let ranges = rdf::parse_accept(accept);
    if ranges.is_empty() {
        return formats.first().copied();
    }
    let mut best: Option<(F, f32)> = None;
    for (i, f) in formats.iter().enumerate() {
        let essence = media(*f).split(';').next().unwrap_or("").trim();
        let mut q = rdf::quality(&ranges, essence);
        if i == 0 {
            for a in aliases {
                q = q.max(rdf::quality(&ranges, a));
            }
        }
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((*f, q));
        }
    }
    best.map(|(f, _)| f)
}

/// Runs `query` over `state` as a caller who may read the graphs named in `allowed`, within
/// `limits`; `cancel` is cancelled by the caller's clock at the deadline.
pub fn run(
    state: &State,
    query: &Query,
    allowed: &HashSet<String>,
    extra: &(Vec<NamedNode>, Vec<NamedNode>),
    accept: Option<&str>,
    limits: Limits,
    cancel: CancellationToken,
) -> Result<Answer, QueryError> {
    let started = Instant::now();
    // Decided before evaluating: a client that takes none of the formats costs nothing.
    let kind_format = match query {
        Query::Select { .. } | Query::Ask { .. } => Ok(results_format(accept)?),
        Query::Construct { .. } | Query::Describe { .. } => Err(graph_format(accept)?),
    };
    let evaluator = QueryEvaluator::new().with_cancellation_token(cancel);
    let mut prepared = evaluator.prepare(query);
    dataset_of(&mut prepared, query, extra);
    // The whole dataset when the caller may read every graph (no filtering at all).
    let readable = (!state.graphs().all(|(_, g)| allowed.contains(g.as_str()))).then_some(allowed);
    let view = Readable {
        dataset: &state.dataset,
        readable,
    };
    let failed = |e: QueryEvaluationError| match e {
        QueryEvaluationError::Cancelled => QueryError::Timeout(limits.timeout),
        e => QueryError::Evaluation(e.to_string()),
    };
    let over_time = || started.elapsed() > limits.timeout;
    let too_many = |what: &str| {
        QueryError::TooLarge(format!(
            "the answer has more than {} {what}; add a LIMIT (and OFFSET to page)",
            limits.max_rows
        ))
    };
    let too_big = || {
        QueryError::TooLarge(format!(
            "the answer is larger than {} bytes; add a LIMIT (and OFFSET to page)",
            limits.max_bytes
        ))
    };
    let io = |e: std::io::Error| QueryError::Evaluation(e.to_string());
    match prepared.execute(view).map_err(failed)? {
        QueryResults::Boolean(b) => {
            let Ok(format) = kind_format else {
                unreachable!("ASK has a results format")
            };
            let body = QueryResultsSerializer::from_format(format)
                .serialize_boolean_to_writer(Vec::new(), b)
                .map_err(io)?;
            Ok(Answer {
                content_type: format.media_type(),
                body,
                count: 1,
            })
        }
        QueryResults::Solutions(solutions) => {
            let Ok(format) = kind_format else {
                unreachable!("SELECT has a results format")
            };
            let mut w = QueryResultsSerializer::from_format(format)
                .serialize_solutions_to_writer(Vec::new(), solutions.variables().to_vec())
                .map_err(io)?;
            let mut count = 0;
            for s in solutions {
                let s = s.map_err(failed)?;
                count += 1;
                if count > limits.max_rows {
                    return Err(too_many("rows"));
                }
                if over_time() {
                    return Err(QueryError::Timeout(limits.timeout));
                }
                w.serialize(s.iter()).map_err(io)?;
            }
            let body = w.finish().map_err(io)?;
            if body.len() > limits.max_bytes {
                return Err(too_big());
            }
            Ok(Answer {
                content_type: format.media_type(),
                body,
                count,
            })
        }
        QueryResults::Graph(triples) => {
            let Err(format) = kind_format else {
                unreachable!("CONSTRUCT has an RDF format")
            };
            let mut graph = oxrdf::Graph::new();
            for t in triples {
                let t = t.map_err(failed)?;
                if over_time() {
                    return Err(QueryError::Timeout(limits.timeout));
                }
                graph.insert(&t);
                if graph.len() > limits.max_rows {
                    return Err(too_many("triples"));
                }
            }
            let body = rdf::serialize(&graph, format, "");
            if body.len() > limits.max_bytes {
                return Err(too_big());
            }
            Ok(Answer {
                content_type: format.media_type(),
                body,
                count: graph.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxrdf::{Literal, Quad};

    fn state() -> State {
        let p = NamedNode::new("http://ex/p").unwrap();
        State::of_quads(
            [
                ("http://n/a/pub.ttl", "http://ex/x", 1),
                ("http://n/a/pub.ttl", "http://ex/y", 2),
                ("http://n/a/secret.ttl", "http://ex/z", 3),
            ]
            .into_iter()
            .map(|(g, s, v)| {
                Quad::new(
                    NamedNode::new(s).unwrap(),
                    p.clone(),
                    Literal::from(v),
                    NamedNode::new(g).unwrap(),
                )
            })
            .collect(),
        )
    }

    fn allowed(gs: &[&str]) -> HashSet<String> {
        gs.iter().map(|g| g.to_string()).collect()
    }

    fn ask(
        q: &str,
        graphs: &[&str],
        accept: Option<&str>,
        limits: Limits,
    ) -> Result<Answer, QueryError> {
        let query = parse(q, "http://n/a/").unwrap();
        run(
            &state(),
            &query,
            &allowed(graphs),
            &(vec![], vec![]),
            accept,
            limits,
            CancellationToken::new(),
        )
    }

    fn text(a: &Answer) -> String {
        String::from_utf8(a.body.clone()).unwrap()
    }

    const PUB: &str = "http://n/a/pub.ttl";
    const SECRET: &str = "http://n/a/secret.ttl";

    #[test]
    fn a_caller_sees_only_the_graphs_it_may_read() {
        let q = "SELECT ?v WHERE { ?s <http://ex/p> ?v } ORDER BY ?v";
        let a = ask(q, &[PUB], None, Limits::default()).unwrap();
        assert_eq!(a.count, 2);
        assert_eq!(a.content_type, "application/sparql-results+json");
        assert!(!text(&a).contains("\"3\""), "{}", text(&a));
        assert_eq!(
            ask(q, &[PUB, SECRET], None, Limits::default())
                .unwrap()
                .count,
            3
        );
        // Naming a graph it may not read gives nothing, through FROM, FROM NAMED or GRAPH.
        let from = "SELECT ?v FROM <http://n/a/secret.ttl> WHERE { ?s ?p ?v }";
        assert_eq!(ask(from, &[PUB], None, Limits::default()).unwrap().count, 0);
        let graph = "SELECT ?g ?v WHERE { GRAPH ?g { ?s ?p ?v } }";
        assert_eq!(
            ask(graph, &[PUB], None, Limits::default()).unwrap().count,
            2
        );
        let named = "SELECT ?v WHERE { GRAPH <http://n/a/secret.ttl> { ?s ?p ?v } }";
        assert_eq!(
            ask(named, &[PUB], None, Limits::default()).unwrap().count,
            0
        );
    }

    #[test]
    fn every_kind_of_query_answers_in_the_format_asked() {
        let a = ask(
            "ASK { ?s ?p 3 }",
            &[PUB],
            Some("application/sparql-results+xml"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(a.content_type, "application/sparql-results+xml");
        assert!(
            text(&a).contains("<boolean>false</boolean>"),
            "{}",
            text(&a)
        );
        let csv = ask(
            "SELECT ?v WHERE { ?s ?p ?v } ORDER BY ?v",
            &[PUB],
            Some("text/csv"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(text(&csv).replace("\r\n", "\n"), "v\n1\n2\n");
        let tsv = ask(
            "SELECT ?v WHERE { ?s ?p ?v } ORDER BY ?v",
            &[PUB],
            Some("text/tab-separated-values"),
            Limits::default(),
        )
        .unwrap();
        assert!(text(&tsv).starts_with("?v"), "{}", text(&tsv));
        let c = ask(
            "CONSTRUCT { ?s <http://ex/q> ?v } WHERE { ?s ?p ?v }",
            &[PUB],
            None,
            Limits::default(),
        )
        .unwrap();
        assert_eq!((c.content_type, c.count), ("text/turtle", 2));
        let nt = ask(
            "DESCRIBE <http://ex/x>",
            &[PUB],
            Some("application/n-triples"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            text(&nt).trim(),
            "<http://ex/x> <http://ex/p> \"1\"^^<http://www.w3.org/2001/XMLSchema#integer> ."
        );
        let e = ask(
            "SELECT * { ?s ?p ?o }",
            &[PUB],
            Some("image/png"),
            Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, QueryError::NotAcceptable(_)), "{e}");
        assert!(matches!(
            parse("SELECT WHERE", "http://n/"),
            Err(QueryError::Syntax(_))
        ));
        assert!(
            matches!(
                parse("INSERT DATA { <a> <b> <c> }", "http://n/"),
                Err(QueryError::Syntax(_))
            ),
            "updates are not queries"
        );
    }

    #[test]
    fn limits_stop_a_query_with_a_message_that_says_what_to_do() {
        let small = Limits {
            max_rows: 1,
            ..Limits::default()
        };
        let e = ask("SELECT * { ?s ?p ?o }", &[PUB], None, small).unwrap_err();
        assert!(
            e.to_string().contains("more than 1 rows; add a LIMIT"),
            "{e}"
        );
        assert_eq!(
            ask("SELECT * { ?s ?p ?o } LIMIT 1", &[PUB], None, small)
                .unwrap()
                .count,
            1
        );
        let tiny = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let e = ask("SELECT * { ?s ?p ?o }", &[PUB], None, tiny).unwrap_err();
        assert!(e.to_string().contains("larger than 10 bytes"), "{e}");
        // Cancelled (the deadline passed): stopped, named as a timeout.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let query = parse("SELECT * { ?s ?p ?o . ?a ?b ?c }", "http://n/a/").unwrap();
        let e = run(
            &state(),
            &query,
            &allowed(&[PUB]),
            &(vec![], vec![]),
            None,
            Limits::default(),
            cancel,
        )
        .unwrap_err();
        assert!(matches!(e, QueryError::Timeout(_)), "{e}");
    }
}
