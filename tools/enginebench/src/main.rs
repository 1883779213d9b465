//! What the embedded engine costs per step, apart from everything else.
//!
//! It writes the records the sled store writes for each ticket of the
//! scheduler bench (four steps in a row), with their sizes about as the
//! store encodes them: the creation (core, in-flight mark, three index
//! keys, four step records, the events record), three transitions (core,
//! two step records, events) and the end (core, step, events, the state
//! index moved, the mark removed). 64 tickets are in flight; each phase of
//! theirs is one group commit followed by a data sync, as the committer
//! does. The same on sled 0.34 and on fjall 3 (an LSM tree).
//!
//! `cargo run --release -- [DIR] [sled|fjall|both]`: CPU (the process's,
//! every thread) and wall time per ticket and per step.
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TICKETS: usize = 10_000;
const IN_FLIGHT: usize = 64;
const STEPS: [&str; 4] = ["a", "b", "c", "d"];

enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

/// CPU time of the whole process so far, user and system, in seconds.
fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A ticket id of the host's shape (creation instant first).
fn id(n: usize) -> String {
    format!(
        "T-{:012x}{:04x}{:010x}",
        0x18f0_0000_0000u64 + n as u64,
        n % 65536,
        n * 7919
    )
}

/// The writes of phase `p` of ticket `n`: 0 its creation, 1 to 3 the
/// transitions that end one step and start the next, 4 its end.
fn phase(n: usize, p: usize, seq: &mut u64) -> Vec<Op> {
    let id = id(n);
    let key = |s: String| s.into_bytes();
    let step = || vec![b's'; 250];
    *seq += 2;
    let mut ops = vec![
        Op::Put(key(format!("t/{id}")), vec![b'c'; 700]),
        Op::Put(key(format!("a/{id}/{:020}", *seq)), vec![b'e'; 500]),
    ];
    match p {
        0 => {
            ops.push(Op::Put(key(format!("f/{id}")), vec![]));
            for field in [
                format!("u/user{n}@example.com"),
                "w/bench".into(),
                "s/running".into(),
            ] {
                ops.push(Op::Put(key(format!("x/{field}\0{id}")), vec![]));
            }
            for s in STEPS {
                ops.push(Op::Put(key(format!("p/{id}/{s}")), step()));
            }
        }
        1..=3 => {
            ops.push(Op::Put(key(format!("p/{id}/{}", STEPS[p - 1])), step()));
            ops.push(Op::Put(key(format!("p/{id}/{}", STEPS[p])), step()));
        }
        _ => {
            ops.push(Op::Put(key(format!("p/{id}/d")), step()));
            ops.push(Op::Del(key(format!("x/s/running\0{id}"))));
            ops.push(Op::Put(key(format!("x/s/succeeded\0{id}")), vec![]));
            ops.push(Op::Del(key(format!("f/{id}"))));
        }
    }
    ops
}

fn run(name: &str, mut commit: impl FnMut(Vec<Op>)) {
    let (cpu0, wall0) = (cpu_s(), Instant::now());
    let mut seq = 0;
    let mut groups = 0;
    for first in (0..TICKETS).step_by(IN_FLIGHT) {
        for p in 0..5 {
            let mut ops = Vec::new();
            for n in first..(first + IN_FLIGHT).min(TICKETS) {
                ops.extend(phase(n, p, &mut seq));
            }
            commit(ops);
            groups += 1;
        }
    }
    let (cpu, wall) = (cpu_s() - cpu0, wall0.elapsed().as_secs_f64());
    let per = |total: f64, n: usize| total / n as f64 * 1e6;
    println!(
        "{name:<6} {groups} group commits: CPU {:>6.1} µs/ticket ({:>5.1} µs/step), wall {:>6.1} µs/ticket",
        per(cpu, TICKETS),
        per(cpu, 4 * TICKETS),
        per(wall, TICKETS)
    );
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "enginebench-data".into());
    let which = std::env::args().nth(2).unwrap_or_else(|| "both".into());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    if which == "both" || which == "sled" {
        let db = sled::Config::new()
            .path(format!("{dir}/sled"))
            .flush_every_ms(None)
            .open()
            .expect("sled");
        // sled's flush never calls fsync: the store syncs a file after it.
        let sync = std::fs::File::create(format!("{dir}/sled/sync")).expect("sync file");
        run("sled", |ops| {
            let mut b = sled::Batch::default();
            for op in ops {
                match op {
                    Op::Put(k, v) => b.insert(k, v),
                    Op::Del(k) => b.remove(k),
                }
            }
            db.apply_batch(b).expect("apply");
            db.flush().expect("flush");
            sync.sync_data().expect("sync");
        });
    }
    if which == "both" || which == "fjall" {
        let db = fjall::Database::builder(format!("{dir}/fjall"))
            .open()
            .expect("fjall");
        let ks = db
            .keyspace("main", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        run("fjall", |ops| {
            let mut b = db.batch();
            for op in ops {
                match op {
                    Op::Put(k, v) => b.insert(&ks, k, v),
                    Op::Del(k) => b.remove(&ks, k),
                }
            }
            b.commit().expect("commit");
            db.persist(fjall::PersistMode::SyncData).expect("persist");
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}
