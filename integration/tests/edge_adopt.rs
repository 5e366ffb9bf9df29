//! Issue 21: a pod moves onto an edge with one call, and back, and from one edge to another
//! (real processes: two centers on PostgreSQL sharing one object store, edges joined to them).
//!
//! First test (center → edge → center), with edge-1 accepting alice's pods by its own config
//! (`[tunnel] accept_pods`) and its sync held back:
//! - refused with the reason: onto an edge that does not accept the account (403
//!   `pods_not_accepted`, nothing moves), by a key that is not the owner's, and between centers
//!   by the owner (moves between centers stay an admin's);
//! - alice's own key moves her pod through center-2: 202 `syncing` with the new epoch, the
//!   edge the owner; a client writing through center-2 all along loses no acknowledged write;
//! - every object reads back byte-exact through center-1 at once, served by the edge, which
//!   reads what it lacks from the cluster (`x-xpod-read-from: cluster`);
//! - the edge killed and restarted midway: the pod keeps working; the sync let go, the
//!   cluster's record reaches `done` / 100 % (the edge reports its progress);
//! - a write on the edge, then the pod moves back to center-1: every object, old and new,
//!   byte-exact; the audit names both moves.
//!
//! Second test (edge → edge): two edges granted `acceptPods: ["*"]` at join; a pod moves
//! center → edge-1 → edge-2 (the calls made on the center that holds neither tunnel) and every
//! byte follows through the cluster, including after edge-1 is gone for good. A move is not a
//! copy: once the new owner has every byte, the cluster's copy and the old edge's are dropped
//! (their blob files deleted by the GC).
//!
//! Third test: a move cut between the fence and the hand-over (the center dies) leaves the pod
//! answering 503 (never 404, no write anywhere), and heals when the edge registers again, or
//! when the call is repeated.
//!
//! Fourth test: a program holding a joined edge's identity asks the cluster, on its tunnel, for
//! another edge's pod (rows, a blob, its sync state): refused every time, while the same asks
//! for a pod the cluster gives it are answered; other stream targets are reset.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::edges::{
    new_token, new_token_with, start_edge_env, start_edge_with_token, wait_online,
};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

const N: usize = 100;

fn content(i: usize) -> Vec<u8> {
    // 1 KiB to 61 KiB, different bytes for every object.
    let len = 1024 + (i * 7919) % (60 * 1024);
    (0..len).map(|j| ((i * 37 + j * 11) % 253) as u8).collect()
}

fn put(c: &NodeProcess, key: &str, path: &str, body: &[u8]) -> Resp {
    Curl::new("PUT", format!("{}{path}", c.url()))
        .bearer(key)
        .header("Content-Type: application/octet-stream")
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

fn migrate(c: &NodeProcess, key: &str, pod: &str, to: &str) -> Resp {
    Curl::new("POST", format!("{}/.cluster/pods/{pod}/migrate", c.url()))
        .bearer(key)
        .json(&json!({ "targetNode": to }))
        .arg("--max-time")
        .arg("60")
        .send()
}

fn pod(c: &NodeProcess, key: &str, id: &str) -> Value {
    get(c, key, &format!("/.cluster/pods/{id}"))
        .expect(200)
        .json()
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn new_key(c: &NodeProcess, admin: &str, owner: &str, scopes: &[&str]) -> String {
    Curl::new("POST", format!("{}/api/v1/auth/api-keys", c.url()))
        .bearer(admin)
        .json(&json!({"name": owner, "owner": owner, "scopes": scopes}))
        .send()
        .expect(201)
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Files under `<objects>/blobs/<pod>/` (the blobs of a pod in a file object store).
fn blob_files(objects: &std::path::Path, pod: &str) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => count(&e.path()),
                    Ok(t) if t.is_file() => 1,
                    _ => 0,
                })
                .sum()
        })
    }
    count(&objects.join("blobs").join(pod))
}

/// Every object `f-i` (but `skip`) reads back byte-exact through `c`.
fn all_exact(c: &NodeProcess, key: &str, pod: &str, skip: usize) -> usize {
    let mut from_cluster = 0;
    for i in (0..N).filter(|i| *i != skip) {
        let r = get(c, key, &format!("/{pod}/f-{i}.bin"));
        assert_eq!(r.status, 200, "f-{i} through {}: {r:?}", c.url());
        assert!(r.body == content(i), "f-{i}: bytes differ");
        if r.header("x-xpod-read-from") == Some("cluster") {
            from_cluster += 1;
        }
    }
    from_cluster
}

/// A client writing `w-k.txt` through `via` until `stop`: (acknowledged k, refused count).
fn writer(
    via: &NodeProcess,
    key: &str,
    pod: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Vec<usize>, usize)> {
    let (url, key, pod) = (via.url(), key.to_string(), pod.to_string());
    std::thread::spawn(move || {
        let (mut acked, mut refused, mut k) = (Vec::new(), 0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let r = Curl::new("PUT", format!("{url}/{pod}/w-{k}.txt"))
                .bearer(&key)
                .header("Content-Type: text/plain")
                .body(format!("write {k}").into_bytes())
                .arg("--max-time")
                .arg("30")
                .send();
            match r.status {
                201 | 205 | 204 => acked.push(k),
                503 => refused += 1,
                other => panic!("write {k}: unexpected {other}: {r:?}"),
            }
            k += 1;
        }
        (acked, refused)
    })
}

#[test]
fn a_pod_moves_onto_an_edge_and_back_with_every_byte() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-adopt");
    let presence = tmp.path().join("presence.toml");
    std::fs::write(&presence, "[tunnel.presence]\nheartbeat_secs = 1\n").unwrap();
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_CONFIG", presence.display().to_string())]
    });
    let admin = centers[0].admin_key();
    // edge-1 takes alice's pods by its own configuration; its sync waits for the test.
    let hold = tmp.path().join("hold-edge-sync");
    std::fs::write(&hold, "").unwrap();
    let mut edge = start_edge_env(
        &tmp,
        &centers[0],
        "edge-1",
        "[tunnel]\naccept_pods = [\"alice\"]\n\n[tunnel.presence]\nheartbeat_secs = 1\n",
        &new_token(&centers[0]),
        &[("XPOD_TEST_SYNC_HOLD", hold.display().to_string())],
    );
    wait_online(&centers[0], "edge-1");
    // edge-2 accepts nobody's pods.
    let edge2 = start_edge_with_token(
        &tmp,
        &centers[0],
        "edge-2",
        "[tunnel.presence]\nheartbeat_secs = 1\n",
        &new_token(&centers[0]),
    );
    wait_online(&centers[0], "edge-2");

    // alice's pod on center-1, with N objects written through center-2.
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "homepod", "accountId": "alice", "accessMode": "private"}))
        .send()
        .expect(201);
    let alice = new_key(&centers[0], &admin, "alice", &["pod:homepod"]);
    let bob = new_key(&centers[0], &admin, "bob", &["pod:homepod"]);
    let via = &centers[1];
    for i in 0..N {
        let r = put(via, &alice, &format!("/homepod/f-{i}.bin"), &content(i));
        assert_eq!(r.status, 201, "f-{i}: {r:?}");
    }
    Curl::new("DELETE", format!("{}/homepod/f-3.bin", via.url()))
        .bearer(&alice)
        .send()
        .expect(204);
    let before = pod(via, &admin, "homepod");
    assert_eq!(before["nodeId"], "center-1");

    // Refusals, each with its reason, and nothing moves.
    let r = migrate(via, &alice, "homepod", "edge-2");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["code"], "pods_not_accepted", "{}", r.text());
    let why = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        why.contains("edge-2") && why.contains("alice") && why.contains("accept_pods"),
        "{why}"
    );
    let r = migrate(via, &bob, "homepod", "edge-1");
    assert_eq!(
        r.status, 403,
        "bob may write the pod but is not its owner: {r:?}"
    );
    let r = migrate(via, &alice, "homepod", "center-2");
    assert_eq!(r.status, 403, "moves between centers are an admin's: {r:?}");
    assert!(r.text().contains("admin"), "{}", r.text());
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/homepod/migrate", via.url()),
    )
    .json(&json!({"targetNode": "edge-1"}))
    .send();
    assert_eq!(r.status, 401, "{r:?}");
    let now = pod(via, &admin, "homepod");
    assert_eq!(
        (&now["nodeId"], &now["epoch"]),
        (&before["nodeId"], &before["epoch"]),
        "refused moves change nothing"
    );
    // The owner may follow a move (`xpod pods migrate --wait`); another account may not.
    assert_eq!(pod(via, &alice, "homepod")["nodeId"], "center-1");
    let r = get(via, &bob, "/.cluster/pods/homepod");
    assert_eq!(r.status, 403, "{r:?}");

    // alice moves her pod onto her device, while a client writes through center-2.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = writer(via, &alice, "homepod", stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let r = migrate(via, &alice, "homepod", "edge-1");
    let took = started.elapsed();
    assert_eq!(r.status, 202, "{r:?}");
    let moved = r.json();
    assert_eq!(moved["nodeId"], "edge-1", "{moved}");
    assert_eq!(
        moved["epoch"].as_i64().unwrap(),
        before["epoch"].as_i64().unwrap() + 1
    );
    assert_eq!(moved["migrationStatus"], "syncing", "{moved}");
    eprintln!("center → edge: 202 in {took:?}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = w.join().unwrap();
    eprintln!(
        "writes during the move: {} acknowledged, {refused} refused",
        acked.len()
    );
    assert!(acked.len() > 5, "the writer made progress: {}", acked.len());

    // Every object at once, through the other center, from the edge.
    let r = get(&centers[0], &alice, "/homepod/f-0.bin").expect(200);
    assert_eq!(r.header("x-xpod-node"), Some("edge-1"), "{r:?}");
    let from_cluster = all_exact(&centers[0], &alice, "homepod", 3);
    assert!(
        from_cluster > N / 2,
        "the edge read most objects from the cluster at first: {from_cluster}"
    );
    assert_eq!(get(&centers[0], &alice, "/homepod/f-3.bin").status, 404);
    for k in &acked {
        let r = get(&centers[0], &alice, &format!("/homepod/w-{k}.txt"));
        assert_eq!(r.status, 200, "acknowledged write {k}: {r:?}");
        assert_eq!(r.text(), format!("write {k}"));
    }
    // A write now lands on the edge.
    let r = put(
        &centers[0],
        &alice,
        "/homepod/on-edge.txt",
        b"written on the edge",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-xpod-node"), Some("edge-1"));
    // The edge's own sync has not run: the cluster shows the move still syncing.
    assert_eq!(
        pod(&centers[0], &admin, "homepod")["migrationStatus"],
        "syncing"
    );

    // The edge restarts midway: the pod keeps working, and the sync, let go, finishes.
    edge.kill9();
    let r = get(&centers[1], &alice, "/homepod/f-1.bin");
    assert_eq!(r.status, 503, "the edge is down: {r:?}");
    edge.restart();
    eventually(20, "the pod works again after the edge's restart", || {
        get(&centers[1], &alice, "/homepod/f-1.bin").status == 200
    });
    std::fs::remove_file(&hold).unwrap();
    eventually(60, "the cluster records the edge's sync done", || {
        let p = pod(&centers[1], &admin, "homepod");
        p["migrationStatus"] == "done" && p["migrationProgress"] == 100
    });
    // Everything is on the edge now: no object comes from the cluster any more.
    assert_eq!(all_exact(&centers[1], &alice, "homepod", 3), 0);

    // And back to center-1, by alice again.
    let r = migrate(&centers[1], &alice, "homepod", "center-1");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["nodeId"], "center-1");
    all_exact(&centers[1], &alice, "homepod", 3);
    let r = get(&centers[1], &alice, "/homepod/on-edge.txt").expect(200);
    assert_eq!(r.text(), "written on the edge");
    assert_eq!(r.header("x-xpod-node"), Some("center-1"));
    for k in &acked {
        assert_eq!(
            get(&centers[1], &alice, &format!("/homepod/w-{k}.txt")).text(),
            format!("write {k}")
        );
    }
    let r = put(&centers[0], &alice, "/homepod/back.txt", b"back home");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-xpod-node"), Some("center-1"));

    // center-2 answered every call: it counts them.
    let metrics = get(&centers[1], &admin, "/metrics").expect(200).text();
    let count = |from: &str, to: &str, result: &str| -> u64 {
        let want = [
            format!("from=\"{from}\""),
            format!("to=\"{to}\""),
            format!("result=\"{result}\""),
        ];
        metrics
            .lines()
            .filter(|l| l.starts_with("xpod_pod_migrations_total{"))
            .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count("center", "edge", "moved"), 1, "{metrics}");
    assert_eq!(count("center", "edge", "refused"), 2, "{metrics}");
    assert_eq!(count("edge", "center", "moved"), 1, "{metrics}");

    // The audit names both moves, the refusal, and who asked.
    let audit = get(
        &centers[0],
        &admin,
        "/api/v1/audit?action=pod.migrate&target=homepod",
    )
    .expect(200)
    .json();
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["details"]["toEdge"] == true && e["details"]["to"] == "edge-1"),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["details"]["fromEdge"] == true && e["details"]["to"] == "center-1"),
        "{audit}"
    );
    let refused = get(
        &centers[0],
        &admin,
        "/api/v1/audit?action=refused.pod_migrate&target=homepod",
    )
    .expect(200)
    .json();
    assert!(
        refused["entries"][0]["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("accept_pods")),
        "{refused}"
    );
    drop(edge2);
}

#[test]
fn a_pod_moves_from_one_edge_to_another_through_the_cluster() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-to-edge");
    let presence = tmp.path().join("presence.toml");
    std::fs::write(&presence, "[tunnel.presence]\nheartbeat_secs = 1\n").unwrap();
    // The blob GC runs often, so dropped copies are seen to go.
    let gc = ("XPOD_TEST_GC", "200,0,0".to_string());
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_CONFIG", presence.display().to_string()), gc.clone()]
    });
    let admin = centers[0].admin_key();
    // Both edges are granted any account's pods at join (no config of their own).
    let grant = json!({"singleUse": true, "acceptPods": ["*"]});
    let mut edge1 = start_edge_env(
        &tmp,
        &centers[0],
        "edge-1",
        "[tunnel.presence]\nheartbeat_secs = 1\n",
        &new_token_with(&centers[0], grant.clone()),
        std::slice::from_ref(&gc),
    );
    let edge2 = start_edge_with_token(
        &tmp,
        &centers[0],
        "edge-2",
        "[tunnel.presence]\nheartbeat_secs = 1\n",
        &new_token_with(&centers[0], grant),
    );
    wait_online(&centers[0], "edge-1");
    wait_online(&centers[0], "edge-2");
    let policy = get(&centers[1], &admin, "/.cluster/nodes/edge-2")
        .expect(200)
        .json();
    assert_eq!(policy["policy"]["acceptPods"], json!(["*"]), "{policy}");

    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "roamer", "accessMode": "public-read"}))
        .send()
        .expect(201);
    for i in 0..N {
        let r = put(
            &centers[1],
            &admin,
            &format!("/roamer/f-{i}.bin"),
            &content(i),
        );
        assert_eq!(r.status, 201, "f-{i}: {r:?}");
    }
    let shared = tmp.path().join("objects");
    assert_eq!(blob_files(&shared, "roamer"), N, "the cluster's copy");
    // Onto edge-1, and its sync done: the cluster's copy goes (a move, not a copy).
    let r = migrate(&centers[1], &admin, "roamer", "edge-1");
    assert_eq!(r.status, 202, "{r:?}");
    eventually(60, "edge-1's sync done", || {
        let p = pod(&centers[0], &admin, "roamer");
        p["migrationStatus"] == "done" && p["migrationProgress"] == 100
    });
    let on_edge1 = tmp.path().join("edge-1").join("objects");
    assert_eq!(blob_files(&on_edge1, "roamer"), N, "edge-1 has every byte");
    eventually(30, "the cluster's copy is dropped", || {
        blob_files(&shared, "roamer") == 0
    });
    let r = put(
        &centers[0],
        &admin,
        "/roamer/made-on-1.txt",
        b"made on edge-1",
    );
    assert_eq!(r.header("x-xpod-node"), Some("edge-1"), "{r:?}");

    // From edge-1 to edge-2: one call, on the center that holds neither tunnel.
    let r = migrate(&centers[1], &admin, "roamer", "edge-2");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["nodeId"], "edge-2");
    // A write on edge-1's own port is refused now (its store fenced the pod).
    let r = put(&edge1, &edge1.admin_key(), "/roamer/late.txt", b"late");
    assert_ne!(
        r.status, 201,
        "edge-1 must not take writes after the move: {r:?}"
    );
    let r = get(&centers[1], &admin, "/roamer/made-on-1.txt").expect(200);
    assert_eq!(r.text(), "made on edge-1");
    assert_eq!(r.header("x-xpod-node"), Some("edge-2"));
    eventually(60, "edge-2's sync done", || {
        let p = pod(&centers[1], &admin, "roamer");
        p["migrationStatus"] == "done" && p["migrationProgress"] == 100
    });
    let on_edge2 = tmp.path().join("edge-2").join("objects");
    assert_eq!(
        blob_files(&on_edge2, "roamer"),
        N + 1,
        "edge-2 has every byte"
    );
    // edge-1's copy and the copies the cluster made on the way are dropped.
    eventually(30, "edge-1's copy is dropped", || {
        blob_files(&on_edge1, "roamer") == 0
    });
    eventually(30, "the cluster keeps no copy", || {
        blob_files(&shared, "roamer") == 0
    });
    // edge-1 gone for good: every byte is on edge-2.
    assert!(edge1.terminate().success());
    all_exact(&centers[0], &admin, "roamer", N);
    assert_eq!(
        get(&centers[0], &admin, "/roamer/made-on-1.txt").text(),
        "made on edge-1"
    );
    drop(edge2);
}

#[test]
fn a_move_onto_an_edge_cut_before_the_hand_over_heals() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-adopt-cut");
    let presence = tmp.path().join("presence.toml");
    std::fs::write(&presence, "[tunnel.presence]\nheartbeat_secs = 1\n").unwrap();
    // center-2 dies between making the edge the owner and handing it the rows.
    let centers = start_centers(&tmp, &pg, 2, |i| {
        let mut env = vec![("XPOD_CONFIG", presence.display().to_string())];
        if i == 2 {
            env.push(("XPOD_TEST_ABORT_BEFORE_HAND_OVER", "1".to_string()));
        }
        env
    });
    let admin = centers[0].admin_key();
    let mut edge = start_edge_with_token(
        &tmp,
        &centers[0],
        "edge-1",
        "[tunnel]\naccept_pods = [\"*\"]\n\n[tunnel.presence]\nheartbeat_secs = 1\n",
        &new_token(&centers[0]),
    );
    wait_online(&centers[0], "edge-1");
    for pod_id in ["cutpod", "cutpod2"] {
        Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
            .bearer(&admin)
            .json(&json!({"podId": pod_id}))
            .send()
            .expect(201);
        for i in 0..5 {
            let r = put(
                &centers[0],
                &admin,
                &format!("/{pod_id}/f-{i}.bin"),
                &content(i),
            );
            assert_eq!(r.status, 201, "{r:?}");
        }
    }

    // The call dies with center-2: the cluster names the edge, which has no rows yet.
    let r = migrate(&centers[1], &admin, "cutpod", "edge-1");
    assert_ne!(r.status, 202, "center-2 aborts before answering: {r:?}");
    assert_eq!(pod(&centers[0], &admin, "cutpod")["nodeId"], "edge-1");
    let r = get(&centers[0], &admin, "/cutpod/f-1.bin");
    assert_eq!(r.status, 503, "refused (retryable), never a 404: {r:?}");
    let r = put(&centers[0], &admin, "/cutpod/lost.txt", b"x");
    assert_eq!(r.status, 503, "no write lands anywhere meanwhile: {r:?}");

    // Healed when the edge registers again.
    edge.restart();
    eventually(30, "the cut move finishes when the edge comes back", || {
        get(&centers[0], &admin, "/cutpod/f-1.bin").status == 200
    });
    for i in 0..5 {
        let r = get(&centers[0], &admin, &format!("/cutpod/f-{i}.bin")).expect(200);
        assert!(r.body == content(i), "f-{i}");
        assert_eq!(r.header("x-xpod-node"), Some("edge-1"));
    }

    // Or by repeating the call: center-2 is back (and dies the same way again), the call is
    // repeated on center-1.
    let mut centers = centers;
    centers[1].restart();
    let r = migrate(&centers[1], &admin, "cutpod2", "edge-1");
    assert_ne!(r.status, 202, "{r:?}");
    assert_eq!(get(&centers[0], &admin, "/cutpod2/f-1.bin").status, 503);
    let r = migrate(&centers[0], &admin, "cutpod2", "edge-1");
    assert_eq!(r.status, 202, "the repeated call finishes the move: {r:?}");
    for i in 0..5 {
        let r = get(&centers[0], &admin, &format!("/cutpod2/f-{i}.bin")).expect(200);
        assert!(r.body == content(i), "f-{i}");
    }
    let r = put(&centers[0], &admin, "/cutpod2/after.txt", b"after");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-xpod-node"), Some("edge-1"));
}

/// One request on a `Cluster` stream an edge opens on its tunnel: (status, body).
async fn ask(conn: &quinn::Connection, method: &str, path: &str) -> (u16, String) {
    let header = xpod_tunnel::proto::StreamHeader {
        target: xpod_tunnel::proto::Target::Cluster,
        client_addr: None,
    };
    let (mut send, mut recv) = xpod_tunnel::stream::open(conn, &header).await.unwrap();
    let body = r#"{"status":"done","progress":100}"#;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: cluster\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Not finished: a half-closed request is a client gone (the server does not answer it).
    send.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut recv, &mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn an_edge_gets_nothing_of_a_pod_it_does_not_own() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-uplink");
    let centers = start_centers(&tmp, &pg, 1, |_| Vec::new());
    let admin = centers[0].admin_key();
    let edge1 = start_edge_with_token(
        &tmp,
        &centers[0],
        "edge-1",
        "[tunnel]\naccept_pods = [\"*\"]\n",
        &new_token(&centers[0]),
    );
    wait_online(&centers[0], "edge-1");
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "victim"}))
        .send()
        .expect(201);
    put(&centers[0], &admin, "/victim/secret.txt", b"not for edge-2").expect(201);
    migrate(&centers[0], &admin, "victim", "edge-1").expect(202);
    // edge-2 joins honestly, then a program holding its identity speaks for it.
    let mut edge2 = start_edge_with_token(&tmp, &centers[0], "edge-2", "", &new_token(&centers[0]));
    wait_online(&centers[0], "edge-2");
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "mine", "nodeId": "edge-2"}))
        .send()
        .expect(201);
    assert!(edge2.terminate().success());
    let dir = tmp.path().join("edge-2");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let identity = xpod_tunnel::identity::NodeIdentity::from_pem(
        &read("node.crt"),
        &read("node.key"),
        &read("ca.crt"),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let register = xpod_tunnel::proto::Register {
            node_id: "edge-2".into(),
            role: xpod_tunnel::proto::Role::Edge,
            version: "hostile".into(),
            os: String::new(),
            arch: String::new(),
            addresses: Vec::new(),
            services: Vec::new(),
            pods: Vec::new(),
        };
        let center = centers[0].addr();
        let config = xpod_tunnel::endpoint::DialerConfig::new(
            vec![center],
            "127.0.0.1",
            identity,
            register,
            xpod_tunnel::proto::Timers::default(),
        );
        let mut dialer = xpod_tunnel::endpoint::EdgeDialer::spawn_with(config).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), dialer.events().recv())
                .await
                .expect("registered within 15 s")
                .expect("dialer events");
            if matches!(ev.event, xpod_tunnel::proto::Event::Registered(_)) {
                break;
            }
        }
        let conn = dialer.connection(center).expect("a connection");

        // A pod the cluster gives this edge: answered (so the refusals below are about
        // ownership, not a path that never works).
        let (status, body) = ask(&conn, "GET", "/cluster/pods/mine").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"rows\""), "{body}");
        // Another edge's pod: its rows, a blob, its state — all refused, nothing leaks.
        let (status, body) = ask(&conn, "GET", "/cluster/pods/victim").await;
        assert_eq!(status, 409, "{body}");
        assert!(!body.contains("secret.txt"), "{body}");
        let (status, body) =
            ask(&conn, "GET", "/cluster/blobs?key=blobs%2Fvictim%2Fanything").await;
        assert_eq!(status, 409, "{body}");
        let (status, body) = ask(&conn, "POST", "/cluster/pods/victim/state").await;
        assert_eq!(status, 409, "{body}");
        // Malformed asks are named.
        let (status, body) = ask(&conn, "GET", "/cluster/blobs?key=nothing").await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = ask(&conn, "GET", "/cluster/pods/..%2F..").await;
        assert_eq!(status, 404, "{body}");
        // Any other stream target an edge opens is reset.
        let header = xpod_tunnel::proto::StreamHeader {
            target: xpod_tunnel::proto::Target::Runner {
                node: "center-1".into(),
                hops: 1,
            },
            client_addr: None,
        };
        let (mut send, mut recv) = xpod_tunnel::stream::open(&conn, &header).await.unwrap();
        let _ = send
            .write_all(b"POST /sandboxes HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut recv, &mut out),
        )
        .await;
        assert!(
            matches!(read, Ok(Err(_))) || out.is_empty(),
            "a runner stream from an edge must be refused: {}",
            String::from_utf8_lossy(&out)
        );
        dialer.shutdown().await;
    });
    // The victim pod is untouched.
    let p = pod(&centers[0], &admin, "victim");
    assert_eq!(p["nodeId"], "edge-1");
    assert_ne!(p["migrationStatus"], "failed");
    drop(edge1);
}
