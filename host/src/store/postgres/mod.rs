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
mod read;
mod witness;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;

use self::read::{Snapshot, by_ticket, filters, summary};
use self::write::{Rows, write};
use super::parts::{AttemptRow, StepRow, assemble, attempt_key, step_key};
use super::record::{
    check_parts, decode, decode_attempt, decode_event, decode_step, decode_ticket, event_key,
    ticket_key, workflow_key,
};
use super::seal::corrupt;
use super::{Batch, Checked, Damage, LeaseConfig, Listing, Page, Refusal, Store, TicketSummary};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::ticket::Ticket;
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

/// The summary columns of `itsm.tickets`, in [`summary`]'s order.
const SUMMARY: &str = "id, workflow, subject, state, requested_by, batch, created_ms, updated_ms";

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
