//! Creates that race across workers: the same idempotency key, or a second
//! open ticket for one subject, made on two workers at the same moment.
//!
//! On one worker the scheduler's own locks serialise such creates. Across
//! workers only the database sees both, so a group commit settles them
//! inside its transaction, before it writes any ticket: an exclusive
//! create ([`crate::store::Batch::exclusive`]) takes a transaction lock on its subject
//! and looks for an open ticket, and an idempotency key is inserted only
//! if no one holds it. The loser's batch is refused, naming the winner's
//! key or ticket, and its creator answers with that ticket or a 409.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::Transaction;
use sha2::Digest;

use super::pg;
use super::write::BatchRows;
use crate::error::Result;
use crate::store::Refusal;

/// The first key of the subject locks' advisory locks ("itsm"): the
/// two-key form, apart from the migrations' one-key lock.
const SUBJECT_LOCKS: i32 = 0x6974_736d;

/// A subject's lock: four bytes of a hash of (workflow, subject key). Two
/// subjects that share one only wait for each other.
fn lock_of(workflow: &str, subject_key: &str) -> i32 {
    let digest = sha2::Sha256::digest(format!("{workflow}\0{subject_key}"));
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// What [`claim`] settled: the batches refused, and the idempotency keys
/// it inserted, by batch, to take back from a batch refused later.
pub(super) struct Claimed {
    pub refused: BTreeMap<usize, Refusal>,
    pub keys: Vec<(usize, String, String)>,
}

/// Settle a group's creates: each batch of `batches` (by index: its
/// ticket ids and records) that creates an exclusive ticket for a subject
/// with an open one, or claims a key another ticket holds, is refused.
pub(super) async fn claim(
    tx: &Transaction<'_>,
    batches: &[(Vec<String>, BatchRows)],
) -> Result<Claimed> {
    let mut refused = BTreeMap::new();
    // Exclusive creates: the first of a group for a subject stands
    // against the rest of the group.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, (_, rows)) in batches.iter().enumerate() {
        let Some((workflow, subject)) = &rows.exclusive else {
            continue;
        };
        match first.get(&(workflow.as_str(), subject.as_str())) {
            Some(&winner) => {
                let id = batches[winner].0.first().cloned().unwrap_or_default();
                refused.insert(i, Refusal::SubjectOpen(id));
            }
            None => {
                first.insert((workflow, subject), i);
            }
        }
    }
    if !first.is_empty() {
        // Locks in one order on every worker, so two groups cannot each
        // hold one the other waits for.
        let mut locks: Vec<i32> = first.keys().map(|(w, s)| lock_of(w, s)).collect();
        locks.sort_unstable();
        locks.dedup();
        tx.query(
            "SELECT pg_advisory_xact_lock($1::int4, k)
             FROM (SELECT k FROM unnest($2::int4[]) AS k ORDER BY k) AS ordered",
            &[&SUBJECT_LOCKS, &locks],
        )
        .await
        .map_err(pg)?;
        // Under the locks, a statement sees every open ticket committed
        // before it, however recently.
        let (workflows, subjects): (Vec<&str>, Vec<&str>) = first.keys().copied().unzip();
        let open = tx
            .query(
                "SELECT u.workflow, u.subject_key, min(t.id)
                 FROM unnest($1::text[], $2::text[]) AS u(workflow, subject_key)
                 JOIN itsm.tickets t
                   ON t.in_flight AND t.workflow = u.workflow AND t.subject_key = u.subject_key
                 GROUP BY u.workflow, u.subject_key",
                &[&workflows, &subjects],
            )
            .await
            .map_err(pg)?;
        for row in &open {
            let key = (row.get::<_, &str>(0), row.get::<_, &str>(1));
            if let Some(&i) = first.get(&key) {
                refused.insert(i, Refusal::SubjectOpen(row.get(2)));
            }
        }
    }
    // Idempotency keys, for the batches still standing: a key goes to the
    // first to insert it; a key already held refuses its batch.
    let mut claims: Vec<(usize, &str, &str)> = Vec::new();
    for (i, (_, rows)) in batches.iter().enumerate() {
        if !refused.contains_key(&i) {
            claims.extend(
                rows.idempotency
                    .iter()
                    .map(|(k, id)| (i, k.as_str(), id.as_str())),
            );
        }
    }
    let mut keys = Vec::new();
    if !claims.is_empty() {
        let ks: Vec<&str> = claims.iter().map(|c| c.1).collect();
        let ids: Vec<&str> = claims.iter().map(|c| c.2).collect();
        let won: HashSet<(String, String)> = tx
            .query(
                "INSERT INTO itsm.idempotency (key, ticket_id)
                 SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT DO NOTHING
                 RETURNING key, ticket_id",
                &[&ks, &ids],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (i, key, id) in claims {
            if won.contains(&(key.to_string(), id.to_string())) {
                keys.push((i, key.to_string(), id.to_string()));
            } else {
                refused
                    .entry(i)
                    .or_insert_with(|| Refusal::KeyTaken(key.to_string()));
            }
        }
    }
    Ok(Claimed { refused, keys })
}

/// Take back the keys [`claim`] inserted for batches refused since (by a
/// later key of their own, or by their fence).
pub(super) async fn unclaim(tx: &Transaction<'_>, claimed: &Claimed) -> Result<()> {
    let (keys, ids): (Vec<&str>, Vec<&str>) = claimed
        .keys
        .iter()
        .filter(|(i, _, _)| claimed.refused.contains_key(i))
        .map(|(_, k, id)| (k.as_str(), id.as_str()))
        .unzip();
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM itsm.idempotency i
         USING unnest($1::text[], $2::text[]) AS u(key, ticket_id)
         WHERE i.key = u.key AND i.ticket_id = u.ticket_id",
        &[&keys, &ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
