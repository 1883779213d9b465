//! The `itsm` CLI client against a real `itsm serve`, as the README's
//! walk-through uses it: import leavers, approve as someone else, follow the
//! batch, export one ticket's trail and verify it offline.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{create_token, set_up_wipe_home, start_server};

/// Run `itsm ARGS` against `server` with `token` in the environment.
fn itsm(server: &str, token: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(args)
        .env("ITSM_SERVER", server)
        .env("ITSM_TOKEN", token)
        .output()
        .expect("run itsm")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_approve_watch_export_and_verify_through_the_cli() {
    let home = tempfile::tempdir().unwrap();
    set_up_wipe_home(home.path());
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let hr = create_token(home.path(), "hr-lead", &["operator"]);
    let sec = create_token(home.path(), "sec-lead", &["approver", "security"]);
    let auditor = create_token(home.path(), "auditor-1", &["auditor"]);
    let csv = home.path().join("leavers.csv");
    std::fs::write(
        &csv,
        "subject,last_day\nann@example.com,2026-12-01\nbob@example.com\ncid@example.com,2026-12-02\n",
    )
    .unwrap();
    let csv = csv.to_str().unwrap();

    let text = ok(&itsm(
        &base,
        &hr,
        &["ticket", "import", csv, "--workflow", "wipe"],
    ));
    assert!(
        text.contains("2 created, 0 already there, 1 rows refused"),
        "{text}"
    );
    assert!(text.contains("has 1 fields, the header has 2"), "{text}");
    let batch = text
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(batch.starts_with("B-"), "{text}");
    let again = json(&itsm(
        &base,
        &hr,
        &["ticket", "import", csv, "--workflow", "wipe", "--json"],
    ));
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(2))
    );

    // Wait until both wait for the security approval.
    let started = std::time::Instant::now();
    let waiting = loop {
        let b = json(&itsm(&base, &auditor, &["batch", "show", &batch, "--json"]));
        if b["by_state"]["waiting_approval"] == 2 {
            break b;
        }
        assert!(started.elapsed().as_secs() < 20, "{b:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let ids: Vec<String> = waiting["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();

    // The importer may not approve; the security approver may.
    let refused = itsm(&base, &hr, &["ticket", "approve", &ids[0]]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("forbidden: hr-lead may not approve or reject"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // `ticket wait` gives up after its timeout, and follows a ticket to
    // its end when it gets there.
    let gave_up = itsm(
        &base,
        &auditor,
        &["ticket", "wait", &ids[1], "--timeout", "1s"],
    );
    assert_eq!(gave_up.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gave_up.stderr).contains("is still waiting_approval after 1s"),
        "{}",
        String::from_utf8_lossy(&gave_up.stderr)
    );
    let follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["ticket", "wait", &ids[0], "--timeout", "60s"])
        .env("ITSM_SERVER", &base)
        .env("ITSM_TOKEN", &auditor)
        .output();
    let follow = tokio::spawn(follow);
    for id in &ids {
        ok(&itsm(
            &base,
            &sec,
            &["ticket", "approve", id, "--comment", "devices returned"],
        ));
    }
    let followed = follow.await.unwrap().unwrap();
    let followed = ok(&followed);
    assert!(
        followed.contains("approved") && followed.contains(&format!("{} succeeded", ids[0])),
        "{followed}"
    );

    // --watch returns once every ticket has finished.
    let watched = ok(&itsm(
        &base,
        &auditor,
        &["batch", "show", &batch, "--watch"],
    ));
    assert!(watched.contains("2 tickets (succeeded 2)"), "{watched}");

    let shown = ok(&itsm(&base, &auditor, &["ticket", "show", &ids[0]]));
    assert!(shown.contains("approved by sec-lead"), "{shown}");
    assert!(shown.contains("trail verified"), "{shown}");

    // Export one ticket's trail, verify it offline, then show that an edit is caught.
    let export = home.path().join("trail.jsonl");
    ok(&itsm(
        &base,
        &auditor,
        &[
            "audit",
            "export",
            "--ticket",
            &ids[0],
            "--out",
            export.to_str().unwrap(),
        ],
    ));
    let verified = ok(&itsm(
        &base,
        "",
        &["audit", "verify", "--file", export.to_str().unwrap()],
    ));
    assert!(
        verified.contains("verified, 12 events of 1 trails"),
        "{verified}"
    );
    let server_side = ok(&itsm(
        &base,
        &auditor,
        &["audit", "verify", "--ticket", &ids[0]],
    ));
    assert!(
        server_side.contains(": verified, 12 events"),
        "{server_side}"
    );
    tamper(&export);
    let broken = itsm(
        &base,
        "",
        &["audit", "verify", "--file", export.to_str().unwrap()],
    );
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("content does not match its hash"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    let csv_export = ok(&itsm(
        &base,
        &auditor,
        &["audit", "export", "--ticket", &ids[0], "--format", "csv"],
    ));
    assert!(
        csv_export.starts_with("ticket_id,seq,at,kind,principal"),
        "{csv_export}"
    );
    assert!(
        csv_export.contains(",approved,sec-lead,wipe-laptop,"),
        "{csv_export}"
    );

    // Without a token the client says how to get one.
    let no_token = itsm(&base, "", &["ticket", "list"]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("itsm token create"));
}

/// Change who approved, leaving the hash as it was.
fn tamper(export: &Path) {
    let text = std::fs::read_to_string(export).unwrap();
    assert!(text.contains("\"principal\":\"sec-lead\""));
    std::fs::write(
        export,
        text.replace("\"principal\":\"sec-lead\"", "\"principal\":\"hr-lead\""),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_applies_a_workflow_version_and_tickets_keep_the_one_they_pinned() {
    let home = tempfile::tempdir().unwrap();
    set_up_wipe_home(home.path());
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let admin = create_token(home.path(), "platform-admin", &["admin"]);
    let op = server.operator.clone();

    let first = json(&itsm(
        &base,
        &op,
        &[
            "ticket",
            "create",
            "--workflow",
            "wipe",
            "--subject",
            "dee@example.com",
            "--json",
        ],
    ));
    let file = home.path().join("wipe-v2.toml");
    std::fs::write(
        &file,
        "name = \"wipe\"\nversion = \"2\"\ndescription = \"No approval for test devices\"\n[[steps]]\nname = \"disable\"\nplugin = \"noop\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let refused = itsm(&base, &op, &["workflow", "apply", file]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs the `admin` role"));
    let applied = ok(&itsm(&base, &admin, &["workflow", "apply", file]));
    assert!(applied.starts_with("applied wipe v2"), "{applied}");
    let again = ok(&itsm(&base, &admin, &["workflow", "apply", file]));
    assert!(again.starts_with("unchanged: wipe v2"), "{again}");

    let listed = ok(&itsm(&base, &op, &["workflow", "list"]));
    assert!(listed.contains("No approval for test devices"), "{listed}");
    let second = json(&itsm(
        &base,
        &op,
        &[
            "ticket",
            "create",
            "--workflow",
            "wipe",
            "--subject",
            "eve@example.com",
            "--json",
        ],
    ));
    assert_eq!(first["workflow_version"], "1");
    assert_eq!(second["workflow_version"], "2");
    let shown = json(&itsm(&base, &op, &["workflow", "show", "wipe", "--json"]));
    let mut pinned: Vec<String> = shown["pinned_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect();
    pinned.sort();
    assert_eq!(pinned, ["1", "2"]);

    // A broken file is refused with its line, and changes nothing.
    let broken = home.path().join("broken.toml");
    std::fs::write(
        &broken,
        "name = \"wipe\"\n[[steps]]\nname = \"x\"\nplugin = \"missing\"\n",
    )
    .unwrap();
    let out = itsm(
        &base,
        &admin,
        &["workflow", "apply", broken.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A name that would leave the workflows folder is refused.
    let sneaky = crate::support::client_as(&admin)
        .put(format!("{base}/v1/workflows/..%2Fescaped"))
        .header("content-type", "application/toml")
        .body("name = \"../escaped\"\n[[steps]]\nname = \"x\"\nplugin = \"noop\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 422);
    assert!(
        sneaky
            .text()
            .await
            .unwrap()
            .contains("names are 1-64 letters")
    );
    assert!(!home.path().join("escaped.toml").exists());
    let still = json(&itsm(&base, &op, &["workflow", "show", "wipe", "--json"]));
    assert_eq!(still["current"]["version"], "2");
}
