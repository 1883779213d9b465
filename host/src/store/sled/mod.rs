//! The embedded default [`Store`], on sled: zero set-up, one directory.
//!
//! One tree, keys by prefix (so a batch is one atomic `apply_batch`):
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `t/` | ticket id | ticket JSON, its steps left out ([`super::parts`]) |
//! | `p/` | ticket id `/` step | the step's JSON with its last attempt, the others left out |
//! | `c/` | ticket id `/` step `/` n (8 hex digits) | an attempt's JSON, but for each step's last |
//! | `f/` | ticket id | empty: the in-flight index |
//! | `a/` | ticket id `/` seq (16 hex digits) | the audit events one commit appended from that seq on: a JSON array (one event object, as written before events were grouped) |
//! | `w/` | name `/` hash | workflow JSON |
//! | `i/` | idempotency key | ticket id |
//! | `k/` | plugin `\0` key | plugin value |
//!
//! | `x/`, `n/`, `m/` | see [`listing`] | indexes, counters |
//!
//! Retired prefixes stay reserved: `s/` (listing summaries, read from the
//! cores since listing layout 2).
//!
//! Durability: sled 0.34.7's `flush` writes its log with `sync_file_range`,
//! which pushes the pages to the device but flushes neither the drive's
//! write cache nor the file's size and block map: enough to survive a
//! process crash, not a power loss. So every commit (and every plugin
//! key-value write) is followed by [`Durable::sync`]: `fdatasync` of the
//! log file (fsync applies to the inode, so our own descriptor covers
//! sled's writes), of any blob file sled created since (values too large
//! for the log go to `blobs/`, which sled never syncs), and of the
//! directories that gained entries. The group commit makes that one sync
//! per group of transitions.

mod listing;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::parts::{self, AttemptRow, StepRow, assemble, attempt_key, step_key};
use super::record::{
    check_parts, decode, decode_attempt, decode_events, decode_step, decode_ticket, encode, err,
    event_key, event_runs, ticket_key,
};
use super::seal::{corrupt, guard, seal, unseal_raw};
use super::space::{self, Space};
use super::{Batch, Checked, Damage, Listing, Page, Store};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ticket::{Attempt, Ticket};
use crate::workflow::Workflow;

/// sled-backed store.
pub struct SledStore {
    db: sled::Db,
    durable: Durable,
    dir: PathBuf,
    /// Writes are refused while the disk is under this reserve.
    space: Space,
    /// One commit at a time: the listing counters are read, then written;
    /// it holds what the commits so far left of open tickets' listing fields.
    commit_lock: Mutex<listing::Known>,
    /// Batches applied, counted twice each (odd while one is applied), for
    /// a ticket read to tell it saw no commit land part-way.
    applying: AtomicU64,
}

/// Reads of a ticket tried between commits before it holds them off.
const READ_TRIES: usize = 8;

/// What makes a sled flush survive a power loss: our own descriptors on
/// sled's files, synced after each flush.
struct Durable {
    dir: PathBuf,
    /// sled's log (`db`).
    log: File,
    /// The highest blob id already synced (blob files are named by their
    /// log sequence number, which only grows).
    blobs_synced: Mutex<Option<u64>>,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    let message = format!("cannot sync {}: {e}", path.display());
    if space::is_full(&e) {
        Error::StorageFull(format!("{message}; free space and retry"))
    } else {
        Error::Store(message)
    }
}

fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, e))
}

impl Durable {
    /// Open sled's files under `dir` and sync what opening created.
    fn open(dir: &Path) -> Result<Self> {
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", log_path.display())))?;
        // A new store's files exist only once their directory entries are
        // durable; an old one's cost this one sync at start-up.
        log.sync_all().map_err(|e| io_err(&log_path, e))?;
        if dir.join("conf").exists() {
            sync_path(&dir.join("conf"))?;
        }
        sync_path(dir)?;
        let durable = Self {
            dir: dir.to_path_buf(),
            log,
            blobs_synced: Mutex::new(None),
        };
        durable.sync_blobs()?;
        Ok(durable)
    }

    /// `fdatasync` everything sled wrote since the last call.
    fn sync(&self) -> Result<()> {
        self.log
            .sync_data()
            .map_err(|e| io_err(&self.dir.join("db"), e))?;
        self.sync_blobs()
    }

    /// Sync blob files newer than the last synced one, then their directory.
    fn sync_blobs(&self) -> Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut synced = self.blobs_synced.lock().expect("blob sync lock");
        let mut newest = *synced;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if synced.is_some_and(|s| id <= s) {
                continue;
            }
            let path = entry.path();
            match File::open(&path) {
                Ok(f) => f.sync_data().map_err(|e| io_err(&path, e))?,
                // Garbage-collected by sled since the listing: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path, e)),
            }
            newest = newest.max(Some(id));
        }
        if newest != *synced {
            sync_path(&dir)?;
            *synced = newest;
        }
        Ok(())
    }
}

/// Exit status when the store met a full disk mid-write (EX_TEMPFAIL).
pub const EXIT_DISK_FULL: i32 = 75;

/// A write's error from sled. A full disk met mid-write leaves sled 0.34
/// refusing every later write (and hanging scans) until it is reopened, so
/// the process exits for its supervisor to restart it: everything
/// acknowledged is already synced, and reopening recovers it. The reserve
/// ([`Space`]) exists so that this is the exception, not the rule.
fn write_err(dir: &Path, e: sled::Error) -> Error {
    match &e {
        sled::Error::Io(io) if space::is_full(io) => {
            let message = format!(
                "the disk holding {} filled up during a write ({io}); the store cannot write \
                 again until it is reopened. Exiting with status {EXIT_DISK_FULL} for the \
                 supervisor to restart the server once space is freed: nothing acknowledged \
                 was lost. Keep a reserve (itsm serve --min-free-mib) so writes are refused \
                 before the disk fills",
                dir.display()
            );
            tracing::error!("{message}");
            eprintln!("itsm: {message}");
            std::process::exit(EXIT_DISK_FULL);
        }
        _ => err(e),
    }
}

impl SledStore {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = guard(dir, "open the store", || {
            let open = || {
                sled::Config::new()
                    .path(dir)
                    // We flush explicitly before acknowledging; the background
                    // flusher only adds writes.
                    .flush_every_ms(None)
                    .open()
            };
            // sled lets go of its file lock only once its I/O threads have
            // dropped their last handle, a moment after the store is
            // dropped: a reopen in the same process (a restart in place)
            // waits for that, briefly. Another process holding the store
            // still fails, after the wait, naming the lock.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let mut opened = open();
            // sled reports a held lock as an `Other` I/O error naming it.
            while let Err(sled::Error::Io(e)) = &opened
                && e.to_string().contains("could not acquire lock")
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
                opened = open();
            }
            opened
                .map_err(|e| {
                    Error::Store(format!(
                        "cannot open the store at {}: {e}; if it is damaged, restore data/ from a backup",
                        dir.display()
                    ))
                })
        })?;
        let durable = Durable::open(dir)?;
        let store = Self {
            db,
            durable,
            dir: dir.to_path_buf(),
            space: Space::new(dir, space::DEFAULT_RESERVE),
            commit_lock: Mutex::new(listing::Known::default()),
            applying: AtomicU64::new(0),
        };
        store.g("index the tickets", || {
            let (built, parties) = listing::build_if_missing(&store.db)?;
            if let Some(n) = built {
                tracing::info!(tickets = n, "built the listing indexes");
            }
            if parties {
                let tickets = store.tickets()?;
                listing::finish_parties(&store.db, &tickets)?;
                tracing::info!(
                    tickets = tickets.len(),
                    "indexed the tickets by who is related to them"
                );
                store.flush()?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Refuse writes while fewer than `bytes` are free on the store's disk
    /// (0: never refuse, and meet the full disk itself).
    pub fn with_reserve(mut self, bytes: u64) -> Self {
        self.space = Space::new(&self.dir, bytes);
        self
    }

    /// Remove every listing record, as a store written before them had
    /// none (for the test that they are rebuilt at open).
    #[cfg(test)]
    pub(crate) fn drop_listing_records(&self) {
        for prefix in [&b"s/"[..], b"x/", b"n/", b"m/"] {
            for kv in self.db.scan_prefix(prefix) {
                self.db.remove(kv.unwrap().0).unwrap();
            }
        }
        self.db.flush().unwrap();
    }

    /// A ticket write's step and attempt records. A step's last attempt
    /// written goes in the step's own record, so a transition that ends
    /// one step's attempt and starts the next's writes two records, not
    /// four; the attempt it displaces (written with it, as
    /// [`TicketWrite::attempts`] promises) gets a record of its own.
    fn put_parts(
        &self,
        batch: &mut sled::Batch,
        w: &parts::TicketWrite,
        earlier: &[&parts::TicketWrite],
    ) -> Result<()> {
        let id = &w.core.id;
        let attempt_record =
            |batch: &mut sled::Batch, step: &str, attempt: &Attempt| -> Result<()> {
                batch.insert(
                    attempt_key(id, step, attempt.n).as_bytes(),
                    encode(&parts::AttemptRowRef {
                        ticket: id,
                        step,
                        attempt,
                    })?,
                );
                Ok(())
            };
        for (step, record) in &w.steps {
            let mine = || w.attempts.iter().filter(|(s, _)| s == step).map(|(_, a)| a);
            let last = mine().max_by_key(|a| a.n);
            for attempt in mine().filter(|a| Some(a.n) != last.map(|l| l.n)) {
                attempt_record(batch, step, attempt)?;
            }
            batch.insert(
                step_key(id, step).as_bytes(),
                encode(&parts::StepRowRef {
                    ticket: id,
                    step,
                    record,
                    last,
                })?,
            );
        }
        // Attempts written without their step (a writer other than
        // [`parts::Committed`]): the newest goes in the step's record if it
        // is newer than the one held there, lest that one stand over it.
        let mut orphans: std::collections::BTreeMap<&str, Vec<&Attempt>> = Default::default();
        for (step, attempt) in &w.attempts {
            if !w.steps.iter().any(|(s, _)| s == step) {
                orphans.entry(step).or_default().push(attempt);
            }
        }
        for (step, written) in orphans {
            let before = self.row_before(earlier, id, step)?;
            let (row, changed, filed) = settle_orphans(before, &written);
            for a in &filed {
                attempt_record(batch, step, a)?;
            }
            if let (Some(row), true) = (row, changed) {
                batch.insert(step_key(id, step).as_bytes(), encode(&row)?);
            }
        }
        Ok(())
    }

    /// Ticket `id`'s record of `step` as the writes `earlier` in this
    /// group leave it (the last of them to touch the step wins), or as
    /// stored if none touched it.
    fn row_before(
        &self,
        earlier: &[&parts::TicketWrite],
        id: &str,
        step: &str,
    ) -> Result<Option<StepRow>> {
        let mine = |w: &parts::TicketWrite| -> Vec<Attempt> {
            w.attempts
                .iter()
                .filter(|(s, _)| s == step)
                .map(|(_, a)| a.clone())
                .collect()
        };
        for (j, w) in earlier.iter().enumerate().rev() {
            if w.core.id != id {
                continue;
            }
            if let Some((_, record)) = w.steps.iter().find(|(s, _)| s == step) {
                return Ok(Some(StepRow {
                    ticket: id.to_string(),
                    step: step.to_string(),
                    record: record.clone(),
                    last: mine(w).into_iter().max_by_key(|a| a.n),
                }));
            }
            let written = mine(w);
            if !written.is_empty() {
                let before = self.row_before(&earlier[..j], id, step)?;
                let written: Vec<&Attempt> = written.iter().collect();
                return Ok(settle_orphans(before, &written).0);
            }
        }
        let key = step_key(id, step);
        match self.db.get(&key).map_err(err)? {
            Some(v) => Ok(Some(decode_step(key.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// `read` (of several keys) as of one commit.
    ///
    /// A ticket's core and parts are separate reads: a commit applied
    /// between them would give the core of one commit (its trail head)
    /// with the steps of the next. So a read is kept only if no batch was
    /// applied while it ran; when commits keep landing, it is made under
    /// the commit lock, holding them off.
    fn between_commits<T>(&self, read: impl Fn() -> Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering::SeqCst;
        for _ in 0..READ_TRIES {
            let before = self.applying.load(SeqCst);
            if before.is_multiple_of(2) {
                // A torn read can look like damage too: an error counts
                // only if no batch was applied meanwhile either.
                let got = read();
                if self.applying.load(SeqCst) == before {
                    return got;
                }
            }
            std::thread::yield_now();
        }
        let _between = self.commit_lock.lock().expect("commit lock");
        read()
    }

    /// A ticket as stored: its core, then its step and attempt records.
    fn read_ticket(&self, id: &str) -> Result<Option<Ticket>> {
        let key = format!("t/{id}");
        self.g("read a ticket", || {
            let Some(v) = self.db.get(&key).map_err(err)? else {
                return Ok(None);
            };
            let core = decode_ticket(key.as_bytes(), &v)?;
            let steps = self
                .db
                .scan_prefix(format!("p/{id}/"))
                .map(|kv| {
                    let (k, v) = kv.map_err(err)?;
                    decode_step(&k, &v)
                })
                .collect::<Result<Vec<_>>>()?;
            let attempts = self
                .db
                .scan_prefix(format!("c/{id}/"))
                .map(|kv| {
                    let (k, v) = kv.map_err(err)?;
                    decode_attempt(&k, &v)
                })
                .collect::<Result<Vec<_>>>()?;
            assemble(core, steps, attempts).map(Some)
        })
    }

    /// Every ticket as stored, in one scan: a commit landing meanwhile
    /// can tear it, so the caller checks that none did.
    fn read_tickets(&self) -> Result<Vec<Ticket>> {
        self.g("read the tickets", || {
            let mut steps = parts_by_ticket(self.db.scan_prefix(b"p/"), decode_step)?;
            let mut attempts = parts_by_ticket(self.db.scan_prefix(b"c/"), decode_attempt)?;
            self.db
                .scan_prefix(b"t/")
                .map(|kv| {
                    let (k, v) = kv.map_err(err)?;
                    let core = decode_ticket(&k, &v)?;
                    let s = steps.remove(&core.id).unwrap_or_default();
                    let a = attempts.remove(&core.id).unwrap_or_default();
                    assemble(core, s, a)
                })
                .collect()
        })
    }

    /// Run a call into sled, its panics turned into store errors.
    fn g<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        guard(&self.dir, what, f).map_err(|e| match e {
            // sled's own checks found damage: say where and what to do.
            Error::Store(m) if m.contains("Read corrupted data") => Error::Store(format!(
                "the store at {} is damaged ({m}); stop the server and restore data/ from a backup",
                self.dir.display()
            )),
            other => other,
        })
    }

    /// sled's flush, then the fsync it leaves out: on return the writes
    /// survive a power loss, not only a process crash.
    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| write_err(&self.dir, e))?;
        self.durable.sync()
    }
}

/// Attempts `written` without their step, against the step's record
/// `before` them: the record after them, whether it changed (is to be
/// written), and the attempts to file in records of their own. The
/// newest written becomes the record's last if it is no older than the
/// one held there, and the one it displaces is filed unless it was
/// written too.
fn settle_orphans(
    before: Option<StepRow>,
    written: &[&Attempt],
) -> (Option<StepRow>, bool, Vec<Attempt>) {
    let newest = written.iter().copied().max_by_key(|a| a.n);
    match (before, newest) {
        (Some(mut row), Some(newest)) if row.last.as_ref().is_some_and(|h| h.n <= newest.n) => {
            let held = row.last.take().expect("held");
            let mut filed: Vec<Attempt> = written
                .iter()
                .filter(|a| a.n != newest.n)
                .map(|a| (*a).clone())
                .collect();
            if !written.iter().any(|a| a.n == held.n) {
                filed.push(held);
            }
            row.last = Some(newest.clone());
            (Some(row), true, filed)
        }
        (before, _) => (
            before,
            false,
            written.iter().map(|a| (*a).clone()).collect(),
        ),
    }
}

/// A scan of step or attempt records, grouped by their ticket.
fn parts_by_ticket<T: parts::OfTicket>(
    scan: sled::Iter,
    decode: fn(&[u8], &[u8]) -> Result<T>,
) -> Result<HashMap<String, Vec<T>>> {
    let mut by = HashMap::<String, Vec<T>>::new();
    for kv in scan {
        let (k, v) = kv.map_err(err)?;
        let row = decode(&k, &v)?;
        by.entry(row.ticket().to_string()).or_default().push(row);
    }
    Ok(by)
}

impl Store for SledStore {
    fn commit(&self, batches: &[Batch]) -> Result<()> {
        self.space.check()?;
        let mut known = self.commit_lock.lock().expect("commit lock");
        self.g("write", || {
            let mut batch = sled::Batch::default();
            let mut indexer = listing::Indexer::new(&self.db, Some(&known));
            let mut earlier: Vec<&parts::TicketWrite> = Vec::new();
            for b in batches {
                for w in &b.tickets {
                    let t = &w.core;
                    batch.insert(format!("t/{}", t.id).as_bytes(), encode(t)?);
                    let was = indexer.ticket(&mut batch, t, &w.parties)?;
                    // The in-flight mark changes only when the ticket
                    // starts, ends, or is retried out of an end.
                    if was.is_none_or(|s| s.is_terminal() != t.state.is_terminal()) {
                        let flight = format!("f/{}", t.id);
                        if t.state.is_terminal() {
                            batch.remove(flight.as_bytes());
                        } else {
                            batch.insert(flight.as_bytes(), &[] as &[u8]);
                        }
                    }
                    self.put_parts(&mut batch, w, &earlier)?;
                    earlier.push(w);
                }
                // A transition's events in one record: one insert, not one each.
                for run in event_runs(&b.events) {
                    let first = &run[0];
                    batch.insert(
                        event_key(&first.ticket_id, first.seq).as_bytes(),
                        encode(&run)?,
                    );
                }
                for (name, hash, wf) in &b.workflows {
                    batch.insert(format!("w/{name}/{hash}").as_bytes(), encode(wf)?);
                }
                for (k, id) in &b.idempotency {
                    batch.insert(format!("i/{k}").as_bytes(), seal(id.as_bytes()));
                }
            }
            let indexed = indexer.finish(&mut batch)?;
            self.applying
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let applied = self.db.apply_batch(batch);
            self.applying
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            applied.map_err(|e| write_err(&self.dir, e))?;
            // Applied: reads see it now, synced or not.
            known.learn(indexed);
            self.flush()
        })
    }

    fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        self.between_commits(|| self.read_ticket(id))
    }

    fn tickets(&self) -> Result<Vec<Ticket>> {
        use std::sync::atomic::Ordering::SeqCst;
        // One scan of everything, if no commit lands while it runs; else
        // ticket by ticket, each read of one commit, rather than holding
        // every commit off for a scan of the whole store.
        let before = self.applying.load(SeqCst);
        if before.is_multiple_of(2) {
            let all = self.read_tickets();
            if self.applying.load(SeqCst) == before {
                return all;
            }
        }
        let ids = self.g("list the tickets", || {
            self.db
                .scan_prefix(b"t/")
                .keys()
                .map(|k| {
                    let k = k.map_err(err)?;
                    String::from_utf8(k[2..].to_vec())
                        .map_err(|_| corrupt(&k, "its ticket id is not UTF-8"))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.extend(self.ticket(&id)?);
        }
        Ok(all)
    }

    fn list(&self, q: &Listing) -> Result<Page> {
        self.g("list tickets", || listing::list(&self.db, q))
    }

    fn count(&self, q: &Listing) -> Result<usize> {
        self.g("count tickets", || listing::count(&self.db, q))
    }

    fn in_flight(&self) -> Result<Vec<String>> {
        self.g("read the in-flight index", || {
            self.db
                .scan_prefix(b"f/")
                .map(|kv| {
                    let (k, _) = kv.map_err(err)?;
                    Ok(String::from_utf8_lossy(&k[2..]).into_owned())
                })
                .collect()
        })
    }

    fn events(&self, ticket_id: &str) -> Result<Vec<AuditEvent>> {
        self.g("read a trail", || {
            self.db
                .scan_prefix(format!("a/{ticket_id}/").as_bytes())
                .try_fold(Vec::new(), |mut all, kv| {
                    let (k, v) = kv.map_err(err)?;
                    all.extend(decode_events(&k, &v)?);
                    Ok(all)
                })
        })
    }

    fn workflow_versions(&self, name: &str) -> Result<Vec<(String, Workflow)>> {
        let prefix = format!("w/{name}/");
        self.g("read workflow versions", || {
            self.db
                .scan_prefix(prefix.as_bytes())
                .map(|kv| {
                    let (k, v) = kv.map_err(err)?;
                    let hash = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    Ok((hash, decode(&k, &v)?))
                })
                .collect()
        })
    }

    fn workflow(&self, name: &str, hash: &str) -> Result<Option<Workflow>> {
        let key = format!("w/{name}/{hash}");
        self.g("read a workflow", || {
            match self.db.get(&key).map_err(err)? {
                Some(v) => decode(key.as_bytes(), &v).map(Some),
                None => Ok(None),
            }
        })
    }

    fn idempotency(&self, key: &str) -> Result<Option<String>> {
        let key = format!("i/{key}");
        self.g("read an idempotency key", || {
            match self.db.get(&key).map_err(err)? {
                Some(v) => Ok(Some(
                    String::from_utf8_lossy(unseal_raw(key.as_bytes(), &v)?).into_owned(),
                )),
                None => Ok(None),
            }
        })
    }

    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let key = format!("k/{plugin}\0{key}");
        self.g("read plugin state", || {
            match self.db.get(&key).map_err(err)? {
                Some(v) => Ok(Some(unseal_raw(key.as_bytes(), &v)?.to_vec())),
                None => Ok(None),
            }
        })
    }

    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.space.check()?;
        self.g("write plugin state", || {
            self.db
                .insert(format!("k/{plugin}\0{key}"), seal(value))
                .map_err(|e| write_err(&self.dir, e))?;
            self.flush()
        })
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.g("write plugin state", || {
            self.db
                .remove(format!("k/{plugin}\0{key}"))
                .map_err(|e| write_err(&self.dir, e))?;
            self.flush()
        })
    }

    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64)> {
        let prefix = format!("k/{plugin}\0");
        self.g("read plugin state", || {
            let mut usage = (0, 0);
            for kv in self.db.scan_prefix(&prefix) {
                let (k, v) = kv.map_err(err)?;
                usage.0 += 1;
                usage.1 += (k.len() - prefix.len() + unseal_raw(&k, &v)?.len()) as u64;
            }
            Ok(usage)
        })
    }

    fn check(&self) -> Result<Checked> {
        self.g("read every record", || {
            let mut records = 0;
            let mut damage = Vec::new();
            let mut cores = Vec::new();
            let mut steps: HashMap<String, Vec<StepRow>> = HashMap::new();
            let mut attempts: HashMap<String, Vec<AttemptRow>> = HashMap::new();
            for kv in self.db.iter() {
                let (k, v) = kv.map_err(err)?;
                records += 1;
                let checked = match k.get(..2) {
                    Some(b"t/") => decode_ticket(&k, &v).map(|t| cores.push(t)),
                    Some(b"p/") => decode_step(&k, &v)
                        .map(|r| steps.entry(r.ticket.clone()).or_default().push(r)),
                    Some(b"c/") => decode_attempt(&k, &v)
                        .map(|r| attempts.entry(r.ticket.clone()).or_default().push(r)),
                    Some(b"a/") => decode_events(&k, &v).map(drop),
                    Some(b"w/") => decode::<Workflow>(&k, &v).map(drop),
                    Some(b"i/") | Some(b"k/") => unseal_raw(&k, &v).map(drop),
                    Some(b"f/") => match self.db.get([b"t/", &k[2..]].concat()).map_err(err)? {
                        Some(_) => Ok(()),
                        None => Err(corrupt(
                            &k,
                            "it marks a ticket in flight that is not stored",
                        )),
                    },
                    Some(b"s/") | Some(b"x/") | Some(b"n/") | Some(b"m/") => {
                        listing::check(&self.db, &k, &v)
                    }
                    _ => Err(corrupt(&k, "its key has no known prefix")),
                };
                if let Err(e) = checked {
                    damage.push(Damage {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        problem: e.to_string(),
                    });
                }
            }
            let stored = |id: &str| matches!(self.db.contains_key(ticket_key(id)), Ok(true));
            let tickets = check_parts(cores, steps, attempts, &stored, &mut damage);
            damage.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(Checked {
                records,
                damage,
                tickets,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_damaged_on_disk_is_refused_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let t = crate::store::conformance::ticket("T-sealed", crate::ticket::TicketState::Pending);
        store
            .commit(&[Batch {
                tickets: vec![t.clone().into()],
                ..Batch::default()
            }])
            .unwrap();
        assert_eq!(store.ticket("T-sealed").unwrap().unwrap().id, "T-sealed");
        // One byte of the stored value changed behind the store's back.
        let mut raw = store.db.get("t/T-sealed").unwrap().unwrap().to_vec();
        let last = raw.len() - 2;
        raw[last] ^= 0x01;
        store.db.insert("t/T-sealed", raw).unwrap();
        let e = store.ticket("T-sealed").unwrap_err().to_string();
        assert!(
            e.contains("corrupt record t/T-sealed: its checksum does not match"),
            "{e}"
        );
        assert!(store.tickets().is_err());
        // A ticket filed under another's key is damage too.
        store.db.insert("t/T-other", encode(&t).unwrap()).unwrap();
        let checked = store.check().unwrap();
        let keys: Vec<&str> = checked.damage.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["t/T-other", "t/T-sealed"], "{:?}", checked.damage);
        assert!(
            checked.damage[0]
                .problem
                .contains("it holds ticket T-sealed")
        );
    }

    #[test]
    fn a_steps_last_attempt_is_in_its_record_and_the_ones_before_have_their_own() {
        use crate::store::conformance::attempt;
        use crate::store::{Committed, TicketWrite};
        use crate::ticket::AttemptResult;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let write = |w: TicketWrite| {
            store
                .commit(&[Batch {
                    tickets: vec![w],
                    ..Batch::default()
                }])
                .unwrap()
        };
        let held = |step: &str| {
            let key = step_key("T-last", step);
            decode_step(key.as_bytes(), &store.db.get(&key).unwrap().unwrap())
                .unwrap()
                .last
                .map(|a| (a.n, a.result))
        };
        let filed = || {
            store
                .db
                .scan_prefix(b"c/T-last/")
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    decode_attempt(&k, &v).unwrap()
                })
                .map(|r| (r.step, r.attempt.n, r.attempt.result))
                .collect::<Vec<_>>()
        };
        let mut t =
            crate::store::conformance::ticket("T-last", crate::ticket::TicketState::Running);
        t.steps
            .get_mut("a")
            .unwrap()
            .attempts
            .push(attempt(1, AttemptResult::Running));
        let mut committed = Committed::default();
        write(committed.changes(&t));
        assert_eq!(held("a"), Some((1, AttemptResult::Running)));
        assert_eq!(filed(), []);
        // Ended, then retried: the first attempt moves to its own record.
        t.steps.get_mut("a").unwrap().attempts[0].result = AttemptResult::Interrupted;
        write(committed.changes(&t));
        t.steps
            .get_mut("a")
            .unwrap()
            .attempts
            .push(attempt(2, AttemptResult::Running));
        write(committed.changes(&t));
        assert_eq!(held("a"), Some((2, AttemptResult::Running)));
        assert_eq!(filed(), [("a".into(), 1, AttemptResult::Interrupted)]);
        assert_eq!(store.ticket("T-last").unwrap().as_ref(), Some(&t));
        // Attempts written without their step (not as a driver writes):
        // the newest still ends up in the step's record.
        t.steps.get_mut("a").unwrap().attempts[1].result = AttemptResult::Succeeded;
        t.steps
            .get_mut("a")
            .unwrap()
            .attempts
            .push(attempt(3, AttemptResult::Running));
        let mut bare = TicketWrite::whole(&t);
        bare.steps.clear();
        bare.attempts.retain(|(_, a)| a.n >= 2);
        write(bare);
        assert_eq!(held("a"), Some((3, AttemptResult::Running)));
        assert_eq!(store.ticket("T-last").unwrap().as_ref(), Some(&t));
        // A record of the last attempt left from the layout before (the
        // step's record then held none) is stood over by the step's.
        let stale = attempt(3, AttemptResult::Interrupted);
        store
            .db
            .insert(
                attempt_key("T-last", "a", 3),
                encode(&parts::AttemptRowRef {
                    ticket: "T-last",
                    step: "a",
                    attempt: &stale,
                })
                .unwrap(),
            )
            .unwrap();
        assert_eq!(store.ticket("T-last").unwrap().as_ref(), Some(&t));
        let checked = store.check().unwrap();
        assert!(checked.damage.is_empty(), "{:?}", checked.damage);
        assert_eq!(checked.tickets, [t.clone()]);
        // Two such writes in one group commit: the second sees the step's
        // record as the first left it (its last attempt, 4, is filed when
        // 5 displaces it), not as stored before the group.
        let attempts = &mut t.steps.get_mut("a").unwrap().attempts;
        attempts[2].result = AttemptResult::Interrupted;
        attempts.push(attempt(4, AttemptResult::Interrupted));
        attempts.push(attempt(5, AttemptResult::Running));
        let only = |t: &Ticket, ns: &[u32]| {
            let mut w = TicketWrite::whole(t);
            w.steps.clear();
            w.attempts.retain(|(_, a)| ns.contains(&a.n));
            w
        };
        store
            .commit(&[
                Batch {
                    tickets: vec![only(&t, &[3, 4])],
                    ..Batch::default()
                },
                Batch {
                    tickets: vec![only(&t, &[5])],
                    ..Batch::default()
                },
            ])
            .unwrap();
        assert_eq!(held("a"), Some((5, AttemptResult::Running)));
        assert_eq!(store.ticket("T-last").unwrap().as_ref(), Some(&t));
        let checked = store.check().unwrap();
        assert!(checked.damage.is_empty(), "{:?}", checked.damage);
        assert_eq!(checked.tickets, [t]);
    }

    #[test]
    fn a_transitions_events_are_one_record_and_single_event_records_still_read() {
        use crate::audit::{AuditKind, ChainHead, Draft, link};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut head = ChainHead::default();
        let mut next = |kind| {
            link(
                "T-ev",
                &mut head,
                7,
                Draft::new(kind, serde_json::json!({})),
            )
        };
        // As an earlier version wrote them: one record per event.
        let old = next(AuditKind::Created);
        store
            .db
            .insert(event_key("T-ev", 0), encode(&old).unwrap())
            .unwrap();
        let run = vec![next(AuditKind::StepStarted), next(AuditKind::StepSucceeded)];
        store
            .commit(&[Batch {
                events: run.clone(),
                ..Batch::default()
            }])
            .unwrap();
        let keys: Vec<String> = store
            .db
            .scan_prefix(b"a/T-ev/")
            .map(|kv| String::from_utf8(kv.unwrap().0.to_vec()).unwrap())
            .collect();
        assert_eq!(keys, [event_key("T-ev", 0), event_key("T-ev", 1)]);
        let events = store.events("T-ev").unwrap();
        assert_eq!(events, [vec![old], run.clone()].concat());
        assert!(crate::audit::verify("T-ev", &events, &head).is_ok());
        assert!(store.check().unwrap().damage.is_empty());
        // A run filed under another seq, or with a seq missing, is damage
        // named by its key, and the trail does not read.
        let mut gap = run.clone();
        gap[1].seq = 4;
        store
            .db
            .insert(event_key("T-ev", 3), encode(&gap).unwrap())
            .unwrap();
        store
            .db
            .insert(event_key("T-ev", 9), encode(&run).unwrap())
            .unwrap();
        let damage = store.check().unwrap().damage;
        let found: Vec<(&str, &str)> = damage
            .iter()
            .map(|d| (d.key.as_str(), d.problem.as_str()))
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, event_key("T-ev", 3));
        assert!(
            found[0].1.contains("it holds events from 1 of T-ev"),
            "{found:?}"
        );
        assert_eq!(found[1].0, event_key("T-ev", 9));
        assert!(store.events("T-ev").is_err());
        store.db.remove(event_key("T-ev", 3)).unwrap();
        store.db.remove(event_key("T-ev", 9)).unwrap();
        gap[0].seq = 3;
        gap[1].seq = 5;
        store
            .db
            .insert(event_key("T-ev", 3), encode(&gap).unwrap())
            .unwrap();
        let damage = store.check().unwrap().damage;
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert!(
            damage[0]
                .problem
                .contains("after seq 3 of T-ev it holds seq 5 of T-ev, not seq 4"),
            "{damage:?}"
        );
    }

    #[test]
    fn a_store_of_the_listing_layout_before_loses_its_summary_records_at_open() {
        use crate::store::{Listing, TicketSummary};
        let dir = tempfile::tempdir().unwrap();
        let everything = Listing {
            limit: 100,
            ..Listing::default()
        };
        let before = {
            let store = SledStore::open(dir.path()).unwrap();
            for (id, state) in [
                ("T-1", crate::ticket::TicketState::Pending),
                ("T-2", crate::ticket::TicketState::Succeeded),
            ] {
                let t = crate::store::conformance::ticket(id, state);
                store
                    .commit(&[Batch {
                        tickets: vec![t.clone().into()],
                        ..Batch::default()
                    }])
                    .unwrap();
                // As layout 1 kept it: a summary record beside the core.
                store
                    .db
                    .insert(format!("s/{id}"), encode(&TicketSummary::from(&t)).unwrap())
                    .unwrap();
            }
            store.db.insert(listing::MARKER, seal(b"1")).unwrap();
            store.flush().unwrap();
            assert_eq!(store.list(&everything).unwrap().tickets.len(), 2);
            let found = store.check().unwrap().damage;
            assert_eq!(found.len(), 2, "{found:?}");
            assert!(
                found[0]
                    .problem
                    .contains("listing summary of the layout before")
            );
            store.list(&everything).unwrap()
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.db.scan_prefix(b"s/").count(), 0);
        assert_eq!(
            unseal_raw(
                listing::MARKER.as_bytes(),
                &store.db.get(listing::MARKER).unwrap().unwrap()
            )
            .unwrap(),
            listing::LAYOUT
        );
        assert_eq!(store.list(&everything).unwrap(), before);
        assert!(store.check().unwrap().damage.is_empty());
    }

    #[test]
    fn a_person_s_listing_walks_only_the_tickets_related_to_them_and_survives_a_rebuild() {
        use crate::store::Listing;
        use crate::ticket::{TaskRecord, TicketState};
        let dir = tempfile::tempdir().unwrap();
        let task = |assignee: &str| TaskRecord {
            assignee: Some(assignee.into()),
            former_assignees: Vec::new(),
            group: None,
            due_ms: None,
            due: None,
            overdue: false,
            escalated_to: None,
            remind_at_ms: None,
            reminders: 0,
            done: None,
        };
        let mine = |store: &SledStore, keys: &[&str]| -> Vec<String> {
            let q = Listing {
                limit: 100,
                readers: Some(keys.iter().map(|k| k.to_string()).collect()),
                ..Listing::default()
            };
            assert_eq!(
                store.count(&q).unwrap(),
                store.list(&q).unwrap().tickets.len()
            );
            store
                .list(&q)
                .unwrap()
                .tickets
                .into_iter()
                .map(|t| t.id)
                .collect()
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            for i in 1..=6 {
                let mut t =
                    crate::store::conformance::ticket(&format!("T-{i}"), TicketState::WaitingTask);
                let boss = if i % 3 == 0 {
                    "Boss@Example.com"
                } else {
                    "other@example.com"
                };
                t.steps.get_mut("a").unwrap().task = Some(task(boss));
                store
                    .commit(&[Batch {
                        tickets: vec![t.into()],
                        ..Batch::default()
                    }])
                    .unwrap();
            }
            // A reassign moves T-1 to the boss: the former assignee keeps it.
            let mut t = store.ticket("T-1").unwrap().unwrap();
            let k = t.steps.get_mut("a").unwrap().task.as_mut().unwrap();
            k.former_assignees
                .push(k.assignee.replace("boss@example.com".into()).unwrap());
            store
                .commit(&[Batch {
                    tickets: vec![t.into()],
                    ..Batch::default()
                }])
                .unwrap();
            assert_eq!(mine(&store, &["p:boss@example.com"]), ["T-1", "T-3", "T-6"]);
            assert_eq!(mine(&store, &["p:nobody", "g:hr"]), Vec::<String>::new());
            assert_eq!(mine(&store, &["p:tester"]).len(), 6, "the requester");
            store.drop_listing_records();
        }
        // Rebuilt at open, parties and all, from the whole tickets.
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(mine(&store, &["p:boss@example.com"]), ["T-1", "T-3", "T-6"]);
        assert_eq!(
            mine(&store, &["p:other@example.com"]).len(),
            4,
            "T-1 held, 2, 4, 5"
        );
        assert!(store.check().unwrap().damage.is_empty());
    }

    #[test]
    fn a_ticket_stored_whole_by_an_earlier_version_reads_back_and_is_split_on_its_next_write() {
        use crate::store::TicketWrite;
        use crate::ticket::{Attempt, AttemptResult};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut t = crate::store::conformance::in_its_first_attempt("T-old");
        // As the host wrote tickets before they were kept in parts.
        store.db.insert("t/T-old", encode(&t).unwrap()).unwrap();
        assert_eq!(store.ticket("T-old").unwrap().as_ref(), Some(&t));
        assert_eq!(store.tickets().unwrap(), vec![t.clone()]);
        assert!(store.check().unwrap().damage.is_empty());
        // A driver's first write of a ticket it read is whole: the parts
        // are written and the core loses its inline steps.
        t.steps.get_mut("a").unwrap().attempts[0].result = AttemptResult::Interrupted;
        store
            .commit(&[Batch {
                tickets: vec![TicketWrite::whole(&t)],
                ..Batch::default()
            }])
            .unwrap();
        let core: Ticket = decode(b"t/T-old", &store.db.get("t/T-old").unwrap().unwrap()).unwrap();
        assert!(core.steps.is_empty());
        // The step's one attempt is its last: in the step's record.
        let row = decode_step(b"p/T-old/a", &store.db.get("p/T-old/a").unwrap().unwrap()).unwrap();
        assert_eq!(row.last.as_ref(), t.steps["a"].attempts.last());
        assert!(store.db.scan_prefix(b"c/T-old/").next().is_none());
        assert_eq!(store.ticket("T-old").unwrap().as_ref(), Some(&t));
        // An attempt record with a gap before it, and one of a ticket
        // that is not stored, are damage, named by key.
        let gap = crate::store::parts::AttemptRowRef {
            ticket: "T-old",
            step: "a",
            attempt: &Attempt {
                n: 3,
                ..t.steps["a"].attempts[0].clone()
            },
        };
        store
            .db
            .insert(attempt_key("T-old", "a", 3), encode(&gap).unwrap())
            .unwrap();
        let orphan = crate::store::parts::AttemptRowRef {
            ticket: "T-gone",
            ..gap
        };
        store
            .db
            .insert(attempt_key("T-gone", "a", 3), encode(&orphan).unwrap())
            .unwrap();
        let checked = store.check().unwrap();
        let keys: Vec<&str> = checked.damage.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            ["c/T-gone/a/00000003", "c/T-old/a/00000003"],
            "{:?}",
            checked.damage
        );
        assert!(
            checked.damage[0]
                .problem
                .contains("its ticket is not stored")
        );
        assert!(
            checked.damage[1]
                .problem
                .contains("the step has 0 attempts stored before it, not 2")
        );
        assert!(checked.tickets.is_empty());
        assert!(store.ticket("T-old").is_err());
    }
}
