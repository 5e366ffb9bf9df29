//! The S3 test server itself ([`xpod_integration::s3::S3Server`], a throwaway moto): it starts,
//! stores and lists objects through the signed-curl helpers, logs every request it answers (what
//! the region tests count writes with), and after `stop` its port refuses connections (what the
//! region tests use to make a region unreachable). Without moto it fails loudly: run
//! `bash integration/run-tests.sh`, which installs it.

use std::net::TcpStream;
use std::time::Duration;

use xpod_integration::s3::S3Server;

#[test]
fn moto_stores_lists_logs_and_stops() {
    let mut s3 = S3Server::start();
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{}", s3.port()));
    s3.create_bucket("region-a");
    assert!(s3.list_keys("region-a", "").is_empty());
    assert_eq!(s3.get_object("region-a", "blobs/missing"), None);

    // Binary bytes, a key that needs escaping in the URL and in the XML listing.
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let odd_key = "blobs/a b&c<d>'\"é+?#%.bin";
    s3.put_object("region-a", "blobs/ab", &body);
    s3.put_object("region-a", odd_key, b"odd");
    s3.put_object("region-a", "other/x", b"");
    // A body above curl's 1 MiB Expect: 100-continue threshold.
    let big = vec![7u8; 2 << 20];
    s3.put_object("region-a", "blobs/big", &big);

    assert_eq!(
        s3.get_object("region-a", "blobs/ab").as_deref(),
        Some(&body[..])
    );
    assert_eq!(
        s3.get_object("region-a", odd_key).as_deref(),
        Some(&b"odd"[..])
    );
    assert_eq!(
        s3.get_object("region-a", "other/x").as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        s3.get_object("region-a", "blobs/big").map(|b| b.len()),
        Some(big.len())
    );

    let mut want = vec!["blobs/ab", "blobs/big", odd_key];
    want.sort();
    assert_eq!(s3.list_keys("region-a", "blobs/"), want);
    assert_eq!(s3.list_keys("region-a", "").len(), 4);
    // Continuation tokens: one key per page.
    assert_eq!(s3.list_keys_paged("region-a", "blobs/", 1), want);

    // The request log shows the writes; a second PUT of the same key counts twice.
    let reqs = s3.requests();
    assert!(reqs.iter().any(|r| r == "PUT /region-a"), "{reqs:#?}");
    assert!(
        reqs.iter().any(|r| r == "PUT /region-a/blobs/ab"),
        "{reqs:#?}"
    );
    assert_eq!(s3.write_attempts("region-a", "blobs/ab"), 1, "{reqs:#?}");
    assert_eq!(s3.write_attempts("region-a", odd_key), 1, "{reqs:#?}");
    s3.put_object("region-a", "blobs/ab", b"again");
    assert_eq!(s3.write_attempts("region-a", "blobs/ab"), 2);
    let log = s3.request_log();
    assert!(
        log.iter()
            .any(|r| r.method == "GET" && r.path() == "/region-a/blobs/missing" && r.status == 404),
        "{log:#?}"
    );

    // A second server is independent (its own port, empty).
    let other = S3Server::start();
    assert_ne!(other.port(), s3.port());
    other.create_bucket("region-b");
    assert!(other.list_keys("region-b", "").is_empty());
    drop(other);

    // stop: the port refuses connections; a second stop is a no-op; the log stays readable.
    let port = s3.port();
    s3.stop();
    s3.stop();
    let refused = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    );
    assert!(
        refused.is_err(),
        "port {port} still accepts connections after stop"
    );
    assert!(!s3.requests().is_empty());
}
