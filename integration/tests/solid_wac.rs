//! Issue 17, Web Access Control on a lone node (the real `xpod` binary, curl as the client):
//! `.acl` documents decide what anonymous callers and keys without the pod's scope may do,
//! with inheritance through `acl:default`, Append distinct from Write, Control guarding the
//! ACLs themselves, `WAC-Allow` on every answer and a change to an ACL in force at once. API
//! keys with the pod's scope keep every mode. (WebID agents arrive with Solid-OIDC; their
//! rules — agents, groups, origins — are unit-tested in `node::solid::wac`.)
//!
//! Needs `curl` on PATH and the binary built first (`cargo build -p xpod-node`).

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::node::NodeProcess;

fn req(node: &NodeProcess, method: &str, path: &str) -> Curl {
    Curl::new(method, format!("{}{path}", node.url()))
}

fn put_acl(node: &NodeProcess, key: &str, path: &str, body: &str) -> Resp {
    req(node, "PUT", path)
        .bearer(key)
        .header("Content-Type: text/turtle")
        .body(format!(
            "@prefix acl: <http://www.w3.org/ns/auth/acl#>. @prefix foaf: <http://xmlns.com/foaf/0.1/>.\n{body}"
        ))
        .send()
}

#[track_caller]
fn wac_allow(r: &Resp) -> String {
    r.header("wac-allow")
        .unwrap_or_else(|| panic!("no WAC-Allow on {} {:?}", r.status, r.headers))
        .to_string()
}

#[test]
fn acls_decide_what_anonymous_callers_may_do() {
    let node = NodeProcess::start();
    let key = node.admin_key();
    req(&node, "POST", "/.cluster/pods")
        .bearer(&key)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);
    let put = |path: &str, body: &str| {
        req(&node, "PUT", path)
            .bearer(&key)
            .header("Content-Type: text/turtle")
            .body(body.to_string())
            .send()
    };
    put("/alice/public/note", "<#a> <http://e/p> 1.").expect(201);
    put("/alice/secret/note", "<#a> <http://e/p> 2.").expect(201);
    put("/alice/inbox/first", "<#a> <http://e/p> 3.").expect(201);

    // A private pod without any .acl: the default ACL grants the public nothing.
    let r = req(&node, "GET", "/alice/public/note").send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(wac_allow(&r), "user=\"\",public=\"\"");
    // The key holder sees every mode, and the link to the ACL.
    let r = req(&node, "GET", "/alice/public/note")
        .bearer(&key)
        .send()
        .expect(200);
    assert_eq!(
        wac_allow(&r),
        "user=\"read write append control\",public=\"\""
    );
    assert!(
        r.headers_all("link")
            .iter()
            .any(|l| l.contains("<note.acl>; rel=\"acl\"")),
        "{:?}",
        r.headers
    );
    // The default root ACL is shown to those with Control, to nobody else.
    let r = req(&node, "GET", "/alice/.acl")
        .bearer(&key)
        .send()
        .expect(200);
    assert!(r.header("content-type").unwrap().starts_with("text/turtle"));
    assert!(
        r.text().contains("@prefix acl:") && !r.text().contains("foaf:Agent"),
        "a private pod's default ACL has no public authorization: {}",
        r.text()
    );
    assert_eq!(req(&node, "GET", "/alice/.acl").send().status, 401);

    // Public read of /public/ (inherited by its members), Append to /inbox/.
    put_acl(
        &node,
        &key,
        "/alice/public/.acl",
        "<#r> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <./>; acl:default <./>; acl:mode acl:Read.",
    )
    .expect(201);
    put_acl(
        &node,
        &key,
        "/alice/inbox/.acl",
        "<#a> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <./>; acl:default <./>; acl:mode acl:Append.",
    )
    .expect(201);
    let r = req(&node, "GET", "/alice/public/note").send().expect(200);
    assert_eq!(wac_allow(&r), "user=\"read\",public=\"read\"");
    assert_eq!(req(&node, "GET", "/alice/secret/note").send().status, 401);
    // Read is not Write.
    let r = req(&node, "PUT", "/alice/public/note")
        .header("Content-Type: text/turtle")
        .body("<#defaced> <http://e/p> 0.")
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.json()["message"].as_str().unwrap().contains("write"),
        "{}",
        r.text()
    );

    // Append: a new member by POST, an insert-only PATCH; not a replace, not a delete.
    let r = req(&node, "POST", "/alice/inbox/")
        .header("Content-Type: text/turtle")
        .header("Slug: trick.acl")
        .body("<#m> <http://e/p> 4.")
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !r.header("location").unwrap().ends_with(".acl"),
        "a POST never creates an ACL"
    );
    let r = req(&node, "PATCH", "/alice/inbox/first")
        .header("Content-Type: application/sparql-update")
        .body("INSERT DATA { <#b> <http://e/p> 5 }")
        .send();
    assert_eq!(r.status, 205, "{}", r.text());
    let r = req(&node, "PATCH", "/alice/inbox/first")
        .header("Content-Type: application/sparql-update")
        .body("DELETE DATA { <#b> <http://e/p> 5 }")
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        req(&node, "PUT", "/alice/inbox/first")
            .header("Content-Type: text/turtle")
            .body("<#x> <http://e/p> 0.")
            .send()
            .status,
        401
    );
    assert_eq!(
        req(&node, "DELETE", "/alice/inbox/first").send().status,
        401
    );
    // Append does not reach the ACL: that needs Control.
    let r = put_acl(
        &node,
        "",
        "/alice/inbox/.acl",
        "<#all> acl:agentClass foaf:Agent; acl:default <./>; acl:mode acl:Control.",
    );
    assert_eq!(r.status, 401, "{}", r.text());

    // Control alone governs an ACL: a caller with Control (inherited) but no Append on the
    // container may create a member's ACL, and nothing else there.
    put_acl(
        &node,
        &key,
        "/alice/ctl/.acl",
        "<#c> a acl:Authorization; acl:agentClass foaf:Agent; acl:default <./>; acl:mode acl:Control.",
    )
    .expect(201);
    let r = put_acl(
        &node,
        "",
        "/alice/ctl/doc.acl",
        "<#r> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <doc>; acl:mode acl:Read.",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = req(&node, "PUT", "/alice/ctl/doc")
        .header("Content-Type: text/turtle")
        .body("<#x> <http://e/p> 1.")
        .send();
    assert_eq!(r.status, 401, "Control is not Write: {}", r.text());

    // A key for another pod is an authenticated caller the ACL does not name: 403.
    let other = req(&node, "POST", "/api/v1/auth/api-keys")
        .bearer(&key)
        .json(&json!({"name": "bob", "scopes": ["pod:bob"]}))
        .send()
        .expect(201)
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = req(&node, "GET", "/alice/secret/note")
        .bearer(&other)
        .send();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(wac_allow(&r), "user=\"\",public=\"\"");
    req(&node, "GET", "/alice/public/note")
        .bearer(&other)
        .send()
        .expect(200);

    // Changing an ACL takes effect at once (the cached decision is dropped).
    put_acl(&node, &key, "/alice/public/.acl", "<#none> a acl:Authorization; acl:agentClass foaf:Agent; acl:default <./>; acl:mode acl:Append.").expect(204);
    let r = req(&node, "GET", "/alice/public/note").send();
    assert_eq!(r.status, 401, "{}", r.text());
    // Deleting it falls back to the pod's default (private).
    req(&node, "DELETE", "/alice/public/.acl")
        .bearer(&key)
        .send()
        .expect(204);
    assert_eq!(req(&node, "GET", "/alice/public/note").send().status, 401);
}

#[test]
fn access_modes_become_the_default_acl() {
    let node = NodeProcess::start();
    let key = node.admin_key();
    req(&node, "POST", "/.cluster/pods")
        .bearer(&key)
        .json(&json!({"podId": "pub", "accessMode": "public-read", "accountId": "https://alice.example/profile#me"}))
        .send()
        .expect(201);
    req(&node, "PUT", "/pub/a.txt")
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body("hello")
        .send()
        .expect(201);
    let r = req(&node, "GET", "/pub/a.txt").send().expect(200);
    assert_eq!(wac_allow(&r), "user=\"read\",public=\"read\"");
    let acl = req(&node, "GET", "/pub/.acl")
        .bearer(&key)
        .send()
        .expect(200)
        .text();
    assert!(
        acl.contains("<https://alice.example/profile#me>"),
        "the owner WebID: {acl}"
    );
    assert!(acl.contains("foaf:Agent"), "{acl}");
    // The ACL itself is not public.
    assert_eq!(req(&node, "GET", "/pub/.acl").send().status, 401);
}
