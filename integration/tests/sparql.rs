//! Issue 20: a pod's SPARQL endpoint (`/{pod}/-/sparql`) queried with a real SPARQL client,
//! SPARQLWrapper (PyPI, with rdflib; installed by the test runner), against the real binary:
//! SELECT, ASK, CONSTRUCT and DESCRIBE, results as JSON, XML and CSV and RDF as Turtle, by GET
//! and by POST; each document a named graph and the default graph their union; an anonymous
//! caller sees only the documents WAC lets it read; writes are seen by the next query (the
//! index follows them); malformed queries and refused formats get a message naming the
//! problem.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::node::NodeProcess;

fn python() -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/s3venv/bin/python");
    [
        std::env::var("XPOD_TEST_WEBHOOKS_PYTHON").ok(),
        Some(venv.display().to_string()),
    ]
    .into_iter()
    .flatten()
    .find(|p| {
        Command::new(p)
            .args(["-c", "import SPARQLWrapper, rdflib"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .expect(
        "this test needs a python with SPARQLWrapper and rdflib (PyPI): run `bash integration/run-tests.sh` \
         once (it installs them into target/s3venv), or set XPOD_TEST_WEBHOOKS_PYTHON",
    )
}

/// Asks `endpoint` with SPARQLWrapper: `kind` is the return format (json, xml, csv, turtle),
/// `method` GET or POST, `key` an API key or empty. Prints what the client parsed, as JSON.
const CLIENT: &str = r#"
import json, sys
from SPARQLWrapper import SPARQLWrapper, JSON, XML, CSV, TURTLE, POST, GET
endpoint, key, kind, method, query = sys.argv[1:6]
s = SPARQLWrapper(endpoint)
if key:
    s.addCustomHttpHeader("Authorization", "Bearer " + key)
s.setMethod(POST if method == "POST" else GET)
s.setQuery(query)
s.setReturnFormat({"json": JSON, "xml": XML, "csv": CSV, "turtle": TURTLE}[kind])
try:
    r = s.query()
    out = r.convert()
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    sys.exit(0)
if kind == "json":
    print(json.dumps(out))
elif kind == "xml":
    # a minidom document: the bindings' literal values, in order
    print(json.dumps({"literals": [n.firstChild.nodeValue for n in out.getElementsByTagName("literal")],
                      "boolean": [n.firstChild.nodeValue for n in out.getElementsByTagName("boolean")]}))
elif kind == "csv":
    print(json.dumps({"csv": out.decode()}))
else:
    # rdflib parses the Turtle answer of a CONSTRUCT or DESCRIBE
    import rdflib
    g = rdflib.Graph()
    g.parse(data=out, format="turtle")
    print(json.dumps({"triples": sorted([str(s), str(p), str(o)] for s, p, o in g)}))
"#;

struct Client {
    python: String,
    endpoint: String,
}

impl Client {
    fn ask(&self, key: &str, kind: &str, method: &str, query: &str) -> Value {
        let out = Command::new(&self.python)
            .args(["-c", CLIENT, &self.endpoint, key, kind, method, query])
            .output()
            .expect("running python");
        assert!(
            out.status.success(),
            "the SPARQL client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The values of `?var` in a SELECT's JSON results.
    fn values(&self, key: &str, method: &str, query: &str, var: &str) -> Vec<String> {
        let r = self.ask(key, "json", method, query);
        assert!(r.get("error").is_none(), "{r}");
        r["results"]["bindings"]
            .as_array()
            .unwrap_or_else(|| panic!("no bindings: {r}"))
            .iter()
            .map(|b| b[var]["value"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

const NAMES: &str = "PREFIX foaf: <http://xmlns.com/foaf/0.1/> SELECT ?name WHERE { ?p foaf:name ?name } ORDER BY ?name";

#[test]
fn a_pod_answers_sparql_clients_over_the_documents_they_may_read() {
    let python = python();
    let node = NodeProcess::start();
    let key = node.admin_key();
    let url = |p: &str| format!("{}{p}", node.url());
    Curl::new("POST", url("/.cluster/pods"))
        .bearer(&key)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);
    let put = |path: &str, body: &str| {
        Curl::new("PUT", url(path))
            .bearer(&key)
            .header("Content-Type: text/turtle")
            .body(body.to_string())
            .send()
    };
    put(
        "/alice/public/people.ttl",
        "@prefix foaf: <http://xmlns.com/foaf/0.1/>. <#ann> foaf:name \"Ann\"; foaf:knows <#bob>. <#bob> foaf:name \"Bob\".",
    )
    .expect(201);
    put(
        "/alice/secret/diary.ttl",
        "@prefix foaf: <http://xmlns.com/foaf/0.1/>. <#cid> foaf:name \"Cid\".",
    )
    .expect(201);
    // Not RDF: not in the dataset.
    Curl::new("PUT", url("/alice/public/notes.txt"))
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body("foaf:name \"Nobody\"".to_string())
        .send()
        .expect(201);
    put(
        "/alice/public/.acl",
        "@prefix acl: <http://www.w3.org/ns/auth/acl#>. @prefix foaf: <http://xmlns.com/foaf/0.1/>. \
         <#r> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <./>; acl:default <./>; acl:mode acl:Read.",
    )
    .expect(201);
    let c = Client {
        python,
        endpoint: url("/alice/-/sparql"),
    };

    // The key holder: every document; the default graph is their union.
    assert_eq!(c.values(&key, "GET", NAMES, "name"), ["Ann", "Bob", "Cid"]);
    assert_eq!(c.values(&key, "POST", NAMES, "name"), ["Ann", "Bob", "Cid"]);
    // Anonymous: only what WAC lets anyone read.
    assert_eq!(c.values("", "GET", NAMES, "name"), ["Ann", "Bob"]);
    // Each document is a named graph, named by its URL.
    let graphs = c.values(
        &key,
        "GET",
        "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } } ORDER BY ?g",
        "g",
    );
    assert_eq!(
        graphs,
        [
            url("/alice/public/.acl"),
            url("/alice/public/people.ttl"),
            url("/alice/secret/diary.ttl")
        ]
    );
    let anon_graphs = c.values(
        "",
        "GET",
        "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }",
        "g",
    );
    assert_eq!(
        anon_graphs,
        [url("/alice/public/people.ttl")],
        "not the ACL, not the diary"
    );
    // Naming a graph the caller may not read gives nothing.
    let from = format!(
        "PREFIX foaf: <http://xmlns.com/foaf/0.1/> SELECT ?name FROM <{}> WHERE {{ ?p foaf:name ?name }}",
        url("/alice/secret/diary.ttl")
    );
    assert!(c.values("", "GET", &from, "name").is_empty());
    assert_eq!(c.values(&key, "GET", &from, "name"), ["Cid"]);

    // ASK, in XML; SELECT in CSV; CONSTRUCT and DESCRIBE as Turtle that rdflib reads.
    let r = c.ask(
        "",
        "xml",
        "GET",
        "ASK { ?s <http://xmlns.com/foaf/0.1/name> \"Cid\" }",
    );
    assert_eq!(r["boolean"], json!(["false"]), "{r}");
    let r = c.ask(&key, "xml", "GET", NAMES);
    assert_eq!(r["literals"], json!(["Ann", "Bob", "Cid"]), "{r}");
    let r = c.ask(&key, "csv", "GET", NAMES);
    assert_eq!(
        r["csv"].as_str().unwrap().replace("\r\n", "\n"),
        "name\nAnn\nBob\nCid\n"
    );
    let ann = url("/alice/public/people.ttl#ann");
    let bob = url("/alice/public/people.ttl#bob");
    let r = c.ask(
        "",
        "turtle",
        "GET",
        "PREFIX foaf: <http://xmlns.com/foaf/0.1/> CONSTRUCT { ?b foaf:knownBy ?a } WHERE { ?a foaf:knows ?b }",
    );
    assert_eq!(
        r["triples"],
        json!([[bob, "http://xmlns.com/foaf/0.1/knownBy", ann]]),
        "{r}"
    );
    let r = c.ask("", "turtle", "POST", &format!("DESCRIBE <{bob}>"));
    assert_eq!(
        r["triples"],
        json!([[bob, "http://xmlns.com/foaf/0.1/name", "Bob"]]),
        "{r}"
    );

    // Writes are seen by the next query: a changed document, a new one, a deleted one.
    put(
        "/alice/public/people.ttl",
        "@prefix foaf: <http://xmlns.com/foaf/0.1/>. <#ann> foaf:name \"Anna\".",
    )
    .expect(204);
    put(
        "/alice/public/more.ttl",
        "@prefix foaf: <http://xmlns.com/foaf/0.1/>. <#dee> foaf:name \"Dee\".",
    )
    .expect(201);
    Curl::new("DELETE", url("/alice/secret/diary.ttl"))
        .bearer(&key)
        .send()
        .expect(204);
    assert_eq!(c.values(&key, "GET", NAMES, "name"), ["Anna", "Dee"]);
    assert_eq!(c.values("", "GET", NAMES, "name"), ["Anna", "Dee"]);

    // Refusals that name the problem.
    let r = Curl::new("GET", format!("{}?query=SELECT%20WHERE", c.endpoint)).send();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not a SPARQL 1.1 query"), "{}", r.text());
    let r = Curl::new("GET", format!("{}?query=ASK%7B%7D", c.endpoint))
        .header("Accept: image/png")
        .send();
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(
        r.text().contains("application/sparql-results+json"),
        "{}",
        r.text()
    );
    let r = Curl::new("POST", c.endpoint.clone())
        .header("Content-Type: application/sparql-update")
        .body("INSERT DATA { <a> <b> <c> }".to_string())
        .send();
    assert_eq!(r.status, 415, "queries only: {}", r.text());
    let r = Curl::new("GET", c.endpoint.clone()).send();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no query"), "{}", r.text());
    let r = Curl::new("DELETE", c.endpoint.clone()).bearer(&key).send();
    assert_eq!(r.status, 405, "{}", r.text());
    // The endpoint of a pod that does not exist.
    let r = Curl::new("GET", url("/nobody/-/sparql?query=ASK%7B%7D")).send();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        node.stderr().matches("panicked").count() == 0,
        "{}",
        node.stderr()
    );
}
