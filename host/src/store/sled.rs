//! The embedded default [`Store`], on sled: zero set-up, one directory.
//!
//! One tree, keys by prefix (so a batch is one atomic `apply_batch`):
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `t/` | ticket id | ticket JSON |
//! | `f/` | ticket id | empty: the in-flight index |
//! | `a/` | ticket id `/` seq (16 hex digits) | audit event JSON |
//! | `w/` | name `/` hash | workflow JSON |
//! | `i/` | idempotency key | ticket id |
//! | `k/` | plugin `\0` key | plugin value |
//!
//! Retired prefixes stay reserved: none yet.
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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Batch, Store};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// sled-backed store.
pub struct SledStore {
    db: sled::Db,
    durable: Durable,
}

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
    Error::Store(format!("cannot sync {}: {e}", path.display()))
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

fn err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Store(format!("corrupt {what} record: {e}")))
}

fn event_key(ticket: &str, seq: u64) -> String {
    format!("a/{ticket}/{seq:016x}")
}

impl SledStore {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            // We flush explicitly before acknowledging; the background
            // flusher only adds writes.
            .flush_every_ms(None)
            .open()
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", dir.display())))?;
        let durable = Durable::open(dir)?;
        Ok(Self { db, durable })
    }

    /// sled's flush, then the fsync it leaves out: on return the writes
    /// survive a power loss, not only a process crash.
    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(err)?;
        self.durable.sync()
    }
}

impl Store for SledStore {
    fn commit(&self, batches: &[Batch]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for b in batches {
            for t in &b.tickets {
                batch.insert(
                    format!("t/{}", t.id).as_bytes(),
                    serde_json::to_vec(t).map_err(err)?,
                );
                let flight = format!("f/{}", t.id);
                if t.state.is_terminal() {
                    batch.remove(flight.as_bytes());
                } else {
                    batch.insert(flight.as_bytes(), &[] as &[u8]);
                }
            }
            for e in &b.events {
                batch.insert(
                    event_key(&e.ticket_id, e.seq).as_bytes(),
                    serde_json::to_vec(e).map_err(err)?,
                );
            }
            for (name, hash, wf) in &b.workflows {
                batch.insert(
                    format!("w/{name}/{hash}").as_bytes(),
                    serde_json::to_vec(wf).map_err(err)?,
                );
            }
            for (k, id) in &b.idempotency {
                batch.insert(format!("i/{k}").as_bytes(), id.as_bytes());
            }
        }
        self.db.apply_batch(batch).map_err(err)?;
        self.flush()?;
        Ok(())
    }

    fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        match self.db.get(format!("t/{id}")).map_err(err)? {
            Some(v) => decode("ticket", &v).map(Some),
            None => Ok(None),
        }
    }

    fn tickets(&self) -> Result<Vec<Ticket>> {
        self.db
            .scan_prefix(b"t/")
            .map(|kv| {
                let (_, v) = kv.map_err(err)?;
                decode("ticket", &v)
            })
            .collect()
    }

    fn in_flight(&self) -> Result<Vec<String>> {
        self.db
            .scan_prefix(b"f/")
            .map(|kv| {
                let (k, _) = kv.map_err(err)?;
                Ok(String::from_utf8_lossy(&k[2..]).into_owned())
            })
            .collect()
    }

    fn events(&self, ticket_id: &str) -> Result<Vec<AuditEvent>> {
        self.db
            .scan_prefix(format!("a/{ticket_id}/").as_bytes())
            .map(|kv| {
                let (_, v) = kv.map_err(err)?;
                decode("audit event", &v)
            })
            .collect()
    }

    fn workflow_versions(&self, name: &str) -> Result<Vec<(String, Workflow)>> {
        let prefix = format!("w/{name}/");
        self.db
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(err)?;
                let hash = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((hash, decode("workflow", &v)?))
            })
            .collect()
    }

    fn workflow(&self, name: &str, hash: &str) -> Result<Option<Workflow>> {
        match self.db.get(format!("w/{name}/{hash}")).map_err(err)? {
            Some(v) => decode("workflow", &v).map(Some),
            None => Ok(None),
        }
    }

    fn idempotency(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .get(format!("i/{key}"))
            .map_err(err)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get(format!("k/{plugin}\0{key}"))
            .map_err(err)?
            .map(|v| v.to_vec()))
    }

    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.db
            .insert(format!("k/{plugin}\0{key}"), value)
            .map_err(err)?;
        self.flush()
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.db.remove(format!("k/{plugin}\0{key}")).map_err(err)?;
        self.flush()
    }
}
