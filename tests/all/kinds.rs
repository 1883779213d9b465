//! Kinds of work and priority through `itsm serve`: an incident workflow's
//! tickets carry a priority read off its impact x urgency matrix, and the
//! SLA the priority sets; a request workflow is unchanged by it.

use serde_json::{Value, json};

use crate::support::{create_ticket, get_json, install_signed, start_server};

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
