//! The DNS server's request path for fuzzing, shared by the cargo-fuzz target in `node/fuzz`
//! (nightly) and the randomized test below (stable `cargo test`). [`packet`] runs arbitrary
//! bytes through exactly what a UDP datagram and a TCP message get — parsing, the TSIG check,
//! the AXFR gate, the answer, truncation — against a small cluster (embedded SQLite, a pod,
//! a TXT record, a TSIG key and a secondary configured). It panics only if an invariant breaks:
//! - no panic anywhere on the path;
//! - every reply parses as a DNS response with the request's id;
//! - a UDP reply never exceeds what the client may take (512 bytes, or its EDNS size ≤ 1232);
//! - nothing is answered for a name outside the zone but REFUSED (not an open resolver), and a
//!   transfer is never granted (the fuzzer has no key).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;

use super::{reply, Dns, MAX_UDP};

struct State {
    rt: tokio::runtime::Runtime,
    dns: Arc<Dns>,
}

#[allow(clippy::field_reassign_with_default)] // a config built key by key reads better
fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dns = rt.block_on(async {
            let dir = std::env::temp_dir().join(format!(
                "xpod-dns-fuzz-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            let mut c = xpod_config::Config::default();
            c.node_id = "fuzz-center".into();
            c.data_dir = dir;
            c.database.url = Some(xpod_config::Secret::new("sqlite::memory:"));
            c.dns.zone = Some("cluster.test".into());
            c.dns.addresses = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];
            c.http.pods_domain = Some("pods.cluster.test".into());
            c.tunnel.edge_domain = Some("edges.cluster.test".into());
            c.dns.tsig_key_name = Some("xfr-key".into());
            c.dns.tsig_secret = Some(xpod_config::Secret::new(
                "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==",
            ));
            c.dns.secondaries = vec!["127.0.0.1:5300".parse().expect("addr")];
            let app = crate::app::App::open(c, "http://127.0.0.1:1".into())
                .await
                .expect("an in-memory node");
            app.meta
                .create_pod(&xpod_storage::meta::NewPod {
                    pod_id: "alice".into(),
                    base_url: "http://alice.pods.cluster.test".into(),
                    account_id: None,
                    node_id: "fuzz-center".into(),
                    access_mode: xpod_storage::meta::AccessMode::Private,
                })
                .await
                .expect("a pod");
            app.meta
                .put_txt(
                    "_acme-challenge.cluster.test",
                    "token",
                    xpod_storage::meta::now_millis() + 3_600_000,
                )
                .await
                .expect("a TXT record");
            Arc::new(
                Dns::new(&app.config, app.meta.clone(), app.owners.clone()).expect("the DNS view"),
            )
        });
        State { rt, dns }
    })
}

/// Runs `data` as a UDP datagram and as a TCP message; checks the invariants above. Returns
/// how many replies with answers it checked (for the test's own sanity).
pub fn packet(data: &[u8]) -> usize {
    let s = state();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut answered = 0;
    for limit in [Some(MAX_UDP), None] {
        let Some(out) = s.rt.block_on(reply(&s.dns, data, limit, peer)) else {
            continue;
        };
        let resp = Message::from_vec(&out).expect("a reply that parses");
        assert_eq!(resp.metadata.message_type, MessageType::Response);
        assert!(data.len() >= 2, "a reply to fewer than 2 bytes");
        assert_eq!(resp.metadata.id, u16::from_be_bytes([data[0], data[1]]));
        if limit.is_some() {
            let max = Message::from_vec(data)
                .ok()
                .and_then(|m| {
                    m.edns
                        .map(|e| (e.max_payload() as usize).clamp(512, MAX_UDP))
                })
                .unwrap_or(512);
            assert!(out.len() <= max, "UDP reply of {} bytes > {max}", out.len());
        }
        if let Some(q) = resp.queries.first() {
            let inside = s.dns.zone.zone_of(&q.name().to_lowercase());
            if !inside && resp.metadata.response_code == ResponseCode::NoError {
                assert!(
                    resp.answers.is_empty(),
                    "answered outside the zone: {resp:?}"
                );
            }
            if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
                assert!(resp.answers.is_empty(), "a transfer without the key");
            }
        }
        answered += usize::from(!resp.answers.is_empty());
    }
    answered
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, OpCode, Query};
    use hickory_proto::rr::Name;

    use super::*;

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    /// Valid queries, then random bytes and mutations of valid queries (stable-Rust stand-in
    /// for the cargo-fuzz target).
    #[test]
    fn random_and_mutated_packets_keep_the_invariants() {
        let seeds: Vec<Vec<u8>> = [
            ("alice.pods.cluster.test.", RecordType::A, false),
            ("cluster.test.", RecordType::SOA, true),
            ("cluster.test.", RecordType::AXFR, false),
            ("_acme-challenge.cluster.test.", RecordType::TXT, true),
            ("x.edges.cluster.test.", RecordType::AAAA, false),
            ("example.com.", RecordType::A, false),
            ("nobody.pods.cluster.test.", RecordType::MX, true),
        ]
        .iter()
        .map(|(n, t, e)| query(n, *t, *e))
        .collect();
        // The valid queries inside the zone are answered (A, SOA, TXT: UDP and TCP each).
        let answered: usize = seeds.iter().map(|s| packet(s)).sum();
        assert_eq!(answered, 6, "the seeds reach the answer path");
        let mut rng = rand::rng();
        use rand::Rng as _;
        for i in 0..3000 {
            let mut p = if i % 3 == 0 {
                let len = rng.random_range(0..600);
                (0..len).map(|_| rng.random()).collect()
            } else {
                seeds[i % seeds.len()].clone()
            };
            if !p.is_empty() {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..p.len());
                    match rng.random_range(0..3) {
                        0 => p[at] = rng.random(),
                        1 => p.truncate(at.max(1)),
                        _ => p.insert(at, rng.random()),
                    }
                }
            }
            packet(&p);
        }
        // A valid query with a mutated id still gets its answer with that id.
        let mut q = seeds[0].clone();
        q[0] ^= 0xFF;
        assert_eq!(packet(&q), 2);
        // An oversized message (a query with 64 KiB of junk after it) is handled too.
        let mut big = seeds[0].clone();
        big.resize(65_000, 0xAB);
        packet(&big);
    }
}
