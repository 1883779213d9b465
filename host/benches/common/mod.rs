//! What the bench binaries share: the no-op plugin, its bare call (the
//! baseline), the four-step workflow and concurrent creates. Each bench
//! binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use itsm_host::manifest::Manifest;
use itsm_host::runtime::{Grants, Op, Plugin, Runtime, RuntimeConfig, StepInput};
use itsm_host::scheduler::{NewTicket, Scheduler};
use itsm_host::workflow::Workflow;
use serde_json::json;

/// The no-op test plugin, allowed 64 instances.
pub fn noop(runtime: &Runtime) -> Plugin {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/testing/noop/plugin.toml");
    let mut manifest = Manifest::load(&dir).expect("manifest");
    manifest.limits.max_instances = 64;
    let wasm = std::fs::read(
        PathBuf::from(env!("ITSM_PLUGIN_WASM_DIR")).join("itsm_plugin_test_noop.wasm"),
    )
    .expect("wasm");
    runtime.load(manifest, &wasm).expect("load")
}

/// Create `n` tickets of `workflow` from 64 tasks; their ids.
pub async fn create_all(s: &Scheduler, workflow: &str, n: usize) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    let chunk = 64;
    for c in 0..chunk {
        let s = s.clone();
        let workflow = workflow.to_string();
        set.spawn(async move {
            let mut ids = Vec::new();
            for i in (c..n).step_by(chunk) {
                let req = NewTicket {
                    workflow: workflow.clone(),
                    subject: format!("{workflow}{i}@example.com"),
                    inputs: json!({}),
                    batch: None,
                    allow_duplicate: false,
                };
                ids.push(s.create(req, "bench", None).await.expect("create").0.id);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.extend(r.expect("task"));
    }
    ids
}

/// The `q` quantile of `v`.
pub fn percentile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// `bench`: four no-op steps in a row (security approves `b`, if asked).
pub fn workflow(approval: bool) -> Workflow {
    let mut text = String::from("name = \"bench\"\nversion = \"1\"\n");
    let mut prev: Option<&str> = None;
    for step in ["a", "b", "c", "d"] {
        text += &format!("[[steps]]\nname = \"{step}\"\nplugin = \"noop\"\nverify = false\n");
        if let Some(p) = prev {
            text += &format!("depends_on = [\"{p}\"]\n");
        }
        if approval && step == "b" {
            text += "approval = { role = \"security\" }\n";
        }
        prev = Some(step);
    }
    Workflow::parse(&text, "bench").expect("workflow")
}

/// Fresh instance + `run` of the no-op plugin, the whole host path, with
/// nothing around it: 2,000 samples after 1,000 to warm up. The baseline
/// the durable figures are ratios to.
pub fn bare_calls(rt: &tokio::runtime::Runtime, cache: &std::path::Path) -> Vec<Duration> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let plugin = noop(&runtime);
    let input = StepInput {
        ticket_id: "T".into(),
        step: "a".into(),
        subject: "s".into(),
        attempt: 1,
        ..StepInput::default()
    };
    let grants = Grants::default();
    let mut bare = Vec::new();
    rt.block_on(async {
        for i in 0..3000 {
            let t = Instant::now();
            let r = plugin.call(Op::Run, &input, &grants).await.expect("call");
            if i >= 1000 {
                bare.push(t.elapsed());
            }
            assert!(r.failure().is_none());
        }
    });
    bare
}

/// The scheduler `itsm serve` builds, over `store`, with the no-op plugin
/// and `workflows`, 64 calls in flight at most.
pub fn scheduler(
    store: std::sync::Arc<dyn itsm_host::store::Store>,
    cache: &std::path::Path,
    workflows: Vec<Workflow>,
) -> Scheduler {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        max_instances: 128,
        kv: std::sync::Arc::new(itsm_host::scheduler::StoreKv(store.clone())),
    })
    .expect("runtime");
    let plugins = std::collections::BTreeMap::from([("noop".to_string(), noop(&runtime))]);
    let workflows = workflows.into_iter().map(|w| (w.name.clone(), w)).collect();
    Scheduler::new(
        store,
        plugins,
        workflows,
        itsm_host::scheduler::SchedulerConfig {
            workers: 64,
            ..Default::default()
        },
    )
    .expect("scheduler")
}
