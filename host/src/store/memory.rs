//! An in-memory [`Store`] for unit tests: same contract, no durability.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Batch, Store};
use crate::audit::AuditEvent;
use crate::error::Result;
use crate::ticket::Ticket;
use crate::workflow::Workflow;

#[derive(Default)]
struct Inner {
    tickets: BTreeMap<String, Ticket>,
    events: BTreeMap<(String, u64), AuditEvent>,
    workflows: BTreeMap<(String, String), Workflow>,
    idempotency: BTreeMap<String, String>,
    kv: BTreeMap<(String, String), Vec<u8>>,
}

/// Everything in one mutex.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock")
    }
}

impl Store for MemoryStore {
    fn commit(&self, batches: &[Batch]) -> Result<()> {
        let mut s = self.lock();
        for b in batches {
            for w in &b.tickets {
                let base = s.tickets.remove(w.id());
                let t = w.clone().apply(base)?;
                s.tickets.insert(t.id.clone(), t);
            }
            for e in &b.events {
                s.events.insert((e.ticket_id.clone(), e.seq), e.clone());
            }
            for (name, hash, wf) in &b.workflows {
                s.workflows.insert((name.clone(), hash.clone()), wf.clone());
            }
            for (k, id) in &b.idempotency {
                s.idempotency.insert(k.clone(), id.clone());
            }
        }
        Ok(())
    }
    fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        Ok(self.lock().tickets.get(id).cloned())
    }
    fn tickets(&self) -> Result<Vec<Ticket>> {
        Ok(self.lock().tickets.values().cloned().collect())
    }
    fn list(&self, q: &super::Listing) -> Result<super::Page> {
        let s = self.lock();
        let all = s.tickets.values().map(super::TicketSummary::from);
        Ok(if q.newest_first {
            q.page(all.rev())
        } else {
            q.page(all)
        })
    }
    fn count(&self, q: &super::Listing) -> Result<usize> {
        let s = self.lock();
        Ok(s.tickets
            .values()
            .filter(|t| q.matches(&super::TicketSummary::from(*t)))
            .count())
    }
    fn in_flight(&self) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .tickets
            .values()
            .filter(|t| !t.state.is_terminal())
            .map(|t| t.id.clone())
            .collect())
    }
    fn events(&self, ticket_id: &str) -> Result<Vec<AuditEvent>> {
        let s = self.lock();
        Ok(s.events
            .range((ticket_id.to_string(), 0)..=(ticket_id.to_string(), u64::MAX))
            .map(|(_, e)| e.clone())
            .collect())
    }
    fn workflow_versions(&self, name: &str) -> Result<Vec<(String, Workflow)>> {
        Ok(self
            .lock()
            .workflows
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, h), w)| (h.clone(), w.clone()))
            .collect())
    }

    fn workflow(&self, name: &str, hash: &str) -> Result<Option<Workflow>> {
        Ok(self
            .lock()
            .workflows
            .get(&(name.to_string(), hash.to_string()))
            .cloned())
    }
    fn idempotency(&self, key: &str) -> Result<Option<String>> {
        Ok(self.lock().idempotency.get(key).cloned())
    }
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .kv
            .get(&(plugin.to_string(), key.to_string()))
            .cloned())
    }
    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.lock()
            .kv
            .insert((plugin.to_string(), key.to_string()), value.to_vec());
        Ok(())
    }
    fn kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.lock()
            .kv
            .remove(&(plugin.to_string(), key.to_string()));
        Ok(())
    }
    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64)> {
        Ok(self
            .lock()
            .kv
            .iter()
            .filter(|((p, _), _)| p == plugin)
            .fold((0, 0), |(n, b), ((_, k), v)| {
                (n + 1, b + (k.len() + v.len()) as u64)
            }))
    }
    fn check(&self) -> Result<super::Checked> {
        // Memory holds typed values: nothing can be damaged on the way back.
        let s = self.lock();
        Ok(super::Checked {
            records: s.tickets.len() + s.kv.len() + s.idempotency.len(),
            damage: Vec::new(),
            tickets: s.tickets.values().cloned().collect(),
        })
    }
}
