//! Three centers sharing one real PostgreSQL (a throwaway cluster, or `XPOD_TEST_PG_URL`) and one
//! object directory (one region), meshed over QUIC with certificates from one cluster CA, as
//! separate processes: every pod request reaches the pod's owner from any center, a 1 GiB body
//! streams through a forwarding center in flat memory, pods migrate back and forth while a
//! client writes through all three centers, and a PostgreSQL restart heals by itself.
//! A second test runs with change-feed events ignored (lost notifications) and with two nodes
//! that each believe the other owns a pod (a forwarding loop).

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::edges::proc_kib;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

fn put(c: &NodeProcess, key: &str, path: &str, body: &[u8]) -> Resp {
    Curl::new("PUT", format!("{}{path}", c.url()))
        .bearer(key)
        .header("Content-Type: text/plain")
        .body(body.to_vec())
        .arg("--max-time")
        .arg("30")
        .send()
}

fn get(c: &NodeProcess, key: &str, path: &str) -> Resp {
    Curl::get(format!("{}{path}", c.url()))
        .bearer(key)
        .arg("--max-time")
        .arg("30")
        .send()
}

fn create_pod(c: &NodeProcess, key: &str, pod: &str) {
    Curl::new("POST", format!("{}/.cluster/pods", c.url()))
        .bearer(key)
        .json(&json!({"podId": pod}))
        .send()
        .expect(201);
}

fn migrate(c: &NodeProcess, key: &str, pod: &str, to: &str) -> Resp {
    Curl::new("POST", format!("{}/.cluster/pods/{pod}/migrate", c.url()))
        .bearer(key)
        .json(&json!({"targetNode": to}))
        .send()
}

/// Retries `f` until it returns true (up to `secs`), then asserts.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `mib` MiB of a non-repeating pattern to `path`.
fn write_big(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for w in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        w.copy_from_slice(&state.to_le_bytes());
    }
    for i in 0..mib {
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

fn same_files(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// One acknowledged-or-not write of the migration test.
struct Write {
    i: usize,
    status: u16,
    node: String,
    started: Instant,
    ended: Instant,
}

/// One migration: the owner it set, and when the call started and answered.
struct Move {
    to: String,
    started: Instant,
    ended: Instant,
}

#[test]
fn three_centers_route_migrate_and_survive_a_postgres_restart() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-mesh");
    let centers = start_centers(&tmp, &pg, 3, |_| Vec::new());
    let key = centers[0].admin_key();
    let ids: Vec<String> = (1..=3).map(|i| format!("center-{i}")).collect();

    // One pod per center.
    for (i, c) in centers.iter().enumerate() {
        create_pod(c, &key, &format!("p-{}", i + 1));
    }
    // The mesh comes up within a few seconds of start-up (discovery every 2 s).
    eventually(20, "every center reaches every pod", || {
        centers.iter().all(|c| {
            (1..=3).all(|j| {
                let r = get(c, &key, &format!("/p-{j}/"));
                r.status == 200 && r.header("x-xpod-node") == Some(ids[j - 1].as_str())
            })
        })
    });

    // Writes through every center land at the owner; reads through every center agree.
    for j in 1..=3 {
        for (k, c) in centers.iter().enumerate() {
            let r = put(
                c,
                &key,
                &format!("/p-{j}/from-{}.txt", k + 1),
                format!("p-{j} via {}", k + 1).as_bytes(),
            );
            assert_eq!(r.status, 201, "PUT p-{j} via center-{}: {r:?}", k + 1);
            assert_eq!(r.header("x-xpod-node"), Some(ids[j - 1].as_str()));
        }
    }
    for j in 1..=3 {
        for c in &centers {
            for k in 1..=3 {
                let r = get(c, &key, &format!("/p-{j}/from-{k}.txt")).expect(200);
                assert_eq!(r.text(), format!("p-{j} via {k}"));
                assert_eq!(r.header("x-xpod-node"), Some(ids[j - 1].as_str()));
            }
        }
    }
    // Authentication still happens at the owner: no key, or a wrong one, is refused there.
    let r = Curl::get(format!("{}/p-1/from-1.txt", centers[1].url())).send();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("x-xpod-node"), Some("center-1"));

    // 1 GiB up through center-2 to center-1, and back down through center-3.
    let big = tmp.path().join("big.bin");
    write_big(&big, 1024);
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(&big)
        .args([
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg(format!("{}/p-1/big.bin", centers[1].url()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = tmp.path().join("back.bin");
    let out = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&back)
        .args([
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .arg(format!("{}/p-1/big.bin", centers[2].url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert!(
        same_files(&big, &back),
        "1 GiB through two forwarding centers differs"
    );
    std::fs::remove_file(&back).unwrap();
    std::fs::remove_file(&big).unwrap();
    for (c, id) in centers.iter().zip(&ids) {
        let peak = proc_kib(c.pid(), "VmHWM").unwrap();
        eprintln!("{id}: peak resident {} MiB", peak / 1024);
        assert!(
            peak < 100 * 1024,
            "{id} peaked at {} MiB resident",
            peak / 1024
        );
    }

    // Migration back and forth under writes through all three centers.
    create_pod(&centers[0], &key, "mig");
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = centers.iter().map(|c| c.url()).collect();
    let writer = std::thread::spawn({
        let (stop, key, urls) = (stop.clone(), key.clone(), urls.clone());
        move || {
            let mut log = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let r = Curl::new("PUT", format!("{}/mig/w-{i}", urls[i % 3]))
                    .bearer(&key)
                    .header("Content-Type: text/plain")
                    .body(format!("w-{i}").into_bytes())
                    .arg("--max-time")
                    .arg("30")
                    .send();
                log.push(Write {
                    i,
                    status: r.status,
                    node: r.header("x-xpod-node").unwrap_or_default().to_string(),
                    started,
                    ended: Instant::now(),
                });
                i += 1;
            }
            log
        }
    });
    let mut moves = Vec::new();
    for m in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let to = &ids[(m + 1) % 3];
        let started = Instant::now();
        let r = migrate(&centers[m % 3], &key, "mig", to);
        let ended = Instant::now();
        assert_eq!(r.status, 202, "migration {m} to {to}: {r:?}");
        let v = r.json();
        assert_eq!(v["nodeId"], to.as_str());
        assert_eq!(v["epoch"], m as i64 + 2, "epoch after migration {m}");
        assert_eq!(v["migrationStatus"], "done");
        moves.push(Move {
            to: to.clone(),
            started,
            ended,
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    let acked: Vec<&Write> = writes.iter().filter(|w| w.status == 201).collect();
    let refused: Vec<&Write> = writes.iter().filter(|w| w.status != 201).collect();
    eprintln!(
        "{} writes during 10 migrations: {} acknowledged, {} refused (statuses {:?})",
        writes.len(),
        acked.len(),
        refused.len(),
        refused.iter().map(|w| w.status).collect::<Vec<_>>()
    );
    assert!(acked.len() > writes.len() / 2, "most writes succeed");
    for w in &refused {
        assert_eq!(
            w.status, 503,
            "a write that loses a race is a retryable 503, w-{}",
            w.i
        );
    }
    // Who could own the pod during [started, ended] of a write: owner k holds it from
    // (at the earliest) the start of migration k to (at the latest) the end of migration k+1.
    let owner_could_be = |w: &Write| -> Vec<&str> {
        let mut out = Vec::new();
        for k in 0..=moves.len() {
            let owner = if k == 0 {
                "center-1"
            } else {
                moves[k - 1].to.as_str()
            };
            let from = if k == 0 {
                None
            } else {
                Some(moves[k - 1].started)
            };
            let until = moves.get(k).map(|m| m.ended);
            let starts_before_write_ends = from.is_none_or(|f| f <= w.ended);
            let ends_after_write_starts = until.is_none_or(|u| u >= w.started);
            if starts_before_write_ends && ends_after_write_starts {
                out.push(owner);
            }
        }
        out
    };
    for w in &acked {
        let possible = owner_could_be(w);
        assert!(
            possible.contains(&w.node.as_str()),
            "w-{} was accepted by {} while the owner could only be {possible:?}",
            w.i,
            w.node
        );
    }
    for w in &acked {
        let r = get(&centers[w.i % 3], &key, &format!("/mig/w-{}", w.i)).expect(200);
        assert_eq!(
            r.text(),
            format!("w-{}", w.i),
            "acknowledged write w-{} lost",
            w.i
        );
    }

    // PostgreSQL restarts: the centers recover by themselves and route correctly afterwards.
    eprintln!("{}", pg.restart().expect("restarting PostgreSQL"));
    eventually(
        30,
        "every center serves again after the PostgreSQL restart",
        || {
            centers
                .iter()
                .all(|c| get(c, &key, "/p-2/from-1.txt").status == 200)
        },
    );
    assert_eq!(migrate(&centers[0], &key, "p-2", "center-1").status, 202);
    // The change feed is back: every center drops its stale entry by itself.
    eventually(
        10,
        "the change feed invalidates p-2 on every center",
        || {
            centers.iter().all(|c| {
                let v = Curl::get(format!("{}/.cluster/routes/p-2", c.url()))
                    .bearer(&key)
                    .send()
                    .expect(200)
                    .json();
                v["owner"] != "center-2"
            })
        },
    );
    for c in &centers {
        let r = get(c, &key, "/p-2/from-1.txt").expect(200);
        assert_eq!(r.header("x-xpod-node"), Some("center-1"));
        let r = put(c, &key, "/p-2/after-restart.txt", b"ok");
        assert!(matches!(r.status, 201 | 204), "{r:?}");
        assert_eq!(r.header("x-xpod-node"), Some("center-1"));
    }

    // SPARQL (issue 20) is answered by the owner wherever it is asked, and follows the pod
    // across moves: the old owner's index, stale by then, is brought in step when the pod
    // comes back.
    let sparql = |c: &NodeProcess| {
        let r = Curl::new("POST", format!("{}/p-2/-/sparql", c.url()))
            .bearer(&key)
            .header("Content-Type: application/sparql-query")
            .header("Accept: text/csv")
            .body("SELECT ?v WHERE { ?s <http://e/p> ?v } ORDER BY ?v".to_string())
            .send()
            .expect(200);
        let owner = r.header("x-xpod-node").unwrap_or("").to_string();
        (r.text().replace("\r\n", "\n"), owner)
    };
    let turtle = |c: &NodeProcess, v: &str| {
        let r = Curl::new("PUT", format!("{}/p-2/data.ttl", c.url()))
            .bearer(&key)
            .header("Content-Type: text/turtle")
            .body(format!("<#s> <http://e/p> \"{v}\"."))
            .send();
        assert!(matches!(r.status, 201 | 204), "{r:?}");
    };
    turtle(&centers[0], "one");
    assert_eq!(sparql(&centers[2]), ("v\none\n".into(), "center-1".into()));
    assert_eq!(migrate(&centers[0], &key, "p-2", "center-2").status, 202);
    turtle(&centers[0], "two");
    eventually(10, "the query reaches the new owner", || {
        sparql(&centers[1]) == ("v\ntwo\n".into(), "center-2".into())
    });
    assert_eq!(migrate(&centers[0], &key, "p-2", "center-1").status, 202);
    eventually(10, "the query reaches the first owner again", || {
        sparql(&centers[2]).1 == "center-1"
    });
    assert_eq!(
        sparql(&centers[0]),
        ("v\ntwo\n".into(), "center-1".into()),
        "the first owner's index caught up with the write made while it did not own the pod"
    );

    // Bad migrations are refused with the reason.
    assert_eq!(migrate(&centers[0], &key, "nope", "center-2").status, 404);
    assert_eq!(migrate(&centers[0], &key, "p-2", "center-9").status, 404);
    assert_eq!(migrate(&centers[0], &key, "p-2", "center-1").status, 409);
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/p-2/migrate", centers[0].url()),
    )
    .json(&json!({"targetNode": "center-2"}))
    .send();
    assert_eq!(r.status, 401, "migration needs the admin key");
}

#[test]
fn lost_notifications_are_corrected_and_loops_end_in_508() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-mesh-lost");
    let centers = start_centers(&tmp, &pg, 3, |i| {
        let mut env = vec![("XPOD_TEST_IGNORE_FEED", "1".to_string())];
        // center-1 and center-2 each believe the other owns pod `loop`.
        match i {
            1 => env.push(("XPOD_TEST_OWNER_OVERRIDE", "loop=center-2".into())),
            2 => env.push(("XPOD_TEST_OWNER_OVERRIDE", "loop=center-1".into())),
            _ => {}
        }
        env
    });
    let key = centers[0].admin_key();
    create_pod(&centers[0], &key, "roam");
    put(&centers[0], &key, "/roam/x.txt", b"roaming").expect(201);
    // Every center learns (and caches) that center-1 owns `roam`.
    eventually(20, "every center reaches roam", || {
        centers.iter().all(|c| {
            let r = get(c, &key, "/roam/x.txt");
            r.status == 200 && r.header("x-xpod-node") == Some("center-1")
        })
    });
    // Moves the pod to center-3, then to center-2: nobody hears about it (the feed is ignored).
    for to in ["center-3", "center-2"] {
        // With the CLI, as an operator would.
        let out = xpod_command()
            .args(["pods", "migrate", "roam", "--to", to, "--wait", "--server"])
            .arg(centers[0].url())
            .arg("--key")
            .arg(&key)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains(&format!("now belongs to {to}")), "{stdout}");
        assert!(stderr.contains("100%  done"), "progress shown: {stderr}");
        for c in &centers {
            let r = get(c, &key, "/roam/x.txt").expect(200);
            assert_eq!(r.text(), "roaming");
            assert_eq!(r.header("x-xpod-node"), Some(to), "via {}", c.node_id());
            let r = put(c, &key, "/roam/x.txt", b"roaming");
            assert_eq!(r.status, 204, "{r:?}");
            assert_eq!(r.header("x-xpod-node"), Some(to));
        }
    }

    // Two nodes that each believe the other owns a pod: 508 after a few hops, fast.
    create_pod(&centers[2], &key, "loop");
    let started = Instant::now();
    let r = get(&centers[0], &key, "/loop/x");
    assert_eq!(r.status, 508, "{r:?}");
    assert_eq!(r.json()["code"], "loop_detected");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_pod_hosted_by_an_edge_is_reached_from_every_center() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-mesh-edge");
    // Heartbeats every second, so the edge's pod list reaches the cluster quickly.
    let presence = tmp.path().join("presence.toml");
    std::fs::write(
        &presence,
        "[tunnel.presence]\nheartbeat_secs = 1\ninactive_after_secs = 3\noffline_after_secs = 6\n",
    )
    .unwrap();
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_CONFIG", presence.display().to_string())]
    });
    let key = centers[0].admin_key();
    // The edge joins with a token that grants it the pod prefix `edgy`.
    let token = xpod_integration::edges::new_token_with(
        &centers[0],
        json!({"singleUse": true, "podPrefixes": ["edgy"]}),
    );
    let edge =
        xpod_integration::edges::start_edge_with_token(&tmp, &centers[0], "edge-1", "", &token);
    xpod_integration::edges::wait_online(&centers[0], "edge-1");

    // The edge may bring pods named `edgy…` into the cluster (its token's grant); a pod it
    // creates under another name stays its own: the cluster's name is not squatted.
    let node = Curl::get(format!("{}/.cluster/nodes/edge-1", centers[1].url()))
        .bearer(&key)
        .send()
        .expect(200)
        .json();
    assert_eq!(node["policy"]["podPrefixes"], json!(["edgy"]), "{node}");
    let edge_key = edge.admin_key();
    assert_ne!(edge_key, key, "the edge has its own keys");
    create_pod(&edge, &edge_key, "bank");
    // The pod is created on the edge, with the edge's own key, in the edge's own store.
    create_pod(&edge, &edge_key, "edgy");
    eventually(
        10,
        "the cluster records the edge as the owner of edgy",
        || {
            let r = Curl::get(format!("{}/.cluster/pods/edgy", centers[1].url()))
                .bearer(&key)
                .send();
            r.status == 200 && r.json()["nodeId"] == "edge-1"
        },
    );

    // The edge reported `bank` all along (heartbeats every second): it is still free.
    assert_eq!(
        Curl::get(format!("{}/.cluster/pods/bank", centers[0].url()))
            .bearer(&key)
            .send()
            .status,
        404,
        "an edge's report does not claim an ungranted id"
    );
    create_pod(&centers[0], &key, "bank");
    let r = Curl::get(format!("{}/.cluster/pods/bank", centers[1].url()))
        .bearer(&key)
        .send()
        .expect(200);
    assert_eq!(r.json()["nodeId"], "center-1");

    // Writes and reads through either center reach the edge (center-2 → center-1 → tunnel).
    eventually(20, "center-2 reaches the edge's pod", || {
        get(&centers[1], &key, "/edgy/").status == 200
    });
    for (k, c) in centers.iter().enumerate() {
        let r = put(
            c,
            &key,
            &format!("/edgy/from-{}.txt", k + 1),
            b"on the edge",
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.header("x-xpod-node"), Some("edge-1"));
    }
    for c in &centers {
        for k in 1..=2 {
            let r = get(c, &key, &format!("/edgy/from-{k}.txt")).expect(200);
            assert_eq!(r.text(), "on the edge");
            assert_eq!(r.header("x-xpod-node"), Some("edge-1"));
        }
    }
    // The bytes are in the edge's store: its own API serves them with its own key.
    let r = get(&edge, &edge_key, "/edgy/from-2.txt").expect(200);
    assert_eq!(r.text(), "on the edge");
    // The edge's own ACLs decide for callers without the pod's key: a public `.acl` written on
    // the edge opens one document to anonymous readers through every center, and nothing else.
    let r = Curl::new("PUT", format!("{}/edgy/from-2.txt.acl", edge.url()))
        .bearer(&edge_key)
        .header("Content-Type: text/turtle")
        .body(
            "@prefix acl: <http://www.w3.org/ns/auth/acl#>. @prefix foaf: <http://xmlns.com/foaf/0.1/>.\n\
             <#p> acl:agentClass foaf:Agent; acl:accessTo <from-2.txt>; acl:mode acl:Read.",
        )
        .send();
    assert_eq!(r.status, 201, "{r:?}");
    for c in &centers {
        let r = Curl::get(format!("{}/edgy/from-2.txt", c.url())).send();
        assert_eq!(
            r.status,
            200,
            "an ACL-public document of an edge pod via {}: {r:?}",
            c.url()
        );
        assert_eq!(r.header("wac-allow"), Some("user=\"read\",public=\"read\""));
    }
    // The center checks the cluster's key before anything reaches the edge, and the edge
    // never trusts the authorization header from its own listener.
    assert_eq!(
        Curl::get(format!("{}/edgy/from-1.txt", centers[1].url()))
            .send()
            .status,
        401
    );
    assert_eq!(
        get(&centers[0], "xp_bogus_key", "/edgy/from-1.txt").status,
        401
    );
    // A cluster key for another pod is an authenticated caller the edge's ACL does not name:
    // 403, with what the public may do, through every center.
    let other = Curl::new("POST", format!("{}/api/v1/auth/api-keys", centers[0].url()))
        .bearer(&key)
        .json(&json!({"name": "bob", "scopes": ["pod:bob"]}))
        .send()
        .expect(201)
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    for c in &centers {
        let r = get(c, &other, "/edgy/from-1.txt");
        assert_eq!(
            r.status,
            403,
            "a key for another pod via {}: {r:?}",
            c.url()
        );
        let r = get(c, &other, "/edgy/from-2.txt").expect(200);
        assert_eq!(r.text(), "on the edge");
    }
    let r = Curl::get(format!("{}/edgy/from-1.txt", edge.url()))
        .header("X-Xpod-Authenticated: key:someone")
        .send();
    assert_eq!(r.status, 401, "a forged header on the edge's port: {r:?}");
    let r = Curl::get(format!("{}/edgy/from-1.txt", edge.url()))
        .header("X-Xpod-Authorized: key:someone")
        .send();
    assert_eq!(
        r.status, 401,
        "a forged authorization header on the edge's port: {r:?}"
    );

    // Moving a pod onto an edge that accepts no pods is refused with the reason, and changes
    // nothing (moves onto and from edges that do: edge_migrate.rs, edge_adopt.rs).
    create_pod(&centers[0], &key, "central");
    let r = migrate(&centers[0], &key, "central", "edge-1");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["code"], "pods_not_accepted", "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("accept_pods"),
        "{}",
        r.text()
    );
    let r = get(&centers[1], &key, "/.cluster/pods/central").expect(200);
    assert_eq!(r.json()["nodeId"], centers[0].node_id(), "{}", r.text());
    let r = get(&centers[1], &key, "/edgy/from-1.txt").expect(200);
    assert_eq!(r.header("x-xpod-node"), Some("edge-1"));

    // The edge stops: requests for its pod fail fast with a clear error, never hang.
    let mut edge = edge;
    assert!(edge.terminate().success());
    eventually(10, "requests for the stopped edge's pod fail fast", || {
        let started = Instant::now();
        let r = get(&centers[1], &key, "/edgy/from-1.txt");
        started.elapsed() < Duration::from_secs(5) && r.status == 503
    });
}
