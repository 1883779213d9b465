//! Relations between tickets: a link recorded on one side, in its trail.
//!
//! The scheduler writes each relation on both tickets (this side's
//! [`Rel`], then the other's reverse), each a transition of its own ticket,
//! so neither ticket's chain is written by another's driver. A link already
//! there is a no-op with no event, which makes a retried correlation or a
//! re-sent alert add nothing.

use serde_json::json;

use super::Transition;
use crate::audit::{AuditKind, Draft};
use crate::error::{Error, Result};
use crate::ticket::{Link, Rel, Ticket};

/// The most relations one ticket holds: a problem gathering a mass
/// incident's alerts stays well under it, and a runaway correlation stops
/// at it, named, rather than growing one ticket without end.
pub const MAX_LINKS: usize = 10_000;

/// Relate `t` to `other` as `rel`, by `by`.
pub(super) fn link(
    t: &mut Ticket,
    cx: &super::Context<'_>,
    rel: Rel,
    other: String,
    by: &str,
    tr: &mut Transition,
) -> Result<()> {
    if other == t.id {
        return Err(Error::Usage(format!(
            "ticket {} cannot be related to itself",
            t.id
        )));
    }
    if t.links.iter().any(|l| l.rel == rel && l.ticket == other) {
        return Ok(());
    }
    if t.links.len() >= MAX_LINKS {
        return Err(Error::Conflict(format!(
            "ticket {} already has {MAX_LINKS} relations, the most one ticket holds",
            t.id
        )));
    }
    tr.drafts.push(
        Draft::new(
            AuditKind::Linked,
            json!({ "rel": rel.as_str(), "ticket": other }),
        )
        .by(by),
    );
    t.links.push(Link {
        rel,
        ticket: other,
        by: by.to_string(),
        at_ms: cx.now_ms,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use crate::ticket::Rel;

    fn link(rel: Rel, other: &str) -> Event {
        Event::Link {
            rel,
            other: other.into(),
            by: "hook:av".into(),
        }
    }

    #[test]
    fn a_link_is_recorded_once_with_its_event_and_never_to_the_ticket_itself() {
        let wf = workflow("max_attempts = 1");
        let mut t = ticket(&wf);
        t.state = TicketState::Succeeded;
        let cx = Context {
            workflow: &wf,
            plugins: &BTreeMap::new(),
            unavailable: &BTreeMap::new(),
            now_ms: 7,
            random: 0.0,
        };
        // A closed ticket takes a link too: an incident resolved before its
        // problem was found still belongs to it.
        let tr = apply(&mut t, &cx, link(Rel::CausedBy, "T-9")).unwrap();
        assert_eq!(tr.drafts.len(), 1);
        assert_eq!(tr.drafts[0].kind, AuditKind::Linked);
        assert_eq!(
            tr.drafts[0].data,
            json!({ "rel": "caused_by", "ticket": "T-9" })
        );
        assert_eq!(tr.drafts[0].principal, "hook:av");
        assert_eq!(t.links.len(), 1);
        assert_eq!(t.links[0].at_ms, 7);
        // The same again: nothing.
        let tr = apply(&mut t, &cx, link(Rel::CausedBy, "T-9")).unwrap();
        assert!(tr.drafts.is_empty());
        assert_eq!(t.links.len(), 1);
        // Another relation to the same ticket is another link.
        let tr = apply(&mut t, &cx, link(Rel::Related, "T-9")).unwrap();
        assert_eq!(tr.drafts.len(), 1);
        let err = apply(&mut t, &cx, link(Rel::Related, "T-1")).unwrap_err();
        assert!(err.to_string().contains("itself"), "{err}");
        assert_eq!(t.links.len(), 2);
    }
}
