//! The HR webhook through the real `itsm serve`: a signed event makes one
//! ticket per leaver; a replay makes nothing new; a bad or stale signature
//! is refused with the reason.

use serde_json::{Value, json};

use crate::support::{get_json, set_up_wipe_home, start_server_with_env};

const SECRET: &str = "whsec-5c1f0e2a9b";

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    ts: u64,
    secret: &str,
) -> (u16, Value) {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-itsm-timestamp", ts.to_string())
        .header(
            "x-itsm-signature",
            itsm_host::intake::webhook::sign(secret.as_bytes(), ts, body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_hr_event_makes_one_ticket_per_leaver_and_a_replay_makes_none() {
    let home = tempfile::tempdir().unwrap();
    set_up_wipe_home(home.path());
    std::fs::write(
        home.path().join("hooks.toml"),
        r#"
[[hooks]]
name = "workday"
workflow = "wipe"
secret = "workday_hook"
event_id = "/event/id"
people = "/event/leavers"
subject = "/work_email"
inputs = { last_day = "/last_day", employee_id = "/id" }
"#,
    )
    .unwrap();
    let server =
        start_server_with_env(home.path(), &[], &[("ITSM_SECRET_WORKDAY_HOOK", SECRET)]).await;
    let url = format!("{}/v1/hooks/workday", server.base);
    let http = reqwest::Client::new();
    let body = json!({ "event": { "id": "evt-20261129-1", "leavers": [
        { "id": 101, "work_email": "ann@example.com", "last_day": "2026-12-01" },
        { "id": 102, "work_email": "bob@example.com", "last_day": "2026-12-02" },
        { "id": 103 },
    ]}})
    .to_string();

    let (status, first) = deliver(&http, &url, &body, now(), SECRET).await;
    assert_eq!(status, 201, "{first:#}");
    assert_eq!(first["created"], 2);
    assert_eq!(first["errors"][0]["index"], 2);
    assert_eq!(first["errors"][0]["error"], "no subject at `/work_email`");
    // The same event again, freshly signed: nothing new.
    let (status, again) = deliver(&http, &url, &body, now(), SECRET).await;
    assert_eq!(
        (
            status,
            again["created"].as_u64(),
            again["existing"].as_u64()
        ),
        (200, Some(0), Some(2))
    );
    assert_eq!(again["tickets"], first["tickets"]);

    let id = first["tickets"][0].as_str().unwrap();
    let detail = get_json(
        &server.client(),
        &format!("{}/v1/tickets/{id}", server.base),
    )
    .await;
    assert_eq!(detail["ticket"]["subject"], "ann@example.com");
    assert_eq!(detail["ticket"]["requested_by"], "hook:workday");
    assert_eq!(
        detail["ticket"]["inputs"],
        json!({ "last_day": "2026-12-01", "employee_id": 101 })
    );
    assert_eq!(detail["ticket"]["batch"], first["batch"]);

    let refusals = [
        (
            deliver(&http, &url, &body, now(), "wrong-secret").await,
            401,
            "signature does not match",
        ),
        (
            deliver(&http, &url, &body, now() - 3600, SECRET).await,
            401,
            "refusing a stale or replayed delivery",
        ),
        (
            deliver(
                &http,
                &format!("{}/v1/hooks/nope", server.base),
                &body,
                now(),
                SECRET,
            )
            .await,
            404,
            "no hook named `nope`",
        ),
        (
            deliver(&http, &url, "{\"event\": 1}", now(), SECRET).await,
            400,
            "no event id at `/event/id`",
        ),
        (
            deliver(&http, &url, "not json", now(), SECRET).await,
            400,
            "not JSON",
        ),
    ];
    for ((status, body), want_status, want) in refusals {
        assert_eq!(status, want_status, "{body:#}");
        assert!(body["error"].as_str().unwrap().contains(want), "{body:#}");
    }
    let all = get_json(&server.client(), &format!("{}/v1/tickets", server.base)).await;
    assert_eq!(
        all["tickets"].as_array().unwrap().len(),
        2,
        "nothing else was created"
    );
}

#[test]
fn a_hook_naming_a_missing_workflow_stops_the_server_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("hooks.toml"),
        "[[hooks]]\nname = \"workday\"\nworkflow = \"offboardng\"\nsecret = \"s\"\nevent_id = \"/id\"\nsubject = \"/email\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(home.path())
        .env("ITSM_SECRET_S", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hook `workday` starts workflow `offboardng`, which is not loaded"),
        "{err}"
    );

    // A correlating hook whose problem workflow is not loaded: the same.
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/alert.toml"),
        "name = \"alert\"\n[[steps]]\nname = \"look\"\ntask = { group = \"desk\", instructions = \"Look.\" }\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join("hooks.toml"),
        "[[hooks]]\nname = \"av\"\nworkflow = \"alert\"\nsecret = \"s\"\nevent_id = \"/id\"\nsubject = \"/host\"\n\
         [hooks.correlate]\nfingerprint = \"alert.sig\"\nwindow = \"5m\"\nthreshold = 3\nproblem = \"outbreak\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(home.path())
        .env("ITSM_SECRET_S", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hook `av` correlates alerts into workflow `outbreak`, which is not loaded"),
        "{err}"
    );
}
