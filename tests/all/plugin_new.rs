//! `itsm plugin new --lang rust|python|js`: what it writes builds with that
//! language's own toolchain (cargo + wit-bindgen, componentize-py, jco +
//! componentize-js), passes its own unit tests, and runs run/verify/compensate
//! through `itsm step run` at once; a bad name or a folder in use is refused.

use std::path::Path;
use std::process::{Command, Output};

/// `itsm ARGS` in `dir`, with a home of its own (the compiled-code cache).
fn itsm(args: &[&str], dir: &Path, home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(args)
        .current_dir(dir)
        .env("ITSM_HOME", home)
        .output()
        .expect("run itsm")
}

fn tool(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e} (.ci/run installs it)"))
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

/// Everything a command said, stdout then stderr.
fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `itsm plugin new NAME --lang LANG` in a fresh folder: the plugin's folder
/// (under the returned temporary directory), with the files each template has.
fn new_plugin(lang: &str, files: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let out = ok(
        &itsm(
            &["plugin", "new", "greet-leaver", "--lang", lang],
            work.path(),
            &home,
        ),
        "plugin new",
    );
    assert!(out.contains("wrote plugin greet-leaver"), "{out}");
    let dir = work.path().join("greet-leaver");
    for file in files
        .iter()
        .chain(&["plugin.toml", "README.md", "wit/plugin.wit"])
    {
        assert!(dir.join(file).is_file(), "{lang}: {file} was not written");
    }
    (work, dir)
}

/// The built plugin in `dir` runs each export through `itsm step run`.
fn runs_each_export(dir: &Path, home: &Path) {
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
            dir,
            home,
        ),
        "step run",
    ))
    .unwrap();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["plugin"], "greet-leaver", "{run:#}");
    assert_eq!(run["outputs"]["said"], "hi, lee@example.com", "{run:#}");
    assert_eq!(run["log"][0]["message"], "hi, lee@example.com", "{run:#}");
    assert_eq!(run["log"][0]["level"], "info", "{run:#}");
    for (op, summary) in [
        ("verify", "lee@example.com was greeted"),
        ("compensate", "nothing to undo"),
    ] {
        let out: serde_json::Value = serde_json::from_str(&ok(
            &itsm(
                &["step", "run", ".", "--op", op, "--input", input],
                dir,
                home,
            ),
            op,
        ))
        .unwrap();
        assert_eq!(out["status"], "succeeded", "{out:#}");
        assert_eq!(out["evidence"]["summary"], summary, "{out:#}");
        assert_eq!(out["evidence"]["target"], "subject:lee@example.com");
    }
}

#[test]
fn a_new_rust_plugin_builds_tests_and_runs_each_export_at_once() {
    let (work, dir) = new_plugin("rust", &["Cargo.toml", "src/lib.rs"]);
    let cargo = env!("CARGO");
    // Offline: the crates it needs are those the bundled plugins were built
    // with, already fetched.
    ok(
        &tool(
            cargo,
            &[
                "build",
                "--offline",
                "--release",
                "--target",
                "wasm32-wasip2",
            ],
            &dir,
        ),
        "cargo build of the new plugin",
    );
    let tested = tool(cargo, &["test", "--offline"], &dir);
    assert!(
        tested.status.success() && said(&tested).contains("2 passed"),
        "{}",
        said(&tested)
    );
    runs_each_export(&dir, &work.path().join("home"));

    // The folder is in use now; and a name the manifest refuses is refused.
    let home = work.path().join("home");
    let again = itsm(&["plugin", "new", "greet-leaver"], work.path(), &home);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        said(&again).contains("exists and is not empty"),
        "{}",
        said(&again)
    );
    let bad = itsm(&["plugin", "new", "Bad Name"], work.path(), &home);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        said(&bad).contains("plugin name `Bad Name`"),
        "{}",
        said(&bad)
    );
    assert!(!work.path().join("Bad Name").exists(), "nothing written");
    let lang = itsm(
        &["plugin", "new", "x", "--lang", "cobol"],
        work.path(),
        &home,
    );
    assert_eq!(lang.status.code(), Some(2));
    assert!(said(&lang).contains("rust, python, js"), "{}", said(&lang));
}

#[test]
fn a_new_python_plugin_builds_with_componentize_py_tests_and_runs_each_export_at_once() {
    let (work, dir) = new_plugin(
        "python",
        &[
            "src/app.py",
            "src/greet.py",
            "tests/test_greet.py",
            "build.sh",
        ],
    );
    let tested = tool("python3", &["-m", "unittest", "discover", "tests"], &dir);
    assert!(
        tested.status.success() && said(&tested).contains("Ran 3 tests"),
        "{}",
        said(&tested)
    );
    // Executable as written, as its README says.
    ok(&tool("./build.sh", &[], &dir), "build.sh (componentize-py)");
    assert!(dir.join("greet-leaver.wasm").is_file());
    runs_each_export(&dir, &work.path().join("home"));
}

#[test]
fn a_new_js_plugin_builds_with_jco_tests_and_runs_each_export_at_once() {
    let (work, dir) = new_plugin(
        "js",
        &[
            "package.json",
            "src/step.js",
            "src/greet.js",
            "test/greet.test.js",
        ],
    );
    ok(
        &tool("npm", &["install", "--no-audit", "--no-fund"], &dir),
        "npm install",
    );
    let tested = tool("npm", &["test"], &dir);
    assert!(
        tested.status.success() && said(&tested).contains("# pass 3"),
        "{}",
        said(&tested)
    );
    ok(&tool("npm", &["run", "build"], &dir), "npm run build (jco)");
    assert!(dir.join("greet-leaver.wasm").is_file());
    runs_each_export(&dir, &work.path().join("home"));
}
