//! The ticket state machine, as a pure function.
//!
//! `apply(ticket, context, event)` changes the ticket and returns the audit
//! events to append and the plugin calls to make. It does no I/O: the engine
//! commits the new ticket and its events durably first, then makes the calls
//! (write-ahead), and tests assert on the returned values.

use serde_json::{Value, json};

use crate::audit::{AuditKind, Draft, PluginRef};
use crate::auth::{Principal, Role};
use crate::error::{Error, Result};
use crate::runtime::{CallReport, FailureKind, Op, Outcome};
use crate::ticket::{
    Attempt, AttemptResult, Decision, StepStatus, TaskRecord, Ticket, TicketState,
};
use crate::workflow::{OnFailure, Workflow};

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
        }
        Event::Recovered => interrupt_running(t, cx, None, &mut tr),
        Event::Interrupted => interrupt_running(t, cx, Some("shutdown"), &mut tr),
        Event::CallFinished { step, report } => finish_call(t, cx, &step, *report, &mut tr),
        Event::CallSetupFailed { step, op, message } => {
            let error = crate::runtime::StepFailure {
                kind: FailureKind::Fatal,
                cause: crate::runtime::FailureCause::Plugin,
                message,
                retry_after_ms: None,
            };
            let report = CallReport {
                plugin: String::new(),
                version: String::new(),
                wasm_sha256: String::new(),
                op,
                outcome: Outcome::Failed { error },
                log: Vec::new(),
                requests: Vec::new(),
                duration_ms: 0,
            };
            finish_call(t, cx, &step, report, &mut tr);
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
        Event::RunNow { step, by, reason } => {
            let s = t
                .steps
                .get_mut(&step)
                .ok_or_else(|| Error::NotFound(format!("ticket {} has no step `{step}`", t.id)))?;
            if s.status != StepStatus::Scheduled || t.state.is_terminal() {
                return Err(Error::Conflict(format!(
                    "step `{step}` of ticket {} is not waiting for its time",
                    t.id
                )));
            }
            s.run_early = Some(Decision {
                approved: true,
                by: by.clone(),
                comment: reason.clone(),
                at_ms: cx.now_ms,
            });
            tr.drafts.push(
                Draft::new(
                    AuditKind::RunEarly,
                    json!({ "reason": reason, "was_due_ms": s.retry_at_ms }),
                )
                .step(&step)
                .by(&by),
            );
        }
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
        Event::Retry { by } => {
            if t.state != TicketState::Failed {
                return Err(Error::Conflict(format!(
                    "ticket {} is {}; only a failed ticket can be retried",
                    t.id,
                    t.state.as_str()
                )));
            }
            let mut again = Vec::new();
            for (name, s) in t.steps.iter_mut() {
                if s.status == StepStatus::Failed {
                    s.status = StepStatus::Pending;
                    s.retry_at_ms = None;
                    if s.decision.as_ref().is_some_and(|d| !d.approved) {
                        s.decision = None;
                    }
                    again.push(name.clone());
                }
            }
            t.compensating = false;
            t.state = TicketState::Running;
            tr.drafts
                .push(Draft::new(AuditKind::RetryRequested, json!({ "steps": again })).by(&by));
        }
        Event::Tick => {}
    }
    if start_ready {
        advance(t, cx, &mut tr);
    }
    t.updated_ms = cx.now_ms;
    Ok(tr)
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

fn plugin_of(cx: &Context<'_>, step: &str) -> Option<PluginRef> {
    cx.workflow
        .step(step)
        .and_then(|d| cx.plugins.get(&d.plugin).cloned())
}

/// Record a human vote on the step waiting for approval; the step goes on
/// once its committee's quorum has approved, and fails by its rejection
/// rule. Only an approver who did not request the ticket votes, once, for
/// a group of theirs that has not voted yet.
fn decide(
    t: &mut Ticket,
    cx: &Context<'_>,
    approved: bool,
    by: Principal,
    comment: String,
    tr: &mut Transition,
) -> Result<()> {
    use crate::workflow::committee::{NoSeat, Standing};
    if t.state.is_terminal() {
        return Err(Error::Conflict(format!(
            "ticket {} is {}: nothing to decide",
            t.id,
            t.state.as_str()
        )));
    }
    let name = waiting_step(t)?;
    by.require(Role::Approver, "approve or reject")?;
    if by.name == t.requested_by {
        return Err(Error::Forbidden(format!(
            "separation of duties: {} requested or imported ticket {} and may not decide on it",
            by.name, t.id
        )));
    }
    let Some(rule) = cx.workflow.step(&name).and_then(|d| d.approval.as_ref()) else {
        return Err(Error::Conflict(format!("step `{name}` needs no approval")));
    };
    let s = t.steps.get_mut(&name).expect("step exists");
    let record = s.approval.get_or_insert_with(Default::default);
    if record.votes.iter().any(|v| v.by == by.name) {
        return Err(Error::Conflict(format!(
            "{} has already voted on step `{name}`; a committee needs distinct approvers",
            by.name
        )));
    }
    let escalated = record.overdue;
    let group = rule
        .seat(&by.roles, &cast(&record.votes), escalated)
        .map_err(|e| match e {
            NoSeat::NotInGroup(why) => Error::Forbidden(format!(
                "step `{name}` {why}; {} has: {}",
                by.name,
                by.roles_list()
            )),
            NoSeat::Voted(why) => Error::Conflict(format!("step `{name}`: {why}")),
        })?
        .to_string();
    record.votes.push(crate::ticket::Vote {
        approved,
        by: by.name.clone(),
        group: group.clone(),
        comment: comment.clone(),
        at_ms: cx.now_ms,
    });
    let standing = rule.standing(&cast(&record.votes), escalated);
    let approvals = record.votes.iter().filter(|v| v.approved).count();
    let kind = if approved {
        AuditKind::Approved
    } else {
        AuditKind::Rejected
    };
    let mut data = json!({ "comment": comment });
    if !rule.groups.is_empty() {
        data["group"] = group.into();
        data["approvals"] = approvals.into();
        data["quorum"] = rule.quorum().into();
        data["decided"] = (standing != Standing::Open).into();
    }
    tr.drafts
        .push(Draft::new(kind, data).step(&name).by(&by.name));
    let decided = match standing {
        Standing::Open => return Ok(()),
        Standing::Approved => true,
        Standing::Rejected => false,
    };
    s.status = if decided {
        StepStatus::Pending
    } else {
        StepStatus::Failed
    };
    s.decision = Some(Decision {
        approved: decided,
        by: by.name,
        comment,
        at_ms: cx.now_ms,
    });
    Ok(())
}

/// Votes as the committee rules read them.
fn cast(votes: &[crate::ticket::Vote]) -> Vec<crate::workflow::committee::Vote<'_>> {
    votes
        .iter()
        .map(|v| crate::workflow::committee::Vote {
            group: &v.group,
            approved: v.approved,
            by: &v.by,
        })
        .collect()
}

/// Approval requests past their deadline: overdue, once, and escalated.
fn approval_timers(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
    for (name, s) in t.steps.iter_mut() {
        if s.status != StepStatus::WaitingApproval {
            continue;
        }
        let (Some(record), Some(rule)) = (
            s.approval.as_mut(),
            cx.workflow.step(name).and_then(|d| d.approval.as_ref()),
        ) else {
            continue;
        };
        if let Some(due) = record.due_ms
            && !record.overdue
            && cx.now_ms >= due
        {
            record.overdue = true;
            tr.drafts.push(
                Draft::new(
                    AuditKind::ApprovalOverdue,
                    json!({ "due_ms": due, "escalated_to": rule.escalate_to, "votes": record.votes.len() }),
                )
                .step(name),
            );
        }
    }
}

fn waiting_step(t: &Ticket) -> Result<String> {
    t.steps
        .iter()
        .find(|(_, s)| s.status == StepStatus::WaitingApproval)
        .map(|(n, _)| n.clone())
        .ok_or_else(|| Error::Conflict(format!("ticket {} has no step waiting for approval", t.id)))
}

/// Mark every running step's attempt interrupted, to run again at once
/// with the same idempotency key. `reason` says why when it is not a
/// restart (the host shut down before the call returned).
fn interrupt_running(t: &mut Ticket, cx: &Context<'_>, reason: Option<&str>, tr: &mut Transition) {
    for (name, s) in t.steps.iter_mut() {
        if s.status != StepStatus::Running {
            continue;
        }
        if let Some(a) = s.attempts.last_mut() {
            a.result = AttemptResult::Interrupted;
            a.ended_ms = Some(cx.now_ms);
            let mut data = json!({ "attempt": a.n, "op": a.op });
            if let Some(r) = reason {
                data["reason"] = r.into();
            }
            tr.drafts.push(
                Draft::new(AuditKind::StepInterrupted, data)
                    .step(name)
                    .plugin(plugin_of(cx, name)),
            );
        }
        // Same idempotency key, right away.
        s.status = StepStatus::RetryWait;
        s.retry_at_ms = Some(cx.now_ms);
    }
}

fn finish_call(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    report: CallReport,
    tr: &mut Transition,
) {
    let Some(s) = t.steps.get_mut(step) else {
        return;
    };
    let Some(a) = s.attempts.last_mut() else {
        return;
    };
    if a.result != AttemptResult::Running || a.op != report.op {
        return; // a stale result (the attempt was interrupted and replaced)
    }
    a.ended_ms = Some(cx.now_ms);
    a.log = report.log.clone();
    a.requests = report.requests.clone();
    let n = a.n;
    let op = report.op;
    let plugin = if report.plugin.is_empty() {
        plugin_of(cx, step)
    } else {
        Some(PluginRef {
            name: report.plugin.clone(),
            version: report.version.clone(),
            wasm_sha256: report.wasm_sha256.clone(),
        })
    };
    let draft = |kind, data| Draft::new(kind, data).step(step).plugin(plugin.clone());
    match report.outcome {
        Outcome::Succeeded { outputs, evidence } => {
            a.result = AttemptResult::Succeeded;
            match op {
                Op::Run => {
                    tr.drafts.push(draft(
                        AuditKind::StepSucceeded,
                        json!({ "attempt": n, "outputs": outputs, "evidence": evidence, "requests": report.requests }),
                    ));
                    s.outputs = outputs;
                    s.evidence = Some(evidence);
                    let verify = cx.workflow.step(step).is_some_and(|d| d.verify);
                    if verify && !t.state.is_terminal() {
                        s.next_op = Op::Verify;
                        s.status = StepStatus::RetryWait;
                        s.retry_at_ms = Some(cx.now_ms);
                    } else {
                        s.status = StepStatus::Succeeded;
                    }
                }
                Op::Verify => {
                    tr.drafts.push(draft(
                        AuditKind::StepVerified,
                        json!({ "attempt": n, "evidence": evidence, "requests": report.requests }),
                    ));
                    s.verification = Some(evidence);
                    s.status = StepStatus::Succeeded;
                }
                Op::Compensate => {
                    tr.drafts.push(draft(
                        AuditKind::Compensated,
                        json!({ "attempt": n, "evidence": evidence }),
                    ));
                    s.compensation = Some(serde_json::to_value(&evidence).unwrap_or(Value::Null));
                    s.status = StepStatus::Compensated;
                }
            }
        }
        Outcome::Failed { error } => {
            a.result = AttemptResult::Failed {
                error: error.clone(),
            };
            tr.drafts.push(draft(
                AuditKind::StepFailed,
                json!({ "attempt": n, "op": op, "error": error }),
            ));
            if op == Op::Compensate {
                tr.drafts.push(draft(
                    AuditKind::CompensationFailed,
                    json!({ "error": error.message }),
                ));
                s.compensation = Some(json!({ "error": error }));
                s.status = StepStatus::Succeeded;
                return;
            }
            let policy = cx
                .workflow
                .step(step)
                .map(|d| d.retry.clone())
                .unwrap_or_default();
            // `run` and `verify` each have `max_attempts`: a verify that
            // needs retries (the change not visible yet) does not eat the
            // budget of the run that made the change, nor the reverse.
            let first_ms = s.attempts.first().map_or(cx.now_ms, |a| a.started_ms);
            let deadline_ms = first_ms.saturating_add(policy.deadline.as_millis() as u64);
            let failures = s
                .attempts
                .iter()
                .filter(|a| a.op == op && uses_an_attempt(a, deadline_ms))
                .count() as u32;
            if error.kind == FailureKind::Retryable
                && failures < policy.max_attempts
                && !t.state.is_terminal()
            {
                let wait = policy.backoff(
                    failures + 1,
                    cx.random,
                    error.retry_after_ms.map(std::time::Duration::from_millis),
                );
                let at = cx.now_ms + wait.as_millis() as u64;
                s.status = StepStatus::RetryWait;
                s.retry_at_ms = Some(at);
                let counted = s
                    .attempts
                    .last()
                    .is_some_and(|a| uses_an_attempt(a, deadline_ms));
                tr.drafts.push(draft(AuditKind::RetryScheduled, json!({ "after_attempt": n, "retry_at_ms": at, "wait_ms": wait.as_millis() as u64, "op": op, "counted": counted, "failures": failures, "max_attempts": policy.max_attempts })));
            } else {
                s.status = StepStatus::Failed;
            }
        }
    }
}

/// Whether a finished attempt uses one of its op's `max_attempts`: any
/// failure does, except a retryable one whose service asked to come back
/// (`Retry-After`) at a time within the step's deadline.
fn uses_an_attempt(a: &Attempt, deadline_ms: u64) -> bool {
    match &a.result {
        AttemptResult::Failed { error } => match error.retry_after_ms {
            Some(wait) if error.kind == FailureKind::Retryable => {
                a.ended_ms.unwrap_or(a.started_ms).saturating_add(wait) > deadline_ms
            }
            _ => true,
        },
        _ => false,
    }
}

fn start(t: &mut Ticket, cx: &Context<'_>, step: &str, op: Op, tr: &mut Transition) {
    let s = t.steps.get_mut(step).expect("step exists");
    let wanted = cx.workflow.step(step).map(|d| d.plugin.as_str());
    if let Some((plugin, why)) = wanted
        .filter(|p| !cx.plugins.contains_key(*p))
        .and_then(|p| cx.unavailable.get(p).map(|why| (p, why)))
    {
        // No attempt: nothing was called. Said once, when it starts waiting.
        if s.status != StepStatus::WaitingPlugin {
            s.status = StepStatus::WaitingPlugin;
            s.next_op = op;
            s.retry_at_ms = None;
            tr.drafts.push(
                Draft::new(
                    AuditKind::StepWaiting,
                    json!({
                        "op": op,
                        "reason": format!("plugin {plugin} is not loaded: {why}"),
                    }),
                )
                .step(step),
            );
        }
        return;
    }
    let n = s.attempts.len() as u32 + 1;
    s.attempts.push(Attempt {
        n,
        op,
        started_ms: cx.now_ms,
        ended_ms: None,
        result: AttemptResult::Running,
        log: Vec::new(),
        requests: Vec::new(),
    });
    s.status = StepStatus::Running;
    s.next_op = op;
    s.retry_at_ms = None;
    tr.drafts.push(
        Draft::new(AuditKind::StepStarted, json!({ "attempt": n, "op": op }))
            .step(step)
            .plugin(plugin_of(cx, step)),
    );
    tr.calls.push(Call {
        step: step.to_string(),
        op,
        attempt: n,
    });
}

/// Start what can start and settle the ticket's state.
fn advance(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
    if t.state.is_terminal() {
        return;
    }
    if let Some(deadline) = t.sla_deadline_ms
        && !t.sla_breached
        && cx.now_ms >= deadline
    {
        t.sla_breached = true;
        tr.drafts.push(Draft::new(
            AuditKind::SlaBreached,
            json!({ "deadline_ms": deadline }),
        ));
    }
    if let Some(at) = t.sla_at_risk_ms
        && !t.sla_at_risk
        && !t.sla_breached
        && cx.now_ms >= at
    {
        t.sla_at_risk = true;
        tr.drafts.push(Draft::new(
            AuditKind::SlaAtRisk,
            json!({ "at_risk_ms": at, "deadline_ms": t.sla_deadline_ms, "calendar": cx.workflow.calendar }),
        ));
    }
    task_timers(t, cx, tr);
    approval_timers(t, cx, tr);
    let count = |t: &Ticket, st: StepStatus| t.steps.values().filter(|s| s.status == st).count();
    let failed = count(t, StepStatus::Failed) > 0;
    if failed && cx.workflow.on_failure == OnFailure::Compensate && !t.compensating {
        t.compensating = true;
    }
    // Steps waiting for their plugin start once it is loaded: an undo
    // while compensating, a run otherwise (a run that never started is as
    // good as pending once the ticket is being undone).
    let waiting = |t: &Ticket, undo: bool| -> Vec<(String, Op)> {
        t.steps
            .iter()
            .filter(|(_, s)| {
                s.status == StepStatus::WaitingPlugin && (s.next_op == Op::Compensate) == undo
            })
            .map(|(n, s)| (n.clone(), s.next_op))
            .collect()
    };
    if t.compensating {
        for (step, op) in waiting(t, true) {
            start(t, cx, &step, op, tr);
        }
        if count(t, StepStatus::Running) > 0 || !waiting(t, true).is_empty() {
            return;
        }
        // Undo the most recently completed step first.
        let next = t
            .steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Succeeded && s.compensation.is_none())
            // A person's task has no plugin to undo it.
            .filter(|(n, _)| cx.workflow.step(n).is_some_and(|d| d.task.is_none()))
            .max_by_key(|(_, s)| s.attempts.iter().filter_map(|a| a.ended_ms).max())
            .map(|(n, _)| n.clone());
        match next {
            Some(step) => start(t, cx, &step, Op::Compensate, tr),
            None => finish(t, TicketState::Failed, tr),
        }
        return;
    }
    if !failed {
        let due: Vec<(String, Op)> = t
            .steps
            .iter()
            .filter(|(_, s)| {
                s.status == StepStatus::RetryWait && s.retry_at_ms.is_some_and(|at| at <= cx.now_ms)
            })
            .map(|(n, s)| (n.clone(), s.next_op))
            .collect();
        for (step, op) in due.into_iter().chain(waiting(t, false)) {
            start(t, cx, &step, op, tr);
        }
        // A skipped step is done: its dependants may be ready now, wherever
        // they are in the file, so look again until nothing more is skipped.
        while start_ready_steps(t, cx, tr) {}
        if count(t, StepStatus::Failed) > 0 {
            // A condition that could not be decided failed its step: settle
            // as for any failure (stop, or compensate what is done).
            return advance(t, cx, tr);
        }
    }
    let running = count(t, StepStatus::Running) > 0;
    let retrying = count(t, StepStatus::RetryWait) > 0;
    if failed {
        if !running {
            finish(t, TicketState::Failed, tr);
        }
        return;
    }
    if t.steps.values().all(|s| s.status.is_done()) {
        finish(t, TicketState::Succeeded, tr);
        return;
    }
    t.state = if running || retrying {
        TicketState::Running
    } else if count(t, StepStatus::WaitingTask) > 0 {
        TicketState::WaitingTask
    } else if count(t, StepStatus::WaitingApproval) > 0 {
        TicketState::WaitingApproval
    } else {
        TicketState::Running
    };
}

/// Start (or send for approval, or skip) each pending step whose
/// dependencies are done. Whether any step was skipped.
fn start_ready_steps(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) -> bool {
    let mut skipped = false;
    for def in &cx.workflow.steps {
        let ready = t
            .steps
            .get(&def.name)
            .is_some_and(|s| matches!(s.status, StepStatus::Pending | StepStatus::Scheduled))
            && def
                .depends_on
                .iter()
                .all(|d| t.steps.get(d).is_some_and(|s| s.status.is_done()));
        if !ready {
            continue;
        }
        if let Some(when) = &def.when {
            match decide_condition(t, cx, &def.name, when) {
                Ok(true) => {}
                Ok(false) => {
                    skipped = true;
                    let s = t.steps.get_mut(&def.name).expect("step exists");
                    s.status = StepStatus::Skipped;
                    tr.drafts.push(
                        Draft::new(AuditKind::StepSkipped, read_values(t, when, false))
                            .step(&def.name),
                    );
                    continue;
                }
                Err(why) => {
                    let mut data = read_values(t, when, false);
                    data["value"] = Value::Null;
                    data["error"] = why.into();
                    let s = t.steps.get_mut(&def.name).expect("step exists");
                    s.status = StepStatus::Failed;
                    tr.drafts
                        .push(Draft::new(AuditKind::ConditionFailed, data).step(&def.name));
                    continue;
                }
            }
        }
        if !time_has_come(t, cx, def, tr) {
            continue;
        }
        if let Some(task) = &def.task {
            assign_task(t, cx, &def.name, task, tr);
            continue;
        }
        let s = t.steps.get_mut(&def.name).expect("step exists");
        match (&def.approval, &s.decision) {
            (Some(approval), None) => {
                s.status = StepStatus::WaitingApproval;
                let due_ms = approval
                    .deadline
                    .map(|d| cx.now_ms.saturating_add(d.as_millis() as u64));
                s.approval = Some(crate::ticket::ApprovalRecord {
                    votes: Vec::new(),
                    due_ms,
                    overdue: false,
                });
                let mut data = json!({ "role": approval.voters()[0] });
                if !approval.groups.is_empty() {
                    data["groups"] = json!(approval.groups);
                    data["quorum"] = approval.quorum().into();
                }
                if let Some(due) = due_ms {
                    data["due_ms"] = due.into();
                }
                tr.drafts
                    .push(Draft::new(AuditKind::ApprovalRequested, data).step(&def.name));
            }
            _ => start(t, cx, &def.name, Op::Run, tr),
        }
    }
    skipped
}

/// Give a ready task to its person or group: `waiting_task`, with when it
/// is due and when to remind. A task that cannot be assigned (its assignee
/// input is empty and it has no group; its due time does not read) fails.
fn assign_task(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    def: &crate::workflow::task::TaskDef,
    tr: &mut Transition,
) {
    let assigned = def.assign(cx.workflow, &t.inputs, cx.now_ms);
    let s = t.steps.get_mut(step).expect("step exists");
    let a = match assigned {
        Ok(a) => a,
        Err(why) => {
            s.status = StepStatus::Failed;
            tr.drafts.push(
                Draft::new(
                    AuditKind::StepFailed,
                    json!({ "error": format!("the task cannot be assigned: {why}") }),
                )
                .step(step),
            );
            return;
        }
    };
    s.status = StepStatus::WaitingTask;
    let record = TaskRecord {
        assignee: a.assignee,
        group: def.group.clone(),
        due_ms: a.due.as_ref().map(|d| d.at_ms),
        due: a.due.map(|d| d.shown),
        overdue: false,
        escalated_to: None,
        remind_at_ms: def
            .remind_every
            .map(|every| cx.now_ms.saturating_add(every.as_millis() as u64)),
        reminders: 0,
        done: None,
    };
    tr.drafts.push(
        Draft::new(
            AuditKind::TaskAssigned,
            json!({
                "assignee": record.assignee,
                "group": record.group,
                "due_ms": record.due_ms,
                "due": record.due,
                "due_utc": record.due_ms.map(crate::workflow::time::utc),
                "checklist": def.checklist,
            }),
        )
        .step(step),
    );
    s.task = Some(record);
}

/// Overdue tasks escalate (once) and reminders fall due.
fn task_timers(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
    for (name, s) in t.steps.iter_mut() {
        if s.status != StepStatus::WaitingTask {
            continue;
        }
        let (Some(k), Some(def)) = (
            s.task.as_mut(),
            cx.workflow.step(name).and_then(|d| d.task.as_ref()),
        ) else {
            continue;
        };
        if let Some(due) = k.due_ms
            && !k.overdue
            && cx.now_ms >= due
        {
            k.overdue = true;
            k.escalated_to = def.escalate_to.clone();
            tr.drafts.push(
                Draft::new(
                    AuditKind::TaskOverdue,
                    json!({ "due_ms": due, "assignee": k.assignee, "escalated_to": k.escalated_to }),
                )
                .step(name),
            );
        }
        if let (Some(at), Some(every)) = (k.remind_at_ms, def.remind_every)
            && cx.now_ms >= at
        {
            k.reminders += 1;
            k.remind_at_ms = Some(cx.now_ms.saturating_add(every.as_millis() as u64));
            tr.drafts.push(
                Draft::new(
                    AuditKind::TaskReminded,
                    json!({ "n": k.reminders, "assignee": k.assignee, "group": k.group }),
                )
                .step(name),
            );
        }
    }
}

/// The waiting task `step`, its definition and record, or why not.
fn waiting_task<'a>(
    t: &'a mut Ticket,
    cx: &Context<'a>,
    step: &str,
) -> Result<(
    &'a crate::workflow::task::TaskDef,
    &'a mut crate::ticket::StepRecord,
)> {
    let id = t.id.clone();
    let def = cx
        .workflow
        .step(step)
        .and_then(|d| d.task.as_ref())
        .ok_or_else(|| Error::NotFound(format!("ticket {id} has no task `{step}`")))?;
    let s = t
        .steps
        .get_mut(step)
        .ok_or_else(|| Error::NotFound(format!("ticket {id} has no task `{step}`")))?;
    if s.status != StepStatus::WaitingTask {
        return Err(Error::Conflict(format!(
            "task `{step}` of ticket {id} is not waiting to be done (it is {})",
            serde_json::to_value(s.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )));
    }
    Ok((def, s))
}

/// Whether `by` may do the task: its assignee, or in its group or (once
/// escalated) its escalation group.
fn may_do_task(k: &TaskRecord, by: &Principal) -> bool {
    k.assignee.as_deref().is_some_and(|a| by.is(a))
        || [&k.group, &k.escalated_to]
            .into_iter()
            .flatten()
            .any(|g| by.roles.contains(g))
}

fn complete_task(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    by: Principal,
    note: String,
    checklist: std::collections::BTreeMap<String, bool>,
    tr: &mut Transition,
) -> Result<()> {
    let id = t.id.clone();
    let (def, s) = waiting_task(t, cx, step)?;
    let k = s.task.as_mut().expect("a waiting task has its record");
    if !may_do_task(k, &by) {
        return Err(Error::Forbidden(format!(
            "{} may not do task `{step}` of ticket {id}: it is assigned to {}{}",
            by.name,
            k.assignee.as_deref().unwrap_or("nobody in person"),
            [&k.group, &k.escalated_to]
                .into_iter()
                .flatten()
                .map(|g| format!(" and group `{g}`"))
                .collect::<String>()
        )));
    }
    let answers = def.answers(&checklist, &note).map_err(Error::Usage)?;
    let note = note.trim().to_string();
    tr.drafts.push(
        Draft::new(
            AuditKind::TaskCompleted,
            json!({ "note": note, "checklist": answers, "assignee": k.assignee }),
        )
        .step(step)
        .by(&by.name),
    );
    s.outputs = Some(json!({ "completed_by": by.name, "note": note, "checklist": answers }));
    k.done = Some(crate::ticket::TaskDone {
        by: by.name,
        note,
        checklist: answers,
        at_ms: cx.now_ms,
    });
    k.remind_at_ms = None;
    s.status = StepStatus::Succeeded;
    Ok(())
}

fn reassign_task(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    by: Principal,
    to: String,
    reason: String,
    tr: &mut Transition,
) -> Result<()> {
    let id = t.id.clone();
    let (def, s) = waiting_task(t, cx, step)?;
    let k = s.task.as_mut().expect("a waiting task has its record");
    if !(by.has(Role::Operator) || may_do_task(k, &by)) {
        return Err(Error::Forbidden(format!(
            "{} may not reassign task `{step}` of ticket {id}: that needs the `operator` role, \
             or to be its assignee or in its group",
            by.name
        )));
    }
    let to = to.trim().to_lowercase();
    if !crate::workflow::inputs::is_email(&to) {
        return Err(Error::Usage(format!(
            "`to`: {to:?} is not an e-mail address"
        )));
    }
    if reason.trim().is_empty() {
        return Err(Error::Usage(
            "`reason` is empty: say why the task moves".into(),
        ));
    }
    tr.drafts.push(
        Draft::new(
            AuditKind::TaskReassigned,
            json!({ "from": k.assignee, "to": to, "reason": reason.trim() }),
        )
        .step(step)
        .by(&by.name),
    );
    k.assignee = Some(to);
    k.reminders = 0;
    k.remind_at_ms = def
        .remind_every
        .map(|every| cx.now_ms.saturating_add(every.as_millis() as u64));
    Ok(())
}

/// Whether a ready step's time (`not_before`, `delay`) has come. The first
/// time it is ready, its time is worked out and kept (`retry_at_ms`); until
/// then it is `scheduled`, once, in the trail. An operator's run-now, or a
/// `not_before` that cannot be read (the step fails), end the wait.
fn time_has_come(
    t: &mut Ticket,
    cx: &Context<'_>,
    def: &crate::workflow::StepDef,
    tr: &mut Transition,
) -> bool {
    if def.not_before.is_none() && def.delay.is_none() && def.window.is_none() {
        return true;
    }
    let inputs = t.inputs.clone();
    let s = t.steps.get_mut(&def.name).expect("step exists");
    if s.run_early.is_some() {
        return true;
    }
    if s.status == StepStatus::Scheduled {
        return s.retry_at_ms.is_none_or(|at| at <= cx.now_ms);
    }
    match crate::workflow::time::due(cx.workflow, def, &inputs, cx.now_ms) {
        Ok(Some(due)) if due.at_ms > cx.now_ms => {
            s.status = StepStatus::Scheduled;
            s.retry_at_ms = Some(due.at_ms);
            tr.drafts.push(
                Draft::new(
                    AuditKind::StepScheduled,
                    json!({
                        "at_ms": due.at_ms,
                        "at": due.shown,
                        "utc": crate::workflow::time::utc(due.at_ms),
                    }),
                )
                .step(&def.name),
            );
            false
        }
        Ok(_) => true,
        Err(why) => {
            s.status = StepStatus::Failed;
            tr.drafts.push(
                Draft::new(
                    AuditKind::ConditionFailed,
                    json!({ "not_before": def.not_before, "error": why }),
                )
                .step(&def.name),
            );
            false
        }
    }
}

/// What the steps `step` depends on look like to its condition: name to
/// `{"status", "outputs"}`, for those done.
fn condition_steps(t: &Ticket, cx: &Context<'_>, step: &str) -> serde_json::Map<String, Value> {
    cx.workflow
        .ancestors(step)
        .into_iter()
        .filter_map(|name| {
            let s = t.steps.get(name).filter(|s| s.status.is_done())?;
            Some((
                name.to_string(),
                json!({ "status": s.status, "outputs": s.outputs.clone().unwrap_or_else(|| json!({})) }),
            ))
        })
        .collect()
}

fn decide_condition(
    t: &Ticket,
    cx: &Context<'_>,
    step: &str,
    when: &str,
) -> std::result::Result<bool, String> {
    crate::workflow::condition::evaluate(when, &t.subject, &t.inputs, &condition_steps(t, cx, step))
}

/// The trail's record of a decided condition: the expression, its value,
/// and the inputs and step outputs it read.
fn read_values(t: &Ticket, when: &str, value: bool) -> Value {
    let reads = crate::workflow::condition::reads(when);
    let inputs: serde_json::Map<String, Value> = reads
        .inputs
        .iter()
        .map(|n| (n.clone(), t.inputs.get(n).cloned().unwrap_or(Value::Null)))
        .collect();
    let steps: serde_json::Map<String, Value> = reads
        .steps
        .iter()
        .filter_map(|n| {
            let s = t.steps.get(n)?;
            Some((
                n.clone(),
                json!({ "status": s.status, "outputs": s.outputs }),
            ))
        })
        .collect();
    json!({ "when": when, "value": value, "inputs": inputs, "steps": steps })
}

fn finish(t: &mut Ticket, state: TicketState, tr: &mut Transition) {
    t.state = state;
    let kind = if state == TicketState::Succeeded {
        AuditKind::TicketSucceeded
    } else {
        AuditKind::TicketFailed
    };
    let failed: Vec<&String> = t
        .steps
        .iter()
        .filter(|(_, s)| s.status == StepStatus::Failed)
        .map(|(n, _)| n)
        .collect();
    let compensated: Vec<&String> = t
        .steps
        .iter()
        .filter(|(_, s)| s.status == StepStatus::Compensated)
        .map(|(n, _)| n)
        .collect();
    tr.drafts.push(Draft::new(
        kind,
        json!({ "failed_steps": failed, "compensated_steps": compensated }),
    ));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::{Evidence, FailureCause, StepFailure};
    use crate::ticket::StepRecord;

    fn workflow(retry: &str) -> Workflow {
        Workflow::parse(
            &format!(
                "name = \"w\"\nversion = \"1\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\nretry = {{ {retry} }}\n"
            ),
            "test",
        )
        .unwrap()
    }

    fn ticket(wf: &Workflow) -> Ticket {
        Ticket {
            id: "T-1".into(),
            workflow: wf.name.clone(),
            workflow_hash: "h".into(),
            workflow_version: wf.version.clone(),
            subject: "ann@example.com".into(),
            inputs: json!({}),
            state: TicketState::Pending,
            requested_by: "op".into(),
            batch: None,
            created_ms: 0,
            updated_ms: 0,
            sla_deadline_ms: None,
            sla_breached: false,
            sla_at_risk_ms: None,
            sla_at_risk: false,
            compensating: false,
            steps: wf
                .steps
                .iter()
                .map(|s| (s.name.clone(), StepRecord::new()))
                .collect(),
            head: Default::default(),
        }
    }

    struct Run {
        wf: Workflow,
        plugins: BTreeMap<String, PluginRef>,
        unavailable: BTreeMap<String, String>,
        t: Ticket,
    }

    impl Run {
        fn new(retry: &str) -> Self {
            let wf = workflow(retry);
            let t = ticket(&wf);
            let mut r = Self {
                wf,
                plugins: BTreeMap::new(),
                unavailable: BTreeMap::new(),
                t,
            };
            let tr = r.apply(0, Event::Created { by: "op".into() });
            assert_eq!(tr.calls.len(), 1);
            r
        }

        fn apply(&mut self, now_ms: u64, event: Event) -> Transition {
            let cx = Context {
                workflow: &self.wf,
                plugins: &self.plugins,
                unavailable: &self.unavailable,
                now_ms,
                random: 0.5,
            };
            apply(&mut self.t, &cx, event).unwrap()
        }

        /// The running call returns `outcome` at `now_ms`.
        fn finish(&mut self, now_ms: u64, op: Op, outcome: Outcome) -> Transition {
            let report = CallReport {
                plugin: "p".into(),
                version: "1".into(),
                wasm_sha256: "x".into(),
                op,
                outcome,
                log: Vec::new(),
                requests: Vec::new(),
                duration_ms: 1,
            };
            self.apply(
                now_ms,
                Event::CallFinished {
                    step: "s".into(),
                    report: Box::new(report),
                },
            )
        }

        fn step(&self) -> &crate::ticket::StepRecord {
            &self.t.steps["s"]
        }
    }

    fn failed(retry_after_ms: Option<u64>) -> Outcome {
        Outcome::Failed {
            error: StepFailure {
                kind: FailureKind::Retryable,
                cause: FailureCause::Plugin,
                message: "try later".into(),
                retry_after_ms,
            },
        }
    }

    fn ok() -> Outcome {
        Outcome::Succeeded {
            outputs: Some(json!({})),
            evidence: Evidence {
                summary: "done".into(),
                target: "t".into(),
                before: None,
                after: None,
            },
        }
    }

    #[test]
    fn waits_the_service_asked_for_use_no_attempt_until_the_deadline() {
        let mut r = Run::new("max_attempts = 2, deadline = \"10s\"");
        let mut now = 0;
        // Eight 429s in a row, each with Retry-After 1 s: the step goes on.
        for _ in 0..8 {
            now += 10;
            let tr = r.finish(now, Op::Run, failed(Some(1000)));
            assert!(tr.calls.is_empty());
            assert_eq!(r.step().status, StepStatus::RetryWait);
            let scheduled = tr.drafts.last().unwrap();
            assert_eq!(scheduled.kind, AuditKind::RetryScheduled);
            assert_eq!(scheduled.data["counted"], false, "{}", scheduled.data);
            now += 1000;
            let tr = r.apply(now, Event::Tick);
            assert_eq!(tr.calls.len(), 1, "retried at the time asked");
        }
        // Past the step's deadline they count: two more end it.
        now = 20_000;
        r.finish(now, Op::Run, failed(Some(1000)));
        assert_eq!(r.step().status, StepStatus::RetryWait);
        r.apply(now + 1000, Event::Tick);
        r.finish(now + 1010, Op::Run, failed(Some(1000)));
        assert_eq!(r.step().status, StepStatus::Failed);
        assert_eq!(r.t.state, TicketState::Failed);
    }

    #[test]
    fn a_failure_without_retry_after_uses_an_attempt() {
        let mut r = Run::new("max_attempts = 2, initial_backoff = \"10ms\"");
        let tr = r.finish(5, Op::Run, failed(None));
        assert_eq!(tr.drafts.last().unwrap().data["counted"], true);
        r.apply(100, Event::Tick);
        r.finish(105, Op::Run, failed(None));
        assert_eq!(r.step().status, StepStatus::Failed);
    }

    #[test]
    fn run_and_verify_each_have_their_own_attempts() {
        let mut r = Run::new("max_attempts = 2, initial_backoff = \"10ms\"");
        // One failed run, then the run succeeds.
        r.finish(5, Op::Run, failed(None));
        let tr = r.apply(100, Event::Tick);
        assert_eq!(tr.calls[0].op, Op::Run);
        let tr = r.finish(105, Op::Run, ok());
        assert_eq!(tr.calls[0].op, Op::Verify);
        // A failed verify: with one budget the step would have failed here
        // (two failures of two); with its own, verify goes again.
        let tr = r.finish(110, Op::Verify, failed(None));
        assert_eq!(r.step().status, StepStatus::RetryWait, "{:?}", tr.drafts);
        let tr = r.apply(200, Event::Tick);
        assert_eq!(tr.calls[0].op, Op::Verify);
        r.finish(205, Op::Verify, ok());
        assert_eq!(r.step().status, StepStatus::Succeeded);
        // And verify's own budget ends it too.
        let mut r = Run::new("max_attempts = 2, initial_backoff = \"10ms\"");
        r.finish(5, Op::Run, ok());
        r.finish(10, Op::Verify, failed(None));
        r.apply(100, Event::Tick);
        r.finish(105, Op::Verify, failed(None));
        assert_eq!(r.step().status, StepStatus::Failed);
    }

    #[test]
    fn an_interruption_at_shutdown_records_and_starts_nothing() {
        let mut r = Run::new("max_attempts = 2");
        let tr = r.apply(50, Event::Interrupted);
        assert!(tr.calls.is_empty(), "nothing starts while shutting down");
        assert_eq!(tr.drafts[0].kind, AuditKind::StepInterrupted);
        assert_eq!(tr.drafts[0].data["reason"], "shutdown");
        assert_eq!(r.step().status, StepStatus::RetryWait);
        // The next start runs it again.
        let tr = r.apply(60, Event::Recovered);
        assert_eq!(tr.calls.len(), 1);
    }

    #[test]
    fn a_step_whose_plugin_is_unavailable_waits_then_starts_once_it_is_loaded() {
        let wf = workflow("max_attempts = 1");
        let t = ticket(&wf);
        let mut r = Run {
            wf,
            plugins: BTreeMap::new(),
            unavailable: BTreeMap::from([("p".to_string(), "no plugin.wasm".to_string())]),
            t,
        };
        let tr = r.apply(0, Event::Created { by: "op".into() });
        assert!(tr.calls.is_empty(), "nothing is called");
        assert_eq!(r.t.steps["s"].status, StepStatus::WaitingPlugin);
        assert!(r.t.steps["s"].attempts.is_empty());
        let said: Vec<_> = tr
            .drafts
            .iter()
            .filter(|d| d.kind == AuditKind::StepWaiting)
            .collect();
        assert_eq!(said.len(), 1);
        assert_eq!(
            said[0].data["reason"],
            "plugin p is not loaded: no plugin.wasm"
        );
        assert_eq!(r.t.state, TicketState::Running);
        // A tick while it is still missing says nothing more.
        let tr = r.apply(10, Event::Tick);
        assert!(tr.drafts.is_empty() && tr.calls.is_empty());
        // Loaded: the next tick starts it.
        r.unavailable.clear();
        r.plugins.insert(
            "p".into(),
            PluginRef {
                name: "p".into(),
                version: "0.1.0".into(),
                wasm_sha256: "x".into(),
            },
        );
        let tr = r.apply(20, Event::Tick);
        assert_eq!(tr.calls.len(), 1);
        assert_eq!(r.t.steps["s"].status, StepStatus::Running);
    }

    /// A workflow parsed from `text` and a new ticket of it with `inputs`,
    /// kept as intake keeps them.
    fn with_inputs(text: &str, inputs: Value) -> (Workflow, Ticket) {
        let wf = Workflow::parse(text, "test").unwrap();
        let mut t = ticket(&wf);
        t.inputs = wf.check_inputs("ann@example.com", &inputs).unwrap();
        (wf, t)
    }

    /// A workflow of conditions: `find` reports whether a managed device
    /// exists; `wipe` runs only if so; `after-wipe` depends on `wipe`, and
    /// is defined before it in the file; `hold` runs only when asked.
    fn conditional(legal_hold: bool) -> (Workflow, Ticket) {
        with_inputs(
            r#"
            name = "w"
            [inputs.legal_hold]
            type = "bool"
            default = false
            [[steps]]
            name = "after-wipe"
            plugin = "p"
            depends_on = ["wipe"]
            verify = false
            [[steps]]
            name = "find"
            plugin = "p"
            verify = false
            [[steps]]
            name = "wipe"
            plugin = "p"
            depends_on = ["find"]
            when = 'steps.find.outputs.managed'
            verify = false
            [[steps]]
            name = "hold"
            plugin = "p"
            when = "inputs.legal_hold"
            verify = false
            "#,
            json!({ "legal_hold": legal_hold }),
        )
    }

    /// `step`'s run returned `outputs` (at 10 ms).
    fn finish_step(wf: &Workflow, t: &mut Ticket, step: &str, outputs: Value) -> Transition {
        let outcome = Outcome::Succeeded {
            outputs: Some(outputs),
            evidence: Evidence {
                summary: "done".into(),
                target: "t".into(),
                before: None,
                after: None,
            },
        };
        ran(wf, t, 10, step, outcome)
    }

    fn create(wf: &Workflow, t: &mut Ticket) -> Transition {
        at(wf, t, 0, Event::Created { by: "op".into() }).unwrap()
    }

    /// `event` at `now_ms`.
    fn at(wf: &Workflow, t: &mut Ticket, now_ms: u64, event: Event) -> Result<Transition> {
        let plugins = BTreeMap::new();
        let unavailable = BTreeMap::new();
        let cx = Context {
            workflow: wf,
            plugins: &plugins,
            unavailable: &unavailable,
            now_ms,
            random: 0.5,
        };
        apply(t, &cx, event)
    }

    /// `step`'s run ended with `outcome` at `now_ms`.
    fn ran(wf: &Workflow, t: &mut Ticket, now_ms: u64, step: &str, outcome: Outcome) -> Transition {
        let report = CallReport {
            plugin: "p".into(),
            version: "1".into(),
            wasm_sha256: "x".into(),
            op: Op::Run,
            outcome,
            log: Vec::new(),
            requests: Vec::new(),
            duration_ms: 1,
        };
        let event = Event::CallFinished {
            step: step.into(),
            report: Box::new(report),
        };
        at(wf, t, now_ms, event).unwrap()
    }

    #[test]
    fn a_false_condition_skips_its_step_and_its_dependants_still_run() {
        let (wf, mut t) = conditional(false);
        let tr = create(&wf, &mut t);
        // `hold` is skipped at once; `find` starts.
        let called: Vec<&str> = tr.calls.iter().map(|c| c.step.as_str()).collect();
        assert_eq!(called, ["find"]);
        assert_eq!(t.steps["hold"].status, StepStatus::Skipped);
        let skip = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::StepSkipped)
            .unwrap();
        assert_eq!(skip.data["when"], "inputs.legal_hold");
        assert_eq!(skip.data["value"], false);
        assert_eq!(skip.data["inputs"], json!({ "legal_hold": false }));

        // No managed device: `wipe` is skipped, and `after-wipe` (earlier in
        // the file) runs in the same transition.
        let tr = finish_step(&wf, &mut t, "find", json!({ "managed": false }));
        assert_eq!(t.steps["wipe"].status, StepStatus::Skipped);
        let skip = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::StepSkipped)
            .unwrap();
        assert_eq!(skip.step.as_deref(), Some("wipe"));
        assert_eq!(
            skip.data["steps"]["find"]["outputs"],
            json!({ "managed": false })
        );
        let called: Vec<&str> = tr.calls.iter().map(|c| c.step.as_str()).collect();
        assert_eq!(called, ["after-wipe"]);
        finish_step(&wf, &mut t, "after-wipe", json!({}));
        assert_eq!(
            t.state,
            TicketState::Succeeded,
            "skipped steps count as done"
        );
        assert!(t.steps["wipe"].attempts.is_empty(), "nothing was called");
    }

    #[test]
    fn a_true_condition_runs_its_step() {
        let (wf, mut t) = conditional(true);
        let tr = create(&wf, &mut t);
        let mut called: Vec<&str> = tr.calls.iter().map(|c| c.step.as_str()).collect();
        called.sort();
        assert_eq!(called, ["find", "hold"]);
        let tr = finish_step(&wf, &mut t, "find", json!({ "managed": true }));
        let called: Vec<&str> = tr.calls.iter().map(|c| c.step.as_str()).collect();
        assert_eq!(called, ["wipe"]);
        assert!(!tr.drafts.iter().any(|d| d.kind == AuditKind::StepSkipped));
    }

    #[test]
    fn a_condition_that_cannot_be_decided_fails_its_step_without_running_it() {
        let (wf, mut t) = conditional(false);
        create(&wf, &mut t);
        // `find` returned no `managed` output at all.
        let tr = finish_step(&wf, &mut t, "find", json!({ "device": "none" }));
        assert_eq!(t.steps["wipe"].status, StepStatus::Failed);
        assert!(t.steps["wipe"].attempts.is_empty());
        let failed = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::ConditionFailed)
            .unwrap();
        assert!(
            failed.data["error"].as_str().unwrap().contains("managed"),
            "{:#}",
            failed.data
        );
        assert_eq!(t.state, TicketState::Failed);
        assert!(tr.calls.is_empty(), "nothing after it starts");
    }

    fn timed() -> (Workflow, Ticket) {
        with_inputs(
            r#"
            name = "w"
            [inputs.last_day]
            type = "date"
            required = true
            [inputs.time_zone]
            type = "time_zone"
            default = "Europe/Paris"
            [[steps]]
            name = "prepare"
            plugin = "p"
            verify = false
            [[steps]]
            name = "cut"
            plugin = "p"
            depends_on = ["prepare"]
            not_before = "${inputs.last_day} 17:00 in ${inputs.time_zone}"
            verify = false
            [[steps]]
            name = "archive"
            plugin = "p"
            depends_on = ["cut"]
            delay = "1h"
            verify = false
            "#,
            json!({ "last_day": "2026-12-04" }),
        )
    }

    fn done_at(wf: &Workflow, t: &mut Ticket, now_ms: u64, step: &str) -> Transition {
        ran(wf, t, now_ms, step, ok())
    }

    #[test]
    fn a_step_waits_for_its_time_on_a_fake_clock_and_the_wait_survives_a_restart() {
        let (wf, mut t) = timed();
        // 17:00 in Paris on 4 December is 16:00 UTC.
        let five_pm = crate::workflow::time::ms("2026-12-04T16:00:00Z");
        let morning = five_pm - 8 * 3_600_000;
        at(&wf, &mut t, morning, Event::Created { by: "op".into() }).unwrap();
        let tr = done_at(&wf, &mut t, morning + 1_000, "prepare");
        assert!(tr.calls.is_empty());
        assert_eq!(t.steps["cut"].status, StepStatus::Scheduled);
        assert_eq!(next_wake(&t), Some(five_pm));
        let scheduled = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::StepScheduled)
            .unwrap();
        assert_eq!(scheduled.data["at"], "2026-12-04 17:00 in Europe/Paris");
        assert_eq!(scheduled.data["utc"], "2026-12-04T16:00:00Z");

        // The ticket as stored, read back after a restart: still waiting,
        // and a tick before the time starts nothing and records nothing.
        let mut t: Ticket = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        let tr = at(&wf, &mut t, five_pm - 1, Event::Recovered).unwrap();
        assert!(
            tr.calls.is_empty() && tr.drafts.is_empty(),
            "{:?}",
            tr.drafts
        );
        let tr = at(&wf, &mut t, five_pm - 1, Event::Tick).unwrap();
        assert!(tr.calls.is_empty() && tr.drafts.is_empty());
        assert_eq!(next_wake(&t), Some(five_pm));

        // At its time it runs; the next step waits its hour after it.
        let tr = at(&wf, &mut t, five_pm, Event::Tick).unwrap();
        assert_eq!(
            tr.calls.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(),
            ["cut"]
        );
        let tr = done_at(&wf, &mut t, five_pm + 500, "cut");
        assert!(tr.calls.is_empty());
        assert_eq!(t.steps["archive"].status, StepStatus::Scheduled);
        assert_eq!(next_wake(&t), Some(five_pm + 500 + 3_600_000));
        let tr = at(&wf, &mut t, five_pm + 500 + 3_600_000, Event::Tick).unwrap();
        assert_eq!(
            tr.calls.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(),
            ["archive"]
        );
    }

    #[test]
    fn an_operator_can_run_a_scheduled_step_now_with_a_reason_and_cancel_a_waiting_ticket() {
        let (wf, mut t) = timed();
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        // Not yet waiting for its time: nothing to run early.
        let err = at(
            &wf,
            &mut t,
            1,
            Event::RunNow {
                step: "cut".into(),
                by: "ops-lead".into(),
                reason: "x".into(),
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("not waiting for its time"),
            "{err}"
        );
        done_at(&wf, &mut t, 1_000, "prepare");
        assert_eq!(t.steps["cut"].status, StepStatus::Scheduled);
        let tr = at(
            &wf,
            &mut t,
            2_000,
            Event::RunNow {
                step: "cut".into(),
                by: "ops-lead".into(),
                reason: "leaver left early".into(),
            },
        )
        .unwrap();
        assert_eq!(
            tr.calls.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(),
            ["cut"]
        );
        let early = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::RunEarly)
            .unwrap();
        assert_eq!(early.principal, "ops-lead");
        assert_eq!(early.data["reason"], "leaver left early");
        assert_eq!(t.steps["cut"].run_early.as_ref().unwrap().by, "ops-lead");

        // A ticket waiting on a timer can be cancelled; it then wakes for nothing.
        let (wf, mut t) = timed();
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        done_at(&wf, &mut t, 1_000, "prepare");
        at(
            &wf,
            &mut t,
            2_000,
            Event::Cancel {
                by: "ops-lead".into(),
                reason: "rehired".into(),
            },
        )
        .unwrap();
        assert_eq!(t.state, TicketState::Cancelled);
        assert_eq!(next_wake(&t), None);
    }

    #[test]
    fn a_step_with_a_change_window_waits_for_it_unless_run_now() {
        let text = r#"
            name = "w"
            [windows.change]
            time_zone = "Europe/Paris"
            open = ["Wed 14:00-16:00"]
            [[steps]]
            name = "migrate"
            plugin = "p"
            window = "change"
            verify = false
            "#;
        let ms = crate::workflow::time::ms;
        // Created on Thursday: it waits for next Wednesday 14:00 Paris.
        let (wf, mut t) = with_inputs(text, json!({}));
        let thursday = ms("2026-12-03 10:00 in Europe/Paris");
        let opens = ms("2026-12-09 14:00 in Europe/Paris");
        let tr = at(&wf, &mut t, thursday, Event::Created { by: "op".into() }).unwrap();
        assert!(tr.calls.is_empty());
        assert_eq!(t.steps["migrate"].status, StepStatus::Scheduled);
        assert_eq!(next_wake(&t), Some(opens));
        let scheduled = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::StepScheduled)
            .unwrap();
        assert_eq!(
            scheduled.data["at"],
            "2026-12-09 14:00 in Europe/Paris (window change)"
        );
        assert!(
            at(&wf, &mut t, opens - 1, Event::Tick)
                .unwrap()
                .calls
                .is_empty()
        );
        assert_eq!(at(&wf, &mut t, opens, Event::Tick).unwrap().calls.len(), 1);

        // Created inside the window: it runs at once.
        let (wf, mut t) = with_inputs(text, json!({}));
        let inside = ms("2026-12-09 15:59 in Europe/Paris");
        let tr = at(&wf, &mut t, inside, Event::Created { by: "op".into() }).unwrap();
        assert_eq!(tr.calls.len(), 1);

        // An emergency: run now bypasses the window, with its reason kept.
        let (wf, mut t) = with_inputs(text, json!({}));
        at(&wf, &mut t, thursday, Event::Created { by: "op".into() }).unwrap();
        let tr = at(
            &wf,
            &mut t,
            thursday + 60_000,
            Event::RunNow {
                step: "migrate".into(),
                by: "cab-chair".into(),
                reason: "emergency change EC-7".into(),
            },
        )
        .unwrap();
        assert_eq!(tr.calls.len(), 1);
    }

    fn person(name: &str, email: Option<&str>, roles: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            email: email.map(str::to_string),
        }
    }

    /// The manager collects the equipment (due an hour in, reminded every
    /// 20 minutes, escalated to it-support when overdue); then the
    /// account is disabled, and the wipe runs only if the laptop came back.
    fn collection() -> (Workflow, Ticket) {
        with_inputs(
            r#"
            name = "w"
            [inputs.manager]
            type = "email"
            required = true
            [[steps]]
            name = "collect"
            task = { assignee = "${inputs.manager}", instructions = "Collect the equipment", checklist = ["laptop", "badge"], due_in = "1h", remind_every = "20m", escalate_to = "it-support" }
            [[steps]]
            name = "disable"
            plugin = "p"
            depends_on = ["collect"]
            verify = false
            [[steps]]
            name = "wipe"
            plugin = "p"
            depends_on = ["collect"]
            when = 'steps.collect.outputs.checklist.laptop'
            verify = false
            "#,
            json!({ "manager": "Boss@example.com" }),
        )
    }

    fn complete(by: Principal, laptop: bool, note: &str) -> Event {
        Event::CompleteTask {
            step: "collect".into(),
            by,
            note: note.into(),
            checklist: BTreeMap::from([("laptop".into(), laptop), ("badge".into(), true)]),
        }
    }

    #[test]
    fn a_task_waits_for_its_person_reminds_escalates_and_its_answers_drive_the_rest() {
        let (wf, mut t) = collection();
        const MIN: u64 = 60_000;
        let tr = at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        assert!(tr.calls.is_empty(), "a task calls no plugin");
        assert_eq!(t.steps["collect"].status, StepStatus::WaitingTask);
        assert_eq!(t.state, TicketState::WaitingTask);
        let assigned = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::TaskAssigned)
            .unwrap();
        assert_eq!(assigned.data["assignee"], "boss@example.com");
        assert_eq!(assigned.data["due_ms"], 60 * MIN);
        assert_eq!(next_wake(&t), Some(20 * MIN), "the first reminder");

        // Reminders every 20 minutes; at the hour it is overdue and goes
        // to it-support as well, once.
        let tr = at(&wf, &mut t, 20 * MIN, Event::Tick).unwrap();
        assert_eq!(tr.drafts[0].kind, AuditKind::TaskReminded);
        at(&wf, &mut t, 40 * MIN, Event::Tick).unwrap();
        let tr = at(&wf, &mut t, 60 * MIN, Event::Tick).unwrap();
        let kinds: Vec<AuditKind> = tr.drafts.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [AuditKind::TaskOverdue, AuditKind::TaskReminded]);
        assert_eq!(tr.drafts[0].data["escalated_to"], "it-support");
        assert_eq!(t.steps["collect"].task.as_ref().unwrap().reminders, 3);
        assert_eq!(
            next_wake(&t),
            Some(80 * MIN),
            "overdue once; reminders go on"
        );

        // Someone else may not do it; a "no" needs a note; every item is answered.
        let stranger = person("eve", Some("eve@example.com"), &["operator"]);
        let err = at(&wf, &mut t, 61 * MIN, complete(stranger, true, "")).unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        assert!(
            err.to_string()
                .contains("assigned to boss@example.com and group `it-support`"),
            "{err}"
        );
        let boss = person("manager-1", Some("boss@example.com"), &[]);
        let err = at(&wf, &mut t, 61 * MIN, complete(boss.clone(), false, "")).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert_eq!(
            t.steps["collect"].status,
            StepStatus::WaitingTask,
            "refused changes nothing"
        );

        // The escalation group may do it now; here the manager does.
        let tr = at(
            &wf,
            &mut t,
            62 * MIN,
            complete(boss, false, "laptop stolen, police report 42"),
        )
        .unwrap();
        let done = tr
            .drafts
            .iter()
            .find(|d| d.kind == AuditKind::TaskCompleted)
            .unwrap();
        assert_eq!(done.principal, "manager-1");
        assert_eq!(
            done.data["checklist"],
            json!({ "badge": true, "laptop": false })
        );
        assert_eq!(t.steps["collect"].status, StepStatus::Succeeded);
        // The laptop did not come back: no wipe; the account is disabled.
        assert_eq!(t.steps["wipe"].status, StepStatus::Skipped);
        assert_eq!(
            tr.calls.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(),
            ["disable"]
        );
        assert_eq!(next_wake(&t), None, "no reminders once done");
    }

    #[test]
    fn a_task_can_be_reassigned_and_a_group_member_may_do_it() {
        let (wf, mut t) = collection();
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        let reassign = |by: Principal, to: &str, reason: &str| Event::ReassignTask {
            step: "collect".into(),
            by,
            to: to.into(),
            reason: reason.into(),
        };
        let nobody = person("kim", None, &["auditor"]);
        assert!(matches!(
            at(
                &wf,
                &mut t,
                1,
                reassign(nobody, "deputy@example.com", "away")
            )
            .unwrap_err(),
            Error::Forbidden(_)
        ));
        let op = person("ops", None, &["operator"]);
        assert!(matches!(
            at(
                &wf,
                &mut t,
                1,
                reassign(op.clone(), "not an address", "away")
            )
            .unwrap_err(),
            Error::Usage(_)
        ));
        let tr = at(
            &wf,
            &mut t,
            2,
            reassign(op, "Deputy@example.com", "manager on leave"),
        )
        .unwrap();
        assert_eq!(tr.drafts[0].kind, AuditKind::TaskReassigned);
        assert_eq!(tr.drafts[0].data["from"], "boss@example.com");
        assert_eq!(tr.drafts[0].data["to"], "deputy@example.com");
        // The former assignee no longer may; the new one, matched by name, may.
        let boss = person("boss@example.com", None, &[]);
        assert!(at(&wf, &mut t, 3, complete(boss, true, "")).is_err());
        let deputy = person("deputy@example.com", None, &[]);
        at(&wf, &mut t, 4, complete(deputy, true, "")).unwrap();
        assert_eq!(t.steps["wipe"].status, StepStatus::Running);
        // Done: a second completion is a conflict.
        let again = at(
            &wf,
            &mut t,
            5,
            complete(person("x", None, &["it-support"]), true, ""),
        );
        assert!(matches!(again.unwrap_err(), Error::Conflict(_)));
    }

    /// A change committee: security, cio and service-owner, two of three,
    /// any rejection fails; an hour's deadline escalates to cab-chairs.
    fn change(reject: &str) -> (Workflow, Ticket) {
        with_inputs(
            &format!(
                r#"
            name = "w"
            [[steps]]
            name = "change"
            plugin = "p"
            verify = false
            approval = {{ groups = ["security", "cio", "service-owner"], quorum = 2, reject = "{reject}", deadline = "1h", escalate_to = "cab-chairs" }}
            "#
            ),
            json!({}),
        )
    }

    fn vote(name: &str, roles: &[&str], approve: bool) -> Event {
        let by = person(name, None, roles);
        let comment = format!("{name} says {approve}");
        if approve {
            Event::Approve { by, comment }
        } else {
            Event::Reject { by, comment }
        }
    }

    #[test]
    fn a_committee_needs_a_quorum_of_distinct_groups_none_the_requester() {
        let (wf, mut t) = change("any");
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        assert_eq!(t.steps["change"].status, StepStatus::WaitingApproval);
        // The requester may not vote, even in a group; nor an outsider.
        let err = at(&wf, &mut t, 1, vote("op", &["approver", "cio"], true)).unwrap_err();
        assert!(err.to_string().contains("separation of duties"), "{err}");
        let err = at(&wf, &mut t, 1, vote("hr", &["approver", "hr"], true)).unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        // One approval of two: still waiting, and the trail says so.
        let tr = at(
            &wf,
            &mut t,
            2,
            vote("sec1", &["approver", "security"], true),
        )
        .unwrap();
        assert!(tr.calls.is_empty());
        assert_eq!(tr.drafts[0].data["approvals"], 1);
        assert_eq!(tr.drafts[0].data["decided"], false);
        assert_eq!(t.steps["change"].status, StepStatus::WaitingApproval);
        // The same person again, or another of the same group: refused.
        assert!(matches!(
            at(
                &wf,
                &mut t,
                3,
                vote("sec1", &["approver", "security", "cio"], true)
            )
            .unwrap_err(),
            Error::Conflict(_)
        ));
        let err = at(
            &wf,
            &mut t,
            3,
            vote("sec2", &["approver", "security"], true),
        )
        .unwrap_err();
        assert!(err.to_string().contains("already voted"), "{err}");
        // A second group: the quorum is reached and the step runs.
        let tr = at(&wf, &mut t, 4, vote("cio", &["approver", "cio"], true)).unwrap();
        assert_eq!(tr.calls.len(), 1);
        let votes = &t.steps["change"].approval.as_ref().unwrap().votes;
        assert_eq!(
            votes
                .iter()
                .map(|v| (v.by.as_str(), v.group.as_str()))
                .collect::<Vec<_>>(),
            [("sec1", "security"), ("cio", "cio")]
        );
    }

    #[test]
    fn a_committee_rejects_by_its_rule_and_escalates_past_its_deadline() {
        // Any rejection fails the step.
        let (wf, mut t) = change("any");
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        at(&wf, &mut t, 1, vote("cio", &["approver", "cio"], false)).unwrap();
        assert_eq!(t.steps["change"].status, StepStatus::Failed);
        assert_eq!(t.state, TicketState::Failed);

        // Unreachable: one rejection leaves two seats for a quorum of two;
        // a second one fails it.
        let (wf, mut t) = change("unreachable");
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        at(&wf, &mut t, 1, vote("cio", &["approver", "cio"], false)).unwrap();
        assert_eq!(t.steps["change"].status, StepStatus::WaitingApproval);
        assert_eq!(next_wake(&t), Some(3_600_000), "the deadline");
        // Past the deadline: overdue once, and cab-chairs may vote too.
        let err = at(
            &wf,
            &mut t,
            2,
            vote("chair", &["approver", "cab-chairs"], true),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Forbidden(_)),
            "not before the deadline: {err}"
        );
        let tr = at(&wf, &mut t, 3_600_000, Event::Tick).unwrap();
        assert_eq!(tr.drafts[0].kind, AuditKind::ApprovalOverdue);
        assert_eq!(tr.drafts[0].data["escalated_to"], "cab-chairs");
        assert!(
            at(&wf, &mut t, 3_600_001, Event::Tick)
                .unwrap()
                .drafts
                .is_empty(),
            "once"
        );
        assert_eq!(next_wake(&t), None);
        at(
            &wf,
            &mut t,
            3_600_002,
            vote("sec", &["approver", "security"], false),
        )
        .unwrap();
        assert_eq!(
            t.steps["change"].status,
            StepStatus::WaitingApproval,
            "the chairs make a third seat"
        );
        let tr = at(
            &wf,
            &mut t,
            3_600_003,
            vote("so", &["approver", "service-owner"], true),
        )
        .unwrap();
        assert!(tr.calls.is_empty());
        let tr = at(
            &wf,
            &mut t,
            3_600_004,
            vote("chair", &["approver", "cab-chairs"], true),
        )
        .unwrap();
        assert_eq!(tr.calls.len(), 1, "two approvals of four seats: the quorum");
    }

    #[test]
    fn an_sla_in_business_hours_warns_at_risk_then_breaches_on_a_fake_clock() {
        let (wf, mut t) = with_inputs(
            r#"
            name = "incident"
            sla = "16h"
            calendar = "emea"
            [calendars.emea]
            time_zone = "Europe/Paris"
            hours = ["Mon-Fri 09:00-12:30", "Mon-Fri 13:30-17:30"]
            holidays = ["2026-12-25"]
            [[steps]]
            name = "triage"
            task = { group = "support", instructions = "Triage" }
            "#,
            json!({}),
        );
        let ms = crate::workflow::time::ms;
        let created = ms("2026-12-23 16:00 in Europe/Paris");
        let (deadline, at_risk) = wf.sla_times(created).unwrap().unwrap();
        // 16 working hours: 1.5 Wednesday, 7.5 Thursday, Christmas and the
        // weekend off, 7 on Monday; at risk after 12 of them (75 %).
        assert_eq!(deadline, ms("2026-12-28 17:00 in Europe/Paris"));
        assert_eq!(at_risk, ms("2026-12-28 12:00 in Europe/Paris"));
        t.sla_deadline_ms = Some(deadline);
        t.sla_at_risk_ms = Some(at_risk);
        at(&wf, &mut t, created, Event::Created { by: "op".into() }).unwrap();
        assert_eq!(next_wake(&t), Some(at_risk));
        assert!(
            at(&wf, &mut t, at_risk - 1, Event::Tick)
                .unwrap()
                .drafts
                .is_empty()
        );
        let tr = at(&wf, &mut t, at_risk, Event::Tick).unwrap();
        assert_eq!(tr.drafts[0].kind, AuditKind::SlaAtRisk);
        assert_eq!(tr.drafts[0].data["calendar"], "emea");
        assert_eq!(next_wake(&t), Some(deadline));
        let tr = at(&wf, &mut t, deadline, Event::Tick).unwrap();
        assert_eq!(tr.drafts[0].kind, AuditKind::SlaBreached);
        assert_eq!(next_wake(&t), None);
    }
}
