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
use crate::ticket::{Ticket, now_ms, subject_key};

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
        // The tickets its workflow relates it to must exist before it does.
        let wf = self
            .inner
            .current
            .read()
            .expect("workflows lock")
            .get(&req.workflow)
            .map(|(wf, _)| wf.clone());
        let related: Vec<_> = match &wf {
            Some(wf) => crate::workflow::relate::targets(wf, &req.inputs)
                .into_iter()
                .map(|(rel, input, id)| (rel, input.to_string(), id))
                .collect(),
            None => Vec::new(),
        };
        for (_, input, id) in &related {
            if self.inner.store.ticket(id)?.is_none() {
                return Err(Error::Usage(format!(
                    "input `{input}` names ticket {id}, which does not exist"
                )));
            }
        }
        let (ticket, created) =
            cpu::short(self.create_ticket(req, requested_by, idempotency_key)).await?;
        // Made on a repeat too: a create that died between its commit and
        // its relations completes them.
        if related.is_empty() {
            return Ok((ticket, created));
        }
        let by = format!("workflow:{}", ticket.workflow);
        for (rel, _, other) in related {
            self.link(&ticket.id, rel, &other, &by).await?;
        }
        let id = ticket.id.clone();
        Ok((self.inner.store.ticket(&id)?.unwrap_or(ticket), created))
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
        let inputs = req.checked_inputs(&wf)?;
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
        let open = self.open_ticket(&open_key, req.allow_duplicate)?;
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
        let allow_duplicate = req.allow_duplicate;
        let mut ticket = req.open(&wf, &hash, inputs, requested_by, now)?;
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
            exclusive: (!allow_duplicate).then(|| open_key.clone()),
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
                Ok(refusal) => self.refused(refusal, &ticket, idempotency_key),
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

    /// The open ticket of `open_key` (workflow, subject key), unless a
    /// duplicate is allowed: a shared store asks the database, which knows
    /// every worker's; one process knows its own.
    pub(super) fn open_ticket(
        &self,
        open_key: &(String, String),
        allow_duplicate: bool,
    ) -> Result<Option<String>> {
        Ok(match self.leases() {
            Some(leases) if !allow_duplicate => leases.open_for(&open_key.0, &open_key.1)?,
            Some(_) => None,
            None => self
                .inner
                .open
                .lock()
                .expect("open lock")
                .get(open_key)
                .cloned(),
        })
    }

    /// The answer to a create a shared store refused: another worker's
    /// create for the same key, or of an open ticket for the same subject,
    /// landed first.
    fn refused(
        &self,
        refusal: Refusal,
        ticket: &Ticket,
        idempotency_key: Option<&str>,
    ) -> Result<(Ticket, bool)> {
        match refusal {
            // Its ticket is the answer, as for a repeat here.
            Refusal::KeyTaken(key) => match self.created_for(Some(&key))? {
                Some(found) => Ok((found, false)),
                None => Err(Error::Store(format!(
                    "idempotency key {key} was taken and is gone"
                ))),
            },
            Refusal::SubjectOpen(id) => match self.created_for(idempotency_key)? {
                Some(found) => Ok((found, false)),
                None => Err(already_open(&ticket.subject, &ticket.workflow, &id)),
            },
            Refusal::Fenced => Err(Error::Fenced(format!(
                "the create of {} was written under a lease it does not hold",
                ticket.id
            ))),
        }
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
