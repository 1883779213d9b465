//! Declared inputs and step conditions through `itsm serve`: a create and an
//! import are checked against the workflow's inputs (422 naming the field;
//! bad rows by number, good rows created), inputs fill step config, a
//! false `when` skips its step (in the trail, with the values it read), and
//! a workflow with a bad condition is refused while the previous version
//! keeps running.

use serde_json::{Value, json};

use crate::support::{
    client_as, create_token, get_json, install_signed, start_server, wait_for_state,
};

const WORKFLOW: &str = r#"
name = "leaver"
version = "1"
subject = "email"

[inputs.last_day]
type = "date"
required = true
[inputs.legal_hold]
type = "bool"
default = false
[inputs.mode]
type = "enum"
values = ["ok", "fail"]
default = "ok"

[[steps]]
name = "find-device"
plugin = "scripted"
config = { behaviour = "${inputs.mode}" }
verify = false

[[steps]]
name = "wipe"
plugin = "scripted"
depends_on = ["find-device"]
when = 'steps["find-device"].outputs.behaviour == "ok" && inputs.legal_hold'
config = { behaviour = "ok" }
verify = false

[[steps]]
name = "hold"
plugin = "scripted"
when = "inputs.legal_hold"
config = { behaviour = "ok" }
verify = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_checked_at_intake_and_false_conditions_skip_their_steps() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/scripted", "itsm-plugin-test-scripted");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/leaver.toml"), WORKFLOW).unwrap();
    let server = start_server(home.path(), &[]).await;
    let (base, http) = (server.base.clone(), server.client());

    // One create: 422, naming every field that does not fit.
    let refused = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "leaver", "subject": "lee", "inputs": { "last_day": "31/12/2026", "legal_hold": "perhaps", "boss": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let why = refused.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    for want in [
        "subject: \"lee\" is not an e-mail address",
        "input `last_day`: \"31/12/2026\" is not a date (YYYY-MM-DD)",
        "input `legal_hold`: \"perhaps\" is not true or false",
        "input `boss` is not declared (workflow `leaver` takes: last_day, legal_hold, mode)",
    ] {
        assert!(why.contains(want), "want {want:?} in {why}");
    }

    // An import: the bad rows by number and field, the good ones created.
    let csv = "subject,last_day,legal_hold\nkim@example.com,2026-12-04,yes\nbad@example.com,04/12/2026,no\nlou@example.com,2026-12-05,\nnot-an-address,2026-12-05,no\n";
    let report: Value = http
        .post(format!("{base}/v1/imports?workflow=leaver"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["created"], 2, "{report:#}");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{report:#}");
    assert_eq!(errors[0]["row"], 2);
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("input `last_day`: \"04/12/2026\" is not a date"),
        "{report:#}"
    );
    assert_eq!(errors[1]["row"], 4);
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("not an e-mail address"),
        "{report:#}"
    );
    let (kim, lou) = (
        report["tickets"][0].as_str().unwrap().to_string(),
        report["tickets"][1].as_str().unwrap().to_string(),
    );

    // Kim asked for a legal hold: every step ran, inputs filled the config.
    let kim = wait_for_state(&http, &format!("{base}/v1/tickets/{kim}"), "succeeded").await;
    assert_eq!(
        kim["ticket"]["inputs"],
        json!({ "last_day": "2026-12-04", "legal_hold": true, "mode": "ok" })
    );
    for step in ["find-device", "wipe", "hold"] {
        assert_eq!(
            kim["ticket"]["steps"][step]["status"], "succeeded",
            "{step}: {kim:#}"
        );
    }
    assert_eq!(
        kim["ticket"]["steps"]["find-device"]["outputs"]["behaviour"],
        "ok"
    );

    // Lou did not (a blank cell takes the default): wipe and hold skipped,
    // the ticket succeeded, and the trail says what decided it.
    let lou = wait_for_state(&http, &format!("{base}/v1/tickets/{lou}"), "succeeded").await;
    for step in ["wipe", "hold"] {
        assert_eq!(
            lou["ticket"]["steps"][step]["status"], "skipped",
            "{step}: {lou:#}"
        );
        assert!(
            lou["ticket"]["steps"][step]["attempts"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(lou["trail_verified"], true);
    let skipped: Vec<&Value> = lou["trail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "step_skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{lou:#}");
    let wipe = skipped.iter().find(|e| e["step"] == "wipe").unwrap();
    assert_eq!(wipe["data"]["value"], false);
    assert_eq!(wipe["data"]["inputs"], json!({ "legal_hold": false }));
    assert_eq!(
        wipe["data"]["steps"]["find-device"]["outputs"]["behaviour"],
        "ok"
    );

    // A new version whose condition reads a step it does not depend on is
    // refused, naming the step and the column; the old version still runs.
    let broken = WORKFLOW.replace(
        "when = \"inputs.legal_hold\"",
        "when = 'inputs.legal_hold && steps.wipe.outputs.ok'",
    );
    let admin = client_as(&create_token(home.path(), "wf-admin", &["admin"]));
    let put = admin
        .put(format!("{base}/v1/workflows/leaver"))
        .header("content-type", "application/toml")
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 422);
    let why = put.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("step `hold`: when:")
            && why.contains("reads step `wipe`, which this step does not depend on")
            && why.contains("(at column 22)"),
        "{why}"
    );
    let created = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "leaver", "subject": "max@example.com", "inputs": { "last_day": "2026-12-06", "legal_hold": true } }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let max = wait_for_state(&http, &format!("{base}/v1/tickets/{id}"), "succeeded").await;
    assert_eq!(max["ticket"]["steps"]["hold"]["status"], "succeeded");
    let wf = get_json(&http, &format!("{base}/v1/workflows/leaver")).await;
    assert_eq!(wf["current"]["version"], "1", "{wf:#}");
}
