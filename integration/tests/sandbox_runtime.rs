//! The sandbox runtime on one node, with real bubblewrap (installed by
//! `integration/run-tests.sh`) and the real xpod binary as the sandbox's supervisor: commands
//! and their output, stdin and exit codes; isolation (no host home or data, nothing writable
//! outside `/work`, no network by default); limits (a fork bomb stops at the process limit, a
//! runaway process is killed by its timeout, and the host is unharmed).

use std::collections::BTreeMap;

use xpod_integration::node::{xpod_bin, TempDir};
use xpod_node::sandbox::proto::ExecRequest;
use xpod_node::sandbox::runtime::{outcome, Sandbox, Spec};
use xpod_node::sandbox::Limits;

fn spec(tmp: &TempDir, name: &str, uid: u32) -> Spec {
    Spec {
        root: tmp.path().join(name),
        xpod_bin: xpod_bin(),
        uid,
        network: false,
        limits: Limits {
            max_procs: 40,
            ..Limits::default()
        },
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        usr: "/usr".into(),
        init: None,
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: None,
        timeout_secs: Some(20),
    }
}

async fn run(sb: &Sandbox, script: &str, stdin: &[u8]) -> (String, String, i32) {
    let events = sb.exec(&sh(script), stdin).await.expect("exec");
    let (out, err, code, _) = outcome(&events);
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        code.unwrap_or_else(|| panic!("no end event: {events:?}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_isolated_and_limited() {
    let tmp = TempDir::new("xpod-sandbox");
    let sb = Sandbox::start(&spec(&tmp, "sb1", 231_001))
        .await
        .expect("a sandbox (bubblewrap installed?)");

    // Output, environment, stdin, exit codes.
    assert_eq!(
        run(&sb, "echo $GREETING world", b"").await,
        ("hello world\n".into(), String::new(), 0)
    );
    assert_eq!(run(&sb, "cat", b"from stdin\n").await.0, "from stdin\n");
    let (_, err, code) = run(&sb, "echo oops >&2; exit 3", b"").await;
    assert_eq!((err.as_str(), code), ("oops\n", 3));
    let events = sb
        .exec(
            &ExecRequest {
                cmd: vec!["no-such-program".into()],
                env: BTreeMap::new(),
                cwd: None,
                timeout_secs: None,
            },
            b"",
        )
        .await
        .unwrap();
    assert!(
        matches!(events.last(), Some(xpod_node::sandbox::proto::Event::Error { message }) if message.contains("no-such-program")),
        "{events:?}"
    );

    // /work is the sandbox's, and persists between commands.
    assert_eq!(run(&sb, "echo kept > /work/f", b"").await.2, 0);
    assert_eq!(run(&sb, "cat /work/f", b"").await.0, "kept\n");
    assert_eq!(
        std::fs::read_to_string(sb.work_dir().join("f")).unwrap(),
        "kept\n"
    );

    // Isolation: no host home, no node data (this test's temp dir), nothing writable elsewhere.
    let tmp_path = tmp.path().display().to_string();
    for script in [
        "ls /root".to_string(),
        "cat /etc/passwd".to_string(),
        format!("ls {tmp_path}"),
        "touch /usr/evil".to_string(),
        "touch /evil".to_string(),
        "ls /work/../.xpod-init/..".to_string(),
    ] {
        let (_, _, code) = run(&sb, &script, b"").await;
        assert_ne!(code, 0, "{script} must fail in the sandbox");
    }
    assert!(!std::path::Path::new("/usr/evil").exists());

    // No network: the host's loopback listener is unreachable (the sandbox has its own `lo`).
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    // bash's /dev/tcp (the sandbox's `sh` may be dash, which has none).
    let events = sb
        .exec(
            &ExecRequest {
                cmd: vec![
                    "bash".into(),
                    "-c".into(),
                    format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"),
                ],
                env: BTreeMap::new(),
                cwd: None,
                timeout_secs: Some(10),
            },
            b"",
        )
        .await
        .unwrap();
    let (out, _, bash_code, _) = outcome(&events);
    assert_ne!(
        bash_code,
        Some(0),
        "connected to the host: {}",
        String::from_utf8_lossy(&out)
    );

    // A fork bomb stops at the process limit; the sandbox and the host carry on.
    let bomb = "import os, time\nn = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(1)\n        os._exit(0)\n    n += 1\nprint(n)\n";
    let events = sb
        .exec(
            &ExecRequest {
                cmd: vec!["python3".into(), "-c".into(), bomb.into()],
                env: BTreeMap::new(),
                cwd: None,
                timeout_secs: Some(20),
            },
            b"",
        )
        .await
        .unwrap();
    let (out, err, _, _) = outcome(&events);
    let started: usize = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{events:?} {}", String::from_utf8_lossy(&err)));
    assert!(
        started < 40,
        "the process limit held: {started} forks succeeded"
    );
    assert!(started > 5, "forking works at all: {started}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(run(&sb, "echo alive", b"").await.0, "alive\n");

    // A runaway process is killed by its timeout.
    let events = sb
        .exec(
            &ExecRequest {
                cmd: vec!["sh".into(), "-c".into(), "while :; do :; done".into()],
                env: BTreeMap::new(),
                cwd: None,
                timeout_secs: Some(1),
            },
            b"",
        )
        .await
        .unwrap();
    let (_, _, code, timed_out) = outcome(&events);
    assert!(timed_out, "{events:?}");
    assert_eq!(code, Some(128 + 9));

    sb.stop().await;
}

/// `network: true`: outbound only. The sandbox has its own interface with a default route, but
/// the host's loopback services (PostgreSQL and S3 listen there in these tests), the host's
/// own addresses, the slirp gateway (which maps to the host's loopback) and private ranges are
/// unreachable, from a command and through the port route; the sandbox's own loopback works.
/// (Reaching the internet itself is not tested: CI has no internet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_outbound_only() {
    if std::process::Command::new("slirp4netns")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED network_is_outbound_only: slirp4netns is not installed; the test runner installs it (apt-get install slirp4netns nftables)");
        return;
    }
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        eprintln!("SKIPPED network_is_outbound_only: a sandbox with network needs a root node (it joins the sandbox's network namespace); run the tests as root");
        return;
    }
    let tmp = TempDir::new("xpod-sandbox-net");
    let mut s = spec(&tmp, "net1", 231_101);
    s.network = true;
    let sb = Sandbox::start(&s)
        .await
        .expect("a sandbox with network (slirp4netns and nftables installed, node root)");

    // A host service on every address (loopback included), like the cluster's own.
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let mut targets = vec![
        "127.0.0.1".to_string(),
        "10.0.2.2".to_string(),
        "169.254.169.254".to_string(),
    ];
    for ip in xpod_node::sandbox::net::host_addresses() {
        if ip.is_ipv4() && !ip.is_loopback() {
            targets.push(ip.to_string());
        }
    }
    for ip in &targets {
        let (out, err, code) = run(
            &sb,
            &format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && echo connected'"),
            b"",
        )
        .await;
        assert_ne!(code, 0, "{ip}:{port} reached from the sandbox: {out} {err}");
    }
    // It has a network of its own: an interface with a default route, and DNS pointing at
    // the forwarder.
    let (out, _, _) = run(&sb, "cat /proc/net/route; cat /etc/resolv.conf", b"").await;
    assert!(out.contains("tap0\t00000000"), "a default route: {out}");
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    // The port route connects inside: nothing listens on `port` in the sandbox, so nothing
    // answers, though the host listens there.
    let err = sb
        .connect(port)
        .await
        .expect_err("no host service through the port route");
    assert!(format!("{err:#}").contains("nothing answers"), "{err:#}");
    // The sandbox's own loopback works, and so does its port route.
    let (_, _, code) = run(
        &sb,
        "nohup python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 & sleep 1; timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8123'",
        b"",
    )
    .await;
    assert_eq!(code, 0, "the sandbox's own loopback");
    assert!(sb.connect(8123).await.is_ok());
    sb.stop().await;
}
