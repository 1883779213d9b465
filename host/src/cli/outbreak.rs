//! `itsm demo --scenario outbreak`: incidents, a problem, a change and a
//! catalog request, end to end against the sandbox.
//!
//! The sandbox plays an antivirus console: 40 alerts of one worm from 30
//! workstations reach the signed hook (`examples/outbreak/hooks.toml`),
//! one incident each; the 5th opens one problem record, and the rest join
//! it. An operator raises the bundled emergency change that blocks the
//! worm's port at the firewall, naming the problem it fixes (the workflow
//! relates them); the committee (security and the CIO, 2 of 3 groups)
//! approves it after reading its rollback plan; it is applied and verified against the
//! firewall double, then reviewed. The service desk contains each incident,
//! security closes the problem, and a new joiner requests Slack from the
//! service catalog through the same call the web UI's Request page makes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Exit;
use super::demo::{Served, call};
use super::serve::Sandbox;
use crate::auth::TokenFile;
use crate::bundled::{EMERGENCY_CHANGE_WORKFLOW, SLACK_ACCESS_WORKFLOW};

/// The worm every alert reports.
const WORM: &str = "Worm.Win32.Conficker";
/// Alerts sent, and the workstations they come from.
const ALERTS: usize = 40;
const WORKSTATIONS: usize = 30;

/// The people of the scenario, by token.
struct People {
    operator: String,
    security: String,
    cio: String,
    cab: String,
    desk: String,
    joiner: String,
}

/// The scenario's server on `base`.
struct Demo {
    base: String,
    http: reqwest::Client,
    people: People,
}

impl Demo {
    async fn get(&self, path: &str) -> Result<Value, Exit> {
        let req = self.http.get(format!("{}{path}", self.base));
        call(req, &self.people.operator).await
    }

    async fn post(&self, path: &str, body: Value, token: &str) -> Result<Value, Exit> {
        let req = self.http.post(format!("{}{path}", self.base)).json(&body);
        call(req, token).await
    }

    /// Wait until ticket `id` is in `state` (at most a minute).
    async fn until(&self, id: &str, state: &str) -> Result<Value, Exit> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.get(&format!("/v1/tickets/{id}")).await?;
            if view["ticket"]["state"] == state {
                return Ok(view);
            }
            if Instant::now() > deadline {
                return Err(Exit::Refused(format!(
                    "{id} did not reach {state} within a minute (it is {})",
                    view["ticket"]["state"]
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The home's files: the scenario's workflows, their settings pointed at
/// the sandbox, and the hook.
fn write_home(home: &std::path::Path, sandbox: &Sandbox) -> Result<(), Exit> {
    let write = |rel: &str, text: &str| {
        let path = home.join(rel);
        std::fs::write(&path, text).map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))
    };
    std::fs::create_dir_all(home.join("workflows"))
        .map_err(|e| Exit::Usage(format!("{}: {e}", home.display())))?;
    write(
        "workflows/malware-incident.toml",
        include_str!("../../../examples/outbreak/malware-incident.toml"),
    )?;
    write(
        "workflows/malware-outbreak.toml",
        include_str!("../../../examples/outbreak/malware-outbreak.toml"),
    )?;
    write("workflows/emergency-change.toml", EMERGENCY_CHANGE_WORKFLOW)?;
    write("workflows/slack-access.toml", SLACK_ACCESS_WORKFLOW)?;
    write(
        "hooks.toml",
        include_str!("../../../examples/outbreak/hooks.toml"),
    )?;
    let world = &sandbox.world;
    let settings = format!(
        "[emergency-change]\nchange_api_url = {:?}\n[slack-access]\nslack_scim_url = {:?}\n",
        world.change_settings()["change_api_url"],
        world.settings()["slack_scim_url"],
    );
    write("settings.toml", &settings)
}

pub(crate) async fn run_in(
    home: &std::path::Path,
    cache: &std::path::Path,
    sandbox: Sandbox,
    started: Instant,
    keep_serving: bool,
) -> Result<(), Exit> {
    write_home(home, &sandbox)?;
    let mut tokens = TokenFile::default();
    let people = People {
        operator: tokens.issue("soc-operator", &["operator".into()])?,
        security: tokens.issue("sec-lead", &["approver".into(), "security".into()])?,
        cio: tokens.issue("cio", &["approver".into(), "cio".into()])?,
        cab: tokens.issue("cab-chair", &["cab".into()])?,
        desk: tokens.issue("desk-1", &["service-desk".into()])?,
        joiner: tokens.issue_for("new-joiner", &[], Some("newhire@example.com"))?,
    };
    tokens.write(&home.join(super::serve::TOKENS_FILE))?;
    let hook_secret = sandbox.world.secrets()["av_hook"].clone();
    let served = Served::start(home, cache, &sandbox).await?;
    let demo = Demo {
        base: served.base.clone(),
        http: reqwest::Client::new(),
        people,
    };
    let result = scenario(&demo, &hook_secret, &sandbox, started).await;
    if result.is_ok() && keep_serving {
        println!(
            "\nweb UI: {} (sign in with a token below; Ctrl-C stops the demo)",
            demo.base
        );
        println!(
            "  new-joiner (a person: \"Request\" shows the catalog)  {}",
            demo.people.joiner
        );
        println!(
            "  sec-lead (security approver)                       {}",
            demo.people.security
        );
        println!(
            "  soc-operator (every ticket)                        {}",
            demo.people.operator
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    served.stop().await;
    result
}

async fn scenario(
    demo: &Demo,
    hook_secret: &str,
    sandbox: &Sandbox,
    started: Instant,
) -> Result<(), Exit> {
    // 1. The antivirus console's alerts, signed, one at a time.
    let mut problems = std::collections::BTreeSet::new();
    let mut incidents = Vec::new();
    for i in 0..ALERTS {
        let body = json!({
            "alert_id": format!("av-{i:04}"),
            "host": format!("WS-{:02}", i % WORKSTATIONS + 1),
            "signature": WORM,
        })
        .to_string();
        let ts = crate::ticket::now_ms() / 1000;
        let answer = call(
            demo.http
                .post(format!("{}/v1/hooks/antivirus", demo.base))
                .header("content-type", "application/json")
                .header("x-itsm-timestamp", ts.to_string())
                .header(
                    "x-itsm-signature",
                    crate::intake::webhook::sign(hook_secret.as_bytes(), ts, body.as_bytes()),
                )
                .body(body),
            "",
        )
        .await?;
        incidents.extend(
            answer["tickets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
        problems.extend(
            answer["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
    }
    let problems: Vec<String> = problems.into_iter().collect();
    if problems.len() != 1 {
        return Err(Exit::Refused(format!(
            "the alerts made {} problems, not one: {problems:?}",
            problems.len()
        )));
    }
    let problem = problems[0].clone();
    let linked = demo
        .get(&format!("/v1/tickets?related_to={problem}&limit=1000"))
        .await?;
    println!(
        "\nantivirus console: {ALERTS} alerts of {WORM} from {WORKSTATIONS} workstations, signed, through POST /v1/hooks/antivirus"
    );
    println!(
        "  {} incidents (one per alert); the 5th within 15 min opened problem {problem}, which lists {} of them",
        incidents.len(),
        linked["total"]
    );

    // 2. The emergency change that fixes it: block SMB at the firewall.
    let change = demo
        .post(
            "/v1/tickets",
            json!({
                "workflow": "emergency-change",
                "subject": "Block SMB (445) while the worm is cleaned up",
                "inputs": { "rule_id": "block-smb", "action": "deny", "port": 445,
                            "source": "0.0.0.0/0", "reason": format!("{WORM} spreads over SMB"),
                            "problem": problem },
            }),
            &demo.people.operator,
        )
        .await?;
    let change = change["id"].as_str().unwrap_or_default().to_string();
    let view = demo.until(&change, "waiting_approval").await?;
    println!("\nsoc-operator raised emergency change {change}, related to {problem} (fixes)");
    for undo in view["rollback_plan"].as_array().into_iter().flatten() {
        println!(
            "  rollback plan, read by the committee: step {} undone by {}",
            undo["step"].as_str().unwrap_or_default(),
            undo["undo"].as_str().unwrap_or_default()
        );
    }
    for (token, who) in [
        (&demo.people.security, "sec-lead"),
        (&demo.people.cio, "cio"),
    ] {
        demo.post(
            &format!("/v1/tickets/{change}/approve"),
            json!({ "comment": "Contain the outbreak now" }),
            token,
        )
        .await?;
        println!("  approved by {who}");
    }
    let view = demo.until(&change, "waiting_task").await?;
    let apply = &view["ticket"]["steps"]["apply"];
    println!(
        "  applied: {}",
        apply["evidence"]["summary"].as_str().unwrap_or_default()
    );
    println!(
        "  verified: {}",
        apply["verification"]["summary"]
            .as_str()
            .unwrap_or_default()
    );
    let rules = sandbox.world.firewall.rules();
    println!(
        "  the firewall (sandbox) now holds {} rule(s): {}",
        rules.len(),
        rules
            .iter()
            .map(|(id, r)| format!("{id} {} {} from {}", r.action, r.port, r.source))
            .collect::<Vec<_>>()
            .join(", ")
    );
    demo.post(
        &format!("/v1/tickets/{change}/steps/review/complete"),
        json!({ "note": "Blocked within the hour; no service used SMB from outside",
                "checklist": { "planned outcome reached": true, "no incident caused": true } }),
        &demo.people.cab,
    )
    .await?;
    demo.until(&change, "succeeded").await?;
    println!("  reviewed by cab-chair: the change is done");

    // 3. The service desk contains each incident; security closes the problem.
    for id in &incidents {
        demo.post(
            &format!("/v1/tickets/{id}/steps/contain/complete"),
            json!({ "note": "isolated, cleaned, back on the network",
                    "checklist": { "isolated": true, "cleaned": true } }),
            &demo.people.desk,
        )
        .await?;
    }
    demo.post(
        &format!("/v1/tickets/{problem}/steps/root-cause/complete"),
        json!({ "note": format!("SMB open to the internet; closed by change {change}"),
                "checklist": { "root cause found": true, "fixing change done": true } }),
        &demo.people.security,
    )
    .await?;
    let view = demo.until(&problem, "succeeded").await?;
    let problem_verified = view["trail_verified"] == true;
    let closed = demo
        .get("/v1/tickets?workflow=malware-incident&state=succeeded")
        .await?;
    println!(
        "\ndesk-1 contained {} incidents; sec-lead resolved problem {problem} ({} relations: its incidents and its change)",
        closed["total"],
        view["ticket"]["links"].as_array().map_or(0, Vec::len)
    );

    // 4. A new joiner asks for Slack from the service catalog: the call the
    // web UI's Request page makes, as the person.
    let request = demo
        .post(
            "/v1/catalog/slack-access",
            json!({ "inputs": { "team": "support" } }),
            &demo.people.joiner,
        )
        .await?;
    let id = request["id"].as_str().unwrap_or_default().to_string();
    let view = demo.until(&id, "succeeded").await?;
    println!(
        "\nnew-joiner requested \"Access to Slack\" from the catalog (pre-approved): {id} for {}, {}",
        view["ticket"]["subject"].as_str().unwrap_or_default(),
        view["ticket"]["steps"]["grant"]["verification"]["summary"]
            .as_str()
            .unwrap_or_default()
    );
    let verified = |ok: bool| if ok { "verified" } else { "BROKEN" };
    println!(
        "\nthe problem's trail: {}; the request's trail: {}; wall time {:.1} s",
        verified(problem_verified),
        verified(view["trail_verified"] == true),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
