//! A plugin built by another language's component toolchain (Python, with
//! componentize-py) against `wit/plugin.wit` alone runs under `itsm step run`.

use std::process::Command;

use serde_json::Value;

use crate::support::root;

#[test]
fn a_python_plugin_built_with_componentize_py_runs_under_step_run() {
    let out = tempfile::tempdir().unwrap();
    let script = root().join("plugins/other-lang/python-greeter/build.sh");
    let build = Command::new("bash")
        .arg(&script)
        .arg(out.path())
        .output()
        .expect("run build.sh");
    assert!(
        build.status.success(),
        "building the Python plugin failed (CI installs componentize-py from requirements.txt):\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // One home for both calls: the second loads the compiled code from the cache.
    let home = tempfile::tempdir().unwrap();
    let itsm = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_itsm"))
            .arg("step")
            .arg("run")
            .arg(out.path())
            .args(args)
            .env("ITSM_HOME", home.path())
            .output()
            .expect("run itsm")
    };
    let run = itsm(&[
        "--input",
        r#"{"subject":"alice@example.com","ticket_id":"T-3"}"#,
    ]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["plugin"], "python-greeter");
    assert_eq!(report["outputs"]["language"], "python");
    assert_eq!(report["outputs"]["subject"], "alice@example.com");
    assert_eq!(report["evidence"]["target"], "ticket:T-3");
    assert_eq!(report["evidence"]["after"]["greeted"], true);
    assert_eq!(
        report["log"][0]["message"],
        "hello from python, alice@example.com"
    );

    let comp = itsm(&[
        "--op",
        "compensate",
        "--input",
        r#"{"subject":"alice@example.com"}"#,
    ]);
    assert_eq!(comp.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&comp.stderr);
    assert!(
        stderr.contains("fatal: python greeter cannot compensate"),
        "{stderr}"
    );
}
