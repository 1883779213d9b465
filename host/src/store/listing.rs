//! Listings of tickets that cost the page, not the store.
//!
//! A listing reads [`TicketSummary`]s (a ticket without its steps: on
//! sled, read from the ticket's core) through a secondary index on
//! one of its equality filters, in ticket-id order (ids are time-ordered,
//! so that is creation order), from a keyset cursor: a page of 50 reads
//! about 50 records at any store size. `total` comes from counters kept in
//! the same batch when the listing has at most one equality filter; with
//! more, or with a creation range, it is counted over the narrowest index.

use serde::{Deserialize, Serialize};

use crate::ticket::{Ticket, TicketState};

/// A ticket without its steps: what lists show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketSummary {
    pub id: String,
    pub workflow: String,
    pub subject: String,
    pub state: TicketState,
    pub requested_by: String,
    pub batch: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl From<&Ticket> for TicketSummary {
    fn from(t: &Ticket) -> Self {
        Self {
            id: t.id.clone(),
            workflow: t.workflow.clone(),
            subject: t.subject.clone(),
            state: t.state,
            requested_by: t.requested_by.clone(),
            batch: t.batch.clone(),
            created_ms: t.created_ms,
            updated_ms: t.updated_ms,
        }
    }
}

/// Which tickets a listing wants, in which order, from where.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub state: Option<TicketState>,
    pub workflow: Option<String>,
    pub subject: Option<String>,
    pub batch: Option<String>,
    /// Created at or after (ms since the epoch).
    pub created_from_ms: Option<u64>,
    /// Created before (ms since the epoch).
    pub created_before_ms: Option<u64>,
    /// Keyset cursor: the page starts just past this ticket id, in the
    /// listing's order (a page's `next`).
    pub after: Option<String>,
    /// Newest first rather than oldest first.
    pub newest_first: bool,
    /// At most this many.
    pub limit: usize,
    /// A hint: only tickets related to one of these parties
    /// ([`crate::ticket::parties`], as [`crate::principal::Principal::party_keys`]
    /// names a person) are wanted. A store may walk its index of them
    /// instead of every ticket, or ignore the hint; the caller decides on
    /// each ticket it gets.
    pub readers: Option<Vec<String>>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub tickets: Vec<TicketSummary>,
    /// The cursor for the next page, when more tickets match.
    pub next: Option<String>,
}

/// A field a secondary index is kept on: its one-letter key part and the
/// value a summary has for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Subject,
    Batch,
    Workflow,
    State,
}

impl Field {
    pub const ALL: [Field; 4] = [Field::Subject, Field::Batch, Field::Workflow, Field::State];

    /// The letter naming the index in keys.
    pub fn letter(self) -> char {
        match self {
            Field::Subject => 'u',
            Field::Batch => 'b',
            Field::Workflow => 'w',
            Field::State => 's',
        }
    }

    /// Whether a count is kept per value. Not for subjects: nearly every
    /// subject has one ticket, so a counter each would double the writes
    /// of an import for nothing a walk of its few index keys cannot answer.
    pub fn counted(self) -> bool {
        !matches!(self, Field::Subject)
    }

    /// A summary's value of this field (`None`: not in this index).
    pub fn of(self, s: &TicketSummary) -> Option<&str> {
        match self {
            Field::Subject => Some(&s.subject),
            Field::Batch => s.batch.as_deref(),
            Field::Workflow => Some(&s.workflow),
            Field::State => Some(s.state.as_str()),
        }
    }
}

impl Listing {
    /// The equality filters asked for, narrowest first (a subject has a
    /// ticket or two; a state may have most of them).
    pub fn filters(&self) -> Vec<(Field, &str)> {
        let mut out = Vec::new();
        if let Some(v) = &self.subject {
            out.push((Field::Subject, v.as_str()));
        }
        if let Some(v) = &self.batch {
            out.push((Field::Batch, v.as_str()));
        }
        if let Some(v) = &self.workflow {
            out.push((Field::Workflow, v.as_str()));
        }
        if let Some(v) = self.state {
            out.push((Field::State, v.as_str()));
        }
        out
    }

    /// Whether a summary passes every filter (the cursor aside).
    pub fn matches(&self, s: &TicketSummary) -> bool {
        self.filters().iter().all(|(f, v)| f.of(s) == Some(v))
            && self.created_from_ms.is_none_or(|a| s.created_ms >= a)
            && self.created_before_ms.is_none_or(|b| s.created_ms < b)
    }

    /// Whether `total` can be read from one counter: at most one equality
    /// filter and no creation range.
    pub fn counted_by_counter(&self) -> bool {
        let filters = self.filters();
        filters.len() <= 1
            && filters.iter().all(|(f, _)| f.counted())
            && self.created_from_ms.is_none()
            && self.created_before_ms.is_none()
    }

    /// The page of `candidates` (summaries in id order, oldest first,
    /// already past the cursor when the caller could seek): the reference
    /// semantics every store's `list` must match.
    pub fn page(&self, candidates: impl Iterator<Item = TicketSummary>) -> Page {
        let mut tickets = Vec::new();
        let mut more = false;
        for s in candidates {
            if let Some(after) = &self.after {
                let past = if self.newest_first {
                    s.id.as_str() < after.as_str()
                } else {
                    s.id.as_str() > after.as_str()
                };
                if !past {
                    continue;
                }
            }
            if !self.matches(&s) {
                continue;
            }
            if tickets.len() == self.limit {
                more = true;
                break;
            }
            tickets.push(s);
        }
        let next = if more {
            tickets.last().map(|s: &TicketSummary| s.id.clone())
        } else {
            None
        };
        Page { tickets, next }
    }
}
