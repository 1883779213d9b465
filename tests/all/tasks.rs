//! Human tasks through `itsm serve`: a ticket waits for the leaver's
//! manager (matched by the e-mail on their token), who finds it in their
//! inbox and completes it over the API and the CLI; others may not; the
//! answers drive the rest of the workflow and the trail keeps who did what.

use serde_json::{Value, json};

use crate::support::{
    client_as, get_json, install_signed, person_token, start_server, wait_for_state,
};

const WORKFLOW: &str = r#"
name = "leaver"
version = "1"
subject = "email"
[inputs.manager]
type = "email"
required = true

[[steps]]
name = "collect"
task.assignee = "${inputs.manager}"
task.group = "it-support"
task.instructions = "Collect the leaver's equipment before their last day."
task.checklist = ["laptop", "badge"]
task.due_in = "2d"

[[steps]]
name = "wipe"
plugin = "scripted"
depends_on = ["collect"]
when = "steps.collect.outputs.checklist.laptop"
config = { behaviour = "ok" }
verify = false

[[steps]]
name = "disable"
plugin = "scripted"
depends_on = ["collect"]
config = { behaviour = "ok" }
verify = false
"#;

async fn tasks(http: &reqwest::Client, base: &str, query: &str) -> Vec<Value> {
    get_json(http, &format!("{base}/v1/tasks?{query}")).await["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_completes_their_task_from_the_inbox_and_the_ticket_moves_on() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/leaver.toml"), WORKFLOW).unwrap();
    let boss = client_as(&person_token(home.path(), "manager-1", "Boss@Example.com"));
    let deputy_token = person_token(home.path(), "deputy-1", "deputy@example.com");
    let deputy = client_as(&deputy_token);
    let server = start_server(home.path(), &[]).await;
    let (base, ops) = (server.base.clone(), server.client());

    let mut ids = Vec::new();
    for (subject, manager) in [
        ("ann@example.com", "boss@example.com"),
        ("bo@example.com", "boss@example.com"),
    ] {
        let (status, t) = post(
            &ops,
            &format!("{base}/v1/tickets"),
            json!({ "workflow": "leaver", "subject": subject, "inputs": { "manager": manager } }),
        )
        .await;
        assert_eq!(status, 201, "{t}");
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_for_state(&ops, &format!("{base}/v1/tickets/{id}"), "waiting_task").await;
    }
    let me = get_json(&boss, &format!("{base}/v1/me")).await;
    assert_eq!(me["email"], "boss@example.com");

    // The manager's inbox has both; the deputy's is empty.
    let mine = tasks(&boss, &base, "mine=true").await;
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine[0]["step"], "collect");
    assert_eq!(mine[0]["checklist"], json!(["laptop", "badge"]));
    assert_eq!(
        mine[0]["instructions"],
        "Collect the leaver's equipment before their last day."
    );
    assert!(mine[0]["due_ms"].as_u64().is_some());
    assert!(tasks(&deputy, &base, "mine=true").await.is_empty());
    assert_eq!(tasks(&ops, &base, "group=it-support").await.len(), 2);

    // Someone else may not: a person with no relation to the ticket is
    // told it does not exist; an operator, who sees it, that it is not
    // theirs. An unanswered item and a "no" without a note are refused.
    let url = |id: &str, what: &str| format!("{base}/v1/tickets/{id}/steps/collect/{what}");
    let (status, body) = post(
        &deputy,
        &url(&ids[0], "complete"),
        json!({ "checklist": { "laptop": true, "badge": true } }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], format!("no ticket {}", ids[0]), "{body}");
    let (status, body) = post(
        &ops,
        &url(&ids[0], "complete"),
        json!({ "checklist": { "laptop": true, "badge": true } }),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("assigned to boss@example.com"),
        "{body}"
    );
    let (status, body) = post(
        &boss,
        &url(&ids[0], "complete"),
        json!({ "checklist": { "laptop": true } }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("missing badge"),
        "{body}"
    );
    let (status, _) = post(
        &boss,
        &url(&ids[0], "complete"),
        json!({ "checklist": { "laptop": false, "badge": true } }),
    )
    .await;
    assert_eq!(status, 422);

    // Done over the API: the laptop came back, so the wipe runs.
    let (status, body) = post(
        &boss,
        &url(&ids[0], "complete"),
        json!({ "note": "all in", "checklist": { "laptop": true, "badge": true } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let view = wait_for_state(&ops, &format!("{base}/v1/tickets/{}", ids[0]), "succeeded").await;
    assert_eq!(view["ticket"]["steps"]["wipe"]["status"], "succeeded");
    let done = view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "task_completed")
        .unwrap()
        .clone();
    assert_eq!(done["principal"], "manager-1");
    assert_eq!(
        done["data"]["checklist"],
        json!({ "laptop": true, "badge": true })
    );
    assert_eq!(done["data"]["note"], "all in");
    let (status, _) = post(
        &boss,
        &url(&ids[0], "complete"),
        json!({ "checklist": { "laptop": true, "badge": true } }),
    )
    .await;
    assert_eq!(status, 409, "done already");

    // The second goes to the deputy, who completes it with the CLI: the
    // laptop is missing, so there is no wipe.
    let (status, body) = post(
        &ops,
        &url(&ids[1], "reassign"),
        json!({ "to": "deputy@example.com", "reason": "manager on leave" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(tasks(&boss, &base, "mine=true").await.is_empty());
    assert_eq!(tasks(&deputy, &base, "mine=true").await.len(), 1);
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["task", "list", "--mine"])
        .env("ITSM_SERVER", &base)
        .env("ITSM_TOKEN", &deputy_token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains(&ids[1]) && text.contains("laptop, badge"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args([
            "task",
            "complete",
            &ids[1],
            "collect",
            "--done",
            "badge",
            "--not-done",
            "laptop",
            "--note",
            "laptop stolen, police report 42",
        ])
        .env("ITSM_SERVER", &base)
        .env("ITSM_TOKEN", &deputy_token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = wait_for_state(&ops, &format!("{base}/v1/tickets/{}", ids[1]), "succeeded").await;
    assert_eq!(view["ticket"]["steps"]["wipe"]["status"], "skipped");
    assert_eq!(view["ticket"]["steps"]["disable"]["status"], "succeeded");
    let kinds: Vec<&str> = view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "task_assigned",
        "task_reassigned",
        "task_completed",
        "step_skipped",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // The trail verifies.
    let verified = get_json(
        &server.auditor_client(),
        &format!("{base}/v1/audit/verify?ticket={}", ids[1]),
    )
    .await;
    assert_eq!(verified["verified"], true, "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_and_a_committee_vote_survive_a_kill_and_the_ticket_finishes_after_restart() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/leaver.toml"),
        WORKFLOW.replace(
            "depends_on = [\"collect\"]\nwhen",
            "depends_on = [\"collect\"]\napproval = { groups = [\"security\", \"cio\"], quorum = 2 }\nwhen",
        ),
    )
    .unwrap();
    let boss = client_as(&person_token(home.path(), "manager-1", "boss@example.com"));
    let sec = client_as(&crate::support::create_token(
        home.path(),
        "sec-1",
        &["approver", "security"],
    ));
    let cio = client_as(&crate::support::create_token(
        home.path(),
        "cio-1",
        &["approver", "cio"],
    ));
    let mut server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let id = crate::support::create_ticket(
        &server.client(),
        &base,
        json!({ "workflow": "leaver", "subject": "cy@example.com", "inputs": { "manager": "boss@example.com" } }),
    )
    .await;
    let url = format!("{base}/v1/tickets/{id}");
    wait_for_state(&boss, &url, "waiting_task").await;

    // SIGKILL with the task open: after the restart it is still the manager's.
    server.child.kill().await.unwrap();
    let mut server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let url = format!("{base}/v1/tickets/{id}");
    let mine = tasks(&boss, &base, "mine=true").await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let (status, body) = post(
        &boss,
        &format!("{url}/steps/collect/complete"),
        json!({ "checklist": { "laptop": true, "badge": true } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for_state(&sec, &url, "waiting_approval").await;
    let (status, _) = post(&sec, &format!("{url}/approve"), json!({ "comment": "ok" })).await;
    assert_eq!(status, 200);

    // SIGKILL with one vote of two: the vote is kept, the second decides.
    server.child.kill().await.unwrap();
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let url = format!("{base}/v1/tickets/{id}");
    let view = get_json(&sec, &url).await;
    assert_eq!(
        view["ticket"]["steps"]["wipe"]["approval"]["votes"][0]["by"],
        "sec-1"
    );
    let (status, body) = post(
        &sec,
        &format!("{url}/approve"),
        json!({ "comment": "again" }),
    )
    .await;
    assert_eq!(status, 409, "one vote each, across a restart too: {body}");
    let (status, _) = post(&cio, &format!("{url}/approve"), json!({ "comment": "go" })).await;
    assert_eq!(status, 200);
    let view = wait_for_state(&sec, &url, "succeeded").await;
    assert_eq!(view["ticket"]["steps"]["wipe"]["status"], "succeeded");
    assert_eq!(view["trail_verified"], true);
}
