//! Issue 19: the HTTP API fuzzed from its OpenAPI document with schemathesis (PyPI; installed by
//! the test runner) against a running node: the admin, pods-cluster, keys, tokens, sandboxes,
//! webhooks and node (tunnel) APIs. What a client relies on: no 5xx (but the documented 503 of
//! a node without sandbox slots), every status, content type and body as the document says,
//! and every schema-invalid request refused. Settings: `integration/schemathesis.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use xpod_integration::node::{NodeProcess, TempDir};

fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/s3venv/bin/schemathesis");
    let found = std::env::var_os("XPOD_TEST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or(venv);
    assert!(
        found.exists(),
        "this test needs schemathesis (PyPI): run `bash integration/run-tests.sh` once (it installs \
         it into target/s3venv), or set XPOD_TEST_SCHEMATHESIS"
    );
    found
}

#[test]
fn the_api_keeps_to_its_openapi_document_under_fuzzing() {
    let st = schemathesis();
    let node = NodeProcess::start();
    let key = node.admin_key();
    let work = TempDir::new("xpod-fuzz");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", node.url()))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        // The cluster and /api/v1 APIs; not the pod resources (their own suites), the event
        // stream (it never ends) or sandbox ports (a proxy).
        .args(["--include-path-regex", r"^/(\.cluster|api/v1)/"])
        .args(["--exclude-path-regex", "ports|events"])
        .args(["--seed", "20261207", "--no-color"])
        .current_dir(work.path())
        .output()
        .expect("running schemathesis");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{said}\nnode log:\n{}",
        node.stderr()
    );
    let tested = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    assert!(
        tested >= 30,
        "too few operations were tested ({tested}):\n{said}"
    );
    assert!(
        node.stderr().matches("panicked").count() == 0,
        "{}",
        node.stderr()
    );
}
