//! Automatic HTTPS for centers (`[acme]`; ARCHITECTURE §9).
//!
//! Every center runs [`run`]: it looks at the shared certificate record `center` in the
//! metadata store every few seconds and serves the newest one it finds (its key unsealed with
//! `acme.key_secret`), so a certificate obtained by one center reaches the others within
//! [`CHECK`]. When the record is missing, names other names than configured, is past two
//! thirds of its lifetime, or an operator asked for a renewal (`xpod certs renew`), the center
//! that takes the lease `acme:center` orders a new one ([`issuer`]) while the others keep
//! serving what they have and wait for the result; the lease expires by itself if its holder
//! dies mid-order. A failed order is retried with exponential backoff ([`BACKOFF_MIN`] doubling
//! to [`BACKOFF_MAX`]) and the old certificate stays in service. Until any certificate exists a
//! center serves a self-signed one for the same names. [`resolver`] picks by SNI; [`seal`]
//! seals private keys for the store; [`tls`] is the state the listener, the API and the manager
//! share; [`files`] keeps an edge's certificate in its data dir.

pub mod files;
pub mod issuer;
pub mod resolver;
pub mod seal;
pub mod tls;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use xpod_storage::meta::{now_millis, CertRecord, Millis};

use crate::app::App;
use resolver::{Served, Source};
pub use tls::{Status, Tls};

/// The id of the centers' shared certificate record.
pub const CENTER: &str = "center";
/// The lease that lets one center order at a time.
const LEASE: &str = "acme:center";
/// How long the lease lasts (an order takes seconds; a dead holder frees it after this).
const LEASE_MS: Millis = 10 * 60 * 1000;
/// The setting an operator's renewal request writes (Unix ms of the request).
pub const RENEW_SETTING: &str = "acme-renew:center";
/// How often a center looks for a newer certificate in the store.
pub const CHECK: Duration = Duration::from_secs(3);
/// First retry after a failed order, doubled per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The names of the centers' certificate: `acme.names`, else `dns.zone`,
/// `*.<http.pods_domain>` and `*.<sandbox.domain>`.
pub fn names(config: &xpod_config::Config) -> Vec<String> {
    if !config.acme.names.is_empty() {
        return config
            .acme
            .names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
    }
    let mut out = Vec::new();
    if let Some(z) = &config.dns.zone {
        out.push(z.to_ascii_lowercase());
    }
    if let Some(p) = &config.http.pods_domain {
        out.push(format!("*.{}", p.to_ascii_lowercase()));
    }
    if let Some(d) = &config.sandbox.domain {
        out.push(format!("*.{}", d.to_ascii_lowercase()));
    }
    out.dedup();
    out
}

/// When a certificate is due for renewal: two thirds into its lifetime.
pub fn renew_at(rec: &CertRecord) -> Millis {
    rec.not_before + (rec.not_after - rec.not_before) * 2 / 3
}

/// The manager loop of a center with `[acme]` (see the module doc). Returns at `stop`.
pub async fn run(app: Arc<App>, stop: watch::Receiver<bool>) {
    let Some(dir) = app.config.acme.directory.clone() else {
        return;
    };
    if app.config.role != xpod_config::Role::Center {
        return; // an edge's manager runs with its tunnels (run_edge)
    }
    let names = names(&app.config);
    let secret = app
        .config
        .acme
        .key_secret
        .as_ref()
        .expect("validated: acme.key_secret is set with acme.directory on a center");
    let sealer = Arc::new(seal::Sealer::new(secret.expose()));
    let issuer = issuer::Issuer {
        publisher: issuer::Publisher::Store(app.meta.clone()),
        accounts: issuer::Accounts::Shared {
            meta: app.meta.clone(),
            sealer: sealer.clone(),
        },
        directory: issuer::directory_url(&dir),
        directory_ca: app.config.acme.directory_ca.clone(),
        contact: app.config.acme.contact.clone(),
        // Where the zone is served: this center, or the RFC 2136 primary.
        dns: app.config.dns.listen.or(app.config.dns.update_server),
    };
    start(&app, &names);
    tracing::info!(directory = %issuer.directory, ?names, "ACME: managing the centers' certificate");
    let loaded = Mutex::new(None);
    let (app_ref, issuer, sealer, names, loaded) = (&*app, &issuer, &*sealer, &names, &loaded);
    manage(app_ref, stop, || {
        tick(app_ref, issuer, sealer, names, loaded)
    })
    .await;
}

/// The names of an edge's certificate: `<node>.<edge_domain>` and `*.<node>.<edge_domain>`.
pub fn edge_names(config: &xpod_config::Config, node_id: &str) -> Vec<String> {
    let domain = config
        .tunnel
        .edge_domain
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    vec![
        format!("{node_id}.{domain}"),
        format!("*.{node_id}.{domain}"),
    ]
}

/// The manager loop of an edge with `[acme]`: its own certificate for its names, with a key
/// generated and kept on the edge (`<data_dir>/acme`), the challenges published through a
/// center (`tunnel`). Served by the edge when a center passes a TLS connection for one of its
/// `kind = "http"` services through (`crate::edges::services`). Returns at `stop`.
pub async fn run_edge(
    app: Arc<App>,
    tunnel: tokio::sync::mpsc::Sender<issuer::TxtCommand>,
    stop: watch::Receiver<bool>,
) {
    let Some(dir) = app.config.acme.directory.clone() else {
        return;
    };
    let names = edge_names(&app.config, &app.node_id);
    let issuer = issuer::Issuer {
        publisher: issuer::Publisher::Tunnel(tunnel),
        accounts: issuer::Accounts::File(files::dir(&app.config.data_dir).join("account.json")),
        directory: issuer::directory_url(&dir),
        directory_ca: app.config.acme.directory_ca.clone(),
        contact: app.config.acme.contact.clone(),
        dns: None,
    };
    start(&app, &names);
    tracing::info!(directory = %issuer.directory, ?names, "ACME: managing this edge's certificate");
    let loaded = Mutex::new(None);
    let (app_ref, issuer, names, loaded) = (&*app, &issuer, &names, &loaded);
    manage(app_ref, stop, || edge_tick(app_ref, issuer, names, loaded)).await;
}

/// Records the names and serves a self-signed certificate until a real one is loaded.
fn start(app: &App, names: &[String]) {
    app.tls.update(|s| s.names = names.to_vec());
    match resolver::self_signed(names) {
        Ok(s) => app.tls.certs.install(s),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "no self-signed certificate"),
    }
}

/// Runs `tick` until `stop`: after a success when it says, after a failure with exponential
/// backoff (the status shows the error and the next attempt), or at once when woken.
async fn manage<F, Fut>(app: &App, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        let wait = match tick().await {
            Ok(next) => {
                backoff = BACKOFF_MIN;
                app.tls.update(|s| {
                    s.failures = 0;
                    s.next_attempt_at = None;
                });
                next
            }
            Err(e) => {
                let e = format!("{e:#}");
                app.tls.failed.fetch_add(1, Ordering::Relaxed);
                let wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tracing::warn!(error = %e, retry_in = ?wait, "ACME: no new certificate; serving the current one");
                app.tls.update(|s| {
                    s.failures += 1;
                    s.last_error = Some(e);
                    s.next_attempt_at = Some(now_millis() + wait.as_millis() as Millis);
                });
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = app.tls.wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// An edge's look: serve the stored certificate; order a new one when due.
async fn edge_tick(
    app: &App,
    issuer: &issuer::Issuer,
    names: &[String],
    loaded: &Mutex<Option<Millis>>,
) -> anyhow::Result<Duration> {
    let data = &app.config.data_dir;
    let stored = match files::load(data) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the stored certificate is unusable; ordering a new one");
            None
        }
    };
    let mut usable = None;
    if let Some((cert, key)) = stored {
        if *loaded.lock().expect("loaded") == Some(cert.issued_at) {
            usable = Some(cert);
        } else {
            match resolver::certified_key(&cert.cert_pem, &key) {
                Ok((ck, not_before, not_after, serial)) => {
                    app.tls.certs.install(Served {
                        names: cert.names.clone(),
                        key: Arc::new(ck),
                        source: Source::Acme,
                        not_before,
                        not_after,
                        serial: serial.clone(),
                    });
                    *loaded.lock().expect("loaded") = Some(cert.issued_at);
                    tracing::info!(%serial, "serving this edge's ACME certificate");
                    usable = Some(cert);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the stored certificate is unusable; ordering a new one")
                }
            }
        }
    }
    let now = now_millis();
    if let Some(c) = &usable {
        let renew = c.not_before + (c.not_after - c.not_before) * 2 / 3;
        if c.names == names && now < renew {
            return Ok(Duration::from_millis((renew - now) as u64).min(CHECK));
        }
    }
    tracing::info!(?names, "ACME: ordering this edge's certificate");
    let issued = issuer.obtain(names).await?;
    let (_, not_before, not_after, _) = resolver::certified_key(&issued.chain_pem, &issued.key_pem)
        .context("the CA's certificate")?;
    let cert = files::EdgeCert {
        names: names.to_vec(),
        cert_pem: issued.chain_pem,
        not_before,
        not_after,
        issued_at: now_millis(),
    };
    files::store(data, &cert, &issued.key_pem)?;
    app.tls.issued.fetch_add(1, Ordering::Relaxed);
    app.tls.update(|s| s.last_error = None);
    // The next look loads and serves it.
    Ok(Duration::ZERO)
}

/// One look: load a newer stored certificate; order one if due and the lease is ours.
/// Returns when to look again.
async fn tick(
    app: &App,
    issuer: &issuer::Issuer,
    sealer: &seal::Sealer,
    names: &[String],
    loaded: &Mutex<Option<Millis>>,
) -> anyhow::Result<Duration> {
    let stored = app.meta.get_cert(CENTER).await?;
    if let Some(rec) = &stored {
        load(app, sealer, rec, loaded)?;
    }
    if !due(app, stored.as_ref(), names).await? {
        return Ok(CHECK);
    }
    let now = now_millis();
    if !app
        .meta
        .try_lease(LEASE, &app.node_id, now, now + LEASE_MS)
        .await?
    {
        // Another center is ordering: look again soon for its result.
        return Ok(CHECK);
    }
    let result = async {
        // The holder before us may have just stored a fresh one.
        let stored = app.meta.get_cert(CENTER).await?;
        if !due(app, stored.as_ref(), names).await? {
            if let Some(rec) = &stored {
                load(app, sealer, rec, loaded)?;
            }
            return Ok(());
        }
        tracing::info!(?names, reason = reason(stored.as_ref(), names), "ACME: ordering a certificate");
        let asked = renewal_asked(app).await?;
        let issued = issuer.obtain(names).await?;
        let (_, not_before, not_after, serial) =
            resolver::certified_key(&issued.chain_pem, &issued.key_pem)
                .context("the CA's certificate")?;
        // Never earlier than the request it answers, even if this center's clock is behind the
        // one that took the request (else the request would look unanswered and repeat).
        let issued_at = now_millis().max(asked.map_or(0, |t| t + 1));
        let rec = CertRecord {
            id: CENTER.into(),
            names: names.to_vec(),
            cert_pem: issued.chain_pem,
            key_sealed: sealer.seal(CENTER, issued.key_pem.as_bytes())?,
            not_before,
            not_after,
            issued_by: app.node_id.clone(),
            issued_at,
        };
        app.meta.put_cert(&rec).await?;
        app.tls.issued.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%serial, not_after = %httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(not_after as u64)), "ACME: certificate obtained and shared");
        load(app, sealer, &rec, loaded)?;
        app.tls.update(|s| s.last_error = None);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = app.meta.release_lease(LEASE, &app.node_id).await {
        tracing::warn!(error = %e, "ACME: could not release the lease (it expires by itself)");
    }
    result.map(|()| CHECK)
}

/// Whether the centers need a new certificate.
async fn due(app: &App, stored: Option<&CertRecord>, names: &[String]) -> anyhow::Result<bool> {
    let Some(rec) = stored else { return Ok(true) };
    if rec.names != names || now_millis() >= renew_at(rec) {
        return Ok(true);
    }
    Ok(renewal_asked(app).await?.is_some_and(|t| rec.issued_at < t))
}

/// When an operator last asked for a renewal (`xpod certs renew`), by the API center's clock.
async fn renewal_asked(app: &App) -> anyhow::Result<Option<Millis>> {
    Ok(app
        .meta
        .get_setting(RENEW_SETTING)
        .await?
        .and_then(|v| v.parse::<Millis>().ok()))
}

fn reason(stored: Option<&CertRecord>, names: &[String]) -> &'static str {
    match stored {
        None => "none yet",
        Some(r) if r.names != names => "the names changed",
        Some(r) if now_millis() >= renew_at(r) => "two thirds of its lifetime passed",
        Some(_) => "renewal requested",
    }
}

/// Serves `rec` unless it is what is served already.
fn load(
    app: &App,
    sealer: &seal::Sealer,
    rec: &CertRecord,
    loaded: &Mutex<Option<Millis>>,
) -> anyhow::Result<()> {
    let mut loaded = loaded.lock().expect("loaded");
    if *loaded == Some(rec.issued_at) {
        return Ok(());
    }
    let key = sealer.open(&rec.id, &rec.key_sealed)?;
    let key = String::from_utf8(key).context("the unsealed key is not PEM")?;
    let (ck, not_before, not_after, serial) = resolver::certified_key(&rec.cert_pem, &key)
        .with_context(|| format!("the stored certificate {}", rec.id))?;
    app.tls.certs.install(Served {
        names: rec.names.clone(),
        key: Arc::new(ck),
        source: Source::Acme,
        not_before,
        not_after,
        serial: serial.clone(),
    });
    *loaded = Some(rec.issued_at);
    tracing::info!(%serial, issued_by = %rec.issued_by, "serving the centers' ACME certificate");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_and_renewal_point() {
        let mut c = xpod_config::Config::default();
        c.dns.zone = Some("Example.Test".into());
        c.http.pods_domain = Some("pods.example.test".into());
        assert_eq!(names(&c), ["example.test", "*.pods.example.test"]);
        c.acme.names = vec!["a.test".into()];
        assert_eq!(names(&c), ["a.test"]);
        let rec = CertRecord {
            id: CENTER.into(),
            names: vec![],
            cert_pem: String::new(),
            key_sealed: String::new(),
            not_before: 0,
            not_after: 90,
            issued_by: "c1".into(),
            issued_at: 0,
        };
        assert_eq!(renew_at(&rec), 60);
    }
}
