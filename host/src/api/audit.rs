//! `/v1/audit`: the trail of one ticket or of a date range, exported as
//! JSON, JSON lines or CSV with a signed trailer ([`crate::audit::export`]),
//! and verified against the recorded chain heads.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorBody;
use super::tickets::instant;
use super::{ApiError, AppState};
use crate::audit::export::{Scope, Trailer, csv_row, csv_trailer_row};
use crate::audit::{self, AuditEvent, ChainHead};
use crate::shared::system_trail::SYSTEM;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(verify))
        .routes(routes!(key))
}

/// Export format.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    /// `{"events": [...], "trailer": {...}}`.
    #[default]
    Json,
    /// One event per line, then `{"trailer": {...}}`.
    Jsonl,
    /// One event per row (`data` as a JSON string), then a `#trailer` row.
    Csv,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// One ticket (or `system` for plugin and workflow changes); all if absent.
    ticket: Option<String>,
    /// Events at or after this instant (RFC 3339).
    from: Option<String>,
    /// Events before this instant (RFC 3339).
    to: Option<String>,
    /// json (default), jsonl or csv.
    #[serde(default)]
    #[param(inline)]
    format: Format,
}

/// The events a query selects, ordered by time, then ticket, then seq,
/// with the trailer that seals them.
fn select(app: &AppState, q: &AuditQuery) -> Result<(Vec<AuditEvent>, Trailer), ApiError> {
    let from = instant("from", &q.from)?;
    let to = instant("to", &q.to)?;
    let store = app.scheduler.store();
    let mut head: Option<ChainHead> = None;
    let mut events = match q.ticket.as_deref() {
        Some(SYSTEM) => {
            head = Some(app.system.head()?);
            app.system.events()?
        }
        Some(id) => {
            let Some(t) = store.ticket(id)? else {
                return Err(crate::Error::NotFound(format!("no ticket {id}")).into());
            };
            // As of the head just read: a commit landing since adds
            // events the trailer's head does not cover (as `show` does).
            let mut trail = store.events(id)?;
            trail.truncate(t.head.len as usize);
            head = Some(t.head);
            trail
        }
        None => {
            let mut all = app.system.events()?;
            for t in store.tickets()? {
                all.extend(store.events(&t.id)?);
            }
            all
        }
    };
    events.retain(|e| from.is_none_or(|f| e.at_ms >= f) && to.is_none_or(|t| e.at_ms < t));
    if q.ticket.is_none() {
        events.sort_by(|a, b| (a.at_ms, &a.ticket_id, a.seq).cmp(&(b.at_ms, &b.ticket_id, b.seq)));
    }
    // Whole when one ticket is asked for with no bounds: then the trailer
    // binds the file to the head the ticket records.
    let whole = from.is_none() && to.is_none() && head.is_some();
    let trailer = Trailer::seal(
        &app.export_key,
        if whole { Scope::Ticket } else { Scope::Range },
        q.ticket.as_deref(),
        from,
        to,
        &events,
        head.as_ref().filter(|_| whole),
        crate::ticket::now_ms(),
    );
    Ok((events, trailer))
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Events (JSON, JSON lines or CSV by `format`)", content(
        (AuditExport = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "Not an auditor nor an admin; the body says so", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn export(
    State(app): State<AppState>,
    Caller(who): Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    crate::access::may_read_trails(&who)?;
    let Query(q) = query?;
    let (events, trailer) = tokio::task::block_in_place(|| select(&app, &q))?;
    Ok(match q.format {
        Format::Json => Json(AuditExport { events, trailer }).into_response(),
        Format::Jsonl => {
            let mut body = String::new();
            for e in &events {
                body.push_str(&serde_json::to_string(e).expect("event serializes"));
                body.push('\n');
            }
            body.push_str(&json!({ "trailer": trailer }).to_string());
            body.push('\n');
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Format::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&events, &trailer)?,
        )
            .into_response(),
    })
}

/// A JSON export: the events asked for, and the signed trailer that says
/// what they are and proves nothing was left out.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct AuditExport {
    /// Oldest first.
    events: Vec<AuditEvent>,
    trailer: Trailer,
}

/// Columns: what an auditor's spreadsheet wants first, the chain last
/// ([`crate::audit::export::CSV_COLUMNS`]); the trailer is the last row.
fn to_csv(events: &[AuditEvent], trailer: &Trailer) -> Result<String, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let internal = |e: csv::Error| ApiError::from(crate::Error::Store(e.to_string()));
    w.write_record(crate::audit::export::CSV_COLUMNS)
        .map_err(internal)?;
    for e in events {
        w.write_record(csv_row(e)).map_err(internal)?;
    }
    w.write_record(csv_trailer_row(trailer)).map_err(internal)?;
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::from(crate::Error::Store(e.to_string())))?;
    Ok(String::from_utf8(bytes).expect("csv of strings is UTF-8"))
}

/// The key export trailers are signed with, for an auditor to pin
/// (`itsm audit verify --file F --key audit-export.pub`).
#[utoipa::path(get, path = "/v1/audit/key", tag = "audit",
    responses((status = 200, description = "The export signing key", body = ExportKey), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody)))]
async fn key(State(app): State<AppState>, _: Caller) -> Json<ExportKey> {
    use base64::Engine as _;
    let public = app.export_key.verifying_key();
    Json(ExportKey {
        key_id: crate::signing::key_id(&public),
        public_key: base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
    })
}

/// The Ed25519 key export trailers are signed with.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ExportKey {
    /// The key's id, as trailers name it.
    key_id: String,
    /// The public key, base64.
    public_key: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    /// One ticket (or `system`); every ticket if absent.
    ticket: Option<String>,
}

/// Verify chains against their recorded heads.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, description = "Verification of one chain (with `ticket`) or of all", body = Verification), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "Not an auditor nor an admin; the body says so", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn verify(
    State(app): State<AppState>,
    Caller(who): Caller,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Verification>, ApiError> {
    crate::access::may_read_trails(&who)?;
    let Query(q) = query?;
    tokio::task::block_in_place(|| {
        let store = app.scheduler.store();
        let one = |id: &str| -> Result<ChainCheck, ApiError> {
            let (events, result) = if id == SYSTEM {
                (app.system.events()?, app.system.verify()?)
            } else {
                let t = store
                    .ticket(id)?
                    .ok_or_else(|| crate::Error::NotFound(format!("no ticket {id}")))?;
                let events = store.events(id)?;
                let r = audit::verify(id, &events, &t.head);
                (events, r)
            };
            Ok(ChainCheck {
                ticket: id.to_string(),
                events: events.len() as u64,
                verified: result.is_ok(),
                head: events.last().map(|e| e.hash.clone()),
                error: result.err().map(|e| e.to_string()),
            })
        };
        if let Some(id) = q.ticket.as_deref() {
            return Ok(Json(Verification::One(one(id)?)));
        }
        let mut checked = 0;
        let mut broken = Vec::new();
        let ids =
            std::iter::once(SYSTEM.to_string()).chain(store.tickets()?.into_iter().map(|t| t.id));
        for id in ids {
            let r = one(&id)?;
            checked += 1;
            if !r.verified {
                broken.push(r);
            }
        }
        Ok(Json(Verification::All(AllChains {
            checked,
            verified: broken.is_empty(),
            broken,
        })))
    })
}

/// One chain checked against its recorded head.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ChainCheck {
    /// The ticket, or `system`.
    ticket: String,
    /// Events in the chain.
    events: u64,
    /// Whether every link and the recorded head check out.
    verified: bool,
    /// Hash of the last event, if any.
    head: Option<String>,
    /// What is wrong, when something is.
    error: Option<String>,
}

/// Every chain checked: the system trail and each ticket's.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct AllChains {
    /// Chains checked.
    checked: u64,
    /// Whether all of them verify.
    verified: bool,
    /// The ones that do not.
    broken: Vec<ChainCheck>,
}

/// `GET /v1/audit/verify`: one chain with `ticket`, all without.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Verification {
    One(ChainCheck),
    All(AllChains),
}
