//! The cluster CA and join tokens, as an operator uses them: `xpod ca init|issue|fingerprint` on
//! local files, then `POST /.cluster/tokens` / `xpod tokens …` on a running node. A token must carry
//! the fingerprint of the CA the node really has (a joining edge pins the center with it), be shown
//! once, never be listed with its secret or hash, expire, and be revocable.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::node::{xpod_command, NodeProcess, TempDir};
use xpod_tunnel::identity::{JoinToken, NodeIdentity};

fn xpod(args: &[&str]) -> (bool, String, String) {
    let out = xpod_command().args(args).output().expect("running xpod");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ca_files_and_join_tokens() {
    let tmp = TempDir::new("xpod-ca");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    let (ok, out, err) = xpod(&["ca", "init", "--data-dir", d, "--name", "test-cluster"]);
    assert!(ok, "ca init failed: {err}");
    assert!(out.contains("sha256:"), "{out}");
    assert_eq!(
        std::fs::metadata(data.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (ok, _, err) = xpod(&["ca", "init", "--data-dir", d]);
    assert!(
        !ok && err.contains("already exists") && err.lines().count() == 1,
        "second init: {err}"
    );
    let (ok, fp, _) = xpod(&["ca", "fingerprint", "--data-dir", d]);
    assert!(ok);
    let fp = fp.trim().to_string();

    // A node certificate issued from the CA proves its node id.
    let out_dir = tmp.path().join("c1");
    let (ok, _, err) = xpod(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "--node-id",
        "c1",
        "--san",
        "127.0.0.1",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(ok, "ca issue: {err}");
    let read = |n: &str| std::fs::read_to_string(out_dir.join(n)).unwrap();
    let node =
        NodeIdentity::from_pem(&read("node.crt"), &read("node.key"), &read("ca.crt")).unwrap();
    assert_eq!(node.identity().unwrap().node_id, "c1");
    assert_eq!(node.ca_fingerprint().unwrap(), fp);
    let (ok, _, err) = xpod(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "--node-id",
        "Bad_Id",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.lines().count() == 1,
        "a bad node id must be refused in one line: {err}"
    );

    // The node on that data dir hands out tokens carrying that fingerprint.
    let node = NodeProcess::builder().data_dir(&data).start();
    let key = node.admin_key();
    let url = format!("{}/.cluster/tokens", node.url());
    Curl::new("POST", &url).json(&json!({})).send().expect(401);
    Curl::new("POST", &url)
        .bearer(&key)
        .json(&json!({"ttlSeconds": 10}))
        .send()
        .expect(400);
    let created = Curl::new("POST", &url)
        .bearer(&key)
        .json(&json!({"description": "laptop"}))
        .send()
        .expect(201)
        .json();
    let text = created["token"]
        .as_str()
        .expect("token in the creation response");
    let token = JoinToken::parse(text).expect("a parseable token");
    assert_eq!(token.ca_fingerprint, fp);
    assert_eq!(created["tokenId"], token.id.as_str());
    assert_eq!(created["singleUse"], true);

    let listed = Curl::get(&url).bearer(&key).send().expect(200).text();
    assert!(listed.contains(&token.id), "{listed}");
    assert!(
        !listed.contains(&token.secret) && !listed.contains(&token.secret_hash()),
        "secrets leaked: {listed}"
    );

    // CLI: create a multi-use token, list, revoke.
    let server = node.url();
    let (ok, out, err) = xpod(&[
        "tokens",
        "create",
        "--multi-use",
        "--description",
        "ci",
        "--server",
        &server,
        "--key",
        &key,
    ]);
    assert!(ok, "{err}");
    let cli_token =
        JoinToken::parse(out.lines().last().unwrap().trim()).expect("CLI prints the token last");
    let (ok, _, err) = xpod(&[
        "token",
        "revoke",
        &cli_token.id,
        "--server",
        &server,
        "--key",
        &key,
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = xpod(&["tokens", "list", "--server", &server, "--key", &key]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.starts_with(&cli_token.id))
        .expect("revoked token listed");
    assert!(line.contains("revoked"), "{line}");
    Curl::new("DELETE", format!("{url}/000000000000"))
        .bearer(&key)
        .send()
        .expect(404);
}

#[test]
fn tokens_need_a_ca() {
    let node = NodeProcess::start();
    let r = Curl::new("POST", format!("{}/.cluster/tokens", node.url()))
        .bearer(&node.admin_key())
        .json(&json!({}))
        .send()
        .expect(409);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("xpod ca init"),
        "{}",
        r.text()
    );
}
