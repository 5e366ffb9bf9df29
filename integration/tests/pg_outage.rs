//! Issue 18: PostgreSQL stopped for 20 s, then started. Two centers keep answering: reads of
//! what the owner already knew keep working (from its last known rows, marked as such), writes
//! fail fast with a retryable 503, and everything recovers without restarting a node, with no
//! pod moved by the outage (every lease lapsed together; nobody judges the others until its
//! own lease has run again for TTL + window).
//!
//! This test stops the server, so it runs its own throwaway PostgreSQL cluster even when
//! `XPOD_TEST_PG_URL` names a shared one.

use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::{Curl, Resp};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::TempDir;
use xpod_integration::pg::PgServer;

fn put(url: &str, key: &str, path: &str, body: &str) -> Resp {
    Curl::new("PUT", format!("{url}{path}"))
        .bearer(key)
        .header("Content-Type: text/plain")
        .body(body.as_bytes().to_vec())
        .arg("--max-time")
        .arg("20")
        .send()
}

fn get(url: &str, key: &str, path: &str) -> Resp {
    Curl::get(format!("{url}{path}"))
        .bearer(key)
        .arg("--max-time")
        .arg("20")
        .send()
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_postgres_outage_keeps_cached_reads_fails_writes_fast_and_heals() {
    let pg = PgServer::start_private().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-pg-outage");
    let centers = start_centers(&tmp, &pg, 2, |_| Vec::new());
    let key = centers[0].admin_key();
    let urls: Vec<String> = centers.iter().map(|c| c.url()).collect();
    for (i, pod) in ["one", "two"].iter().enumerate() {
        Curl::new("POST", format!("{}/.cluster/pods", urls[i]))
            .bearer(&key)
            .json(&json!({"podId": pod}))
            .send()
            .expect(201);
    }
    eventually(20, "both centers reach both pods", || {
        urls.iter().all(|u| {
            ["one", "two"]
                .iter()
                .all(|p| get(u, &key, &format!("/{p}/")).status == 200)
        })
    });
    for pod in ["one", "two"] {
        let r = put(&urls[0], &key, &format!("/{pod}/known.txt"), "known before");
        assert!(matches!(r.status, 201 | 204), "{r:?}");
        for u in &urls {
            assert_eq!(
                get(u, &key, &format!("/{pod}/known.txt")).text(),
                "known before"
            );
        }
    }

    pg.stop().expect("stopping PostgreSQL");
    let stopped = Instant::now();
    let (mut reads, mut writes, mut slowest_write) = (0, 0, Duration::ZERO);
    while stopped.elapsed() < Duration::from_secs(20) {
        for u in &urls {
            for pod in ["one", "two"] {
                let r = get(u, &key, &format!("/{pod}/known.txt"));
                assert_eq!(
                    r.status, 200,
                    "a known document via {u} during the outage: {r:?}"
                );
                assert_eq!(r.text(), "known before");
                assert!(r.header("x-xpod-metadata").is_some(), "{r:?}");
                reads += 1;
                let t = Instant::now();
                let r = put(u, &key, &format!("/{pod}/during.txt"), "during");
                let took = t.elapsed();
                slowest_write = slowest_write.max(took);
                assert_eq!(r.status, 503, "a write via {u} during the outage: {r:?}");
                assert!(r.header("retry-after").is_some(), "{r:?}");
                assert!(
                    took < Duration::from_secs(5),
                    "a write took {took:?} to fail"
                );
                writes += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "outage: {reads} reads answered from the owners' last known rows, {writes} writes refused (slowest refusal {:.2} s)",
        slowest_write.as_secs_f64()
    );

    pg.start_again().expect("starting PostgreSQL again");
    let started = Instant::now();
    eventually(40, "writes work again through both centers", || {
        urls.iter().all(|u| {
            ["one", "two"].iter().all(|pod| {
                let r = put(u, &key, &format!("/{pod}/after.txt"), "after");
                matches!(r.status, 201 | 204)
            })
        })
    });
    println!(
        "outage: writes accepted again {:.1} s after PostgreSQL came back",
        started.elapsed().as_secs_f64()
    );
    // Nothing moved: every lease lapsed at once, and the centers renewed before judging.
    std::thread::sleep(Duration::from_secs(30));
    for (i, pod) in ["one", "two"].iter().enumerate() {
        let row = get(&urls[0], &key, &format!("/.cluster/pods/{pod}"))
            .expect(200)
            .json();
        assert_eq!(row["nodeId"], format!("center-{}", i + 1), "{row}");
        assert_eq!(row["epoch"], 1, "{row}");
        for u in &urls {
            let r = get(u, &key, &format!("/{pod}/after.txt"));
            assert_eq!(r.status, 200, "{r:?}");
            assert!(r.header("x-xpod-metadata").is_none(), "fresh again: {r:?}");
            assert_eq!(get(u, &key, &format!("/{pod}/during.txt")).status, 404);
        }
    }
}
