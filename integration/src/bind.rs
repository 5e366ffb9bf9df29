//! A throwaway BIND 9 (`named`, Debian package `bind9`, installed by `integration/run-tests.sh`)
//! on a free loopback port, as a secondary of an xpod center (AXFR + NOTIFY) or as the primary
//! an xpod center pushes RFC 2136 updates to. TSIG keys come from `tsig-keygen`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::node::free_port;

pub struct Bind {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

/// A TSIG key: its name, its base64 secret, and the `key` clause for named.conf.
pub struct TsigKey {
    pub name: String,
    pub secret: String,
    pub clause: String,
}

/// `tsig-keygen -a hmac-sha256 NAME`.
pub fn tsig_keygen(name: &str) -> anyhow::Result<TsigKey> {
    let out = Command::new(find("tsig-keygen")?)
        .args(["-a", "hmac-sha256", name])
        .output()?;
    if !out.status.success() {
        bail!("tsig-keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    let clause = String::from_utf8(out.stdout)?;
    let secret = clause
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret \""))
        .and_then(|l| l.strip_suffix("\";"))
        .context("no secret in tsig-keygen's output")?
        .to_string();
    Ok(TsigKey {
        name: name.into(),
        secret,
        clause,
    })
}

fn find(name: &str) -> anyhow::Result<PathBuf> {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} is not installed (apt-get install bind9; bash integration/run-tests.sh does it)")
}

impl Bind {
    /// Starts named in `dir` with `key` and `zones` (the `zone "…" { … };` clauses; the
    /// directory is `dir`, so zone files are relative to it). Ready when `zone`'s SOA answers
    /// (a secondary: once it has transferred the zone).
    pub fn start(dir: &Path, key: &TsigKey, zones: &str, zone: &str) -> anyhow::Result<Bind> {
        Self::start_on(dir, free_port(), key, zones, zone)
    }

    /// [`Bind::start`] on a given port.
    pub fn start_on(
        dir: &Path,
        port: u16,
        key: &TsigKey,
        zones: &str,
        zone: &str,
    ) -> anyhow::Result<Bind> {
        std::fs::create_dir_all(dir)?;
        let conf = format!(
            "{key}\noptions {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n  \
             listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  \
             dnssec-validation no;\n  allow-transfer {{ key {name}; }};\n  notify no;\n}};\n\
             controls {{ }};\n{zones}\n",
            key = key.clause,
            dir = dir.display(),
            name = key.name,
        );
        std::fs::write(dir.join("named.conf"), conf)?;
        let log = std::fs::File::create(dir.join("named.log"))?;
        let child = Command::new(find("named")?)
            .arg("-g")
            .arg("-c")
            .arg(dir.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting named")?;
        let b = Bind {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.dig(&["+short", zone, "SOA"]).contains(' ') {
            if Instant::now() > deadline {
                bail!("named did not serve {zone} within 30 s; log:\n{}", b.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(b)
    }

    /// `dig @127.0.0.1 -p PORT ARGS…`, stdout.
    pub fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .output()
            .expect("running dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sorted `+short` answers.
    pub fn short(&self, name: &str, kind: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig(&["+short", name, kind])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
