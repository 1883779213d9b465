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

/// The bundled offboarding tells the leaver's manager in a direct chat
/// message when their equipment task is assigned and when it is overdue,
/// through the bundled `chat-dm` plugin against a strict double of Slack's
/// Web API: the person is found by e-mail once (kept in the plugin's store,
/// so a manager of many leavers costs one lookup), the bot token is the
/// host's to attach, a 429 is retried, and a group's task tells nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_offboarding_tells_the_manager_in_a_direct_message() {
    use itsm_sandbox::chat_api::ChatApi;

    let token = "xoxb-tests-only";
    let chat = ChatApi::new(token);
    chat.add_user("mgr.a@example.com");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}/api", listener.local_addr().unwrap());
    let c = chat.clone();
    tokio::spawn(async move { c.serve(listener, std::future::pending()).await });
    chat.throttle(1);

    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::copy(
        crate::support::root().join("workflows/offboarding.toml"),
        home.path().join("workflows/offboarding.toml"),
    )
    .unwrap();
    std::fs::write(
        home.path().join("settings.toml"),
        format!("[offboarding]\nchat_api_url = \"{api_url}\"\n"),
    )
    .unwrap();
    let server = crate::support::start_server_with_env(
        home.path(),
        &[],
        &[("ITSM_SECRET_CHAT_BOT_TOKEN", token)],
    )
    .await;
    let (base, ops) = (server.base.clone(), server.client());

    // The last day is today (UTC): the equipment was due at midnight, so
    // the task is overdue as soon as it is assigned; access is cut at
    // 23:59, so nothing else runs meanwhile.
    let today =
        humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..10].to_string();
    let leaver = |subject: &str, manager: Option<&str>| {
        let mut inputs = json!({
            "last_day": today,
            "time_zone": "UTC",
            "collect_by": "00:00",
            "cut_off": "23:59",
        });
        if let Some(m) = manager {
            inputs["manager"] = json!(m);
        }
        json!({ "workflow": "offboarding", "subject": subject, "inputs": inputs })
    };
    let told = |n: usize| {
        let chat = chat.clone();
        async move {
            let started = Instant::now();
            while chat.messages().len() < n {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{} direct messages, not {n}: {:?}",
                    chat.messages().len(),
                    chat.messages()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // One leaver: their manager is told of the task, then that it is overdue.
    let first = create_ticket(
        &ops,
        &base,
        leaver("ann@example.com", Some("mgr.a@example.com")),
    )
    .await;
    told(2).await;
    let messages = chat.messages();
    assert!(
        messages.iter().all(|m| m.to == "mgr.a@example.com"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.text.contains("ann@example.com") && m.text.contains(&first)),
        "{messages:?}"
    );
    let view = crate::support::get_json(&ops, &format!("{base}/v1/tickets/{first}")).await;
    let kinds: Vec<&str> = view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"task_assigned") && kinds.contains(&"task_overdue"),
        "the situation under test: assigned and overdue: {kinds:?}"
    );
    let lookups = chat.lookups();
    assert!((1..=2).contains(&lookups), "{lookups}");

    // Two more of the same manager's leavers, and one without a manager
    // (it-support's task: nobody to tell in person).
    for subject in ["bo@example.com", "cy@example.com"] {
        create_ticket(&ops, &base, leaver(subject, Some("mgr.a@example.com"))).await;
    }
    let group = create_ticket(&ops, &base, leaver("dee@example.com", None)).await;
    told(6).await;
    crate::support::wait_for_state(&ops, &format!("{base}/v1/tickets/{group}"), "waiting_task")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = chat.messages();
    assert_eq!(messages.len(), 6, "{messages:?}");
    assert!(
        messages.iter().all(|m| !m.text.contains("dee@example.com")),
        "{messages:?}"
    );
    assert_eq!(
        chat.lookups(),
        lookups,
        "the manager was looked up once, not once per leaver"
    );
    let overdue = messages
        .iter()
        .filter(|m| m.text.to_lowercase().contains("overdue"))
        .count();
    assert_eq!(overdue, 3, "{messages:?}");
}
