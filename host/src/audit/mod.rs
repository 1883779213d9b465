//! The audit trail: an append-only, per-ticket hash chain.
//!
//! Each event carries the hash of the previous one and the SHA-256 of its
//! own canonical encoding (JSON with sorted keys, `hash` left empty). The
//! ticket record keeps the head (last seq and hash), so verification detects
//! an edited, deleted, inserted or reordered event, and a cut-off tail.

pub mod export;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `prev_hash` of a ticket's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// Ticket created (with workflow version and requester).
    Created,
    /// A step call began (attempt n).
    StepStarted,
    /// `run` succeeded, with evidence.
    StepSucceeded,
    /// `verify` proved the effect, with evidence.
    StepVerified,
    /// A call failed, with the error.
    StepFailed,
    /// A retry was scheduled after a retryable failure.
    RetryScheduled,
    /// The host restarted while a call was running; it runs again.
    StepInterrupted,
    /// A step waits for a human decision.
    ApprovalRequested,
    /// A human approved (principal, comment).
    Approved,
    /// A human rejected (principal, comment).
    Rejected,
    /// A completed step was undone, with evidence.
    Compensated,
    /// Undoing a step failed.
    CompensationFailed,
    /// Someone asked to retry a failed ticket.
    RetryRequested,
    /// Cancelled (principal, reason).
    Cancelled,
    /// The SLA deadline passed with the ticket unfinished.
    SlaBreached,
    /// The SLA is at risk: its at-risk share is used up, unfinished.
    SlaAtRisk,
    /// All steps done.
    TicketSucceeded,
    /// The ticket ended in failure.
    TicketFailed,
    /// A plugin was installed or upgraded (system trail).
    PluginInstalled,
    /// A workflow definition was added or changed (system trail).
    WorkflowChanged,
    /// An operator started the server on a store found behind its
    /// completeness checkpoint, accepting the loss (system trail).
    StoreLossAccepted,
    /// A step waits for its plugin, which is not loaded (with why).
    StepWaiting,
    /// A plugin folder was unusable at start-up and skipped (system trail).
    PluginSkipped,
    /// A step's condition (`when`) was false: the step did not run and
    /// counts as done (with the condition and the values it read).
    StepSkipped,
    /// A step's condition could not be decided (it gave no true or false):
    /// the step failed without running.
    ConditionFailed,
    /// A step waits for its time (`not_before`, `delay`): when, as the
    /// workflow put it and in UTC.
    StepScheduled,
    /// An operator ran a scheduled step before its time (who, why).
    RunEarly,
    /// A human task was assigned (to whom, which group, when due).
    TaskAssigned,
    /// A person did a task (who, the note, the checklist answers).
    TaskCompleted,
    /// A task was given to someone else (by whom, to whom, why).
    TaskReassigned,
    /// A task's assignee was reminded.
    TaskReminded,
    /// A task passed its due time and went to its escalation group.
    TaskOverdue,
    /// An approval request passed its deadline undecided (and escalated).
    ApprovalOverdue,
    /// Triage routed a new ticket to a group (the group, the rule that
    /// decided and its text; or none, and rules that could not decide).
    Triaged,
    /// The ticket was related to another (the relation, the other ticket,
    /// who made it): written on both tickets, each with its own side.
    Linked,
}

/// The plugin that produced an event, pinned by its wasm hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// SHA-256 of the wasm that ran.
    pub wasm_sha256: String,
}

/// One link of a ticket's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// The ticket.
    pub ticket_id: String,
    /// 0, 1, 2, ... within the ticket.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: AuditKind,
    /// Who did it: `system` or a user principal.
    pub principal: String,
    /// The step concerned, if any.
    pub step: Option<String>,
    /// The plugin concerned, if any.
    pub plugin: Option<PluginRef>,
    /// Details: attempt, evidence, error, comment.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Hash of the previous event ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// SHA-256 of this event's canonical encoding.
    pub hash: String,
}

/// The last link: stored with the ticket so a cut-off tail is detectable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Events so far.
    pub len: u64,
    /// Hash of the last one ([`GENESIS`] when none).
    pub hash: String,
}

/// An event before it is linked.
#[derive(Debug, Clone)]
pub struct Draft {
    /// What happened.
    pub kind: AuditKind,
    /// Who.
    pub principal: String,
    /// Which step.
    pub step: Option<String>,
    /// Which plugin.
    pub plugin: Option<PluginRef>,
    /// Details.
    pub data: Value,
}

impl Draft {
    /// A system event.
    pub fn new(kind: AuditKind, data: Value) -> Self {
        Self {
            kind,
            principal: "system".into(),
            step: None,
            plugin: None,
            data,
        }
    }

    /// For a step.
    pub fn step(mut self, step: &str) -> Self {
        self.step = Some(step.to_string());
        self
    }

    /// By a principal.
    pub fn by(mut self, principal: &str) -> Self {
        self.principal = principal.to_string();
        self
    }

    /// From a plugin.
    pub fn plugin(mut self, plugin: Option<PluginRef>) -> Self {
        self.plugin = plugin;
        self
    }
}

impl AuditEvent {
    /// The canonical encoding's hash (with `hash` empty).
    ///
    /// The encoding is the event as a JSON object with every map's keys
    /// sorted (as `serde_json::Value`, whose maps are sorted, writes it),
    /// compact. It is written straight into the hasher from a borrowed view
    /// whose fields are declared in sorted order: no copy of the event, no
    /// intermediate `Value`, the same bytes (a test holds it to the
    /// `Value` route).
    pub fn compute_hash(&self) -> String {
        use sha2::Digest;
        struct Hasher(sha2::Sha256);
        impl std::io::Write for Hasher {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut hasher = Hasher(sha2::Sha256::new());
        serde_json::to_writer(&mut hasher, &Canonical::of(self)).expect("event serializes");
        hex::encode(hasher.0.finalize())
    }
}

/// An event's fields in sorted key order, `hash` empty: serialized, its
/// canonical encoding. A field added to [`AuditEvent`] goes here too, in
/// its sorted place.
#[derive(Serialize)]
struct Canonical<'a> {
    at_ms: u64,
    data: &'a Value,
    hash: &'a str,
    kind: AuditKind,
    plugin: Option<&'a PluginRef>,
    prev_hash: &'a str,
    principal: &'a str,
    seq: u64,
    step: Option<&'a str>,
    ticket_id: &'a str,
}

impl<'a> Canonical<'a> {
    fn of(e: &'a AuditEvent) -> Self {
        // Destructured, so a field added to the event fails to compile here.
        let AuditEvent {
            ticket_id,
            seq,
            at_ms,
            kind,
            principal,
            step,
            plugin,
            data,
            prev_hash,
            hash: _,
        } = e;
        Self {
            at_ms: *at_ms,
            data,
            hash: "",
            kind: *kind,
            plugin: plugin.as_ref(),
            prev_hash,
            principal,
            seq: *seq,
            step: step.as_deref(),
            ticket_id,
        }
    }
}

/// Link `draft` after `head`, advancing the head.
pub fn link(ticket_id: &str, head: &mut ChainHead, at_ms: u64, draft: Draft) -> AuditEvent {
    let prev = if head.len == 0 {
        GENESIS.to_string()
    } else {
        head.hash.clone()
    };
    let mut event = AuditEvent {
        ticket_id: ticket_id.to_string(),
        seq: head.len,
        at_ms,
        kind: draft.kind,
        principal: draft.principal,
        step: draft.step,
        plugin: draft.plugin,
        data: draft.data,
        prev_hash: prev,
        hash: String::new(),
    };
    event.hash = event.compute_hash();
    head.len += 1;
    head.hash = event.hash.clone();
    event
}

/// Where and why a chain fails verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("event {seq}: {reason}")]
pub struct ChainBreak {
    /// The first bad position.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// Check a ticket's events, in stored order, against its recorded head.
pub fn verify(ticket_id: &str, events: &[AuditEvent], head: &ChainHead) -> Result<(), ChainBreak> {
    verify_from(ticket_id, events, 0, head)
}

/// [`verify`] of the events from `start` on, the ones before it taken as
/// verified: event `start` must link to event `start - 1`'s hash.
fn verify_from(
    ticket_id: &str,
    events: &[AuditEvent],
    start: usize,
    head: &ChainHead,
) -> Result<(), ChainBreak> {
    let mut prev = match start.checked_sub(1).and_then(|i| events.get(i)) {
        Some(e) => e.hash.clone(),
        None => GENESIS.to_string(),
    };
    for (i, e) in events.iter().enumerate().skip(start) {
        let i = i as u64;
        let brk = |reason: String| Err(ChainBreak { seq: i, reason });
        if e.ticket_id != ticket_id {
            return brk(format!("belongs to ticket {}", e.ticket_id));
        }
        if e.seq != i {
            return brk(format!(
                "has seq {} (events deleted, inserted or reordered)",
                e.seq
            ));
        }
        if e.prev_hash != prev {
            return brk("does not link to the previous event".into());
        }
        if e.compute_hash() != e.hash {
            return brk("content does not match its hash (edited)".into());
        }
        prev = e.hash.clone();
    }
    if events.len() as u64 != head.len || (head.len > 0 && prev != head.hash) {
        return Err(ChainBreak {
            seq: events.len() as u64,
            reason: format!(
                "the ticket records {} events but {} are stored (tail cut or added)",
                head.len,
                events.len()
            ),
        });
    }
    Ok(())
}

/// Trails this process has verified, by ticket: how many events, and the
/// hash of the last. Reading a ticket again verifies only the events added
/// since, so a page that re-reads a ticket every few seconds does not hash
/// its whole trail each time. The cached prefix is trusted only while its
/// last event still carries the hash that was verified; `itsm audit
/// verify` and `itsm store check` always verify every event.
#[derive(Debug, Default)]
pub struct Verified(std::sync::Mutex<std::collections::HashMap<String, (usize, String)>>);

/// Tickets remembered at most (then the memory starts over).
const VERIFIED_MAX: usize = 100_000;

impl Verified {
    /// [`verify`], skipping the prefix verified before.
    pub fn verify(
        &self,
        ticket_id: &str,
        events: &[AuditEvent],
        head: &ChainHead,
    ) -> Result<(), ChainBreak> {
        let known = self
            .0
            .lock()
            .expect("verified lock")
            .get(ticket_id)
            .cloned();
        let start = match known {
            Some((n, hash)) if n > 0 && events.get(n - 1).is_some_and(|e| e.hash == hash) => n,
            _ => 0,
        };
        verify_from(ticket_id, events, start, head)?;
        if let Some(last) = events.last() {
            let mut map = self.0.lock().expect("verified lock");
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
            map.insert(ticket_id.to_string(), (events.len(), last.hash.clone()));
        }
        Ok(())
    }
}

/// Check an exported run of events (one or many tickets, any date range)
/// without the store: every event's hash matches its content, and each
/// ticket's events are consecutive and linked. A ticket's run that starts at
/// seq 0 must start from the genesis hash. Returns the number of tickets.
///
/// What the events alone cannot show is a line cut from either end; the
/// signed trailer of [`export`] covers that.
pub fn verify_export(events: &[AuditEvent]) -> Result<usize, (String, ChainBreak)> {
    let mut last: std::collections::HashMap<&str, (u64, &str)> = Default::default();
    for e in events {
        let brk = |reason: String| Err((e.ticket_id.clone(), ChainBreak { seq: e.seq, reason }));
        if e.compute_hash() != e.hash {
            return brk("content does not match its hash (edited)".into());
        }
        match last.get(e.ticket_id.as_str()) {
            Some(&(seq, hash)) => {
                if e.seq != seq + 1 {
                    return brk(format!("follows seq {seq} (events missing or reordered)"));
                }
                if e.prev_hash != hash {
                    return brk("does not link to the previous event".into());
                }
            }
            None if e.seq == 0 && e.prev_hash != GENESIS => {
                return brk("first event does not start from the genesis hash".into());
            }
            None => {}
        }
        last.insert(&e.ticket_id, (e.seq, &e.hash));
    }
    Ok(last.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: usize) -> (Vec<AuditEvent>, ChainHead) {
        let mut head = ChainHead::default();
        let events = (0..n)
            .map(|i| {
                link(
                    "T-1",
                    &mut head,
                    1000 + i as u64,
                    Draft::new(AuditKind::StepStarted, json!({ "i": i })).step("s"),
                )
            })
            .collect();
        (events, head)
    }

    #[test]
    fn a_reread_trail_is_verified_from_where_the_last_read_stopped() {
        let (events, head) = chain(10);
        let seen = Verified::default();
        let first = ChainHead {
            len: 5,
            hash: events[4].hash.clone(),
        };
        seen.verify("T-1", &events[..5], &first).unwrap();
        // An edit after the verified prefix is found.
        let mut edited = events.clone();
        edited[7].data = json!({ "i": 99 });
        assert_eq!(seen.verify("T-1", &edited, &head).unwrap_err().seq, 7);
        seen.verify("T-1", &events, &head).unwrap();
        // An edit before it is found by a fresh read (`itsm audit verify`).
        let mut early = events.clone();
        early[0].data = json!({ "i": 99 });
        assert_eq!(
            Verified::default()
                .verify("T-1", &early, &head)
                .unwrap_err()
                .seq,
            0
        );
        // And a cut tail.
        assert!(seen.verify("T-1", &events[..8], &head).is_err());
    }

    /// The encoding every stored chain was hashed with: through `Value`.
    fn hash_through_value(e: &AuditEvent) -> String {
        let mut copy = e.clone();
        copy.hash = String::new();
        let canonical = serde_json::to_value(&copy).unwrap().to_string();
        crate::digest::sha256_hex(canonical.as_bytes())
    }

    #[test]
    fn the_canonical_encoding_is_the_one_stored_chains_were_hashed_with() {
        let plugin = PluginRef {
            name: "entra-id".into(),
            version: "1.2.0".into(),
            wasm_sha256: "ab".repeat(32),
        };
        let mut head = ChainHead::default();
        let drafts = [
            Draft::new(AuditKind::Created, json!({})),
            Draft::new(
                AuditKind::StepSucceeded,
                json!({ "z": [1, -2, 3.5, null, true], "a": { "é\"\n\u{1}": "naïve ✓", "b": {} } }),
            )
            .step("disable-account")
            .plugin(Some(plugin)),
            Draft::new(AuditKind::Approved, json!("ok")).by("ana@example.com"),
        ];
        for d in drafts {
            let e = link("T-0192", &mut head, 1_700_000_000_123, d);
            assert_eq!(e.hash, hash_through_value(&e), "{e:?}");
            assert_eq!(e.compute_hash(), e.hash);
        }
        // Pinned: a change of encoding would orphan every stored trail.
        let first = &chain(1).0[0];
        assert_eq!(
            first.hash,
            "3390c9b7f98c0542e28265c477065eb943604a72155131cbc94f55ed7eddfd87"
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (events, head) = chain(5);
        verify("T-1", &events, &head).unwrap();
    }

    #[test]
    fn edits_deletions_insertions_reorders_and_cut_tails_are_detected() {
        let (events, head) = chain(5);
        let mut edited = events.clone();
        edited[2].data = json!({ "i": 99 });
        assert!(
            verify("T-1", &edited, &head)
                .unwrap_err()
                .reason
                .contains("edited")
        );

        let mut rehashed = events.clone();
        rehashed[2].principal = "mallory".into();
        rehashed[2].hash = rehashed[2].compute_hash();
        assert_eq!(verify("T-1", &rehashed, &head).unwrap_err().seq, 3);

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(verify("T-1", &deleted, &head).unwrap_err().seq, 1);

        let mut inserted = events.clone();
        inserted.insert(2, events[2].clone());
        assert_eq!(verify("T-1", &inserted, &head).unwrap_err().seq, 3);

        let mut reordered = events.clone();
        reordered.swap(1, 3);
        assert_eq!(verify("T-1", &reordered, &head).unwrap_err().seq, 1);

        let cut = &events[..4];
        assert_eq!(
            verify_export(cut),
            Ok(1),
            "an export alone cannot see a cut tail"
        );
        assert!(
            verify("T-1", cut, &head)
                .unwrap_err()
                .reason
                .contains("tail")
        );
    }

    #[test]
    fn an_export_verifies_offline_and_shows_edits_gaps_and_forged_starts() {
        let (events, _) = chain(4);
        let mut head = ChainHead::default();
        let other: Vec<AuditEvent> = (0..2)
            .map(|i| {
                link(
                    "T-2",
                    &mut head,
                    1,
                    Draft::new(AuditKind::Created, json!({ "i": i })),
                )
            })
            .collect();
        let mixed = vec![
            events[0].clone(),
            other[0].clone(),
            events[1].clone(),
            other[1].clone(),
        ];
        assert_eq!(verify_export(&mixed), Ok(2));
        // A date range may start mid-chain.
        assert_eq!(verify_export(&events[2..]), Ok(1));

        let mut edited = events.clone();
        edited[1].principal = "mallory".into();
        let (ticket, brk) = verify_export(&edited).unwrap_err();
        assert_eq!((ticket.as_str(), brk.seq), ("T-1", 1));

        let gap = vec![events[0].clone(), events[2].clone()];
        assert!(
            verify_export(&gap)
                .unwrap_err()
                .1
                .reason
                .contains("missing")
        );

        let mut forged = events[0].clone();
        forged.prev_hash = "ab".repeat(32);
        forged.hash = forged.compute_hash();
        assert!(
            verify_export(&[forged])
                .unwrap_err()
                .1
                .reason
                .contains("genesis")
        );
    }
}
