//! RFC 2136 mode (`dns.update_server`): for a zone hosted on another server, the records this
//! cluster would serve — centers, pods, edges (with their wildcards), `_acme-challenge` TXT —
//! are pushed there as TSIG-signed dynamic updates. The primary keeps its own SOA and NS.
//!
//! One center pushes at a time (lease `dns:update`, renewed every round). Every [`EVERY`] it
//! computes the record sets, compares them with what it last pushed, and sends one UPDATE (over
//! TCP) that replaces each changed set (delete the RRset, add its records) and deletes the sets
//! that are gone; the primary applies an UPDATE atomically. A center that just took the lease
//! (or whose last update failed) pushes every set. A name that disappeared while no center held
//! the lease stays on the primary until it reappears and disappears again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage as _};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xpod_storage::meta::now_millis;

use super::Dns;
use crate::app::App;

/// How often the record sets are compared and pushed.
pub const EVERY: Duration = Duration::from_secs(2);
const LEASE: &str = "dns:update";
const LEASE_MS: i64 = 30_000;

type Sets = BTreeMap<(String, RecordType), Vec<Record>>;

/// The record sets the primary should hold.
async fn desired(dns: &Dns) -> anyhow::Result<Sets> {
    let mut sets = Sets::new();
    for r in dns.records().await? {
        let t = r.record_type();
        if t == RecordType::SOA || (t == RecordType::NS && r.name == dns.zone) {
            continue;
        }
        sets.entry((r.name.to_ascii(), t)).or_default().push(r);
    }
    for (name, value) in dns.meta.list_all_txt().await? {
        let owner = super::name(&name)?;
        if !dns.zone.zone_of(&owner) {
            continue;
        }
        let rec = Record::from_rdata(owner.clone(), 0, RData::TXT(TXT::new(vec![value])));
        sets.entry((owner.to_ascii(), RecordType::TXT))
            .or_default()
            .push(rec);
    }
    for v in sets.values_mut() {
        v.sort_by_key(|r| r.to_string());
    }
    Ok(sets)
}

/// Pushes changes to `dns.update_server` until `stop` (see the module doc).
pub async fn push_loop(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(server) = app.config.dns.update_server else {
        return;
    };
    let dns = match Dns::new(&app.config, app.meta.clone(), app.owners.clone()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "RFC 2136 mode off");
            return;
        }
    };
    tracing::info!(%server, zone = %dns.zone, "RFC 2136: pushing the zone's records");
    let mut pushed: Option<Sets> = None;
    loop {
        let now = now_millis();
        match app
            .meta
            .try_lease(LEASE, &app.node_id, now, now + LEASE_MS)
            .await
        {
            Ok(true) => match round(&dns, server, pushed.as_ref()).await {
                Ok(sets) => pushed = Some(sets),
                Err(e) => {
                    tracing::warn!(%server, error = %format!("{e:#}"), "RFC 2136 update failed; retrying with every record set");
                    pushed = None;
                }
            },
            Ok(false) => pushed = None, // another center pushes
            Err(e) => tracing::warn!(error = %e, "RFC 2136: the lease is unavailable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = app.meta.release_lease(LEASE, &app.node_id).await;
}

/// One comparison and, if anything changed, one UPDATE. The sets now on the primary.
async fn round(dns: &Dns, server: SocketAddr, pushed: Option<&Sets>) -> anyhow::Result<Sets> {
    let want = desired(dns).await?;
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    let mut zone = Query::query(dns.zone.clone(), RecordType::SOA);
    zone.set_query_class(DNSClass::IN);
    msg.add_zone(zone);
    let mut changes = 0;
    let delete = |name: &str, t: RecordType| -> anyhow::Result<Record> {
        let mut r = Record::update0(Name::from_ascii(name)?, 0, t);
        r.dns_class = DNSClass::ANY;
        Ok(r)
    };
    for (key, records) in &want {
        if pushed.and_then(|p| p.get(key)) == Some(records) {
            continue;
        }
        msg.add_update(delete(&key.0, key.1)?);
        for r in records {
            msg.add_update(r.clone());
        }
        changes += 1;
    }
    if let Some(p) = pushed {
        for key in p.keys().filter(|k| !want.contains_key(*k)) {
            msg.add_update(delete(&key.0, key.1)?);
            changes += 1;
        }
    }
    if changes == 0 {
        return Ok(want);
    }
    send(dns, server, msg).await?;
    tracing::info!(%server, changed_sets = changes, "RFC 2136 update applied");
    Ok(want)
}

/// Sends a signed UPDATE over TCP and checks the signed answer.
async fn send(dns: &Dns, server: SocketAddr, msg: Message) -> anyhow::Result<()> {
    let signer = dns
        .tsig
        .as_ref()
        .context("no TSIG key (dns.tsig_key_name)")?;
    let id = msg.metadata.id;
    let (bytes, verifier) = super::tsig::sign_request(signer, msg)?;
    let len = u16::try_from(bytes.len()).context("the update does not fit one message")?;
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(server),
    )
    .await
    .context("connecting timed out")??;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await?;
    let mut n = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut n))
        .await
        .context("no answer within 10 s")??;
    let mut answer = vec![0u8; u16::from_be_bytes(n) as usize];
    s.read_exact(&mut answer).await?;
    let parsed = Message::from_vec(&answer)?;
    if parsed.metadata.id != id {
        bail!("an answer with another id");
    }
    if parsed.metadata.response_code != ResponseCode::NoError {
        bail!("the primary answered {:?}", parsed.metadata.response_code);
    }
    if let Some(mut v) = verifier {
        v.verify(&answer)
            .map_err(|e| anyhow::anyhow!("the answer's TSIG does not verify: {e}"))?;
    }
    Ok(())
}
