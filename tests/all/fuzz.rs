//! Schemathesis, a schema-driven fuzzer, against the real `itsm serve` and
//! its own `/v1/openapi.json`: no input it generates may cause a 5xx, and
//! every answer must match the documented status codes, content types and
//! schemas.

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
        report.contains("Tested: 30"),
        "every operation was exercised: {report}"
    );
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}
