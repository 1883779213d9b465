//! Who reads what, over real HTTP against `itsm serve`: one layoff of
//! three leavers (one batch), two managers, a security approver, an
//! approver of another group, an auditor, an operator and a person with no
//! relation to any ticket, each tried on every read path: list, show,
//! long-poll, tasks, the batch, audit export and verify, and the metrics.
//! The counts and the 404s are the policy of `host/src/access.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    client_as, create_token, get_json, install_signed, person_token, start_server, wait_for_state,
};

const WORKFLOW: &str = r#"
name = "leaver"
version = "1"
subject = "email"
[inputs.manager]
type = "email"
required = true
[inputs.legal_hold]
type = "bool"

[[steps]]
name = "disable"
plugin = "noop"

[[steps]]
name = "collect"
task = { assignee = "${inputs.manager}", instructions = "Collect the laptop.", checklist = ["laptop"], due_in = "1d" }

[[steps]]
name = "wipe"
plugin = "noop"
depends_on = ["collect"]
approval = { role = "security" }
"#;

/// What one principal gets on each read path.
struct Row {
    who: &'static str,
    /// `GET /v1/tickets`: how many.
    listed: usize,
    /// The tickets (by leaver) `GET /v1/tickets/{id}` answers 200 for, and
    /// the view; the others answer 404.
    shows: &'static [(&'static str, &'static str)],
    /// `GET /v1/tasks` (without `mine`): how many.
    tasks: usize,
    /// `GET /v1/batches/{id}`: how many tickets (0: 404).
    batch: usize,
    /// `GET /v1/audit` and `/v1/audit/verify`: allowed (else 403).
    trails: bool,
}

const TABLE: &[Row] = &[
    Row {
        who: "operator",
        listed: 3,
        shows: &[("ann", "whole"), ("bo", "whole"), ("cy", "whole")],
        tasks: 2,
        batch: 3,
        trails: false,
    },
    Row {
        who: "auditor",
        listed: 3,
        shows: &[("ann", "whole"), ("bo", "whole"), ("cy", "whole")],
        tasks: 2,
        batch: 3,
        trails: true,
    },
    Row {
        who: "manager-a",
        listed: 1,
        shows: &[("ann", "task")],
        tasks: 0,
        batch: 1,
        trails: false,
    },
    Row {
        who: "manager-b",
        listed: 2,
        shows: &[("bo", "task"), ("cy", "task")],
        tasks: 2,
        batch: 2,
        trails: false,
    },
    Row {
        who: "security",
        listed: 1,
        shows: &[("ann", "whole")],
        tasks: 0,
        batch: 1,
        trails: false,
    },
    Row {
        who: "hr-approver",
        listed: 0,
        shows: &[],
        tasks: 0,
        batch: 0,
        trails: false,
    },
    Row {
        who: "person",
        listed: 0,
        shows: &[],
        tasks: 0,
        batch: 0,
        trails: false,
    },
];

async fn status_of(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_and_relation_reads_only_what_is_theirs_on_every_read_path() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/noop", "itsm-plugin-test-noop");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/leaver.toml"), WORKFLOW).unwrap();
    let manager_a = client_as(&person_token(home.path(), "manager-a", "mgr.a@example.com"));
    let manager_b = client_as(&person_token(home.path(), "manager-b", "mgr.b@example.com"));
    let person = client_as(&person_token(home.path(), "person", "someone@example.com"));
    let security = client_as(&create_token(
        home.path(),
        "sec-lead",
        &["approver", "security"],
    ));
    let hr_approver = client_as(&create_token(home.path(), "hr-lead", &["approver", "hr"]));
    let server = start_server(home.path(), &[]).await;
    let (base, operator, auditor) = (
        server.base.clone(),
        server.client(),
        server.auditor_client(),
    );

    // The layoff: one import, three leavers, ann's on legal hold.
    let report: Value = operator
        .post(format!("{base}/v1/imports?workflow=leaver"))
        .header("content-type", "application/x-ndjson")
        .body(
            [
                json!({ "subject": "ann@example.com", "inputs": { "manager": "mgr.a@example.com", "legal_hold": true } }),
                json!({ "subject": "bo@example.com", "inputs": { "manager": "mgr.b@example.com", "legal_hold": false } }),
                json!({ "subject": "cy@example.com", "inputs": { "manager": "mgr.b@example.com", "legal_hold": false } }),
            ]
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["created"], 3, "{report:#}");
    let batch = report["batch"].as_str().unwrap().to_string();
    let listed = get_json(&operator, &format!("{base}/v1/tickets?batch={batch}")).await;
    let mut ids = std::collections::BTreeMap::new();
    for t in listed["tickets"].as_array().unwrap() {
        let subject = t["subject"].as_str().unwrap();
        let leaver = subject.split('@').next().unwrap().to_string();
        ids.insert(leaver, t["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 3, "{listed:#}");
    for id in ids.values() {
        wait_for_state(
            &operator,
            &format!("{base}/v1/tickets/{id}"),
            "waiting_task",
        )
        .await;
    }
    // Ann's manager does the task: ann's ticket now awaits security.
    let done = manager_a
        .post(format!(
            "{base}/v1/tickets/{}/steps/collect/complete",
            ids["ann"]
        ))
        .json(&json!({ "checklist": { "laptop": true } }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    let ann = wait_for_state(
        &operator,
        &format!("{base}/v1/tickets/{}", ids["ann"]),
        "waiting_approval",
    )
    .await;
    // The situation under test: the disable step left evidence, ann's
    // inputs hold the legal hold, and the trail has events of every step.
    assert_eq!(ann["ticket"]["inputs"]["legal_hold"], true, "{ann:#}");
    assert!(
        !ann["ticket"]["steps"]["disable"]["evidence"].is_null(),
        "{ann:#}"
    );
    let steps_in_trail: std::collections::BTreeSet<&str> = ann["trail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert!(
        ["disable", "collect", "wipe"]
            .iter()
            .all(|s| steps_in_trail.contains(s)),
        "{steps_in_trail:?}"
    );

    let client = |who: &str| match who {
        "operator" => operator.clone(),
        "auditor" => auditor.clone(),
        "manager-a" => manager_a.clone(),
        "manager-b" => manager_b.clone(),
        "security" => security.clone(),
        "hr-approver" => hr_approver.clone(),
        "person" => person.clone(),
        other => panic!("no client for {other}"),
    };
    for row in TABLE {
        let http = client(row.who);
        let who = row.who;

        // List.
        let list = get_json(&http, &format!("{base}/v1/tickets")).await;
        assert_eq!(
            list["tickets"].as_array().unwrap().len(),
            row.listed,
            "{who}: {list:#}"
        );
        assert_eq!(list["total"], row.listed, "{who}: {list:#}");
        // A page of one, then the next: the same tickets, in two pages.
        if row.listed > 1 {
            let first = get_json(&http, &format!("{base}/v1/tickets?limit=1")).await;
            let next = first["next"]
                .as_str()
                .unwrap_or_else(|| panic!("{who}: {first:#}"));
            let second = get_json(&http, &format!("{base}/v1/tickets?limit=1&after={next}")).await;
            assert_eq!(second["tickets"].as_array().unwrap().len(), 1, "{who}");
            assert_ne!(first["tickets"][0]["id"], second["tickets"][0]["id"]);
            assert_eq!(second["total"], row.listed, "{who}");
        }

        // Show, and the long-poll.
        for (leaver, id) in &ids {
            let url = format!("{base}/v1/tickets/{id}");
            let (status, body) = status_of(&http, &url).await;
            let expected = row.shows.iter().find(|(l, _)| l == leaver);
            match expected {
                None => {
                    assert_eq!(status, 404, "{who} reads {leaver}: {body}");
                    assert_eq!(body["error"], format!("no ticket {id}"), "{who}: {body}");
                    // The long-poll answers at once, as for a ticket that
                    // does not exist, rather than holding the request.
                    let started = Instant::now();
                    let (status, _) = status_of(&http, &format!("{url}?wait=20s")).await;
                    assert_eq!(status, 404, "{who} waits on {leaver}");
                    assert!(started.elapsed() < Duration::from_secs(10), "{who}");
                }
                Some((_, view)) => {
                    assert_eq!(status, 200, "{who} reads {leaver}: {body}");
                    assert_eq!(body["view"], *view, "{who} reads {leaver}");
                    assert_eq!(body["trail_verified"], true, "{who}: {body:#}");
                    if *view == "task" {
                        assert_eq!(body["ticket"]["inputs"], json!({}), "{who}: {body:#}");
                        let steps: Vec<&String> = body["ticket"]["steps"]
                            .as_object()
                            .unwrap()
                            .keys()
                            .collect();
                        assert_eq!(steps, ["collect"], "{who}: {body:#}");
                        let trail = body["trail"].as_array().unwrap();
                        assert!(!trail.is_empty(), "{who}: {body:#}");
                        assert!(
                            trail.iter().all(|e| e["step"] == "collect"),
                            "{who} sees another step's events: {body:#}"
                        );
                        let defined: Vec<&str> = body["workflow_steps"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| s["name"].as_str().unwrap())
                            .collect();
                        assert_eq!(defined, ["collect"], "{who}");
                    } else {
                        assert!(!body["ticket"]["inputs"]["manager"].is_null(), "{who}");
                        assert_eq!(body["ticket"]["steps"].as_object().unwrap().len(), 3);
                    }
                    let (status, _) = status_of(&http, &format!("{url}?wait=100ms&seen=0")).await;
                    assert_eq!(status, 200, "{who} waits on {leaver}");
                }
            }
        }

        // Tasks: without `mine`, a person sees only theirs.
        let tasks = get_json(&http, &format!("{base}/v1/tasks")).await;
        assert_eq!(
            tasks["tasks"].as_array().unwrap().len(),
            row.tasks,
            "{who}: {tasks:#}"
        );

        // The batch.
        let (status, body) = status_of(&http, &format!("{base}/v1/batches/{batch}")).await;
        if row.batch == 0 {
            assert_eq!(status, 404, "{who}: {body}");
        } else {
            assert_eq!(status, 200, "{who}: {body}");
            assert_eq!(body["total"], row.batch, "{who}: {body}");
            assert_eq!(body["tickets"].as_array().unwrap().len(), row.batch);
        }

        // Trails in bulk.
        for path in [
            format!("/v1/audit?ticket={}", ids["ann"]),
            "/v1/audit/verify".to_string(),
        ] {
            let (status, body) = status_of(&http, &format!("{base}{path}")).await;
            if row.trails {
                assert_eq!(status, 200, "{who} {path}: {body}");
            } else {
                assert_eq!(status, 403, "{who} {path}: {body}");
                assert!(
                    body["error"]
                        .as_str()
                        .unwrap()
                        .contains("needs the `auditor` or `admin` role"),
                    "{who}: {body}"
                );
            }
        }
    }

    // Acting on a ticket one cannot see is answered as for one that does
    // not exist: the other group's approver, and manager B on ann's task.
    let (status, body) = {
        let r = hr_approver
            .post(format!("{base}/v1/tickets/{}/approve", ids["ann"]))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(status, 404, "{body}");
    let r = manager_b
        .post(format!(
            "{base}/v1/tickets/{}/steps/collect/complete",
            ids["bo"]
        ))
        .json(&json!({ "checklist": { "laptop": true } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "manager B does their own");
    let r = manager_a
        .post(format!(
            "{base}/v1/tickets/{}/steps/collect/complete",
            ids["cy"]
        ))
        .json(&json!({ "checklist": { "laptop": true } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "manager A may not see cy's ticket");

    // A task done stays readable to the one who held it: manager A still
    // reads ann's ticket (the task's part), though no task is open there.
    let (status, body) = status_of(&manager_a, &format!("{base}/v1/tickets/{}", ids["ann"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["ticket"]["steps"]["collect"]["task"]["done"]["by"],
        "manager-a"
    );

    // Metrics carry no person, ticket or subject in their labels.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("itsm_step_calls_total{"), "{metrics}");
    for secret in ids.values().map(String::as_str).chain([
        "ann@",
        "bo@",
        "cy@",
        "mgr.a@",
        "mgr.b@",
        "legal_hold",
        &batch,
    ]) {
        assert!(
            !metrics.contains(secret),
            "{secret} in the metrics:\n{metrics}"
        );
    }
}
