//! Graceful shutdown: `itsm serve` as a child process, tickets whose steps
//! call a slow HTTP sink, SIGTERM while calls are in flight. The server
//! stops taking work (`/readyz` and writes answer 503), lets the running
//! calls finish, records them, and exits 0; after a restart every ticket
//! finishes and no effect reached the sink twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::support::{get_json, install_signed, start_server};

const TICKETS: usize = 6;
const STEPS: [&str; 3] = ["directory", "mail", "assets"];

#[derive(Default)]
struct Effects {
    /// Requests that arrived, by idempotency key.
    arrived: HashMap<String, u32>,
    /// Requests answered.
    answered: HashMap<String, u32>,
}

type Sink = Arc<Mutex<Effects>>;

/// A sink that takes `delay` to answer each effect.
async fn start_slow_sink(delay: Duration) -> (Sink, String) {
    let sink: Sink = Arc::default();
    let app = Router::new()
        .route(
            "/effects",
            post(
                move |State(s): State<Sink>, Json(body): Json<Value>| async move {
                    let key = body["key"].as_str().unwrap_or_default().to_string();
                    *s.lock().unwrap().arrived.entry(key.clone()).or_default() += 1;
                    tokio::time::sleep(delay).await;
                    *s.lock().unwrap().answered.entry(key).or_default() += 1;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/effects/{key}",
            get(
                |State(s): State<Sink>, UrlPath(key): UrlPath<String>| async move {
                    if s.lock().unwrap().answered.contains_key(&key) {
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

fn set_up_home(home: &Path, sink: &str) {
    install_signed(home, "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.join("workflows")).unwrap();
    let mut wf = String::from("name = \"offboarding\"\nversion = \"drain-1\"\n");
    let mut prev = String::new();
    for step in STEPS {
        wf += &format!(
            "[[steps]]\nname = \"{step}\"\nplugin = \"scripted\"\ndepends_on = [{prev}]\nconfig = {{ behaviour = \"sink\", sink = \"{sink}\" }}\nretry = {{ max_attempts = 5, initial_backoff = \"50ms\" }}\n"
        );
        prev = format!("\"{step}\"");
    }
    std::fs::write(home.join("workflows/offboarding.toml"), wf).unwrap();
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_calls_finish_refuses_new_work_and_exits_0() {
    let (sink, sink_url) = start_slow_sink(Duration::from_millis(1500)).await;
    let home = tempfile::tempdir().unwrap();
    set_up_home(home.path(), &sink_url);
    let mut server = start_server(home.path(), &[]).await;
    let client = server.client();
    let mut ids = Vec::new();
    for i in 0..TICKETS {
        let created: Value = client
            .post(format!("{}/v1/tickets", server.base))
            .json(&serde_json::json!({ "workflow": "offboarding", "subject": format!("leaver{i}@example.com") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    // Wait until the first steps are at the sink: calls in flight.
    let started = Instant::now();
    while sink.lock().unwrap().arrived.len() < TICKETS {
        assert!(started.elapsed() < Duration::from_secs(30), "no calls");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_flight_at_signal = {
        let s = sink.lock().unwrap();
        s.arrived.len() - s.answered.len()
    };
    assert!(in_flight_at_signal > 0, "the signal must land mid-call");
    signal(server.child.id().unwrap(), "-TERM");

    // Draining: not ready, writes refused with the reason, reads still answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("shutting down"));
    let refused = client
        .post(format!("{}/v1/tickets", server.base))
        .json(&serde_json::json!({ "workflow": "offboarding", "subject": "late@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(
        refused.text().await.unwrap().contains("shutting down"),
        "the 503 says why"
    );
    let read = client
        .get(format!("{}/v1/tickets/{}", server.base, ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads keep working while draining");

    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    {
        let s = sink.lock().unwrap();
        assert_eq!(
            s.arrived, s.answered,
            "every call in flight at the signal was let finish"
        );
    }

    // Restart: every ticket finishes, and no effect was made twice.
    let server = start_server(home.path(), &[]).await;
    let client = server.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let detail = get_json(&client, &format!("{}/v1/tickets/{id}", server.base)).await;
            if detail["ticket"]["state"] == "succeeded" {
                assert_eq!(detail["trail_verified"], true, "{id}");
                let trail = detail["trail"].as_array().unwrap();
                for step in STEPS {
                    let n = trail
                        .iter()
                        .filter(|e| e["kind"] == "step_succeeded" && e["step"] == step)
                        .count();
                    assert_eq!(n, 1, "{id} {step}");
                }
                break;
            }
            assert!(Instant::now() < deadline, "{id} never finished: {detail:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let s = sink.lock().unwrap();
    assert_eq!(s.arrived.len(), TICKETS * STEPS.len());
    let repeated: Vec<(&String, &u32)> = s.arrived.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "effects made more than once: {repeated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_running_after_the_grace_period_are_recorded_interrupted_and_run_again() {
    let (sink, sink_url) = start_slow_sink(Duration::from_millis(3000)).await;
    let home = tempfile::tempdir().unwrap();
    set_up_home(home.path(), &sink_url);
    let mut server = start_server(home.path(), &["--grace", "500ms"]).await;
    let client = server.client();
    let created: Value = client
        .post(format!("{}/v1/tickets", server.base))
        .json(&serde_json::json!({ "workflow": "offboarding", "subject": "ann@example.com" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    while sink.lock().unwrap().arrived.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no calls");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    signal(server.child.id().unwrap(), "-INT");
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("exits once the grace period is over")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "did not wait for the slow call past the grace period: {:?}",
        signalled.elapsed()
    );

    let server = start_server(home.path(), &[]).await;
    let detail = crate::support::wait_for_state(
        &server.client(),
        &format!("{}/v1/tickets/{id}", server.base),
        "succeeded",
    )
    .await;
    let trail = detail["trail"].as_array().unwrap();
    let interrupted: Vec<&Value> = trail
        .iter()
        .filter(|e| e["kind"] == "step_interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "{trail:#?}");
    assert_eq!(interrupted[0]["step"], "directory");
    assert_eq!(
        interrupted[0]["data"]["reason"], "shutdown",
        "recorded at shutdown, not found at the next start"
    );
    // Run again with the same idempotency key: the sink saw that key twice.
    let s = sink.lock().unwrap();
    assert_eq!(s.arrived.get(&format!("{id}/directory")), Some(&2));
}
