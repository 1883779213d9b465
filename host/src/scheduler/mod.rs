//! The durable per-ticket scheduler.
//!
//! Each ticket being worked on has a driver task that owns it: it applies events
//! with the pure [`machine`], commits the new ticket and its audit events
//! (group commit, flushed) and only then makes the plugin calls the
//! transition asked for. A crash therefore loses no acknowledged state, and a
//! call that was running when the host died is found `running` on restart
//! and made again with the same idempotency key.
//!
//! This file holds the engine's state ([`Scheduler`], its settings); what
//! it does is in a file each: [`machine`] (the pure state machine),
//! `create.rs` (new tickets), `correlate.rs` (relations, and alerts
//! correlated into problems), `drivers.rs` (one task per ticket in flight:
//! apply, commit, then act), `calls.rs` (plugin calls on the worker pool),
//! `registry.rs` (plugins and workflows), `lifecycle.rs` (recover at start,
//! drain at shutdown), `leasing.rs` (tickets shared by several workers),
//! `parking.rs` and `watch.rs` (waiting tickets and waiting clients),
//! `notify.rs`, `metrics.rs` and `plugin_kv.rs`.

mod calls;
mod correlate;
mod create;
mod drivers;
mod leasing;
mod lifecycle;
pub mod machine;
pub mod metrics;
mod notify;
pub mod parking;
mod plugin_kv;
mod registry;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Semaphore, mpsc};

pub use self::lifecycle::Drained;
pub use self::plugin_kv::StoreKv;
pub use crate::intake::NewTicket;

use self::drivers::Command;
use self::registry::PluginSet;
use crate::error::Result;
use crate::intake::IntakeLimits;
use crate::runtime::Plugin;
use crate::store::Store;
use crate::store::commit::CommitQueue;
use crate::ticket::now_ms;
use crate::workflow::Workflow;

/// Settings for a [`Scheduler`].
pub struct SchedulerConfig {
    /// Plugin calls in flight at once, across tickets.
    pub workers: usize,
    /// Secret values by name, for the plugins whose manifests reference them.
    pub secrets: BTreeMap<String, String>,
    /// Limits on subjects and inputs (and, for the API, on imports).
    pub intake: IntakeLimits,
    /// Where each acknowledged group's trail heads are logged, outside the
    /// store, so a store that later loses them is caught.
    pub checkpoint: Option<Arc<crate::store::checkpoint::Checkpoint>>,
    /// Plugins that did not load at start-up, with why: workflows may still
    /// name them, and their steps wait until they are installed.
    pub unavailable_plugins: BTreeMap<String, String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            secrets: BTreeMap::new(),
            intake: IntakeLimits::default(),
            checkpoint: None,
            unavailable_plugins: BTreeMap::new(),
        }
    }
}

/// Runs tickets. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// A handle on a scheduler that does not keep it alive (for background
/// tasks that end with it).
pub struct WeakScheduler(std::sync::Weak<Inner>);

impl Scheduler {
    /// A handle that does not keep the scheduler alive.
    pub fn downgrade(&self) -> WeakScheduler {
        WeakScheduler(Arc::downgrade(&self.inner))
    }

    /// The scheduler, while it lives.
    pub fn upgrade(weak: &WeakScheduler) -> Option<Self> {
        weak.0.upgrade().map(|inner| Self { inner })
    }
}

struct Inner {
    store: Arc<dyn Store>,
    commits: CommitQueue,
    /// Swapped whole when a plugin is installed; calls already made keep
    /// the plugin they started with.
    plugins: RwLock<Arc<PluginSet>>,
    /// Current definitions by name, each with its content hash (computed
    /// once here rather than on every ticket created).
    current: RwLock<BTreeMap<String, (Arc<Workflow>, String)>>,
    pinned: Mutex<HashMap<String, Arc<Workflow>>>,
    active: Mutex<HashMap<String, mpsc::UnboundedSender<Command>>>,
    /// Open tickets with nothing in flight and no driver, by when they
    /// next want a tick.
    parking: Arc<parking::Parking>,
    /// Whether the one timer task that wakes parked tickets has started.
    timer_started: std::sync::atomic::AtomicBool,
    /// Open (not yet finished) tickets by workflow and subject: a second
    /// ticket for the same person and workflow is refused, so one leaver in a
    /// file three times is not offboarded three times at once.
    open: Mutex<HashMap<(String, String), String>>,
    /// Creates for the same subject take the same stripe, so the check
    /// against `open` and the insert are one step.
    subject_locks: Vec<tokio::sync::Mutex<()>>,
    /// Creates with the same idempotency key take the same stripe, so the
    /// second sees the first's record; different keys rarely wait.
    create_locks: Vec<tokio::sync::Mutex<()>>,
    workers: Arc<Semaphore>,
    worker_count: usize,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    recovered: std::sync::atomic::AtomicBool,
    /// Shutting down: no new calls, no new tickets, no timers.
    draining: std::sync::atomic::AtomicBool,
    /// Calls started and not yet recorded (their result committed).
    open_calls: std::sync::atomic::AtomicUsize,
    metrics: Arc<metrics::Metrics>,
    secrets: BTreeMap<String, String>,
    intake: IntakeLimits,
    /// Clients long-polling a ticket, woken after each commit that changes it.
    watchers: Arc<watch::Watchers>,
}

impl Scheduler {
    /// A scheduler over `store` with these plugins and workflows. Every
    /// workflow's plugins must be loaded.
    pub fn new(
        store: Arc<dyn Store>,
        plugins: BTreeMap<String, Plugin>,
        workflows: BTreeMap<String, Workflow>,
        config: SchedulerConfig,
    ) -> Result<Self> {
        let s = Self {
            inner: Arc::new(Inner {
                commits: CommitQueue::start(store.clone(), config.checkpoint.clone()),
                store,
                plugins: RwLock::new(Arc::new(PluginSet::new(
                    plugins,
                    config.unavailable_plugins,
                ))),
                current: RwLock::new(BTreeMap::new()),
                pinned: Mutex::new(HashMap::new()),
                active: Mutex::new(HashMap::new()),
                parking: Arc::default(),
                timer_started: std::sync::atomic::AtomicBool::new(false),
                open: Mutex::new(HashMap::new()),
                subject_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
                create_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
                workers: Arc::new(Semaphore::new(config.workers.max(1))),
                worker_count: config.workers.max(1),
                waiting: Arc::default(),
                recovered: std::sync::atomic::AtomicBool::new(false),
                draining: std::sync::atomic::AtomicBool::new(false),
                open_calls: std::sync::atomic::AtomicUsize::new(0),
                metrics: Arc::default(),
                secrets: config.secrets,
                intake: config.intake,
                watchers: Default::default(),
            }),
        };
        s.set_workflows(workflows)?;
        // Long-polls here wake for changes other workers make too.
        let watchers = Arc::downgrade(&s.inner.watchers);
        s.inner.store.watch_changes(Arc::new(move |change| {
            if let Some(w) = watchers.upgrade() {
                match change {
                    Some((id, events)) => w.changed(id, events),
                    None => w.wake_all(),
                }
            }
        }));
        Ok(s)
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Who is waiting for which ticket to change.
    pub fn watchers(&self) -> &watch::Watchers {
        &self.inner.watchers
    }

    /// Counters and gauges in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let waiting = self
            .inner
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed);
        let running = self.inner.worker_count - self.inner.workers.available_permits();
        self.inner
            .metrics
            .render(self.active(), self.parked(), running, waiting)
    }

    /// The intake limits this scheduler was made with.
    pub fn intake(&self) -> IntakeLimits {
        self.inner.intake
    }
}
