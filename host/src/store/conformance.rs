//! The contract every [`Store`] must pass. Run it against a fresh, empty store:
//! `conformance::run(&store)`. Panics on the first violation.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Batch, Store};
use crate::audit::{AuditKind, ChainHead, Draft, link, verify};
use crate::ticket::{StepRecord, Ticket, TicketState};
use crate::workflow::Workflow;

/// A ticket of workflow `wf` with one step `a`, as the checks write them.
pub fn ticket(id: &str, state: TicketState) -> Ticket {
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
        sla_at_risk_ms: None,
        sla_at_risk: false,
        compensating: false,
        steps: BTreeMap::from([("a".to_string(), StepRecord::new())]),
        routed_to: None,
        links: Vec::new(),
        head: ChainHead::default(),
    }
}

/// Attempt `n` of a step's run, begun at `n` ms, with `result`, and no
/// log or requests.
pub fn attempt(n: u32, result: crate::ticket::AttemptResult) -> crate::ticket::Attempt {
    crate::ticket::Attempt {
        n,
        op: crate::report::Op::Run,
        started_ms: u64::from(n),
        ended_ms: None,
        result,
        log: Vec::new(),
        requests: Vec::new(),
    }
}

/// A running ticket (see [`ticket`]) whose step `a` is in its first
/// attempt.
pub fn in_its_first_attempt(id: &str) -> Ticket {
    let mut t = ticket(id, TicketState::Running);
    let a = t.steps.get_mut("a").expect("step a");
    a.attempts
        .push(attempt(1, crate::ticket::AttemptResult::Running));
    t
}

/// Every check, in order.
pub fn run(store: &dyn Store) {
    tickets_round_trip_and_in_flight_tracks_state(store);
    events_come_back_in_seq_order_and_verify(store);
    workflows_idempotency_and_kv(store);
    an_empty_commit_is_fine(store);
    listings_page_filter_and_count_like_the_reference(store);
    tickets_are_written_in_parts(store);
    a_read_while_commits_land_is_of_one_commit(store);
}

/// A ticket read, alone or with all the others, while commits land gives
/// the ticket as one commit left it: its core, its steps and its attempts
/// read from stores that keep them apart must not mix two commits.
fn a_read_while_commits_land_is_of_one_commit(store: &dyn Store) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    const COMMITS: u32 = 200;
    let (done, reads) = (AtomicBool::new(false), AtomicUsize::new(0));
    let of_one_commit = |t: &Ticket, how: &str| {
        let last = t.steps["a"].attempts.last().map_or(0, |a| a.n);
        assert_eq!(
            u64::from(last),
            t.updated_ms,
            "{how}: the core of one commit with the steps of another"
        );
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Each commit gives step a its attempt n and the core
            // updated_ms n: a read mixing two commits tells them apart.
            let mut t = ticket("T-torn", TicketState::Running);
            let mut committed = super::Committed::default();
            for n in 1..=COMMITS {
                t.updated_ms = u64::from(n);
                let a = t.steps.get_mut("a").expect("step a");
                a.attempts
                    .push(attempt(n, crate::ticket::AttemptResult::Running));
                let w = committed.changes(&t);
                store
                    .commit(&[Batch {
                        tickets: vec![w],
                        ..Batch::default()
                    }])
                    .unwrap();
                // The reads overlap the commits, however fast the store.
                while n == 1 && reads.load(SeqCst) == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, SeqCst);
        });
        while !done.load(SeqCst) {
            let n = reads.fetch_add(1, SeqCst);
            if n % 2 == 0 {
                if let Some(t) = store.ticket("T-torn").unwrap() {
                    of_one_commit(&t, &format!("read {n} of the ticket"));
                }
            } else if let Some(t) = store.tickets().unwrap().iter().find(|t| t.id == "T-torn") {
                of_one_commit(t, &format!("read {n} of all tickets"));
            }
        }
    });
    let t = store.ticket("T-torn").unwrap().expect("T-torn");
    assert_eq!(t.updated_ms, u64::from(COMMITS));
    of_one_commit(&t, "the read after the commits");
}

/// Checks for a store reopened after [`run`] (a restart, another worker):
/// what `run` left is all there, and the in-flight index agrees with it.
pub fn after_reopen(store: &dyn Store) {
    let open: Vec<String> = store
        .tickets()
        .unwrap()
        .into_iter()
        .filter(|t| !t.state.is_terminal())
        .map(|t| t.id)
        .collect();
    assert_eq!(store.in_flight().unwrap(), open);
    assert!(open.contains(&"T-b".to_string()) && open.contains(&"T-e".to_string()));
    assert_eq!(store.events("T-e").unwrap().len(), 20);
    let checked = store.check().unwrap();
    assert!(checked.damage.is_empty(), "{:?}", checked.damage);
    assert_eq!(checked.tickets.len(), store.tickets().unwrap().len());
    let parted = store.ticket("T-parts").unwrap().unwrap();
    assert_eq!(parted.steps["a"].attempts.len(), RETRIES);
    assert!(checked.tickets.contains(&parted));
}

/// Attempts [`tickets_are_written_in_parts`] makes.
const RETRIES: usize = 30;

/// A ticket whose step is retried many times, written as the scheduler
/// writes it (what changed since the last commit, sometimes twice in one
/// group), reads back whole, and each write carries one step and one
/// attempt however many attempts came before.
fn tickets_are_written_in_parts(store: &dyn Store) {
    use crate::ticket::{AttemptResult, StepStatus};
    let mut t = ticket("T-parts", TicketState::Running);
    t.steps.insert("b".into(), StepRecord::new());
    let mut committed = super::Committed::default();
    let first = committed.changes(&t);
    assert_eq!((first.steps.len(), first.attempts.len()), (2, 0));
    store
        .commit(&[Batch {
            tickets: vec![first],
            ..Batch::default()
        }])
        .unwrap();
    for n in 1..=RETRIES as u32 {
        let s = t.steps.get_mut("a").unwrap();
        s.status = StepStatus::Running;
        s.attempts.push(attempt(n, AttemptResult::Running));
        t.updated_ms = u64::from(n);
        let started = committed.changes(&t);
        let s = t.steps.get_mut("a").unwrap();
        s.status = StepStatus::RetryWait;
        s.retry_at_ms = Some(u64::from(n) + 10);
        let last = s.attempts.last_mut().unwrap();
        last.ended_ms = Some(u64::from(n) + 1);
        last.result = AttemptResult::Interrupted;
        let ended = committed.changes(&t);
        // However many attempts came before: the step, its last attempt
        // and, when the last is new, the one it displaced.
        let displaced = usize::from(n > 1);
        for (w, before) in [(&started, displaced), (&ended, 0)] {
            assert_eq!(
                (w.steps.len(), w.attempts.len()),
                (1, 1 + before),
                "attempt {n}"
            );
            assert_eq!(w.attempts.last().unwrap().1.n, n);
            assert!(w.core.steps.is_empty());
        }
        // Every third round, both transitions land in one group.
        if n % 3 == 0 {
            store
                .commit(&[
                    Batch {
                        tickets: vec![started],
                        ..Batch::default()
                    },
                    Batch {
                        tickets: vec![ended],
                        ..Batch::default()
                    },
                ])
                .unwrap();
        } else {
            for w in [started, ended] {
                store
                    .commit(&[Batch {
                        tickets: vec![w],
                        ..Batch::default()
                    }])
                    .unwrap();
            }
        }
    }
    // A transition that changes nothing of the steps writes the core alone.
    t.updated_ms += 1;
    let quiet = committed.changes(&t);
    assert_eq!((quiet.steps.len(), quiet.attempts.len()), (0, 0));
    store
        .commit(&[Batch {
            tickets: vec![quiet],
            ..Batch::default()
        }])
        .unwrap();
    assert_eq!(store.ticket("T-parts").unwrap().as_ref(), Some(&t));
    assert!(store.tickets().unwrap().contains(&t));
    let checked = store.check().unwrap();
    assert!(checked.damage.is_empty(), "{:?}", checked.damage);
    assert!(checked.tickets.contains(&t));
}

fn tickets_round_trip_and_in_flight_tracks_state(store: &dyn Store) {
    assert!(store.ticket("T-a").unwrap().is_none());
    let a = ticket("T-a", TicketState::Running);
    let b = ticket("T-b", TicketState::Pending);
    store
        .commit(&[
            Batch {
                tickets: vec![a.clone().into()],
                ..Batch::default()
            },
            Batch {
                tickets: vec![b.clone().into()],
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
            tickets: vec![done.clone().into()],
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
                tickets: vec![t.into()],
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

fn listings_page_filter_and_count_like_the_reference(store: &dyn Store) {
    use super::{Listing, TicketSummary};
    let make = |i: usize, state: TicketState| {
        // Ids as `ticket::new_id` makes them: the creation instant first.
        let mut t = ticket(&format!("T-{:012x}l{i:02}", 100 + i), state);
        t.workflow = if i.is_multiple_of(3) { "lx" } else { "lw" }.into();
        t.batch = (i < 10).then(|| "B-1".to_string());
        t.subject = format!("p{}@example.com", i % 5);
        t.created_ms = 100 + i as u64;
        t
    };
    let state = |i: usize| {
        if i.is_multiple_of(2) {
            TicketState::Pending
        } else {
            TicketState::Running
        }
    };
    for chunk in [0..15, 15..30] {
        let tickets = chunk.map(|i| make(i, state(i)).into()).collect();
        store
            .commit(&[Batch {
                tickets,
                ..Batch::default()
            }])
            .unwrap();
    }
    // One ticket twice in one group: the index follows the last version.
    store
        .commit(&[
            Batch {
                tickets: (0..6)
                    .map(|i| make(i, TicketState::Running).into())
                    .collect(),
                ..Batch::default()
            },
            Batch {
                tickets: (0..6)
                    .map(|i| make(i, TicketState::Succeeded).into())
                    .collect(),
                ..Batch::default()
            },
        ])
        .unwrap();
    let everything: Vec<TicketSummary> = store
        .tickets()
        .unwrap()
        .iter()
        .map(TicketSummary::from)
        .collect();
    let queries = [
        Listing::default(),
        Listing {
            workflow: Some("lw".into()),
            ..Listing::default()
        },
        Listing {
            state: Some(TicketState::Succeeded),
            ..Listing::default()
        },
        Listing {
            state: Some(TicketState::Running),
            workflow: Some("lw".into()),
            ..Listing::default()
        },
        Listing {
            batch: Some("B-1".into()),
            newest_first: true,
            ..Listing::default()
        },
        Listing {
            subject: Some("p1@example.com".into()),
            ..Listing::default()
        },
        Listing {
            created_from_ms: Some(105),
            created_before_ms: Some(120),
            newest_first: true,
            ..Listing::default()
        },
        Listing {
            workflow: Some("l".into()),
            ..Listing::default()
        },
        Listing {
            created_from_ms: Some(110),
            created_before_ms: Some(112),
            ..Listing::default()
        },
        Listing {
            state: Some(TicketState::Running),
            created_from_ms: Some(103),
            ..Listing::default()
        },
        Listing {
            created_from_ms: Some(120),
            created_before_ms: Some(110),
            ..Listing::default()
        },
    ];
    for q in queries {
        let mut reference: Vec<TicketSummary> = everything
            .iter()
            .filter(|s| q.matches(s))
            .cloned()
            .collect();
        if q.newest_first {
            reference.reverse();
        }
        assert_eq!(store.count(&q).unwrap(), reference.len(), "{q:?}");
        // Page through four at a time with the cursor.
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list(&Listing {
                    after: cursor.clone(),
                    limit: 4,
                    ..q.clone()
                })
                .unwrap();
            assert!(page.tickets.len() <= 4);
            paged.extend(page.tickets);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, reference, "{q:?}");
    }
    assert_eq!(
        store
            .count(&Listing {
                state: Some(TicketState::Succeeded),
                workflow: Some("lw".into()),
                ..Listing::default()
            })
            .unwrap(),
        4
    );
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
        after_reopen(&reopened);
        let everything = crate::store::Listing {
            limit: 1000,
            ..Default::default()
        };
        let before = (
            reopened.list(&everything).unwrap(),
            reopened.count(&everything).unwrap(),
        );
        assert_eq!(before.1, reopened.tickets().unwrap().len());
        // A store from before the listing records: they are built at open.
        reopened.drop_listing_records();
        drop(reopened);
        let rebuilt = super::super::sled::SledStore::open(&dir).unwrap();
        assert_eq!(
            (
                rebuilt.list(&everything).unwrap(),
                rebuilt.count(&everything).unwrap()
            ),
            before
        );
        assert!(rebuilt.check().unwrap().damage.is_empty());
        drop(rebuilt);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
