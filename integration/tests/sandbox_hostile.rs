//! A sandbox whose PID 1 is not xpod's supervisor but a hostile program (real bubblewrap,
//! Python inside playing the supervisor on the control channel it inherits as descriptor 3):
//! the node bounds everything it sends. An endless line is cut at `MAX_LINE` and ends the
//! command; a flood of events is read at most `MAX_EVENTS_PER_SEC`; a command that never
//! sends `end` gets an `error` at its timeout and the node kills the sandbox from outside; the
//! test process (the "node" here) keeps a flat memory footprint throughout.
//! One test in this file: it measures its own process's memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use xpod_integration::node::{xpod_bin, TempDir};
use xpod_node::sandbox::events::{MAX_EVENTS_PER_SEC, TIMEOUT_GRACE};
use xpod_node::sandbox::proto::{Event, ExecRequest};
use xpod_node::sandbox::runtime::{Sandbox, Spec};
use xpod_node::sandbox::Limits;

/// Answers pings like the real supervisor; then, per command, misbehaves as `sys.argv[1]` says.
const IMPOSTOR: &str = r#"
import socket, sys, threading, time
MODE = sys.argv[1]
ctl = socket.socket(fileno=3)
def serve(c):
    first = c.makefile("rb").readline()
    try:
        if b'"ping"' in first:
            c.sendall(b'{"type":"ready"}\n')
        elif MODE == "endless":
            chunk = b"x" * 65536
            while True:
                c.sendall(chunk)
        elif MODE == "flood":
            burst = b'{"type":"stdout","data":"eA=="}\n' * 1000
            while True:
                c.sendall(burst)
        elif MODE == "silent":
            c.sendall(b'{"type":"start","pid":1}\n')
            time.sleep(3600)
    except OSError:
        pass
while True:
    msg, fds, _, _ = socket.recv_fds(ctl, 16, 4)
    if not msg:
        sys.exit(0)
    for fd in fds:
        threading.Thread(target=serve, args=(socket.socket(fileno=fd),), daemon=True).start()
"#;

fn spec(tmp: &TempDir, name: &str, uid: u32, mode: &str) -> Spec {
    Spec {
        root: tmp.path().join(name),
        xpod_bin: xpod_bin(),
        uid,
        network: false,
        limits: Limits::default(),
        env: BTreeMap::new(),
        usr: "/usr".into(),
        init: Some(vec![
            "/usr/bin/python3".into(),
            "-c".into(),
            IMPOSTOR.into(),
            mode.into(),
        ]),
    }
}

fn request(timeout_secs: Option<u64>) -> ExecRequest {
    ExecRequest {
        cmd: vec!["anything".into()],
        env: BTreeMap::new(),
        cwd: None,
        timeout_secs,
    }
}

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024
}

/// Takes every event of one exec (at most `within`), keeping only the count and the last.
async fn drain(sb: &Sandbox, req: &ExecRequest, within: Duration) -> (usize, Option<Event>) {
    let mut rx = sb.exec_stream(req, b"").await.expect("exec");
    let (mut n, mut last) = (0, None);
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        n += 1;
        last = Some(ev);
    }
    (n, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_supervisor_is_bounded_by_the_node() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED a_hostile_supervisor_is_bounded_by_the_node: bubblewrap (bwrap) is not installed; the test runner installs it");
        return;
    }
    let tmp = TempDir::new("xpod-hostile");
    let before = rss_mib();

    // An endless line: cut at MAX_LINE, the command ends with an error naming it.
    let mut sb = Sandbox::start(&spec(&tmp, "endless", 232_001, "endless"))
        .await
        .expect("a sandbox with the impostor as PID 1");
    let (_, last) = drain(&sb, &request(None), Duration::from_secs(20)).await;
    match last {
        Some(Event::Error { message }) => assert!(message.contains("longer than"), "{message}"),
        other => panic!("an endless line must end the command with an error: {other:?}"),
    }
    // Several at once, too: each is cut the same way.
    let endless = request(None);
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(drain(&sb, &endless, Duration::from_secs(20)));
    }
    for (_, last) in futures_util::future::join_all(runs).await {
        assert!(matches!(last, Some(Event::Error { .. })), "{last:?}");
    }
    assert!(
        sb.is_alive(),
        "a cut line stops the command, not the sandbox"
    );
    sb.stop().await;

    // A flood of valid events without end: read at most MAX_EVENTS_PER_SEC, ended at the
    // timeout plus the grace, the sandbox killed from outside.
    let mut sb = Sandbox::start(&spec(&tmp, "flood", 232_002, "flood"))
        .await
        .expect("a sandbox");
    let started = Instant::now();
    let (n, last) = drain(&sb, &request(Some(1)), Duration::from_secs(30)).await;
    let took = started.elapsed();
    match last {
        Some(Event::Error { message }) => assert!(message.contains("timeout"), "{message}"),
        other => panic!("the node must end a command that never ends: {other:?}"),
    }
    let secs = took.as_secs() + 1;
    assert!(
        n as u64 <= u64::from(MAX_EVENTS_PER_SEC) * secs + 1000,
        "{n} events in {took:?}: more than {MAX_EVENTS_PER_SEC}/s were taken"
    );
    eventually_dead(&mut sb).await;

    // Silence after `start`: the command still ends at its timeout, the sandbox is killed.
    let mut sb = Sandbox::start(&spec(&tmp, "silent", 232_003, "silent"))
        .await
        .expect("a sandbox");
    let started = Instant::now();
    let (_, last) = drain(&sb, &request(Some(1)), Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(
        matches!(&last, Some(Event::Error { message }) if message.contains("timeout")),
        "{last:?}"
    );
    assert!(
        took >= Duration::from_secs(1) + TIMEOUT_GRACE - Duration::from_millis(200),
        "not before the timeout and its grace: {took:?}"
    );
    eventually_dead(&mut sb).await;

    let after = rss_mib();
    eprintln!("RSS before {before} MiB, after {after} MiB");
    assert!(
        after < before + 100,
        "the node's memory grew from {before} to {after} MiB"
    );
}

async fn eventually_dead(sb: &mut Sandbox) {
    for _ in 0..50 {
        if !sb.is_alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node did not kill the sandbox from outside");
}
