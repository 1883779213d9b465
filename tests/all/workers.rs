//! Several `itsm serve` workers on one PostgreSQL database: tickets shared
//! through leases, taken over when a worker dies, and a paused worker
//! fenced out when it comes back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::crash::{KILLS, STEPS, TICKETS, post_ticket, set_up_home, start_slow_sink, states};
use crate::pg::Cluster;
use crate::support::{Server, client_as, get_json, metric, start_server, start_server_piped};

/// Homes for `n` workers: the first set up (plugins, workflow, an operator
/// token) and started once, so the bundled plugins are compiled into its
/// cache; the others copies of it, as configuration management would make.
async fn homes(n: usize, sink: &str) -> (Vec<tempfile::TempDir>, String) {
    let first = tempfile::tempdir().unwrap();
    set_up_home(first.path(), sink);
    let mut warm = start_server(first.path(), &[]).await;
    warm.child.start_kill().unwrap();
    warm.child.wait().await.unwrap();
    let operator = std::fs::read_to_string(first.path().join("operator-1.token")).unwrap();
    let mut homes = vec![first];
    for _ in 1..n {
        let copy = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", homes[0].path().display()))
            .arg(copy.path())
            .status()
            .unwrap();
        assert!(status.success());
        homes.push(copy);
    }
    (homes, operator)
}

fn signal(server: &Server, sig: &str) {
    let pid = server.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// `itsm store check --store URL --home HOME`: its exit status and what
/// it printed.
fn run_store_check(url: &str, home: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["store", "check", "--store", url, "--home"])
        .arg(home)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.code(), format!("{said}{err}"))
}

/// [`run_store_check`], asserting it found everything whole.
fn store_check(url: &str, home: &Path) -> String {
    let (code, said) = run_store_check(url, home);
    assert_eq!(code, Some(0), "{said}");
    said
}

/// [`run_store_check`], asserting it found damage (exit 1).
fn store_check_finds_damage(url: &str, home: &Path) -> String {
    let (code, said) = run_store_check(url, home);
    assert_eq!(code, Some(1), "{said}");
    said
}

/// Each ticket succeeded, its trail verifies, and each step succeeded and
/// was verified exactly once in it.
async fn each_step_once(client: &reqwest::Client, base: &str, ids: &BTreeSet<String>) {
    for id in ids {
        let detail = get_json(client, &format!("{base}/v1/tickets/{id}")).await;
        assert_eq!(detail["ticket"]["state"], "succeeded", "{id}");
        assert_eq!(
            detail["trail_verified"], true,
            "{id}: {}",
            detail["trail_error"]
        );
        let trail = detail["trail"].as_array().unwrap();
        for step in STEPS {
            for kind in ["step_succeeded", "step_verified"] {
                let n = trail
                    .iter()
                    .filter(|e| e["kind"] == kind && e["step"] == step)
                    .count();
                assert_eq!(n, 1, "{id} {step} {kind}");
            }
        }
    }
}

/// `itsm token ARGS --store URL`: what it printed.
fn itsm_token(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .arg("token")
        .args(args)
        .args(["--store", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A sink whose `POST /effects` holds every request until the gate opens.
#[derive(Clone, Default)]
struct Gated {
    effects: Arc<Mutex<HashMap<String, u32>>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<tokio::sync::Notify>,
    opened: Arc<std::sync::atomic::AtomicBool>,
}

async fn start_gated_sink() -> (Gated, String) {
    use std::sync::atomic::Ordering;
    let gated = Gated::default();
    let app = Router::new()
        .route(
            "/effects",
            post(
                |State(g): State<Gated>, Json(body): Json<Value>| async move {
                    g.held.fetch_add(1, Ordering::SeqCst);
                    while !g.opened.load(Ordering::SeqCst) {
                        let notified = g.open.notified();
                        if g.opened.load(Ordering::SeqCst) {
                            break;
                        }
                        notified.await;
                    }
                    let key = body["key"].as_str().unwrap_or_default().to_string();
                    *g.effects.lock().unwrap().entry(key).or_default() += 1;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/effects/{key}",
            get(
                |State(g): State<Gated>, UrlPath(key): UrlPath<String>| async move {
                    if g.effects.lock().unwrap().contains_key(&key) {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    }
                },
            ),
        )
        .with_state(gated.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (gated, url)
}

/// Create `n` tickets on the worker at `base` and wait until each one's
/// first call is held at the gated sink: their ids.
async fn create_held(
    client: &reqwest::Client,
    base: &str,
    gate: &Gated,
    n: usize,
) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..n {
        ids.insert(post_ticket(client, base, i).await.expect("created"));
    }
    eventually(
        Duration::from_secs(30),
        "the calls reach the sink",
        || async { gate.held.load(std::sync::atomic::Ordering::SeqCst) == n },
    )
    .await;
    ids
}

/// Create a ticket of `workflow` for `subject` on the worker at `base`:
/// its id.
async fn create_one(client: &reqwest::Client, base: &str, workflow: &str, subject: &str) -> String {
    let created = client
        .post(format!("{base}/v1/tickets"))
        .json(&serde_json::json!({ "workflow": workflow, "subject": subject }))
        .send()
        .await
        .unwrap();
    let status = created.status();
    let body = created.json::<Value>().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    body["id"].as_str().expect("created").to_string()
}

/// A step's attempts by operation (`run`, `verify`), from a ticket's view.
fn ops(view: &Value, step: &str) -> Vec<String> {
    view["ticket"]["steps"][step]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["op"].as_str().unwrap().to_string())
        .collect()
}

/// Poll `what` every 100 ms until it holds, for `limit` at most.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Put a workflow through the worker at `base`.
async fn put_workflow(admin: &reqwest::Client, base: &str, name: &str, toml: &str) {
    let resp = admin
        .put(format!("{base}/v1/workflows/{name}"))
        .header("content-type", "application/toml")
        .body(toml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

/// Wait until the worker at `base` runs `version` of workflow `name`.
async fn follows(client: &reqwest::Client, base: &str, name: &str, version: &str) {
    let url = format!("{base}/v1/workflows/{name}");
    eventually(
        Duration::from_secs(10),
        &format!("{base} follows {name} v{version}"),
        || async { get_json(client, &url).await["current"]["version"] == version },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_is_fenced_out_and_commits_nothing() {
    use std::sync::atomic::Ordering;
    const N: usize = 4;
    let cluster = Cluster::start();
    let url = cluster.url();
    let (gate, sink) = start_gated_sink().await;
    let (homes, operator) = homes(2, &sink).await;
    let client = client_as(&operator);
    let flags = ["--store", &url, "--lease-ttl", "2s"];
    let mut a = start_server_piped(homes[0].path(), &flags).await;
    let b = start_server(homes[1].path(), &flags).await;
    let said = Arc::new(Mutex::new(String::new()));
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(a.child.stderr.take().unwrap()).lines();
        let said = said.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                said.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }

    // A creates the tickets and calls the sink for each first step, which
    // holds the calls: A drives them, under leases it renews.
    let ids = create_held(&client, &a.base, &gate, N).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(&client, &b.base, "itsm_leases_taken_total").await,
        0,
        "B takes nothing while A renews"
    );

    // A is paused past its lease: B takes its tickets over and runs them.
    signal(&a, "-STOP");
    let stopped = Instant::now();
    eventually(Duration::from_secs(20), "B takes A's tickets", || async {
        metric(&client, &b.base, "itsm_leases_taken_total").await >= N as u64
    })
    .await;
    let takeover = stopped.elapsed();
    gate.opened.store(true, Ordering::SeqCst);
    gate.open.notify_waiters();
    eventually(
        Duration::from_secs(60),
        "B finishes every ticket",
        || async {
            let s = states(&client, &b.base).await.unwrap_or_default();
            s.len() == N && s.values().all(|st| st == "succeeded")
        },
    )
    .await;

    // A wakes: its held calls return, and every commit of theirs is refused.
    signal(&a, "-CONT");
    eventually(
        Duration::from_secs(30),
        "A's commits are refused",
        || async { metric(&client, &a.base, "itsm_fencing_refusals_total").await >= N as u64 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = said.lock().unwrap().clone();
    assert!(log.contains("lease lost"), "A says so: {log}");
    assert!(log.contains("fenced"), "{log}");
    // Each step once in each trail (A's results never landed), though A's
    // calls reached the sink: the effect was made twice under one key.
    each_step_once(&client, &a.base, &ids).await;
    let effects = gate.effects.lock().unwrap().clone();
    for id in &ids {
        assert!(
            effects[&format!("{id}/directory")] >= 2,
            "{id}: A's and B's calls"
        );
    }
    for home in &homes {
        store_check(&url, home.path());
    }

    // Tokens are the database's: one created against the store works on
    // both workers, and once revoked, on neither.
    let token = |args: &[&str]| itsm_token(&url, args);
    let auditor = client_as(&token(&[
        "create",
        "--name",
        "auditor-2",
        "--role",
        "auditor",
    ]));
    let status = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/v1/tickets"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for base in [&a.base, &b.base] {
        eventually(Duration::from_secs(5), "the new token works", || {
            let (http, base) = (auditor.clone(), base.clone());
            async move { status(http, base).await == 200 }
        })
        .await;
    }
    assert!(token(&["list"]).contains("auditor-2"));
    token(&["revoke", "auditor-2"]);
    for base in [&a.base, &b.base] {
        eventually(
            Duration::from_secs(5),
            "the revoked token is refused",
            || {
                let (http, base) = (auditor.clone(), base.clone());
                async move { status(http, base).await == 401 }
            },
        )
        .await;
    }
    eprintln!(
        "zombie: {N} tickets taken over {:?} after A stopped (lease 2 s); A's {} commits refused after it resumed",
        takeover,
        metric(&client, &a.base, "itsm_fencing_refusals_total").await
    );
}

/// The crash test's lease length.
const LEASE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_killed_twenty_times_lose_nothing_and_repeat_no_success() {
    const WORKERS: usize = 3;
    let cluster = Cluster::start();
    let url = cluster.url();
    let (sink, sink_url) = start_slow_sink(Duration::from_millis(150)).await;
    let (homes, operator) = homes(WORKERS, &sink_url).await;
    let client = client_as(&operator);
    let ttl = format!("{}ms", LEASE.as_millis());
    let flags = ["--store", &url, "--lease-ttl", &ttl];
    let mut workers = Vec::new();
    for home in &homes {
        workers.push(start_server(home.path(), &flags).await);
    }
    let started = Instant::now();
    let bases: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(workers.iter().map(|w| w.base.clone()).collect()));

    // Post every ticket, each to a worker in turn; one that was killed
    // meanwhile is retried on the next (same idempotency key).
    let poster = {
        let client = client.clone();
        let bases = bases.clone();
        tokio::spawn(async move {
            let mut got: BTreeMap<usize, String> = BTreeMap::new();
            for i in 0..TICKETS {
                for attempt in 0.. {
                    let base = {
                        let b = bases.lock().unwrap();
                        b[(i + attempt) % b.len()].clone()
                    };
                    if let Some(id) = post_ticket(&client, &base, i).await {
                        got.insert(i, id);
                        // Spread over the kills, so they land mid-work.
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        break;
                    }
                    assert!(attempt < 200, "ticket {i} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            got
        })
    };
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    let mut kills_mid_work = 0;
    let mut taken_by_peers = 0;
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rand(150, 900))).await;
        let victim = rand(0, WORKERS as u64) as usize;
        let peers: Vec<String> = (1..WORKERS)
            .map(|k| workers[(victim + k) % WORKERS].base.clone())
            .collect();
        if let Some(s) = states(&client, &peers[0]).await
            && s.values().any(|st| st != "succeeded")
        {
            kills_mid_work += 1;
        }
        let taken = |peers: Vec<String>| {
            let client = client.clone();
            async move {
                let mut n = 0;
                for base in &peers {
                    n += metric(&client, base, "itsm_leases_taken_total").await;
                }
                n
            }
        };
        let before = taken(peers.clone()).await;
        workers[victim].child.start_kill().unwrap(); // SIGKILL
        workers[victim].child.wait().await.unwrap();
        // Every fourth victim stays down past its leases: its peers take
        // its tickets over. The others come straight back and take their
        // own back.
        if round % 4 == 3 {
            tokio::time::sleep(LEASE + Duration::from_millis(1500)).await;
            taken_by_peers += taken(peers).await - before;
        }
        workers[victim] = start_server(homes[victim].path(), &flags).await;
        bases.lock().unwrap()[victim] = workers[victim].base.clone();
        eprintln!(
            "round {round}: killed worker {victim}, {:?}",
            started.elapsed()
        );
    }
    let acknowledged = poster.await.unwrap();
    let ids: BTreeSet<String> = acknowledged.values().cloned().collect();
    assert_eq!(ids.len(), TICKETS, "every acknowledged ticket is distinct");
    eventually(
        Duration::from_secs(300),
        "every ticket succeeds",
        || async {
            let s = states(&client, &workers[0].base).await.unwrap_or_default();
            assert!(
                s.values().all(|st| st != "failed" && st != "cancelled"),
                "{s:?}"
            );
            s.len() == TICKETS && s.values().all(|st| st == "succeeded")
        },
    )
    .await;
    assert!(
        kills_mid_work >= KILLS / 2,
        "only {kills_mid_work} kills hit work in flight"
    );
    each_step_once(&client, &workers[1].base, &ids).await;
    let effects = sink.lock().unwrap().clone();
    for id in &ids {
        for step in STEPS {
            assert!(
                effects.contains_key(&format!("{id}/{step}")),
                "{id} {step}: effect missing at the sink"
            );
        }
    }
    for home in &homes {
        let said = store_check(&url, home.path());
        assert!(
            said.contains(&format!("verified {TICKETS} of {TICKETS} trails"))
                && said.contains("compared the tickets with the database's witness"),
            "{said}"
        );
    }
    assert!(
        taken_by_peers > 0,
        "no worker took over a dead worker's tickets"
    );
    let repeated: u32 = effects.values().map(|n| n - 1).sum();
    eprintln!(
        "workers: {TICKETS} tickets on {WORKERS} workers, {KILLS} kills ({kills_mid_work} mid-work), {repeated} effects repeated (same key), {taken_by_peers} tickets taken over by the peers of the 5 workers kept down past their leases, {:?}",
        started.elapsed()
    );
}

/// A ticket deleted from the database behind the workers' backs (a cleanup
/// script, a table restored apart): the database's witness names it on a
/// worker whose own home never saw the ticket, until the loss is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_deleted_from_the_database_is_named_on_every_worker_until_accepted() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let (_sink, sink_url) = start_slow_sink(Duration::from_millis(1)).await;
    let (homes, operator) = homes(2, &sink_url).await;
    let client = client_as(&operator);
    let audit = crate::support::auditor_in(homes[0].path());
    let flags = ["--store", url.as_str()];
    let mut a = start_server(homes[0].path(), &flags).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post_ticket(&client, &a.base, i).await.expect("created"));
    }
    eventually(Duration::from_secs(60), "the tickets succeed", || async {
        let s = states(&client, &a.base).await.unwrap_or_default();
        s.len() == 3 && s.values().all(|st| st == "succeeded")
    })
    .await;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let gone = &ids[1];
    for table in ["events", "attempts", "steps"] {
        cluster.sql(&format!(
            "DELETE FROM itsm.{table} WHERE ticket_id = '{gone}'"
        ));
    }
    cluster.sql(&format!("DELETE FROM itsm.tickets WHERE id = '{gone}'"));

    // B's home never saw the ticket; the database's witness did.
    let b = homes[1].path();
    let said = store_check_finds_damage(&url, b);
    let missing = format!("ticket {gone} is missing (its trail had ");
    assert!(said.contains(&missing), "{said}");
    assert_eq!(said.matches("is missing").count(), 1, "{said}");
    let err = crate::corruption::serve_refuses(b, &flags);
    assert!(err.contains("has lost acknowledged work"), "{err}");
    assert!(err.contains("itsm.witness"), "{err}");
    assert!(err.contains(&missing), "{err}");

    // Accepted: the worker runs, the system trail says so, and from then
    // on the database's witness matches its tickets.
    let accepting = [flags[0], flags[1], "--accept-store-loss"];
    let mut worker = start_server(b, &accepting).await;
    let system = get_json(&audit, &format!("{}/v1/audit?ticket=system", worker.base)).await;
    let accepted: Vec<&Value> = system["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "store_loss_accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{system:#}");
    assert!(
        accepted[0]["data"]["lost"][0]
            .as_str()
            .is_some_and(|l| l.contains(&missing)),
        "{system:#}"
    );
    worker.child.start_kill().unwrap();
    worker.child.wait().await.unwrap();
    let said = store_check(&url, b);
    assert!(said.contains("verified 2 of 2 trails"), "{said}");
    // A's own checkpoint, which saw the ticket acknowledged, still names
    // it: accepting on one worker speaks for that worker only.
    let said = store_check_finds_damage(&url, homes[0].path());
    assert_eq!(said.matches(&missing).count(), 1, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_hands_its_tickets_over_at_once_and_workflows_are_shared() {
    use std::sync::atomic::Ordering;
    const N: usize = 2;
    let cluster = Cluster::start();
    let url = cluster.url();
    let (gate, sink) = start_gated_sink().await;
    let (homes, operator) = homes(2, &sink).await;
    let client = client_as(&operator);
    // Leases of a minute: only the release explains a quick take-over.
    let flags = ["--store", &url, "--lease-ttl", "60s", "--grace", "500ms"];
    let mut a = start_server(homes[0].path(), &flags).await;
    let b = start_server(homes[1].path(), &flags).await;

    // A workflow changed through one worker is the current one on both.
    let admin = client_as(&itsm_token(
        &url,
        &["create", "--name", "admin-1", "--role", "admin"],
    ));
    let text = std::fs::read_to_string(homes[0].path().join("workflows/offboarding.toml"))
        .unwrap()
        .replace("crash-1", "crash-2");
    let put = admin
        .put(format!("{}/v1/workflows/offboarding", a.base))
        .header("content-type", "application/toml")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    eventually(Duration::from_secs(5), "B follows the new version", || {
        let (http, base) = (client.clone(), b.base.clone());
        async move {
            get_json(&http, &format!("{base}/v1/workflows/offboarding")).await["current"]["version"]
                == "crash-2"
        }
    })
    .await;

    let ids = create_held(&client, &a.base, &gate, N).await;
    signal(&a, "-TERM");
    let stopping = Instant::now();
    let status = a.child.wait().await.unwrap();
    assert!(status.success(), "A drains and exits 0: {status}");
    eventually(Duration::from_secs(10), "B takes A's tickets", || async {
        metric(&client, &b.base, "itsm_leases_taken_total").await >= N as u64
    })
    .await;
    let handed = stopping.elapsed();
    gate.opened.store(true, Ordering::SeqCst);
    gate.open.notify_waiters();
    eventually(Duration::from_secs(60), "B finishes them", || async {
        let s = states(&client, &b.base).await.unwrap_or_default();
        s.len() == N && s.values().all(|st| st == "succeeded")
    })
    .await;
    each_step_once(&client, &b.base, &ids).await;
    for id in &ids {
        let detail = get_json(&client, &format!("{}/v1/tickets/{id}", b.base)).await;
        assert_eq!(detail["ticket"]["workflow_version"], "crash-2", "{id}");
    }
    assert!(handed < Duration::from_secs(10), "{handed:?}");
    eprintln!(
        "drain: {N} tickets taken by B {handed:?} after A was told to stop (lease 60 s, grace 0.5 s)"
    );
}

/// Two workers on one new database, their homes set up for a gated sink
/// (steps wait at its gate until it opens), started with `--store` and
/// `flags`; the operator's client. Keep every part bound for the test's
/// length: the database and the homes go with their parts.
struct Pair {
    cluster: Cluster,
    gate: Gated,
    homes: Vec<tempfile::TempDir>,
    client: reqwest::Client,
    a: Server,
    b: Server,
}

async fn two_workers(flags: &[&str]) -> Pair {
    let cluster = Cluster::start();
    let url = cluster.url();
    let (gate, sink) = start_gated_sink().await;
    let (homes, operator) = homes(2, &sink).await;
    let mut all = vec!["--store", url.as_str()];
    all.extend_from_slice(flags);
    let a = start_server(homes[0].path(), &all).await;
    let b = start_server(homes[1].path(), &all).await;
    Pair {
        cluster,
        gate,
        homes,
        client: client_as(&operator),
        a,
        b,
    }
}

/// One create on worker A or B, at once with the others: its status and
/// the ticket it names, if any.
async fn race_create(
    client: &reqwest::Client,
    bases: [&str; 2],
    subject: &str,
    key: Option<&str>,
    n: usize,
) -> Vec<(u16, Option<String>)> {
    let mut set = tokio::task::JoinSet::new();
    let start = Arc::new(tokio::sync::Barrier::new(n));
    for i in 0..n {
        let (client, start) = (client.clone(), start.clone());
        let url = format!("{}/v1/tickets", bases[i % 2]);
        let key = key.map(str::to_string);
        let body = serde_json::json!({ "workflow": "offboarding", "subject": subject });
        set.spawn(async move {
            let mut req = client.post(url).json(&body);
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            start.wait().await;
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let id = resp
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string));
            (status, id)
        });
    }
    set.join_all().await
}

/// Creates for one leaver arriving at two workers at the same moment make
/// one ticket: under one `Idempotency-Key` every answer names it, and
/// without one a single create succeeds and the others are refused as a
/// duplicate (409), however the requests fall between the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_racing_on_two_workers_make_one_ticket_per_leaver() {
    const ROUNDS: usize = 6;
    const AT_ONCE: usize = 16;
    // Steps wait at the gate, so every ticket stays open.
    let Pair {
        cluster,
        gate: _gate,
        homes: _homes,
        client,
        a,
        b,
    } = two_workers(&[]).await;
    let bases = [a.base.as_str(), b.base.as_str()];
    for round in 0..ROUNDS {
        let keyed = format!("keyed{round}@example.com");
        let answers = race_create(
            &client,
            bases,
            &keyed,
            Some(&format!("race-{round}")),
            AT_ONCE,
        )
        .await;
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(created, 1, "one create made the ticket: {answers:?}");
        assert!(
            answers.iter().all(|(s, _)| *s == 201 || *s == 200),
            "{answers:?}"
        );
        let ids: BTreeSet<&str> = answers.iter().filter_map(|(_, id)| id.as_deref()).collect();
        assert_eq!(
            ids.len(),
            1,
            "every answer names the one ticket: {answers:?}"
        );

        let unkeyed = format!("unkeyed{round}@example.com");
        let answers = race_create(&client, bases, &unkeyed, None, AT_ONCE).await;
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        let refused = answers.iter().filter(|(s, _)| *s == 409).count();
        assert_eq!((created, refused), (1, AT_ONCE - 1), "{answers:?}");
    }
    // And the database holds one ticket per leaver.
    let per_subject = cluster
        .sql("SELECT subject, count(*) FROM itsm.tickets GROUP BY subject HAVING count(*) > 1");
    assert_eq!(per_subject, "", "leavers with more than one ticket");
    let total = cluster.sql("SELECT count(*) FROM itsm.tickets");
    assert_eq!(total, (2 * ROUNDS).to_string());
}

/// A plugin installed over the API on one worker is installed on the
/// other within seconds, through that worker's own signature check, into
/// its home and its system trail; a workflow using it, published on the
/// first, runs tickets created on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_installed_on_one_worker_is_installed_on_the_others() {
    let Pair {
        cluster,
        gate: _gate,
        homes,
        client,
        a,
        b,
    } = two_workers(&[]).await;
    let url = cluster.url();
    let audit = crate::support::auditor_in(homes[0].path());
    let admin = client_as(&itsm_token(
        &url,
        &["create", "--name", "admin-1", "--role", "admin"],
    ));
    let listed = |base: String| {
        let admin = admin.clone();
        async move {
            get_json(&admin, &format!("{base}/v1/plugins")).await["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "noop")
                .cloned()
        }
    };
    assert!(
        listed(b.base.clone()).await.is_none(),
        "B starts without noop"
    );

    crate::support::install_noop(&admin, &a.base, homes[0].path()).await;
    let code = crate::support::wasm("itsm-plugin-test-noop");
    let on_a = listed(a.base.clone()).await.expect("installed on A");

    let started = Instant::now();
    eventually(Duration::from_secs(10), "B installs noop", || async {
        listed(b.base.clone()).await.is_some()
    })
    .await;
    let took = started.elapsed();
    let on_b = listed(b.base.clone()).await.unwrap();
    assert_eq!(on_b["version"], on_a["version"]);
    assert_eq!(on_b["wasm_sha256"], on_a["wasm_sha256"], "{on_b:#}");
    assert_eq!(
        std::fs::read(homes[1].path().join("plugins/noop/plugin.wasm")).unwrap(),
        code,
        "in B's home, for B's next start"
    );
    let system = get_json(&audit, &format!("{}/v1/audit?ticket=system", b.base)).await;
    let recorded = system["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["kind"] == "plugin_installed"
                && e["data"]["name"] == "noop"
                && e["principal"] == itsm_host::shared::plugins::BY
        })
        .unwrap_or_else(|| panic!("no plugin_installed of B's in the system trail: {system:#}"));
    // One system trail for both: A serves B's install and its own, each
    // naming the worker that appended it, and it verifies on either.
    let on_a_trail = get_json(&audit, &format!("{}/v1/audit?ticket=system", a.base)).await;
    assert_eq!(on_a_trail["events"], system["events"]);
    let installs: Vec<(&str, &str)> = system["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "plugin_installed" && e["data"]["name"] == "noop")
        .map(|e| {
            (
                e["principal"].as_str().unwrap(),
                e["data"]["worker"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(installs.len(), 2, "A's install and B's: {installs:?}");
    assert_eq!(installs[0].0, "admin-1");
    assert_ne!(installs[0].1, installs[1].1, "two workers: {installs:?}");
    for base in [&a.base, &b.base] {
        let v = get_json(&audit, &format!("{base}/v1/audit/verify?ticket=system")).await;
        assert_eq!(v["verified"], true, "{v:#}");
    }
    assert_eq!(
        recorded["data"]["signed_by"], "tests",
        "checked against B's own trusted key: {recorded:#}"
    );

    // A workflow of it, put through A, runs tickets created on B.
    put_workflow(
        &admin,
        &a.base,
        "solo",
        "name = \"solo\"\nversion = \"1\"\n[[steps]]\nname = \"only\"\nplugin = \"noop\"\n",
    )
    .await;
    follows(&client, &b.base, "solo", "1").await;
    for i in 0..4 {
        let id = create_one(&client, &b.base, "solo", &format!("solo{i}@example.com")).await;
        crate::support::wait_for_state(
            &client,
            &format!("{}/v1/tickets/{id}", b.base),
            "succeeded",
        )
        .await;
    }
    eprintln!("shared plugin: on B {took:?} after A's install answered");
}

/// A client long-polling one worker for a ticket another worker drives
/// is answered when that worker changes it, not when its wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_worker_wakes_for_a_change_made_on_another() {
    use std::sync::atomic::Ordering;
    // Leases of a minute: the ticket stays with A, which created it.
    let Pair {
        cluster: _cluster,
        gate,
        homes: _homes,
        client,
        a,
        b,
    } = two_workers(&["--lease-ttl", "60s"]).await;
    let ids = create_held(&client, &a.base, &gate, 1).await;
    let id = ids.first().unwrap().clone();
    let before = get_json(&client, &format!("{}/v1/tickets/{id}", b.base)).await;
    let seen = before["ticket"]["head"]["len"].as_u64().unwrap();
    let poll = {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/tickets/{id}?wait=30s&seen={seen}", b.base),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let v: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            (started.elapsed(), v)
        })
    };
    // The poll is waiting on B; then A's held call is let go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!poll.is_finished(), "nothing changed yet");
    gate.opened.store(true, Ordering::SeqCst);
    gate.open.notify_waiters();
    let (took, answer) = poll.await.unwrap();
    let len = answer["ticket"]["head"]["len"].as_u64().unwrap();
    assert!(len > seen, "answered with the change: {len} > {seen}");
    assert!(
        took < Duration::from_secs(10),
        "woken by A's change, not by the 30 s wait: {took:?}"
    );
    eprintln!("long-poll on B answered {took:?} after it started (1 s before the change)");
}

/// A worker that refuses a plugin another worker installed (it does not
/// trust the publisher) leaves the plugin's steps to the workers that have
/// it: a step that starts there waits for the plugin, with no attempt, and
/// is let go at once, to a worker that has the plugin, rather than failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_a_worker_lacks_the_plugin_for_waits_and_runs_on_a_worker_that_has_it() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let (_gate, sink) = start_gated_sink().await;
    let (homes, operator) = homes(2, &sink).await;
    // B trusts another publisher: it refuses A's install of noop.
    let (_, stranger) = itsm_host::signing::keygen();
    std::fs::write(homes[1].path().join("trusted-keys/tests.pub"), stranger).unwrap();
    let flags = ["--store", url.as_str()];
    let a = start_server(homes[0].path(), &flags).await;
    let b = start_server(homes[1].path(), &flags).await;
    let client = client_as(&operator);
    let audit = crate::support::auditor_in(homes[0].path());
    let admin = client_as(&itsm_token(
        &url,
        &["create", "--name", "admin-1", "--role", "admin"],
    ));
    let approver = client_as(&itsm_token(
        &url,
        &[
            "create", "--name", "sec-1", "--role", "approver", "--role", "security",
        ],
    ));
    crate::support::install_noop(&admin, &a.base, homes[0].path()).await;
    put_workflow(
        &admin,
        &a.base,
        "held",
        "name = \"held\"\nversion = \"1\"\n[[steps]]\nname = \"wipe\"\nplugin = \"noop\"\napproval = { role = \"security\" }\n",
    )
    .await;
    // B has looked at the install (and refused it) once it follows the
    // workflow put after it.
    follows(&client, &b.base, "held", "1").await;

    let id = create_one(&client, &a.base, "held", "held@example.com").await;
    let on_b = format!("{}/v1/tickets/{id}", b.base);
    crate::support::wait_for_state(&client, &on_b, "waiting_approval").await;
    // The decision goes to B, so B takes the ticket and starts the step.
    let approved = approver
        .post(format!("{on_b}/approve"))
        .json(&serde_json::json!({ "comment": "laptop returned" }))
        .send()
        .await
        .unwrap();
    assert!(
        approved.status().is_success(),
        "{}",
        approved.text().await.unwrap()
    );
    crate::support::wait_for_state(&client, &on_b, "succeeded").await;

    let trail = get_json(&audit, &format!("{}/v1/audit?ticket={id}", a.base)).await;
    let events = trail["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let waited = events
        .iter()
        .find(|e| e["kind"] == "step_waiting")
        .unwrap_or_else(|| panic!("the step never waited on B: {kinds:?}"));
    assert!(
        waited["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("plugin noop is not loaded"),
        "{waited:#}"
    );
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(count("step_failed"), 0, "{kinds:?}");
    assert_eq!(count("step_succeeded"), 1, "{kinds:?}");
    let view = get_json(&client, &on_b).await;
    // One run and its verify, both on A: B's wait made no attempt.
    assert_eq!(ops(&view, "wipe"), ["run", "verify"], "{view:#} {kinds:?}");
    for base in [&a.base, &b.base] {
        let v = get_json(&audit, &format!("{base}/v1/audit/verify?ticket={id}")).await;
        assert_eq!(v["verified"], true, "{v:#}");
    }
}

/// A workflow naming a plugin only one worker has (in its home's folder,
/// which is not shared) is followed by the others all the same, and a
/// worker with a fresh home starts on such a store: the plugin's steps
/// wait on the workers that lack it and run on the one that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_naming_a_plugin_only_one_worker_has_is_followed_and_a_fresh_worker_starts() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let (_gate, sink) = start_gated_sink().await;
    let (homes, operator) = homes(3, &sink).await;
    // noop in A's home only.
    crate::support::install_signed(homes[0].path(), "testing/noop", "itsm-plugin-test-noop");
    let flags = ["--store", url.as_str()];
    let a = start_server(homes[0].path(), &flags).await;
    let b = start_server(homes[1].path(), &flags).await;
    let client = client_as(&operator);
    let audit = crate::support::auditor_in(homes[0].path());
    let admin = client_as(&itsm_token(
        &url,
        &["create", "--name", "admin-1", "--role", "admin"],
    ));
    let quick = |version: &str| {
        format!(
            "name = \"quick\"\nversion = \"{version}\"\n[[steps]]\nname = \"wipe\"\nplugin = \"noop\"\n"
        )
    };
    put_workflow(&admin, &a.base, "quick", &quick("1")).await;
    // B lacks noop, and follows the workflow, and the next version too.
    follows(&client, &b.base, "quick", "1").await;
    put_workflow(&admin, &a.base, "quick", &quick("2")).await;
    follows(&client, &b.base, "quick", "2").await;

    // C, a fresh home that never had noop, starts on the store.
    let c = start_server(homes[2].path(), &flags).await;
    let id = create_one(&client, &c.base, "quick", "quick@example.com").await;
    let view = crate::support::wait_for_state(
        &client,
        &format!("{}/v1/tickets/{id}", c.base),
        "succeeded",
    )
    .await;
    assert_eq!(ops(&view, "wipe"), ["run", "verify"], "{view:#}");
    let trail = get_json(&audit, &format!("{}/v1/audit?ticket={id}", a.base)).await;
    let kinds: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"step_waiting"), "it waited on C: {kinds:?}");
    assert!(!kinds.contains(&"step_failed"), "{kinds:?}");
    // C let it go naming noop, so B (which lacks noop too) never took it.
    let taken = |base: String| {
        let client = client.clone();
        async move { crate::support::metric(&client, &base, "itsm_leases_taken_total").await }
    };
    assert_eq!(taken(b.base.clone()).await, 0, "B took the ticket");
    assert_eq!(taken(a.base.clone()).await, 1, "A took the ticket");
    drop((a, b, c));
}
