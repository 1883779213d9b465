//! A change committee through `itsm serve`: an emergency change needs two
//! of three groups (distinct approvers, none the requester), then runs its
//! steps at once (no change window), and a failed verification undoes
//! what was done, in reverse.

use serde_json::{Value, json};

use crate::support::{
    client_as, create_ticket, create_token, get_json, install_signed, start_server, wait_for_state,
};

const WORKFLOW: &str = r#"
name = "emergency-change"
version = "1"
on_failure = "compensate"

[[steps]]
name = "snapshot"
plugin = "scripted"
config = { behaviour = "ok" }
verify = false
approval = { groups = ["security", "cio", "service-owner"], quorum = 2, deadline = "4h", escalate_to = "cab-chairs" }

[[steps]]
name = "apply-fix"
plugin = "scripted"
depends_on = ["snapshot"]
config = { behaviour = "ok" }
verify = false

[[steps]]
name = "check-service"
plugin = "scripted"
depends_on = ["apply-fix"]
config = { behaviour = "ok", verify = "fail" }
"#;

async fn vote(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    approve: bool,
    comment: &str,
) -> (u16, Value) {
    let what = if approve { "approve" } else { "reject" };
    let r = http
        .post(format!("{base}/v1/tickets/{id}/{what}"))
        .json(&json!({ "comment": comment }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_change_needs_two_groups_then_runs_and_a_failed_verification_undoes_it() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/emergency-change.toml"),
        WORKFLOW,
    )
    .unwrap();
    let security = client_as(&create_token(
        home.path(),
        "sec-1",
        &["approver", "security"],
    ));
    let security2 = client_as(&create_token(
        home.path(),
        "sec-2",
        &["approver", "security"],
    ));
    let cio = client_as(&create_token(home.path(), "cio-1", &["approver", "cio"]));
    let helpdesk = client_as(&create_token(home.path(), "helpdesk", &["approver"]));
    let requester = create_token(
        home.path(),
        "change-owner",
        &["operator", "approver", "cio"],
    );
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();

    let id = create_ticket(
        &client_as(&requester),
        &base,
        json!({ "workflow": "emergency-change", "subject": "CHG-1042 database failover" }),
    )
    .await;
    let url = format!("{base}/v1/tickets/{id}");
    let view = wait_for_state(&security, &url, "waiting_approval").await;
    let requested = view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approval_requested")
        .unwrap()
        .clone();
    assert_eq!(
        requested["data"]["groups"],
        json!(["security", "cio", "service-owner"])
    );
    assert_eq!(requested["data"]["quorum"], 2);
    assert!(requested["data"]["due_ms"].as_u64().is_some());

    // The requester may not vote, though in cio; nor an approver in none of the groups.
    let (status, body) = vote(&client_as(&requester), &base, &id, true, "mine").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("separation of duties"),
        "{body}"
    );
    // An approver in none of the groups cannot see the change at all.
    let (status, body) = vote(&helpdesk, &base, &id, true, "looks fine").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], format!("no ticket {id}"), "{body}");

    // Security approves: one of two. A second security approver adds nothing.
    let (status, body) = vote(&security, &base, &id, true, "risk accepted").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get_json(&security, &url).await["ticket"]["state"],
        "waiting_approval"
    );
    let (status, body) = vote(&security2, &base, &id, true, "me too").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already voted"),
        "{body}"
    );

    // The CIO makes the quorum: the change runs at once, its check fails
    // verification, and what was done is undone in reverse.
    let (status, body) = vote(&cio, &base, &id, true, "go").await;
    assert_eq!(status, 200, "{body}");
    let view = wait_for_state(&security, &url, "failed").await;
    let steps = &view["ticket"]["steps"];
    let votes: Vec<(&str, &str)> = steps["snapshot"]["approval"]["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["by"].as_str().unwrap(), v["group"].as_str().unwrap()))
        .collect();
    assert_eq!(votes, [("sec-1", "security"), ("cio-1", "cio")]);
    assert_eq!(steps["check-service"]["status"], "failed");
    let trail = view["trail"].as_array().unwrap();
    let approved: Vec<(&str, bool)> = trail
        .iter()
        .filter(|e| e["kind"] == "approved")
        .map(|e| {
            (
                e["principal"].as_str().unwrap(),
                e["data"]["decided"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(approved, [("sec-1", false), ("cio-1", true)]);
    let undone: Vec<&str> = trail
        .iter()
        .filter(|e| e["kind"] == "compensated")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    // The step whose verification failed ran, so what it did is undone
    // too, first; it stays the step that failed.
    assert_eq!(
        undone,
        ["check-service", "apply-fix", "snapshot"],
        "undone in reverse"
    );
    assert_eq!(steps["check-service"]["status"], "failed");
    assert_eq!(steps["apply-fix"]["status"], "compensated");
    assert_eq!(view["trail_verified"], true);
}
