//! Benchmark (a program, not a test): what a sandbox costs to create and to run a command in,
//! on its own node and through another center.
//!
//! Setup: a throwaway PostgreSQL (or `XPOD_TEST_PG_URL`) and two centers `center-1..2` (slots
//! 8 each), real bubblewrap. Every sandbox is pinned to center-1 (`"node": "center-1"`).
//!
//! 1. Create → running: `POST /api/v1/sandboxes` returns once the sandbox runs; N creates sent
//!    to center-1 (local) and N to center-2 (the start goes over the mesh), each deleted after.
//! 2. Exec round trip: `{"cmd": ["true"]}` in one sandbox, M times through center-1 and M times
//!    through center-2 (the exec's NDJSON stream comes back over the mesh), sequentially.
//!
//! Times are curl's `time_total` per request (connection to the node included, process start
//! of curl excluded). Printed: median, p90, and the remote/local ratio of medians.
//! Usage: `cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin sandboxbench`
//! then `XPOD_BIN=target/release/xpod target/release/sandboxbench [N] [M]`.

use std::process::Command;

use serde_json::{json, Value};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

fn timed(method: &str, url: &str, key: &str, body: Option<&Value>) -> (u16, f64, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{time_total}",
        "-X",
        method,
    ])
    .arg("-H")
    .arg(format!("Authorization: Bearer {key}"));
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    let out = c.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = tail.split_whitespace();
    let code = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    (code, secs * 1000.0, body.to_string())
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (q(0.5), q(0.9))
}

fn creates(via: &NodeProcess, key: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let (code, ms, body) = timed(
                "POST",
                &format!("{}/api/v1/sandboxes", via.url()),
                key,
                Some(&json!({"node": "center-1", "timeout": 600})),
            );
            assert_eq!(code, 201, "{body}");
            let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let (code, _, _) = timed(
                "DELETE",
                &format!("{}/api/v1/sandboxes/{id}", via.url()),
                key,
                None,
            );
            assert_eq!(code, 204);
            ms
        })
        .collect()
}

fn execs(via: &NodeProcess, key: &str, id: &str, m: usize) -> Vec<f64> {
    (0..m)
        .map(|_| {
            let (code, ms, body) = timed(
                "POST",
                &format!("{}/api/v1/sandboxes/{id}/exec", via.url()),
                key,
                Some(&json!({"cmd": ["true"]})),
            );
            assert!(
                code == 200 && body.contains("\"exitCode\":0"),
                "{code} {body}"
            );
            ms
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, m) = (
        args.first().copied().unwrap_or(20),
        args.get(1).copied().unwrap_or(200),
    );
    let pg = PgServer::start().expect("PostgreSQL");
    let tmp = TempDir::new("sandboxbench");
    let config = tmp.path().join("center.toml");
    std::fs::write(
        &config,
        "[sandbox]\nslots = 8\ncpu = 8\nmemory_mb = 8192\nquota_sandboxes = 20\n",
    )
    .unwrap();
    let centers = start_centers(&tmp, &pg, 2, |_| {
        vec![("XPOD_CONFIG", config.display().to_string())]
    });
    let key = centers[0].admin_key();
    // Warm-up (first bwrap start, mesh connection).
    creates(&centers[0], &key, 2);
    creates(&centers[1], &key, 2);
    println!("sandboxbench: {n} creates and {m} execs per path; sandboxes on center-1");
    let local = creates(&centers[0], &key, n);
    let remote = creates(&centers[1], &key, n);
    let (l50, l90) = stats(local);
    let (r50, r90) = stats(remote);
    println!("create → running  local (center-1): p50 {l50:.1} ms  p90 {l90:.1} ms");
    println!(
        "create → running  via center-2:     p50 {r50:.1} ms  p90 {r90:.1} ms  (ratio {:.2})",
        r50 / l50
    );
    let (code, _, body) = timed(
        "POST",
        &format!("{}/api/v1/sandboxes", centers[0].url()),
        &key,
        Some(&json!({"node": "center-1", "timeout": 600})),
    );
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    execs(&centers[0], &key, &id, 10);
    execs(&centers[1], &key, &id, 10);
    let (l50, l90) = stats(execs(&centers[0], &key, &id, m));
    let (r50, r90) = stats(execs(&centers[1], &key, &id, m));
    println!("exec `true`       local (center-1): p50 {l50:.2} ms  p90 {l90:.2} ms");
    println!(
        "exec `true`       via center-2:     p50 {r50:.2} ms  p90 {r90:.2} ms  (ratio {:.2})",
        r50 / l50
    );
}
