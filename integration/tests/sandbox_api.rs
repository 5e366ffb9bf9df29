//! The sandbox API on a lone node (real binary, real bubblewrap): bad input is a 400 that names
//! the problem and creates nothing; scopes; exec timeouts and errors; patch (public ports);
//! the access token; a node without slots explains itself; a node killed under its sandboxes
//! records them stopped after its restart, a node shut down gracefully at once.
//! (Cluster behaviour: `sandboxes.rs`.)

use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::eventually;
use xpod_integration::node::NodeProcess;

fn call(node: &NodeProcess, method: &str, key: &str, path: &str, body: Option<&str>) -> Resp {
    let mut c = Curl::new(method, format!("{}/api/v1{path}", node.url())).bearer(key);
    if let Some(b) = body {
        c = c
            .header("Content-Type: application/json")
            .body(b.as_bytes().to_vec());
    }
    c.send()
}

fn key(node: &NodeProcess, owner: &str, scopes: &[&str]) -> String {
    call(
        node,
        "POST",
        &node.admin_key(),
        "/auth/api-keys",
        Some(&json!({"name": owner, "owner": owner, "scopes": scopes}).to_string()),
    )
    .expect(201)
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn bwrap_missing(test: &str) -> bool {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED {test}: bubblewrap (bwrap) is not installed; the test runner installs it (apt-get install bubblewrap)");
        return true;
    }
    false
}

#[test]
fn sandbox_api_on_a_lone_node() {
    if bwrap_missing("sandbox_api_on_a_lone_node") {
        return;
    }
    let mut node = NodeProcess::builder()
        .env("XPOD_SANDBOX_SLOTS", "3")
        .start();
    let admin = node.admin_key();
    let alice = key(&node, "alice", &["sandbox"]);
    let reader = key(&node, "alice", &["sandbox:read"]);
    let podder = key(&node, "alice", &["pod:alice"]);

    // Bad input: 400 naming the problem, nothing created.
    for (body, names) in [
        ("{", "invalid JSON"),
        (r#"{"nmae": "x"}"#, "nmae"),
        (r#"{"resources": {"cpu": 0}}"#, "resources"),
        (r#"{"timeout": 5}"#, "timeout"),
        (r#"{"env": {"A=B": "x"}}"#, "env"),
        (r#"{"image": "../etc"}"#, "image"),
        (r#"{"node": "Not A Node"}"#, "node"),
        (r#"{"name": "a\u0001b"}"#, "name"),
    ] {
        let r = call(&node, "POST", &alice, "/sandboxes", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().contains(names),
            "{body}: {}",
            r.text()
        );
    }
    let listed = call(&node, "GET", &alice, "/sandboxes", None)
        .expect(200)
        .json();
    assert_eq!(listed["total"], 0, "bad input created nothing");
    let r = call(&node, "GET", &alice, "/sandboxes?limit=0", None);
    assert_eq!(r.status, 400);
    let r = call(&node, "GET", &alice, "/sandboxes?status=sleeping", None);
    assert_eq!(r.status, 400);

    // Scopes.
    let r = call(&node, "POST", &podder, "/sandboxes", Some("{}"));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("sandbox scope"), "{}", r.text());
    let r = call(&node, "POST", &reader, "/sandboxes", Some("{}"));
    assert_eq!(r.status, 403);
    let r = call(&node, "GET", "xp_000000000000_0000", "/sandboxes", None);
    assert_eq!(r.status, 401);

    // An image no node offers: the sandbox is recorded failed, the answer says why.
    let r = call(
        &node,
        "POST",
        &alice,
        "/sandboxes",
        Some(r#"{"image": "python"}"#),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let e = r.json();
    assert!(
        e["message"].as_str().unwrap().contains("image \"python\""),
        "{e}"
    );
    assert_eq!(e["details"]["status"], "failed");

    // A sandbox; exec errors and timeouts.
    let sb = call(
        &node,
        "POST",
        &alice,
        "/sandboxes",
        Some(r#"{"name": "one", "timeout": 600}"#),
    )
    .expect(201)
    .json();
    let id = sb["id"].as_str().unwrap().to_string();
    let token = sb["accessToken"].as_str().unwrap().to_string();
    assert_eq!(
        call(&node, "GET", &reader, &format!("/sandboxes/{id}"), None).status,
        200
    );
    for body in [
        r#"{"cmd": []}"#,
        r#"{"cmd": ["x"], "timeout": 0}"#,
        r#"{"cmd": ["x"], "stdin": "a", "stdinBase64": "YQ=="}"#,
        r#"{"command": ["x"]}"#,
    ] {
        let r = call(
            &node,
            "POST",
            &alice,
            &format!("/sandboxes/{id}/exec"),
            Some(body),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let r = call(
        &node,
        "POST",
        &reader,
        &format!("/sandboxes/{id}/exec"),
        Some(r#"{"cmd": ["true"]}"#),
    );
    assert_eq!(r.status, 403, "a read-only key cannot exec");
    let r = call(
        &node,
        "POST",
        &alice,
        &format!("/sandboxes/{id}/exec"),
        Some(r#"{"cmd": ["sleep", "30"], "timeout": 1}"#),
    )
    .expect(200);
    let end: Value = r
        .text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "end")
        .expect("an end event");
    assert_eq!(
        (end["exitCode"].as_i64(), end["timedOut"].as_bool()),
        (Some(137), Some(true))
    );
    let r = call(
        &node,
        "POST",
        &alice,
        &format!("/sandboxes/{id}/exec"),
        Some(r#"{"cmd": ["base64"], "stdinBase64": "AAEC/w=="}"#),
    )
    .expect(200);
    assert!(
        r.text().contains("\"data\":\"QUFFQy93PT0K\""),
        "binary stdin arrives intact: {}",
        r.text()
    );
    assert_eq!(
        call(&node, "GET", &alice, "/sandboxes/sbffffffffffffff", None).status,
        404
    );
    assert_eq!(
        call(&node, "GET", &alice, "/sandboxes/nope", None).status,
        404
    );

    // A server inside; private by default; the token opens it; patch makes it public.
    call(
        &node,
        "POST",
        &alice,
        &format!("/sandboxes/{id}/exec"),
        Some(r#"{"cmd": ["sh", "-c", "echo hello > index.html; nohup python3 -m http.server 8000 >/dev/null 2>&1 &"]}"#),
    )
    .expect(200);
    let url = format!("{}/api/v1/sandboxes/{id}/ports/8000/index.html", node.url());
    eventually(10, "the server answers with the token", || {
        let r = Curl::get(&url)
            .header(format!("X-Sandbox-Token: {token}"))
            .send();
        (r.status == 200 && r.text() == "hello\n").then_some(())
    });
    assert_eq!(Curl::get(&url).send().status, 401);
    assert_eq!(
        Curl::get(&url)
            .header("X-Sandbox-Token: sbt_wrong")
            .send()
            .status,
        404
    );
    let p = call(
        &node,
        "PATCH",
        &alice,
        &format!("/sandboxes/{id}"),
        Some(r#"{"public": true, "name": "renamed", "annotations": {"team": "a"}}"#),
    )
    .expect(200)
    .json();
    assert_eq!(
        (p["public"].as_bool(), p["name"].as_str()),
        (Some(true), Some("renamed"))
    );
    let r = Curl::get(&url).send();
    assert_eq!(
        (r.status, r.text()),
        (200, "hello\n".to_string()),
        "public now"
    );
    assert_eq!(
        call(
            &node,
            "PATCH",
            &alice,
            &format!("/sandboxes/{id}"),
            Some(r#"{"timeout": 1}"#)
        )
        .status,
        400
    );

    // Metrics count what ran.
    let m = Curl::get(format!("{}/metrics", node.url()))
        .send()
        .expect(200)
        .text();
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert_eq!(value("xpod_sandbox_slots"), 3);
    assert_eq!(value("xpod_sandboxes_running"), 1);
    assert!(value("xpod_sandbox_execs_total") >= 3);
    assert_eq!(value("xpod_sandbox_starts_total"), 1);

    // The audit log has the writes.
    let audit = call(&node, "GET", &admin, "/audit?limit=50", None)
        .expect(200)
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["sandbox.create", "sandbox.exec", "sandbox.update"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    // Filters: by action prefix, by target, by actor; bad parameters are named.
    let f = call(
        &node,
        "GET",
        &admin,
        "/audit?action=sandbox.&limit=1000",
        None,
    )
    .expect(200)
    .json();
    let f = f["entries"].as_array().unwrap();
    assert!(
        f.len() >= 4
            && f.iter()
                .all(|e| e["action"].as_str().unwrap().starts_with("sandbox."))
    );
    let f = call(
        &node,
        "GET",
        &admin,
        &format!("/audit?target=sandbox:{id}&action=sandbox.exec"),
        None,
    )
    .expect(200)
    .json();
    let f = f["entries"].as_array().unwrap();
    assert_eq!(f.len(), 3, "the three execs of {id}: {f:?}");
    assert!(f
        .iter()
        .all(|e| e["target"] == format!("sandbox:{id}") && e["action"] == "sandbox.exec"));
    let actor = f[0]["actor"].as_str().unwrap().to_string();
    let f = call(
        &node,
        "GET",
        &admin,
        &format!("/audit?actor={actor}&limit=2"),
        None,
    )
    .expect(200)
    .json();
    assert_eq!(f["entries"].as_array().unwrap().len(), 2);
    let f = call(&node, "GET", &admin, "/audit?action=no.such", None)
        .expect(200)
        .json();
    assert!(f["entries"].as_array().unwrap().is_empty());
    let r = call(&node, "GET", &admin, "/audit?colour=red", None);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("colour"));

    // A node restarted under its sandboxes: they are recorded stopped, not left running.
    node.kill9();
    node.restart();
    let v = eventually(20, "the lost sandbox is recorded stopped", || {
        let v = call(&node, "GET", &alice, &format!("/sandboxes/{id}"), None)
            .expect(200)
            .json();
        (v["status"] == "stopped").then_some(v)
    });
    assert!(
        v["error"].as_str().unwrap().contains("no longer runs it"),
        "{v}"
    );
    let r = call(
        &node,
        "POST",
        &alice,
        &format!("/sandboxes/{id}/exec"),
        Some(r#"{"cmd": ["true"]}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    call(&node, "DELETE", &alice, &format!("/sandboxes/{id}"), None).expect(204);
    assert!(
        !node.data_dir().join("sandboxes").join(&id).exists(),
        "files removed"
    );

    // A graceful shutdown stops the node's sandboxes and records why.
    let id2 = call(&node, "POST", &alice, "/sandboxes", Some("{}"))
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(node.terminate().success());
    node.restart();
    let v = call(&node, "GET", &alice, &format!("/sandboxes/{id2}"), None)
        .expect(200)
        .json();
    assert_eq!(
        (v["status"].as_str(), v["error"].as_str()),
        (Some("stopped"), Some("its node shut down")),
        "{v}"
    );
}

#[test]
fn a_node_without_slots_says_how_to_offer_them() {
    let node = NodeProcess::start();
    let r = call(&node, "POST", &node.admin_key(), "/sandboxes", Some("{}"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("XPOD_SANDBOX_SLOTS"), "{}", r.text());
}
