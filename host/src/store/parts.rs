//! A ticket as the store keeps it: in parts, so a transition writes what
//! changed rather than the whole ticket.
//!
//! A ticket is three kinds of record: its core (everything but its steps),
//! one record per step (without its attempts), and one per attempt (with
//! its log and requests); a store may keep each step's last attempt in the
//! step's record instead (sled does). A [`TicketWrite`] carries the core and the parts
//! a transition changed; [`Committed`] remembers what a driver has
//! already written, so a ticket with a hundred retries costs one attempt
//! record per transition, as one with none does.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::seal::corrupt;
use crate::error::Result;
use crate::ticket::{Attempt, StepRecord, Ticket};

/// What one commit writes of one ticket.
#[derive(Debug, Clone)]
pub struct TicketWrite {
    /// The ticket with its steps left out (`steps` is empty): id, state,
    /// chain head and the listing fields, written every time.
    pub core: Ticket,
    /// Steps written, each without its attempts.
    pub steps: Vec<(String, StepRecord)>,
    /// Attempts written, by step (an attempt is known by its `n`), in `n`
    /// order. A step written comes with its last attempt (if it has any),
    /// and a step that gained attempts comes with the last one before them
    /// too, so a store may keep a step's last attempt in the step's own
    /// record ([`StepRow::last`]) and file the one it displaces.
    pub attempts: Vec<(String, Attempt)>,
    /// Who is related to the ticket ([`crate::ticket::parties`]), worked
    /// out from the whole ticket, which the core alone does not show: a
    /// store may index the ticket under each, so a person's list reads
    /// their tickets, not every ticket.
    pub parties: std::collections::BTreeSet<String>,
}

impl TicketWrite {
    /// Every part of `t`: for a new ticket, or a ticket this process has
    /// not written before (the store may hold an older layout of it).
    pub fn whole(t: &Ticket) -> Self {
        Committed::default().changes(t)
    }

    /// The ticket's id.
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// Lay this write over `base`, the ticket as stored (none: new).
    pub fn apply(self, base: Option<Ticket>) -> Result<Ticket> {
        let mut t = self.core;
        if let Some(base) = base {
            t.steps = base.steps;
        }
        for (name, step) in self.steps {
            put_step(&mut t, name, step);
        }
        for (step, attempt) in self.attempts {
            put_attempt(&mut t, &step, attempt)?;
        }
        Ok(t)
    }
}

impl From<Ticket> for TicketWrite {
    fn from(t: Ticket) -> Self {
        Self::whole(&t)
    }
}

/// A step's record, filed under `p/TICKET/STEP`: it names its ticket and
/// step, so a record under the wrong key is found.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StepRow {
    pub ticket: String,
    pub step: String,
    pub record: StepRecord,
    /// The step's last attempt, where the store keeps it in the step's
    /// record (sled: a transition then writes one record per step, not
    /// two); the attempts before it have records of their own. It wins
    /// over an attempt record of the same `n` (one left from before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Attempt>,
}

/// An attempt's record, filed under `c/TICKET/STEP/N`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AttemptRow {
    pub ticket: String,
    pub step: String,
    pub attempt: Attempt,
}

/// [`StepRow`] borrowed, to write one without copying the step.
#[derive(Serialize)]
pub(crate) struct StepRowRef<'a> {
    pub ticket: &'a str,
    pub step: &'a str,
    pub record: &'a StepRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<&'a Attempt>,
}

/// [`AttemptRow`] borrowed.
#[derive(Serialize)]
pub(crate) struct AttemptRowRef<'a> {
    pub ticket: &'a str,
    pub step: &'a str,
    pub attempt: &'a Attempt,
}

/// A part record, which names its ticket.
pub(crate) trait OfTicket {
    fn ticket(&self) -> &str;
}

impl OfTicket for StepRow {
    fn ticket(&self) -> &str {
        &self.ticket
    }
}

impl OfTicket for AttemptRow {
    fn ticket(&self) -> &str {
        &self.ticket
    }
}

/// A step record's key.
pub(crate) fn step_key(ticket: &str, step: &str) -> String {
    format!("p/{ticket}/{step}")
}

/// An attempt record's key: `n` in 8 hex digits, so keys sort in order.
pub(crate) fn attempt_key(ticket: &str, step: &str, n: u32) -> String {
    format!("c/{ticket}/{step}/{n:08x}")
}

/// A step's record (without attempts) replacing `name`'s, keeping the
/// attempts already there.
pub(crate) fn put_step(t: &mut Ticket, name: String, mut step: StepRecord) {
    if let Some(old) = t.steps.remove(&name) {
        step.attempts = old.attempts;
    }
    t.steps.insert(name, step);
}

/// An attempt in its place (`n` - 1): replacing the one there, or next.
pub(crate) fn put_attempt(t: &mut Ticket, step: &str, attempt: Attempt) -> Result<()> {
    let key = attempt_key(&t.id, step, attempt.n);
    let Some(s) = t.steps.get_mut(step) else {
        return Err(corrupt(key.as_bytes(), "its step is not stored"));
    };
    let at = (attempt.n as usize).wrapping_sub(1);
    match at.cmp(&s.attempts.len()) {
        std::cmp::Ordering::Less => s.attempts[at] = attempt,
        std::cmp::Ordering::Equal => s.attempts.push(attempt),
        std::cmp::Ordering::Greater => {
            return Err(corrupt(
                key.as_bytes(),
                &format!(
                    "the step has {} attempts stored before it, not {}",
                    s.attempts.len(),
                    at
                ),
            ));
        }
    }
    Ok(())
}

/// A ticket read back from its records: its core (which holds its steps
/// whole if it was written before tickets were kept in parts), then its
/// step records and attempt records, each in key order, then the last
/// attempts the step records hold.
pub(crate) fn assemble(
    core: Ticket,
    steps: impl IntoIterator<Item = StepRow>,
    attempts: impl IntoIterator<Item = AttemptRow>,
) -> Result<Ticket> {
    let mut t = core;
    let lasts = put_steps(&mut t, steps);
    for row in attempts {
        put_attempt(&mut t, &row.step, row.attempt)?;
    }
    for (step, last) in lasts {
        put_attempt(&mut t, &step, last)?;
    }
    Ok(t)
}

/// Step rows in place; the last attempts they hold, to be put after the
/// attempt records.
pub(crate) fn put_steps(
    t: &mut Ticket,
    steps: impl IntoIterator<Item = StepRow>,
) -> Vec<(String, Attempt)> {
    let mut lasts = Vec::new();
    for row in steps {
        if let Some(last) = row.last {
            lasts.push((row.step.clone(), last));
        }
        put_step(t, row.step, row.record);
    }
    lasts
}

/// What the store already holds of one ticket, as its driver last wrote
/// it: each step's record (attempts aside), how many attempts, and the
/// last one (the only one a transition changes: a running attempt ends).
#[derive(Debug, Default)]
pub struct Committed {
    steps: HashMap<String, Written>,
}

#[derive(Debug)]
struct Written {
    record: StepRecord,
    attempts: usize,
    last: Option<Attempt>,
}

impl Committed {
    /// `t` as just written whole.
    pub fn of(t: &Ticket) -> Self {
        let mut c = Self::default();
        c.changes(t);
        c
    }

    /// What of `t` differs from what is written, as a write; from then on
    /// that is taken as written (a failed commit stops the driver, and
    /// the next one starts from the store with nothing taken as written).
    pub fn changes(&mut self, t: &Ticket) -> TicketWrite {
        let mut steps = Vec::new();
        let mut attempts = Vec::new();
        for (name, s) in &t.steps {
            let written = self.steps.get_mut(name);
            let (known, last) = written
                .as_ref()
                .map_or((0, None), |w| (w.attempts, w.last.as_ref()));
            // Attempts before the last one written never change (a
            // transition only ends a running attempt, the last, or adds
            // one); the last is written again if it changed, and the rest
            // are new. Attempts are never taken away.
            debug_assert!(known <= s.attempts.len(), "a step lost attempts");
            let mut from = known.min(s.attempts.len());
            if known > 0 && s.attempts.get(known - 1) != last {
                from = known - 1;
            }
            let changed = from < s.attempts.len()
                || !written
                    .as_ref()
                    .is_some_and(|w| same_but_attempts(&w.record, s));
            if changed {
                // The step's record goes with its last attempt, and a new
                // last with the one it displaces ([`TicketWrite::attempts`]).
                from = from.min(s.attempts.len().saturating_sub(1));
                if s.attempts.len() > known && known > 0 {
                    from = from.min(known - 1);
                }
                steps.push((name.clone(), without_attempts(s)));
            }
            for a in &s.attempts[from..] {
                attempts.push((name.clone(), a.clone()));
            }
            let wrote_last = from < s.attempts.len();
            match written {
                Some(w) => {
                    if changed {
                        w.record = without_attempts(s);
                    }
                    if wrote_last {
                        w.last = s.attempts.last().cloned();
                    }
                    w.attempts = s.attempts.len();
                }
                None => {
                    self.steps.insert(
                        name.clone(),
                        Written {
                            record: without_attempts(s),
                            attempts: s.attempts.len(),
                            last: s.attempts.last().cloned(),
                        },
                    );
                }
            }
        }
        TicketWrite {
            core: core_of(t),
            steps,
            attempts,
            parties: crate::ticket::parties(t),
        }
    }
}

/// `t` without its steps.
fn core_of(t: &Ticket) -> Ticket {
    // Destructured, so a field added to the ticket is not forgotten here.
    let Ticket {
        id,
        workflow,
        workflow_hash,
        workflow_version,
        subject,
        inputs,
        state,
        requested_by,
        batch,
        created_ms,
        updated_ms,
        sla_deadline_ms,
        sla_breached,
        sla_at_risk_ms,
        sla_at_risk,
        compensating,
        steps: _,
        routed_to,
        links,
        head,
    } = t;
    Ticket {
        id: id.clone(),
        workflow: workflow.clone(),
        workflow_hash: workflow_hash.clone(),
        workflow_version: workflow_version.clone(),
        subject: subject.clone(),
        inputs: inputs.clone(),
        state: *state,
        requested_by: requested_by.clone(),
        batch: batch.clone(),
        created_ms: *created_ms,
        updated_ms: *updated_ms,
        sla_deadline_ms: *sla_deadline_ms,
        sla_breached: *sla_breached,
        sla_at_risk_ms: *sla_at_risk_ms,
        sla_at_risk: *sla_at_risk,
        compensating: *compensating,
        steps: Default::default(),
        routed_to: routed_to.clone(),
        links: links.clone(),
        head: head.clone(),
    }
}

/// A step's record with its attempts left out.
fn without_attempts(s: &StepRecord) -> StepRecord {
    let StepRecord {
        status,
        attempts: _,
        next_op,
        retry_at_ms,
        outputs,
        evidence,
        verification,
        compensation,
        decision,
        run_early,
        task,
        approval,
    } = s;
    StepRecord {
        status: *status,
        attempts: Vec::new(),
        next_op: *next_op,
        retry_at_ms: *retry_at_ms,
        outputs: outputs.clone(),
        evidence: evidence.clone(),
        verification: verification.clone(),
        compensation: compensation.clone(),
        decision: decision.clone(),
        run_early: run_early.clone(),
        task: task.clone(),
        approval: approval.clone(),
    }
}

/// Whether two step records agree but for their attempts.
fn same_but_attempts(a: &StepRecord, b: &StepRecord) -> bool {
    let StepRecord {
        status,
        attempts: _,
        next_op,
        retry_at_ms,
        outputs,
        evidence,
        verification,
        compensation,
        decision,
        run_early,
        task,
        approval,
    } = a;
    *status == b.status
        && *next_op == b.next_op
        && *retry_at_ms == b.retry_at_ms
        && *outputs == b.outputs
        && *evidence == b.evidence
        && *verification == b.verification
        && *compensation == b.compensation
        && *decision == b.decision
        && *run_early == b.run_early
        && *task == b.task
        && *approval == b.approval
}
