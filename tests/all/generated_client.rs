//! A client generated from the served `/v1/openapi.json` with a standard
//! generator (openapi-python-client, from PyPI) works: the test starts the
//! real `itsm serve --sandbox`, generates the client into a temp dir, and
//! runs `generated_client/use_client.py`, which creates, lists and shows
//! tickets through the generated typed models (and reads a 409 and a 404 as
//! the typed error body).

use crate::support::{create_token, start_server};

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_generated_from_the_openapi_document_creates_lists_and_shows_tickets() {
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), &["--sandbox"]).await;
    // The client creates tickets and exports their trail: an operator and
    // an auditor in one (an operator alone may not export).
    let token = create_token(home.path(), "generated-client", &["operator", "auditor"]);
    let doc = server
        .client()
        .get(format!("{}/v1/openapi.json", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let spec = out_dir.path().join("openapi.json");
    std::fs::write(&spec, doc).unwrap();

    let generator = which("openapi-python-client").unwrap_or_else(|| {
        panic!("openapi-python-client is not installed: run `pip install -r requirements-test.txt`")
    });
    let generated = tokio::process::Command::new(generator)
        .current_dir(out_dir.path())
        .args(["generate", "--meta", "none", "--path"])
        .arg(&spec)
        .arg("--output-path")
        .arg(out_dir.path().join("itsm_client"))
        .output()
        .await
        .unwrap();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(generated.status.success(), "{log}");
    // The generator drops what it cannot type; the ticket routes must all be there.
    // ... and the workflow upload, which it can send as bytes.
    for route in [
        "tickets/create.py",
        "tickets/list_.py",
        "tickets/show.py",
        "workflows/put_workflow.py",
    ] {
        assert!(
            out_dir.path().join("itsm_client/api").join(route).is_file(),
            "{route} was not generated: {log}"
        );
    }
    assert!(
        !log.contains("Unable to process schema"),
        "every schema becomes a model: {log}"
    );

    // The upload takes bytes as documented: not UTF-8 is a 400 ErrorBody,
    // bytes that are not a workflow a 422, neither a 415.
    let admin = crate::support::client_as(&create_token(home.path(), "admin-1", &["admin"]));
    for (body, status) in [
        (vec![0xff, 0xfe, 0x00], 400),
        (b"not = [toml".to_vec(), 422),
    ] {
        let resp = admin
            .put(format!("{}/v1/workflows/octet", server.base))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(err["error"].is_string(), "{err}");
    }

    let script = crate::support::root().join("tests/all/generated_client/use_client.py");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&server.base)
        .arg(&token)
        .env("PYTHONPATH", out_dir.path())
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && report.contains("all checks passed"),
        "{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
