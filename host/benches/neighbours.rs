//! Noisy neighbours: tickets of a fast plugin beside tickets of a plugin
//! whose every call spins until its time limit. `cargo bench --bench neighbours`.
//!
//! 200 fast tickets alone, then the same 200 made just after 200 spinning
//! ones, on the engine `itsm serve` runs (sled store, 64 workers). The
//! figure is the fast tickets' latency, from just before each is created to
//! the commit that finished it, as a waiting client is told: a plugin's
//! calls queue for its own instances, so the spinner's queue should cost
//! the fast tickets only the CPU its running instances take.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::cpu;
use itsm_host::manifest::Manifest;
use itsm_host::runtime::{Plugin, Runtime, RuntimeConfig};
use itsm_host::scheduler::StoreKv;
use itsm_host::scheduler::{NewTicket, Scheduler, SchedulerConfig};
use itsm_host::store::Store;
use itsm_host::store::sled::SledStore;
use itsm_host::workflow::Workflow;
use serde_json::json;

const N: usize = 200;
/// Rounds of each, alternating.
const ROUNDS: usize = 5;
/// The spinner's time limit per call.
const SPIN_MS: u64 = 200;

fn plugin(runtime: &Runtime, manifest: &str, wasm: &str) -> Plugin {
    let wasm = std::fs::read(PathBuf::from(env!("ITSM_PLUGIN_WASM_DIR")).join(wasm)).expect("wasm");
    runtime
        .load(Manifest::parse(manifest).expect("manifest"), &wasm)
        .expect("load")
}

fn engine(dir: &std::path::Path) -> Scheduler {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).expect("sled"));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        max_instances: 64,
        kv: Arc::new(StoreKv(store.clone())),
    })
    .expect("runtime");
    let spinner = plugin(
        &runtime,
        &format!(
            "name = \"spinner\"\nversion = \"0.1.0\"\ncontract = \"0.1.0\"\n\
             [limits]\ntimeout_ms = {SPIN_MS}\nmax_instances = 8\n[config.mode]\n"
        ),
        "itsm_plugin_test_hostile.wasm",
    );
    let noop = plugin(
        &runtime,
        include_str!("../../plugins/testing/noop/plugin.toml"),
        "itsm_plugin_test_noop.wasm",
    );
    let wf = |text: &str| {
        let w = Workflow::parse(text, "bench").expect("workflow");
        (w.name.clone(), w)
    };
    let workflows = BTreeMap::from([
        wf(
            "name = \"spin\"\nversion = \"1\"\n[[steps]]\nname = \"spin\"\nplugin = \"spinner\"\n\
            verify = false\nconfig = { mode = \"loop\" }\nretry = { max_attempts = 1 }\n",
        ),
        wf(
            "name = \"fast\"\nversion = \"1\"\n[[steps]]\nname = \"fast\"\nplugin = \"noop\"\nverify = false\n",
        ),
    ]);
    let plugins = BTreeMap::from([("spinner".into(), spinner), ("noop".into(), noop)]);
    Scheduler::new(store, plugins, workflows, SchedulerConfig::default()).expect("scheduler")
}

async fn create(s: &Scheduler, workflow: &str, i: usize) -> String {
    let req = NewTicket {
        workflow: workflow.into(),
        subject: format!("{workflow}{i}@example.com"),
        inputs: json!({}),
        batch: None,
        allow_duplicate: false,
    };
    s.create(req, "bench", None).await.expect("create").0.id
}

/// Create `n` tickets one after another, and time each from just before
/// its creation to the commit that finished it, as a client waiting on it
/// sees it (woken by the ticket's watch channel, to the microsecond).
async fn timed(s: &Scheduler, workflow: &str, n: usize) -> Vec<Duration> {
    let mut waits = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let id = create(s, workflow, i).await;
        let s = s.clone();
        // Short work, as the API's long-poll of a ticket is.
        waits.push(tokio::spawn(cpu::short(async move {
            let mut changes = s.watchers().subscribe(&id);
            let never = tokio::time::Instant::now() + Duration::from_secs(3600);
            loop {
                let t = s.store().ticket(&id).expect("read").expect("stored");
                if t.state.is_terminal() {
                    return started.elapsed();
                }
                changes.next(never).await;
            }
        })));
    }
    let mut out = Vec::new();
    for w in waits {
        out.push(w.await.expect("waiter"));
    }
    out
}

/// Wait until all of `ids` are finished.
async fn settled(s: &Scheduler, ids: &[String]) {
    while !ids.iter().all(|id| {
        s.store()
            .ticket(id)
            .expect("read")
            .expect("stored")
            .state
            .is_terminal()
    }) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pct(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

async fn round(with_spinners: bool) -> (Vec<Duration>, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = engine(dir.path());
    let mut spin = Vec::new();
    if with_spinners {
        for i in 0..N {
            spin.push(create(&s, "spin", i).await);
        }
    }
    let fast = timed(&s, "fast", N).await;
    let started = Instant::now();
    settled(&s, &spin).await;
    (fast, started.elapsed())
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        // Warm up (page cache, allocator), then alternate to share the noise.
        // Each round runs on a worker thread, as `itsm serve`'s request
        // handlers do (a task spawned from outside the runtime would start
        // from its injection queue instead).
        let round = |spinners| async move { tokio::spawn(round(spinners)).await.expect("round") };
        round(false).await;
        let mut alone = Vec::new();
        let mut beside = Vec::new();
        for _ in 0..ROUNDS {
            alone.extend(round(false).await.0);
            beside.extend(round(true).await.0);
        }
        let (a50, a99) = (pct(&alone, 0.5), pct(&alone, 0.99));
        let (b50, b99) = (pct(&beside, 0.5), pct(&beside, 0.99));
        println!(
            "fast tickets alone:          p50 {a50:?}  p99 {a99:?}  ({} tickets)",
            alone.len()
        );
        println!("beside {N} spinning tickets: p50 {b50:?}  p99 {b99:?}");
        println!(
            "p99 ratio beside/alone: {:.2} (target <= 2)",
            b99.as_secs_f64() / a99.as_secs_f64().max(1e-9)
        );
    });
}
