//! ring behind jsonwebtoken's `CryptoProvider`, so JOSE (JWS parsing, JWKs, thumbprints, claim
//! validation) comes from the maintained crate and every signature check from ring, the node's
//! one crypto provider. Verification only: this node never signs a JWT, and HMAC algorithms are
//! refused (a resource server has no shared secret with an issuer).
//!
//! [`install`] makes it jsonwebtoken's process-wide provider (idempotent).

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ec_or_ed = |alg: &'static dyn sig::VerificationAlgorithm| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(public) => UnparsedPublicKey::new(alg, public)
                .verify(msg, signature)
                .map_err(|_| signature::Error::new()),
            DecodingKeyKind::RsaModulusExponent { .. } => Err(signature::Error::new()),
        };
        let rsa = |params: &'static sig::RsaParameters| match self.key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => RsaPublicKeyComponents { n, e }
                .verify(params, msg, signature)
                .map_err(|_| signature::Error::new()),
            DecodingKeyKind::SecretOrDer(der) => UnparsedPublicKey::new(params, der)
                .verify(msg, signature)
                .map_err(|_| signature::Error::new()),
        };
        match self.alg {
            Algorithm::ES256 => ec_or_ed(&sig::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => ec_or_ed(&sig::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => ec_or_ed(&sig::ED25519),
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
            // HMAC, and whatever a later jsonwebtoken adds: refused.
            _ => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let family = match alg {
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => AlgorithmFamily::Rsa,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(Verifier {
        alg: *alg,
        key: key.clone(),
    }))
}

fn new_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::Signing("this node verifies JWTs; it never signs one".into()).into())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

fn no_private_keys(_: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Err(ErrorKind::InvalidKeyFormat.into())
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: no_private_keys,
        rsa_pub_components_from_public_key: no_private_keys,
        ec_pub_components_from_private_key: |_,
                                             _|
         -> Result<
            (EllipticCurve, Vec<u8>, Vec<u8>),
            Error,
        > { Err(ErrorKind::InvalidKeyFormat.into()) },
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidKeyFormat.into()),
        compute_digest,
    },
};

/// Makes ring jsonwebtoken's crypto provider (first call; later calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if PROVIDER.install_default().is_err() {
            tracing::warn!("jsonwebtoken already had a crypto provider; JWTs are verified with it");
        }
    });
}
