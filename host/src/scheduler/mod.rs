//! The durable per-ticket scheduler.
//!
//! Each ticket being worked on has a driver task that owns it: it applies events
//! with the pure [`machine`], commits the new ticket and its audit events
//! (group commit, flushed) and only then makes the plugin calls the
//! transition asked for. A crash therefore loses no acknowledged state, and a
//! call that was running when the host died is found `running` on restart
//! and made again with the same idempotency key.

mod leasing;
pub mod machine;
pub mod metrics;
mod notify;
pub mod parking;
pub mod watch;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use self::machine::{Call, Context, Event};
use crate::audit::{self, AuditEvent, AuditKind, PluginRef};
use crate::error::{Error, Result};
use crate::intake::IntakeLimits;
use crate::runtime::cpu;
use crate::runtime::{CallReport, FailureCause, Grants, Outcome, Plugin, StepFailure, StepInput};
use crate::store::commit::CommitQueue;
use crate::store::{Batch, Committed, Refusal, Store};
use crate::ticket::{StepRecord, Ticket, TicketState, new_id, now_ms};
use crate::workflow::Workflow;

/// A ticket with nothing in flight keeps its driver (and its place in
/// memory) only while its next wake is this close: a quick retry then needs
/// no store read, and anything longer waits parked.
const PARK_BEYOND_MS: u64 = 1000;

/// How often a ticket whose transition met a full disk tries it again.
const SPACE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A request for a new ticket: one subject, one workflow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// Workflow name.
    pub workflow: String,
    /// Who the ticket is about.
    pub subject: String,
    /// Inputs for the steps (a JSON object).
    #[serde(default)]
    pub inputs: Value,
    /// Bulk import batch, if any.
    #[serde(default)]
    pub batch: Option<String>,
    /// Create it even if the subject already has an open ticket of this
    /// workflow (a second, deliberate run).
    #[serde(default)]
    pub allow_duplicate: bool,
}

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

/// In-flight plugin calls of one ticket: the step and the report, or the
/// export and why the call could not be made.
type Calls = JoinSet<(
    String,
    std::result::Result<CallReport, (crate::runtime::Op, String)>,
)>;

/// Events waiting to be applied, with their callers' reply channels.
type Queue = VecDeque<(Event, Option<oneshot::Sender<Result<()>>>)>;

struct Command {
    event: Event,
    reply: Option<oneshot::Sender<Result<()>>>,
}

/// Loaded plugins and what the trail says of each.
struct PluginSet {
    plugins: BTreeMap<String, Plugin>,
    refs: BTreeMap<String, PluginRef>,
    /// Plugins that did not load, with why (not in `plugins`).
    unavailable: BTreeMap<String, String>,
}

impl PluginSet {
    fn new(plugins: BTreeMap<String, Plugin>, mut unavailable: BTreeMap<String, String>) -> Self {
        unavailable.retain(|name, _| !plugins.contains_key(name));
        let refs = plugins
            .iter()
            .map(|(n, p)| {
                let m = p.manifest();
                (
                    n.clone(),
                    PluginRef {
                        name: m.name.clone(),
                        version: m.version.clone(),
                        wasm_sha256: p.wasm_sha256().to_string(),
                    },
                )
            })
            .collect();
        Self {
            plugins,
            refs,
            unavailable,
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

    /// Replace the current workflow definitions. Tickets already created
    /// keep the version they pinned.
    pub fn set_workflows(&self, workflows: BTreeMap<String, Workflow>) -> Result<()> {
        let set = self.plugin_set();
        let known = set
            .plugins
            .keys()
            .chain(set.unavailable.keys())
            .cloned()
            .collect();
        for wf in workflows.values() {
            wf.check_plugins(&known)?;
        }
        let map = workflows
            .into_iter()
            .map(|(n, w)| {
                let hash = w.hash();
                (n, (Arc::new(w), hash))
            })
            .collect();
        *self.inner.current.write().expect("workflows lock") = map;
        Ok(())
    }

    /// Current workflows by name.
    pub fn workflows(&self) -> BTreeMap<String, Arc<Workflow>> {
        let current = self.inner.current.read().expect("workflows lock");
        current
            .iter()
            .map(|(n, (wf, _))| (n.clone(), wf.clone()))
            .collect()
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Who is waiting for which ticket to change.
    pub fn watchers(&self) -> &watch::Watchers {
        &self.inner.watchers
    }

    /// Create a ticket; it is durable when this returns. With an
    /// idempotency key, a repeat returns the ticket the first call created
    /// (`false`: not created now).
    pub async fn create(
        &self,
        req: NewTicket,
        requested_by: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(Ticket, bool)> {
        cpu::short(self.create_ticket(req, requested_by, idempotency_key)).await
    }

    async fn create_ticket(
        &self,
        req: NewTicket,
        requested_by: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(Ticket, bool)> {
        if req.subject.trim().is_empty() {
            return Err(Error::Usage(
                "`subject` is empty: a ticket is about one person".into(),
            ));
        }
        if !(req.inputs.is_null() || req.inputs.is_object()) {
            return Err(Error::Usage("`inputs` must be a JSON object".into()));
        }
        if self.is_draining() {
            return Err(shutting_down());
        }
        let limits = &self.inner.intake;
        let subject_len = req.subject.trim().len();
        if subject_len > limits.subject_bytes {
            return Err(Error::TooLarge(IntakeLimits::over(
                "`subject`",
                subject_len,
                limits.subject_bytes,
                "--max-subject-bytes",
            )));
        }
        let inputs_len = req.inputs.to_string().len();
        if inputs_len > limits.inputs_bytes {
            return Err(Error::TooLarge(IntakeLimits::over(
                "`inputs`",
                inputs_len,
                limits.inputs_bytes,
                "--max-inputs-bytes",
            )));
        }
        let (wf, hash) = self
            .inner
            .current
            .read()
            .expect("workflows lock")
            .get(&req.workflow)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no workflow named `{}`", req.workflow)))?;
        // The inputs as the ticket keeps them: typed, defaults filled in.
        let inputs = wf
            .check_inputs(&req.subject, &req.inputs)
            .map_err(Error::Usage)?;
        let _guard = match idempotency_key {
            Some(key) => {
                let guard = self.inner.create_locks[stripe(key)].lock().await;
                if let Some(found) = self.created_for(Some(key))? {
                    return Ok((found, false));
                }
                Some(guard)
            }
            None => None,
        };
        let open_key = (wf.name.clone(), subject_key(&req.subject));
        let _subject_guard = self.inner.subject_locks[stripe(&open_key)].lock().await;
        let open = match self.leases() {
            // Shared by several workers: the database knows every open ticket.
            Some(leases) if !req.allow_duplicate => leases.open_for(&open_key.0, &open_key.1)?,
            Some(_) => None,
            None => self
                .inner
                .open
                .lock()
                .expect("open lock")
                .get(&open_key)
                .cloned(),
        };
        if !req.allow_duplicate
            && let Some(id) = open
        {
            // The open ticket may be this key's own, created on another
            // worker since the key was looked up: then it is the answer.
            if let Some(found) = self.created_for(idempotency_key)? {
                return Ok((found, false));
            }
            return Err(already_open(req.subject.trim(), &wf.name, &id));
        }
        let now = now_ms();
        let sla = wf.sla_times(now).map_err(Error::Workflow)?;
        let mut ticket = Ticket {
            id: new_id(now),
            workflow: wf.name.clone(),
            workflow_hash: hash.clone(),
            workflow_version: wf.version.clone(),
            subject: req.subject.trim().to_string(),
            inputs,
            state: TicketState::Pending,
            requested_by: requested_by.to_string(),
            batch: req.batch,
            created_ms: now,
            updated_ms: now,
            sla_deadline_ms: sla.map(|(deadline, _)| deadline),
            sla_breached: false,
            sla_at_risk_ms: sla.map(|(_, at_risk)| at_risk),
            sla_at_risk: false,
            compensating: false,
            steps: wf
                .steps
                .iter()
                .map(|s| (s.name.clone(), StepRecord::new()))
                .collect(),
            head: Default::default(),
        };
        let set = self.plugin_set();
        let tr = machine::apply(
            &mut ticket,
            &self.context(&set, &wf, now),
            Event::Created {
                by: requested_by.to_string(),
            },
        )?;
        let events = link_all(&mut ticket, now, tr.drafts);
        let newly_pinned = self
            .inner
            .pinned
            .lock()
            .expect("pinned lock")
            .insert(hash.clone(), wf.clone())
            .is_none();
        let mut committed = Committed::default();
        let batch = Batch {
            tickets: vec![committed.changes(&ticket)],
            events,
            workflows: if newly_pinned {
                vec![(wf.name.clone(), hash, (*wf).clone())]
            } else {
                Vec::new()
            },
            idempotency: idempotency_key
                .map(|k| vec![(k.to_string(), ticket.id.clone())])
                .unwrap_or_default(),
            fence: self.leases().map(|l| l.fence_for_new()).transpose()?,
            exclusive: (!req.allow_duplicate).then(|| open_key.clone()),
        };
        let fence = batch.fence;
        let counted: Vec<AuditKind> = batch.events.iter().map(|e| e.kind).collect();
        let announced = if wf.notify.is_empty() {
            Vec::new()
        } else {
            batch.events.clone()
        };
        if let Err(e) = self.inner.commits.commit(batch).await {
            if newly_pinned {
                self.inner
                    .pinned
                    .lock()
                    .expect("pinned lock")
                    .remove(&ticket.workflow_hash);
            }
            return match e {
                // Another worker's create for the same key landed first:
                // its ticket is the answer, as for a repeat here.
                Error::Refused(Refusal::KeyTaken(key)) => match self.created_for(Some(&key))? {
                    Some(found) => Ok((found, false)),
                    None => Err(Error::Store(format!(
                        "idempotency key {key} was taken and is gone"
                    ))),
                },
                Error::Refused(Refusal::SubjectOpen(id)) => {
                    match self.created_for(idempotency_key)? {
                        Some(found) => Ok((found, false)),
                        None => Err(already_open(&ticket.subject, &wf.name, &id)),
                    }
                }
                other => Err(other),
            };
        }
        self.inner.metrics.events(&counted);
        self.notify(&ticket, &wf, &announced);
        self.spawn_driver(
            ticket.clone(),
            committed,
            wf,
            VecDeque::new(),
            tr.calls,
            fence,
        );
        Ok((ticket, true))
    }

    /// The ticket idempotency key `key` created, if it created one.
    fn created_for(&self, key: Option<&str>) -> Result<Option<Ticket>> {
        let Some(id) = key
            .map(|k| self.inner.store.idempotency(k))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        self.inner
            .store
            .ticket(&id)?
            .map(Some)
            .ok_or_else(|| Error::Store(format!("idempotency key points at missing ticket {id}")))
    }

    /// Resume every ticket that was in flight when the host stopped: those
    /// with a call that was running (or a step waiting for a plugin, which
    /// may have loaded this time) get a driver now; the rest are parked
    /// until their next wake, costing no task and no copy in memory.
    pub async fn recover(&self) -> Result<usize> {
        if self.leases().is_some() {
            // Shared with other workers: take back this worker's own, then
            // look for work as it falls due or is left by a worker that died.
            let n = self.reclaim_own()?;
            self.start_claimer();
            self.inner
                .recovered
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(n);
        }
        let ids = self.inner.store.in_flight()?;
        let mut n = 0;
        for id in ids {
            let Some(ticket) = self.inner.store.ticket(&id)? else {
                continue;
            };
            let wf = self.pinned(&ticket)?;
            let must_drive = ticket.steps.values().any(|s| {
                matches!(
                    s.status,
                    crate::ticket::StepStatus::Running | crate::ticket::StepStatus::WaitingPlugin
                )
            });
            if must_drive {
                let queue = VecDeque::from([(Event::Recovered, None)]);
                self.spawn_driver(ticket, Committed::default(), wf, queue, Vec::new(), None);
            } else {
                self.inner.open.lock().expect("open lock").insert(
                    (ticket.workflow.clone(), subject_key(&ticket.subject)),
                    ticket.id.clone(),
                );
                // Due already (a retry or a time that passed while the host
                // was down): the timer task wakes it at once.
                self.park(&ticket, machine::next_wake(&ticket));
            }
            n += 1;
        }
        self.inner
            .recovered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Approve, reject, cancel or retry a ticket. Returns once the decision
    /// is durable, or with why it does not apply.
    pub async fn send(&self, id: &str, event: Event) -> Result<()> {
        // Another worker driving the ticket lets it go once nothing is in
        // flight (or its lease runs out): wait that long at most.
        let patience = self.leases().map(|l| l.ttl() + Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        loop {
            let (tx, rx) = oneshot::channel();
            let cmd = Command {
                event: event.clone(),
                reply: Some(tx),
            };
            let Some(sender) = self.driver(id)? else {
                if patience.is_some_and(|p| started.elapsed() > p) {
                    return Err(leasing::busy_elsewhere(id));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if sender.send(cmd).is_err() {
                // A driver that stopped without leaving (it failed): forget it.
                let mut active = self.inner.active.lock().expect("active lock");
                if active.get(id).is_some_and(|s| s.same_channel(&sender)) {
                    active.remove(id);
                }
                continue;
            }
            match rx.await {
                Ok(result) => return result,
                // The driver exited (parked, or at rest) between our lookup
                // and its last look at the channel, dropping the command
                // unapplied: go again.
                Err(_) => continue,
            }
        }
    }

    /// The ticket's driver, started from the store if it has none (it is
    /// parked, or at rest). `None`: another worker drives it now.
    fn driver(&self, id: &str) -> Result<Option<mpsc::UnboundedSender<Command>>> {
        let mut active = self.inner.active.lock().expect("active lock");
        if let Some(sender) = active.get(id) {
            return Ok(Some(sender.clone()));
        }
        let fence = match self.leases() {
            Some(leases) => match leases.acquire(id)? {
                Some(fence) => Some(fence),
                None if self.inner.store.ticket(id)?.is_none() => {
                    return Err(Error::NotFound(format!("no ticket {id}")));
                }
                None => return Ok(None),
            },
            None => None,
        };
        let ticket = self
            .inner
            .store
            .ticket(id)?
            .ok_or_else(|| Error::NotFound(format!("no ticket {id}")))?;
        let wf = self.pinned(&ticket)?;
        Ok(Some(self.spawn_driver_in(
            &mut active,
            ticket,
            Committed::default(),
            wf,
            VecDeque::new(),
            Vec::new(),
            fence,
        )))
    }

    /// Give a parked ticket its tick: start its driver from the store.
    fn wake(&self, id: &str) {
        match self.driver(id) {
            // A driver that has just stopped takes no tick; the ticket is
            // then at rest or parked again by it.
            Ok(Some(d)) => drop(d.send(Command {
                event: Event::Tick,
                reply: None,
            })),
            // Another worker has it: that one ticks it.
            Ok(None) => {}
            Err(e) => {
                tracing::error!(ticket = %id, error = %e, "could not wake the ticket; it resumes on restart");
            }
        }
    }

    /// Park a ticket with nothing in flight until `wake` (or an event).
    fn park(&self, ticket: &Ticket, wake: Option<u64>) {
        if self.leases().is_some() && wake.is_none() {
            // Released in the store: a decision reaches it from any worker.
            return;
        }
        let wants_plugin = ticket
            .steps
            .values()
            .any(|s| s.status == crate::ticket::StepStatus::WaitingPlugin);
        self.inner.parking.park(&ticket.id, wake, wants_plugin);
        self.start_timer();
    }

    /// Start the one task that wakes parked tickets when they are due, if
    /// it is not running. It holds the scheduler weakly, so dropping the
    /// scheduler ends it.
    fn start_timer(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.timer_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let parking = self.inner.parking.clone();
        tokio::spawn(async move {
            loop {
                let wake = parking.next_wake().map(|at| {
                    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
                });
                tokio::select! {
                    () = parking.earlier() => {}
                    () = sleep_until(wake), if wake.is_some() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                let this = Scheduler { inner };
                if this.is_draining() {
                    // Timers wait for the next start.
                    return;
                }
                for id in parking.take_due(now_ms()) {
                    this.wake(&id);
                }
            }
        });
    }

    /// Whether in-flight tickets have been resumed and the scheduler is
    /// not shutting down (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.inner
            .recovered
            .load(std::sync::atomic::Ordering::Relaxed)
            && !self.is_draining()
    }

    /// Whether [`Scheduler::drain`] has begun.
    pub fn is_draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Shut down gracefully: start no more calls, tickets or timers; wait
    /// up to `grace` for the calls running now to return and their results
    /// to be committed; then record those still running as interrupted
    /// (they run again on the next start, with the same idempotency key).
    /// Every acknowledged transition is already durable, so nothing needs
    /// flushing afterwards.
    pub async fn drain(&self, grace: Duration) -> Drained {
        use std::sync::atomic::Ordering;
        self.inner.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        let open = || self.inner.open_calls.load(Ordering::SeqCst);
        while open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let abandoned = open();
        if abandoned > 0 {
            for id in self.active_ids() {
                if let Err(e) = self.send(&id, Event::Interrupted).await {
                    tracing::error!(ticket = %id, error = %e,
                        "could not record the interruption; the next start does");
                }
            }
        }
        // On a shared store, the others take this worker's tickets now.
        if let Some(leases) = self.leases() {
            match leases.release_all(now_ms()) {
                Ok(n) => {
                    tracing::info!(tickets = n, "released this worker's tickets to the others")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the tickets; their leases run out instead")
                }
            }
        }
        Drained {
            abandoned_calls: abandoned,
        }
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

    /// How many open tickets are parked: nothing in flight, no driver.
    pub fn parked(&self) -> usize {
        self.inner.parking.len()
    }

    /// The tickets that have a driver here now.
    fn active_ids(&self) -> Vec<String> {
        let active = self.inner.active.lock().expect("active lock");
        active.keys().cloned().collect()
    }

    /// How many tickets have a driver (are being worked on).
    pub fn active(&self) -> usize {
        self.inner.active.lock().expect("active lock").len()
    }

    fn pinned(&self, ticket: &Ticket) -> Result<Arc<Workflow>> {
        if let Some(wf) = self
            .inner
            .pinned
            .lock()
            .expect("pinned lock")
            .get(&ticket.workflow_hash)
        {
            return Ok(wf.clone());
        }
        let wf = self
            .inner
            .store
            .workflow(&ticket.workflow, &ticket.workflow_hash)?
            .ok_or_else(|| {
                Error::Store(format!(
                    "ticket {} pins workflow {}@{} which is not stored",
                    ticket.id, ticket.workflow, ticket.workflow_hash
                ))
            })?;
        if self.leases().is_some() {
            // Another worker's version, perhaps naming a plugin not here
            // (and not yet read by the workflow follower): its steps wait
            // and are left to a worker that has it, rather than fail.
            for plugin in wf.plugins() {
                self.lacks_plugin(plugin, crate::workflow::shared::NOT_HERE);
            }
        }
        let wf = Arc::new(wf);
        self.inner
            .pinned
            .lock()
            .expect("pinned lock")
            .insert(ticket.workflow_hash.clone(), wf.clone());
        Ok(wf)
    }

    /// The intake limits this scheduler was made with.
    pub fn intake(&self) -> IntakeLimits {
        self.inner.intake
    }

    /// A ticket at rest is no longer open for its subject.
    fn close(&self, ticket: &Ticket) {
        let key = (ticket.workflow.clone(), subject_key(&ticket.subject));
        let mut open = self.inner.open.lock().expect("open lock");
        if open.get(&key) == Some(&ticket.id) {
            open.remove(&key);
        }
    }

    /// The plugins now.
    fn plugin_set(&self) -> Arc<PluginSet> {
        self.inner.plugins.read().expect("plugins lock").clone()
    }

    /// Loaded plugins by name.
    pub fn plugins(&self) -> BTreeMap<String, Plugin> {
        self.plugin_set().plugins.clone()
    }

    /// Add or replace a plugin: calls from now on use it. Tickets in flight
    /// pick it up at their next call, and the trail records which version
    /// (and wasm hash) made each call.
    pub fn install_plugin(&self, plugin: Plugin) {
        let name = plugin.manifest().name.clone();
        let was_unavailable = {
            let mut guard = self.inner.plugins.write().expect("plugins lock");
            let mut plugins = guard.plugins.clone();
            plugins.insert(name.clone(), plugin);
            let was = guard.unavailable.contains_key(&name);
            *guard = Arc::new(PluginSet::new(plugins, guard.unavailable.clone()));
            was
        };
        if was_unavailable {
            // Steps waiting for it start now: nudge every open ticket (a
            // tick changes nothing for those not waiting).
            let drivers: Vec<_> = self
                .inner
                .active
                .lock()
                .expect("active lock")
                .values()
                .cloned()
                .collect();
            for d in drivers {
                let _ = d.send(Command {
                    event: Event::Tick,
                    reply: None,
                });
            }
            for id in self.inner.parking.take_wanting_plugin() {
                self.wake(&id);
            }
        }
    }

    /// Plugin `name` cannot be loaded here (`why`): steps that need it
    /// wait for it rather than fail, and on a shared store they are left
    /// to workers that have it. No change if it is loaded, or already
    /// known to be unavailable.
    pub fn lacks_plugin(&self, name: &str, why: &str) {
        let mut guard = self.inner.plugins.write().expect("plugins lock");
        if guard.plugins.contains_key(name) || guard.unavailable.contains_key(name) {
            return;
        }
        let mut unavailable = guard.unavailable.clone();
        unavailable.insert(name.to_string(), why.to_string());
        *guard = Arc::new(PluginSet::new(guard.plugins.clone(), unavailable));
    }

    fn context<'a>(&self, set: &'a PluginSet, wf: &'a Workflow, now: u64) -> Context<'a> {
        Context {
            workflow: wf,
            plugins: &set.refs,
            unavailable: &set.unavailable,
            now_ms: now,
            random: rand::random(),
        }
    }

    fn spawn_driver(
        &self,
        ticket: Ticket,
        committed: Committed,
        wf: Arc<Workflow>,
        queue: Queue,
        calls: Vec<Call>,
        fence: Option<i64>,
    ) {
        let mut active = self.inner.active.lock().expect("active lock");
        self.spawn_driver_in(&mut active, ticket, committed, wf, queue, calls, fence);
    }

    /// Start a ticket's driver, registering it in `active` (held by the
    /// caller, so no second driver can start for it meanwhile). `fence`:
    /// the lease it drives the ticket under, on a shared store.
    /// `committed`: what the store already has of the ticket as this
    /// process wrote it (nothing, for a ticket read from the store: its
    /// first transition writes it whole).
    #[allow(clippy::too_many_arguments)]
    fn spawn_driver_in(
        &self,
        active: &mut HashMap<String, mpsc::UnboundedSender<Command>>,
        ticket: Ticket,
        committed: Committed,
        wf: Arc<Workflow>,
        queue: Queue,
        calls: Vec<Call>,
        fence: Option<i64>,
    ) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        active.insert(ticket.id.clone(), tx.clone());
        self.inner.parking.unpark(&ticket.id);
        if !ticket.state.is_terminal() && fence.is_none() {
            self.inner.open.lock().expect("open lock").insert(
                (ticket.workflow.clone(), subject_key(&ticket.subject)),
                ticket.id.clone(),
            );
        }
        let this = self.clone();
        // Short work: a ticket's step must not wait behind long plugin calls.
        tokio::spawn(cpu::short(async move {
            this.drive(ticket, committed, wf, queue, calls, rx, fence)
                .await
        }));
        tx
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        self,
        mut ticket: Ticket,
        mut committed: Committed,
        wf: Arc<Workflow>,
        mut queue: Queue,
        initial: Vec<Call>,
        mut rx: mpsc::UnboundedReceiver<Command>,
        fence: Option<i64>,
    ) {
        let mut calls = Calls::new();
        for call in initial {
            self.start_call(&mut calls, &ticket, &wf, call);
        }
        loop {
            while let Some((event, reply)) = queue.pop_front() {
                let finishing = is_call_result(&event);
                let result = self
                    .transition(&mut ticket, &mut committed, &wf, event, &mut calls, fence)
                    .await;
                if finishing {
                    self.call_closed(1);
                }
                if let Err(e) = &result
                    && matches!(e, Error::Store(_) | Error::Fenced(_))
                {
                    if matches!(e, Error::Fenced(_)) {
                        self.inner.metrics.fenced();
                        tracing::warn!(ticket = %ticket.id, error = %e, "lease lost: this worker stops driving the ticket and commits nothing more of it");
                    } else {
                        tracing::error!(ticket = %ticket.id, error = %e, "commit failed; the ticket resumes on restart");
                    }
                    // Calls still running are dropped with this driver.
                    self.call_closed(
                        calls.len() + queue.iter().filter(|(e, _)| is_call_result(e)).count(),
                    );
                    if let Some(r) = reply {
                        let _ = r.send(result);
                    }
                    self.inner
                        .active
                        .lock()
                        .expect("active lock")
                        .remove(&ticket.id);
                    return;
                }
                if let Some(r) = reply {
                    let _ = r.send(result);
                }
            }
            // Nothing in flight and nothing due soon: leave, at rest (a
            // terminal ticket) or parked until its next wake. Every
            // transition is committed, so the store has it all.
            let next = machine::next_wake(&ticket);
            let resting = ticket.state.is_terminal();
            if calls.is_empty() && (resting || next.is_none_or(|at| at > now_ms() + PARK_BEYOND_MS))
            {
                let mut active = self.inner.active.lock().expect("active lock");
                // A command may have raced in; handle it before leaving.
                if let Ok(cmd) = rx.try_recv() {
                    drop(active);
                    queue.push_back((cmd.event, cmd.reply));
                    continue;
                }
                active.remove(&ticket.id);
                if resting {
                    drop(active);
                    self.close(&ticket);
                } else {
                    // Under the lock, so no driver starts for it meanwhile.
                    self.park(&ticket, next);
                    drop(active);
                    if let Some(fence) = fence {
                        self.release(&ticket, &wf, fence, next);
                    }
                }
                return;
            }
            // Draining: timers (retries, SLA) wait for the next start.
            let wake = next.filter(|_| !self.is_draining()).map(|at| {
                let wait = at.saturating_sub(now_ms());
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            tokio::select! {
                Some(cmd) = rx.recv() => queue.push_back((cmd.event, cmd.reply)),
                Some(joined) = calls.join_next(), if !calls.is_empty() => {
                    let event = match joined {
                        Ok((step, Ok(report))) => {
                            let outcome = match &report.outcome {
                                Outcome::Succeeded { .. } => "succeeded",
                                Outcome::Failed { error } if error.kind == crate::runtime::FailureKind::Retryable => "retryable",
                                Outcome::Failed { .. } => "fatal",
                            };
                            let op = serde_json::to_value(report.op).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                            self.inner.metrics.call(&report.plugin, &op, outcome, report.duration_ms as f64 / 1000.0);
                            Event::CallFinished { step, report: Box::new(report) }
                        }
                        Ok((step, Err((op, message)))) => Event::CallSetupFailed { step, op, message },
                        Err(e) => {
                            tracing::error!(ticket = %ticket.id, error = %e, "plugin call task failed");
                            self.call_closed(1);
                            continue;
                        }
                    };
                    queue.push_back((event, None));
                }
                () = sleep_until(wake), if wake.is_some() => queue.push_back((Event::Tick, None)),
            }
        }
    }

    /// Apply, commit, then call: the write-ahead order.
    async fn transition(
        &self,
        ticket: &mut Ticket,
        committed: &mut Committed,
        wf: &Arc<Workflow>,
        event: Event,
        calls: &mut Calls,
        fence: Option<i64>,
    ) -> Result<()> {
        // A tick with nothing due (or an interruption with nothing
        // running) changes nothing worth a write.
        let event_kind = if matches!(event, Event::Tick | Event::Interrupted) {
            EventKind::Quiet
        } else {
            EventKind::Changes
        };
        let now = now_ms();
        // In place: `apply` changes nothing when it refuses an event, and if
        // the commit fails the driver stops and the ticket is reloaded from
        // the store on restart, so memory never runs ahead of disk for long.
        let set = self.plugin_set();
        let tr = machine::apply(ticket, &self.context(&set, wf, now), event)?;
        if tr.drafts.is_empty() && tr.calls.is_empty() && !matches!(event_kind, EventKind::Changes)
        {
            return Ok(());
        }
        let events = link_all(ticket, now, tr.drafts);
        let counted: Vec<AuditKind> = events.iter().map(|e| e.kind).collect();
        let announced = if wf.notify.is_empty() {
            Vec::new()
        } else {
            events.clone()
        };
        self.commit_waiting_for_space(Batch {
            tickets: vec![committed.changes(ticket)],
            events,
            fence,
            ..Batch::default()
        })
        .await?;
        self.notify(ticket, wf, &announced);
        self.inner.metrics.events(&counted);
        self.inner.watchers.changed(&ticket.id, ticket.head.len);
        for call in tr.calls {
            self.start_call(calls, ticket, wf, call);
        }
        Ok(())
    }

    /// Commit a transition; while the disk is full, wait and try the same
    /// batch again (the store refused it whole, so nothing is half-written),
    /// so a ticket in flight carries on once space is freed rather than
    /// stopping until a restart. No effect starts before the commit lands.
    /// A shutdown ends the wait: the ticket resumes from disk on restart.
    async fn commit_waiting_for_space(&self, mut batch: Batch) -> Result<()> {
        let mut warned = false;
        loop {
            let (result, back) = self.inner.commits.commit_returning(batch).await;
            match result {
                Err(Error::StorageFull(why)) if !self.is_draining() => {
                    let Some(back) = back else {
                        return Err(Error::StorageFull(why));
                    };
                    batch = back;
                    if !warned {
                        tracing::warn!(ticket = %batch.tickets.first().map(|t| t.id()).unwrap_or_default(), %why, "disk full: the ticket waits for space");
                        warned = true;
                    }
                    tokio::time::sleep(SPACE_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// Make a call the committed transition asked for, unless shutting
    /// down: then the step stays `running` on disk and the next start runs
    /// it (recovery records it interrupted), so no call begins that the
    /// drain would have to wait for.
    fn start_call(&self, calls: &mut Calls, ticket: &Ticket, wf: &Workflow, call: Call) {
        if self.is_draining() {
            return;
        }
        self.inner
            .open_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.spawn_call(calls, ticket, wf, call);
    }

    /// `n` calls' results are recorded (or dropped with their driver).
    fn call_closed(&self, n: usize) {
        self.inner
            .open_calls
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn spawn_call(&self, calls: &mut Calls, ticket: &Ticket, wf: &Workflow, call: Call) {
        let def = wf.step(&call.step).cloned();
        let plugin = def
            .as_ref()
            .and_then(|d| self.plugin_set().plugins.get(&d.plugin).cloned());
        let input = StepInput {
            ticket_id: ticket.id.clone(),
            step: call.step.clone(),
            subject: ticket.subject.clone(),
            inputs: ticket.inputs.clone(),
            prior_outputs: machine::prior_outputs(ticket, &call.step, call.op),
            attempt: call.attempt,
            idempotency_key: format!("{}/{}", ticket.id, call.step),
        };
        let workers = self.inner.workers.clone();
        let waiting = self.inner.waiting.clone();
        let secrets = self.inner.secrets.clone();
        let step = call.step.clone();
        let (Some(def), Some(plugin)) = (def, plugin) else {
            calls.spawn(std::future::ready((
                step,
                Err((call.op, "the step's plugin is not loaded".to_string())),
            )));
            return;
        };
        // The plugin's own capacity first, holding nothing shared while
        // waiting for it: tickets queued behind a slow plugin must not sit
        // on the worker slots other plugins' tickets need. Getting them is
        // short work; the call then counts itself (short while young).
        let capacity = cpu::short({
            let plugin = plugin.clone();
            async move {
                waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let slot = plugin.slot().await;
                let permit = workers.acquire_owned().await;
                waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                (slot, permit.expect("semaphore never closed"))
            }
        });
        calls.spawn(async move {
            let (slot, _permit) = capacity.await;
            let mut secrets = secrets;
            for (wanted, supplied) in &def.secrets {
                match secrets.get(supplied).cloned() {
                    Some(v) => secrets.insert(wanted.clone(), v),
                    // Missing: the plugin's own name must not silently stand in.
                    None => secrets.remove(wanted),
                };
            }
            let grants = Grants {
                config: crate::workflow::inputs::fill_config(&def.config, &input.inputs),
                secrets,
            };
            let limit = def.timeout.unwrap_or(Duration::MAX);
            match tokio::time::timeout(limit, plugin.call_in(slot, call.op, &input, &grants)).await
            {
                Ok(Ok(report)) => (step, Ok(report)),
                Ok(Err(e)) => (step, Err((call.op, e.to_string()))),
                Err(_) => (step, Ok(timed_out(&plugin, call.op, limit))),
            }
        });
    }
}

/// What [`Scheduler::drain`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Calls still running when the grace period ended, recorded interrupted.
    pub abandoned_calls: usize,
}

fn is_call_result(event: &Event) -> bool {
    matches!(
        event,
        Event::CallFinished { .. } | Event::CallSetupFailed { .. }
    )
}

/// Why work is refused while draining.
/// The answer to a create for a subject with an open ticket `id`.
fn already_open(subject: &str, workflow: &str, id: &str) -> Error {
    Error::Conflict(format!(
        "{subject} already has an open {workflow} ticket, {id}; finish or cancel it first, \
         or pass allow_duplicate to run the workflow for them twice"
    ))
}

fn shutting_down() -> Error {
    Error::Unavailable(
        "the server is shutting down: it takes no new work now; retry once it is back (or against another instance)".into(),
    )
}

enum EventKind {
    Quiet,
    Changes,
}

fn timed_out(plugin: &Plugin, op: crate::runtime::Op, limit: Duration) -> CallReport {
    CallReport {
        plugin: plugin.manifest().name.clone(),
        version: plugin.manifest().version.clone(),
        wasm_sha256: plugin.wasm_sha256().to_string(),
        op,
        outcome: Outcome::Failed {
            error: StepFailure {
                kind: crate::runtime::FailureKind::Retryable,
                cause: FailureCause::Timeout,
                message: format!(
                    "the step ran past its workflow timeout of {} ms",
                    limit.as_millis()
                ),
                retry_after_ms: None,
            },
        },
        log: Vec::new(),
        requests: Vec::new(),
        duration_ms: limit.as_millis() as u64,
    }
}

/// A subject as the duplicate check compares it: trimmed, case folded
/// (e-mail addresses are matched case-blind in practice).
pub fn subject_key(subject: &str) -> String {
    subject.trim().to_lowercase()
}

/// Which of 64 lock stripes a key takes.
fn stripe(key: &(impl std::hash::Hash + ?Sized)) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % 64
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn link_all(ticket: &mut Ticket, now: u64, drafts: Vec<audit::Draft>) -> Vec<AuditEvent> {
    let id = ticket.id.clone();
    drafts
        .into_iter()
        .map(|d| audit::link(&id, &mut ticket.head, now, d))
        .collect()
}
