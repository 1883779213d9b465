//! What happens when a step's call fails, and every other call result:
//! the one place that decides whether a step succeeds, waits for a retry,
//! fails, or the ticket undoes what it did.
//!
//! How a failure gets here:
//! 1. The plugin returns a `step-error` (retryable or fatal, with an
//!    optional `Retry-After`), or the call traps: the runtime turns either
//!    into a `StepFailure` with its kind and cause (`runtime/outcome.rs`:
//!    `from_step_error`, `classify_trap` for the time limit, memory,
//!    stack, a panic). A call that outlives its `timeout` is reported as a
//!    retryable failure by the scheduler (`scheduler/calls.rs`,
//!    `timed_out`), and one that could not even start is fatal
//!    ([`super::Event::CallSetupFailed`]).
//! 2. [`finish_call`] records the attempt and its event (`step_failed`),
//!    then decides: a retryable failure with attempts left in the step's
//!    policy (`retry` in the workflow: `max_attempts` for `run` and for
//!    `verify` each, backoff with jitter, a `deadline`) waits
//!    (`retry_wait`, `retry_scheduled`), at the service's `Retry-After`
//!    if it gave one; a wait the service asked for within the deadline uses
//!    no attempt ([`uses_an_attempt`]). Anything else fails the step.
//! 3. A failed step stops the ticket, or with `on_failure = "compensate"`
//!    ([`undoing`]) the ticket undoes its completed steps, most recent
//!    first ([`compensate`]); a failed undo is recorded and the next goes
//!    on. An operator may retry a failed ticket (`Event::Retry`).
//!
//! Calls interrupted by a crash or a shutdown ([`interrupt_running`]) run
//! again at once with the same idempotency key, using no attempt.

use serde_json::{Value, json};

use super::advance::finish;
use super::{Call, Context, Transition};
use crate::audit::{AuditKind, Draft, PluginRef};
use crate::error::{Error, Result};
use crate::runtime::{CallReport, FailureKind, Op, Outcome};
use crate::ticket::{Attempt, AttemptResult, StepStatus, Ticket, TicketState};
use crate::workflow::OnFailure;

pub(super) fn plugin_of(cx: &Context<'_>, step: &str) -> Option<PluginRef> {
    cx.workflow
        .step(step)
        .and_then(|d| cx.plugins.get(&d.plugin).cloned())
}

/// Mark every running step's attempt interrupted, to run again at once
/// with the same idempotency key. `reason` says why when it is not a
/// restart (the host shut down before the call returned).
pub(super) fn interrupt_running(
    t: &mut Ticket,
    cx: &Context<'_>,
    reason: Option<&str>,
    tr: &mut Transition,
) {
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

pub(super) fn finish_call(
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
                    // A step undone after its own verification failed
                    // stays failed: it is what failed the ticket.
                    s.status = if verify_failed(cx, step, s) {
                        StepStatus::Failed
                    } else {
                        StepStatus::Compensated
                    };
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
                s.status = if verify_failed(cx, step, s) {
                    StepStatus::Failed
                } else {
                    StepStatus::Succeeded
                };
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
pub(super) fn uses_an_attempt(a: &Attempt, deadline_ms: u64) -> bool {
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

pub(super) fn start(t: &mut Ticket, cx: &Context<'_>, step: &str, op: Op, tr: &mut Transition) {
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

/// Whether the ticket is undoing what it did: from the first failed step
/// of a workflow with `on_failure = "compensate"` on.
pub(super) fn undoing(t: &mut Ticket, cx: &Context<'_>, failed: bool) -> bool {
    if failed && cx.workflow.on_failure == OnFailure::Compensate && !t.compensating {
        t.compensating = true;
    }
    t.compensating
}

/// Whether `s`'s run took effect but its verification did not prove it:
/// the change is (perhaps half) made, so it is undone with the rest, and
/// the step stays failed.
fn verify_failed(cx: &Context<'_>, step: &str, s: &crate::ticket::StepRecord) -> bool {
    let Some(last_run) = s.attempts.iter().rposition(|a| a.op == Op::Run) else {
        return false;
    };
    s.attempts[last_run].result == AttemptResult::Succeeded
        && s.verification.is_none()
        && s.attempts[last_run..]
            .iter()
            .any(|a| a.op == Op::Verify && matches!(a.result, AttemptResult::Failed { .. }))
        && cx.workflow.step(step).is_some_and(|d| d.verify)
}

/// Compensate a failed ticket: once nothing runs, undo the most recently
/// completed step, then the one before, until none is left; then the ticket
/// has failed. A step whose run took effect but whose verification failed
/// is undone first (it ran last). A person's task has no plugin to undo it.
pub(super) fn compensate(t: &mut Ticket, cx: &Context<'_>, tr: &mut Transition) {
    for (step, op) in waiting_for_plugin(t, true) {
        start(t, cx, &step, op, tr);
    }
    let running = t.steps.values().any(|s| s.status == StepStatus::Running);
    if running || !waiting_for_plugin(t, true).is_empty() {
        return;
    }
    // Undo the most recently completed step first.
    let next = t
        .steps
        .iter()
        .filter(|(n, s)| {
            s.compensation.is_none()
                && (s.status == StepStatus::Succeeded
                    || (s.status == StepStatus::Failed && verify_failed(cx, n, s)))
        })
        .filter(|(n, _)| cx.workflow.step(n).is_some_and(|d| d.task.is_none()))
        .max_by_key(|(_, s)| s.attempts.iter().filter_map(|a| a.ended_ms).max())
        .map(|(n, _)| n.clone());
    match next {
        Some(step) => start(t, cx, &step, Op::Compensate, tr),
        None => finish(t, TicketState::Failed, tr),
    }
}

/// Steps waiting for their plugin, to start once it is loaded: an undo
/// while compensating (`undo`), a run otherwise (a run that never started
/// is as good as pending once the ticket is being undone).
pub(super) fn waiting_for_plugin(t: &Ticket, undo: bool) -> Vec<(String, Op)> {
    t.steps
        .iter()
        .filter(|(_, s)| {
            s.status == StepStatus::WaitingPlugin && (s.next_op == Op::Compensate) == undo
        })
        .map(|(n, s)| (n.clone(), s.next_op))
        .collect()
}

/// A call that could not even be made (its plugin would not instantiate,
/// say): a fatal failure of the step, as if the plugin had returned it.
pub(super) fn setup_failed(
    t: &mut Ticket,
    cx: &Context<'_>,
    step: &str,
    op: Op,
    message: String,
    tr: &mut Transition,
) {
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
    finish_call(t, cx, step, report, tr);
}

/// An operator's retry of a failed ticket: its failed steps (and a
/// rejected approval) start over, from their first attempt's budget.
pub(super) fn retry(t: &mut Ticket, by: &str, tr: &mut Transition) -> Result<()> {
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
            // Undone after a failed verification: its next run may be
            // undone again.
            s.compensation = None;
            if s.decision.as_ref().is_some_and(|d| !d.approved) {
                s.decision = None;
            }
            again.push(name.clone());
        }
    }
    t.compensating = false;
    t.state = TicketState::Running;
    tr.drafts
        .push(Draft::new(AuditKind::RetryRequested, json!({ "steps": again })).by(by));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    fn fatal() -> Outcome {
        Outcome::Failed {
            error: StepFailure {
                kind: FailureKind::Fatal,
                cause: FailureCause::Plugin,
                message: "the service answers 503 since the change".into(),
                retry_after_ms: None,
            },
        }
    }

    #[test]
    fn a_change_whose_verification_fails_is_undone_itself_first_then_the_steps_before() {
        let (wf, mut t) = with_inputs(
            r#"
            name = "w"
            on_failure = "compensate"
            [[steps]]
            name = "snapshot"
            plugin = "p"
            verify = false
            [[steps]]
            name = "apply"
            plugin = "p"
            depends_on = ["snapshot"]
            retry = { max_attempts = 1 }
            "#,
            json!({}),
        );
        create(&wf, &mut t);
        called(&wf, &mut t, 10, "snapshot", Op::Run, ok());
        let tr = called(&wf, &mut t, 20, "apply", Op::Run, ok());
        assert_eq!(tr.calls[0].op, Op::Verify);
        // The change's own verification fails: it is undone first ...
        let tr = called(&wf, &mut t, 30, "apply", Op::Verify, fatal());
        assert_eq!(
            tr.calls
                .iter()
                .map(|c| (c.step.as_str(), c.op))
                .collect::<Vec<_>>(),
            [("apply", Op::Compensate)]
        );
        assert!(t.compensating);
        // ... stays the step that failed ...
        let tr = called(&wf, &mut t, 40, "apply", Op::Compensate, ok());
        assert_eq!(t.steps["apply"].status, StepStatus::Failed);
        assert!(t.steps["apply"].compensation.is_some());
        // ... then the step before it.
        assert_eq!(
            tr.calls
                .iter()
                .map(|c| (c.step.as_str(), c.op))
                .collect::<Vec<_>>(),
            [("snapshot", Op::Compensate)]
        );
        let tr = called(&wf, &mut t, 50, "snapshot", Op::Compensate, ok());
        assert_eq!(t.state, TicketState::Failed);
        let end = tr.drafts.last().unwrap();
        assert_eq!(end.kind, AuditKind::TicketFailed);
        assert_eq!(
            end.data,
            json!({ "failed_steps": ["apply"], "compensated_steps": ["snapshot"] })
        );
        // A retry runs the change again, and could undo it again.
        at(&wf, &mut t, 60, Event::Retry { by: "op".into() }).unwrap();
        assert!(t.steps["apply"].compensation.is_none());
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
}
