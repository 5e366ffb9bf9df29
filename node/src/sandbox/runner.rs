//! The sandboxes this node runs (`[sandbox] slots`): start, exec with streamed and replayable
//! output, port connections, stop, the idle timeout, and the capacity report the node sends
//! with its heartbeat.
//!
//! A sandbox's files live in `<data_dir>/sandboxes/<id>/` (removed on delete). Sandbox slot
//! `n` runs as host uid `uid_base + n`. Output of every exec is numbered and kept (the last
//! [`LOG_EVENTS`] events, at most [`LOG_BYTES`]) so a client can replay it from a cursor.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use xpod_storage::meta::{now_millis, Millis};

use super::model::Resources;
use super::proto::ExecRequest;
use super::replay::Log;
pub use super::replay::{LogEntry, LOG_BYTES, LOG_EVENTS};
use super::runtime::{Sandbox, Spec};
use super::Limits;

/// Commands running at once in one sandbox (each holds bounded buffers on the node).
pub const MAX_EXECS: i64 = 16;

/// What a runner is asked to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    pub image: String,
    pub env: std::collections::BTreeMap<String, String>,
    pub resources: Resources,
    /// Idle timeout, seconds.
    pub timeout: u64,
    pub network: bool,
}

/// Why a runner refused or failed: the HTTP status and the message.
#[derive(Debug)]
pub struct RunnerError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl RunnerError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        RunnerError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn not_here(id: &str) -> Self {
        RunnerError::new(
            404,
            "not_running_here",
            format!("sandbox {id} is not running on this node"),
        )
    }
}

struct Local {
    sandbox: tokio::sync::Mutex<Option<Sandbox>>,
    resources: Resources,
    slot: u32,
    timeout_ms: Millis,
    last_active: AtomicI64,
    /// Commands with a client attached and open port connections (a sandbox is not idle
    /// while any is).
    busy: AtomicI64,
    /// Commands running, attached or not (at most [`MAX_EXECS`]).
    execs: AtomicI64,
    log: Mutex<Log>,
}

impl Local {
    fn touch(&self) {
        self.last_active.store(now_millis(), Ordering::Relaxed);
    }
}

/// Counts a running command while alive.
struct ExecSlot(Arc<Local>);
impl Drop for ExecSlot {
    fn drop(&mut self) {
        self.0.execs.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a sandbox busy while alive.
struct Busy(Arc<Local>);
impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The node's sandboxes.
#[derive(Default)]
pub struct Runner {
    running: Mutex<HashMap<String, Arc<Local>>>,
    starts: std::sync::atomic::AtomicU64,
    start_failures: std::sync::atomic::AtomicU64,
    execs: std::sync::atomic::AtomicU64,
    idle_stops: std::sync::atomic::AtomicU64,
    ended_stops: std::sync::atomic::AtomicU64,
    /// The last [`ENDED_KEPT`] sandboxes that stopped by themselves (idle, died), with why: an
    /// edge reports them so its center records the reason.
    ended: Mutex<VecDeque<Ended>>,
}

/// Sandboxes stopped by the runner that a report still names.
pub const ENDED_KEPT: usize = 64;

/// A sandbox the runner stopped by itself, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ended {
    pub id: String,
    pub reason: String,
}

/// What a node reports about its sandboxes (heartbeat capacity, placement).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub slots: u32,
    pub cpu: u32,
    pub memory_mb: u64,
    pub used_slots: u32,
    pub used_cpu: u32,
    pub used_memory_mb: u64,
    pub running: Vec<String>,
    /// Recently stopped by the runner itself, with why.
    #[serde(default)]
    pub ended: Vec<Ended>,
}

impl Runner {
    fn get(&self, id: &str) -> Option<Arc<Local>> {
        self.running.lock().expect("poisoned").get(id).cloned()
    }

    /// Whether `id` runs here.
    pub fn has(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The capacity report.
    pub fn report(&self, cfg: &xpod_config::SandboxConfig) -> Report {
        let running = self.running.lock().expect("poisoned");
        let mut r = Report {
            slots: cfg.slots,
            cpu: cfg.cpu,
            memory_mb: cfg.memory_mb,
            ..Default::default()
        };
        for (id, l) in running.iter() {
            r.used_slots += 1;
            r.used_cpu += l.resources.cpu;
            r.used_memory_mb += l.resources.memory_mb;
            r.running.push(id.clone());
        }
        r.running.sort();
        r.ended = self
            .ended
            .lock()
            .expect("poisoned")
            .iter()
            .cloned()
            .collect();
        r
    }

    /// Starts sandbox `id` (idempotent: an already running one is fine).
    pub async fn start(
        &self,
        cfg: &xpod_config::Config,
        id: &str,
        req: &StartRequest,
    ) -> Result<(), RunnerError> {
        if self.has(id) {
            return Ok(());
        }
        let sc = &cfg.sandbox;
        let usr = if req.image == "host" {
            std::path::PathBuf::from("/usr")
        } else {
            match sc.images.get(&req.image) {
                Some(dir) => dir.join("usr"),
                None => {
                    return Err(RunnerError::new(
                        400,
                        "unknown_image",
                        format!(
                            "image {:?} is not offered by this node (it has: host{})",
                            req.image,
                            sc.images
                                .keys()
                                .map(|k| format!(", {k}"))
                                .collect::<String>()
                        ),
                    ))
                }
            }
        };
        // Reserve a slot under the lock, so concurrent starts cannot overbook.
        let placeholder;
        {
            let mut running = self.running.lock().expect("poisoned");
            let (cpu, mem) = running.values().fold((0u32, 0u64), |(c, m), l| {
                (c + l.resources.cpu, m + l.resources.memory_mb)
            });
            let full = |what: String| Err(RunnerError::new(409, "no_capacity", what));
            if running.len() as u32 >= sc.slots {
                return full(format!(
                    "node {} runs {} of its {} sandboxes",
                    cfg.node_id,
                    running.len(),
                    sc.slots
                ));
            }
            if cpu + req.resources.cpu > sc.cpu {
                return full(format!(
                    "node {} has {} of {} CPU cores free; {} asked",
                    cfg.node_id,
                    sc.cpu - cpu.min(sc.cpu),
                    sc.cpu,
                    req.resources.cpu
                ));
            }
            if mem + req.resources.memory_mb > sc.memory_mb {
                return full(format!(
                    "node {} has {} of {} MiB free; {} asked",
                    cfg.node_id,
                    sc.memory_mb - mem.min(sc.memory_mb),
                    sc.memory_mb,
                    req.resources.memory_mb
                ));
            }
            let used: std::collections::HashSet<u32> = running.values().map(|l| l.slot).collect();
            let slot = (0..sc.slots).find(|s| !used.contains(s)).unwrap_or(0);
            placeholder = Arc::new(Local {
                sandbox: tokio::sync::Mutex::new(None),
                resources: req.resources,
                slot,
                timeout_ms: (req.timeout as i64).saturating_mul(1000),
                last_active: AtomicI64::new(now_millis()),
                busy: AtomicI64::new(0),
                execs: AtomicI64::new(0),
                log: Mutex::new(Log::default()),
            });
            running.insert(id.to_string(), placeholder.clone());
        }
        let spec = Spec {
            root: cfg.data_dir.join("sandboxes").join(id),
            xpod_bin: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
            uid: sc.uid_base + placeholder.slot,
            network: req.network,
            limits: Limits {
                max_procs: req.resources.max_procs,
                memory_bytes: req.resources.memory_mb.saturating_mul(1 << 20),
                ..Limits::default()
            },
            env: req.env.clone(),
            usr,
            init: None,
        };
        let mut guard = placeholder.sandbox.lock().await;
        match Sandbox::start(&spec).await {
            Ok(sb) => {
                self.starts.fetch_add(1, Ordering::Relaxed);
                *guard = Some(sb);
                placeholder.touch();
                tracing::info!(sandbox = id, uid = spec.uid, "sandbox started");
                Ok(())
            }
            Err(e) => {
                self.start_failures.fetch_add(1, Ordering::Relaxed);
                drop(guard);
                self.running.lock().expect("poisoned").remove(id);
                let _ = std::fs::remove_dir_all(&spec.root);
                tracing::warn!(sandbox = id, error = %format!("{e:#}"), "sandbox did not start");
                Err(RunnerError::new(
                    500,
                    "start_failed",
                    format!("sandbox {id} did not start: {e:#}"),
                ))
            }
        }
    }

    /// Runs a command; its numbered events arrive on the receiver (and go to the log).
    ///
    /// The sandbox counts as busy (not idle) while a client receives the events: a command
    /// whose client went away goes on, logged, but no longer keeps the sandbox from its idle
    /// stop, and output nobody reads is not activity.
    pub async fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        stdin: &[u8],
    ) -> Result<tokio::sync::mpsc::Receiver<LogEntry>, RunnerError> {
        let local = self.get(id).ok_or_else(|| RunnerError::not_here(id))?;
        if local.execs.fetch_add(1, Ordering::Relaxed) >= MAX_EXECS {
            local.execs.fetch_sub(1, Ordering::Relaxed);
            return Err(RunnerError::new(
                429,
                "too_many_execs",
                format!("sandbox {id} already runs {MAX_EXECS} commands; wait for one to end"),
            ));
        }
        let running = ExecSlot(local.clone());
        self.execs.fetch_add(1, Ordering::Relaxed);
        local.busy.fetch_add(1, Ordering::Relaxed);
        let busy = Busy(local.clone());
        local.touch();
        let mut events = {
            let guard = local.sandbox.lock().await;
            let sb = guard.as_ref().ok_or_else(|| RunnerError::not_here(id))?;
            sb.exec_stream(req, stdin).await.map_err(|e| {
                RunnerError::new(502, "sandbox_unavailable", format!("sandbox {id}: {e:#}"))
            })?
        };
        let exec = {
            let mut log = local.log.lock().expect("poisoned");
            log.execs += 1;
            log.execs
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _running = running;
            let mut busy = Some(busy);
            loop {
                let ev = tokio::select! {
                    ev = events.recv() => ev,
                    () = tx.closed(), if busy.is_some() => {
                        busy = None;
                        continue;
                    }
                };
                let Some(ev) = ev else { break };
                let entry = local.log.lock().expect("poisoned").push(exec, ev);
                // A client that went away does not stop the command; its output is logged.
                if busy.is_some() {
                    if tx.send(entry).await.is_ok() {
                        local.touch();
                    } else {
                        busy = None;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// The logged events after `cursor` (at most `limit`), and whether older ones were dropped.
    pub fn logs(
        &self,
        id: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<LogEntry>, bool), RunnerError> {
        let local = self.get(id).ok_or_else(|| RunnerError::not_here(id))?;
        let log = local.log.lock().expect("poisoned");
        let truncated = log
            .entries
            .front()
            .is_some_and(|first| first.seq > cursor + 1);
        let out = log
            .entries
            .iter()
            .filter(|e| e.seq > cursor)
            .take(limit)
            .cloned()
            .collect();
        Ok((out, truncated))
    }

    /// A connection to `port` inside sandbox `id`; the sandbox counts as busy while it is open.
    pub async fn connect(&self, id: &str, port: u16) -> Result<PortConn, RunnerError> {
        let local = self.get(id).ok_or_else(|| RunnerError::not_here(id))?;
        local.touch();
        let guard = local.sandbox.lock().await;
        let sb = guard.as_ref().ok_or_else(|| RunnerError::not_here(id))?;
        let stream = sb.connect(port).await.map_err(|e| {
            RunnerError::new(
                502,
                "port_unreachable",
                format!("port {port} of sandbox {id}: {e:#}"),
            )
        })?;
        local.busy.fetch_add(1, Ordering::Relaxed);
        Ok(PortConn {
            stream,
            _busy: Busy(local.clone()),
            _exec: None,
        })
    }

    /// A terminal in sandbox `id` (counted as one of its [`MAX_EXECS`] commands; the sandbox
    /// is busy while it is open).
    pub async fn terminal(
        &self,
        id: &str,
        req: &crate::terminal::TerminalRequest,
    ) -> Result<PortConn, RunnerError> {
        let local = self.get(id).ok_or_else(|| RunnerError::not_here(id))?;
        if local.execs.fetch_add(1, Ordering::Relaxed) >= MAX_EXECS {
            local.execs.fetch_sub(1, Ordering::Relaxed);
            return Err(RunnerError::new(
                429,
                "too_many_execs",
                format!("sandbox {id} already runs {MAX_EXECS} commands; wait for one to end"),
            ));
        }
        let running = ExecSlot(local.clone());
        local.touch();
        let stream = {
            let guard = local.sandbox.lock().await;
            let sb = guard.as_ref().ok_or_else(|| RunnerError::not_here(id))?;
            sb.terminal(req)
                .await
                .map_err(|e| {
                    RunnerError::new(502, "sandbox_unavailable", format!("sandbox {id}: {e:#}"))
                })?
                .map_err(|why| RunnerError::new(400, "terminal_refused", why))?
        };
        self.execs.fetch_add(1, Ordering::Relaxed);
        local.busy.fetch_add(1, Ordering::Relaxed);
        Ok(PortConn {
            stream,
            _busy: Busy(local.clone()),
            _exec: Some(running),
        })
    }

    /// Stops sandbox `id` and kills everything in it; `remove` deletes its files too.
    pub async fn stop(&self, cfg: &xpod_config::Config, id: &str, remove: bool) -> bool {
        let local = self.running.lock().expect("poisoned").remove(id);
        let was = local.is_some();
        if let Some(local) = local {
            if let Some(sb) = local.sandbox.lock().await.take() {
                sb.stop().await;
            }
            tracing::info!(sandbox = id, "sandbox stopped");
        }
        if remove {
            let dir = cfg.data_dir.join("sandboxes").join(id);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(sandbox = id, error = %e, "could not remove the sandbox's files");
                }
            }
        }
        was
    }

    /// One pass of the watchdog: stops idle and dead sandboxes; returns the ones it stopped
    /// (also named in the next reports, [`Report::ended`]).
    pub async fn sweep(&self, cfg: &xpod_config::Config) -> Vec<(String, String)> {
        let now = now_millis();
        let candidates: Vec<(String, Arc<Local>)> = self
            .running
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut stopped = Vec::new();
        for (id, local) in candidates {
            let idle = local.busy.load(Ordering::Relaxed) == 0
                && now - local.last_active.load(Ordering::Relaxed) >= local.timeout_ms;
            let dead = match local.sandbox.try_lock() {
                Ok(mut g) => g.as_mut().is_some_and(|sb| !sb.is_alive()),
                Err(_) => false,
            };
            let reason = if dead {
                "the sandbox's process ended"
            } else if idle {
                "idle timeout"
            } else {
                continue;
            };
            // Named as ended before it leaves `running`, so no report lacks it in both.
            {
                let mut ended = self.ended.lock().expect("poisoned");
                ended.push_back(Ended {
                    id: id.clone(),
                    reason: reason.to_string(),
                });
                while ended.len() > ENDED_KEPT {
                    ended.pop_front();
                }
            }
            if self.stop(cfg, &id, false).await {
                let counter = if dead {
                    &self.ended_stops
                } else {
                    &self.idle_stops
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(sandbox = %id, reason, "sandbox stopped by the runner");
                stopped.push((id, reason.to_string()));
            }
        }
        stopped
    }

    /// Figures for `/metrics`: capacity, running sandboxes, starts, execs, stops by reason.
    pub fn figures(&self, cfg: &xpod_config::SandboxConfig) -> Vec<crate::metrics::Figure> {
        use crate::metrics::Figure;
        let r = self.report(cfg);
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let stops = "Sandboxes the runner stopped by itself.";
        vec![
            Figure::gauge(
                "xpod_sandbox_slots",
                "Sandboxes this node may run at once.",
                f64::from(r.slots),
            ),
            Figure::gauge(
                "xpod_sandboxes_running",
                "Sandboxes running on this node.",
                f64::from(r.used_slots),
            ),
            Figure::counter(
                "xpod_sandbox_starts_total",
                "Sandboxes started here.",
                n(&self.starts),
            ),
            Figure::counter(
                "xpod_sandbox_start_failures_total",
                "Sandboxes that failed to start here.",
                n(&self.start_failures),
            ),
            Figure::counter(
                "xpod_sandbox_execs_total",
                "Commands run in sandboxes here.",
                n(&self.execs),
            ),
            Figure::counter("xpod_sandbox_stops_total", stops, n(&self.idle_stops))
                .with("reason", "idle"),
            Figure::counter("xpod_sandbox_stops_total", stops, n(&self.ended_stops))
                .with("reason", "ended"),
        ]
    }

    /// Stops every sandbox (node shutdown).
    pub async fn stop_all(&self, cfg: &xpod_config::Config) {
        let ids: Vec<String> = self
            .running
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.stop(cfg, &id, false).await;
        }
    }
}

/// A byte stream to a port or a terminal inside a sandbox.
pub struct PortConn {
    pub stream: tokio::net::UnixStream,
    _busy: Busy,
    /// A terminal holds one of the sandbox's command slots.
    _exec: Option<ExecSlot>,
}

impl PortConn {
    /// The stream, and a guard that keeps the sandbox busy (not idle) while it lives.
    pub fn split(self) -> (tokio::net::UnixStream, Box<dyn Send>) {
        (self.stream, Box::new((self._busy, self._exec)))
    }
}
