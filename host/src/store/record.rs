//! Records as every engine stores them: sealed JSON, checked against the
//! key they are filed under. sled keys are these strings; PostgreSQL rows
//! name the same key in errors, so damage reads the same on either.

use super::seal::{corrupt, seal, unseal};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ticket::Ticket;

pub(crate) fn err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

/// A sealed JSON record at `key`, decoded.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    let payload = unseal(key, bytes)?;
    serde_json::from_slice(payload).map_err(|e| corrupt(key, &format!("it does not decode: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(seal(&serde_json::to_vec(value).map_err(err)?))
}

/// A ticket's key.
pub(crate) fn ticket_key(id: &str) -> String {
    format!("t/{id}")
}

/// A ticket whose key and content agree (a flipped byte in a key would
/// otherwise file one ticket under another's id).
pub(crate) fn decode_ticket(key: &[u8], bytes: &[u8]) -> Result<Ticket> {
    let t: Ticket = decode(key, bytes)?;
    if key.strip_prefix(b"t/") != Some(t.id.as_bytes()) {
        return Err(corrupt(key, &format!("it holds ticket {}", t.id)));
    }
    Ok(t)
}

pub(crate) fn decode_event(key: &[u8], bytes: &[u8]) -> Result<AuditEvent> {
    let e: AuditEvent = decode(key, bytes)?;
    if key != event_key(&e.ticket_id, e.seq).as_bytes() {
        return Err(corrupt(
            key,
            &format!("it holds event {} of {}", e.seq, e.ticket_id),
        ));
    }
    Ok(e)
}

/// An audit event's key: ticket, then seq in 16 hex digits (so keys sort
/// in seq order).
pub(crate) fn event_key(ticket: &str, seq: u64) -> String {
    format!("a/{ticket}/{seq:016x}")
}

/// A pinned workflow's key.
pub(crate) fn workflow_key(name: &str, hash: &str) -> String {
    format!("w/{name}/{hash}")
}
