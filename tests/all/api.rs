//! `itsm serve --sandbox` as a new user meets it: post a ticket over HTTP and
//! watch it complete; bad requests get 4xx naming the problem.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{client_as, create_token, get_json, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_posted_over_http_completes_against_the_sandbox_with_a_verified_trail() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &["--sandbox"]).await;
    let base = server.base.clone();
    let http = client_as(&create_token(home.path(), "hr-system", &["operator"]));
    let hr_import = client_as(&create_token(home.path(), "hr-import", &["operator"]));

    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let created = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "sandbox-offboarding", "subject": "user7@example.com", "inputs": { "last_day": "2026-11-30" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let started = Instant::now();
    let detail = loop {
        let d = get_json(&http, &format!("{base}/v1/tickets/{id}")).await;
        if d["ticket"]["state"] == "succeeded" {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{d:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(detail["trail_verified"], true);
    let step = &detail["ticket"]["steps"]["deprovision-scim"];
    assert_eq!(step["verification"]["after"]["active"], false);
    assert_eq!(step["attempts"][0]["requests"][1]["method"], "PATCH");
    let kinds: Vec<&str> = detail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_verified",
            "ticket_succeeded"
        ]
    );
    assert_eq!(detail["trail"][0]["principal"], "hr-system");

    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("itsm_short_work_ready ")),
        "{metrics}"
    );
    for line in [
        "itsm_step_calls_total{plugin=\"scim-deprovision\",op=\"run\",outcome=\"succeeded\"} 1",
        "itsm_step_calls_total{plugin=\"scim-deprovision\",op=\"verify\",outcome=\"succeeded\"} 1",
        "itsm_step_duration_seconds_count{plugin=\"scim-deprovision\"} 2",
        "itsm_tickets_created_total 1",
        "itsm_retries_total 0",
        "itsm_calls_queued 0",
        // No plugin spins in this server.
        "itsm_calls_long 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    let listed: Value = http
        .get(format!("{base}/v1/tickets?state=succeeded"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tickets"].as_array().unwrap().len(), 1);
    let none: Value = http
        .get(format!("{base}/v1/tickets?state=failed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none["tickets"].as_array().unwrap().is_empty());

    // Bad input: 4xx with a message naming the problem, and nothing created.
    let cases = [
        (
            http.post(format!("{base}/v1/tickets"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "Failed to parse the request body as JSON",
        ),
        (
            http.post(format!("{base}/v1/tickets"))
                .json(&json!({ "workflow": "sandbox-offboarding", "subjekt": "x" })),
            422,
            "unknown field `subjekt`",
        ),
        (
            http.post(format!("{base}/v1/tickets"))
                .json(&json!({ "workflow": "nope", "subject": "x" })),
            404,
            "no workflow named `nope`",
        ),
        (
            http.post(format!("{base}/v1/tickets")).body("workflow=x"),
            415,
            "Content-Type",
        ),
        (
            http.get(format!("{base}/v1/tickets/T-missing")),
            404,
            "no ticket T-missing",
        ),
        (
            http.get(format!("{base}/v1/tickets?state=sleeping")),
            400,
            "state",
        ),
        (
            http.post(format!("{base}/v1/tickets/{id}/approve")),
            409,
            "nothing to decide",
        ),
        (
            http.post(format!("{base}/v1/tickets/{id}/cancel")),
            409,
            "already",
        ),
    ];
    for (req, status, text) in cases {
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(code, status, "{body}");
        assert!(body.contains(text), "expected {text:?} in {body}");
    }
    // Bulk import: one ticket per valid row, bad rows reported by number.
    let csv = "subject,last_day\nuser1@example.com,2026-12-01\nuser2@example.com\nuser3@example.com,2026-12-02\n,2026-12-03\nuser4@example.com,2026-12-04\n";
    let import = |body: &'static str| {
        hr_import
            .post(format!("{base}/v1/imports?workflow=sandbox-offboarding"))
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let first: Value = import(csv).await.unwrap().json().await.unwrap();
    assert_eq!(first["created"], 3, "{first:#}");
    let errors = first["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{first:#}");
    assert_eq!(errors[0]["row"], 2);
    assert!(
        errors[0]["error"].as_str().unwrap().contains("fields"),
        "{first:#}"
    );
    assert_eq!(errors[1]["row"], 4);
    assert!(
        errors[1]["error"].as_str().unwrap().contains("subject"),
        "{first:#}"
    );
    let batch = first["batch"].as_str().unwrap().to_string();
    let again: Value = import(csv).await.unwrap().json().await.unwrap();
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(3)),
        "{again:#}"
    );
    assert_eq!(again["tickets"], first["tickets"]);
    let in_batch = get_json(&http, &format!("{base}/v1/tickets?batch={batch}")).await;
    assert_eq!(in_batch["tickets"].as_array().unwrap().len(), 3);
    let imported = get_json(
        &http,
        &format!(
            "{base}/v1/tickets/{}",
            first["tickets"][0].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(imported["ticket"]["inputs"]["last_day"], "2026-12-01");
    assert_eq!(imported["ticket"]["requested_by"], "hr-import");
    let bad = http
        .post(format!("{base}/v1/imports?workflow=sandbox-offboarding"))
        .header("content-type", "text/csv")
        .body("email\nx@example.com\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("no `subject` column"));

    let all: Value = http
        .get(format!("{base}/v1/tickets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["tickets"].as_array().unwrap().len(),
        4,
        "one posted, three imported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_cancel_stops_every_open_ticket_of_an_import_and_lists_filter_by_date() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/hold.toml"),
        "name = \"hold\"\n[[steps]]\nname = \"wipe\"\nplugin = \"scim-deprovision\"\nconfig = { base_url = \"http://127.0.0.1:9/scim/v2\" }\napproval = { role = \"security\" }\n",
    )
    .unwrap();
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let http = server.client();
    let ops_lead = client_as(&create_token(home.path(), "ops-lead", &["operator"]));
    let report: Value = http
        .post(format!("{base}/v1/imports?workflow=hold"))
        .header("content-type", "application/x-ndjson")
        .body("{\"subject\":\"a@example.com\"}\n{\"subject\":\"b@example.com\",\"inputs\":{\"site\":\"berlin\"}}\n{\"name\":\"c\"}\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["created"], 2, "{report:#}");
    assert_eq!(report["errors"][0]["row"], 3);
    let batch = report["batch"].as_str().unwrap().to_string();
    // The same file sent as bytes is read as JSON lines (it starts with `{`):
    // the same batch, nothing new.
    let again: Value = http
        .post(format!("{base}/v1/imports?workflow=hold"))
        .header("content-type", "application/octet-stream")
        .body("{\"subject\":\"a@example.com\"}\n{\"subject\":\"b@example.com\",\"inputs\":{\"site\":\"berlin\"}}\n{\"name\":\"c\"}\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["batch"], batch.as_str(), "{again:#}");
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(2)),
        "{again:#}"
    );
    assert_eq!(again["errors"][0]["row"], 3, "{again:#}");
    let started = Instant::now();
    while get_json(&http, &format!("{base}/v1/tickets?state=waiting_approval")).await["tickets"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retried: Value = http
        .post(format!("{base}/v1/batches/{batch}/retry"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        retried["applied"].as_array().unwrap().is_empty(),
        "only failed tickets are retried: {retried:#}"
    );
    let cancelled: Value = ops_lead
        .post(format!("{base}/v1/batches/{batch}/cancel"))
        .json(&json!({ "reason": "layoff reversed" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cancelled["applied"].as_array().unwrap().len(),
        2,
        "{cancelled:#}"
    );
    let listed = get_json(
        &http,
        &format!("{base}/v1/tickets?batch={batch}&state=cancelled"),
    )
    .await;
    assert_eq!(listed["tickets"].as_array().unwrap().len(), 2);
    let id = listed["tickets"][0]["id"].as_str().unwrap();
    let trail = get_json(&http, &format!("{base}/v1/tickets/{id}")).await["trail"].clone();
    let cancel = trail
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "cancelled")
        .unwrap()
        .clone();
    assert_eq!(
        (
            cancel["principal"].as_str(),
            cancel["data"]["reason"].as_str()
        ),
        (Some("ops-lead"), Some("layoff reversed"))
    );

    let future = get_json(
        &http,
        &format!("{base}/v1/tickets?created_after=2100-01-01T00:00:00Z"),
    )
    .await;
    assert!(future["tickets"].as_array().unwrap().is_empty());
    let past = get_json(&http, &format!("{base}/v1/tickets?created_after=2000-01-01T00:00:00Z&created_before=2100-01-01T00:00:00Z")).await;
    assert_eq!(past["tickets"].as_array().unwrap().len(), 2);
    // Paging: newest first, one at a time, with the total matched.
    let newest = get_json(
        &http,
        &format!("{base}/v1/tickets?batch={batch}&order=newest&limit=1"),
    )
    .await;
    let oldest = get_json(&http, &format!("{base}/v1/tickets?batch={batch}&limit=1")).await;
    let second = get_json(
        &http,
        &format!("{base}/v1/tickets?batch={batch}&limit=1&offset=1"),
    )
    .await;
    assert_eq!(
        (
            newest["total"].as_u64(),
            newest["tickets"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    assert_ne!(newest["tickets"][0]["id"], oldest["tickets"][0]["id"]);
    assert_eq!(newest["tickets"][0]["id"], second["tickets"][0]["id"]);
    // Keyset paging: `next` is the cursor; the last page has none.
    let next = oldest["next"].as_str().expect("a next cursor");
    let after = get_json(
        &http,
        &format!("{base}/v1/tickets?batch={batch}&limit=1&after={next}"),
    )
    .await;
    assert_eq!(after["tickets"][0]["id"], second["tickets"][0]["id"]);
    assert!(after["next"].is_null(), "{after:#}");
    assert_eq!(after["total"].as_u64(), Some(2));
    let bad = http
        .get(format!("{base}/v1/tickets?created_after=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("created_after"));
    let none = http
        .post(format!("{base}/v1/batches/B-nope/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
}
