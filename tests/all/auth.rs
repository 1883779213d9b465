//! Tokens and roles through the real `itsm serve`: 401 and 403 say why,
//! separation of duties holds, and the trail names each principal.

use serde_json::{Value, json};

use crate::support::{
    client_as, create_token, set_up_wipe_home as set_up_home, start_server, wait_for_state,
};

async fn status_and_error(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_gate_each_call_and_an_approver_cannot_approve_what_they_imported() {
    let home = tempfile::tempdir().unwrap();
    set_up_home(home.path());
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let anonymous = reqwest::Client::new();

    // 401s say why.
    let (code, why) = status_and_error(anonymous.get(format!("{base}/v1/tickets"))).await;
    assert_eq!(
        (code, why.as_str()),
        (401, "missing `Authorization: Bearer <token>` header")
    );
    let (code, why) = status_and_error(
        anonymous
            .get(format!("{base}/v1/tickets"))
            .header("authorization", "Basic dXNlcjpwYXNz"),
    )
    .await;
    assert_eq!(
        (code, why.as_str()),
        (401, "the Authorization header must be `Bearer <token>`")
    );
    let (code, why) =
        status_and_error(client_as("itsm_not-a-real-token").get(format!("{base}/v1/tickets")))
            .await;
    assert_eq!((code, why.as_str()), (401, "unknown or revoked token"));
    // Probes stay open.
    assert_eq!(
        anonymous
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Tokens made while the server runs work at once.
    let importer = client_as(&create_token(
        home.path(),
        "hr-lead",
        &["operator", "approver", "security"],
    ));
    let auditor = client_as(&create_token(home.path(), "auditor-1", &["auditor"]));
    let helpdesk = client_as(&create_token(home.path(), "helpdesk", &["approver"]));
    let security = client_as(&create_token(
        home.path(),
        "sec-lead",
        &["approver", "security"],
    ));

    // An auditor reads but changes nothing.
    let (code, why) = status_and_error(
        auditor
            .post(format!("{base}/v1/tickets"))
            .json(&json!({ "workflow": "wipe", "subject": "x@example.com" })),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        why,
        "auditor-1 may not create tickets: that needs the `operator` role (it has: auditor)"
    );

    let report: Value = importer
        .post(format!("{base}/v1/imports?workflow=wipe"))
        .header("content-type", "text/csv")
        .body("subject\nleaver1@example.com\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = report["tickets"][0].as_str().unwrap().to_string();
    wait_for_state(
        &auditor,
        &format!("{base}/v1/tickets/{id}"),
        "waiting_approval",
    )
    .await;

    let approve = |c: &reqwest::Client| {
        c.post(format!("{base}/v1/tickets/{id}/approve"))
            .json(&json!({ "comment": "laptop returned" }))
    };
    let refusals = [
        (
            &importer,
            "separation of duties: hr-lead requested or imported ticket",
        ),
        (
            &auditor,
            "auditor-1 may not approve or reject: that needs the `approver` role",
        ),
        (&server.client(), "operator-1 may not approve or reject"),
    ];
    for (client, expected) in refusals {
        let (code, why) = status_and_error(approve(client)).await;
        assert_eq!(code, 403, "{why}");
        assert!(why.starts_with(expected), "{why}");
    }
    // An approver of no group the ticket awaits cannot see it: told it
    // does not exist, not whose decision it awaits.
    let (code, why) = status_and_error(approve(&helpdesk)).await;
    assert_eq!(
        (code, why.as_str()),
        (404, format!("no ticket {id}").as_str())
    );
    let (code, why) = status_and_error(approve(&security)).await;
    assert_eq!(code, 200, "{why}");

    let detail = wait_for_state(&auditor, &format!("{base}/v1/tickets/{id}"), "succeeded").await;
    let by_kind: Vec<(String, String)> = detail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "created" || e["kind"] == "approved")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["principal"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        by_kind,
        [
            ("created".into(), "hr-lead".into()),
            ("approved".into(), "sec-lead".into())
        ]
    );
    assert_eq!(detail["trail_verified"], true);

    // Revoked tokens stop working without a restart.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["token", "revoke", "helpdesk", "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let (code, _) = status_and_error(helpdesk.get(format!("{base}/v1/tickets"))).await;
    assert_eq!(code, 401);
    let tokens = std::fs::read_to_string(home.path().join("tokens.toml")).unwrap();
    assert!(!tokens.contains("helpdesk") && tokens.contains("sec-lead"));
}

/// `itsm token create --expires` against the real server: the token works,
/// then, past its expiry, gets a 401 naming it; `itsm token list` shows
/// each token's kind and expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_401_naming_its_expiry() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &[]).await;
    let itsm = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
            .args(args)
            .arg("--home")
            .arg(home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lifetime = std::time::Duration::from_secs(8);
    let created = std::time::Instant::now();
    let token = itsm(&[
        "token",
        "create",
        "--name",
        "temp",
        "--role",
        "auditor",
        "--expires",
        "8s",
    ])
    .trim()
    .to_string();
    let url = format!("{}/v1/tickets", server.base);
    // Before its expiry the token works (the situation under test: it was valid).
    let (status, error) = status_and_error(client_as(&token).get(&url)).await;
    assert_eq!(status, 200, "{error}");
    assert!(
        created.elapsed() < lifetime,
        "the valid call came too late to count"
    );

    itsm(&[
        "token",
        "create",
        "--name",
        "hr-system",
        "--role",
        "operator",
        "--service",
    ]);
    let list = itsm(&["token", "list"]);
    // NAME KIND ROLES EMAIL CREATED EXPIRES LAST-USED, by whitespace.
    let row = |list: &str, name: &str| -> Vec<String> {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let hr = row(&list, "hr-system");
    assert_eq!(
        (hr[1].as_str(), hr[5].as_str()),
        ("service", "never"),
        "{list}"
    );
    let temp = row(&list, "temp");
    assert_eq!(temp[1], "person", "{list}");
    assert_ne!(temp[5], "never", "{list}");

    let past =
        (lifetime + std::time::Duration::from_millis(1500)).saturating_sub(created.elapsed());
    tokio::time::sleep(past).await;
    let (status, error) = status_and_error(client_as(&token).get(&url)).await;
    assert_eq!(status, 401);
    assert!(
        error.contains("the token of temp expired at "),
        "the 401 names the expiry: {error}"
    );
    // Other tokens are untouched.
    let (status, _) = status_and_error(server.client().get(&url)).await;
    assert_eq!(status, 200);

    // Last use: the server wrote it out meanwhile (every 5 s). temp was
    // used at the start (the refused call is no use); hr-system never.
    let list = itsm(&["token", "list"]);
    assert_eq!(row(&list, "hr-system")[6], "never", "{list}");
    let used = row(&list, "temp")[6].clone();
    let used = humantime::parse_rfc3339(&used).unwrap_or_else(|e| panic!("{used}: {e}\n{list}"));
    let ago = std::time::SystemTime::now().duration_since(used).unwrap();
    assert!(ago < std::time::Duration::from_secs(60), "{list}");
    assert!(
        ago >= std::time::Duration::from_secs(5),
        "used at the start, not now: {list}"
    );
}
