//! `xpod service install|uninstall|status`: this node as a systemd service, the way
//! `cloudflared service install` does it (issue 19).
//!
//! The unit is `deploy/xpod.service` (one place: the file in the repository is what gets
//! installed, with its how-to comments dropped); an edge's differs only in its `ExecStart`
//! (`xpod edge --join HOST:PORT`). A join token never goes into the unit (units are world
//! readable): it is written to `/etc/xpod/xpod.env` (mode 0600) as `XPOD_JOIN_TOKEN`, used
//! once on the first start and ignored after (the node keeps its certificate).
//!
//! Install: the binary to `/usr/local/bin/xpod`, a system user `xpod` owning `/var/lib/xpod`,
//! `--config` to `/etc/xpod/xpod.toml`, the unit to `/etc/systemd/system/xpod.service`, then
//! `systemctl enable --now xpod`. It needs root and a running systemd and says so otherwise.
//! `--root DIR` writes the same files under `DIR` and runs nothing (packaging, tests).
//! Uninstall stops, disables and removes the unit and keeps the data and config.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

/// The unit as shipped in the repository.
const UNIT_TEMPLATE: &str = include_str!("../../../deploy/xpod.service");
/// The service's name.
pub const NAME: &str = "xpod";
const BIN: &str = "usr/local/bin/xpod";
const ETC: &str = "etc/xpod";
const DATA: &str = "var/lib/xpod";
const UNIT: &str = "etc/systemd/system/xpod.service";

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Install and start this node as a systemd service (root).
    #[command(
        long_about = "Install this node as a systemd service: the binary to /usr/local/bin/xpod, a \
system user `xpod` owning /var/lib/xpod, --config to /etc/xpod/xpod.toml, the unit \
(deploy/xpod.service) to /etc/systemd/system/xpod.service, then `systemctl enable --now xpod`. \
With --join and --token it runs as an edge that joins on its first start (the token goes to \
/etc/xpod/xpod.env, mode 0600, never into the unit). Needs root and systemd; --root DIR writes the \
files under DIR instead and starts nothing."
    )]
    Install(InstallArgs),
    /// Stop, disable and remove the service (the data and the config are kept).
    Uninstall(RootArg),
    /// Whether the service is installed, enabled and running (exit status 3 if not installed).
    Status(RootArg),
}

#[derive(Args)]
pub struct InstallArgs {
    /// Run as an edge joining through this center's QUIC endpoint on its first start.
    #[arg(long, value_name = "HOST:PORT", requires = "token")]
    join: Option<String>,
    /// The join token (xpt_…), for --join.
    #[arg(
        long,
        requires = "join",
        hide_env_values = true,
        env = "XPOD_JOIN_TOKEN"
    )]
    token: Option<String>,
    /// A configuration file to install as /etc/xpod/xpod.toml (checked first).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the files under this directory as if it were `/`, and run nothing.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Write the files but do not enable or start the service.
    #[arg(long)]
    no_start: bool,
}

#[derive(Args)]
pub struct RootArg {
    /// The directory the service was installed under with `install --root`.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub fn run(cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Install(a) => install(a),
        ServiceCmd::Uninstall(r) => uninstall(r.root),
        ServiceCmd::Status(r) => status(r.root),
    }
}

/// The unit for a center or lone node (`join: None`) or for an edge joining through `join`.
pub fn unit(join: Option<&str>) -> String {
    let body = UNIT_TEMPLATE
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let body = match join {
        Some(center) => body.replace(
            "ExecStart=/usr/local/bin/xpod up",
            &format!("ExecStart=/usr/local/bin/xpod edge --join {center}"),
        ),
        None => body,
    };
    format!("# Installed by `xpod service install`.\n{body}\n")
}

fn say(what: &str) {
    println!("==> {what}");
}

/// Where a path of the installed system is: under `root`, or itself.
fn at(root: Option<&Path>, rel: &str) -> PathBuf {
    match root {
        Some(r) => r.join(rel),
        None => Path::new("/").join(rel),
    }
}

/// Refuses, naming why, when this is not a machine the service can be set up on.
fn preflight(root: Option<&Path>) -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("xpod service manages systemd services: Linux only");
    }
    if root.is_some() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("installing a service needs root: run it with sudo (or write the files under a directory with --root DIR)");
    }
    if !Path::new("/run/systemd/system").exists() {
        bail!("systemd is not running on this machine, so there is no service to install: start the node with `xpod up` (or `xpod edge`) under your own supervisor, or write the files with --root DIR");
    }
    Ok(())
}

fn checked_join(join: &str) -> anyhow::Result<()> {
    let ok = join.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
    });
    if !ok {
        bail!("--join {join:?} is not HOST:PORT (a host name or IP address and a port)");
    }
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created with its final mode: a token is never readable by others, not even briefly.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !st.success() {
        bail!("`{program} {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

fn install(a: InstallArgs) -> anyhow::Result<()> {
    let root = a.root.as_deref();
    preflight(root)?;
    if let Some(j) = &a.join {
        checked_join(j)?;
    }
    if let Some(t) = &a.token {
        xpod_tunnel::identity::JoinToken::parse(t.trim())
            .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    }
    let config_text = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the configuration {}", p.display()))?;
            xpod_config::Config::from_toml_str(&text, &p.display().to_string(), &[])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(text)
        }
        None => None,
    };

    let bin = at(root, BIN);
    let exe = std::env::current_exe().context("finding this binary")?;
    if exe != bin {
        say(&format!("installing the binary as {}", bin.display()));
        if let Some(d) = bin.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = bin.with_extension("new");
        std::fs::copy(&exe, &tmp).with_context(|| format!("copying {}", exe.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &bin)?;
    }
    if root.is_none() && Command::new("id").arg(NAME).output()?.status.code() != Some(0) {
        say("creating the system user xpod");
        sh(
            "useradd",
            &[
                "--system",
                "--home-dir",
                "/var/lib/xpod",
                "--shell",
                "/usr/sbin/nologin",
                NAME,
            ],
        )?;
    }
    let data = at(root, DATA);
    say(&format!("data directory {}", data.display()));
    std::fs::create_dir_all(&data)?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750))?;
    if root.is_none() {
        sh("chown", &["-R", "xpod:xpod", "/var/lib/xpod"])?;
    }
    let etc = at(root, ETC);
    std::fs::create_dir_all(&etc)?;
    if let Some(text) = config_text {
        let p = etc.join("xpod.toml");
        say(&format!("configuration {}", p.display()));
        write(&p, &text, 0o640)?;
        if root.is_none() {
            sh("chgrp", &["xpod", "/etc/xpod/xpod.toml"])?;
        }
    }
    if let Some(token) = &a.token {
        let p = etc.join("xpod.env");
        say(&format!("join token {} (mode 0600)", p.display()));
        let mut env = std::fs::read_to_string(&p)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("XPOD_JOIN_TOKEN="))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        env.push_str(&format!("XPOD_JOIN_TOKEN={}\n", token.trim()));
        write(&p, &env, 0o600)?;
    }
    let unit_path = at(root, UNIT);
    say(&format!("unit {}", unit_path.display()));
    write(&unit_path, &unit(a.join.as_deref()), 0o644)?;
    if root.is_some() {
        say("files written under the root directory; nothing started");
        return Ok(());
    }
    sh("systemctl", &["daemon-reload"])?;
    if a.no_start {
        say("installed; start it with `systemctl enable --now xpod`");
        return Ok(());
    }
    say("enabling and starting the service");
    sh("systemctl", &["enable", "--now", NAME])?;
    say("running: `xpod service status`, `journalctl -u xpod -f`");
    Ok(())
}

fn uninstall(root: Option<PathBuf>) -> anyhow::Result<()> {
    let root = root.as_deref();
    preflight(root)?;
    let unit_path = at(root, UNIT);
    if root.is_none() {
        say("stopping and disabling the service");
        let _ = sh("systemctl", &["disable", "--now", NAME]);
    }
    match std::fs::remove_file(&unit_path) {
        Ok(()) => say(&format!("removed {}", unit_path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            say(&format!("{} was not installed", unit_path.display()))
        }
        Err(e) => return Err(e).context(format!("removing {}", unit_path.display())),
    }
    if root.is_none() {
        sh("systemctl", &["daemon-reload"])?;
    }
    say(&format!(
        "kept {} and {} (remove them to forget this node)",
        at(root, DATA).display(),
        at(root, ETC).display()
    ));
    Ok(())
}

fn status(root: Option<PathBuf>) -> anyhow::Result<()> {
    let root = root.as_deref();
    let unit_path = at(root, UNIT);
    let installed = unit_path.exists();
    println!(
        "unit:      {}",
        if installed {
            unit_path.display().to_string()
        } else {
            format!("not installed ({})", unit_path.display())
        }
    );
    if root.is_none() && Path::new("/run/systemd/system").exists() {
        for (what, verb) in [("enabled:", "is-enabled"), ("active:", "is-active")] {
            let out = Command::new("systemctl").args([verb, NAME]).output()?;
            println!("{what:<10} {}", String::from_utf8_lossy(&out.stdout).trim());
        }
    } else if root.is_none() {
        println!("systemd:   not running on this machine");
    }
    if !installed {
        std::process::exit(3);
    }
    Ok(())
}
