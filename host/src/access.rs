//! Who reads what: the one place that decides it. Every read route asks
//! here (through `api::read_policy`), so no handler decides on its own.
//!
//! Read access follows the principal's relation to the ticket, and is
//! denied by default:
//!
//! | who | reads | sees |
//! | --- | --- | --- |
//! | `admin`, `operator`, `auditor` | every ticket | all of it |
//! | the requester (`requested_by`) | what they asked for | all of it |
//! | an approver | tickets that await, or awaited, their group's decision | all of it |
//! | a task's holder (assignee, former assignee, the person who did it, a member of its group or escalation group) | that ticket | the task: subject, state, its step, its trail events; not the inputs nor other steps |
//! | anyone else | nothing: the ticket answers 404, as one that does not exist |
//!
//! Trails as a whole (export, verify) are the auditor's and the admin's.
//! What a person may *do* to a ticket (approve, complete a task) is the
//! state machine's check; this module only says what they may see, so that
//! a route refusing to act on a ticket the caller cannot see answers 404
//! rather than revealing it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::principal::{Principal, Role};
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// How much of a ticket a principal sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// All of it: inputs, every step, the whole trail.
    Whole,
    /// Only these steps (the principal's tasks), without the inputs.
    Tasks(BTreeSet<String>),
}

impl View {
    /// The name the API shows (`view` in a ticket's JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            View::Whole => "whole",
            View::Tasks(_) => "task",
        }
    }

    /// Cut `ticket` and its `trail` down to this view. A task view keeps
    /// the ticket's identity and state, its task steps and their own trail
    /// events; the inputs (a legal hold, an employee number) and every
    /// other step's outputs and evidence go.
    pub fn redact(&self, ticket: &mut Ticket, trail: &mut Vec<AuditEvent>) {
        let View::Tasks(steps) = self else { return };
        ticket.inputs = Value::Object(Default::default());
        ticket.links.clear();
        ticket.steps.retain(|name, _| steps.contains(name));
        trail.retain(|e| e.step.as_ref().is_some_and(|s| steps.contains(s)));
    }

    /// Whether a step of the pinned definition is shown.
    pub fn shows_step(&self, step: &str) -> bool {
        match self {
            View::Whole => true,
            View::Tasks(steps) => steps.contains(step),
        }
    }
}

/// Whether `who` reads every ticket: admins, operators, auditors.
pub fn reads_every_ticket(who: &Principal) -> bool {
    who.has(Role::Admin) || who.has(Role::Operator) || who.has(Role::Auditor)
}

/// What of ticket `t` (of pinned definition `wf`, if still known) `who`
/// sees; `None`: nothing, and the ticket is answered as not found.
pub fn ticket_view(who: &Principal, t: &Ticket, wf: Option<&Workflow>) -> Option<View> {
    if reads_every_ticket(who) || who.is(&t.requested_by) || approver_of(who, t, wf) {
        return Some(View::Whole);
    }
    let tasks: BTreeSet<String> = t
        .steps
        .iter()
        .filter(|(_, s)| s.task.as_ref().is_some_and(|k| held_task(who, k)))
        .map(|(name, _)| name.clone())
        .collect();
    (!tasks.is_empty()).then_some(View::Tasks(tasks))
}

/// Whether a step of `t` awaits, or awaited, the decision of a group `who`
/// is in (its escalation group too, once it escalated).
fn approver_of(who: &Principal, t: &Ticket, wf: Option<&Workflow>) -> bool {
    let Some(wf) = wf else { return false };
    t.steps.iter().any(|(name, s)| {
        let reached = s.approval.is_some() || s.decision.is_some();
        let Some(approval) = wf.step(name).and_then(|d| d.approval.as_ref()) else {
            return false;
        };
        let escalated = s.approval.as_ref().is_some_and(|a| a.overdue);
        reached
            && (approval.voters().iter().any(|g| who.roles.contains(*g))
                || (escalated
                    && approval
                        .escalate_to
                        .as_ref()
                        .is_some_and(|g| who.roles.contains(g))))
    })
}

/// Whether `who` holds task `k` now: its assignee, or in its group or
/// the group it escalated to.
fn holds_task(who: &Principal, k: &crate::ticket::TaskRecord) -> bool {
    let groups = [&k.group, &k.escalated_to];
    k.assignee.as_deref().is_some_and(|a| who.is(a))
        || groups
            .iter()
            .any(|g| g.as_ref().is_some_and(|g| who.roles.contains(g)))
}

/// Whether `who` holds task `k`, or held it: a former assignee, or the
/// person who did it.
fn held_task(who: &Principal, k: &crate::ticket::TaskRecord) -> bool {
    holds_task(who, k)
        || k.former_assignees.iter().any(|a| who.is(a))
        || k.done.as_ref().is_some_and(|d| who.is(&d.by))
}

/// Whether `who` may see the open task `k` in the task list: the tasks
/// they hold now (a reassigned task leaves its former assignee's list);
/// everyone's only for those who read every ticket, and only when they
/// did not ask for their own (`mine`).
pub fn sees_task(who: &Principal, k: &crate::ticket::TaskRecord, mine: bool) -> bool {
    holds_task(who, k) || (!mine && reads_every_ticket(who))
}

/// `Ok` if `who` may export or verify trails as a whole: auditors and
/// admins. An operator runs tickets; reading every trail in bulk is the
/// audit's business.
pub fn may_read_trails(who: &Principal) -> Result<()> {
    if who.has(Role::Auditor) || who.has(Role::Admin) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{} may not export or verify audit trails: that needs the `auditor` or `admin` role (it has: {})",
            who.name,
            who.roles_list()
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ticket::{ApprovalRecord, StepRecord, TaskDone, TaskRecord, TicketState};

    const WORKFLOW: &str = r#"
name = "leaver"
version = "1"
[inputs.manager]
type = "email"
[[steps]]
name = "disable"
plugin = "noop"
[[steps]]
name = "collect"
task = { assignee = "${inputs.manager}", group = "desk", instructions = "Collect it." }
[[steps]]
name = "wipe"
plugin = "noop"
approval = { role = "security", deadline = "1h", escalate_to = "cab" }
"#;

    fn who(name: &str, roles: &[&str], email: Option<&str>) -> Principal {
        Principal {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            email: email.map(str::to_string),
        }
    }

    /// A ticket requested by `hr-feed`, its task with `task`, its wipe
    /// step's approval record `approval` (none: not reached yet).
    fn ticket(task: TaskRecord, approval: Option<ApprovalRecord>) -> Ticket {
        let mut steps = BTreeMap::new();
        steps.insert("disable".to_string(), StepRecord::new());
        steps.insert(
            "collect".to_string(),
            StepRecord {
                task: Some(task),
                ..StepRecord::new()
            },
        );
        steps.insert(
            "wipe".to_string(),
            StepRecord {
                approval,
                ..StepRecord::new()
            },
        );
        let mut t = crate::store::conformance::ticket("T-1", TicketState::WaitingTask);
        t.subject = "ann@example.com".into();
        t.inputs = serde_json::json!({ "manager": "boss@example.com", "legal_hold": true });
        t.requested_by = "hr-feed".into();
        t.steps = steps;
        t
    }

    fn task(assignee: &str) -> TaskRecord {
        TaskRecord {
            assignee: Some(assignee.into()),
            former_assignees: Vec::new(),
            group: Some("desk".into()),
            due_ms: None,
            due: None,
            overdue: false,
            escalated_to: None,
            remind_at_ms: None,
            reminders: 0,
            done: None,
        }
    }

    fn tasks_view() -> Option<View> {
        Some(View::Tasks(["collect".to_string()].into()))
    }

    #[test]
    fn each_relation_sees_what_the_table_says() {
        let wf = Workflow::parse(WORKFLOW, "test").unwrap();
        let open = ticket(task("boss@example.com"), None);
        let awaiting = ticket(task("boss@example.com"), Some(ApprovalRecord::default()));
        let overdue = ticket(
            task("boss@example.com"),
            Some(ApprovalRecord {
                overdue: true,
                ..ApprovalRecord::default()
            }),
        );
        let mut reassigned = ticket(task("deputy@example.com"), None);
        reassigned
            .steps
            .get_mut("collect")
            .unwrap()
            .task
            .as_mut()
            .unwrap()
            .former_assignees = vec!["boss@example.com".into()];
        let mut done_by_desk = ticket(task("boss@example.com"), None);
        done_by_desk
            .steps
            .get_mut("collect")
            .unwrap()
            .task
            .as_mut()
            .unwrap()
            .done = Some(TaskDone {
            by: "temp-7".into(),
            note: String::new(),
            checklist: Default::default(),
            at_ms: 0,
        });

        let boss = who("manager-1", &[], Some("Boss@Example.com"));
        let stranger = who("someone", &[], Some("someone@example.com"));
        let security = who("sec-lead", &["approver", "security"], None);
        let hr = who("hr-lead", &["approver", "hr"], None);
        let cab = who("cab-chair", &["approver", "cab"], None);
        let desk = who("desk-1", &["desk"], None);
        let temp = who("temp-7", &[], None);
        let requester = who("hr-feed", &[], None);
        let table: &[(&str, &Principal, &Ticket, Option<View>)] = &[
            (
                "operator",
                &who("op", &["operator"], None),
                &open,
                Some(View::Whole),
            ),
            (
                "auditor",
                &who("au", &["auditor"], None),
                &open,
                Some(View::Whole),
            ),
            (
                "admin",
                &who("ad", &["admin"], None),
                &open,
                Some(View::Whole),
            ),
            ("requester", &requester, &open, Some(View::Whole)),
            ("assignee, by e-mail", &boss, &open, tasks_view()),
            ("member of the task's group", &desk, &open, tasks_view()),
            ("former assignee", &boss, &reassigned, tasks_view()),
            (
                "who did it, not assigned",
                &temp,
                &done_by_desk,
                tasks_view(),
            ),
            ("no relation", &stranger, &open, None),
            ("approver before the approval", &security, &open, None),
            (
                "approver, awaiting",
                &security,
                &awaiting,
                Some(View::Whole),
            ),
            ("approver of another group", &hr, &awaiting, None),
            ("escalation group, not yet", &cab, &awaiting, None),
            (
                "escalation group, escalated",
                &cab,
                &overdue,
                Some(View::Whole),
            ),
        ];
        for (case, p, t, expected) in table {
            assert_eq!(&ticket_view(p, t, Some(&wf)), expected, "{case}");
        }
        // Without the pinned definition nobody is an approver, and no
        // relation is guessed.
        assert_eq!(ticket_view(&security, &awaiting, None), None);
        assert_eq!(ticket_view(&boss, &open, None), tasks_view());
    }

    #[test]
    fn a_task_view_keeps_the_task_and_drops_inputs_other_steps_and_their_events() {
        let mut t = ticket(task("boss@example.com"), None);
        let event = |step: Option<&str>| AuditEvent {
            ticket_id: "T-1".into(),
            seq: 0,
            at_ms: 0,
            kind: crate::audit::AuditKind::Created,
            principal: "system".into(),
            step: step.map(str::to_string),
            plugin: None,
            data: serde_json::json!({}),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let mut trail = vec![event(None), event(Some("disable")), event(Some("collect"))];
        tasks_view().unwrap().redact(&mut t, &mut trail);
        assert_eq!(t.inputs, serde_json::json!({}));
        assert_eq!(t.steps.keys().collect::<Vec<_>>(), ["collect"]);
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].step.as_deref(), Some("collect"));
        assert_eq!(t.subject, "ann@example.com");
    }

    #[test]
    fn the_inbox_lists_what_one_holds_now_and_everyone_s_only_for_readers_of_all() {
        let mut k = task("deputy@example.com");
        k.former_assignees.push("boss@example.com".into());
        let boss = who("manager-1", &[], Some("boss@example.com"));
        let deputy = who("deputy", &[], Some("deputy@example.com"));
        let op = who("op", &["operator"], None);
        assert!(!sees_task(&boss, &k, false), "reassigned away");
        assert!(sees_task(&deputy, &k, true));
        assert!(sees_task(&op, &k, false));
        assert!(!sees_task(&op, &k, true), "not the operator's own");
        assert!(may_read_trails(&who("au", &["auditor"], None)).is_ok());
        assert!(may_read_trails(&who("ad", &["admin"], None)).is_ok());
        let refused = may_read_trails(&op).unwrap_err().to_string();
        assert!(
            refused.contains("needs the `auditor` or `admin` role"),
            "{refused}"
        );
    }
}
