//! The per-pod datasets of [`super`], and the per-node set of them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use oxrdf::{Dataset, GraphName, NamedNode, Quad};
use xpod_storage::meta::ResourceRecord;

use crate::solid::rdf::{self, Format};

/// Triples one pod's index may hold; a pod beyond it is refused with a message naming it.
pub const MAX_TRIPLES: usize = 2_000_000;
/// Triples all the indexes of a node hold together (a few hundred bytes each): past it, the
/// least recently queried pods are dropped (they are built again when next queried).
pub const MAX_NODE_TRIPLES: usize = 4_000_000;
/// Pods indexed at once on a node; the least recently queried goes first.
pub const MAX_PODS: usize = 16;

/// Every pod index of this node, and the slots of the queries running.
pub struct Indexes {
    pods: Mutex<VecDeque<(String, Arc<PodIndex>)>>,
    pub slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            pods: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(super::MAX_RUNNING)),
        }
    }
}

impl Indexes {
    /// The index of `pod_id` (empty the first time), most recently used from now on.
    pub fn pod(&self, pod_id: &str, base: &str) -> Arc<PodIndex> {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pods
            .iter()
            .position(|(id, p)| id == pod_id && p.base == base)
        {
            let entry = pods.remove(i).expect("present");
            let index = entry.1.clone();
            pods.push_front(entry);
            return index;
        }
        pods.retain(|(id, _)| id != pod_id);
        let index = Arc::new(PodIndex::new(base));
        pods.push_front((pod_id.to_string(), index.clone()));
        pods.truncate(MAX_PODS);
        index
    }

    /// Drops the least recently queried pods but `keep` while the node holds more than
    /// [`MAX_NODE_TRIPLES`].
    pub fn trim(&self, keep: &PodIndex) {
        self.trim_to(keep, MAX_NODE_TRIPLES)
    }

    fn trim_to(&self, keep: &PodIndex, budget: usize) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let size = |p: &PodIndex| p.size.load(std::sync::atomic::Ordering::Relaxed);
        let mut total: usize = pods.iter().map(|(_, p)| size(p)).sum();
        while total > budget {
            let Some(i) = pods.iter().rposition(|(_, p)| !std::ptr::eq(&**p, keep)) else {
                break;
            };
            let (id, p) = pods.remove(i).expect("present");
            total -= size(&p);
            tracing::info!(pod = %id, triples = size(&p), "sparql: index dropped to stay within the node's budget");
        }
    }

    /// Pods indexed now.
    pub fn len(&self) -> usize {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One indexed document.
struct Doc {
    etag: String,
    graph: NamedNode,
    triples: usize,
}

/// What the index holds.
#[derive(Default)]
pub struct State {
    docs: HashMap<String, Doc>,
    pub dataset: Dataset,
    pub triples: usize,
}

impl State {
    /// The graph of each indexed document, by path.
    pub fn graphs(&self) -> impl Iterator<Item = (&str, &NamedNode)> {
        self.docs.iter().map(|(p, d)| (p.as_str(), &d.graph))
    }
}

#[cfg(test)]
impl State {
    /// A state of `quads`, each graph registered as a document (named by the graph's IRI).
    pub(crate) fn of_quads(quads: Vec<Quad>) -> State {
        let mut st = State::default();
        for q in quads {
            if let GraphName::NamedNode(g) = &q.graph_name {
                let doc = st.docs.entry(g.as_str().to_string()).or_insert(Doc {
                    etag: String::new(),
                    graph: g.clone(),
                    triples: 0,
                });
                doc.triples += 1;
            }
            st.triples += 1;
            st.dataset.insert(&q);
        }
        st
    }
}

/// A pod's dataset.
pub struct PodIndex {
    /// The URL the graph names and relative IRIs start from (ends with `/`).
    base: String,
    /// Written only in a blocking thread (a long query holds it for reading: an async task
    /// never waits for it).
    state: Arc<RwLock<State>>,
    /// The triples held, readable without the lock.
    size: std::sync::atomic::AtomicUsize,
    /// One refresh at a time (queries meanwhile wait for it, then read its result).
    refreshing: tokio::sync::Mutex<()>,
}

/// Why a refresh left the index as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The pod would hold more than [`MAX_TRIPLES`].
    TooLarge(String),
    /// A document could not be read (the store's message).
    Read(String),
}

/// What a refresh did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    pub read: usize,
    pub dropped: usize,
    pub kept: usize,
}

impl PodIndex {
    fn new(base: &str) -> PodIndex {
        PodIndex {
            base: base.to_string(),
            state: Arc::new(RwLock::new(State::default())),
            size: std::sync::atomic::AtomicUsize::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The URL of the document at `path` (`/a/b.ttl`), its graph's name.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{}", self.base.trim_end_matches('/'), path)
    }

    /// Reads the state (for a query; held while it runs).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the index in step with `docs` (the pod's live documents): documents whose tag
    /// changed are read with `fetch` and parsed again, deleted ones dropped. A document that
    /// does not parse is left out (with a log line). Errs when the pod would exceed
    /// [`MAX_TRIPLES`] (the index keeps what it had).
    pub async fn refresh<F, Fut>(
        &self,
        docs: &[ResourceRecord],
        fetch: F,
    ) -> Result<Refreshed, RefreshError>
    where
        F: Fn(ResourceRecord) -> Fut,
        Fut: Future<Output = Result<Bytes, String>>,
    {
        let _one = self.refreshing.lock().await;
        let rdf_docs: HashMap<&str, (&ResourceRecord, Format)> = docs
            .iter()
            .filter(|r| !r.is_container)
            .filter_map(|r| {
                let f = Format::of_media_type(r.content_type.as_deref()?)?;
                Some((r.path.as_str(), (r, f)))
            })
            .collect();
        let (stale, gone): (Vec<(ResourceRecord, Format)>, Vec<String>) = {
            let st = self.read();
            let stale = rdf_docs
                .values()
                .filter(|(r, _)| st.docs.get(&r.path).is_none_or(|d| d.etag != r.etag))
                .map(|(r, f)| ((*r).clone(), *f))
                .collect();
            let gone = st
                .docs
                .keys()
                .filter(|p| !rdf_docs.contains_key(p.as_str()))
                .cloned()
                .collect();
            (stale, gone)
        };
        let mut parsed = Vec::with_capacity(stale.len());
        for (r, format) in stale {
            let url = self.url_of(&r.path);
            let graph =
                NamedNode::new(&url).map_err(|e| RefreshError::Read(format!("{url}: {e}")))?;
            let bytes = fetch(r.clone()).await.map_err(RefreshError::Read)?;
            match rdf::parse(&bytes, format, &url) {
                Ok(g) => parsed.push((r, graph, g)),
                Err(e) => {
                    tracing::warn!(path = %r.path, error = %e, "sparql: a document that does not parse is left out");
                    parsed.push((r, graph, oxrdf::Graph::new()));
                }
            }
        }
        let total = rdf_docs.len();
        if parsed.is_empty() && gone.is_empty() {
            // In step already (the usual case): no lock taken, no thread.
            return Ok(Refreshed {
                read: 0,
                dropped: 0,
                kept: total,
            });
        }
        let state = self.state.clone();
        let (done, triples) =
            tokio::task::spawn_blocking(move || apply(&state, parsed, gone, total))
                .await
                .map_err(|e| RefreshError::Read(format!("updating the index failed: {e}")))??;
        self.size
            .store(triples, std::sync::atomic::Ordering::Relaxed);
        Ok(done)
    }
}

/// Replaces the graphs of `parsed` documents and drops those of `gone` ones, under the write
/// lock (in a blocking thread).
fn apply(
    state: &RwLock<State>,
    parsed: Vec<(ResourceRecord, NamedNode, oxrdf::Graph)>,
    gone: Vec<String>,
    total: usize,
) -> Result<(Refreshed, usize), RefreshError> {
    let mut st = state.write().unwrap_or_else(|e| e.into_inner());
    let replaced: usize = parsed
        .iter()
        .filter_map(|(r, _, _)| st.docs.get(&r.path).map(|d| d.triples))
        .chain(
            gone.iter()
                .filter_map(|p| st.docs.get(p).map(|d| d.triples)),
        )
        .sum();
    let added: usize = parsed.iter().map(|(_, _, g)| g.len()).sum();
    let after = st.triples - replaced + added;
    if after > MAX_TRIPLES {
        return Err(RefreshError::TooLarge(format!(
                "the pod's RDF documents hold {after} triples; SPARQL indexes at most {MAX_TRIPLES} per pod"
            )));
    }
    let done = Refreshed {
        read: parsed.len(),
        dropped: gone.len(),
        kept: total - parsed.len(),
    };
    for path in gone.iter().chain(parsed.iter().map(|(r, _, _)| &r.path)) {
        if let Some(old) = st.docs.remove(path) {
            drop_graph(&mut st.dataset, &old.graph);
        }
    }
    for (r, graph, g) in parsed {
        let name = GraphName::NamedNode(graph.clone());
        for t in g.iter() {
            st.dataset.insert(&Quad::new(
                t.subject.into_owned(),
                t.predicate.into_owned(),
                t.object.into_owned(),
                name.clone(),
            ));
        }
        st.docs.insert(
            r.path.clone(),
            Doc {
                etag: r.etag.clone(),
                graph,
                triples: g.len(),
            },
        );
    }
    st.triples = after;
    Ok((done, after))
}

fn drop_graph(ds: &mut Dataset, graph: &NamedNode) {
    let quads: Vec<Quad> = ds
        .quads_for_graph_name(graph.as_ref())
        .map(|q| q.into_owned())
        .collect();
    for q in &quads {
        ds.remove(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str, etag: &str, ct: &str) -> ResourceRecord {
        ResourceRecord {
            pod_id: "p".into(),
            path: path.into(),
            is_container: false,
            content_type: Some(ct.into()),
            etag: etag.into(),
            size: 0,
            blob_key: Some(format!("k{etag}")),
            regions: vec![],
            version: 1,
            modified_at: 0,
        }
    }

    /// Fetches the body `bodies` holds for a record's blob key, counting the reads.
    fn fetcher(
        bodies: HashMap<String, &'static str>,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl Fn(ResourceRecord) -> std::future::Ready<Result<Bytes, String>> {
        move |r| {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let key = r.blob_key.unwrap_or_default();
            std::future::ready(Ok(Bytes::from_static(
                bodies.get(&key).copied().unwrap_or("").as_bytes(),
            )))
        }
    }

    #[tokio::test]
    async fn only_changed_documents_are_read_again_and_deleted_ones_leave() {
        let ix = PodIndex::new("http://n/alice/");
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bodies: HashMap<String, &'static str> = [
            ("k1".to_string(), "<#a> <#p> 1 . <#a> <#p> 2 ."),
            ("k2".to_string(), "<#b> <#p> 3 ."),
            ("k3".to_string(), "<#a> <#p> 9 ."),
            ("kx".to_string(), "not turtle at all ("),
        ]
        .into();
        let f = fetcher(bodies, reads.clone());
        let first = vec![
            doc("/a.ttl", "1", "text/turtle"),
            doc("/b.ttl", "2", "text/turtle; charset=utf-8"),
            doc("/c.txt", "9", "text/plain"),
        ];
        let r = ix.refresh(&first, &f).await.unwrap();
        assert_eq!((r.read, r.dropped, r.kept), (2, 0, 0));
        assert_eq!(ix.read().triples, 3);
        let a = NamedNode::new("http://n/alice/a.ttl").unwrap();
        assert_eq!(
            ix.read().dataset.quads_for_graph_name(a.as_ref()).count(),
            2
        );

        // Nothing changed: nothing is read.
        let r = ix.refresh(&first, &f).await.unwrap();
        assert_eq!((r.read, r.kept), (0, 2));
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);

        // a.ttl rewritten, b.ttl deleted, a broken document added (left out, not fatal).
        let second = vec![
            doc("/a.ttl", "3", "text/turtle"),
            doc("/x.ttl", "x", "text/turtle"),
        ];
        let r = ix.refresh(&second, &f).await.unwrap();
        assert_eq!((r.read, r.dropped, r.kept), (2, 1, 0));
        let st = ix.read();
        assert_eq!(st.triples, 1);
        assert_eq!(st.dataset.len(), 1);
        assert_eq!(st.graphs().count(), 2);
    }

    #[tokio::test]
    async fn a_document_that_cannot_be_read_fails_the_refresh_and_changes_nothing() {
        let ix = PodIndex::new("http://n/alice/");
        let ok = |_r: ResourceRecord| std::future::ready(Ok(Bytes::from_static(b"<#a> <#p> 1.")));
        ix.refresh(&[doc("/a.ttl", "1", "text/turtle")], ok)
            .await
            .unwrap();
        let broken = |r: ResourceRecord| std::future::ready(Err(format!("{}: gone", r.path)));
        let docs = [doc("/a.ttl", "2", "text/turtle")];
        let e = ix.refresh(&docs, broken).await.unwrap_err();
        assert_eq!(e, RefreshError::Read("/a.ttl: gone".into()));
        assert_eq!(
            ix.read().triples,
            1,
            "the old graph stays until it can be read again"
        );
        let r = ix.refresh(&docs, ok).await.unwrap();
        assert_eq!(
            r.read, 1,
            "the same change is tried again by the next query"
        );
    }

    #[tokio::test]
    async fn past_the_node_budget_the_least_recently_queried_pods_go() {
        let ixs = Indexes::default();
        let f =
            |_r: ResourceRecord| std::future::ready(Ok(Bytes::from_static(b"<#a> <#p> 1, 2, 3.")));
        let docs = [doc("/a.ttl", "1", "text/turtle")];
        for id in ["old", "mid", "new"] {
            ixs.pod(id, "http://n/").refresh(&docs, f).await.unwrap();
        }
        let new = ixs.pod("new", "http://n/");
        ixs.trim_to(&new, 7);
        assert_eq!(ixs.len(), 2, "9 triples > 7: the oldest pod goes");
        ixs.trim_to(&new, 0);
        assert_eq!(ixs.len(), 1, "never the pod being queried");
        assert_eq!(ixs.pod("new", "http://n/").read().triples, 3);
    }

    #[test]
    fn the_least_recently_queried_pod_is_dropped_first() {
        let ixs = Indexes::default();
        for i in 0..MAX_PODS {
            ixs.pod(&format!("p{i}"), "http://n/");
        }
        let p0 = ixs.pod("p0", "http://n/");
        ixs.pod("new", "http://n/");
        assert_eq!(ixs.len(), MAX_PODS);
        assert!(
            Arc::ptr_eq(&p0, &ixs.pod("p0", "http://n/")),
            "p0 was used last, so kept"
        );
        let p1 = ixs.pod("p1", "http://n/");
        assert_eq!(
            p1.read().triples,
            0,
            "p1 was the oldest: dropped and made anew"
        );
    }
}
