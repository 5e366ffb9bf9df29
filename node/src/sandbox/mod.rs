//! Sandboxes (issue 7; ARCHITECTURE "Sandboxes").
//! - On a node: [`runtime`] (a bubblewrap sandbox whose PID 1 is `xpod sandbox-init`,
//!   [`supervisor`], speaking [`proto`] over connections passed on the [`ctl`] channel, read
//!   within the node's bounds by [`events`], killed from outside by [`killer`]),
//!   [`net`] (`network: true`: outbound internet only, through slirp4netns and nftables),
//!   [`runner`] (the node's sandboxes: slots, exec with replayable output ([`replay`]), port
//!   connections, terminals, idle watchdog, capacity report), [`internal`] (the runner API
//!   other nodes call; the supervisor runs terminals with `crate::terminal::pty`).
//! - Across the cluster: [`model`] (the record), [`lifecycle`] (placement, start, stop, quotas,
//!   events), [`client`] (reaching a sandbox's node over the mesh or a tunnel), [`ports`]
//!   (`<port>-<id>` routing), [`terminal`] (a terminal wherever the sandbox runs), [`worker`] (watchdog, reconciliation, cleanup). The REST API is
//!   `crate::http::sandboxes`, webhooks `crate::webhooks`.
//!
//! Limits: the sandbox runs as its own unprivileged host uid (when the node is root), so
//! `RLIMIT_NPROC` holds (a fork bomb stops at `max_procs`); address space, CPU time, file size
//! and open files are per-process rlimits (best-effort: no cgroup v2 here), and each exec can
//! have a wall-clock timeout that kills its process group.

pub mod client;
pub mod ctl;
pub mod events;
pub mod internal;
pub mod killer;
pub mod lifecycle;
pub mod model;
pub mod net;
pub mod ports;
pub mod proto;
pub mod replay;
pub mod runner;
pub mod runtime;
pub mod supervisor;
pub mod terminal;
pub mod worker;

/// Resource limits of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Processes and threads of the sandbox's uid (RLIMIT_NPROC, whole sandbox).
    pub max_procs: u64,
    /// Address space per process, bytes (RLIMIT_AS).
    pub memory_bytes: u64,
    /// CPU seconds per process (RLIMIT_CPU).
    pub cpu_secs: u64,
    /// Largest file a process may write, bytes (RLIMIT_FSIZE).
    pub file_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_procs: 64,
            memory_bytes: 1 << 30,
            cpu_secs: 600,
            file_bytes: 1 << 30,
            open_files: 1024,
        }
    }
}

impl Limits {
    /// The process-wide limit (RLIMIT_NPROC): set once in the supervisor, inherited.
    pub fn apply_nproc(&self) {
        set(libc::RLIMIT_NPROC, self.max_procs);
    }

    /// Per-process limits, in a child between fork and exec (async-signal-safe).
    pub fn apply_per_process(&self) {
        set(libc::RLIMIT_AS, self.memory_bytes);
        set(libc::RLIMIT_CPU, self.cpu_secs);
        set(libc::RLIMIT_FSIZE, self.file_bytes);
        set(libc::RLIMIT_NOFILE, self.open_files);
        set(libc::RLIMIT_CORE, 0);
    }
}

fn set(resource: libc::__rlimit_resource_t, value: u64) {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit with a valid struct; failure leaves the old limit (logged by callers
    // that can log; here there is nothing safe to do).
    unsafe {
        libc::setrlimit(resource, &lim);
    }
}
