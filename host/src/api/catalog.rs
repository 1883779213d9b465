//! `/v1/catalog`: the service catalog. A person signed in lists the items
//! their groups may request, each with its form, and requests one for
//! themselves (see [`crate::workflow::catalog`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::intake::NewTicket;
use crate::ticket::Ticket;
use crate::workflow::InputDef;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_catalog))
        .routes(routes!(request_item))
}

/// One item the caller may request.
#[derive(Serialize, utoipa::ToSchema)]
struct Item {
    /// The workflow's name: `POST /v1/catalog/{name}` requests it.
    name: String,
    title: String,
    description: String,
    /// request, incident, problem or change.
    kind: crate::workflow::priority::Kind,
    /// A standard request: no approval.
    preapproved: bool,
    /// The form: the workflow's declared inputs by name (`type`,
    /// `required`, `default`, `values`, `description`).
    #[schema(value_type = Object)]
    form: BTreeMap<String, InputDef>,
}

/// The catalog as the caller sees it.
#[derive(Serialize, utoipa::ToSchema)]
struct Catalog {
    items: Vec<Item>,
}

#[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
    responses((status = 200, description = "The items the caller's groups may request, by title", body = Catalog), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody)))]
async fn list_catalog(State(app): State<AppState>, Caller(who): Caller) -> Json<Catalog> {
    let mut items: Vec<Item> = app
        .scheduler
        .workflows()
        .into_iter()
        .filter_map(|(name, wf)| {
            let c = wf.catalog.as_ref().filter(|c| c.may_request(&who))?;
            Some(Item {
                name,
                title: c.title.clone(),
                description: c.description.clone(),
                kind: wf.kind,
                preapproved: c.preapproved,
                form: wf.inputs.clone(),
            })
        })
        .collect();
    items.sort_by(|a, b| a.title.cmp(&b.title));
    Json(Catalog { items })
}

/// A request: the form's answers.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Request {
    /// The answers, by input name (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    inputs: Value,
}

#[utoipa::path(post, path = "/v1/catalog/{name}", tag = "catalog",
    params(("name" = String, Path, description = "The item's workflow name"),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key returns the same ticket (200)")),
    request_body = Request,
    responses((status = 201, description = "Requested: the caller's ticket, whose subject is the caller", body = Ticket), (status = 200, description = "The ticket this key created before", body = Ticket), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The caller's groups may not request this item (named)", body = ErrorBody), (status = 404, description = "No catalog item of this name", body = ErrorBody), (status = 409, description = "The caller has an open request of this item", body = ErrorBody), (status = 413, description = "Inputs over an intake limit, named in the body", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "A field missing or not of its type, named", body = ErrorBody)))]
async fn request_item(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Request>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    let Json(req) = body?;
    let wf = app
        .scheduler
        .workflows()
        .remove(&name)
        .filter(|wf| wf.catalog.is_some())
        .ok_or_else(|| crate::Error::NotFound(format!("no catalog item `{name}`")))?;
    let item = wf.catalog.as_ref().expect("filtered");
    if !item.may_request(&who) {
        return Err(crate::Error::Forbidden(format!(
            "{} may not request `{name}`: it is for the groups {} (you are in: {})",
            who.name,
            item.groups.join(", "),
            if who.roles.is_empty() {
                "none".to_string()
            } else {
                who.roles.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        ))
        .into());
    }
    let key = super::tickets::idempotency_key(&headers)?;
    let subject = who.email.clone().unwrap_or_else(|| who.name.clone());
    let ticket = NewTicket {
        workflow: name,
        subject,
        inputs: if req.inputs.is_null() {
            Value::Object(Default::default())
        } else {
            req.inputs
        },
        batch: None,
        allow_duplicate: false,
    };
    let (ticket, created) = app
        .scheduler
        .create(ticket, &who.name, key.as_deref())
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(ticket),
    ))
}
