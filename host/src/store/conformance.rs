//! The contract every [`Store`] must pass. Run it against a fresh, empty store:
//! `conformance::run(&store)`. Panics on the first violation.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Batch, Store};
use crate::audit::{AuditKind, ChainHead, Draft, link, verify};
use crate::ticket::{StepRecord, Ticket, TicketState};
use crate::workflow::Workflow;

pub(crate) fn ticket(id: &str, state: TicketState) -> Ticket {
    Ticket {
        id: id.into(),
        workflow: "wf".into(),
        workflow_hash: "h1".into(),
        workflow_version: "1".into(),
        subject: "alice@example.com".into(),
        inputs: json!({ "k": "v" }),
        state,
        requested_by: "tester".into(),
        batch: None,
        created_ms: 1,
        updated_ms: 1,
        sla_deadline_ms: None,
        sla_breached: false,
        compensating: false,
        steps: BTreeMap::from([("a".to_string(), StepRecord::new())]),
        head: ChainHead::default(),
    }
}

/// Every check, in order.
pub fn run(store: &dyn Store) {
    tickets_round_trip_and_in_flight_tracks_state(store);
    events_come_back_in_seq_order_and_verify(store);
    workflows_idempotency_and_kv(store);
    an_empty_commit_is_fine(store);
}

fn tickets_round_trip_and_in_flight_tracks_state(store: &dyn Store) {
    assert!(store.ticket("T-a").unwrap().is_none());
    let a = ticket("T-a", TicketState::Running);
    let b = ticket("T-b", TicketState::Pending);
    store
        .commit(&[
            Batch {
                tickets: vec![a.clone()],
                ..Batch::default()
            },
            Batch {
                tickets: vec![b.clone()],
                ..Batch::default()
            },
        ])
        .unwrap();
    assert_eq!(store.ticket("T-a").unwrap().as_ref(), Some(&a));
    assert_eq!(
        store.in_flight().unwrap(),
        vec!["T-a".to_string(), "T-b".to_string()]
    );
    let mut done = a.clone();
    done.state = TicketState::Succeeded;
    store
        .commit(&[Batch {
            tickets: vec![done.clone()],
            ..Batch::default()
        }])
        .unwrap();
    assert_eq!(store.in_flight().unwrap(), vec!["T-b".to_string()]);
    assert_eq!(
        store.ticket("T-a").unwrap().unwrap().state,
        TicketState::Succeeded
    );
    let all: Vec<String> = store.tickets().unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(all, vec!["T-a".to_string(), "T-b".to_string()]);
}

fn events_come_back_in_seq_order_and_verify(store: &dyn Store) {
    let mut head = ChainHead::default();
    // More than 16 events, so seq ordering is not string ordering by accident.
    let events: Vec<_> = (0..20)
        .map(|i| {
            link(
                "T-e",
                &mut head,
                i,
                Draft::new(AuditKind::StepStarted, json!({ "i": i })),
            )
        })
        .collect();
    let mut t = ticket("T-e", TicketState::Running);
    t.head = head.clone();
    // Written in two batches, the second one first in the same commit.
    store
        .commit(&[
            Batch {
                events: events[10..].to_vec(),
                tickets: vec![t],
                ..Batch::default()
            },
            Batch {
                events: events[..10].to_vec(),
                ..Batch::default()
            },
        ])
        .unwrap();
    let back = store.events("T-e").unwrap();
    assert_eq!(back, events);
    verify("T-e", &back, &store.ticket("T-e").unwrap().unwrap().head).unwrap();
    assert!(
        store.events("T-").unwrap().is_empty(),
        "a prefix of an id is not the id"
    );
}

fn workflows_idempotency_and_kv(store: &dyn Store) {
    let wf = Workflow::parse(
        "name = \"wf\"\n[[steps]]\nname = \"a\"\nplugin = \"noop\"\n",
        "wf",
    )
    .unwrap();
    store
        .commit(&[Batch {
            workflows: vec![("wf".into(), "h1".into(), wf.clone())],
            idempotency: vec![("key-1".into(), "T-a".into())],
            ..Batch::default()
        }])
        .unwrap();
    assert_eq!(store.workflow("wf", "h1").unwrap(), Some(wf.clone()));
    assert_eq!(store.workflow("wf", "h2").unwrap(), None);
    assert_eq!(
        store.workflow_versions("wf").unwrap(),
        vec![("h1".to_string(), wf.clone())]
    );
    assert!(
        store.workflow_versions("w").unwrap().is_empty(),
        "a name is not a prefix"
    );
    assert_eq!(store.idempotency("key-1").unwrap().as_deref(), Some("T-a"));
    assert_eq!(store.idempotency("key-2").unwrap(), None);
    store.kv_set("p1", "k", b"v1").unwrap();
    store.kv_set("p2", "k", b"v2").unwrap();
    store.kv_set("p2", "key2", b"value2").unwrap();
    // "p" is not a prefix of "p1": usage counts one namespace exactly.
    assert_eq!(store.kv_usage("p").unwrap(), (0, 0));
    assert_eq!(store.kv_usage("p2").unwrap(), (2, 3 + 10));
    assert_eq!(
        store.kv_get("p1", "k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        store.kv_get("p2", "k").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    store.kv_delete("p1", "k").unwrap();
    assert_eq!(store.kv_get("p1", "k").unwrap(), None);
    assert!(store.kv_get("p2", "k").unwrap().is_some());
}

fn an_empty_commit_is_fine(store: &dyn Store) {
    store.commit(&[]).unwrap();
    store.commit(&[Batch::default()]).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_conforms() {
        run(&super::super::memory::MemoryStore::default());
    }

    #[test]
    fn sled_store_conforms_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!(
            "itsm-sled-conf-{}-{}",
            std::process::id(),
            crate::ticket::now_ms()
        ));
        {
            let store = super::super::sled::SledStore::open(&dir).unwrap();
            run(&store);
        }
        let reopened = super::super::sled::SledStore::open(&dir).unwrap();
        assert_eq!(
            reopened.in_flight().unwrap(),
            vec!["T-b".to_string(), "T-e".to_string()]
        );
        assert_eq!(reopened.events("T-e").unwrap().len(), 20);
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
