//! Two regions on two real S3-compatible servers (moto, started here; installed by
//! `integration/run-tests.sh`), one center in each, one PostgreSQL: a pod written in region `a`
//! moves to the center in region `b` and every read works at once — first from `a`'s bucket
//! (and copied into `b`'s), then from `b` — the sync job copies the rest, after which `a` can
//! vanish; 100 concurrent first reads of one object make exactly one copy; a read cut off
//! mid-stream caches and copies nothing; a resource deleted after the move does not come back
//! from the old region; and an unreachable region is a clear 503 that names it.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;
use xpod_integration::s3::{two_regions_toml, S3Server};

fn put(c: &NodeProcess, key: &str, path: &str, body: &[u8]) -> Resp {
    Curl::new("PUT", format!("{}{path}", c.url()))
        .bearer(key)
        .header("Content-Type: application/octet-stream")
        .body(body.to_vec())
        .arg("--max-time")
        .arg("60")
        .send()
}

fn get(c: &NodeProcess, key: &str, path: &str) -> Resp {
    Curl::get(format!("{}{path}", c.url()))
        .bearer(key)
        .arg("--max-time")
        .arg("60")
        .send()
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deterministic bytes for object `i` of `len` bytes.
fn content(i: usize, len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Blob keys (`blobs/<pod>/…`) in `bucket` of `s3`.
fn blob_keys(s3: &S3Server, bucket: &str, pod: &str) -> Vec<String> {
    s3.list_keys(bucket, &format!("blobs/{pod}/"))
}

/// How many times moto saw an object under `blobs/<pod>/` written into `bucket` (single PUTs
/// and multipart uploads started).
fn writes_into(s3: &S3Server, bucket: &str, pod: &str) -> usize {
    let prefix = format!("/{bucket}/blobs/{pod}/");
    s3.requests()
        .iter()
        .filter(|r| {
            (r.starts_with("PUT ") && r.contains(&prefix) && !r.contains("partNumber"))
                || (r.starts_with("POST ")
                    && r.contains(&prefix)
                    && r.contains("uploads")
                    && !r.contains("uploadId"))
        })
        .count()
}

struct Cluster {
    /// While this file exists, center-2's migration sync job waits.
    hold: std::path::PathBuf,
    _tmp: TempDir,
    _pg: PgServer,
    s3a: S3Server,
    s3b: S3Server,
    a: NodeProcess,
    b: NodeProcess,
    key: String,
}

fn cluster() -> Cluster {
    let tmp = TempDir::new("xpod-regions");
    let pg = PgServer::start().expect("PostgreSQL");
    let (s3a, s3b) = (S3Server::start(), S3Server::start());
    s3a.create_bucket("xpod-a");
    s3b.create_bucket("xpod-b");
    let config = tmp.path().join("regions.toml");
    std::fs::write(&config, two_regions_toml(&s3a, &s3b)).unwrap();
    let hold = tmp.path().join("hold-sync");
    let mut centers = start_centers(&tmp, &pg, 2, |i| {
        vec![
            ("XPOD_CONFIG", config.display().to_string()),
            ("XPOD_REGION", if i == 1 { "a" } else { "b" }.to_string()),
            ("XPOD_TEST_SYNC_HOLD", hold.display().to_string()),
        ]
    })
    .into_iter();
    let (a, b) = (centers.next().unwrap(), centers.next().unwrap());
    let key = a.admin_key();
    Cluster {
        hold,
        _tmp: tmp,
        _pg: pg,
        s3a,
        s3b,
        a,
        b,
        key,
    }
}

fn create_pod(c: &NodeProcess, key: &str, pod: &str) {
    Curl::new("POST", format!("{}/.cluster/pods", c.url()))
        .bearer(key)
        .json(&json!({"podId": pod}))
        .send()
        .expect(201);
}

fn migrate(c: &NodeProcess, key: &str, pod: &str, to: &str) {
    Curl::new("POST", format!("{}/.cluster/pods/{pod}/migrate", c.url()))
        .bearer(key)
        .json(&json!({"targetNode": to}))
        .send()
        .expect(202);
}

fn migration_status(c: &NodeProcess, key: &str, pod: &str) -> (String, i64) {
    let v = Curl::get(format!("{}/.cluster/pods/{pod}", c.url()))
        .bearer(key)
        .send()
        .expect(200)
        .json();
    (
        v["migrationStatus"].as_str().unwrap_or("").to_string(),
        v["migrationProgress"].as_i64().unwrap_or(-1),
    )
}

#[test]
fn a_pod_moves_to_another_region_and_reads_follow_its_bytes() {
    let mut c = cluster();
    let key = c.key.clone();
    create_pod(&c.a, &key, "mover");
    let files: BTreeMap<String, Vec<u8>> = (0..12)
        .map(|i| {
            let len = if i == 0 { 20 << 20 } else { 1000 + i * 777 };
            (format!("/mover/f{i}.bin"), content(i, len))
        })
        .collect();
    for (path, body) in &files {
        put(&c.a, &key, path, body).expect(201);
    }
    put(&c.a, &key, "/mover/doomed.txt", b"delete me").expect(201);
    assert_eq!(
        blob_keys(&c.s3a, "xpod-a", "mover").len(),
        13,
        "written in region a"
    );
    assert!(blob_keys(&c.s3b, "xpod-b", "mover").is_empty());

    // Move to region b; nothing is copied up front (the sync job is held for now).
    std::fs::write(&c.hold, b"").unwrap();
    migrate(&c.a, &key, "mover", "center-2");
    assert_eq!(migration_status(&c.b, &key, "mover"), ("syncing".into(), 0));
    // A resource deleted after the move must not come back from region a.
    Curl::new("DELETE", format!("{}/mover/doomed.txt", c.b.url()))
        .bearer(&key)
        .send()
        .expect(204);
    assert_eq!(get(&c.b, &key, "/mover/doomed.txt").status, 404);

    // First reads through b come from region a (the big one and one small), and are copied
    // into b's bucket; second reads come from b's cache; range reads work on every tier.
    let range = |path: &str| {
        Curl::get(format!("{}{path}", c.b.url()))
            .bearer(&key)
            .header("Range: bytes=100-199")
            .send()
            .expect(206)
    };
    let part = range("/mover/f2.bin");
    assert_eq!(part.body, files["/mover/f2.bin"][100..200]);
    assert_eq!(part.header("x-xpod-read-from"), Some("a"));
    for path in ["/mover/f0.bin", "/mover/f1.bin"] {
        let r = get(&c.b, &key, path).expect(200);
        assert_eq!(r.body, files[path], "{path}");
        assert_eq!(r.header("x-xpod-node"), Some("center-2"));
        assert_eq!(r.header("x-xpod-read-from"), Some("a"), "{path} first read");
    }
    // f0, f1 by the reads, f2 by the range read's background copy.
    eventually(30, "first reads are copied into b", || {
        blob_keys(&c.s3b, "xpod-b", "mover").len() == 3
    });
    for path in ["/mover/f0.bin", "/mover/f1.bin"] {
        let r = get(&c.b, &key, path).expect(200);
        assert_eq!(r.body, files[path], "{path}");
        assert_eq!(
            r.header("x-xpod-read-from"),
            Some("cache"),
            "{path} second read"
        );
        let part = range(path);
        assert_eq!(part.body, files[path][100..200]);
        assert_eq!(part.header("x-xpod-read-from"), Some("cache"));
    }
    let part = range("/mover/f2.bin");
    assert_eq!(
        part.header("x-xpod-read-from"),
        Some("b"),
        "a copied blob reads from b"
    );
    assert_eq!(part.body, files["/mover/f2.bin"][100..200]);
    assert_eq!(migration_status(&c.b, &key, "mover").0, "syncing");

    // The sync job copies the rest and says done.
    std::fs::remove_file(&c.hold).unwrap();
    eventually(60, "the migration sync finishes", || {
        migration_status(&c.b, &key, "mover") == ("done".into(), 100)
    });
    let in_b = blob_keys(&c.s3b, "xpod-b", "mover");
    assert_eq!(
        in_b.len(),
        12,
        "every live blob is in b (not the deleted one): {in_b:?}"
    );
    for k in &in_b {
        assert_eq!(
            c.s3b.get_object("xpod-b", k),
            c.s3a.get_object("xpod-a", k),
            "{k} copied byte for byte"
        );
    }
    // Region a's server goes away: everything still reads through b, byte for byte.
    c.s3a.stop();
    for (path, body) in &files {
        let r = get(&c.b, &key, path).expect(200);
        assert_eq!(&r.body, body, "{path} with region a gone");
    }
    assert_eq!(get(&c.b, &key, "/mover/doomed.txt").status, 404);
}

#[test]
fn concurrent_first_reads_make_one_copy_and_cut_reads_make_none() {
    let mut c = cluster();
    let key = c.key.clone();
    create_pod(&c.a, &key, "hot");
    let big = content(7, 24 << 20);
    put(&c.a, &key, "/hot/big.bin", &big).expect(201);
    let cut = content(8, 24 << 20);
    put(&c.a, &key, "/hot/cut.bin", &cut).expect(201);
    put(&c.a, &key, "/hot/keep.txt", b"still here").expect(201);
    // The sync job is held first, so what the reads do is seen on its own.
    std::fs::write(&c.hold, b"").unwrap();
    migrate(&c.a, &key, "hot", "center-2");
    let cache = c.b.data_dir().join("cache");

    // A read cut off mid-stream (raw HTTP: read 1 MiB, hang up) caches and copies nothing.
    {
        let mut s = TcpStream::connect(c.b.addr()).unwrap();
        write!(
            s,
            "GET /hot/cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
        )
        .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        blob_keys(&c.s3b, "xpod-b", "hot").is_empty(),
        "a cut read copied something into b"
    );
    assert!(
        walk(&cache).is_empty(),
        "a cut read left cache files: {:?}",
        walk(&cache)
    );

    // 100 concurrent first reads of one large object: all get the right bytes, one copy.
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let url = format!("{}/hot/big.bin", c.b.url());
            let key = key.clone();
            std::thread::spawn(move || {
                Curl::get(url)
                    .bearer(&key)
                    .arg("--max-time")
                    .arg("120")
                    .send()
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap().expect(200);
        assert!(r.body == big, "a concurrent reader got wrong bytes");
    }
    eventually(30, "the big object is copied into b", || {
        blob_keys(&c.s3b, "xpod-b", "hot").len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        writes_into(&c.s3b, "xpod-b", "hot"),
        1,
        "100 first reads wrote the object once: {:?}",
        c.s3b.requests()
    );

    // The sync job copies the other two (and not the big one again).
    std::fs::remove_file(&c.hold).unwrap();
    eventually(60, "the migration sync finishes", || {
        migration_status(&c.b, &key, "hot").0 == "done"
    });
    assert_eq!(blob_keys(&c.s3a, "xpod-a", "hot").len(), 3);
    let in_b = blob_keys(&c.s3b, "xpod-b", "hot");
    assert_eq!(
        in_b.len(),
        3,
        "all three blobs copied once synced: {in_b:?}"
    );
    assert_eq!(
        writes_into(&c.s3b, "xpod-b", "hot"),
        3,
        "exactly one write per blob into region b: {:?}",
        c.s3b.requests()
    );
    // The cut read left nothing half-copied: the object in b is complete.
    let cut_key = in_b
        .iter()
        .find(|k| c.s3b.get_object("xpod-b", k).as_deref() == Some(&cut[..]))
        .cloned();
    assert!(
        cut_key.is_some(),
        "the cut object, copied later by the sync job, is complete"
    );
    // No temp files are left in b's cache.
    let leftovers: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Both servers down: b's node still serves what it cached, and for what it has nowhere
    // (keep.txt was copied by the sync job but never read, so never cached) answers a clear 503
    // naming the regions it tried.
    c.s3b.stop();
    c.s3a.stop();
    let r = get(&c.b, &key, "/hot/keep.txt");
    assert_eq!(r.status, 503, "{r:?}");
    let v = r.json();
    assert_eq!(v["code"], "region_unavailable", "{v}");
    assert_eq!(v["details"]["regions"], json!(["b", "a"]), "{v}");
    let r = get(&c.b, &key, "/hot/big.bin").expect(200);
    assert_eq!(r.header("x-xpod-read-from"), Some("cache"));
    assert!(r.body == big);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
