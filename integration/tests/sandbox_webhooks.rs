//! Webhooks (Standard Webhooks) against an independent verifier: a receiver in Python that
//! checks every request with the `standardwebhooks` package from PyPI, answers 500 twice and
//! then 204. Checks: the signatures verify (and fail with a wrong secret), the retries arrive,
//! the delivery log shows every attempt, sandbox events arrive for the owner's sandboxes, a
//! private destination is refused unless allowed, another owner sees nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::eventually;
use xpod_integration::node::{free_port, NodeProcess, TempDir};

const RECEIVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
import standardwebhooks

port, secret_file, log_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
count = 0

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        count += 1
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        secret = open(secret_file).read().strip()
        rec = {"n": count, "id": headers.get("webhook-id")}
        try:
            payload = standardwebhooks.Webhook(secret).verify(body, headers)
            rec.update(ok=True, type=payload["type"], data=payload["data"])
        except Exception as e:
            rec.update(ok=False, error=str(e))
        try:
            standardwebhooks.Webhook("whsec_" + "QUFB" * 8).verify(body, headers)
            rec["wrong_secret_rejected"] = False
        except Exception:
            rec["wrong_secret_rejected"] = True
        with open(log_file, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(500 if count <= 2 else 204)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

struct Receiver(Child);
impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> Option<String> {
    let candidates = [
        std::env::var("XPOD_TEST_WEBHOOKS_PYTHON").ok(),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/s3venv/bin/python")
                .display()
                .to_string(),
        ),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn call(node: &NodeProcess, method: &str, key: &str, path: &str, body: Option<Value>) -> Resp {
    let mut c = Curl::new(method, format!("{}/api/v1{path}", node.url())).bearer(key);
    if let Some(b) = body {
        c = c.json(&b);
    }
    c.send()
}

fn key(node: &NodeProcess, owner: &str) -> String {
    call(
        node,
        "POST",
        &node.admin_key(),
        "/auth/api-keys",
        Some(json!({"name": owner, "owner": owner, "scopes": ["sandbox"]})),
    )
    .expect(201)
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn webhooks_verified_by_standardwebhooks() {
    let Some(py) = python() else {
        eprintln!("SKIPPED webhooks_verified_by_standardwebhooks: no python with the `standardwebhooks` package (the test runner installs it into target/s3venv; or set XPOD_TEST_WEBHOOKS_PYTHON)");
        return;
    };
    let tmp = TempDir::new("webhooks");
    let (script, secret_file, log) = (
        tmp.path().join("receiver.py"),
        tmp.path().join("secret"),
        tmp.path().join("log.jsonl"),
    );
    std::fs::write(&script, RECEIVER).unwrap();
    std::fs::write(&secret_file, "whsec_AAAA").unwrap();
    let port = free_port();
    let _receiver = Receiver(
        Command::new(&py)
            .arg(&script)
            .arg(port.to_string())
            .arg(&secret_file)
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the receiver"),
    );
    let config = tmp.path().join("node.toml");
    let bwrap = Command::new("bwrap").arg("--version").output().is_ok();
    std::fs::write(
        &config,
        format!(
            "[sandbox]\nslots = {}\nwebhooks_allow_private = true\n",
            u32::from(bwrap)
        ),
    )
    .unwrap();
    let node = NodeProcess::builder()
        .env("XPOD_CONFIG", config.display().to_string())
        .start();
    let alice = key(&node, "alice");
    let bob = key(&node, "bob");

    // Bad input.
    let url = format!("http://127.0.0.1:{port}/hook");
    let r = call(
        &node,
        "POST",
        &alice,
        "/webhooks",
        Some(json!({"url": url, "events": ["sandbox.exploded"]})),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("sandbox.exploded"), "{}", r.text());
    let r = call(
        &node,
        "POST",
        &alice,
        "/webhooks",
        Some(json!({"url": "ftp://x/", "events": ["*"]})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        Curl::new("POST", format!("{}/api/v1/webhooks", node.url()))
            .json(&json!({"url": url, "events": ["*"]}))
            .send()
            .status,
        401
    );

    let hook = call(
        &node,
        "POST",
        &alice,
        "/webhooks",
        Some(json!({"url": url, "events": ["sandbox.created", "sandbox.started", "sandbox.deleted"], "description": "ci"})),
    )
    .expect(201)
    .json();
    let id = hook["id"].as_str().unwrap().to_string();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    std::fs::write(&secret_file, &secret).unwrap();
    let listed = call(&node, "GET", &alice, "/webhooks", None)
        .expect(200)
        .json();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(
        listed["webhooks"][0].get("secret").is_none(),
        "no secret in listings"
    );
    assert_eq!(
        call(&node, "GET", &bob, &format!("/webhooks/{id}"), None).status,
        404
    );
    assert_eq!(
        call(
            &node,
            "GET",
            &bob,
            &format!("/webhooks/{id}/deliveries"),
            None
        )
        .status,
        404
    );

    // A test message: 500, 500, then 204 — three signed requests with the same id.
    let msg = call(&node, "POST", &alice, &format!("/webhooks/{id}/test"), None)
        .expect(202)
        .json()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = eventually(30, "three attempts of the test message", || {
        let r: Vec<Value> = records(&log)
            .into_iter()
            .filter(|r| r["id"] == msg.as_str())
            .collect();
        (r.len() >= 3).then_some(r)
    });
    for r in &seen {
        assert_eq!(
            r["ok"], true,
            "standardwebhooks verified the signature: {r}"
        );
        assert_eq!(
            r["wrong_secret_rejected"], true,
            "and rejects it under another secret: {r}"
        );
        assert_eq!(r["type"], "webhook.test");
    }
    let log_entry = eventually(10, "the delivery log shows success", || {
        let v = call(
            &node,
            "GET",
            &alice,
            &format!("/webhooks/{id}/deliveries"),
            None,
        )
        .expect(200)
        .json();
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == msg.as_str() && d["status"] == "succeeded")
            .cloned()
    });
    let codes: Vec<u64> = log_entry["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["statusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 204], "{log_entry}");
    let t: Vec<u64> = log_entry["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["at"].as_u64().unwrap())
        .collect();
    assert!(
        t[1] - t[0] >= 900 && t[2] - t[1] >= 1900,
        "backoff 1 s then 2 s: {t:?}"
    );

    // Sandbox events reach the owner's webhook (and only the events it asked for).
    if bwrap {
        let sb = call(
            &node,
            "POST",
            &alice,
            "/sandboxes",
            Some(json!({"timeout": 600})),
        )
        .expect(201)
        .json();
        let sb_id = sb["id"].as_str().unwrap().to_string();
        call(
            &node,
            "DELETE",
            &alice,
            &format!("/sandboxes/{sb_id}"),
            None,
        )
        .expect(204);
        let types = eventually(20, "sandbox events", || {
            let t: Vec<String> = records(&log)
                .into_iter()
                .filter(|r| r["ok"] == true && r["data"]["id"] == sb_id.as_str())
                .map(|r| r["type"].as_str().unwrap().to_string())
                .collect();
            (t.len() >= 3).then_some(t)
        });
        for want in ["sandbox.created", "sandbox.started", "sandbox.deleted"] {
            assert!(types.iter().any(|t| t == want), "{want} in {types:?}");
        }
        assert!(
            !types.iter().any(|t| t == "sandbox.stopped"),
            "not subscribed: {types:?}"
        );
        // Bob's sandboxes do not reach Alice's webhook.
        let b = call(&node, "POST", &bob, "/sandboxes", Some(json!({})))
            .expect(201)
            .json();
        let b_id = b["id"].as_str().unwrap().to_string();
        std::thread::sleep(Duration::from_secs(2));
        assert!(!records(&log)
            .iter()
            .any(|r| r["data"]["id"] == b_id.as_str()));
    } else {
        eprintln!("SKIPPED the sandbox-event part of webhooks_verified_by_standardwebhooks: bubblewrap (bwrap) is not installed");
    }

    // A node that does not allow private destinations refuses them at create.
    let strict = NodeProcess::start();
    let k = key(&strict, "alice");
    for u in [
        format!("http://127.0.0.1:{port}/hook"),
        "http://localhost/x".into(),
        "http://[::1]/x".into(),
        "http://10.0.0.1/x".into(),
    ] {
        let r = call(
            &strict,
            "POST",
            &k,
            "/webhooks",
            Some(json!({"url": u, "events": ["*"]})),
        );
        assert_eq!(r.status, 400, "{u}: {}", r.text());
        assert!(
            r.text().contains("webhooks_allow_private"),
            "{u}: {}",
            r.text()
        );
    }

    // Deleting the webhook; the audit log has both writes.
    call(&node, "DELETE", &alice, &format!("/webhooks/{id}"), None).expect(204);
    assert_eq!(
        call(&node, "GET", &alice, &format!("/webhooks/{id}"), None).status,
        404
    );
    let audit = call(&node, "GET", &node.admin_key(), "/audit?limit=100", None)
        .expect(200)
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"webhook.create") && actions.contains(&"webhook.delete"),
        "{actions:?}"
    );
}
