//! `POST /v1/imports?workflow=NAME`: bulk intake, one ticket per row. The
//! rows, their keys and their creation are [`crate::intake`]'s; this is
//! the HTTP side.
//!
//! The body is CSV (`text/csv`, a header row with a `subject` column; other
//! columns become inputs) or JSON lines (`application/x-ndjson`, objects with
//! `subject` and optional `inputs`); `application/octet-stream`, for clients
//! that send files as bytes, is JSON lines when it starts with `{` and CSV
//! otherwise. Valid rows become tickets grouped by a
//! batch id derived from the file's content; bad rows are reported with their
//! row numbers and do not stop the rest. Each row's idempotency key is the
//! file hash and row number, so importing the same file again creates nothing.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::digest::sha256_hex;
use crate::intake::import::{batch_id, create_rows};
use crate::intake::rows::{self, Format, Shape};

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
    let batch = batch_id(&file_hash);
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
    let Some(format) = Format::of(content_type, &body) else {
        return Err(ApiError::unsupported(format!(
            "send the rows as text/csv or application/x-ndjson, not {content_type:?}"
        )));
    };
    // A body whose header cannot be read is malformed: 400, not the 422 of
    // a request that reads but does not fit.
    let rows = rows::parse(&body, format, &shape).map_err(|e| match e {
        crate::Error::Usage(m) => ApiError::bad_request(m),
        other => ApiError::from(other),
    })?;
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
    let scheduler = app.scheduler.clone();
    let created = create_rows(rows, &file_hash, &progress, |req, key| {
        let (scheduler, by) = (scheduler.clone(), by.clone());
        async move {
            let (ticket, created) = scheduler.create(req, &by, Some(&key)).await?;
            Ok((ticket.id, created))
        }
    })
    .await;
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
