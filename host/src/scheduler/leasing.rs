//! Sharing tickets with other workers, on a store with [`Leases`].
//!
//! A worker drives a ticket only under a lease: one it took when creating
//! the ticket, when a decision for it arrived (`Scheduler::driver`), or
//! here, when the ticket fell due or its owner's lease ran out. While it
//! drives, it renews; when nothing is in flight it releases the ticket in
//! the store with its next wake, so any worker can take it then. Every
//! commit carries the lease's fencing token and the store refuses a stale
//! one, so a worker that was paused past its lease commits nothing over the
//! ticket's new owner (its driver stops, counted in
//! `itsm_fencing_refusals_total`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::machine::Event;
use super::{Scheduler, now_ms};
use crate::error::{Error, Result};
use crate::store::Leases;
use crate::ticket::{StepStatus, Ticket};
use crate::workflow::Workflow;

/// Due tickets taken per look, at most (the next look follows at once
/// when a look took this many).
const CLAIM_BATCH: usize = 64;

/// How often a worker looks for due or abandoned tickets: the latency of
/// a timer set by another worker, and of a take-over after a lease ran out.
const CLAIM_EVERY: Duration = Duration::from_millis(250);

impl Scheduler {
    /// The store's leases, when it is shared with other workers.
    pub(super) fn leases(&self) -> Option<&dyn Leases> {
        self.inner.store.leases()
    }

    /// Start-up: drive again every ticket this worker's name still holds.
    pub(super) fn reclaim_own(&self) -> Result<usize> {
        let Some(leases) = self.leases() else {
            return Ok(0);
        };
        let own = leases.reclaim_own()?;
        let n = own.len();
        for (id, fence) in own {
            self.adopt(&id, fence)?;
        }
        Ok(n)
    }

    /// Drive a ticket just taken under `fence`: from the store, recovering
    /// calls its last owner left running.
    fn adopt(&self, id: &str, fence: i64) -> Result<()> {
        let leases = self.leases().expect("adopt needs leases");
        let mut active = self.inner.active.lock().expect("active lock");
        if active.contains_key(id) {
            // A driver here still holds an older lease (this worker was
            // paused past it): that driver's commits are refused from now
            // on, and the ticket goes back for the next look.
            drop(active);
            return leases.release(id, fence, Some(now_ms()), &[]);
        }
        let Some(ticket) = self.inner.store.ticket(id)? else {
            return Ok(());
        };
        let wf = self.pinned(&ticket)?;
        let recovering = ticket
            .steps
            .values()
            .any(|s| matches!(s.status, StepStatus::Running | StepStatus::WaitingPlugin));
        let first = if recovering {
            Event::Recovered
        } else {
            Event::Tick
        };
        self.inner.metrics.lease_taken();
        self.spawn_driver_in(
            &mut active,
            ticket,
            crate::store::Committed::default(),
            wf,
            VecDeque::from([(first, None)]),
            Vec::new(),
            Some(fence),
        );
        Ok(())
    }

    /// Let a ticket with nothing in flight go, to be woken at `wake`. One
    /// whose steps wait for plugins this worker lacks is due at once and
    /// names them, so the next worker that has one of them takes it (one
    /// that lacks them all leaves it; see [`Leases::claim_due`]).
    pub(super) fn release(&self, ticket: &Ticket, wf: &Workflow, fence: i64, wake: Option<u64>) {
        let wants: Vec<String> = ticket
            .steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::WaitingPlugin)
            .filter_map(|(name, _)| wf.step(name).map(|d| d.plugin.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let wake = if wants.is_empty() {
            wake
        } else {
            Some(now_ms())
        };
        if let Some(leases) = self.leases()
            && let Err(e) = leases.release(&ticket.id, fence, wake, &wants)
        {
            // Its lease runs out instead, and another look takes it then.
            tracing::warn!(ticket = %ticket.id, error = %e, "could not release the ticket");
        }
    }

    /// The task that renews this worker's leases and takes due and
    /// abandoned tickets. It holds the scheduler weakly, so dropping the
    /// scheduler ends it; so does draining.
    pub(super) fn start_claimer(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut renewed = tokio::time::Instant::now();
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let this = Scheduler { inner };
                if this.is_draining() {
                    return;
                }
                let leases = this.leases().expect("the claimer runs on leases");
                let renew_every = leases.ttl() / 4;
                if renewed.elapsed() >= renew_every {
                    renewed = tokio::time::Instant::now();
                    this.renew();
                }
                // Tickets waiting only for plugins this worker lacks are
                // left to the workers that have them.
                let lacking: Vec<String> = this.plugin_set().unavailable.keys().cloned().collect();
                let taken = match leases.claim_due(now_ms(), CLAIM_BATCH, &lacking) {
                    Ok(taken) => taken,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not look for due tickets");
                        Vec::new()
                    }
                };
                let full = taken.len() == CLAIM_BATCH;
                for (id, fence) in taken {
                    if let Err(e) = this.adopt(&id, fence) {
                        tracing::error!(ticket = %id, error = %e, "could not take the ticket over");
                    }
                }
                drop(this);
                if !full {
                    tokio::time::sleep(CLAIM_EVERY).await;
                }
            }
        });
    }

    /// Renew the leases of every ticket driven here; say which were lost.
    fn renew(&self) {
        let Some(leases) = self.leases() else { return };
        let held = self.active_ids();
        match leases.renew(&held) {
            Ok(kept) if kept.len() < held.len() => {
                let kept: std::collections::HashSet<&String> = kept.iter().collect();
                for id in held.iter().filter(|id| !kept.contains(id)) {
                    // Its next commit is refused, which stops its driver.
                    tracing::warn!(ticket = %id, worker = leases.worker(), "lease lost to another worker");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not renew leases"),
        }
    }
}

/// Why a decision for a ticket another worker holds waited in vain.
pub(super) fn busy_elsewhere(id: &str) -> Error {
    Error::Unavailable(format!(
        "ticket {id} is being worked on by another worker, which has not let it go; \
         try again in a moment"
    ))
}
