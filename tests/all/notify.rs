//! Notifications through `itsm serve`: a workflow's `[[notify]]` rule hands
//! the trail events it names to the bundled `chat-webhook` plugin, which
//! posts them to a strict Slack-style incoming webhook (the sandbox's
//! double): task assigned, approval requested, ticket failed, each once,
//! through a 429 the host retries.

use std::time::{Duration, Instant};

use itsm_sandbox::chat::ChatWebhook;
use serde_json::json;

use crate::support::{
    client_as, create_ticket, create_token, install_signed, person_token, start_server,
    wait_for_state,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_announces_its_events_through_the_chat_webhook_plugin() {
    let chat = ChatWebhook::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/services/{}",
        listener.local_addr().unwrap(),
        chat.hook()
    );
    let c = chat.clone();
    tokio::spawn(async move { c.serve(listener, std::future::pending()).await });
    // The first post is refused 429: the host tries it again.
    chat.throttle(1);

    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/leaver.toml"),
        format!(
            r#"
name = "leaver"
version = "1"
[settings]
chat = "{url}"
[inputs.manager]
type = "email"
required = true

[[notify]]
plugin = "chat-webhook"
on = ["task_assigned", "approval_requested", "ticket_failed"]
config = {{ url = "${{settings.chat}}" }}

[[steps]]
name = "collect"
task = {{ assignee = "${{inputs.manager}}", instructions = "Collect the laptop", checklist = ["laptop"] }}

[[steps]]
name = "wipe"
plugin = "scripted"
depends_on = ["collect"]
approval = {{ role = "security" }}
config = {{ behaviour = "fail" }}
"#
        ),
    )
    .unwrap();
    let boss = client_as(&person_token(home.path(), "boss", "boss@example.com"));
    let security = client_as(&create_token(
        home.path(),
        "sec-1",
        &["approver", "security"],
    ));
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();

    let id = create_ticket(&server
        .client(), &base, json!({ "workflow": "leaver", "subject": "ann@example.com", "inputs": { "manager": "boss@example.com" } })).await;
    let ticket = format!("{base}/v1/tickets/{id}");
    let texts = |n: usize| {
        let chat = chat.clone();
        async move {
            let started = Instant::now();
            loop {
                let got: Vec<String> = chat
                    .messages()
                    .iter()
                    .map(|m| m.body["text"].as_str().unwrap_or_default().to_string())
                    .collect();
                if got.len() >= n {
                    return got;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "{n} messages expected, got {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let got = texts(1).await;
    assert_eq!(
        got[0],
        format!(
            "Task `collect` for ann@example.com (ticket {id}, leaver) is assigned to boss@example.com."
        )
    );

    wait_for_state(&boss, &ticket, "waiting_task").await;
    let r = boss
        .post(format!("{ticket}/steps/collect/complete"))
        .json(&json!({ "checklist": { "laptop": true } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = texts(2).await;
    assert_eq!(
        got[1],
        format!(
            "Approval needed: step `wipe` for ann@example.com (ticket {id}, leaver) needs an approver in security."
        )
    );
    wait_for_state(&security, &ticket, "waiting_approval").await;
    let r = security
        .post(format!("{ticket}/approve"))
        .json(&json!({ "comment": "ok" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for_state(&security, &ticket, "failed").await;
    let got = texts(3).await;
    assert_eq!(
        got[2],
        format!("Failed: ann@example.com (ticket {id}, leaver); it needs someone to look at it.")
    );
    // Each once, and nothing else (no step events were asked for).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(chat.messages().len(), 3, "{:?}", chat.messages());
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "itsm_step_calls_total{plugin=\"chat-webhook\",op=\"notify\",outcome=\"retryable\"} 1"
        ),
        "the 429 was retried: {metrics}"
    );
}
