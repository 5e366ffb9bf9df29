//! Building blocks for tests with centers and edges as real processes: a center with a cluster
//! CA and its own certificate, single-use join tokens, edges that join with one, waiting for
//! presence, and the memory figures of a process.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::curl::Curl;
use crate::mesh::xpod_ok;
use crate::node::{NodeProcess, TempDir};

/// A center `node_id` in `<tmp>/<node_id>`: a new cluster CA (so it signs joins), a
/// certificate for 127.0.0.1, and `config` (TOML) as its config file.
pub fn start_center(tmp: &TempDir, node_id: &str, config: &str) -> NodeProcess {
    start_center_env(tmp, node_id, config, &[])
}

/// [`start_center`] with extra environment variables for the process.
pub fn start_center_env(
    tmp: &TempDir,
    node_id: &str,
    config: &str,
    env: &[(&str, &str)],
) -> NodeProcess {
    let data = tmp.path().join(node_id);
    let d = data.to_str().expect("UTF-8 temp path");
    xpod_ok(&["ca", "init", "--data-dir", d]);
    xpod_ok(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "--node-id",
        node_id,
        "--san",
        "127.0.0.1",
        "--out",
        d,
    ]);
    let file = tmp.path().join(format!("{node_id}.toml"));
    std::fs::write(&file, config).expect("writing the center's config");
    let mut b = NodeProcess::builder()
        .data_dir(&data)
        .env("XPOD_NODE_ID", node_id)
        .arg("--config")
        .arg(&file);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start()
}

/// A new single-use join token from `center`'s API.
pub fn new_token(center: &NodeProcess) -> String {
    new_token_with(center, json!({"singleUse": true}))
}

/// A new join token created with `body` (e.g. a grant: `{"podPrefixes": ["laptop-"]}`).
pub fn new_token_with(center: &NodeProcess, body: Value) -> String {
    let v = Curl::new("POST", format!("{}/.cluster/tokens", center.url()))
        .bearer(&center.admin_key())
        .json(&body)
        .send()
        .expect(201)
        .json();
    v["token"].as_str().expect("a token").to_string()
}

/// An edge `node_id` in `<tmp>/<node_id>` that joins `center` with a new token; `config` is
/// its config file (`role = "edge"` is added).
pub fn start_edge(tmp: &TempDir, center: &NodeProcess, node_id: &str, config: &str) -> NodeProcess {
    start_edge_with_token(tmp, center, node_id, config, &new_token(center))
}

/// [`start_edge`] with a given join token.
pub fn start_edge_with_token(
    tmp: &TempDir,
    center: &NodeProcess,
    node_id: &str,
    config: &str,
    token: &str,
) -> NodeProcess {
    start_edge_env(tmp, center, node_id, config, token, &[])
}

/// [`start_edge_with_token`] with environment variables (test hooks) for the edge.
pub fn start_edge_env(
    tmp: &TempDir,
    center: &NodeProcess,
    node_id: &str,
    config: &str,
    token: &str,
    env: &[(&str, String)],
) -> NodeProcess {
    let file = tmp.path().join(format!("{node_id}.toml"));
    std::fs::write(&file, format!("role = \"edge\"\n\n{config}"))
        .expect("writing the edge's config");
    let mut b = NodeProcess::builder();
    for (k, v) in env {
        b = b.env(*k, v);
    }
    b.data_dir(tmp.path().join(node_id))
        .env("XPOD_NODE_ID", node_id)
        .arg("--config")
        .arg(&file)
        .arg("--join")
        .arg(format!("127.0.0.1:{}", center.port()))
        .arg("--token")
        .arg(token)
        .start()
}

/// Waits (up to 15 s) until `center` lists `node` online; its row.
pub fn wait_online(center: &NodeProcess, node: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = Curl::get(format!("{}/.cluster/nodes", center.url()))
            .bearer(&center.admin_key())
            .send()
            .expect(200)
            .json();
        let found = all["nodes"].as_array().and_then(|a| {
            a.iter()
                .find(|n| n["nodeId"] == node && n["status"] == "online")
        });
        if let Some(n) = found {
            return n.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{node} never became online: {all}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`: resident now, `VmHWM`: peak resident).
pub fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
