//! A scheduler's life: recovering every ticket in flight at start,
//! readiness, and draining at shutdown.

use std::collections::VecDeque;
use std::time::Duration;

use super::machine::Event;
use super::{Scheduler, machine};
use crate::error::{Error, Result};
use crate::store::Committed;
use crate::ticket::{Ticket, now_ms, subject_key};

impl Scheduler {
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

    /// How many open tickets are parked: nothing in flight, no driver.
    pub fn parked(&self) -> usize {
        self.inner.parking.len()
    }

    /// The tickets that have a driver here now.
    pub(super) fn active_ids(&self) -> Vec<String> {
        let active = self.inner.active.lock().expect("active lock");
        active.keys().cloned().collect()
    }

    /// How many tickets have a driver (are being worked on).
    pub fn active(&self) -> usize {
        self.inner.active.lock().expect("active lock").len()
    }

    /// A ticket at rest is no longer open for its subject.
    pub(super) fn close(&self, ticket: &Ticket) {
        let key = (ticket.workflow.clone(), subject_key(&ticket.subject));
        let mut open = self.inner.open.lock().expect("open lock");
        if open.get(&key) == Some(&ticket.id) {
            open.remove(&key);
        }
    }
}

/// What [`Scheduler::drain`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Calls still running when the grace period ended, recorded interrupted.
    pub abandoned_calls: usize,
}

pub(super) fn shutting_down() -> Error {
    Error::Unavailable(
        "the server is shutting down: it takes no new work now; retry once it is back (or against another instance)".into(),
    )
}
