//! End-to-end: a blob is deleted only when no reader and no upload in flight can need it.
//!
//! - A slow GET of version 1 while version 2 is PUT completes byte-exact, and version 1's
//!   object stays for the grace period after the replace (and a deleted resource's object
//!   too), then the GC deletes it.
//! - A PUT held between its upload and its commit for longer than the GC's minimum age and its
//!   pending lease is kept (201, byte-exact GET afterwards), while an orphan planted next to it
//!   is collected (so the GC did run over it).
//!
//! Each runs on local-disk objects and on a real S3-compatible server (moto). The GC runs every
//! 200 ms with small ages (`XPOD_TEST_GC`); `XPOD_TEST_COMMIT_HOLD` holds a write before its
//! commit. Needs `curl`, the binary (`cargo build -p xpod-node`) and, for the S3 variants,
//! `moto_server` (see `xpod_integration::s3`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::s3::{S3Server, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "xpod-blobs";

/// Where the node under test keeps its objects, and how the test looks at them directly.
enum Objects {
    Local(PathBuf),
    S3(S3Server),
}

impl Objects {
    /// The blob keys under `blobs/<pod>/` (finished objects only, not staging files).
    fn keys(&self, pod: &str) -> Vec<String> {
        let mut keys = match self {
            Objects::Local(root) => match std::fs::read_dir(root.join("blobs").join(pod)) {
                Ok(dir) => dir
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(|n| format!("blobs/{pod}/{n}"))
                    .collect(),
                Err(_) => Vec::new(),
            },
            Objects::S3(s3) => s3.list_keys(BUCKET, &format!("blobs/{pod}/")),
        };
        keys.sort();
        keys
    }

    fn exists(&self, pod: &str, key: &str) -> bool {
        self.keys(pod).iter().any(|k| k == key)
    }

    /// Writes an object behind the node's back (an orphan, as a crash would leave).
    fn plant(&self, key: &str, bytes: &[u8]) {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Objects::S3(s3) => s3.put_object(BUCKET, key, bytes),
        }
    }
}

/// A node with the GC at `gc` (`XPOD_TEST_GC`) and more env, on local disk or on moto.
fn start(s3: bool, gc: &str, env: &[(&str, String)]) -> (NodeProcess, Objects) {
    let mut b = NodeProcess::builder().env("XPOD_TEST_GC", gc);
    for (k, v) in env {
        b = b.env(*k, v);
    }
    if !s3 {
        let node = b.start();
        let root = node.data_dir().join("objects");
        return (node, Objects::Local(root));
    }
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let node = b
        .env("XPOD_STORAGE_OBJECTS_URL", format!("s3://{BUCKET}"))
        .env("XPOD_STORAGE_ENDPOINT", server.endpoint())
        .env("XPOD_STORAGE_ACCESS_KEY", ACCESS_KEY)
        .env("XPOD_STORAGE_SECRET_KEY", SECRET_KEY)
        .start();
    (node, Objects::S3(server))
}

fn create_pod(node: &NodeProcess, key: &str, pod: &str) {
    Curl::new("POST", format!("{}/.cluster/pods", node.url()))
        .bearer(key)
        .json(&json!({"podId": pod}))
        .send()
        .expect(201);
}

fn put(node: &NodeProcess, key: &str, path: &str, body: Vec<u8>) -> Resp {
    Curl::new("PUT", format!("{}{path}", node.url()))
        .bearer(key)
        .header("Content-Type: application/octet-stream")
        .body(body)
        .arg("--max-time")
        .arg("120")
        .send()
}

fn get(node: &NodeProcess, key: &str, path: &str) -> Resp {
    Curl::get(format!("{}{path}", node.url()))
        .bearer(key)
        .arg("--max-time")
        .arg("120")
        .send()
}

/// Deterministic bytes, different per `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long a replaced or deleted blob is kept in the grace-period test.
const GRACE: Duration = Duration::from_secs(8);

fn slow_read_while_replaced(s3: bool) {
    let (node, objects) = start(s3, &format!("200,0,{}", GRACE.as_millis()), &[]);
    let key = node.admin_key();
    create_pod(&node, &key, "reader");
    let v1 = content(1, 8 * 1024 * 1024);
    let v2 = content(2, 3 * 1024 * 1024 + 17);
    put(&node, &key, "/reader/file.bin", v1.clone()).expect(201);
    let keys = objects.keys("reader");
    assert_eq!(keys.len(), 1, "one object after the first PUT: {keys:?}");
    let v1_key = keys[0].clone();

    // A slow reader of version 1: 8 MiB at 2 MiB/s.
    let tmp = TempDir::new("xpod-slow-get");
    let out = tmp.path().join("v1.bin");
    let reader = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "2M",
            "--max-time",
            "120",
            "-w",
            "%{http_code}",
        ])
        .arg("-o")
        .arg(&out)
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .arg(format!("{}/reader/file.bin", node.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    eventually(Duration::from_secs(30), "the slow GET started", || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 0)
    });

    // Version 2 commits while the reader is still reading.
    let replaced_at = Instant::now();
    put(&node, &key, "/reader/file.bin", v2.clone()).expect(204);
    assert!(
        objects.exists("reader", &v1_key),
        "version 1's object was deleted at once, under a reader"
    );
    let done = reader.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "200",
        "slow GET: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == v1,
        "the slow GET of version 1 is not byte-exact ({} bytes)",
        got.len()
    );
    assert!(
        replaced_at.elapsed() < GRACE,
        "the slow GET outlasted the grace period; the test proves nothing"
    );
    assert!(
        objects.exists("reader", &v1_key),
        "version 1's object went before the grace period"
    );
    assert_eq!(get(&node, &key, "/reader/file.bin").expect(200).body, v2);

    // After the grace period the GC deletes it (and never before).
    eventually(
        GRACE + Duration::from_secs(30),
        "version 1 collected",
        || !objects.exists("reader", &v1_key),
    );
    assert!(
        replaced_at.elapsed() >= GRACE,
        "version 1 collected after {:?}, before the grace period",
        replaced_at.elapsed()
    );
    let keys = objects.keys("reader");
    assert_eq!(keys.len(), 1, "version 2 stays: {keys:?}");
    let v2_key = keys[0].clone();

    // A deleted resource's object is kept for the grace period too.
    let deleted_at = Instant::now();
    Curl::new("DELETE", format!("{}/reader/file.bin", node.url()))
        .bearer(&key)
        .send()
        .expect(204);
    assert!(
        objects.exists("reader", &v2_key),
        "a deleted resource's object was deleted at once"
    );
    eventually(
        GRACE + Duration::from_secs(30),
        "the deleted object collected",
        || !objects.exists("reader", &v2_key),
    );
    assert!(
        deleted_at.elapsed() >= GRACE,
        "collected before the grace period"
    );
}

fn slow_upload_is_kept(s3: bool) {
    let tmp = TempDir::new("xpod-slow-put");
    let hold = tmp.path().join("hold-commit");
    // GC every 200 ms, any age, no grace, pending lease 1 s (refreshed every 100 ms).
    let (node, objects) = start(
        s3,
        "200,0,0,1000",
        &[("XPOD_TEST_COMMIT_HOLD", hold.display().to_string())],
    );
    let key = node.admin_key();
    create_pod(&node, &key, "writer");
    std::fs::write(&hold, b"").unwrap();

    let body = content(3, 5 * 1024 * 1024 + 3);
    let upload = {
        let (url, key, body) = (
            format!("{}/writer/big.bin", node.url()),
            key.clone(),
            body.clone(),
        );
        std::thread::spawn(move || {
            Curl::new("PUT", url)
                .bearer(&key)
                .header("Content-Type: application/octet-stream")
                .body(body)
                .arg("--max-time")
                .arg("120")
                .send()
        })
    };
    // The body is stored and the write waits before its commit.
    eventually(Duration::from_secs(30), "the upload stored", || {
        objects.keys("writer").len() == 1
    });
    let uploaded = objects.keys("writer")[0].clone();

    // An orphan next to it goes: the GC runs over the held upload.
    let orphan = format!("blobs/writer/{}", "0".repeat(32));
    objects.plant(&orphan, b"nobody points here");
    eventually(Duration::from_secs(30), "the orphan collected", || {
        !objects.exists("writer", &orphan)
    });
    // Held well past the minimum age (0) and the pending lease (1 s): still there.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        objects.exists("writer", &uploaded),
        "the GC deleted an upload in progress"
    );
    assert!(
        !upload.is_finished(),
        "the write did not wait for the hold file"
    );

    std::fs::remove_file(&hold).unwrap();
    let r = upload.join().unwrap();
    assert_eq!(r.status, 201, "held PUT: {} {}", r.text(), r.stderr);
    // Committed: referenced now, kept by the GC for good.
    std::thread::sleep(Duration::from_secs(1));
    let got = get(&node, &key, "/writer/big.bin").expect(200);
    assert!(
        got.body == body,
        "the held upload is not byte-exact ({} bytes)",
        got.body.len()
    );
    assert_eq!(objects.keys("writer"), vec![uploaded]);
}

#[test]
fn slow_read_survives_a_replace_local() {
    slow_read_while_replaced(false);
}

#[test]
fn slow_read_survives_a_replace_s3() {
    slow_read_while_replaced(true);
}

#[test]
fn slow_upload_is_kept_local() {
    slow_upload_is_kept(false);
}

#[test]
fn slow_upload_is_kept_s3() {
    slow_upload_is_kept(true);
}
