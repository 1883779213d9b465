//! Correlation bench: 10,000 signed alerts over 1,000 fingerprints through
//! `POST /v1/hooks/{name}` on loopback, as fast as the intake takes them
//! (64 senders), on sled (synced). `cargo bench --bench correlation`.
//!
//! 800 fingerprints get 12 alerts each and 200 get 2, interleaved, so each
//! fingerprint's alerts arrive spread over the run; the threshold is 5, so
//! exactly 800 fingerprints cross it and 800 problems must be made, each
//! linking its fingerprint's 12 incidents. The baseline, in the same run,
//! is the same 10,000 alerts through a hook that does not correlate
//! (an incident each, nothing counted or linked).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_host::admin::{Admin, PluginPolicy};
use itsm_host::api::{AppState, HookSet, serve};
use itsm_host::auth::{TokenFile, Tokens};
use itsm_host::intake::webhook::{Hooks, sign};
use itsm_host::runtime::{Runtime, RuntimeConfig};
use itsm_host::scheduler::{Scheduler, SchedulerConfig};
use itsm_host::shared::system_trail::SystemTrail;
use itsm_host::store::sled::SledStore;
use itsm_host::store::{Listing, Store};
use itsm_host::ticket::Rel;
use itsm_host::workflow::Workflow;

const ALERTS: usize = 10_000;
const FINGERPRINTS: usize = 1_000;
/// Fingerprints below this get `MANY` alerts; the rest get `FEW`.
const HOT: usize = 800;
const MANY: usize = 12;
const FEW: usize = 2;
const THRESHOLD: usize = 5;
const SENDERS: usize = 64;
const SECRET: &str = "bench-hook-secret";

const HOOKS: &str = r#"
[[hooks]]
name = "plain"
workflow = "incident"
secret = "bench_hook"
event_id = "/id"
subject = "/host"

[[hooks]]
name = "av"
workflow = "incident"
secret = "bench_hook"
event_id = "/id"
subject = "/host"
[hooks.correlate]
fingerprint = "alert.signature"
window = "1h"
threshold = 5
problem = "problem"
"#;

fn main() {
    const {
        assert!(HOT * MANY + (FINGERPRINTS - HOT) * FEW == ALERTS);
        assert!(MANY >= THRESHOLD && FEW < THRESHOLD);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&tmp.path().join("data")).expect("sled"));
    let workflows = BTreeMap::from([
        (
            "incident".to_string(),
            Workflow::parse(
                "name = \"incident\"\nkind = \"incident\"\n[[steps]]\nname = \"contain\"\n\
                 task = { group = \"desk\", instructions = \"Isolate it.\" }\n",
                "bench",
            )
            .expect("workflow"),
        ),
        (
            "problem".to_string(),
            Workflow::parse(
                "name = \"problem\"\nkind = \"problem\"\n[[steps]]\nname = \"cause\"\n\
                 task = { group = \"sec\", instructions = \"Find it.\" }\n",
                "bench",
            )
            .expect("workflow"),
        ),
    ]);
    let scheduler = Scheduler::new(
        store.clone(),
        BTreeMap::new(),
        workflows,
        SchedulerConfig::default(),
    )
    .expect("scheduler");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let home = tempfile::tempdir().expect("tempdir");
        let tokens_path = home.path().join("tokens.toml");
        TokenFile::default().write(&tokens_path).expect("tokens");
        let hooks = HookSet::new(
            Hooks::parse(HOOKS).expect("hooks"),
            &BTreeMap::from([("bench_hook".to_string(), SECRET.to_string())]),
        )
        .expect("hook set");
        tokio::spawn(serve(
            listener,
            AppState::new(
                scheduler,
                Arc::new(Tokens::new(tokens_path)),
                Arc::new(Admin::new(
                    home.path(),
                    runtime,
                    PluginPolicy::default(),
                    Arc::new(
                        SystemTrail::open(&home.path().join("system-trail.jsonl")).expect("trail"),
                    ),
                )),
            )
            .with_hooks(hooks),
            std::future::pending(),
        ));
        let base = format!("http://{addr}");
        println!(
            "correlation bench ({} cores): {ALERTS} alerts over {FINGERPRINTS} fingerprints, \
             threshold {THRESHOLD}, {SENDERS} senders",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let plain = send_all(&base, "plain", "p").await;
        println!(
            "  baseline, no correlation: {:.2} s ({:.0} alerts/s)",
            plain.as_secs_f64(),
            ALERTS as f64 / plain.as_secs_f64()
        );
        let correlated = send_all(&base, "av", "c").await;
        println!(
            "  correlated:               {:.2} s ({:.0} alerts/s, {:.2}x the baseline's time)",
            correlated.as_secs_f64(),
            ALERTS as f64 / correlated.as_secs_f64(),
            correlated.as_secs_f64() / plain.as_secs_f64()
        );
        let problems = store
            .list(&Listing {
                workflow: Some("problem".into()),
                limit: usize::MAX,
                ..Listing::default()
            })
            .expect("list")
            .tickets;
        let mut linked = Vec::new();
        for p in &problems {
            let t = store.ticket(&p.id).expect("read").expect("problem");
            linked.push(t.links.iter().filter(|l| l.rel == Rel::Causes).count());
        }
        println!(
            "  problems made: {} (fingerprints over the threshold: {HOT}); incidents linked per problem: {}..={}",
            problems.len(),
            linked.iter().min().copied().unwrap_or(0),
            linked.iter().max().copied().unwrap_or(0),
        );
        assert_eq!(problems.len(), HOT, "one problem per fingerprint over the threshold");
        assert!(linked.iter().all(|n| *n == MANY), "{linked:?}");
    });
}

/// The `i`th alert's fingerprint: alerts interleave over the fingerprints,
/// the hot ones taking `MANY` each and the rest `FEW`.
fn fingerprint(i: usize) -> usize {
    let round = i / FINGERPRINTS;
    let f = i % FINGERPRINTS;
    if round < FEW {
        f
    } else {
        // Past the rounds every fingerprint takes, only the hot ones.
        (i - FEW * FINGERPRINTS) % HOT
    }
}

/// Send the alerts to hook `hook` from `SENDERS` tasks; how long it took.
async fn send_all(base: &str, hook: &str, tag: &str) -> Duration {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (client, next) = (client.clone(), next.clone());
        let url = format!("{base}/v1/hooks/{hook}");
        let tag = tag.to_string();
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ALERTS {
                    break;
                }
                let body = serde_json::json!({
                    "id": format!("{tag}{i}"),
                    "host": format!("ws-{i}"),
                    "signature": format!("sig-{}", fingerprint(i)),
                })
                .to_string();
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-itsm-timestamp", ts.to_string())
                    .header(
                        "x-itsm-signature",
                        sign(SECRET.as_bytes(), ts, body.as_bytes()),
                    )
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                let status = r.status();
                let answer: serde_json::Value = r.json().await.expect("json");
                assert_eq!(status, 201, "{answer}");
                assert_eq!(answer["errors"], serde_json::json!([]), "{answer}");
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    started.elapsed()
}
