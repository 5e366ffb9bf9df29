//! The cluster's zone beyond xpod's own DNS servers, against BIND 9 (installed by
//! `integration/run-tests.sh`):
//! - as a **secondary** of the centers: it transfers the zone (AXFR, TSIG-signed), answers the
//!   same records, and follows a migration after xpod's NOTIFY; unsigned or unknown-key
//!   transfers are refused;
//! - as the **primary** of a zone hosted elsewhere (RFC 2136 mode): the center pushes its records
//!   as TSIG-signed updates — pods, a migration, `_acme-challenge` TXT records set and removed —
//!   while BIND refuses an unsigned update; and Pebble validates an ACME order against BIND,
//!   so the centers' certificate is obtained through RFC 2136.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use xpod_integration::bind::{tsig_keygen, Bind};
use xpod_integration::curl::Curl;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{free_port, NodeProcess, TempDir};
use xpod_integration::pebble::Pebble;
use xpod_integration::pg::PgServer;

const ZONE: &str = "cluster.test";

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(port: u16, name: &str, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(port, &["+short", name, kind])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn migrate(c: &NodeProcess, key: &str, pod: &str, to: &str) {
    Curl::new("POST", format!("{}/.cluster/pods/{pod}/migrate", c.url()))
        .bearer(key)
        .json(&json!({"targetNode": to}))
        .send()
        .expect(202);
}

#[test]
fn bind_as_secondary_transfers_the_zone_and_follows_notify() {
    let tmp = TempDir::new("xpod-axfr");
    let pg = PgServer::start().expect("PostgreSQL");
    let key = tsig_keygen("xfr-key").expect("tsig-keygen");
    let bind_port = free_port();
    let dns = [free_port(), free_port()];
    // BIND's port must be known before it starts: the centers NOTIFY it.
    let centers = start_centers(&tmp, &pg, 2, |i| {
        vec![
            ("XPOD_DNS_LISTEN", format!("127.0.0.1:{}", dns[i - 1])),
            ("XPOD_DNS_ZONE", ZONE.into()),
            ("XPOD_HTTP_PODS_DOMAIN", format!("pods.{ZONE}")),
            ("XPOD_DNS_ADDRESSES", format!("10.0.0.{i}")),
            ("XPOD_DNS_TSIG_KEY_NAME", "xfr-key".into()),
            ("XPOD_DNS_TSIG_SECRET", key.secret.clone()),
            ("XPOD_DNS_SECONDARIES", format!("127.0.0.1:{bind_port}")),
        ]
    });
    let admin = centers[0].admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);

    eventually(15, "center-1's DNS lists both centers", || {
        short(dns[0], ZONE, "A") == ["10.0.0.1", "10.0.0.2"]
    });
    // Transfers need the key: unsigned → refused; a wrong key → refused; the right key → the zone.
    let unsigned = dig(dns[0], &["AXFR", ZONE]);
    assert!(!unsigned.contains("alice.pods"), "{unsigned}");
    assert!(
        unsigned.contains("Transfer failed") || unsigned.contains("REFUSED"),
        "{unsigned}"
    );
    let wrong = dig(
        dns[0],
        &[
            "-y",
            "hmac-sha256:xfr-key:d3JvbmctLXdyb25nLS13cm9uZy0td3Jvbmc=",
            "AXFR",
            ZONE,
        ],
    );
    assert!(!wrong.contains("alice.pods"), "{wrong}");
    let signed = dig(
        dns[0],
        &[
            "-y",
            &format!("hmac-sha256:xfr-key:{}", key.secret),
            "AXFR",
            ZONE,
        ],
    );
    assert!(signed.contains("alice.pods.cluster.test."), "{signed}");
    assert!(!signed.contains("Transfer failed"), "{signed}");
    assert_eq!(
        signed.lines().filter(|l| l.contains("\tSOA\t")).count(),
        2,
        "SOA first and last: {signed}"
    );

    // BIND as a secondary of center-1, on the port the centers NOTIFY.
    let bind = Bind::start_on(
        &tmp.path().join("bind"),
        bind_port,
        &key,
        &format!(
            "zone \"{ZONE}\" {{ type secondary; primaries port {} {{ 127.0.0.1 key xfr-key; }}; file \"secondary.db\"; }};",
            dns[0]
        ),
        ZONE,
    )
    .expect("named as a secondary");
    // The secondary answers what the centers answer (once both centers' rows are in the zone
    // it transferred: a later change arrives by NOTIFY).
    let names = [
        (ZONE, "A"),
        (ZONE, "NS"),
        ("ns.cluster.test", "A"),
        ("center-2.cluster.test", "A"),
        ("alice.pods.cluster.test", "A"),
    ];
    eventually(30, "the secondary answers what the centers answer", || {
        names
            .iter()
            .all(|(name, kind)| bind.short(name, kind) == short(dns[0], name, kind))
    });
    assert_eq!(bind.short(ZONE, "A"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(bind.short("alice.pods.cluster.test", "A"), ["10.0.0.1"]);

    // A migration: the centers NOTIFY, BIND transfers again and answers the new owner.
    migrate(&centers[0], &admin, "alice", "center-2");
    eventually(30, "the secondary follows the migration", || {
        bind.short("alice.pods.cluster.test", "A") == ["10.0.0.2"]
    });
    assert!(
        bind.log().contains("notify from 127.0.0.1"),
        "{}",
        bind.log()
    );
}

#[test]
fn rfc2136_pushes_records_to_a_bind_primary_and_acme_validates_through_it() {
    let tmp = TempDir::new("xpod-rfc2136");
    let pg = PgServer::start().expect("PostgreSQL");
    let key = tsig_keygen("ddns-key").expect("tsig-keygen");
    let bind_dir = tmp.path().join("bind");
    std::fs::create_dir_all(&bind_dir).unwrap();
    std::fs::write(
        bind_dir.join("primary.db"),
        format!(
            "$TTL 60\n@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n@ IN NS ns1.{ZONE}.\nns1 IN A 192.0.2.53\n"
        ),
    )
    .unwrap();
    let bind = Bind::start(
        &bind_dir,
        &key,
        &format!(
            "zone \"{ZONE}\" {{ type primary; file \"primary.db\"; update-policy {{ grant ddns-key zonesub ANY; }}; }};"
        ),
        ZONE,
    )
    .expect("named as a primary");
    let pebble = Pebble::start(
        &tmp.path().join("pebble"),
        &format!("127.0.0.1:{}", bind.port),
        None,
    )
    .expect("Pebble");
    let tls = [free_port(), free_port()];
    let centers = start_centers(&tmp, &pg, 2, |i| {
        vec![
            ("XPOD_DNS_ZONE", ZONE.into()),
            ("XPOD_HTTP_PODS_DOMAIN", format!("pods.{ZONE}")),
            ("XPOD_DNS_ADDRESSES", format!("10.0.0.{i}")),
            ("XPOD_DNS_TSIG_KEY_NAME", "ddns-key".into()),
            ("XPOD_DNS_TSIG_SECRET", key.secret.clone()),
            ("XPOD_DNS_UPDATE_SERVER", format!("127.0.0.1:{}", bind.port)),
            (
                "XPOD_TUNNEL_TLS_LISTEN",
                format!("127.0.0.1:{}", tls[i - 1]),
            ),
            ("XPOD_ACME_DIRECTORY", pebble.directory_url()),
            (
                "XPOD_ACME_DIRECTORY_CA",
                pebble.directory_ca().display().to_string(),
            ),
            (
                "XPOD_ACME_KEY_SECRET",
                "rfc2136-test-secret-0123456789abcdefghij".into(),
            ),
        ]
    });
    let admin = centers[0].admin_key();
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);

    // The centers' and the pod's records land in BIND; its own SOA and NS stay.
    eventually(20, "the records are pushed", || {
        bind.short("alice.pods.cluster.test", "A") == ["10.0.0.1"]
            && bind.short(ZONE, "A") == ["10.0.0.1", "10.0.0.2"]
    });
    assert_eq!(bind.short("center-2.cluster.test", "A"), ["10.0.0.2"]);
    assert_eq!(bind.short(ZONE, "NS"), ["ns1.cluster.test."]);
    migrate(&centers[0], &admin, "alice", "center-2");
    eventually(20, "the migration is pushed", || {
        bind.short("alice.pods.cluster.test", "A") == ["10.0.0.2"]
    });

    // TXT records set through the API appear, and go when removed.
    let txt =
        json!({"name": "_acme-challenge.www.cluster.test", "value": "token-1", "ttlSeconds": 600});
    Curl::new("POST", format!("{}/.cluster/dns/txt", centers[1].url()))
        .bearer(&admin)
        .json(&txt)
        .send()
        .expect(204);
    eventually(20, "the TXT record is pushed", || {
        bind.short("_acme-challenge.www.cluster.test", "TXT") == ["\"token-1\""]
    });
    Curl::new("DELETE", format!("{}/.cluster/dns/txt", centers[1].url()))
        .bearer(&admin)
        .json(&json!({"name": "_acme-challenge.www.cluster.test", "value": "token-1"}))
        .send()
        .expect(204);
    eventually(20, "the TXT record is removed", || {
        bind.short("_acme-challenge.www.cluster.test", "TXT")
            .is_empty()
    });

    // BIND refuses an update without the key (so only the centers can change the zone).
    let mut nsupdate = Command::new("nsupdate")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate");
    use std::io::Write as _;
    write!(
        nsupdate.stdin.take().unwrap(),
        "server 127.0.0.1 {}\nzone {ZONE}\nupdate add evil.{ZONE} 60 A 203.0.113.66\nsend\n",
        bind.port
    )
    .unwrap();
    let out = nsupdate.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("REFUSED"),
        "an unsigned update is refused: {said}"
    );
    assert!(bind.short(&format!("evil.{ZONE}"), "A").is_empty());

    // ACME through RFC 2136: Pebble asked BIND for the challenges, and both centers serve the
    // certificate.
    for c in &centers {
        eventually(90, "an ACME certificate obtained through RFC 2136", || {
            let v = Curl::get(format!("{}/.cluster/certs", c.url()))
                .bearer(&admin)
                .send()
                .expect(200)
                .json();
            v["serving"]["source"] == "acme"
        });
    }
    let root = pebble.root().unwrap();
    let r = Curl::get(format!("https://{ZONE}:{}/health", tls[1]))
        .arg("--cacert")
        .arg(root.to_str().unwrap())
        .arg("--resolve")
        .arg(format!("{ZONE}:{}:127.0.0.1", tls[1]))
        .send();
    assert_eq!(r.status, 200, "{}", r.stderr);
    // The challenges were removed from BIND after the order.
    eventually(20, "challenge records removed", || {
        bind.short(&format!("_acme-challenge.{ZONE}"), "TXT")
            .is_empty()
    });
}
