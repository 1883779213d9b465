//! `itsm step run`, the real binary: output, exit codes, errors.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{ScimServer, TOKEN, plugin_dir, wasm};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Run `itsm ARGS` with a private data dir and extra env.
pub async fn itsm(args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(args)
        .env("ITSM_HOME", home.path())
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run itsm");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn dir(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn runs_a_plugin_crate_and_prints_the_report_as_json() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("alice@example.com", "Alice");
    let base = format!("base_url={}", server.base_url());
    let crate_dir = plugin_dir("scim-deprovision");
    let run = itsm(
        &[
            "step",
            "run",
            dir(&crate_dir),
            "--input",
            r#"{"subject":"alice@example.com"}"#,
            "--config",
            &base,
            "--secret",
            "scim_token",
        ],
        &[("ITSM_SECRET_SCIM_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["plugin"], "scim-deprovision");
    assert_eq!(report["outputs"]["action"], "deactivated");
    assert_eq!(report["requests"].as_array().unwrap().len(), 2);
    assert_eq!(report["requests"][1]["method"], "PATCH");
    assert!(
        report["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("deactivated"))
    );
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));

    let verify = itsm(
        &[
            "step",
            "run",
            dir(&crate_dir),
            "--op",
            "verify",
            "--input",
            r#"{"subject":"alice@example.com"}"#,
            "--config",
            &base,
            "--secret",
            &format!("scim_token={TOKEN}"),
        ],
        &[],
    )
    .await;
    assert_eq!(verify.code, 0, "stderr: {}", verify.stderr);
    assert_eq!(verify.json()["evidence"]["after"]["active"], json!(false));
}

#[tokio::test]
async fn a_step_error_exits_1_and_says_retryable_or_fatal() {
    let server = ScimServer::start(Some(TOKEN)).await;
    server.scim.add_user("bob@example.com", "Bob");
    server.scim.set_faults(itsm_sandbox::scim::Faults {
        next: [429].into(),
        retry_after_secs: 2,
        ..Default::default()
    });
    let base = format!("base_url={}", server.base_url());
    let crate_dir = plugin_dir("scim-deprovision");
    let args = [
        "step",
        "run",
        dir(&crate_dir),
        "--input",
        r#"{"subject":"bob@example.com"}"#,
        "--config",
        &base,
    ];
    let secret = format!("scim_token={TOKEN}");
    let run = itsm(&[&args[..], &["--secret", &secret]].concat(), &[]).await;
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("step failed (retryable:"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["error"]["retry_after_ms"], 2000);

    let run = itsm(
        &[&args[..], &["--secret", "scim_token=nope-wrong-token"]].concat(),
        &[],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("step failed (fatal:") && run.stderr.contains("401"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bad_usage_and_bad_input_exit_2_naming_the_problem() {
    let scim = plugin_dir("scim-deprovision");
    let cases: [(&[&str], &str); 6] = [
        (
            &["step", "run", dir(&scim), "--input", "{not json"],
            "--input is not a valid step input",
        ),
        (
            &["step", "run", dir(&scim), "--input", r#"{"subjekt":"x"}"#],
            "unknown field `subjekt`",
        ),
        (
            &["step", "run", dir(&scim), "--op", "destroy"],
            "unknown op `destroy`",
        ),
        (
            &["step", "run", dir(&scim), "--config", "nokey"],
            "expected KEY=VALUE",
        ),
        (
            &["step", "run", dir(&scim), "--config", "colour=blue"],
            "unknown key `colour`",
        ),
        (
            &["step", "run", "/nonexistent/plugin"],
            "has no plugin.toml",
        ),
    ];
    for (args, want) in cases {
        let run = itsm(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(want),
            "{args:?}: expected {want:?} in {}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn a_bad_manifest_or_a_bad_wasm_exits_2_naming_the_field_or_file() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("plugin.wasm"),
        wasm("itsm-plugin-test-noop"),
    )
    .unwrap();
    let manifest = include_str!("../../plugins/testing/noop/plugin.toml");
    std::fs::write(
        folder.path().join("plugin.toml"),
        format!("{manifest}\n[limits]\nmemory_mb = 99999\n"),
    )
    .unwrap();
    let run = itsm(&["step", "run", dir(folder.path())], &[]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("limits.memory_mb"), "{}", run.stderr);

    std::fs::write(
        folder.path().join("plugin.toml"),
        format!("{manifest}\nnetwork = \"all\"\n"),
    )
    .unwrap();
    let run = itsm(&["step", "run", dir(folder.path())], &[]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unknown field `network`"),
        "{}",
        run.stderr
    );

    std::fs::write(folder.path().join("plugin.toml"), manifest).unwrap();
    let ok = itsm(&["step", "run", dir(folder.path())], &[]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    std::fs::write(folder.path().join("plugin.wasm"), b"MZ\x90\x00 not wasm").unwrap();
    let run = itsm(&["step", "run", dir(folder.path())], &[]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not WebAssembly"), "{}", run.stderr);

    // A component that does not implement the contract.
    let core_module = b"\0asm\x01\0\0\0";
    std::fs::write(folder.path().join("plugin.wasm"), core_module).unwrap();
    let run = itsm(&["step", "run", dir(folder.path())], &[]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("core module"), "{}", run.stderr);
}
