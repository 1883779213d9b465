//! Completion without polling: `GET /v1/tickets/{id}?wait=` holds the
//! request until the ticket changes (or the wait passes), through the real
//! `itsm serve`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{client_as, create_token, get_json, start_server, wait_for_state};

#[tokio::test]
async fn a_long_poll_answers_when_the_ticket_changes_and_after_its_wait_otherwise() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &["--sandbox"]).await;
    let (base, http) = (server.base.clone(), server.client());
    let approver = client_as(&create_token(
        home.path(),
        "sec-lead",
        &["approver", "security"],
    ));
    let created: serde_json::Value = http
        .post(format!("{base}/v1/tickets"))
        .json(
            &json!({ "workflow": "sandbox-approved-offboarding", "subject": "user3@example.com" }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let url = format!("{base}/v1/tickets/{id}");
    let waiting = wait_for_state(&http, &url, "waiting_approval").await;
    let seen = waiting["ticket"]["head"]["len"].as_u64().unwrap();

    // Nothing changes: the answer comes after the wait, unchanged.
    let started = Instant::now();
    let same = get_json(&http, &format!("{url}?wait=1s&seen={seen}")).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(same["ticket"]["head"]["len"].as_u64(), Some(seen));

    // An approval while the request is held: the answer comes with it.
    let poll = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let d = get_json(&http, &format!("{url}?wait=30s&seen={seen}")).await;
            (d, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the request is held until a change");
    let r = approver
        .post(format!("{url}/approve"))
        .json(&json!({ "comment": "ok" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (changed, took) = poll.await.unwrap();
    assert!(changed["ticket"]["head"]["len"].as_u64().unwrap() > seen);
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(changed["trail_verified"], true);

    let r = http.get(format!("{url}?wait=soon")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("`wait`"));
}
