//! Issue 19: the dashboard every center serves at `/-/dashboard`, used in headless Chromium
//! (Debian's `chromium`, driven by `playwright-core` from npm; both installed by the test
//! runner) against a real cluster: two centers in two regions on PostgreSQL and moto, an edge
//! with a service, a pod with resources, a running sandbox. What an operator relies on:
//! - signing in with an admin key shows both centers and the edge (with its service and each
//!   node's certificate expiry); the key stays in the tab's session storage, never in local
//!   storage;
//! - migrating a pod from its menu shows the move syncing, then the bar reaches 100 % on its own
//!   (the page learns of the progress from the center's event stream; it does not poll), and
//!   the new owner;
//! - a running sandbox is shown; its row opens a terminal (xterm.js in a tab of its own): a
//!   command typed there runs in the sandbox, its output shows, `exit 3` shows the exit code;
//!   the edge's row does the same on the device (it allows terminals); stopping the sandbox
//!   from its row stops and deletes it;
//! - no error in the page. Screenshots of each step are saved in `target/dashboard-shots/`.
//!
//! `integration/js/dashboard.mjs` is the browser side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_edge, wait_online};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::TempDir;
use xpod_integration::pg::PgServer;
use xpod_integration::s3::{two_regions_toml, S3Server};

fn chromium() -> PathBuf {
    let path = std::env::var_os("XPOD_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "this test needs Chromium at {} (apt-get install chromium; `bash integration/run-tests.sh` \
         installs it) or XPOD_TEST_CHROMIUM",
        path.display()
    );
    path
}

fn js_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        d.join("node_modules/playwright-core").exists(),
        "this test needs playwright-core in integration/js/node_modules: run `bash integration/run-tests.sh` once"
    );
    d
}

#[test]
fn the_dashboard_shows_the_cluster_migrates_a_pod_and_stops_a_sandbox() {
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("SKIPPED the_dashboard_…: bubblewrap (bwrap) is not installed (the sandbox step needs it); the test runner installs it");
        return;
    }
    let (chromium, js) = (chromium(), js_dir());
    let tmp = TempDir::new("xpod-dashboard");
    let pg = PgServer::start().expect("PostgreSQL");
    let (s3a, s3b) = (S3Server::start(), S3Server::start());
    s3a.create_bucket("xpod-a");
    s3b.create_bucket("xpod-b");
    let config = tmp.path().join("regions.toml");
    std::fs::write(&config, two_regions_toml(&s3a, &s3b)).unwrap();
    // While this file exists, center-2 holds its copy back: the move is seen syncing.
    let hold = tmp.path().join("hold-sync");
    std::fs::write(&hold, "").unwrap();
    let centers = start_centers(&tmp, &pg, 2, |i| {
        let mut env = vec![
            ("XPOD_CONFIG", config.display().to_string()),
            ("XPOD_REGION", if i == 1 { "a" } else { "b" }.to_string()),
            ("XPOD_TEST_SYNC_HOLD", hold.display().to_string()),
        ];
        if i == 1 {
            env.push(("XPOD_SANDBOX_SLOTS", "2".to_string()));
        }
        env
    });
    let (c1, c2) = (&centers[0], &centers[1]);
    let key = c1.admin_key();
    let _edge = start_edge(
        &tmp,
        c1,
        "laptop",
        "[tunnel]\nterminal = true\n\n[[tunnel.services]]\nname = \"web\"\nlocal = \"127.0.0.1:9\"\n",
    );
    wait_online(c1, "laptop");

    // A pod with a few resources in region a, and a running sandbox.
    Curl::new("POST", format!("{}/.cluster/pods", c1.url()))
        .bearer(&key)
        .json(&json!({"podId": "album"}))
        .send()
        .expect(201);
    for i in 0..8 {
        Curl::new("PUT", format!("{}/album/photo-{i}.txt", c1.url()))
            .bearer(&key)
            .header("Content-Type: text/plain")
            .body(vec![b'p'; 64 * 1024])
            .send()
            .expect(201);
    }
    let sb = Curl::new("POST", format!("{}/api/v1/sandboxes", c1.url()))
        .bearer(&key)
        .json(&json!({"name": "demo", "timeout": 600}))
        .send()
        .expect(201)
        .json();
    let sandbox = sb["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = Curl::get(format!("{}/api/v1/sandboxes/{sandbox}", c1.url()))
            .bearer(&key)
            .send()
            .expect(200)
            .json();
        if v["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the sandbox never ran: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let args = json!({
        "url": c1.url(), "key": key, "centers": ["center-1", "center-2"], "edge": "laptop",
        "pod": "album", "target": "center-2", "sandbox": sandbox,
        "hold": hold.display().to_string(), "shots": shots.display().to_string(),
    });
    let out = Command::new("node")
        .arg("dashboard.mjs")
        .arg(args.to_string())
        .current_dir(&js)
        .env("XPOD_TEST_CHROMIUM", &chromium)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stderr}\n{stdout}\ncenter-1 log:\n{}",
        c1.stderr()
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    eprintln!("dashboard: {seen}; screenshots in {}", shots.display());

    assert_eq!(seen["key_in_session"], true, "{seen}");
    // Node certificates are issued for 365 days: the expiry shown is next year's date.
    let year = |d: &Value| d.as_str().and_then(|d| d.get(..4)?.parse::<i32>().ok());
    for n in ["center-1", "center-2", "laptop"] {
        let shown = &seen["certs"][n];
        assert!(
            year(shown).is_some_and(|y| y >= 2026) && shown.as_str().unwrap().len() == 10,
            "{n}'s certificate expiry: {seen}"
        );
    }
    assert_eq!(
        seen["key_in_local"], false,
        "the key leaked into localStorage: {seen}"
    );
    let progress: Vec<i64> = seen["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(progress[0] < 100, "the move was never seen syncing: {seen}");
    assert_eq!(progress.last(), Some(&100), "{seen}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{seen}");
    assert_eq!(seen["owner"], "center-2", "{seen}");
    // The menu offers the other center, not the edge (pods do not move to edges yet).
    assert_eq!(seen["targets"], json!(["center-2"]), "{seen}");
    assert_eq!(seen["sandbox_shown"], "running", "{seen}");
    for (t, code) in [("sandbox_terminal", 3), ("edge_terminal", 4)] {
        assert_eq!(seen[t]["saw"], true, "{t}: {seen}");
        assert_eq!(
            seen[t]["status"],
            format!("exited with code {code}"),
            "{t}: {seen}"
        );
    }
    assert_eq!(seen["sandbox_gone"], true, "{seen}");
    Curl::get(format!("{}/api/v1/sandboxes/{sandbox}", c1.url()))
        .bearer(&key)
        .send()
        .expect(404);
    assert_eq!(seen["errors"], json!([]), "errors in the page: {seen}");
    // What the page showed is what the cluster has.
    let pod = Curl::get(format!("{}/.cluster/pods/album", c2.url()))
        .bearer(&key)
        .send()
        .expect(200)
        .json();
    assert_eq!(pod["nodeId"], "center-2");
    assert_eq!(pod["migrationStatus"], "done");
    for name in [
        "1-signed-in",
        "2-syncing",
        "3-migrated",
        "4-sandbox-terminal",
        "5-edge-terminal",
        "6-sandbox-stopped",
    ] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}.png is not a PNG");
    }
}

/// The committed `node/dashboard/dist` (what the binary embeds) is what its sources build to.
#[test]
fn the_embedded_dashboard_is_built_from_its_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/dashboard");
    let vite = dir.join("node_modules/.bin/vite");
    assert!(
        vite.exists(),
        "this test needs Vite in node/dashboard/node_modules: run `bash integration/run-tests.sh` once \
         (or `npm ci --prefix node/dashboard`)"
    );
    let tmp = TempDir::new("xpod-dashboard-build");
    let out = Command::new(&vite)
        .args(["build", "--logLevel", "error", "--emptyOutDir", "--outDir"])
        .arg(tmp.path())
        .current_dir(&dir)
        .output()
        .expect("running vite");
    assert!(
        out.status.success(),
        "vite build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "index.html",
        "app.js",
        "style.css",
        "terminal.html",
        "terminal.js",
        "terminal.css",
    ] {
        let built = std::fs::read(tmp.path().join(file)).unwrap();
        let committed = std::fs::read(dir.join("dist").join(file)).unwrap();
        assert!(
            built == committed,
            "node/dashboard/dist/{file} is not what its sources build to: run `npm run build --prefix node/dashboard` and commit dist/"
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "app.js",
            "index.html",
            "style.css",
            "terminal.css",
            "terminal.html",
            "terminal.js"
        ],
        "the build makes files the binary does not embed"
    );
}

/// The event stream needs the admin key and has a bound: beyond it a clear 503; a stream that
/// closes gives its slot back.
#[test]
fn event_streams_need_the_admin_key_and_are_bounded() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let node = xpod_integration::node::NodeProcess::start();
    let key = node.admin_key();
    Curl::get(format!("{}/api/v1/events", node.url()))
        .send()
        .expect(401);
    let open = || {
        let mut s = std::net::TcpStream::connect(node.addr()).unwrap();
        write!(
            s,
            "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
        )
        .unwrap();
        let mut status = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut status)
            .unwrap();
        (s, status)
    };
    let streams: Vec<_> = (0..16).map(|_| open()).collect();
    assert!(
        streams.iter().all(|(_, st)| st.contains(" 200 ")),
        "{streams:?}"
    );
    let (_, refused) = open();
    assert!(refused.contains(" 503 "), "{refused}");
    let r = Curl::get(format!("{}/api/v1/events", node.url()))
        .bearer(&key)
        .send()
        .expect(503);
    assert!(r.text().contains("event streams"), "{}", r.text());
    drop(streams);
    // The node notices the closed streams at their next write (a keep-alive within 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = open();
        if st.contains(" 200 ") {
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
