//! Audit entries that no API handler writes: refusals and the node's own security decisions.
//!
//! Every refused request (401, 403, 429) and every refusal the node makes on its own (a revoked
//! node's handshake, a pod id an edge may not claim) goes to the audit log as `refused.*`. A
//! refusal costs the refused party nothing, so the log must not become the cheapest way to
//! load the database: entries are written in the background and bounded — at most
//! [`PER_CLIENT`] per client address and [`TOTAL`] in all per second; the rest are counted
//! (`xpod_refusals_unaudited_total`) and named in one warning per second. The node writes them
//! with [`crate::app::App::refusal`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals audited per client address per second.
pub const PER_CLIENT: u32 = 20;
/// Refusals audited per second in all.
pub const TOTAL: u32 = 200;

/// The per-second budget of audited refusals.
#[derive(Default)]
pub struct Budget {
    window: Mutex<Window>,
    unaudited: AtomicU64,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    total: u32,
    per_client: HashMap<IpAddr, u32>,
    dropped: u32,
}

impl Budget {
    /// Whether a refusal from `client` (`None`: the node's own) may be audited now.
    pub fn take(&self, client: Option<IpAddr>) -> bool {
        let mut w = self.window.lock().expect("poisoned");
        let now = Instant::now();
        if w.started
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            if w.dropped > 0 {
                tracing::warn!(
                    unaudited = w.dropped,
                    "refusals beyond the audit budget in the last second were counted, not audited"
                );
            }
            *w = Window {
                started: Some(now),
                ..Window::default()
            };
        }
        let client_ok =
            client.is_none_or(|c| w.per_client.get(&c).copied().unwrap_or(0) < PER_CLIENT);
        if w.total < TOTAL && client_ok {
            w.total += 1;
            if let Some(c) = client {
                *w.per_client.entry(c).or_default() += 1;
            }
            true
        } else {
            w.dropped += 1;
            self.unaudited.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Refusals counted but not audited, since start.
    pub fn unaudited(&self) -> u64 {
        self.unaudited.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_each_client_and_the_total() {
        let b = Budget::default();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let taken = (0..20).filter(|_| b.take(Some(one))).count();
        assert_eq!(taken, PER_CLIENT as usize);
        let mut total = taken;
        for i in 0..400u32 {
            let c = IpAddr::from([198, 51, 100, (i % 250) as u8]);
            total += usize::from(b.take(Some(c)));
        }
        assert_eq!(total, TOTAL as usize);
        assert!(!b.take(None), "the node's own refusals share the total");
        assert_eq!(
            b.unaudited(),
            20 - PER_CLIENT as u64 + 400 - (TOTAL - PER_CLIENT) as u64 + 1
        );
    }
}
