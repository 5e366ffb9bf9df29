//! A UDP relay that makes a bad link: every datagram waits `delay` and is lost with
//! probability `loss`, each way. It stands in for `tc netem`, which the kernels these tests
//! run on may lack (no `sch_netem`): the QUIC tunnel between an edge and its center crosses it
//! as it would cross a lossy long-distance path.
//!
//! One client: the first address that sends to [`Impair::addr`] is the client; everything it
//! sends goes to `target` from a second socket, and everything `target` answers goes back.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running relay; stops when dropped.
pub struct Impair {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

struct Due {
    at: Instant,
    seq: u64,
    to_target: bool,
    data: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl Impair {
    /// Relays to `target` with `delay` and `loss` (0.0..1.0) each way.
    pub fn start(target: SocketAddr, delay: Duration, loss: f64) -> Impair {
        let front = UdpSocket::bind("127.0.0.1:0").expect("binding the relay");
        let back = UdpSocket::bind("127.0.0.1:0").expect("binding the relay");
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            front.set_nonblocking(true).unwrap();
            back.set_nonblocking(true).unwrap();
            let mut client: Option<SocketAddr> = None;
            let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
            let (mut seq, mut rng) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
            let mut lost = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % 10_000) as f64 / 10_000.0 < loss
            };
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                while let Ok((n, from)) = front.recv_from(&mut buf) {
                    idle = false;
                    client = Some(from);
                    if !lost() {
                        seq += 1;
                        queue.push(Reverse(Due {
                            at: Instant::now() + delay,
                            seq,
                            to_target: true,
                            data: buf[..n].to_vec(),
                        }));
                    }
                }
                while let Ok((n, _)) = back.recv_from(&mut buf) {
                    idle = false;
                    if !lost() {
                        seq += 1;
                        queue.push(Reverse(Due {
                            at: Instant::now() + delay,
                            seq,
                            to_target: false,
                            data: buf[..n].to_vec(),
                        }));
                    }
                }
                let now = Instant::now();
                while queue.peek().is_some_and(|d| d.0.at <= now) {
                    let Reverse(d) = queue.pop().unwrap();
                    if d.to_target {
                        let _ = back.send_to(&d.data, target);
                    } else if let Some(c) = client {
                        let _ = front.send_to(&d.data, c);
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        });
        Impair { addr, stop }
    }

    /// Where the client sends.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Impair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
