//! Terminals in a sandbox on a lone node (issue 20; real binary, real bubblewrap, a real
//! WebSocket client): the command runs in a PTY of the sandbox's size, keys go in, a resize
//! reaches it, `^C` interrupts it, its exit code comes back, it has exec's limits; the refusals (no key, another
//! owner, a read-only key, no upgrade, a bad query, a program that does not exist) are HTTP
//! errors that name the problem; a revoked key closes an open terminal (1008); every session
//! is audited at its start and end; `xpod sandbox shell` runs a shell from piped stdin and
//! exits with its code; `/metrics` counts the sessions by how they ended. (Through other
//! centers and an edge: `sandboxes.rs`.)

use std::time::Duration;

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::eventually;
use xpod_integration::node::{xpod_command, NodeProcess};
use xpod_integration::terminal::{resize, session, Step};

fn new_key(node: &NodeProcess, owner: &str, scopes: &[&str]) -> (String, String) {
    let v = Curl::new("POST", format!("{}/api/v1/auth/api-keys", node.url()))
        .bearer(&node.admin_key())
        .json(&json!({"name": owner, "owner": owner, "scopes": scopes}))
        .send()
        .expect(201)
        .json();
    (
        v["key"].as_str().unwrap().to_string(),
        v["keyId"].as_str().unwrap().to_string(),
    )
}

#[test]
fn sandbox_terminals() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED sandbox_terminals: bubblewrap (bwrap) is not installed; the test runner installs it (apt-get install bubblewrap)");
        return;
    }
    let node = NodeProcess::builder()
        .env("XPOD_SANDBOX_SLOTS", "2")
        .start();
    let admin = node.admin_key();
    let (alice, alice_id) = new_key(&node, "alice", &["sandbox"]);
    let (reader, _) = new_key(&node, "alice", &["sandbox:read"]);
    let (bob, _) = new_key(&node, "bob", &["sandbox"]);
    let v = Curl::new("POST", format!("{}/api/v1/sandboxes", node.url()))
        .bearer(&alice)
        .json(&json!({"timeout": 600}))
        .send()
        .expect(201)
        .json();
    let id = v["id"].as_str().unwrap().to_string();
    let url = |q: &str| format!("{}/api/v1/sandboxes/{id}/terminal?{q}", node.url());

    // A real terminal of the asked size; keys in, a resize, the exit code out.
    let script = "tty; stty size; read line; echo got:$line; read _; stty size; exit 6";
    let q = format!("rows=33&cols=101&cmd=sh&cmd=-c&cmd={}", enc(script));
    let out = session(
        &url(&q),
        Some(&alice),
        vec![
            Step::Expect("33 101"),
            Step::Keys(b"hello\r"),
            Step::Expect("got:hello"),
            resize(50, 132),
            Step::Keys(b"\r"),
        ],
    )
    .expect("the terminal opens");
    assert!(out.output.contains("/dev/pts/"), "{:?}", out.output);
    assert!(out.output.contains("50 132"), "{:?}", out.output);
    assert_eq!(out.exit, Some(6), "{out:?}");
    assert_eq!(out.close.as_ref().map(|c| c.0), Some(1000), "{out:?}");

    // The sandbox's shell by default, in /work, as the sandbox's user; ^C interrupts the
    // foreground command and the shell goes on.
    let out = session(
        &url(""),
        Some(&alice),
        vec![
            Step::Keys(b"echo in:$(pwd):$(id -u)\r"),
            Step::Expect("in:/work:1000"),
            Step::Keys(b"sleep 60\r"),
            Step::Sleep(Duration::from_millis(500)),
            Step::Keys(b"\x03"),
            Step::Keys(b"echo after:$?\r"),
            Step::Expect("after:130"),
            Step::Keys(b"exit 0\r"),
        ],
    )
    .unwrap();
    assert_eq!(out.exit, Some(0), "{out:?}");

    // The same per-process limits as exec (address space, open files, file size).
    let limits = "echo limits:$(ulimit -v):$(ulimit -n):$(ulimit -f)";
    let by_exec = Curl::new("POST", format!("{}/api/v1/sandboxes/{id}/exec", node.url()))
        .bearer(&alice)
        .json(&json!({"cmd": ["sh", "-c", limits]}))
        .send()
        .expect(200)
        .text();
    let by_exec = by_exec
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|e| e["data"].as_str().map(str::to_string))
        .map(|b| {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
            String::from_utf8(raw).unwrap().trim().to_string()
        })
        .expect("exec's output");
    assert!(
        by_exec.starts_with("limits:") && !by_exec.contains("unlimited"),
        "{by_exec}"
    );
    let out = session(
        &url(&format!("cmd=sh&cmd=-c&cmd={}", enc(limits))),
        Some(&alice),
        vec![],
    )
    .unwrap();
    assert!(
        out.output.contains(&by_exec),
        "{:?} vs exec's {by_exec}",
        out.output
    );

    // Refusals are plain HTTP answers naming the problem.
    let refused = |q: &str, key: Option<&str>| session(&url(q), key, vec![]).unwrap_err();
    assert_eq!(refused("", None).status, 401);
    assert_eq!(
        refused("", Some(&bob)).status,
        404,
        "another owner's sandbox"
    );
    let r = refused("", Some(&reader));
    assert_eq!(r.status, 403, "a read-only key: {}", r.body);
    let r = refused("rows=0", Some(&alice));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("rows and cols"), "{}", r.body);
    let r = refused("cmd=no-such-program", Some(&alice));
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("terminal_refused") && r.body.contains("no-such-program"),
        "{}",
        r.body
    );
    let r = Curl::new("GET", url("")).bearer(&alice).send();
    assert_eq!(r.status, 426, "a plain GET: {}", r.text());
    assert!(r.text().contains("WebSocket"), "{}", r.text());

    // A text message that is not a resize closes the socket with 1003 and the reason.
    let out = session(
        &url("cmd=sleep&cmd=30"),
        Some(&alice),
        vec![Step::Text("ls\r".into())],
    )
    .unwrap();
    let (code, reason) = out.close.expect("a close frame");
    assert_eq!(code, 1003);
    assert!(reason.contains("resize"), "{reason}");

    // The audit: each session's start and end (how long, the exit code).
    // (A session's end is written just after its close frame: wait for the four.)
    let entries = eventually(10, "four terminal sessions audited", || {
        let audit = Curl::new(
            "GET",
            format!(
                "{}/api/v1/audit?target=sandbox:{id}&action=sandbox.terminal*",
                node.url()
            ),
        )
        .bearer(&admin)
        .send()
        .expect(200)
        .json();
        let entries = audit["entries"].as_array().unwrap().clone();
        (entries.len() >= 8).then_some(entries)
    });
    let starts = entries
        .iter()
        .filter(|e| e["action"] == "sandbox.terminal")
        .count();
    let ends: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "sandbox.terminal.end")
        .collect();
    assert_eq!((starts, ends.len()), (4, 4), "{entries:?}");
    assert!(
        ends.iter().any(|e| e["details"]["exitCode"] == 6),
        "{ends:?}"
    );
    assert!(
        ends.iter().all(|e| e["details"]["seconds"].is_u64()),
        "{ends:?}"
    );
    assert!(entries
        .iter()
        .all(|e| e["actor"] == format!("key:{}", alice_id.trim_start_matches("key:"))));

    // The CLI: a shell fed from a pipe; its end is ^D; the exit code is the shell's.
    let mut child = xpod_command()
        .args([
            "sandbox",
            "shell",
            "--server",
            &node.url(),
            "--key",
            &alice,
            &id,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo cli-$((6*7))\nexit 5\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cli-42"), "{stdout:?} {:?}", out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stdout:?}");
    let out = xpod_command()
        .args([
            "sandbox",
            "shell",
            "--server",
            &node.url(),
            "--key",
            &alice,
            &id,
        ])
        .args(["--", "sh", "-c", "exit 9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9));
    let out = xpod_command()
        .args([
            "sandbox",
            "shell",
            "--server",
            &node.url(),
            "--key",
            &bob,
            &id,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("not found"), "{err}");

    // The node counts its terminal sessions by how they ended.
    let metrics = Curl::get(format!("{}/metrics", node.url()))
        .send()
        .expect(200)
        .text();
    let count = |ended: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("xpod_terminal_sessions_total{")
                    && l.contains("kind=\"sandbox\"")
                    && l.contains(&format!("ended=\"{ended}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no sessions ended {ended}: {metrics}"))
    };
    assert_eq!(count("exit"), 5.0, "three sessions here, two by the CLI");
    assert_eq!(count("bad_message"), 1.0);
    assert!(
        metrics.contains("xpod_terminals_open{kind=\"sandbox\"} 0"),
        "{metrics}"
    );

    // Revoking the key closes the terminal it opened (1008) within the recheck interval.
    let node_url = node.url();
    let (admin2, key_id) = (admin.clone(), alice_id.clone());
    let revoker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        Curl::new(
            "DELETE",
            format!("{node_url}/api/v1/auth/api-keys/{key_id}"),
        )
        .bearer(&admin2)
        .send()
        .expect(204);
    });
    let out = session(
        &url("cmd=sleep&cmd=60"),
        Some(&alice),
        vec![Step::Keys(b"x")],
    )
    .unwrap();
    revoker.join().unwrap();
    let (code, reason) = out.close.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert_eq!(out.exit, None);
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
