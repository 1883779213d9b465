//! `/v1/audit`: the trail of one ticket or of a date range, exported as
//! JSON, JSON lines or CSV, and verified against the recorded chain heads.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::tickets::instant;
use super::{ApiError, AppState};
use crate::audit::system::SYSTEM;
use crate::audit::{self, AuditEvent};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(verify))
}

/// Export format.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    /// `{"events": [...]}`.
    #[default]
    Json,
    /// One event per line: what `itsm audit verify --file` checks offline.
    Jsonl,
    /// One event per row; `data` as a JSON string.
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

/// The events a query selects, ordered by time, then ticket, then seq.
fn select(app: &AppState, q: &AuditQuery) -> Result<Vec<AuditEvent>, ApiError> {
    let from = instant("from", &q.from)?;
    let to = instant("to", &q.to)?;
    let store = app.scheduler.store();
    let mut events = match q.ticket.as_deref() {
        Some(SYSTEM) => app.system.events()?,
        Some(id) => {
            if store.ticket(id)?.is_none() {
                return Err(crate::Error::NotFound(format!("no ticket {id}")).into());
            }
            store.events(id)?
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
    Ok(events)
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Events (JSON, JSON lines or CSV by `format`)", content(
        (serde_json::Value = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))), (status = 400, description = "Malformed input, named in the body", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = serde_json::Value), (status = 404, description = "Not found", body = serde_json::Value)))]
async fn export(
    State(app): State<AppState>,
    _: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let events = tokio::task::block_in_place(|| select(&app, &q))?;
    Ok(match q.format {
        Format::Json => Json(json!({ "events": events })).into_response(),
        Format::Jsonl => {
            let mut body = String::new();
            for e in &events {
                body.push_str(&serde_json::to_string(e).expect("event serializes"));
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Format::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&events)?,
        )
            .into_response(),
    })
}

/// Columns: what an auditor's spreadsheet wants first, the chain last.
fn to_csv(events: &[AuditEvent]) -> Result<String, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let internal = |e: csv::Error| ApiError::from(crate::Error::Store(e.to_string()));
    w.write_record([
        "ticket_id",
        "seq",
        "at",
        "kind",
        "principal",
        "step",
        "plugin",
        "plugin_version",
        "data",
        "prev_hash",
        "hash",
    ])
    .map_err(internal)?;
    for e in events {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms);
        let kind = serde_json::to_value(e.kind).expect("kind serializes");
        w.write_record([
            e.ticket_id.as_str(),
            &e.seq.to_string(),
            &humantime::format_rfc3339_millis(at).to_string(),
            kind.as_str().unwrap_or_default(),
            &e.principal,
            e.step.as_deref().unwrap_or_default(),
            e.plugin.as_ref().map_or("", |p| p.name.as_str()),
            e.plugin.as_ref().map_or("", |p| p.version.as_str()),
            &e.data.to_string(),
            &e.prev_hash,
            &e.hash,
        ])
        .map_err(internal)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::from(crate::Error::Store(e.to_string())))?;
    Ok(String::from_utf8(bytes).expect("csv of strings is UTF-8"))
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
    responses((status = 200, description = "Verification of one chain or all", body = serde_json::Value), (status = 400, description = "Malformed input, named in the body", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = serde_json::Value), (status = 404, description = "Not found", body = serde_json::Value)))]
async fn verify(
    State(app): State<AppState>,
    _: Caller,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    tokio::task::block_in_place(|| {
        let store = app.scheduler.store();
        let one = |id: &str| -> Result<Value, ApiError> {
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
            Ok(json!({
                "ticket": id,
                "events": events.len(),
                "verified": result.is_ok(),
                "head": events.last().map(|e| e.hash.clone()),
                "error": result.err().map(|e| e.to_string()),
            }))
        };
        if let Some(id) = q.ticket.as_deref() {
            return Ok(Json(one(id)?));
        }
        let mut checked = 0;
        let mut broken = Vec::new();
        let ids =
            std::iter::once(SYSTEM.to_string()).chain(store.tickets()?.into_iter().map(|t| t.id));
        for id in ids {
            let r = one(&id)?;
            checked += 1;
            if r["verified"] != true {
                broken.push(r);
            }
        }
        Ok(Json(json!({
            "checked": checked,
            "verified": broken.is_empty(),
            "broken": broken,
        })))
    })
}
