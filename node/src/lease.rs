//! This center's liveness lease as the node sees it: until when it may write for its pods.
//!
//! The lease itself lives in the metadata store, on the database's clock
//! ([`xpod_storage::meta::LeaseStore::renew_liveness`]); [`crate::failover`] renews it. A
//! renewal sent at local instant `t` that succeeded set the lease's end to the database's
//! clock at some moment after `t`, plus the TTL: so `t + TTL` on this node's monotonic clock
//! is never later than the lease's real end. Until then this node writes; after it, pod
//! writes answer 503 `lease_expired` until a renewal succeeds again (self-fencing). Other
//! centers only take the pods over a stability window after the lease's end, so this node
//! stops first, whatever the clocks say. (Every write also carries the epoch check in the
//! store: a write after a move is refused there too.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::reply::error::ApiError;

/// The lease state of this node. A node that holds no lease (an edge) always writes.
pub struct Lease {
    base: Instant,
    enforced: bool,
    /// Milliseconds after `base` until which writes are allowed (0: not yet).
    valid_until: AtomicU64,
    /// Milliseconds after `base` since when renewals have been on time (`u64::MAX`: not now).
    healthy_since: AtomicU64,
}

impl Lease {
    /// `enforced`: this node holds a liveness lease (a center) and must not write without it.
    pub fn new(enforced: bool) -> Lease {
        Lease {
            base: Instant::now(),
            enforced,
            valid_until: AtomicU64::new(0),
            healthy_since: AtomicU64::new(u64::MAX),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// A renewal sent at `sent` for `ttl` succeeded.
    pub fn renewed(&self, sent: Instant, ttl: Duration) {
        let sent_ms = self.ms(sent);
        let was_valid = self.valid_at(sent);
        self.valid_until
            .fetch_max(sent_ms + ttl.as_millis() as u64, Ordering::Relaxed);
        if !was_valid || self.healthy_since.load(Ordering::Relaxed) == u64::MAX {
            // The lease had lapsed (or never ran): healthy from this renewal on.
            self.healthy_since.store(sent_ms, Ordering::Relaxed);
        }
    }

    /// Whether the lease runs at `at` (always, for a node without one).
    pub fn valid_at(&self, at: Instant) -> bool {
        !self.enforced || self.ms(at) < self.valid_until.load(Ordering::Relaxed)
    }

    /// How long until the lease lapses unless renewed (`None`: this node holds no lease; zero
    /// once it has lapsed).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.enforced.then(|| {
            Duration::from_millis(
                self.valid_until
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.ms(now)),
            )
        })
    }

    /// How long the lease has been renewed on time without a gap (`None`: it has lapsed).
    pub fn healthy_for(&self, now: Instant) -> Option<Duration> {
        if !self.valid_at(now) {
            return None;
        }
        let since = self.healthy_since.load(Ordering::Relaxed);
        (since != u64::MAX).then(|| Duration::from_millis(self.ms(now).saturating_sub(since)))
    }

    /// `Ok` while this node may write for its pods; else the 503 a client may retry (another
    /// center may be about to own the pod).
    pub fn check_writable(&self) -> Result<(), ApiError> {
        if self.valid_at(Instant::now()) {
            return Ok(());
        }
        Err(ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "lease_expired",
            "this node could not renew its liveness lease in the metadata store in time, so it \
             does not write for its pods until it can (another center may take them over): retry",
        )
        .with_header(http::header::RETRY_AFTER, "2"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_renewal_sent_for_its_ttl() {
        let l = Lease::new(true);
        let t0 = Instant::now();
        assert!(!l.valid_at(t0), "no renewal yet: no writes");
        assert!(l.check_writable().is_err());
        l.renewed(t0, Duration::from_secs(10));
        assert!(l.valid_at(t0 + Duration::from_millis(9_900)));
        assert!(!l.valid_at(t0 + Duration::from_secs(10)));
        assert_eq!(
            l.healthy_for(t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(4))
        );
        // An on-time renewal keeps the health running; a late one restarts it.
        l.renewed(t0 + Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(
            l.healthy_for(t0 + Duration::from_secs(12)),
            Some(Duration::from_secs(12))
        );
        assert_eq!(l.healthy_for(t0 + Duration::from_secs(16)), None);
        l.renewed(t0 + Duration::from_secs(20), Duration::from_secs(10));
        assert_eq!(
            l.healthy_for(t0 + Duration::from_secs(21)),
            Some(Duration::from_secs(1))
        );
        // A renewal that returns late (sent earlier) never shortens the lease.
        l.renewed(t0 + Duration::from_secs(1), Duration::from_secs(10));
        assert!(l.valid_at(t0 + Duration::from_secs(29)));
    }

    #[test]
    fn a_node_without_a_lease_always_writes() {
        let l = Lease::new(false);
        assert!(l.check_writable().is_ok());
    }
}
