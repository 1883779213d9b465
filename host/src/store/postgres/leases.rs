//! Ticket leases on PostgreSQL: the `owner`, `fence`, `lease_until` and
//! `wake_ms` columns of `itsm.tickets` (migration 2), and `wants_plugins`
//! (migration 6).
//!
//! Lease expiry is judged by the database's clock (`now()`), so workers'
//! clocks need not agree; wakes are the host's instants (ms since the
//! epoch), as the scheduler computes them. Looking for work reads two
//! partial indexes (released tickets by wake, leases by expiry) and skips
//! rows another worker is taking (`FOR UPDATE SKIP LOCKED`): no worker scans
//! every ticket, and no two take the same one.

use std::time::Duration;

use super::{PgStore, pg, pool_err};
use crate::error::Result;
use crate::store::Leases;

/// Fencing tokens taken per round trip for new tickets.
const FENCE_BLOCK: i64 = 64;

impl PgStore {
    fn ttl_ms(&self) -> i64 {
        self.lease.ttl.as_millis() as i64
    }
}

impl Leases for PgStore {
    fn worker(&self) -> &str {
        &self.lease.worker
    }

    fn ttl(&self) -> Duration {
        self.lease.ttl
    }

    fn fence_for_new(&self) -> Result<i64> {
        // Creation is a hot path: take tokens a block at a time, one round
        // trip per FENCE_BLOCK creations. They need only be unique.
        let mut spare = self.spare_fences.lock().expect("fence lock");
        if spare.is_empty() {
            let rows = self.query(
                "take fencing tokens",
                "SELECT nextval('itsm.fences') FROM generate_series(1, $1::int8)",
                vec![Box::new(FENCE_BLOCK)],
            )?;
            spare.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        Ok(spare.pop().expect("a block was just taken"))
    }

    fn acquire(&self, id: &str) -> Result<Option<i64>> {
        // Ours to take: nobody's, this worker's own (no driver has it
        // here, or the caller would not ask), a lease that ran out, or a
        // ticket at rest (a retry may reopen it).
        let rows = self.query(
            "take a ticket's lease",
            "UPDATE itsm.tickets SET owner = $2, fence = nextval('itsm.fences'),
                 lease_until = now() + $3::int8 * interval '1 millisecond', wake_ms = NULL,
                 wants_plugins = NULL
             WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until < now()
                                OR NOT in_flight)
             RETURNING fence",
            vec![
                Box::new(id.to_string()),
                Box::new(self.lease.worker.clone()),
                Box::new(self.ttl_ms()),
            ],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lacking: &[String],
    ) -> Result<Vec<(String, i64)>> {
        let worker = self.lease.worker.clone();
        let ttl_ms = self.ttl_ms();
        let lacking = lacking.to_vec();
        self.run("look for due tickets", move |pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let statement = client
                .prepare_cached(
                    "WITH released AS (
                         SELECT id FROM itsm.tickets
                         WHERE in_flight AND owner IS NULL AND wake_ms <= $1
                           AND (coalesce(cardinality(wants_plugins), 0) = 0
                                OR NOT wants_plugins <@ $5::text[])
                         ORDER BY wake_ms LIMIT $2 FOR UPDATE SKIP LOCKED
                     ), lapsed AS (
                         SELECT id FROM itsm.tickets
                         WHERE in_flight AND owner IS NOT NULL AND lease_until < now()
                         ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED
                     )
                     UPDATE itsm.tickets t SET owner = $3, fence = nextval('itsm.fences'),
                         lease_until = now() + $4::int8 * interval '1 millisecond', wake_ms = NULL,
                         wants_plugins = NULL
                     WHERE t.id IN (SELECT id FROM released UNION SELECT id FROM lapsed)
                     RETURNING t.id, t.fence",
                )
                .await
                .map_err(pg)?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &(now_ms as i64),
                        &(limit as i64),
                        &worker,
                        &ttl_ms,
                        &lacking,
                    ],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn reclaim_own(&self) -> Result<Vec<(String, i64)>> {
        Ok(self
            .query(
                "take back this worker's tickets",
                "UPDATE itsm.tickets SET fence = nextval('itsm.fences'),
                     lease_until = now() + $2::int8 * interval '1 millisecond', wake_ms = NULL,
                     wants_plugins = NULL
                 WHERE in_flight AND owner = $1
                 RETURNING id, fence",
                vec![Box::new(self.lease.worker.clone()), Box::new(self.ttl_ms())],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn release(&self, id: &str, fence: i64, wake_ms: Option<u64>, wants: &[String]) -> Result<()> {
        self.execute(
            "release a ticket",
            "UPDATE itsm.tickets SET owner = NULL, lease_until = NULL, wake_ms = $3,
                 wants_plugins = $4
             WHERE id = $1 AND fence = $2",
            vec![
                Box::new(id.to_string()),
                Box::new(fence),
                Box::new(wake_ms.map(|w| w as i64)),
                Box::new((!wants.is_empty()).then(|| wants.to_vec())),
            ],
        )
        .map(drop)
    }

    fn release_all(&self, now_ms: u64) -> Result<usize> {
        self.execute(
            "release this worker's tickets",
            "UPDATE itsm.tickets SET owner = NULL, lease_until = NULL, wake_ms = $2
             WHERE owner = $1 AND in_flight",
            vec![Box::new(self.lease.worker.clone()), Box::new(now_ms as i64)],
        )
        .map(|n| n as usize)
    }

    fn renew(&self, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .query(
                "renew leases",
                "UPDATE itsm.tickets SET lease_until = now() + $3::int8 * interval '1 millisecond'
                 WHERE owner = $1 AND id = ANY($2)
                 RETURNING id",
                vec![
                    Box::new(self.lease.worker.clone()),
                    Box::new(ids.to_vec()),
                    Box::new(self.ttl_ms()),
                ],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn open_for(&self, workflow: &str, subject_key: &str) -> Result<Option<String>> {
        Ok(self
            .query(
                "look for an open ticket",
                "SELECT id FROM itsm.tickets
                 WHERE in_flight AND workflow = $1 AND subject_key = $2
                 ORDER BY id LIMIT 1",
                vec![
                    Box::new(workflow.to_string()),
                    Box::new(subject_key.to_string()),
                ],
            )?
            .first()
            .map(|r| r.get(0)))
    }
}
