//! PATCH of an RDF document (Solid Protocol §5.3): N3 Patch (`text/n3`,
//! `solid:InsertDeletePatch`) and SPARQL Update (`application/sparql-update`: `INSERT DATA`,
//! `DELETE DATA`, `DELETE/INSERT … WHERE` over a basic graph pattern). Both parse into one
//! [`Patch`], applied to the document's graph by [`Patch::apply`].
//!
//! Semantics:
//! - N3 Patch: the `where` formula must match exactly one way (none or several → 409); every
//!   triple to delete must be there (else 409); `inserts`/`deletes` may not hold blank nodes or
//!   variables that `where` does not bind (422).
//! - SPARQL Update: operations run in order; `DELETE DATA` of an absent triple is a no-op;
//!   `WHERE` applies the templates once per solution; blank nodes in an insert template are
//!   fresh per solution. `GRAPH`, `USING`, `LOAD`, `CLEAR`, `CREATE`, `DROP` and patterns other
//!   than a basic graph pattern are refused (501).
//!
//! Matching is bounded ([`MAX_SOLUTIONS`], [`MAX_STEPS`]) so a hostile pattern cannot hold a
//! core: past either bound the patch is refused (422).

use std::collections::HashMap;

use oxrdf::{BlankNode, Graph, NamedNode, NamedOrBlankNode, Term, Triple};
use oxttl::n3::{N3Parser, N3Term};
use spargebra::algebra::GraphPattern;
use spargebra::term::{
    GraphName as SGraphName, GraphNamePattern, GroundTerm, GroundTermPattern, NamedNodePattern,
    TermPattern,
};
use spargebra::{GraphUpdateOperation, SparqlParser};

/// The most solutions a `WHERE` may have.
pub const MAX_SOLUTIONS: usize = 10_000;
/// The most triple comparisons one patch may make.
pub const MAX_STEPS: usize = 5_000_000;

const SOLID: &str = "http://www.w3.org/ns/solid/terms#";
const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";

/// Why a patch was refused, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// 400: not N3 / not SPARQL.
    Syntax(String),
    /// 422: well-formed, but not a patch this server can apply to a document.
    Unprocessable(String),
    /// 409: the document does not match what the patch expects.
    Conflict(String),
    /// 501: a valid SPARQL Update form that a document PATCH does not support.
    Unsupported(String),
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchError::Syntax(m)
            | PatchError::Unprocessable(m)
            | PatchError::Conflict(m)
            | PatchError::Unsupported(m) => f.write_str(m),
        }
    }
}

/// A term of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum P {
    Term(Term),
    Var(String),
    /// A blank node of an insert template: a new blank node per application.
    Fresh(String),
}

#[derive(Clone, Debug)]
struct Pattern {
    s: P,
    p: P,
    o: P,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// N3 Patch: exactly one solution; deletes must exist.
    N3,
    /// SPARQL: every solution; absent deletes are ignored.
    Sparql,
}

#[derive(Clone, Debug)]
struct Op {
    kind: Kind,
    matches: Vec<Pattern>,
    deletes: Vec<Pattern>,
    inserts: Vec<Pattern>,
}

/// A parsed patch: one or more operations.
#[derive(Clone, Debug)]
pub struct Patch {
    ops: Vec<Op>,
}

/// The access a patch needs (Web Access Control): reading conditions or deleting needs Read,
/// deleting needs Write, inserting needs Append (which Write includes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub read: bool,
    pub write: bool,
    pub append: bool,
}

type Binding = HashMap<String, Term>;

impl Patch {
    /// What applying this patch requires of the caller.
    pub fn needs(&self) -> Needs {
        let mut n = Needs::default();
        for op in &self.ops {
            n.read |= !op.matches.is_empty() || !op.deletes.is_empty();
            n.write |= !op.deletes.is_empty();
            n.append |= !op.inserts.is_empty();
        }
        n
    }

    /// Applies the patch to `graph`; on an error `graph` may be partly changed (the caller
    /// applies to a copy and keeps it only on success).
    pub fn apply(&self, graph: &mut Graph) -> Result<(), PatchError> {
        for op in &self.ops {
            let mut steps = 0usize;
            let solutions = solve(graph, &op.matches, &mut steps)?;
            if op.kind == Kind::N3 && solutions.len() != 1 {
                return Err(PatchError::Conflict(if solutions.is_empty() {
                    "the patch's solid:where matches nothing in the document".into()
                } else {
                    format!(
                        "the patch's solid:where matches {} ways; it must match exactly one",
                        solutions.len()
                    )
                }));
            }
            let mut deletes = Vec::new();
            let mut inserts = Vec::new();
            for b in &solutions {
                let mut fresh = HashMap::new();
                for p in &op.deletes {
                    match instantiate(p, b, &mut fresh) {
                        Some(t) => deletes.push(t),
                        None if op.kind == Kind::N3 => return Err(PatchError::Unprocessable(
                            "a triple to delete is not a valid triple once its variables are bound"
                                .into(),
                        )),
                        None => {}
                    }
                }
                for p in &op.inserts {
                    match instantiate(p, b, &mut fresh) {
                        Some(t) => inserts.push(t),
                        None if op.kind == Kind::N3 => return Err(PatchError::Unprocessable(
                            "a triple to insert is not a valid triple once its variables are bound"
                                .into(),
                        )),
                        None => {}
                    }
                }
            }
            if op.kind == Kind::N3 {
                if let Some(missing) = deletes.iter().find(|t| !graph.contains(*t)) {
                    return Err(PatchError::Conflict(format!(
                        "the triple to delete {missing} is not in the document"
                    )));
                }
            }
            for t in &deletes {
                graph.remove(t);
            }
            for t in &inserts {
                graph.insert(t);
            }
        }
        Ok(())
    }
}

/// Every binding of `patterns` over `graph` (one empty binding for no patterns).
fn solve(
    graph: &Graph,
    patterns: &[Pattern],
    steps: &mut usize,
) -> Result<Vec<Binding>, PatchError> {
    let mut out = Vec::new();
    extend(graph, patterns, Binding::new(), &mut out, steps)?;
    Ok(out)
}

fn extend(
    graph: &Graph,
    patterns: &[Pattern],
    b: Binding,
    out: &mut Vec<Binding>,
    steps: &mut usize,
) -> Result<(), PatchError> {
    let Some((first, rest)) = patterns.split_first() else {
        if out.len() >= MAX_SOLUTIONS {
            return Err(PatchError::Unprocessable(format!(
                "the patch's conditions match more than {MAX_SOLUTIONS} ways"
            )));
        }
        out.push(b);
        return Ok(());
    };
    for t in graph.iter() {
        *steps += 1;
        if *steps > MAX_STEPS {
            return Err(PatchError::Unprocessable(
                "the patch's conditions take too long to match; make them more specific".into(),
            ));
        }
        let mut next = b.clone();
        let s: Term = t.subject.into_owned().into();
        let p: Term = t.predicate.into_owned().into();
        let o: Term = t.object.into_owned();
        if unify(&first.s, &s, &mut next)
            && unify(&first.p, &p, &mut next)
            && unify(&first.o, &o, &mut next)
        {
            extend(graph, rest, next, out, steps)?;
        }
    }
    Ok(())
}

fn unify(p: &P, t: &Term, b: &mut Binding) -> bool {
    match p {
        P::Term(x) => x == t,
        P::Var(v) => match b.get(v) {
            Some(bound) => bound == t,
            None => {
                b.insert(v.clone(), t.clone());
                true
            }
        },
        P::Fresh(_) => false,
    }
}

fn instantiate(p: &Pattern, b: &Binding, fresh: &mut HashMap<String, BlankNode>) -> Option<Triple> {
    let mut term = |x: &P| -> Option<Term> {
        match x {
            P::Term(t) => Some(t.clone()),
            P::Var(v) => b.get(v).cloned(),
            P::Fresh(label) => Some(fresh.entry(label.clone()).or_default().clone().into()),
        }
    };
    let subject: NamedOrBlankNode = match term(&p.s)? {
        Term::NamedNode(n) => n.into(),
        Term::BlankNode(n) => n.into(),
        _ => return None,
    };
    let predicate = match term(&p.p)? {
        Term::NamedNode(n) => n,
        _ => return None,
    };
    Some(Triple::new(subject, predicate, term(&p.o)?))
}

/// Parses an N3 Patch document (`text/n3`).
pub fn parse_n3(body: &str, base: &str) -> Result<Patch, PatchError> {
    let parser = N3Parser::new()
        .with_base_iri(base)
        .map_err(|e| PatchError::Unprocessable(format!("base IRI <{base}>: {e}")))?;
    let mut quads = Vec::new();
    for q in parser.for_slice(body.as_bytes()) {
        let q = q.map_err(|e| {
            let at = e.location().start;
            PatchError::Syntax(format!(
                "invalid N3 at line {}, column {}: {}",
                at.line + 1,
                at.column + 1,
                e.message()
            ))
        })?;
        quads.push(q);
    }
    let named = |iri: &str| N3Term::NamedNode(NamedNode::new_unchecked(iri));
    let rdf_type = named(RDF_TYPE);
    let patch_type = named(&format!("{SOLID}InsertDeletePatch"));
    let top = |q: &&oxttl::n3::N3Quad| q.graph_name == oxrdf::GraphName::DefaultGraph;
    let subjects: Vec<&N3Term> = quads
        .iter()
        .filter(top)
        .filter(|q| q.predicate == rdf_type && q.object == patch_type)
        .map(|q| &q.subject)
        .collect();
    let [subject] = subjects.as_slice() else {
        return Err(PatchError::Unprocessable(format!(
            "an N3 Patch must have exactly one subject of type solid:InsertDeletePatch (found {})",
            subjects.len()
        )));
    };
    let formula = |name: &str| -> Result<Option<Vec<&oxttl::n3::N3Quad>>, PatchError> {
        let pred = named(&format!("{SOLID}{name}"));
        let objects: Vec<&N3Term> = quads
            .iter()
            .filter(top)
            .filter(|q| &q.subject == *subject && q.predicate == pred)
            .map(|q| &q.object)
            .collect();
        match objects.as_slice() {
            [] => Ok(None),
            [N3Term::BlankNode(f)] => Ok(Some(
                quads
                    .iter()
                    .filter(|q| matches!(&q.graph_name, oxrdf::GraphName::BlankNode(g) if g == f))
                    .collect(),
            )),
            [_] => Err(PatchError::Unprocessable(format!(
                "solid:{name} must be a formula ({{ … }})"
            ))),
            _ => Err(PatchError::Unprocessable(format!(
                "an N3 Patch may have at most one solid:{name}"
            ))),
        }
    };
    let term = |t: &N3Term, in_where: bool, what: &str| -> Result<P, PatchError> {
        Ok(match t {
            N3Term::NamedNode(n) => P::Term(n.clone().into()),
            N3Term::Literal(l) => P::Term(l.clone().into()),
            N3Term::Variable(v) => P::Var(v.as_str().to_string()),
            N3Term::BlankNode(b) if in_where => P::Var(format!("_:{}", b.as_str())),
            N3Term::BlankNode(_) => {
                return Err(PatchError::Unprocessable(format!(
                    "solid:{what} may not contain blank nodes"
                )))
            }
            #[allow(unreachable_patterns)]
            _ => return Err(PatchError::Unprocessable("unsupported N3 term".into())),
        })
    };
    let patterns = |qs: Option<Vec<&oxttl::n3::N3Quad>>,
                    in_where: bool,
                    what: &str|
     -> Result<Vec<Pattern>, PatchError> {
        qs.unwrap_or_default()
            .into_iter()
            .map(|q| {
                Ok(Pattern {
                    s: term(&q.subject, in_where, what)?,
                    p: term(&q.predicate, in_where, what)?,
                    o: term(&q.object, in_where, what)?,
                })
            })
            .collect()
    };
    let matches = patterns(formula("where")?, true, "where")?;
    let deletes = patterns(formula("deletes")?, false, "deletes")?;
    let inserts = patterns(formula("inserts")?, false, "inserts")?;
    let bound: std::collections::HashSet<&String> = matches
        .iter()
        .flat_map(|p| [&p.s, &p.p, &p.o])
        .filter_map(|t| match t {
            P::Var(v) => Some(v),
            _ => None,
        })
        .collect();
    for p in deletes.iter().chain(&inserts) {
        for t in [&p.s, &p.p, &p.o] {
            if let P::Var(v) = t {
                if !bound.contains(v) {
                    return Err(PatchError::Unprocessable(format!(
                        "the variable ?{v} is not bound by solid:where"
                    )));
                }
            }
        }
    }
    Ok(Patch {
        ops: vec![Op {
            kind: Kind::N3,
            matches,
            deletes,
            inserts,
        }],
    })
}

fn graph_ok(g: &SGraphName) -> Result<(), PatchError> {
    match g {
        SGraphName::DefaultGraph => Ok(()),
        SGraphName::NamedNode(n) => Err(PatchError::Unsupported(format!(
            "GRAPH {n}: a document PATCH changes the document's own graph only"
        ))),
    }
}

fn graph_pattern_ok(g: &GraphNamePattern) -> Result<(), PatchError> {
    match g {
        GraphNamePattern::DefaultGraph => Ok(()),
        other => Err(PatchError::Unsupported(format!(
            "GRAPH {other}: a document PATCH changes the document's own graph only"
        ))),
    }
}

fn ground(t: &GroundTerm) -> Result<P, PatchError> {
    match t {
        GroundTerm::NamedNode(n) => Ok(P::Term(n.clone().into())),
        GroundTerm::Literal(l) => Ok(P::Term(l.clone().into())),
        #[allow(unreachable_patterns)]
        _ => Err(PatchError::Unsupported(
            "RDF 1.2 triple terms are not supported".into(),
        )),
    }
}

fn ground_pattern(t: &GroundTermPattern) -> Result<P, PatchError> {
    match t {
        GroundTermPattern::NamedNode(n) => Ok(P::Term(n.clone().into())),
        GroundTermPattern::Literal(l) => Ok(P::Term(l.clone().into())),
        GroundTermPattern::Variable(v) => Ok(P::Var(v.as_str().to_string())),
        #[allow(unreachable_patterns)]
        _ => Err(PatchError::Unsupported(
            "RDF 1.2 triple terms are not supported".into(),
        )),
    }
}

fn named_pattern(t: &NamedNodePattern) -> P {
    match t {
        NamedNodePattern::NamedNode(n) => P::Term(n.clone().into()),
        NamedNodePattern::Variable(v) => P::Var(v.as_str().to_string()),
    }
}

/// `in_where`: blank nodes are variables (a pattern); else fresh nodes (a template).
fn term_pattern(t: &TermPattern, in_where: bool) -> Result<P, PatchError> {
    match t {
        TermPattern::NamedNode(n) => Ok(P::Term(n.clone().into())),
        TermPattern::Literal(l) => Ok(P::Term(l.clone().into())),
        TermPattern::Variable(v) => Ok(P::Var(v.as_str().to_string())),
        TermPattern::BlankNode(b) if in_where => Ok(P::Var(format!("_:{}", b.as_str()))),
        TermPattern::BlankNode(b) => Ok(P::Fresh(b.as_str().to_string())),
        #[allow(unreachable_patterns)]
        _ => Err(PatchError::Unsupported(
            "RDF 1.2 triple terms are not supported".into(),
        )),
    }
}

/// Parses a SPARQL Update (`application/sparql-update`).
pub fn parse_sparql(body: &str, base: &str) -> Result<Patch, PatchError> {
    let update = SparqlParser::new()
        .with_base_iri(base)
        .map_err(|e| PatchError::Unprocessable(format!("base IRI <{base}>: {e}")))?
        .parse_update(body)
        .map_err(|e| PatchError::Syntax(format!("invalid SPARQL Update: {e}")))?;
    let mut ops = Vec::new();
    for op in &update.operations {
        match op {
            GraphUpdateOperation::InsertData { data } => {
                let mut inserts = Vec::new();
                for q in data {
                    graph_ok(&q.graph_name)?;
                    let s = match &q.subject {
                        NamedOrBlankNode::NamedNode(n) => P::Term(n.clone().into()),
                        NamedOrBlankNode::BlankNode(b) => P::Fresh(b.as_str().to_string()),
                    };
                    let o = match &q.object {
                        Term::BlankNode(b) => P::Fresh(b.as_str().to_string()),
                        other => P::Term(other.clone()),
                    };
                    inserts.push(Pattern {
                        s,
                        p: P::Term(q.predicate.clone().into()),
                        o,
                    });
                }
                ops.push(Op {
                    kind: Kind::Sparql,
                    matches: vec![],
                    deletes: vec![],
                    inserts,
                });
            }
            GraphUpdateOperation::DeleteData { data } => {
                let mut deletes = Vec::new();
                for q in data {
                    graph_ok(&q.graph_name)?;
                    deletes.push(Pattern {
                        s: P::Term(q.subject.clone().into()),
                        p: P::Term(q.predicate.clone().into()),
                        o: ground(&q.object)?,
                    });
                }
                ops.push(Op {
                    kind: Kind::Sparql,
                    matches: vec![],
                    deletes,
                    inserts: vec![],
                });
            }
            GraphUpdateOperation::DeleteInsert {
                delete,
                insert,
                using,
                pattern,
            } => {
                if using.is_some() {
                    return Err(PatchError::Unsupported(
                        "USING / USING NAMED are not supported in a document PATCH".into(),
                    ));
                }
                let GraphPattern::Bgp { patterns } = pattern.as_ref() else {
                    return Err(PatchError::Unsupported(
                        "only a basic graph pattern (triples, no FILTER, OPTIONAL, UNION, GRAPH…) is supported in WHERE"
                            .into(),
                    ));
                };
                let matches = patterns
                    .iter()
                    .map(|t| {
                        Ok(Pattern {
                            s: term_pattern(&t.subject, true)?,
                            p: named_pattern(&t.predicate),
                            o: term_pattern(&t.object, true)?,
                        })
                    })
                    .collect::<Result<Vec<_>, PatchError>>()?;
                let deletes = delete
                    .iter()
                    .map(|q| {
                        graph_pattern_ok(&q.graph_name)?;
                        Ok(Pattern {
                            s: ground_pattern(&q.subject)?,
                            p: named_pattern(&q.predicate),
                            o: ground_pattern(&q.object)?,
                        })
                    })
                    .collect::<Result<Vec<_>, PatchError>>()?;
                let inserts = insert
                    .iter()
                    .map(|q| {
                        graph_pattern_ok(&q.graph_name)?;
                        Ok(Pattern {
                            s: term_pattern(&q.subject, false)?,
                            p: named_pattern(&q.predicate),
                            o: term_pattern(&q.object, false)?,
                        })
                    })
                    .collect::<Result<Vec<_>, PatchError>>()?;
                ops.push(Op {
                    kind: Kind::Sparql,
                    matches,
                    deletes,
                    inserts,
                });
            }
            other => {
                let name = match other {
                    GraphUpdateOperation::Load { .. } => "LOAD",
                    GraphUpdateOperation::Clear { .. } => "CLEAR",
                    GraphUpdateOperation::Create { .. } => "CREATE",
                    _ => "DROP",
                };
                return Err(PatchError::Unsupported(format!(
                    "{name} is not supported in a document PATCH; use INSERT DATA, DELETE DATA or DELETE/INSERT … WHERE"
                )));
            }
        }
    }
    Ok(Patch { ops })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solid::rdf::{parse, Format};

    const BASE: &str = "https://pod.example/alice/doc.ttl";

    fn doc(ttl: &str) -> Graph {
        parse(ttl.as_bytes(), Format::Turtle, BASE).unwrap()
    }

    const PREFIX: &str =
        "@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix ex: <http://example.org/#>.\n";

    #[test]
    fn n3_patch_inserts_and_deletes_with_one_where_match() {
        let mut g = doc("@prefix ex: <http://example.org/#>. <#a> ex:name \"A\"; ex:age 3.");
        let p = parse_n3(
            &format!("{PREFIX}_:p a solid:InsertDeletePatch; solid:where {{ ?s ex:name \"A\" }}; solid:deletes {{ ?s ex:age 3 }}; solid:inserts {{ ?s ex:age 4 }}."),
            BASE,
        )
        .unwrap();
        assert_eq!(
            p.needs(),
            Needs {
                read: true,
                write: true,
                append: true
            }
        );
        p.apply(&mut g).unwrap();
        assert_eq!(
            g,
            doc("@prefix ex: <http://example.org/#>. <#a> ex:name \"A\"; ex:age 4.")
        );
    }

    #[test]
    fn n3_patch_conflicts_on_no_or_many_matches_and_missing_deletes() {
        let g0 = doc("@prefix ex: <http://example.org/#>. <#a> ex:name \"A\". <#b> ex:name \"B\".");
        let many = parse_n3(
            &format!("{PREFIX}<> a solid:InsertDeletePatch; solid:where {{ ?s ex:name ?n }}; solid:inserts {{ ?s ex:seen true }}."),
            BASE,
        )
        .unwrap();
        assert!(
            matches!(many.apply(&mut g0.clone()), Err(PatchError::Conflict(m)) if m.contains("2 ways"))
        );
        let none = parse_n3(
            &format!("{PREFIX}<> a solid:InsertDeletePatch; solid:where {{ ?s ex:name \"Z\" }}; solid:inserts {{ ?s ex:seen true }}."),
            BASE,
        )
        .unwrap();
        assert!(matches!(
            none.apply(&mut g0.clone()),
            Err(PatchError::Conflict(_))
        ));
        let missing = parse_n3(
            &format!(
                "{PREFIX}<> a solid:InsertDeletePatch; solid:deletes {{ <#a> ex:name \"Q\" }}."
            ),
            BASE,
        )
        .unwrap();
        let mut g = g0.clone();
        assert!(matches!(
            missing.apply(&mut g),
            Err(PatchError::Conflict(_))
        ));
    }

    #[test]
    fn n3_patch_shape_errors_are_422_and_syntax_errors_400() {
        let unbound = parse_n3(
            &format!("{PREFIX}<> a solid:InsertDeletePatch; solid:inserts {{ ?x ex:p 1 }}."),
            BASE,
        );
        assert!(matches!(unbound, Err(PatchError::Unprocessable(m)) if m.contains("?x")));
        let blank = parse_n3(
            &format!("{PREFIX}<> a solid:InsertDeletePatch; solid:inserts {{ _:b ex:p 1 }}."),
            BASE,
        );
        assert!(matches!(blank, Err(PatchError::Unprocessable(_))));
        let two = parse_n3(
            &format!("{PREFIX}<#x> a solid:InsertDeletePatch. <#y> a solid:InsertDeletePatch."),
            BASE,
        );
        assert!(matches!(two, Err(PatchError::Unprocessable(_))));
        assert!(
            matches!(parse_n3("<> a <", BASE), Err(PatchError::Syntax(m)) if m.contains("line 1"))
        );
    }

    #[test]
    fn sparql_data_forms_and_the_trailing_semicolon_of_solid_client() {
        let mut g = doc("@prefix ex: <http://example.org/#>. <#a> ex:v 1.");
        let p = parse_sparql(
            "DELETE DATA { <#a> <http://example.org/#v> 1 . };\nINSERT DATA { <#a> <http://example.org/#v> 2 . };",
            BASE,
        )
        .unwrap();
        assert_eq!(
            p.needs(),
            Needs {
                read: true,
                write: true,
                append: true
            }
        );
        p.apply(&mut g).unwrap();
        assert_eq!(g, doc("@prefix ex: <http://example.org/#>. <#a> ex:v 2."));
        // Deleting what is not there is a no-op in SPARQL.
        parse_sparql("DELETE DATA { <#a> <http://example.org/#v> 99 }", BASE)
            .unwrap()
            .apply(&mut g)
            .unwrap();
        assert_eq!(g.len(), 1);
        let append = parse_sparql("INSERT DATA { <#b> <http://example.org/#v> 3 }", BASE).unwrap();
        assert_eq!(
            append.needs(),
            Needs {
                read: false,
                write: false,
                append: true
            }
        );
    }

    #[test]
    fn sparql_delete_insert_where_applies_per_solution() {
        let mut g =
            doc("@prefix ex: <http://example.org/#>. <#a> ex:v 1. <#b> ex:v 1. <#c> ex:v 2.");
        parse_sparql(
            "PREFIX ex: <http://example.org/#> DELETE { ?s ex:v 1 } INSERT { ?s ex:v 10 } WHERE { ?s ex:v 1 }",
            BASE,
        )
        .unwrap()
        .apply(&mut g)
        .unwrap();
        assert_eq!(
            g,
            doc("@prefix ex: <http://example.org/#>. <#a> ex:v 10. <#b> ex:v 10. <#c> ex:v 2.")
        );
    }

    #[test]
    fn unsupported_sparql_is_501() {
        for u in [
            "CLEAR DEFAULT",
            "INSERT DATA { GRAPH <http://g> { <#a> <#b> <#c> } }",
            "DELETE { ?s ?p ?o } WHERE { ?s ?p ?o FILTER(?o > 1) }",
        ] {
            assert!(
                matches!(parse_sparql(u, BASE), Err(PatchError::Unsupported(_))),
                "{u}"
            );
        }
        assert!(matches!(
            parse_sparql("INSERT DATA {", BASE),
            Err(PatchError::Syntax(_))
        ));
    }

    #[test]
    fn matching_is_bounded() {
        let mut ttl = String::from("@prefix ex: <http://example.org/#>.\n");
        for i in 0..200 {
            ttl.push_str(&format!("<#n{i}> ex:p <#n{}>.\n", i + 1));
        }
        let mut g = doc(&ttl);
        let p = parse_sparql(
            "DELETE { ?a ?p ?b } WHERE { ?a ?p ?b . ?c ?q ?d . ?e ?r ?f }",
            BASE,
        )
        .unwrap();
        assert!(matches!(p.apply(&mut g), Err(PatchError::Unprocessable(_))));
    }
}
