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

use std::path::Path;

use super::{Batch, Store};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// sled-backed store.
pub struct SledStore {
    db: sled::Db,
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
        Ok(Self { db })
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
        self.db.flush().map_err(err)?;
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
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.db.remove(format!("k/{plugin}\0{key}")).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64)> {
        let prefix = format!("k/{plugin}\0");
        let mut usage = (0, 0);
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(err)?;
            usage.0 += 1;
            usage.1 += (k.len() - prefix.len() + v.len()) as u64;
        }
        Ok(usage)
    }
}
