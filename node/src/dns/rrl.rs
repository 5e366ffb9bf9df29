//! Response-rate limiting: UDP answers per client network (IPv4 /24, IPv6 /56), so the
//! cluster's DNS cannot be used to flood a spoofed address, nor random names to load the
//! store. A token bucket per network: [`RATE`] answers a second, bursts of [`BURST`]. A query
//! over the limit gets no answer, except every [`SLIP`]th, which is answered truncated (TC), so
//! a real resolver retries over TCP (not limited: TCP cannot be spoofed) and is served.
//! The table holds at most [`NETWORKS`] networks; beyond that, idle ones are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Answers per second per client network.
pub const RATE: f64 = 100.0;
/// Answers a network may get at once.
pub const BURST: f64 = 200.0;
/// One in this many limited queries gets a truncated answer.
pub const SLIP: u64 = 2;
/// Networks tracked at most.
pub const NETWORKS: usize = 100_000;

/// What to do with one UDP query.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Answer with TC set and no records (the client retries over TCP).
    Truncate,
    Drop,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    limited: AtomicU64,
}

/// The client's network: IPv4 /24, IPv6 /56.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::from([o[0], o[1], o[2], 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[7..].fill(0);
            IpAddr::from(o)
        }
    }
}

impl Limiter {
    pub fn check(&self, ip: IpAddr) -> Verdict {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().expect("poisoned");
        if buckets.len() >= NETWORKS {
            // Forget the networks that are full again (quiet for BURST / RATE seconds).
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * RATE < BURST
            });
        }
        let (tokens, at) = buckets.entry(network(ip)).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * RATE).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Verdict::Answer;
        }
        let n = self.limited.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(SLIP) {
            Verdict::Truncate
        } else {
            Verdict::Drop
        }
    }

    /// Queries limited since start.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_limited_per_network_and_refills() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_net: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let answered = (0..500)
            .filter(|i| {
                let ip = if i % 2 == 0 { a } else { same_net };
                l.check_at(ip, t0) == Verdict::Answer
            })
            .count();
        assert_eq!(answered, BURST as usize, "one bucket for the /24");
        assert_eq!(
            l.check_at(other, t0),
            Verdict::Answer,
            "another network is not affected"
        );
        let limited: Vec<Verdict> = (0..4).map(|_| l.check_at(a, t0)).collect();
        assert!(limited.contains(&Verdict::Truncate) && limited.contains(&Verdict::Drop));
        // A second later, RATE more.
        let t1 = t0 + Duration::from_secs(1);
        let refilled = (0..500)
            .filter(|_| l.check_at(a, t1) == Verdict::Answer)
            .count();
        assert_eq!(refilled, RATE as usize);
        let v6a: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ff::9".parse().unwrap();
        assert_eq!(network(v6a), network(v6b), "one /56");
    }
}
