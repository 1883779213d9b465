//! The scheduler in process: DAGs, retries, approvals, compensation, cancel,
//! SLA, and workflow versions, with the real scripted test plugin.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::audit::{AuditKind, verify};
use itsm_host::auth::Principal;
use itsm_host::runtime::Plugin;
use itsm_host::scheduler::machine::Event;
use itsm_host::scheduler::{NewTicket, Scheduler, SchedulerConfig};
use itsm_host::store::Store;
use itsm_host::store::memory::MemoryStore;
use itsm_host::ticket::{AttemptResult, StepStatus, Ticket, TicketState};
use itsm_host::workflow::Workflow;
use serde_json::json;

use crate::support::load;

fn scripted() -> Plugin {
    load(
        "itsm-plugin-test-scripted",
        include_str!("../../plugins/testing/scripted/plugin.toml"),
    )
}

fn workflows(defs: &[&str]) -> BTreeMap<String, Workflow> {
    defs.iter()
        .map(|d| {
            let wf = Workflow::parse(d, "test.toml").unwrap();
            (wf.name.clone(), wf)
        })
        .collect()
}

pub fn scheduler(defs: &[&str]) -> Scheduler {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let plugins = BTreeMap::from([("scripted".to_string(), scripted())]);
    Scheduler::new(store, plugins, workflows(defs), SchedulerConfig::default()).unwrap()
}

async fn create(s: &Scheduler, workflow: &str, subject: &str) -> Ticket {
    let req = NewTicket {
        workflow: workflow.into(),
        subject: subject.into(),
        inputs: json!({ "employee_id": 7 }),
        batch: None,
        allow_duplicate: false,
    };
    s.create(req, "operator-1", None).await.unwrap().0
}

async fn wait_for(s: &Scheduler, id: &str, done: impl Fn(&Ticket) -> bool) -> Ticket {
    let started = Instant::now();
    loop {
        let t = s.store().ticket(id).unwrap().unwrap();
        if done(&t) {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ticket stuck: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn settled(s: &Scheduler, id: &str) -> Ticket {
    wait_for(s, id, |t| t.state.is_terminal()).await
}

fn kinds(s: &Scheduler, t: &Ticket) -> Vec<(AuditKind, Option<String>)> {
    let events = s.store().events(&t.id).unwrap();
    verify(&t.id, &events, &t.head).expect("the trail verifies");
    events.into_iter().map(|e| (e.kind, e.step)).collect()
}

fn count(kinds: &[(AuditKind, Option<String>)], kind: AuditKind, step: &str) -> usize {
    kinds
        .iter()
        .filter(|(k, s)| *k == kind && s.as_deref() == Some(step))
        .count()
}

const DAG: &str = r#"
name = "dag"
version = "1"
[[steps]]
name = "directory"
plugin = "scripted"
[[steps]]
name = "mail"
plugin = "scripted"
depends_on = ["directory"]
config = { behaviour = "slow", sleep_ms = "300" }
[[steps]]
name = "saas"
plugin = "scripted"
depends_on = ["directory"]
config = { behaviour = "slow", sleep_ms = "300" }
[[steps]]
name = "report"
plugin = "scripted"
depends_on = ["mail", "saas"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_runs_independent_steps_in_parallel_verifies_each_and_succeeds() {
    let s = scheduler(&[DAG]);
    let t = create(&s, "dag", "alice@example.com").await;
    let t = settled(&s, &t.id).await;
    assert_eq!(t.state, TicketState::Succeeded, "{t:#?}");
    for step in ["directory", "mail", "saas", "report"] {
        let rec = &t.steps[step];
        assert_eq!(rec.status, StepStatus::Succeeded);
        assert!(
            rec.evidence.is_some() && rec.verification.is_some(),
            "{step}"
        );
    }
    // mail and saas overlapped: each started before the other ended.
    let (m, sa) = (&t.steps["mail"].attempts[0], &t.steps["saas"].attempts[0]);
    assert!(
        m.started_ms < sa.ended_ms.unwrap() && sa.started_ms < m.ended_ms.unwrap(),
        "{m:?} {sa:?}"
    );
    // report saw the outputs of the three before it.
    assert_eq!(t.steps["report"].outputs.as_ref().unwrap()["seen"], 3);
    let k = kinds(&s, &t);
    assert_eq!(k.first().unwrap().0, AuditKind::Created);
    assert_eq!(k.last().unwrap().0, AuditKind::TicketSucceeded);
    for step in ["directory", "mail", "saas", "report"] {
        assert_eq!(count(&k, AuditKind::StepSucceeded, step), 1);
        assert_eq!(count(&k, AuditKind::StepVerified, step), 1);
    }
    let events = s.store().events(&t.id).unwrap();
    let started = events
        .iter()
        .find(|e| e.kind == AuditKind::StepStarted)
        .unwrap();
    let plugin = started.plugin.as_ref().unwrap();
    assert_eq!(
        (plugin.name.as_str(), plugin.wasm_sha256.len()),
        ("scripted", 64)
    );
    assert_eq!(events[0].principal, "operator-1");
}

#[tokio::test]
async fn a_flaky_step_is_retried_with_backoff_and_keeps_its_failed_attempts() {
    let s = scheduler(&[r#"
        name = "flaky"
        [[steps]]
        name = "saas"
        plugin = "scripted"
        config = { behaviour = "flaky", failures = "2" }
        retry = { max_attempts = 5, initial_backoff = "20ms", max_backoff = "100ms" }
    "#]);
    let t = create(&s, "flaky", "bob@example.com").await;
    let t = settled(&s, &t.id).await;
    assert_eq!(t.state, TicketState::Succeeded);
    let attempts = &t.steps["saas"].attempts;
    // Two failed runs, the successful run, then verify.
    assert_eq!(attempts.len(), 4, "{attempts:#?}");
    assert!(matches!(attempts[0].result, AttemptResult::Failed { .. }));
    assert!(matches!(attempts[1].result, AttemptResult::Failed { .. }));
    assert_eq!(attempts[2].result, AttemptResult::Succeeded);
    let k = kinds(&s, &t);
    assert_eq!(count(&k, AuditKind::RetryScheduled, "saas"), 2);
    let metrics = s.metrics_text();
    assert!(metrics.contains("\nitsm_retries_total 2\n"), "{metrics}");
    assert!(
        metrics.contains(
            "itsm_step_calls_total{plugin=\"scripted\",op=\"run\",outcome=\"retryable\"} 2"
        ),
        "{metrics}"
    );
    assert_eq!(count(&k, AuditKind::StepFailed, "saas"), 2);
    assert_eq!(count(&k, AuditKind::StepSucceeded, "saas"), 1);
}

#[tokio::test]
async fn a_fatal_failure_stops_the_ticket_and_retry_runs_it_again_from_the_failed_step() {
    let s = scheduler(&[r#"
        name = "fails"
        [[steps]]
        name = "first"
        plugin = "scripted"
        [[steps]]
        name = "second"
        plugin = "scripted"
        depends_on = ["first"]
        config = { behaviour = "fail" }
        [[steps]]
        name = "third"
        plugin = "scripted"
        depends_on = ["second"]
    "#]);
    let t = create(&s, "fails", "carol@example.com").await;
    let t = settled(&s, &t.id).await;
    assert_eq!(t.state, TicketState::Failed);
    assert_eq!(t.steps["first"].status, StepStatus::Succeeded);
    assert_eq!(t.steps["second"].status, StepStatus::Failed);
    assert_eq!(t.steps["third"].status, StepStatus::Pending);
    assert_eq!(
        t.steps["second"].attempts.len(),
        1,
        "fatal errors are not retried"
    );

    s.send(
        &t.id,
        Event::Retry {
            by: "operator-2".into(),
        },
    )
    .await
    .unwrap();
    let again = wait_for(&s, &t.id, |x| {
        x.state.is_terminal() && x.steps["second"].attempts.len() == 2
    })
    .await;
    assert_eq!(again.state, TicketState::Failed);
    assert_eq!(
        again.steps["first"].attempts.len(),
        2,
        "first ran once (+verify), not again"
    );
    let k = kinds(&s, &again);
    assert_eq!(count(&k, AuditKind::StepFailed, "second"), 2);
    assert_eq!(
        k.iter()
            .filter(|(kind, _)| *kind == AuditKind::RetryRequested)
            .count(),
        1
    );
}

#[tokio::test]
async fn on_failure_compensate_undoes_completed_steps_in_reverse_order() {
    let s = scheduler(&[r#"
        name = "rollback"
        on_failure = "compensate"
        [[steps]]
        name = "a"
        plugin = "scripted"
        [[steps]]
        name = "b"
        plugin = "scripted"
        depends_on = ["a"]
        [[steps]]
        name = "c"
        plugin = "scripted"
        depends_on = ["b"]
        config = { behaviour = "fail" }
    "#]);
    let t = create(&s, "rollback", "dave@example.com").await;
    let t = settled(&s, &t.id).await;
    assert_eq!(t.state, TicketState::Failed);
    assert_eq!(t.steps["a"].status, StepStatus::Compensated);
    assert_eq!(t.steps["b"].status, StepStatus::Compensated);
    let events = s.store().events(&t.id).unwrap();
    let order: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == AuditKind::Compensated)
        .map(|e| e.step.as_deref().unwrap())
        .collect();
    assert_eq!(order, ["b", "a"]);
    // Each compensate was given its own step's run outputs, under its name.
    for step in ["a", "b"] {
        let comp = t.steps[step].compensation.as_ref().unwrap();
        assert_eq!(
            comp["before"],
            t.steps[step].outputs.clone().unwrap(),
            "{step}: {comp}"
        );
        assert_eq!(comp["before"]["step"], step);
    }
}

#[tokio::test]
async fn verify_sees_its_runs_outputs_and_a_run_again_after_retry_does_not() {
    let s = scheduler(&[r#"
        name = "checked"
        [[steps]]
        name = "a"
        plugin = "scripted"
        verify = true
        [[steps]]
        name = "b"
        plugin = "scripted"
        depends_on = ["a"]
        verify = true
        config = { verify = "fail" }
    "#]);
    let t = create(&s, "checked", "vera@example.com").await;
    let t = settled(&s, &t.id).await;
    assert_eq!(t.state, TicketState::Failed);
    // a's verify was given a's own run outputs under "a".
    let a = &t.steps["a"];
    let seen = a.verification.as_ref().unwrap().before.clone().unwrap();
    assert_eq!(seen, a.outputs.clone().unwrap());
    assert_eq!(seen["step"], "a");
    let b = t.steps["b"].outputs.clone().unwrap();
    assert_eq!(b["saw_own"], false, "run never sees its own key: {b}");
    assert_eq!(b["seen"], 1, "a's outputs only: {b}");
    // b's verify failed; retried, b runs again while its first run's outputs
    // are still on the ticket, and still does not see its own key.
    s.send(&t.id, Event::Retry { by: "op".into() })
        .await
        .unwrap();
    let t = wait_for(&s, &t.id, |x| {
        x.state.is_terminal() && x.steps["b"].attempts.len() >= 4
    })
    .await;
    let again = t.steps["b"].outputs.clone().unwrap();
    assert_eq!(
        (again["attempt"].clone(), again["saw_own"].clone()),
        (json!(3), json!(false))
    );
}

const APPROVAL: &str = r#"
name = "wipe"
[[steps]]
name = "disable"
plugin = "scripted"
[[steps]]
name = "wipe-laptop"
plugin = "scripted"
depends_on = ["disable"]
approval = { role = "security" }
"#;

#[tokio::test]
async fn an_approval_holds_the_step_until_a_human_approves_and_records_who() {
    let s = scheduler(&[APPROVAL]);
    let t = create(&s, "wipe", "erin@example.com").await;
    let waiting = wait_for(&s, &t.id, |x| x.state == TicketState::WaitingApproval).await;
    assert_eq!(
        waiting.steps["wipe-laptop"].status,
        StepStatus::WaitingApproval
    );
    assert!(waiting.steps["wipe-laptop"].attempts.is_empty());
    // Only a failed ticket can be retried.
    let err = s
        .send(&t.id, Event::Retry { by: "op".into() })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only a failed ticket can be retried"),
        "{err}"
    );
    s.send(
        &t.id,
        Event::Approve {
            by: principal("sec-lead", &["approver", "security"]),
            comment: "laptop returned".into(),
        },
    )
    .await
    .unwrap();
    let done = settled(&s, &t.id).await;
    assert_eq!(done.state, TicketState::Succeeded);
    let decision = done.steps["wipe-laptop"].decision.as_ref().unwrap();
    assert!(decision.approved && decision.by == "sec-lead");
    let events = s.store().events(&t.id).unwrap();
    let approved = events
        .iter()
        .find(|e| e.kind == AuditKind::Approved)
        .unwrap();
    assert_eq!(
        (
            approved.principal.as_str(),
            approved.data["comment"].as_str()
        ),
        ("sec-lead", Some("laptop returned"))
    );
    // Nothing left to approve.
    let approve_again = Event::Approve {
        by: principal("x", &["approver", "security"]),
        comment: String::new(),
    };
    let err = s.send(&t.id, approve_again).await.unwrap_err();
    assert!(err.to_string().contains("nothing to decide"), "{err}");
}

/// A principal with `roles`.
fn principal(name: &str, roles: &[&str]) -> Principal {
    Principal {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        email: None,
    }
}

#[tokio::test]
async fn only_an_approver_of_the_steps_group_who_did_not_request_the_ticket_may_decide() {
    let s = scheduler(&[APPROVAL]);
    let t = create(&s, "wipe", "gina@example.com").await;
    wait_for(&s, &t.id, |x| x.state == TicketState::WaitingApproval).await;
    let refused = [
        (
            principal("operator-1", &["approver", "security"]),
            "separation of duties: operator-1 requested or imported ticket",
        ),
        (
            principal("helpdesk", &["approver"]),
            "step `wipe-laptop` needs an approver in the `security` group; helpdesk has: approver",
        ),
        (
            principal("sec-auditor", &["auditor", "security"]),
            "sec-auditor may not approve or reject: that needs the `approver` role",
        ),
    ];
    for (by, why) in refused {
        let err = s
            .send(
                &t.id,
                Event::Approve {
                    by,
                    comment: String::new(),
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, itsm_host::Error::Forbidden(_)), "{err:?}");
        assert!(err.to_string().contains(why), "{err}");
    }
    let still = s.store().ticket(&t.id).unwrap().unwrap();
    assert_eq!(still.state, TicketState::WaitingApproval);
    assert!(still.steps["wipe-laptop"].decision.is_none());
}

#[tokio::test]
async fn a_rejection_fails_the_ticket_and_is_distinct_in_the_trail() {
    let s = scheduler(&[APPROVAL]);
    let t = create(&s, "wipe", "frank@example.com").await;
    wait_for(&s, &t.id, |x| x.state == TicketState::WaitingApproval).await;
    s.send(
        &t.id,
        Event::Reject {
            by: principal("sec-lead", &["approver", "security"]),
            comment: "legal hold".into(),
        },
    )
    .await
    .unwrap();
    let done = settled(&s, &t.id).await;
    assert_eq!(done.state, TicketState::Failed);
    let k = kinds(&s, &done);
    assert_eq!(count(&k, AuditKind::Rejected, "wipe-laptop"), 1);
    assert_eq!(count(&k, AuditKind::Approved, "wipe-laptop"), 0);
}

#[tokio::test]
async fn cancel_stops_a_running_ticket() {
    let s = scheduler(&[r#"
        name = "slow"
        [[steps]]
        name = "one"
        plugin = "scripted"
        config = { behaviour = "slow", sleep_ms = "400" }
        [[steps]]
        name = "two"
        plugin = "scripted"
        depends_on = ["one"]
    "#]);
    let t = create(&s, "slow", "gina@example.com").await;
    s.send(
        &t.id,
        Event::Cancel {
            by: "operator-1".into(),
            reason: "rehired".into(),
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = s.store().ticket(&t.id).unwrap().unwrap();
    assert_eq!(t.state, TicketState::Cancelled);
    assert!(
        t.steps["two"].attempts.is_empty(),
        "nothing starts after a cancel"
    );
    let cancel_again = Event::Cancel {
        by: "x".into(),
        reason: String::new(),
    };
    let err = s.send(&t.id, cancel_again).await.unwrap_err();
    assert!(err.to_string().contains("already cancelled"), "{err}");
}

#[tokio::test]
async fn an_sla_breach_is_recorded_once() {
    let s = scheduler(&[r#"
        name = "sla"
        sla = "150ms"
        [[steps]]
        name = "slow"
        plugin = "scripted"
        config = { behaviour = "slow", sleep_ms = "400" }
    "#]);
    let t = create(&s, "sla", "hank@example.com").await;
    let t = settled(&s, &t.id).await;
    assert!(t.sla_breached);
    let k = kinds(&s, &t);
    assert_eq!(
        k.iter()
            .filter(|(kind, _)| *kind == AuditKind::SlaBreached)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_step_timeout_is_a_retryable_failure() {
    let s = scheduler(&[r#"
        name = "timeout"
        [[steps]]
        name = "slow"
        plugin = "scripted"
        timeout = "100ms"
        config = { behaviour = "slow", sleep_ms = "2000" }
        retry = { max_attempts = 2, initial_backoff = "10ms" }
    "#]);
    let t = create(&s, "timeout", "ivy@example.com").await;
    let t = settled(&s, &t.id).await;
    assert_eq!(t.state, TicketState::Failed);
    let attempts = &t.steps["slow"].attempts;
    assert_eq!(attempts.len(), 2);
    for a in attempts {
        let AttemptResult::Failed { error } = &a.result else {
            panic!("{a:?}")
        };
        assert!(
            error.message.contains("timeout of 100 ms"),
            "{}",
            error.message
        );
    }
}

#[tokio::test]
async fn editing_a_workflow_leaves_running_tickets_on_their_version() {
    let v1 = r#"
        name = "evolving"
        version = "1"
        [[steps]]
        name = "old-step"
        plugin = "scripted"
        config = { behaviour = "slow", sleep_ms = "300" }
    "#;
    let v2 = r#"
        name = "evolving"
        version = "2"
        [[steps]]
        name = "new-step"
        plugin = "scripted"
    "#;
    let s = scheduler(&[v1]);
    let first = create(&s, "evolving", "jack@example.com").await;
    s.set_workflows(workflows(&[v2])).unwrap();
    let second = create(&s, "evolving", "kate@example.com").await;
    let (first, second) = (settled(&s, &first.id).await, settled(&s, &second.id).await);
    assert_eq!(first.state, TicketState::Succeeded);
    assert_eq!(first.workflow_version, "1");
    assert!(first.steps.contains_key("old-step") && !first.steps.contains_key("new-step"));
    assert_eq!(second.workflow_version, "2");
    assert!(second.steps.contains_key("new-step"));
    assert_ne!(first.workflow_hash, second.workflow_hash);
    assert!(
        s.store()
            .workflow("evolving", &first.workflow_hash)
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem() {
    let s = scheduler(&[DAG]);
    let cases = [
        ("nope", "a", json!({}), "no workflow named `nope`"),
        ("dag", " ", json!({}), "subject"),
        ("dag", "a", json!([1]), "inputs"),
    ];
    for (workflow, subject, inputs, want) in cases {
        let req = NewTicket {
            workflow: workflow.into(),
            subject: subject.into(),
            inputs,
            batch: None,
            allow_duplicate: false,
        };
        let err = s.create(req, "op", None).await.unwrap_err();
        assert!(err.to_string().contains(want), "want {want:?} in {err}");
    }
    assert!(
        s.store().tickets().unwrap().is_empty(),
        "nothing was created"
    );
    // An unknown plugin in a workflow is refused when workflows are set.
    let err = s
        .set_workflows(workflows(&[
            "name = \"x\"\n[[steps]]\nname = \"a\"\nplugin = \"ghost\"\n",
        ]))
        .unwrap_err();
    assert!(err.to_string().contains("unknown plugin `ghost`"), "{err}");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_ticket() {
    let s = scheduler(&[DAG]);
    let req = NewTicket {
        workflow: "dag".into(),
        subject: "lee@example.com".into(),
        inputs: json!({}),
        batch: None,
        allow_duplicate: false,
    };
    let (a, created_a) = s
        .create(req.clone(), "op", Some("hr-event-42"))
        .await
        .unwrap();
    let (b, created_b) = s.create(req, "op", Some("hr-event-42")).await.unwrap();
    assert!(created_a && !created_b);
    assert_eq!(a.id, b.id);
    assert_eq!(s.store().tickets().unwrap().len(), 1);
}

/// A scheduler running workflow `fast` (one step of the scripted plugin)
/// beside workflow `name`: one step `only` of `plugin`, with `settings`.
fn beside_fast(
    name: &str,
    plugin: (&str, Plugin),
    settings: &str,
    config: SchedulerConfig,
) -> Scheduler {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let plugins = BTreeMap::from([
        ("scripted".to_string(), scripted()),
        (plugin.0.to_string(), plugin.1),
    ]);
    let other = format!(
        "name = \"{name}\"\nversion = \"1\"\n[[steps]]\nname = \"only\"\nplugin = \"{}\"\n{settings}",
        plugin.0
    );
    let fast =
        "name = \"fast\"\nversion = \"1\"\n[[steps]]\nname = \"only\"\nplugin = \"scripted\"\n";
    Scheduler::new(store, plugins, workflows(&[&other, fast]), config).unwrap()
}

/// A plugin whose calls queue for its own instances must not hold the shared
/// worker slots while they wait: another plugin's tickets go straight past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_queue_does_not_hold_the_workers_other_plugins_need() {
    let slow_manifest = include_str!("../../plugins/testing/scripted/plugin.toml")
        .replace("name = \"scripted\"", "name = \"slowpoke\"")
        .replace("max_instances = 32", "max_instances = 1");
    let slow = load("itsm-plugin-test-scripted", &slow_manifest);
    let config = SchedulerConfig {
        workers: 2,
        ..SchedulerConfig::default()
    };
    let s = beside_fast(
        "slow",
        ("slowpoke", slow),
        "verify = false\nconfig = { behaviour = \"slow\", sleep_ms = \"1500\" }\n",
        config,
    );
    let mut slow_ids = Vec::new();
    for i in 0..6 {
        slow_ids.push(create(&s, "slow", &format!("slow{i}@example.com")).await.id);
    }
    // Every slow ticket has asked for its call before the fast one is made.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fast = create(&s, "fast", "fast@example.com").await;
    let fast = settled(&s, &fast.id).await;
    assert_eq!(fast.state, TicketState::Succeeded, "{fast:#?}");
    let slow_done = slow_ids
        .iter()
        .filter(|id| s.store().ticket(id).unwrap().unwrap().state.is_terminal())
        .count();
    // Before the fix the fast ticket waited behind every queued slow call
    // (6 × 1.5 s); now at most the one running slow call may have finished.
    assert!(slow_done <= 1, "{slow_done} slow tickets finished first");
}

/// Spinning neighbours: a hostile plugin whose every call spins to its 5 s
/// time limit, on as many instances as there are cores and more, beside a
/// plugin whose calls are quick. Long calls give way to short work, so every
/// quick ticket finishes while all the spinning calls are still running;
/// the spinners still end, each stopped by its time limit and saying so.
/// (The latency figure is `cargo bench --bench neighbours`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_calls_give_way_to_other_tickets_and_still_end_at_their_time_limit() {
    let spinner_manifest = include_str!("../../plugins/testing/hostile/plugin.toml")
        .replace("name = \"hostile\"", "name = \"spinner\"")
        .replace("timeout_ms = 2000", "timeout_ms = 5000\nmax_instances = 4");
    let spinner = load("itsm-plugin-test-hostile", &spinner_manifest);
    let s = beside_fast(
        "spin",
        ("spinner", spinner),
        "verify = false\nconfig = { mode = \"loop\" }\nretry = { max_attempts = 1 }\n",
        SchedulerConfig::default(),
    );
    let mut spinning = Vec::new();
    for i in 0..4 {
        spinning.push(create(&s, "spin", &format!("spin{i}@example.com")).await.id);
    }
    // Every spinner call is under way (and past its first milliseconds of CPU).
    for id in &spinning {
        wait_for(&s, id, |t| t.steps["only"].status == StepStatus::Running).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fast = Vec::new();
    for i in 0..20 {
        fast.push(create(&s, "fast", &format!("fast{i}@example.com")).await.id);
    }
    for id in &fast {
        let t = settled(&s, id).await;
        assert_eq!(t.state, TicketState::Succeeded, "{t:#?}");
    }
    for id in &spinning {
        let t = s.store().ticket(id).unwrap().unwrap();
        assert_eq!(
            t.steps["only"].status,
            StepStatus::Running,
            "a spinner finished before the quick tickets: {t:#?}"
        );
    }
    for id in &spinning {
        let t = settled(&s, id).await;
        assert_eq!(t.state, TicketState::Failed);
        let attempt = &t.steps["only"].attempts[0];
        let AttemptResult::Failed { error } = &attempt.result else {
            panic!("{attempt:#?}");
        };
        assert!(error.message.contains("time limit"), "{}", error.message);
    }
    // The host runs a normal call afterwards.
    let after = settled(&s, &create(&s, "fast", "after@example.com").await.id).await;
    assert_eq!(after.state, TicketState::Succeeded);
}
