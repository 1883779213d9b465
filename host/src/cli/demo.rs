//! `itsm demo`: the main job on embedded defaults, end to end.
//!
//! Starts the sandbox (test doubles of Microsoft Graph, Google Vault,
//! Salesforce and two SCIM apps, rate-limiting as real APIs do), runs the
//! server in-process on a fresh home, and imports sample leavers over the
//! API as an HR operator (one ticket each) ahead of the end of their last
//! day, in their own time zones. Their manager completes each equipment
//! collection task from their inbox; access is cut at the end of each
//! leaver's day (a few seconds ahead, so the demo finishes quickly); a
//! separate security approver approves the wipe of each leaver who has a
//! managed device. It follows the batch, then prints when each leaver's
//! access was cut against their last day, a summary, and one ticket's
//! verified trail. Everything goes through the same scheduler, API,
//! sandboxed plugins and trail as `itsm serve`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::Exit;
use super::serve::{assemble, start_sandbox};
use crate::auth::TokenFile;
use itsm_sandbox::world::Misbehaviour;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many leavers to offboard (the sandbox has 25 people).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=25))]
    leavers: u32,
    /// Answer every Nth API request of each double with 429 + Retry-After (0: no faults).
    #[arg(long, default_value_t = 10)]
    rate_limit_every: u32,
    /// Keep the server (and its web UI) running afterwards until Ctrl-C.
    /// Default: when the terminal is interactive.
    #[arg(long)]
    keep_serving: Option<bool>,
    /// What to run: `offboarding` (leavers, one ticket each), or `outbreak`
    /// (antivirus alerts correlated into a problem, an emergency change
    /// that fixes it, and a request from the service catalog).
    #[arg(long, value_enum, default_value_t = Scenario::Offboarding)]
    scenario: Scenario,
}

/// The demo's scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Leavers offboarded, one ticket each.
    Offboarding,
    /// Incidents, a problem, a change and a catalog request.
    Outbreak,
}

/// The HTTP side of the demo: three principals on one server.
struct Api {
    base: String,
    http: reqwest::Client,
    hr: String,
    security: String,
    manager: String,
}

/// The demo's leavers work in these zones, in turn.
const ZONES: [&str; 3] = ["Europe/Paris", "America/New_York", "Asia/Tokyo"];

/// The one manager of every demo leaver.
const MANAGER: &str = "manager1@example.com";

/// How far ahead of the import each leaver's access is cut.
const CUT_AHEAD: Duration = Duration::from_secs(8);

impl Api {
    async fn call(&self, req: reqwest::RequestBuilder, token: &str) -> Result<Value, Exit> {
        call(req, token).await
    }

    async fn get(&self, path: &str) -> Result<Value, Exit> {
        self.call(self.http.get(format!("{}{path}", self.base)), &self.hr)
            .await
    }
}

/// A demo's server: assembled on its home with the sandbox, serving on a
/// loopback port until stopped.
pub(super) struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// How many plugins it loaded.
    pub plugins: usize,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub(super) async fn start(
        home: &std::path::Path,
        cache: &std::path::Path,
        sandbox: &super::serve::Sandbox,
    ) -> Result<Self, Exit> {
        let server = assemble(
            home,
            Some(cache),
            64,
            false,
            Some(sandbox),
            crate::intake::IntakeLimits::default(),
            &super::serve::StoreArgs::default(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Exit::Usage(format!("cannot listen on loopback: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Exit::Usage(e.to_string()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::api::serve(listener, server.state, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            base: format!("http://{addr}"),
            plugins: server.plugins.len(),
            stop,
            task,
        })
    }

    /// Stop serving and wait for it.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Whether to keep the server up after the scenario: as asked, else when
/// the terminal is interactive.
fn keep_serving(args: &DemoArgs) -> bool {
    args.keep_serving
        .unwrap_or_else(|| std::io::stdin().is_terminal() && std::io::stdout().is_terminal())
}

/// Send `req` as the holder of `token` (none when empty): its JSON answer,
/// or what the server said when it refused.
pub(super) async fn call(req: reqwest::RequestBuilder, token: &str) -> Result<Value, Exit> {
    let req = if token.is_empty() {
        req
    } else {
        req.bearer_auth(token)
    };
    let resp = req
        .send()
        .await
        .map_err(|e| Exit::Refused(format!("demo server: {e}")))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(Exit::Refused(format!(
            "demo server answered {status}: {body}"
        )));
    }
    Ok(body)
}

fn demo_home() -> Result<std::path::PathBuf, Exit> {
    let dir = std::env::temp_dir().join(format!(
        "itsm-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Exit::Usage(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), Exit> {
    let started = Instant::now();
    let misbehave = Misbehaviour {
        rate_limit_every: (args.rate_limit_every > 0).then_some(args.rate_limit_every),
        ..Misbehaviour::default()
    };
    let sandbox = start_sandbox(misbehave).await?;
    println!("sandbox: local test doubles of the SaaS APIs (nothing real is touched)");
    for line in sandbox.world.describe() {
        println!("  {line}");
    }
    if args.rate_limit_every > 0 {
        println!(
            "  each answers every {}th API request with 429 + Retry-After, as real APIs do under load",
            args.rate_limit_every
        );
    }

    let home = demo_home()?;
    // Compiled plugin code is kept between demos: only the first run compiles.
    let cache = super::data_dir().join("cache");
    let result = match args.scenario {
        Scenario::Offboarding => run_in(&home, &cache, &args, sandbox, started).await,
        Scenario::Outbreak => {
            let keep = keep_serving(&args);
            super::outbreak::run_in(&home, &cache, sandbox, started, keep).await
        }
    };
    let _ = std::fs::remove_dir_all(&home);
    result
}

async fn run_in(
    home: &std::path::Path,
    cache: &std::path::Path,
    args: &DemoArgs,
    sandbox: super::serve::Sandbox,
    started: Instant,
) -> Result<(), Exit> {
    let mut tokens = TokenFile::default();
    let hr = tokens.issue("hr-importer", &["operator".into()])?;
    let security = tokens.issue("security-approver", &["approver".into(), "security".into()])?;
    let auditor = tokens.issue("auditor", &["auditor".into()])?;
    let manager = tokens.issue_for("manager-1", &[], Some(MANAGER))?;
    tokens.write(&home.join(super::serve::TOKENS_FILE))?;

    let load = Instant::now();
    let served = Served::start(home, cache, &sandbox).await?;
    println!(
        "server: {} plugins loaded in {} ms, workflow `offboarding` (8 steps, SLA 24h)",
        served.plugins,
        load.elapsed().as_millis()
    );
    let api = Api {
        base: served.base.clone(),
        http: reqwest::Client::new(),
        hr,
        security,
        manager,
    };

    // HR imports the leavers ahead of the end of their last day: one
    // ticket per row, each cut off in their own zone a few seconds from now.
    let cut = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(CUT_AHEAD).expect("a few seconds"))
        .expect("a few seconds from now");
    let mut csv = String::from(
        "subject,employee_id,last_day,time_zone,collect_by,cut_off,manager,legal_hold\n",
    );
    for i in 1..=args.leavers {
        let zone = ZONES[(i as usize - 1) % ZONES.len()];
        let local = cut.to_zoned(jiff::tz::TimeZone::get(zone).expect("bundled zone"));
        // The equipment is due back by the cut (17:00 and noon by default).
        let cut_off = local.strftime("%H:%M:%S").to_string();
        csv.push_str(&format!(
            "user{i}@example.com,E{:05},{},{zone},{cut_off},{cut_off},{MANAGER},{}\n",
            1000 + i,
            local.date(),
            if i % 3 == 1 { "yes" } else { "no" }
        ));
    }
    let report = api
        .call(
            api.http
                .post(format!("{}/v1/imports?workflow=offboarding", api.base))
                .header("content-type", "text/csv")
                .body(csv),
            &api.hr,
        )
        .await?;
    let batch = report["batch"].as_str().unwrap_or_default().to_string();
    println!(
        "\nhr-importer imported {} leavers as batch {batch}: {} tickets, one per person",
        args.leavers, report["created"]
    );
    println!(
        "  their access is cut at the end of their last day in their own zone, {} s from now\n  (the workflow's defaults are noon for the equipment and 17:00 for access; the demo\n  sets `collect_by` and `cut_off` to the same few seconds ahead, so it finishes quickly)",
        CUT_AHEAD.as_secs()
    );

    // Follow the batch: the manager does each collection task from their
    // inbox, and security approves each wipe as it comes up.
    let bar = ProgressBar::new(u64::from(args.leavers)).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} offboarded  {msg}").expect("template"),
    );
    let mut approved = std::collections::BTreeSet::new();
    let mut collected = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    let summary = loop {
        let b = api.get(&format!("/v1/batches/{batch}")).await?;
        bar.set_position(b["finished"].as_u64().unwrap_or(0));
        bar.set_message(
            b["by_state"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        );
        let inbox = api
            .call(
                api.http.get(format!("{}/v1/tasks?mine=true", api.base)),
                &api.manager,
            )
            .await?;
        for task in inbox["tasks"].as_array().into_iter().flatten() {
            let (id, step) = (
                task["ticket"].as_str().unwrap_or_default(),
                task["step"].as_str().unwrap_or_default(),
            );
            // One leaver in seven lost their phone: the manager says so.
            let lost_phone = task["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("user7@"));
            let checklist: serde_json::Map<String, Value> = task["checklist"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|item| {
                    (
                        item.to_string(),
                        Value::Bool(!(lost_phone && item == "phone")),
                    )
                })
                .collect();
            api.call(
                api.http
                    .post(format!("{}/v1/tickets/{id}/steps/{step}/complete", api.base))
                    .json(&serde_json::json!({
                        "note": if lost_phone { "phone lost on a trip; reported to security" } else { "all returned at the desk" },
                        "checklist": checklist,
                    })),
                &api.manager,
            )
            .await?;
            collected += 1;
        }
        for t in b["tickets"].as_array().into_iter().flatten() {
            let id = t["id"].as_str().unwrap_or_default();
            if t["state"] == "waiting_approval" && approved.insert(id.to_string()) {
                api.call(
                    api.http
                        .post(format!("{}/v1/tickets/{id}/approve", api.base))
                        .json(&serde_json::json!({ "comment": "device collected by IT; wipe approved" })),
                    &api.security,
                )
                .await?;
            }
        }
        if b["finished"] == b["total"] && b["import"].is_null() {
            break b;
        }
        if Instant::now() > deadline {
            bar.abandon();
            return Err(Exit::Refused(
                "the demo did not finish within 5 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    println!("  {collected} equipment collections done by {MANAGER} from their inbox");

    print_summary(&api, &summary, approved.len(), started).await?;

    if keep_serving(args) {
        println!(
            "\nweb UI: {} (sign in with a token below; Ctrl-C stops the demo)",
            api.base
        );
        println!("  security-approver  {}", api.security);
        println!("  auditor            {auditor}");
        let _ = tokio::signal::ctrl_c().await;
    } else {
        println!("\n(run `itsm serve --sandbox` to keep a server and its web UI up)");
    }
    served.stop().await;
    Ok(())
}

async fn print_summary(
    api: &Api,
    batch: &Value,
    approvals: usize,
    started: Instant,
) -> Result<(), Exit> {
    let tickets: Vec<Value> = batch["tickets"].as_array().cloned().unwrap_or_default();
    let mut steps = 0;
    let mut retries = 0;
    let mut calls = 0;
    let mut requests = 0;
    let mut durations = Vec::new();
    let mut first = None;
    let mut no_device = 0;
    let mut shown_full = false;
    let mut holds = 0;
    let mut late_ms = Vec::new();
    println!("access cut, against each leaver's last day:");
    for t in &tickets {
        let id = t["id"].as_str().unwrap_or_default();
        let d = api.get(&format!("/v1/tickets/{id}")).await?;
        let trail = d["trail"].as_array().cloned().unwrap_or_default();
        let by_step = &d["ticket"]["steps"];
        no_device += usize::from(by_step["wipe-laptop"]["status"] == "skipped");
        holds += usize::from(by_step["mail-hold"]["status"] == "succeeded");
        let scheduled = trail
            .iter()
            .find(|e| e["kind"] == "step_scheduled" && e["step"] == "disable-account");
        let cut_ms = by_step["disable-account"]["attempts"][0]["started_ms"].as_u64();
        if let (Some(s), Some(cut_ms)) = (scheduled, cut_ms) {
            let due = s["data"]["at_ms"].as_u64().unwrap_or(0);
            late_ms.push(cut_ms.saturating_sub(due));
            if late_ms.len() <= 3 {
                println!(
                    "  {:<20} due {}: cut {} ms after",
                    d["ticket"]["subject"].as_str().unwrap_or_default(),
                    s["data"]["at"].as_str().unwrap_or_default(),
                    cut_ms.saturating_sub(due)
                );
            }
        }
        retries += trail
            .iter()
            .filter(|e| e["kind"] == "retry_scheduled")
            .count();
        for s in d["ticket"]["steps"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, s)| s)
        {
            steps += usize::from(s["status"] == "succeeded");
            for a in s["attempts"].as_array().into_iter().flatten() {
                calls += 1;
                requests += a["requests"].as_array().map_or(0, Vec::len);
            }
        }
        if d["ticket"]["state"] != "succeeded" {
            for (name, s) in d["ticket"]["steps"].as_object().into_iter().flatten() {
                if s["status"] == "failed" {
                    let last = s["attempts"].as_array().and_then(|a| a.last()).cloned();
                    println!(
                        "  {id} ({}) failed at {name}: {}",
                        d["ticket"]["subject"].as_str().unwrap_or_default(),
                        last.map(|a| a["result"]["error"]["message"].to_string())
                            .unwrap_or_default()
                    );
                }
            }
        }
        let created = d["ticket"]["created_ms"].as_u64().unwrap_or(0);
        let updated = d["ticket"]["updated_ms"].as_u64().unwrap_or(0);
        durations.push(updated.saturating_sub(created));
        // Show the trail of a leaver who went through every step.
        let every_step = by_step["wipe-laptop"]["status"] == "succeeded"
            && by_step["mail-hold"]["status"] == "succeeded";
        if first.is_none() || (every_step && !shown_full) {
            shown_full = every_step;
            first = Some(d);
        }
    }
    late_ms.sort_unstable();
    if late_ms.len() > 3 {
        println!("  ... and {} more", late_ms.len() - 3);
    }
    println!(
        "  {} of {} cut at or after the end of their last day, none before: {} to {} ms after it\n",
        late_ms.len(),
        tickets.len(),
        late_ms.first().copied().unwrap_or(0),
        late_ms.last().copied().unwrap_or(0)
    );
    durations.sort_unstable();
    let succeeded = tickets.iter().filter(|t| t["state"] == "succeeded").count();
    let median = durations.get(durations.len() / 2).copied().unwrap_or(0);
    let worst = durations.last().copied().unwrap_or(0);
    println!("summary");
    println!(
        "  tickets            {succeeded}/{} succeeded (one per leaver)",
        tickets.len()
    );
    println!(
        "  steps              {steps} done, every plugin step verified ({calls} plugin calls)"
    );
    println!("  approvals          {approvals} laptop wipes approved by security-approver");
    println!("  no managed device  {no_device} leavers: wipe skipped, nobody asked");
    println!("  legal holds        {holds} mailboxes held (asked for by HR)");
    println!("  retries survived   {retries} (429 + Retry-After from the sandbox)");
    println!("  outbound requests  {requests}");
    println!(
        "  time per ticket    median {:.1} s, worst {:.1} s from import, against an SLA of 24 h ({:.4}% of it)",
        median as f64 / 1000.0,
        worst as f64 / 1000.0,
        worst as f64 / 864_000.0
    );
    println!(
        "  wall time          {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if let Some(d) = first {
        let t = &d["ticket"];
        println!(
            "\ntrail of {} ({}), {}:",
            t["id"].as_str().unwrap_or_default(),
            t["subject"].as_str().unwrap_or_default(),
            if d["trail_verified"] == true {
                "hash chain verified"
            } else {
                "HASH CHAIN BROKEN"
            }
        );
        for e in d["trail"].as_array().into_iter().flatten() {
            let kind = e["kind"].as_str().unwrap_or_default();
            let step = e["step"].as_str().unwrap_or("");
            let detail = match kind {
                "step_succeeded" | "step_verified" => e["data"]["evidence"]["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                "approved" | "task_completed" => {
                    format!("by {}", e["principal"].as_str().unwrap_or_default())
                }
                "step_scheduled" => format!("at {}", e["data"]["at"].as_str().unwrap_or_default()),
                "task_assigned" => {
                    format!("to {}", e["data"]["assignee"].as_str().unwrap_or_default())
                }
                "step_skipped" => format!(
                    "{} was false",
                    e["data"]["when"].as_str().unwrap_or_default()
                ),
                "retry_scheduled" => "rate limited; retrying".to_string(),
                "created" => format!("by {}", e["principal"].as_str().unwrap_or_default()),
                _ => String::new(),
            };
            println!(
                "  {:>3} {:<18} {:<18} {detail}",
                e["seq"].as_u64().unwrap_or(0),
                kind,
                step
            );
        }
    }
    Ok(())
}
