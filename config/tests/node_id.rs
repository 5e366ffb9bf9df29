//! `node_id = "auto"`: generated once, persisted in `<data_dir>/.node-id`, reused.

mod common;

use common::{assert_one_line, env, TempDir};
use xpod_config::{validate_node_id, Config, ConfigError};

fn config_in(dir: &std::path::Path, node_id: &str) -> Config {
    let data_dir = dir.join("data").join("nested");
    Config::load(
        None,
        &env(&[
            ("XPOD_DATA_DIR", data_dir.to_str().unwrap()),
            ("XPOD_NODE_ID", node_id),
        ]),
    )
    .unwrap()
}

#[test]
fn auto_generates_once_and_persists() {
    let tmp = TempDir::new("gen");
    let mut c = config_in(tmp.path(), "auto");
    let id = c.resolve_node_id().unwrap();
    assert_eq!(c.node_id, id);
    assert!(validate_node_id(&id).is_ok(), "{id}");
    let hex = id.strip_prefix("node-").expect("node- prefix");
    assert_eq!(hex.len(), 12);
    assert!(
        hex.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')),
        "{id}"
    );

    let file = c.data_dir.join(".node-id");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), id);
    // No temp file left behind.
    let names: Vec<_> = std::fs::read_dir(&c.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(".node-id")]);

    // A second load of the same data_dir gets the same id; resolving twice is harmless.
    let mut again = config_in(tmp.path(), "auto");
    assert_eq!(again.resolve_node_id().unwrap(), id);
    assert_eq!(c.resolve_node_id().unwrap(), id);

    // Another data_dir gets another id.
    let other = TempDir::new("gen2");
    assert_ne!(
        config_in(other.path(), "auto").resolve_node_id().unwrap(),
        id
    );
}

#[test]
fn existing_file_is_used_with_whitespace_trimmed() {
    let tmp = TempDir::new("existing");
    let c = config_in(tmp.path(), "auto");
    std::fs::create_dir_all(&c.data_dir).unwrap();
    std::fs::write(c.data_dir.join(".node-id"), "seed-node-7\n").unwrap();
    let mut c = c;
    assert_eq!(c.resolve_node_id().unwrap(), "seed-node-7");
}

#[test]
fn invalid_file_content_is_an_error_naming_the_file() {
    let tmp = TempDir::new("invalid");
    let mut c = config_in(tmp.path(), "auto");
    std::fs::create_dir_all(&c.data_dir).unwrap();
    let file = c.data_dir.join(".node-id");
    for bad in ["", "Not_Valid\n", "-x"] {
        std::fs::write(&file, bad).unwrap();
        let e = c.resolve_node_id().unwrap_err();
        assert!(matches!(e, ConfigError::NodeIdFile { .. }), "{e:?}");
        let msg = e.to_string();
        assert_one_line(&msg);
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert_eq!(c.node_id, "auto");
        // The bad file is left for the operator to look at.
        assert_eq!(std::fs::read_to_string(&file).unwrap(), bad);
    }
}

#[test]
fn explicit_id_is_kept_and_no_file_is_written() {
    let tmp = TempDir::new("explicit");
    let mut c = config_in(tmp.path(), "center-1");
    assert_eq!(c.resolve_node_id().unwrap(), "center-1");
    assert_eq!(c.node_id, "center-1");
    assert!(!c.data_dir.exists());
}

#[test]
fn unwritable_data_dir_is_a_one_line_error() {
    let tmp = TempDir::new("unwritable");
    // data_dir's parent is a file, so the directory cannot be created.
    std::fs::write(tmp.path().join("data"), "not a dir").unwrap();
    let mut c = config_in(tmp.path(), "auto");
    let msg = c.resolve_node_id().unwrap_err().to_string();
    assert_one_line(&msg);
    assert!(msg.contains("node-id"), "{msg}");
}
