//! Issue 17, RDF: a pod serves RDF documents in the format a client asks for, refuses RDF it
//! cannot parse (naming line and column), applies N3 Patch and SPARQL Update with the Solid
//! Protocol's statuses, creates containers on POST, and ignores credentials it does not
//! recognise on a public pod — the real `xpod` binary, curl as the client.
//!
//! Needs `curl` on PATH and the binary built first (`cargo build -p xpod-node`).

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::node::NodeProcess;

const ALICE: &str =
    "@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n<#me> a foaf:Person; foaf:name \"Alice\".\n";

fn req(node: &NodeProcess, method: &str, path: &str) -> Curl {
    Curl::new(method, format!("{}{path}", node.url()))
}

#[track_caller]
fn code(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["code"], code, "{}", r.text());
}

fn setup(access: &str) -> (NodeProcess, String) {
    let node = NodeProcess::start();
    let key = node.admin_key();
    req(&node, "POST", "/.cluster/pods")
        .bearer(&key)
        .json(&json!({"podId": "alice", "accessMode": access}))
        .send()
        .expect(201);
    (node, key)
}

#[test]
fn rdf_is_served_in_the_format_asked_for_and_checked_on_write() {
    let (node, key) = setup("private");
    let put = |path: &str, ct: &str, body: &str| {
        req(&node, "PUT", path)
            .bearer(&key)
            .header(format!("Content-Type: {ct}"))
            .body(body.to_string())
            .send()
    };
    put("/alice/profile", "text/turtle", ALICE).expect(201);
    let url = format!("{}/alice/profile", node.url());

    // Stored bytes as they were sent, for the stored format or no preference.
    let r = req(&node, "GET", "/alice/profile")
        .bearer(&key)
        .send()
        .expect(200);
    assert_eq!(r.text(), ALICE);
    assert!(
        r.header("vary").is_some_and(|v| v.contains("Accept")),
        "{:?}",
        r.headers
    );
    assert!(
        r.headers_all("link")
            .iter()
            .any(|l| l.contains("ldp#RDFSource")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("accept-patch"),
        Some("text/n3, application/sparql-update")
    );

    // JSON-LD on request: the same triples, with absolute IRIs resolved against the URL.
    let r = req(&node, "GET", "/alice/profile")
        .bearer(&key)
        .header("Accept: application/ld+json")
        .send()
        .expect(200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/ld+json"));
    let ld = r.json();
    let text = ld.to_string();
    assert!(
        text.contains("Alice") && text.contains("http://xmlns.com/foaf/0.1/name"),
        "{text}"
    );

    // N-Triples, by q-value.
    let r = req(&node, "GET", "/alice/profile")
        .bearer(&key)
        .header("Accept: text/turtle;q=0.5, application/n-triples")
        .send()
        .expect(200);
    assert_eq!(r.header("content-type"), Some("application/n-triples"));
    assert!(
        r.text().contains(&format!(
            "<{url}#me> <http://xmlns.com/foaf/0.1/name> \"Alice\" ."
        )),
        "{}",
        r.text()
    );
    // Nothing acceptable.
    code(
        &req(&node, "GET", "/alice/profile")
            .bearer(&key)
            .header("Accept: image/png")
            .send(),
        406,
        "not_acceptable",
    );

    // JSON-LD in, Turtle out.
    let doc = json!({"@id": "#b", "http://xmlns.com/foaf/0.1/name": "Bob"}).to_string();
    put("/alice/bob.jsonld", "application/ld+json", &doc).expect(201);
    let r = req(&node, "GET", "/alice/bob.jsonld")
        .bearer(&key)
        .header("Accept: text/turtle")
        .send()
        .expect(200);
    assert!(r.header("content-type").unwrap().starts_with("text/turtle"));
    assert!(r.text().contains("\"Bob\""), "{}", r.text());

    // Unparsable RDF is refused, naming where, and nothing is written.
    let bad = "@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n<#me> foaf:name \"Alice\" ;\n  foaf:knows <#bob .\n";
    let r = put("/alice/profile", "text/turtle", bad);
    code(&r, 400, "invalid_rdf");
    assert!(
        r.json()["message"].as_str().unwrap().contains("line 3"),
        "{}",
        r.text()
    );
    let r = req(&node, "GET", "/alice/profile")
        .bearer(&key)
        .send()
        .expect(200);
    assert_eq!(r.text(), ALICE, "the refused PUT changed nothing");
    code(
        &put("/alice/x.nt", "application/n-triples", "<a> <b>"),
        400,
        "invalid_rdf",
    );

    // Containers are listed in every RDF format.
    let r = req(&node, "GET", "/alice/")
        .bearer(&key)
        .header("Accept: application/n-triples")
        .send()
        .expect(200);
    assert!(
        r.text().contains(&format!(
            "<{}/alice/> <http://www.w3.org/ns/ldp#contains> <{url}> .",
            node.url()
        )),
        "{}",
        r.text()
    );
}

#[test]
fn patch_with_n3_and_sparql_update() {
    let (node, key) = setup("private");
    req(&node, "PUT", "/alice/card")
        .bearer(&key)
        .header("Content-Type: text/turtle")
        .body(ALICE)
        .send()
        .expect(201);
    let patch = |ct: &str, body: &str| {
        req(&node, "PATCH", "/alice/card")
            .bearer(&key)
            .header(format!("Content-Type: {ct}"))
            .body(body.to_string())
            .send()
    };
    let n3 = |body: &str| {
        patch(
            "text/n3",
            &format!("@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix foaf: <http://xmlns.com/foaf/0.1/>.\n{body}"),
        )
    };
    let r = n3("_:p a solid:InsertDeletePatch; solid:where { ?me foaf:name \"Alice\" }; solid:deletes { ?me foaf:name \"Alice\" }; solid:inserts { ?me foaf:name \"Alice A.\" }.");
    assert_eq!(r.status, 205, "{}", r.text());
    let etag = r.header("etag").unwrap().to_string();
    let ttl = req(&node, "GET", "/alice/card")
        .bearer(&key)
        .header("Accept: application/n-triples")
        .send()
        .expect(200)
        .text();
    assert!(
        ttl.contains("\"Alice A.\"") && !ttl.contains("\"Alice\" "),
        "{ttl}"
    );

    // The Solid Protocol's refusals.
    code(&n3("_:p a solid:InsertDeletePatch; solid:where { ?x foaf:name \"Nobody\" }; solid:inserts { ?x foaf:age 3 }."), 409, "patch_conflict");
    code(
        &n3("_:p a solid:InsertDeletePatch; solid:deletes { <#me> foaf:name \"Zed\" }."),
        409,
        "patch_conflict",
    );
    code(
        &n3("_:p a solid:InsertDeletePatch; solid:inserts { ?y foaf:age 3 }."),
        422,
        "unprocessable_patch",
    );
    code(
        &n3("_:p a solid:InsertDeletePatch; solid:inserts { <#me> foaf:age 3 "),
        400,
        "invalid_patch",
    );
    let r = patch("text/plain", "hello");
    code(&r, 415, "unsupported_media_type");
    assert_eq!(
        r.header("accept-patch"),
        Some("text/n3, application/sparql-update")
    );

    // SPARQL Update, the way @inrupt/solid-client sends it (trailing `;`).
    let r = patch(
        "application/sparql-update",
        "DELETE DATA { <#me> <http://xmlns.com/foaf/0.1/name> \"Alice A.\" . };\nINSERT DATA { <#me> <http://xmlns.com/foaf/0.1/nick> \"al\" . };",
    );
    assert_eq!(r.status, 205, "{}", r.text());
    code(
        &patch("application/sparql-update", "CLEAR DEFAULT"),
        501,
        "unsupported_patch",
    );

    // If-Match: a stale entity tag is refused, the current one works.
    let r = req(&node, "PATCH", "/alice/card")
        .bearer(&key)
        .header("Content-Type: application/sparql-update")
        .header(format!("If-Match: {etag}"))
        .body("INSERT DATA { <#me> <http://xmlns.com/foaf/0.1/age> 40 }")
        .send();
    code(&r, 412, "precondition_failed");
    let body = req(&node, "GET", "/alice/card")
        .bearer(&key)
        .send()
        .expect(200)
        .text();
    assert!(body.contains("nick") && !body.contains("age"), "{body}");

    // PATCH creates a missing document (as Turtle).
    let r = req(&node, "PATCH", "/alice/new/doc")
        .bearer(&key)
        .header("Content-Type: application/sparql-update")
        .body("INSERT DATA { <#x> <http://example.org/p> \"v\" }")
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = req(&node, "GET", "/alice/new/doc")
        .bearer(&key)
        .send()
        .expect(200);
    assert!(r.header("content-type").unwrap().starts_with("text/turtle"));

    // A non-RDF document is not patched.
    req(&node, "PUT", "/alice/plain.txt")
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body("x")
        .send()
        .expect(201);
    let r = req(&node, "PATCH", "/alice/plain.txt")
        .bearer(&key)
        .header("Content-Type: application/sparql-update")
        .body("INSERT DATA { <#x> <http://example.org/p> 1 }")
        .send();
    code(&r, 409, "conflict");
    // Without credentials on a private pod: 401.
    let r = req(&node, "PATCH", "/alice/card")
        .header("Content-Type: application/sparql-update")
        .body("INSERT DATA { <#x> <http://example.org/p> 1 }")
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn post_creates_the_container_and_public_pods_ignore_unknown_credentials() {
    let (node, key) = setup("public-read");
    let r = req(&node, "POST", "/alice/new/deeper/")
        .bearer(&key)
        .header("Content-Type: text/turtle")
        .header("Slug: first")
        .body(ALICE)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some("/alice/new/deeper/first"));
    req(&node, "GET", "/alice/new/deeper/").send().expect(200);

    // The storage description: public, linked from every resource.
    let r = req(&node, "GET", "/alice/new/deeper/first")
        .send()
        .expect(200);
    assert!(
        r.headers_all("link").iter().any(|l| {
            l.contains(
            "<../../.well-known/solid>; rel=\"http://www.w3.org/ns/solid/terms#storageDescription\""
        )
        }),
        "{:?}",
        r.headers
    );
    let d = req(&node, "GET", "/alice/.well-known/solid")
        .send()
        .expect(200);
    assert!(
        d.text()
            .contains(&format!("<{}/alice/> a pim:Storage", node.url())),
        "{}",
        d.text()
    );
    assert_eq!(
        req(&node, "PUT", "/alice/.well-known/solid")
            .bearer(&key)
            .header("Content-Type: text/turtle")
            .body("<a> <b> <c>.")
            .send()
            .status,
        405
    );

    // A token this node does not know (a Solid app's DPoP token, a stale key) on a public
    // read: ignored.
    let r = req(&node, "GET", "/alice/new/deeper/first")
        .header("Authorization: DPoP eyJhbGciOiJFUzI1NiJ9.e30.sig")
        .header("DPoP: eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig")
        .send()
        .expect(200);
    assert_eq!(r.text(), ALICE);
    req(&node, "GET", "/alice/new/deeper/first")
        .bearer(&format!("xp_{}_{}", "0".repeat(12), "0".repeat(64)))
        .send()
        .expect(200);
    // Where credentials are needed, the answer says why the ones given were not accepted.
    let r = req(&node, "PUT", "/alice/x.txt")
        .header("Authorization: DPoP eyJhbGciOiJFUzI1NiJ9.e30.sig")
        .header("Content-Type: text/plain")
        .body("x")
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["code"], "invalid_dpop_proof", "{}", r.text());
    let challenge = r.headers_all("www-authenticate").join(" | ");
    assert!(
        challenge.contains("DPoP error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
}
