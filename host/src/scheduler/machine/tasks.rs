//! Human tasks: assigning a ready task to its person or group, doing it
//! (its checklist answers become the step's outputs), reassigning it.

use serde_json::json;

use super::{Context, Transition};
use crate::audit::{AuditKind, Draft};
use crate::error::{Error, Result};
use crate::principal::{Principal, Role};
use crate::ticket::{StepStatus, TaskRecord, Ticket};

/// Give a ready task to its person or group: `waiting_task`, with when it
/// is due and when to remind. A task that cannot be assigned (its assignee
/// input is empty and it has no group; its due time does not read) fails.
pub(super) fn assign_task(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    def: &crate::workflow::task::TaskDef,
    tr: &mut Transition,
) {
    // `${triage}`: the group triage routed the ticket to.
    let group = match def.group.as_deref() {
        Some(crate::workflow::triage::TRIAGE_GROUP) => t.routed_to.clone(),
        _ => def.group.clone(),
    };
    let assigned = def.assign(cx.workflow, &t.inputs, cx.now_ms).and_then(|a| {
        if a.assignee.is_none() && group.is_none() {
            Err("triage routed the ticket to no group, and it has no assignee".to_string())
        } else {
            Ok(a)
        }
    });
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
        former_assignees: Vec::new(),
        group,
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

/// The waiting task `step`, its definition and record, or why not.
pub(super) fn waiting_task<'a>(
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
pub(super) fn may_do_task(k: &TaskRecord, by: &Principal) -> bool {
    k.assignee.as_deref().is_some_and(|a| by.is(a))
        || [&k.group, &k.escalated_to]
            .into_iter()
            .flatten()
            .any(|g| by.roles.contains(g))
}

pub(super) fn complete_task(
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

pub(super) fn reassign_task(
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
    if !crate::principal::is_email(&to) {
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
    if let Some(from) = k.assignee.replace(to) {
        k.former_assignees.push(from);
    }
    k.reminders = 0;
    k.remind_at_ms = def
        .remind_every
        .map(|every| cx.now_ms.saturating_add(every.as_millis() as u64));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

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
}
