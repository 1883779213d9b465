//! The bundled offboarding workflow configured as a deployment would be —
//! `workflows/offboarding.toml` in the home, its `[settings]` in
//! `settings.toml`, secrets in `ITSM_SECRET_*` — run by the real `itsm serve`
//! against the sandbox's doubles with rate limits on. The leaver's last day
//! has ended, so access is cut at once; their manager completes the
//! equipment task over the API.

use std::time::{Duration, Instant};

use itsm_sandbox::world::{Misbehaviour, World};
use serde_json::{Value, json};

use crate::support::{client_as, create_token, get_json, person_token, start_server_with_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_offboarding_runs_every_connector_and_proves_each_step() {
    let misbehave = Misbehaviour {
        rate_limit_every: Some(5),
        ..Misbehaviour::default()
    };
    let world = World::start(3, None, misbehave).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::copy(
        crate::support::plugin_dir("../workflows/offboarding.toml"),
        home.path().join("workflows/offboarding.toml"),
    )
    .unwrap();
    let mut settings = toml::Table::new();
    settings.insert(
        "offboarding".into(),
        toml::Value::try_from(world.settings()).unwrap(),
    );
    std::fs::write(
        home.path().join("settings.toml"),
        toml::to_string(&settings).unwrap(),
    )
    .unwrap();
    let env: Vec<(String, String)> = world
        .secrets()
        .into_iter()
        .map(|(k, v)| (format!("ITSM_SECRET_{}", k.to_ascii_uppercase()), v))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = start_server_with_env(home.path(), &[], &env).await;
    let base = server.base.clone();
    let security = client_as(&create_token(
        home.path(),
        "sec-lead",
        &["approver", "security"],
    ));
    let manager = client_as(&person_token(home.path(), "boss", "boss@example.com"));

    let created: Value = server
        .client()
        .post(format!("{base}/v1/tickets"))
        .json(&json!({
            "workflow": "offboarding",
            "subject": "user2@example.com",
            "inputs": {
                "last_day": "2026-01-05",
                "time_zone": "Europe/Paris",
                "manager": "boss@example.com",
                "legal_hold": "yes",
                "employee_id": "E01002",
            },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let url = format!("{base}/v1/tickets/{id}");
    let started = Instant::now();
    let mut approved = false;
    let mut collected = false;
    let detail = loop {
        let d = get_json(&security, &url).await;
        if d["ticket"]["steps"]["collect-equipment"]["status"] == "waiting_task" && !collected {
            let r = manager
                .post(format!("{url}/steps/collect-equipment/complete"))
                .json(&json!({
                    "note": "all back",
                    "checklist": { "laptop": true, "badge": true, "keys": true, "corporate card": true, "phone": true },
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            collected = true;
        }
        if d["ticket"]["state"] == "waiting_approval" && !approved {
            let r = security
                .post(format!("{url}/approve"))
                .json(&json!({ "comment": "laptop returned" }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            approved = true;
        }
        if d["ticket"]["state"] == "succeeded" || d["ticket"]["state"] == "failed" {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail["ticket"]["state"], "succeeded", "{detail:#}");
    assert_eq!(detail["trail_verified"], true);
    assert_eq!(detail["ticket"]["workflow_version"], "3");
    // The cut was due at 17:00 Paris on the last day, long past: at once.
    let scheduled = detail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "step_scheduled" && e["step"] == "disable-account");
    assert!(scheduled.is_none(), "a past last day waits for nothing");
    assert_eq!(
        detail["ticket"]["steps"]["collect-equipment"]["task"]["done"]["by"],
        "boss"
    );

    // Each vendor shows the change.
    assert_eq!(
        world.graph.user("user2@example.com").unwrap()["accountEnabled"],
        false
    );
    assert!(world.graph.devices_of("user2@example.com").iter().all(|d| {
        d["deviceActionResults"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["actionName"] == "wipe"))
    }));
    assert_eq!(
        world.salesforce.user("user2@example.com").unwrap()["IsActive"],
        false
    );
    for app in ["slack", "zoom"] {
        assert_eq!(
            world.scim[app].user_by_name("user2@example.com").unwrap()["active"],
            false,
            "{app}"
        );
    }
    let held = world.vault.holds(&world.matter_id);
    assert!(held.iter().any(|h| {
        h["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["email"] == "user2@example.com")
    }));
    // Nobody else was touched.
    assert_eq!(
        world.graph.user("user1@example.com").unwrap()["accountEnabled"],
        true
    );

    // The trail holds, per step, the requests made and the read-back proof.
    let trail = detail["trail"].as_array().unwrap();
    let steps = [
        "disable-account",
        "mail-hold",
        "deprovision-slack",
        "deprovision-zoom",
        "deactivate-crm",
        "find-device",
        "wipe-laptop",
    ];
    for step in steps {
        let ran = trail
            .iter()
            .find(|e| e["kind"] == "step_succeeded" && e["step"] == step)
            .unwrap_or_else(|| panic!("{step} ran"));
        assert!(
            !ran["data"]["requests"].as_array().unwrap().is_empty(),
            "{step} requests"
        );
        assert!(
            ran["data"]["evidence"]["after"].is_object()
                || ran["data"]["evidence"]["after"].is_array(),
            "{step} evidence"
        );
        let proof = trail
            .iter()
            .find(|e| e["kind"] == "step_verified" && e["step"] == step)
            .unwrap_or_else(|| panic!("{step} verified"));
        assert!(
            proof["data"]["evidence"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("verified"),
            "{proof:#}"
        );
    }
    assert!(
        trail.iter().any(|e| e["kind"] == "retry_scheduled"),
        "rate limits were survived"
    );
    // The wipe ran after the approval, and only then.
    let approved_at = trail.iter().position(|e| e["kind"] == "approved").unwrap();
    let wipe_at = trail
        .iter()
        .position(|e| e["kind"] == "step_started" && e["step"] == "wipe-laptop")
        .unwrap();
    assert!(wipe_at > approved_at);
    // No secret reached the trail.
    let text = serde_json::to_string(&detail).unwrap();
    for (name, value) in world.secrets() {
        let probe = value.split(':').next_back().unwrap();
        assert!(!text.contains(probe), "secret {name} leaked");
    }
    // The mail hold's key-value state is visible, against its quota,
    // over the API and in `itsm plugin show`.
    let shown = get_json(&server.client(), &format!("{base}/v1/plugins/mail-hold")).await;
    let kv = &shown["kv"];
    assert!(kv["keys"].as_u64().unwrap() >= 1, "{shown:#}");
    assert!(kv["bytes"].as_u64().unwrap() > 0, "{shown:#}");
    assert_eq!(kv["max_keys"], 10_000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args([
            "plugin",
            "show",
            "mail-hold",
            "--server",
            &base,
            "--token",
            &server.operator,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("kv:      {} of 10000 keys", kv["keys"])),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A leaver filed three days ahead: the SLA's 24 hours count from the
    // cut at the end of their last day, so the ticket is neither at risk
    // nor late before their access is due (counted from the filing, it
    // would have been at risk after 18 hours and late after 24).
    let in_three_days =
        humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(3 * 86_400))
            .to_string()[..10]
            .to_string();
    let ahead = crate::support::create_ticket(
        &server.client(),
        &base,
        json!({
            "workflow": "offboarding",
            "subject": "user3@example.com",
            "inputs": { "last_day": in_three_days, "time_zone": "UTC", "cut_off": "17:00", "manager": "boss@example.com" },
        }),
    )
    .await;
    let filed = get_json(&server.client(), &format!("{base}/v1/tickets/{ahead}")).await;
    let cut = humantime::parse_rfc3339(&format!("{in_three_days}T17:00:00Z"))
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let created_ms = filed["ticket"]["created_ms"].as_u64().unwrap();
    assert!(
        cut > created_ms + 2 * 86_400_000,
        "the situation: filed days ahead"
    );
    let sla = &filed["sla"];
    assert_eq!(sla["deadline_ms"], cut + 86_400_000, "{filed:#}");
    assert_eq!(sla["at_risk_ms"], cut + 18 * 3_600_000, "{filed:#}");
    assert_eq!(sla["at_risk"], false);
    assert_eq!(sla["breached"], false);
    assert!(
        sla["remaining_ms"].as_u64().unwrap() > 3 * 86_400_000,
        "{sla}"
    );
}
