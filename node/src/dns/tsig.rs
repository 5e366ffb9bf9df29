//! TSIG (RFC 8945, HMAC-SHA256) for zone transfers and dynamic updates, on hickory-proto's
//! implementation: the key from `dns.tsig_key_name` / `dns.tsig_secret`; requests verified
//! (MAC in constant time, time within the fudge); responses signed over the request's MAC.

use anyhow::{anyhow, Context as _};
use base64::Engine as _;
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigResponseContext, TSigner};

/// Allowed clock difference, seconds (RFC 8945 recommends 300).
const FUDGE: u16 = 300;

/// The configured key, if any.
pub fn signer(config: &xpod_config::DnsConfig) -> anyhow::Result<Option<TSigner>> {
    let (Some(name), Some(secret)) = (&config.tsig_key_name, &config.tsig_secret) else {
        return Ok(None);
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.expose().trim())
        .context("dns.tsig_secret is not base64")?;
    let name = Name::from_ascii(name).with_context(|| format!("dns.tsig_key_name {name:?}"))?;
    TSigner::new(key, TsigAlgorithm::HmacSha256, name, FUDGE)
        .map(Some)
        .map_err(|e| anyhow!("the TSIG key: {e}"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A verified request: what signing the response needs.
pub struct Verified {
    request_mac: Vec<u8>,
}

/// Checks the TSIG of a request (`bytes` as received): `Err` says why it is not acceptable
/// (unsigned, another key, bad MAC, outside the time window).
pub fn verify_request(signer: &TSigner, req: &Message, bytes: &[u8]) -> Result<Verified, String> {
    let Some(sig) = req.signature() else {
        return Err("not TSIG-signed".into());
    };
    if sig.name != *signer.signer_name() {
        return Err(format!("signed with an unknown key {}", sig.name));
    }
    let (mac, _time, window) = signer
        .verify_message_byte(bytes, None, true)
        .map_err(|e| format!("bad TSIG: {e}"))?;
    if !window.contains(&now()) {
        return Err(
            "TSIG time outside the allowed window (clocks differ by more than 5 min)".into(),
        );
    }
    Ok(Verified { request_mac: mac })
}

/// Signs `resp`, the answer to a request verified as `v`; the signed bytes.
pub fn sign_response(signer: &TSigner, v: &Verified, mut resp: Message) -> anyhow::Result<Vec<u8>> {
    let unsigned = resp.to_vec()?;
    let ctx = TSigResponseContext::new(
        resp.metadata.id,
        now(),
        signer.clone(),
        v.request_mac.clone(),
        None,
    );
    let sig = ctx.sign(&unsigned).map_err(|e| anyhow!("signing: {e}"))?;
    resp.set_signature(sig);
    Ok(resp.to_vec()?)
}

/// Signs a request (an UPDATE or a NOTIFY) we send; the bytes and a verifier for the answer.
pub fn sign_request(
    signer: &TSigner,
    mut req: Message,
) -> anyhow::Result<(Vec<u8>, Option<hickory_proto::rr::TSigVerifier>)> {
    let verifier = req
        .finalize(signer, now())
        .map_err(|e| anyhow!("signing: {e}"))?;
    Ok((req.to_vec()?, verifier))
}
