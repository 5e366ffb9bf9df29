//! Benchmark (a program, not a test): query latency of a pod's SPARQL endpoint on a pod of
//! 100,000 triples (issue 20), against the direct path in the same run: the same queries
//! evaluated in this process by the same engine (Oxigraph's `spareval`) over an in-memory
//! dataset of the same triples. The ratio is what the endpoint adds: HTTP, the listing of the
//! pod's documents that keeps the index in step, the access decision per document, the
//! blocking thread, serialization.
//!
//! Setup: a lone `xpod` node (SQLite, local objects), one private pod, `docs` Turtle documents
//! of `triples / docs` triples each (people with a name, an age and two friends). Printed: the
//! first query (the index is built: every document read and parsed), then for each query the
//! p50/p99 over `rounds` runs on one keep-alive connection, the direct path's p50 and the ratio,
//! then a query after one document changed (one document re-read), and one JSON line.
//!
//! Usage: `cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin sparqlbench`
//! then `XPOD_BIN=target/release/xpod target/release/sparqlbench [triples] [docs] [rounds]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use oxrdf::{Dataset, GraphName, NamedNode, Quad};
use serde_json::json;
use spareval::{QueryEvaluator, QueryResults};
use spargebra::SparqlParser;
use xpod_integration::curl::Curl;
use xpod_integration::node::NodeProcess;

const QUERIES: &[(&str, &str)] = &[
    (
        "point: one person's name",
        "PREFIX f: <http://xmlns.com/foaf/0.1/> SELECT ?n WHERE { ?p f:nick \"p4242\" ; f:name ?n }",
    ),
    (
        "join: friends of friends, LIMIT 100",
        "PREFIX f: <http://xmlns.com/foaf/0.1/> SELECT ?a ?c WHERE { ?a f:knows ?b . ?b f:knows ?c } LIMIT 100",
    ),
    (
        "filter: ages over 95, LIMIT 1000",
        "PREFIX f: <http://xmlns.com/foaf/0.1/> SELECT ?p ?age WHERE { ?p f:age ?age FILTER(?age > 95) } LIMIT 1000",
    ),
    (
        "aggregate: count every triple",
        "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }",
    ),
];

/// One document: `per` people, numbered from `first`, in Turtle.
fn document(first: usize, per: usize, total: usize) -> String {
    let mut t = String::from("@prefix f: <http://xmlns.com/foaf/0.1/>.\n");
    for i in first..first + per {
        let a = (i * 7 + 1) % total;
        let b = (i * 13 + 5) % total;
        t.push_str(&format!(
            "<#p{i}> f:nick \"p{i}\"; f:name \"Person {i}\"; f:age {}; f:knows <http://ex/p{a}>, <http://ex/p{b}>.\n",
            i % 100
        ));
    }
    t
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

async fn ask(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    key: &str,
    query: &str,
) -> (u64, usize) {
    send.ready().await.expect("the connection to the node");
    let t = Instant::now();
    let mut req = hyper::Request::post("/bench/-/sparql").header("host", addr.to_string());
    if !key.is_empty() {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req
        .header("content-type", "application/sparql-query")
        .header("accept", "application/sparql-results+json")
        .body(Full::new(Bytes::from(query.to_string())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (t.elapsed().as_micros() as u64, body.len())
}

/// A keep-alive connection to the node (a new one per group of rounds: the node closes one
/// left idle for 30 s while this program measures the direct path).
async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// The direct path: the same query over an in-memory dataset of the graphs the caller may read
/// (the default graph their union), evaluated and serialized here.
fn direct(ds: &Dataset, query: &str) -> u64 {
    let t = Instant::now();
    let q = SparqlParser::new().parse_query(query).unwrap();
    let evaluator = QueryEvaluator::new();
    let mut prepared = evaluator.prepare(&q);
    prepared.dataset_mut().set_default_graph_as_union();
    let mut rows = 0usize;
    if let QueryResults::Solutions(s) = prepared.execute(ds).unwrap() {
        let vars = s.variables().to_vec();
        let mut w =
            sparesults::QueryResultsSerializer::from_format(sparesults::QueryResultsFormat::Json)
                .serialize_solutions_to_writer(Vec::new(), vars)
                .unwrap();
        for sol in s {
            let sol = sol.unwrap();
            w.serialize(sol.iter()).unwrap();
            rows += 1;
        }
        std::hint::black_box(w.finish().unwrap());
    }
    std::hint::black_box(rows);
    t.elapsed().as_micros() as u64
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: triples docs rounds"))
        .collect();
    let triples = args.first().copied().unwrap_or(100_000);
    let docs = args.get(1).copied().unwrap_or(100);
    let rounds = args.get(2).copied().unwrap_or(50);
    let people = triples / 5; // nick, name, age and two friends each
    let per = people / docs;
    let node = NodeProcess::start();
    let key = node.admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", node.url()))
        .bearer(&key)
        .json(&json!({"podId": "bench", "accessMode": "public-read"}))
        .send()
        .expect(201);
    // The same triples for the direct path, each document its graph.
    let mut ds = Dataset::new();
    let mut graphs = Vec::new();
    let base = format!("{}/bench/", node.url());
    let started = Instant::now();
    for d in 0..docs {
        let text = document(d * per, per, people);
        let path = format!("people/{d}.ttl");
        Curl::new("PUT", format!("{base}{path}"))
            .bearer(&key)
            .header("Content-Type: text/turtle")
            .body(text.clone())
            .send()
            .expect(201);
        let g = NamedNode::new(format!("{base}{path}")).unwrap();
        for t in oxttl::TurtleParser::new()
            .with_base_iri(g.as_str())
            .unwrap()
            .for_slice(text.as_bytes())
        {
            let t = t.unwrap();
            ds.insert(&Quad::new(t.subject, t.predicate, t.object, g.clone()));
        }
        graphs.push(GraphName::NamedNode(g));
    }
    // One document the public may not read: an anonymous caller's dataset is the other 99
    // graphs, listed one by one.
    Curl::new("PUT", format!("{base}people/0.ttl.acl"))
        .bearer(&key)
        .header("Content-Type: text/turtle")
        .body(
            "@prefix acl: <http://www.w3.org/ns/auth/acl#>. <#only> a acl:Authorization; \
             acl:agent <http://nobody.example/#me>; acl:accessTo <./0.ttl>; acl:mode acl:Read."
                .to_string(),
        )
        .send()
        .expect(201);
    // The direct path of the anonymous caller: a dataset of the readable graphs only.
    let first = graphs[0].clone();
    let public: Dataset = ds
        .iter()
        .filter(|q| q.graph_name != first.as_ref())
        .map(|q| q.into_owned())
        .collect();
    println!(
        "pod: {} triples in {docs} documents, written in {:.1} s",
        ds.len(),
        started.elapsed().as_secs_f64()
    );
    let addr: SocketAddr = node
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("node address");
    let mut send = connect(addr).await;

    let (cold, _) = ask(&mut send, addr, &key, QUERIES[0].1).await;
    println!(
        "first query (index built: {docs} documents read and parsed): {:.1} ms",
        cold as f64 / 1000.0
    );
    println!(
        "{:<38} {:<10} {:>8} {:>8} {:>10} {:>6} {:>8}",
        "query", "caller", "p50 ms", "p99 ms", "direct p50", "ratio", "bytes"
    );
    let mut results: HashMap<String, f64> = HashMap::new();
    for (name, q) in QUERIES {
        for (caller, who, scope) in [("key", key.as_str(), &ds), ("anonymous", "", &public)] {
            let mut lat = Vec::new();
            let mut bytes = 0;
            send = connect(addr).await;
            for _ in 0..rounds {
                let (us, b) = ask(&mut send, addr, who, q).await;
                lat.push(us);
                bytes = b;
            }
            let mut dlat: Vec<u64> = (0..rounds).map(|_| direct(scope, q)).collect();
            let p50 = percentile(&mut lat, 0.5);
            let p99 = percentile(&mut lat, 0.99);
            let d50 = percentile(&mut dlat, 0.5);
            results.insert(format!("{name} ({caller})"), p50);
            println!(
                "{name:<38} {caller:<10} {p50:>8.2} {p99:>8.2} {d50:>10.2} {:>5.1}× {bytes:>8}",
                p50 / d50.max(0.001)
            );
        }
    }
    // One document changes: the next query re-reads it alone.
    Curl::new("PUT", format!("{base}people/0.ttl"))
        .bearer(&key)
        .header("Content-Type: text/turtle")
        .body(document(0, per, people).replace("Person 1 ", "Someone 1 "))
        .send()
        .expect(204);
    let (after, _) = ask(&mut send, addr, &key, QUERIES[0].1).await;
    println!(
        "first query after one document changed (1 of {docs} re-read): {:.1} ms (point query p50 {:.2} ms)",
        after as f64 / 1000.0,
        results[&format!("{} (key)", QUERIES[0].0)]
    );
    let mut line = json!({
        "triples": ds.len(),
        "docs": docs,
        "first_query_ms": cold as f64 / 1000.0,
        "after_one_change_ms": after as f64 / 1000.0,
    });
    for (name, p50) in &results {
        line[format!("p50_ms {name}")] = json!(p50);
    }
    println!("{line}");
    drop(node);
    std::thread::sleep(Duration::from_millis(50));
}
