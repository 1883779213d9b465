//! The PostgreSQL store against a real server: Debian's PostgreSQL, a
//! throwaway cluster per test (`initdb` + `pg_ctl` in a temporary directory,
//! on a loopback port, as a non-root user when the tests run as root).

use std::path::PathBuf;
use std::process::Command;

use itsm_host::store::Store;
use itsm_host::store::postgres::PgStore;

/// A running throwaway cluster; stopped (immediately) and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The user the server runs as, when the tests run as root.
    user: Option<&'static str>,
    pub port: u16,
}

/// Where Debian's PostgreSQL programs are: `$ITSM_PG_BIN`, else the newest
/// `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ITSM_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL tests need Debian's server: `apt-get install postgresql` \
             (or set ITSM_PG_BIN to a directory holding initdb and pg_ctl)"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl Cluster {
    /// `initdb` and start a cluster; its superuser is `itsm`, trusted on
    /// loopback (the cluster lives only as long as the test).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("itsm-pg-")
            .tempdir()
            .unwrap();
        // PostgreSQL refuses to run as root.
        let user = is_root().then_some("nobody");
        let mut cluster = Self {
            dir,
            bin,
            user,
            port: 0,
        };
        if let Some(user) = user {
            let status = Command::new("chown")
                .args([&format!("{user}:"), cluster.dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory to {user}");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "itsm",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // A free port, then the server on it; another test may take the
        // port between the two, so try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("server.log");
            if cluster.try_run(
                "pg_ctl",
                &[
                    "-D",
                    cluster.data().to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "start",
                ],
            ) {
                cluster.port = port;
                return cluster;
            }
        }
        panic!(
            "the PostgreSQL server did not start: {}",
            std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://itsm@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://itsm@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        if !out.status.success() {
            eprintln!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        assert!(self.try_run(program, args), "{program} failed");
    }

    /// Run SQL through `psql`; its output, unaligned, tuples only.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.try_run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

#[test]
fn the_postgres_store_passes_the_conformance_suite_and_reads_back_after_reopen() {
    let cluster = Cluster::start();
    {
        let store = PgStore::open(&cluster.url()).unwrap();
        itsm_host::store::conformance::run(&store);
    }
    assert_eq!(
        cluster.sql("SELECT version, name FROM itsm.schema_migrations ORDER BY version"),
        "1|initial\n2|leases"
    );
    // A second open (another worker starting) finds the schema done.
    let reopened = PgStore::open(&cluster.url()).unwrap();
    assert_eq!(
        cluster.sql("SELECT count(*) FROM itsm.schema_migrations"),
        "2"
    );
    let open: Vec<String> = reopened
        .tickets()
        .unwrap()
        .into_iter()
        .filter(|t| !t.state.is_terminal())
        .map(|t| t.id)
        .collect();
    assert_eq!(reopened.in_flight().unwrap(), open);
    assert!(open.contains(&"T-b".to_string()) && open.contains(&"T-e".to_string()));
    assert_eq!(reopened.events("T-e").unwrap().len(), 20);
    let checked = reopened.check().unwrap();
    assert!(checked.damage.is_empty(), "{:?}", checked.damage);
    assert_eq!(checked.tickets.len(), reopened.tickets().unwrap().len());

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
            tickets: vec![t],
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
        e.contains("schema is at version 99, newer than this itsm knows (2)"),
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

#[test]
fn a_lease_fences_out_a_worker_that_lost_it_and_passes_to_the_next() {
    use itsm_host::store::{Batch, LeaseConfig, Leases};
    use itsm_host::ticket::TicketState;
    let cluster = Cluster::start();
    let worker = |name: &str| {
        PgStore::open_as(
            &cluster.url(),
            LeaseConfig {
                worker: name.into(),
                ttl: std::time::Duration::from_millis(800),
            },
        )
        .unwrap()
    };
    let (a, b) = (worker("a"), worker("b"));
    let mut t = itsm_host::store::conformance::ticket("T-lease", TicketState::Running);
    let fa = a.fence_for_new().unwrap();
    a.commit(&[Batch {
        tickets: vec![t.clone()],
        fence: Some(fa),
        ..Batch::default()
    }])
    .unwrap();
    let owner = || cluster.sql("SELECT owner FROM itsm.tickets WHERE id = 'T-lease'");
    assert_eq!(owner(), "a");
    // Live: nobody else takes it, by decision or by looking for work.
    assert_eq!(b.acquire("T-lease").unwrap(), None);
    assert!(b.claim_due(u64::MAX, 10).unwrap().is_empty());
    // A renewal keeps it past one lease length.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        a.renew(&["T-lease".into()]).unwrap(),
        vec!["T-lease".to_string()]
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(b.claim_due(u64::MAX, 10).unwrap().is_empty());
    // a stops renewing: once its lease runs out, b takes the ticket over.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let taken = b.claim_due(u64::MAX, 10).unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let (id, fb) = taken[0].clone();
    assert_eq!(id, "T-lease");
    assert!(fb > fa);
    assert_eq!(owner(), "b");
    // a wakes up and writes under its old token: refused, nothing lands.
    t.updated_ms = 99;
    let zombie = Batch {
        tickets: vec![t.clone()],
        fence: Some(fa),
        ..Batch::default()
    };
    let other = itsm_host::store::conformance::ticket("T-other", TicketState::Running);
    let fresh = Batch {
        tickets: vec![other],
        fence: Some(a.fence_for_new().unwrap()),
        ..Batch::default()
    };
    // In one group with a batch that is a's to write: only the stale one is left out.
    assert_eq!(a.commit_fenced(&[zombie.clone(), fresh]).unwrap(), vec![0]);
    assert!(a.ticket("T-other").unwrap().is_some());
    assert_eq!(a.ticket("T-lease").unwrap().unwrap().updated_ms, 1);
    let e = a.commit(&[zombie]).unwrap_err().to_string();
    assert!(e.starts_with("fenced:"), "{e}");
    assert!(a.renew(&["T-lease".into()]).unwrap().is_empty());
    // b writes under its token, then releases it with a wake in an hour:
    // not due for anyone, but a decision on a takes it at once.
    t.updated_ms = 100;
    b.commit(&[Batch {
        tickets: vec![t.clone()],
        fence: Some(fb),
        ..Batch::default()
    }])
    .unwrap();
    let hour = itsm_host::ticket::now_ms() + 3_600_000;
    b.release("T-lease", fb, Some(hour)).unwrap();
    assert!(
        a.claim_due(itsm_host::ticket::now_ms(), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.claim_due(hour, 10).unwrap().len(), 1, "due at its wake");
    // A stale release is a no-op.
    b.release("T-lease", fb, None).unwrap();
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
