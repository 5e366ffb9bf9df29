//! Killing a sandbox from outside, by a pidfd (never a pid that may have been reused).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::Arc;

/// Kills a sandbox from outside: SIGKILL to bwrap through a pidfd taken while it was our
/// unreaped child (so the signal can never reach a process that reused its pid).
#[derive(Clone)]
pub struct Killer(Arc<Option<OwnedFd>>);

impl Killer {
    pub(super) fn new(pid: Option<u32>) -> Killer {
        let fd = pid.and_then(|pid| {
            // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            // SAFETY: a descriptor pidfd_open just returned is ours alone.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
        });
        Killer(Arc::new(fd))
    }

    /// SIGKILL to bwrap; the sandbox's processes die with it (`--die-with-parent`, pid namespace).
    pub fn kill(&self) {
        if let Some(fd) = self.0.as_ref() {
            // SAFETY: pidfd_send_signal(2) on a pidfd we own, no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }
}
