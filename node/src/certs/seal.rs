//! Sealing private keys for the metadata store: AES-256-GCM under a key derived from
//! `acme.key_secret` (the same on every center), with the record's id as associated data so a
//! sealed key cannot be moved to another record. Format: `v1.<hex nonce>.<hex ciphertext+tag>`.

use anyhow::{anyhow, bail};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};

/// Seals and opens with one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// The key is SHA-256 over a domain label and the secret.
    pub fn new(secret: &str) -> Sealer {
        let mut h = Sha256::new();
        h.update(b"xpod seal v1\0");
        h.update(secret.as_bytes());
        let key = UnboundKey::new(&AES_256_GCM, &h.finalize()).expect("a 32-byte AES-256 key");
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// Seals `plain` for the record `id`.
    pub fn seal(&self, id: &str, plain: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| anyhow!("no randomness for a nonce"))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow!("sealing failed"))?;
        Ok(format!("v1.{}.{}", hex::encode(nonce), hex::encode(buf)))
    }

    /// Opens what [`Sealer::seal`] sealed for `id`. Fails on another secret, another id, or
    /// any change to the text.
    pub fn open(&self, id: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(nonce), Some(body), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("sealed value for {id}: not in the v1.<nonce>.<data> form");
        };
        let nonce: [u8; NONCE_LEN] = hex::decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| anyhow!("sealed value for {id}: bad nonce"))?;
        let mut buf = hex::decode(body).map_err(|_| anyhow!("sealed value for {id}: bad hex"))?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| {
                anyhow!("sealed value for {id} does not open: acme.key_secret differs from the one that sealed it, or the record was altered")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_tamper_fails() {
        let s = Sealer::new("0123456789abcdef0123456789abcdef");
        let sealed = s.seal("center", b"private key").unwrap();
        assert_eq!(s.open("center", &sealed).unwrap(), b"private key");
        assert_ne!(
            sealed,
            s.seal("center", b"private key").unwrap(),
            "fresh nonce"
        );
        assert!(s.open("edge:n1", &sealed).is_err(), "bound to its id");
        let other = Sealer::new("another secret of at least 32 chars!!");
        assert!(other.open("center", &sealed).is_err(), "another secret");
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        assert!(s
            .open("center", &String::from_utf8(bytes).unwrap())
            .is_err());
        for bad in ["", "v1", "v2.00.00", "v1.zz.00", "v1.00.00.00"] {
            assert!(s.open("center", bad).is_err(), "{bad:?}");
        }
    }
}
