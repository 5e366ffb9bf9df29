//! An edge's certificate in its data dir (`<data_dir>/acme/`): `key.pem` (0600; the key never
//! leaves the edge), `cert.json` (names, chain, validity), `account.json` (0600, the ACME
//! account). Each file is written to a temp file, synced and renamed, so a crash leaves the
//! old file or the new one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xpod_storage::meta::Millis;

/// The directory under the data dir.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

/// `cert.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeCert {
    pub names: Vec<String>,
    pub cert_pem: String,
    pub not_before: Millis,
    pub not_after: Millis,
    pub issued_at: Millis,
}

/// Writes `bytes` to `path` (mode 0600) atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().context("a file path has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The edge's stored certificate and key, if both exist.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<(EdgeCert, String)>> {
    let d = dir(data_dir);
    let cert = match std::fs::read(d.join("cert.json")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", d.join("cert.json").display()))
        }
    };
    let cert: EdgeCert = serde_json::from_slice(&cert).with_context(|| {
        format!(
            "{} is not a certificate record",
            d.join("cert.json").display()
        )
    })?;
    let key = std::fs::read_to_string(d.join("key.pem"))
        .with_context(|| format!("reading {}", d.join("key.pem").display()))?;
    Ok(Some((cert, key)))
}

/// Stores a new certificate: the key first, then the record that names it.
pub fn store(data_dir: &Path, cert: &EdgeCert, key_pem: &str) -> anyhow::Result<()> {
    let d = dir(data_dir);
    write_private(&d.join("key.pem"), key_pem.as_bytes())?;
    write_private(&d.join("cert.json"), &serde_json::to_vec_pretty(cert)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_and_modes() {
        let d = std::env::temp_dir().join(format!("xpod-files-{}", rand::random::<u64>()));
        assert!(load(&d).unwrap().is_none());
        let c = EdgeCert {
            names: vec!["e1.edges.test".into()],
            cert_pem: "PEM".into(),
            not_before: 1,
            not_after: 2,
            issued_at: 3,
        };
        store(&d, &c, "KEY").unwrap();
        let (back, key) = load(&d).unwrap().unwrap();
        assert_eq!(
            (back.names, back.issued_at, key.as_str()),
            (c.names, 3, "KEY")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir(&d).join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
