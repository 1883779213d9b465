//! Notifications: which trail events a workflow announces, through which
//! notification plugin.
//!
//! ```toml
//! [[notify]]
//! plugin = "chat-webhook"
//! on = ["task_assigned", "approval_requested", "task_overdue", "approval_overdue",
//!       "sla_at_risk", "ticket_failed"]
//! config = { url = "${settings.chat_webhook_url}" }
//! ```
//!
//! After a transition that records one of these events is durable, the host
//! calls the plugin's `run` with the event (see `scheduler::notify`). The
//! plugin does the vendor's part; the host holds no vendor code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::AuditKind;

/// One notification rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotifyRule {
    /// The notification plugin.
    pub plugin: String,
    /// The trail events it announces.
    pub on: Vec<AuditKind>,
    /// Its config (`${settings.KEY}` and `${inputs.NAME}` filled in).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Secrets it takes, by the name it knows to the name supplied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

impl NotifyRule {
    /// Check at load: a plugin, and events to announce.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.plugin.trim().is_empty() {
            return Err("`plugin` is empty".into());
        }
        if self.on.is_empty() {
            return Err(format!(
                "`on` lists no events for `{}` (e.g. [\"task_assigned\", \"ticket_failed\"])",
                self.plugin
            ));
        }
        Ok(())
    }
}
