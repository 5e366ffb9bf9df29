//! What every remote command shares: which node to talk to with which key (`--server`,
//! `--key`, `--json`), the API client for it, and printing an answer (JSON or a summary).

use crate::client::{Answer, ApiClient};

#[derive(clap::Args)]
pub(crate) struct Remote {
    /// The node to talk to.
    #[arg(
        long,
        env = "XPOD_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) server: String,
    /// Admin API key (xp_<id>_<secret>) [default: the contents of ./xpod-data/admin.key].
    #[arg(long, env = "XPOD_KEY", hide_env_values = true, global = true)]
    pub(crate) key: Option<String>,
    /// Print the server's JSON instead of a summary.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The API key: `--key`, else `./xpod-data/admin.key` when there is one.
pub(crate) fn key(remote: &Remote) -> Option<String> {
    match &remote.key {
        Some(k) => Some(k.trim().to_string()),
        None => std::fs::read_to_string("xpod-data/admin.key")
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

pub(crate) fn client(remote: &Remote) -> anyhow::Result<ApiClient> {
    ApiClient::new(&remote.server, key(remote))
}

/// Prints an answer: the server's JSON with `--json`, else `summary` of its typed body.
pub(crate) fn print<T>(remote: &Remote, answer: &Answer<T>, summary: impl FnOnce(&T)) {
    if remote.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer.json).unwrap_or_default()
        );
    } else {
        summary(&answer.body);
    }
}

/// An optional text for a table: `-` when absent.
pub(crate) fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}
