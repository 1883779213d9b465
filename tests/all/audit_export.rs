//! Exported trails end with a signed trailer, and `itsm audit verify --file`
//! refuses a file cut at either end, emptied, left with one line, or whose
//! trailer was changed, in each format the server writes.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{create_token, install_signed, start_server, wait_for_state};

fn itsm(server: &str, token: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(args)
        .env("ITSM_SERVER", server)
        .env("ITSM_TOKEN", token)
        .output()
        .expect("run itsm")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `itsm audit verify --file PATH EXTRA...`.
fn verify(path: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "verify", "--file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    itsm("http://127.0.0.1:9", "", &args)
}

/// Verification refuses the file with exit 1 and a message containing `why`.
fn refused(path: &Path, why: &str) {
    let out = verify(path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: expected a refusal ({why}); stdout: {} stderr: {stderr}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(why),
        "{}: expected {why:?} in: {stderr}",
        path.display()
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A server with one finished ticket: (server, home, auditor token, ticket id).
async fn finished_ticket() -> (crate::support::Server, tempfile::TempDir, String, String) {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/noop", "itsm-plugin-test-noop");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/two.toml"),
        "name = \"two\"\nversion = \"1\"\n[[steps]]\nname = \"disable\"\nplugin = \"noop\"\n[[steps]]\nname = \"archive\"\nplugin = \"noop\"\ndepends_on = [\"disable\"]\n",
    )
    .unwrap();
    let server = start_server(home.path(), &[]).await;
    let auditor = create_token(home.path(), "auditor-1", &["auditor"]);
    let created: serde_json::Value = server
        .client()
        .post(format!("{}/v1/tickets", server.base))
        .json(&serde_json::json!({ "workflow": "two", "subject": "ann@example.com" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait_for_state(
        &server.client(),
        &format!("{}/v1/tickets/{id}", server.base),
        "succeeded",
    )
    .await;
    (server, home, auditor, id)
}

fn export(server: &str, token: &str, args: &[&str], out: &Path) {
    let mut all = vec!["audit", "export", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    stdout_ok(&itsm(server, token, &all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_emptied_or_one_line_json_lines_export_is_refused_naming_the_problem() {
    let (server, home, auditor, id) = finished_ticket().await;
    let dir = home.path();
    let whole = dir.join("trail.jsonl");
    export(&server.base, &auditor, &["--ticket", &id], &whole);
    let text = std::fs::read_to_string(&whole).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 5, "{text}");
    assert!(lines.last().unwrap().starts_with("{\"trailer\":"), "{text}");

    let ok = stdout_ok(&verify(&whole, &[]));
    assert!(ok.contains("verified, "), "{ok}");
    assert!(ok.contains("the whole trail of ticket"), "{ok}");
    // Pinned to the server's published key, it passes too.
    let public = dir.join("audit-export.pub");
    assert!(public.exists(), "the server publishes its export key");
    stdout_ok(&verify(&whole, &["--key", public.to_str().unwrap()]));
    // The same key over the API.
    let key: serde_json::Value = crate::support::client_as(&auditor)
        .get(format!("{}/v1/audit/key", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        key["public_key"].as_str().unwrap(),
        std::fs::read_to_string(&public).unwrap().trim()
    );

    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let n = lines.len();
    refused(&write(dir, "empty.jsonl", ""), "the file is empty");
    refused(&write(dir, "blank.jsonl", "\n\n"), "the file is empty");
    refused(
        &write(dir, "no-trailer.jsonl", &join(&lines[..n - 1])),
        "no trailer",
    );
    refused(
        &write(dir, "no-first.jsonl", &join(&lines[1..])),
        "does not start at the genesis link",
    );
    let mut no_last_event = lines[..n - 2].to_vec();
    no_last_event.push(lines[n - 1]);
    refused(
        &write(dir, "no-last-event.jsonl", &join(&no_last_event)),
        "lines were deleted or added",
    );
    refused(
        &write(dir, "one-event.jsonl", &join(&lines[..1])),
        "one line",
    );
    refused(
        &write(dir, "only-trailer.jsonl", &join(&lines[n - 1..])),
        "one line",
    );
    // A trailer rewritten to match the cut file no longer matches its signature.
    let mut trailer: serde_json::Value = serde_json::from_str(lines[n - 1]).unwrap();
    let count = trailer["trailer"]["events"].as_u64().unwrap();
    trailer["trailer"]["events"] = (count - 1).into();
    let mut forged = lines[..n - 2].to_vec();
    let forged_trailer = trailer.to_string();
    forged.push(&forged_trailer);
    refused(
        &write(dir, "forged.jsonl", &join(&forged)),
        "signature does not verify",
    );
    // Signed by another key than the one the auditor pinned.
    let (_, other_public) = itsm_host::signing::keygen();
    let other = write(dir, "other.pub", &other_public);
    let out = verify(&whole, &["--key", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not by the server key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_exports_carry_the_trailer_and_a_cut_one_is_refused() {
    let (server, home, auditor, id) = finished_ticket().await;
    let dir = home.path();

    let json = dir.join("trail.json");
    export(
        &server.base,
        &auditor,
        &["--ticket", &id, "--format", "json"],
        &json,
    );
    stdout_ok(&verify(&json, &[]));
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["trailer"]["scope"], "ticket");
    let mut cut = doc.clone();
    cut["events"].as_array_mut().unwrap().remove(0);
    refused(
        &write(dir, "cut.json", &cut.to_string()),
        "does not start at the genesis link",
    );
    doc["events"].as_array_mut().unwrap().pop();
    refused(
        &write(dir, "no-last.json", &doc.to_string()),
        "lines were deleted or added",
    );
    doc.as_object_mut().unwrap().remove("trailer");
    refused(
        &write(dir, "no-trailer.json", &doc.to_string()),
        "no trailer",
    );

    let csv = dir.join("trail.csv");
    export(
        &server.base,
        &auditor,
        &["--ticket", &id, "--format", "csv"],
        &csv,
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    stdout_ok(&verify(&csv, &[]));
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows.last().unwrap().starts_with("#trailer,"), "{text}");
    let n = rows.len();
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let mut no_first = vec![rows[0]];
    no_first.extend_from_slice(&rows[2..]);
    refused(
        &write(dir, "no-first.csv", &join(&no_first)),
        "does not start at the genesis link",
    );
    refused(
        &write(dir, "no-trailer.csv", &join(&rows[..n - 1])),
        "no trailer",
    );
    refused(
        &write(
            dir,
            "header-and-trailer.csv",
            &join(&[rows[0], rows[n - 1]]),
        ),
        "one line",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_range_export_says_it_is_a_range_and_a_cut_range_is_refused() {
    let (server, home, auditor, id) = finished_ticket().await;
    let dir = home.path();
    let range = dir.join("range.jsonl");
    export(
        &server.base,
        &auditor,
        &["--from", "2000-01-01T00:00:00Z"],
        &range,
    );
    let ok = stdout_ok(&verify(&range, &[]));
    assert!(ok.contains("date range"), "{ok}");
    let text = std::fs::read_to_string(&range).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let trailer: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(trailer["trailer"]["scope"], "range");
    assert!(text.contains(&id));
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    // A range may start mid-chain, so a lost first line shows in the count.
    refused(
        &write(dir, "range-no-first.jsonl", &join(&lines[1..])),
        "lines were deleted or added",
    );
    refused(
        &write(
            dir,
            "range-no-trailer.jsonl",
            &join(&lines[..lines.len() - 1]),
        ),
        "no trailer",
    );
    // One ticket over a range is a range too, not a whole trail.
    let one = dir.join("one-range.jsonl");
    export(
        &server.base,
        &auditor,
        &["--ticket", &id, "--from", "2000-01-01T00:00:00Z"],
        &one,
    );
    let ok = stdout_ok(&verify(&one, &[]));
    assert!(ok.contains("date range"), "{ok}");
}
