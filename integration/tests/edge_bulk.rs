//! One center and two edges as separate processes on loopback, as a user would run them: both
//! edges show online, HTTP through the center reaches the service each edge published (and not
//! the other's), and a 2 GiB stream each way through a TCP forward arrives intact while every
//! xpod process stays under 100 MiB resident (peak, `VmHWM`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use xpod_integration::curl::Curl;
use xpod_integration::edges::{proc_kib, start_center, start_edge, wait_online};
use xpod_integration::node::{free_port, TempDir};

const TOTAL: u64 = 2 * 1024 * 1024 * 1024;
const LIMIT_KIB: u64 = 100 * 1024;

/// An HTTP backend answering every request with `I am <name>`.
fn start_named_backend(name: &'static str) -> SocketAddr {
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
                let body = format!("I am {name}");
                let mut out = conn;
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// An echo server: every connection gets its bytes back until it closes its side.
fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut conn = conn;
                let _ = std::io::copy(&mut conn, &mut out);
                let _ = out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// The stream's period: prime, so no power-of-two-sized chunk that is dropped, duplicated or
/// reordered leaves the stream looking right.
const PERIOD: usize = 65_521;

/// Two periods of the pattern, so any `PERIOD` bytes starting anywhere are one slice.
fn pattern_table() -> Vec<u8> {
    (0..2 * PERIOD)
        .map(|i| {
            ((i % PERIOD) as u32)
                .wrapping_mul(2_654_435_761)
                .to_be_bytes()[0]
        })
        .collect()
}

/// Checks (or, with `fill`, writes) `buf` as the pattern's bytes from stream offset `at`.
fn pattern_at(table: &[u8], at: u64, buf: &mut [u8], fill: bool) -> Option<u64> {
    let mut done = 0;
    while done < buf.len() {
        let start = ((at + done as u64) % PERIOD as u64) as usize;
        let n = (buf.len() - done).min(PERIOD);
        let want = &table[start..start + n];
        let part = &mut buf[done..done + n];
        if fill {
            part.copy_from_slice(want);
        } else if part != want {
            let j = (0..n).find(|&j| part[j] != want[j]).unwrap_or(0);
            return Some(at + (done + j) as u64);
        }
        done += n;
    }
    None
}

#[test]
fn two_edges_and_two_gib_each_way_in_flat_memory() {
    let tmp = TempDir::new("xpod-edge-bulk");
    let fwd = free_port();
    let center = start_center(
        &tmp,
        "center-1",
        &format!(
            "[tunnel]\nedge_domain = \"edges.test\"\n\n\
             [[tunnel.forwards]]\nlisten = \"127.0.0.1:{fwd}\"\nnode = \"edge-a\"\nservice = \"echo\"\n"
        ),
    );
    let (web_a, web_b, echo) = (
        start_named_backend("edge-a"),
        start_named_backend("edge-b"),
        start_echo(),
    );
    let edge_a = start_edge(
        &tmp,
        &center,
        "edge-a",
        &format!(
            "[[tunnel.services]]\nname = \"web\"\nlocal = \"{web_a}\"\n\n\
             [[tunnel.services]]\nname = \"echo\"\nlocal = \"{echo}\"\nkind = \"tcp\"\n"
        ),
    );
    let edge_b = start_edge(
        &tmp,
        &center,
        "edge-b",
        &format!("[[tunnel.services]]\nname = \"web\"\nlocal = \"{web_b}\"\n"),
    );
    wait_online(&center, "edge-a");
    wait_online(&center, "edge-b");

    // Each edge's name reaches its own service.
    let port = center.port();
    for edge in ["edge-a", "edge-b"] {
        let host = format!("web.{edge}.edges.test");
        let deadline = Instant::now() + Duration::from_secs(10);
        let resp = loop {
            let r = Curl::get(format!("http://{host}:{port}/"))
                .arg("--resolve")
                .arg(format!("{host}:{port}:127.0.0.1"))
                .send();
            if r.status == 200 || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(resp.expect(200).text(), format!("I am {edge}"));
    }

    // 2 GiB up and the same 2 GiB back down, concurrently, through center → edge-a → echo.
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", fwd)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let table = pattern_table();
    let w = std::thread::spawn({
        let table = table.clone();
        move || {
            let mut block = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            while sent < TOTAL {
                pattern_at(&table, sent, &mut block, true);
                writer
                    .write_all(&block)
                    .expect("sending through the forward");
                sent += block.len() as u64;
            }
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        }
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).expect("reading the echo");
        if n == 0 {
            break;
        }
        if let Some(at) = pattern_at(&table, got, &mut buf[..n], false) {
            panic!("echo differs at byte {at}");
        }
        got += n as u64;
    }
    w.join().unwrap();
    assert_eq!(got, TOTAL, "bytes echoed back");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "2 GiB each way in {secs:.1} s ({:.0} MiB/s each way, debug build)",
        2048.0 / secs
    );

    for (name, pid) in [
        ("center", center.pid()),
        ("edge-a", edge_a.pid()),
        ("edge-b", edge_b.pid()),
    ] {
        let peak = proc_kib(pid, "VmHWM").expect("reading /proc/PID/status");
        eprintln!("{name}: peak resident {} MiB", peak / 1024);
        assert!(
            peak < LIMIT_KIB,
            "{name} peaked at {} MiB resident (limit {} MiB)",
            peak / 1024,
            LIMIT_KIB / 1024
        );
    }
}
