//! Who must approve a step: one approver of a group, or a committee.
//!
//! ```toml
//! approval = { role = "security" }                  # one approver in `security`
//! approval = { groups = ["security", "cio", "service-owner"], quorum = 2,
//!              reject = "any", deadline = "4h", escalate_to = "cab-chairs" }
//! ```
//!
//! A committee's step goes on once `quorum` of its groups have approved:
//! each approval is by a distinct approver (never the ticket's requester)
//! and counts for one group the approver is in that has not approved yet,
//! so two members of `security` make one group's approval, not two.
//! `reject = "any"` (the default) fails the step on the first rejection;
//! `reject = "unreachable"` fails it only once so many groups have rejected
//! that the quorum cannot be reached. Past its `deadline` the request is
//! overdue (in the trail) and `escalate_to` becomes one more group that may
//! approve.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The approval a step needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// One group whose approver decides (`approver` for any approver).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// A committee: the groups that vote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How many of the groups must approve (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// When a rejection fails the step.
    #[serde(default, skip_serializing_if = "RejectRule::is_any")]
    pub reject: RejectRule,
    /// How long the request may wait before it is overdue.
    #[serde(
        default,
        with = "super::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<Duration>,
    /// The group that may approve as well once overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
}

/// When a committee's rejection fails the step.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RejectRule {
    /// The first rejection.
    #[default]
    Any,
    /// Once the quorum can no longer be reached.
    Unreachable,
}

impl RejectRule {
    fn is_any(&self) -> bool {
        *self == RejectRule::Any
    }
}

impl Approval {
    /// The groups that vote.
    pub fn voters(&self) -> Vec<&str> {
        if self.groups.is_empty() {
            vec![self.role.as_str()]
        } else {
            self.groups.iter().map(String::as_str).collect()
        }
    }

    /// How many groups must approve.
    pub fn quorum(&self) -> usize {
        self.quorum.unwrap_or(1) as usize
    }

    /// Check at load: a role or groups (not both), no group twice, a quorum
    /// its groups can reach.
    pub(super) fn check(&self) -> Result<(), String> {
        match (self.role.is_empty(), self.groups.is_empty()) {
            (true, true) => return Err("give a `role` or committee `groups`".into()),
            (false, false) => return Err("give a `role` or committee `groups`, not both".into()),
            _ => {}
        }
        let voters = self.voters();
        let distinct: std::collections::BTreeSet<&str> = voters.iter().copied().collect();
        if distinct.len() != voters.len() {
            return Err("a group is listed twice in `groups`".into());
        }
        if voters.iter().any(|g| g.trim().is_empty()) {
            return Err("a group name is empty".into());
        }
        let quorum = self.quorum();
        if quorum == 0 || quorum > voters.len() {
            return Err(format!(
                "quorum {quorum} cannot be reached by {} group{} ({})",
                voters.len(),
                if voters.len() == 1 { "" } else { "s" },
                voters.join(", ")
            ));
        }
        if self.escalate_to.is_some() && self.deadline.is_none() {
            return Err("`escalate_to` needs a `deadline` to escalate after".into());
        }
        Ok(())
    }
}

/// One vote on a committee's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote<'a> {
    /// The group it counted for.
    pub group: &'a str,
    /// Approve or reject.
    pub approved: bool,
    /// Who.
    pub by: &'a str,
}

/// Why someone has no vote left on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSeat {
    /// They are in none of the voting groups.
    NotInGroup(String),
    /// Every group of theirs has voted.
    Voted(String),
}

/// Where a request stands after its votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still open.
    Open,
    /// Quorum reached.
    Approved,
    /// Rejected by the rule.
    Rejected,
}

impl Approval {
    /// The group a new vote by someone in `roles` counts for: the first
    /// voting group (the escalation group too, once escalated) they are in
    /// that has not voted yet.
    pub fn seat<'a>(
        &'a self,
        roles: &std::collections::BTreeSet<String>,
        votes: &[Vote<'_>],
        escalated: bool,
    ) -> Result<&'a str, NoSeat> {
        let mut eligible: Vec<&str> = self.voters();
        if escalated && let Some(e) = &self.escalate_to {
            eligible.push(e);
        }
        let any_approver = |g: &str| g == crate::principal::Role::Approver.as_str();
        let mine: Vec<&str> = eligible
            .iter()
            .copied()
            .filter(|g| any_approver(g) || roles.contains(*g))
            .collect();
        if mine.is_empty() {
            return Err(NoSeat::NotInGroup(format!(
                "needs an approver in {}",
                groups_text(&eligible)
            )));
        }
        mine.iter()
            .copied()
            .find(|g| !votes.iter().any(|v| v.group == *g))
            .ok_or_else(|| {
                let open: Vec<&str> = eligible
                    .iter()
                    .copied()
                    .filter(|g| !votes.iter().any(|v| v.group == *g))
                    .collect();
                NoSeat::Voted(format!(
                    "{} has already voted; the step waits for {}",
                    groups_text(&mine),
                    if open.is_empty() {
                        "no other group".to_string()
                    } else {
                        groups_text(&open)
                    }
                ))
            })
    }

    /// Where the request stands after `votes`.
    pub fn standing(&self, votes: &[Vote<'_>], escalated: bool) -> Standing {
        let approvals = votes.iter().filter(|v| v.approved).count();
        let rejections = votes.len() - approvals;
        if approvals >= self.quorum() {
            return Standing::Approved;
        }
        let seats = self.voters().len() + usize::from(escalated && self.escalate_to.is_some());
        let unreachable = approvals + (seats - votes.len().min(seats)) < self.quorum();
        match self.reject {
            RejectRule::Any if rejections > 0 => Standing::Rejected,
            _ if unreachable => Standing::Rejected,
            _ => Standing::Open,
        }
    }
}

/// "the `security` group" or "one of the groups `a`, `b`".
fn groups_text(groups: &[&str]) -> String {
    match groups {
        [g] => format!("the `{g}` group"),
        _ => format!(
            "one of the groups {}",
            groups
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn committee(reject: RejectRule) -> Approval {
        Approval {
            role: String::new(),
            groups: vec!["security".into(), "cio".into(), "service-owner".into()],
            quorum: Some(2),
            reject,
            deadline: Some(Duration::from_secs(3600)),
            escalate_to: Some("cab-chairs".into()),
        }
    }

    fn roles(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_quorum_of_distinct_groups_approves() {
        let c = committee(RejectRule::Any);
        let mut votes = Vec::new();
        let seat = c
            .seat(&roles(&["approver", "security", "cio"]), &votes, false)
            .unwrap();
        assert_eq!(seat, "security");
        votes.push(Vote {
            group: seat,
            approved: true,
            by: "a",
        });
        assert_eq!(c.standing(&votes, false), Standing::Open);
        // A second member of security may not add security again; one who is
        // also in cio counts for cio.
        let NoSeat::Voted(e) = c
            .seat(&roles(&["approver", "security"]), &votes, false)
            .unwrap_err()
        else {
            panic!("a voted group")
        };
        assert!(e.contains("`security` group has already voted; the step waits for one of the groups `cio`, `service-owner`"), "{e}");
        assert_eq!(
            c.seat(&roles(&["approver", "security", "cio"]), &votes, false)
                .unwrap(),
            "cio"
        );
        votes.push(Vote {
            group: "cio",
            approved: true,
            by: "b",
        });
        assert_eq!(c.standing(&votes, false), Standing::Approved);
        // Outsiders are named the groups.
        let NoSeat::NotInGroup(e) = c.seat(&roles(&["approver", "hr"]), &[], false).unwrap_err()
        else {
            panic!("an outsider")
        };
        assert!(
            e.contains("one of the groups `security`, `cio`, `service-owner`"),
            "{e}"
        );
        // Escalated, the chairs may vote too.
        assert_eq!(
            c.seat(&roles(&["approver", "cab-chairs"]), &[], true)
                .unwrap(),
            "cab-chairs"
        );
    }

    #[test]
    fn rejection_rules() {
        let no = |g| Vote {
            group: g,
            approved: false,
            by: "x",
        };
        let yes = |g| Vote {
            group: g,
            approved: true,
            by: "y",
        };
        let any = committee(RejectRule::Any);
        assert_eq!(any.standing(&[no("cio")], false), Standing::Rejected);
        let unreachable = committee(RejectRule::Unreachable);
        assert_eq!(unreachable.standing(&[no("cio")], false), Standing::Open);
        assert_eq!(
            unreachable.standing(&[no("cio"), yes("security")], false),
            Standing::Open
        );
        assert_eq!(
            unreachable.standing(&[no("cio"), no("security")], false),
            Standing::Rejected
        );
        // The escalation group is one more seat.
        assert_eq!(
            unreachable.standing(&[no("cio"), no("security")], true),
            Standing::Open
        );
    }

    #[test]
    fn bad_committees_fail_at_load() {
        let mut c = committee(RejectRule::Any);
        c.quorum = Some(4);
        assert_eq!(
            c.check().unwrap_err(),
            "quorum 4 cannot be reached by 3 groups (security, cio, service-owner)"
        );
        c.quorum = Some(2);
        c.role = "security".into();
        assert!(c.check().unwrap_err().contains("not both"));
        c.role.clear();
        c.groups.push("cio".into());
        assert!(c.check().unwrap_err().contains("twice"));
        let e = crate::workflow::Workflow::parse(
            "name = \"w\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\napproval = { groups = [\"a\"], quorum = 2 }\n",
            "change.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "change.toml: step `s`: approval: quorum 2 cannot be reached by 1 group (a)"
            ),
            "{e}"
        );
    }
}
