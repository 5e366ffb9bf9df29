//! Benchmark (a program, not a test): what Solid-OIDC costs on a pod GET, against the same GET
//! with an API key, in the same run on the same node (issue 17's target: ≥ 0.8×).
//!
//! Setup: a lone `xpod` node (SQLite, `[solid] allow_private_fetch`), a private pod whose owner
//! is a WebID, one 1 KiB Turtle document. The identity provider is this program: an HTTP
//! server on 127.0.0.1 serving the OpenID configuration, the key set and the WebID profile —
//! the benchmark's own peer, so what is measured is xpod's verification (proof, token, replay
//! memory, WAC), not an identity provider's speed.
//!
//! Passes, each `seconds` long over `connections` keep-alive HTTP/1.1 connections: API-key
//! GETs, then DPoP GETs (a fresh proof per request, all signed before the pass so the client's
//! signing is not in the figure), then API-key GETs again (the machine is noisy: the ratio uses
//! the mean of the two key passes). Printed: requests/s, p50/p99 latency, the ratio, and the
//! first DPoP request on a cold node (WebID profile and key set fetched) timed on its own.
//!
//! Usage: `cargo build --release -p xpod-node -p xpod-integration --bin xpod --bin solidbench`
//! then `XPOD_BIN=target/release/xpod target/release/solidbench [seconds] [connections]`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::node::{NodeProcess, TempDir};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Key {
    fn new() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Key { pair, rng }
    }
    /// The public JWK members (EC P-256).
    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }
    /// RFC 7638 thumbprint (members in lexicographic order, no whitespace).
    fn jkt(&self) -> String {
        let j = self.jwk();
        let canon = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        b64(ring::digest::digest(&ring::digest::SHA256, canon.as_bytes()).as_ref())
    }
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.pair.sign(&self.rng, msg.as_bytes()).unwrap();
        format!("{msg}.{}", b64(sig.as_ref()))
    }
}

/// The identity provider: `/.well-known/openid-configuration`, `/jwks`, `/profile`.
async fn serve_issuer(listener: tokio::net::TcpListener, issuer: String, jwk: Value) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (issuer, jwk) = (issuer.clone(), jwk.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (issuer, jwk) = (issuer.clone(), jwk.clone());
                async move {
                    let (ct, body) = match req.uri().path() {
                        "/.well-known/openid-configuration" => (
                            "application/json",
                            json!({"issuer": issuer, "jwks_uri": format!("{issuer}jwks")})
                                .to_string(),
                        ),
                        "/jwks" => ("application/json", json!({"keys": [jwk]}).to_string()),
                        "/profile" => (
                            "text/turtle",
                            format!(
                                "<#me> <http://www.w3.org/ns/solid/terms#oidcIssuer> <{issuer}>.\n"
                            ),
                        ),
                        _ => ("text/plain", String::new()),
                    };
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", ct)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// One keep-alive connection sending GETs with the given header sets, one after another,
/// until `until` or the header sets run out. Latencies in microseconds.
async fn connection(
    addr: SocketAddr,
    path: String,
    headers: Vec<Vec<(String, String)>>,
    until: Instant,
) -> Vec<u64> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut lat = Vec::new();
    for hs in headers {
        if Instant::now() >= until {
            break;
        }
        let mut b = hyper::Request::get(&path).header("host", addr.to_string());
        for (k, v) in hs {
            b = b.header(k, v);
        }
        let t = Instant::now();
        let resp = send
            .send_request(b.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let _ = resp.into_body().collect().await.unwrap();
        assert_eq!(status, 200, "a benchmark GET failed");
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat
}

struct Pass {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn pass(
    addr: SocketAddr,
    path: &str,
    per_conn: Vec<Vec<Vec<(String, String)>>>,
    seconds: u64,
) -> Pass {
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = per_conn
        .into_iter()
        .map(|h| tokio::spawn(connection(addr, path.to_string(), h, until)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    Pass {
        rps: all.len() as f64 / elapsed,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);

    let idp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}/", idp.local_addr()?);
    let webid = format!("{issuer}profile#me");
    let issuer_key = Key::new();
    let mut jwk = issuer_key.jwk();
    jwk["kid"] = json!("k1");
    jwk["alg"] = json!("ES256");
    tokio::spawn(serve_issuer(idp, issuer.clone(), jwk));

    let tmp = TempDir::new("xpod-solidbench");
    let config = tmp.path().join("xpod.toml");
    std::fs::write(&config, "[solid]\nallow_private_fetch = true\n")?;
    let node = NodeProcess::builder().env("XPOD_CONFIG", &config).start();
    let key = node.admin_key();
    let base = node.url();
    Curl::new("POST", format!("{base}/.cluster/pods"))
        .bearer(&key)
        .json(&json!({"podId": "bench", "accountId": webid}))
        .send()
        .expect(201);
    let doc: String = "<#it> <http://schema.org/name> \"a small document\".\n".repeat(18);
    Curl::new("PUT", format!("{base}/bench/doc.ttl"))
        .bearer(&key)
        .header("Content-Type: text/turtle")
        .body(doc.into_bytes())
        .send()
        .expect(201);
    let addr = node.addr();
    let path = "/bench/doc.ttl".to_string();
    let url = format!("http://{addr}{path}");

    let client = Arc::new(Key::new());
    let token = issuer_key.sign(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}),
        &json!({"iss": issuer, "webid": webid, "aud": "solid", "exp": now() + 3600, "iat": now(),
                "cnf": {"jkt": client.jkt()}, "client_id": "solidbench"}),
    );
    let proof_header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": client.jwk()});
    let mut serial = 0u64;
    let mut proofs = |n: usize| -> Vec<Vec<(String, String)>> {
        (0..n)
            .map(|_| {
                serial += 1;
                let p = client.sign(
                    &proof_header,
                    &json!({"jti": format!("bench-{serial}"), "htm": "GET", "htu": url, "iat": now()}),
                );
                vec![
                    ("authorization".to_string(), format!("DPoP {token}")),
                    ("dpop".to_string(), p),
                ]
            })
            .collect()
    };

    // The cold request: the node fetches the WebID profile and the key set.
    let cold = proofs(1);
    let t = Instant::now();
    let lat = connection(
        addr,
        path.clone(),
        cold,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(lat.len(), 1);
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;

    let key_headers =
        |n: usize| vec![vec![("authorization".to_string(), format!("Bearer {key}"))]; n];
    let budget = 40_000; // requests per connection per pass at most
    println!(
        "solidbench: {seconds} s per pass, {conns} connections, 1 KiB Turtle GET on a private pod"
    );
    let k1 = pass(
        addr,
        &path,
        (0..conns).map(|_| key_headers(budget)).collect(),
        seconds,
    )
    .await;
    eprintln!("signing proofs for the DPoP pass…");
    let signed: Vec<_> = (0..conns).map(|_| proofs(budget / 4)).collect();
    let d = pass(addr, &path, signed, seconds).await;
    let k2 = pass(
        addr,
        &path,
        (0..conns).map(|_| key_headers(budget)).collect(),
        seconds,
    )
    .await;
    let key_rps = (k1.rps + k2.rps) / 2.0;
    for (name, p) in [("api key", &k1), ("dpop", &d), ("api key (again)", &k2)] {
        println!(
            "{name:>16}: {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            p.rps, p.p50_ms, p.p99_ms
        );
    }
    println!(
        "dpop / api key: {:.2}× requests/s (target ≥ 0.8×); p99 {:.2}×",
        d.rps / key_rps,
        d.p99_ms / ((k1.p99_ms + k2.p99_ms) / 2.0)
    );
    println!("cold first DPoP request (profile + key set fetched): {cold_ms:.1} ms");
    println!(
        "{}",
        json!({"keyRps": key_rps, "dpopRps": d.rps, "ratio": d.rps / key_rps, "coldMs": cold_ms,
               "dpopP99Ms": d.p99_ms, "keyP99Ms": (k1.p99_ms + k2.p99_ms) / 2.0})
    );
    Ok(())
}
