//! Conditions and time: whether a ready step runs at all (`when`), and
//! whether its time (`not_before`, `delay`, a change window) has come.

use serde_json::{Value, json};

use super::{Context, Transition};
use crate::audit::{AuditKind, Draft};
use crate::error::{Error, Result};
use crate::ticket::{Decision, StepStatus, Ticket};

/// Whether a ready step's time (`not_before`, `delay`) has come. The first
/// time it is ready, its time is worked out and kept (`retry_at_ms`); until
/// then it is `scheduled`, once, in the trail. An operator's run-now, or a
/// `not_before` that cannot be read (the step fails), end the wait.
pub(super) fn time_has_come(
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
pub(super) fn condition_steps(
    t: &Ticket,
    cx: &Context<'_>,
    step: &str,
) -> serde_json::Map<String, Value> {
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

pub(super) fn decide_condition(
    t: &Ticket,
    cx: &Context<'_>,
    step: &str,
    when: &str,
) -> std::result::Result<bool, String> {
    crate::workflow::condition::evaluate(when, &t.subject, &t.inputs, &condition_steps(t, cx, step))
}

/// The trail's record of a decided condition: the expression, its value,
/// and the inputs and step outputs it read.
pub(super) fn read_values(t: &Ticket, when: &str, value: bool) -> Value {
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

/// An operator runs a step waiting for its time now, saying why.
pub(super) fn run_now(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    by: &str,
    reason: String,
    tr: &mut Transition,
) -> Result<()> {
    let s = t
        .steps
        .get_mut(step)
        .ok_or_else(|| Error::NotFound(format!("ticket {} has no step `{step}`", t.id)))?;
    if s.status != StepStatus::Scheduled || t.state.is_terminal() {
        return Err(Error::Conflict(format!(
            "step `{step}` of ticket {} is not waiting for its time",
            t.id
        )));
    }
    s.run_early = Some(Decision {
        approved: true,
        by: by.to_string(),
        comment: reason.clone(),
        at_ms: cx.now_ms,
    });
    tr.drafts.push(
        Draft::new(
            AuditKind::RunEarly,
            json!({ "reason": reason, "was_due_ms": s.retry_at_ms }),
        )
        .step(step)
        .by(by),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

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
}
