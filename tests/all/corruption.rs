//! A damaged store never panics and never passes for whole: the real
//! `itsm serve` refuses it naming the store and what to do, and
//! `itsm store check` lists the damage. The store comes from a real server
//! run; the damage is done to its files.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::support::{start_server, wait_for_state};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn itsm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(args)
        .output()
        .unwrap()
}

/// `itsm serve` on a damaged home (with `flags`): it must exit, not
/// panic, saying why.
pub(crate) fn serve_refuses(home: &Path, flags: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(home)
        .args(flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!(
                "itsm serve started on a damaged store at {}",
                home.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(2), "{err}");
    err
}

#[tokio::test]
async fn a_cut_or_emptied_store_is_refused_naming_it_and_check_lists_the_damage() {
    let home = tempfile::tempdir().unwrap();
    run_tickets(home.path(), 1, 12).await;
    let intact = itsm(&["store", "check", "--home", home.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&intact.stdout);
    assert!(
        intact.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(text.contains("verified 12 of 12 trails"), "{text}");
    assert!(text.contains("ok: nothing damaged"), "{text}");

    let damaged = tempfile::tempdir().unwrap();
    for (name, keep) in [("half", 0.5), ("empty", 0.0)] {
        let v = damaged.path().join(name);
        copy_dir(home.path(), &v);
        let db = v.join("data/db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len((len as f64 * keep) as u64)
            .unwrap();
        let err = serve_refuses(&v, &[]);
        assert!(err.contains("is damaged"), "{name}: {err}");
        assert!(err.contains("restore data/ from a backup"), "{name}: {err}");
        let check = itsm(&["store", "check", "--home", v.to_str().unwrap()]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(check.status.code(), Some(1), "{name}: {out}");
        assert!(out.contains("damaged"), "{name}: {out}");
        assert!(!out.contains("panicked"), "{name}: {out}");
    }
}

async fn run_tickets(home: &Path, from: usize, to: usize) {
    let mut server = start_server(home, &["--sandbox"]).await;
    let (base, http) = (server.base.clone(), server.client());
    for i in from..=to {
        let t: serde_json::Value = http
            .post(format!("{base}/v1/tickets"))
            .json(&json!({ "workflow": "sandbox-offboarding", "subject": format!("user{i}@example.com") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = t["id"].as_str().unwrap().to_string();
        wait_for_state(&http, &format!("{base}/v1/tickets/{id}"), "succeeded").await;
    }
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_store_rolled_back_behind_its_checkpoint_refuses_to_start_until_the_loss_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    run_tickets(home.path(), 1, 3).await;
    // Yesterday's copy of the store...
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&home.path().join("data"), backup.path());
    run_tickets(home.path(), 4, 6).await;
    // ...put back over today's: consistent, every trail verifies, and three
    // acknowledged offboardings are gone.
    std::fs::remove_dir_all(home.path().join("data")).unwrap();
    copy_dir(backup.path(), &home.path().join("data"));

    let err = serve_refuses(home.path(), &[]);
    assert!(err.contains("has lost acknowledged work"), "{err}");
    assert!(err.contains("in 3 tickets"), "{err}");
    assert!(err.contains("is missing"), "{err}");
    assert!(err.contains("--accept-store-loss"), "{err}");
    let check = itsm(&["store", "check", "--home", home.path().to_str().unwrap()]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert_eq!(out.matches("is missing").count(), 3, "{out}");

    // The operator accepts the loss: the server runs, and says so for good.
    let mut server = start_server(home.path(), &["--sandbox", "--accept-store-loss"]).await;
    server.child.kill().await.unwrap();
    let trail = std::fs::read_to_string(home.path().join("system-trail.jsonl")).unwrap();
    assert!(trail.contains("store_loss_accepted"), "{trail}");
    // From then on the checkpoint matches the store, and work goes on.
    run_tickets(home.path(), 7, 7).await;
    let check = itsm(&["store", "check", "--home", home.path().to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
