//! What the bench binaries share: the no-op plugin and concurrent creates.

use std::path::PathBuf;

use itsm_host::manifest::Manifest;
use itsm_host::runtime::{Plugin, Runtime};
use itsm_host::scheduler::{NewTicket, Scheduler};
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
