//! Schemathesis, a schema-driven fuzzer, against the real `itsm serve` and
//! its own `/v1/openapi.json`: no input it generates may cause a 5xx, and
//! every answer must match the documented status codes, content types and
//! schemas. And `openapi-spec-validator`, an independent validator of the
//! document itself: client generators refuse a document it refuses (two
//! operations with one `operationId`, say).

use crate::support::{create_token, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_holds_under_schemathesis() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &["--sandbox"]).await;
    let token = create_token(
        home.path(),
        "fuzzer",
        &["admin", "operator", "approver", "auditor"],
    );
    // Something to find: a ticket, so id-taking routes reach past 404 sometimes.
    let created = server
        .client()
        .post(format!("{}/v1/tickets", server.base))
        .json(&serde_json::json!({ "workflow": "sandbox-offboarding", "subject": "user1@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let st = which("schemathesis").unwrap_or_else(|| {
        panic!("schemathesis is not installed: run `pip install -r requirements-test.txt`")
    });
    let out = tokio::process::Command::new(st)
        // It writes a cache folder where it runs; keep that out of the tree.
        .current_dir(home.path())
        .args([
            "run",
            &format!("{}/v1/openapi.json", server.base),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--no-color",
        ])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("Tested: 33"),
        "every operation was exercised: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_passes_openapi_spec_validator_with_one_id_per_operation() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &[]).await;
    let doc: serde_json::Value = server
        .client()
        .get(format!("{}/v1/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The document is the whole API: every operation is there, each with an id.
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op.get("operationId").and_then(|id| id.as_str()))
        .collect();
    assert_eq!(ids.len(), 33, "every operation has an operationId: {ids:?}");
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "operationIds repeat: {ids:?}");

    let path = home.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let validator = which("openapi-spec-validator").unwrap_or_else(|| {
        panic!(
            "openapi-spec-validator is not installed: run `pip install -r requirements-test.txt`"
        )
    });
    let out = tokio::process::Command::new(validator)
        .args(["--validation-errors", "all"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim_end().ends_with(": OK"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}
