//! Centers meshed over QUIC: one cluster CA, a certificate per center, one PostgreSQL, one
//! shared object directory (one region).

use crate::node::{xpod_command, NodeProcess, TempDir};
use crate::pg::PgServer;

/// Runs `xpod ARGS` and panics with its stderr if it fails.
pub fn xpod_ok(args: &[&str]) {
    let out = xpod_command().args(args).output().expect("running xpod");
    assert!(
        out.status.success(),
        "xpod {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` centers `center-1..n` on `pg`, sharing `<tmp>/objects`; `env(i)` adds variables to
/// center `i` (1-based). center-1 holds the CA key and accepts edges' joins.
pub fn start_centers(
    tmp: &TempDir,
    pg: &PgServer,
    n: usize,
    env: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Vec<NodeProcess> {
    let ca = tmp.path().join("ca");
    xpod_ok(&["ca", "init", "--data-dir", ca.to_str().unwrap()]);
    let objects = tmp.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    (1..=n)
        .map(|i| {
            let id = format!("center-{i}");
            let data = tmp.path().join(&id);
            xpod_ok(&[
                "ca",
                "issue",
                "--data-dir",
                ca.to_str().unwrap(),
                "--node-id",
                &id,
                "--san",
                "127.0.0.1",
                "--out",
                data.to_str().unwrap(),
            ]);
            if i == 1 {
                // center-1 also holds the CA key, so edges can join through it.
                std::fs::copy(ca.join("ca.key"), data.join("ca.key")).unwrap();
            }
            let mut b = NodeProcess::builder()
                .data_dir(&data)
                .env("XPOD_NODE_ID", &id)
                .env("XPOD_DATABASE_URL", pg.url())
                .env(
                    "XPOD_STORAGE_OBJECTS_URL",
                    format!("file://{}", objects.display()),
                );
            for (k, v) in env(i) {
                b = b.env(k, v);
            }
            b.start()
        })
        .collect()
}
