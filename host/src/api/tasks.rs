//! Human tasks: the inbox (`GET /v1/tasks`), completion and reassignment.
//!
//! Who may do a task is the machine's check (the assignee, by e-mail or
//! name, or a member of its group or escalation group), so no route can
//! skip it; these routes only carry the caller and the answers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorBody;
use super::tickets::ACK;
use super::{ApiError, AppState, tickets::Ack};
use crate::scheduler::machine::Event;
use crate::store::Listing;
use crate::ticket::{StepStatus, TicketState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(complete))
        .routes(routes!(reassign))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TaskQuery {
    /// Only the caller's: assigned to their e-mail or name, or to a group
    /// they are in.
    #[serde(default)]
    mine: bool,
    /// Only this group's.
    group: Option<String>,
}

/// An open task, with what the person needs to do it.
#[derive(Serialize, utoipa::ToSchema)]
struct TaskView {
    /// The ticket.
    ticket: String,
    /// The task's step.
    step: String,
    /// Who the ticket is about.
    subject: String,
    /// The ticket's workflow.
    workflow: String,
    /// The person it is assigned to.
    assignee: Option<String>,
    /// The group whose members may do it.
    group: Option<String>,
    /// Overdue, the group it went to as well.
    escalated_to: Option<String>,
    /// What to do.
    instructions: String,
    /// The items to answer.
    checklist: Vec<String>,
    /// When it is due (ms since the epoch).
    due_ms: Option<u64>,
    /// The due time as the workflow put it.
    due: Option<String>,
    /// Past its due time.
    overdue: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TaskList {
    /// Oldest ticket first.
    tasks: Vec<TaskView>,
}

/// Open human tasks: the caller's (`mine`, or always for a caller who
/// does not read every ticket), everyone's, or a group's.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", operation_id = "list_tasks", params(TaskQuery),
    responses((status = 200, description = "Open tasks", body = TaskList), (status = 400, description = "Malformed query, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody)))]
async fn list(
    State(app): State<AppState>,
    Caller(who): Caller,
    query: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    let Query(q) = query?;
    let tasks = app
        .read(move |store| {
            let mut out = Vec::new();
            // Tickets share a few pinned definitions: read each once.
            let mut pinned: std::collections::HashMap<String, Option<crate::workflow::Workflow>> =
                std::collections::HashMap::new();
            // A task waits in a ticket that is waiting for it, or running
            // other steps beside it.
            for state in [TicketState::WaitingTask, TicketState::Running] {
                let mut after = None;
                loop {
                    let page = store.list(&Listing {
                        state: Some(state),
                        after: after.clone(),
                        limit: 500,
                        ..Listing::default()
                    })?;
                    for summary in &page.tickets {
                        let Some(t) = store.ticket(&summary.id)? else {
                            continue;
                        };
                        if !pinned.contains_key(&t.workflow_hash) {
                            let wf = store.workflow(&t.workflow, &t.workflow_hash)?;
                            pinned.insert(t.workflow_hash.clone(), wf);
                        }
                        let Some(Some(wf)) = pinned.get(&t.workflow_hash) else {
                            continue;
                        };
                        for (step, s) in &t.steps {
                            let (Some(k), Some(def)) = (
                                s.task
                                    .as_ref()
                                    .filter(|_| s.status == StepStatus::WaitingTask),
                                wf.step(step).and_then(|d| d.task.as_ref()),
                            ) else {
                                continue;
                            };
                            let groups = [&k.group, &k.escalated_to];
                            let in_group = |g: &str| groups.iter().any(|x| x.as_deref() == Some(g));
                            if q.group.as_deref().is_some_and(|g| !in_group(g)) {
                                continue;
                            }
                            if !crate::access::sees_task(&who, k, q.mine) {
                                continue;
                            }
                            out.push(TaskView {
                                ticket: t.id.clone(),
                                step: step.clone(),
                                subject: t.subject.clone(),
                                workflow: t.workflow.clone(),
                                assignee: k.assignee.clone(),
                                group: k.group.clone(),
                                escalated_to: k.escalated_to.clone(),
                                instructions: def.instructions.clone(),
                                checklist: def.checklist.clone(),
                                due_ms: k.due_ms,
                                due: k.due.clone(),
                                overdue: k.overdue,
                            });
                        }
                    }
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
            out.sort_by(|a, b| (&a.ticket, &a.step).cmp(&(&b.ticket, &b.step)));
            Ok(out)
        })
        .await?;
    Ok(Json(TaskList { tasks }))
}

/// A task done: a note, and an answer for every checklist item.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    /// Required when an item is answered `false`.
    #[serde(default)]
    note: String,
    /// Each checklist item: done (`true`) or not.
    #[serde(default)]
    checklist: BTreeMap<String, bool>,
}

/// Complete a human task, as its assignee or a member of its group.
#[utoipa::path(post, path = "/v1/tickets/{id}/steps/{step}/complete", tag = "tasks", params(("id" = String, Path, description = "Ticket id (T-...)"), ("step" = String, Path, description = "The task's step")), request_body = CompleteBody,
    responses((status = 200, description = "Done; the ticket moves on", body = Ack), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "Not the assignee nor in the task's group", body = ErrorBody), (status = 404, description = "No such ticket or task", body = ErrorBody), (status = 409, description = "The task is not waiting to be done", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "A checklist item unanswered or unknown, or a `false` without a note", body = ErrorBody)))]
async fn complete(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, step)): Path<(String, String)>,
    body: Result<Json<CompleteBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Ack>, ApiError> {
    let Json(body) = body?;
    super::read_policy::require_visible(&app, &who, &id).await?;
    app.scheduler
        .send(
            &id,
            Event::CompleteTask {
                step,
                by: who,
                note: body.note,
                checklist: body.checklist,
            },
        )
        .await?;
    Ok(Json(ACK))
}

/// Who takes the task over, and why.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReassignBody {
    /// The new assignee's e-mail.
    to: String,
    /// Recorded in the trail; required.
    reason: String,
}

/// Give a human task to someone else (an operator, its assignee, or a
/// member of its group).
#[utoipa::path(post, path = "/v1/tickets/{id}/steps/{step}/reassign", tag = "tasks", params(("id" = String, Path, description = "Ticket id (T-...)"), ("step" = String, Path, description = "The task's step")), request_body = ReassignBody,
    responses((status = 200, description = "Reassigned", body = Ack), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "Not an operator, the assignee, or in the task's group", body = ErrorBody), (status = 404, description = "No such ticket or task", body = ErrorBody), (status = 409, description = "The task is not waiting to be done", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "`to` is not an e-mail, or no reason", body = ErrorBody)))]
async fn reassign(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path((id, step)): Path<(String, String)>,
    body: Result<Json<ReassignBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Ack>, ApiError> {
    let Json(body) = body?;
    super::read_policy::require_visible(&app, &who, &id).await?;
    app.scheduler
        .send(
            &id,
            Event::ReassignTask {
                step,
                by: who,
                to: body.to,
                reason: body.reason,
            },
        )
        .await?;
    Ok(Json(ACK))
}
