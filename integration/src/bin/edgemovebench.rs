//! Benchmark (a program, not a test): a pod moves from an edge to a center (issue 21).
//!
//! Setup: a throwaway PostgreSQL (or `XPOD_TEST_PG_URL`), two centers sharing one object
//! directory, an edge joined to center-1 with a grant for `mv…` pods. The edge creates pod
//! `mvbench`; N objects of 64 KiB are written to it through center-1.
//!
//! Printed:
//! 1. time to `202` of `POST /.cluster/pods/mvbench/migrate` (to center-2, through center-1);
//! 2. first reads just after the move (the sync held back): GET through center-2 with the
//!    bytes fetched from the edge through its tunnel, against the same GET on the edge's own
//!    port before the move (the direct path); median and p90 of M reads each;
//! 3. time to `done` / 100 % once the sync is let go.
//!
//! Then the other way, onto the edge (center → edge, the edge's own sync held back), with a
//! second pod `cbench` of N objects of 64 KiB created on center-2 (the edge has none of its
//! bytes: moving `mvbench` back would find its old copies on the edge, by design):
//! 4. time to `202` (the edge pulls every row from the cluster before it);
//! 5. first reads through center-1, served by the edge with the bytes it pulls from the
//!    cluster through its tunnel, against the same GET on center-2 before the move (the owner,
//!    the direct path);
//! 6. time to `done` / 100 % in the cluster's record once the edge's sync is let go.
//!
//! Usage: `cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin edgemovebench`
//! then `XPOD_BIN=target/release/xpod target/release/edgemovebench [N] [M]`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::edges::{new_token_with, wait_online};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

/// curl's `time_total` of a GET, in ms (and its status).
fn timed_get(url: &str, key: &str) -> (u16, f64) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {key}"))
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    let code = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    (code, secs * 1000.0)
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (q(0.5), q(0.9))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let m: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
        .min(n);
    let pg = PgServer::start().expect("PostgreSQL");
    let tmp = TempDir::new("xpod-edgemovebench");
    let hold = tmp.path().join("hold-sync");
    std::fs::write(&hold, "").unwrap();
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_TEST_SYNC_HOLD", hold.display().to_string())]
    });
    let key = centers[0].admin_key();
    let token = new_token_with(
        &centers[0],
        json!({"singleUse": true, "podPrefixes": ["mv"], "acceptPods": ["*"]}),
    );
    let edge_hold = tmp.path().join("hold-edge-sync");
    std::fs::write(&edge_hold, "").unwrap();
    let file = tmp.path().join("edge-1.toml");
    std::fs::write(&file, "role = \"edge\"\n").unwrap();
    let edge = NodeProcess::builder()
        .data_dir(tmp.path().join("edge-1"))
        .env("XPOD_NODE_ID", "edge-1")
        .env("XPOD_TEST_SYNC_HOLD", edge_hold.display().to_string())
        .arg("--config")
        .arg(&file)
        .arg("--join")
        .arg(format!("127.0.0.1:{}", centers[0].port()))
        .arg("--token")
        .arg(&token)
        .start();
    wait_online(&centers[0], "edge-1");
    Curl::new("POST", format!("{}/.cluster/pods", edge.url()))
        .bearer(&edge.admin_key())
        .json(&json!({"podId": "mvbench"}))
        .send()
        .expect(201);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = Curl::get(format!("{}/.cluster/pods/mvbench", centers[0].url()))
            .bearer(&key)
            .send();
        if r.status == 200 && r.json()["nodeId"] == "edge-1" {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never saw the pod");
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = vec![b'x'; 64 * 1024];
    let t = Instant::now();
    for i in 0..n {
        let r = Curl::new("PUT", format!("{}/mvbench/o-{i}.bin", centers[0].url()))
            .bearer(&key)
            .header("Content-Type: application/octet-stream")
            .body(body.clone())
            .send();
        assert_eq!(r.status, 201, "o-{i}: {r:?}");
    }
    println!(
        "edgemovebench: {n} objects of 64 KiB written to the edge's pod in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The direct path: the edge's own port, before the move.
    let edge_key = edge.admin_key();
    let direct: Vec<f64> = (0..m)
        .map(|i| {
            let (code, ms) = timed_get(&format!("{}/mvbench/o-{i}.bin", edge.url()), &edge_key);
            assert_eq!(code, 200);
            ms
        })
        .collect();

    let t = Instant::now();
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/mvbench/migrate", centers[0].url()),
    )
    .bearer(&key)
    .json(&json!({"targetNode": "center-2"}))
    .send();
    let to_202 = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r.status, 202, "{r:?}");

    // First reads after the move, through center-2 (the owner), bytes from the edge.
    let first: Vec<f64> = (m..2 * m)
        .filter(|i| *i < n)
        .map(|i| {
            let (code, ms) = timed_get(&format!("{}/mvbench/o-{i}.bin", centers[1].url()), &key);
            assert_eq!(code, 200);
            ms
        })
        .collect();

    let t = Instant::now();
    std::fs::remove_file(&hold).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let p: Value = Curl::get(format!("{}/.cluster/pods/mvbench", centers[1].url()))
            .bearer(&key)
            .send()
            .json();
        if p["migrationStatus"] == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "the sync never finished: {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let to_done = t.elapsed().as_secs_f64();

    // Onto the edge: a pod of the cluster's. The direct path first: GET on center-2, the owner.
    Curl::new("POST", format!("{}/.cluster/pods", centers[1].url()))
        .bearer(&key)
        .json(&json!({"podId": "cbench"}))
        .send()
        .expect(201);
    for i in 0..n {
        let r = Curl::new("PUT", format!("{}/cbench/o-{i}.bin", centers[1].url()))
            .bearer(&key)
            .header("Content-Type: application/octet-stream")
            .body(body.clone())
            .send();
        assert_eq!(r.status, 201, "o-{i}: {r:?}");
    }
    let owner_direct: Vec<f64> = (0..m)
        .map(|i| {
            let (code, ms) = timed_get(&format!("{}/cbench/o-{i}.bin", centers[1].url()), &key);
            assert_eq!(code, 200);
            ms
        })
        .collect();
    let t = Instant::now();
    let r = Curl::new(
        "POST",
        format!("{}/.cluster/pods/cbench/migrate", centers[0].url()),
    )
    .bearer(&key)
    .json(&json!({"targetNode": "edge-1"}))
    .send();
    let back_202 = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r.status, 202, "{r:?}");
    let on_edge: Vec<f64> = (0..m)
        .map(|i| {
            let (code, ms) = timed_get(&format!("{}/cbench/o-{i}.bin", centers[0].url()), &key);
            assert_eq!(code, 200);
            ms
        })
        .collect();
    let t = Instant::now();
    std::fs::remove_file(&edge_hold).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let p: Value = Curl::get(format!("{}/.cluster/pods/cbench", centers[1].url()))
            .bearer(&key)
            .send()
            .json();
        if p["migrationStatus"] == "done" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge's sync never finished: {p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let back_done = t.elapsed().as_secs_f64();

    let (d50, d90) = stats(direct);
    let (f50, f90) = stats(first.clone());
    println!("\ntime to 202 (edge -> center, {n} rows moved): {to_202:.1} ms");
    println!(
        "time to 100 % after the sync starts ({} objects left): {to_done:.2} s",
        n - first.len()
    );
    println!("\nGET 64 KiB                     p50 ms   p90 ms");
    println!("direct on the edge           {d50:>8.2} {d90:>8.2}");
    println!(
        "first read via the tunnel    {f50:>8.2} {f90:>8.2}   ({:.1}x)",
        f50 / d50
    );
    let (o50, o90) = stats(owner_direct);
    let (e50, e90) = stats(on_edge.clone());
    println!("\ntime to 202 (center -> edge, {n} rows pulled): {back_202:.1} ms");
    println!(
        "time to 100 % after the edge's sync starts ({} objects left): {back_done:.2} s",
        n - on_edge.len()
    );
    println!("\nGET 64 KiB                     p50 ms   p90 ms");
    println!("direct on the owning center  {o50:>8.2} {o90:>8.2}");
    println!(
        "first read on the edge       {e50:>8.2} {e90:>8.2}   ({:.1}x)",
        e50 / o50
    );
    println!(
        "{}",
        json!({
            "objects": n, "to_202_ms": to_202, "to_done_s": to_done,
            "direct_ms": {"p50": d50, "p90": d90}, "first_read_ms": {"p50": f50, "p90": f90},
            "onto_edge": {"to_202_ms": back_202, "to_done_s": back_done,
                "owner_direct_ms": {"p50": o50, "p90": o90}, "first_read_ms": {"p50": e50, "p90": e90}},
        })
    );
    drop(edge);
}
