//! Revoking a node (real center, real edge, real QUIC tunnel): `xpod nodes revoke edge-1` closes
//! the edge's live tunnel within seconds (its service stops answering through the center), the
//! center refuses every later handshake of that certificate (also after the edge restarts), the
//! revocation is audited and shown by `xpod nodes show`; a revoked id cannot be revoked into
//! anything else or join again.

use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::edges::{new_token, start_center, start_edge, wait_online};
use xpod_integration::eventually;
use xpod_integration::node::{free_port, xpod_command, NodeProcess, TempDir};

fn through_center(center: &NodeProcess) -> u16 {
    Curl::get(format!("{}/hello.txt", center.url()))
        .header("Host: web.edge-1.edges.test")
        .arg("--max-time")
        .arg("5")
        .send()
        .status
}

fn cli(center: &NodeProcess, args: &[&str]) -> std::process::Output {
    xpod_command()
        .args(&args[..2])
        .args(["--server", &center.url(), "--key", &center.admin_key()])
        .args(&args[2..])
        .output()
        .unwrap()
}

#[test]
fn a_revoked_edge_is_cut_off_and_stays_out() {
    let tmp = TempDir::new("xpod-revoke");
    let center = start_center(
        &tmp,
        "center-1",
        "[tunnel]\nedge_domain = \"edges.test\"\n\n[tunnel.presence]\nheartbeat_secs = 1\n",
    );
    // The edge's web service: a static file server.
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("hello.txt"), "hello from the edge\n").unwrap();
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&site)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut edge = start_edge(
        &tmp,
        &center,
        "edge-1",
        &format!("[tunnel.presence]\nheartbeat_secs = 1\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:{port}\"\nkind = \"http\"\n"),
    );
    wait_online(&center, "edge-1");
    eventually(15, "the edge's service answers through the center", || {
        (through_center(&center) == 200).then_some(())
    });

    // Grants are checked where they are given: a bad one is a 400 naming it, nothing created.
    for (body, names) in [
        (json!({"podPrefixes": ["-x"]}), "podPrefixes"),
        (json!({"sandboxSlots": 100000}), "sandboxSlots"),
    ] {
        let r = Curl::new("POST", format!("{}/.cluster/tokens", center.url()))
            .bearer(&center.admin_key())
            .json(&body)
            .send();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(names), "{}", r.text());
        let r = Curl::new("PATCH", format!("{}/.cluster/nodes/edge-1", center.url()))
            .bearer(&center.admin_key())
            .json(&body)
            .send();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }

    // A center cannot revoke itself (it would cut the node answering).
    let out = cli(&center, &["nodes", "revoke", "center-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("answering this request"));

    let out = cli(&center, &["nodes", "revoke", "edge-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = Instant::now();
    eventually(10, "the revoked edge's tunnel is closed", || {
        (through_center(&center) != 200).then_some(())
    });
    eprintln!(
        "tunnel closed {:?} after the revocation",
        revoked_at.elapsed()
    );
    // The edge keeps dialing; each handshake is refused.
    eventually(20, "the center refuses the edge's next handshake", || {
        center
            .stderr()
            .contains("a revoked node connected: refused")
            .then_some(())
    });
    assert_ne!(through_center(&center), 200);

    // Restarted with its saved certificate: still refused.
    edge.restart();
    let refusals = |c: &NodeProcess| {
        c.stderr()
            .matches("a revoked node connected: refused")
            .count()
    };
    let before = refusals(&center);
    eventually(20, "the restarted edge is refused too", || {
        (refusals(&center) > before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        through_center(&center),
        200,
        "the restarted edge is not served"
    );

    // It cannot join again under its id, even with a fresh token.
    let rejoin = xpod_command()
        .args(["edge", "--data-dir"])
        .arg(tmp.path().join("edge-1-again"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("XPOD_NODE_ID", "edge-1")
        .args(["--join", &format!("127.0.0.1:{}", center.port()), "--token"])
        .arg(new_token(&center))
        .output()
        .unwrap();
    assert!(!rejoin.status.success());
    assert!(
        String::from_utf8_lossy(&rejoin.stderr).contains("already taken"),
        "{}",
        String::from_utf8_lossy(&rejoin.stderr)
    );

    // Shown and audited.
    let out = cli(&center, &["nodes", "show", "edge-1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("REVOKED"));
    let audit = Curl::get(format!("{}/api/v1/audit?action=node.revoke", center.url()))
        .bearer(&center.admin_key())
        .send()
        .expect(200)
        .json();
    assert_eq!(
        audit["entries"][0]["target"],
        json!("node:edge-1"),
        "{audit}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
