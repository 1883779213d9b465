//! The first-party connectors (real components built from `plugins/`)
//! against the sandbox's doubles of Microsoft Graph, Google Vault and
//! Salesforce: the exact requests each makes, its evidence, idempotency,
//! and retryable rate limits. `offboarding_e2e` runs them all through the
//! scheduler with faults on.

use itsm_host::bundled::{self, Bundled};
use itsm_host::runtime::{CallReport, FailureKind, Grants, Op, Outcome, Plugin, StepInput};
use itsm_sandbox::faults::Faults;
use itsm_sandbox::world::{Misbehaviour, World};
use serde_json::{Value, json};

use crate::support::{after_run, runtime};

fn plugin(b: Bundled) -> Plugin {
    runtime().load(b.manifest().unwrap(), b.wasm).unwrap()
}

fn input(subject: &str) -> StepInput {
    StepInput {
        ticket_id: "T-connectors".into(),
        step: "step".into(),
        subject: subject.into(),
        attempt: 1,
        idempotency_key: format!("T-connectors/{subject}"),
        ..StepInput::default()
    }
}

/// The workflow step's config for `plugin`, resolved against the world.
fn grants(world: &World, step: &str) -> Grants {
    let wf = itsm_host::workflow::Workflow::parse_with(
        bundled::OFFBOARDING_WORKFLOW,
        "offboarding.toml",
        &world.settings(),
    )
    .unwrap();
    let def = wf.step(step).unwrap();
    let mut secrets = world.secrets();
    for (wanted, supplied) in &def.secrets {
        let v = secrets[supplied].clone();
        secrets.insert(wanted.clone(), v);
    }
    Grants {
        config: def.config.clone(),
        secrets,
    }
}

fn succeeded(r: &CallReport) -> (Option<Value>, Value) {
    match &r.outcome {
        Outcome::Succeeded { outputs, evidence } => {
            (outputs.clone(), serde_json::to_value(evidence).unwrap())
        }
        Outcome::Failed { error } => panic!("{:?} failed: {error:?}\nlog: {:?}", r.op, r.log),
    }
}

/// Method and path of every API request a double answered 2xx, token requests left out.
fn api_calls(requests: &[itsm_sandbox::scim::SeenRequest], token_path: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|r| !r.uri.starts_with(token_path) && r.status < 300)
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_disable_disables_revokes_verifies_and_compensates() {
    let world = World::start(3, None, Misbehaviour::default())
        .await
        .unwrap();
    let p = plugin(bundled::ENTRA_DISABLE);
    let g = grants(&world, "disable-account");
    let user = world.graph.user("user2@example.com").unwrap();
    let id = user["id"].as_str().unwrap().to_string();

    let first = p
        .call(Op::Run, &input("user2@example.com"), &g)
        .await
        .unwrap();
    let (outputs, evidence) = succeeded(&first);
    assert_eq!(outputs.unwrap()["action"], "disabled");
    assert_eq!(evidence["before"]["accountEnabled"], true);
    assert_eq!(evidence["after"]["accountEnabled"], false);
    assert_eq!(evidence["after"]["signInSessionsRevoked"], true);
    assert_eq!(
        world.graph.user("user2@example.com").unwrap()["accountEnabled"],
        false
    );
    let calls = api_calls(&world.graph.requests(), "/sandbox-tenant/");
    assert_eq!(
        calls,
        [
            "GET /v1.0/users/user2%40example.com?$select=id,userPrincipalName,displayName,accountEnabled".to_string(),
            format!("PATCH /v1.0/users/{id}"),
            format!("POST /v1.0/users/{id}/revokeSignInSessions"),
        ]
    );
    let patch = world
        .graph
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(patch.body, Some(json!({ "accountEnabled": false })));
    assert!(patch.authorization.unwrap().starts_with("Bearer "));
    // The token came from the client-credentials flow the host ran.
    let token = world
        .graph
        .requests()
        .into_iter()
        .find(|r| r.uri.starts_with("/sandbox-tenant/oauth2/v2.0/token"))
        .unwrap();
    assert_eq!(
        token.body.as_ref().unwrap()["grant_type"],
        "client_credentials"
    );
    assert_eq!(
        token.body.as_ref().unwrap()["scope"],
        "https://graph.microsoft.com/.default"
    );

    let (_, proof) = succeeded(
        &p.call(Op::Verify, &input("user2@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(proof["after"]["accountEnabled"], false);
    // Again: nothing more to change.
    let (outputs, _) = succeeded(
        &p.call(Op::Run, &input("user2@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(outputs.unwrap()["action"], "already_disabled");
    assert_eq!(
        world
            .graph
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count(),
        1
    );
    // Undo what the first run did (the second changed nothing).
    let (_, undone) = succeeded(
        &p.call(
            Op::Compensate,
            &after_run(&input("user2@example.com"), &first),
            &g,
        )
        .await
        .unwrap(),
    );
    assert_eq!(undone["after"]["accountEnabled"], true);
    // A leaver the directory does not know: nothing to do, said so.
    let (outputs, evidence) = succeeded(
        &p.call(Op::Run, &input("ghost@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(
        (
            outputs.unwrap()["found"].clone(),
            evidence["after"]["present"].clone()
        ),
        (json!(false), json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_retryable_with_the_servers_retry_after() {
    let world = World::start(1, None, Misbehaviour::default())
        .await
        .unwrap();
    world.graph.set_faults(Faults {
        next: [429].into(),
        retry_after_secs: 3,
        ..Faults::default()
    });
    let p = plugin(bundled::ENTRA_DISABLE);
    let r = p
        .call(
            Op::Run,
            &input("user1@example.com"),
            &grants(&world, "disable-account"),
        )
        .await
        .unwrap();
    let Outcome::Failed { error } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(
        (error.kind, error.retry_after_ms),
        (FailureKind::Retryable, Some(3000))
    );
    assert_eq!(
        world.graph.user("user1@example.com").unwrap()["accountEnabled"],
        true,
        "nothing changed"
    );
    succeeded(
        &p.call(
            Op::Run,
            &input("user1@example.com"),
            &grants(&world, "disable-account"),
        )
        .await
        .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intune_wipe_wipes_each_device_once_and_verifies_the_action_state() {
    let world = World::start(2, None, Misbehaviour::default())
        .await
        .unwrap();
    let extra = world
        .graph
        .add_device("user1@example.com", "PHONE-1", "iOS");
    let p = plugin(bundled::INTUNE_WIPE);
    let g = grants(&world, "wipe-laptop");
    let (outputs, evidence) = succeeded(
        &p.call(Op::Run, &input("user1@example.com"), &g)
            .await
            .unwrap(),
    );
    let outputs = outputs.unwrap();
    assert_eq!(outputs["devices"], 2);
    assert_eq!(outputs["wiped"].as_array().unwrap().len(), 2);
    assert!(outputs["wiped"].as_array().unwrap().contains(&json!(extra)));
    assert!(
        evidence["before"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["wipe"].is_null())
    );
    let wipes: Vec<_> = world
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.uri.ends_with("/wipe"))
        .collect();
    assert_eq!(wipes.len(), 2);
    assert_eq!(
        wipes[0].body,
        Some(json!({ "keepEnrollmentData": false, "keepUserData": false }))
    );
    assert!(world.graph.requests().iter().any(|r| r.uri.starts_with("/v1.0/deviceManagement/managedDevices?$filter=userPrincipalName%20eq%20%27user1%40example.com%27")));
    // A retry after a crash must not wipe twice.
    let (again, _) = succeeded(
        &p.call(Op::Run, &input("user1@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(
        again.unwrap()["already_wiping"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        world
            .graph
            .requests()
            .iter()
            .filter(|r| r.uri.ends_with("/wipe"))
            .count(),
        2
    );
    let (_, proof) = succeeded(
        &p.call(Op::Verify, &input("user1@example.com"), &g)
            .await
            .unwrap(),
    );
    let states: Vec<&str> = proof["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["wipe"].as_str().unwrap())
        .collect();
    assert!(
        states.iter().all(|s| ["pending", "done"].contains(s)),
        "{states:?}"
    );
    // The other user's laptop was not touched.
    assert!(world.graph.devices_of("user2@example.com").iter().all(|d| {
        d["deviceActionResults"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_deactivate_freezes_then_deactivates_and_reads_back() {
    let world = World::start(2, None, Misbehaviour::default())
        .await
        .unwrap();
    let p = plugin(bundled::SALESFORCE_DEACTIVATE);
    let g = grants(&world, "deactivate-crm");
    let run = p
        .call(Op::Run, &input("user2@example.com"), &g)
        .await
        .unwrap();
    let (outputs, evidence) = succeeded(&run);
    assert_eq!(outputs.unwrap()["action"], "deactivated");
    assert_eq!(
        (
            evidence["before"]["IsActive"].clone(),
            evidence["before"]["IsFrozen"].clone()
        ),
        (json!(true), json!(false))
    );
    assert_eq!(
        (
            evidence["after"]["IsActive"].clone(),
            evidence["after"]["IsFrozen"].clone()
        ),
        (json!(false), json!(true))
    );
    let user = world.salesforce.user("user2@example.com").unwrap();
    assert_eq!(user["IsActive"], false);
    assert_eq!(
        world.salesforce.user_login("user2@example.com").unwrap()["IsFrozen"],
        true
    );
    let patches: Vec<_> = world
        .salesforce
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(
        patches[0].uri.contains("/sobjects/UserLogin/"),
        "freeze first: {}",
        patches[0].uri
    );
    assert_eq!(patches[0].body, Some(json!({ "IsFrozen": true })));
    assert!(
        patches[1]
            .uri
            .ends_with(&format!("/sobjects/User/{}", user["Id"].as_str().unwrap()))
    );
    assert_eq!(patches[1].body, Some(json!({ "IsActive": false })));
    let query = world
        .salesforce
        .requests()
        .into_iter()
        .find(|r| r.uri.contains("/query?q="))
        .unwrap();
    assert!(query.uri.contains("SELECT%20Id%2C%20Username%2C%20IsActive%20FROM%20User%20WHERE%20Username%20%3D%20%27user2%40example.com%27"), "{}", query.uri);
    let (_, proof) = succeeded(
        &p.call(Op::Verify, &input("user2@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(proof["after"]["IsActive"], false);
    let (_, undone) = succeeded(
        &p.call(
            Op::Compensate,
            &after_run(&input("user2@example.com"), &run),
            &g,
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        (
            undone["after"]["IsActive"].clone(),
            undone["after"]["IsFrozen"].clone()
        ),
        (json!(true), json!(false))
    );
}

/// Run, then compensate with that run's outputs, as the scheduler does:
/// the run's outputs and compensate's evidence summary.
async fn run_then_undo(p: &Plugin, g: &Grants, subject: &str) -> (Value, String) {
    let run = p.call(Op::Run, &input(subject), g).await.unwrap();
    let (outputs, _) = succeeded(&run);
    let comp = p
        .call(Op::Compensate, &after_run(&input(subject), &run), g)
        .await
        .unwrap();
    let (_, evidence) = succeeded(&comp);
    (
        outputs.unwrap(),
        evidence["summary"].as_str().unwrap().to_string(),
    )
}

/// Writes (anything but GET) a double answered, token requests left out.
fn writes(requests: &[itsm_sandbox::scim::SeenRequest], token_path: &str) -> Vec<String> {
    api_calls(requests, token_path)
        .into_iter()
        .filter(|c| !c.starts_with("GET "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_compensate_undoes_only_what_its_own_run_did() {
    let world = World::start(3, None, Misbehaviour::default())
        .await
        .unwrap();
    let p = plugin(bundled::ENTRA_DISABLE);
    let g = grants(&world, "disable-account");
    let enabled = |upn: &str| world.graph.user(upn).unwrap()["accountEnabled"].clone();

    // Normal: the run disabled the account; compensate re-enables it.
    let (outputs, summary) = run_then_undo(&p, &g, "user1@example.com").await;
    assert_eq!(outputs["action"], "disabled");
    assert!(summary.contains("re-enabled"), "{summary}");
    assert_eq!(enabled("user1@example.com"), true);

    // Already disabled before the ticket: stays disabled.
    world.graph.set_account_enabled("user2@example.com", false);
    let writes_before = writes(&world.graph.requests(), "/sandbox-tenant/").len();
    let (outputs, summary) = run_then_undo(&p, &g, "user2@example.com").await;
    assert_eq!(outputs["action"], "already_disabled");
    assert!(summary.starts_with("nothing to undo"), "{summary}");
    assert!(summary.contains("already disabled"), "{summary}");
    assert_eq!(enabled("user2@example.com"), false);
    let new_writes = writes(&world.graph.requests(), "/sandbox-tenant/")[writes_before..].to_vec();
    assert!(
        new_writes
            .iter()
            .all(|w| w.ends_with("/revokeSignInSessions")),
        "only the run's revoke, no PATCH: {new_writes:?}"
    );

    // Missing: nothing found, nothing to undo.
    let (outputs, summary) = run_then_undo(&p, &g, "ghost@example.com").await;
    assert_eq!(outputs["found"], false);
    assert!(summary.starts_with("nothing to undo"), "{summary}");
    assert!(summary.contains("found no Entra ID user"), "{summary}");

    // No record of a run: nothing is changed on a guess.
    world.graph.set_account_enabled("user3@example.com", false);
    let (_, evidence) = succeeded(
        &p.call(Op::Compensate, &input("user3@example.com"), &g)
            .await
            .unwrap(),
    );
    assert!(
        evidence["summary"]
            .as_str()
            .unwrap()
            .starts_with("nothing to undo")
    );
    assert_eq!(enabled("user3@example.com"), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_compensate_undoes_only_what_its_own_run_did() {
    let world = World::start(3, None, Misbehaviour::default())
        .await
        .unwrap();
    let p = plugin(bundled::SALESFORCE_DEACTIVATE);
    let g = grants(&world, "deactivate-crm");
    let sf = &world.salesforce;
    let flags = |u: &str| {
        (
            sf.user(u).unwrap()["IsActive"].clone(),
            sf.user_login(u).unwrap()["IsFrozen"].clone(),
        )
    };

    // Normal: deactivated and frozen by the run; both undone.
    let (outputs, summary) = run_then_undo(&p, &g, "user1@example.com").await;
    assert_eq!(
        (outputs["action"].clone(), outputs["froze_login"].clone()),
        (json!("deactivated"), json!(true))
    );
    assert!(summary.contains("reactivated and unfrozen"), "{summary}");
    assert_eq!(flags("user1@example.com"), (json!(true), json!(false)));

    // Already inactive and frozen before the ticket: both stay so, no write.
    sf.set_user_state("user2@example.com", false, true);
    let writes_before = writes(&sf.requests(), "/services/oauth2/").len();
    let (outputs, summary) = run_then_undo(&p, &g, "user2@example.com").await;
    assert_eq!(
        (outputs["action"].clone(), outputs["froze_login"].clone()),
        (json!("already_inactive"), json!(false))
    );
    assert!(summary.starts_with("nothing to undo"), "{summary}");
    assert_eq!(flags("user2@example.com"), (json!(false), json!(true)));
    assert_eq!(
        writes(&sf.requests(), "/services/oauth2/").len(),
        writes_before
    );

    // Already inactive, login not frozen: the run froze it, so compensate
    // unfreezes it and leaves the user inactive.
    sf.set_user_state("user3@example.com", false, false);
    let (outputs, summary) = run_then_undo(&p, &g, "user3@example.com").await;
    assert_eq!(
        (outputs["action"].clone(), outputs["froze_login"].clone()),
        (json!("already_inactive"), json!(true))
    );
    assert!(summary.contains("unfrozen"), "{summary}");
    assert!(summary.contains("stays inactive"), "{summary}");
    assert_eq!(flags("user3@example.com"), (json!(false), json!(false)));

    // Missing: nothing found, nothing to undo.
    let (outputs, summary) = run_then_undo(&p, &g, "ghost@example.com").await;
    assert_eq!(outputs["found"], false);
    assert!(summary.starts_with("nothing to undo"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_hold_creates_or_joins_the_hold_and_starts_one_export_per_ticket() {
    let world = World::start(3, None, Misbehaviour::default())
        .await
        .unwrap();
    let p = plugin(bundled::MAIL_HOLD);
    let g = grants(&world, "mail-hold");
    let (outputs, evidence) = succeeded(
        &p.call(Op::Run, &input("user1@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(outputs.unwrap()["action"], "hold_created");
    assert_eq!(evidence["before"]["hold"], Value::Null);
    assert_eq!(evidence["after"]["hold"]["accountHeld"], true);
    assert!(evidence["after"]["export"]["id"].is_string());
    let (outputs, _) = succeeded(
        &p.call(Op::Run, &input("user2@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(outputs.unwrap()["action"], "added_to_hold");
    let holds = world.vault.holds(&world.matter_id);
    assert_eq!(holds.len(), 1, "one hold for all leavers");
    let held: Vec<&str> = holds[0]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["user1@example.com", "user2@example.com"]);
    let add = world
        .vault
        .requests()
        .into_iter()
        .find(|r| r.uri.ends_with(":addHeldAccounts"))
        .unwrap();
    assert_eq!(add.body, Some(json!({ "emails": ["user2@example.com"] })));
    let export = world
        .vault
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.uri.ends_with("/exports"))
        .unwrap();
    assert_eq!(
        export.body.as_ref().unwrap()["query"]["accountInfo"],
        json!({ "emails": ["user1@example.com"] })
    );
    assert_eq!(
        export.body.as_ref().unwrap()["exportOptions"],
        json!({ "mailOptions": { "exportFormat": "MBOX" } })
    );
    // The token came from a signed JWT (the service account's key).
    let token = world
        .vault
        .requests()
        .into_iter()
        .find(|r| r.uri == "/token")
        .unwrap();
    assert_eq!(
        token.body.as_ref().unwrap()["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    // Same ticket again: no second export, no second add.
    succeeded(
        &p.call(Op::Run, &input("user1@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(
        world.vault.exports(&world.matter_id).len(),
        2,
        "one per ticket"
    );
    let (_, proof) = succeeded(
        &p.call(Op::Verify, &input("user1@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(proof["after"]["hold"]["accountHeld"], true);
    assert!(proof["after"]["export"]["status"].is_string());
}

/// Send a POST whose body is chunked, with no Content-Length; the raw answer.
async fn chunked_post(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url::Url::parse(url).unwrap();
    let authority = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let body = "{}";
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        url.path(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn every_double_refuses_a_chunked_body_with_411_in_its_own_error_shape() {
    let world = World::start(1, None, Misbehaviour::default())
        .await
        .unwrap();
    let s = world.settings();
    let cases = [
        (
            format!("{}/v1.0/users/x/revokeSignInSessions", s["graph_url"]),
            "lengthRequired",
        ),
        (
            format!("{}/v1/matters/x/holds", s["vault_url"]),
            "Content-length",
        ),
        (
            format!(
                "{}/services/data/v60.0/sobjects/User/x",
                s["salesforce_url"]
            ),
            "LENGTH_REQUIRED",
        ),
        (format!("{}/Users", s["slack_scim_url"]), "Content-Length"),
    ];
    for (url, says) in cases {
        let answer = chunked_post(&url).await;
        assert!(answer.starts_with("HTTP/1.1 411"), "{url}: {answer}");
        assert!(answer.contains(says), "{url}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_hold_repeated_after_a_crash_between_export_and_record_finds_its_export() {
    use itsm_host::runtime::kv::{KvBackend, MemoryKv};
    use std::sync::Arc;
    let world = World::start(3, None, Misbehaviour::default())
        .await
        .unwrap();
    // A runtime whose plugin key-value state this test can reach into.
    let kv = Arc::new(MemoryKv::default());
    let rt = itsm_host::runtime::Runtime::new(itsm_host::runtime::RuntimeConfig {
        kv: kv.clone(),
        ..itsm_host::runtime::RuntimeConfig::default()
    })
    .unwrap();
    let p = rt
        .load(
            bundled::MAIL_HOLD.manifest().unwrap(),
            bundled::MAIL_HOLD.wasm,
        )
        .unwrap();
    let g = grants(&world, "mail-hold");
    let ticket = input("user1@example.com");
    let (first, _) = succeeded(&p.call(Op::Run, &ticket, &g).await.unwrap());
    let id = first.unwrap()["export_id"].clone();
    assert!(id.is_string(), "{id}");
    assert_eq!(world.vault.exports(&world.matter_id).len(), 1);

    // The crash: Vault made the export, the record of its id was never kept.
    let record = format!("export/{}", ticket.idempotency_key);
    assert!(kv.get("mail-hold", &record).unwrap().is_some());
    kv.delete("mail-hold", &record).unwrap();

    let again = p.call(Op::Run, &ticket, &g).await.unwrap();
    let (outputs, _) = succeeded(&again);
    assert_eq!(outputs.unwrap()["export_id"], id, "the same export");
    let exports = world.vault.exports(&world.matter_id);
    assert_eq!(exports.len(), 1, "no second export: {exports:#?}");
    assert!(
        again
            .log
            .iter()
            .any(|l| l.message.contains("before its id was recorded")),
        "{:?}",
        again.log
    );
    assert!(
        kv.get("mail-hold", &record).unwrap().is_some(),
        "the id is recorded now"
    );
    // Another ticket still gets its own.
    succeeded(
        &p.call(Op::Run, &input("user2@example.com"), &g)
            .await
            .unwrap(),
    );
    assert_eq!(world.vault.exports(&world.matter_id).len(), 2);
}
