//! Sandboxes across a cluster (issue 7): two centers on one PostgreSQL and an edge joined to
//! the first, all offering sandbox capacity, as real processes with real bubblewrap.
//!
//! Checks: placement spreads by free capacity; exec (echo, cat with stdin, a failing command)
//! through either center reaches the sandbox wherever it runs, logs replay from a cursor; so
//! does a terminal (a WebSocket: size, keys, resize, exit code); an
//! HTTP server started in each sandbox answers at `<port>-<id>.<domain>` on both centers (and
//! under `/api/v1/sandboxes/{id}/ports/…`), and an upgraded connection passes through both
//! ways; another owner sees nothing (404), no key → 401, a
//! revoked key → 401; the quota refuses the (n+1)th sandbox naming the limit, also when 6
//! creates race through both centers; the idle timeout
//! stops a sandbox; a node that refuses (it lacks the image) is skipped for one that can run
//! it; a delete with a grace period archives it and the cleanup removes it and its
//! files; a plain delete removes it at once.
//! (Isolation, limits, fork bombs and runaways: `sandbox_runtime.rs`.)

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::eventually;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;
use xpod_integration::terminal::{resize, session, Step};

const DOMAIN: &str = "sb.cluster.test";
const QUOTA: usize = 4;

fn api(method: &str, node: &NodeProcess, key: &str, path: &str) -> Curl {
    Curl::new(method, format!("{}/api/v1{path}", node.url())).bearer(key)
}

fn new_key(node: &NodeProcess, owner: &str, scopes: &[&str]) -> (String, String) {
    let v = api("POST", node, &node.admin_key(), "/auth/api-keys")
        .json(&json!({"name": owner, "owner": owner, "scopes": scopes}))
        .send()
        .expect(201)
        .json();
    (
        v["key"].as_str().unwrap().to_string(),
        v["keyId"].as_str().unwrap().to_string(),
    )
}

/// Runs `cmd` in `id` through `node`: (stdout, stderr, exit code).
fn exec(
    node: &NodeProcess,
    key: &str,
    id: &str,
    cmd: &[&str],
    stdin: Option<&str>,
) -> (String, String, i64) {
    let mut body = json!({ "cmd": cmd });
    if let Some(s) = stdin {
        body["stdin"] = json!(s);
    }
    let r = api("POST", node, key, &format!("/sandboxes/{id}/exec"))
        .json(&body)
        .send();
    assert_eq!(
        r.status,
        200,
        "exec {cmd:?} in {id} via {}: {}",
        node.url(),
        r.text()
    );
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    outcome(&r.text())
}

fn outcome(ndjson: &str) -> (String, String, i64) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    let mut last_seq = 0;
    for line in ndjson.lines() {
        let ev: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let seq = ev["seq"].as_u64().expect("numbered");
        assert!(seq > last_seq, "sequence numbers increase");
        last_seq = seq;
        match ev["type"].as_str().unwrap() {
            "stdout" => out.extend(b64.decode(ev["data"].as_str().unwrap()).unwrap()),
            "stderr" => err.extend(b64.decode(ev["data"].as_str().unwrap()).unwrap()),
            "end" => code = ev["exitCode"].as_i64(),
            "error" => panic!("exec error: {ev}"),
            _ => {}
        }
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        code.expect("an end event"),
    )
}

/// A server for port 9000 that answers any request with `101` and then echoes in upper case.
const UPGRADE_SERVER: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000)); s.listen(8)
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        d = c.recv(4096)
        if not d: break
        req += d
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d.upper())
    c.close()
"#;

/// Upgrades a connection to port 9000 of `id` through `node` and sends one message: its echo.
fn upgrade_echo(node: &NodeProcess, key: &str, id: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(node.addr()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 9000-{id}.{DOMAIN}\r\nAuthorization: Bearer {key}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .ok()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return None;
    }
    s.write_all(b"hello through the mesh").ok()?;
    let mut out = [0u8; 64];
    let mut got = 0;
    while got < 22 {
        let n = s.read(&mut out[got..]).ok()?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Some(String::from_utf8_lossy(&out[..got]).into_owned())
}

fn get_sandbox(node: &NodeProcess, key: &str, id: &str) -> Resp {
    api("GET", node, key, &format!("/sandboxes/{id}")).send()
}

#[test]
fn sandboxes_across_centers_and_an_edge() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED sandboxes_across_centers_and_an_edge: bubblewrap (bwrap) is not installed; the test runner installs it (apt-get install bubblewrap)");
        return;
    }
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("sandboxes");
    let config = tmp.path().join("center.toml");
    std::fs::write(
        &config,
        format!(
            "[sandbox]\nslots = 2\ndomain = \"{DOMAIN}\"\nquota_sandboxes = {QUOTA}\n\n[tunnel.presence]\nheartbeat_secs = 2\n"
        ),
    )
    .unwrap();
    // center-2 alone offers the image `tools` (its usr/ is the host's /usr). Each node has its
    // own sandbox uid range (200000, 210000, 220000): they share this host.
    let image = tmp.path().join("tools-image");
    std::fs::create_dir_all(&image).unwrap();
    std::os::unix::fs::symlink("/usr", image.join("usr")).unwrap();
    let config2 = tmp.path().join("center-2.toml");
    std::fs::write(
        &config2,
        format!(
            "[sandbox]\nslots = 2\ndomain = \"{DOMAIN}\"\nquota_sandboxes = {QUOTA}\nimages = {{ tools = \"{}\" }}\nuid_base = 210000\n\n[tunnel.presence]\nheartbeat_secs = 2\n",
            image.display()
        ),
    )
    .unwrap();
    let centers = start_centers(&tmp, &pg, 2, |i| {
        let file = if i == 2 { &config2 } else { &config };
        vec![("XPOD_CONFIG", file.display().to_string())]
    });
    let edge = xpod_integration::edges::start_edge(
        &tmp,
        &centers[0],
        "edge-1",
        "[sandbox]\nslots = 2\nuid_base = 220000\n\n[tunnel.presence]\nheartbeat_secs = 2\n",
    );
    xpod_integration::edges::wait_online(&centers[0], "edge-1");
    let admin = centers[0].admin_key();
    let (alice, alice_id) = new_key(&centers[0], "alice", &["sandbox"]);
    let (bob, _) = new_key(&centers[0], "bob", &["sandbox"]);

    // An edge is a device: it offers no sandboxes to the cluster until an admin grants slots,
    // whatever it reports (here 2), and never more than the grant.
    let (dave, _) = new_key(&centers[0], "dave", &["sandbox"]);
    let r = api("POST", &centers[1], &dave, "/sandboxes")
        .json(&json!({"node": "edge-1"}))
        .send();
    assert_eq!(
        r.status,
        503,
        "an ungranted edge takes no sandbox: {}",
        r.text()
    );
    let v = Curl::new(
        "PATCH",
        format!("{}/.cluster/nodes/edge-1", centers[1].url()),
    )
    .bearer(&admin)
    .json(&json!({"sandboxSlots": 2}))
    .send()
    .expect(200)
    .json();
    assert_eq!(v["sandboxSlots"], 2);

    // Every node reports its capacity (the edge's through its center's record).
    eventually(30, "three runners", || {
        let v = api("GET", &centers[1], &alice, "/runners")
            .send()
            .expect(200)
            .json();
        (v["runners"].as_array().unwrap().len() == 3).then_some(())
    });

    // The quota holds under racing creates through both centers: 6 at once, quota 4.
    let (carol, _) = new_key(&centers[0], "carol", &["sandbox"]);
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let (url, key) = (centers[i % 2].url(), carol.clone());
            std::thread::spawn(move || {
                let r = Curl::new("POST", format!("{url}/api/v1/sandboxes"))
                    .bearer(&key)
                    .json(&json!({"timeout": 600}))
                    .send();
                let id = r.json()["id"].as_str().map(str::to_string);
                (r.status, id)
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> =
        racers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut codes: Vec<u16> = results.iter().map(|(c, _)| *c).collect();
    codes.sort();
    assert_eq!(codes, [201, 201, 201, 201, 429, 429], "{results:?}");
    for (code, id) in results {
        if code == 201 {
            let id = id.unwrap();
            api("DELETE", &centers[0], &carol, &format!("/sandboxes/{id}"))
                .send()
                .expect(204);
        }
    }

    // Spread by free capacity: 3 sandboxes on 3 nodes with equal free slots.
    let mut sandboxes: Vec<(String, String)> = Vec::new();
    for i in 0..3 {
        let via = &centers[i % 2];
        let v = api("POST", via, &alice, "/sandboxes")
            .json(&json!({"name": format!("s{i}"), "timeout": 600, "env": {"GREETING": "hi"}}))
            .send()
            .expect(201)
            .json();
        assert_eq!(v["status"], "running", "{v}");
        assert_eq!(v["owner"], "alice");
        assert!(v["accessToken"].as_str().unwrap().starts_with("sbt_"));
        sandboxes.push((
            v["id"].as_str().unwrap().to_string(),
            v["node"].as_str().unwrap().to_string(),
        ));
    }
    let mut nodes: Vec<&str> = sandboxes.iter().map(|(_, n)| n.as_str()).collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["center-1", "center-2", "edge-1"],
        "spread over every node"
    );

    // Exec through either center, wherever the sandbox runs.
    for (id, node) in &sandboxes {
        for c in &centers {
            let (out, err, code) = exec(
                c,
                &alice,
                id,
                &["sh", "-c", "echo $GREETING from $(hostname)"],
                None,
            );
            assert_eq!(
                (out.as_str(), err.as_str(), code),
                ("hi from sandbox\n", "", 0),
                "{id} on {node}"
            );
        }
        let (out, _, code) = exec(&centers[1], &alice, id, &["cat"], Some("line 1\nline 2\n"));
        assert_eq!(
            (out.as_str(), code),
            ("line 1\nline 2\n", 0),
            "cat with stdin in {id} on {node}"
        );
        let (out, err, code) = exec(
            &centers[0],
            &alice,
            id,
            &["sh", "-c", "echo out; echo oops >&2; exit 7"],
            None,
        );
        assert_eq!(
            (out.as_str(), err.as_str(), code),
            ("out\n", "oops\n", 7),
            "failing command in {id}"
        );
        let r = api(
            "POST",
            &centers[0],
            &alice,
            &format!("/sandboxes/{id}/exec"),
        )
        .json(&json!({"cmd": ["no-such-program"]}))
        .send()
        .expect(200);
        assert!(
            r.text().contains("\"type\":\"error\""),
            "an unknown program is an error event: {}",
            r.text()
        );
        // Logs replay: everything after a cursor, numbered.
        let logs = api(
            "GET",
            &centers[1],
            &alice,
            &format!("/sandboxes/{id}/logs?cursor=0"),
        )
        .send()
        .expect(200)
        .json();
        let events = logs["events"].as_array().unwrap();
        assert!(events.len() >= 12, "logs of 5 execs: {logs}");
        let mid = events[5]["seq"].as_u64().unwrap();
        let after = api(
            "GET",
            &centers[0],
            &alice,
            &format!("/sandboxes/{id}/logs?cursor={mid}"),
        )
        .send()
        .expect(200)
        .json();
        assert_eq!(after["events"].as_array().unwrap().len(), events.len() - 6);
        assert_eq!(after["events"][0]["seq"].as_u64().unwrap(), mid + 1);
    }

    // A terminal through either center, wherever the sandbox runs (the center that takes the
    // WebSocket reaches the sandbox's node over the mesh, or the edge through its tunnel):
    // the PTY's size, keys, a resize and the exit code all cross.
    for (id, node) in &sandboxes {
        for c in &centers {
            let url = format!(
                "{}/api/v1/sandboxes/{id}/terminal?rows=30&cols=90&cmd=sh",
                c.url()
            );
            let out = session(
                &url,
                Some(&alice),
                vec![
                    Step::Keys(b"stty size; echo $GREETING-from-$(hostname)\r"),
                    Step::Expect("hi-from-sandbox"),
                    resize(45, 160),
                    Step::Keys(b"stty size; exit 4\r"),
                ],
            )
            .unwrap_or_else(|r| panic!("terminal to {id} on {node} via {}: {r:?}", c.url()));
            assert!(
                out.output.contains("30 90"),
                "{id} on {node}: {:?}",
                out.output
            );
            assert!(
                out.output.contains("45 160"),
                "{id} on {node}: {:?}",
                out.output
            );
            assert_eq!(out.exit, Some(4), "{id} on {node} via {}: {out:?}", c.url());
        }
    }

    // A server inside each sandbox, reachable at <port>-<id>.<domain> on both centers.
    for (id, _) in &sandboxes {
        let (_, _, code) = exec(
            &centers[0],
            &alice,
            id,
            &["sh", "-c", &format!("echo served by {id} > index.html; nohup python3 -m http.server 8000 >/tmp/http.log 2>&1 &")],
            None,
        );
        assert_eq!(code, 0);
    }
    for (id, node) in &sandboxes {
        for c in &centers {
            let body = eventually(10, "the sandbox's server answers", || {
                let r = Curl::get(format!("{}/index.html", c.url()))
                    .header(format!("Host: 8000-{id}.{DOMAIN}"))
                    .bearer(&alice)
                    .send();
                (r.status == 200).then(|| r.text())
            });
            assert_eq!(
                body,
                format!("served by {id}\n"),
                "{id} on {node} via {}",
                c.url()
            );
            let r = api(
                "GET",
                c,
                &alice,
                &format!("/sandboxes/{id}/ports/8000/index.html"),
            )
            .send();
            assert_eq!((r.status, r.text()), (200, format!("served by {id}\n")));
        }
        // Private: another owner and no credentials are refused; the access token works.
        let r = Curl::get(format!("{}/", centers[1].url()))
            .header(format!("Host: 8000-{id}.{DOMAIN}"))
            .send();
        assert_eq!(r.status, 401, "{}", r.text());
        let r = Curl::get(format!("{}/", centers[1].url()))
            .header(format!("Host: 8000-{id}.{DOMAIN}"))
            .bearer(&bob)
            .send();
        assert_eq!(r.status, 404, "{}", r.text());
        // Nothing listens on another port: a clean 502.
        let r = Curl::get(format!("{}/", centers[0].url()))
            .header(format!("Host: 8001-{id}.{DOMAIN}"))
            .bearer(&alice)
            .send();
        assert_eq!(r.status, 502, "{}", r.text());
    }

    // Upgraded connections (WebSocket-style) pass through both ways, to every node.
    for (id, _) in &sandboxes {
        let (_, _, code) = exec(
            &centers[0],
            &alice,
            id,
            &[
                "sh",
                "-c",
                "cat > up.py; nohup python3 up.py >/dev/null 2>&1 &",
            ],
            Some(UPGRADE_SERVER),
        );
        assert_eq!(code, 0);
    }
    for (id, node) in &sandboxes {
        for c in &centers {
            let echoed = eventually(10, "the upgrade server answers", || {
                upgrade_echo(c, &alice, id)
            });
            assert_eq!(
                echoed,
                "HELLO THROUGH THE MESH",
                "{id} on {node} via {}",
                c.url()
            );
        }
    }

    // Another owner sees nothing; no key, a revoked key → 401; an admin sees all.
    let (id0, _) = &sandboxes[0];
    assert_eq!(get_sandbox(&centers[1], &bob, id0).status, 404);
    let r = api("POST", &centers[1], &bob, &format!("/sandboxes/{id0}/exec"))
        .json(&json!({"cmd": ["true"]}))
        .send();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "not_found");
    let listed = api("GET", &centers[0], &bob, "/sandboxes")
        .send()
        .expect(200)
        .json();
    assert_eq!(listed["total"], 0);
    let listed = api(
        "GET",
        &centers[0],
        &alice,
        "/sandboxes?status=running&order=desc",
    )
    .send()
    .expect(200)
    .json();
    assert_eq!(listed["total"], 3);
    assert_eq!(
        Curl::get(format!("{}/api/v1/sandboxes", centers[0].url()))
            .send()
            .status,
        401
    );
    let listed = api("GET", &centers[1], &admin, "/sandboxes")
        .send()
        .expect(200)
        .json();
    assert!(listed["total"].as_u64().unwrap() >= 3);

    // A node that refuses (it lacks the image) is skipped: the sandbox lands where it can run.
    let v = api("POST", &centers[0], &bob, "/sandboxes")
        .json(&json!({"image": "tools", "timeout": 600}))
        .send()
        .expect(201)
        .json();
    assert_eq!(
        (v["node"].as_str(), v["status"].as_str()),
        (Some("center-2"), Some("running")),
        "{v}"
    );
    let tools_id = v["id"].as_str().unwrap().to_string();
    let (out, _, _) = exec(
        &centers[0],
        &bob,
        &tools_id,
        &["sh", "-c", "echo tools"],
        None,
    );
    assert_eq!(out, "tools\n");
    api(
        "DELETE",
        &centers[1],
        &bob,
        &format!("/sandboxes/{tools_id}"),
    )
    .send()
    .expect(204);
    let r = api("POST", &centers[0], &bob, "/sandboxes")
        .json(&json!({"image": "nothing-here"}))
        .send();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("nothing-here"),
        "every refusal is named: {}",
        r.text()
    );

    // Quota: the (n+1)th sandbox is refused, naming the limit.
    let v = api("POST", &centers[0], &alice, "/sandboxes")
        // On the edge: its idle stop reaches the store through its reports.
        .json(&json!({"timeout": 10, "node": "edge-1"}))
        .send()
        .expect(201)
        .json();
    let idle_id = v["id"].as_str().unwrap().to_string();
    let r = api("POST", &centers[1], &alice, "/sandboxes")
        .json(&json!({}))
        .send();
    assert_eq!(r.status, 429, "{}", r.text());
    let e = r.json();
    assert_eq!(e["code"], "quota_exceeded");
    assert_eq!(e["details"]["limit"], "sandboxes");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains(&format!("> {QUOTA}")));

    // The idle timeout stops a sandbox by itself (10 s without exec or port traffic), and the
    // reason the edge gave is recorded.
    let stopped = eventually(40, "the idle sandbox stops", || {
        let v = get_sandbox(&centers[1], &alice, &idle_id)
            .expect(200)
            .json();
        (v["status"] == "stopped").then_some(v)
    });
    assert_eq!(stopped["error"], "idle timeout", "{stopped}");

    // Delete with a grace period: archived now, removed (files too) by the cleanup.
    let (id1, node1) = &sandboxes[1];
    let v = api(
        "DELETE",
        &centers[0],
        &alice,
        &format!("/sandboxes/{id1}?gracePeriod=2"),
    )
    .send()
    .expect(202)
    .json();
    assert_eq!(v["status"], "archived");
    let r = api(
        "POST",
        &centers[0],
        &alice,
        &format!("/sandboxes/{id1}/exec"),
    )
    .json(&json!({"cmd": ["true"]}))
    .send();
    assert_eq!(r.status, 409, "an archived sandbox runs nothing");
    eventually(30, "the archived sandbox is removed", || {
        (get_sandbox(&centers[0], &alice, id1).status == 404).then_some(())
    });
    let dir = tmp.path().join(node1).join("sandboxes").join(id1);
    eventually(10, "its files are removed", || {
        (!dir.exists()).then_some(())
    });

    // A plain delete removes it at once; its files go with it.
    let (id2, node2) = &sandboxes[2];
    api("DELETE", &centers[1], &alice, &format!("/sandboxes/{id2}"))
        .send()
        .expect(204);
    assert_eq!(get_sandbox(&centers[0], &alice, id2).status, 404);
    let dir = tmp.path().join(node2).join("sandboxes").join(id2);
    eventually(10, "its files are removed", || {
        (!dir.exists()).then_some(())
    });

    // An expired key is refused (expired in the store: the API gives keys at least a day).
    // Nodes cache keys and follow the change feed, so the edit is announced as the store
    // announces every key change (`key:<id>`); without it, the cache's safety-net age applies.
    let bob_id = &bob[3..15];
    let url = pg.url().to_string();
    let stmt = format!(
        "UPDATE api_keys SET expires_at = 1 WHERE key_id = '{bob_id}'; \
         SELECT pg_notify('xpod_pods', 'key:{bob_id}')"
    );
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(xpod_integration::pg::sql(&url, &stmt))
    })
    .join()
    .unwrap()
    .expect("expiring bob's key");
    let r = eventually(10, "the expired key is refused", || {
        let r = api("GET", &centers[0], &bob, "/sandboxes").send();
        (r.status != 200).then_some(r)
    });
    assert_eq!(r.status, 401);
    assert!(r.text().contains("expired"), "{}", r.text());

    // A revoked key is refused.
    api(
        "DELETE",
        &centers[0],
        &admin,
        &format!("/auth/api-keys/{alice_id}"),
    )
    .send()
    .expect(204);
    // On the other center as soon as the change feed tells it (request_path times it).
    let r = eventually(5, "the revoked key is refused on the other center", || {
        let r = api("GET", &centers[1], &alice, "/sandboxes").send();
        (r.status != 200).then_some(r)
    });
    assert_eq!(r.status, 401);
    assert!(r.text().contains("revoked"), "{}", r.text());
    drop(edge);
}
