//! The ticket state machine, as a pure function.
//!
//! `apply(ticket, context, event)` changes the ticket and returns the audit
//! events to append and the plugin calls to make. It does no I/O: the engine
//! commits the new ticket and its events durably first, then makes the calls
//! (write-ahead), and tests assert on the returned values.

mod advance;
mod approvals;
mod calls;
mod conditions;
#[cfg(test)]
mod fixtures;
mod links;
mod tasks;

use serde_json::{Value, json};

use self::advance::advance;
use self::approvals::decide;
use self::calls::{finish_call, interrupt_running, retry, setup_failed};
use self::conditions::run_now;
use self::links::link;
use self::tasks::{complete_task, reassign_task};

use crate::audit::{AuditKind, Draft, PluginRef};
use crate::error::{Error, Result};
use crate::principal::Principal;
use crate::runtime::{CallReport, Op};
use crate::ticket::{StepStatus, Ticket, TicketState};
use crate::workflow::Workflow;

/// Something that happened to a ticket.
#[derive(Debug, Clone)]
pub enum Event {
    /// The ticket was just created.
    Created {
        /// Who asked.
        by: String,
    },
    /// The host restarted; calls that were running died with it.
    Recovered,
    /// The host is shutting down and its grace period is over: calls still
    /// running are abandoned, to run again (same idempotency key) on the
    /// next start.
    Interrupted,
    /// A plugin call returned.
    CallFinished {
        /// Which step.
        step: String,
        /// The report.
        report: Box<CallReport>,
    },
    /// A call could not be set up (bad config, missing secret): fatal.
    CallSetupFailed {
        /// Which step.
        step: String,
        /// Which export.
        op: Op,
        /// Why.
        message: String,
    },
    /// A human approved the waiting step.
    Approve {
        /// Who, with their roles: the machine checks the step's approval
        /// group and separation of duties, so no caller can skip them.
        by: Principal,
        /// Why.
        comment: String,
    },
    /// A human rejected the waiting step.
    Reject {
        /// Who, with their roles: the machine checks the step's approval
        /// group and separation of duties, so no caller can skip them.
        by: Principal,
        /// Why.
        comment: String,
    },
    /// Stop the ticket.
    Cancel {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Run a scheduled step now rather than at its time.
    RunNow {
        /// Which step.
        step: String,
        /// Who.
        by: String,
        /// Why (recorded in the trail).
        reason: String,
    },
    /// A person did a human task.
    CompleteTask {
        /// Which step.
        step: String,
        /// Who, with their roles and e-mail: the machine checks they are
        /// the assignee or in the task's group.
        by: Principal,
        /// What they say (required when a checklist item is not done).
        note: String,
        /// An answer for every checklist item.
        checklist: std::collections::BTreeMap<String, bool>,
    },
    /// Give a human task to someone else.
    ReassignTask {
        /// Which step.
        step: String,
        /// Who: an operator, the assignee, or a member of the task's group.
        by: Principal,
        /// The new assignee's e-mail.
        to: String,
        /// Why (recorded in the trail).
        reason: String,
    },
    /// Relate the ticket to another (a no-op when it already is so).
    Link {
        /// How this ticket relates to the other.
        rel: crate::ticket::Rel,
        /// The other ticket's id.
        other: String,
        /// Who (a person, or `hook:NAME` for a correlation).
        by: String,
    },
    /// Run a failed ticket again from its failed steps.
    Retry {
        /// Who.
        by: String,
    },
    /// Time passed: retries may be due, the SLA may be breached.
    Tick,
}

/// A plugin call to make after the transition is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which step.
    pub step: String,
    /// Which export.
    pub op: Op,
    /// The attempt number recorded for it.
    pub attempt: u32,
}

/// What a transition produced.
#[derive(Debug, Default)]
pub struct Transition {
    /// Audit events to append, in order.
    pub drafts: Vec<Draft>,
    /// Calls to make once committed.
    pub calls: Vec<Call>,
}

/// What the machine may consult besides the ticket.
pub struct Context<'a> {
    /// The ticket's pinned workflow.
    pub workflow: &'a Workflow,
    /// Plugin identity for the trail, by plugin name.
    pub plugins: &'a std::collections::BTreeMap<String, PluginRef>,
    /// Plugins a workflow may name that did not load, with why: their steps
    /// wait rather than fail.
    pub unavailable: &'a std::collections::BTreeMap<String, String>,
    /// Now, in ms since the epoch.
    pub now_ms: u64,
    /// A random number in [0, 1) for backoff jitter.
    pub random: f64,
}

/// Apply `event` to `ticket`.
pub fn apply(t: &mut Ticket, cx: &Context<'_>, event: Event) -> Result<Transition> {
    let mut tr = Transition::default();
    // Shutting down: record, start nothing (the next start runs them).
    let start_ready = !matches!(event, Event::Interrupted);
    match event {
        Event::Created { by } => {
            tr.drafts.push(
                Draft::new(
                    AuditKind::Created,
                    json!({
                        "workflow": t.workflow,
                        "workflow_version": t.workflow_version,
                        "workflow_hash": t.workflow_hash,
                        "subject": t.subject,
                        "inputs": t.inputs,
                        "batch": t.batch,
                        "sla_deadline_ms": t.sla_deadline_ms,
                    }),
                )
                .by(&by),
            );
            if !cx.workflow.triage.is_empty() {
                triage(t, cx, &mut tr);
            }
        }
        Event::Recovered => interrupt_running(t, cx, None, &mut tr),
        Event::Interrupted => interrupt_running(t, cx, Some("shutdown"), &mut tr),
        Event::CallFinished { step, report } => finish_call(t, cx, &step, *report, &mut tr),
        Event::CallSetupFailed { step, op, message } => {
            setup_failed(t, cx, &step, op, message, &mut tr)
        }
        Event::Approve { by, comment } => decide(t, cx, true, by, comment, &mut tr)?,
        Event::Reject { by, comment } => decide(t, cx, false, by, comment, &mut tr)?,
        Event::Cancel { by, reason } => {
            if t.state.is_terminal() {
                return Err(Error::Conflict(format!(
                    "ticket {} is already {}",
                    t.id,
                    t.state.as_str()
                )));
            }
            t.state = TicketState::Cancelled;
            tr.drafts
                .push(Draft::new(AuditKind::Cancelled, json!({ "reason": reason })).by(&by));
        }
        Event::RunNow { step, by, reason } => run_now(t, cx, &step, &by, reason, &mut tr)?,
        Event::CompleteTask {
            step,
            by,
            note,
            checklist,
        } => complete_task(t, cx, &step, by, note, checklist, &mut tr)?,
        Event::ReassignTask {
            step,
            by,
            to,
            reason,
        } => reassign_task(t, cx, &step, by, to, reason, &mut tr)?,
        Event::Retry { by } => retry(t, &by, &mut tr)?,
        Event::Link { rel, other, by } => link(t, cx, rel, other, &by, &mut tr)?,
        Event::Tick => {}
    }
    if start_ready {
        advance(t, cx, &mut tr);
    }
    t.updated_ms = cx.now_ms;
    Ok(tr)
}

/// Route a new ticket by its workflow's triage rules, saying in the trail
/// which rule decided (or that none did, and why a rule could not).
fn triage(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
    let r = crate::workflow::triage::route(cx.workflow, &t.subject, &t.inputs);
    t.routed_to = r.group.clone();
    let when = r.rule.map(|i| cx.workflow.triage[i - 1].when.clone());
    let errors: Vec<Value> = r
        .errors
        .iter()
        .map(|(i, why)| json!({ "rule": i, "error": why }))
        .collect();
    tr.drafts.push(Draft::new(
        AuditKind::Triaged,
        json!({ "group": r.group, "rule": r.rule, "when": when, "errors": errors }),
    ));
}

/// When the ticket next needs a [`Event::Tick`]: a due retry or its SLA.
pub fn next_wake(t: &Ticket) -> Option<u64> {
    if t.state.is_terminal() {
        return None;
    }
    // Retries due, and steps waiting for their time: both at `retry_at_ms`.
    let retries = t
        .steps
        .values()
        .filter(|s| matches!(s.status, StepStatus::RetryWait | StepStatus::Scheduled))
        .filter_map(|s| s.retry_at_ms);
    let sla = t.sla_deadline_ms.filter(|_| !t.sla_breached);
    let at_risk = t
        .sla_at_risk_ms
        .filter(|_| !t.sla_at_risk && !t.sla_breached);
    // Approval requests: their deadline, once.
    let approvals = t
        .steps
        .values()
        .filter(|s| s.status == StepStatus::WaitingApproval)
        .filter_map(|s| s.approval.as_ref())
        .filter(|a| !a.overdue)
        .filter_map(|a| a.due_ms);
    // Tasks: their due time (once) and their next reminder.
    let tasks = t
        .steps
        .values()
        .filter(|s| s.status == StepStatus::WaitingTask)
        .filter_map(|s| s.task.as_ref())
        .flat_map(|k| [k.due_ms.filter(|_| !k.overdue), k.remind_at_ms])
        .flatten();
    retries
        .chain(sla)
        .chain(at_risk)
        .chain(approvals)
        .chain(tasks)
        .min()
}

/// The `prior-outputs` a call of `op` on `step` is given: the outputs of the
/// other steps whose `run` succeeded, by name, and for `verify` and
/// `compensate` also the step's own `run` outputs under its own name, so a
/// plugin proves or undoes exactly what its run recorded. A `run` never sees
/// its own key, even when it runs again after a retry of the ticket.
pub fn prior_outputs(t: &Ticket, step: &str, op: Op) -> Value {
    let map: serde_json::Map<String, Value> = t
        .steps
        .iter()
        .filter(|(n, _)| op != Op::Run || n.as_str() != step)
        .filter_map(|(n, s)| s.outputs.clone().map(|o| (n.clone(), o)))
        .collect();
    Value::Object(map)
}
