//! The contract alone is enough: plugins built without the SDK run too.

use itsm_host::runtime::{FailureKind, Op, Outcome};
use serde_json::json;

use crate::step_cli::itsm;
use crate::support::{grants, input, load, plugin_dir};

#[tokio::test]
async fn a_plugin_built_with_plain_wit_bindgen_runs_with_kv_and_log() {
    let plugin = load(
        "itsm-plugin-test-bare-wit",
        include_str!("../../plugins/testing/bare-wit/plugin.toml"),
    );
    let mut step = input("alice@example.com");
    step.idempotency_key = "T-9/greet".into();
    for expected_runs in [1, 2] {
        let report = plugin
            .call(Op::Run, &step, &grants(&[("greeting", "hi")], &[]))
            .await
            .unwrap();
        let Outcome::Succeeded { outputs, evidence } = &report.outcome else {
            panic!("{report:?}")
        };
        assert_eq!(
            outputs.as_ref().unwrap(),
            &json!({ "greeting": "hi", "subject": "alice@example.com", "attempt": 1, "runs": expected_runs })
        );
        assert_eq!(evidence.target, "ticket:T-1");
        assert_eq!(report.log[0].message, "hi, alice@example.com");
        assert_eq!(report.log[0].level, "info");
    }
    let comp = plugin
        .call(Op::Compensate, &step, &grants(&[], &[]))
        .await
        .unwrap();
    let f = comp.failure().unwrap();
    assert_eq!(
        (f.kind, f.retry_after_ms),
        (FailureKind::Retryable, Some(1500))
    );
}

#[tokio::test]
async fn step_run_takes_the_bare_plugin_crate() {
    let crate_dir = plugin_dir("testing/bare-wit");
    let run = itsm(
        &[
            "step",
            "run",
            crate_dir.to_str().unwrap(),
            "--input",
            r#"{"subject":"bob@example.com","ticket_id":"T-7"}"#,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["outputs"]["greeting"], "hello");
    assert_eq!(report["evidence"]["target"], "ticket:T-7");
}
