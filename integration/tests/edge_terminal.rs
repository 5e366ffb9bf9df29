//! A terminal on an edge device (issue 20), with real processes: two centers on PostgreSQL,
//! an edge that allows terminals joined to the first and one that does not.
//!
//! Checks: `xpod nodes shell edge-1` through the *other* center (center-2 → center-1 → the
//! edge's tunnel) runs on the device (the shell's parent is the edge's process) and exits with
//! the command's code; the WebSocket carries the window's size, keys and a resize; a pod's
//! terminal `/{pod}/-/terminal` opens for a key that may write the pod and for an admin, and is
//! refused (with the reason) for a read-only key, another pod's key, no key, a pod on a
//! center; `/.cluster/nodes/…/terminal` needs an admin key and an edge; an edge whose own
//! configuration does not allow terminals refuses them (403 `terminal_disabled`); every session
//! is audited (who, which pod, how long); revoking the caller's key closes its terminal (1008),
//! and revoking the edge closes every terminal on it.

use std::time::Duration;

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_edge, wait_online};
use xpod_integration::eventually;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};
use xpod_integration::pg::PgServer;
use xpod_integration::terminal::{resize, session, Refused, Step};

fn new_key(center: &NodeProcess, owner: &str, scopes: &[&str]) -> (String, String) {
    let v = Curl::new("POST", format!("{}/api/v1/auth/api-keys", center.url()))
        .bearer(&center.admin_key())
        .json(&json!({"name": owner, "owner": owner, "scopes": scopes}))
        .send()
        .expect(201)
        .json();
    (
        v["key"].as_str().unwrap().to_string(),
        v["keyId"].as_str().unwrap().to_string(),
    )
}

fn create_pod(center: &NodeProcess, pod: &str, node: &str) {
    Curl::new("POST", format!("{}/.cluster/pods", center.url()))
        .bearer(&center.admin_key())
        .json(&json!({"podId": pod, "nodeId": node}))
        .send()
        .expect(201);
}

fn refused(url: &str, key: Option<&str>) -> Refused {
    match session(url, key, vec![]) {
        Err(r) => r,
        Ok(out) => panic!("{url} opened: {out:?}"),
    }
}

#[test]
fn terminals_on_edge_devices() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-terminal");
    let presence = tmp.path().join("presence.toml");
    std::fs::write(&presence, "[tunnel.presence]\nheartbeat_secs = 1\n").unwrap();
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_CONFIG", presence.display().to_string())]
    });
    let edge = start_edge(
        &tmp,
        &centers[0],
        "edge-1",
        "[tunnel]\nterminal = true\n\n[tunnel.presence]\nheartbeat_secs = 1\n",
    );
    let _closed = start_edge(
        &tmp,
        &centers[0],
        "edge-2",
        "[tunnel.presence]\nheartbeat_secs = 1\n",
    );
    wait_online(&centers[0], "edge-1");
    wait_online(&centers[0], "edge-2");
    let admin = centers[0].admin_key();
    let via = &centers[1];

    // The admin's shell, through the center that does not hold the tunnel: it runs on the
    // device, as a child of the edge's process, and its exit code comes back.
    let out = xpod_command()
        .args([
            "nodes",
            "shell",
            "edge-1",
            "--server",
            &via.url(),
            "--key",
            &admin,
        ])
        .args(["--", "sh", "-c", "echo parent=$PPID; exit 3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("parent={}", edge.pid())),
        "{stdout:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{stdout:?}");

    // The WebSocket: size, keys, a resize, the exit code.
    let node_url = |c: &NodeProcess, node: &str, q: &str| {
        format!("{}/.cluster/nodes/{node}/terminal?{q}", c.url())
    };
    let out = session(
        &node_url(via, "edge-1", "rows=20&cols=70&cmd=sh"),
        Some(&admin),
        vec![
            Step::Keys(b"stty size\r"),
            Step::Expect("20 70"),
            resize(44, 144),
            Step::Keys(b"stty size; exit 0\r"),
        ],
    )
    .expect("the admin's terminal opens");
    assert!(out.output.contains("44 144"), "{:?}", out.output);
    assert_eq!(out.exit, Some(0));

    // Who may: an admin key, on an edge.
    let (carol, _) = new_key(&centers[0], "carol", &["pod:devpod"]);
    let r = refused(&node_url(via, "edge-1", ""), Some(&carol));
    assert_eq!(r.status, 403, "a non-admin key: {}", r.body);
    let r = refused(&node_url(via, "center-1", ""), Some(&admin));
    assert_eq!(r.status, 409, "a center: {}", r.body);
    assert!(r.body.contains("edge devices"), "{}", r.body);
    let r = refused(&node_url(via, "edge-2", ""), Some(&admin));
    assert_eq!(r.status, 403, "an edge that does not allow it: {}", r.body);
    assert!(
        r.body.contains("terminal_disabled") && r.body.contains("[tunnel] terminal = false"),
        "{}",
        r.body
    );

    // A pod's terminal: the pod's writer and the admin; nobody else.
    create_pod(&centers[0], "devpod", "edge-1");
    create_pod(&centers[0], "cloudpod", "center-1");
    let (reader, _) = new_key(&centers[0], "carol", &["pod:devpod:read"]);
    let (other, _) = new_key(&centers[0], "dave", &["pod:cloudpod"]);
    let pod_url = |c: &NodeProcess, pod: &str, q: &str| format!("{}/{pod}/-/terminal?{q}", c.url());
    for (key, who) in [(&carol, "the pod's writer"), (&admin, "the admin")] {
        let out = session(
            &pod_url(
                via,
                "devpod",
                "cmd=sh&cmd=-c&cmd=echo%20pod-ok%3B%20exit%205",
            ),
            Some(key),
            vec![],
        )
        .unwrap_or_else(|r| panic!("{who}: {r:?}"));
        assert!(out.output.contains("pod-ok"), "{who}: {out:?}");
        assert_eq!(out.exit, Some(5), "{who}");
    }
    assert_eq!(refused(&pod_url(via, "devpod", ""), None).status, 401);
    let r = refused(&pod_url(via, "devpod", ""), Some(&reader));
    assert_eq!(r.status, 403, "a read-only key: {}", r.body);
    let r = refused(&pod_url(via, "devpod", ""), Some(&other));
    assert_eq!(r.status, 403, "another pod's key: {}", r.body);
    let r = refused(&pod_url(via, "cloudpod", ""), Some(&other));
    assert_eq!(r.status, 409, "a pod on a center: {}", r.body);
    let r = Curl::get(pod_url(via, "devpod", "")).bearer(&carol).send();
    assert_eq!(r.status, 426, "a plain GET: {}", r.text());

    // The audit log: every session, who, which pod, how long.
    let entries: Vec<Value> = eventually(10, "four sessions audited", || {
        let v = Curl::get(format!(
            "{}/api/v1/audit?target=node:edge-1&action=node.terminal*",
            centers[0].url()
        ))
        .bearer(&admin)
        .send()
        .expect(200)
        .json();
        let e = v["entries"].as_array().unwrap().clone();
        (e.len() >= 8).then_some(e)
    });
    let ends: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "node.terminal.end")
        .collect();
    assert_eq!(ends.len(), 4, "{entries:?}");
    assert!(ends.iter().all(|e| e["details"]["seconds"].is_u64()));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "node.terminal" && e["details"]["pod"] == "devpod"));

    // Revoking the caller's key closes its terminal.
    let (erin, erin_id) = new_key(&centers[0], "erin", &["pod:devpod"]);
    let (url0, admin0) = (centers[0].url(), admin.clone());
    let revoke = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        Curl::new("DELETE", format!("{url0}/api/v1/auth/api-keys/{erin_id}"))
            .bearer(&admin0)
            .send()
            .expect(204);
    });
    let out = session(
        &pod_url(via, "devpod", "cmd=sleep&cmd=60"),
        Some(&erin),
        vec![Step::Keys(b"x")],
    )
    .unwrap();
    revoke.join().unwrap();
    let (code, reason) = out.close.expect("a close frame");
    assert_eq!((code, out.exit), (1008, None), "{reason}");

    // Revoking the edge closes every terminal on it.
    let (url0, admin0) = (centers[0].url(), admin.clone());
    let revoke = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        Curl::new("POST", format!("{url0}/.cluster/nodes/edge-1/revoke"))
            .bearer(&admin0)
            .send()
            .expect(200);
    });
    let out = session(
        &node_url(via, "edge-1", "cmd=sleep&cmd=60"),
        Some(&admin),
        vec![Step::Keys(b"x")],
    )
    .unwrap();
    revoke.join().unwrap();
    assert_eq!(out.exit, None, "{out:?}");
    let (code, reason) = out.close.expect("a close frame");
    assert_eq!(code, 1011, "{reason}");
}
