//! Solid-OIDC on the resource server: the DPoP proof (RFC 9449 §4.3) and the access token
//! (Solid-OIDC §8), checked in this order:
//!
//! 1. the proof is a JWS with `typ: dpop+jwt`, an allowed `alg` ([`ALGS`]; never `none` or
//!    HMAC) and a public `jwk` in its header, signed by that key;
//! 2. its `htm` is the request's method and its `htu` the request's public URL (scheme and host
//!    compared case-insensitively, default port dropped, query and fragment ignored);
//! 3. its `iat` is at most `max_age` seconds old and not more than [`SKEW`] in the future;
//!    its `ath`, when present, is the hash of the access token;
//! 4. the token (`iss`, `webid`, `kid` read first, unverified, to find the issuer's key) is
//!    signed by the issuer's key with an allowed `alg` of the key's family, `exp` is ahead,
//!    `iat` not in the future, `aud` is or contains `solid`;
//! 5. `cnf.jkt` is the RFC 7638 thumbprint of the proof's key (a DPoP token); a token presented
//!    as `Bearer` must not be DPoP-bound.
//!
//! Whether the issuer is the WebID's (`solid:oidcIssuer`), whose key is which, and whether a
//! proof was seen before are the caller's (`crate::oidc`): this module takes no I/O.
//! Claims are typed: a claim of the wrong JSON type is an error, never "absent".

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Signature algorithms accepted for proofs and tokens.
pub const ALGS: [Algorithm; 5] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::RS256,
    Algorithm::EdDSA,
];
/// [`ALGS`] as the `algs` parameter of a `WWW-Authenticate: DPoP` challenge.
pub const ALGS_PARAM: &str = "ES256 ES384 PS256 RS256 EdDSA";
/// Clock skew tolerated for `iat` in the future (seconds).
pub const SKEW: i64 = 60;

/// Why a credential was refused: the RFC 6750/9449 error (`invalid_token`,
/// `invalid_dpop_proof`), a finer reason, and a message naming the problem (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn proof(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            error: "invalid_dpop_proof",
            reason,
            message: message.into(),
        }
    }

    pub fn token(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            error: "invalid_token",
            reason,
            message: message.into(),
        }
    }

    /// The `WWW-Authenticate` value for this failure under `scheme` (`DPoP` or `Bearer`).
    pub fn challenge(&self, scheme: &str) -> String {
        let description = self.message.replace(['"', '\\'], "'");
        let mut c = format!(
            "{scheme} error=\"{}\", error_description=\"{}: {description}\"",
            self.error, self.reason
        );
        if scheme == "DPoP" {
            c.push_str(&format!(", algs=\"{ALGS_PARAM}\""));
        }
        c
    }
}

/// What the proof must match.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The request method, upper case.
    pub method: &'a str,
    /// The request's public URL (as its client sent it).
    pub url: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// The oldest proof accepted (seconds).
    pub max_age: i64,
}

/// A verified proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// Thumbprint of the proof's key (what `cnf.jkt` must be).
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The JSON of a JWS's header, unverified.
fn raw_header(jws: &str) -> Option<serde_json::Value> {
    let first = jws.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `scheme://host[:port]/path` with scheme and host lower case, the default port dropped and
/// query and fragment cut; `None` for what is not an absolute http(s) URL.
pub fn normalize_url(u: &str) -> Option<String> {
    let u = u.split(['#', '?']).next()?;
    let (scheme, rest) = u.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default).unwrap_or(&authority);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}{path}"))
}

/// Checks `proof` for a request (`expect`) that presents `access_token` (steps 1–3).
pub fn verify_proof(proof: &str, access_token: &str, expect: Expect<'_>) -> Result<Proof, Failure> {
    super::jose::install();
    let raw = raw_header(proof)
        .ok_or_else(|| Failure::proof("malformed", "the DPoP proof is not a JWS"))?;
    if raw.get("typ").and_then(|t| t.as_str()) != Some("dpop+jwt") {
        return Err(Failure::proof(
            "wrong_type",
            "the DPoP proof's typ must be dpop+jwt",
        ));
    }
    let jwk_raw = raw
        .get("jwk")
        .and_then(|j| j.as_object())
        .ok_or_else(|| Failure::proof("no_key", "the DPoP proof has no jwk in its header"))?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| jwk_raw.contains_key(*m))
    {
        return Err(Failure::proof(
            "private_key",
            "the DPoP proof's jwk holds private key material",
        ));
    }
    let header = jsonwebtoken::decode_header(proof)
        .map_err(|e| Failure::proof("malformed", format!("the DPoP proof's header: {e}")))?;
    if !ALGS.contains(&header.alg) {
        return Err(Failure::proof(
            "alg_not_allowed",
            format!(
                "the DPoP proof's alg {:?} is not one of {ALGS_PARAM}",
                header.alg
            ),
        ));
    }
    let jwk = header
        .jwk
        .as_ref()
        .ok_or_else(|| Failure::proof("no_key", "the DPoP proof has no jwk in its header"))?;
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err(Failure::proof(
            "symmetric_key",
            "the DPoP proof's jwk is a symmetric key",
        ));
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| Failure::proof("bad_key", format!("the DPoP proof's jwk: {e}")))?;
    let claims: ProofClaims = decode_signed(proof, &key, header.alg)
        .map_err(|e| Failure::proof("bad_signature", format!("the DPoP proof: {e}")))?;
    if !claims.htm.eq_ignore_ascii_case(expect.method) {
        return Err(Failure::proof(
            "htm_mismatch",
            format!(
                "the DPoP proof is for {}, not {}",
                claims.htm, expect.method
            ),
        ));
    }
    let (want, got) = (normalize_url(expect.url), normalize_url(&claims.htu));
    if want.is_none() || want != got {
        return Err(Failure::proof(
            "htu_mismatch",
            format!("the DPoP proof is for {}, not {}", claims.htu, expect.url),
        ));
    }
    if claims.iat > expect.now + SKEW {
        return Err(Failure::proof(
            "iat_future",
            "the DPoP proof was issued in the future",
        ));
    }
    if claims.iat < expect.now - expect.max_age {
        return Err(Failure::proof(
            "proof_expired",
            format!("the DPoP proof is older than {} s", expect.max_age),
        ));
    }
    if let Some(ath) = &claims.ath {
        let want =
            b64url(ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes()).as_ref());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            ath.as_bytes(),
            want.as_bytes(),
        )) {
            return Err(Failure::proof(
                "ath_mismatch",
                "the DPoP proof's ath is not the hash of the access token",
            ));
        }
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(Failure::proof(
            "bad_jti",
            "the DPoP proof's jti must be 1–256 characters",
        ));
    }
    Ok(Proof {
        jkt: thumbprint(jwk)?,
        jti: claims.jti,
        iat: claims.iat,
    })
}

/// RFC 7638 SHA-256 thumbprint, base64url.
pub fn thumbprint(jwk: &Jwk) -> Result<String, Failure> {
    super::jose::install();
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| Failure::proof("bad_key", format!("thumbprint of the proof's jwk: {e}")))
}

/// Verifies the signature of `jws` with `key` and `alg` and reads its typed claims (time
/// claims are checked by the callers, against their own clock).
fn decode_signed<T: serde::de::DeserializeOwned>(
    jws: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<T, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    Ok(jsonwebtoken::decode::<T>(jws, key, &v)?.claims)
}

/// What a token says before it is verified: enough to find the issuer's key.
#[derive(Clone, Debug)]
pub struct Unverified {
    pub iss: String,
    pub webid: String,
    pub kid: Option<String>,
    pub alg: Algorithm,
}

#[derive(Deserialize)]
struct Peek {
    iss: String,
    webid: String,
}

fn http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2000
}

/// Reads `iss`, `webid` and the header of `token` without verifying anything.
pub fn peek_token(token: &str) -> Result<Unverified, Failure> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| Failure::token("malformed", format!("the access token's header: {e}")))?;
    if !ALGS.contains(&header.alg) {
        return Err(Failure::token(
            "alg_not_allowed",
            format!(
                "the access token's alg {:?} is not one of {ALGS_PARAM}",
                header.alg
            ),
        ));
    }
    let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| {
        Failure::token(
            "malformed",
            format!("the access token must carry iss and webid: {e}"),
        )
    })?;
    if !http_url(&peek.iss) || !http_url(&peek.webid) {
        return Err(Failure::token(
            "malformed",
            "the access token's iss and webid must be http(s) URLs",
        ));
    }
    Ok(Unverified {
        iss: peek.iss,
        webid: peek.webid,
        kid: header.kid,
        alg: header.alg,
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Cnf {
    jkt: String,
}

#[derive(Deserialize)]
struct TokenClaims {
    iss: String,
    webid: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    cnf: Option<Cnf>,
    #[serde(default)]
    client_id: Option<String>,
}

/// A verified Solid-OIDC identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub webid: String,
    pub issuer: String,
    pub client_id: Option<String>,
    /// Unix seconds.
    pub exp: i64,
}

/// Verifies `token` (peeked as `peek`) with the issuer's `key` at `now`; `bound_to` is the
/// proof's thumbprint for a DPoP token, `None` for a `Bearer` one (steps 4–5).
pub fn verify_token(
    token: &str,
    peek: &Unverified,
    key: &Jwk,
    now: i64,
    bound_to: Option<&str>,
) -> Result<Identity, Failure> {
    super::jose::install();
    if matches!(key.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err(Failure::token("bad_key", "the issuer's key is symmetric"));
    }
    let decoding = DecodingKey::from_jwk(key)
        .map_err(|e| Failure::token("bad_key", format!("the issuer's key: {e}")))?;
    let c: TokenClaims = decode_signed(token, &decoding, peek.alg)
        .map_err(|e| Failure::token("bad_signature", format!("the access token: {e}")))?;
    if c.iss != peek.iss || c.webid != peek.webid {
        return Err(Failure::token(
            "malformed",
            "the access token changed under verification",
        ));
    }
    if c.exp <= now {
        return Err(Failure::token("expired", "the access token has expired"));
    }
    if c.iat > now + SKEW {
        return Err(Failure::token(
            "iat_future",
            "the access token was issued in the future",
        ));
    }
    let solid = match &c.aud {
        Audience::One(a) => a == "solid",
        Audience::Many(v) => v.iter().any(|a| a == "solid"),
    };
    if !solid {
        return Err(Failure::token(
            "audience",
            "the access token's aud does not include solid",
        ));
    }
    match (bound_to, &c.cnf) {
        (Some(jkt), Some(cnf)) => {
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                cnf.jkt.as_bytes(),
                jkt.as_bytes(),
            )) {
                return Err(Failure::token(
                    "key_mismatch",
                    "the access token is bound to another key than the DPoP proof's (cnf.jkt)",
                ));
            }
        }
        (Some(_), None) => {
            return Err(Failure::token(
                "not_bound",
                "a DPoP access token must be bound to the proof's key (cnf.jkt)",
            ))
        }
        (None, Some(_)) => {
            return Err(Failure::token(
                "bound_token_as_bearer",
                "a DPoP-bound access token must be sent with the DPoP scheme and a proof",
            ))
        }
        (None, None) => {}
    }
    Ok(Identity {
        webid: c.webid,
        issuer: c.iss,
        client_id: c.client_id,
        exp: c.exp,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::{json, Value};

    /// An ES256 key for tests: signs compact JWSs with ring (a test issuer and client).
    pub(crate) struct TestKey {
        pair: EcdsaKeyPair,
        pub kid: String,
    }

    impl TestKey {
        pub(crate) fn new(kid: &str) -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            TestKey {
                pair,
                kid: kid.into(),
            }
        }

        pub(crate) fn public_jwk(&self) -> Value {
            let p = self.pair.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "x": b64url(&p[1..33]), "y": b64url(&p[33..65]), "kid": self.kid, "alg": "ES256"})
        }

        pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
            let msg = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), msg.as_bytes())
                .unwrap();
            format!("{msg}.{}", b64url(sig.as_ref()))
        }

        pub(crate) fn jkt(&self) -> String {
            let jwk: Jwk = serde_json::from_value(self.public_jwk()).unwrap();
            thumbprint(&jwk).unwrap()
        }
    }

    const NOW: i64 = 1_800_000_000;
    const URL: &str = "https://pods.example/alice/notes?x=1";
    const ISS: &str = "https://idp.example/";
    const WEBID: &str = "https://alice.example/profile/card#me";

    fn expect() -> Expect<'static> {
        Expect {
            method: "GET",
            url: URL,
            now: NOW,
            max_age: 120,
        }
    }

    fn proof(client: &TestKey, claims: Value) -> String {
        client.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": client.public_jwk()}),
            &claims,
        )
    }

    fn good_claims() -> Value {
        json!({"jti": "j1", "htm": "GET", "htu": "https://PODS.example:443/alice/notes", "iat": NOW - 5})
    }

    fn token(issuer: &TestKey, claims: Value) -> String {
        issuer.sign(
            &json!({"typ": "at+jwt", "alg": "ES256", "kid": issuer.kid}),
            &claims,
        )
    }

    fn token_claims(jkt: &str) -> Value {
        json!({"iss": ISS, "webid": WEBID, "aud": "solid", "exp": NOW + 600, "iat": NOW - 10, "cnf": {"jkt": jkt}, "client_id": "app"})
    }

    #[test]
    fn a_good_proof_and_token_verify() {
        let client = TestKey::new("c");
        let issuer = TestKey::new("k1");
        let at = token(&issuer, token_claims(&client.jkt()));
        let p = verify_proof(&proof(&client, good_claims()), &at, expect()).unwrap();
        assert_eq!(p.jkt, client.jkt());
        let peek = peek_token(&at).unwrap();
        assert_eq!((peek.iss.as_str(), peek.kid.as_deref()), (ISS, Some("k1")));
        let key: Jwk = serde_json::from_value(issuer.public_jwk()).unwrap();
        let id = verify_token(&at, &peek, &key, NOW, Some(&p.jkt)).unwrap();
        assert_eq!(id.webid, WEBID);
        // aud as an array, with ath.
        let mut c = token_claims(&client.jkt());
        c["aud"] = json!(["app", "solid"]);
        let at2 = token(&issuer, c);
        let mut pc = good_claims();
        pc["ath"] = json!(b64url(
            ring::digest::digest(&ring::digest::SHA256, at2.as_bytes()).as_ref()
        ));
        let p = verify_proof(&proof(&client, pc), &at2, expect()).unwrap();
        verify_token(&at2, &peek_token(&at2).unwrap(), &key, NOW, Some(&p.jkt)).unwrap();
    }

    #[test]
    fn proofs_for_another_request_or_time_are_refused() {
        let client = TestKey::new("c");
        let reason = |claims: Value| {
            verify_proof(&proof(&client, claims), "t", expect())
                .unwrap_err()
                .reason
        };
        let with = |k: &str, v: Value| {
            let mut c = good_claims();
            c[k] = v;
            c
        };
        assert_eq!(reason(with("htm", json!("PUT"))), "htm_mismatch");
        assert_eq!(
            reason(with("htu", json!("https://pods.example/alice/other"))),
            "htu_mismatch"
        );
        assert_eq!(
            reason(with("htu", json!("http://pods.example/alice/notes"))),
            "htu_mismatch"
        );
        assert_eq!(reason(with("iat", json!(NOW - 500))), "proof_expired");
        assert_eq!(reason(with("iat", json!(NOW + 500))), "iat_future");
        assert_eq!(reason(with("ath", json!("wrong"))), "ath_mismatch");
        assert_eq!(
            reason(with("iat", json!("1800000000"))),
            "bad_signature",
            "a string iat is not a number"
        );
    }

    #[test]
    fn proofs_with_bad_headers_are_refused() {
        let client = TestKey::new("c");
        let claims = good_claims();
        let refuse = |header: Value| {
            verify_proof(&client.sign(&header, &claims), "t", expect()).unwrap_err()
        };
        assert_eq!(
            refuse(json!({"typ": "JWT", "alg": "ES256", "jwk": client.public_jwk()})).reason,
            "wrong_type"
        );
        assert_eq!(
            refuse(json!({"typ": "dpop+jwt", "alg": "ES256"})).reason,
            "no_key"
        );
        let mut private = client.public_jwk();
        private["d"] = json!("AAAA");
        assert_eq!(
            refuse(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private})).reason,
            "private_key"
        );
        // alg none: not an algorithm at all.
        let none = format!(
            "{}.{}.",
            b64url(
                json!({"typ": "dpop+jwt", "alg": "none", "jwk": client.public_jwk()})
                    .to_string()
                    .as_bytes()
            ),
            b64url(claims.to_string().as_bytes())
        );
        assert_eq!(
            verify_proof(&none, "t", expect()).unwrap_err().error,
            "invalid_dpop_proof"
        );
        let hs = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}});
        assert!(matches!(
            refuse(hs).reason,
            "private_key" | "alg_not_allowed"
        ));
        // Another key signed it.
        let other = TestKey::new("o");
        let forged = other.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": client.public_jwk()}),
            &claims,
        );
        assert_eq!(
            verify_proof(&forged, "t", expect()).unwrap_err().reason,
            "bad_signature"
        );
    }

    #[test]
    fn tokens_that_are_expired_unbound_or_for_others_are_refused() {
        let client = TestKey::new("c");
        let issuer = TestKey::new("k1");
        let key: Jwk = serde_json::from_value(issuer.public_jwk()).unwrap();
        let check = |claims: Value, bound: Option<&str>| {
            let at = token(&issuer, claims);
            verify_token(&at, &peek_token(&at).unwrap(), &key, NOW, bound)
                .map(|_| ())
                .unwrap_err()
                .reason
        };
        let jkt = client.jkt();
        let with = |k: &str, v: Value| {
            let mut c = token_claims(&jkt);
            c[k] = v;
            c
        };
        assert_eq!(check(with("exp", json!(NOW - 1)), Some(&jkt)), "expired");
        assert_eq!(check(with("aud", json!("other")), Some(&jkt)), "audience");
        assert_eq!(
            check(with("cnf", json!({"jkt": "someone-else"})), Some(&jkt)),
            "key_mismatch"
        );
        assert_eq!(check(token_claims(&jkt), None), "bound_token_as_bearer");
        let mut unbound = token_claims(&jkt);
        unbound.as_object_mut().unwrap().remove("cnf");
        assert_eq!(check(unbound, Some(&jkt)), "not_bound");
        assert_eq!(
            check(with("exp", json!("later")), Some(&jkt)),
            "bad_signature"
        );
        // Signed by a key that is not the issuer's.
        let rogue = TestKey::new("k1");
        let at = token(&rogue, token_claims(&jkt));
        assert_eq!(
            verify_token(&at, &peek_token(&at).unwrap(), &key, NOW, Some(&jkt))
                .unwrap_err()
                .reason,
            "bad_signature"
        );
    }

    #[test]
    fn urls_normalise() {
        assert_eq!(
            normalize_url("HTTPS://A.example:443/x?q#f").as_deref(),
            Some("https://a.example/x")
        );
        assert_eq!(
            normalize_url("http://a.example:8080").as_deref(),
            Some("http://a.example:8080/")
        );
        assert_eq!(normalize_url("ftp://a/x"), None);
        assert_eq!(normalize_url("https://user@a/x"), None);
    }

    #[test]
    fn challenges_name_the_error_and_the_algorithms() {
        let f = Failure::proof("htu_mismatch", "the proof is for \"x\"");
        let c = f.challenge("DPoP");
        assert!(c.starts_with("DPoP error=\"invalid_dpop_proof\", error_description=\"htu_mismatch: the proof is for 'x'\""), "{c}");
        assert!(c.contains("algs=\"ES256"), "{c}");
    }
}
