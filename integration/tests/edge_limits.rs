//! Hostile clients of an edge's forwards (real center, real edge, real QUIC): 200 idle TCP
//! connections to a forward do not starve the edge's tunnel — an HTTP request to the same
//! edge's web service still answers (quinn's default of 100 streams made it wait 5 s and
//! answer 502); one client address holds at most `PER_CLIENT` connections on a listener (the
//! rest are closed at once); a relay that stays idle past `tunnel.relay_idle_secs` is closed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use xpod_integration::curl::Curl;
use xpod_integration::edges::{start_center, start_edge, wait_online};
use xpod_integration::node::{free_port, TempDir};

/// An HTTP server answering "hello" to every request.
fn start_web() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let mut out = conn;
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                );
            });
        }
    });
    addr
}

/// An echo server (each connection gets its bytes back).
fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut conn = conn;
                let _ = std::io::copy(&mut conn, &mut out);
            });
        }
    });
    addr
}

/// Whether `s` was closed by the far end within `within` (EOF or reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Whether `s` has been closed by the far end already (no waiting).
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn idle_clients_cannot_starve_an_edge() {
    let tmp = TempDir::new("xpod-edge-limits");
    let fwd = free_port();
    let center = start_center(
        &tmp,
        "center-1",
        &format!(
            "[tunnel]\nedge_domain = \"edges.test\"\nrelay_idle_secs = 8\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd}\"\nnode = \"edge-a\"\nservice = \"echo\"\n"
        ),
    );
    let (web, echo) = (start_web(), start_echo());
    let _edge = start_edge(
        &tmp,
        &center,
        "edge-a",
        &format!(
            "[[tunnel.services]]\nname = \"web\"\nlocal = \"{web}\"\n\n\
             [[tunnel.services]]\nname = \"echo\"\nlocal = \"{echo}\"\nkind = \"tcp\"\n"
        ),
    );
    wait_online(&center, "edge-a");
    let port = center.port();
    let host = "web.edge-a.edges.test";
    let get = || {
        let started = Instant::now();
        let r = Curl::get(format!("http://{host}:{port}/"))
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg("--max-time")
            .arg("20")
            .send();
        (r.status, started.elapsed())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while get().0 != 200 {
        assert!(Instant::now() < deadline, "the web service never answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 200 idle connections through the forward, each relayed on its own stream (checked by an
    // echo on every one, so each stream is really open on the edge).
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", fwd)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("connection {i} is relayed: {e}"));
        idle.push(s);
    }
    let (status, took) = get();
    eprintln!("HTTP through the edge with 200 idle relays open: {status} in {took:?}");
    assert_eq!(
        status, 200,
        "the edge's web service answers beside 200 idle relays"
    );

    // One address holds at most PER_CLIENT (256) connections on a listener: of 100 more, the
    // ones past the cap are closed at once.
    let mut more: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", fwd)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let closed = more.iter_mut().map(closed_now).filter(|c| *c).count();
    assert!(
        (44..=100).contains(&closed),
        "{closed} of the 100 connections past 200 were closed (expected those past 256)"
    );
    drop(more);

    // Idle relays are closed after relay_idle_secs (8 s here).
    let mut first = idle.remove(0);
    assert!(
        closed_within(&mut first, Duration::from_secs(15)),
        "an idle relay is closed"
    );
    assert_eq!(get().0, 200);
}
