//! `POST /v1/tickets/{id}/links`: a person relates two tickets (a change
//! to the problem it fixes, an incident to another). Listing a ticket's
//! related tickets is `GET /v1/tickets?related_to=`; correlation makes
//! links of its own (`scheduler/correlate.rs`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::ticket::{Link, Rel};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(relate))
}

/// A relation to make.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewLink {
    /// How the ticket in the path relates to `ticket`.
    rel: Rel,
    /// The other ticket's id.
    ticket: String,
}

/// A ticket's relations after the change.
#[derive(Serialize, utoipa::ToSchema)]
struct Links {
    /// The ticket.
    id: String,
    /// Every relation it has, oldest first (the new one included).
    links: Vec<Link>,
}

#[utoipa::path(post, path = "/v1/tickets/{id}/links", tag = "tickets",
    params(("id" = String, Path, description = "Ticket id (T-...)")), request_body = NewLink,
    responses((status = 200, description = "Related (on both tickets, each in its trail; a relation already there is left as it is)", body = Links), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Either ticket does not exist (named)", body = ErrorBody), (status = 409, description = "A ticket holds as many relations as it may", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "An unknown relation, or a ticket related to itself, named", body = ErrorBody)))]
async fn relate(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Result<Json<NewLink>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Links>), ApiError> {
    who.require(Role::Operator, "relate tickets")?;
    let Json(req) = body?;
    // Both must exist before either is written.
    let other = req.ticket.clone();
    let exists = app
        .read(move |store| Ok(store.ticket(&other)?.is_some()))
        .await?;
    if !exists {
        return Err(crate::Error::NotFound(format!("no ticket {}", req.ticket)).into());
    }
    app.scheduler
        .link(&id, req.rel, &req.ticket, &who.name)
        .await?;
    let read = id.clone();
    let links = app
        .read(move |store| {
            store
                .ticket(&read)?
                .map(|t| t.links)
                .ok_or_else(|| crate::Error::NotFound(format!("no ticket {read}")))
        })
        .await?;
    Ok((StatusCode::OK, Json(Links { id, links })))
}
