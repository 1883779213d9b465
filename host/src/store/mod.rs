//! Durable state behind a trait: tickets, audit events, pinned workflow
//! versions, idempotency records and plugin key-value state.
//!
//! Two engines pass the same conformance suite ([`conformance`]): sled,
//! the embedded default (`sled/`), and PostgreSQL for several workers
//! sharing one database (`postgres/`); only those modules name them. Writes go in
//! [`Batch`]es, applied atomically and durably by [`Store::commit`], so a
//! ticket's new state and its audit events land together or not at all.
//! A ticket is kept in parts ([`parts`]): a transition writes its core
//! and what changed, not the whole ticket.

pub mod checkpoint;
pub mod commit;
#[doc(hidden)]
pub mod conformance;
pub mod listing;
pub mod memory;
pub mod parts;
pub mod postgres;
mod record;
mod seal;
pub mod sled;
pub mod space;

pub use listing::{Listing, Page, TicketSummary};
pub use parts::{Committed, TicketWrite};

use std::time::Duration;

use crate::audit::AuditEvent;
use crate::error::Result;
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// Open the store `location` names: a PostgreSQL URL, or (`None`) the
/// embedded sled store in `dir`, refusing writes under `reserve` bytes free.
/// On a shared store this worker is `lease`.
pub fn open(
    location: Option<&str>,
    dir: &std::path::Path,
    reserve: u64,
    lease: LeaseConfig,
) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match location {
        Some(url) if postgres::is_url(url) => {
            std::sync::Arc::new(postgres::PgStore::open_as(url, lease)?)
        }
        Some(other) => {
            return Err(crate::error::Error::Usage(format!(
                "--store: `{other}` is not a store this host knows: give a postgres:// URL, \
                 or leave it unset for the embedded store in the home's data/"
            )));
        }
        None => std::sync::Arc::new(sled::SledStore::open(dir)?.with_reserve(reserve)),
    })
}

/// Writes that land together.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Tickets to write: each one's core and the parts that changed
    /// ([`TicketWrite::whole`] for all of it).
    pub tickets: Vec<TicketWrite>,
    /// Audit events to append.
    pub events: Vec<AuditEvent>,
    /// Workflow definitions to pin, by (name, hash).
    pub workflows: Vec<(String, String, Workflow)>,
    /// Idempotency keys to record, with the ticket id each created.
    pub idempotency: Vec<(String, String)>,
    /// The fencing token of the lease these tickets are written under, on
    /// a store shared by several workers ([`Leases`]): the batch lands only
    /// while that lease is the ticket's current one. `None`: unfenced (a
    /// single-process store, or a tool).
    pub fence: Option<i64>,
    /// (workflow, subject key as [`crate::ticket::subject_key`] folds
    /// it): this batch creates a ticket that must be the subject's only
    /// open one of the workflow. A shared store refuses the batch if
    /// another worker created one meanwhile ([`Refusal::SubjectOpen`]); a
    /// single-process store leaves the check to the scheduler, which makes
    /// it under its own lock before the commit.
    pub exclusive: Option<(String, String)>,
}

/// Why a shared store left a batch out of a commit ([`Store::commit_fenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its fence is no longer its ticket's lease.
    Fenced,
    /// Its idempotency key was taken meanwhile, by a ticket another
    /// worker created: the key.
    KeyTaken(String),
    /// It creates an exclusive ticket ([`Batch::exclusive`]) for a subject
    /// that has an open one of the workflow, created meanwhile by another
    /// worker: that ticket's id.
    SubjectOpen(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fenced => f.write_str("its ticket's lease is another's now"),
            Self::KeyTaken(key) => write!(
                f,
                "idempotency key `{key}` was taken by a ticket another worker created meanwhile"
            ),
            Self::SubjectOpen(id) => write!(
                f,
                "another worker created {id} for the subject meanwhile, and it is open"
            ),
        }
    }
}

impl Batch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
            && self.events.is_empty()
            && self.workflows.is_empty()
            && self.idempotency.is_empty()
    }
}

/// The durable store.
pub trait Store: Send + Sync + 'static {
    /// Apply batches atomically, in order, and durably: on `Ok` they survive
    /// a crash. Many batches per call is the group commit.
    fn commit(&self, batches: &[Batch]) -> Result<()>;
    /// [`Store::commit`], except that a batch another worker's writes
    /// stand against is left out, and the rest land: one whose fence is no
    /// longer its ticket's lease, one whose idempotency key another worker
    /// took meanwhile, one creating a second open ticket for a subject.
    /// The indexes left out, and why. Stores without leases leave nothing
    /// out.
    fn commit_fenced(&self, batches: &[Batch]) -> Result<Vec<(usize, Refusal)>> {
        self.commit(batches).map(|()| Vec::new())
    }
    /// Ticket leases, when several workers share this store.
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
    /// Configuration documents every worker shares, when several do.
    fn documents(&self) -> Option<&dyn Documents> {
        None
    }
    /// The completeness witness the store keeps of itself, when several
    /// workers share it (a single server's is its home's checkpoint).
    fn witness(&self) -> Option<&dyn Witness> {
        None
    }
    /// Have `changed` told of tickets other workers of a shared store
    /// change (and of this one's): a no-op where no one else writes.
    fn watch_changes(&self, changed: Changed) {
        let _ = changed;
    }
    /// A ticket by id.
    fn ticket(&self, id: &str) -> Result<Option<Ticket>>;
    /// All tickets, oldest first (whole: for audits and checks; listings
    /// use [`Store::list`]).
    fn tickets(&self) -> Result<Vec<Ticket>>;
    /// A page of ticket summaries: filtered, ordered by id (creation), from
    /// a keyset cursor, reading about as many records as the page holds.
    fn list(&self, q: &Listing) -> Result<Page>;
    /// How many tickets match `q` (its cursor and limit aside).
    fn count(&self, q: &Listing) -> Result<usize>;
    /// Ids of tickets not in a terminal state, oldest first.
    fn in_flight(&self) -> Result<Vec<String>>;
    /// A ticket's audit events, in seq order.
    fn events(&self, ticket_id: &str) -> Result<Vec<AuditEvent>>;
    /// A pinned workflow version.
    fn workflow(&self, name: &str, hash: &str) -> Result<Option<Workflow>>;
    /// Every pinned version of a workflow: (content hash, definition).
    fn workflow_versions(&self, name: &str) -> Result<Vec<(String, Workflow)>>;
    /// The ticket an idempotency key created.
    fn idempotency(&self, key: &str) -> Result<Option<String>>;
    /// Plugin key-value: read.
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Plugin key-value: write (durable on return).
    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()>;
    /// Plugin key-value: delete.
    fn kv_delete(&self, plugin: &str, key: &str) -> Result<()>;
    /// Plugin key-value: how many keys, and bytes of keys and values, one
    /// plugin holds (a scan; the runtime calls it once and counts after).
    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64)>;
    /// Read every record and check it (seal, decoding, key against
    /// content): how many records, each damaged one, and the tickets that
    /// read back whole (for their trails to be verified).
    fn check(&self) -> Result<Checked>;
}

/// Told of a changed ticket: its id and trail length; `None` when changes
/// may have been missed, and every waiter should look again.
pub type Changed = std::sync::Arc<dyn Fn(Option<(&str, u64)>) + Send + Sync>;

/// Every ticket's trail head as its last acknowledged commit left it,
/// written by the store in that commit, for every worker of a shared
/// store to compare the tickets with. It names a ticket deleted, or a
/// table restored apart from the others, whichever worker wrote it and
/// whether or not that worker's home still exists. A rollback of the whole
/// database rolls the witness back with it: that is what each worker's
/// home checkpoint ([`checkpoint`]) is for.
pub trait Witness: Send + Sync {
    /// How the tickets fall short of the witness, a line per ticket (the
    /// wording of [`checkpoint::behind`]).
    fn shortfall(&self) -> Result<Vec<String>>;
    /// Take the tickets as they are now as acknowledged (an operator
    /// accepted the loss); how many tickets' witness changed.
    fn accept(&self) -> Result<usize>;
}

/// Configuration kept in a shared store rather than in each worker's home
/// (`tokens.toml`): named texts with versions, written compare-and-set.
pub trait Documents: Send + Sync {
    /// A document's text and version.
    fn get(&self, name: &str) -> Result<Option<(String, i64)>>;
    /// Write `text` if the document is still at `version` (`None`: it does
    /// not exist yet): whether it was, so the caller reads again and retries.
    fn put(&self, name: &str, text: &str, version: Option<i64>) -> Result<bool>;
    /// Every document whose name starts with `prefix`: (name, text, version).
    fn list(&self, prefix: &str) -> Result<Vec<(String, String, i64)>>;
}

/// Who drives which ticket, when several workers share one store.
///
/// A ticket with work in flight (a call, or a tick due within a second) is
/// driven by one worker, under a lease that worker renews; each lease has a
/// fencing token, and a write under any other token is refused
/// ([`Store::commit_fenced`]), so a worker that lost its lease (paused,
/// cut off) cannot commit over the new owner. A ticket with nothing in
/// flight is released, with when it next wants a tick, for whichever worker
/// is free then. A lease that is not renewed runs out after [`Leases::ttl`]
/// and the ticket is taken over.
pub trait Leases: Send + Sync {
    /// This worker's name, as leases record it.
    fn worker(&self) -> &str;
    /// How long a lease lasts unrenewed.
    fn ttl(&self) -> std::time::Duration;
    /// A fencing token for a ticket this worker is creating.
    fn fence_for_new(&self) -> Result<i64>;
    /// Take ticket `id` unless another worker's lease on it is live: its
    /// new token, or `None` (being worked on elsewhere).
    fn acquire(&self, id: &str) -> Result<Option<i64>>;
    /// Take up to `limit` open tickets that are due (released with a wake
    /// at or before `now_ms`) or whose lease ran out, skipping those another
    /// worker is taking at the same moment: each with its new token. A
    /// released ticket that wants only plugins in `lacking` (this worker's
    /// unavailable ones) is left to a worker that has one.
    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lacking: &[String],
    ) -> Result<Vec<(String, i64)>>;
    /// At start-up: take back the tickets this worker's name still holds
    /// (it was killed and restarted), each with a new token.
    fn reclaim_own(&self) -> Result<Vec<(String, i64)>>;
    /// Let `id` go (nothing in flight), to be taken at `wake_ms` or by the
    /// next decision; a no-op unless `fence` is still its lease. `wants`:
    /// the plugins its waiting steps need, which this worker lacks (see
    /// [`Leases::claim_due`]).
    fn release(&self, id: &str, fence: i64, wake_ms: Option<u64>, wants: &[String]) -> Result<()>;
    /// Shutting down: let every ticket this worker holds go, due at
    /// `now_ms`, so the others take them at once rather than after the
    /// leases run out. How many.
    fn release_all(&self, now_ms: u64) -> Result<usize>;
    /// Extend this worker's leases on `ids`: those it still holds.
    fn renew(&self, ids: &[String]) -> Result<Vec<String>>;
    /// The open ticket of `workflow` for a subject (as
    /// [`crate::ticket::subject_key`] folds it), across every worker.
    fn open_for(&self, workflow: &str, subject_key: &str) -> Result<Option<String>>;
}

/// Who this worker is, and how long its leases last unrenewed.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Unique among the workers sharing a database; stable across restarts
    /// of one worker, so a restarted worker takes its own tickets back at
    /// once rather than after their leases run out.
    pub worker: String,
    /// A worker that stops renewing (dead, paused, cut off) has its tickets
    /// taken over this long after its last renewal.
    pub ttl: Duration,
}

/// The lease length unless told otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            worker: format!("{}:{}", hostname(), std::process::id()),
            ttl: DEFAULT_TTL,
        }
    }
}

/// This machine's name, for worker names (`HOSTNAME`, else
/// `/etc/hostname`, else `localhost`).
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What [`Store::check`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Records read.
    pub records: usize,
    /// Records that are damaged.
    pub damage: Vec<Damage>,
    /// Tickets that read back whole.
    pub tickets: Vec<Ticket>,
}

/// A damaged record, as [`Store::check`] finds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Damage {
    /// The record's key.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}
