//! Handing freed memory back to the system.
//!
//! glibc's allocator returns memory to the system only from the top of its heaps: what
//! thousands of connections freed in the middle (a reconnect storm of edges, a burst of
//! requests) stays resident, as the process's high-water mark. Every [`EVERY`] the node asks
//! glibc to release the free pages inside its heaps (`malloc_trim(0)`, on a blocking thread:
//! it walks the heaps). With other C libraries there is nothing to do.

use std::time::Duration;

/// How often freed memory is handed back.
pub const EVERY: Duration = Duration::from_secs(60);

/// Runs until `shutdown`.
pub async fn trim_loop(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(
            released,
            took_ms = started.elapsed().as_millis() as u64,
            "freed memory handed back"
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks and trims the allocator's own heaps; 0 keeps no pad.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
