//! Issue 21, first slice: a pod moves from an edge to the cluster with one call, as instantly
//! as between centers (real processes: two centers on PostgreSQL sharing one object store, an
//! edge joined to the first with a grant for pod ids `mv…`).
//!
//! The edge creates the pod; 200 objects are written to it through center-2 (so they live in
//! the edge's own store), one is deleted. With the target's sync held back:
//! - `POST /.cluster/pods/mvpod/migrate` to center-1 answers 202 `syncing` with the new epoch;
//! - every object reads back byte-exact through center-2 at once, its bytes read from the edge
//!   through the tunnel (`x-xpod-read-from: edge:edge-1`); the deleted one stays deleted;
//! - a write after the 202 lands at the new owner; a write on the edge's own port is refused;
//!   a client writing through center-2 all along loses no acknowledged write;
//! - the edge killed halfway: objects already read are still served, the others answer 503
//!   `edge_offline` naming the edge;
//! - the sync let go while the edge is away waits (`syncing`, not `failed`); the edge back,
//!   the move reaches `done` / 100 %, and every object reads byte-exact with the edge stopped
//!   for good.
//!
//! A second test moves a pod with a 1 GiB object: read through the other center right after
//! the 202 (streamed from the edge and copied once), byte-exact, no process past 100 MiB
//! resident. A third cuts a move between the edge's release and the adoption (the center
//! dies): the pod refuses writes, and repeating the call finishes the move. Moves onto edges:
//! `edge_adopt.rs`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::edges::{new_token_with, start_edge_with_token, wait_online};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

const N: usize = 200;

fn content(i: usize) -> Vec<u8> {
    // 1 KiB to 61 KiB, different bytes for every object.
    let len = 1024 + (i * 7919) % (60 * 1024);
    (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
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

fn pod(c: &NodeProcess, key: &str) -> Value {
    get(c, key, "/.cluster/pods/mvpod").expect(200).json()
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_pod_moves_from_an_edge_to_a_center_at_once_and_its_bytes_follow() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-migrate");
    let hold = tmp.path().join("hold-sync");
    std::fs::write(&hold, "").unwrap();
    let presence = tmp.path().join("presence.toml");
    std::fs::write(&presence, "[tunnel.presence]\nheartbeat_secs = 1\n").unwrap();
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![
            ("XPOD_CONFIG", presence.display().to_string()),
            ("XPOD_TEST_SYNC_HOLD", hold.display().to_string()),
        ]
    });
    let key = centers[0].admin_key();
    let token = new_token_with(
        &centers[0],
        json!({"singleUse": true, "podPrefixes": ["mv"]}),
    );
    let mut edge = start_edge_with_token(
        &tmp,
        &centers[0],
        "edge-1",
        "[tunnel.presence]\nheartbeat_secs = 1\n",
        &token,
    );
    wait_online(&centers[0], "edge-1");
    // The edge creates the pod in its own store; the cluster learns it owns it.
    Curl::new("POST", format!("{}/.cluster/pods", edge.url()))
        .bearer(&edge.admin_key())
        .json(&json!({"podId": "mvpod", "accessMode": "public-read"}))
        .send()
        .expect(201);
    eventually(15, "the cluster records edge-1 as mvpod's owner", || {
        let r = get(&centers[1], &key, "/.cluster/pods/mvpod");
        r.status == 200 && r.json()["nodeId"] == "edge-1"
    });
    let via = &centers[1];
    eventually(20, "center-2 reaches the edge's pod", || {
        put(via, &key, "/mvpod/probe.txt", b"probe").status == 201
    });
    for i in 0..N {
        let r = put(via, &key, &format!("/mvpod/f-{i}.bin"), &content(i));
        assert_eq!(r.status, 201, "f-{i}: {r:?}");
        assert_eq!(r.header("x-xpod-node"), Some("edge-1"));
    }
    Curl::new("DELETE", format!("{}/mvpod/f-7.bin", via.url()))
        .bearer(&key)
        .send()
        .expect(204);
    let before = pod(via, &key);

    // A client writes through center-2 all along the move: every acknowledged write must be
    // readable afterwards (writes in the instant of the hand-over may be refused, never lost).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, key, stop) = (via.url(), key.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut refused = 0;
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = Curl::new("PUT", format!("{url}/mvpod/w-{k}.txt"))
                    .bearer(&key)
                    .header("Content-Type: text/plain")
                    .body(format!("write {k}").into_bytes())
                    .arg("--max-time")
                    .arg("30")
                    .send();
                match r.status {
                    201 => acked.push(k),
                    _ => refused += 1,
                }
                k += 1;
            }
            (acked, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // The move: 202 at once, the new owner at the next epoch, bytes still to copy.
    let t = Instant::now();
    let r = Curl::new("POST", format!("{}/.cluster/pods/mvpod/migrate", via.url()))
        .bearer(&key)
        .json(&json!({"targetNode": "center-1"}))
        .send();
    let took = t.elapsed();
    assert_eq!(r.status, 202, "{r:?}");
    let moved = r.json();
    assert_eq!(moved["nodeId"], "center-1", "{moved}");
    assert_eq!(moved["epoch"], before["epoch"].as_i64().unwrap() + 1);
    assert_eq!(moved["migrationStatus"], "syncing");
    assert_eq!(
        moved["accessMode"], "public-read",
        "the edge's access mode moved too"
    );
    eprintln!("edge → center: 202 after {took:?}");

    // Reads through center-2: served by center-1, the bytes from the edge for now.
    let mut from_edge = 0;
    for i in (0..N).filter(|i| *i != 7) {
        let r = get(via, &key, &format!("/mvpod/f-{i}.bin"));
        assert_eq!(r.status, 200, "f-{i}: {r:?}");
        assert_eq!(r.body, content(i), "f-{i} byte-exact");
        assert_eq!(r.header("x-xpod-node"), Some("center-1"));
        if r.header("x-xpod-read-from") == Some("edge:edge-1") {
            from_edge += 1;
        }
        if i == N / 2 {
            break;
        }
    }
    assert!(from_edge > 90, "read from the edge: {from_edge}");
    assert_eq!(
        get(via, &key, "/mvpod/f-7.bin").status,
        404,
        "still deleted"
    );
    // A write after the 202 is the new owner's; the edge refuses its own.
    let r = put(via, &key, "/mvpod/after.bin", b"after the move");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-xpod-node"), Some("center-1"));
    let r = put(&edge, &edge.admin_key(), "/mvpod/late.bin", b"too late");
    assert_eq!(r.status, 503, "a write on the edge after the move: {r:?}");
    assert_eq!(get(via, &key, "/mvpod/late.bin").status, 404);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = writer.join().unwrap();
    eprintln!(
        "writes during the move: {} acknowledged, {refused} refused",
        acked.len()
    );
    assert!(acked.len() > 10, "the writer got through: {}", acked.len());

    // The edge dies halfway: what was read is served, the rest is a clear 503.
    std::thread::sleep(Duration::from_secs(2)); // the background copies of those reads
    edge.kill9();
    for i in [0usize, 50, 99] {
        let r = get(via, &key, &format!("/mvpod/f-{i}.bin"));
        assert_eq!(r.status, 200, "f-{i} was copied: {r:?}");
        assert_eq!(r.body, content(i));
    }
    let r = get(via, &key, "/mvpod/f-150.bin");
    assert_eq!(r.status, 503, "{r:?}");
    let e = r.json();
    assert_eq!(e["code"], "edge_offline", "{e}");
    assert!(e["message"].as_str().unwrap().contains("edge-1"), "{e}");

    // The sync let go while the edge is away: it waits (still syncing), it does not fail.
    std::fs::remove_file(&hold).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let p = pod(via, &key);
    assert_eq!(p["migrationStatus"], "syncing", "{p}");
    assert!(p["migrationProgress"].as_i64().unwrap() < 100, "{p}");
    // Back: the sync resumes and finishes; every byte is in the cluster.
    edge.restart();
    wait_online(&centers[0], "edge-1");
    eventually(60, "the move reaches done", || {
        let p = pod(via, &key);
        p["migrationStatus"] == "done" && p["migrationProgress"] == 100
    });
    assert!(edge.terminate().success());
    for c in &centers {
        for i in (0..N).filter(|i| *i != 7) {
            let r = get(c, &key, &format!("/mvpod/f-{i}.bin"));
            assert_eq!(r.status, 200, "f-{i} via {}: {r:?}", c.url());
            assert_eq!(r.body, content(i), "f-{i} byte-exact");
        }
    }
    assert_eq!(get(via, &key, "/mvpod/after.bin").body, b"after the move");
    for k in &acked {
        let r = get(via, &key, &format!("/mvpod/w-{k}.txt"));
        assert_eq!(r.status, 200, "acknowledged write w-{k} lost: {r:?}");
        assert_eq!(r.body, format!("write {k}").into_bytes(), "w-{k}");
    }
    // The audit names the move.
    let audit = get(
        &centers[0],
        &key,
        "/api/v1/audit?action=pod.migrate&target=mvpod",
    )
    .expect(200)
    .json();
    let entry = &audit["entries"][0];
    assert_eq!(entry["details"]["from"], "edge-1", "{audit}");
    assert_eq!(entry["details"]["fromEdge"], true, "{audit}");
}

/// sha256 of a file, read in 1 MiB chunks.
fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A 1 GiB object written to an edge's pod moves with it: read through the other center right
/// after the 202 (streamed from the edge and copied once), byte-exact, while no process goes
/// past 100 MiB resident.
#[test]
fn a_one_gib_object_moves_with_its_pod_in_flat_memory() {
    const SIZE: u64 = 1 << 30;
    const LIMIT_KIB: u64 = 100 * 1024;
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-migrate-big");
    let centers = start_centers(&tmp, &pg, 2, |_| Vec::new());
    let key = centers[0].admin_key();
    let token = new_token_with(
        &centers[0],
        json!({"singleUse": true, "podPrefixes": ["mv"]}),
    );
    let edge = start_edge_with_token(&tmp, &centers[0], "edge-1", "", &token);
    wait_online(&centers[0], "edge-1");
    Curl::new("POST", format!("{}/.cluster/pods", edge.url()))
        .bearer(&edge.admin_key())
        .json(&json!({"podId": "mvbig"}))
        .send()
        .expect(201);
    eventually(15, "the cluster records edge-1 as mvbig's owner", || {
        let r = get(&centers[0], &key, "/.cluster/pods/mvbig");
        r.status == 200 && r.json()["nodeId"] == "edge-1"
    });
    // 1 GiB of a pattern that differs in every MiB.
    let src = tmp.path().join("big.bin");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for mib in 0..(SIZE >> 20) {
            let chunk: Vec<u8> = (0..1u32 << 20)
                .map(|j| (mib as u32).wrapping_mul(131).wrapping_add(j) as u8)
                .collect();
            f.write_all(&chunk).unwrap();
        }
    }
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let url = |c: &NodeProcess| format!("{}/mvbig/big.bin", c.url());
    // Written through center-1 into the edge's own store.
    let code = curl(&[
        "-T",
        src.to_str().unwrap(),
        "-H",
        "Content-Type: application/octet-stream",
        &url(&centers[0]),
    ]);
    assert_eq!(code, "201", "the upload to the edge");
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/mvbig/migrate", centers[0].url()),
    )
    .bearer(&key)
    .json(&json!({"targetNode": "center-2"}))
    .send();
    assert_eq!(r.status, 202, "{r:?}");
    // Read through center-1 at once: center-2 serves it, from the edge through the tunnel.
    let out = tmp.path().join("back.bin");
    let out_s = out.to_str().unwrap().to_string();
    let status = std::process::Command::new("curl")
        .args(["-sS", "-o", &out_s, "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .arg(url(&centers[0]))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "200");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), SIZE);
    assert_eq!(sha256_file(&out), sha256_file(&src), "byte-exact");
    eventually(120, "the move reaches done", || {
        pod_of(&centers[1], &key, "mvbig")["migrationStatus"] == "done"
    });
    for (name, pid) in [
        ("center-1", centers[0].pid()),
        ("center-2", centers[1].pid()),
        ("edge-1", edge.pid()),
    ] {
        let peak = xpod_integration::edges::proc_kib(pid, "VmHWM").expect("/proc/PID/status");
        eprintln!("{name}: peak resident {} MiB", peak / 1024);
        assert!(
            peak < LIMIT_KIB,
            "{name} peaked at {} MiB resident",
            peak / 1024
        );
    }
    drop(edge);
    // Now the cluster's own copy.
    std::fs::remove_file(&out).unwrap();
    let status = std::process::Command::new("curl")
        .args(["-sS", "-o", &out_s, "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .arg(url(&centers[1]))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "200");
    assert_eq!(
        sha256_file(&out),
        sha256_file(&src),
        "byte-exact from the cluster's copy"
    );
}

fn pod_of(c: &NodeProcess, key: &str, pod: &str) -> Value {
    get(c, key, &format!("/.cluster/pods/{pod}"))
        .expect(200)
        .json()
}

/// The center taking a move dies after the edge released the pod and before the adoption: the
/// pod refuses writes (nothing is acknowledged that could be lost), and repeating the call
/// through another center finishes the move with every byte.
#[test]
fn a_move_cut_between_release_and_adoption_is_finished_by_repeating_it() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-edge-migrate-cut");
    let centers = start_centers(&tmp, &pg, 2, |i| {
        if i == 2 {
            vec![("XPOD_TEST_ABORT_AFTER_RELEASE", "1".to_string())]
        } else {
            Vec::new()
        }
    });
    let key = centers[0].admin_key();
    let token = new_token_with(
        &centers[0],
        json!({"singleUse": true, "podPrefixes": ["mv"]}),
    );
    let edge = start_edge_with_token(&tmp, &centers[0], "edge-1", "", &token);
    wait_online(&centers[0], "edge-1");
    Curl::new("POST", format!("{}/.cluster/pods", edge.url()))
        .bearer(&edge.admin_key())
        .json(&json!({"podId": "mvcut"}))
        .send()
        .expect(201);
    eventually(15, "the cluster records edge-1 as mvcut's owner", || {
        let r = get(&centers[0], &key, "/.cluster/pods/mvcut");
        r.status == 200 && r.json()["nodeId"] == "edge-1"
    });
    for i in 0..5 {
        let r = put(&centers[0], &key, &format!("/mvcut/c-{i}.bin"), &content(i));
        assert_eq!(r.status, 201, "{r:?}");
    }
    // center-2 takes the call and dies after the release.
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/mvcut/migrate", centers[1].url()),
    )
    .bearer(&key)
    .json(&json!({"targetNode": "center-1"}))
    .arg("--max-time")
    .arg("20")
    .send();
    assert_ne!(r.status, 202, "the center died before answering: {r:?}");
    let p = pod_of(&centers[0], &key, "mvcut");
    assert_eq!(p["nodeId"], "edge-1", "nothing moved in the cluster: {p}");
    let r = put(&centers[0], &key, "/mvcut/during.bin", b"x");
    assert_eq!(r.status, 503, "the released pod refuses writes: {r:?}");
    // The call again, through center-1: the move finishes.
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/mvcut/migrate", centers[0].url()),
    )
    .bearer(&key)
    .json(&json!({"targetNode": "center-1"}))
    .send();
    assert_eq!(r.status, 202, "{r:?}");
    for i in 0..5 {
        let r = get(&centers[0], &key, &format!("/mvcut/c-{i}.bin"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, content(i));
    }
    assert_eq!(put(&centers[0], &key, "/mvcut/after.bin", b"y").status, 201);
    drop(edge);
}
