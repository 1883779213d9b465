//! Who acts: an authenticated principal and its roles, and the shape of
//! the e-mail addresses that name people (task assignees, token owners,
//! subjects). Plain data and a leaf: the state machine records who did
//! what, workflows name roles, and `auth` authenticates tokens into it.

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// The built-in roles, in the order `itsm token` lists them.
pub const BUILTIN_ROLES: [&str; 4] = ["admin", "operator", "approver", "auditor"];

/// What a principal may do, checked by each route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Install plugins, change workflows.
    Admin,
    /// Create, import, cancel, retry.
    Operator,
    /// Approve and reject.
    Approver,
    /// Read and export the trail.
    Auditor,
}

impl Role {
    /// The name in `tokens.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name recorded in the trail.
    pub name: String,
    /// Built-in roles and approval groups.
    pub roles: BTreeSet<String>,
    /// The person's e-mail, which human tasks are assigned to.
    pub email: Option<String>,
}

impl Principal {
    /// Whether `who` (an e-mail or principal name, as a task's assignee
    /// holds it) is this principal, compared case-blind.
    pub fn is(&self, who: &str) -> bool {
        let who = who.trim();
        self.name.eq_ignore_ascii_case(who)
            || self
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(who))
    }

    /// Whether it holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(role.as_str())
    }

    /// `Ok` if it holds `role`, else a [`Error::Forbidden`] naming what is missing.
    pub fn require(&self, role: Role, to: &str) -> Result<()> {
        if self.has(role) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} may not {to}: that needs the `{}` role (it has: {})",
                self.name,
                role.as_str(),
                self.roles_list()
            )))
        }
    }

    /// The keys a ticket's parties are indexed under that name this
    /// principal ([`crate::ticket::parties`]): its name, its e-mail, its
    /// groups.
    pub fn party_keys(&self) -> Vec<String> {
        let mut keys = vec![format!("p:{}", self.name.trim().to_lowercase())];
        keys.extend(
            self.email
                .iter()
                .map(|e| format!("p:{}", e.trim().to_lowercase())),
        );
        keys.extend(self.roles.iter().map(|r| format!("g:{r}")));
        keys
    }

    /// Comma-separated roles, or `none`.
    pub fn roles_list(&self) -> String {
        if self.roles.is_empty() {
            "none".into()
        } else {
            self.roles.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// A plausible address: one `@` with something either side, no spaces.
/// Whether it exists is the directory's business, not the host's.
pub fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}
