//! Solid-OIDC's I/O and memory (the checks themselves: [`crate::solid::dpop`]):
//!
//! - **Issuer trust**: the issuer of a token must be listed as `solid:oidcIssuer` of the
//!   token's WebID in the WebID's profile document, fetched (Turtle or JSON-LD, at most
//!   [`MAX_FETCH`] bytes, three redirects) and cached for [`PROFILE_TTL`] (a failure for
//!   [`FAILURE_TTL`]); a token naming an issuer the cached profile lacks refetches it, at most
//!   once per [`REFETCH_MIN`].
//! - **Keys**: `<issuer>/.well-known/openid-configuration` → `jwks_uri` → the key set, cached for
//!   [`KEYS_TTL`]; an unknown `kid` refetches it, at most once per [`REFETCH_MIN`].
//! - **Tokens**: a token that verified is remembered (by its SHA-256) with what it established,
//!   until its `exp` but at most [`PROFILE_TTL`]; the same token again (a client sends one per
//!   request for minutes) costs a proof check, not a second signature check. Its binding is
//!   checked again every time (the proof's key must be the one it is bound to).
//! - **Replays**: a proof's (key thumbprint, `jti`) is remembered until the proof would be too old
//!   anyway; the same pair again is refused. Requests for a pod are authenticated by the pod's
//!   owner (every center forwards them there), so the owner's memory sees every use of a proof:
//!   a replay through another center is refused as well. (A proof used just before a migration
//!   can be replayed once at the new owner within the proof's lifetime: the memory is not
//!   carried over.)
//! - **Groups** of other servers (`acl:agentGroup` outside the pod): their documents are fetched
//!   and cached like profiles.
//! - Every fetch goes through [`crate::outbound`]: never to loopback, private or link-local
//!   addresses unless `[solid] allow_private_fetch`; at most [`MAX_FETCHES`] at once.
//!
//! Nothing of a token or proof is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use oxrdf::{NamedNodeRef, TermRef};

use crate::solid::dpop::{self, Expect, Failure, Identity};
use crate::solid::rdf::{self, Format};

pub const PROFILE_TTL: Duration = Duration::from_secs(300);
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
pub const FAILURE_TTL: Duration = Duration::from_secs(30);
pub const REFETCH_MIN: Duration = Duration::from_secs(30);
pub const MAX_FETCH: usize = 1 << 20;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_FETCHES: usize = 16;
/// Entries per cache (profiles, issuers); past it the cache starts over.
pub const MAX_CACHED: usize = 10_000;
/// Verified access tokens remembered at most (past it, the memory starts over).
pub const MAX_TOKENS: usize = 10_000;
/// Proofs remembered at most; a node asked to remember more refuses new proofs until old ones
/// age out (a proof lives `proof_max_age_secs`).
pub const MAX_PROOFS: usize = 500_000;

const OIDC_ISSUER: &str = "http://www.w3.org/ns/solid/terms#oidcIssuer";

#[derive(Clone)]
struct Cached<T> {
    at: Instant,
    value: Result<T, String>,
}

impl<T> Cached<T> {
    fn fresh(&self, ttl: Duration) -> bool {
        self.at.elapsed() < if self.value.is_ok() { ttl } else { FAILURE_TTL }
    }
}

/// See the module docs.
pub struct Oidc {
    allow_private: bool,
    max_age: i64,
    profiles: Mutex<HashMap<String, Cached<Arc<Vec<String>>>>>,
    keys: Mutex<HashMap<String, Cached<Arc<JwkSet>>>>,
    proofs: Mutex<HashMap<String, i64>>,
    tokens: Mutex<HashMap<[u8; 32], Verified>>,
    groups: Mutex<HashMap<String, Cached<Arc<GroupDoc>>>>,
    fetches: tokio::sync::Semaphore,
}

/// The (group, member) pairs a group document states (`vcard:hasMember`).
type GroupDoc = std::collections::HashSet<(String, String)>;

/// An access token that verified: by the SHA-256 of its bytes, what it established, until
/// its `exp` or [`PROFILE_TTL`] after the check (the issuer trust is not older than that).
#[derive(Clone)]
struct Verified {
    identity: Identity,
    /// The thumbprint it is bound to (`None`: a Bearer token).
    jkt: Option<String>,
    until: i64,
}

/// How the token was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    DPoP,
    Bearer,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::DPoP => "DPoP",
            Scheme::Bearer => "Bearer",
        }
    }
}

impl Oidc {
    pub fn new(config: &xpod_config::SolidConfig) -> Oidc {
        Oidc {
            allow_private: config.allow_private_fetch,
            max_age: config.proof_max_age_secs as i64,
            profiles: Mutex::default(),
            keys: Mutex::default(),
            proofs: Mutex::default(),
            tokens: Mutex::default(),
            groups: Mutex::default(),
            fetches: tokio::sync::Semaphore::new(MAX_FETCHES),
        }
    }

    /// Verifies a Solid-OIDC credential for a request `method` `url` (its public URL) at `now`
    /// (Unix seconds): `proof` is the `DPoP` header (required with [`Scheme::DPoP`]).
    pub async fn authenticate(
        &self,
        scheme: Scheme,
        token: &str,
        proof: Option<&str>,
        method: &str,
        url: &str,
        now: i64,
    ) -> Result<Identity, Failure> {
        let proof = match scheme {
            Scheme::DPoP => {
                let p = proof.ok_or_else(|| {
                    Failure::proof("missing", "a DPoP access token needs a DPoP proof header")
                })?;
                Some(dpop::verify_proof(
                    p,
                    token,
                    Expect {
                        method,
                        url,
                        now,
                        max_age: self.max_age,
                    },
                )?)
            }
            Scheme::Bearer => None,
        };
        let jkt = proof.as_ref().map(|p| p.jkt.clone());
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let id = match self.remembered(&digest, jkt.as_deref(), now) {
            Some(id) => id,
            None => {
                let id = self.verify_token(token, jkt.as_deref(), now).await?;
                let mut m = self.tokens.lock().expect("poisoned");
                if m.len() >= MAX_TOKENS {
                    m.clear();
                }
                m.insert(
                    digest,
                    Verified {
                        identity: id.clone(),
                        jkt,
                        until: id.exp.min(now + PROFILE_TTL.as_secs() as i64),
                    },
                );
                id
            }
        };
        if let Some(p) = proof {
            // Remembered only once everything else holds, so garbage cannot fill the memory.
            self.first_use(&p.jkt, &p.jti, p.iat, now)?;
        }
        Ok(id)
    }

    /// A verified token's identity, if `digest` verified before, is still within its time and
    /// is presented bound the same way (`jkt`).
    fn remembered(&self, digest: &[u8; 32], jkt: Option<&str>, now: i64) -> Option<Identity> {
        self.tokens
            .lock()
            .expect("poisoned")
            .get(digest)
            .filter(|v| v.until > now && v.jkt.as_deref() == jkt)
            .map(|v| v.identity.clone())
    }

    /// The token's identity: issuer trusted by the WebID, signature by the issuer's key,
    /// claims, binding to `jkt`.
    async fn verify_token(
        &self,
        token: &str,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<Identity, Failure> {
        let peek = dpop::peek_token(token)?;
        let issuers = self.issuers_of(&peek.webid, &peek.iss).await?;
        if !issuers.iter().any(|i| same_issuer(i, &peek.iss)) {
            return Err(Failure::token(
                "issuer_not_trusted",
                format!(
                    "{} is not a solid:oidcIssuer of {} (its profile names {})",
                    peek.iss,
                    peek.webid,
                    if issuers.is_empty() {
                        "none".to_string()
                    } else {
                        issuers.join(", ")
                    }
                ),
            ));
        }
        let key = self.key(&peek.iss, peek.kid.as_deref()).await?;
        dpop::verify_token(token, &peek, &key, now, jkt)
    }

    /// Whether the group document of `group` (another server's: `acl:agentGroup` outside the
    /// pod) lists `webid` as a `vcard:hasMember` of it. Fetched like a profile (cached for
    /// [`PROFILE_TTL`], a failure for [`FAILURE_TTL`]); a document that cannot be read lists
    /// nobody.
    pub async fn group_has_member(&self, group: &str, webid: &str) -> bool {
        let doc = group.split('#').next().unwrap_or(group).to_string();
        let cached = self.groups.lock().expect("poisoned").get(&doc).cloned();
        let pairs = match cached.filter(|c| c.fresh(PROFILE_TTL)) {
            Some(c) => c.value,
            None => {
                let value = self.fetch_group(&doc).await.map(Arc::new);
                if let Err(e) = &value {
                    tracing::info!(group = %doc, error = %e, "group document not readable: it lists nobody");
                }
                let mut m = self.groups.lock().expect("poisoned");
                if m.len() >= MAX_CACHED {
                    m.clear();
                }
                m.insert(
                    doc,
                    Cached {
                        at: Instant::now(),
                        value: value.clone(),
                    },
                );
                value
            }
        };
        pairs.is_ok_and(|p| p.contains(&(group.to_string(), webid.to_string())))
    }

    async fn fetch_group(&self, doc: &str) -> Result<GroupDoc, String> {
        let (url, content_type, body) = self
            .get(doc, "text/turtle, application/ld+json;q=0.9")
            .await?;
        let format = Format::of_media_type(&content_type).unwrap_or(Format::Turtle);
        let graph = rdf::parse(&body, format, &url).map_err(|e| e.to_string())?;
        let has_member = NamedNodeRef::new_unchecked("http://www.w3.org/2006/vcard/ns#hasMember");
        Ok(graph
            .triples_for_predicate(has_member)
            .filter_map(|t| match (t.subject, t.object) {
                (oxrdf::NamedOrBlankNodeRef::NamedNode(g), TermRef::NamedNode(m)) => {
                    Some((g.as_str().to_string(), m.as_str().to_string()))
                }
                _ => None,
            })
            .collect())
    }

    /// Refuses a (key, jti) seen before within the proof lifetime.
    fn first_use(&self, jkt: &str, jti: &str, iat: i64, now: i64) -> Result<(), Failure> {
        let mut seen = self.proofs.lock().expect("poisoned");
        let key = format!("{jkt} {jti}");
        if seen.get(&key).is_some_and(|until| *until >= now) {
            return Err(Failure::proof(
                "replayed",
                "this DPoP proof was used before",
            ));
        }
        if seen.len() >= MAX_PROOFS {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= MAX_PROOFS {
                return Err(Failure::proof(
                    "too_many_proofs",
                    "this node remembers too many recent DPoP proofs; retry shortly",
                ));
            }
        }
        seen.insert(key, iat.max(now) + self.max_age + dpop::SKEW);
        Ok(())
    }

    /// The issuers the WebID's profile lists (refetched when `wanted` is not among cached ones).
    async fn issuers_of(&self, webid: &str, wanted: &str) -> Result<Arc<Vec<String>>, Failure> {
        let cached = self.profiles.lock().expect("poisoned").get(webid).cloned();
        if let Some(c) = &cached {
            let listed = c
                .value
                .as_ref()
                .is_ok_and(|v| v.iter().any(|i| same_issuer(i, wanted)));
            let may_refetch = c.at.elapsed() >= REFETCH_MIN;
            if c.fresh(PROFILE_TTL) && (listed || !may_refetch) {
                return c
                    .value
                    .clone()
                    .map_err(|e| Failure::token("webid_unavailable", e));
            }
        }
        let value = self.fetch_issuers(webid).await.map(Arc::new);
        let mut m = self.profiles.lock().expect("poisoned");
        if m.len() >= MAX_CACHED {
            m.clear();
        }
        m.insert(
            webid.to_string(),
            Cached {
                at: Instant::now(),
                value: value.clone(),
            },
        );
        value.map_err(|e| Failure::token("webid_unavailable", e))
    }

    async fn fetch_issuers(&self, webid: &str) -> Result<Vec<String>, String> {
        let doc = webid.split('#').next().unwrap_or(webid);
        let (url, content_type, body) = self
            .get(doc, "text/turtle, application/ld+json;q=0.9")
            .await
            .map_err(|e| format!("the WebID profile {doc}: {e}"))?;
        let format = Format::of_media_type(&content_type).unwrap_or(Format::Turtle);
        let graph = rdf::parse(&body, format, &url)
            .map_err(|e| format!("the WebID profile {doc} is not usable RDF: {e}"))?;
        let me = NamedNodeRef::new(webid).map_err(|e| format!("WebID {webid}: {e}"))?;
        Ok(graph
            .objects_for_subject_predicate(me, NamedNodeRef::new_unchecked(OIDC_ISSUER))
            .filter_map(|o| match o {
                TermRef::NamedNode(n) => Some(n.as_str().to_string()),
                _ => None,
            })
            .collect())
    }

    /// The issuer's key `kid` (or its only key when the token names none).
    async fn key(&self, iss: &str, kid: Option<&str>) -> Result<Jwk, Failure> {
        let find = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(k) => set.find(k).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let cached = self.keys.lock().expect("poisoned").get(iss).cloned();
        if let Some(c) = &cached {
            if let Ok(set) = &c.value {
                if let Some(k) = find(set) {
                    if c.fresh(KEYS_TTL) {
                        return Ok(k);
                    }
                }
            }
            if c.fresh(KEYS_TTL) && c.at.elapsed() < REFETCH_MIN {
                return Err(match &c.value {
                    Err(e) => Failure::token("issuer_unavailable", e.clone()),
                    Ok(_) => Failure::token("unknown_key", format!("{iss} has no key {kid:?}")),
                });
            }
        }
        let value = self.fetch_keys(iss).await.map(Arc::new);
        {
            let mut m = self.keys.lock().expect("poisoned");
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(
                iss.to_string(),
                Cached {
                    at: Instant::now(),
                    value: value.clone(),
                },
            );
        }
        let set = value.map_err(|e| Failure::token("issuer_unavailable", e))?;
        find(&set).ok_or_else(|| Failure::token("unknown_key", format!("{iss} has no key {kid:?}")))
    }

    async fn fetch_keys(&self, iss: &str) -> Result<JwkSet, String> {
        let config_url = format!(
            "{}/.well-known/openid-configuration",
            iss.trim_end_matches('/')
        );
        let (_, _, body) = self.get(&config_url, "application/json").await?;
        let config: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{config_url} is not JSON: {e}"))?;
        let issuer = config["issuer"].as_str().unwrap_or_default();
        if !same_issuer(issuer, iss) {
            return Err(format!(
                "{config_url} names the issuer {issuer:?}, not {iss}"
            ));
        }
        let jwks_uri = config["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{config_url} has no jwks_uri"))?;
        let (_, _, body) = self.get(jwks_uri, "application/json").await?;
        serde_json::from_slice::<JwkSet>(&body).map_err(|e| format!("the key set {jwks_uri}: {e}"))
    }

    /// GETs `url` (following up to three redirects, each URL checked); the final URL, the
    /// content type and the body.
    async fn get(&self, url: &str, accept: &str) -> Result<(String, String, Bytes), String> {
        let _permit = tokio::time::timeout(FETCH_TIMEOUT, self.fetches.acquire())
            .await
            .map_err(|_| "too many fetches at once; retry".to_string())?
            .map_err(|e| e.to_string())?;
        let mut url = url.to_string();
        for _ in 0..4 {
            let uri = crate::outbound::check_url(&url, self.allow_private)?;
            let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
                .header(header::ACCEPT, accept)
                .header(
                    header::USER_AGENT,
                    concat!("xpod/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let answer = crate::outbound::send(
                &uri,
                self.allow_private,
                req,
                FETCH_TIMEOUT,
                MAX_FETCH,
                true,
            )
            .await?;
            if answer.status.is_redirection() {
                let location = answer
                    .headers
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{url}: a redirect without Location"))?;
                url = resolve(&url, location)?;
                continue;
            }
            if answer.status != StatusCode::OK {
                return Err(format!("{url} answered {}", answer.status));
            }
            let ct = answer
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return Ok((url, ct, answer.body));
        }
        Err(format!("{url}: too many redirects"))
    }
}

/// An absolute `location`, or one relative to `base`.
fn resolve(base: &str, location: &str) -> Result<String, String> {
    oxiri::Iri::parse(base.to_string())
        .and_then(|b| b.resolve(location))
        .map(|i| i.into_inner())
        .map_err(|e| format!("redirect to {location:?}: {e}"))
}

/// Issuer URLs compared as strings, a trailing slash aside.
fn same_issuer(a: &str, b: &str) -> bool {
    !a.is_empty() && a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_accepted_once() {
        let o = Oidc::new(&xpod_config::SolidConfig::default());
        assert!(o.first_use("k", "j", 100, 100).is_ok());
        assert_eq!(
            o.first_use("k", "j", 100, 150).unwrap_err().reason,
            "replayed"
        );
        assert!(
            o.first_use("k2", "j", 100, 150).is_ok(),
            "another key's jti"
        );
        // After the proof's lifetime the pair is forgotten (the proof is too old by then).
        assert!(o
            .first_use("k", "j", 100, 100 + 120 + dpop::SKEW + 1)
            .is_ok());
    }

    #[test]
    fn a_remembered_token_needs_the_same_binding_and_time() {
        let o = Oidc::new(&xpod_config::SolidConfig::default());
        let id = Identity {
            webid: "https://a.example/#me".into(),
            issuer: "https://idp.example/".into(),
            client_id: None,
            exp: 1000,
        };
        o.tokens.lock().unwrap().insert(
            [7; 32],
            Verified {
                identity: id.clone(),
                jkt: Some("key-a".into()),
                until: 1000,
            },
        );
        assert_eq!(o.remembered(&[7; 32], Some("key-a"), 999), Some(id));
        assert_eq!(
            o.remembered(&[7; 32], Some("key-b"), 999),
            None,
            "another proof key"
        );
        assert_eq!(o.remembered(&[7; 32], None, 999), None, "as Bearer");
        assert_eq!(o.remembered(&[7; 32], Some("key-a"), 1000), None, "expired");
        assert_eq!(o.remembered(&[8; 32], Some("key-a"), 999), None);
    }

    #[test]
    fn issuers_match_with_or_without_a_trailing_slash() {
        assert!(same_issuer("https://idp.example/", "https://idp.example"));
        assert!(!same_issuer(
            "https://idp.example.evil/",
            "https://idp.example"
        ));
        assert!(!same_issuer("", ""));
        assert_eq!(
            resolve("https://a.example/x/y", "/z").unwrap(),
            "https://a.example/z"
        );
    }

    #[tokio::test]
    async fn tokens_naming_private_addresses_are_not_fetched() {
        let o = Oidc::new(&xpod_config::SolidConfig::default());
        let e = o
            .fetch_issuers("http://127.0.0.1:9/profile#me")
            .await
            .unwrap_err();
        assert!(e.contains("not a public address"), "{e}");
        let e = o.fetch_keys("http://localhost:9/").await.unwrap_err();
        assert!(e.contains("not a public address"), "{e}");
    }
}
