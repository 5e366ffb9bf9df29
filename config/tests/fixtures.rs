//! Every file in `fixtures/valid` loads; every file in `fixtures/invalid` fails with the message
//! its first line (`# expect: ...`) promises, on one line.

mod common;

use std::path::{Path, PathBuf};

use xpod_config::Config;

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_load() {
    let mut files = toml_files("tests/fixtures/valid");
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/xpod.toml"));
    let mut checked = 0;
    for file in &files {
        let config = Config::load(Some(file), &[])
            .unwrap_or_else(|e| panic!("{} should load: {e}", file.display()));
        config.validate().unwrap();
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} valid fixtures were checked");
}

#[test]
fn invalid_fixtures_fail_with_the_expected_message() {
    let files = toml_files("tests/fixtures/invalid");
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# expect: <substring>`",
                    file.display()
                )
            })
            .trim_end();
        let err = match Config::load(Some(file), &[]) {
            Ok(config) => panic!(
                "{} should fail ({expect}) but loaded: {config:?}",
                file.display()
            ),
            Err(e) => e.to_string(),
        };
        common::assert_one_line(&err);
        assert!(
            err.contains(expect),
            "{}:\n  expected substring: {expect}\n  got: {err}",
            file.display()
        );
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.contains(&name),
            "{}: error should name the file: {err}",
            file.display()
        );
        assert!(
            !err.contains("hunter2"),
            "{}: error leaks a secret: {err}",
            file.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 12,
        "only {checked} invalid fixtures were checked"
    );
}

#[test]
fn example_documents_every_env_var() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/xpod.toml"))
            .unwrap();
    let mut n = 0;
    for (var, key) in xpod_config::env_vars() {
        assert!(
            example.contains(var),
            "examples/xpod.toml does not mention {var} ({key})"
        );
        n += 1;
    }
    assert_eq!(n, 50);
}

#[test]
fn example_values_are_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/xpod.toml");
    assert_eq!(Config::load(Some(&path), &[]).unwrap(), Config::default());
}

#[test]
fn a_fixture_loads_to_the_values_it_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/postgres-s3.toml");
    let c = Config::load(Some(&path), &[]).unwrap();
    assert_eq!(c.region, "gz");
    assert_eq!(c.database.pool_size, 1024);
    assert_eq!(
        c.database_url(),
        "postgresql://xpod:hunter2@db.internal:5432/xpod"
    );
    assert_eq!(c.objects_url(), "s3://xpod");
    assert_eq!(c.storage.secret_key.as_ref().unwrap().expose(), "hunter2");
    let rb: Vec<_> = c
        .storage
        .region_buckets
        .iter()
        .map(|r| (r.region.as_str(), r.bucket.as_str()))
        .collect();
    assert_eq!(rb, [("bj", "xpod-bj"), ("gz", "xpod-gz")]);

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/valid/region-buckets-string.toml");
    let s = Config::load(Some(&path), &[]).unwrap();
    assert_eq!(s.storage.region_buckets, c.storage.region_buckets);
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::load(Some(Path::new("/nonexistent/xpod.toml")), &[])
        .unwrap_err()
        .to_string();
    common::assert_one_line(&err);
    assert!(err.contains("/nonexistent/xpod.toml"), "{err}");
}
