//! Import and read bench: a 100,000-row CSV through `POST /v1/imports` on
//! loopback, one durable ticket per row (sled, synced); then, at 100,000
//! stored tickets, `GET /v1/tickets?limit=50` latency, and a 5,000-row
//! import alone against one with 64 concurrent readers (listing pages and
//! tickets by id). At the same 100,000: the list as a person who reads
//! only some tickets (an approver of the group every ticket awaits, and a
//! person with no ticket at all), which walks what the filters match
//! (`api::read_policy`). `cargo bench --bench import`.
//!
//! The workflow's first step waits for an approval, so the figure is intake
//! alone: parse, create, commit; no plugin runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::admin::{Admin, PluginPolicy};
use itsm_host::api::{AppState, serve};
use itsm_host::auth::{TokenFile, Tokens};
use itsm_host::manifest::Manifest;
use itsm_host::runtime::{Runtime, RuntimeConfig};
use itsm_host::scheduler::{Scheduler, SchedulerConfig};
use itsm_host::shared::system_trail::SystemTrail;
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
        let approver = file
            .issue("bench-approver", &["approver".into(), "security".into()])
            .expect("token");
        let stranger = file
            .issue_for("bench-stranger", &[], Some("nobody@example.com"))
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
        let base = format!("http://{addr}");
        let (report, elapsed) = import(&client, &base, &token, csv).await;
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
        reads(&client, &base, &token, &report).await;
        person_reads(&client, &base, &token, &approver, &stranger).await;
    });
}

/// Latency of `url`, `n` times in a row: (p50, p99) in ms.
async fn latency(client: &reqwest::Client, url: &str, token: &str, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    percentiles(&mut ms)
}

fn percentiles(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    (at(0.50), at(0.99))
}

/// Import `rows` new rows named `tag`; tickets per second.
async fn import_rate(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    tag: &str,
    rows: usize,
) -> f64 {
    let mut csv = String::from("subject,employee_id,last_day\n");
    for i in 0..rows {
        csv.push_str(&format!("{tag}{i}@example.com,{i},2026-12-01\n"));
    }
    let (report, elapsed) = import(client, base, token, csv).await;
    assert_eq!(report["created"], rows, "{}", report["errors"]);
    rows as f64 / elapsed.as_secs_f64()
}

/// `POST /v1/imports` of `csv`: the report, and how long it took.
async fn import(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    csv: String,
) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let report = client
        .post(format!("{base}/v1/imports?workflow=offboarding"))
        .header("content-type", "text/csv")
        .bearer_auth(token)
        .body(csv)
        .send()
        .await
        .expect("import")
        .json()
        .await
        .expect("json");
    (report, t.elapsed())
}

/// The read figures at 100,000 stored tickets.
async fn reads(client: &reqwest::Client, base: &str, token: &str, report: &serde_json::Value) {
    let middle = report["tickets"][ROWS / 2]
        .as_str()
        .expect("an id")
        .to_string();
    println!("  at {ROWS} stored tickets, 400 requests each (p50 / p99):");
    for (what, url) in [
        (
            "GET /v1/tickets?limit=50",
            format!("{base}/v1/tickets?limit=50"),
        ),
        (
            "  ... &order=newest",
            format!("{base}/v1/tickets?limit=50&order=newest"),
        ),
        (
            "  ... &state=waiting_approval",
            format!("{base}/v1/tickets?limit=50&state=waiting_approval"),
        ),
        (
            "  ... &after=<the 50,000th>",
            format!("{base}/v1/tickets?limit=50&after={middle}"),
        ),
        (
            "GET /v1/tickets/{id}",
            format!("{base}/v1/tickets/{middle}"),
        ),
    ] {
        let (p50, p99) = latency(client, &url, token, 400).await;
        println!("    {what:<34} {p50:6.2} ms / {p99:6.2} ms");
    }
    const MORE: usize = 5_000;
    let alone = import_rate(client, base, token, "alone", MORE).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for r in 0..64 {
        let (client, stop, token) = (client.clone(), stop.clone(), token.to_string());
        let urls = [
            format!("{base}/v1/tickets?limit=50"),
            format!("{base}/v1/tickets/{middle}"),
        ];
        readers.spawn(async move {
            let mut ms = Vec::new();
            let mut i = r;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let resp = client.get(&urls[i % 2]).bearer_auth(&token).send().await;
                if let Ok(resp) = resp {
                    let _ = resp.bytes().await;
                }
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            ms
        });
    }
    let busy = import_rate(client, base, token, "busy", MORE).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ms = Vec::new();
    while let Some(r) = readers.join_next().await {
        ms.extend(r.expect("reader"));
    }
    let (p50, p99) = percentiles(&mut ms);
    println!(
        "  import of {MORE} rows: {alone:.0} tickets/s alone, {busy:.0} tickets/s with 64 readers \
         ({:.0}% of alone); the readers' {} requests: p50 {p50:.1} ms, p99 {p99:.1} ms",
        busy / alone * 100.0,
        ms.len()
    );
}

/// The list as people who do not read everything, against an operator's,
/// at the store's size then (`ROWS` and the 10,000 `reads` added).
async fn person_reads(
    client: &reqwest::Client,
    base: &str,
    operator: &str,
    approver: &str,
    stranger: &str,
) {
    let url = format!("{base}/v1/tickets?limit=50");
    let count = |token: &str| {
        let (client, url, token) = (client.clone(), url.clone(), token.to_string());
        async move {
            let v: serde_json::Value = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            v["total"].as_u64().unwrap_or(0)
        }
    };
    let all = count(operator).await;
    println!("  the list by who asks, at {all} stored tickets, 10 requests each (p50 / p99):");
    for (who, token, expected) in [
        ("an operator (reads all)", operator, all),
        ("an approver every ticket awaits", approver, all),
        ("a person with no ticket", stranger, 0),
    ] {
        assert_eq!(count(token).await, expected, "{who}");
        let (p50, p99) = latency(client, &url, token, 10).await;
        println!("    {who:<34} {p50:8.2} ms / {p99:8.2} ms");
    }
}
