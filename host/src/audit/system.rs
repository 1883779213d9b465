//! The system trail: changes that belong to no ticket (a plugin installed,
//! a workflow changed), hash-chained like a ticket's trail under the
//! pseudo-ticket id `system`.
//!
//! It is an append-only JSON-lines file, fsynced per event, with the chain
//! head in a sidecar file so a cut-off tail shows on verification.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{AuditEvent, ChainHead, Draft, link, verify};
use crate::error::{Error, Result};

/// The pseudo-ticket id of system events.
pub const SYSTEM: &str = "system";

/// The file-backed system trail.
#[derive(Debug)]
pub struct SystemTrail {
    path: PathBuf,
    head_path: PathBuf,
    head: Mutex<ChainHead>,
}

impl SystemTrail {
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
            path: path.into(),
            head_path,
            head: Mutex::new(head),
        })
    }

    /// Append one event, durably, and return it.
    pub fn append(&self, draft: Draft, at_ms: u64) -> Result<AuditEvent> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let mut head = self.head.lock().expect("system trail lock");
        let mut next = head.clone();
        let event = link(SYSTEM, &mut next, at_ms, draft);
        let mut line = serde_json::to_string(&event).expect("event serializes");
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        file.write_all(line.as_bytes()).map_err(io(&self.path))?;
        file.sync_data().map_err(io(&self.path))?;
        let tmp = self.head_path.with_extension("head.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&next).expect("head serializes"))
            .map_err(io(&tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_data())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.head_path).map_err(io(&self.head_path))?;
        *head = next;
        Ok(event)
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Result<Vec<AuditEvent>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    Error::Store(format!("{} line {}: {e}", self.path.display(), i + 1))
                })
            })
            .collect()
    }

    /// The recorded head.
    pub fn head(&self) -> ChainHead {
        self.head.lock().expect("system trail lock").clone()
    }

    /// Check the whole file against the head.
    pub fn verify(&self) -> Result<std::result::Result<(), super::ChainBreak>> {
        Ok(verify(SYSTEM, &self.events()?, &self.head()))
    }
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
