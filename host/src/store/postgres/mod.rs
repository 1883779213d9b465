//! The scale-out [`Store`], on PostgreSQL: many `itsm serve` workers, one
//! database (`itsm serve --store postgres://...`).
//!
//! One table per kind of record, in the `itsm` schema (see
//! `migrations/`), created and upgraded at start-up by [`migrate`]. Ticket,
//! event and workflow bodies are the same sealed JSON sled keeps, so a
//! damaged row reads as "corrupt record t/T-..." on either engine.
//!
//! Durability: a [`Store::commit`] is one transaction, acknowledged once
//! PostgreSQL has flushed its WAL. Every connection is opened with
//! `synchronous_commit=on`, whatever the server's default, and a server
//! running with `fsync = off` is refused at open.
//!
//! The trait is synchronous (sled's calls are) and callers run on the
//! API's and scheduler's tokio threads, where a nested `block_on` would
//! panic. So the store keeps its own small runtime with the connection
//! pool (deadpool) on it; each call is spawned there and the caller waits
//! for the answer, as it waits for sled's fsync.

mod creates;
mod documents;
mod leases;
mod migrate;
mod notify;
mod witness;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use super::parts::{self, AttemptRow, OfTicket, StepRow, assemble, attempt_key, step_key};
use super::record::{
    check_parts, decode, decode_attempt, decode_event, decode_step, decode_ticket, encode,
    event_key, ticket_key, workflow_key,
};
use super::seal::corrupt;
use super::{Batch, Checked, Damage, LeaseConfig, Listing, Page, Refusal, Store, TicketSummary};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ticket::{Ticket, TicketState};
use crate::workflow::Workflow;

/// Whether `location` names a PostgreSQL database.
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// PostgreSQL-backed store.
pub struct PgStore {
    pool: Pool,
    /// The runtime the pool lives on (taken on drop, which may happen on
    /// an async thread, where a runtime cannot be dropped in place).
    runtime: Option<tokio::runtime::Runtime>,
    /// The database, for messages: host, port and name, never the password.
    target: String,
    /// This worker's name and lease length.
    lease: LeaseConfig,
    /// Fencing tokens taken from the sequence, not yet given to a ticket.
    spare_fences: std::sync::Mutex<Vec<i64>>,
    /// How to open the change listener's own connection ([`notify`]).
    listener: (tokio_postgres::Config, notify::Tls),
}

/// A PostgreSQL error as a store error: the server's own message and code
/// when it sent one, a full disk as [`Error::StorageFull`], and a
/// transaction the server rolled back to be run again as
/// [`Error::RolledBack`] (told by its code, not by its words, which may
/// quote a key's value).
pub(crate) fn pg(e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    match e.as_db_error() {
        Some(db) if db.code() == &SqlState::DISK_FULL => Error::StorageFull(format!(
            "PostgreSQL's disk is full ({}); free space and retry",
            db.message()
        )),
        Some(db) => {
            let message = format!(
                "PostgreSQL: {} (SQLSTATE {}){}",
                db.message(),
                db.code().code(),
                db.detail().map(|d| format!(": {d}")).unwrap_or_default()
            );
            if [
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::T_R_SERIALIZATION_FAILURE,
            ]
            .contains(db.code())
            {
                Error::RolledBack(message)
            } else {
                Error::Store(message)
            }
        }
        None => {
            let mut message = format!("PostgreSQL: {e}");
            if let Some(source) = std::error::Error::source(&e) {
                message.push_str(&format!(": {source}"));
            }
            Error::Store(message)
        }
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => Error::Store(format!("PostgreSQL connection pool: {other}")),
    }
}

/// Connections in the pool: the committer holds one, API reads and
/// plugin key-value calls share the rest.
const POOL_SIZE: usize = 16;

/// Times a group commit is tried when the server rolls it back.
const COMMIT_TRIES: u32 = 5;

impl PgStore {
    /// Connect to the database at `url` (a libpq URL: `postgres://user:pw@host:port/db?sslmode=require`),
    /// refuse a server that does not make commits durable, and migrate its
    /// schema to this version.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_as(url, LeaseConfig::default())
    }

    /// [`PgStore::open`] as the worker `lease` names, its leases lasting
    /// `lease.ttl` unrenewed.
    pub fn open_as(url: &str, lease: LeaseConfig) -> Result<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Usage(format!(
                "--store: `{}` is not a PostgreSQL URL: {e}",
                redact(url)
            ))
        })?;
        // Our acknowledgement means durable: ask for the WAL flush on every
        // commit, whatever the server's default.
        // And a worker paused inside a transaction (its locks blocking the
        // ticket's next owner) has it ended by the server within half a lease.
        let ours = format!(
            "-c synchronous_commit=on -c idle_in_transaction_session_timeout={}",
            (lease.ttl.as_millis() / 2).max(500)
        );
        let options = match config.get_options() {
            Some(o) => format!("{o} {ours}"),
            None => ours,
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("itsm");
        }
        config.connect_timeout(Duration::from_secs(10));
        let target = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("itsm-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Store(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            crate::tls::client_config().as_ref().clone(),
        );
        let listener = (config.clone(), tls.clone());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| Error::Store(format!("PostgreSQL connection pool: {e}")))?
        };
        let store = Self {
            pool,
            runtime: Some(runtime),
            target,
            lease,
            spare_fences: Default::default(),
            listener,
        };
        let applied = store.run("open the store", |pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let fsync: String = client
                .query_one("SHOW fsync", &[])
                .await
                .map_err(pg)?
                .get(0);
            if fsync != "on" {
                return Err(Error::Store(
                    "the server runs with fsync = off, so a commit would not survive a power \
                     loss; turn fsync on (postgresql.conf) before pointing itsm at it"
                        .into(),
                ));
            }
            migrate::migrate(&mut client).await
        })?;
        if !applied.is_empty() {
            tracing::info!(target = %store.target, ?applied, "migrated the PostgreSQL schema");
        }
        Ok(store)
    }

    /// Run `f` on the store's runtime with a handle on the pool and wait
    /// for its answer (from any thread, async or not).
    fn run<T, Fut>(&self, what: &str, f: impl FnOnce(Pool) -> Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.run_once(what, f).map_err(|e| match e {
            Error::RolledBack(m) => Error::Store(m),
            other => other,
        })
    }

    /// [`PgStore::run`], a transaction the server rolled back left as
    /// [`Error::RolledBack`] for the caller to run again.
    fn run_once<T, Fut>(&self, what: &str, f: impl FnOnce(Pool) -> Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = f(self.pool.clone());
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .spawn(async move {
                let _ = tx.send(work.await);
            });
        rx.recv()
            .map_err(|_| {
                Error::Store(format!("{}: cannot {what}: the call was lost", self.target))
            })?
            .map_err(|e| match e {
                Error::Store(m) => Error::Store(format!("{}: cannot {what}: {m}", self.target)),
                Error::RolledBack(m) => {
                    Error::RolledBack(format!("{}: cannot {what}: {m}", self.target))
                }
                other => other,
            })
    }

    /// Run one query for rows, on a pooled connection.
    fn query(
        &self,
        what: &str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.run(what, move |pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let statement = client.prepare_cached(sql).await.map_err(pg)?;
            client.query(&statement, &refs(&params)).await.map_err(pg)
        })
    }

    /// Run one statement, on a pooled connection.
    fn execute(&self, what: &str, sql: &'static str, params: Vec<Param>) -> Result<u64> {
        self.run(what, move |pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let statement = client.prepare_cached(sql).await.map_err(pg)?;
            client.execute(&statement, &refs(&params)).await.map_err(pg)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A query parameter, owned (it travels to the store's runtime).
type Param = Box<dyn ToSql + Send + Sync>;

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unreadable)".into(),
    }
}

/// "PostgreSQL at HOST:PORT/DB", from a parsed config.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("PostgreSQL at {host}:{port}/{db}")
}

/// A ticket as its row: the summary columns and the sealed body.
struct TicketRow {
    id: String,
    workflow: String,
    subject: String,
    state: &'static str,
    requested_by: String,
    batch: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    in_flight: bool,
    body: Vec<u8>,
    subject_key: String,
    /// The lease it is written under (0: unfenced).
    fence: i64,
    /// Its trail's length, for the change announcement and the witness.
    events: i64,
    /// Its trail's last hash, for the witness.
    head_hash: String,
}

impl TicketRow {
    fn of(t: &Ticket, fence: Option<i64>) -> Result<Self> {
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
struct Rows {
    tickets: BTreeMap<String, TicketRow>,
    /// By batch: the batch's ticket ids and its other records.
    batches: Vec<(Vec<String>, BatchRows)>,
}

#[derive(Default)]
struct BatchRows {
    /// (workflow, subject key) of an exclusive create.
    exclusive: Option<(String, String)>,
    /// (ticket, step, body).
    steps: Vec<(String, String, Vec<u8>)>,
    /// (ticket, step, n, body).
    attempts: Vec<(String, String, i64, Vec<u8>)>,
    events: Vec<(String, i64, Vec<u8>)>,
    workflows: Vec<(String, String, Vec<u8>)>,
    idempotency: Vec<(String, String)>,
}

impl Rows {
    fn of(batches: &[Batch]) -> Result<Self> {
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
async fn write(
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
fn last_of_each<T, K: std::hash::Hash + Eq>(rows: &mut Vec<T>, key: impl Fn(&T) -> K) {
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

/// The summary columns of `itsm.tickets`, in [`summary`]'s order.
const SUMMARY: &str = "id, workflow, subject, state, requested_by, batch, created_ms, updated_ms";

/// Part records grouped by their ticket, each group in order.
fn by_ticket<T: OfTicket>(rows: Vec<T>) -> HashMap<String, Vec<T>> {
    let mut by = HashMap::<String, Vec<T>>::new();
    for row in rows {
        by.entry(row.ticket().to_string()).or_default().push(row);
    }
    by
}

/// The rows of ticket `id` (`None`: of every ticket), read from one
/// snapshot.
struct Snapshot {
    /// `(id, body)` of each ticket, in id order.
    cores: Vec<(String, Vec<u8>)>,
    steps: Vec<StepRow>,
    attempts: Vec<AttemptRow>,
}

impl PgStore {
    /// The core, step and attempt records of ticket `id` (`None`: of every
    /// ticket), in key order.
    ///
    /// They are read in one read-only `REPEATABLE READ` transaction, so
    /// from one snapshot: read one statement at a time, a commit landing
    /// between them would give the core of one commit (its trail head)
    /// with the steps of the next.
    fn snapshot(&self, id: Option<&str>) -> Result<Snapshot> {
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

fn summary(row: &tokio_postgres::Row) -> Result<TicketSummary> {
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

fn parse_state(id: &str, state: &str) -> Result<TicketState> {
    serde_json::from_value(serde_json::Value::String(state.to_string())).map_err(|_| {
        corrupt(
            ticket_key(id).as_bytes(),
            &format!("its state column holds `{state}`, which is no ticket state"),
        )
    })
}

/// The WHERE clause and parameters of a listing's filters (and, with
/// `cursor`, its keyset cursor).
fn filters(q: &Listing, cursor: bool) -> (String, Vec<Param>) {
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

impl Store for PgStore {
    fn commit(&self, batches: &[Batch]) -> Result<()> {
        match self.commit_fenced(batches)?.into_iter().next() {
            None => Ok(()),
            Some((i, Refusal::Fenced)) => Err(Error::Fenced(format!(
                "batch {i} was written under a lease its ticket no longer has"
            ))),
            // A create refused for its key or subject is an expected
            // outcome only through the commit queue, which asks for it.
            Some((i, other)) => Err(Error::Conflict(format!("batch {i} was refused: {other}"))),
        }
    }

    fn commit_fenced(&self, batches: &[Batch]) -> Result<Vec<(usize, Refusal)>> {
        if batches.iter().all(Batch::is_empty) {
            return Ok(Vec::new());
        }
        let ttl_ms = self.lease.ttl.as_millis() as i64;
        let mut tries = 1;
        loop {
            let rows = Rows::of(batches)?;
            let worker = self.lease.worker.clone();
            // Two workers' group commits can deadlock, each inserting a key
            // the other inserted and has not committed (a workflow version
            // both pin, say); the server rolls one back whole, so running
            // it again is safe.
            match self.run_once("commit", move |pool| write(pool, worker, ttl_ms, rows)) {
                Err(Error::RolledBack(m)) if tries < COMMIT_TRIES => {
                    tracing::warn!(error = %m, tries, "a commit was rolled back by the server; trying it again");
                    tries += 1;
                }
                Err(Error::RolledBack(m)) => return Err(Error::Store(m)),
                other => return other,
            }
        }
    }

    fn leases(&self) -> Option<&dyn super::Leases> {
        Some(self)
    }

    fn documents(&self) -> Option<&dyn super::Documents> {
        Some(self)
    }

    fn witness(&self) -> Option<&dyn super::Witness> {
        Some(self)
    }

    fn watch_changes(&self, changed: super::Changed) {
        let (config, tls) = self.listener.clone();
        notify::listen(
            self.runtime
                .as_ref()
                .expect("the runtime lives as long as the store"),
            config,
            tls,
            changed,
        );
    }

    fn ticket(&self, id: &str) -> Result<Option<Ticket>> {
        let Snapshot {
            cores,
            steps,
            attempts,
        } = self.snapshot(Some(id))?;
        let Some((_, body)) = cores.first() else {
            return Ok(None);
        };
        let core = decode_ticket(ticket_key(id).as_bytes(), body)?;
        assemble(core, steps, attempts).map(Some)
    }

    fn tickets(&self) -> Result<Vec<Ticket>> {
        let Snapshot {
            cores,
            steps,
            attempts,
        } = self.snapshot(None)?;
        let mut steps = by_ticket(steps);
        let mut attempts = by_ticket(attempts);
        cores
            .iter()
            .map(|(id, body)| {
                let core = decode_ticket(ticket_key(id).as_bytes(), body)?;
                let s = steps.remove(&core.id).unwrap_or_default();
                let a = attempts.remove(&core.id).unwrap_or_default();
                assemble(core, s, a)
            })
            .collect()
    }

    fn list(&self, q: &Listing) -> Result<Page> {
        let (clause, mut params) = filters(q, true);
        params.push(Box::new(q.limit as i64 + 1));
        let sql = format!(
            "SELECT {SUMMARY} FROM itsm.tickets{clause} ORDER BY id {} LIMIT ${}",
            if q.newest_first { "DESC" } else { "ASC" },
            params.len()
        );
        let rows = self.run("list tickets", move |pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            client.query(&sql, &refs(&params)).await.map_err(pg)
        })?;
        let mut tickets = rows.iter().map(summary).collect::<Result<Vec<_>>>()?;
        let next = if tickets.len() > q.limit {
            tickets.truncate(q.limit);
            tickets.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Page { tickets, next })
    }

    fn count(&self, q: &Listing) -> Result<usize> {
        let (clause, params) = filters(q, false);
        let sql = format!("SELECT count(*) FROM itsm.tickets{clause}");
        let n: i64 = self.run("count tickets", move |pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(client
                .query_one(&sql, &refs(&params))
                .await
                .map_err(pg)?
                .get(0))
        })?;
        Ok(n as usize)
    }

    fn in_flight(&self) -> Result<Vec<String>> {
        Ok(self
            .query(
                "read the in-flight tickets",
                "SELECT id FROM itsm.tickets WHERE in_flight ORDER BY id",
                vec![],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn events(&self, ticket_id: &str) -> Result<Vec<AuditEvent>> {
        self.query(
            "read a trail",
            "SELECT seq, body FROM itsm.events WHERE ticket_id = $1 ORDER BY seq",
            vec![Box::new(ticket_id.to_string())],
        )?
        .iter()
        .map(|r| {
            let key = event_key(ticket_id, r.get::<_, i64>(0) as u64);
            decode_event(key.as_bytes(), r.get(1))
        })
        .collect()
    }

    fn workflow(&self, name: &str, hash: &str) -> Result<Option<Workflow>> {
        let rows = self.query(
            "read a workflow",
            "SELECT body FROM itsm.workflows WHERE name = $1 AND hash = $2",
            vec![Box::new(name.to_string()), Box::new(hash.to_string())],
        )?;
        rows.first()
            .map(|r| decode(workflow_key(name, hash).as_bytes(), r.get(0)))
            .transpose()
    }

    fn workflow_versions(&self, name: &str) -> Result<Vec<(String, Workflow)>> {
        self.query(
            "read workflow versions",
            "SELECT hash, body FROM itsm.workflows WHERE name = $1 ORDER BY hash",
            vec![Box::new(name.to_string())],
        )?
        .iter()
        .map(|r| {
            let hash: String = r.get(0);
            let wf = decode(workflow_key(name, &hash).as_bytes(), r.get(1))?;
            Ok((hash, wf))
        })
        .collect()
    }

    fn idempotency(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .query(
                "read an idempotency key",
                "SELECT ticket_id FROM itsm.idempotency WHERE key = $1",
                vec![Box::new(key.to_string())],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query(
                "read plugin state",
                "SELECT value FROM itsm.plugin_kv WHERE plugin = $1 AND key = $2",
                vec![Box::new(plugin.to_string()), Box::new(key.to_string())],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.execute(
            "write plugin state",
            "INSERT INTO itsm.plugin_kv (plugin, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value",
            vec![
                Box::new(plugin.to_string()),
                Box::new(key.to_string()),
                Box::new(value.to_vec()),
            ],
        )
        .map(drop)
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.execute(
            "write plugin state",
            "DELETE FROM itsm.plugin_kv WHERE plugin = $1 AND key = $2",
            vec![Box::new(plugin.to_string()), Box::new(key.to_string())],
        )
        .map(drop)
    }

    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64)> {
        let rows = self.query(
            "read plugin state",
            "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0)::int8
             FROM itsm.plugin_kv WHERE plugin = $1",
            vec![Box::new(plugin.to_string())],
        )?;
        let row = rows.first().expect("an aggregate returns one row");
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    fn check(&self) -> Result<Checked> {
        let mut checked = Checked::default();
        let mut found: Vec<Damage> = Vec::new();
        let tickets = self.query(
            "read every ticket",
            "SELECT id, workflow, subject, state, requested_by, batch, created_ms, updated_ms,
                    in_flight, body FROM itsm.tickets ORDER BY id",
            vec![],
        )?;
        let mut cores = Vec::new();
        for row in &tickets {
            checked.records += 1;
            let id: String = row.get(0);
            let key = ticket_key(&id);
            let result = decode_ticket(key.as_bytes(), row.get(9)).and_then(|t| {
                // The summary columns answer listings: they must say what
                // the body says.
                let columns = summary(row)?;
                if columns != TicketSummary::from(&t) {
                    return Err(corrupt(
                        key.as_bytes(),
                        "its listing columns disagree with the ticket it holds",
                    ));
                }
                if row.get::<_, bool>(8) == t.state.is_terminal() {
                    return Err(corrupt(
                        key.as_bytes(),
                        "its in-flight mark disagrees with its state",
                    ));
                }
                Ok(t)
            });
            match result {
                Ok(t) => cores.push(t),
                Err(e) => found.push(Damage {
                    key,
                    problem: e.to_string(),
                }),
            }
        }
        let mut steps: HashMap<String, Vec<StepRow>> = HashMap::new();
        for row in &self.query(
            "read every step",
            "SELECT ticket_id, step, body FROM itsm.steps ORDER BY ticket_id, step",
            vec![],
        )? {
            checked.records += 1;
            let key = step_key(row.get(0), row.get(1));
            match decode_step(key.as_bytes(), row.get(2)) {
                Ok(r) => steps.entry(r.ticket.clone()).or_default().push(r),
                Err(e) => found.push(Damage {
                    key,
                    problem: e.to_string(),
                }),
            }
        }
        let mut attempts: HashMap<String, Vec<AttemptRow>> = HashMap::new();
        for row in &self.query(
            "read every attempt",
            "SELECT ticket_id, step, n, body FROM itsm.attempts ORDER BY ticket_id, step, n",
            vec![],
        )? {
            checked.records += 1;
            let key = attempt_key(row.get(0), row.get(1), row.get::<_, i64>(2) as u32);
            match decode_attempt(key.as_bytes(), row.get(3)) {
                Ok(r) => attempts.entry(r.ticket.clone()).or_default().push(r),
                Err(e) => found.push(Damage {
                    key,
                    problem: e.to_string(),
                }),
            }
        }
        let ids: std::collections::HashSet<String> =
            tickets.iter().map(|r| r.get::<_, String>(0)).collect();
        checked.tickets = check_parts(
            cores,
            steps,
            attempts,
            &|id: &str| ids.contains(id),
            &mut found,
        );
        let events = self.query(
            "read every event",
            "SELECT ticket_id, seq, body FROM itsm.events ORDER BY ticket_id, seq",
            vec![],
        )?;
        for row in &events {
            checked.records += 1;
            let key = event_key(row.get(0), row.get::<_, i64>(1) as u64);
            if let Err(e) = decode_event(key.as_bytes(), row.get(2)) {
                found.push(Damage {
                    key,
                    problem: e.to_string(),
                });
            }
        }
        let workflows = self.query(
            "read every workflow",
            "SELECT name, hash, body FROM itsm.workflows ORDER BY name, hash",
            vec![],
        )?;
        for row in &workflows {
            checked.records += 1;
            let key = workflow_key(row.get(0), row.get(1));
            if let Err(e) = decode::<Workflow>(key.as_bytes(), row.get(2)) {
                found.push(Damage {
                    key,
                    problem: e.to_string(),
                });
            }
        }
        // Idempotency keys and plugin values are plain columns: the
        // server's own checks (page checksums) are all there is to run.
        let counted = self.query(
            "count the other records",
            "SELECT (SELECT count(*) FROM itsm.idempotency) + (SELECT count(*) FROM itsm.plugin_kv)",
            vec![],
        )?;
        checked.records += counted[0].get::<_, i64>(0) as usize;
        checked.damage = found;
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TicketWrite;
    use crate::store::record::encode;
    use crate::ticket::AttemptResult;

    #[test]
    fn a_ticket_row_written_whole_before_the_parts_reads_back_and_is_split_on_its_next_write() {
        let cluster = itsm_sandbox::postgres::Cluster::start();
        let store = PgStore::open(&cluster.url()).unwrap();
        let mut t = crate::store::conformance::in_its_first_attempt("T-old");
        let write = |t: &Ticket| {
            store
                .commit(&[Batch {
                    tickets: vec![TicketWrite::whole(t)],
                    ..Batch::default()
                }])
                .unwrap()
        };
        let count =
            |sql: &'static str| -> i64 { store.query("count", sql, Vec::new()).unwrap()[0].get(0) };
        // The row as written before migration 0004: the whole ticket in
        // its body, no step or attempt rows.
        write(&t);
        store
            .execute(
                "make the row whole",
                "UPDATE itsm.tickets SET body = $1 WHERE id = 'T-old'",
                vec![Box::new(encode(&t).unwrap())],
            )
            .unwrap();
        for sql in [
            "DELETE FROM itsm.steps WHERE ticket_id = 'T-old'",
            "DELETE FROM itsm.attempts WHERE ticket_id = 'T-old'",
        ] {
            store.execute("drop the parts", sql, Vec::new()).unwrap();
        }
        assert_eq!(count("SELECT count(*) FROM itsm.steps"), 0);
        assert_eq!(store.ticket("T-old").unwrap().as_ref(), Some(&t));
        assert_eq!(store.tickets().unwrap(), vec![t.clone()]);
        let checked = store.check().unwrap();
        assert!(checked.damage.is_empty(), "{:?}", checked.damage);
        // A driver's first write of a ticket it read is whole: the parts
        // get their rows and the body loses its inline steps.
        t.steps.get_mut("a").unwrap().attempts[0].result = AttemptResult::Interrupted;
        write(&t);
        let body = store
            .query(
                "read the body",
                "SELECT body FROM itsm.tickets WHERE id = 'T-old'",
                Vec::new(),
            )
            .unwrap();
        let core = decode_ticket(b"t/T-old", body[0].get(0)).unwrap();
        assert!(core.steps.is_empty(), "{:?}", core.steps);
        assert_eq!(
            count("SELECT count(*) FROM itsm.steps WHERE ticket_id = 'T-old'"),
            t.steps.len() as i64
        );
        assert_eq!(
            count("SELECT count(*) FROM itsm.attempts WHERE ticket_id = 'T-old'"),
            1
        );
        assert_eq!(store.ticket("T-old").unwrap().as_ref(), Some(&t));
        let checked = store.check().unwrap();
        assert!(checked.damage.is_empty(), "{:?}", checked.damage);
        assert_eq!(checked.tickets, [t]);
    }
}
