//! Moving a ticket on after each event: the SLA clock, the people's
//! deadlines, starting what is ready, and settling the ticket's state.

use serde_json::{Value, json};

use super::calls::{compensate, start, undoing, waiting_for_plugin};
use super::conditions::{decide_condition, read_values, time_has_come};
use super::tasks::assign_task;
use super::{Context, Transition};
use crate::audit::{AuditKind, Draft};
use crate::runtime::Op;
use crate::ticket::{StepStatus, Ticket, TicketState};

/// Start what can start and settle the ticket's state.
pub(super) fn advance(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
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
    deadlines(t, cx, tr);
    let count = |t: &Ticket, st: StepStatus| t.steps.values().filter(|s| s.status == st).count();
    let failed = count(t, StepStatus::Failed) > 0;
    if undoing(t, cx, failed) {
        compensate(t, cx, tr);
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
        for (step, op) in due.into_iter().chain(waiting_for_plugin(t, false)) {
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
pub(super) fn start_ready_steps(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) -> bool {
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
        if let Some(task) = &def.task {
            if time_has_come(t, cx, def, tr) {
                assign_task(t, cx, &def.name, task, tr);
            }
            continue;
        }
        // The approval comes before the time: a change is approved ahead
        // of its window, then waits for it.
        let s = t.steps.get_mut(&def.name).expect("step exists");
        if let (Some(approval), None) = (&def.approval, &s.decision) {
            s.status = StepStatus::WaitingApproval;
            s.retry_at_ms = None;
            let due_ms = approval
                .deadline
                .map(|d| cx.now_ms.saturating_add(d.as_millis() as u64));
            s.approval = Some(crate::ticket::ApprovalRecord {
                votes: Vec::new(),
                groups: approval.voters().iter().map(|g| g.to_string()).collect(),
                escalate_to: approval.escalate_to.clone(),
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
            continue;
        }
        if time_has_come(t, cx, def, tr) {
            start(t, cx, &def.name, Op::Run, tr);
        }
    }
    skipped
}

pub(super) fn finish(t: &mut Ticket, state: TicketState, tr: &mut Transition) {
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

/// The deadlines of the people a ticket waits for, one pass over its
/// steps: a task or an approval request past its due time is overdue (said
/// once, and escalated), and a task's reminder falls due.
fn deadlines(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
    for (name, s) in t.steps.iter_mut() {
        let Some(def) = cx.workflow.step(name) else {
            continue;
        };
        match (s.status, s.task.as_mut(), s.approval.as_mut()) {
            (StepStatus::WaitingTask, Some(k), _) => {
                let Some(task) = def.task.as_ref() else {
                    continue;
                };
                if let Some(due) = falls_due(k.due_ms, &mut k.overdue, cx.now_ms) {
                    k.escalated_to = task.escalate_to.clone();
                    tr.drafts.push(
                        Draft::new(
                            AuditKind::TaskOverdue,
                            json!({ "due_ms": due, "assignee": k.assignee, "escalated_to": k.escalated_to }),
                        )
                        .step(name),
                    );
                }
                if let (Some(at), Some(every)) = (k.remind_at_ms, task.remind_every)
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
            (StepStatus::WaitingApproval, _, Some(record)) => {
                let Some(rule) = def.approval.as_ref() else {
                    continue;
                };
                if let Some(due) = falls_due(record.due_ms, &mut record.overdue, cx.now_ms) {
                    tr.drafts.push(
                        Draft::new(
                            AuditKind::ApprovalOverdue,
                            json!({ "due_ms": due, "escalated_to": rule.escalate_to, "votes": record.votes.len() }),
                        )
                        .step(name),
                    );
                }
            }
            _ => {}
        }
    }
}

/// `due`, the first time `now_ms` reaches it (marking it `overdue`).
fn falls_due(due: Option<u64>, overdue: &mut bool, now_ms: u64) -> Option<u64> {
    let due = due.filter(|d| !*overdue && now_ms >= *d)?;
    *overdue = true;
    Some(due)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

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
        let (deadline, at_risk) = wf.sla_times(&json!({}), created).unwrap().unwrap();
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
