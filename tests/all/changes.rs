//! Changes through the real `itsm serve`, with the bundled change
//! workflows (`workflows/standard-change.toml`, `emergency-change.toml`)
//! and the bundled `rest-change` plugin against the firewall double, as
//! strict as a real policy API (bearer token, an `Idempotency-Key` on every
//! write, unknown fields refused): approvers read the rollback plan before
//! they vote and nothing is changed before the vote; an emergency change
//! whose verification fails is rolled back; a standard change waits for its
//! window, is applied, verified and reviewed.

use serde_json::{Value, json};

use crate::support::{
    Server, client_as, create_ticket, create_token, get_json, start_server_with_env, wait_for_state,
};
use itsm_sandbox::firewall::Firewall;

const TOKEN: &str = "fw-change-token-71c2";

/// A home with the bundled change workflows pointed at a firewall double
/// on loopback; the double and the server.
async fn change_home(home: &std::path::Path) -> (Firewall, Server) {
    let firewall = Firewall::new(TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}/api/v1", listener.local_addr().unwrap());
    let f = firewall.clone();
    tokio::spawn(async move { f.serve(listener, std::future::pending()).await });
    let wf = home.join("workflows");
    std::fs::create_dir_all(&wf).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows");
    for name in ["standard-change.toml", "emergency-change.toml"] {
        std::fs::copy(root.join(name), wf.join(name)).unwrap();
    }
    std::fs::write(
        home.join("settings.toml"),
        format!(
            "[standard-change]\nchange_api_url = \"{api}\"\n[emergency-change]\nchange_api_url = \"{api}\"\n"
        ),
    )
    .unwrap();
    let server = start_server_with_env(home, &[], &[("ITSM_SECRET_CHANGE_API_TOKEN", TOKEN)]).await;
    (firewall, server)
}

fn kinds(view: &Value) -> Vec<(String, String)> {
    view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["step"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn vote(http: &reqwest::Client, base: &str, id: &str, comment: &str) {
    let r = http
        .post(format!("{base}/v1/tickets/{id}/approve"))
        .json(&json!({ "comment": comment }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_change_whose_verification_fails_is_rolled_back_as_its_plan_said() {
    let home = tempfile::tempdir().unwrap();
    let security = client_as(&create_token(
        home.path(),
        "sec-1",
        &["approver", "security"],
    ));
    let cio = client_as(&create_token(home.path(), "cio-1", &["approver", "cio"]));
    let (firewall, server) = change_home(home.path()).await;
    let (base, ops) = (server.base.clone(), server.client());

    // Blocking 443 cuts the service off: the health check will say so.
    let id = create_ticket(
        &ops,
        &base,
        json!({
            "workflow": "emergency-change",
            "subject": "Block the worm's port",
            "inputs": { "rule_id": "block-443", "action": "deny", "port": 443,
                        "source": "0.0.0.0/0", "reason": "Worm spreading over 443" },
        }),
    )
    .await;
    let url = format!("{base}/v1/tickets/{id}");
    let view = wait_for_state(&security, &url, "waiting_approval").await;
    assert_eq!(view["kind"], "change");
    // The committee reads the rollback plan before voting, and nothing
    // has been changed yet.
    assert_eq!(
        view["rollback_plan"],
        json!([{ "step": "apply", "plugin": "rest-change", "undo": "DELETE /rules/block-443" }]),
        "{view:#}"
    );
    assert!(firewall.rules().is_empty());
    vote(&security, &base, &id, "Contain it now").await;
    vote(&cio, &base, &id, "Agreed").await;

    let view = wait_for_state(&ops, &url, "failed").await;
    let apply = &view["ticket"]["steps"]["apply"];
    assert_eq!(apply["status"], "failed", "{view:#}");
    // The change was made (the run), its verification read the service
    // degraded, and the rollback the plan named undid it.
    let failed_verify = apply["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["op"] == "verify")
        .unwrap_or_else(|| panic!("{view:#}"));
    let message = failed_verify["result"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("/status is \"degraded\", expected \"ok\""),
        "{message}"
    );
    assert_eq!(apply["outputs"]["applied"], true);
    assert_eq!(apply["evidence"]["before"], json!({ "status": "ok" }));
    assert_eq!(
        apply["compensation"]["after"],
        json!({ "status": "ok" }),
        "{view:#}"
    );
    let trail = kinds(&view);
    let order: Vec<&str> = trail
        .iter()
        .filter(|(_, s)| s == "apply")
        .map(|(k, _)| k.as_str())
        .filter(|k| ["step_succeeded", "step_failed", "compensated"].contains(k))
        .collect();
    assert_eq!(
        order,
        ["step_succeeded", "step_failed", "compensated"],
        "{trail:?}"
    );
    assert!(firewall.rules().is_empty(), "{:?}", firewall.rules());
    assert_eq!(firewall.writes(), 2, "one PUT, one DELETE");
    // The review never started: the change failed.
    assert_eq!(view["ticket"]["steps"]["review"]["status"], "pending");
    assert_eq!(view["trail_verified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_change_waits_for_the_cab_and_its_window_then_is_applied_verified_and_reviewed()
{
    let home = tempfile::tempdir().unwrap();
    let cab = client_as(&create_token(home.path(), "cab-1", &["approver", "cab"]));
    let (firewall, server) = change_home(home.path()).await;
    let (base, ops) = (server.base.clone(), server.client());

    // A bad field is refused by name before anything is made.
    let r = ops
        .post(format!("{base}/v1/tickets"))
        .json(&json!({
            "workflow": "standard-change",
            "subject": "Open 8443 to the office",
            "inputs": { "rule_id": "office-8443", "action": "open", "port": 8443,
                        "source": "10.0.0.0/8", "risk": "low",
                        "start": "2026-01-01T00:00:00Z", "reason": "New app" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("action"));

    let id = create_ticket(
        &ops,
        &base,
        json!({
            "workflow": "standard-change",
            "subject": "Open 8443 to the office",
            "inputs": { "rule_id": "office-8443", "action": "allow", "port": 8443,
                        "source": "10.0.0.0/8", "risk": "low",
                        "start": "2026-01-01T00:00:00Z", "reason": "New app" },
        }),
    )
    .await;
    let url = format!("{base}/v1/tickets/{id}");
    let view = wait_for_state(&cab, &url, "waiting_approval").await;
    assert_eq!(
        view["rollback_plan"][0]["undo"], "DELETE /rules/office-8443",
        "{view:#}"
    );
    vote(&cab, &base, &id, "Standard template, low risk").await;

    // Approved, it waits for the maintenance window (unless this instant
    // is in it); an operator may run it now, with the reason recorded.
    let view = loop {
        let v = get_json(&ops, &url).await;
        let status = v["ticket"]["steps"]["apply"]["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "scheduled"
            || status == "succeeded"
            || status == "running"
            || status == "retry_wait"
        {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if view["ticket"]["steps"]["apply"]["status"] == "scheduled" {
        assert!(firewall.rules().is_empty(), "nothing before the window");
        let r = ops
            .post(format!("{url}/steps/apply/run-now"))
            .json(&json!({ "reason": "CAB chair allowed it outside the window" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let view = wait_for_state(&ops, &url, "waiting_task").await;
    let apply = &view["ticket"]["steps"]["apply"];
    assert_eq!(apply["status"], "succeeded", "{view:#}");
    assert_eq!(apply["verification"]["after"], json!({ "status": "ok" }));
    assert_eq!(
        firewall.rules()["office-8443"],
        itsm_sandbox::firewall::Rule {
            action: "allow".into(),
            port: 8443,
            source: "10.0.0.0/8".into(),
            comment: Some("New app".into()),
        }
    );
    // The post-implementation review closes it.
    let r = cab
        .post(format!("{url}/steps/review/complete"))
        .json(&json!({ "note": "Works, no incident",
                       "checklist": { "planned outcome reached": true, "no incident caused": true } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let view = wait_for_state(&ops, &url, "succeeded").await;
    assert_eq!(view["trail_verified"], true);
    assert_eq!(firewall.writes(), 1);
}
