//! Zone transfers to secondaries (RFC 5936 AXFR; an IXFR is answered with the full zone, as
//! RFC 1995 §4 allows) and NOTIFY (RFC 1996) when the zone changes.
//!
//! A transfer needs all of: TCP, a peer IP among `dns.secondaries`, and a valid TSIG with the
//! configured key; anything else is REFUSED (and logged). The zone goes out as one message
//! (SOA, every record, SOA), signed over the request's MAC; a zone too large for one 64 KiB
//! message is SERVFAIL with a log line saying so. `_acme-challenge` TXT records are not
//! transferred (they live seconds). NOTIFY: every [`NOTIFY_CHECK`] each center compares the
//! zone's content with the last it announced and, when it changed, sends a TSIG-signed NOTIFY
//! to every secondary over UDP, which then asks for the SOA (a new serial: Unix seconds) and
//! transfers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use sha2::{Digest as _, Sha256};

use super::Dns;

/// How often a center looks for zone changes to announce.
pub const NOTIFY_CHECK: Duration = Duration::from_secs(2);

/// The answer to an AXFR/IXFR request (already TSIG-verified when `signed`).
pub async fn answer(dns: &Dns, req: &Message, peer: IpAddr, tcp: bool, signed: bool) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    if let Some(q) = req.queries.first() {
        resp.add_query(q.clone());
    }
    let refuse = |mut resp: Message, why: &str| {
        tracing::warn!(%peer, why, "zone transfer refused");
        resp.metadata.response_code = ResponseCode::Refused;
        resp
    };
    if !tcp {
        return refuse(resp, "a transfer over UDP");
    }
    if !dns.secondaries.iter().any(|s| s.ip() == peer) {
        return refuse(resp, "the peer is not one of dns.secondaries");
    }
    if !signed {
        return refuse(resp, "the request is not TSIG-signed");
    }
    match req.queries.first() {
        Some(q) if q.name().to_lowercase() == dns.zone => {}
        _ => return refuse(resp, "not this zone's apex"),
    }
    let records = match dns.records().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "zone transfer: reading the zone failed");
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp;
        }
    };
    let soa = records[0].clone();
    resp.metadata.authoritative = true;
    let n = records.len() + 1;
    resp.add_answers(records);
    resp.add_answer(soa);
    match resp.to_vec() {
        Ok(b) if b.len() < 65_000 => {
            tracing::info!(%peer, records = n, bytes = b.len(), "zone transferred");
            resp
        }
        _ => {
            tracing::error!(%peer, records = n, "zone transfer: the zone does not fit one message (64 KiB); not transferred");
            let mut r = Message::response(req.metadata.id, req.metadata.op_code);
            r.metadata.response_code = ResponseCode::ServFail;
            r
        }
    }
}

/// A digest of the zone's content (not the SOA, whose serial changes every second).
async fn fingerprint(dns: &Dns) -> anyhow::Result<[u8; 32]> {
    let mut lines: Vec<String> = dns
        .records()
        .await?
        .iter()
        .filter(|r| r.record_type() != RecordType::SOA)
        .map(|r| r.to_string())
        .collect();
    lines.sort();
    Ok(Sha256::digest(lines.join("\n")).into())
}

/// Announces zone changes to `dns.secondaries` until `stop`.
pub async fn notify_loop(dns: std::sync::Arc<Dns>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if dns.secondaries.is_empty() {
        return;
    }
    let mut last: Option<[u8; 32]> = None;
    // Secondaries that failed the last NOTIFY (logged once per outage, not every round).
    let mut failing = std::collections::HashSet::new();
    loop {
        match fingerprint(&dns).await {
            Ok(now) if Some(now) != last => {
                let mut all_ok = true;
                for s in &dns.secondaries {
                    match notify(&dns, *s).await {
                        Ok(()) => {
                            failing.remove(s);
                        }
                        Err(e) => {
                            all_ok = false;
                            if failing.insert(*s) {
                                tracing::warn!(secondary = %s, error = %format!("{e:#}"), "NOTIFY failed; retrying every {NOTIFY_CHECK:?}");
                            }
                        }
                    }
                }
                if all_ok {
                    last = Some(now);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "NOTIFY: reading the zone failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(NOTIFY_CHECK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One NOTIFY to `to`, TSIG-signed; waits for the acknowledgement.
async fn notify(dns: &Dns, to: SocketAddr) -> anyhow::Result<()> {
    let signer = dns
        .tsig
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no TSIG key"))?;
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Notify);
    msg.metadata.authoritative = true;
    let mut q = Query::query(dns.zone.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    let id = msg.metadata.id;
    let (bytes, _) = super::tsig::sign_request(signer, msg)?;
    let sock =
        tokio::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
    sock.connect(to).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("no acknowledgement within 2 s"))??;
    let ack = Message::from_vec(&buf[..n])?;
    if ack.metadata.id != id || ack.metadata.response_code != ResponseCode::NoError {
        anyhow::bail!("answered {:?}", ack.metadata.response_code);
    }
    tracing::info!(secondary = %to, "NOTIFY acknowledged");
    Ok(())
}
