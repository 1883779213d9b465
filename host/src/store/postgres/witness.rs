//! The completeness witness on PostgreSQL (`itsm.witness`, migration 5):
//! each ticket's trail head as its last acknowledged commit left it, kept
//! in that commit's transaction ([`crate::store::Witness`]).

use deadpool_postgres::{Pool, Transaction};
use serde::Deserialize;

use super::{PgStore, pg, pool_err};
use crate::audit::ChainHead;
use crate::error::Result;
use crate::store::Witness;
use crate::store::checkpoint::behind;
use crate::store::record::{decode, ticket_key};

/// Rows read per query, so a check's memory stays flat however many
/// tickets there are.
const PAGE: i64 = 1000;

/// The part of a ticket's row the witness reads.
#[derive(Deserialize)]
struct Head {
    head: ChainHead,
}

fn head_of(id: &str, body: &[u8]) -> Result<ChainHead> {
    decode::<Head>(ticket_key(id).as_bytes(), body).map(|h| h.head)
}

/// Witness the heads (ticket, events, hash) a commit wrote, in its
/// transaction. A trail only grows, so a head shorter than the one
/// witnessed leaves the witness as it is: the shortfall stays in sight.
pub(super) async fn record(tx: &Transaction<'_>, heads: &[(&str, i64, &str)]) -> Result<()> {
    if heads.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = heads.iter().map(|h| h.0).collect();
    let lens: Vec<i64> = heads.iter().map(|h| h.1).collect();
    let hashes: Vec<&str> = heads.iter().map(|h| h.2).collect();
    let statement = tx
        .prepare_cached(
            "INSERT INTO itsm.witness (ticket_id, len, hash)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])
             ON CONFLICT (ticket_id) DO UPDATE SET len = EXCLUDED.len, hash = EXCLUDED.hash
             WHERE itsm.witness.len <= EXCLUDED.len",
        )
        .await
        .map_err(pg)?;
    tx.execute(&statement, &[&ids, &lens, &hashes])
        .await
        .map_err(pg)?;
    Ok(())
}

/// Witness every ticket already stored, inside the migration that creates
/// the witness: a database upgraded to it starts with its tickets covered.
pub(super) async fn seed(tx: &Transaction<'_>) -> Result<u64> {
    let mut after = String::new();
    let mut seeded = 0;
    loop {
        let rows = tx
            .query(
                "SELECT id, body FROM itsm.tickets WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &PAGE],
            )
            .await
            .map_err(pg)?;
        let Some(last) = rows.last() else {
            return Ok(seeded);
        };
        after = last.get(0);
        let heads = rows
            .iter()
            .map(|r| {
                let id: &str = r.get(0);
                let head = head_of(id, r.get(1))?;
                Ok((id, head.len as i64, head.hash))
            })
            .collect::<Result<Vec<_>>>()?;
        let borrowed: Vec<(&str, i64, &str)> =
            heads.iter().map(|(i, l, h)| (*i, *l, h.as_str())).collect();
        record(tx, &borrowed).await?;
        seeded += heads.len() as u64;
    }
}

/// One witnessed ticket the stored tickets fall short of: its id, what is
/// wrong, and what accepting it writes: the ticket's head now (`None`: the
/// ticket is gone, and so is its witness); nothing for a damaged row,
/// which accepting a loss does not mend.
struct Short {
    id: String,
    problem: String,
    accept: Option<Option<ChainHead>>,
}

/// Every witnessed ticket the stored tickets fall short of, read a page at
/// a time.
async fn shortfall(pool: Pool) -> Result<Vec<Short>> {
    let client = pool.get().await.map_err(pool_err)?;
    let statement = client
        .prepare_cached(
            "SELECT w.ticket_id, w.len, w.hash, t.body
             FROM itsm.witness w LEFT JOIN itsm.tickets t ON t.id = w.ticket_id
             WHERE w.ticket_id > $1 ORDER BY w.ticket_id LIMIT $2",
        )
        .await
        .map_err(pg)?;
    let mut after = String::new();
    let mut short = Vec::new();
    loop {
        let rows = client
            .query(&statement, &[&after, &PAGE])
            .await
            .map_err(pg)?;
        let Some(last) = rows.last() else {
            return Ok(short);
        };
        after = last.get(0);
        for r in &rows {
            let id: String = r.get(0);
            let len: i64 = r.get(1);
            let hash: &str = r.get(2);
            let stored = match r.get::<_, Option<&[u8]>>(3) {
                None => None,
                Some(body) => match head_of(&id, body) {
                    Ok(head) => Some(head),
                    // Damage, which `itsm store check` names by key.
                    Err(e) => {
                        short.push(Short {
                            id,
                            problem: e.to_string(),
                            accept: None,
                        });
                        continue;
                    }
                },
            };
            let now = stored.as_ref().map(|h| (h.len, h.hash.as_str()));
            if let Some(problem) = behind(&id, (len as u64, hash), now) {
                short.push(Short {
                    id,
                    problem,
                    accept: Some(stored),
                });
            }
        }
    }
}

impl Witness for PgStore {
    fn shortfall(&self) -> Result<Vec<String>> {
        let short = self.run("compare the tickets with the witness", shortfall)?;
        Ok(short.into_iter().map(|s| s.problem).collect())
    }

    fn accept(&self) -> Result<usize> {
        self.run("accept the tickets as witnessed", |pool| async move {
            let short = shortfall(pool.clone()).await?;
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg)?;
            let mut changed = 0;
            for s in &short {
                let Some(stored) = &s.accept else { continue };
                changed += 1;
                match stored {
                    Some(head) => {
                        tx.execute(
                            "UPDATE itsm.witness SET len = $2, hash = $3 WHERE ticket_id = $1",
                            &[&s.id, &(head.len as i64), &head.hash],
                        )
                        .await
                        .map_err(pg)?;
                    }
                    None => {
                        tx.execute("DELETE FROM itsm.witness WHERE ticket_id = $1", &[&s.id])
                            .await
                            .map_err(pg)?;
                    }
                }
            }
            tx.commit().await.map_err(pg)?;
            Ok(changed)
        })
    }
}
