//! Delivery of a workflow's notifications (`[[notify]]`): after a
//! transition is durable, each of its trail events a rule names is handed to
//! that rule's notification plugin (`run`), with a line of text the host
//! writes the same way for every plugin.
//!
//! Delivery is at most once per commit and best effort: a notification is
//! not part of the ticket's state, so a failed or slow one never holds the
//! ticket up. A retryable failure (429, 5xx) is tried again, twice, after
//! the plugin's `retry_after` or a second; what still fails is logged and
//! counted (`itsm_step_calls_total{op="notify"}`). A host that dies between
//! the commit and the call does not send it.

use std::time::Duration;

use serde_json::{Value, json};

use super::Scheduler;
use crate::audit::{AuditEvent, AuditKind};
use crate::runtime::{FailureKind, Grants, Op, Outcome, StepInput};
use crate::ticket::Ticket;
use crate::workflow::Workflow;

const ATTEMPTS: u32 = 3;

impl Scheduler {
    /// Announce `events`, just committed for `ticket`, as `wf` says.
    pub(super) fn notify(&self, ticket: &Ticket, wf: &Workflow, events: &[AuditEvent]) {
        if wf.notify.is_empty() || self.is_draining() {
            return;
        }
        let set = self.plugin_set();
        for rule in &wf.notify {
            for e in events.iter().filter(|e| rule.on.contains(&e.kind)) {
                let Some(plugin) = set.plugins.get(&rule.plugin).cloned() else {
                    tracing::warn!(ticket = %ticket.id, plugin = %rule.plugin, "notification plugin not loaded; not sent");
                    continue;
                };
                let mut secrets = std::collections::BTreeMap::new();
                for (wanted, supplied) in &rule.secrets {
                    if let Some(v) = self.inner.secrets.get(supplied) {
                        secrets.insert(wanted.clone(), v.clone());
                    }
                }
                let grants = Grants {
                    config: crate::workflow::inputs::fill_config(&rule.config, &ticket.inputs),
                    secrets,
                };
                let kind = kind_name(e.kind);
                let mut input = StepInput {
                    ticket_id: ticket.id.clone(),
                    step: e.step.clone().unwrap_or_default(),
                    subject: ticket.subject.clone(),
                    inputs: json!({
                        "event": kind,
                        "text": text(ticket, e),
                        "step": e.step,
                        "data": e.data,
                        "workflow": ticket.workflow,
                        "principal": e.principal,
                    }),
                    prior_outputs: json!({}),
                    attempt: 1,
                    // One notification, one key: a plugin may deduplicate on it.
                    idempotency_key: format!("{}/notify/{}", ticket.id, e.seq),
                };
                let metrics = self.inner.metrics.clone();
                let (id, plugin_name) = (ticket.id.clone(), rule.plugin.clone());
                tokio::spawn(crate::cpu::short(async move {
                    loop {
                        let started = std::time::Instant::now();
                        let result = plugin.call(Op::Run, &input, &grants).await;
                        let (outcome, wait, why) = match &result {
                            Ok(r) => match &r.outcome {
                                Outcome::Succeeded { .. } => ("succeeded", None, String::new()),
                                Outcome::Failed { error }
                                    if error.kind == FailureKind::Retryable =>
                                {
                                    (
                                        "retryable",
                                        Some(error.retry_after_ms.unwrap_or(1000)),
                                        error.message.clone(),
                                    )
                                }
                                Outcome::Failed { error } => ("fatal", None, error.message.clone()),
                            },
                            Err(e) => ("fatal", None, e.to_string()),
                        };
                        metrics.call(
                            &plugin_name,
                            "notify",
                            outcome,
                            started.elapsed().as_secs_f64(),
                        );
                        match wait {
                            Some(ms) if input.attempt < ATTEMPTS => {
                                input.attempt += 1;
                                tokio::time::sleep(Duration::from_millis(ms.min(30_000))).await;
                            }
                            _ => {
                                if outcome != "succeeded" {
                                    tracing::warn!(ticket = %id, plugin = %plugin_name, event = %kind, error = %why, "notification not delivered");
                                }
                                return;
                            }
                        }
                    }
                }));
            }
        }
    }
}

/// The event's name as the trail writes it (`task_assigned`).
fn kind_name(kind: AuditKind) -> String {
    match serde_json::to_value(kind) {
        Ok(Value::String(s)) => s,
        _ => "event".to_string(),
    }
}

/// One line a person reads in a chat.
fn text(t: &Ticket, e: &AuditEvent) -> String {
    let d = &e.data;
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let step = e.step.as_deref().unwrap_or_default();
    let of = format!("{} (ticket {}, {})", t.subject, t.id, t.workflow);
    match e.kind {
        AuditKind::TaskAssigned => {
            let mut who = vec![];
            if !s("assignee").is_empty() {
                who.push(s("assignee"));
            }
            if !s("group").is_empty() {
                who.push(format!("group {}", s("group")));
            }
            let due = if s("due").is_empty() {
                String::new()
            } else {
                format!(", due {}", s("due"))
            };
            format!(
                "Task `{step}` for {of} is assigned to {}{due}.",
                who.join(", ")
            )
        }
        AuditKind::TaskReminded => format!("Reminder: task `{step}` for {of} is still to do."),
        AuditKind::TaskOverdue => match d["escalated_to"].as_str() {
            Some(g) => format!("Overdue: task `{step}` for {of}; escalated to {g}."),
            None => format!("Overdue: task `{step}` for {of}."),
        },
        AuditKind::ApprovalRequested => match d["groups"].as_array() {
            Some(groups) => format!(
                "Approval needed: step `{step}` for {of} needs {} of {}.",
                d["quorum"],
                groups
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!(
                "Approval needed: step `{step}` for {of} needs an approver in {}.",
                s("role")
            ),
        },
        AuditKind::ApprovalOverdue => format!("Overdue: the approval of step `{step}` for {of}."),
        AuditKind::SlaAtRisk => format!(
            "SLA at risk: {of} is due {}.",
            d["deadline_ms"]
                .as_u64()
                .map(crate::workflow::time::utc)
                .unwrap_or_default()
        ),
        AuditKind::SlaBreached => format!("SLA breached: {of}."),
        AuditKind::TicketFailed => format!("Failed: {of}; it needs someone to look at it."),
        AuditKind::TicketSucceeded => format!("Done: {of}."),
        other => format!(
            "{}: {of}{}",
            kind_name(other),
            if step.is_empty() {
                String::new()
            } else {
                format!(", step `{step}`")
            }
        ),
    }
}
