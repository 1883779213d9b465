//! Durable steps on sled against PostgreSQL with 1, 2 and 3 workers
//! sharing one database: `cargo bench --bench workers`.
//!
//! The same four-step no-op workflow as the scheduler bench, through the
//! scheduler, store and runtime `itsm serve` uses (HTTP intake left out),
//! against the bare instantiate+call measured in the same run. The workers
//! are schedulers in this one process, each with its own store handle
//! (connection pool) and name, sharing the tickets through leases exactly
//! as separate processes do; on a 2-core machine they share its CPU as
//! separate processes would. PostgreSQL is Debian's, a throwaway cluster
//! with fsync on, on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::scheduler::{NewTicket, Scheduler};
use itsm_host::store::postgres::PgStore;
use itsm_host::store::sled::SledStore;
use itsm_host::store::{LeaseConfig, Listing, Store};
use itsm_host::ticket::TicketState;
use serde_json::json;

mod common;
use common::{bare_calls, percentile, scheduler, workflow};

/// Tickets per throughput run (x 4 steps).
const TICKETS: usize = 2_000;
/// Tickets run one at a time for the latency figure.
const ONE_BY_ONE: usize = 100;

fn ticket(prefix: &str, i: usize) -> NewTicket {
    NewTicket {
        workflow: "bench".into(),
        subject: format!("{prefix}{i}@example.com"),
        inputs: json!({}),
        batch: None,
        allow_duplicate: false,
    }
}

/// How many of the store's tickets have succeeded.
fn succeeded(store: &dyn Store) -> usize {
    store
        .count(&Listing {
            state: Some(TicketState::Succeeded),
            ..Listing::default()
        })
        .expect("count")
}

/// Wait until `n` tickets have succeeded in `store`.
async fn until_succeeded(store: &dyn Store, n: usize) {
    while succeeded(store) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Figures {
    steps_per_s: f64,
    amortised: Duration,
    latency: Vec<Duration>,
}

/// `TICKETS` created round-robin over `workers` from 64 tasks, run to the
/// end; then `ONE_BY_ONE` created on the first worker one at a time.
async fn run(workers: &[Scheduler]) -> Figures {
    let store = workers[0].store().clone();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..64 {
        let workers = workers.to_vec();
        set.spawn(async move {
            for i in (c..TICKETS).step_by(64) {
                let w = &workers[i % workers.len()];
                w.create(ticket("t", i), "bench", None)
                    .await
                    .expect("create");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("creator");
    }
    until_succeeded(store.as_ref(), TICKETS).await;
    let elapsed = started.elapsed();
    let steps = TICKETS * 4;
    let mut latency = Vec::new();
    for i in 0..ONE_BY_ONE {
        let t = Instant::now();
        workers[0]
            .create(ticket("one", i), "bench", None)
            .await
            .expect("create");
        // Its steps are immediate, so the worker that created it drives it
        // to the end: done when that worker has no ticket in hand.
        while workers[0].active() > 0 {
            tokio::task::yield_now().await;
        }
        latency.push(t.elapsed() / 4);
    }
    assert_eq!(succeeded(store.as_ref()), TICKETS + ONE_BY_ONE);
    Figures {
        steps_per_s: steps as f64 / elapsed.as_secs_f64(),
        amortised: elapsed / steps as u32,
        latency,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let bare = bare_calls(&rt, &cache);
    let bare_median = percentile(bare.clone(), 0.5);
    let cluster = itsm_sandbox::postgres::Cluster::start();

    let mut rows: Vec<(String, Figures)> = Vec::new();
    rt.block_on(async {
        let sled: Arc<dyn Store> =
            Arc::new(SledStore::open(&tmp.path().join("sled")).expect("sled"));
        let s = scheduler(sled, &cache, vec![workflow(false)]);
        s.recover().await.expect("recover");
        rows.push(("sled, 1 worker".into(), run(&[s]).await));
        for n in 1..=3usize {
            let db = format!("bench{n}");
            cluster.sql(&format!("CREATE DATABASE {db}"));
            let url = cluster.url().replace("/postgres", &format!("/{db}"));
            let mut workers = Vec::new();
            for w in 0..n {
                let store: Arc<dyn Store> = Arc::new(
                    PgStore::open_as(
                        &url,
                        LeaseConfig {
                            worker: format!("w{w}"),
                            ttl: Duration::from_secs(10),
                        },
                    )
                    .expect("postgres"),
                );
                let s = scheduler(store, &cache, vec![workflow(false)]);
                s.recover().await.expect("recover");
                workers.push(s);
            }
            let label = format!("PostgreSQL, {n} worker{}", if n > 1 { "s" } else { "" });
            rows.push((label, run(&workers).await));
        }
    });

    println!(
        "workers bench ({} cores): {TICKETS} tickets x 4 no-op steps, durable",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  baseline, bare instantiate+call (no-op): median {:.1} µs, p99 {:.1} µs",
        bare_median.as_secs_f64() * 1e6,
        percentile(bare, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "  {:<22} {:>9} {:>12} {:>9} {:>22}",
        "store", "steps/s", "µs/step", "x bare", "one at a time p50/p99"
    );
    for (label, f) in rows {
        println!(
            "  {:<22} {:>9.0} {:>12.1} {:>9.1} {:>12.2} / {:.2} ms",
            label,
            f.steps_per_s,
            f.amortised.as_secs_f64() * 1e6,
            f.amortised.as_secs_f64() / bare_median.as_secs_f64(),
            percentile(f.latency.clone(), 0.5).as_secs_f64() * 1e3,
            percentile(f.latency, 0.99).as_secs_f64() * 1e3,
        );
    }
}
