//! The dataset a query runs over: a pod's dataset seen through the caller's rights. Only the
//! graphs the caller may read exist in it (every lookup drops quads of other graphs), so the
//! engine's own union of all graphs is the union of the readable ones, with one index lookup
//! per pattern whatever the number of graphs; a graph named by `FROM`, `GRAPH` or the
//! protocol that the caller may not read is simply empty.

use std::collections::HashSet;

use oxrdf::{Dataset, Term, TermRef};
use spareval::{InternalQuad, QueryableDataset};

/// `dataset` as a caller who may read the graphs named in `readable` (`None`: every graph).
#[derive(Clone, Copy)]
pub struct Readable<'a> {
    pub dataset: &'a Dataset,
    pub readable: Option<&'a HashSet<String>>,
}

type Inner<'a> = <&'a Dataset as QueryableDataset<'a>>::InternalTerm;

impl<'a> QueryableDataset<'a> for Readable<'a> {
    type InternalTerm = Inner<'a>;
    type Error = std::convert::Infallible;

    fn internal_quads_for_pattern(
        &self,
        subject: Option<&Inner<'a>>,
        predicate: Option<&Inner<'a>>,
        object: Option<&Inner<'a>>,
        graph_name: Option<Option<&Inner<'a>>>,
    ) -> impl Iterator<Item = Result<InternalQuad<Inner<'a>>, Self::Error>> + use<'a> {
        let readable = self.readable;
        let may_read = move |g: &Option<Inner<'a>>| match (readable, g) {
            (None, _) => true,
            // The pod's dataset has no default-graph quads; nothing else is named.
            (Some(_), None) => false,
            (Some(set), Some(g)) => match TermRef::from(g) {
                TermRef::NamedNode(n) => set.contains(n.as_str()),
                _ => false,
            },
        };
        self.dataset
            .internal_quads_for_pattern(subject, predicate, object, graph_name)
            .filter(move |q| q.as_ref().map_or(true, |q| may_read(&q.graph_name)))
    }

    fn internalize_term(&self, term: Term) -> Result<Inner<'a>, Self::Error> {
        self.dataset.internalize_term(term)
    }

    fn externalize_term(&self, term: Inner<'a>) -> Result<Term, Self::Error> {
        self.dataset.externalize_term(term)
    }
}
