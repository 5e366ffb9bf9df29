//! `xpod keys create|list|revoke` (API keys) and `xpod tokens create|list|revoke` (join tokens
//! for edges): the cluster's credentials (admin key).

use clap::Subcommand;
use http::Method;

use super::remote::{client, print, Remote};
use crate::api_types::cluster::{CreateToken, CreatedToken, TokenList};
use crate::api_types::keys::{CreateKey, CreatedKey, KeyList};
use crate::client::Answer;

#[derive(Subcommand)]
pub(crate) enum KeysCmd {
    /// Create an API key; its secret is printed once.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// What the key may do (repeatable, at least one): admin, sandbox, sandbox:network,
        /// sandbox:read,
        /// pod:<podId> (read+write) or pod:<podId>:read.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Whose sandboxes, webhooks and quota the key uses (keys with the same owner share
        /// them). Default: the key is its own owner.
        #[arg(long)]
        owner: Option<String>,
        /// Expire after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a key by its id (the part after `xp_`).
    Revoke {
        key_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokensCmd {
    /// Create a join token (shown once). The node must have the cluster CA's ca.crt.
    Create {
        /// Lifetime in seconds (60..=2592000).
        #[arg(long, default_value_t = 86_400)]
        ttl_seconds: i64,
        /// Allow several edges to join with this token (default: single use).
        #[arg(long)]
        multi_use: bool,
        /// A note to recognise the token by.
        #[arg(long, default_value = "")]
        description: String,
        /// Sandbox slots the joining edge may offer the cluster (default: none).
        #[arg(long)]
        sandbox_slots: Option<u32>,
        /// A pod-id prefix the joining edge may claim for pods it creates (repeatable).
        #[arg(long = "pod-prefix")]
        pod_prefixes: Vec<String>,
        /// An account whose pods may be moved onto the joining edge (repeatable; `*`: any).
        #[arg(long = "accept-pods", value_name = "ACCOUNT")]
        accept_pods: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List join tokens (never their secrets).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a join token by its id.
    Revoke {
        token_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) async fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create {
            name,
            scopes,
            owner,
            expires_in_days,
            remote,
        } => {
            if scopes.is_empty() {
                anyhow::bail!(
                    "--scope is required (repeatable): one of {}",
                    crate::auth::SCOPES
                );
            }
            let body = CreateKey {
                name,
                scopes,
                expires_in_days,
                owner,
            };
            let a: Answer<CreatedKey> = client(&remote)?
                .send(Method::POST, "/api/v1/auth/api-keys", Some(&body))
                .await?;
            print(&remote, &a, |k| {
                println!(
                    "created key {} ({}, owner {}); the secret is shown once:",
                    k.record.key_id, k.record.name, k.record.owner
                );
                println!("{}", k.key);
            });
        }
        KeysCmd::List { remote } => {
            let a: Answer<KeyList> = client(&remote)?.get("/api/v1/auth/api-keys").await?;
            print(&remote, &a, |list| {
                println!("{:<14} {:<24} {:<30} STATE", "ID", "NAME", "SCOPES");
                for k in &list.keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<14} {:<24} {:<30} {state}",
                        k.key_id,
                        k.name,
                        k.scopes.join(",")
                    );
                }
            });
        }
        KeysCmd::Revoke { key_id, remote } => {
            if key_id.is_empty() || !key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                anyhow::bail!("key id `{key_id}`: expected the 12 hex digits after `xp_`");
            }
            client(&remote)?
                .call(
                    Method::DELETE,
                    &format!("/api/v1/auth/api-keys/{key_id}"),
                    None::<&()>,
                )
                .await?;
            if !remote.json {
                println!("revoked key {key_id}");
            }
        }
    }
    Ok(())
}

pub(crate) async fn tokens(cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create {
            ttl_seconds,
            multi_use,
            description,
            sandbox_slots,
            pod_prefixes,
            accept_pods,
            remote,
        } => {
            let body = CreateToken {
                description: Some(description),
                ttl_seconds: Some(ttl_seconds),
                single_use: Some(!multi_use),
                sandbox_slots,
                pod_prefixes,
                accept_pods,
            };
            let a: Answer<CreatedToken> = client(&remote)?
                .send(Method::POST, "/.cluster/tokens", Some(&body))
                .await?;
            print(&remote, &a, |t| {
                println!("created join token {} (shown once):", t.record.token_id);
                println!("{}", t.token);
            });
        }
        TokensCmd::List { remote } => {
            let a: Answer<TokenList> = client(&remote)?.get("/.cluster/tokens").await?;
            print(&remote, &a, |list| {
                println!(
                    "{:<14} {:<8} {:>5}  {:<10} DESCRIPTION",
                    "ID", "SINGLE", "USES", "STATE"
                );
                let now = xpod_storage::meta::now_millis();
                for t in &list.tokens {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at <= now {
                        "expired"
                    } else if t.single_use && t.used_at.is_some() {
                        "used"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<14} {:<8} {:>5}  {:<10} {}",
                        t.token_id, t.single_use, t.use_count, state, t.description
                    );
                }
            });
        }
        TokensCmd::Revoke { token_id, remote } => {
            if token_id.is_empty() || !token_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                anyhow::bail!("token id `{token_id}`: expected the 12 hex digits after `xpt_`");
            }
            client(&remote)?
                .call(
                    Method::DELETE,
                    &format!("/.cluster/tokens/{token_id}"),
                    None::<&()>,
                )
                .await?;
            if !remote.json {
                println!("revoked join token {token_id}");
            }
        }
    }
    Ok(())
}
