//! The sample configurations shipped in `deploy/` must load: an operator copies them as they are.

use std::path::PathBuf;

#[test]
fn deploy_configs_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        xpod_config::Config::load(Some(&path), &[])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the lone and center configs in deploy/, checked {checked}"
    );
}
