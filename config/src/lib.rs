//! Typed configuration for an xpod node.
//!
//! This crate owns everything between "the operator wrote something" and "the node has a
//! [`Config`] it can trust": the TOML file, `XPOD_*` environment overrides, the old deployment's
//! `CSS_*` aliases, validation with one-line errors that name the key (or variable) and the
//! expected form, and the persisted node id (`node_id = "auto"`). It does no networking and
//! binds nothing; the node binary calls [`Config::load`], applies CLI flags, calls
//! [`Config::validate`] again and then [`Config::resolve_node_id`].
//!
//! Precedence, lowest first: defaults, the file, `CSS_*` aliases, `XPOD_*` variables (then the
//! CLI, applied by the node).
//!
//! # Layout
//!
//! - `lib.rs` — [`Config::load`] / [`Config::from_toml_str`]: parse, map serde errors, apply env.
//! - `model.rs` — the types, their defaults and deserializers; [`Secret`].
//! - `validate.rs` — value rules (ids, URLs, DNS names...) shared by file, env and CLI.
//! - `check.rs` — [`Config::validate`]: which rule applies to which key.
//! - `env.rs` — the static table of `XPOD_*` variables and `CSS_*` aliases.
//! - `size.rs` — [`ByteSize`] (`50GB`, `512MiB`).
//! - `node_id.rs` — [`Config::resolve_node_id`] and `<data_dir>/.node-id`.
//! - `error.rs` — [`ConfigError`].
//!
//! `config/examples/xpod.toml` documents every key; `tests/fixtures/{valid,invalid}` pin the rules.

#![warn(missing_docs)]

mod check;
mod env;
mod error;
mod model;
mod node_id;
mod size;
mod validate;

use std::path::{Path, PathBuf};

pub use env::env_vars;
pub use error::ConfigError;
pub use model::{
    AcmeConfig, CacheConfig, Config, DatabaseConfig, DnsConfig, FailoverConfig, HttpConfig,
    LogConfig, LogFormat, PresenceConfig, RegionBucket, Role, RoutingConfig, SandboxConfig, Secret,
    ServiceKind, SolidConfig, StorageConfig, TunnelConfig, TunnelForward, TunnelService,
    TunnelTransport,
};
pub use node_id::NODE_ID_FILE;
pub use size::ByteSize;
pub use validate::{validate_account, validate_node_id, validate_pod_id};

use error::one_line;

impl Config {
    /// Defaults, then the TOML file (if any), then environment overrides. Validates everything.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
                    path: path.to_path_buf(),
                    io,
                })?;
                Config::from_toml_str(&text, &path.display().to_string(), env)
            }
            None => {
                let mut config = Config::default();
                env::apply(&mut config, env)?;
                config.validate_at("defaults")?;
                Ok(config)
            }
        }
    }

    /// Like [`Config::load`] with the file's text in hand; `origin` labels errors (a path).
    pub fn from_toml_str(
        s: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(s).map_err(|e| {
            let (line, column) = line_col(s, e.span());
            ConfigError::Syntax {
                origin: origin.into(),
                line,
                column,
                message: one_line(e.message()),
            }
        })?;
        let mut config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| serde_error(s, origin, e))?;
        env::apply(&mut config, env)?;
        config.validate_at(origin)?;
        Ok(config)
    }

    /// Checks every key (and the rules between keys). [`Config::load`] calls it; call it again
    /// after applying CLI overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("config")
    }

    /// `database.url`, or `sqlite://<absolute data_dir>/meta.db` (embedded SQLite).
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_string(),
            None => format!(
                "sqlite://{}",
                absolute(&self.data_dir).join("meta.db").display()
            ),
        }
    }

    /// `storage.objects_url`, or `file://<absolute data_dir>/objects`.
    pub fn objects_url(&self) -> String {
        match &self.storage.objects_url {
            Some(url) => url.clone(),
            None => format!(
                "file://{}",
                absolute(&self.data_dir).join("objects").display()
            ),
        }
    }

    /// `cache.path`, or `<data_dir>/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }
}

/// Absolute without touching the filesystem (no symlink resolution); as-is if that fails.
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // `./xpod-data` becomes `/cwd/./xpod-data`; drop the `.` components.
    abs.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn serde_error(
    src: &str,
    origin: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let location = match inner.span() {
        Some(span) => {
            let (line, col) = line_col(src, Some(span));
            format!("{origin}:{line}:{col}")
        }
        None => origin.to_string(),
    };
    let message = friendlier(&one_line(inner.message()));
    // serde: "unknown field `bogus`, expected one of `a`, `b`"; the path already ends with the
    // unknown key (serde_path_to_error captures it before the field visitor rejects it).
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let key = if path == "." { field.to_string() } else { path };
            let expected = expected.trim_start_matches([',', ' ']).to_string();
            return ConfigError::UnknownKey {
                location,
                key,
                expected,
            };
        }
    }
    let key = if path == "." {
        "(top level)".to_string()
    } else {
        path
    };
    ConfigError::InvalidValue {
        location,
        key,
        message,
    }
}

/// serde's Rust-flavoured words for the two cases a TOML author can hit.
fn friendlier(message: &str) -> String {
    match message.split_once(", expected struct ") {
        Some((head, _)) => format!("{head}, expected a table"),
        None => message.replace("expected usize", "expected a non-negative integer"),
    }
}

/// 1-based line and column (in characters) of a byte span's start.
fn line_col(src: &str, span: Option<std::ops::Range<usize>>) -> (usize, usize) {
    let at = span.map_or(0, |s| s.start).min(src.len());
    let before = src.get(..at).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
