//! Which transport got through, per network and center, remembered across restarts (issue 18:
//! "remember the choice per network").
//!
//! A network is told apart by the local address the kernel picks to reach the center (a
//! laptop has another one at home, at the office, on a phone's hotspot); nothing is sent to
//! learn it. Only "TCP first" is written down: QUIC is what every network gets until it
//! fails. The file (`<network> <center>` per line, e.g. `192.168.1.23 203.0.113.7:443`) is
//! rewritten whole through a temporary file and a rename, holds at most [`MAX_NETWORKS`]
//! lines, and a line it cannot read is skipped (the choice is only a head start: a wrong one
//! costs 500 ms, never the connection).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::{debug, warn};

/// The most (network, center) pairs kept; past it the file starts over.
pub const MAX_NETWORKS: usize = 256;

/// The remembered "TCP first" pairs, and the file they live in (none: for this run only).
#[derive(Debug, Default)]
pub struct TransportMemory {
    path: Option<PathBuf>,
    tcp_first: Mutex<BTreeSet<(IpAddr, SocketAddr)>>,
}

impl TransportMemory {
    /// Reads `path` (a missing file is an empty memory); `None` keeps it in memory only.
    pub fn open(path: Option<PathBuf>) -> Self {
        let mut tcp_first = BTreeSet::new();
        if let Some(p) = &path {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        match parse(line) {
                            Some(pair) if tcp_first.len() < MAX_NETWORKS => {
                                tcp_first.insert(pair);
                            }
                            Some(_) => break,
                            None => {
                                warn!(file = %p.display(), %line, "skipping a line that is not `<local address> <center address>`")
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(file = %p.display(), error = %e, "cannot read the remembered transports")
                }
            }
        }
        TransportMemory {
            path,
            tcp_first: Mutex::new(tcp_first),
        }
    }

    /// Whether TCP got through last time on the network this node is on now, to `center`.
    pub fn prefers_tcp(&self, center: SocketAddr) -> bool {
        let Some(net) = network_towards(center) else {
            return false;
        };
        self.tcp_first
            .lock()
            .expect("poisoned")
            .contains(&(net, center))
    }

    /// Records which transport got through to `center` on the network this node is on now.
    pub fn remember(&self, center: SocketAddr, tcp: bool) {
        let Some(net) = network_towards(center) else {
            return;
        };
        let lines = {
            let mut set = self.tcp_first.lock().expect("poisoned");
            let changed = if tcp {
                if set.len() >= MAX_NETWORKS && !set.contains(&(net, center)) {
                    set.clear();
                }
                set.insert((net, center))
            } else {
                set.remove(&(net, center))
            };
            if !changed {
                return;
            }
            set.iter()
                .map(|(n, c)| format!("{n} {c}\n"))
                .collect::<String>()
        };
        debug!(network = %net, %center, tcp, "remembering the transport that got through");
        if let Some(p) = &self.path {
            if let Err(e) = write_atomically(p, &lines) {
                warn!(file = %p.display(), error = %e, "cannot save the remembered transports");
            }
        }
    }
}

fn parse(line: &str) -> Option<(IpAddr, SocketAddr)> {
    let (net, center) = line.split_once(' ')?;
    Some((net.trim().parse().ok()?, center.trim().parse().ok()?))
}

/// The local address the kernel would send from to reach `center` (a connected UDP socket
/// sends nothing).
fn network_towards(center: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if center.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(center).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn center(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn tcp_first_is_kept_across_restarts_per_center_and_forgotten_when_quic_works() {
        let dir = std::env::temp_dir().join(format!("xpod-remembered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("transport.learned");
        let _ = std::fs::remove_file(&file);

        let m = TransportMemory::open(Some(file.clone()));
        assert!(!m.prefers_tcp(center(443)), "QUIC until told otherwise");
        m.remember(center(443), true);
        assert!(m.prefers_tcp(center(443)));
        assert!(!m.prefers_tcp(center(444)), "per center");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "127.0.0.1 127.0.0.1:443\n"
        );

        let again = TransportMemory::open(Some(file.clone()));
        assert!(again.prefers_tcp(center(443)), "kept across a restart");
        again.remember(center(443), false);
        assert!(!again.prefers_tcp(center(443)));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
        assert!(!TransportMemory::open(Some(file.clone())).prefers_tcp(center(443)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_line_is_skipped_and_the_rest_is_read() {
        let dir = std::env::temp_dir().join(format!("xpod-remembered-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("transport.learned");
        std::fs::write(
            &file,
            "garbage\n127.0.0.1 not-an-address\n\n127.0.0.1 127.0.0.1:7443\n",
        )
        .unwrap();
        let m = TransportMemory::open(Some(file));
        assert!(m.prefers_tcp(center(7443)));
        assert_eq!(m.tcp_first.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_memory_is_bounded() {
        let m = TransportMemory::open(None);
        for port in 0..(MAX_NETWORKS as u16 + 10) {
            m.remember(center(10_000 + port), true);
            assert!(m.tcp_first.lock().unwrap().len() <= MAX_NETWORKS);
        }
        assert!(m.prefers_tcp(center(10_000 + MAX_NETWORKS as u16 + 9)));
    }
}
