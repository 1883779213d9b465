//! `/v1/tickets`: create (one subject each), read with its trail, list, and
//! approve / reject / cancel / retry.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorBody;
use super::read_policy::{self, Pins};
use super::{ApiError, AppState};
use crate::auth::{Principal, Role};
use crate::intake::NewTicket;
use crate::scheduler::machine::Event;
use crate::store::{Listing, TicketSummary as Summary};
use crate::ticket::{Ticket, TicketState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(cancel))
        .routes(routes!(run_now))
        .routes(routes!(retry))
        .routes(routes!(batch_show))
        .routes(routes!(batch_retry))
        .routes(routes!(batch_cancel))
}

#[utoipa::path(post, path = "/v1/tickets", tag = "tickets",
    request_body = NewTicket,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key returns the same ticket (200)")),
    responses((status = 201, description = "Created", body = Ticket), (status = 200, description = "The ticket this key created before", body = Ticket), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "The subject already has an open ticket of this workflow (named in the body); `allow_duplicate` creates one anyway", body = ErrorBody), (status = 413, description = "Inputs over an intake limit, named in the body", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "Unknown workflow, missing inputs or invalid definition", body = ErrorBody)))]
async fn create(
    State(app): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Result<Json<NewTicket>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    who.require(Role::Operator, "create tickets")?;
    let Json(req) = body?;
    let key = idempotency_key(&headers)?;
    let (ticket, created) = app.scheduler.create(req, &who.name, key.as_deref()).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(ticket),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[param(inline)]
    state: Option<TicketState>,
    workflow: Option<String>,
    subject: Option<String>,
    batch: Option<String>,
    /// Only the tickets related to this one (its incidents, its problem,
    /// its parent or children, ...), as its `links` name them.
    related_to: Option<String>,
    /// Created at or after this instant (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    created_after: Option<String>,
    /// Created before this instant (RFC 3339).
    created_before: Option<String>,
    /// At most this many (default 1000); `total` says how many matched.
    limit: Option<usize>,
    /// The page after this cursor: the `next` of the page before (keyset
    /// paging: each page costs its own length, however deep).
    after: Option<String>,
    /// Skip this many matches first (costs as many reads as it skips:
    /// prefer `after`).
    offset: Option<usize>,
    /// `oldest` first (default) or `newest` first.
    #[param(inline)]
    order: Option<Order>,
}

/// List order.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum Order {
    /// Oldest first.
    Oldest,
    /// Newest first.
    Newest,
}

/// RFC 3339 to ms since the epoch, or a 400 naming the parameter.
pub(super) fn instant(name: &str, value: &Option<String>) -> Result<Option<u64>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            humantime::parse_rfc3339_weak(v)
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0)
                })
                .map_err(|e| {
                    ApiError::bad_request(format!("`{name}` = {v:?} is not an RFC 3339 time: {e}"))
                })
        })
        .transpose()
}

/// A page of tickets.
#[derive(Serialize, utoipa::ToSchema)]
struct TicketList {
    /// The page, in the order asked for.
    tickets: Vec<Summary>,
    /// How many matched, before `offset` and `limit`.
    total: usize,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<String>,
}

/// A step of the ticket's pinned workflow definition.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkflowStep {
    name: String,
    plugin: String,
    depends_on: Vec<String>,
    /// The group that must approve it, if any (a committee: its groups, comma-separated).
    approval_role: Option<String>,
}

/// A ticket with its pinned steps and its audit trail, verified.
#[derive(Serialize, utoipa::ToSchema)]
struct TicketView {
    /// What of the ticket the caller sees: `whole`, or `task` (their
    /// task steps and those steps' trail events; no inputs, no other
    /// steps). Who sees what: the README's roles section.
    view: String,
    /// The kind of work its workflow is: request, incident, problem, change.
    kind: crate::workflow::priority::Kind,
    /// Its priority, from its workflow's matrix and its impact and urgency.
    priority: Option<String>,
    ticket: Ticket,
    /// The pinned definition's steps, in the workflow's order.
    workflow_steps: Vec<WorkflowStep>,
    /// The ticket's hash-chained events, oldest first (in a `task` view,
    /// only its task steps' events).
    trail: Vec<crate::audit::AuditEvent>,
    /// Whether the whole trail's hash chain verifies up to the ticket's
    /// head (checked by the server on every event, shown or not).
    trail_verified: bool,
    /// Why it does not, when it does not.
    trail_error: Option<String>,
    /// The SLA now: its deadline, and the time left, in business hours
    /// when its workflow has a calendar.
    sla: Option<SlaView>,
    /// What undoes each step, most dependent first, when a step fails for
    /// good (a workflow with `on_failure = "compensate"`): the rollback
    /// plan approvers read before they vote. Empty otherwise.
    rollback_plan: Vec<crate::workflow::rollback::Undo>,
}

/// Where a ticket's SLA stands.
#[derive(Serialize, utoipa::ToSchema)]
struct SlaView {
    /// The deadline (ms since the epoch).
    deadline_ms: u64,
    /// When it is (or was) at risk.
    at_risk_ms: Option<u64>,
    /// The calendar it counts on, if any.
    calendar: Option<String>,
    /// Clock time left (0 once past).
    remaining_ms: u64,
    /// Business time left on the calendar (the clock's when none).
    remaining_business_ms: u64,
    /// At risk (recorded).
    at_risk: bool,
    /// Breached (recorded).
    breached: bool,
}

/// The `Idempotency-Key` header, if sent; a 400 if it is malformed.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
    {
        Some(Ok(k)) if !k.is_empty() && k.len() <= 200 => Ok(Some(k)),
        Some(_) => Err(ApiError::bad_request(
            "Idempotency-Key must be 1-200 visible ASCII characters",
        )),
        None => Ok(None),
    }
}

/// The request was applied.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Ack {
    /// Always true.
    ok: bool,
}

pub(super) const ACK: Ack = Ack { ok: true };

#[utoipa::path(get, path = "/v1/tickets", tag = "tickets", params(ListQuery),
    responses((status = 200, description = "Tickets, oldest first", body = TicketList), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 404, description = "`related_to` names no ticket the caller may see", body = ErrorBody)))]
async fn list(
    State(app): State<AppState>,
    Caller(who): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TicketList>, ApiError> {
    let Query(q) = query?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000);
    let listing = Listing {
        state: q.state,
        workflow: q.workflow,
        subject: q.subject,
        batch: q.batch,
        created_from_ms: instant("created_after", &q.created_after)?,
        created_before_ms: instant("created_before", &q.created_before)?,
        after: q.after,
        newest_first: matches!(q.order, Some(Order::Newest)),
        limit,
        readers: None,
    };
    let related_to = q.related_to;
    let (page, total) = app
        .read(move |store| match &related_to {
            Some(anchor) => read_policy::related_page(store, &who, anchor, &listing, offset, limit),
            None => read_policy::page(store, &who, &listing, offset, limit),
        })
        .await?;
    Ok(Json(TicketList {
        tickets: page.tickets,
        total,
        next: page.next,
    }))
}

/// The longest a `GET /v1/tickets/{id}?wait=` holds the request.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// Long-poll: answer once the ticket changes (its trail grows past
    /// `seen` events), or after this long (e.g. `30s`; at most 60 s) with the
    /// ticket as it is.
    wait: Option<String>,
    /// How many trail events the caller has seen (the `len` of
    /// `ticket.head` it last read); default: as many as the ticket has now.
    seen: Option<u64>,
}

/// Hold a request until ticket `id` has more than `seen` events, or `wait`
/// passes. Subscribes before it reads, so no change slips between.
async fn wait_for_change(
    app: &AppState,
    id: &str,
    seen: Option<u64>,
    wait: std::time::Duration,
) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut sub = app.scheduler.watchers().subscribe(id);
    let len = || {
        let id = id.to_string();
        app.read(move |store| {
            store
                .ticket(&id)?
                .map(|t| t.head.len)
                .ok_or_else(|| crate::Error::NotFound(format!("no ticket {id}")))
        })
    };
    let seen = match seen {
        Some(n) => n,
        None => len().await?,
    };
    while len().await? <= seen {
        if !sub.next(deadline).await {
            break;
        }
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/tickets/{id}", tag = "tickets", params(("id" = String, Path, description = "Ticket id (T-...)"), ShowQuery),
    responses((status = 200, description = "The ticket, its trail and whether the trail verifies", body = TicketView), (status = 400, description = "Malformed input (`wait`, `seen`), named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn show(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TicketView>, ApiError> {
    let Query(q) = query?;
    if let Some(wait) = q.wait.as_deref() {
        // Before holding the request: a ticket the caller may not see
        // answers 404 at once, as one that does not exist does.
        read_policy::require_visible(&app, &who, &id).await?;
        let wait = humantime::parse_duration(wait)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "`wait` = {wait:?} is not a duration (e.g. 30s): {e}"
                ))
            })?
            .min(MAX_WAIT);
        wait_for_change(&app, &id, q.seen, wait).await?;
    }
    let (mut ticket, mut trail, pinned, view) = app
        .read(move |store| {
            let mut pins = Pins::default();
            let (ticket, view) = read_policy::view(store, &who, &id, &mut pins)?;
            let mut trail = store.events(&id)?;
            // Two reads: a commit landing between them adds events past
            // the head just read. The ticket and its trail are shown as
            // of the same commit, and verified so.
            trail.truncate(ticket.head.len as usize);
            let pinned = pins.of(store, &ticket)?.cloned();
            Ok((ticket, trail, pinned, view))
        })
        .await?;
    let verified = app.verified.verify(&ticket.id, &trail, &ticket.head);
    // Read before a task view drops the inputs it comes from.
    let kind = pinned.as_ref().map(|wf| wf.kind).unwrap_or_default();
    let priority = pinned
        .as_ref()
        .and_then(|wf| wf.priority.as_ref()?.of(&ticket.inputs))
        .map(str::to_string);
    // What undoes each step if the change fails, for approvers before they
    // vote; in a task view, nothing of the other steps.
    let rollback_plan = match (&pinned, &view) {
        (Some(wf), crate::access::View::Whole) => {
            crate::workflow::rollback::plan(wf, &ticket.inputs)
        }
        _ => Vec::new(),
    };
    view.redact(&mut ticket, &mut trail);
    // The pinned definition's steps, in the workflow's order, so a page can
    // draw the timeline as the author laid it out.
    let steps: Vec<WorkflowStep> = pinned
        .as_ref()
        .map(|wf| {
            wf.steps
                .iter()
                .filter(|s| view.shows_step(&s.name))
                .map(|s| WorkflowStep {
                    name: s.name.clone(),
                    plugin: s.plugin.clone(),
                    depends_on: s.depends_on.clone(),
                    approval_role: s.approval.as_ref().map(|a| a.voters().join(", ")),
                })
                .collect()
        })
        .unwrap_or_default();
    let sla = ticket.sla_deadline_ms.map(|deadline| {
        let now = crate::ticket::now_ms();
        let calendar = pinned.as_ref().and_then(|wf| wf.sla_calendar());
        let left = if ticket.state.is_terminal() {
            0
        } else {
            deadline.saturating_sub(now)
        };
        SlaView {
            deadline_ms: deadline,
            at_risk_ms: ticket.sla_at_risk_ms,
            calendar: pinned.as_ref().and_then(|wf| wf.calendar.clone()),
            remaining_ms: left,
            remaining_business_ms: match calendar {
                Some(c) if left > 0 => c.between(now, deadline).unwrap_or(0),
                _ => left,
            },
            at_risk: ticket.sla_at_risk,
            breached: ticket.sla_breached,
        }
    });
    Ok(Json(TicketView {
        view: view.as_str().to_string(),
        kind,
        priority,
        sla,
        rollback_plan,
        ticket,
        workflow_steps: steps,
        trail,
        trail_verified: verified.is_ok(),
        trail_error: verified.err().map(|e| e.to_string()),
    }))
}

/// A JSON body that may be left out (empty, or `null`); a present one must
/// parse, and a 400 names what is wrong with it.
fn optional_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Option<T>>(body)
        .map_err(|e| ApiError::bad_request(format!("the JSON body is not valid: {e}")))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    comment: String,
}

async fn decide(
    app: AppState,
    by: Principal,
    id: String,
    body: Option<Decision>,
    approve: bool,
) -> Result<Json<Ack>, ApiError> {
    read_policy::require_visible(&app, &by, &id).await?;
    let comment = body.unwrap_or_default().comment;
    let event = if approve {
        Event::Approve { by, comment }
    } else {
        Event::Reject { by, comment }
    };
    app.scheduler.send(&id, event).await?;
    Ok(Json(ACK))
}

#[utoipa::path(post, path = "/v1/tickets/{id}/approve", tag = "approvals", params(("id" = String, Path, description = "Ticket id (T-...)")), request_body(content = Decision, description = "Optional"),
    responses((status = 200, description = "Approved", body = Ack), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Does not apply in the ticket's state", body = ErrorBody)))]
async fn approve(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Ack>, ApiError> {
    decide(app, who, id, optional_body(&body)?, true).await
}

#[utoipa::path(post, path = "/v1/tickets/{id}/reject", tag = "approvals", params(("id" = String, Path, description = "Ticket id (T-...)")), request_body(content = Decision, description = "Optional"),
    responses((status = 200, description = "Rejected", body = Ack), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Does not apply in the ticket's state", body = ErrorBody)))]
async fn reject(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Ack>, ApiError> {
    decide(app, who, id, optional_body(&body)?, false).await
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: String,
}

#[utoipa::path(post, path = "/v1/tickets/{id}/cancel", tag = "tickets", params(("id" = String, Path, description = "Ticket id (T-...)")), request_body(content = CancelBody, description = "Optional"),
    responses((status = 200, description = "Cancelled", body = Ack), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Does not apply in the ticket's state", body = ErrorBody)))]
async fn cancel(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Ack>, ApiError> {
    who.require(Role::Operator, "cancel tickets")?;
    let reason = optional_body::<CancelBody>(&body)?
        .unwrap_or_default()
        .reason;
    app.scheduler
        .send(
            &id,
            Event::Cancel {
                by: who.name,
                reason,
            },
        )
        .await?;
    Ok(Json(ACK))
}

/// Why a scheduled step runs before its time.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RunNowBody {
    /// Recorded in the trail; required.
    reason: String,
}

/// Run a step that waits for its time (`not_before`, `delay`) now. The
/// reason and who gave it go to the trail.
#[utoipa::path(post, path = "/v1/tickets/{id}/steps/{step}/run-now", tag = "tickets", params(("id" = String, Path, description = "Ticket id (T-...)"), ("step" = String, Path, description = "Step name")), request_body = RunNowBody,
    responses((status = 200, description = "The step starts now", body = Ack), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "The step is not waiting for its time", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "No reason given", body = ErrorBody)))]
async fn run_now(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, step)): Path<(String, String)>,
    body: Result<Json<RunNowBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Ack>, ApiError> {
    who.require(Role::Operator, "run steps before their time")?;
    let Json(body) = body?;
    if body.reason.trim().is_empty() {
        return Err(crate::Error::Usage(
            "`reason` is empty: say why the step runs before its time".into(),
        )
        .into());
    }
    app.scheduler
        .send(
            &id,
            Event::RunNow {
                step,
                by: who.name,
                reason: body.reason.trim().to_string(),
            },
        )
        .await?;
    Ok(Json(ACK))
}

#[utoipa::path(post, path = "/v1/tickets/{id}/retry", tag = "tickets", params(("id" = String, Path, description = "Ticket id (T-...)")),
    responses((status = 200, description = "Failed steps run again", body = Ack), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Does not apply in the ticket's state", body = ErrorBody)))]
async fn retry(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Ack>, ApiError> {
    who.require(Role::Operator, "retry tickets")?;
    app.scheduler
        .send(&id, Event::Retry { by: who.name })
        .await?;
    Ok(Json(ACK))
}

/// How far a running import is.
#[derive(Serialize, utoipa::ToSchema)]
struct ImportProgress {
    /// Rows in the file.
    rows: usize,
    /// Rows handled so far.
    done: usize,
}

/// A batch. While its import runs, only `import` is filled in (the counts
/// are null and `tickets` empty); afterwards `import` is null.
#[derive(Serialize, utoipa::ToSchema)]
struct BatchView {
    batch: String,
    import: Option<ImportProgress>,
    /// Tickets in the batch.
    total: Option<usize>,
    /// Tickets in a terminal state.
    finished: Option<usize>,
    /// Ticket counts by state name.
    by_state: std::collections::BTreeMap<String, usize>,
    tickets: Vec<Summary>,
}

/// A ticket a batch action did not apply to, and why: its `state`, or the
/// `error` the action met.
#[derive(Serialize, utoipa::ToSchema)]
struct Skipped {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<TicketState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What a batch action did, per ticket.
#[derive(Serialize, utoipa::ToSchema)]
struct BatchAction {
    batch: String,
    /// Tickets it applied to.
    applied: Vec<String>,
    skipped: Vec<Skipped>,
}

/// A batch: counts by state, its tickets, and an import's progress while it runs.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = String, Path, description = "Batch id (B-... or H-...)")),
    responses((status = 200, description = "Counts by state, tickets, and a running import's progress", body = BatchView), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn batch_show(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(batch): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    // While the batch is being imported, its progress is the answer: a
    // client polling it (`itsm ticket import`) must not make the server
    // decode every ticket a few times a second while it creates them.
    // Progress says how large a layoff is: only for those who read every
    // ticket; anyone else sees the batch's tickets they may see.
    let progress = app
        .imports
        .get(&batch)
        .filter(|_| crate::access::reads_every_ticket(&who));
    if let Some((rows, done)) = progress {
        return Ok(Json(BatchView {
            batch,
            import: Some(ImportProgress { rows, done }),
            total: None,
            finished: None,
            by_state: Default::default(),
            tickets: Vec::new(),
        }));
    }
    let tickets = batch_tickets(&app, &who, &batch).await?;
    if tickets.is_empty() {
        return Err(crate::Error::NotFound(format!("no tickets in batch {batch}")).into());
    }
    let mut by_state = std::collections::BTreeMap::<String, usize>::new();
    for t in &tickets {
        let state = serde_json::to_value(t.state).expect("state serializes");
        *by_state
            .entry(state.as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    Ok(Json(BatchView {
        batch,
        total: Some(tickets.len()),
        by_state,
        finished: Some(tickets.iter().filter(|t| t.state.is_terminal()).count()),
        import: None,
        tickets,
    }))
}

/// Every ticket of a batch `who` may see, oldest first, through the
/// batch index.
async fn batch_tickets(
    app: &AppState,
    who: &Principal,
    batch: &str,
) -> Result<Vec<Summary>, ApiError> {
    let listing = Listing {
        batch: Some(batch.to_string()),
        limit: usize::MAX,
        ..Listing::default()
    };
    let who = who.clone();
    let (page, _) = app
        .read(move |store| read_policy::page(store, &who, &listing, 0, usize::MAX))
        .await?;
    Ok(page.tickets)
}

/// Apply one event to every ticket of a batch it fits; report per ticket.
async fn batch_action(
    app: &AppState,
    who: &Principal,
    batch: &str,
    fits: fn(TicketState) -> bool,
    event: impl Fn() -> Event,
) -> Result<Json<BatchAction>, ApiError> {
    let tickets = batch_tickets(app, who, batch).await?;
    if tickets.is_empty() {
        return Err(crate::Error::NotFound(format!("no tickets in batch {batch}")).into());
    }
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    for t in tickets {
        if !fits(t.state) {
            skipped.push(Skipped {
                id: t.id,
                state: Some(t.state),
                error: None,
            });
            continue;
        }
        match app.scheduler.send(&t.id, event()).await {
            Ok(()) => done.push(t.id),
            Err(e) => skipped.push(Skipped {
                id: t.id,
                state: None,
                error: Some(e.to_string()),
            }),
        }
    }
    Ok(Json(BatchAction {
        batch: batch.to_string(),
        applied: done,
        skipped,
    }))
}

#[utoipa::path(post, path = "/v1/batches/{id}/retry", tag = "batches", params(("id" = String, Path, description = "Batch id (B-... or H-...)")),
    responses((status = 200, description = "Retried the failed tickets; others listed as skipped", body = BatchAction), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn batch_retry(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(batch): Path<String>,
) -> Result<Json<BatchAction>, ApiError> {
    who.require(Role::Operator, "retry tickets")?;
    let by = who.name.clone();
    batch_action(
        &app,
        &who,
        &batch,
        |s| s == TicketState::Failed,
        || Event::Retry { by: by.clone() },
    )
    .await
}

#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = String, Path, description = "Batch id (B-... or H-...)")), request_body(content = CancelBody, description = "Optional"),
    responses((status = 200, description = "Cancelled the open tickets", body = BatchAction), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn batch_cancel(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(batch): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<BatchAction>, ApiError> {
    who.require(Role::Operator, "cancel tickets")?;
    let by = who.name.clone();
    let reason = optional_body::<CancelBody>(&body)?
        .unwrap_or_default()
        .reason;
    batch_action(
        &app,
        &who,
        &batch,
        |s| !s.is_terminal(),
        || Event::Cancel {
            by: by.clone(),
            reason: reason.clone(),
        },
    )
    .await
}
