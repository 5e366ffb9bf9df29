//! Environment overrides: precedence, the seed's CSS_* aliases, strictness about XPOD_*.

mod common;

use std::net::SocketAddr;

use common::{assert_one_line, env};
use xpod_config::{ByteSize, Config, ConfigError, LogFormat, Role};

const FILE: &str = r#"
region = "bj"
[http]
listen = "127.0.0.1:9000"
[storage]
bucket = "from-file"
[cache]
max_size = "1GB"
"#;

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_str(FILE, "test.toml", &env(pairs))
}

fn err(pairs: &[(&str, &str)]) -> String {
    let e = load(pairs).unwrap_err().to_string();
    assert_one_line(&e);
    e
}

#[test]
fn file_values_apply_without_env() {
    let c = load(&[]).unwrap();
    assert_eq!(c.region, "bj");
    assert_eq!(
        c.http.listen,
        "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.cache.max_size, ByteSize(1_000_000_000));
}

#[test]
fn xpod_override_beats_file() {
    let c = load(&[
        ("XPOD_HTTP_LISTEN", "0.0.0.0:80"),
        ("XPOD_REGION", "gz"),
        ("XPOD_CACHE_MAX_SIZE", "2GiB"),
    ])
    .unwrap();
    assert_eq!(c.http.listen, "0.0.0.0:80".parse::<SocketAddr>().unwrap());
    assert_eq!(c.region, "gz");
    assert_eq!(c.cache.max_size, ByteSize(2 << 30));
}

#[test]
fn every_xpod_variable_sets_its_key() {
    let c = Config::load(
        None,
        &env(&[
            ("XPOD_NODE_ID", "n1"),
            ("XPOD_ROLE", "edge"),
            ("XPOD_REGION", "sh"),
            ("XPOD_DATA_DIR", "/srv/xpod"),
            ("XPOD_HTTP_LISTEN", "[::1]:8443"),
            ("XPOD_HTTP_BASE_URL", "https://x.example.com:8443"),
            ("XPOD_HTTP_PODS_DOMAIN", "x.example.com"),
            ("XPOD_DATABASE_URL", "postgres://u:pw@h/db"),
            ("XPOD_DATABASE_POOL_SIZE", "32"),
            ("XPOD_STORAGE_OBJECTS_URL", "s3://b"),
            ("XPOD_STORAGE_ENDPOINT", "http://minio:9000"),
            ("XPOD_STORAGE_BUCKET", "xpod"),
            ("XPOD_STORAGE_ACCESS_KEY", "ak"),
            ("XPOD_STORAGE_SECRET_KEY", "sk"),
            ("XPOD_STORAGE_REGION_BUCKETS", "bj:xpod-bj,gz:xpod-gz"),
            ("XPOD_CACHE_PATH", "/cache"),
            ("XPOD_CACHE_MAX_SIZE", "10GB"),
            ("XPOD_ROUTING_ENABLED", "no"),
            ("XPOD_LOG_LEVEL", "debug"),
            ("XPOD_LOG_FORMAT", "json"),
            ("XPOD_LOG_ACCESS", "true"),
            ("XPOD_TUNNEL_THREADS", "4"),
        ]),
    )
    .unwrap();
    assert_eq!(c.node_id, "n1");
    assert_eq!(c.role, Role::Edge);
    assert_eq!(c.region, "sh");
    assert_eq!(c.data_dir, std::path::PathBuf::from("/srv/xpod"));
    assert_eq!(c.http.listen, "[::1]:8443".parse::<SocketAddr>().unwrap());
    assert_eq!(
        c.http.base_url.as_deref(),
        Some("https://x.example.com:8443")
    );
    assert_eq!(c.http.pods_domain.as_deref(), Some("x.example.com"));
    assert_eq!(c.database_url(), "postgres://u:pw@h/db");
    assert_eq!(c.database.pool_size, 32);
    assert_eq!(c.objects_url(), "s3://b");
    assert_eq!(c.storage.endpoint.as_deref(), Some("http://minio:9000"));
    assert_eq!(c.storage.bucket.as_deref(), Some("xpod"));
    assert_eq!(c.storage.access_key.as_deref(), Some("ak"));
    assert_eq!(
        c.storage.secret_key.as_ref().map(|s| s.expose()),
        Some("sk")
    );
    assert_eq!(c.storage.region_buckets.len(), 2);
    assert_eq!(c.storage.region_buckets[1].bucket, "xpod-gz");
    assert_eq!(c.cache_dir(), std::path::PathBuf::from("/cache"));
    assert_eq!(c.cache.max_size, ByteSize(10_000_000_000));
    assert!(!c.routing.enabled);
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.access);
    assert_eq!(c.tunnel.threads, Some(4));
}

#[test]
fn tunnel_threads_out_of_range_is_refused() {
    let e = err(&[("XPOD_TUNNEL_THREADS", "0")]);
    assert!(
        e.contains("XPOD_TUNNEL_THREADS") && e.contains("1..=64"),
        "{e}"
    );
    let e = err(&[("XPOD_TUNNEL_THREADS", "many")]);
    assert!(
        e.contains("XPOD_TUNNEL_THREADS") && e.contains("many"),
        "{e}"
    );
}

#[test]
fn css_aliases_work() {
    let c = load(&[
        ("CSS_NODE_ID", "seed-node"),
        ("CSS_MINIO_ENDPOINT", "minio:9000"),
        ("CSS_MINIO_BUCKET_NAME", "seed-bucket"),
        ("CSS_MINIO_ACCESS_KEY", "ak"),
        ("CSS_MINIO_SECRET_KEY", "sk"),
        ("CSS_MINIO_REGION", "gz"),
        ("CSS_MINIO_REGION_BUCKETS", "bj:xpod-bj,gz:xpod-gz"),
        ("CSS_CACHE_PATH", "/tmp/cache"),
        ("CSS_CACHE_MAX_SIZE", "50GB"),
        ("CSS_DATABASE_URL", "postgres://seed@db/xpod"),
        ("CSS_POD_ROUTING_ENABLED", "false"),
    ])
    .unwrap();
    assert_eq!(c.node_id, "seed-node");
    assert_eq!(c.storage.endpoint.as_deref(), Some("minio:9000"));
    assert_eq!(c.storage.bucket.as_deref(), Some("seed-bucket"));
    assert_eq!(c.storage.access_key.as_deref(), Some("ak"));
    assert_eq!(c.storage.secret_key.as_ref().unwrap().expose(), "sk");
    assert_eq!(c.region, "gz");
    assert_eq!(c.storage.region_buckets[0].region, "bj");
    assert_eq!(
        c.cache.path.as_deref(),
        Some(std::path::Path::new("/tmp/cache"))
    );
    assert_eq!(c.cache.max_size, ByteSize(50_000_000_000));
    assert_eq!(c.database_url(), "postgres://seed@db/xpod");
    assert!(!c.routing.enabled);
}

#[test]
fn xpod_beats_css_in_either_order() {
    for pairs in [
        [
            ("CSS_MINIO_BUCKET_NAME", "css-bucket"),
            ("XPOD_STORAGE_BUCKET", "xpod-bucket"),
        ],
        [
            ("XPOD_STORAGE_BUCKET", "xpod-bucket"),
            ("CSS_MINIO_BUCKET_NAME", "css-bucket"),
        ],
    ] {
        assert_eq!(
            load(&pairs).unwrap().storage.bucket.as_deref(),
            Some("xpod-bucket")
        );
    }
    // An empty XPOD_ value counts as unset, so the alias still applies.
    let c = load(&[
        ("XPOD_STORAGE_BUCKET", ""),
        ("CSS_MINIO_BUCKET_NAME", "css-bucket"),
    ])
    .unwrap();
    assert_eq!(c.storage.bucket.as_deref(), Some("css-bucket"));
}

#[test]
fn unknown_xpod_variable_is_an_error_naming_it() {
    let e = err(&[("XPOD_FOO", "1")]);
    assert!(e.contains("XPOD_FOO"), "{e}");
    assert!(e.len() < 300, "message should not list everything: {e}");
    let e = err(&[("XPOD_HTTP_LISTN", "0.0.0.0:80")]);
    assert!(
        e.contains("unknown environment variable XPOD_HTTP_LISTN (did you mean XPOD_HTTP_LISTEN?)"),
        "{e}"
    );
}

#[test]
fn cli_and_test_variables_are_allowed() {
    let c = load(&[
        ("XPOD_TEST_X", "whatever"),
        ("XPOD_TEST_PG_URL", "postgres://x"),
        ("XPOD_SERVER", "https://c.example.com"),
        ("XPOD_CONFIG", "/etc/xpod.toml"),
        ("XPOD_KEY", "k"),
        ("XPOD_LOG", "debug"),
        ("CSS_SOMETHING_ELSE", "ignored"),
        ("PATH", "/usr/bin"),
    ])
    .unwrap();
    assert_eq!(c, load(&[]).unwrap());
}

#[test]
fn bad_env_values_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "XPOD_HTTP_LISTEN",
            "abc",
            "XPOD_HTTP_LISTEN: expected HOST:PORT",
        ),
        ("XPOD_HTTP_LISTEN", "abc", "got \"abc\""),
        (
            "XPOD_ROUTING_ENABLED",
            "maybe",
            "XPOD_ROUTING_ENABLED: expected true/false/1/0/yes/no, got \"maybe\"",
        ),
        (
            "CSS_POD_ROUTING_ENABLED",
            "on",
            "CSS_POD_ROUTING_ENABLED: expected true/false",
        ),
        (
            "XPOD_CACHE_MAX_SIZE",
            "lots",
            "XPOD_CACHE_MAX_SIZE: expected a size like 50GB",
        ),
        (
            "CSS_CACHE_MAX_SIZE",
            "50 XB",
            "CSS_CACHE_MAX_SIZE: expected a size",
        ),
        (
            "XPOD_DATABASE_POOL_SIZE",
            "0",
            "XPOD_DATABASE_POOL_SIZE: expected a pool size from 1 to 1024, got 0",
        ),
        (
            "XPOD_DATABASE_POOL_SIZE",
            "many",
            "XPOD_DATABASE_POOL_SIZE: expected an integer",
        ),
        (
            "XPOD_DATABASE_URL",
            "mysql://u:hunter2@h/db",
            "XPOD_DATABASE_URL: expected a URL starting with",
        ),
        (
            "XPOD_NODE_ID",
            "Bad_Id",
            "XPOD_NODE_ID: expected \"auto\" or a node id",
        ),
        ("CSS_NODE_ID", "-x", "CSS_NODE_ID: expected"),
        (
            "XPOD_ROLE",
            "hub",
            "XPOD_ROLE: expected \"center\" or \"edge\"",
        ),
        (
            "XPOD_LOG_FORMAT",
            "xml",
            "XPOD_LOG_FORMAT: expected \"text\" or \"json\"",
        ),
        (
            "XPOD_HTTP_BASE_URL",
            "http://x/",
            "XPOD_HTTP_BASE_URL: expected http://",
        ),
        (
            "XPOD_HTTP_PODS_DOMAIN",
            "a..b",
            "XPOD_HTTP_PODS_DOMAIN: expected a lowercase DNS name",
        ),
        (
            "XPOD_STORAGE_OBJECTS_URL",
            "ftp://x",
            "XPOD_STORAGE_OBJECTS_URL: expected a URL like",
        ),
        (
            "CSS_MINIO_REGION_BUCKETS",
            "bj=xpod-bj",
            "CSS_MINIO_REGION_BUCKETS: expected REGION:BUCKET",
        ),
        (
            "XPOD_STORAGE_REGION_BUCKETS",
            "bj:X",
            "XPOD_STORAGE_REGION_BUCKETS: expected a bucket name",
        ),
        (
            "CSS_MINIO_REGION",
            "North China",
            "CSS_MINIO_REGION: expected a region name",
        ),
    ];
    for (var, value, expect) in cases {
        let e = err(&[(var, value)]);
        assert!(
            e.contains(expect),
            "{var}={value}: expected {expect:?} in {e:?}"
        );
        assert!(!e.contains("hunter2"), "secret leaked: {e}");
    }
}

#[test]
fn cli_overrides_are_checked_by_validate() {
    let mut c = load(&[]).unwrap();
    c.database.pool_size = 0;
    let e = c.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "config: `database.pool_size`: expected a pool size from 1 to 1024, got 0"
    );
}

#[test]
fn defaults_and_derived_urls() {
    let c = Config::load(None, &[]).unwrap();
    assert_eq!(c.node_id, "auto");
    assert_eq!(c.role, Role::Center);
    assert_eq!(c.region, "local");
    assert_eq!(
        c.http.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.database.pool_size, 16);
    assert_eq!(c.cache.max_size, ByteSize(50_000_000_000));
    assert!(c.routing.enabled);
    assert_eq!(c.log.level, "info");

    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        c.database_url(),
        format!("sqlite://{}/xpod-data/meta.db", cwd.display())
    );
    assert_eq!(
        c.objects_url(),
        format!("file://{}/xpod-data/objects", cwd.display())
    );
    let c = Config::load(None, &env(&[("XPOD_DATA_DIR", "/var/lib/xpod")])).unwrap();
    assert_eq!(c.database_url(), "sqlite:///var/lib/xpod/meta.db");
    assert_eq!(c.objects_url(), "file:///var/lib/xpod/objects");
    assert_eq!(
        c.cache_dir(),
        std::path::PathBuf::from("/var/lib/xpod/cache")
    );
}

#[test]
fn debug_output_redacts_secrets() {
    let c = Config::from_toml_str(
        "[database]\nurl = \"postgres://xpod:hunter2@db/xpod\"\n[storage]\naccess_key = \"ak\"\nsecret_key = \"s3cr3t-value\"\n",
        "secrets.toml",
        &env(&[]),
    )
    .unwrap();
    for out in [format!("{c:?}"), format!("{c:#?}")] {
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("s3cr3t-value"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
    }
    let secret = c.storage.secret_key.as_ref().unwrap();
    assert_eq!(secret.to_string(), "<redacted>");
    assert_eq!(secret.expose(), "s3cr3t-value");
}
