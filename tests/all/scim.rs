//! scim-deprovision against a SCIM 2.0 sandbox that follows RFC 7644's shapes.

use itsm_host::runtime::{FailureCause, FailureKind, Op, Outcome};
use itsm_sandbox::scim::Faults;
use serde_json::json;

use crate::support::{ScimServer, TOKEN, after_run, grants, input, scim_plugin};

fn scim_grants(server: &ScimServer) -> itsm_host::runtime::Grants {
    grants(
        &[("base_url", &server.base_url())],
        &[("scim_token", TOKEN)],
    )
}

#[tokio::test]
async fn deactivates_with_a_patch_op_and_records_before_and_after() {
    let server = ScimServer::start(Some(TOKEN)).await;
    let id = server.scim.add_user("alice@example.com", "Alice");
    server.scim.add_user("bob@example.com", "Bob");
    let plugin = scim_plugin();

    let report = plugin
        .call(Op::Run, &input("alice@example.com"), &scim_grants(&server))
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, evidence } = &report.outcome else {
        panic!("run failed: {report:?}");
    };
    assert_eq!(outputs.as_ref().unwrap()["action"], "deactivated");
    assert_eq!(outputs.as_ref().unwrap()["scim_id"], json!(id));
    assert_eq!(evidence.before.as_ref().unwrap()["active"], json!(true));
    assert_eq!(evidence.after.as_ref().unwrap()["active"], json!(false));
    assert!(evidence.target.ends_with(&format!("/scim/v2/Users/{id}")));

    // The sandbox state changed for alice only.
    assert_eq!(
        server.scim.user_by_name("alice@example.com").unwrap()["active"],
        json!(false)
    );
    assert_eq!(
        server.scim.user_by_name("bob@example.com").unwrap()["active"],
        json!(true)
    );

    // Exactly the requests RFC 7644 describes, with the host-attached token.
    let seen = server.scim.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        "/scim/v2/Users?filter=userName%20eq%20%22alice%40example.com%22"
    );
    assert_eq!(seen[1].method, "PATCH");
    assert_eq!(seen[1].uri, format!("/scim/v2/Users/{id}"));
    assert_eq!(
        seen[1].content_type.as_deref(),
        Some("application/scim+json")
    );
    assert_eq!(
        seen[1].body,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "replace", "path": "active", "value": false }]
        }))
    );
    for r in &seen {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    // The step's own request log has method, URL and status, and no token.
    assert_eq!(report.requests.len(), 2);
    assert_eq!(report.requests[1].method, "PATCH");
    assert_eq!(report.requests[1].status, Some(200));
    assert!(!serde_json::to_string(&report).unwrap().contains(TOKEN));

    // verify reads the user back.
    let verify = plugin
        .call(
            Op::Verify,
            &input("alice@example.com"),
            &scim_grants(&server),
        )
        .await
        .unwrap();
    let Outcome::Succeeded { evidence, outputs } = &verify.outcome else {
        panic!("verify failed: {verify:?}");
    };
    assert!(outputs.is_none());
    assert!(
        evidence.summary.contains("active=false"),
        "{}",
        evidence.summary
    );
    assert_eq!(evidence.after.as_ref().unwrap()["active"], json!(false));
    assert_eq!(
        verify.requests.last().unwrap().url,
        format!("{}/Users/{id}", server.base_url())
    );
}

#[tokio::test]
async fn running_twice_is_idempotent_and_says_already_inactive() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("carol@example.com", "Carol");
    let plugin = scim_plugin();
    let g = scim_grants(&server);
    plugin
        .call(Op::Run, &input("carol@example.com"), &g)
        .await
        .unwrap();
    let again = plugin
        .call(Op::Run, &input("carol@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, evidence } = &again.outcome else {
        panic!("{again:?}")
    };
    assert_eq!(outputs.as_ref().unwrap()["action"], "already_inactive");
    assert!(evidence.summary.contains("already inactive"));
    // The second run only looked: no second PATCH.
    let patches = server
        .scim
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1);
}

#[tokio::test]
async fn a_user_already_gone_is_success_with_evidence_saying_so() {
    let server = ScimServer::start(Some(TOKEN)).await;
    let plugin = scim_plugin();
    let g = scim_grants(&server);
    let report = plugin
        .call(Op::Run, &input("ghost@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, evidence } = &report.outcome else {
        panic!("{report:?}")
    };
    assert_eq!(outputs.as_ref().unwrap()["found"], json!(false));
    assert!(
        evidence.summary.contains("already gone"),
        "{}",
        evidence.summary
    );
    let verify = plugin
        .call(Op::Verify, &input("ghost@example.com"), &g)
        .await
        .unwrap();
    assert!(verify.failure().is_none(), "{verify:?}");
}

#[tokio::test]
async fn delete_mode_deletes_and_verify_proves_it_gone() {
    let server = ScimServer::start(Some(TOKEN)).await;
    let id = server.scim.add_user("dave@example.com", "Dave");
    let plugin = scim_plugin();
    let g = grants(
        &[("base_url", &server.base_url()), ("mode", "delete")],
        &[("scim_token", TOKEN)],
    );
    let report = plugin
        .call(Op::Run, &input("dave@example.com"), &g)
        .await
        .unwrap();
    assert!(report.failure().is_none(), "{report:?}");
    let done = after_run(&input("dave@example.com"), &report);
    assert!(server.scim.user_by_name("dave@example.com").is_none());
    let delete = server
        .scim
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(delete.uri, format!("/scim/v2/Users/{id}"));
    assert_eq!(delete.status, 204);
    let verify = plugin
        .call(Op::Verify, &input("dave@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { evidence, .. } = &verify.outcome else {
        panic!("{verify:?}")
    };
    assert_eq!(evidence.after, Some(json!({ "present": false })));
    // A delete cannot be compensated.
    let comp = plugin.call(Op::Compensate, &done, &g).await.unwrap();
    assert_eq!(comp.failure().unwrap().kind, FailureKind::Fatal);
}

#[tokio::test]
async fn compensate_reactivates_and_verify_then_fails() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("erin@example.com", "Erin");
    let plugin = scim_plugin();
    let g = scim_grants(&server);
    let run = plugin
        .call(Op::Run, &input("erin@example.com"), &g)
        .await
        .unwrap();
    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("erin@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    assert!(comp.failure().is_none(), "{comp:?}");
    let Outcome::Succeeded { evidence, .. } = &comp.outcome else {
        unreachable!()
    };
    assert!(evidence.summary.contains("re-activated"), "{evidence:?}");
    assert_eq!(evidence.before.as_ref().unwrap()["active"], json!(false));
    assert_eq!(evidence.after.as_ref().unwrap()["active"], json!(true));
    assert_eq!(
        server.scim.user_by_name("erin@example.com").unwrap()["active"],
        json!(true)
    );
    let verify = plugin
        .call(Op::Verify, &input("erin@example.com"), &g)
        .await
        .unwrap();
    let failure = verify.failure().expect("an active user must fail verify");
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert!(
        failure.message.contains("still active"),
        "{}",
        failure.message
    );
}

/// Compensate's evidence summary, failing the test if it did not succeed.
fn undone(report: &itsm_host::runtime::CallReport) -> String {
    match &report.outcome {
        Outcome::Succeeded { evidence, .. } => evidence.summary.clone(),
        Outcome::Failed { error } => panic!("compensate failed: {error:?}"),
    }
}

#[tokio::test]
async fn compensate_undoes_only_what_its_own_run_did() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("ina@example.com", "Ina");
    server.scim.set_active("ina@example.com", false);
    server.scim.add_user("bystander@example.com", "By Stander");
    let plugin = scim_plugin();
    let g = scim_grants(&server);

    // Already inactive before the ticket: the run changed nothing, and the
    // rollback must not re-activate her.
    let run = plugin
        .call(Op::Run, &input("ina@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, .. } = &run.outcome else {
        panic!("{run:?}")
    };
    assert_eq!(outputs.as_ref().unwrap()["action"], "already_inactive");
    let before = server.scim.requests().len();
    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("ina@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    let summary = undone(&comp);
    assert!(summary.starts_with("nothing to undo"), "{summary}");
    assert!(summary.contains("already inactive"), "{summary}");
    assert_eq!(
        server.scim.user_by_name("ina@example.com").unwrap()["active"],
        json!(false)
    );
    assert_eq!(server.scim.requests().len(), before, "not even a read");

    // Missing: the run found nobody; compensate succeeds and creates nothing.
    let run = plugin
        .call(Op::Run, &input("ghost@example.com"), &g)
        .await
        .unwrap();
    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("ghost@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    let summary = undone(&comp);
    assert!(summary.starts_with("nothing to undo"), "{summary}");
    assert!(summary.contains("found no SCIM user"), "{summary}");
    assert_eq!(server.scim.users().len(), 2);

    // No record of a run at all (compensate called with no run outputs):
    // nothing is changed on a guess.
    let comp = plugin
        .call(Op::Compensate, &input("bystander@example.com"), &g)
        .await
        .unwrap();
    assert!(undone(&comp).starts_with("nothing to undo"));
    assert_eq!(
        server.scim.user_by_name("bystander@example.com").unwrap()["active"],
        json!(true)
    );
    assert!(
        server.scim.requests().iter().all(|r| r.method == "GET"),
        "no writes: {:?}",
        server.scim.requests()
    );

    // Deactivated by the run, then re-activated by someone else: nothing
    // left to undo, and no PATCH.
    server.scim.add_user("back@example.com", "Back");
    let run = plugin
        .call(Op::Run, &input("back@example.com"), &g)
        .await
        .unwrap();
    server.scim.set_active("back@example.com", true);
    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("back@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    let summary = undone(&comp);
    assert!(summary.contains("already active again"), "{summary}");
    assert_eq!(
        comp.requests.iter().filter(|r| r.method == "PATCH").count(),
        0
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable_with_retry_after() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("frank@example.com", "Frank");
    let plugin = scim_plugin();
    let g = scim_grants(&server);
    server.scim.set_faults(Faults {
        next: [429, 503].into(),
        retry_after_secs: 7,
        ..Faults::default()
    });
    for status in [429, 503] {
        let report = plugin
            .call(Op::Run, &input("frank@example.com"), &g)
            .await
            .unwrap();
        let f = report
            .failure()
            .unwrap_or_else(|| panic!("{status} must fail: {report:?}"));
        assert_eq!(f.kind, FailureKind::Retryable, "{status}");
        assert_eq!(f.cause, FailureCause::Plugin);
        assert_eq!(f.retry_after_ms, Some(7000), "{status}");
        assert!(f.message.contains(&status.to_string()), "{}", f.message);
    }
    // Faults exhausted: the retry succeeds.
    let report = plugin
        .call(Op::Run, &input("frank@example.com"), &g)
        .await
        .unwrap();
    assert!(report.failure().is_none(), "{report:?}");
}

#[tokio::test]
async fn a_wrong_token_is_fatal_and_the_token_never_shows() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("gina@example.com", "Gina");
    let plugin = scim_plugin();
    let wrong = "wrong-token-7d1e";
    let g = grants(
        &[("base_url", &server.base_url())],
        &[("scim_token", wrong)],
    );
    let report = plugin
        .call(Op::Run, &input("gina@example.com"), &g)
        .await
        .unwrap();
    let f = report.failure().expect("401 must fail");
    assert_eq!(f.kind, FailureKind::Fatal);
    assert!(f.message.contains("401"), "{}", f.message);
    assert!(!serde_json::to_string(&report).unwrap().contains(wrong));
}

#[tokio::test]
async fn missing_config_or_secret_is_a_setup_error_naming_it() {
    let plugin = scim_plugin();
    let err = plugin
        .call(Op::Run, &input("x@example.com"), &grants(&[], &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("base_url"), "{err}");
    let err = plugin
        .call(
            Op::Run,
            &input("x@example.com"),
            &grants(&[("base_url", "http://127.0.0.1:1/scim/v2")], &[]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("scim_token"), "{err}");
}

/// A PATCH sent as strict servers refuse it: chunked, with no Content-Length.
async fn chunked_patch(server: &ScimServer, id: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#;
    let request = format!(
        "PATCH /scim/v2/Users/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        server.addr,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn a_chunked_request_body_is_refused_with_411_unless_the_double_is_told_to_accept_it() {
    let server = ScimServer::start(Some(TOKEN)).await;
    let id = server.scim.add_user("hank@example.com", "Hank");
    let answer = chunked_patch(&server, &id).await;
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert!(
        answer.contains("Content-Length"),
        "the detail says why: {answer}"
    );
    assert_eq!(
        server.scim.user_by_name("hank@example.com").unwrap()["active"],
        json!(true)
    );
    // A lenient server reads it; the double can be told to be one.
    server.scim.set_faults(Faults {
        accept_chunked: true,
        ..Faults::default()
    });
    let answer = chunked_patch(&server, &id).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        server.scim.user_by_name("hank@example.com").unwrap()["active"],
        json!(false)
    );
}

/// The RFC 7643/7644 checks of scim2-tester (python-scim, PyPI) that
/// `itsm sandbox scim` passes; the count may rise, never fall.
const CHECKER_PASSES: u64 = 72;

#[tokio::test]
async fn the_scim_double_passes_the_rfc_7644_checker() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args([
            "sandbox", "scim", "--port", "0", "--users", "3", "--token", TOKEN,
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next_line()
        .await
        .unwrap()
        .expect("the sandbox prints its URL");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    let script = crate::support::root().join("tests/scim/check.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args([&url, TOKEN, "--verbose"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the checker did not run (pip install -r requirements-test.txt): {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(
        summary["passed"].as_u64().unwrap() >= CHECKER_PASSES,
        "{summary}\n{stderr}"
    );
    assert_eq!(summary["failed"], 0, "{summary}\n{stderr}");
}
