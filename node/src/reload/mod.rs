//! Runtime changes without a restart (issue 19).
//!
//! `SIGHUP`, `POST /api/v1/node/reload` and `xpod reload` re-read the configuration the node
//! started with (the same file, environment and command-line overrides: [`set_source`]) and
//! apply what can change while it runs:
//! - an edge's `[[tunnel.services]]`: the next stream is served by the new table (relays
//!   already running finish); its centers see the new list with the next heartbeat;
//! - a center's `[[tunnel.forwards]]`: new ports are bound first — a port that cannot be bound
//!   is an error and nothing changes —, a changed target takes effect for the next connection,
//!   a removed port stops accepting and its connections are closed.
//!
//! Every other difference is named in the answer (`restartNeeded`) and the log, and left
//! alone; a file that does not load or validate changes nothing.
//!
//! The same two lists can be changed through the API (`/api/v1/node/services/{name}`,
//! `/api/v1/node/forwards/{listen}`, admin; `xpod tunnel …`). Those changes last until the next
//! reload or restart — the file stays the source of truth, and the answers say so. A change is
//! validated as the whole configuration would be (names, addresses, duplicates).
//!
//! [`state`]: what is kept between changes, the `App` field (this file has the logic).

use crate::api_types::node::{ForwardView, Outcome, ServiceView, Tunnel};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};

use tokio::net::TcpListener;
use tokio::sync::watch;
use xpod_config::{Config, Role, TunnelForward, TunnelService};

use crate::app::App;
use crate::edges::services::Services;
use crate::reply::error::ApiError;

pub mod state;

use state::{Running, State};

/// Loads the configuration the way the node was started.
pub type Source = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

static SOURCE: OnceLock<Source> = OnceLock::new();

/// Records how this process loads its configuration (the command line does, before `run`).
pub fn set_source(source: Source) {
    let _ = SOURCE.set(source);
}

/// A center's forwards, bound at start-up, served until `stop` (or removed).
pub async fn start_forwards(
    app: &Arc<App>,
    bound: Vec<(TunnelForward, TcpListener)>,
    stop: watch::Receiver<bool>,
) {
    let mut st = app.reload.state.lock().await;
    st.stop = Some(stop.clone());
    let mut running = BTreeMap::new();
    for (forward, listener) in bound {
        running.insert(forward.listen, spawn_forward(app, forward, listener, &stop));
    }
    st.forwards = Some(running);
}

/// An edge's services table, as its tunnels serve it.
pub async fn start_services(app: &App, services: Arc<Services>) {
    app.reload.state.lock().await.services = Some(services);
}

/// Re-reads the configuration and applies it (see the module docs).
pub async fn reload(app: &Arc<App>) -> Result<Outcome, ApiError> {
    let source = SOURCE.get().ok_or_else(|| {
        ApiError::conflict(
            "this node was not started from the command line: nothing to reload from",
        )
    })?;
    let new = source().map_err(|e| {
        ApiError::bad_request(format!(
            "the configuration was not applied (nothing changed): {e:#}"
        ))
    })?;
    let mut st = app.reload.state.lock().await;
    let old = st.applied.clone().unwrap_or_else(|| app.config.clone());
    let mut out = Outcome {
        restart_needed: restart_needed(&old, &new),
        persistent: true,
        ..Default::default()
    };
    if let Some(line) = set_forwards(app, &mut st, &new.tunnel.forwards).await? {
        out.applied.push(line);
    }
    if let Some(line) = set_services(app, &mut st, &new.tunnel.services)? {
        out.applied.push(line);
    }
    st.applied = Some(new);
    Ok(out)
}

/// Adds or replaces (`Some`) or removes (`None`) service `name` of this edge, until the
/// next reload.
pub async fn service(
    app: &Arc<App>,
    name: &str,
    service: Option<TunnelService>,
) -> Result<Outcome, ApiError> {
    let mut st = app.reload.state.lock().await;
    let Some(services) = &st.services else {
        return Err(ApiError::conflict(
            "only an edge whose tunnels run publishes services",
        ));
    };
    let mut list = services.list();
    let before = list.len();
    list.retain(|s| s.name != name);
    match service {
        Some(s) => list.push(s),
        None if list.len() == before => {
            return Err(ApiError::not_found(format!(
                "this edge publishes no service named {name:?}"
            )))
        }
        None => {}
    }
    let mut out = Outcome::default();
    out.applied.extend(set_services(app, &mut st, &list)?);
    Ok(out)
}

/// Adds or replaces (`Some`) or removes (`None`) the forward on `listen` of this center,
/// until the next reload.
pub async fn forward(
    app: &Arc<App>,
    listen: SocketAddr,
    forward: Option<TunnelForward>,
) -> Result<Outcome, ApiError> {
    let mut st = app.reload.state.lock().await;
    let Some(running) = &st.forwards else {
        return Err(ApiError::conflict(
            "only a center whose tunnels run has TCP forwards",
        ));
    };
    let mut list: Vec<TunnelForward> = running
        .values()
        .map(|r| r.spec.read().unwrap_or_else(|e| e.into_inner()).clone())
        .filter(|f| f.listen != listen)
        .collect();
    match forward {
        Some(f) => list.push(f),
        None if list.len() == running.len() => {
            return Err(ApiError::not_found(format!(
                "no forward listens on {listen}"
            )))
        }
        None => {}
    }
    let mut out = Outcome::default();
    out.applied.extend(set_forwards(app, &mut st, &list).await?);
    Ok(out)
}

/// The services and forwards as running now.
pub async fn tunnel(app: &App) -> Tunnel {
    let st = app.reload.state.lock().await;
    let service = |s: &TunnelService| ServiceView {
        name: s.name.clone(),
        local: s.local.to_string(),
        kind: s.kind.as_str().into(),
        proxy_protocol: s.proxy_protocol,
    };
    let forward = |r: &Running| {
        let f = r.spec.read().unwrap_or_else(|e| e.into_inner());
        ForwardView {
            listen: f.listen.to_string(),
            node: f.node.clone(),
            service: f.service.clone(),
        }
    };
    Tunnel {
        services: st
            .services
            .as_ref()
            .map(|s| s.list().iter().map(service).collect()),
        forwards: st
            .forwards
            .as_ref()
            .map(|r| r.values().map(forward).collect()),
    }
}

/// The configuration with `f` applied, validated as a whole (`Err`: 400 naming the problem).
fn validated(app: &App, st: &State, f: impl FnOnce(&mut Config)) -> Result<(), ApiError> {
    let mut c = st.applied.clone().unwrap_or_else(|| app.config.clone());
    f(&mut c);
    c.validate()
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("not applied: {e}")))
}

/// Makes an edge's services `list`; the line describing the change, if any.
fn set_services(
    app: &App,
    st: &mut State,
    list: &[TunnelService],
) -> Result<Option<String>, ApiError> {
    let Some(services) = &st.services else {
        return Ok(None);
    };
    if app.config.role != Role::Edge {
        return Ok(None);
    }
    let old = services.list();
    if old == list {
        return Ok(None);
    }
    validated(app, st, |c| c.tunnel.services = list.to_vec())?;
    services.replace(list);
    let line = describe(
        "tunnel.services",
        old.iter().map(|s| (s.name.clone(), format!("{s:?}"))),
        list.iter().map(|s| (s.name.clone(), format!("{s:?}"))),
    );
    tracing::info!(change = %line, "services changed at runtime");
    Ok(Some(line))
}

/// Makes a center's forwards `list`: binds the new ports first (an error changes nothing),
/// then retargets, stops and starts. The line describing the change, if any.
async fn set_forwards(
    app: &Arc<App>,
    st: &mut State,
    list: &[TunnelForward],
) -> Result<Option<String>, ApiError> {
    let (Some(running), Some(stop)) = (&st.forwards, &st.stop) else {
        return Ok(None);
    };
    let current: Vec<TunnelForward> = running
        .values()
        .map(|r| r.spec.read().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let mut sorted = list.to_vec();
    sorted.sort_by_key(|f| f.listen);
    if current == sorted {
        return Ok(None);
    }
    validated(app, st, |c| c.tunnel.forwards = list.to_vec())?;
    let added: Vec<TunnelForward> = list
        .iter()
        .filter(|f| !running.contains_key(&f.listen))
        .cloned()
        .collect();
    let bound = crate::edges::tcp_forward::bind(&added)
        .await
        .map_err(|e| ApiError::conflict(format!("not applied (nothing changed): {e:#}")))?;
    let stop = stop.clone();
    let line = describe(
        "tunnel.forwards",
        current
            .iter()
            .map(|f| (f.listen.to_string(), format!("{f:?}"))),
        list.iter()
            .map(|f| (f.listen.to_string(), format!("{f:?}"))),
    );
    let running = st.forwards.as_mut().expect("checked above");
    running.retain(|listen, r| {
        let keep = list.iter().any(|f| f.listen == *listen);
        if !keep {
            let _ = r.stop.send(true);
        }
        keep
    });
    for f in list {
        if let Some(r) = running.get(&f.listen) {
            *r.spec.write().unwrap_or_else(|e| e.into_inner()) = f.clone();
        }
    }
    for (forward, listener) in bound {
        running.insert(forward.listen, spawn_forward(app, forward, listener, &stop));
    }
    tracing::info!(change = %line, "forwards changed at runtime");
    Ok(Some(line))
}

fn spawn_forward(
    app: &Arc<App>,
    forward: TunnelForward,
    listener: TcpListener,
    node_stop: &watch::Receiver<bool>,
) -> Running {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let spec = Arc::new(RwLock::new(forward));
    // The node's stop stops it too.
    let (mut node_stop, mine) = (node_stop.clone(), tx.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = node_stop.wait_for(|s| *s) => { let _ = mine.send(true); }
            _ = mine.closed() => {}
        }
    });
    tokio::spawn(crate::edges::tcp_forward::serve(
        app.clone(),
        spec.clone(),
        listener,
        rx,
    ));
    Running { spec, stop: tx }
}

/// `+added −removed ~changed` between two keyed lists.
fn describe(
    what: &str,
    old: impl Iterator<Item = (String, String)>,
    new: impl Iterator<Item = (String, String)>,
) -> String {
    let old: BTreeMap<String, String> = old.collect();
    let new: BTreeMap<String, String> = new.collect();
    let mut parts = Vec::new();
    for (k, v) in &new {
        match old.get(k) {
            None => parts.push(format!("+{k}")),
            Some(o) if o != v => parts.push(format!("~{k}")),
            _ => {}
        }
    }
    parts.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| format!("−{k}")),
    );
    format!("{what}: {}", parts.join(" "))
}

/// The settings, other than the lists above, that differ between `old` and `new`.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let (mut a, mut b) = (old.clone(), new.clone());
    for c in [&mut a, &mut b] {
        c.tunnel.services.clear();
        c.tunnel.forwards.clear();
    }
    let sections: [(&str, bool); 16] = [
        ("node_id", a.node_id != b.node_id),
        ("role", a.role != b.role),
        ("region", a.region != b.region),
        ("data_dir", a.data_dir != b.data_dir),
        ("http", a.http != b.http),
        ("database", a.database != b.database),
        ("storage", a.storage != b.storage),
        ("cache", a.cache != b.cache),
        ("routing", a.routing != b.routing),
        ("log", a.log != b.log),
        ("tunnel", a.tunnel != b.tunnel),
        ("dns", a.dns != b.dns),
        ("acme", a.acme != b.acme),
        ("sandbox", a.sandbox != b.sandbox),
        ("solid", a.solid != b.solid),
        ("failover", a.failover != b.failover),
    ];
    let out: Vec<String> = sections
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| name.to_string())
        .collect();
    if !out.is_empty() {
        tracing::warn!(sections = ?out, "changed settings take a restart; left as they are");
    }
    out
}

/// SIGHUP: reload, logging what happened (the process goes on whatever the outcome).
pub async fn on_sighup(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload with POST /api/v1/node/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            got = hup.recv() => if got.is_none() { return },
        }
        match reload(&app).await {
            Ok(o) => {
                tracing::info!(applied = ?o.applied, restart_needed = ?o.restart_needed, "SIGHUP: configuration reloaded")
            }
            Err(e) => tracing::error!(error = %e.message, "SIGHUP: configuration not reloaded"),
        }
    }
}
