//! `xpod sandbox …` against a lone node (real binary, real bubblewrap): create prints the id,
//! exec streams stdout and stderr apart and exits with the command's code, stdin from a flag
//! and from a file, list, logs replay, delete; a bad id is a clear error.

use std::process::Output;

use xpod_integration::node::{xpod_command, NodeProcess};

fn xpod(node: &NodeProcess, args: &[&str]) -> Output {
    // `xpod sandbox <verb> --server … --key … <rest>` (the rest may end in `-- CMD…`).
    xpod_command()
        .args(&args[..2])
        .args(["--server", &node.url(), "--key", &node.admin_key()])
        .args(&args[2..])
        .output()
        .expect("running xpod")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sandbox_commands() {
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED sandbox_commands: bubblewrap (bwrap) is not installed; the test runner installs it (apt-get install bubblewrap)");
        return;
    }
    let node = NodeProcess::builder()
        .env("XPOD_SANDBOX_SLOTS", "2")
        .start();
    let out = xpod(
        &node,
        &[
            "sandbox",
            "create",
            "--name",
            "cli",
            "--timeout",
            "600",
            "--env",
            "WHO=cli",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert!(
        id.starts_with("sb") && id.len() == 16,
        "the id on stdout: {id:?}"
    );
    assert!(
        text(&out.stderr).contains("sbt_"),
        "the access token on stderr"
    );

    let out = xpod(
        &node,
        &[
            "sandbox",
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo hi $WHO; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi cli\n");
    assert_eq!(text(&out.stderr), "err\n");

    let out = xpod(
        &node,
        &[
            "sandbox",
            "exec",
            &id,
            "--stdin",
            "from a flag\n",
            "--",
            "cat",
        ],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "from a flag\n".to_string())
    );
    let file = node.root().join("in.bin");
    std::fs::write(&file, [0u8, 1, 2, 255]).unwrap();
    let out = xpod(
        &node,
        &[
            "sandbox",
            "exec",
            &id,
            "--stdin-file",
            file.to_str().unwrap(),
            "--",
            "od",
            "-An",
            "-tu1",
        ],
    );
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "255"]
    );
    let out = xpod(
        &node,
        &[
            "sandbox",
            "exec",
            &id,
            "--timeout",
            "1",
            "--",
            "sleep",
            "30",
        ],
    );
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("timeout"),
        "{}",
        text(&out.stderr)
    );

    let out = xpod(&node, &["sandbox", "list"]);
    assert!(
        text(&out.stdout).contains(&id) && text(&out.stdout).contains("running"),
        "{}",
        text(&out.stdout)
    );
    let out = xpod(&node, &["sandbox", "logs", &id]);
    assert!(
        text(&out.stdout).starts_with("hi cli\n"),
        "{}",
        text(&out.stdout)
    );

    let out = xpod(&node, &["sandbox", "exec", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a sandbox id"),
        "{}",
        text(&out.stderr)
    );
    let out = xpod(
        &node,
        &["sandbox", "exec", "sbffffffffffffff", "--", "true"],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let out = xpod(&node, &["sandbox", "delete", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = xpod(&node, &["sandbox", "get", &id]);
    assert!(!out.status.success() && text(&out.stderr).contains("not found"));
}
