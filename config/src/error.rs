//! The one error type of this crate. Every message is a single line that names the key (or
//! environment variable, or file) and says what was expected.

use std::path::PathBuf;

/// Why a configuration could not be loaded, validated or resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {io}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error (not a `source`: the message already includes it, and the CLI
        /// prints source chains, which would say it twice).
        io: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{origin}:{line}:{column}: TOML syntax error: {message}")]
    Syntax {
        /// File name (or other origin label).
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What the parser said, flattened to one line.
        message: String,
    },
    /// A key that xpod does not know.
    #[error("{location}: unknown key `{key}`; {expected}")]
    UnknownKey {
        /// `origin`, `origin:line:col`.
        location: String,
        /// Dotted key path, e.g. `http.bogus`.
        key: String,
        /// The keys allowed at that place, e.g. "expected one of `listen`, `base_url`".
        expected: String,
    },
    /// A known key with a value of the wrong type or form.
    #[error("{location}: `{key}`: {message}")]
    InvalidValue {
        /// `origin`, `origin:line:col`, or `config` for checks on an assembled [`crate::Config`].
        location: String,
        /// Dotted key path, e.g. `http.listen`.
        key: String,
        /// What was expected and what was found.
        message: String,
    },
    /// An environment variable with a bad value.
    #[error("{var}: {message}")]
    InvalidEnv {
        /// The variable, e.g. `XPOD_HTTP_LISTEN`.
        var: String,
        /// What was expected and what was found.
        message: String,
    },
    /// An `XPOD_*` variable that is neither a config key nor reserved for the CLI/tests.
    #[error("unknown environment variable {var}{hint}; config variables are XPOD_<SECTION>_<KEY>, e.g. XPOD_HTTP_LISTEN")]
    UnknownEnv {
        /// The variable.
        var: String,
        /// Empty, or " (did you mean XPOD_...?)".
        hint: String,
    },
    /// `<data_dir>/.node-id` exists but does not hold a valid id.
    #[error("node-id file {}: {message}; fix or delete it to generate a new id", path.display())]
    NodeIdFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `<data_dir>/.node-id` (or the data dir) could not be read or written.
    #[error("node-id file {}: {action}: {io}", path.display())]
    NodeIdIo {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "cannot write".
        action: &'static str,
        /// The underlying error (not a `source`: the message already includes it, and the CLI
        /// prints source chains, which would say it twice).
        io: std::io::Error,
    },
}

/// Collapses any line breaks a third-party message may contain, so every error stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
