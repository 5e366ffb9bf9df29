//! One ACME order by DNS-01 (RFC 8555 §8.4): publish each authorization's TXT record in the
//! cluster's zone (`dns_txt`, served by every center), wait until this center's DNS server
//! answers it, tell the CA, wait for the order to be ready, send a CSR for a key generated
//! here, download the chain. The TXT records are removed whatever the outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use xpod_storage::meta::{now_millis, MetaStore};

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

/// What an order needs.
pub struct Issuer {
    pub meta: Arc<dyn MetaStore>,
    pub sealer: Arc<Sealer>,
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

    /// The cluster's ACME account for this directory: loaded from the store (sealed), or
    /// created and stored. Called under the issuing lease, so centers share one account.
    async fn account(&self) -> anyhow::Result<Account> {
        let setting = format!("acme-account:{}", self.directory);
        if let Some(sealed) = self.meta.get_setting(&setting).await? {
            let json = self.sealer.open(&setting, &sealed)?;
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
        let json = serde_json::to_vec(&creds)?;
        self.meta
            .put_setting(&setting, &self.sealer.seal(&setting, &json)?)
            .await?;
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
            if let Err(e) = self.meta.delete_txt(&name, &value).await {
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
            self.meta
                .put_txt(&name, &value, now_millis() + TXT_LIFETIME_MS)
                .await
                .context("publishing the challenge TXT record")?;
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
        let status = order.poll_ready(&retry).await.context("waiting for validation")?;
        if status != OrderStatus::Ready {
            bail!("the order is {status:?} after validation: {}", problems(&mut order).await);
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
