//! Issue 19: an edge in one line, `curl -fsSL CENTER/install.sh | sh -s -- --token xpt_…`,
//! against a real center, into a throwaway root directory (`--root`: the same files, nothing
//! started; a real systemd is not something a test may reconfigure). What an operator relies
//! on:
//! - the script verifies before it installs: the center's CA must have the token's
//!   fingerprint, the manifest must carry the center's signature, the binary must match it —
//!   a wrong CA, a tampered manifest or a tampered binary (through a proxy in the middle) is
//!   refused with the reason, and nothing is installed;
//! - what it installs is the center's own binary, a unit that joins through the center, and
//!   the token in a 0600 file; started as the unit starts it, the edge joins and is online;
//! - it refuses clearly without a token, on another OS or architecture, and without root
//!   (`uname` and `id` are replaced on `PATH` for those: this machine is Linux and root).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xpod_integration::curl::Curl;
use xpod_integration::edges::{new_token, start_center, wait_online};
use xpod_integration::node::{xpod_bin, NodeProcess, TempDir};
use xpod_tunnel::identity::{ClusterCa, JoinToken};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl -fsSL URL/install.sh | sh -s -- ARGS`; `path_prefix` (fake tools) goes first on the
/// script's PATH (not curl's).
fn pipe_install(url: &str, args: &[&str], path_prefix: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"set -o pipefail; curl -fsSL "$0/install.sh" | PATH="${INNER_PATH:-$PATH}" sh -s -- "$@""#)
        .arg(url)
        .args(args);
    if let Some(dir) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("INNER_PATH", format!("{}:{path}", dir.display()));
    }
    cmd.env_remove("XPOD_JOIN_TOKEN");
    cmd.output().expect("running bash")
}

fn installed(root: &Path) -> bool {
    root.join("usr/local/bin/xpod").exists()
        || root.join("etc/systemd/system/xpod.service").exists()
        || root.join("etc/xpod/xpod.env").exists()
}

#[test]
fn an_edge_installs_in_one_line_and_joins() {
    let tmp = TempDir::new("xpod-install");
    let center = start_center(&tmp, "center-1", "");
    let token = new_token(&center);
    let root = tmp.path().join("root");

    // The script from a pipe, as the one-liner runs it.
    let out = pipe_install(
        &center.url(),
        &["--token", &token, "--root", root.to_str().unwrap()],
        None,
    );
    let said = text(&out);
    assert!(out.status.success(), "install failed:\n{said}");
    for step in [
        "checking http://127.0.0.1",
        "cannot check itself",
        "verified xpod",
        "==> unit",
    ] {
        assert!(said.contains(step), "no {step:?} in the output:\n{said}");
    }
    let secret = token.split('.').nth(1).unwrap();
    assert!(!said.contains(secret), "the token's secret was printed");

    // The center's own binary, a unit joining through the center, the token kept apart.
    let bin = root.join("usr/local/bin/xpod");
    assert!(
        std::fs::read(&bin).unwrap() == std::fs::read(xpod_bin()).unwrap(),
        "the installed binary is not the center's"
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/xpod.service")).unwrap();
    let join = format!("127.0.0.1:{}", center.port());
    assert!(
        unit.contains(&format!(
            "ExecStart=/usr/local/bin/xpod edge --join {join}\n"
        )),
        "{unit}"
    );
    assert!(!unit.contains(secret), "the token is in the unit");
    let env_path = root.join("etc/xpod/xpod.env");
    let env = std::fs::read_to_string(&env_path).unwrap();
    assert_eq!(env, format!("XPOD_JOIN_TOKEN={token}\n"));
    let mode = std::fs::metadata(&env_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Started the way the unit starts it (the installed binary, the token from the env file,
    // the join address from the unit), the edge joins and is online.
    let edge_config = tmp.path().join("edge.toml");
    std::fs::write(&edge_config, "role = \"edge\"\n").unwrap();
    let token_from_file = env.trim().strip_prefix("XPOD_JOIN_TOKEN=").unwrap();
    let _edge = NodeProcess::builder()
        .bin(&bin)
        .data_dir(tmp.path().join("laptop"))
        .env("XPOD_NODE_ID", "laptop")
        .env("XPOD_JOIN_TOKEN", token_from_file)
        .arg("--config")
        .arg(&edge_config)
        .arg("--join")
        .arg(&join)
        .start();
    wait_online(&center, "laptop");

    // Downloaded first and run from a file, the script checks itself against the manifest.
    let script = tmp.path().join("install.sh");
    let body = Curl::get(format!("{}/install.sh", center.url()))
        .send()
        .expect(200)
        .text();
    std::fs::write(&script, &body).unwrap();
    let root2 = tmp.path().join("root2");
    let out = Command::new("sh")
        .arg(&script)
        .args(["--token", &new_token(&center), "--root"])
        .arg(&root2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("this script matches the signed manifest"),
        "{}",
        text(&out)
    );
    // … and refuses when it was changed.
    std::fs::write(&script, body.replace("set -eu", "set -eu\n: changed")).unwrap();
    let root3 = tmp.path().join("root3");
    let out = Command::new("sh")
        .arg(&script)
        .args(["--token", &new_token(&center), "--root"])
        .arg(&root3)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("install.sh does not match the signed manifest"),
        "{}",
        text(&out)
    );
    assert!(!installed(&root3));

    // Public files only; other names and architectures are refused with the reason.
    let other = if cfg!(target_arch = "x86_64") {
        "xpod-linux-aarch64"
    } else {
        "xpod-linux-x86_64"
    };
    let r = Curl::get(format!("{}/-/install/{other}", center.url()))
        .send()
        .expect(404);
    assert!(
        r.text().contains("serves the binary for linux-"),
        "{}",
        r.text()
    );
    Curl::get(format!("{}/-/install/ca.key", center.url()))
        .send()
        .expect(404);
    Curl::get(format!("{}/-/install/node.key", center.url()))
        .send()
        .expect(404);
    Curl::get(format!("{}/-/install/../ca.key", center.url()))
        .path_as_is()
        .send()
        .expect(404);
    let r = Curl::get(format!("{}/install.sh", center.url()))
        .header("Host: x';rm -rf /;'")
        .send()
        .expect(400);
    assert!(r.text().contains("Host header"), "{}", r.text());
}

#[test]
fn the_script_refuses_what_it_cannot_verify_and_installs_nothing() {
    let tmp = TempDir::new("xpod-install-refuse");
    let center = start_center(&tmp, "center-1", "");
    let root = tmp.path().join("root");
    let r = root.to_str().unwrap();
    let url = center.url();
    let refused = |out: Output, why: &str| {
        let said = text(&out);
        assert!(!out.status.success(), "not refused ({why}):\n{said}");
        assert!(
            said.contains(why),
            "refused without saying {why:?}:\n{said}"
        );
        assert!(!installed(&root), "something was installed ({why})");
    };

    refused(
        pipe_install(&url, &["--root", r], None),
        "a join token is required",
    );
    refused(
        pipe_install(&url, &["--token", "xpt_nope", "--root", r], None),
        "is not a join token",
    );
    // A token of another cluster: its CA is not this center's.
    let foreign = JoinToken::generate(&ClusterCa::generate("other").unwrap().fingerprint())
        .unwrap()
        .to_text();
    refused(
        pipe_install(&url, &["--token", &foreign, "--root", r], None),
        "is not the CA your token names",
    );

    // Another OS, another architecture, not root: fake `uname`/`id` first on PATH.
    let token = new_token(&center);
    let fake = |name: &str, script: &str| -> PathBuf {
        let dir = tmp.path().join(format!("fake-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let tool = if name.starts_with("uname") {
            "uname"
        } else {
            "id"
        };
        let p = dir.join(tool);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    };
    let darwin = fake("uname-os", r#"[ "$1" = -m ] && echo arm64 || echo Darwin"#);
    refused(
        pipe_install(&url, &["--token", &token, "--root", r], Some(&darwin)),
        "unsupported operating system: Darwin",
    );
    let mips = fake("uname-arch", r#"[ "$1" = -m ] && echo mips || echo Linux"#);
    refused(
        pipe_install(&url, &["--token", &token, "--root", r], Some(&mips)),
        "unsupported architecture: mips",
    );
    let user = fake("id", "echo 1000");
    // Were the root check broken, the script would go on to this curl and stop there, before
    // anything is written to this machine.
    let stop = user.join("curl");
    std::fs::write(
        &stop,
        "#!/bin/sh\necho 'fake curl: the root check was passed' >&2\nexit 99\n",
    )
    .unwrap();
    std::fs::set_permissions(&stop, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused(
        pipe_install(&url, &["--token", &token], Some(&user)),
        "run as root",
    );

    // A proxy in the middle that changes one byte of the binary, then of the manifest.
    let bin_name = format!("xpod-linux-{}", std::env::consts::ARCH);
    let proxy = TamperingProxy::start(center.port(), &bin_name);
    refused(
        pipe_install(&proxy.url, &["--token", &token, "--root", r], None),
        &format!("{bin_name} does not match the signed manifest"),
    );
    let proxy = TamperingProxy::start(center.port(), "manifest");
    refused(
        pipe_install(&proxy.url, &["--token", &token, "--root", r], None),
        "signature does not verify",
    );

    // Nothing was used up: the same token still installs.
    let out = pipe_install(&url, &["--token", &token, "--root", r], None);
    assert!(out.status.success(), "{}", text(&out));
}

/// An HTTP proxy (one request per connection) in front of a center that flips the last byte
/// of the response body for paths ending in `victim`. Everything else passes unchanged.
struct TamperingProxy {
    url: String,
}

impl TamperingProxy {
    fn start(center_port: u16, victim: &str) -> TamperingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let victim = format!("/{victim}");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                let victim = victim.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let forwarded = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    let mut upstream = TcpStream::connect(("127.0.0.1", center_port)).unwrap();
                    upstream.write_all(forwarded.as_bytes()).unwrap();
                    let mut resp = Vec::new();
                    upstream.read_to_end(&mut resp).unwrap();
                    if path.ends_with(&victim) {
                        if let Some(last) = resp.last_mut() {
                            *last ^= 0x01;
                        }
                    }
                    let _ = client.write_all(&resp);
                });
            }
        });
        TamperingProxy { url }
    }
}
