//! Join tokens: what an operator hands to a new edge, and the hashed record a center keeps.
//!
//! A token is `xpt_<id>.<secret>.<CA fingerprint hex>`: a 12-hex id to look the record up, a
//! 64-hex (256-bit) secret that proves possession, and the SHA-256 of the cluster CA certificate
//! so the edge can authenticate the center before trusting it (like kubeadm's
//! discovery-token-ca-cert-hash). Only [`JoinToken::secret_hash`] is ever stored, compared in
//! constant time. [`TokenRecord`] is pure logic (expiry, single use); storing records is the
//! node's job.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Text prefix of every join token.
pub const TOKEN_PREFIX: &str = "xpt_";
const ID_HEX_LEN: usize = 12;
const SECRET_HEX_LEN: usize = 64;
const FINGERPRINT_HEX_LEN: usize = 64;

/// Why a join token was refused. Parse errors name the part that is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not start with `xpt_`.
    #[error("join token must start with \"xpt_\"")]
    Prefix,
    /// The id is missing or not 12 hex characters.
    #[error("join token id must be 12 hex characters")]
    Id,
    /// The secret is missing or not 64 hex characters.
    #[error("join token secret must be 64 hex characters")]
    Secret,
    /// The CA fingerprint is missing or not 64 hex characters.
    #[error("join token CA fingerprint must be 64 hex characters (SHA-256)")]
    Fingerprint,
    /// The token's id or secret does not match the stored record.
    #[error("join token is not valid")]
    Mismatch,
    /// The token has expired.
    #[error("join token has expired")]
    Expired,
    /// The token was single-use and has been used.
    #[error("join token has already been used")]
    AlreadyUsed,
}

/// A join token. `Debug` redacts the secret; [`JoinToken::to_text`] gives the full text once,
/// to show to the operator.
#[derive(Clone)]
pub struct JoinToken {
    /// 12 lowercase hex characters; names the stored [`TokenRecord`].
    pub id: String,
    /// 64 lowercase hex characters (256 random bits). Secret.
    pub secret: String,
    /// The cluster CA fingerprint, `sha256:<64 lowercase hex>` (as
    /// [`super::ClusterCa::fingerprint`] gives it and [`super::bootstrap_client_config`] takes it).
    pub ca_fingerprint: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl JoinToken {
    /// A new token with a random id and secret for the CA with `ca_fingerprint`
    /// (`sha256:<hex>` or bare hex).
    pub fn generate(ca_fingerprint: &str) -> Result<JoinToken, TokenError> {
        let fp = ca_fingerprint
            .strip_prefix("sha256:")
            .unwrap_or(ca_fingerprint);
        if !is_hex(fp, FINGERPRINT_HEX_LEN) {
            return Err(TokenError::Fingerprint);
        }
        let id: [u8; ID_HEX_LEN / 2] = rand::random();
        let secret: [u8; SECRET_HEX_LEN / 2] = rand::random();
        Ok(JoinToken {
            id: hex::encode(id),
            secret: hex::encode(secret),
            ca_fingerprint: format!("sha256:{}", fp.to_ascii_lowercase()),
        })
    }

    /// Parses `xpt_<id>.<secret>.<fingerprint hex>` (surrounding whitespace ignored, hex in
    /// either case, normalised to lowercase).
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let body = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Prefix)?;
        let mut parts = body.splitn(3, '.');
        let id = parts.next().unwrap_or("");
        if !is_hex(id, ID_HEX_LEN) {
            return Err(TokenError::Id);
        }
        let secret = parts.next().ok_or(TokenError::Secret)?;
        if !is_hex(secret, SECRET_HEX_LEN) {
            return Err(TokenError::Secret);
        }
        let fp = parts.next().ok_or(TokenError::Fingerprint)?;
        if !is_hex(fp, FINGERPRINT_HEX_LEN) {
            return Err(TokenError::Fingerprint);
        }
        Ok(JoinToken {
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: format!("sha256:{}", fp.to_ascii_lowercase()),
        })
    }

    /// The text form, `xpt_<id>.<secret>.<fingerprint hex>`. Contains the secret.
    pub fn to_text(&self) -> String {
        let fp = self
            .ca_fingerprint
            .strip_prefix("sha256:")
            .unwrap_or(&self.ca_fingerprint);
        format!("{TOKEN_PREFIX}{}.{}.{}", self.id, self.secret, fp)
    }

    /// SHA-256 (lowercase hex) of the secret's text: the only form of the secret that is stored.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// Whether this token's secret hashes to `stored_hash`, compared in constant time.
    pub fn verify_secret(&self, stored_hash: &str) -> bool {
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(stored_hash, &mut stored).is_err() {
            return false;
        }
        let ours = Sha256::digest(self.secret.as_bytes());
        bool::from(ours.as_slice().ct_eq(&stored))
    }
}

/// The stored form of a join token (no secret, only its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token id.
    pub id: String,
    /// [`JoinToken::secret_hash`].
    pub secret_hash: String,
    /// Unix milliseconds after which the token is refused.
    pub expires_at_ms: i64,
    /// Whether the token may be used only once.
    pub single_use: bool,
    /// When the token was last used (for single-use tokens: used at all).
    pub used_at_ms: Option<i64>,
    /// Unix milliseconds of creation.
    pub created_at_ms: i64,
}

impl TokenRecord {
    /// The record for `token`, created at `now_ms`, valid for `ttl_ms`.
    pub fn new(token: &JoinToken, now_ms: i64, ttl_ms: i64, single_use: bool) -> TokenRecord {
        TokenRecord {
            id: token.id.clone(),
            secret_hash: token.secret_hash(),
            expires_at_ms: now_ms.saturating_add(ttl_ms),
            single_use,
            used_at_ms: None,
            created_at_ms: now_ms,
        }
    }

    /// Whether the record still admits a join at `now_ms`: not expired
    /// ([`TokenError::Expired`]) and, if single-use, not used ([`TokenError::AlreadyUsed`]).
    pub fn check(&self, now_ms: i64) -> Result<(), TokenError> {
        if self.single_use && self.used_at_ms.is_some() {
            return Err(TokenError::AlreadyUsed);
        }
        if now_ms >= self.expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Checks a presented token against this record: same id, right secret (constant time),
    /// then [`TokenRecord::check`]. Does not mark the record used; see [`TokenRecord::mark_used`].
    pub fn verify(&self, token: &JoinToken, now_ms: i64) -> Result<(), TokenError> {
        let id_ok = bool::from(self.id.as_bytes().ct_eq(token.id.as_bytes()));
        let secret_ok = token.verify_secret(&self.secret_hash);
        if !(id_ok & secret_ok) {
            return Err(TokenError::Mismatch);
        }
        self.check(now_ms)
    }

    /// Records a use at `now_ms` (a single-use token is refused from then on).
    pub fn mark_used(&mut self, now_ms: i64) {
        self.used_at_ms = Some(now_ms);
    }
}
