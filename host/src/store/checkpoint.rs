//! The completeness checkpoint: every ticket's trail head, as each group
//! commit acknowledged it, in a log kept outside the database.
//!
//! Checksums catch a damaged record, but not a record that is simply gone:
//! a store cut to half, rolled back to yesterday's copy, or missing one
//! ticket is self-consistent, and every trail in it verifies. This log is
//! the outside witness. Each acknowledged group commit appends one line
//! naming the heads (event count and hash) of the tickets it wrote, synced
//! before the acknowledgement, and chained (each line carries a hash over
//! the previous one), so the log itself cannot lose a middle line unseen.
//! At start-up (and in `itsm store check`) the store is compared with it:
//! a ticket the log knows that the store lacks, or holds with fewer events,
//! means the store lost acknowledged work, and the server refuses to start
//! until an operator says otherwise.
//!
//! A crash between the store's commit and the log's line leaves the store
//! one group *ahead* of the log, which is fine: only behind is loss.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Batch, Store};
use crate::error::{Error, Result};

/// Lines appended before the log is rewritten as one snapshot line.
const COMPACT_AFTER: usize = 20_000;

/// A ticket's head as the log knows it: events so far and the last hash.
pub type Heads = HashMap<String, (u64, String)>;

#[derive(Serialize, Deserialize)]
struct Line {
    /// (ticket id, events, head hash) written by one group commit, or the
    /// whole set when `snapshot`.
    heads: Vec<(String, u64, String)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    snapshot: bool,
    /// SHA-256 over the previous line's `chain` and this line's heads.
    chain: String,
}

/// The log, open for appending.
pub struct Checkpoint {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: std::fs::File,
    chain: String,
    lines: usize,
    heads: Heads,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn link(prev: &str, heads: &[(String, u64, String)]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    for (id, len, hash) in heads {
        h.update(format!("{id}\0{len}\0{hash}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

impl Checkpoint {
    /// Open (or start) the log at `path`, reading what it says so far.
    pub fn open(path: &Path) -> Result<Self> {
        let (heads, chain, lines, good) = read(path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        // Drop a torn last line, so the next line starts on its own.
        if file.metadata().map_err(io(path))?.len() > good {
            file.set_len(good).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        if lines == 0 {
            file.sync_all().map_err(io(path))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                chain,
                lines,
                heads,
            }),
        })
    }

    /// Whether the log has no lines yet (a new home, or one from before the
    /// checkpoint existed: its store is taken as the baseline).
    pub fn is_empty(&self) -> bool {
        self.inner.lock().expect("checkpoint lock").lines == 0
    }

    /// Every ticket's head as last acknowledged.
    pub fn heads(&self) -> Heads {
        self.inner.lock().expect("checkpoint lock").heads.clone()
    }

    /// Record the heads a just-committed group wrote; synced on return.
    pub fn record(&self, batches: &[Batch]) -> Result<()> {
        let heads: Vec<(String, u64, String)> = batches
            .iter()
            .flat_map(|b| b.tickets.iter().map(|w| &w.core))
            .map(|t| (t.id.clone(), t.head.len, t.head.hash.clone()))
            .collect();
        if heads.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("checkpoint lock");
        for (id, len, hash) in &heads {
            inner.heads.insert(id.clone(), (*len, hash.clone()));
        }
        if inner.lines >= COMPACT_AFTER {
            let all: Vec<_> = inner
                .heads
                .iter()
                .map(|(id, (len, hash))| (id.clone(), *len, hash.clone()))
                .collect();
            return self.rewrite(&mut inner, all);
        }
        let chain = link(&inner.chain, &heads);
        let mut text = serde_json::to_string(&Line {
            heads,
            snapshot: false,
            chain: chain.clone(),
        })
        .map_err(|e| Error::Store(e.to_string()))?;
        text.push('\n');
        let before = inner.file.metadata().map_err(io(&self.path))?.len();
        let appended = inner
            .file
            .write_all(text.as_bytes())
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = appended {
            // Cut a part-written line off, so the next line starts on its
            // own (a torn line in the middle would read as tampering).
            let _ = inner.file.set_len(before);
            return Err(if super::space::is_full(&e) {
                Error::StorageFull(format!(
                    "cannot append to {}: {e}; free space and retry",
                    self.path.display()
                ))
            } else {
                io(&self.path)(e)
            });
        }
        inner.chain = chain;
        inner.lines += 1;
        Ok(())
    }

    /// Start the log over from what `store` holds now: after an operator
    /// accepted a store that lost work, so the next start compares with it.
    pub fn reset_to(&self, store: &dyn Store) -> Result<()> {
        let heads: Vec<_> = store
            .tickets()?
            .into_iter()
            .map(|t| (t.id, t.head.len, t.head.hash))
            .collect();
        let mut inner = self.inner.lock().expect("checkpoint lock");
        inner.heads = heads
            .iter()
            .map(|(id, len, hash)| (id.clone(), (*len, hash.clone())))
            .collect();
        self.rewrite(&mut inner, heads)
    }

    /// Replace the log with one snapshot line (written aside, synced,
    /// renamed over, directory synced).
    fn rewrite(&self, inner: &mut Inner, heads: Vec<(String, u64, String)>) -> Result<()> {
        let chain = link("", &heads);
        let mut text = serde_json::to_string(&Line {
            heads,
            snapshot: true,
            chain: chain.clone(),
        })
        .map_err(|e| Error::Store(e.to_string()))?;
        text.push('\n');
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        inner.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        inner.chain = chain;
        inner.lines = 1;
        Ok(())
    }
}

/// What the log at `path` says: heads, last chain hash, lines, and the
/// length of its whole lines.
fn read(path: &Path) -> Result<(Heads, String, usize, u64)> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Heads::new(), String::new(), 0, 0));
        }
        Err(e) => return Err(io(path)(e)),
    };
    let bad = |n: usize, why: &str| {
        Error::Store(format!(
            "the completeness checkpoint {} is damaged at line {n}: {why}",
            path.display()
        ))
    };
    let mut heads = Heads::new();
    let mut chain = String::new();
    let mut count = 0;
    let mut good = 0u64;
    for (i, raw) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        // A line torn by a crash mid-append (no newline) was never
        // acknowledged: it is dropped.
        if !raw.ends_with(b"\n") {
            break;
        }
        let line: Line = serde_json::from_slice(raw).map_err(|e| bad(n, &e.to_string()))?;
        let prev = if line.snapshot { "" } else { chain.as_str() };
        if link(prev, &line.heads) != line.chain {
            return Err(bad(
                n,
                "its chain hash does not match (edited, or a line is missing)",
            ));
        }
        if line.snapshot {
            heads.clear();
        }
        for (id, len, hash) in line.heads {
            heads.insert(id, (len, hash));
        }
        chain = line.chain;
        count += 1;
        good += raw.len() as u64;
    }
    Ok((heads, chain, count, good))
}

/// How `store` falls short of `heads`: each ticket it lacks, or holds with
/// fewer events than were acknowledged, or with another trail.
pub fn shortfall(heads: &Heads, store: &dyn Store) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut ids: Vec<&String> = heads.keys().collect();
    ids.sort();
    for id in ids {
        let (len, hash) = &heads[id];
        match store.ticket(id) {
            Ok(t) => problems.extend(behind(
                id,
                (*len, hash),
                t.as_ref().map(|t| (t.head.len, t.head.hash.as_str())),
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok(problems)
}

/// What is wrong with ticket `id`'s trail as `stored` (its head, `None`
/// when the ticket is gone), given the head last `acknowledged`: nothing
/// when it is that head or further on.
pub fn behind(id: &str, acknowledged: (u64, &str), stored: Option<(u64, &str)>) -> Option<String> {
    let (len, hash) = acknowledged;
    match stored {
        None => Some(format!(
            "ticket {id} is missing (its trail had {len} events when acknowledged)"
        )),
        Some((n, _)) if n < len => Some(format!(
            "ticket {id} is behind: {n} of its {len} acknowledged events"
        )),
        Some((n, h)) if n == len && h != hash => Some(format!(
            "ticket {id}'s trail is not the one acknowledged (head hash differs)"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::ticket;
    use crate::store::memory::MemoryStore;
    use crate::ticket::TicketState;

    fn batch(t: &crate::ticket::Ticket) -> Batch {
        Batch {
            tickets: vec![t.clone().into()],
            ..Batch::default()
        }
    }

    #[test]
    fn a_deleted_or_rolled_back_ticket_falls_short_of_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.jsonl");
        let store = MemoryStore::default();
        let cp = Checkpoint::open(&path).unwrap();
        let mut a = ticket("T-a", TicketState::Pending);
        let b = ticket("T-b", TicketState::Pending);
        a.head.len = 2;
        a.head.hash = "h2".into();
        for t in [&a, &b] {
            store.commit(&[batch(t)]).unwrap();
            cp.record(&[batch(t)]).unwrap();
        }
        // A later transition of T-a was acknowledged...
        let mut a3 = a.clone();
        a3.head.len = 3;
        a3.head.hash = "h3".into();
        store.commit(&[batch(&a3)]).unwrap();
        cp.record(&[batch(&a3)]).unwrap();
        let heads = Checkpoint::open(&path).unwrap().heads();
        assert!(shortfall(&heads, &store).unwrap().is_empty());
        // ...then the store is rolled back to before it, and T-b is lost.
        let older = MemoryStore::default();
        older.commit(&[batch(&a)]).unwrap();
        assert_eq!(
            shortfall(&heads, &older).unwrap(),
            [
                "ticket T-a is behind: 2 of its 3 acknowledged events",
                "ticket T-b is missing (its trail had 0 events when acknowledged)"
            ]
        );
        // Resetting to what is left makes the next comparison clean.
        let cp = Checkpoint::open(&path).unwrap();
        cp.reset_to(&older).unwrap();
        let heads = Checkpoint::open(&path).unwrap().heads();
        assert!(shortfall(&heads, &older).unwrap().is_empty());
    }

    #[test]
    fn an_edited_or_missing_middle_line_is_refused_and_a_torn_last_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.jsonl");
        let cp = Checkpoint::open(&path).unwrap();
        for id in ["T-1", "T-2", "T-3"] {
            cp.record(&[batch(&ticket(id, TicketState::Pending))])
                .unwrap();
        }
        drop(cp);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let e = Checkpoint::open(&path).err().unwrap().to_string();
        assert!(e.contains("damaged at line 2"), "{e}");
        std::fs::write(
            &path,
            format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..10]),
        )
        .unwrap();
        assert_eq!(Checkpoint::open(&path).unwrap().heads().len(), 2);
    }
}
