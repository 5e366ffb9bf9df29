//! The centers' authoritative DNS, queried with `dig` (installed by `integration/run-tests.sh`):
//! two centers on one PostgreSQL and an edge, as separate processes. A pod's name answers its
//! owner's center and changes right after a migration, at both centers; edge names answer the
//! center holding the edge; the apex has SOA and NS; unknown names are NXDOMAIN and empty types
//! NODATA, both with the SOA; other zones are refused; TCP works; garbage does not stop it.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_edge, wait_online};
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{free_port, xpod_command, NodeProcess, TempDir};
use xpod_integration::pg::PgServer;

/// `dig @127.0.0.1 -p PORT ARGS…`, its stdout (panics if dig fails to run).
fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("running dig (bash integration/run-tests.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sorted `+short` answers.
fn short(port: u16, name: &str, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(port, &["+short", name, kind])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn create_pod(c: &NodeProcess, key: &str, pod: &str) {
    Curl::new("POST", format!("{}/.cluster/pods", c.url()))
        .bearer(key)
        .json(&json!({"podId": pod}))
        .send()
        .expect(201);
}

#[test]
fn centers_answer_for_pods_edges_and_the_zone() {
    let tmp = TempDir::new("xpod-dns");
    let pg = PgServer::start().expect("PostgreSQL");
    let ports = [free_port(), free_port()];
    let centers = start_centers(&tmp, &pg, 2, |i| {
        vec![
            ("XPOD_DNS_LISTEN", format!("127.0.0.1:{}", ports[i - 1])),
            ("XPOD_DNS_ZONE", "cluster.test".into()),
            ("XPOD_HTTP_PODS_DOMAIN", "pods.cluster.test".into()),
            ("XPOD_TUNNEL_EDGE_DOMAIN", "edges.cluster.test".into()),
            (
                "XPOD_DNS_ADDRESSES",
                if i == 1 {
                    "10.0.0.1"
                } else {
                    "10.0.0.2, fd00::2"
                }
                .into(),
            ),
        ]
    });
    let key = centers[0].admin_key();
    create_pod(&centers[0], &key, "alice");
    let _edge = start_edge(&tmp, &centers[0], "edge-a", "");
    wait_online(&centers[0], "edge-a");

    for port in ports {
        // Both centers know both centers' addresses (published in the nodes rows).
        eventually(10, "the apex lists both centers", || {
            short(port, "cluster.test", "A") == ["10.0.0.1", "10.0.0.2"]
        });
        assert_eq!(
            short(port, "ns.cluster.test", "A"),
            ["10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(short(port, "cluster.test", "NS"), ["ns.cluster.test."]);
        let soa = short(port, "cluster.test", "SOA");
        assert_eq!(soa.len(), 1, "{soa:?}");
        assert!(
            soa[0].starts_with("ns.cluster.test. hostmaster.cluster.test. "),
            "{soa:?}"
        );
        assert_eq!(short(port, "center-2.cluster.test", "A"), ["10.0.0.2"]);
        assert_eq!(short(port, "center-2.cluster.test", "AAAA"), ["fd00::2"]);

        // A pod: its owner's center, authoritative.
        let full = dig(port, &["alice.pods.cluster.test", "A"]);
        assert!(full.contains("status: NOERROR"), "{full}");
        assert!(full.contains("flags: qr aa"), "authoritative: {full}");
        assert_eq!(short(port, "alice.pods.cluster.test", "A"), ["10.0.0.1"]);
        // Names are case-insensitive.
        assert_eq!(short(port, "ALICE.Pods.Cluster.Test", "A"), ["10.0.0.1"]);

        // An edge and its services: the center holding its tunnel.
        assert_eq!(short(port, "edge-a.edges.cluster.test", "A"), ["10.0.0.1"]);
        assert_eq!(
            short(port, "web.edge-a.edges.cluster.test", "A"),
            ["10.0.0.1"]
        );

        // Unknown names: NXDOMAIN with the SOA; a known name without that type: NODATA + SOA.
        for unknown in [
            "nobody.pods.cluster.test",
            "edge-zz.edges.cluster.test",
            "what.cluster.test",
            "a.b.c.cluster.test",
        ] {
            let out = dig(port, &["+noall", "+comments", "+authority", unknown, "A"]);
            assert!(out.contains("status: NXDOMAIN"), "{unknown}: {out}");
            assert!(out.contains("flags: qr aa"), "{unknown}: {out}");
            assert!(
                out.contains("IN\tSOA\tns.cluster.test. hostmaster.cluster.test."),
                "{unknown}: SOA in authority: {out}"
            );
        }
        let nodata = dig(
            port,
            &[
                "+noall",
                "+comments",
                "+authority",
                "+answer",
                "alice.pods.cluster.test",
                "TXT",
            ],
        );
        assert!(nodata.contains("status: NOERROR"), "{nodata}");
        assert!(nodata.contains("ANSWER: 0"), "{nodata}");
        assert!(nodata.contains("IN\tSOA"), "{nodata}");
        let nodata = dig(
            port,
            &["+noall", "+comments", "alice.pods.cluster.test", "AAAA"],
        );
        assert!(
            nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
            "{nodata}"
        );

        // Other zones are refused; TCP answers the same.
        let other = dig(port, &["example.com", "A"]);
        assert!(other.contains("status: REFUSED"), "{other}");
        assert_eq!(
            dig(port, &["+tcp", "+short", "alice.pods.cluster.test", "A"]).trim(),
            "10.0.0.1"
        );
    }

    // A migration changes the answer right away, at both centers.
    let started = Instant::now();
    Curl::new(
        "POST",
        format!("{}/.cluster/pods/alice/migrate", centers[0].url()),
    )
    .bearer(&key)
    .json(&json!({"targetNode": "center-2"}))
    .send()
    .expect(202);
    for port in ports {
        eventually(5, "the pod's name follows the migration", || {
            short(port, "alice.pods.cluster.test", "A") == ["10.0.0.2"]
        });
        assert_eq!(short(port, "alice.pods.cluster.test", "AAAA"), ["fd00::2"]);
    }
    println!(
        "both centers answered the new owner {:?} after the migration call",
        started.elapsed()
    );

    // The zone as served, through the CLI: SOA first, the pod at its new owner, the edge and
    // its wildcard at its center.
    let out = xpod_command()
        .args(["dns", "records", "--server"])
        .arg(centers[1].url())
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0][..4],
        ["cluster.test.", "30", "IN", "SOA"],
        "{text}"
    );
    for want in [
        ["alice.pods.cluster.test.", "30", "IN", "A", "10.0.0.2"],
        ["alice.pods.cluster.test.", "30", "IN", "AAAA", "fd00::2"],
        ["edge-a.edges.cluster.test.", "30", "IN", "A", "10.0.0.1"],
        ["*.edge-a.edges.cluster.test.", "30", "IN", "A", "10.0.0.1"],
        ["center-1.cluster.test.", "30", "IN", "A", "10.0.0.1"],
        ["cluster.test.", "30", "IN", "NS", "ns.cluster.test."],
    ] {
        assert!(
            lines.iter().any(|l| l[..] == want[..]),
            "{want:?} in {text}"
        );
    }

    // ACME DNS-01 challenges: TXT records set through the admin API, served by every center.
    let txt = |method: &str, body: serde_json::Value, key: Option<&str>| {
        let mut c = Curl::new(method, format!("{}/.cluster/dns/txt", centers[1].url())).json(&body);
        if let Some(k) = key {
            c = c.bearer(k);
        }
        c.send()
    };
    let name = "_acme-challenge.alice.pods.cluster.test";
    assert_eq!(
        txt("POST", json!({"name": name, "value": "token-1"}), None).status,
        401,
        "the TXT API needs the admin key"
    );
    let bad = txt(
        "POST",
        json!({"name": "alice.pods.cluster.test", "value": "x"}),
        Some(&key),
    );
    assert_eq!(bad.status, 400, "only _acme-challenge names: {bad:?}");
    assert!(bad.text().contains("_acme-challenge"), "{}", bad.text());
    for v in ["token-2", "token-1"] {
        txt(
            "POST",
            json!({"name": name, "value": v, "ttlSeconds": 120}),
            Some(&key),
        )
        .expect(204);
    }
    for port in ports {
        assert_eq!(short(port, name, "TXT"), ["\"token-1\"", "\"token-2\""]);
    }
    txt(
        "DELETE",
        json!({"name": name, "value": "token-1"}),
        Some(&key),
    )
    .expect(204);
    txt(
        "DELETE",
        json!({"name": name, "value": "token-2"}),
        Some(&key),
    )
    .expect(204);
    txt(
        "DELETE",
        json!({"name": name, "value": "token-2"}),
        Some(&key),
    )
    .expect(404);
    let gone = dig(ports[0], &[name, "TXT"]);
    assert!(gone.contains("status: NXDOMAIN"), "{gone}");

    // Garbage on UDP: too short (ignored), a header with nonsense after it (FORMERR with its id);
    // the server keeps answering.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&[1, 2, 3], ("127.0.0.1", ports[0])).unwrap();
    let mut junk = vec![0xAB, 0xCD, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xFF; 20]);
    s.send_to(&junk, ("127.0.0.1", ports[0])).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).expect("a FORMERR answer");
    assert!(n >= 12);
    assert_eq!(
        &buf[..2],
        &[0xAB, 0xCD],
        "the answer carries the query's id"
    );
    assert_eq!(buf[3] & 0x0F, 1, "RCODE FORMERR");
    assert_eq!(
        short(ports[0], "alice.pods.cluster.test", "A"),
        ["10.0.0.2"]
    );
}
