//! The read routes' one way to [`crate::access`]: what of a ticket the
//! caller sees, or a 404 exactly like a ticket that does not exist, and
//! the pages of tickets a caller who does not read everything may list.

use std::collections::HashMap;

use super::{ApiError, AppState};
use crate::access::{self, View};
use crate::principal::Principal;
use crate::store::{Listing, Page, Store, TicketSummary};
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// The answer for a ticket the caller may not see: the same as for one
/// that does not exist, so its existence is not revealed.
pub(super) fn not_found(id: &str) -> crate::Error {
    crate::Error::NotFound(format!("no ticket {id}"))
}

/// Pinned definitions read once per request: tickets share a few.
#[derive(Default)]
pub(super) struct Pins(HashMap<String, Option<Workflow>>);

impl Pins {
    /// The pinned definition of `t`, if still stored.
    pub(super) fn of(&mut self, store: &dyn Store, t: &Ticket) -> crate::Result<Option<&Workflow>> {
        if !self.0.contains_key(&t.workflow_hash) {
            let wf = store.workflow(&t.workflow, &t.workflow_hash)?;
            self.0.insert(t.workflow_hash.clone(), wf);
        }
        Ok(self.0.get(&t.workflow_hash).and_then(Option::as_ref))
    }
}

/// What `who` sees of ticket `id`, read from `store`; a not-found error
/// when nothing (or no such ticket).
pub(super) fn view(
    store: &dyn Store,
    who: &Principal,
    id: &str,
    pins: &mut Pins,
) -> crate::Result<(Ticket, View)> {
    let t = store.ticket(id)?.ok_or_else(|| not_found(id))?;
    let wf = pins.of(store, &t)?;
    match access::ticket_view(who, &t, wf) {
        Some(v) => Ok((t, v)),
        None => Err(not_found(id)),
    }
}

/// `Ok` if `who` may see ticket `id` at all, else the 404 of a ticket that
/// does not exist. Routes that act on a ticket ask first, so a refusal by
/// the state machine (403) is only ever given about a ticket the caller
/// could see. Those who read every ticket skip the read.
pub(super) async fn require_visible(
    app: &AppState,
    who: &Principal,
    id: &str,
) -> Result<(), ApiError> {
    if access::reads_every_ticket(who) {
        return Ok(());
    }
    let (who, id) = (who.clone(), id.to_string());
    app.read(move |store| view(store, &who, &id, &mut Pins::default()).map(drop))
        .await
}

/// A page of the tickets `listing` matches that `who` may see, after
/// skipping `offset` of them, and how many they may see in all.
///
/// For those who read everything this is the store's page. For everyone
/// else it walks the tickets related to them by name, e-mail or group
/// ([`crate::ticket::parties`]; on sled through an index of them, so the
/// cost grows with their tickets, not the store's) and keeps those the
/// policy lets through. A store without that index (PostgreSQL, for now)
/// walks every ticket the filters match.
pub(super) fn page(
    store: &dyn Store,
    who: &Principal,
    listing: &Listing,
    offset: usize,
    limit: usize,
) -> crate::Result<(Page, usize)> {
    if access::reads_every_ticket(who) {
        let mut page = store.list(&Listing {
            limit: limit.saturating_add(offset),
            ..listing.clone()
        })?;
        let total = store.count(listing)?;
        page.tickets.drain(..offset.min(page.tickets.len()));
        return Ok((page, total));
    }
    let mut pins = Pins::default();
    let mut tickets: Vec<TicketSummary> = Vec::new();
    let (mut total, mut skipped) = (0usize, 0usize);
    let mut next = None;
    // `total` counts every match the caller may see, as the store's count
    // does, so the walk starts at the beginning and the cursor only says
    // where the page starts.
    let past_cursor = |id: &str| match listing.after.as_deref() {
        None => true,
        Some(c) if listing.newest_first => id < c,
        Some(c) => id > c,
    };
    let mut walk = Listing {
        limit: 500,
        after: None,
        // Only tickets related to the caller by name, e-mail or group,
        // where the store keeps that index (sled does).
        readers: Some(who.party_keys()),
        ..listing.clone()
    };
    loop {
        let batch = store.list(&walk)?;
        for s in batch.tickets {
            let Some(t) = store.ticket(&s.id)? else {
                continue;
            };
            let wf = pins.of(store, &t)?;
            if access::ticket_view(who, &t, wf).is_none() {
                continue;
            }
            total += 1;
            if !past_cursor(&s.id) {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if tickets.len() < limit {
                tickets.push(s);
            } else if next.is_none() {
                next = tickets.last().map(|s| s.id.clone());
            }
        }
        match batch.next {
            Some(n) => walk.after = Some(n),
            None => break,
        }
    }
    Ok((Page { tickets, next }, total))
}

/// [`page`] over the tickets related to `anchor` (`?related_to=`): those
/// its links name, which the caller must also be able to read, filtered
/// and paged as any listing. The caller must see the anchor (else its
/// 404). Costs the anchor's links, not the store: a relation is kept on
/// both tickets, so the anchor names every ticket related to it.
pub(super) fn related_page(
    store: &dyn Store,
    who: &Principal,
    anchor: &str,
    listing: &Listing,
    offset: usize,
    limit: usize,
) -> crate::Result<(Page, usize)> {
    let mut pins = Pins::default();
    let (anchor, _) = view(store, who, anchor, &mut pins)?;
    let mut ids: Vec<&str> = anchor.links.iter().map(|l| l.ticket.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if listing.newest_first {
        ids.reverse();
    }
    let mut visible = Vec::new();
    for id in ids {
        let Some(t) = store.ticket(id)? else {
            continue;
        };
        let wf = pins.of(store, &t)?;
        if access::ticket_view(who, &t, wf).is_some() && listing.matches(&(&t).into()) {
            visible.push(TicketSummary::from(&t));
        }
    }
    let total = visible.len();
    let mut page = Listing {
        limit: limit.saturating_add(offset),
        ..listing.clone()
    }
    .page(visible.into_iter());
    page.tickets.drain(..offset.min(page.tickets.len()));
    Ok((page, total))
}
