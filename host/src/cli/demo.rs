//! `itsm demo`: the main job on embedded defaults. Starts the SCIM sandbox,
//! offboards a batch of sample leavers with the bundled `scim-deprovision`
//! plugin (one run per leaver, retried through injected rate limits, then
//! verified), and prints a summary and one leaver's evidence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::Exit;
use crate::bundled::SCIM_DEPROVISION;
use crate::runtime::{
    CallReport, FailureKind, Grants, Op, Outcome, Plugin, Runtime, RuntimeConfig, StepInput,
};
use crate::sandbox::scim::{BASE_PATH, Faults, Scim};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many leavers to offboard.
    #[arg(long, default_value_t = 25)]
    leavers: u32,
    /// Answer every Nth SCIM request with 429 + Retry-After (0: no faults).
    #[arg(long, default_value_t = 7)]
    rate_limit_every: u32,
}

/// Attempts per step before the demo gives up on a leaver.
const MAX_ATTEMPTS: u32 = 6;

struct LeaverResult {
    index: u32,
    subject: String,
    attempts: u32,
    reports: Vec<CallReport>,
    ok: bool,
    elapsed: Duration,
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), Exit> {
    let started = Instant::now();
    let token = format!("demo-{:016x}", rand::random::<u64>());
    let scim = Scim::new(Some(&token));
    let staff = args.leavers + 5;
    for i in 1..=staff {
        scim.add_user(&format!("user{i}@example.com"), &format!("User {i}"));
    }
    if args.rate_limit_every > 0 {
        scim.set_faults(Faults {
            every: Some(args.rate_limit_every),
            every_status: Some(429),
            retry_after_secs: 1,
            ..Faults::default()
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Exit::Usage(format!("cannot listen on loopback: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(e.to_string()))?;
    let server = scim.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    let base_url = format!("http://{addr}{BASE_PATH}");
    println!(
        "SCIM sandbox (a local test double) at {base_url}: {staff} users, a 429 every {} requests",
        args.rate_limit_every
    );

    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(super::data_dir().join("cache")),
        max_instances: 16,
        ..RuntimeConfig::default()
    })?;
    let load = Instant::now();
    let plugin = runtime.load(SCIM_DEPROVISION.manifest()?, SCIM_DEPROVISION.wasm)?;
    println!(
        "plugin {} {} loaded in {} ms ({:?}), sha256 {}",
        plugin.manifest().name,
        plugin.manifest().version,
        load.elapsed().as_millis(),
        plugin.code_source(),
        &plugin.wasm_sha256()[..16]
    );
    let grants = Arc::new(Grants {
        config: [("base_url".to_string(), base_url.clone())].into(),
        secrets: [("scim_token".to_string(), token.clone())].into(),
    });

    println!("offboarding {} leavers, one ticket each:", args.leavers);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=args.leavers {
        let plugin = plugin.clone();
        let grants = grants.clone();
        tasks.spawn(async move { offboard(&plugin, &grants, i).await });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let r = joined.map_err(|e| Exit::Usage(format!("demo task failed: {e}")))?;
        println!(
            "  [{:>2}/{}] {:<22} {} after {} attempt(s), {} ms",
            results.len() + 1,
            args.leavers,
            r.subject,
            if r.ok {
                "deactivated and verified"
            } else {
                "FAILED"
            },
            r.attempts,
            r.elapsed.as_millis()
        );
        results.push(r);
    }
    results.sort_by_key(|r| r.index);

    let ok = results.iter().filter(|r| r.ok).count();
    let retries: u32 = results.iter().map(|r| r.attempts.saturating_sub(1)).sum();
    let requests: usize = results
        .iter()
        .flat_map(|r| &r.reports)
        .map(|rep| rep.requests.len())
        .sum();
    let still_active = scim
        .users()
        .iter()
        .filter(|u| u["active"] == json!(true))
        .count();
    let mut times: Vec<u128> = results.iter().map(|r| r.elapsed.as_millis()).collect();
    times.sort_unstable();
    println!();
    println!("summary");
    println!(
        "  tickets            {} ({} succeeded, {} failed)",
        results.len(),
        ok,
        results.len() - ok
    );
    println!("  steps              {} run + {} verify", ok, ok);
    println!("  retries survived   {retries} (sandbox answered 429 with Retry-After)");
    println!("  outbound requests  {requests}");
    println!(
        "  time per ticket    median {} ms, max {} ms (SLA 24 h)",
        times.get(times.len() / 2).unwrap_or(&0),
        times.last().unwrap_or(&0)
    );
    println!(
        "  sandbox state      {} of {staff} users still active (the {} who are not leaving)",
        still_active,
        staff - args.leavers
    );
    println!(
        "  total              {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if let Some(first) = results.first() {
        println!();
        println!("evidence for {} (one JSON line per call):", first.subject);
        for report in &first.reports {
            let line = json!({
                "op": report.op,
                "plugin": format!("{}@{}", report.plugin, report.version),
                "wasm_sha256": report.wasm_sha256,
                "outcome": report.outcome,
                "requests": report.requests,
            });
            println!("{line}");
        }
    }
    if ok == results.len() && still_active == (staff - args.leavers) as usize {
        Ok(())
    } else {
        Err(Exit::StepFailed)
    }
}

/// Run then verify one leaver, retrying retryable failures.
async fn offboard(plugin: &Plugin, grants: &Grants, i: u32) -> LeaverResult {
    let started = Instant::now();
    let subject = format!("user{i}@example.com");
    let mut reports = Vec::new();
    let mut attempts = 0;
    let mut ok = false;
    'ops: for op in [Op::Run, Op::Verify] {
        for attempt in 1..=MAX_ATTEMPTS {
            if op == Op::Run {
                attempts = attempt;
            }
            let input = StepInput {
                ticket_id: format!("T-{i:04}"),
                step: "disable-saas".into(),
                subject: subject.clone(),
                attempt,
                ..StepInput::default()
            };
            let report = match plugin.call(op, &input, grants).await {
                Ok(r) => r,
                Err(_) => break 'ops,
            };
            let failure = report.failure().cloned();
            reports.push(report);
            match failure {
                None => {
                    ok = op == Op::Verify;
                    continue 'ops;
                }
                Some(f) if f.kind == FailureKind::Retryable && attempt < MAX_ATTEMPTS => {
                    let wait = f.retry_after_ms.unwrap_or(200 << attempt);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                Some(_) => break 'ops,
            }
        }
        break;
    }
    // Keep only the successful calls plus failures for the evidence print.
    reports.retain(|r| matches!(r.outcome, Outcome::Succeeded { .. }) || r.op == Op::Run);
    LeaverResult {
        index: i,
        subject,
        attempts,
        reports,
        ok,
        elapsed: started.elapsed(),
    }
}
