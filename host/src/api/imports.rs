//! `POST /v1/imports?workflow=NAME`: bulk intake, one ticket per row.
//!
//! The body is CSV (`text/csv`, a header row with a `subject` column; other
//! columns become inputs) or JSON lines (`application/x-ndjson`, objects with
//! `subject` and optional `inputs`); `application/octet-stream`, for clients
//! that send files as bytes, is JSON lines when it starts with `{` and CSV
//! otherwise. Valid rows become tickets grouped by a
//! batch id derived from the file's content; bad rows are reported with their
//! row numbers and do not stop the rest. Each row's idempotency key is the
//! file hash and row number, so importing the same file again creates nothing.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::intake::IntakeLimits;
use crate::runtime::sha256_hex;
use crate::scheduler::{NewTicket, subject_key};

/// Rows created at once.
const CONCURRENCY: usize = 64;

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

    fn start(&self, batch: &str, rows: usize) -> Arc<Progress> {
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

    fn finish(&self, batch: &str) {
        self.0.lock().expect("imports lock").remove(batch);
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    /// The workflow every row's ticket runs.
    workflow: String,
    /// Create tickets even for subjects that already have an open ticket of
    /// this workflow (a repeat within the file is still refused).
    #[serde(default)]
    allow_duplicates: bool,
}

/// A row that did not become a ticket, and why.
#[derive(Serialize, utoipa::ToSchema)]
struct RowError {
    /// 1 = the first data row.
    row: usize,
    error: String,
}

/// What an import did, row by row.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ImportReport {
    /// The batch id, derived from the file's content (`B-...`).
    batch: String,
    /// Tickets created by this import.
    created: usize,
    /// Rows whose ticket an earlier import of the same file created.
    existing: usize,
    /// Rows refused, by row number.
    errors: Vec<RowError>,
    /// The ticket of every row that has one, in row order.
    tickets: Vec<String>,
    /// Why the import stopped before its last row (a store error: the disk
    /// is full, say), and what to do; absent when every row was handled.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// One parsed row: its number (1 = first data row) and the request, or why not.
type Row = (usize, Result<NewTicket, String>);

/// A subject's second row in one file is an error naming the first: one
/// person, one ticket.
fn refuse_repeats(rows: &mut [Row]) {
    let mut first: std::collections::HashMap<String, usize> = Default::default();
    for (row, parsed) in rows.iter_mut() {
        let Ok(req) = parsed else { continue };
        let key = subject_key(&req.subject);
        if key.is_empty() {
            continue;
        }
        match first.get(&key) {
            Some(earlier) => {
                *parsed = Err(format!(
                    "same subject as row {earlier} ({}): one ticket per person",
                    req.subject.trim()
                ))
            }
            None => {
                first.insert(key, *row);
            }
        }
    }
}

/// How to turn rows into ticket requests.
struct Shape<'a> {
    workflow: &'a str,
    batch: &'a str,
    allow_duplicate: bool,
    limits: IntakeLimits,
}

fn csv_rows(body: &[u8], shape: &Shape<'_>) -> Result<Vec<Row>, ApiError> {
    let (workflow, batch, allow_duplicate, limits) = (
        shape.workflow,
        shape.batch,
        shape.allow_duplicate,
        shape.limits,
    );
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        // Row length is checked per row below, with a message naming the counts.
        .flexible(true)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| ApiError::bad_request(format!("CSV header row: {e}")))?
        .clone();
    if headers.len() > limits.columns {
        return Err(ApiError::too_large(format!(
            "the CSV header has {} columns; the limit is {} (itsm serve --max-columns)",
            headers.len(),
            limits.columns
        )));
    }
    let Some(subject_col) = headers.iter().position(|h| h == "subject") else {
        return Err(ApiError::bad_request(format!(
            "the CSV header has no `subject` column (it has: {})",
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    };
    Ok(reader
        .records()
        .enumerate()
        .map(|(i, rec)| {
            let row = i + 1;
            let parsed = rec
                .map_err(|e| format!("not a CSV row: {e}"))
                .and_then(|rec| {
                    if rec.len() != headers.len() {
                        return Err(format!(
                            "has {} fields, the header has {}",
                            rec.len(),
                            headers.len()
                        ));
                    }
                    let row_len = rec.as_byte_record().as_slice().len() + rec.len();
                    if row_len > limits.row_bytes {
                        return Err(IntakeLimits::over(
                            "the row",
                            row_len,
                            limits.row_bytes,
                            "--max-row-bytes",
                        ));
                    }
                    if let Some((h, v)) = headers
                        .iter()
                        .zip(rec.iter())
                        .find(|(_, v)| v.len() > limits.cell_bytes)
                    {
                        return Err(IntakeLimits::over(
                            &format!("column `{h}`"),
                            v.len(),
                            limits.cell_bytes,
                            "--max-cell-bytes",
                        ));
                    }
                    let subject = rec.get(subject_col).unwrap_or_default().to_string();
                    let inputs: Map<String, Value> = headers
                        .iter()
                        .zip(rec.iter())
                        .filter(|(h, _)| *h != "subject")
                        .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                        .collect();
                    Ok(NewTicket {
                        workflow: workflow.to_string(),
                        subject,
                        inputs: Value::Object(inputs),
                        batch: Some(batch.to_string()),
                        allow_duplicate,
                    })
                });
            (row, parsed)
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    subject: String,
    #[serde(default)]
    inputs: Value,
}

fn json_rows(body: &[u8], shape: &Shape<'_>) -> Vec<Row> {
    let (workflow, batch, allow_duplicate, limits) = (
        shape.workflow,
        shape.batch,
        shape.allow_duplicate,
        shape.limits,
    );
    String::from_utf8_lossy(body)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            if line.len() > limits.row_bytes {
                let e =
                    IntakeLimits::over("the row", line.len(), limits.row_bytes, "--max-row-bytes");
                return (i + 1, Err(e));
            }
            let parsed = serde_json::from_str::<JsonRow>(line)
                .map_err(|e| format!("not a valid row: {e}"))
                .map(|r| NewTicket {
                    workflow: workflow.to_string(),
                    subject: r.subject,
                    inputs: r.inputs,
                    batch: Some(batch.to_string()),
                    allow_duplicate,
                });
            (i + 1, parsed)
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/imports", tag = "tickets", params(ImportQuery),
    request_body(description = "CSV with a `subject` column, or JSON lines of {\"subject\", \"inputs\"}; as `application/octet-stream` (for clients that send files as bytes), JSON lines if the first non-blank byte is `{`, CSV otherwise", content(
        (String = "text/csv"), (String = "application/x-ndjson"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 200, description = "Batch id, counts, per-row errors and ticket ids", body = ImportReport), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 413, description = "Over an intake limit, named in the body", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 507, description = "The disk is full: the rows stored before it, the rest not imported, and `stopped` saying why", body = ImportReport)))]
pub(super) async fn import(
    State(app): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<ImportReport>), ApiError> {
    who.require(Role::Operator, "import tickets")?;
    let limits = app.scheduler.intake();
    let body = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the import is over the limit of {} bytes (itsm serve --max-import-bytes); split the file",
                limits.import_bytes
            ))
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    let Query(q) = query?;
    if !app.scheduler.workflows().contains_key(&q.workflow) {
        return Err(crate::Error::NotFound(format!("no workflow named `{}`", q.workflow)).into());
    }
    let file_hash = sha256_hex(&body);
    let batch = format!("B-{}", &file_hash[..16]);
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let shape = Shape {
        workflow: &q.workflow,
        batch: &batch,
        allow_duplicate: q.allow_duplicates,
        limits,
    };
    let json = if content_type.starts_with("text/csv") {
        false
    } else if content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
    {
        true
    } else if content_type.starts_with("application/octet-stream") {
        // A CSV header cannot start with `{`; a JSON line must.
        body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    } else {
        return Err(ApiError::unsupported(format!(
            "send the rows as text/csv or application/x-ndjson, not {content_type:?}"
        )));
    };
    let mut rows = if json {
        json_rows(&body, &shape)
    } else {
        csv_rows(&body, &shape)?
    };
    refuse_repeats(&mut rows);
    let by = who.name;
    let mut report = ImportReport {
        batch,
        created: 0,
        existing: 0,
        errors: Vec::new(),
        tickets: Vec::new(),
        stopped: None,
    };
    let progress = app.imports.start(&report.batch, rows.len());
    let created = create_rows(&app, rows, &file_hash, &by, &progress).await;
    app.imports.finish(&report.batch);
    let created = created?;
    for (row, result) in created.results {
        match result {
            Ok((id, created)) => {
                if created {
                    report.created += 1;
                } else {
                    report.existing += 1;
                }
                report.tickets.push(id);
            }
            Err(error) => report.errors.push(RowError { row, error }),
        }
    }
    let Some(stopped) = created.stopped else {
        return Ok((StatusCode::OK, Json(report)));
    };
    let status = ApiError::from(stopped.copy()).status();
    report.stopped = Some(format!(
        "{stopped}; {} rows were stored (their ids are in `tickets`); send the same file \
         again once that is fixed: rows already stored are not created twice",
        report.created + report.existing
    ));
    Ok((status, Json(report)))
}

/// What became of each row: its ticket (and whether it is new), or why not.
type RowResult = (usize, Result<(String, bool), String>);

/// The rows' results, and the store error that stopped the import, if one did.
struct Created {
    results: Vec<RowResult>,
    stopped: Option<crate::Error>,
}

/// A row's failure that is the store's, not the row's: the rows after it
/// would meet it too, so the import stops there.
fn stops_the_import(e: &crate::Error) -> bool {
    matches!(e, crate::Error::StorageFull(_) | crate::Error::Store(_))
}

/// Create the rows' tickets, `CONCURRENCY` at a time; results in row order.
/// At the first store error no further row is started; the rows already
/// started finish, and every row not started says so.
async fn create_rows(
    app: &AppState,
    rows: Vec<Row>,
    file_hash: &str,
    by: &str,
    progress: &Progress,
) -> Result<Created, ApiError> {
    use std::sync::atomic::Ordering;
    let mut pending = tokio::task::JoinSet::new();
    let mut results = Vec::with_capacity(rows.len());
    let mut stopped: Option<crate::Error> = None;
    let note = |results: &mut Vec<RowResult>,
                stopped: &mut Option<crate::Error>,
                (row, r): (usize, crate::Result<(String, bool)>)| {
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
            let done = done.map_err(|e| ApiError::from(crate::Error::Store(e.to_string())))?;
            note(&mut results, &mut stopped, done);
        }
        if stopped.is_some() {
            results.push((row, Err(NOT_STARTED.into())));
            break;
        }
        let scheduler = app.scheduler.clone();
        let key = format!("import:{file_hash}:{row}");
        let by = by.to_string();
        pending.spawn(async move {
            let r = scheduler.create(req, &by, Some(&key)).await;
            (row, r.map(|(t, created)| (t.id, created)))
        });
    }
    for (row, _) in rows {
        results.push((row, Err(NOT_STARTED.into())));
    }
    while let Some(done) = pending.join_next().await {
        let done = done.map_err(|e| ApiError::from(crate::Error::Store(e.to_string())))?;
        note(&mut results, &mut stopped, done);
    }
    results.sort_by_key(|(row, _)| *row);
    Ok(Created { results, stopped })
}

/// The error of each row after the one where the store failed.
const NOT_STARTED: &str = "not imported: the import stopped at a store error (see `stopped`)";
