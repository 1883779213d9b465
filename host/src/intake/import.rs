//! A bulk import, row by row: the batch its tickets join and each row's
//! idempotency key (both from the file's content, so the same file sent
//! again creates nothing), the rows created `CONCURRENCY` at a time, and
//! the import's progress while it runs.

use std::sync::Arc;

use super::NewTicket;
use super::rows::Row;
use crate::error::{Error, Result};

/// Rows created at once.
const CONCURRENCY: usize = 64;

/// The batch id of an import whose body hashes to `file_hash`.
pub fn batch_id(file_hash: &str) -> String {
    format!("B-{}", &file_hash[..16])
}

/// The idempotency key of row `row` (1 = the first data row) of the
/// import whose body hashes to `file_hash`.
pub fn row_key(file_hash: &str, row: usize) -> String {
    format!("import:{file_hash}:{row}")
}

/// Imports in progress: batch id to (rows, rows done). Kept in memory only;
/// the tickets themselves are the durable record.
#[derive(Debug, Default)]
pub struct Running(std::sync::Mutex<std::collections::HashMap<String, Arc<Progress>>>);

/// One import's progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows in the file.
    pub rows: usize,
    /// Rows handled (created, found existing, or refused).
    pub done: std::sync::atomic::AtomicUsize,
}

impl Running {
    /// The progress of the import of `batch`, if one is running.
    pub fn get(&self, batch: &str) -> Option<(usize, usize)> {
        let map = self.0.lock().expect("imports lock");
        map.get(batch)
            .map(|p| (p.rows, p.done.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// Note an import of `batch` with `rows` rows as started.
    pub fn start(&self, batch: &str, rows: usize) -> Arc<Progress> {
        let p = Arc::new(Progress {
            rows,
            done: Default::default(),
        });
        self.0
            .lock()
            .expect("imports lock")
            .insert(batch.to_string(), p.clone());
        p
    }

    /// Forget the import of `batch`: it has finished.
    pub fn finish(&self, batch: &str) {
        self.0.lock().expect("imports lock").remove(batch);
    }
}

/// What became of each row: its ticket (and whether it is new), or why not.
pub type RowResult = (usize, Result<(String, bool), String>);

/// The rows' results, and the store error that stopped the import, if one did.
pub struct Created {
    /// Each row's result, in row order.
    pub results: Vec<RowResult>,
    /// The store error that stopped the import, if one did.
    pub stopped: Option<Error>,
}

/// A row's failure that is the store's, not the row's: the rows after it
/// would meet it too, so the import stops there.
fn stops_the_import(e: &Error) -> bool {
    matches!(e, Error::StorageFull(_) | Error::Store(_))
}

/// Create the rows' tickets, `CONCURRENCY` at a time; results in row order.
/// At the first store error no further row is started; the rows already
/// started finish, and every row not started says so.
pub async fn create_rows<F, Fut>(
    rows: Vec<Row>,
    file_hash: &str,
    progress: &Progress,
    create: F,
) -> Result<Created>
where
    F: Fn(NewTicket, String) -> Fut,
    Fut: std::future::Future<Output = Result<(String, bool)>> + Send + 'static,
{
    use std::sync::atomic::Ordering;
    let mut pending = tokio::task::JoinSet::new();
    let mut results = Vec::with_capacity(rows.len());
    let mut stopped: Option<Error> = None;
    let note = |results: &mut Vec<RowResult>,
                stopped: &mut Option<Error>,
                (row, r): (usize, Result<(String, bool)>)| {
        progress.done.fetch_add(1, Ordering::Relaxed);
        match r {
            Err(e) if stops_the_import(&e) => {
                results.push((row, Err(e.to_string())));
                stopped.get_or_insert(e);
            }
            r => results.push((row, r.map_err(|e| e.to_string()))),
        }
    };
    let mut rows = rows.into_iter();
    for (row, parsed) in rows.by_ref() {
        let req = match parsed {
            Ok(req) => req,
            Err(error) => {
                results.push((row, Err(error)));
                progress.done.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        if pending.len() >= CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            let done = done.map_err(|e| Error::Store(e.to_string()))?;
            note(&mut results, &mut stopped, done);
        }
        if stopped.is_some() {
            results.push((row, Err(NOT_STARTED.into())));
            break;
        }
        let created = create(req, row_key(file_hash, row));
        pending.spawn(async move { (row, created.await) });
    }
    for (row, _) in rows {
        results.push((row, Err(NOT_STARTED.into())));
    }
    while let Some(done) = pending.join_next().await {
        let done = done.map_err(|e| Error::Store(e.to_string()))?;
        note(&mut results, &mut stopped, done);
    }
    results.sort_by_key(|(row, _)| *row);
    Ok(Created { results, stopped })
}

/// The error of each row after the one where the store failed.
const NOT_STARTED: &str = "not imported: the import stopped at a store error (see `stopped`)";
