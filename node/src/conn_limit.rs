//! Bounds on the connections clients hold open on a listener: at most `per_client` from one
//! address (more are closed at once) and `total` in all (beyond that, the listener stops
//! accepting until one ends, so the rest wait in the kernel's backlog). Used by the HTTP
//! listener, the HTTPS / TLS-passthrough port and the TCP forwards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections per client address.
type OpenMap = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// See the module docs.
pub struct ConnLimits {
    /// 0: no per-address limit.
    per_client: usize,
    total: Arc<Semaphore>,
    open: OpenMap,
}

/// One open connection, counted until dropped.
pub struct Slot {
    _total: OwnedSemaphorePermit,
    client: Option<(OpenMap, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((open, ip)) = &self.client {
            let mut map = open.lock().expect("poisoned");
            if let Some(n) = map.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(ip);
                }
            }
        }
    }
}

impl ConnLimits {
    pub fn new(per_client: usize, total: usize) -> ConnLimits {
        ConnLimits {
            per_client,
            total: Arc::new(Semaphore::new(total.max(1))),
            open: Default::default(),
        }
    }

    /// Waits until fewer than `total` connections are open (call before accepting).
    pub async fn room(&self) -> OwnedSemaphorePermit {
        self.total
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Counts a connection from `ip` with the permit [`ConnLimits::room`] gave; `None` (the
    /// connection is to be closed) when `ip` holds `per_client` already.
    pub fn admit(&self, room: OwnedSemaphorePermit, ip: IpAddr) -> Option<Slot> {
        if self.per_client == 0 {
            return Some(Slot {
                _total: room,
                client: None,
            });
        }
        let mut map = self.open.lock().expect("poisoned");
        let n = map.entry(ip).or_default();
        if *n >= self.per_client {
            return None;
        }
        *n += 1;
        Some(Slot {
            _total: room,
            client: Some((self.open.clone(), ip)),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("poisoned").values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_client_and_total() {
        let l = ConnLimits::new(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let s1 = l.admit(l.room().await, a).unwrap();
        let s2 = l.admit(l.room().await, a).unwrap();
        assert!(
            l.admit(l.room().await, a).is_none(),
            "a third from one address"
        );
        let s3 = l.admit(l.room().await, b).unwrap();
        // Three open: no room until one ends.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), l.room()).await;
        assert!(waiting.is_err(), "the total holds");
        drop(s1);
        let s4 = l.admit(l.room().await, a).unwrap();
        assert_eq!(l.open(), 3);
        drop((s2, s3, s4));
        assert_eq!(l.open(), 0);
        let unlimited = ConnLimits::new(0, 10);
        let _many: Vec<Slot> = futures_util::future::join_all((0..5).map(|_| unlimited.room()))
            .await
            .into_iter()
            .map(|r| unlimited.admit(r, a).unwrap())
            .collect();
    }
}
