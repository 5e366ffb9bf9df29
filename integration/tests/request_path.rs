//! The request path of issue 16, against two real centers on one real PostgreSQL:
//!
//! - API keys and pod rows are cached in memory: fifty authenticated GETs of an existing
//!   resource read neither a key nor a pod row from the store (`xpod_key_loads_total`,
//!   `xpod_owner_loads_total` stay put), so each costs one metadata round trip (the resource).
//! - Forwarding reuses streams: a hundred GETs through the other center, one after another,
//!   open at most a few mesh streams (`xpod_mesh_forward_streams_opened_total`), not one each;
//!   pod-stream headers a client forges (`x-xpod-hop`, `x-xpod-client`) are replaced.
//! - A revoked key stops working on every center through the change feed: the center that did
//!   not revoke it (and had it cached) refuses it well within the cache's safety-net age
//!   (`key_cache::MAX_AGE`, 30 s), so only the feed can have told it. The time is printed.

use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

/// A counter from a node's `/metrics`.
/// A counter's value, summed over its labelled series.
fn metric(c: &NodeProcess, name: &str) -> u64 {
    let text = Curl::get(format!("{}/metrics", c.url()))
        .send()
        .expect(200)
        .text();
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().trim().parse().unwrap())
        .collect();
    assert!(!values.is_empty(), "{name} missing from /metrics:\n{text}");
    values.iter().sum()
}

#[test]
fn keys_and_pods_are_cached_and_a_revoked_key_stops_everywhere() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-reqpath");
    let centers = start_centers(&tmp, &pg, 2, |_| Vec::new());
    let admin = centers[0].admin_key();

    // A private pod on center-2, and a key for it minted on center-1.
    Curl::new("POST", format!("{}/.cluster/pods", centers[1].url()))
        .bearer(&admin)
        .json(&json!({"podId": "cached"}))
        .send()
        .expect(201);
    let minted = Curl::new("POST", format!("{}/api/v1/auth/api-keys", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"name": "reader", "scopes": ["pod:cached"]}))
        .send()
        .expect(201)
        .json();
    let key = minted["key"].as_str().unwrap().to_string();
    let key_id = minted["keyId"].as_str().unwrap().to_string();
    Curl::new("PUT", format!("{}/cached/a.txt", centers[1].url()))
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body(b"hello".to_vec())
        .send()
        .expect(201);

    // Warm, then count: GETs at the owner read no key and no pod row.
    let get = |c: &NodeProcess| {
        Curl::get(format!("{}/cached/a.txt", c.url()))
            .bearer(&key)
            .arg("--max-time")
            .arg("10")
            .send()
    };
    get(&centers[1]).expect(200);
    let (keys0, pods0) = (
        metric(&centers[1], "xpod_key_loads_total"),
        metric(&centers[1], "xpod_owner_loads_total"),
    );
    for _ in 0..50 {
        assert_eq!(get(&centers[1]).expect(200).text(), "hello");
    }
    assert_eq!(
        metric(&centers[1], "xpod_key_loads_total"),
        keys0,
        "a cached key is not read again"
    );
    assert_eq!(
        metric(&centers[1], "xpod_owner_loads_total"),
        pods0,
        "a cached pod row is not read again"
    );

    // Through center-1: forwarded over the mesh on pooled streams.
    get(&centers[0]).expect(200);
    let (fwd0, opened0) = (
        metric(&centers[0], "xpod_mesh_forwarded_requests_total"),
        metric(&centers[0], "xpod_mesh_forward_streams_opened_total"),
    );
    for i in 0..100 {
        let mut c = Curl::get(format!("{}/cached/a.txt", centers[0].url())).bearer(&key);
        if i % 10 == 0 {
            // A client cannot pose as a hop of the mesh: these are replaced.
            c = c
                .header("x-xpod-hop: elsewhere 9 0")
                .header("x-xpod-client: 203.0.113.9:1");
        }
        let r = c.send();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-xpod-node"), Some("center-2"));
        assert_eq!(r.text(), "hello");
    }
    let forwarded = metric(&centers[0], "xpod_mesh_forwarded_requests_total") - fwd0;
    let opened = metric(&centers[0], "xpod_mesh_forward_streams_opened_total") - opened0;
    println!("100 forwarded GETs: {forwarded} forwarded, {opened} new streams");
    assert_eq!(forwarded, 100);
    assert!(
        opened <= 5,
        "{opened} streams opened for 100 sequential forwarded requests: streams are not reused"
    );

    // Revoke on center-1; center-2 (which has the key cached) refuses it soon after.
    Curl::new(
        "DELETE",
        format!("{}/api/v1/auth/api-keys/{key_id}", centers[0].url()),
    )
    .bearer(&admin)
    .send()
    .expect(204);
    let revoked = Instant::now();
    loop {
        let r = get(&centers[1]);
        if r.status == 401 {
            assert!(r.text().contains("revoked"), "{r:?}");
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "center-2 still accepts the revoked key after 10 s: the change feed did not reach its key cache"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "revoked key refused by the other center {} ms after the revocation answered",
        revoked.elapsed().as_millis()
    );
    // And on the center that revoked it, at once.
    assert_eq!(get(&centers[0]).status, 401);
}

/// `curl` with `ARGS`, printing `<http_version> <status>` last; returns (version, status, body).
fn curl_version(args: &[&str]) -> (String, u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, status) = last.split_once(' ').unwrap_or(("", "0"));
    (
        version.to_string(),
        status.parse().unwrap_or(0),
        body.to_string(),
    )
}

#[test]
fn http2_and_http1_reach_the_same_handlers() {
    // (HTTP/2 over TLS, chosen by ALPN, is checked in `acme.rs`, where a center serves a
    // certificate a client can verify.)
    let node = NodeProcess::start();
    let admin = node.admin_key();
    let auth = format!("Authorization: Bearer {admin}");
    Curl::new("POST", format!("{}/.cluster/pods", node.url()))
        .bearer(&admin)
        .json(&json!({"podId": "h2"}))
        .send()
        .expect(201);
    // Written over HTTP/2 with prior knowledge (h2c)…
    let url = format!("{}/h2/note.txt", node.url());
    let (v, status, _) = curl_version(&[
        "--http2-prior-knowledge",
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        "over h2",
        &url,
    ]);
    assert_eq!((v.as_str(), status), ("2", 201));
    // …read over HTTP/1.1…
    let (v, status, body) = curl_version(&["--http1.1", "-H", &auth, &url]);
    assert_eq!((v.as_str(), status, body.as_str()), ("1.1", 200, "over h2"));
    // Errors are the same JSON over HTTP/2.
    let (v, status, body) = curl_version(&["--http2-prior-knowledge", &url]);
    assert_eq!((v.as_str(), status), ("2", 401), "{body}");
    assert!(body.contains("\"code\""), "{body}");
}
