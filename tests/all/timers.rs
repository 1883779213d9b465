//! Steps that wait for their time, through `itsm serve`: the wait is in the
//! ticket (visible, in the trail with its local and UTC time), parked with
//! no driver task, survives a SIGKILL and restart, and fires at its time; an operator can run a
//! waiting step now, with a reason the trail keeps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::{get_json, install_signed, start_server, wait_for_state};

const WORKFLOW: &str = r#"
name = "timed"
version = "1"
[inputs.cut_at]
type = "datetime"
required = true

[[steps]]
name = "prepare"
plugin = "scripted"
config = { behaviour = "ok" }
verify = false

[[steps]]
name = "cut-access"
plugin = "scripted"
depends_on = ["prepare"]
not_before = "${inputs.cut_at}"
config = { behaviour = "ok" }
verify = false
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// RFC 3339 in UTC, `ms` after the epoch, to the second.
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn create(http: &reqwest::Client, base: &str, subject: &str, cut_at: &str) -> String {
    let resp = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "timed", "subject": subject, "inputs": { "cut_at": cut_at } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `itsm_tickets_active` and `itsm_tickets_parked` from `/metrics`.
async fn tickets_gauges(http: &reqwest::Client, base: &str) -> (u64, u64) {
    (
        crate::support::metric(http, base, "itsm_tickets_active").await,
        crate::support::metric(http, base, "itsm_tickets_parked").await,
    )
}

/// Wait (a few seconds at most) for `(active, parked)` tickets.
async fn settles_to(http: &reqwest::Client, base: &str, want: (u64, u64)) {
    let started = std::time::Instant::now();
    loop {
        let got = tickets_gauges(http, base).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "(active, parked) tickets: {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_step(http: &reqwest::Client, url: &str, step: &str, status: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let view = get_json(http, url).await;
        if view["ticket"]["steps"][step]["status"] == status {
            return view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{step} never {status}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_step_survives_a_kill_and_runs_at_its_time_or_now_when_an_operator_says() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/timed.toml"), WORKFLOW).unwrap();
    let mut server = start_server(home.path(), &[]).await;
    let (base, http) = (server.base.clone(), server.client());

    // Due in a few seconds (whole seconds: RFC 3339 as HR would send it).
    let due_ms = (now_ms() / 1000 + 6) * 1000;
    let soon = create(&http, &base, "kim@example.com", &rfc3339(due_ms)).await;
    // Due next year: an operator will run it now.
    let later = create(
        &http,
        &base,
        "lou@example.com",
        &rfc3339(now_ms() + 365 * 86_400_000),
    )
    .await;
    let view = wait_for_step(
        &http,
        &format!("{base}/v1/tickets/{soon}"),
        "cut-access",
        "scheduled",
    )
    .await;
    assert_eq!(view["ticket"]["steps"]["cut-access"]["retry_at_ms"], due_ms);
    let scheduled = view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "step_scheduled")
        .unwrap()
        .clone();
    assert_eq!(scheduled["step"], "cut-access");
    assert_eq!(scheduled["data"]["at_ms"], due_ms);
    assert_eq!(scheduled["data"]["utc"], rfc3339(due_ms));
    wait_for_step(
        &http,
        &format!("{base}/v1/tickets/{later}"),
        "cut-access",
        "scheduled",
    )
    .await;
    // Both wait parked: no driver task, no copy in memory.
    settles_to(&http, &base, (0, 2)).await;

    // SIGKILL, and start again on the same home: the wait is in the store.
    server.child.kill().await.unwrap();
    assert!(
        now_ms() < due_ms,
        "the kill came after the step was due; the machine is too slow for this test"
    );
    let server = start_server(home.path(), &[]).await;
    let (base, http) = (server.base.clone(), server.client());
    if now_ms() + 1000 < due_ms {
        // Recovered straight into the parking, not into driver tasks.
        settles_to(&http, &base, (0, 2)).await;
    }
    let view = wait_for_state(&http, &format!("{base}/v1/tickets/{soon}"), "succeeded").await;
    // The one still waiting is parked.
    settles_to(&http, &base, (0, 1)).await;
    let started = view["ticket"]["steps"]["cut-access"]["attempts"][0]["started_ms"]
        .as_u64()
        .unwrap();
    assert!(
        started >= due_ms,
        "ran at {started}, before its time {due_ms}"
    );

    // Run now: a reason is required, then the step runs, and the trail says who and why.
    let url = format!("{base}/v1/tickets/{later}/steps/cut-access/run-now");
    let refused = http
        .post(&url)
        .json(&json!({ "reason": " " }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    // Through the CLI, as an operator would.
    let ran = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args([
            "ticket",
            "run-now",
            &later,
            "cut-access",
            "--reason",
            "the leaver left early",
        ])
        .env("ITSM_SERVER", &base)
        .env("ITSM_TOKEN", &server.operator)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(String::from_utf8_lossy(&ran.stdout).contains("cut-access runs now"));
    let view = wait_for_state(&http, &format!("{base}/v1/tickets/{later}"), "succeeded").await;
    let early = view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "run_early")
        .unwrap()
        .clone();
    assert_eq!(early["data"]["reason"], "the leaver left early");
    assert_eq!(early["principal"], "operator-1");
    let again = http
        .post(&url)
        .json(&json!({ "reason": "twice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        409,
        "a step no longer waiting cannot run early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sla_on_a_calendar_counts_business_time_and_shows_what_is_left() {
    // The team works on one day only, three days from now: a 2 h SLA is
    // due that day at 11:00, and all 2 h of it are still left now.
    let day = std::process::Command::new("date")
        .args(["-u", "-d", "+3 days", "+%a"])
        .output()
        .unwrap();
    let day = String::from_utf8(day.stdout).unwrap().trim().to_string();
    let workflow = format!(
        r#"
name = "incident"
version = "1"
sla = "2h"
calendar = "support"
[calendars.support]
time_zone = "UTC"
hours = ["{day} 09:00-17:00"]
[[steps]]
name = "triage"
task = {{ group = "support", instructions = "Triage the incident" }}
"#
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/incident.toml"), workflow).unwrap();
    let server = start_server(home.path(), &[]).await;
    let (base, http) = (server.base.clone(), server.client());
    let resp = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "incident", "subject": "INC-7 mail is down" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = wait_for_state(&http, &format!("{base}/v1/tickets/{id}"), "waiting_task").await;
    let sla = &view["sla"];
    assert_eq!(sla["calendar"], "support");
    assert_eq!(sla["remaining_business_ms"], 7_200_000, "{sla}");
    assert!(
        sla["remaining_ms"].as_u64().unwrap() > 24 * 3_600_000,
        "the clock's time left runs to that day: {sla}"
    );
    let deadline = sla["deadline_ms"].as_u64().unwrap();
    assert_eq!(
        rfc3339(deadline)[11..],
        *"11:00:00Z",
        "two working hours from 09:00"
    );
    assert_eq!(
        view["ticket"]["sla_at_risk_ms"],
        deadline - 1_800_000,
        "at 75 %"
    );
}
