//! Scheduler bench: 10,000 tickets x 4 no-op steps with durable state (sled,
//! flushed before every effect), against the limits measured in the same
//! run: raw sled insert+flush, a bare instantiate+call, and the same
//! throughput phase on the in-memory store (what the store adds).
//! `cargo bench --bench scheduler`.
//!
//! It drives the same store, scheduler and runtime `itsm serve` uses, in
//! process: the HTTP intake is left out so the figure is the engine's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::scheduler::{NewTicket, Scheduler};
use itsm_host::store::Store;
use itsm_host::store::sled::SledStore;
use itsm_host::ticket::TicketState;
use serde_json::json;

mod common;
use common::{bare_calls, create_all, percentile, scheduler, workflow};

const TICKETS: usize = 10_000;

fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Engine {
    scheduler: Scheduler,
}

fn engine(dir: &std::path::Path, cache: &std::path::Path, approval: bool) -> Engine {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).expect("sled"));
    Engine {
        scheduler: scheduler(store, cache, vec![workflow(approval)]),
    }
}

/// The throughput phase: 10,000 tickets x 4 steps through `e`; the time
/// until every one has finished, and the steps done.
async fn throughput(e: &Engine) -> (Duration, usize) {
    let started = Instant::now();
    let ids = create_all(&e.scheduler, "bench", TICKETS).await;
    while e.scheduler.active() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let store = e.scheduler.store();
    let mut steps = 0;
    for id in &ids {
        let t = store.ticket(id).expect("read").expect("ticket");
        assert_eq!(t.state, TicketState::Succeeded);
        steps += t.steps.len();
    }
    (elapsed, steps)
}

/// The restart phase, run in a child process: open the store of 10,000
/// in-flight tickets, recover them, report time and memory.
fn restart_child(flight: &std::path::Path, cache: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let (_, hwm_before) = rss_mib();
    rt.block_on(async {
        let t = Instant::now();
        let e = engine(flight, cache, true);
        let n = e.scheduler.recover().await.expect("recover");
        // Waiting for a person, they are parked rather than driven.
        while e.scheduler.active() + e.scheduler.parked() < n {
            tokio::task::yield_now().await;
        }
        let restart = t.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, hwm) = rss_mib();
        println!("  restart with {n} in-flight tickets (fresh process):");
        println!("    open + recover (all parked or driven)   {:>10.0} ms", restart.as_secs_f64() * 1e3);
        println!("    RSS with them open                      {rss:>10.1} MiB (peak {hwm:.1}, at start {hwm_before:.1})");
    });
}

fn main() {
    if let (Some(flight), Some(cache)) = (
        std::env::var_os("ITSM_BENCH_RESTART"),
        std::env::var_os("ITSM_BENCH_CACHE"),
    ) {
        restart_child(flight.as_ref(), cache.as_ref());
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");

    // Limit 1: raw sled insert+flush of 200-byte records.
    let raw = sled::Config::new()
        .path(tmp.path().join("raw"))
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let record = vec![7u8; 200];
    let t = Instant::now();
    let mut n = 0u64;
    let profiling = std::env::var_os("ITSM_BENCH_THROUGHPUT_ONLY").is_some();
    while !profiling && t.elapsed() < Duration::from_secs(2) {
        raw.insert(n.to_be_bytes(), record.as_slice())
            .expect("insert");
        raw.flush().expect("flush");
        n += 1;
    }
    let sled_each = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut m = 0u64;
    while !profiling && t.elapsed() < Duration::from_secs(2) {
        for _ in 0..100 {
            raw.insert((1u64 << 40 | m).to_be_bytes(), record.as_slice())
                .expect("insert");
            m += 1;
        }
        raw.flush().expect("flush");
    }
    let sled_group = m as f64 / t.elapsed().as_secs_f64();
    drop(raw);

    // Limit 2: bare fresh instance + call of the no-op plugin.
    let bare = bare_calls(&rt, &cache);
    let bare_median = percentile(bare.clone(), 0.5);

    // Throughput: 10,000 tickets x 4 steps, durable.
    let data = tmp.path().join("data");
    let (elapsed, steps) = rt.block_on(throughput(&engine(&data, &cache, false)));
    let (_, peak_throughput) = rss_mib();
    if std::env::var_os("ITSM_BENCH_THROUGHPUT_ONLY").is_some() {
        // For profiling the throughput phase alone.
        println!("{steps} steps in {elapsed:?}, bare median {bare_median:?}");
        return;
    }
    // The same on the in-memory store (no encoding, no disk, no sync):
    // what the scheduler and the calls cost without the store, the floor
    // any durable store's figure sits on.
    let (floor, floor_steps) = rt.block_on(throughput(&Engine {
        scheduler: scheduler(
            Arc::new(itsm_host::store::memory::MemoryStore::default()),
            &cache,
            vec![workflow(false)],
        ),
    }));

    // Latency: one ticket at a time, per step, durable.
    let lat_dir = tmp.path().join("latency");
    let per_step = rt.block_on(async {
        let e = engine(&lat_dir, &cache, false);
        let mut per_step = Vec::new();
        for i in 0..200 {
            let t = Instant::now();
            let req = NewTicket {
                workflow: "bench".into(),
                subject: format!("u{i}"),
                inputs: json!({}),
                batch: None,
                allow_duplicate: false,
            };
            let (ticket, _) = e
                .scheduler
                .create(req, "bench", None)
                .await
                .expect("create");
            while e.scheduler.active() > 0 {
                tokio::task::yield_now().await;
            }
            let _ = ticket;
            per_step.push(t.elapsed() / 4);
        }
        per_step
    });

    // One transition of a ticket with 0 or 100 attempts before it (each
    // with a log and requests), written whole (as before tickets were kept
    // in parts) and as its changed parts, 100 tickets per group commit.
    let retries: Vec<(usize, Duration, Duration)> = [0, 100]
        .into_iter()
        .map(|n| {
            let store = SledStore::open(&tmp.path().join(format!("retries{n}"))).expect("sled");
            let whole = transitions(&store, n, true);
            let parts = transitions(&store, n, false);
            (n, whole, parts)
        })
        .collect();

    // Restart with 10,000 in-flight tickets (each waits for an approval).
    let flight = tmp.path().join("flight");
    let build_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    build_rt.block_on(async {
        let e = engine(&flight, &cache, true);
        create_all(&e.scheduler, "bench", TICKETS).await;
        while e
            .scheduler
            .store()
            .tickets()
            .expect("list")
            .iter()
            .any(|t| t.state != TicketState::WaitingApproval)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    drop(build_rt); // the "crash": every driver task gone
    // Restart in a fresh process, so its RSS is the in-flight tickets' alone.
    let out = std::process::Command::new(std::env::current_exe().expect("self"))
        .env("ITSM_BENCH_RESTART", &flight)
        .env("ITSM_BENCH_CACHE", &cache)
        .output()
        .expect("restart child");
    let child = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "restart child failed: {child} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps_per_s = steps as f64 / elapsed.as_secs_f64();
    let amortised = elapsed / steps as u32;
    println!(
        "scheduler bench ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  limits measured in this run:");
    println!("    sled insert+flush, 200 B, flush each    {sled_each:>10.0} records/s");
    println!("    sled insert+flush, 200 B, flush per 100 {sled_group:>10.0} records/s");
    println!(
        "    bare instantiate+call (no-op)           median {:>7.1} µs  p99 {:>7.1} µs",
        bare_median.as_secs_f64() * 1e6,
        percentile(bare, 0.99).as_secs_f64() * 1e6
    );
    println!("  {TICKETS} tickets x 4 steps, durable:");
    println!(
        "    elapsed                                 {:>10.2} s",
        elapsed.as_secs_f64()
    );
    println!("    durable steps/s                         {steps_per_s:>10.0}");
    println!(
        "    wall time per step (amortised)          {:>10.1} µs  ({:.1}x bare call)",
        amortised.as_secs_f64() * 1e6,
        amortised.as_secs_f64() / bare_median.as_secs_f64()
    );
    println!("    peak RSS so far                         {peak_throughput:>10.1} MiB");
    let floor_each = floor / floor_steps as u32;
    println!("  the same on the in-memory store (not durable: the scheduler's floor):");
    println!(
        "    wall time per step (amortised)          {:>10.1} µs  ({:.1}x bare call; the durable store adds {:.1} µs)",
        floor_each.as_secs_f64() * 1e6,
        floor_each.as_secs_f64() / bare_median.as_secs_f64(),
        (amortised.as_secs_f64() - floor_each.as_secs_f64()) * 1e6
    );
    println!("  one ticket at a time (latency per step, incl. 2 flushed commits):");
    println!(
        "    median {:>7.1} µs   p99 {:>7.1} µs",
        percentile(per_step.clone(), 0.5).as_secs_f64() * 1e6,
        percentile(per_step, 0.99).as_secs_f64() * 1e6
    );
    println!("  one transition, 100 per group commit, by attempts before it:");
    for (n, whole, parts) in &retries {
        println!(
            "    {n:>3} attempts before: whole ticket {:>7.1} µs, changed parts {:>6.1} µs",
            whole.as_secs_f64() * 1e6,
            parts.as_secs_f64() * 1e6
        );
    }
    print!("{child}");
}

/// Time per transition of 100 tickets that each had `before` attempts of
/// step `a`: 20 rounds, each giving every ticket one more attempt (started
/// and ended, two transitions) and committing the round in one group,
/// writing each ticket `whole` or only its changed parts.
fn transitions(store: &SledStore, before: usize, whole: bool) -> Duration {
    use itsm_host::runtime::Op;
    use itsm_host::store::{Batch, Committed, TicketWrite};
    use itsm_host::ticket::{Attempt, AttemptResult};
    let attempt = |n: u32| {
        Attempt {
        n,
        op: Op::Run,
        started_ms: 1_700_000_000_000 + u64::from(n),
        ended_ms: Some(1_700_000_000_050 + u64::from(n)),
        result: AttemptResult::Interrupted,
        log: serde_json::from_value(json!([
            { "at_ms": 1, "level": "info", "message": "looking the user up" },
            { "at_ms": 9, "level": "warn", "message": "the directory answered 503; retrying later" },
        ]))
        .expect("log"),
        requests: serde_json::from_value(json!([
            { "method": "GET", "url": "https://graph.example.com/v1.0/users/alice@example.com", "status": 200, "error": null, "duration_ms": 7 },
            { "method": "PATCH", "url": "https://graph.example.com/v1.0/users/alice@example.com", "status": 503, "error": null, "duration_ms": 31 },
        ]))
        .expect("requests"),
    }
    };
    let mut tickets: Vec<(itsm_host::ticket::Ticket, Committed)> = (0..100)
        .map(|i| {
            let mut t = itsm_host::store::conformance::ticket(
                &format!("T-{}-{before}-{i:03}", if whole { "w" } else { "p" }),
                TicketState::Running,
            );
            let a = t.steps.get_mut("a").expect("step");
            a.attempts = (1..=before as u32).map(attempt).collect();
            let committed = Committed::of(&t);
            store
                .commit(&[Batch {
                    tickets: vec![TicketWrite::whole(&t)],
                    ..Batch::default()
                }])
                .expect("commit");
            (t, committed)
        })
        .collect();
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        for end in [false, true] {
            let batches: Vec<Batch> = tickets
                .iter_mut()
                .map(|(t, committed)| {
                    let a = t.steps.get_mut("a").expect("step");
                    if end {
                        let last = a.attempts.last_mut().expect("attempt");
                        last.result = AttemptResult::Succeeded;
                    } else {
                        let n = a.attempts.len() as u32 + 1;
                        a.attempts.push(Attempt {
                            result: AttemptResult::Running,
                            ended_ms: None,
                            ..attempt(n)
                        });
                    }
                    t.updated_ms += 1;
                    let write = if whole {
                        TicketWrite::whole(t)
                    } else {
                        committed.changes(t)
                    };
                    Batch {
                        tickets: vec![write],
                        ..Batch::default()
                    }
                })
                .collect();
            store.commit(&batches).expect("commit");
        }
    }
    started.elapsed() / (rounds * 2 * tickets.len() as u32)
}
