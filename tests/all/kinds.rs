//! Kinds of work and priority through `itsm serve`: an incident workflow's
//! tickets carry a priority read off its impact x urgency matrix, and the
//! SLA the priority sets; a request workflow is unchanged by it.

use serde_json::{Value, json};

use crate::support::{
    client_as, create_ticket, create_token, get_json, install_signed, start_server, wait_for_state,
};

const INCIDENT: &str = r#"
name = "incident"
version = "1"
kind = "incident"
sla = "3d"
[inputs.impact]
type = "enum"
values = ["high", "medium", "low"]
required = true
[inputs.urgency]
type = "enum"
values = ["high", "medium", "low"]
required = true
[priority]
matrix.high = { high = "P1", medium = "P2", low = "P3" }
matrix.medium = { high = "P2", medium = "P3", low = "P4" }
matrix.low = { high = "P3", medium = "P4", low = "P4" }
sla = { P1 = "4h", P2 = "8h" }
[[steps]]
name = "triage"
task = { group = "service-desk", instructions = "Restore the service." }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_s_priority_comes_from_its_matrix_and_sets_its_sla() {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/noop", "itsm-plugin-test-noop");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/incident.toml"), INCIDENT).unwrap();
    std::fs::write(
        home.path().join("workflows/leaver.toml"),
        "name = \"leaver\"\nsla = \"24h\"\n[[steps]]\nname = \"disable\"\nplugin = \"noop\"\n",
    )
    .unwrap();
    let server = start_server(home.path(), &[]).await;
    let (base, ops) = (server.base.clone(), server.client());
    let hour = 3_600_000u64;

    for (impact, urgency, priority, sla_hours) in [
        ("high", "high", "P1", 4),
        ("high", "medium", "P2", 8),
        ("low", "low", "P4", 72),
    ] {
        let id = create_ticket(
            &ops,
            &base,
            json!({
                "workflow": "incident",
                "subject": format!("mail-{impact}-{urgency}"),
                "inputs": { "impact": impact, "urgency": urgency },
            }),
        )
        .await;
        let view = get_json(&ops, &format!("{base}/v1/tickets/{id}")).await;
        assert_eq!(view["kind"], "incident", "{view:#}");
        assert_eq!(view["priority"], priority, "{view:#}");
        let created = view["ticket"]["created_ms"].as_u64().unwrap();
        assert_eq!(
            view["sla"]["deadline_ms"].as_u64().unwrap(),
            created + sla_hours * hour,
            "{impact}/{urgency}: {view:#}"
        );
    }

    // A value off the matrix is refused, naming the input.
    let r = ops
        .post(format!("{base}/v1/tickets"))
        .json(&json!({
            "workflow": "incident",
            "subject": "vpn",
            "inputs": { "impact": "catastrophic", "urgency": "high" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("impact"), "{body}");

    // A workflow that names no kind is a request, with no priority.
    let id = create_ticket(
        &ops,
        &base,
        json!({ "workflow": "leaver", "subject": "ann@example.com" }),
    )
    .await;
    let view = get_json(&ops, &format!("{base}/v1/tickets/{id}")).await;
    assert_eq!(view["kind"], "request", "{view:#}");
    assert!(view["priority"].is_null(), "{view:#}");
    let created = view["ticket"]["created_ms"].as_u64().unwrap();
    assert_eq!(
        view["sla"]["deadline_ms"].as_u64().unwrap(),
        created + 24 * hour
    );
}

const TRIAGED: &str = r#"
name = "incident"
version = "1"
kind = "incident"
[inputs.service]
type = "string"
required = true
[inputs.impact]
type = "enum"
values = ["high", "low"]
default = "low"
[[triage]]
when = "inputs.service == 'email'"
group = "messaging"
[[triage]]
when = "inputs.impact == 'high'"
group = "major-incident"
[[steps]]
name = "resolve"
task = { group = "${triage}", instructions = "Restore the service." }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_is_routed_by_its_triage_rules_to_the_group_that_does_its_task() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(home.path().join("workflows/incident.toml"), TRIAGED).unwrap();
    let messaging = client_as(&create_token(home.path(), "mia", &["messaging"]));
    let desk = client_as(&create_token(home.path(), "dan", &["service-desk"]));
    let server = start_server(home.path(), &[]).await;
    let (base, ops) = (server.base.clone(), server.client());
    let create = |subject: &str, inputs: Value| {
        create_ticket(
            &ops,
            &base,
            json!({ "workflow": "incident", "subject": subject, "inputs": inputs }),
        )
    };
    let mail = create("mail down", json!({ "service": "email", "impact": "high" })).await;
    let vpn = create("vpn down", json!({ "service": "vpn", "impact": "high" })).await;
    let printer = create("printer jam", json!({ "service": "printing" })).await;

    let mail_view =
        wait_for_state(&ops, &format!("{base}/v1/tickets/{mail}"), "waiting_task").await;
    // The first rule that holds decides, in the ticket and in its trail.
    assert_eq!(
        mail_view["ticket"]["routed_to"], "messaging",
        "{mail_view:#}"
    );
    assert_eq!(
        mail_view["ticket"]["steps"]["resolve"]["task"]["group"],
        "messaging"
    );
    let triaged = mail_view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "triaged")
        .unwrap_or_else(|| panic!("{mail_view:#}"));
    assert_eq!(triaged["data"]["rule"], 1);
    assert_eq!(triaged["data"]["when"], "inputs.service == 'email'");
    let vpn_view = wait_for_state(&ops, &format!("{base}/v1/tickets/{vpn}"), "waiting_task").await;
    assert_eq!(vpn_view["ticket"]["routed_to"], "major-incident");

    // No rule holds: said so, and the task, with nobody to do it, fails
    // with the reason.
    let printer_view =
        wait_for_state(&ops, &format!("{base}/v1/tickets/{printer}"), "failed").await;
    assert!(printer_view["ticket"]["routed_to"].is_null());
    let text = printer_view["trail"].to_string();
    assert!(
        text.contains("triage routed the ticket to no group"),
        "{printer_view:#}"
    );

    // The routed group does the task; another group may not.
    let done = json!({ "note": "Restarted the mail relay", "checklist": {} });
    let r = desk
        .post(format!("{base}/v1/tickets/{mail}/steps/resolve/complete"))
        .json(&done)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a group with no part in it does not see it"
    );
    let r = messaging
        .post(format!("{base}/v1/tickets/{mail}/steps/resolve/complete"))
        .json(&done)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    wait_for_state(&ops, &format!("{base}/v1/tickets/{mail}"), "succeeded").await;
}

/// An incident whose SLA counts business hours from an anchor it names
/// (`sla_from`, an instant from its inputs) on a calendar, by priority.
const SCHEDULED_INCIDENT: &str = r#"
name = "planned-outage"
version = "1"
kind = "incident"
sla_from = "${inputs.starts}"
calendar = "office"
[calendars.office]
time_zone = "Europe/Paris"
hours = ["Mon-Fri 09:00-17:00"]
[inputs.impact]
type = "enum"
values = ["high", "low"]
required = true
[inputs.urgency]
type = "enum"
values = ["high", "low"]
required = true
[inputs.starts]
type = "datetime"
required = true
[priority]
matrix.high = { high = "P1", low = "P2" }
matrix.low = { high = "P2", low = "P3" }
sla = { P1 = "4h", P2 = "8h", P3 = "16h" }
[[steps]]
name = "restore"
task = { group = "service-desk", instructions = "Restore the service." }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sla_counts_business_hours_from_the_anchor_its_workflow_names() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/planned-outage.toml"),
        SCHEDULED_INCIDENT,
    )
    .unwrap();
    let server = start_server(home.path(), &[]).await;
    let (base, ops) = (server.base.clone(), server.client());
    // Friday 16:00 in Paris (15:00 UTC): a P1's 4 business hours are one
    // on Friday and three on Monday morning, so 12:00 Paris on Monday.
    let id = create_ticket(
        &ops,
        &base,
        json!({
            "workflow": "planned-outage",
            "subject": "mail migration",
            "inputs": { "impact": "high", "urgency": "high", "starts": "2030-01-04T15:00:00Z" },
        }),
    )
    .await;
    let view = get_json(&ops, &format!("{base}/v1/tickets/{id}")).await;
    assert_eq!(view["priority"], "P1", "{view:#}");
    let monday_noon_paris = 1_894_014_000_000u64; // 2030-01-07T11:00:00Z
    assert_eq!(
        view["sla"]["deadline_ms"].as_u64(),
        Some(monday_noon_paris),
        "{view:#}"
    );
    assert_eq!(view["sla"]["calendar"], "office");
    // Not at risk, nor late, days before it starts.
    assert_eq!(view["sla"]["at_risk"], false);
    assert!(view["sla"]["remaining_business_ms"].as_u64().unwrap() > 4 * 3_600_000);
}
