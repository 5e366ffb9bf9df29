//! One ACME order by DNS-01 (RFC 8555 §8.4): publish each authorization's TXT record in the
//! cluster's zone — a center writes `dns_txt` itself, an edge asks a center over its tunnel's
//! control stream (`SetAcmeTxt`) — wait until the zone answers it, tell the CA, wait for the
//! order to be ready, send a CSR for a key generated here (an edge's key never leaves it),
//! download the chain. The TXT records are removed whatever the outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use tokio::sync::{mpsc, oneshot};
use xpod_storage::meta::{now_millis, MetaStore};
use xpod_tunnel::proto::CommandBody;

use super::seal::Sealer;

/// How long a challenge's TXT record may live if the cleanup never runs.
const TXT_LIFETIME_MS: i64 = 3_600_000;
/// How long to wait for the zone to serve a TXT record.
const DNS_WAIT: Duration = Duration::from_secs(30);
/// How long the CA may take to validate and to issue.
const ORDER_WAIT: Duration = Duration::from_secs(120);

/// A certificate and its key, fresh from the CA.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// A TXT change an edge's issuer hands to its tunnel loop, which sends it to a center and
/// answers with the center's reply.
pub struct TxtCommand {
    pub body: CommandBody,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// Where challenge records go.
pub enum Publisher {
    /// A center: the shared `dns_txt` table.
    Store(Arc<dyn MetaStore>),
    /// An edge: through a center, over the tunnel.
    Tunnel(mpsc::Sender<TxtCommand>),
}

/// Where the ACME account's credentials are kept.
pub enum Accounts {
    /// A center: sealed in the shared store, so all centers use one account.
    Shared {
        meta: Arc<dyn MetaStore>,
        sealer: Arc<Sealer>,
    },
    /// An edge: a 0600 file in its data dir.
    File(std::path::PathBuf),
}

/// How long a center may take to answer an edge's TXT command.
const TUNNEL_WAIT: Duration = Duration::from_secs(30);

/// What an order needs.
pub struct Issuer {
    pub publisher: Publisher,
    pub accounts: Accounts,
    /// The resolved directory URL.
    pub directory: String,
    /// Extra roots for the directory's HTTPS.
    pub directory_ca: Option<std::path::PathBuf>,
    pub contact: Vec<String>,
    /// This center's DNS server, asked whether a TXT record is served yet.
    pub dns: Option<SocketAddr>,
}

/// `letsencrypt` / `letsencrypt-staging` → their URLs; anything else as is.
pub fn directory_url(d: &str) -> String {
    match d {
        "letsencrypt" => instant_acme::LetsEncrypt::Production.url().to_string(),
        "letsencrypt-staging" => instant_acme::LetsEncrypt::Staging.url().to_string(),
        other => other.to_string(),
    }
}

impl Issuer {
    fn builder(&self) -> anyhow::Result<instant_acme::AccountBuilder> {
        match &self.directory_ca {
            Some(ca) => Account::builder_with_root(ca)
                .with_context(|| format!("loading acme.directory_ca {}", ca.display())),
            None => Account::builder().context("the ACME HTTP client"),
        }
    }

    async fn load_account(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match &self.accounts {
            Accounts::Shared { meta, sealer } => {
                let setting = format!("acme-account:{}", self.directory);
                match meta.get_setting(&setting).await? {
                    Some(sealed) => Ok(Some(sealer.open(&setting, &sealed)?)),
                    None => Ok(None),
                }
            }
            Accounts::File(path) => match std::fs::read(path) {
                Ok(json) => {
                    let v: serde_json::Value = serde_json::from_slice(&json)
                        .with_context(|| format!("{}", path.display()))?;
                    // One file per directory: another directory means a new account.
                    if v["directory"] == self.directory.as_str() {
                        Ok(Some(serde_json::to_vec(&v["credentials"])?))
                    } else {
                        Ok(None)
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow!("reading {}: {e}", path.display())),
            },
        }
    }

    async fn save_account(&self, creds: &[u8]) -> anyhow::Result<()> {
        match &self.accounts {
            Accounts::Shared { meta, sealer } => {
                let setting = format!("acme-account:{}", self.directory);
                meta.put_setting(&setting, &sealer.seal(&setting, creds)?)
                    .await?;
            }
            Accounts::File(path) => {
                let creds: serde_json::Value = serde_json::from_slice(creds)?;
                let doc = serde_json::json!({"directory": self.directory, "credentials": creds});
                super::files::write_private(path, doc.to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    /// The ACME account for this directory: loaded (a center's from the shared store, sealed;
    /// an edge's from its data dir), or created and kept. A center calls this under the
    /// issuing lease, so centers share one account.
    async fn account(&self) -> anyhow::Result<Account> {
        if let Some(json) = self.load_account().await? {
            let creds: AccountCredentials =
                serde_json::from_slice(&json).context("the stored ACME account")?;
            return self
                .builder()?
                .from_credentials(creds)
                .await
                .context("restoring the ACME account");
        }
        let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
        let (account, creds) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await
            .with_context(|| format!("creating an ACME account at {}", self.directory))?;
        self.save_account(&serde_json::to_vec(&creds)?).await?;
        tracing::info!(directory = %self.directory, account = %account.id(), "ACME account created");
        Ok(account)
    }

    /// Orders a certificate for `names` (a key generated here). The TXT records published
    /// for it are removed before this returns.
    pub async fn obtain(&self, names: &[String]) -> anyhow::Result<Issued> {
        let account = self.account().await?;
        let mut published = Vec::new();
        let result = self.order(&account, names, &mut published).await;
        for (name, value) in published {
            if let Err(e) = self.unpublish(&name, &value).await {
                tracing::warn!(%name, error = %e, "could not remove a challenge TXT record (it expires in an hour)");
            }
        }
        result
    }

    async fn order(
        &self,
        account: &Account,
        names: &[String],
        published: &mut Vec<(String, String)>,
    ) -> anyhow::Result<Issued> {
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .context("creating the order")?;
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.context("reading an authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("authorization in state {other:?}"),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| anyhow!("the CA offers no dns-01 challenge"))?;
            let base = match challenge.identifier().identifier {
                Identifier::Dns(d) => d.clone(),
                other => bail!("not a DNS identifier: {other:?}"),
            };
            let name = format!("_acme-challenge.{}", base.to_ascii_lowercase());
            let value = challenge.key_authorization().dns_value();
            self.publish(&name, &value)
                .await
                .with_context(|| format!("publishing the challenge TXT record {name}"))?;
            published.push((name.clone(), value.clone()));
            self.wait_served(&name, &value).await?;
            challenge
                .set_ready()
                .await
                .context("telling the CA the challenge is ready")?;
            tracing::info!(%name, "dns-01 challenge published and ready");
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(ORDER_WAIT);
        let status = order
            .poll_ready(&retry)
            .await
            .context("waiting for validation")?;
        if status != OrderStatus::Ready {
            bail!(
                "the order is {status:?} after validation: {}",
                problems(&mut order).await
            );
        }
        let key = rcgen::KeyPair::generate().context("generating the certificate key")?;
        let params =
            rcgen::CertificateParams::new(names.to_vec()).context("the certificate's names")?;
        let csr = params.serialize_request(&key).context("the CSR")?;
        order
            .finalize_csr(csr.der())
            .await
            .context("finalizing the order")?;
        let chain_pem = order
            .poll_certificate(&retry)
            .await
            .context("downloading the certificate")?;
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    async fn publish(&self, name: &str, value: &str) -> anyhow::Result<()> {
        match &self.publisher {
            Publisher::Store(meta) => Ok(meta
                .put_txt(name, value, now_millis() + TXT_LIFETIME_MS)
                .await?),
            Publisher::Tunnel(tx) => {
                tunnel_command(
                    tx,
                    CommandBody::SetAcmeTxt {
                        name: name.into(),
                        value: value.into(),
                    },
                )
                .await
            }
        }
    }

    async fn unpublish(&self, name: &str, value: &str) -> anyhow::Result<()> {
        match &self.publisher {
            Publisher::Store(meta) => {
                meta.delete_txt(name, value).await?;
                Ok(())
            }
            Publisher::Tunnel(tx) => {
                tunnel_command(tx, CommandBody::ClearAcmeTxt { name: name.into() }).await
            }
        }
    }

    /// Waits until this center's DNS answers `value` at `name` (every center reads the same
    /// table, so this one serving it means all do).
    async fn wait_served(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let Some(server) = self.dns else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + DNS_WAIT;
        loop {
            let last = match crate::dns::query_txt(server, name).await {
                Ok(values) if values.iter().any(|v| v == value) => return Ok(()),
                Ok(values) => format!("served {values:?}"),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("the zone does not serve TXT {name} after {DNS_WAIT:?} ({last})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sends `body` through the edge's tunnel loop and waits for the center's answer.
async fn tunnel_command(tx: &mpsc::Sender<TxtCommand>, body: CommandBody) -> anyhow::Result<()> {
    let (reply, answer) = oneshot::channel();
    tx.send(TxtCommand { body, reply })
        .await
        .map_err(|_| anyhow!("the tunnel loop has stopped"))?;
    match tokio::time::timeout(TUNNEL_WAIT, answer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => bail!("the center refused: {why}"),
        Ok(Err(_)) => bail!("no center connection answered"),
        Err(_) => bail!("no answer from a center within {TUNNEL_WAIT:?}"),
    }
}

/// The CA's reasons, for an order that failed validation.
async fn problems(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(a)) = authzs.next().await {
        for c in &a.challenges {
            if let Some(e) = &c.error {
                out.push(format!("{}: {e}", a.identifier()));
            }
        }
    }
    if out.is_empty() {
        "no reason given".into()
    } else {
        out.join("; ")
    }
}
