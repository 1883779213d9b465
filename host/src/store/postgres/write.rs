//! The group commit's write: every batch of one commit in one transaction,
//! as multi-row statements, under the tickets' leases (a batch whose
//! lease is another worker's is refused, not written).

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use super::{creates, notify, pg, pool_err, witness};
use crate::error::Result;
use crate::store::parts;
use crate::store::record::encode;
use crate::store::{Batch, Refusal};
use crate::ticket::Ticket;

/// A ticket as its row: the summary columns and the sealed body.
pub(super) struct TicketRow {
    pub(super) id: String,
    pub(super) workflow: String,
    pub(super) subject: String,
    pub(super) state: &'static str,
    pub(super) requested_by: String,
    pub(super) batch: Option<String>,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
    pub(super) in_flight: bool,
    pub(super) body: Vec<u8>,
    pub(super) subject_key: String,
    /// The lease it is written under (0: unfenced).
    pub(super) fence: i64,
    /// Its trail's length, for the change announcement and the witness.
    pub(super) events: i64,
    /// Its trail's last hash, for the witness.
    pub(super) head_hash: String,
}

impl TicketRow {
    pub(super) fn of(t: &Ticket, fence: Option<i64>) -> Result<Self> {
        Ok(Self {
            id: t.id.clone(),
            workflow: t.workflow.clone(),
            subject: t.subject.clone(),
            state: t.state.as_str(),
            requested_by: t.requested_by.clone(),
            batch: t.batch.clone(),
            created_ms: t.created_ms as i64,
            updated_ms: t.updated_ms as i64,
            in_flight: !t.state.is_terminal(),
            body: encode(t)?,
            subject_key: crate::ticket::subject_key(&t.subject),
            fence: fence.unwrap_or(0),
            events: t.head.len as i64,
            head_hash: t.head.hash.clone(),
        })
    }
}

/// One commit's writes, encoded: the last version of each ticket (a group
/// may carry one ticket twice, and one statement cannot write a row twice),
/// and, by batch, every event, workflow and idempotency key (written only
/// for the batches whose tickets' fences held).
#[derive(Default)]
pub(super) struct Rows {
    pub(super) tickets: BTreeMap<String, TicketRow>,
    /// By batch: the batch's ticket ids and its other records.
    pub(super) batches: Vec<(Vec<String>, BatchRows)>,
}

#[derive(Default)]
pub(super) struct BatchRows {
    /// (workflow, subject key) of an exclusive create.
    pub(super) exclusive: Option<(String, String)>,
    /// (ticket, step, body).
    pub(super) steps: Vec<(String, String, Vec<u8>)>,
    /// (ticket, step, n, body).
    pub(super) attempts: Vec<(String, String, i64, Vec<u8>)>,
    pub(super) events: Vec<(String, i64, Vec<u8>)>,
    pub(super) workflows: Vec<(String, String, Vec<u8>)>,
    pub(super) idempotency: Vec<(String, String)>,
}

impl Rows {
    pub(super) fn of(batches: &[Batch]) -> Result<Self> {
        let mut rows = Rows::default();
        for b in batches {
            let mut ids = Vec::new();
            let mut other = BatchRows {
                exclusive: b.exclusive.clone(),
                ..BatchRows::default()
            };
            for w in &b.tickets {
                let t = &w.core;
                rows.tickets
                    .insert(t.id.clone(), TicketRow::of(t, b.fence)?);
                ids.push(t.id.clone());
                for (step, record) in &w.steps {
                    let row = parts::StepRowRef {
                        ticket: &t.id,
                        step,
                        record,
                        last: None,
                    };
                    other
                        .steps
                        .push((t.id.clone(), step.clone(), encode(&row)?));
                }
                for (step, attempt) in &w.attempts {
                    let row = parts::AttemptRowRef {
                        ticket: &t.id,
                        step,
                        attempt,
                    };
                    other.attempts.push((
                        t.id.clone(),
                        step.clone(),
                        i64::from(attempt.n),
                        encode(&row)?,
                    ));
                }
            }
            for e in &b.events {
                other
                    .events
                    .push((e.ticket_id.clone(), e.seq as i64, encode(e)?));
            }
            for (name, hash, wf) in &b.workflows {
                other
                    .workflows
                    .push((name.clone(), hash.clone(), encode(wf)?));
            }
            other.idempotency.extend(b.idempotency.iter().cloned());
            rows.batches.push((ids, other));
        }
        Ok(rows)
    }
}

/// Write `rows` in one transaction, one statement per kind of record
/// whatever the number of tickets (arrays, unnested). A batch another
/// worker's writes stand against writes nothing: one whose create lost a
/// race ([`creates`]), or whose ticket's fence is no longer its lease.
/// Those batches' indexes, and why.
pub(super) async fn write(
    pool: Pool,
    worker: String,
    ttl_ms: i64,
    mut rows: Rows,
) -> Result<Vec<(usize, Refusal)>> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg)?;
    let mut claimed = creates::claim(&tx, &rows.batches).await?;
    for i in claimed.refused.keys() {
        for id in &rows.batches[*i].0 {
            rows.tickets.remove(id);
        }
    }
    let mut landed = std::collections::HashSet::new();
    if !rows.tickets.is_empty() {
        let t: Vec<&TicketRow> = rows.tickets.values().collect();
        let ids: Vec<&str> = t.iter().map(|r| r.id.as_str()).collect();
        let workflows: Vec<&str> = t.iter().map(|r| r.workflow.as_str()).collect();
        let subjects: Vec<&str> = t.iter().map(|r| r.subject.as_str()).collect();
        let states: Vec<&str> = t.iter().map(|r| r.state).collect();
        let requested: Vec<&str> = t.iter().map(|r| r.requested_by.as_str()).collect();
        let batches: Vec<Option<&str>> = t.iter().map(|r| r.batch.as_deref()).collect();
        let created: Vec<i64> = t.iter().map(|r| r.created_ms).collect();
        let updated: Vec<i64> = t.iter().map(|r| r.updated_ms).collect();
        let flight: Vec<bool> = t.iter().map(|r| r.in_flight).collect();
        let bodies: Vec<&[u8]> = t.iter().map(|r| r.body.as_slice()).collect();
        let keys: Vec<&str> = t.iter().map(|r| r.subject_key.as_str()).collect();
        let fences: Vec<i64> = t.iter().map(|r| r.fence).collect();
        // A new ticket is inserted under its creator's lease; an existing
        // one is updated only while the fence is its lease's (an unfenced
        // write, fence 0, leaves the lease as it is, and a new unfenced
        // ticket is left for the first worker free).
        let statement = tx
            .prepare_cached(
                "INSERT INTO itsm.tickets
                   (id, workflow, subject, state, requested_by, batch, created_ms,
                    updated_ms, in_flight, body, subject_key, fence, owner, lease_until, wake_ms)
                 SELECT u.id, u.workflow, u.subject, u.state, u.requested_by, u.batch,
                    u.created_ms, u.updated_ms, u.in_flight, u.body, u.subject_key, u.fence,
                    CASE WHEN u.fence = 0 THEN NULL ELSE $13 END,
                    CASE WHEN u.fence = 0 THEN NULL
                         ELSE now() + $14::int8 * interval '1 millisecond' END,
                    CASE WHEN u.fence = 0 THEN 0 END
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::int8[], $8::int8[], $9::bool[], $10::bytea[], $11::text[],
                    $12::int8[])
                   AS u(id, workflow, subject, state, requested_by, batch, created_ms,
                        updated_ms, in_flight, body, subject_key, fence)
                 ON CONFLICT (id) DO UPDATE SET
                   workflow = EXCLUDED.workflow, subject = EXCLUDED.subject,
                   state = EXCLUDED.state, requested_by = EXCLUDED.requested_by,
                   batch = EXCLUDED.batch, created_ms = EXCLUDED.created_ms,
                   updated_ms = EXCLUDED.updated_ms, in_flight = EXCLUDED.in_flight,
                   body = EXCLUDED.body, subject_key = EXCLUDED.subject_key
                 WHERE EXCLUDED.fence = 0 OR itsm.tickets.fence = EXCLUDED.fence
                 RETURNING id",
            )
            .await
            .map_err(pg)?;
        let written = tx
            .query(
                &statement,
                &[
                    &ids, &workflows, &subjects, &states, &requested, &batches, &created, &updated,
                    &flight, &bodies, &keys, &fences, &worker, &ttl_ms,
                ],
            )
            .await
            .map_err(pg)?;
        landed.extend(written.iter().map(|r| r.get::<_, String>(0)));
        let changes: Vec<(&str, i64)> = t
            .iter()
            .filter(|r| landed.contains(&r.id))
            .map(|r| (r.id.as_str(), r.events))
            .collect();
        notify::announce(&tx, &changes).await?;
    }
    let mut kept = BatchRows::default();
    // The tickets of the batches that land (each row is its ticket's last
    // version in the group).
    let mut witnessed = std::collections::BTreeSet::new();
    for (i, (ids, other)) in rows.batches.into_iter().enumerate() {
        if claimed.refused.contains_key(&i) {
            continue;
        }
        if ids.iter().all(|id| landed.contains(id)) {
            witnessed.extend(ids.iter().cloned());
            kept.steps.extend(other.steps);
            kept.attempts.extend(other.attempts);
            kept.events.extend(other.events);
            kept.workflows.extend(other.workflows);
        } else {
            claimed.refused.insert(i, Refusal::Fenced);
        }
    }
    creates::unclaim(&tx, &claimed).await?;
    let heads: Vec<(&str, i64, &str)> = witnessed
        .iter()
        .filter_map(|id| rows.tickets.get(id))
        .map(|r| (r.id.as_str(), r.events, r.head_hash.as_str()))
        .collect();
    witness::record(&tx, &heads).await?;
    // One (name, hash) once: a statement writes a row once.
    kept.workflows
        .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    kept.workflows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    // A part written twice in one group: its last version.
    last_of_each(&mut kept.steps, |s| (s.0.clone(), s.1.clone(), 0));
    last_of_each(&mut kept.attempts, |a| (a.0.clone(), a.1.clone(), a.2));
    let rows = kept;
    if !rows.steps.is_empty() {
        let ids: Vec<&str> = rows.steps.iter().map(|s| s.0.as_str()).collect();
        let steps: Vec<&str> = rows.steps.iter().map(|s| s.1.as_str()).collect();
        let bodies: Vec<&[u8]> = rows.steps.iter().map(|s| s.2.as_slice()).collect();
        let statement = tx
            .prepare_cached(
                "INSERT INTO itsm.steps (ticket_id, step, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
                 ON CONFLICT (ticket_id, step) DO UPDATE SET body = EXCLUDED.body",
            )
            .await
            .map_err(pg)?;
        tx.execute(&statement, &[&ids, &steps, &bodies])
            .await
            .map_err(pg)?;
    }
    if !rows.attempts.is_empty() {
        let ids: Vec<&str> = rows.attempts.iter().map(|a| a.0.as_str()).collect();
        let steps: Vec<&str> = rows.attempts.iter().map(|a| a.1.as_str()).collect();
        let ns: Vec<i64> = rows.attempts.iter().map(|a| a.2).collect();
        let bodies: Vec<&[u8]> = rows.attempts.iter().map(|a| a.3.as_slice()).collect();
        let statement = tx
            .prepare_cached(
                "INSERT INTO itsm.attempts (ticket_id, step, n, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[])
                 ON CONFLICT (ticket_id, step, n) DO UPDATE SET body = EXCLUDED.body",
            )
            .await
            .map_err(pg)?;
        tx.execute(&statement, &[&ids, &steps, &ns, &bodies])
            .await
            .map_err(pg)?;
    }
    if !rows.events.is_empty() {
        let ids: Vec<&str> = rows.events.iter().map(|e| e.0.as_str()).collect();
        let seqs: Vec<i64> = rows.events.iter().map(|e| e.1).collect();
        let bodies: Vec<&[u8]> = rows.events.iter().map(|e| e.2.as_slice()).collect();
        // No ON CONFLICT: an event is never rewritten, so a second one at a
        // seq fails the whole commit rather than replacing history.
        let statement = tx
            .prepare_cached(
                "INSERT INTO itsm.events (ticket_id, seq, body)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[])",
            )
            .await
            .map_err(pg)?;
        tx.execute(&statement, &[&ids, &seqs, &bodies])
            .await
            .map_err(pg)?;
    }
    if !rows.workflows.is_empty() {
        let names: Vec<&str> = rows.workflows.iter().map(|w| w.0.as_str()).collect();
        let hashes: Vec<&str> = rows.workflows.iter().map(|w| w.1.as_str()).collect();
        let bodies: Vec<&[u8]> = rows.workflows.iter().map(|w| w.2.as_slice()).collect();
        // A (name, hash) is one content: pinning it again changes nothing.
        let statement = tx
            .prepare_cached(
                "INSERT INTO itsm.workflows (name, hash, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg)?;
        tx.execute(&statement, &[&names, &hashes, &bodies])
            .await
            .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)?;
    Ok(claimed.refused.into_iter().collect())
}

/// Keep only the last row of each key, in order (one statement writes a
/// row once).
pub(super) fn last_of_each<T, K: std::hash::Hash + Eq>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<T> = Vec::with_capacity(rows.len());
    for row in rows.drain(..).rev() {
        if seen.insert(key(&row)) {
            kept.push(row);
        }
    }
    kept.reverse();
    *rows = kept;
}
