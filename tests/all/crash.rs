//! The crash test: `itsm serve` as a child process, 500 tickets of a 4-step
//! workflow whose plugin records each effect at an HTTP sink by idempotency
//! key, `kill -9` at random moments 20 times, restart each time, until every
//! ticket is done. Then: no ticket lost, every step succeeded (and verified)
//! exactly once in the trail, every effect at the sink, every chain verifies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::support::{client_as, create_token, get_json, install_signed, start_server};

pub(crate) const TICKETS: usize = 500;
pub(crate) const KILLS: usize = 20;
pub(crate) const STEPS: [&str; 4] = ["directory", "mail", "saas", "assets"];

/// Effects seen, by idempotency key.
pub(crate) type Sink = Arc<Mutex<HashMap<String, u32>>>;

pub(crate) async fn start_sink() -> (Sink, String) {
    start_slow_sink(Duration::ZERO).await
}

/// [`start_sink`] taking `delay` to answer each effect, as a real API
/// takes its time (so tickets stay in flight for a while).
pub(crate) async fn start_slow_sink(delay: Duration) -> (Sink, String) {
    let sink: Sink = Arc::default();
    let app = Router::new()
        .route(
            "/effects",
            post(
                move |State(s): State<Sink>, Json(body): Json<Value>| async move {
                    tokio::time::sleep(delay).await;
                    let key = body["key"].as_str().unwrap_or_default().to_string();
                    *s.lock().unwrap().entry(key).or_default() += 1;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/effects/{key}",
            get(
                |State(s): State<Sink>, UrlPath(key): UrlPath<String>| async move {
                    if s.lock().unwrap().contains_key(&key) {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    }
                },
            ),
        )
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (sink, url)
}

pub(crate) fn set_up_home(home: &Path, sink: &str) {
    install_signed(home, "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.join("workflows")).unwrap();
    let step = |name: &str, deps: &str| {
        format!(
            "[[steps]]\nname = \"{name}\"\nplugin = \"scripted\"\ndepends_on = [{deps}]\nconfig = {{ behaviour = \"sink\", sink = \"{sink}\" }}\nretry = {{ max_attempts = 20, initial_backoff = \"50ms\", max_backoff = \"500ms\" }}\n"
        )
    };
    let wf = format!(
        "name = \"offboarding\"\nversion = \"crash-1\"\n{}{}{}{}",
        step("directory", ""),
        step("mail", "\"directory\""),
        step("saas", "\"directory\""),
        step("assets", "\"mail\", \"saas\"")
    );
    std::fs::write(home.join("workflows/offboarding.toml"), wf).unwrap();
}

/// POST a ticket; `Some(id)` once acknowledged.
pub(crate) async fn post_ticket(client: &reqwest::Client, base: &str, i: usize) -> Option<String> {
    let resp = client
        .post(format!("{base}/v1/tickets"))
        .header("Idempotency-Key", format!("leaver-{i}"))
        .json(&serde_json::json!({ "workflow": "offboarding", "subject": format!("leaver{i}@example.com") }))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<Value>().await.ok()?["id"]
        .as_str()
        .map(str::to_string)
}

pub(crate) async fn states(
    client: &reqwest::Client,
    base: &str,
) -> Option<BTreeMap<String, String>> {
    let list: Value = client
        .get(format!("{base}/v1/tickets"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        list["tickets"]
            .as_array()?
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["state"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_loses_nothing_and_repeats_no_recorded_success() {
    crash_test(&[]).await;
}

/// The same on PostgreSQL: one worker (`itsm serve --store postgres://...`)
/// killed and restarted against a real server, and `itsm store check` of the
/// database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_on_postgres_loses_nothing_either() {
    let cluster = crate::pg::Cluster::start();
    let url = cluster.url();
    let home = crash_test(&["--store", &url]).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["store", "check", "--store", &url, "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("verified {TICKETS} of {TICKETS} trails")),
        "{said}"
    );
    assert!(
        said.contains(&format!("compared {TICKETS} tickets with the checkpoint")),
        "{said}"
    );
}

/// Run the crash test with `extra` flags for every start; the home, for
/// checks after.
async fn crash_test(extra: &[&str]) -> tempfile::TempDir {
    let (sink, sink_url) = start_sink().await;
    let home = tempfile::tempdir().unwrap();
    set_up_home(home.path(), &sink_url);
    let operator = create_token(home.path(), "operator-1", &["operator"]);
    std::fs::write(home.path().join("operator-1.token"), &operator).unwrap();
    let client = client_as(&operator);
    let started = Instant::now();

    let mut acknowledged: BTreeMap<usize, String> = BTreeMap::new();
    let mut kills_with_work_in_flight = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    for round in 0..KILLS {
        let mut server = start_server(home.path(), extra).await;
        // Feed tickets over the first rounds, so kills also land mid-intake.
        let batch: Vec<usize> = (0..TICKETS)
            .filter(|i| !acknowledged.contains_key(i))
            .take(TICKETS / 8 + 1)
            .collect();
        let base = server.base.clone();
        let poster = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in batch {
                    if let Some(id) = post_ticket(&client, &base, i).await {
                        got.push((i, id));
                    }
                }
                got
            })
        };
        tokio::time::sleep(Duration::from_millis(rand(150, 900))).await;
        if let Some(s) = states(&client, &server.base).await
            && s.values().any(|st| st != "succeeded")
        {
            kills_with_work_in_flight += 1;
        }
        server.child.start_kill().unwrap(); // SIGKILL
        server.child.wait().await.unwrap();
        for (i, id) in poster.await.unwrap() {
            if let Some(previous) = acknowledged.insert(i, id.clone()) {
                assert_eq!(previous, id, "an idempotency key made two tickets");
            }
        }
        eprintln!(
            "round {round}: {} acknowledged, {:?} elapsed",
            acknowledged.len(),
            started.elapsed()
        );
    }

    // Last start: post whatever was never acknowledged, then run to the end.
    let server = start_server(home.path(), extra).await;
    for i in 0..TICKETS {
        if let std::collections::btree_map::Entry::Vacant(slot) = acknowledged.entry(i) {
            let id = post_ticket(&client, &server.base, i)
                .await
                .expect("post after the last restart");
            slot.insert(id);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = states(&client, &server.base).await.expect("list tickets");
        let done = s.values().filter(|st| *st == "succeeded").count();
        if done == TICKETS && s.len() == TICKETS {
            break;
        }
        assert!(
            s.values().all(|st| st != "failed" && st != "cancelled"),
            "{s:?}"
        );
        assert!(
            Instant::now() < deadline,
            "only {done}/{TICKETS} succeeded: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(
        kills_with_work_in_flight >= KILLS / 2,
        "only {kills_with_work_in_flight} kills hit work in flight"
    );
    let ids: BTreeSet<&String> = acknowledged.values().collect();
    assert_eq!(ids.len(), TICKETS, "every acknowledged ticket is distinct");
    let sink = sink.lock().unwrap().clone();
    let mut interrupted = 0;
    for id in ids {
        let detail = get_json(&client, &format!("{}/v1/tickets/{id}", server.base)).await;
        assert_eq!(detail["ticket"]["state"], "succeeded", "{id}");
        assert_eq!(
            detail["trail_verified"], true,
            "{id}: {}",
            detail["trail_error"]
        );
        let trail = detail["trail"].as_array().unwrap();
        for step in STEPS {
            let count = |kind: &str| {
                trail
                    .iter()
                    .filter(|e| e["kind"] == kind && e["step"] == step)
                    .count()
            };
            assert_eq!(count("step_succeeded"), 1, "{id} {step}");
            assert_eq!(count("step_verified"), 1, "{id} {step}");
            interrupted += count("step_interrupted");
            assert!(
                sink.get(&format!("{id}/{step}")).is_some_and(|n| *n >= 1),
                "{id} {step}: effect missing at the sink"
            );
        }
    }
    let repeated: u32 = sink.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {TICKETS} tickets, {KILLS} kills ({kills_with_work_in_flight} mid-work), {interrupted} calls interrupted and re-run, {repeated} effects delivered more than once (same key), {:?}",
        started.elapsed()
    );
    home
}
