//! Shared fixtures of the state machine's tests: workflows, tickets and
//! events on a fake clock.
//!
//! Each concern's tests take these and the machine's types from here:
//! `use super::super::fixtures::*`.

pub use std::collections::BTreeMap;

pub use serde_json::{Value, json};

pub use super::{Context, Event, Transition, apply, next_wake};
pub use crate::audit::{AuditKind, PluginRef};
pub use crate::error::{Error, Result};
pub use crate::principal::Principal;
pub use crate::runtime::{
    CallReport, Evidence, FailureCause, FailureKind, Op, Outcome, StepFailure,
};
pub use crate::ticket::{StepRecord, StepStatus, Ticket, TicketState};
pub use crate::workflow::Workflow;

pub fn workflow(retry: &str) -> Workflow {
    Workflow::parse(
        &format!(
            "name = \"w\"\nversion = \"1\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\nretry = {{ {retry} }}\n"
        ),
        "test",
    )
    .unwrap()
}

pub fn ticket(wf: &Workflow) -> Ticket {
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
        routed_to: None,
        links: Vec::new(),
        head: Default::default(),
    }
}

pub struct Run {
    pub wf: Workflow,
    pub plugins: BTreeMap<String, PluginRef>,
    pub unavailable: BTreeMap<String, String>,
    pub t: Ticket,
}

impl Run {
    pub fn new(retry: &str) -> Self {
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

    pub fn apply(&mut self, now_ms: u64, event: Event) -> Transition {
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
    pub fn finish(&mut self, now_ms: u64, op: Op, outcome: Outcome) -> Transition {
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

    pub fn step(&self) -> &crate::ticket::StepRecord {
        &self.t.steps["s"]
    }
}

pub fn failed(retry_after_ms: Option<u64>) -> Outcome {
    Outcome::Failed {
        error: StepFailure {
            kind: FailureKind::Retryable,
            cause: FailureCause::Plugin,
            message: "try later".into(),
            retry_after_ms,
        },
    }
}

pub fn ok() -> Outcome {
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

/// A workflow parsed from `text` and a new ticket of it with `inputs`,
/// kept as intake keeps them.
pub fn with_inputs(text: &str, inputs: Value) -> (Workflow, Ticket) {
    let wf = Workflow::parse(text, "test").unwrap();
    let mut t = ticket(&wf);
    t.inputs = wf.check_inputs("ann@example.com", &inputs).unwrap();
    (wf, t)
}

/// A workflow of conditions: `find` reports whether a managed device
/// exists; `wipe` runs only if so; `after-wipe` depends on `wipe`, and
/// is defined before it in the file; `hold` runs only when asked.
pub fn conditional(legal_hold: bool) -> (Workflow, Ticket) {
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
pub fn finish_step(wf: &Workflow, t: &mut Ticket, step: &str, outputs: Value) -> Transition {
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

pub fn create(wf: &Workflow, t: &mut Ticket) -> Transition {
    at(wf, t, 0, Event::Created { by: "op".into() }).unwrap()
}

/// `event` at `now_ms`.
pub fn at(wf: &Workflow, t: &mut Ticket, now_ms: u64, event: Event) -> Result<Transition> {
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
pub fn ran(wf: &Workflow, t: &mut Ticket, now_ms: u64, step: &str, outcome: Outcome) -> Transition {
    called(wf, t, now_ms, step, Op::Run, outcome)
}

/// `step`'s call of `op` ended with `outcome` at `now_ms`.
pub fn called(
    wf: &Workflow,
    t: &mut Ticket,
    now_ms: u64,
    step: &str,
    op: Op,
    outcome: Outcome,
) -> Transition {
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
    let event = Event::CallFinished {
        step: step.into(),
        report: Box::new(report),
    };
    at(wf, t, now_ms, event).unwrap()
}

pub fn timed() -> (Workflow, Ticket) {
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

pub fn done_at(wf: &Workflow, t: &mut Ticket, now_ms: u64, step: &str) -> Transition {
    ran(wf, t, now_ms, step, ok())
}

pub fn person(name: &str, email: Option<&str>, roles: &[&str]) -> Principal {
    Principal {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        email: email.map(str::to_string),
    }
}

/// The manager collects the equipment (due an hour in, reminded every
/// 20 minutes, escalated to it-support when overdue); then the
/// account is disabled, and the wipe runs only if the laptop came back.
pub fn collection() -> (Workflow, Ticket) {
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

pub fn complete(by: Principal, laptop: bool, note: &str) -> Event {
    Event::CompleteTask {
        step: "collect".into(),
        by,
        note: note.into(),
        checklist: BTreeMap::from([("laptop".into(), laptop), ("badge".into(), true)]),
    }
}

/// A change committee: security, cio and service-owner, two of three,
/// any rejection fails; an hour's deadline escalates to cab-chairs.
pub fn change(reject: &str) -> (Workflow, Ticket) {
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

pub fn vote(name: &str, roles: &[&str], approve: bool) -> Event {
    let by = person(name, None, roles);
    let comment = format!("{name} says {approve}");
    if approve {
        Event::Approve { by, comment }
    } else {
        Event::Reject { by, comment }
    }
}
