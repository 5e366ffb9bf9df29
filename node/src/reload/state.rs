//! What [`super`] keeps between changes: the last loaded configuration and the running lists.
//! A field of `App`, so it names no `App` itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use xpod_config::{Config, TunnelForward};

use crate::edges::services::Services;

/// The lists that change at runtime, as running now (one change at a time).
#[derive(Default)]
pub struct Reloader {
    pub(super) state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
pub(super) struct State {
    /// The configuration last loaded from the source (the start one until the first reload).
    pub(super) applied: Option<Config>,
    /// An edge's services table, once its tunnels run.
    pub(super) services: Option<Arc<Services>>,
    /// A center's forwards, once its tunnels run.
    pub(super) forwards: Option<BTreeMap<SocketAddr, Running>>,
    pub(super) stop: Option<watch::Receiver<bool>>,
}

pub(super) struct Running {
    pub(super) spec: Arc<RwLock<TunnelForward>>,
    pub(super) stop: Arc<watch::Sender<bool>>,
}
