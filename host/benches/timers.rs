//! Timers bench: what 10,000 tickets waiting on a timer cost, and that
//! waking the due ones is not a scan of the others.
//! `cargo bench --bench timers`.
//!
//! 1. Memory: a fresh process opens a store holding no tickets, then one
//!    holding 10,000 tickets whose first step waits an hour (`delay`),
//!    recovers it, and reports its resident memory; the difference is what
//!    the waiting tickets cost (target: under 64 MiB). The creating process
//!    reports the same difference while the tickets are made.
//! 2. Waking: 100 tickets due in 2 s, alone and beside the 10,000 parked
//!    ones: how late their steps start after their instant.
//! 3. The timer index alone: taking 100 due entries off it beside 0,
//!    10,000 and 1,000,000 parked ones.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::scheduler::Scheduler;
use itsm_host::scheduler::parking::Parking;
use itsm_host::store::Store;
use itsm_host::store::sled::SledStore;
use itsm_host::ticket::TicketState;
use itsm_host::workflow::Workflow;

mod common;
use common::{create_all, scheduler};

const WAITING: usize = 10_000;
const DUE: usize = 100;
const TARGET_MIB: f64 = 64.0;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Two steps; the first waits `delay` after the ticket is created.
fn workflow(name: &str, delay: &str) -> Workflow {
    let text = format!(
        "name = \"{name}\"\nversion = \"1\"\n\
         [[steps]]\nname = \"a\"\nplugin = \"noop\"\nverify = false\ndelay = \"{delay}\"\n\
         [[steps]]\nname = \"b\"\nplugin = \"noop\"\nverify = false\ndepends_on = [\"a\"]\n"
    );
    Workflow::parse(&text, name).expect("workflow")
}

fn engine(dir: &Path, cache: &Path) -> Scheduler {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).expect("sled"));
    scheduler(
        store,
        cache,
        vec![workflow("later", "1h"), workflow("soon", "2s")],
    )
}

/// Wait until `n` tickets are parked and none has a driver.
async fn all_parked(s: &Scheduler, n: usize) {
    while s.parked() < n || s.active() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How late (ms) each ticket's first step started after its instant.
async fn lateness(s: &Scheduler, ids: &[String]) -> Vec<u64> {
    let mut late = Vec::new();
    for id in ids {
        let t = loop {
            let t = s.store().ticket(id).expect("read").expect("ticket");
            if t.state == TicketState::Succeeded {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let due = t.created_ms + 2000;
        let started = t.steps["a"].attempts[0].started_ms;
        assert!(started >= due, "{id} started before its time");
        late.push(started - due);
    }
    late.sort_unstable();
    late
}

/// A fresh process: open `dir`, recover, print its resident memory once
/// every recovered ticket is parked.
fn child(dir: &Path, cache: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let s = engine(dir, cache);
        let n = s.recover().await.expect("recover");
        all_parked(&s, n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("{n} {:.2} {}", rss_mib(), s.active());
    });
}

fn in_child(dir: &Path, cache: &Path) -> (usize, f64, usize) {
    let out = std::process::Command::new(std::env::current_exe().expect("self"))
        .env("ITSM_BENCH_TIMERS_CHILD", dir)
        .env("ITSM_BENCH_CACHE", cache)
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<&str> = text.split_whitespace().collect();
    (
        f[0].parse().expect("n"),
        f[1].parse().expect("rss"),
        f[2].parse().expect("active"),
    )
}

/// Median µs to take `DUE` due entries off an index also holding `others`
/// parked an hour ahead (and put them back, for the next round).
fn index_take(others: usize) -> f64 {
    let p = Parking::default();
    for i in 0..others {
        p.park(&format!("T-{i:08}"), Some(3_600_000 + i as u64), false);
    }
    let due: Vec<String> = (0..DUE).map(|i| format!("D-{i:04}")).collect();
    let mut times = Vec::new();
    for _ in 0..200 {
        for (i, id) in due.iter().enumerate() {
            p.park(id, Some(i as u64), false);
        }
        let t = Instant::now();
        let taken = p.take_due(1_000);
        times.push(t.elapsed());
        assert_eq!(taken.len(), DUE);
    }
    times.sort_unstable();
    times[times.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    if let (Some(dir), Some(cache)) = (
        std::env::var_os("ITSM_BENCH_TIMERS_CHILD"),
        std::env::var_os("ITSM_BENCH_CACHE"),
    ) {
        child(dir.as_ref(), cache.as_ref());
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let none = tmp.path().join("none");
    let waiting = tmp.path().join("waiting");
    let alone = tmp.path().join("alone");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    // An empty store, for the baseline (and a warm compilation cache).
    rt.block_on(async { drop(engine(&none, &cache)) });

    // 100 due tickets with nothing else waiting.
    let late_alone = rt.block_on(async {
        let s = engine(&alone, &cache);
        let ids = create_all(&s, "soon", DUE).await;
        lateness(&s, &ids).await
    });

    // 10,000 waiting an hour, then 100 due beside them.
    let (created_delta, create_secs, late_beside) = rt.block_on(async {
        let s = engine(&waiting, &cache);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_mib();
        let t = Instant::now();
        create_all(&s, "later", WAITING).await;
        all_parked(&s, WAITING).await;
        let create_secs = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let delta = rss_mib() - before;
        let ids = create_all(&s, "soon", DUE).await;
        let late = lateness(&s, &ids).await;
        assert_eq!(s.parked(), WAITING, "the hour-long waits are still parked");
        (delta, create_secs, late)
    });
    drop(rt);

    let (n0, rss_none, _) = in_child(&none, &cache);
    let (n1, rss_waiting, active) = in_child(&waiting, &cache);
    assert_eq!(n0, 0);
    assert_eq!(n1, WAITING, "only the hour-long waits are open");
    assert_eq!(active, 0, "no waiting ticket has a driver");
    let cost = rss_waiting - rss_none;

    let pct = |v: &[u64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "timers bench ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  memory, fresh process after restart (sled store, recovered):");
    println!("    no tickets                              {rss_none:>10.1} MiB");
    println!("    {WAITING} tickets waiting on a timer        {rss_waiting:>10.1} MiB");
    println!(
        "    cost of the waiting tickets             {cost:>10.1} MiB  ({:.1} KiB each; target < {TARGET_MIB} MiB: {})",
        cost * 1024.0 / WAITING as f64,
        if cost < TARGET_MIB { "met" } else { "NOT met" }
    );
    println!(
        "  memory, the creating process: +{created_delta:.1} MiB after creating {WAITING} ({create_secs:.1} s)"
    );
    println!("  {DUE} tickets due in 2 s, how late their first step starts (ms):");
    println!(
        "    alone                                   median {:>4}  p99 {:>4}  max {:>4}",
        pct(&late_alone, 0.5),
        pct(&late_alone, 0.99),
        pct(&late_alone, 1.0)
    );
    println!(
        "    beside {WAITING} parked                   median {:>4}  p99 {:>4}  max {:>4}",
        pct(&late_beside, 0.5),
        pct(&late_beside, 0.99),
        pct(&late_beside, 1.0)
    );
    println!("  the timer index: take {DUE} due entries (median µs):");
    let base = index_take(0);
    for others in [0, 10_000, 1_000_000] {
        let t = if others == 0 {
            base
        } else {
            index_take(others)
        };
        println!(
            "    beside {others:>9} parked                 {t:>8.1} µs  ({:.2}x beside none)",
            t / base
        );
    }
}
