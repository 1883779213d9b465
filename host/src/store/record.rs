//! Records as every engine stores them: sealed JSON, checked against the
//! key they are filed under. sled keys are these strings; PostgreSQL rows
//! name the same key in errors, so damage reads the same on either.

use std::collections::HashMap;

use super::Damage;
use super::parts::{AttemptRow, StepRow, attempt_key, put_attempt, put_steps, step_key};
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

/// The events of one record, filed under the first one's key: a run of
/// one ticket's events with consecutive seqs, as one transition appended
/// them (a JSON array), or one event (a JSON object), as records were
/// written before events were grouped. A run that does not start at its
/// key's seq, names another ticket or skips a seq is damage.
pub(crate) fn decode_events(key: &[u8], bytes: &[u8]) -> Result<Vec<AuditEvent>> {
    let payload = unseal(key, bytes)?;
    if payload.first() != Some(&b'[') {
        return decode_event(key, bytes).map(|e| vec![e]);
    }
    let events: Vec<AuditEvent> = serde_json::from_slice(payload)
        .map_err(|e| corrupt(key, &format!("it does not decode: {e}")))?;
    let Some(first) = events.first() else {
        return Err(corrupt(key, "it holds no events"));
    };
    if key != event_key(&first.ticket_id, first.seq).as_bytes() {
        return Err(corrupt(
            key,
            &format!("it holds events from {} of {}", first.seq, first.ticket_id),
        ));
    }
    for pair in events.windows(2) {
        if pair[1].ticket_id != first.ticket_id || pair[1].seq != pair[0].seq + 1 {
            return Err(corrupt(
                key,
                &format!(
                    "after seq {} of {} it holds seq {} of {}, not seq {}",
                    pair[0].seq,
                    first.ticket_id,
                    pair[1].seq,
                    pair[1].ticket_id,
                    pair[0].seq + 1
                ),
            ));
        }
    }
    Ok(events)
}

/// `events` cut into runs of one ticket's consecutive events, each run
/// to be filed as one record ([`decode_events`]).
pub(crate) fn event_runs(events: &[AuditEvent]) -> impl Iterator<Item = &[AuditEvent]> {
    events.chunk_by(|a, b| a.ticket_id == b.ticket_id && b.seq == a.seq + 1)
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

/// A step record whose key and content agree.
pub(crate) fn decode_step(key: &[u8], bytes: &[u8]) -> Result<StepRow> {
    let r: StepRow = decode(key, bytes)?;
    if key != step_key(&r.ticket, &r.step).as_bytes() {
        return Err(corrupt(
            key,
            &format!("it holds step {} of {}", r.step, r.ticket),
        ));
    }
    Ok(r)
}

/// An attempt record whose key and content agree.
pub(crate) fn decode_attempt(key: &[u8], bytes: &[u8]) -> Result<AttemptRow> {
    let r: AttemptRow = decode(key, bytes)?;
    if key != attempt_key(&r.ticket, &r.step, r.attempt.n).as_bytes() {
        return Err(corrupt(
            key,
            &format!(
                "it holds attempt {} of step {} of {}",
                r.attempt.n, r.step, r.ticket
            ),
        ));
    }
    Ok(r)
}

/// The tickets that read back whole from their cores and parts (each
/// list in key order); every part that fits no ticket is `damage`, and so
/// is a part of a ticket that is not `stored` at all (the parts of one
/// whose core is damaged are left to that damage).
pub(crate) fn check_parts(
    cores: Vec<Ticket>,
    mut steps: HashMap<String, Vec<StepRow>>,
    mut attempts: HashMap<String, Vec<AttemptRow>>,
    stored: &dyn Fn(&str) -> bool,
    damage: &mut Vec<Damage>,
) -> Vec<Ticket> {
    let mut whole = Vec::new();
    for mut t in cores {
        let rows = steps.remove(&t.id).unwrap_or_default();
        let lasts = put_steps(&mut t, rows);
        let mut intact = true;
        for row in attempts.remove(&t.id).unwrap_or_default() {
            let key = attempt_key(&row.ticket, &row.step, row.attempt.n);
            if let Err(e) = put_attempt(&mut t, &row.step, row.attempt) {
                intact = false;
                damage.push(Damage {
                    key,
                    problem: e.to_string(),
                });
            }
        }
        for (step, last) in lasts {
            let key = step_key(&t.id, &step);
            if let Err(e) = put_attempt(&mut t, &step, last) {
                intact = false;
                damage.push(Damage {
                    key,
                    problem: e.to_string(),
                });
            }
        }
        if intact {
            whole.push(t);
        }
    }
    let orphans = steps
        .into_values()
        .flatten()
        .filter(|r| !stored(&r.ticket))
        .map(|r| step_key(&r.ticket, &r.step))
        .chain(
            attempts
                .into_values()
                .flatten()
                .filter(|r| !stored(&r.ticket))
                .map(|r| attempt_key(&r.ticket, &r.step, r.attempt.n)),
        );
    for key in orphans {
        let problem = corrupt(key.as_bytes(), "its ticket is not stored").to_string();
        damage.push(Damage { key, problem });
    }
    whole
}
