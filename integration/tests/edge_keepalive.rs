//! Keep-alive through the edge tunnel: a center reuses its streams to an edge's HTTP service, so
//! the service sees a few keep-alive connections rather than one connection per request — and
//! services that close their connections (after every response, or when idle) still get every
//! request, none lost to a stream that closed under it.
//!
//! A center and an edge run as real processes; the backends are small HTTP/1.1 servers in this
//! test that count the connections they accept.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_center, start_edge, wait_online};
use xpod_integration::node::{NodeProcess, TempDir};

/// How a backend treats a connection after answering a request.
#[derive(Clone, Copy)]
enum After {
    /// Keeps it open for the next request (HTTP/1.1 keep-alive).
    KeepAlive,
    /// Closes it without saying so (no `Connection: close`): a peer must not reuse it.
    CloseSilently,
    /// Keeps it, but closes it when no request comes within this long.
    IdleClose(Duration),
}

/// An HTTP/1.1 backend answering GETs with `conn=<n> req=<k>`: the number of the connection
/// (from 1, in accept order) and of the request on it. Returns its address and its count of
/// accepted connections.
fn start_backend(after: After) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::spawn(move || {
                let idle = match after {
                    After::IdleClose(d) => d,
                    _ => Duration::from_secs(60),
                };
                conn.set_read_timeout(Some(idle)).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                for k in 1.. {
                    // The request head (GETs without bodies only).
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" && !first => break,
                            Ok(_) => first = false,
                        }
                    }
                    let body = format!("conn={n} req={k}");
                    let sent = write!(
                        out,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sent.is_err() || matches!(after, After::CloseSilently) {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn get(center: &NodeProcess, host: &str) -> xpod_integration::curl::Resp {
    let port = center.port();
    Curl::get(format!("http://{host}:{port}/"))
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .send()
}

#[test]
fn edge_services_get_keep_alive_connections_and_no_request_is_lost() {
    let tmp = TempDir::new("xpod-edge-keepalive");
    let center = start_center(&tmp, "center-1", "[tunnel]\nedge_domain = \"edges.test\"\n");
    let (keep, keep_conns) = start_backend(After::KeepAlive);
    let (close, close_conns) = start_backend(After::CloseSilently);
    let (idle, _) = start_backend(After::IdleClose(Duration::from_millis(300)));
    let _edge = start_edge(
        &tmp,
        &center,
        "edge-a",
        &format!(
            "[[tunnel.services]]\nname = \"keep\"\nlocal = \"{keep}\"\n\n\
             [[tunnel.services]]\nname = \"close\"\nlocal = \"{close}\"\n\n\
             [[tunnel.services]]\nname = \"idle\"\nlocal = \"{idle}\"\n"
        ),
    );
    wait_online(&center, "edge-a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&center, "keep.edge-a.edges.test").status != 200 {
        assert!(Instant::now() < deadline, "the service never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 40 requests, each from a new client connection to the center: the service sees them on
    // (almost) one connection, and later requests on it are numbered on.
    let before = keep_conns.load(Ordering::SeqCst);
    let mut last = String::new();
    for _ in 0..40 {
        last = get(&center, "keep.edge-a.edges.test").expect(200).text();
    }
    let opened = keep_conns.load(Ordering::SeqCst) - before;
    assert!(
        opened <= 2,
        "40 sequential requests opened {opened} connections to a keep-alive service (last answer {last:?})"
    );
    let on_last: usize = last
        .rsplit("req=")
        .next()
        .and_then(|k| k.parse().ok())
        .unwrap();
    assert!(
        on_last >= 20,
        "the last request was only number {on_last} on its connection"
    );

    // A service that closes every connection after one answer, without saying so: every request
    // still gets its answer, each on a new connection.
    for i in 0..40 {
        let r = get(&center, "close.edge-a.edges.test");
        assert_eq!(r.status, 200, "request {i} to a closing service: {r:?}");
        assert!(r.text().ends_with("req=1"), "request {i}: {}", r.text());
    }
    assert!(close_conns.load(Ordering::SeqCst) >= 40);

    // A service that closes idle connections after 300 ms: requests spaced around that time
    // are never lost to a connection that just closed.
    for i in 0..12 {
        std::thread::sleep(Duration::from_millis(250 + 10 * i));
        let r = get(&center, "idle.edge-a.edges.test");
        assert_eq!(
            r.status, 200,
            "request {i} to an idle-closing service: {r:?}"
        );
    }

    // Concurrent clients: all answered.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let port = center.port();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let host = "keep.edge-a.edges.test";
                    let r = Curl::get(format!("http://{host}:{port}/"))
                        .arg("--resolve")
                        .arg(format!("{host}:{port}:127.0.0.1"))
                        .send();
                    assert_eq!(r.status, 200, "{r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
