//! The cluster CA and node identity files in a data directory.
//!
//! `xpod ca init` writes `<data_dir>/ca.crt` and `<data_dir>/ca.key` (0600). Every center that
//! creates join tokens needs `ca.crt` (tokens carry its fingerprint so a joining edge can verify
//! the center); centers that sign edges' CSRs also need `ca.key`. `xpod ca issue` writes a node's
//! `node.crt`/`node.key` (+ `ca.crt`) into a directory of the operator's choice. Files holding
//! private keys are written with mode 0600, via a temp file and a rename, and never overwritten.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use xpod_tunnel::identity::{self, ClusterCa, NodeRole};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Creates the cluster CA in `dir`; refuses to replace an existing one.
pub fn init(dir: &Path, cluster_name: &str) -> anyhow::Result<ClusterCa> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert_path.exists() || key_path.exists() {
        bail!(
            "a cluster CA already exists in {} (refusing to replace it: every node certificate depends on it)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = ClusterCa::generate(cluster_name)?;
    let (cert_pem, key_pem) = ca.to_pem();
    write_new(&key_path, &key_pem, 0o600)?;
    write_new(&cert_path, &cert_pem, 0o644)?;
    Ok(ca)
}

/// Loads the CA (certificate and key) from `dir`.
pub fn load(dir: &Path) -> anyhow::Result<ClusterCa> {
    let cert = read(&dir.join(CA_CERT))?;
    let key = read(&dir.join(CA_KEY))?;
    Ok(ClusterCa::from_pem(&cert, &key)?)
}

/// The CA certificate's fingerprint, if `dir` has a `ca.crt`.
pub fn fingerprint(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join(CA_CERT);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(
        identity::fingerprint_of_pem(&read(&path)?)
            .with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// Issues a node certificate into `out` (`node.crt`, `node.key`, `ca.crt`).
pub fn issue(
    ca: &ClusterCa,
    node_id: &str,
    role: NodeRole,
    dns: &[String],
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let ips = dns
        .iter()
        .filter_map(|d| d.parse().ok())
        .collect::<Vec<_>>();
    let names = dns
        .iter()
        .filter(|d| d.parse::<std::net::IpAddr>().is_err())
        .cloned()
        .collect::<Vec<_>>();
    let node = ca.issue_node(node_id, role, &names, &ips, 365)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files = [
        ("node.key", &node.key_pem, 0o600),
        ("node.crt", &node.cert_pem, 0o644),
        (CA_CERT, &node.ca_pem, 0o644),
    ];
    let mut written = Vec::new();
    for (name, contents, mode) in files {
        let path = out.join(name);
        // Issuing into a center's own data dir finds the same ca.crt there already: keep it.
        if name == CA_CERT && std::fs::read_to_string(&path).is_ok_and(|c| &c == contents) {
            continue;
        }
        write_new(&path, contents, mode)?;
        written.push(path);
    }
    Ok(written)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a new file (never replacing one) with `mode`, through a temp file + fsync + rename.
pub(crate) fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.exists() {
        bail!("{} exists; refusing to overwrite it", path.display());
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_refuse_overwrite() {
        let dir = std::env::temp_dir().join(format!(
            "xpod-ca-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let ca = init(&dir, "test").unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        assert_eq!(fingerprint(&dir).unwrap(), Some(ca.fingerprint()));
        assert!(init(&dir, "test")
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        let out = dir.join("n1");
        issue(
            &loaded,
            "n1",
            NodeRole::Center,
            &["127.0.0.1".into(), "c1.example.com".into()],
            &out,
        )
        .unwrap();
        assert_eq!(mode(&out.join("node.key")), 0o600);
        let node = identity::NodeIdentity::from_pem(
            &std::fs::read_to_string(out.join("node.crt")).unwrap(),
            &std::fs::read_to_string(out.join("node.key")).unwrap(),
            &std::fs::read_to_string(out.join(CA_CERT)).unwrap(),
        )
        .unwrap();
        assert_eq!(node.identity().unwrap().node_id, "n1");
        assert!(
            issue(&loaded, "n1", NodeRole::Center, &[], &out).is_err(),
            "must not overwrite a node key"
        );
        assert_eq!(fingerprint(&dir.join("nothing")).unwrap(), None);
        std::fs::remove_dir_all(dir).ok();
    }
}
