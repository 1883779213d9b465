//! The PostgreSQL store against a real server: Debian's PostgreSQL, a
//! throwaway cluster per test (`initdb` + `pg_ctl` in a temporary directory,
//! on a loopback port, as a non-root user when the tests run as root).

use itsm_host::store::Store;
use itsm_host::store::postgres::PgStore;
pub use itsm_sandbox::postgres::Cluster;

#[test]
fn the_postgres_store_passes_the_conformance_suite_and_reads_back_after_reopen() {
    let cluster = Cluster::start();
    {
        let store = PgStore::open(&cluster.url()).unwrap();
        itsm_host::store::conformance::run(&store);
    }
    assert_eq!(
        cluster.sql("SELECT version, name FROM itsm.schema_migrations ORDER BY version"),
        "1|initial\n2|leases\n3|documents\n4|ticket parts\n5|witness\n6|wants plugins"
    );
    // A second open (another worker starting) finds the schema done.
    let reopened = PgStore::open(&cluster.url()).unwrap();
    assert_eq!(
        cluster.sql("SELECT count(*) FROM itsm.schema_migrations"),
        "6"
    );
    itsm_host::store::conformance::after_reopen(&reopened);

    // A row damaged behind the store's back is named, and so is a listing
    // column that disagrees with its ticket.
    cluster.sql(
        "UPDATE itsm.tickets SET body = overlay(body placing '\\x00'::bytea from 20 for 1) \
         WHERE id = 'T-b'",
    );
    let e = reopened.ticket("T-b").unwrap_err().to_string();
    assert!(e.contains("corrupt record t/T-b"), "{e}");
    cluster.sql("UPDATE itsm.tickets SET state = 'succeeded' WHERE id = 'T-e'");
    let damage = reopened.check().unwrap().damage;
    let keys: Vec<&str> = damage.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["t/T-b", "t/T-e"], "{damage:?}");
    assert!(
        damage[1]
            .problem
            .contains("listing columns disagree with the ticket"),
        "{damage:?}"
    );

    // An audit event is never rewritten: a second event at a seq fails the
    // commit, and nothing of that commit lands.
    let first = reopened.events("T-e").unwrap()[0].clone();
    let mut again = first.clone();
    again.data = serde_json::json!({ "rewritten": true });
    let t = itsm_host::store::conformance::ticket("T-new", itsm_host::ticket::TicketState::Running);
    let e = reopened
        .commit(&[itsm_host::store::Batch {
            tickets: vec![t.into()],
            events: vec![again],
            ..Default::default()
        }])
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate key"), "{e}");
    assert_eq!(reopened.events("T-e").unwrap()[0], first);
    assert!(reopened.ticket("T-new").unwrap().is_none());

    // A worker older than the database's schema does not write to it.
    cluster.sql("INSERT INTO itsm.schema_migrations (version, name) VALUES (99, 'future')");
    let e = PgStore::open(&cluster.url()).err().unwrap().to_string();
    assert!(
        e.contains("schema is at version 99, newer than this itsm knows (6)"),
        "{e}"
    );
}

#[test]
fn a_server_without_fsync_and_a_bad_url_are_refused_by_name() {
    let cluster = Cluster::start();
    cluster.sql("ALTER SYSTEM SET fsync = off");
    cluster.sql("SELECT pg_reload_conf()");
    let e = PgStore::open(&cluster.url()).err().unwrap().to_string();
    assert!(e.contains("fsync = off"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{}", cluster.port)), "{e}");
    let e = PgStore::open("postgres://itsm:secret@127.0.0.1:1/x?sslmode=bogus")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a PostgreSQL URL"), "{e}");
    assert!(!e.contains("secret"), "the password is not repeated: {e}");
}

/// The store as worker `name` opens it, its leases lasting `ttl`.
fn worker(cluster: &Cluster, name: &str, ttl: std::time::Duration) -> PgStore {
    PgStore::open_as(
        &cluster.url(),
        itsm_host::store::LeaseConfig {
            worker: name.into(),
            ttl,
        },
    )
    .unwrap()
}

#[test]
fn a_lease_fences_out_a_worker_that_lost_it_and_passes_to_the_next() {
    use itsm_host::store::{Batch, Leases};
    use itsm_host::ticket::TicketState;
    let cluster = Cluster::start();
    // Long enough that a loaded machine (CI runs every test at once on two
    // cores) does not outlast a lease between two lines; 800 ms did.
    let ttl = std::time::Duration::from_secs(4);
    let worker = |name: &str| worker(&cluster, name, ttl);
    let (a, b) = (worker("a"), worker("b"));
    let mut t = itsm_host::store::conformance::ticket("T-lease", TicketState::Running);
    let fa = a.fence_for_new().unwrap();
    a.commit(&[Batch {
        tickets: vec![t.clone().into()],
        fence: Some(fa),
        ..Batch::default()
    }])
    .unwrap();
    let owner = || cluster.sql("SELECT owner FROM itsm.tickets WHERE id = 'T-lease'");
    assert_eq!(owner(), "a");
    // Live: nobody else takes it, by decision or by looking for work.
    assert_eq!(b.acquire("T-lease").unwrap(), None);
    assert!(b.claim_due(u64::MAX, 10, &[]).unwrap().is_empty());
    // A renewal keeps it past one lease length.
    std::thread::sleep(ttl * 5 / 8);
    assert_eq!(
        a.renew(&["T-lease".into()]).unwrap(),
        vec!["T-lease".to_string()]
    );
    std::thread::sleep(ttl * 5 / 8);
    assert!(b.claim_due(u64::MAX, 10, &[]).unwrap().is_empty());
    // a stops renewing: once its lease runs out, b takes the ticket over.
    std::thread::sleep(ttl / 2);
    let taken = b.claim_due(u64::MAX, 10, &[]).unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let (id, fb) = taken[0].clone();
    assert_eq!(id, "T-lease");
    assert!(fb > fa);
    assert_eq!(owner(), "b");
    // a wakes up and writes under its old token: refused, nothing lands.
    t.updated_ms = 99;
    let zombie = Batch {
        tickets: vec![t.clone().into()],
        fence: Some(fa),
        ..Batch::default()
    };
    let other = itsm_host::store::conformance::ticket("T-other", TicketState::Running);
    let fresh = Batch {
        tickets: vec![other.into()],
        fence: Some(a.fence_for_new().unwrap()),
        ..Batch::default()
    };
    // In one group with a batch that is a's to write: only the stale one is left out.
    assert_eq!(
        a.commit_fenced(&[zombie.clone(), fresh]).unwrap(),
        vec![(0, itsm_host::store::Refusal::Fenced)]
    );
    assert!(a.ticket("T-other").unwrap().is_some());
    assert_eq!(a.ticket("T-lease").unwrap().unwrap().updated_ms, 1);
    let e = a.commit(&[zombie]).unwrap_err().to_string();
    assert!(e.starts_with("fenced:"), "{e}");
    assert!(a.renew(&["T-lease".into()]).unwrap().is_empty());
    // b writes under its token, then releases it with a wake in an hour:
    // not due for anyone, but a decision on a takes it at once.
    t.updated_ms = 100;
    b.commit(&[Batch {
        tickets: vec![t.clone().into()],
        fence: Some(fb),
        ..Batch::default()
    }])
    .unwrap();
    let hour = itsm_host::ticket::now_ms() + 3_600_000;
    b.release("T-lease", fb, Some(hour), &[]).unwrap();
    assert!(
        a.claim_due(itsm_host::ticket::now_ms(), 10, &[])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        a.claim_due(hour, 10, &[]).unwrap().len(),
        1,
        "due at its wake"
    );
    // A stale release is a no-op.
    b.release("T-lease", fb, None, &[]).unwrap();
    assert_eq!(owner(), "a");
    // The duplicate check sees every worker's open tickets.
    assert_eq!(
        b.open_for("wf", "alice@example.com").unwrap().as_deref(),
        Some("T-lease")
    );
    assert_eq!(b.open_for("wf", "bob@example.com").unwrap(), None);
    // Restarted under the same name, a takes back what its name holds.
    let again = worker("a");
    let mut own: Vec<String> = again
        .reclaim_own()
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    own.sort();
    assert_eq!(own, vec!["T-lease".to_string(), "T-other".to_string()]);
}

/// A ticket released for want of plugins is due at once for a worker that
/// has one of them, and left alone by one that lacks them all; taking it
/// clears the want, so a plain release later is anyone's again.
#[test]
fn a_ticket_released_for_want_of_a_plugin_goes_only_to_a_worker_that_has_one() {
    use itsm_host::store::{Batch, Leases};
    use itsm_host::ticket::TicketState;
    let cluster = Cluster::start();
    let worker = |name: &str| worker(&cluster, name, std::time::Duration::from_secs(10));
    let (a, b) = (worker("a"), worker("b"));
    let t = itsm_host::store::conformance::ticket("T-wants", TicketState::Running);
    let fa = a.fence_for_new().unwrap();
    a.commit(&[Batch {
        tickets: vec![t.into()],
        fence: Some(fa),
        ..Batch::default()
    }])
    .unwrap();
    let wants = ["crm".to_string(), "mdm".to_string()];
    a.release("T-wants", fa, Some(0), &wants).unwrap();
    let now_ms = itsm_host::ticket::now_ms;
    let lacking = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    // b lacks both, or both and more: not b's.
    assert!(
        b.claim_due(now_ms(), 10, &lacking(&["crm", "mdm"]))
            .unwrap()
            .is_empty()
    );
    assert!(
        b.claim_due(now_ms(), 10, &lacking(&["crm", "mdm", "x"]))
            .unwrap()
            .is_empty()
    );
    // b has mdm: b's.
    let taken = b.claim_due(now_ms(), 10, &lacking(&["crm"])).unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let fb = taken[0].1;
    assert_eq!(
        cluster.sql("SELECT coalesce(array_to_string(wants_plugins, ','), 'none') FROM itsm.tickets WHERE id = 'T-wants'"),
        "none"
    );
    // Released with no want: due for a worker that lacks plugins too.
    b.release("T-wants", fb, Some(0), &[]).unwrap();
    assert_eq!(
        a.claim_due(now_ms(), 10, &lacking(&["crm", "mdm"]))
            .unwrap()
            .len(),
        1
    );
}

/// Two workers' creates that stand against each other, settled by the
/// database in the later commit: the same idempotency key (the later
/// create is refused, naming the key, and writes nothing) and a second
/// open ticket for one subject of one workflow (refused, naming the open
/// ticket), while a create that allows a duplicate, one for another
/// subject and one for the subject once its ticket is done all land.
#[test]
fn creates_on_two_workers_for_one_key_or_one_subject_are_settled_by_the_database() {
    use itsm_host::store::{Batch, Leases, Refusal};
    use itsm_host::ticket::TicketState;
    let cluster = Cluster::start();
    let worker = |name: &str| worker(&cluster, name, std::time::Duration::from_secs(10));
    let (a, b) = (worker("a"), worker("b"));
    let create = |store: &PgStore, id: &str, subject: &str, key: Option<&str>, exclusive: bool| {
        let mut t = itsm_host::store::conformance::ticket(id, TicketState::Running);
        t.subject = subject.into();
        let subject_key = itsm_host::ticket::subject_key(subject);
        Batch {
            tickets: vec![t.into()],
            idempotency: key
                .map(|k| vec![(k.to_string(), id.to_string())])
                .unwrap_or_default(),
            fence: Some(store.fence_for_new().unwrap()),
            exclusive: exclusive.then(|| ("wf".to_string(), subject_key)),
            ..Batch::default()
        }
    };
    a.commit(&[create(&a, "T-1", "Alice@example.com", Some("k1"), true)])
        .unwrap();
    // The same key on b, for another subject: refused, and nothing of it lands.
    let refused = b
        .commit_fenced(&[
            create(&b, "T-2", "carol@example.com", Some("k1"), false),
            create(&b, "T-3", "dave@example.com", Some("k3"), true),
        ])
        .unwrap();
    assert_eq!(refused, vec![(0, Refusal::KeyTaken("k1".into()))]);
    assert!(b.ticket("T-2").unwrap().is_none());
    assert_eq!(b.idempotency("k1").unwrap().as_deref(), Some("T-1"));
    assert_eq!(b.idempotency("k3").unwrap().as_deref(), Some("T-3"));
    // A second open ticket for Alice (her subject folded): refused,
    // naming hers, and its key is not taken.
    let refused = b
        .commit_fenced(&[create(&b, "T-4", " alice@EXAMPLE.com", Some("k4"), true)])
        .unwrap();
    assert_eq!(refused, vec![(0, Refusal::SubjectOpen("T-1".into()))]);
    // A plain commit has no refusal to hand back: it is a conflict naming hers.
    let e = b
        .commit(&[create(&b, "T-4", " alice@EXAMPLE.com", Some("k4"), true)])
        .unwrap_err();
    assert!(
        matches!(&e, itsm_host::error::Error::Conflict(m) if m.contains("T-1")),
        "{e}"
    );
    assert!(b.ticket("T-4").unwrap().is_none());
    assert_eq!(b.idempotency("k4").unwrap(), None);
    // Two for one subject in one group: the first stands.
    let refused = b
        .commit_fenced(&[
            create(&b, "T-5", "erin@example.com", None, true),
            create(&b, "T-6", "erin@example.com", None, true),
        ])
        .unwrap();
    assert_eq!(refused, vec![(1, Refusal::SubjectOpen("T-5".into()))]);
    // Allowed a duplicate: it lands beside Alice's open ticket.
    b.commit(&[create(&b, "T-7", "alice@example.com", None, false)])
        .unwrap();
    // Once Alice's tickets are done, a new exclusive one lands.
    for id in ["T-1", "T-7"] {
        let mut done = b.ticket(id).unwrap().unwrap();
        done.state = TicketState::Succeeded;
        b.commit(&[Batch {
            tickets: vec![done.into()],
            ..Batch::default()
        }])
        .unwrap();
    }
    b.commit(&[create(&b, "T-8", "alice@example.com", None, true)])
        .unwrap();
    let tickets = cluster.sql("SELECT string_agg(id, ',' ORDER BY id) FROM itsm.tickets");
    assert_eq!(tickets, "T-1,T-3,T-5,T-7,T-8");
}

/// Two workers appending to the shared system trail at once: every event
/// lands once, in one chain that verifies, each naming its worker, and
/// the head follows; a trail cut below its head does not verify.
#[test]
fn the_system_trail_is_one_chain_for_every_worker() {
    use itsm_host::audit::{AuditKind, Draft};
    use itsm_host::shared::system_trail::SystemTrail;
    use std::sync::Arc;
    let cluster = Cluster::start();
    let store: Arc<dyn Store> = Arc::new(PgStore::open(&cluster.url()).unwrap());
    let other: Arc<dyn Store> = Arc::new(PgStore::open(&cluster.url()).unwrap());
    let trails = [
        Arc::new(SystemTrail::shared(store, "worker-a").unwrap()),
        Arc::new(SystemTrail::shared(other, "worker-b").unwrap()),
    ];
    let threads: Vec<_> = trails
        .iter()
        .cloned()
        .map(|trail| {
            std::thread::spawn(move || {
                for i in 0..15 {
                    trail
                        .append(
                            Draft::new(AuditKind::WorkflowChanged, serde_json::json!({ "i": i })),
                            1_000 + i,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let events = trails[0].events().unwrap();
    assert_eq!(events.len(), 30);
    for worker in ["worker-a", "worker-b"] {
        let mine = events.iter().filter(|e| e.data["worker"] == worker).count();
        assert_eq!(mine, 15, "{worker}");
    }
    assert_eq!(trails[1].head().unwrap().len, 30);
    assert!(trails[0].verify().unwrap().is_ok());
    assert!(trails[1].verify().unwrap().is_ok());
    // The last event deleted behind the trail's back: cut below the head.
    cluster.sql("DELETE FROM itsm.events WHERE ticket_id = 'system' AND seq = 29");
    let broken = trails[1].verify().unwrap().unwrap_err();
    assert!(broken.reason.contains("tail"), "{broken:?}");
}

/// The witness covers the tickets of a database upgraded to it (the
/// migration witnesses what is stored), names a ticket deleted behind the
/// store's back or rolled back apart from it, and, once the loss is
/// accepted, nothing.
#[test]
fn the_witness_names_a_ticket_deleted_or_cut_behind_the_stores_back() {
    use itsm_host::store::{Batch, conformance::ticket};
    use itsm_host::ticket::TicketState;
    let cluster = Cluster::start();
    let store = PgStore::open(&cluster.url()).unwrap();
    for (id, len) in [("T-1", 2), ("T-2", 3), ("T-3", 1)] {
        let mut t = ticket(id, TicketState::Running);
        t.head.len = len;
        t.head.hash = format!("h{len}");
        store
            .commit(&[Batch {
                tickets: vec![t.into()],
                ..Batch::default()
            }])
            .unwrap();
    }
    drop(store);
    // A database from before the witness: the upgrade witnesses its tickets.
    cluster.sql("DROP TABLE itsm.witness");
    cluster.sql("ALTER TABLE itsm.tickets DROP COLUMN wants_plugins");
    cluster.sql("DELETE FROM itsm.schema_migrations WHERE version >= 5");
    let store = PgStore::open(&cluster.url()).unwrap();
    assert_eq!(
        cluster.sql("SELECT ticket_id, len, hash FROM itsm.witness ORDER BY ticket_id"),
        "T-1|2|h2\nT-2|3|h3\nT-3|1|h1"
    );
    let witness = store.witness().expect("a shared store keeps a witness");
    assert!(witness.shortfall().unwrap().is_empty());

    // A later commit moves the witness on; a stale one cannot move it back.
    let mut t2 = store.ticket("T-2").unwrap().unwrap();
    t2.head.len = 5;
    t2.head.hash = "h5".into();
    let commit = |t: &itsm_host::ticket::Ticket| {
        store
            .commit(&[Batch {
                tickets: vec![t.clone().into()],
                ..Batch::default()
            }])
            .unwrap()
    };
    commit(&t2);
    let mut stale = t2.clone();
    stale.head.len = 4;
    stale.head.hash = "h4".into();
    commit(&stale);
    assert_eq!(
        cluster.sql("SELECT len, hash FROM itsm.witness WHERE ticket_id = 'T-2'"),
        "5|h5"
    );
    // ...and T-2 as stored now (the stale write) is behind it.
    cluster.sql("DELETE FROM itsm.tickets WHERE id = 'T-1'");
    assert_eq!(
        witness.shortfall().unwrap(),
        [
            "ticket T-1 is missing (its trail had 2 events when acknowledged)",
            "ticket T-2 is behind: 4 of its 5 acknowledged events",
        ]
    );
    assert_eq!(witness.accept().unwrap(), 2);
    assert!(witness.shortfall().unwrap().is_empty());
    assert_eq!(
        cluster.sql("SELECT ticket_id, len FROM itsm.witness ORDER BY ticket_id"),
        "T-2|4\nT-3|1"
    );
}

/// A psql session of its own, kept open: a second client holding locks
/// across statements, as another worker's transaction does.
struct Session {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Session {
    fn open(cluster: &Cluster) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(cluster.program("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(cluster.url())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Send `sql`; with `done`, wait for the line it prints.
    fn send(&mut self, sql: &str, done: Option<&str>) {
        use std::io::Write;
        writeln!(self.stdin, "{sql}").unwrap();
        self.stdin.flush().unwrap();
        if let Some(done) = done {
            self.wait_for(done);
        }
    }

    fn wait_for(&self, line: &str) {
        loop {
            let got = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("psql never printed `{line}`"));
            if got == line {
                return;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `sql` until it prints `want`.
fn until(cluster: &Cluster, sql: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cluster.sql(sql) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "`{sql}` never gave {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_group_commit_the_server_rolls_back_for_a_deadlock_is_run_again_and_lands() {
    use itsm_host::audit::{AuditKind, Draft, link};
    use itsm_host::store::{Batch, conformance::ticket};
    use itsm_host::ticket::TicketState;
    let cluster = Cluster::start();
    let store = std::sync::Arc::new(PgStore::open(&cluster.url()).unwrap());
    let mut t = ticket("T-deadlock", TicketState::Running);
    let event = link(
        &t.id,
        &mut t.head,
        1,
        Draft::new(AuditKind::Created, serde_json::json!({})),
    );
    // Another client's transaction holds the event's key, as another
    // worker's group commit holds what it inserted and has not committed;
    // it waits longer than the store's session before it looks for a
    // deadlock, so the store's commit is the one rolled back.
    let mut other = Session::open(&cluster);
    other.send("BEGIN;", None);
    other.send("SET LOCAL deadlock_timeout = '60s';", None);
    other.send(
        "INSERT INTO itsm.events (ticket_id, seq, body) VALUES ('T-deadlock', 0, '\\x00');",
        Some("INSERT 0 1"),
    );
    // The store's commit inserts the ticket, then waits on the event's key.
    let committing = {
        let store = store.clone();
        let batch = Batch {
            tickets: vec![t.clone().into()],
            events: vec![event.clone()],
            ..Batch::default()
        };
        std::thread::spawn(move || store.commit(&[batch]))
    };
    until(
        &cluster,
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'",
        "1",
    );
    // The other now wants the ticket's row: each waits on the other.
    other.send(
        "INSERT INTO itsm.tickets (id, workflow, subject, state, requested_by, created_ms, \
         updated_ms, in_flight, body, subject_key) VALUES ('T-deadlock', 'w', 's', 'running', \
         'x', 0, 0, true, '\\x00', 's');",
        None,
    );
    // PostgreSQL breaks the deadlock by rolling the store's commit back
    // (the other's insert goes through only once the store's uncommitted
    // ticket row is gone); the store runs it again, which waits for the
    // other to end.
    other.wait_for("INSERT 0 1");
    other.send("ROLLBACK;", Some("ROLLBACK"));
    committing
        .join()
        .unwrap()
        .expect("the commit rolled back for the deadlock is run again and lands");
    assert_eq!(store.ticket("T-deadlock").unwrap(), Some(t));
    assert_eq!(store.events("T-deadlock").unwrap(), [event]);
}
