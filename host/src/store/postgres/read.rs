//! Reads: a ticket's records from one snapshot, listing rows, and the
//! filters of a listing.

use std::collections::HashMap;

use super::{Param, PgStore, pg, pool_err, refs};
use crate::error::Result;
use crate::store::parts::{AttemptRow, OfTicket, StepRow, attempt_key, step_key};
use crate::store::record::{decode_attempt, decode_step, ticket_key};
use crate::store::seal::corrupt;
use crate::store::{Listing, TicketSummary};
use crate::ticket::TicketState;

/// Part records grouped by their ticket, each group in order.
pub(super) fn by_ticket<T: OfTicket>(rows: Vec<T>) -> HashMap<String, Vec<T>> {
    let mut by = HashMap::<String, Vec<T>>::new();
    for row in rows {
        by.entry(row.ticket().to_string()).or_default().push(row);
    }
    by
}

/// The rows of ticket `id` (`None`: of every ticket), read from one
/// snapshot.
pub(super) struct Snapshot {
    /// `(id, body)` of each ticket, in id order.
    pub(super) cores: Vec<(String, Vec<u8>)>,
    pub(super) steps: Vec<StepRow>,
    pub(super) attempts: Vec<AttemptRow>,
}

impl PgStore {
    /// The core, step and attempt records of ticket `id` (`None`: of every
    /// ticket), in key order.
    ///
    /// They are read in one read-only `REPEATABLE READ` transaction, so
    /// from one snapshot: read one statement at a time, a commit landing
    /// between them would give the core of one commit (its trail head)
    /// with the steps of the next.
    pub(super) fn snapshot(&self, id: Option<&str>) -> Result<Snapshot> {
        let (cores_sql, steps_sql, attempts_sql, params): (_, _, _, Vec<Param>) = match id {
            Some(id) => (
                "SELECT id, body FROM itsm.tickets WHERE id = $1",
                "SELECT ticket_id, step, body FROM itsm.steps WHERE ticket_id = $1
                 ORDER BY step",
                "SELECT ticket_id, step, n, body FROM itsm.attempts WHERE ticket_id = $1
                 ORDER BY step, n",
                vec![Box::new(id.to_string())],
            ),
            None => (
                "SELECT id, body FROM itsm.tickets ORDER BY id",
                "SELECT ticket_id, step, body FROM itsm.steps ORDER BY ticket_id, step",
                "SELECT ticket_id, step, n, body FROM itsm.attempts ORDER BY ticket_id, step, n",
                Vec::new(),
            ),
        };
        let rows = self.run("read tickets", move |pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let mut rows = Vec::with_capacity(3);
            for sql in [cores_sql, steps_sql, attempts_sql] {
                let statement = tx.prepare_cached(sql).await.map_err(pg)?;
                rows.push(tx.query(&statement, &refs(&params)).await.map_err(pg)?);
            }
            tx.commit().await.map_err(pg)?;
            Ok(rows)
        })?;
        let [cores, steps, attempts]: [Vec<tokio_postgres::Row>; 3] =
            rows.try_into().expect("three statements, three answers");
        Ok(Snapshot {
            cores: cores.iter().map(|r| (r.get(0), r.get(1))).collect(),
            steps: steps
                .iter()
                .map(|r| decode_step(step_key(r.get(0), r.get(1)).as_bytes(), r.get(2)))
                .collect::<Result<Vec<_>>>()?,
            attempts: attempts
                .iter()
                .map(|r| {
                    let key = attempt_key(r.get(0), r.get(1), r.get::<_, i64>(2) as u32);
                    decode_attempt(key.as_bytes(), r.get(3))
                })
                .collect::<Result<Vec<_>>>()?,
        })
    }
}

pub(super) fn summary(row: &tokio_postgres::Row) -> Result<TicketSummary> {
    let id: String = row.get(0);
    let state: String = row.get(3);
    Ok(TicketSummary {
        state: parse_state(&id, &state)?,
        id,
        workflow: row.get(1),
        subject: row.get(2),
        requested_by: row.get(4),
        batch: row.get(5),
        created_ms: row.get::<_, i64>(6) as u64,
        updated_ms: row.get::<_, i64>(7) as u64,
    })
}

pub(super) fn parse_state(id: &str, state: &str) -> Result<TicketState> {
    serde_json::from_value(serde_json::Value::String(state.to_string())).map_err(|_| {
        corrupt(
            ticket_key(id).as_bytes(),
            &format!("its state column holds `{state}`, which is no ticket state"),
        )
    })
}

/// The WHERE clause and parameters of a listing's filters (and, with
/// `cursor`, its keyset cursor).
pub(super) fn filters(q: &Listing, cursor: bool) -> (String, Vec<Param>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let mut push = |clause: &str, p: Param| {
        params.push(p);
        clauses.push(clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(v) = &q.subject {
        push("subject = ?", Box::new(v.clone()));
    }
    if let Some(v) = &q.batch {
        push("batch = ?", Box::new(v.clone()));
    }
    if let Some(v) = &q.workflow {
        push("workflow = ?", Box::new(v.clone()));
    }
    if let Some(v) = q.state {
        push("state = ?", Box::new(v.as_str()));
    }
    if let Some(v) = q.created_from_ms {
        push("created_ms >= ?", Box::new(v as i64));
    }
    if let Some(v) = q.created_before_ms {
        push("created_ms < ?", Box::new(v as i64));
    }
    if cursor && let Some(after) = &q.after {
        let clause = if q.newest_first { "id < ?" } else { "id > ?" };
        push(clause, Box::new(after.clone()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (sql, params)
}
