//! A throwaway Pebble (Let's Encrypt's ACME test server; Debian package `pebble`, installed by
//! `integration/run-tests.sh`) whose directory is served over HTTPS with a certificate from a CA
//! this helper generates, and whose validation authority asks the DNS server the test names
//! (an xpod center's). `PEBBLE_VA_NOSLEEP=1`, `PEBBLE_AUTHZREUSE=0`: every order is validated
//! at once, by DNS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::node::free_port;

pub struct Pebble {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    mgmt_port: u16,
}

impl Pebble {
    /// Starts Pebble in `dir` with validation DNS at `dns` (`127.0.0.1:PORT`); certificates
    /// valid for `validity_secs` when given. Ready (directory answering) when this returns.
    pub fn start(dir: &Path, dns: &str, validity_secs: Option<u64>) -> anyhow::Result<Pebble> {
        let bin = which("pebble").context(
            "pebble is not installed (apt-get install pebble; bash integration/run-tests.sh does it)",
        )?;
        std::fs::create_dir_all(dir)?;
        // The directory's own HTTPS: a test CA and a localhost certificate it signs.
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "xpod test: Pebble WFE CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        std::fs::write(dir.join("wfe-ca.pem"), ca.pem())?;
        std::fs::write(dir.join("wfe.pem"), cert.pem())?;
        std::fs::write(dir.join("wfe.key"), key.serialize_pem())?;
        let (port, mgmt_port) = (free_port(), free_port());
        let mut cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.join("wfe.pem"),
            "privateKey": dir.join("wfe.key"),
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity_secs {
            cfg["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(dir.join("pebble.json"), cfg.to_string())?;
        let log = std::fs::File::create(dir.join("pebble.log"))?;
        let child = Command::new(bin)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", dns])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting pebble")?;
        let p = Pebble {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
            mgmt_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.get(&p.directory_url()).is_err() {
            if Instant::now() > deadline {
                bail!("pebble did not answer within 20 s; log:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(p)
    }

    /// `https://127.0.0.1:PORT/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA file to trust for the directory's HTTPS (`acme.directory_ca`).
    pub fn directory_ca(&self) -> PathBuf {
        self.dir.join("wfe-ca.pem")
    }

    /// Pebble's issuing root (new on every start), written to `<dir>/root.pem`; its path.
    pub fn root(&self) -> anyhow::Result<PathBuf> {
        let pem = self.get(&format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))?;
        let path = self.dir.join("root.pem");
        std::fs::write(&path, pem)?;
        Ok(path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Stops it (the directory goes down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn get(&self, url: &str) -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "5", "--cacert"])
            .arg(self.directory_ca())
            .arg(url)
            .output()?;
        if !out.status.success() {
            bail!("{url}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
