//! A full disk under the store: writes are refused with 507 naming the
//! reason, an import stops at the first refused row and says which rows
//! were stored, reads go on, and writes resume once space is freed. The
//! store's directory is a real tmpfs of a few MiB, filled by a real file.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{get_json, start_server, start_server_piped};

const MIB: u64 = 1 << 20;

/// A tmpfs mounted at a directory for the test's lifetime (CI runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "these tests need to mount a tmpfs (run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Bytes free on the filesystem holding `path`, as `df` reads them.
fn free(path: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// Write zeros to `file` until `left` bytes are free beside it.
fn fill_leaving(file: &Path, left: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while free(file.parent().unwrap()) > left + chunk.len() as u64 {
        f.write_all(&chunk).unwrap();
        f.sync_data().unwrap();
    }
}

fn leavers(n: usize) -> String {
    let mut csv = String::from("subject,note\n");
    for i in 0..n {
        csv.push_str(&format!("leaver{i}@example.com,{}\n", "n".repeat(200)));
    }
    csv
}

#[tokio::test]
async fn a_full_disk_answers_507_stops_the_import_keeps_reads_and_resumes_once_freed() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let _disk = Tmpfs::mount(&data, 48);
    let server = start_server(home.path(), &["--sandbox", "--min-free-mib", "8"]).await;
    let (base, http) = (server.base.clone(), server.client());
    let filler = data.join("filler.bin");
    fill_leaving(&filler, 8 * MIB + 3 * MIB / 2);

    let csv = leavers(3000);
    let import = || {
        http.post(format!(
            "{base}/v1/imports?workflow=sandbox-approved-offboarding"
        ))
        .header("content-type", "text/csv")
        .body(csv.clone())
        .send()
    };
    let r = import().await.unwrap();
    assert_eq!(r.status(), 507);
    let first: Value = r.json().await.unwrap();
    let stored = first["created"].as_u64().unwrap() as usize;
    assert!(stored > 0 && stored < 3000, "{first:#}");
    assert_eq!(first["tickets"].as_array().unwrap().len(), stored);
    let stopped = first["stopped"].as_str().unwrap();
    assert!(
        stopped.contains("under the 8.0 MiB kept in reserve") && stopped.contains("--min-free-mib"),
        "{stopped}"
    );
    assert!(
        stopped.contains(&format!("{stored} rows were stored")),
        "{stopped}"
    );
    let not_imported = first["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["error"].as_str().unwrap().starts_with("not imported"))
        .count();
    assert!(not_imported > 0, "{first:#}");
    // Every row is accounted for: stored, refused by the store, or not started.
    assert_eq!(
        stored + first["errors"].as_array().unwrap().len(),
        3000,
        "{first:#}"
    );

    // A single create is refused the same way, naming the reason.
    let create_one = || {
        http.post(format!("{base}/v1/tickets"))
            .json(&json!({ "workflow": "sandbox-approved-offboarding", "subject": "one@example.com" }))
            .send()
    };
    let r = create_one().await.unwrap();
    assert_eq!(r.status(), 507);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("free, under the"),
        "{body}"
    );

    // Reads go on: the listing and a ticket by id.
    let list = get_json(&http, &format!("{base}/v1/tickets?limit=5")).await;
    assert_eq!(list["total"].as_u64(), Some(stored as u64), "{list:#}");
    let id = first["tickets"][0].as_str().unwrap();
    let one = get_json(&http, &format!("{base}/v1/tickets/{id}")).await;
    assert_eq!(one["trail_verified"], true, "{one:#}");

    // Space freed: the same file again creates exactly the rest.
    std::fs::remove_file(&filler).unwrap();
    let r = import().await.unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(
        second["existing"].as_u64(),
        Some(stored as u64),
        "{second:#}"
    );
    assert_eq!(
        second["created"].as_u64(),
        Some((3000 - stored) as u64),
        "{second:#}"
    );
    let r = create_one().await.unwrap();
    assert_eq!(r.status(), 201);
    let list = get_json(&http, &format!("{base}/v1/tickets?limit=1")).await;
    assert_eq!(list["total"], 3001);
}

#[tokio::test]
async fn without_a_reserve_the_store_meeting_a_full_disk_exits_75_and_loses_nothing_acknowledged() {
    use tokio::io::AsyncReadExt;
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let _disk = Tmpfs::mount(&data, 24);
    let mut server = start_server_piped(home.path(), &["--sandbox", "--min-free-mib", "0"]).await;
    let (base, http) = (server.base.clone(), server.client());
    let filler = data.join("filler.bin");
    fill_leaving(&filler, 2 * MIB);

    let mut acknowledged = Vec::new();
    for i in 0..20_000 {
        let r = http
            .post(format!("{base}/v1/tickets"))
            .json(&json!({
                "workflow": "sandbox-approved-offboarding",
                "subject": format!("leaver{i}@example.com"),
                "inputs": { "note": "n".repeat(2000) }
            }))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 201 => {
                let t: Value = r.json().await.unwrap();
                acknowledged.push(t["id"].as_str().unwrap().to_string());
            }
            _ => break,
        }
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), server.child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    assert_eq!(status.code(), Some(75));
    let mut said = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .await
        .unwrap();
    assert!(
        said.contains("filled up during a write") && said.contains("nothing acknowledged"),
        "{said}"
    );
    assert!(!acknowledged.is_empty());

    // Freed and restarted: every acknowledged ticket is there, trail whole.
    std::fs::remove_file(&filler).unwrap();
    let server = start_server(home.path(), &["--sandbox", "--min-free-mib", "0"]).await;
    let http = server.client();
    for id in &acknowledged {
        let t = get_json(&http, &format!("{}/v1/tickets/{id}", server.base)).await;
        assert_eq!(t["trail_verified"], true, "{id}: {t:#}");
    }
}
