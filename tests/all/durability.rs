//! Durability: an acknowledged write is behind an fsync of what it wrote.
//!
//! `itsm serve` runs under `strace`, which records every `fdatasync`,
//! `fsync` and `sync_file_range` with the file it was made on (`-y`) and
//! when it finished (`-ttt`, the same wall clock as this process). Each
//! ticket create is sent alone and waited for, so its acknowledgement must
//! have a sync of the store's log (`data/db`) finishing between the request
//! and the response. sled's own flush makes only `sync_file_range` calls,
//! which survive a process crash but not a power loss.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{install_signed, start_server_via};

const CREATES: usize = 12;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One finished sync call: (syscall, path of the file, finish time).
#[derive(Debug)]
struct Sync {
    call: String,
    path: String,
    done: f64,
}

/// Parse `strace -f -y -ttt` output. A call interrupted by another thread's
/// line is written as `... <unfinished ...>` and finished by `<... call
/// resumed>`: the call counts at its resumption, with the path from its
/// start (per thread id).
fn parse(trace: &str) -> Vec<Sync> {
    let mut pending: std::collections::HashMap<String, (String, String)> = Default::default();
    let mut out = Vec::new();
    let path_of = |rest: &str| -> String {
        rest.split_once('<')
            .and_then(|(_, p)| p.split_once('>'))
            .map(|(p, _)| p.to_string())
            .unwrap_or_default()
    };
    for line in trace.lines() {
        // `PID  TIME CALL...`: strace pads the pid with spaces.
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let call = resumed.split_whitespace().next().unwrap_or_default();
            if let Some((c, path)) = pending.remove(tid)
                && c == call
                && resumed.contains("= 0")
            {
                out.push(Sync {
                    call: c,
                    path,
                    done: time,
                });
            }
            continue;
        }
        let Some((call, args)) = rest.split_once('(') else {
            continue;
        };
        if !["fdatasync", "fsync", "sync_file_range"].contains(&call) {
            continue;
        }
        if rest.ends_with("<unfinished ...>") {
            pending.insert(tid.to_string(), (call.to_string(), path_of(args)));
        } else if rest.ends_with("= 0") {
            out.push(Sync {
                call: call.to_string(),
                path: path_of(args),
                done: time,
            });
        }
    }
    out
}

fn set_up(home: &Path) {
    install_signed(home, "testing/noop", "itsm-plugin-test-noop");
    std::fs::create_dir_all(home.join("workflows")).unwrap();
    // The only step waits for an approval, so after its create a ticket
    // makes no further writes that could stand in for the create's sync.
    std::fs::write(
        home.join("workflows/held.toml"),
        "name = \"held\"\nversion = \"1\"\n[[steps]]\nname = \"wipe\"\nplugin = \"noop\"\napproval = { role = \"security\" }\n",
    )
    .unwrap();
}

/// The pid of `itsm serve` under strace: strace's one child.
fn traced_child(strace_pid: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .expect("strace's children");
    children
        .split_whitespace()
        .next()
        .expect("strace runs itsm")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_create_waits_for_an_fdatasync_of_the_store_log() {
    let home = tempfile::tempdir().unwrap();
    set_up(home.path());
    let trace = home.path().join("strace.out");
    let trace_arg = trace.to_str().unwrap().to_string();
    let mut server = start_server_via(
        &[
            "strace",
            "-f",
            "-y",
            "-ttt",
            "-qq",
            "-e",
            "trace=fdatasync,fsync,sync_file_range",
            "-e",
            "signal=none",
            "-o",
            &trace_arg,
            "--",
        ],
        home.path(),
        &[],
        &[],
    )
    .await;
    let client = server.client();
    let mut windows = Vec::new();
    for i in 0..CREATES {
        // Let anything the previous ticket set off settle first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = now();
        let resp = client
            .post(format!("{}/v1/tickets", server.base))
            .json(&serde_json::json!({ "workflow": "held", "subject": format!("leaver{i}@example.com") }))
            .send()
            .await
            .unwrap();
        let answered = now();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        windows.push((sent, answered));
    }
    let strace_pid = server.child.id().expect("strace is running");
    let itsm = traced_child(strace_pid);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &itsm.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    server.child.wait().await.unwrap();

    let text = std::fs::read_to_string(&trace).unwrap();
    let syncs = parse(&text);
    let log = std::fs::canonicalize(home.path().join("data/db")).unwrap();
    let log = log.to_str().unwrap();
    let on_log: Vec<&Sync> = syncs
        .iter()
        .filter(|s| s.path == log && (s.call == "fdatasync" || s.call == "fsync"))
        .collect();
    assert!(
        on_log.len() >= CREATES,
        "{} fdatasync/fsync calls on {log} for {CREATES} acknowledged creates; all sync calls: {syncs:?}",
        on_log.len()
    );
    for (i, (sent, answered)) in windows.iter().enumerate() {
        assert!(
            on_log
                .iter()
                .any(|s| s.done >= *sent && s.done <= *answered),
            "create {i} was acknowledged with no fdatasync/fsync of {log} between its request ({sent:.6}) and response ({answered:.6}); syncs on the log at {:?}",
            on_log.iter().map(|s| s.done).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_trace_parser_reads_finished_and_resumed_calls() {
    let text = "\
10  1.000001 fdatasync(7</h/data/db>) = 0
11 1.000002 fsync(8</h/data/db> <unfinished ...>
10 1.000003 sync_file_range(7</h/data/db>, 0, 10, 7) = 0
11 1.000004 <... fsync resumed>) = 0
12 1.000005 fdatasync(9</h/other>) = -1 EIO (Input/output error)
";
    let s = parse(text);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(
        (s[1].call.as_str(), s[1].path.as_str(), s[1].done),
        ("sync_file_range", "/h/data/db", 1.000003)
    );
    assert_eq!(
        (s[2].call.as_str(), s[2].path.as_str(), s[2].done),
        ("fsync", "/h/data/db", 1.000004)
    );
}
