//! The system trail: changes that belong to no ticket (a plugin installed,
//! a workflow changed), hash-chained like a ticket's trail under the
//! pseudo-ticket id `system`.
//!
//! On one server it is an append-only JSON-lines file in the home, fsynced
//! per event, with the chain head in a sidecar file so a cut-off tail
//! shows on verification. On a store several workers share it is one trail
//! for all of them, in the store ([`SystemTrail::shared`]): its events are
//! the store's events of the pseudo-ticket, appended by whichever worker
//! (a second append at one seq is refused, and the loser links again after
//! the winner), and its head a shared document, advanced after each
//! append, so a trail cut below it shows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::documents;
use crate::audit::{AuditEvent, ChainBreak, ChainHead, Draft, link, verify};
use crate::error::{Error, Result};
use crate::store::{Batch, Store};

/// The pseudo-ticket id of system events.
pub const SYSTEM: &str = "system";

/// The shared trail's head, as a document.
const HEAD_DOCUMENT: &str = "system-trail/head";

/// The system trail, in the home or in a shared store.
pub struct SystemTrail {
    place: Place,
}

enum Place {
    File {
        path: PathBuf,
        head_path: PathBuf,
        head: Mutex<ChainHead>,
    },
    Shared {
        store: Arc<dyn Store>,
        /// This worker's name, added to each event it appends.
        worker: String,
        /// One append at a time from this worker.
        lock: Mutex<()>,
    },
}

impl std::fmt::Debug for SystemTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.place {
            Place::File { path, .. } => write!(f, "SystemTrail({})", path.display()),
            Place::Shared { worker, .. } => write!(f, "SystemTrail(shared, as {worker})"),
        }
    }
}

impl SystemTrail {
    /// The trail every worker of `store` shares (a store with
    /// [`Store::documents`]); this worker's events name it as `worker`.
    pub fn shared(store: Arc<dyn Store>, worker: &str) -> Result<Self> {
        documents(store.as_ref())?;
        Ok(Self {
            place: Place::Shared {
                store,
                worker: worker.to_string(),
                lock: Mutex::new(()),
            },
        })
    }

    /// Open (or start) the trail at `path`; `path.head` keeps the head.
    pub fn open(path: &Path) -> Result<Self> {
        let head_path = path.with_extension("head");
        let head = match std::fs::read_to_string(&head_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::Store(format!("{}: {e}", head_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChainHead::default(),
            Err(source) => {
                return Err(Error::Io {
                    path: head_path,
                    source,
                });
            }
        };
        Ok(Self {
            place: Place::File {
                path: path.into(),
                head_path,
                head: Mutex::new(head),
            },
        })
    }

    /// Append one event, durably, and return it.
    pub fn append(&self, draft: Draft, at_ms: u64) -> Result<AuditEvent> {
        match &self.place {
            Place::File {
                path,
                head_path,
                head,
            } => append_to_file(path, head_path, head, draft, at_ms),
            Place::Shared {
                store,
                worker,
                lock,
            } => {
                let _one = lock.lock().expect("system trail lock");
                append_shared(store.as_ref(), worker, draft, at_ms)
            }
        }
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Result<Vec<AuditEvent>> {
        match &self.place {
            Place::File { path, .. } => file_events(path),
            Place::Shared { store, .. } => store.events(SYSTEM),
        }
    }

    /// The recorded head.
    pub fn head(&self) -> Result<ChainHead> {
        match &self.place {
            Place::File { head, .. } => Ok(head.lock().expect("system trail lock").clone()),
            Place::Shared { store, .. } => shared_head(store.as_ref()).map(|(h, _)| h),
        }
    }

    /// Check the whole trail against the head. A shared trail may run one
    /// event past its head (a worker stopped between its append and the
    /// head's advance): that is not loss, and the events past it must
    /// chain on as well.
    pub fn verify(&self) -> Result<std::result::Result<(), ChainBreak>> {
        let events = self.events()?;
        let head = self.head()?;
        if matches!(self.place, Place::File { .. }) {
            return Ok(verify(SYSTEM, &events, &head));
        }
        let len = head.len as usize;
        if events.len() < len || (len > 0 && events[len - 1].hash != head.hash) {
            return Ok(verify(SYSTEM, &events, &head));
        }
        Ok(verify(SYSTEM, &events, &head_of(&events)))
    }
}

/// The head that `events` end at.
fn head_of(events: &[AuditEvent]) -> ChainHead {
    ChainHead {
        len: events.len() as u64,
        hash: events.last().map(|e| e.hash.clone()).unwrap_or_default(),
    }
}

/// The shared head and its document version.
fn shared_head(store: &dyn Store) -> Result<(ChainHead, Option<i64>)> {
    let docs = documents(store)?;
    match docs.get(HEAD_DOCUMENT)? {
        Some((text, version)) => Ok((
            serde_json::from_str(&text)
                .map_err(|e| Error::Store(format!("{HEAD_DOCUMENT}: {e}")))?,
            Some(version),
        )),
        None => Ok((ChainHead::default(), None)),
    }
}

/// Append to the shared trail after its last event, linking again after
/// any worker that appended first, then advance the head (never back).
fn append_shared(store: &dyn Store, worker: &str, draft: Draft, at_ms: u64) -> Result<AuditEvent> {
    let mut draft = draft;
    if let Some(data) = draft.data.as_object_mut() {
        data.insert("worker".into(), worker.into());
    }
    let mut tries = 0;
    let event = loop {
        let before = store.events(SYSTEM)?;
        let mut head = head_of(&before);
        let event = link(SYSTEM, &mut head, at_ms, draft.clone());
        match store.commit(&[Batch {
            events: vec![event.clone()],
            ..Batch::default()
        }]) {
            Ok(()) => break event,
            // Another worker took this seq: link after its event.
            Err(_) if tries < 16 && store.events(SYSTEM)?.len() > before.len() => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let docs = documents(store)?;
    loop {
        let (head, version) = shared_head(store)?;
        if head.len > event.seq {
            break;
        }
        let next = ChainHead {
            len: event.seq + 1,
            hash: event.hash.clone(),
        };
        let text = serde_json::to_string(&next).expect("head serializes");
        if docs.put(HEAD_DOCUMENT, &text, version)? {
            break;
        }
    }
    Ok(event)
}

fn append_to_file(
    path: &Path,
    head_path: &Path,
    head: &Mutex<ChainHead>,
    draft: Draft,
    at_ms: u64,
) -> Result<AuditEvent> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut head = head.lock().expect("system trail lock");
    let mut next = head.clone();
    let event = link(SYSTEM, &mut next, at_ms, draft);
    let mut line = serde_json::to_string(&event).expect("event serializes");
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(line.as_bytes()).map_err(io(path))?;
    file.sync_data().map_err(io(path))?;
    let tmp = head_path.with_extension("head.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&next).expect("head serializes")).map_err(io(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_data())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, head_path).map_err(io(head_path))?;
    *head = next;
    Ok(event)
}

fn file_events(path: &Path) -> Result<Vec<AuditEvent>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Store(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditKind;
    use serde_json::json;

    #[test]
    fn appends_survive_reopening_and_a_cut_tail_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system-trail.jsonl");
        let trail = SystemTrail::open(&path).unwrap();
        for i in 0..3 {
            trail
                .append(
                    Draft::new(AuditKind::PluginInstalled, json!({ "i": i })).by("admin"),
                    1000,
                )
                .unwrap();
        }
        let reopened = SystemTrail::open(&path).unwrap();
        assert_eq!(reopened.events().unwrap().len(), 3);
        assert!(reopened.verify().unwrap().is_ok());
        let text = std::fs::read_to_string(&path).unwrap();
        let cut: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&path, cut.join("\n") + "\n").unwrap();
        assert!(
            reopened
                .verify()
                .unwrap()
                .unwrap_err()
                .reason
                .contains("tail")
        );
    }
}
