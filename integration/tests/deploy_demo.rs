//! Issue 19: the deploy files work. `deploy/demo.sh --check` builds the README's two-region
//! cluster from real processes — a throwaway PostgreSQL, moto (S3) with one bucket per region,
//! two centers meshed over QUIC, an edge joined with a token from `xpod tokens create` that
//! publishes a local web server — and checks it end to end. An operator relies on the script
//! passing, on its exit status, and on it leaving nothing behind: no process, no listener, no
//! temp dir. The configuration files the deploy files ship are the other half: every `.toml`
//! under `deploy/`, subdirectories included, every environment file's `XPOD_*` variables with
//! the configs they go with, and the Kubernetes ConfigMap's `xpod.toml` must be accepted by
//! `xpod config`.
//!
//! The Dockerfile, `compose.yaml` and the Kubernetes manifests themselves are not run: there is
//! no Docker or Kubernetes on the machines these tests run on.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use xpod_integration::node::{xpod_bin, xpod_command, TempDir};

/// How long `demo.sh --check` may take (it takes a few seconds when moto is installed; a
/// machine without moto installs it from PyPI first, about a minute).
const TIMEOUT: Duration = Duration::from_secs(180);

/// The lines `--check` prints when every check passed.
const PASS_LINES: &[&str] = &[
    "PASS: pod demo created on center-a with the admin key",
    "PASS: demo/hello.txt written through center-b (served by center-a)",
    "PASS: demo/hello.txt read back through center-a",
    "PASS: its bytes are in region a's bucket xpod-a",
    "PASS: edge-1's service web fetched through center-a",
];

fn deploy_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    d.canonicalize().unwrap_or(d)
}

/// The script as a child in a process group of its own. Dropped while it still runs (a failed
/// or timed-out test), it kills the group and every process naming the script's state dir
/// (PostgreSQL, which `pg_ctl` starts in a session of its own), so nothing is left behind.
struct Group {
    child: Child,
    pgid: u32,
    log: PathBuf,
}

impl Group {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.pgid))
            .status();
        let _ = self.child.wait();
        if let Some(state) = state_dir(&self.output()) {
            for (pid, _, _) in processes(self.pgid, &state) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::thread::panicking() || matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// `(pid, state, command line)` of every live process whose process group is `pgid`, or whose
/// command line mentions `needle`.
fn processes(pgid: u32, needle: &str) -> Vec<(u32, char, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first().and_then(|s| s.chars().next()).unwrap_or('?');
        let pgrp: u32 = fields.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        if state == 'Z' {
            continue; // already dead, waiting to be reaped
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if pgrp == pgid || (!needle.is_empty() && cmdline.contains(needle)) {
            found.push((pid, state, cmdline));
        }
    }
    found
}

/// The state dir the script announced (`==> state in DIR (…)`).
fn state_dir(output: &str) -> Option<String> {
    line_after(output, "==> state in ")
        .and_then(|s| s.split(" (").next())
        .map(str::to_string)
}

/// The value after `prefix` on the first output line that starts with it.
fn line_after<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

#[test]
fn demo_script_check_passes_and_leaves_nothing_running() {
    let tmp = TempDir::new("xpod-deploy-demo");
    // As root the script runs PostgreSQL as `postgres`, which must reach the state dir in here.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log_path = tmp.path().join("demo.out");
    let log = File::create(&log_path).unwrap();
    let started = Instant::now();
    let child = Command::new("bash")
        .arg(deploy_dir().join("demo.sh"))
        .arg("--check")
        .arg("--xpod")
        .arg(xpod_bin())
        // Its temp dir under ours; run from elsewhere than the repository.
        .env("TMPDIR", tmp.path())
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("running bash deploy/demo.sh");
    let pgid = child.id();
    let mut group = Group {
        child,
        pgid,
        log: log_path,
    };

    let status = loop {
        if let Some(status) = group.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            group.kill();
            panic!(
                "demo.sh --check did not finish within {TIMEOUT:?}; killed its processes. Output:\n{}",
                group.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let out = group.output();
    eprintln!("{out}\ndemo.sh --check took {:.1} s", elapsed.as_secs_f64());

    assert!(
        status.success(),
        "demo.sh --check exited with {status}:\n{out}"
    );
    for line in PASS_LINES {
        assert!(
            out.lines().any(|l| l == *line),
            "missing {line:?} in:\n{out}"
        );
    }
    assert!(!out.contains("FAIL:"), "a check failed:\n{out}");

    // Nothing left: no process of its group, none naming its state dir (PostgreSQL runs in a
    // session of its own), no listener on the ports it used, no state dir.
    let state = state_dir(&out).expect("demo.sh names its state dir");
    assert!(
        state.starts_with(tmp.path().to_str().unwrap()),
        "the state dir {state} is under TMPDIR"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes(pgid, &state);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "demo.sh left processes running: {left:?}\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ports: Vec<u16> = line_after(&out, "==> ports: ")
        .expect("demo.sh prints its ports")
        .split_whitespace()
        .map(|p| p.parse().expect("a port number"))
        .collect();
    assert_eq!(ports.len(), 6, "{out}");
    for port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "something still listens on {addr} after demo.sh stopped"
        );
    }
    assert!(
        !Path::new(&state).exists(),
        "demo.sh did not remove its state dir {state}"
    );
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every `*.toml` under `dir`, recursively, sorted.
fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `xpod config --config FILE` run from `cwd`. A file whose node id is `auto` makes the node
/// write `<data_dir>/.node-id`: such files get `XPOD_DATA_DIR=cwd`, so checking them writes
/// nothing outside the test's temp dir.
fn xpod_config(file: &Path, cwd: &Path, env: &[(&str, &str)]) -> Output {
    let content = std::fs::read_to_string(file).unwrap();
    let explicit_id = content.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("node_id") && !l.contains("\"auto\"")
    });
    let mut cmd = xpod_command();
    cmd.arg("config").arg("--config").arg(file).current_dir(cwd);
    if !explicit_id && !env.iter().any(|(k, _)| *k == "XPOD_NODE_ID") {
        cmd.env("XPOD_DATA_DIR", cwd);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("running xpod config")
}

#[test]
fn every_toml_under_deploy_and_its_subdirectories_is_accepted_by_xpod_config() {
    let deploy = deploy_dir();
    let tmp = TempDir::new("xpod-deploy-tomls");
    let files = tomls(&deploy);
    for want in [
        "center.toml",
        "lone.toml",
        "compose/center-a.toml",
        "compose/center-b.toml",
        "compose/edge-1.toml",
    ] {
        assert!(
            files.contains(&deploy.join(want)),
            "deploy/{want} is missing: {files:?}"
        );
    }
    for file in &files {
        let out = xpod_config(file, tmp.path(), &[]);
        assert!(
            out.status.success(),
            "{} is refused: {}",
            file.display(),
            text(&out)
        );
    }

    // compose.yaml mounts config files that exist.
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let mounted: Vec<&str> = compose
        .split_whitespace()
        .filter_map(|w| w.trim_start_matches("- ").strip_prefix("./"))
        .filter_map(|w| w.split(':').next())
        .collect();
    assert!(
        mounted.len() >= 3,
        "compose.yaml mounts its configs: {mounted:?}"
    );
    for m in mounted {
        assert!(
            deploy.join(m).is_file(),
            "compose.yaml mounts ./{m}, which does not exist"
        );
    }
}

#[test]
fn every_environment_file_under_deploy_is_accepted_with_its_configs() {
    let deploy = deploy_dir();
    let tmp = TempDir::new("xpod-deploy-env");
    let mut files = Vec::new();
    let mut dirs = vec![deploy.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("env") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "deploy/ ships an environment file");
    for env_file in files {
        let text_of = std::fs::read_to_string(&env_file).unwrap();
        let vars: Vec<(String, String)> = text_of
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {l}", env_file.display()));
                (k.to_string(), v.to_string())
            })
            .filter(|(k, _)| k.starts_with("XPOD_"))
            .collect();
        assert!(
            !vars.is_empty(),
            "{} sets no XPOD_ variable",
            env_file.display()
        );
        // The centers' configs beside it (the edge reads no environment file).
        let dir = env_file.parent().unwrap();
        let configs: Vec<PathBuf> = tomls(dir)
            .into_iter()
            .filter(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .contains("role = \"center\"")
            })
            .collect();
        assert!(
            !configs.is_empty(),
            "no center config beside {}",
            env_file.display()
        );
        let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for config in configs {
            let out = xpod_config(&config, tmp.path(), &env);
            assert!(
                out.status.success(),
                "{} with {} is refused: {}",
                config.display(),
                env_file.display(),
                text(&out)
            );
        }
    }
}

/// The `xpod.toml: |` block of deploy/k8s/configmap.yaml, de-indented.
fn configmap_toml(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "xpod.toml: |");
    let key_line = lines.next().expect("configmap.yaml has an xpod.toml key");
    let indent = key_line.len() - key_line.trim_start().len() + 2;
    let mut toml = String::new();
    for line in lines {
        if line.trim().is_empty() {
            toml.push('\n');
        } else if line.len() - line.trim_start().len() >= indent {
            toml.push_str(&line[indent..]);
            toml.push('\n');
        } else {
            break;
        }
    }
    toml
}

#[test]
fn the_kubernetes_configmap_config_is_accepted_by_xpod_config() {
    let tmp = TempDir::new("xpod-deploy-k8s");
    let yaml = std::fs::read_to_string(deploy_dir().join("k8s/configmap.yaml")).unwrap();
    let toml = configmap_toml(&yaml);
    assert!(toml.contains("role = \"center\""), "{toml}");
    let file = tmp.path().join("xpod.toml");
    std::fs::write(&file, &toml).unwrap();
    // What the StatefulSet sets per pod.
    let out = xpod_config(
        &file,
        tmp.path(),
        &[
            ("XPOD_NODE_ID", "xpod-center-0"),
            ("XPOD_HTTP_LISTEN", "10.0.0.5:8080"),
        ],
    );
    assert!(
        out.status.success(),
        "the ConfigMap's xpod.toml is refused: {}",
        text(&out)
    );
    let shown = text(&out);
    assert!(
        shown.contains("xpod-center-0") && shown.contains("10.0.0.5:8080"),
        "{shown}"
    );
}
