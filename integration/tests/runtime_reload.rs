//! Issue 19: runtime changes without a restart, with real processes. What an operator relies on:
//! - an edge's services follow its configuration file on SIGHUP (and `POST
//!   /api/v1/node/reload`): a changed target, a new service, served at once, same process; the
//!   center's row of the edge lists the new services;
//! - a file that does not load changes nothing and the answer names the problem; a setting that
//!   takes a restart is named, not applied;
//! - `xpod tunnel expose|unexpose` (the API) changes an edge's services until the next reload;
//!   a bad service is refused with the reason; only an admin may;
//! - a center's TCP forwards follow its file on SIGHUP and `xpod tunnel forward|unforward`: a
//!   new port accepts, a removed one refuses, a port that cannot be bound is refused with its
//!   address and changes nothing.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::edges::{new_token, start_center, wait_online};
use xpod_integration::node::{free_port, xpod_command, NodeProcess, TempDir};

/// An HTTP backend answering every request with `body`.
fn http_backend(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

/// A TCP backend that answers each line with `echo: <line>`.
fn echo_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    let answer = [b"echo: ", &buf[..n]].concat();
                    if n == 0 || conn.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn get_service(center: &NodeProcess, service: &str) -> Resp {
    let host = format!("{service}.laptop.edges.test:{}", center.port());
    Curl::get(format!("http://{host}/"))
        .arg("--resolve")
        .arg(format!("{host}:127.0.0.1"))
        .send()
}

/// Waits (up to 10 s) until `f` is true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sighup(node: &NodeProcess) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

fn edge_config(services: &[(&str, u16, &str)]) -> String {
    let mut c = String::from("role = \"edge\"\n\n");
    for (name, port, kind) in services {
        c += &format!(
            "[[tunnel.services]]\nname = \"{name}\"\nlocal = \"127.0.0.1:{port}\"\nkind = \"{kind}\"\n\n"
        );
    }
    c
}

fn echo_through(port: u16) -> Option<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(b"ping\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\n") {
        let n = c.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn an_edges_services_change_on_sighup_and_through_the_api() {
    let tmp = TempDir::new("xpod-reload-edge");
    // Heartbeats every second: the row follows the services within one.
    let center = start_center(
        &tmp,
        "center-1",
        "[tunnel]\nedge_domain = \"edges.test\"\n[tunnel.presence]\nheartbeat_secs = 1\n",
    );
    let (a, b) = (http_backend("A"), http_backend("B"));
    let file = tmp.path().join("laptop.toml");
    std::fs::write(&file, edge_config(&[("web", a, "http")])).unwrap();
    let mut edge = NodeProcess::builder()
        .data_dir(tmp.path().join("laptop"))
        .env("XPOD_NODE_ID", "laptop")
        .arg("--config")
        .arg(&file)
        .arg("--join")
        .arg(format!("127.0.0.1:{}", center.port()))
        .arg("--token")
        .arg(new_token(&center))
        .start();
    wait_online(&center, "laptop");
    assert_eq!(get_service(&center, "web").expect(200).text(), "A");
    let pid = edge.pid();

    // The file changes: web moves to B, api appears. SIGHUP applies it, same process.
    std::fs::write(
        &file,
        edge_config(&[("web", b, "http"), ("api", a, "http")]),
    )
    .unwrap();
    sighup(&edge);
    eventually("web served by B after SIGHUP", || {
        get_service(&center, "web").text() == "B"
    });
    assert_eq!(get_service(&center, "api").expect(200).text(), "A");
    assert!(edge.is_running() && edge.pid() == pid, "the edge restarted");
    assert!(
        edge.stderr().contains("configuration reloaded"),
        "{}",
        edge.stderr()
    );
    // The center's row of the edge lists the services (from the next heartbeat).
    eventually("the center lists the api service", || {
        let row = Curl::get(format!("{}/.cluster/nodes/laptop", center.url()))
            .bearer(&center.admin_key())
            .send()
            .expect(200)
            .json();
        row["capacity"]["services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "api"))
    });

    // A broken file changes nothing; the API says why.
    let edge_api = |method: &str, path: &str| {
        Curl::new(method, format!("{}/api/v1/node{path}", edge.url())).bearer(&edge.admin_key())
    };
    std::fs::write(&file, "role = \"edge\"\n[[tunnel.services]]\nname = \n").unwrap();
    let r = edge_api("POST", "/reload").send().expect(400);
    assert!(
        r.text().contains("not applied") && r.text().contains("laptop.toml"),
        "{}",
        r.text()
    );
    sighup(&edge);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get_service(&center, "web").expect(200).text(), "B");
    assert!(edge.stderr().contains("configuration not reloaded"));

    // A setting that takes a restart is named, and the rest applied.
    std::fs::write(
        &file,
        format!(
            "{}[log]\nlevel = \"debug\"\n",
            edge_config(&[("web", a, "http")])
        ),
    )
    .unwrap();
    let r = edge_api("POST", "/reload").send().expect(200).json();
    assert_eq!(r["restartNeeded"], json!(["log"]), "{r}");
    assert_eq!(r["applied"], json!(["tunnel.services: ~web −api"]), "{r}");
    assert_eq!(get_service(&center, "web").expect(200).text(), "A");

    // The CLI (the API): expose a service until the next reload, then take it away.
    let cli = |args: &[&str]| {
        let out = xpod_command()
            .args(args)
            .args(["--server", &edge.url(), "--key", &edge.admin_key()])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = cli(&[
        "tunnel",
        "expose",
        "extra",
        "--local",
        &format!("127.0.0.1:{b}"),
    ]);
    assert!(
        ok && said.contains("+extra") && said.contains("until the next reload"),
        "{said}"
    );
    assert_eq!(get_service(&center, "extra").expect(200).text(), "B");
    let (ok, said) = cli(&["tunnel", "show"]);
    assert!(ok && said.contains("service extra http"), "{said}");
    let (ok, said) = cli(&["tunnel", "expose", "Bad_Name", "--local", "127.0.0.1:1"]);
    assert!(!ok && said.contains("Bad_Name"), "{said}");
    let (ok, said) = cli(&["tunnel", "unexpose", "extra"]);
    assert!(ok && said.contains("−extra"), "{said}");
    assert_ne!(get_service(&center, "extra").status, 200);
    let (ok, said) = cli(&["tunnel", "unexpose", "extra"]);
    assert!(!ok && said.contains("no service named"), "{said}");
    // Only an admin: no key, no change.
    Curl::new("PUT", format!("{}/api/v1/node/services/x", edge.url()))
        .json(&json!({"local": "127.0.0.1:1"}))
        .send()
        .expect(401);
    // The next reload brings the file's list back.
    let (ok, _) = cli(&[
        "tunnel",
        "expose",
        "extra",
        "--local",
        &format!("127.0.0.1:{b}"),
    ]);
    assert!(ok);
    let (ok, said) = cli(&["reload"]);
    assert!(ok && said.contains("−extra"), "{said}");
}

#[test]
fn a_centers_forwards_change_on_sighup_and_through_the_api() {
    let tmp = TempDir::new("xpod-reload-center");
    let base = "[tunnel]\nedge_domain = \"edges.test\"\n";
    let center = start_center(&tmp, "center-1", base);
    let center_file = tmp.path().join("center-1.toml");
    let echo = echo_backend();
    let file = tmp.path().join("laptop.toml");
    std::fs::write(&file, edge_config(&[("ssh", echo, "tcp")])).unwrap();
    let _edge = NodeProcess::builder()
        .data_dir(tmp.path().join("laptop"))
        .env("XPOD_NODE_ID", "laptop")
        .arg("--config")
        .arg(&file)
        .arg("--join")
        .arg(format!("127.0.0.1:{}", center.port()))
        .arg("--token")
        .arg(new_token(&center))
        .start();
    wait_online(&center, "laptop");

    // A forward added to the file serves after SIGHUP.
    let p = free_port();
    let forward = |port: u16| {
        format!("\n[[tunnel.forwards]]\nlisten = \"127.0.0.1:{port}\"\nnode = \"laptop\"\nservice = \"ssh\"\n")
    };
    std::fs::write(&center_file, format!("{base}{}", forward(p))).unwrap();
    sighup(&center);
    eventually("the new forward answers", || {
        echo_through(p).is_some_and(|r| r == "echo: ping\n")
    });

    // Through the API: another port; one that is taken is refused and changes nothing.
    let api = |method: &str, listen: &str| {
        Curl::new(
            method,
            format!("{}/api/v1/node/forwards/{listen}", center.url()),
        )
        .bearer(&center.admin_key())
    };
    let q = free_port();
    let r = api("PUT", &format!("127.0.0.1:{q}"))
        .json(&json!({"node": "laptop", "service": "ssh"}))
        .send()
        .expect(200)
        .json();
    assert!(
        r["note"]
            .as_str()
            .unwrap()
            .contains("until the next reload"),
        "{r}"
    );
    assert_eq!(echo_through(q).as_deref(), Some("echo: ping\n"));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let r = api("PUT", &taken_addr)
        .json(&json!({"node": "laptop", "service": "ssh"}))
        .send()
        .expect(409);
    assert!(r.text().contains(&taken_addr), "{}", r.text());
    assert_eq!(echo_through(p).as_deref(), Some("echo: ping\n"));
    api("PUT", "not-an-address")
        .json(&json!({"node": "laptop", "service": "ssh"}))
        .send()
        .expect(400);
    api("DELETE", &format!("127.0.0.1:{q}")).send().expect(200);
    eventually("the removed API forward refuses", || {
        echo_through(q).is_none()
    });

    // Removed from the file: the port closes on SIGHUP.
    std::fs::write(&center_file, base).unwrap();
    sighup(&center);
    eventually("the removed forward refuses", || echo_through(p).is_none());
    assert!(center.stderr().contains("forwards changed at runtime"));
}
