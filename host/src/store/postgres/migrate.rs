//! Versioned schema migrations, applied at start-up.
//!
//! Each migration is a numbered SQL file under `migrations/`, applied once,
//! in order, inside one transaction that also records it in
//! `itsm.schema_migrations`. Workers starting together take an advisory
//! lock first, so exactly one applies a migration and the others find it
//! done. A database newer than this binary is refused: an old worker must
//! not write rows a newer schema reads differently.

use deadpool_postgres::Client;

use super::pg;
use crate::error::{Error, Result};

/// Every migration: (version, name, SQL). Append only; never edit one that
/// has shipped.
pub(super) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "leases", include_str!("migrations/0002_leases.sql")),
    (
        3,
        "documents",
        include_str!("migrations/0003_documents.sql"),
    ),
    (
        4,
        "ticket parts",
        include_str!("migrations/0004_ticket_parts.sql"),
    ),
    (5, "witness", include_str!("migrations/0005_witness.sql")),
    (
        6,
        "wants plugins",
        include_str!("migrations/0006_wants_plugins.sql"),
    ),
];

/// Key of the advisory lock migrations run under ("itsm" in ASCII).
const LOCK: i64 = 0x6974_736d;

/// Bring the schema up to date; returns the versions applied now.
pub(super) async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS itsm;
         CREATE TABLE IF NOT EXISTS itsm.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(pg)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM itsm.schema_migrations",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Error::Store(format!(
            "the database's schema is at version {current}, newer than this itsm knows \
             ({latest}): upgrade this worker to the version the others run"
        )));
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::Store(format!("migration {version} ({name}) failed: {}", pg(e))))?;
        if *version == 5 {
            let n = super::witness::seed(&tx).await?;
            tracing::info!(tickets = n, "witnessed the tickets already stored");
        }
        tx.execute(
            "INSERT INTO itsm.schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(pg)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(pg)?;
    Ok(applied)
}
