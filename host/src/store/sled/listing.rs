//! The listing records kept beside each ticket, in the same batch:
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `x/` | field letter `/` value `\0` ticket id | empty: a secondary index |
//! | `x/r/` | party `\0` ticket id | empty: who is related to the ticket ([`crate::ticket::parties`]) |
//! | `n/` | field letter `/` value (not `u`), or `all` | how many tickets (u64) |
//! | `m/` | `listing` | present once the records above cover every ticket |
//!
//! Field letters: `u` subject, `b` batch, `w` workflow, `s` state; `r`
//! the parties, a superset of who may read (a list for a person walks the
//! tickets under their name, e-mail and groups, and the read policy
//! decides each; entries are added, never removed, so a party that leaves
//! a ticket leaves a stale entry the policy filters out). A
//! listing walks one index (or the ticket cores, `t/`, with no filter) from
//! its cursor and reads each ticket's summary from its core, so a page
//! costs its length, not the store's size.
//!
//! The summary is read from the core rather than kept as a record of its
//! own (`s/`, until marker version 2): the core is written on every
//! transition anyway, and a second record beside it was one more B-tree
//! insert per transition for the same fields. Opening a store of marker
//! version 1 removes its `s/` records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use crate::error::Result;
use crate::store::listing::{Field, Listing, Page, TicketSummary};
use crate::store::record::{decode, err};
use crate::store::seal::{corrupt, seal, unseal};
use crate::ticket::Ticket;

/// The marker saying every ticket has its listing records, and in which
/// layout ([`LAYOUT`]).
pub(super) const MARKER: &str = "m/listing";
/// The listing layout this version writes: 3, summaries read from the
/// cores and tickets indexed by their parties.
pub(super) const LAYOUT: &[u8] = b"3";
/// Where the layout before kept each ticket's summary.
const RETIRED_SUMMARIES: &str = "s/";
const ALL: &str = "n/all";

fn core_key(id: &str) -> String {
    format!("t/{id}")
}

fn index_prefix(field: Field, value: &str) -> String {
    format!("x/{}/{value}\0", field.letter())
}

/// The prefix of the tickets indexed under `party`.
fn party_prefix(party: &str) -> String {
    format!("x/r/{party}\0")
}

/// Index ticket `id` under each of `parties` (an insert of a key already
/// there rewrites it, harmless).
pub(super) fn index_parties<'a>(
    batch: &mut sled::Batch,
    id: &str,
    parties: impl IntoIterator<Item = &'a String>,
) {
    for p in parties {
        batch.insert(
            [party_prefix(p).as_bytes(), id.as_bytes()].concat(),
            &[] as &[u8],
        );
    }
}

fn counter_key(field: Field, value: &str) -> String {
    format!("n/{}/{value}", field.letter())
}

/// The first key past every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    end
}

/// A counter's value as stored.
fn read_counter(key: &[u8], bytes: &[u8]) -> Result<u64> {
    let payload = unseal(key, bytes)?;
    let raw: [u8; 8] = payload
        .try_into()
        .map_err(|_| corrupt(key, "a counter is not 8 bytes"))?;
    Ok(u64::from_be_bytes(raw))
}

fn counter(db: &sled::Db, key: &str) -> Result<u64> {
    match db.get(key).map_err(err)? {
        Some(v) => read_counter(key.as_bytes(), &v),
        None => Ok(0),
    }
}

/// Adds the listing records of a group's tickets to its batch: each
/// ticket's summary, the index keys that changed, and the counters.
/// Tickets are compared with what is stored (or with their earlier
/// version in the same group), so an index never holds a stale entry.
pub(super) struct Indexer<'a> {
    db: &'a sled::Db,
    /// What earlier commits left of open tickets ([`Known`]), read
    /// before the store.
    known: Option<&'a Known>,
    seen: HashMap<String, TicketSummary>,
    /// The parties indexed for each ticket of the group so far.
    parties: HashMap<String, BTreeSet<String>>,
    deltas: BTreeMap<String, i64>,
    /// Building the records from nothing: every ticket is new to them,
    /// though its core is stored.
    rebuilding: bool,
}

impl<'a> Indexer<'a> {
    pub(super) fn new(db: &'a sled::Db, known: Option<&'a Known>) -> Self {
        Self {
            db,
            known,
            seen: HashMap::new(),
            parties: HashMap::new(),
            deltas: BTreeMap::new(),
            rebuilding: false,
        }
    }

    /// An indexer building the records of tickets that have none.
    fn rebuilding(db: &'a sled::Db) -> Self {
        Self {
            rebuilding: true,
            ..Self::new(db, None)
        }
    }

    /// Index `t` (related to `parties`); its state as stored before (none:
    /// a new ticket).
    pub(super) fn ticket(
        &mut self,
        batch: &mut sled::Batch,
        t: &Ticket,
        parties: &BTreeSet<String>,
    ) -> Result<Option<crate::ticket::TicketState>> {
        // Parties first: they change without the summary changing (a task
        // reassigned). Only those not indexed before are written.
        let before = self
            .parties
            .get(&t.id)
            .or_else(|| self.known.and_then(|k| k.parties.get(&t.id)));
        let added: Vec<&String> = parties
            .iter()
            .filter(|p| before.is_none_or(|b| !b.contains(*p)))
            .collect();
        index_parties(batch, &t.id, added);
        let mut all = before.cloned().unwrap_or_default();
        all.extend(parties.iter().cloned());
        self.parties.insert(t.id.clone(), all);
        let new = TicketSummary::from(t);
        let old = match self.seen.get(&t.id) {
            Some(s) => Some(s.clone()),
            None if self.rebuilding => None,
            None => match self.known.and_then(|k| k.get(&t.id)) {
                Some(s) => Some(s.clone()),
                None => summary(self.db, &t.id)?,
            },
        };
        let was = old.as_ref().map(|o| o.state);
        if old.as_ref() == Some(&new) {
            return Ok(was);
        }
        if old.is_none() {
            *self.deltas.entry(ALL.into()).or_default() += 1;
        }
        for field in Field::ALL {
            let before = old.as_ref().and_then(|o| field.of(o));
            let after = field.of(&new);
            if before == after {
                continue;
            }
            if let Some(v) = before {
                batch.remove([index_prefix(field, v).as_bytes(), t.id.as_bytes()].concat());
                if field.counted() {
                    *self.deltas.entry(counter_key(field, v)).or_default() -= 1;
                }
            }
            if let Some(v) = after {
                batch.insert(
                    [index_prefix(field, v).as_bytes(), t.id.as_bytes()].concat(),
                    &[] as &[u8],
                );
                if field.counted() {
                    *self.deltas.entry(counter_key(field, v)).or_default() += 1;
                }
            }
        }
        self.seen.insert(t.id.clone(), new);
        Ok(was)
    }

    /// The counters, updated. Called once per group, by the one committer
    /// (the store serialises commits), so read-then-write is safe.
    /// Returns the group's tickets as indexed, for [`Known::learn`] once
    /// the batch is applied.
    pub(super) fn finish(self, batch: &mut sled::Batch) -> Result<Indexed> {
        for (key, delta) in self.deltas {
            if delta == 0 {
                continue;
            }
            let now = (counter(self.db, &key)? as i64 + delta).max(0) as u64;
            batch.insert(key.as_bytes(), seal(&now.to_be_bytes()));
        }
        Ok(Indexed {
            summaries: self.seen,
            parties: self.parties,
        })
    }
}

/// The listing fields of open tickets as the last applied commits left
/// them, so the next transition's index changes are found without reading
/// and decoding the stored core again (it was about a tenth of the
/// committer's time). Only the committer writes tickets, under the lock
/// that holds this, so it cannot go stale; a ticket not here is read.
#[derive(Default)]
pub(super) struct Known {
    summaries: HashMap<String, TicketSummary>,
    /// The parties each open ticket is indexed under.
    parties: HashMap<String, BTreeSet<String>>,
}

/// What a group's commit indexed, for [`Known::learn`].
pub(super) struct Indexed {
    summaries: HashMap<String, TicketSummary>,
    parties: HashMap<String, BTreeSet<String>>,
}

/// Open tickets remembered at most; past it the map starts again.
const KNOWN_AT_MOST: usize = 100_000;

impl Known {
    fn get(&self, id: &str) -> Option<&TicketSummary> {
        self.summaries.get(id)
    }

    /// Take in a group's tickets, once its batch is applied: terminal ones
    /// are forgotten (they seldom change again).
    pub(super) fn learn(&mut self, indexed: Indexed) {
        let Indexed {
            summaries,
            mut parties,
        } = indexed;
        if self.summaries.len() + summaries.len() > KNOWN_AT_MOST {
            self.summaries.clear();
            self.parties.clear();
        }
        for (id, s) in summaries {
            if s.state.is_terminal() {
                self.summaries.remove(&id);
                self.parties.remove(&id);
            } else {
                if let Some(p) = parties.remove(&id) {
                    self.parties.insert(id.clone(), p);
                }
                self.summaries.insert(id, s);
            }
        }
    }
}

/// Build the listing records from the tickets, once, for a store written
/// before they existed; in a store of a layout before, remove the summary
/// records it kept. Returns how many tickets it indexed, and whether the
/// tickets' parties still need indexing (then [`finish_parties`] writes
/// them, from whole tickets, and the marker).
pub(super) fn build_if_missing(db: &sled::Db) -> Result<(Option<usize>, bool)> {
    if let Some(marker) = db.get(MARKER).map_err(err)? {
        if unseal(MARKER.as_bytes(), &marker)? == LAYOUT {
            return Ok((None, false));
        }
        let mut batch = sled::Batch::default();
        for kv in db.scan_prefix(RETIRED_SUMMARIES) {
            batch.remove(kv.map_err(err)?.0);
        }
        db.apply_batch(batch).map_err(err)?;
        return Ok((None, true));
    }
    let mut n = 0;
    let mut batch = sled::Batch::default();
    let mut indexer = Indexer::rebuilding(db);
    for kv in db.scan_prefix(b"t/") {
        let (k, v) = kv.map_err(err)?;
        let t = crate::store::record::decode_ticket(&k, &v)?;
        let _ = indexer.ticket(&mut batch, &t, &BTreeSet::new())?;
        n += 1;
    }
    let _ = indexer.finish(&mut batch)?;
    db.apply_batch(batch).map_err(err)?;
    Ok((Some(n), true))
}

/// Index every ticket under its parties (`tickets`: whole, steps and all),
/// then mark the listing records as of this layout.
pub(super) fn finish_parties(db: &sled::Db, tickets: &[Ticket]) -> Result<()> {
    let mut batch = sled::Batch::default();
    for t in tickets {
        index_parties(&mut batch, &t.id, &crate::ticket::parties(t));
    }
    batch.insert(MARKER, seal(LAYOUT));
    db.apply_batch(batch).map_err(err)
}

/// The ticket ids a listing walks, in its order: the keys under `prefix`
/// between its cursor and its creation range. Ticket ids begin with their
/// creation instant in hex ([`crate::ticket::new_id`]), so a creation range
/// is a range of ids and the walk starts where the range does; the
/// summaries are still checked against it.
fn walk(db: &sled::Db, q: &Listing, prefix: &str) -> impl Iterator<Item = Result<String>> + use<> {
    let key = |id: &str| [prefix.as_bytes(), id.as_bytes()].concat();
    let cursor = q.after.as_deref().map(key);
    let from = q.created_from_ms.map(|ms| key(&format!("T-{ms:012x}")));
    let before = q.created_before_ms.map(|ms| key(&format!("T-{ms:012x}")));
    // Oldest first: start past the cursor or at the range, whichever is
    // later; end at the range's end. Newest first: the other way round.
    let (low_cursor, high_cursor) = if q.newest_first {
        (None, cursor)
    } else {
        (cursor, None)
    };
    let start = match (low_cursor, from) {
        (Some(c), Some(f)) if f > c => Bound::Included(f),
        (Some(c), _) => Bound::Excluded(c),
        (None, Some(f)) => Bound::Included(f),
        (None, None) => Bound::Included(prefix.as_bytes().to_vec()),
    };
    let end = match (high_cursor, before) {
        (Some(c), Some(b)) if b < c => Bound::Excluded(b),
        (Some(c), _) => Bound::Excluded(c),
        (None, Some(b)) => Bound::Excluded(b),
        (None, None) => Bound::Excluded(prefix_end(prefix)),
    };
    let empty = match (&start, &end) {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    };
    let range = db.range::<Vec<u8>, _>((start, end));
    let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if empty {
        Box::new(std::iter::empty())
    } else if q.newest_first {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let skip = prefix.len();
    keys.map(move |kv| {
        let (k, _) = kv.map_err(err)?;
        Ok(String::from_utf8_lossy(&k[skip..]).into_owned())
    })
}

/// The ticket ids a listing walks: those under its parties when it names
/// some (each party's index walked lazily as [`walk`] does, merged in the
/// listing's order, each id once), else [`walk`] over its narrowest index.
fn candidates<'a>(
    db: &'a sled::Db,
    q: &'a Listing,
) -> Box<dyn Iterator<Item = Result<String>> + 'a> {
    let Some(parties) = &q.readers else {
        return Box::new(walk(db, q, &prefix_for(q)));
    };
    let mut heads: Vec<std::iter::Peekable<_>> = parties
        .iter()
        .map(|p| walk(db, q, &party_prefix(p)).peekable())
        .collect();
    let newest_first = q.newest_first;
    let mut last: Option<String> = None;
    Box::new(std::iter::from_fn(move || {
        loop {
            // An error ends the walk, reported once.
            for h in heads.iter_mut() {
                if matches!(h.peek(), Some(Err(_))) {
                    let e = h.next().expect("peeked");
                    heads.clear();
                    return Some(e);
                }
            }
            let pick = heads
                .iter_mut()
                .enumerate()
                .filter_map(|(i, h)| match h.peek() {
                    Some(Ok(id)) => Some((i, id.clone())),
                    _ => None,
                })
                .reduce(|a, b| {
                    let later = if newest_first { b.1 > a.1 } else { b.1 < a.1 };
                    if later { b } else { a }
                })?;
            let id = heads[pick.0].next().expect("peeked").expect("an id");
            if last.as_deref() == Some(id.as_str()) {
                continue;
            }
            last = Some(id.clone());
            return Some(Ok(id));
        }
    }))
}

/// The index a listing walks: its narrowest equality filter, or the cores.
fn prefix_for(q: &Listing) -> String {
    match q.filters().first() {
        Some((field, value)) => index_prefix(*field, value),
        None => "t/".to_string(),
    }
}

/// A ticket's summary, read from its core (the rest of its fields, and the
/// steps of a core stored whole by an early version, are skipped).
fn summary(db: &sled::Db, id: &str) -> Result<Option<TicketSummary>> {
    let key = core_key(id);
    match db.get(&key).map_err(err)? {
        Some(v) => decode(key.as_bytes(), &v).map(Some),
        None => Ok(None),
    }
}

/// The page `q` asks for.
pub(super) fn list(db: &sled::Db, q: &Listing) -> Result<Page> {
    let mut tickets = Vec::new();
    let mut next = None;
    for id in candidates(db, q) {
        let id = id?;
        // The index names the ticket; its summary is checked against every
        // filter (the index's own included, so a value holding `\0` that
        // happens to share a prefix cannot slip in).
        let Some(s) = summary(db, &id)? else { continue };
        if !q.matches(&s) {
            continue;
        }
        if tickets.len() == q.limit {
            next = tickets.last().map(|s: &TicketSummary| s.id.clone());
            break;
        }
        tickets.push(s);
    }
    Ok(Page { tickets, next })
}

/// How many tickets `q` matches.
pub(super) fn count(db: &sled::Db, q: &Listing) -> Result<usize> {
    if q.counted_by_counter() && q.readers.is_none() {
        let key = match q.filters().first() {
            Some((field, value)) => counter_key(*field, value),
            None => ALL.to_string(),
        };
        return Ok(counter(db, &key)? as usize);
    }
    let all = Listing {
        after: None,
        limit: usize::MAX,
        ..q.clone()
    };
    let mut n = 0;
    for id in candidates(db, &all) {
        if summary(db, &id?)?.is_some_and(|s| q.matches(&s)) {
            n += 1;
        }
    }
    Ok(n)
}

/// [`crate::store::Store::check`]'s view of a listing record: `Ok` when
/// it decodes and what it refers to is stored.
pub(super) fn check(db: &sled::Db, k: &[u8], v: &[u8]) -> Result<()> {
    match k.get(..2) {
        Some(b"s/") => Err(corrupt(
            k,
            "it is a listing summary of the layout before, which opening the store removes",
        )),
        Some(b"x/") => {
            let id = k.rsplit(|b| *b == 0).next().unwrap_or_default();
            match db.get([b"t/", id].concat()).map_err(err)? {
                Some(_) => Ok(()),
                None => Err(corrupt(k, "it indexes a ticket that is not stored")),
            }
        }
        Some(b"n/") => read_counter(k, v).map(drop),
        _ => unseal(k, v).map(drop),
    }
}
