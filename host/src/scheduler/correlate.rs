//! Relations between tickets, and the correlation of alerts into one
//! problem ([`crate::intake::correlation`] declares it).
//!
//! A relation is written on both tickets, each by its own driver in its
//! own trail, this side first; a link already there is a no-op, so a
//! correlation run again (a re-sent alert, a retry after a crash between
//! the two sides) completes what is missing and adds nothing twice.
//!
//! Exactly one problem per fingerprint while it is open comes from the
//! rule that keeps one open ticket per subject and workflow (the
//! problem's subject is the fingerprint): under this process's subject
//! lock on one server, and the database's check across workers on a
//! shared store. Two alerts crossing the threshold at the same instant
//! both try to open it; one does, the other finds it open and joins it.

use serde_json::Value;

use super::Scheduler;
use super::machine::Event;
use crate::error::{Error, Result};
use crate::intake::NewTicket;
use crate::intake::correlation::{Correlate, MAX_THRESHOLD, batch_id};
use crate::store::Listing;
use crate::ticket::{Rel, Ticket, now_ms, subject_key};

impl Scheduler {
    /// Relate `a` to `b` as `rel` (and `b` to `a` as its reverse), by
    /// `by`; durable on both when this returns.
    pub async fn link(&self, a: &str, rel: Rel, b: &str, by: &str) -> Result<()> {
        let link = |rel: Rel, other: &str| Event::Link {
            rel,
            other: other.to_string(),
            by: by.to_string(),
        };
        self.send(a, link(rel, b)).await?;
        self.send(b, link(rel.reverse(), a)).await
    }

    /// `incident`, an alert of `fingerprint` that hook `hook` just took,
    /// joins its problem: the open one, or one opened now if this alert
    /// brings the window's count to the threshold. The problem's id, or
    /// `None` while the count is below it.
    pub async fn correlate(
        &self,
        hook: &str,
        c: &Correlate,
        fingerprint: &str,
        incident: &Ticket,
    ) -> Result<Option<String>> {
        let by = format!("hook:{hook}");
        let open_key = (c.problem.clone(), subject_key(fingerprint));
        // An alert sent again: its incident already names its problem, so
        // only the problem's side may be missing (a crash between them).
        if let Some(l) = incident.links.iter().find(|l| l.rel == Rel::CausedBy) {
            let problem = l.ticket.clone();
            self.link(&incident.id, Rel::CausedBy, &problem, &by)
                .await?;
            return Ok(Some(problem));
        }
        let (problem, members) = match self.open_ticket(&open_key, false)? {
            Some(id) => (id, vec![incident.id.clone()]),
            None => {
                let members = self.unclaimed(hook, c, fingerprint)?;
                if members.len() < c.threshold as usize {
                    return Ok(None);
                }
                (self.open_problem(c, fingerprint, &by).await?, members)
            }
        };
        for id in &members {
            self.link(id, Rel::CausedBy, &problem, &by).await?;
        }
        Ok(Some(problem))
    }

    /// The alerts of `fingerprint` in the window (this one among them)
    /// that no problem has taken: incidents with no `caused_by`.
    fn unclaimed(&self, hook: &str, c: &Correlate, fingerprint: &str) -> Result<Vec<String>> {
        let window = u64::try_from(c.window.as_millis()).unwrap_or(u64::MAX);
        let q = Listing {
            batch: Some(batch_id(hook, fingerprint)),
            created_from_ms: Some(now_ms().saturating_sub(window)),
            limit: 2 * MAX_THRESHOLD as usize,
            ..Listing::default()
        };
        let store = &self.inner.store;
        let mut out = Vec::new();
        for s in store.list(&q)?.tickets {
            let claimed = store
                .ticket(&s.id)?
                .is_none_or(|t| t.links.iter().any(|l| l.rel == Rel::CausedBy));
            if !claimed {
                out.push(s.id);
            }
        }
        Ok(out)
    }

    /// Open the problem of `fingerprint`, or find the one another alert
    /// opened meanwhile.
    async fn open_problem(&self, c: &Correlate, fingerprint: &str, by: &str) -> Result<String> {
        let open_key = (c.problem.clone(), subject_key(fingerprint));
        let req = NewTicket {
            workflow: c.problem.clone(),
            subject: fingerprint.to_string(),
            inputs: Value::Object(c.inputs.clone().into_iter().collect()),
            batch: None,
            allow_duplicate: false,
        };
        // The open one may close between a refusal and the look that
        // follows it: then try again, a few times.
        let mut last = None;
        for _ in 0..3 {
            match self.create(req.clone(), by, None).await {
                Ok((t, _)) => {
                    self.inner.metrics.problem(true);
                    return Ok(t.id);
                }
                Err(Error::Conflict(why)) => match self.open_ticket(&open_key, false)? {
                    Some(id) => {
                        self.inner.metrics.problem(false);
                        return Ok(id);
                    }
                    None => last = Some(why),
                },
                Err(other) => return Err(other),
            }
        }
        Err(Error::Conflict(format!(
            "the problem of {fingerprint} could not be opened: {}",
            last.unwrap_or_default()
        )))
    }
}
