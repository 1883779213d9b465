//! The ticket: one subject run through one pinned workflow version.
//!
//! Plain data shared by the scheduler (which changes it), the store (which
//! keeps it) and the API (which shows it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::ChainHead;
use crate::report::{Evidence, LogLine, Op, RequestRecord, StepFailure};

/// Where a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Created, no step started yet.
    Pending,
    /// Steps are running or due.
    Running,
    /// Nothing can move until a human decides.
    WaitingApproval,
    /// Nothing can move until a person does a task.
    WaitingTask,
    /// Every step succeeded.
    Succeeded,
    /// A step failed for good (after compensation, if configured).
    Failed,
    /// Someone cancelled it.
    Cancelled,
}

impl TicketState {
    /// The name the API uses (`waiting_approval`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingApproval => "waiting_approval",
            Self::WaitingTask => "waiting_task",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// No more work will happen unless someone retries it.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its dependencies.
    Pending,
    /// Its dependencies are done; it waits for its time (`not_before`,
    /// `delay`), due at `retry_at_ms`. An operator may run it now.
    Scheduled,
    /// Waiting for a human decision.
    WaitingApproval,
    /// A human task, assigned and not yet done (`task` says to whom).
    WaitingTask,
    /// A call is in flight.
    Running,
    /// Waiting for its next attempt.
    RetryWait,
    /// Waiting for its plugin, which did not load at start-up (the trail's
    /// `step_waiting` event says why); it starts once the plugin is
    /// installed, or at the next start that loads it.
    WaitingPlugin,
    /// Done (and verified, if configured).
    Succeeded,
    /// Not run: its condition (`when`) was false. Counts as done for the
    /// steps that depend on it and for the ticket.
    Skipped,
    /// Failed for good.
    Failed,
    /// Undone by compensation.
    Compensated,
}

impl StepStatus {
    /// Done, as far as its dependants and the ticket are concerned:
    /// succeeded, or skipped by its condition.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttemptResult {
    /// Still running (or the host died during it).
    Running,
    /// The call succeeded.
    Succeeded,
    /// The call failed.
    Failed {
        /// Why.
        #[schema(value_type = FailureSchema)]
        error: StepFailure,
    },
    /// The host restarted during the call; the step runs again.
    Interrupted,
}

/// The documented shape of [`StepFailure`] (a runtime type): why a call failed.
#[derive(utoipa::ToSchema)]
#[schema(as = StepFailure)]
#[allow(dead_code)]
struct FailureSchema {
    /// `retryable` or `fatal`.
    kind: String,
    /// What ended the call: `plugin`, `timeout`, `memory_limit`, ...
    cause: String,
    /// Human-readable, secrets masked.
    message: String,
    /// Wait at least this long before retrying.
    retry_after_ms: Option<u64>,
}

/// One call of a step's plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1-based, counting every call of the step.
    pub n: u32,
    /// The export called: `run`, `verify` or `compensate`.
    #[schema(value_type = String)]
    pub op: Op,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it ended.
    pub ended_ms: Option<u64>,
    /// How it ended.
    pub result: AttemptResult,
    /// The plugin's log.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub log: Vec<LogLine>,
    /// Outbound requests.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub requests: Vec<RequestRecord>,
}

/// A human decision on an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    /// Approved or rejected.
    pub approved: bool,
    /// Who decided.
    pub by: String,
    /// Why.
    pub comment: String,
    /// When.
    pub at_ms: u64,
}

/// An approval request and its votes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalRecord {
    /// Every vote so far, in order.
    pub votes: Vec<Vote>,
    /// The groups whose decision it awaits (recorded when it is asked for,
    /// so the store can index who may read the ticket).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The group it goes to as well once overdue, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
    /// When the request is overdue (ms since the epoch).
    pub due_ms: Option<u64>,
    /// It passed its deadline undecided (and escalated, if configured).
    pub overdue: bool,
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    /// Approve or reject.
    pub approved: bool,
    /// Who.
    pub by: String,
    /// The group it counted for.
    pub group: String,
    /// Why.
    pub comment: String,
    /// When.
    pub at_ms: u64,
}

/// A human task as assigned to one ticket, and how it was done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRecord {
    /// The person it is for (an e-mail or principal name, lower case).
    pub assignee: Option<String>,
    /// Who held it before a reassignment, oldest first: they still read
    /// the ticket's task ([`crate::access`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_assignees: Vec<String>,
    /// The group whose members may do it.
    pub group: Option<String>,
    /// When it is due (ms since the epoch).
    pub due_ms: Option<u64>,
    /// The due time as the workflow put it, filled in.
    pub due: Option<String>,
    /// It passed its due time undone (recorded once).
    pub overdue: bool,
    /// Overdue, it went to this group as well.
    pub escalated_to: Option<String>,
    /// The next reminder (ms since the epoch).
    pub remind_at_ms: Option<u64>,
    /// Reminders sent so far.
    pub reminders: u32,
    /// Who did it, with the note and the checklist answers.
    pub done: Option<TaskDone>,
}

/// How a person completed a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDone {
    /// Who.
    pub by: String,
    /// What they said.
    pub note: String,
    /// Each checklist item: done or not.
    pub checklist: BTreeMap<String, bool>,
    /// When.
    pub at_ms: u64,
}

/// A step of a ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRecord {
    /// Where it is.
    pub status: StepStatus,
    /// Every call so far, failed ones included.
    pub attempts: Vec<Attempt>,
    /// The export the next attempt calls (`run`, or `verify` after a run).
    #[schema(value_type = String)]
    pub next_op: Op,
    /// When a retry is due.
    pub retry_at_ms: Option<u64>,
    /// Outputs of `run`.
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Value>,
    /// Evidence of `run`: `summary`, `target`, `before`, `after`.
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<Evidence>,
    /// Evidence of `verify`.
    #[schema(value_type = Option<Object>)]
    pub verification: Option<Evidence>,
    /// Evidence of `compensate`, or why it failed.
    #[schema(value_type = Option<Object>)]
    pub compensation: Option<Value>,
    /// The approval decision, if one was needed.
    pub decision: Option<Decision>,
    /// An operator ran the step before its time: who, why, when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_early: Option<Decision>,
    /// A human task: to whom, by when, and how it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,
    /// The approval request: its votes and deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
}

impl StepRecord {
    /// A step not started.
    pub fn new() -> Self {
        Self {
            status: StepStatus::Pending,
            attempts: Vec::new(),
            next_op: Op::Run,
            retry_at_ms: None,
            outputs: None,
            evidence: None,
            verification: None,
            compensation: None,
            decision: None,
            run_early: None,
            task: None,
            approval: None,
        }
    }
}

impl Default for StepRecord {
    fn default() -> Self {
        Self::new()
    }
}

/// One subject's run through one workflow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ticket {
    /// `T-` + 26 characters, sortable by creation time.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// The pinned definition's content hash.
    pub workflow_hash: String,
    /// The author's version label of that definition.
    pub workflow_version: String,
    /// Who the ticket is about.
    pub subject: String,
    /// Inputs (a JSON object).
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Where it is.
    pub state: TicketState,
    /// Who created it.
    pub requested_by: String,
    /// Bulk import batch, if any.
    pub batch: Option<String>,
    /// Created (ms since the epoch).
    pub created_ms: u64,
    /// Last changed.
    pub updated_ms: u64,
    /// SLA deadline.
    pub sla_deadline_ms: Option<u64>,
    /// Whether the SLA breach was recorded.
    pub sla_breached: bool,
    /// When the SLA is at risk (its `sla_at_risk` share used up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_at_risk_ms: Option<u64>,
    /// Whether the at-risk warning was recorded.
    #[serde(default)]
    pub sla_at_risk: bool,
    /// Rolling back completed steps after a failure.
    pub compensating: bool,
    /// Steps by name.
    pub steps: BTreeMap<String, StepRecord>,
    /// The group triage routed it to (its workflow's `[[triage]]` rules),
    /// which `${triage}` tasks go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_to: Option<String>,
    /// Its relations to other tickets, each kept on both tickets (the
    /// other holds the reverse), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// The audit chain's head: `seq` and `hash` of the last event.
    #[schema(value_type = Object)]
    pub head: ChainHead,
}

/// How one ticket relates to another. Each has a reverse, held by the
/// other ticket, so either side lists the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rel {
    /// The other ticket is this one's parent.
    Parent,
    /// The other ticket is this one's child.
    Child,
    /// This ticket (an incident) was caused by the other (a problem).
    CausedBy,
    /// This ticket (a problem) caused the other (an incident).
    Causes,
    /// This ticket (a change) fixes the other (a problem).
    Fixes,
    /// This ticket (a problem) is fixed by the other (a change).
    FixedBy,
    /// Related, no more said.
    Related,
}

impl Rel {
    /// Every relation, for error messages and docs.
    pub const ALL: [Rel; 7] = [
        Rel::Parent,
        Rel::Child,
        Rel::CausedBy,
        Rel::Causes,
        Rel::Fixes,
        Rel::FixedBy,
        Rel::Related,
    ];

    /// The relation as the other ticket holds it.
    pub fn reverse(self) -> Self {
        match self {
            Rel::Parent => Rel::Child,
            Rel::Child => Rel::Parent,
            Rel::CausedBy => Rel::Causes,
            Rel::Causes => Rel::CausedBy,
            Rel::Fixes => Rel::FixedBy,
            Rel::FixedBy => Rel::Fixes,
            Rel::Related => Rel::Related,
        }
    }

    /// Its name in the API (`caused_by`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Rel::Parent => "parent",
            Rel::Child => "child",
            Rel::CausedBy => "caused_by",
            Rel::Causes => "causes",
            Rel::Fixes => "fixes",
            Rel::FixedBy => "fixed_by",
            Rel::Related => "related",
        }
    }

    /// A relation by its API name, or why not.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("`{name}` is no relation (one of {})", names.join(", "))
            })
    }
}

/// A relation of a ticket to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Link {
    /// How this ticket relates to `ticket`.
    pub rel: Rel,
    /// The other ticket's id.
    pub ticket: String,
    /// Who made it: a person, `hook:NAME` for correlation, a workflow.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// The people (`p:` and a lower-case name or e-mail) and groups (`g:`)
/// related to a ticket: its requester, its tasks' holders past and present
/// and their groups, and the groups of the approvals it reached. The store
/// indexes tickets by them so a person's list need not walk every ticket;
/// it is a superset of who may read, and [`crate::access`] decides.
pub fn parties(t: &Ticket) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let person = |who: &str| format!("p:{}", who.trim().to_lowercase());
    out.insert(person(&t.requested_by));
    if let Some(g) = &t.routed_to {
        out.insert(format!("g:{g}"));
    }
    for s in t.steps.values() {
        if let Some(k) = &s.task {
            for who in k.assignee.iter().chain(&k.former_assignees) {
                out.insert(person(who));
            }
            if let Some(done) = &k.done {
                out.insert(person(&done.by));
            }
            for g in k.group.iter().chain(&k.escalated_to) {
                out.insert(format!("g:{g}"));
            }
        }
        if let Some(a) = &s.approval {
            for g in a.groups.iter().chain(&a.escalate_to) {
                out.insert(format!("g:{g}"));
            }
        }
    }
    out
}

/// A subject as the duplicate check compares it: trimmed, case folded
/// (e-mail addresses are matched case-blind in practice).
pub fn subject_key(subject: &str) -> String {
    subject.trim().to_lowercase()
}

/// New ticket ids: time-ordered and unique without coordination.
pub fn new_id(now_ms: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let noise: u64 = rand::random();
    format!(
        "T-{now_ms:012x}{:04x}{:010x}",
        n & 0xffff,
        noise & 0xff_ffff_ffff
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
