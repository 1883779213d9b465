//! `itsm plugin new`: the crate it writes builds for wasm32-wasip2 with
//! plain cargo, passes its own unit tests, and runs run/verify/compensate
//! through `itsm step run` at once; a bad name or a folder in use is refused.

use std::path::Path;
use std::process::{Command, Output};

fn itsm(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run itsm")
}

fn cargo(args: &[&str], dir: &Path) -> Output {
    // Offline: the crates it needs are those the bundled plugins were built
    // with, already fetched.
    Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo")
}

fn ok(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what}: {}\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_plugin_builds_tests_and_runs_each_export_at_once() {
    let work = tempfile::tempdir().unwrap();
    let said = ok(
        &itsm(&["plugin", "new", "greet-leaver"], work.path()),
        "plugin new",
    );
    assert!(said.contains("wrote plugin greet-leaver"), "{said}");
    let dir = work.path().join("greet-leaver");
    for file in [
        "Cargo.toml",
        "plugin.toml",
        "src/lib.rs",
        "README.md",
        "wit/plugin.wit",
    ] {
        assert!(dir.join(file).is_file(), "{file} was not written");
    }

    ok(
        &cargo(&["build", "--release", "--target", "wasm32-wasip2"], &dir),
        "cargo build of the new plugin",
    );
    let tested = cargo(&["test"], &dir);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(
        tested.status.success() && report.contains("2 passed"),
        "{report}"
    );

    let input = r#"{"subject": "lee@example.com"}"#;
    let run: serde_json::Value = serde_json::from_str(&ok(
        &itsm(
            &[
                "step",
                "run",
                ".",
                "--input",
                input,
                "--config",
                "greeting=hi",
            ],
            &dir,
        ),
        "step run",
    ))
    .unwrap();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["outputs"]["said"], "hi, lee@example.com", "{run:#}");
    assert_eq!(run["log"][0]["message"], "hi, lee@example.com", "{run:#}");
    for (op, summary) in [
        ("verify", "lee@example.com was greeted"),
        ("compensate", "nothing to undo"),
    ] {
        let out: serde_json::Value = serde_json::from_str(&ok(
            &itsm(&["step", "run", ".", "--op", op, "--input", input], &dir),
            op,
        ))
        .unwrap();
        assert_eq!(out["status"], "succeeded", "{out:#}");
        assert_eq!(out["evidence"]["summary"], summary, "{out:#}");
    }

    // The folder is in use now; and a name the manifest refuses is refused.
    let again = itsm(&["plugin", "new", "greet-leaver"], work.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists and is not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let bad = itsm(&["plugin", "new", "Bad Name"], work.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("plugin name `Bad Name`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!work.path().join("Bad Name").exists(), "nothing written");
}
