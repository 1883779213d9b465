//! Ticket drivers: one task per ticket being worked on, which applies
//! events with the pure [`super::machine`], commits the result (group
//! commit, flushed) and only then makes the calls it asked for; tickets
//! with nothing in flight are parked until their next wake.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::calls::Calls;
use super::machine::{Call, Event};
use super::{Scheduler, leasing, machine};
use crate::audit::{self, AuditEvent, AuditKind};
use crate::cpu;
use crate::error::{Error, Result};
use crate::runtime::Outcome;
use crate::store::{Batch, Committed};
use crate::ticket::{Ticket, now_ms, subject_key};
use crate::workflow::Workflow;

/// A ticket with nothing in flight keeps its driver (and its place in
/// memory) only while its next wake is this close: a quick retry then needs
/// no store read, and anything longer waits parked.
pub(super) const PARK_BEYOND_MS: u64 = 1000;

/// How often a ticket whose transition met a full disk tries it again.
pub(super) const SPACE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Events waiting to be applied, with their callers' reply channels.
pub(super) type Queue = VecDeque<(Event, Option<oneshot::Sender<Result<()>>>)>;

pub(super) struct Command {
    pub(super) event: Event,
    pub(super) reply: Option<oneshot::Sender<Result<()>>>,
}

impl Scheduler {
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
    pub(super) fn driver(&self, id: &str) -> Result<Option<mpsc::UnboundedSender<Command>>> {
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
    pub(super) fn wake(&self, id: &str) {
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
    pub(super) fn park(&self, ticket: &Ticket, wake: Option<u64>) {
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
    pub(super) fn start_timer(&self) {
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

    pub(super) fn spawn_driver(
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
    pub(super) fn spawn_driver_in(
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
    pub(super) async fn drive(
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
    pub(super) async fn transition(
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
        let event_kind = if matches!(event, Event::Tick | Event::Interrupted | Event::Link { .. }) {
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
    pub(super) async fn commit_waiting_for_space(&self, mut batch: Batch) -> Result<()> {
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
}

pub(super) fn is_call_result(event: &Event) -> bool {
    matches!(
        event,
        Event::CallFinished { .. } | Event::CallSetupFailed { .. }
    )
}

pub(super) enum EventKind {
    Quiet,
    Changes,
}

pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) fn link_all(
    ticket: &mut Ticket,
    now: u64,
    drafts: Vec<audit::Draft>,
) -> Vec<AuditEvent> {
    let id = ticket.id.clone();
    drafts
        .into_iter()
        .map(|d| audit::link(&id, &mut ticket.head, now, d))
        .collect()
}
