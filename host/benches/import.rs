//! Import bench: a 100,000-row CSV through `POST /v1/imports` on loopback,
//! one durable ticket per row (sled, flushed). `cargo bench --bench import`.
//!
//! The workflow's first step waits for an approval, so the figure is intake
//! alone: parse, create, commit; no plugin runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::admin::{Admin, PluginPolicy};
use itsm_host::api::{AppState, serve};
use itsm_host::audit::system::SystemTrail;
use itsm_host::auth::{TokenFile, Tokens};
use itsm_host::manifest::Manifest;
use itsm_host::runtime::{Runtime, RuntimeConfig};
use itsm_host::scheduler::{Scheduler, SchedulerConfig};
use itsm_host::store::Store;
use itsm_host::store::sled::SledStore;
use itsm_host::workflow::Workflow;

const ROWS: usize = 100_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&tmp.path().join("data")).expect("sled"));
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/testing/noop/plugin.toml");
    let wasm = std::fs::read(
        std::path::PathBuf::from(env!("ITSM_PLUGIN_WASM_DIR")).join("itsm_plugin_test_noop.wasm"),
    )
    .expect("wasm");
    let noop = runtime
        .load(Manifest::load(&dir).expect("manifest"), &wasm)
        .expect("load");
    let wf = Workflow::parse(
        "name = \"offboarding\"\n[[steps]]\nname = \"wipe\"\nplugin = \"noop\"\napproval = { role = \"security\" }\n",
        "bench",
    )
    .expect("workflow");
    let scheduler = Scheduler::new(
        store,
        BTreeMap::from([("noop".to_string(), noop)]),
        BTreeMap::from([("offboarding".to_string(), wf)]),
        SchedulerConfig::default(),
    )
    .expect("scheduler");
    let mut csv = String::from("subject,employee_id,last_day\n");
    for i in 0..ROWS {
        csv.push_str(&format!("leaver{i}@example.com,{i},2026-12-01\n"));
    }
    let bytes = csv.len();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let home = tempfile::tempdir().expect("tempdir");
        let tokens_path = home.path().join("tokens.toml");
        let mut file = TokenFile::default();
        let token = file
            .issue("bench-importer", &["operator".into()])
            .expect("token");
        file.write(&tokens_path).expect("write tokens");
        let tokens = Arc::new(Tokens::new(tokens_path));
        tokio::spawn(serve(
            listener,
            AppState::new(
                scheduler,
                tokens,
                Arc::new(Admin::new(
                    home.path(),
                    runtime,
                    PluginPolicy::default(),
                    Arc::new(
                        SystemTrail::open(&home.path().join("system-trail.jsonl")).expect("trail"),
                    ),
                )),
            ),
            std::future::pending(),
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("client");
        let t = Instant::now();
        let report: serde_json::Value = client
            .post(format!("http://{addr}/v1/imports?workflow=offboarding"))
            .header("content-type", "text/csv")
            .bearer_auth(&token)
            .body(csv)
            .send()
            .await
            .expect("import")
            .json()
            .await
            .expect("json");
        let elapsed = t.elapsed();
        assert_eq!(report["created"], ROWS, "{}", report["errors"]);
        println!(
            "import bench ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "  {ROWS} CSV rows ({:.1} MiB) -> {ROWS} durable tickets: {:.2} s ({:.0} tickets/s)",
            bytes as f64 / 1048576.0,
            elapsed.as_secs_f64(),
            ROWS as f64 / elapsed.as_secs_f64()
        );
    });
}
