//! Two tenants on one node (real binary, real bubblewrap; keys made with the CLI as an admin
//! would): neither reaches the other.
//!
//! - The control-channel escape: tenant A plants a link to B's supervisor socket where the
//!   node used to connect (`/.xpod/ctl.sock`), binds sockets of its own, then runs a command:
//!   it runs in A's sandbox, sees A's files, never B's secret; the node stays healthy.
//! - Keys made without `--owner` are their own owners: A cannot list, get, exec in, patch,
//!   delete B's sandbox or see B's webhooks (404), and each has its own quota. A key without
//!   `--scope` is refused with the list of scopes.
//! - `sandbox:read` only reads: GET through a port route works, POST and upgrades are 403;
//!   a webhook's secret is not shown to it.
//! - Those refusals are in the audit log (`refused.not_owner`, `refused.403`).
//! - `network: true` needs a key with `sandbox:network` (403 otherwise).
//! - A command whose client went away no longer keeps its sandbox from the idle stop.

use base64::Engine as _;
use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::eventually;
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};

fn api(node: &NodeProcess, method: &str, key: &str, path: &str) -> Curl {
    Curl::new(method, format!("{}/api/v1{path}", node.url())).bearer(key)
}

/// `xpod keys create` as the admin: (key, owner).
fn cli_key(node: &NodeProcess, args: &[&str]) -> (String, String) {
    let out = xpod_command()
        .args(["keys", "create", "--json", "--server", &node.url(), "--key"])
        .arg(node.admin_key())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys create {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["key"].as_str().unwrap().to_string(),
        v["owner"].as_str().unwrap().to_string(),
    )
}

fn create(node: &NodeProcess, key: &str, body: Value) -> Resp {
    api(node, "POST", key, "/sandboxes").json(&body).send()
}

/// Runs `script` with `sh -c` in `id`: (stdout, exit code).
fn sh(node: &NodeProcess, key: &str, id: &str, script: &str) -> (String, i64) {
    let r = api(node, "POST", key, &format!("/sandboxes/{id}/exec"))
        .json(&json!({"cmd": ["sh", "-c", script], "timeout": 30}))
        .send();
    assert_eq!(r.status, 200, "exec {script:?}: {}", r.text());
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut out, mut code) = (Vec::new(), None);
    for line in r.text().lines() {
        let ev: Value = serde_json::from_str(line).unwrap();
        match ev["type"].as_str().unwrap() {
            "stdout" => out.extend(b64.decode(ev["data"].as_str().unwrap()).unwrap()),
            "end" => code = ev["exitCode"].as_i64(),
            "error" => panic!("exec {script:?}: {ev}"),
            _ => {}
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        code.expect("an end event"),
    )
}

#[test]
fn tenants_cannot_reach_each_other() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED tenants_cannot_reach_each_other: bubblewrap (bwrap) is not installed; the test runner installs it (apt-get install bubblewrap)");
        return;
    }
    let tmp = TempDir::new("tenants");
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        "[sandbox]\nslots = 4\nquota_sandboxes = 1\nuid_base = 240000\n",
    )
    .unwrap();
    let node = NodeProcess::builder()
        .env("XPOD_CONFIG", config.display().to_string())
        .start();

    // A key without a scope is refused, naming the scopes; keys without --owner own themselves.
    let out = xpod_command()
        .args([
            "keys",
            "create",
            "--name",
            "x",
            "--server",
            &node.url(),
            "--key",
        ])
        .arg(node.admin_key())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--scope") && err.contains("sandbox:read") && err.contains("pod:<podId>"),
        "{err}"
    );
    let (a, owner_a) = cli_key(&node, &["--name", "tenant-a", "--scope", "sandbox"]);
    let (b, owner_b) = cli_key(&node, &["--name", "tenant-b", "--scope", "sandbox"]);
    assert_ne!(
        owner_a, owner_b,
        "two keys made without --owner share nothing"
    );
    assert_ne!(owner_a, "admin");
    let (a_reader, _) = cli_key(
        &node,
        &[
            "--name",
            "a-reader",
            "--scope",
            "sandbox:read",
            "--owner",
            &owner_a,
        ],
    );

    // Network is for keys that may ask for it (sandbox:network or admin).
    let r = create(&node, &a, json!({"network": true}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("sandbox:network"), "{}", r.text());

    // Each has its own quota (1 sandbox): both create one, neither a second.
    let sb_b = create(&node, &b, json!({"timeout": 600}))
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sb_a = create(&node, &a, json!({"timeout": 10})).expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = create(&node, &a, json!({}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["code"], "quota_exceeded");

    assert_eq!(sh(&node, &b, &sb_b, "echo b-secret > secret").1, 0);
    assert_eq!(sh(&node, &a, &sb_a, "echo a-own > mine").1, 0);

    // The control-channel escape: links and sockets where the node once connected.
    let plant = format!(
        "mkdir -p /.xpod 2>/dev/null; ln -sf ../../{sb_b}/ctl/ctl.sock /.xpod/ctl.sock 2>/dev/null; \
         ln -sf ../../{sb_b}/ctl/ctl.sock /work/ctl.sock; \
         python3 -c 'import socket; [socket.socket(socket.AF_UNIX).bind(p) for p in (\"/tmp/ctl.sock\", \"/work/ctl2.sock\")]'; \
         test -e /.xpod && echo present || echo absent"
    );
    let (out, _) = sh(&node, &a, &sb_a, &plant);
    assert_eq!(
        out.trim(),
        "absent",
        "the sandbox's root holds no control socket directory"
    );
    let (out, code) = sh(&node, &a, &sb_a, "cat mine; cat secret");
    assert_eq!(
        out, "a-own\n",
        "A's command ran in A's sandbox and saw only A's files"
    );
    assert_ne!(code, 0);
    assert!(!out.contains("b-secret"));
    assert_eq!(
        sh(&node, &b, &sb_b, "cat secret").0,
        "b-secret\n",
        "B unharmed"
    );
    Curl::get(format!("{}/health", node.url()))
        .send()
        .expect(200);

    // A cannot reach B's sandbox by id: 404 for every verb; B's is not in A's list.
    let listed = api(&node, "GET", &a, "/sandboxes")
        .send()
        .expect(200)
        .json();
    let ids: Vec<&str> = listed["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, vec![sb_a.as_str()], "{listed}");
    for (method, path, body) in [
        ("GET", format!("/sandboxes/{sb_b}"), None),
        (
            "POST",
            format!("/sandboxes/{sb_b}/exec"),
            Some(json!({"cmd": ["cat", "secret"]})),
        ),
        (
            "PATCH",
            format!("/sandboxes/{sb_b}"),
            Some(json!({"public": true})),
        ),
        ("DELETE", format!("/sandboxes/{sb_b}"), None),
        ("GET", format!("/sandboxes/{sb_b}/logs?cursor=0"), None),
        ("GET", format!("/sandboxes/{sb_b}/ports/8000/"), None),
    ] {
        let mut c = api(&node, method, &a, &path);
        if let Some(b) = body {
            c = c.json(&b);
        }
        let r = c.send();
        assert_eq!(r.status, 404, "{method} {path} with A's key: {}", r.text());
        assert!(!r.text().contains("b-secret"));
    }
    let hook = api(&node, "POST", &b, "/webhooks")
        .json(&json!({"url": "https://hooks.example.com/b", "events": ["*"]}))
        .send()
        .expect(201)
        .json();
    let hook_b = hook["id"].as_str().unwrap();
    assert_eq!(
        api(&node, "GET", &a, &format!("/webhooks/{hook_b}"))
            .send()
            .status,
        404
    );
    assert_eq!(
        api(&node, "GET", &a, "/webhooks").send().expect(200).json()["webhooks"],
        json!([])
    );
    assert_eq!(
        api(&node, "GET", &b, &format!("/sandboxes/{sb_b}"))
            .send()
            .status,
        200
    );

    // Every refusal is audited: the 404s A got for B's things, the 403 for network.
    let audit = |action: &str| {
        api(
            &node,
            "GET",
            &node.admin_key(),
            &format!("/audit?action={action}&limit=100"),
        )
        .send()
        .expect(200)
        .json()["entries"]
            .as_array()
            .unwrap()
            .clone()
    };
    let not_owner = eventually(10, "the cross-tenant refusals are audited", || {
        let e = audit("refused.not_owner");
        (e.len() >= 5).then_some(e)
    });
    assert!(not_owner
        .iter()
        .any(|e| e["target"] == format!("sandbox:{sb_b}")));
    assert!(not_owner
        .iter()
        .any(|e| e["target"] == format!("webhook:{hook_b}")));
    let forbidden = audit("refused.403");
    assert!(
        forbidden.iter().any(|e| e["details"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sandbox:network"))),
        "{forbidden:?}"
    );

    // sandbox:read reads: GET through a port, no writes, no upgrades, no webhook secrets.
    assert_eq!(
        sh(
            &node,
            &a,
            &sb_a,
            "echo hello > index.html; nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &"
        )
        .1,
        0
    );
    let port = format!("/sandboxes/{sb_a}/ports/8000/index.html");
    let body = eventually(10, "the sandbox's server answers a reader's GET", || {
        let r = api(&node, "GET", &a_reader, &port).send();
        (r.status == 200).then(|| r.text())
    });
    assert_eq!(body, "hello\n");
    let r = api(&node, "POST", &a_reader, &port).body("x").send();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("sandbox:read"), "{}", r.text());
    let r = api(&node, "GET", &a_reader, &port)
        .header("Connection: Upgrade")
        .header("Upgrade: websocket")
        .send();
    assert_eq!(r.status, 403, "{}", r.text());
    let r = api(&node, "POST", &a, &port).body("x").send();
    assert_ne!(
        r.status,
        403,
        "the writer's POST reaches the server: {}",
        r.text()
    );
    let hook_a = api(&node, "POST", &a, "/webhooks")
        .json(&json!({"url": "https://hooks.example.com/a", "events": ["*"]}))
        .send()
        .expect(201)
        .json();
    let hook_a = hook_a["id"].as_str().unwrap();
    let seen = api(&node, "GET", &a, &format!("/webhooks/{hook_a}"))
        .send()
        .expect(200)
        .json();
    assert!(seen["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    let seen = api(&node, "GET", &a_reader, &format!("/webhooks/{hook_a}"))
        .send()
        .expect(200)
        .json();
    assert!(
        seen.get("secret").is_none(),
        "a reader sees no secret: {seen}"
    );

    // A command that never ends, whose client went away, does not hold off the idle stop
    // (A's sandbox: 10 s idle timeout; the port server above keeps running in it).
    let r = api(&node, "POST", &a, &format!("/sandboxes/{sb_a}/exec"))
        .json(&json!({"cmd": ["sleep", "3600"]}))
        .arg("--max-time")
        .arg("2")
        .send();
    assert_eq!(
        r.curl_exit, 28,
        "the client gave up before the command ended"
    );
    let stopped = eventually(40, "A's sandbox stops when idle", || {
        let v = api(&node, "GET", &a, &format!("/sandboxes/{sb_a}"))
            .send()
            .expect(200)
            .json();
        (v["status"] == "stopped").then_some(v)
    });
    assert_eq!(stopped["error"], "idle timeout", "{stopped}");
    assert_eq!(
        sh(&node, &b, &sb_b, "cat secret").0,
        "b-secret\n",
        "B still runs"
    );
}
