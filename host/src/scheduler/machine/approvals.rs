//! Approvals: a human vote on a step waiting for one, counted toward its
//! committee's quorum (separation of duties: never the requester), and
//! its rejection rule.

use serde_json::json;

use super::{Context, Transition};
use crate::audit::{AuditKind, Draft};
use crate::error::{Error, Result};
use crate::principal::{Principal, Role};
use crate::ticket::{Decision, StepStatus, Ticket};

/// Record a human vote on the step waiting for approval; the step goes on
/// once its committee's quorum has approved, and fails by its rejection
/// rule. Only an approver who did not request the ticket votes, once, for
/// a group of theirs that has not voted yet.
pub(super) fn decide(
    t: &mut Ticket,
    cx: &Context<'_>,
    approved: bool,
    by: Principal,
    comment: String,
    tr: &mut Transition,
) -> Result<()> {
    use crate::workflow::committee::{NoSeat, Standing};
    if t.state.is_terminal() {
        return Err(Error::Conflict(format!(
            "ticket {} is {}: nothing to decide",
            t.id,
            t.state.as_str()
        )));
    }
    let name = waiting_step(t)?;
    by.require(Role::Approver, "approve or reject")?;
    if by.name == t.requested_by {
        return Err(Error::Forbidden(format!(
            "separation of duties: {} requested or imported ticket {} and may not decide on it",
            by.name, t.id
        )));
    }
    let Some(rule) = cx.workflow.step(&name).and_then(|d| d.approval.as_ref()) else {
        return Err(Error::Conflict(format!("step `{name}` needs no approval")));
    };
    let s = t.steps.get_mut(&name).expect("step exists");
    let record = s.approval.get_or_insert_with(Default::default);
    if record.votes.iter().any(|v| v.by == by.name) {
        return Err(Error::Conflict(format!(
            "{} has already voted on step `{name}`; a committee needs distinct approvers",
            by.name
        )));
    }
    let escalated = record.overdue;
    let group = rule
        .seat(&by.roles, &cast(&record.votes), escalated)
        .map_err(|e| match e {
            NoSeat::NotInGroup(why) => Error::Forbidden(format!(
                "step `{name}` {why}; {} has: {}",
                by.name,
                by.roles_list()
            )),
            NoSeat::Voted(why) => Error::Conflict(format!("step `{name}`: {why}")),
        })?
        .to_string();
    record.votes.push(crate::ticket::Vote {
        approved,
        by: by.name.clone(),
        group: group.clone(),
        comment: comment.clone(),
        at_ms: cx.now_ms,
    });
    let standing = rule.standing(&cast(&record.votes), escalated);
    let approvals = record.votes.iter().filter(|v| v.approved).count();
    let kind = if approved {
        AuditKind::Approved
    } else {
        AuditKind::Rejected
    };
    let mut data = json!({ "comment": comment });
    if !rule.groups.is_empty() {
        data["group"] = group.into();
        data["approvals"] = approvals.into();
        data["quorum"] = rule.quorum().into();
        data["decided"] = (standing != Standing::Open).into();
    }
    tr.drafts
        .push(Draft::new(kind, data).step(&name).by(&by.name));
    let decided = match standing {
        Standing::Open => return Ok(()),
        Standing::Approved => true,
        Standing::Rejected => false,
    };
    s.status = if decided {
        StepStatus::Pending
    } else {
        StepStatus::Failed
    };
    s.decision = Some(Decision {
        approved: decided,
        by: by.name,
        comment,
        at_ms: cx.now_ms,
    });
    Ok(())
}

/// Votes as the committee rules read them.
pub(super) fn cast(votes: &[crate::ticket::Vote]) -> Vec<crate::workflow::committee::Vote<'_>> {
    votes
        .iter()
        .map(|v| crate::workflow::committee::Vote {
            group: &v.group,
            approved: v.approved,
            by: &v.by,
        })
        .collect()
}

pub(super) fn waiting_step(t: &Ticket) -> Result<String> {
    t.steps
        .iter()
        .find(|(_, s)| s.status == StepStatus::WaitingApproval)
        .map(|(n, _)| n.clone())
        .ok_or_else(|| Error::Conflict(format!("ticket {} has no step waiting for approval", t.id)))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn a_committee_needs_a_quorum_of_distinct_groups_none_the_requester() {
        let (wf, mut t) = change("any");
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        assert_eq!(t.steps["change"].status, StepStatus::WaitingApproval);
        // The requester may not vote, even in a group; nor an outsider.
        let err = at(&wf, &mut t, 1, vote("op", &["approver", "cio"], true)).unwrap_err();
        assert!(err.to_string().contains("separation of duties"), "{err}");
        let err = at(&wf, &mut t, 1, vote("hr", &["approver", "hr"], true)).unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        // One approval of two: still waiting, and the trail says so.
        let tr = at(
            &wf,
            &mut t,
            2,
            vote("sec1", &["approver", "security"], true),
        )
        .unwrap();
        assert!(tr.calls.is_empty());
        assert_eq!(tr.drafts[0].data["approvals"], 1);
        assert_eq!(tr.drafts[0].data["decided"], false);
        assert_eq!(t.steps["change"].status, StepStatus::WaitingApproval);
        // The same person again, or another of the same group: refused.
        assert!(matches!(
            at(
                &wf,
                &mut t,
                3,
                vote("sec1", &["approver", "security", "cio"], true)
            )
            .unwrap_err(),
            Error::Conflict(_)
        ));
        let err = at(
            &wf,
            &mut t,
            3,
            vote("sec2", &["approver", "security"], true),
        )
        .unwrap_err();
        assert!(err.to_string().contains("already voted"), "{err}");
        // A second group: the quorum is reached and the step runs.
        let tr = at(&wf, &mut t, 4, vote("cio", &["approver", "cio"], true)).unwrap();
        assert_eq!(tr.calls.len(), 1);
        let votes = &t.steps["change"].approval.as_ref().unwrap().votes;
        assert_eq!(
            votes
                .iter()
                .map(|v| (v.by.as_str(), v.group.as_str()))
                .collect::<Vec<_>>(),
            [("sec1", "security"), ("cio", "cio")]
        );
    }

    #[test]
    fn a_committee_rejects_by_its_rule_and_escalates_past_its_deadline() {
        // Any rejection fails the step.
        let (wf, mut t) = change("any");
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        at(&wf, &mut t, 1, vote("cio", &["approver", "cio"], false)).unwrap();
        assert_eq!(t.steps["change"].status, StepStatus::Failed);
        assert_eq!(t.state, TicketState::Failed);

        // Unreachable: one rejection leaves two seats for a quorum of two;
        // a second one fails it.
        let (wf, mut t) = change("unreachable");
        at(&wf, &mut t, 0, Event::Created { by: "op".into() }).unwrap();
        at(&wf, &mut t, 1, vote("cio", &["approver", "cio"], false)).unwrap();
        assert_eq!(t.steps["change"].status, StepStatus::WaitingApproval);
        assert_eq!(next_wake(&t), Some(3_600_000), "the deadline");
        // Past the deadline: overdue once, and cab-chairs may vote too.
        let err = at(
            &wf,
            &mut t,
            2,
            vote("chair", &["approver", "cab-chairs"], true),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Forbidden(_)),
            "not before the deadline: {err}"
        );
        let tr = at(&wf, &mut t, 3_600_000, Event::Tick).unwrap();
        assert_eq!(tr.drafts[0].kind, AuditKind::ApprovalOverdue);
        assert_eq!(tr.drafts[0].data["escalated_to"], "cab-chairs");
        assert!(
            at(&wf, &mut t, 3_600_001, Event::Tick)
                .unwrap()
                .drafts
                .is_empty(),
            "once"
        );
        assert_eq!(next_wake(&t), None);
        at(
            &wf,
            &mut t,
            3_600_002,
            vote("sec", &["approver", "security"], false),
        )
        .unwrap();
        assert_eq!(
            t.steps["change"].status,
            StepStatus::WaitingApproval,
            "the chairs make a third seat"
        );
        let tr = at(
            &wf,
            &mut t,
            3_600_003,
            vote("so", &["approver", "service-owner"], true),
        )
        .unwrap();
        assert!(tr.calls.is_empty());
        let tr = at(
            &wf,
            &mut t,
            3_600_004,
            vote("chair", &["approver", "cab-chairs"], true),
        )
        .unwrap();
        assert_eq!(tr.calls.len(), 1, "two approvals of four seats: the quorum");
    }
}
