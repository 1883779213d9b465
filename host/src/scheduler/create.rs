//! Ticket creation: one subject, one workflow, durable before it returns;
//! a repeat of an idempotency key returns the first ticket, and a second
//! open ticket for the same person and workflow is refused.

use std::collections::VecDeque;

use super::drivers::link_all;
use super::lifecycle::shutting_down;
use super::machine::Event;
use super::{Scheduler, machine};
use crate::audit::AuditKind;
use crate::cpu;
use crate::error::{Error, Result};
use crate::intake::NewTicket;
use crate::store::{Batch, Committed, Refusal};
use crate::ticket::{StepRecord, Ticket, TicketState, new_id, now_ms, subject_key};

impl Scheduler {
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

    pub(super) async fn create_ticket(
        &self,
        req: NewTicket,
        requested_by: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(Ticket, bool)> {
        req.check_shape()?;
        if self.is_draining() {
            return Err(shutting_down());
        }
        req.check_limits(&self.inner.intake)?;
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
        let refused = match self.inner.commits.commit_refusable(batch).await.0 {
            Ok(Ok(())) => None,
            Ok(Err(refusal)) => Some(Ok(refusal)),
            Err(e) => Some(Err(e)),
        };
        if let Some(e) = refused {
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
                Ok(Refusal::KeyTaken(key)) => match self.created_for(Some(&key))? {
                    Some(found) => Ok((found, false)),
                    None => Err(Error::Store(format!(
                        "idempotency key {key} was taken and is gone"
                    ))),
                },
                Ok(Refusal::SubjectOpen(id)) => match self.created_for(idempotency_key)? {
                    Some(found) => Ok((found, false)),
                    None => Err(already_open(&ticket.subject, &wf.name, &id)),
                },
                Ok(Refusal::Fenced) => Err(Error::Fenced(format!(
                    "the create of {} was written under a lease it does not hold",
                    ticket.id
                ))),
                Err(other) => Err(other),
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
    pub(super) fn created_for(&self, key: Option<&str>) -> Result<Option<Ticket>> {
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
}

/// Why work is refused while draining.
/// The answer to a create for a subject with an open ticket `id`.
pub(super) fn already_open(subject: &str, workflow: &str, id: &str) -> Error {
    Error::Conflict(format!(
        "{subject} already has an open {workflow} ticket, {id}; finish or cancel it first, \
         or pass allow_duplicate to run the workflow for them twice"
    ))
}

/// Which of 64 lock stripes a key takes.
pub(super) fn stripe(key: &(impl std::hash::Hash + ?Sized)) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % 64
}
