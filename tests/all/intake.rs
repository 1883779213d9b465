//! What comes in is bounded and deduplicated: oversized bodies, rows,
//! columns, cells and inputs are refused naming the limit, and one person
//! gets one open ticket per workflow, through the real `itsm serve`.

use serde_json::{Value, json};

use crate::support::start_server;

#[tokio::test]
async fn oversized_input_is_refused_naming_the_limit_and_good_rows_still_land() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(
        home.path(),
        &[
            "--sandbox",
            "--max-cell-bytes",
            "1000",
            "--max-columns",
            "8",
            "--max-import-bytes",
            "200000",
            "--max-inputs-bytes",
            "4096",
        ],
    )
    .await;
    let (base, http) = (server.base.clone(), server.client());
    let import = |body: String| {
        http.post(format!(
            "{base}/v1/imports?workflow=sandbox-approved-offboarding"
        ))
        .header("content-type", "text/csv")
        .body(body)
        .send()
    };
    let csv = format!(
        "subject,note\nuser1@example.com,fine\nuser2@example.com,{}\nuser3@example.com,also fine\n",
        "n".repeat(5000)
    );
    let report: Value = import(csv).await.unwrap().json().await.unwrap();
    assert_eq!(report["created"], 2, "{report:#}");
    assert_eq!(report["errors"][0]["row"], 2, "{report:#}");
    assert_eq!(
        report["errors"][0]["error"],
        "column `note` is 5000 bytes; the limit is 1000 (itsm serve --max-cell-bytes)"
    );
    // A header past the column limit refuses the file.
    let wide = format!(
        "subject,{}\n",
        (0..20)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = import(wide).await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("--max-columns"));
    // A body past the import limit is refused whole, naming it.
    let r = import(format!("subject\n{}", "x@example.com\n".repeat(20_000)))
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("--max-import-bytes"));
    // One ticket's inputs past the limit: 413 naming it, nothing created.
    let r = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({
            "workflow": "sandbox-approved-offboarding",
            "subject": "user9@example.com",
            "inputs": { "blob": "b".repeat(10_000) }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("the limit is 4096 (itsm serve --max-inputs-bytes)"),
        "{text}"
    );
    let all: Value = http
        .get(format!("{base}/v1/tickets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["total"], 2, "{all:#}");
}

#[tokio::test]
async fn one_person_gets_one_open_ticket_per_workflow() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &["--sandbox"]).await;
    let (base, http) = (server.base.clone(), server.client());
    let csv =
        "subject\nuser5@example.com\nuser6@example.com\nUser5@Example.com \nuser5@example.com\n";
    let report: Value = http
        .post(format!(
            "{base}/v1/imports?workflow=sandbox-approved-offboarding"
        ))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["created"], 2, "{report:#}");
    for (i, row) in [3, 4].iter().enumerate() {
        assert_eq!(report["errors"][i]["row"], *row, "{report:#}");
        assert!(
            report["errors"][i]["error"]
                .as_str()
                .unwrap()
                .starts_with("same subject as row 1"),
            "{report:#}"
        );
    }
    // The ticket waits for approval: it is open, so a second one is refused...
    let create = |allow: bool| {
        http.post(format!("{base}/v1/tickets"))
            .json(&json!({
                "workflow": "sandbox-approved-offboarding",
                "subject": "USER5@example.com",
                "allow_duplicate": allow
            }))
            .send()
    };
    let r = create(false).await.unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    let first = report["tickets"][0].as_str().unwrap();
    assert!(text.contains(first), "{text} names {first}");
    // ...unless asked for on purpose.
    let r = create(true).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Another workflow for the same person is a different matter.
    let r = http
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "sandbox-offboarding", "subject": "user5@example.com" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}
