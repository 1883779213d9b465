//! The web UI in a real headless Chromium, driven through playwright-core:
//! an approver signs in, opens a ticket that waits for approval, approves
//! it, and watches it move on (`tests/ui/approve.mjs`); a manager signs in,
//! completes their task from "My tasks" and watches the ticket move on
//! (`tests/ui/tasks.mjs`); a manager signs in through an independent
//! OpenID provider (`oidc-provider` from npm, `tests/ui/oidc-provider.mjs`)
//! and does the same (`tests/ui/sso.mjs`); an operator opens a problem
//! that correlated alerts opened and finds its incidents, each naming it
//! back (`tests/ui/problem.mjs`); a person requests Slack from the service
//! catalog, is refused a missing field, and follows their request
//! (`tests/ui/catalog.mjs`).
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`), Node.js 20+ and
//! `tests/ui/node_modules` (`npm ci --prefix tests/ui`). Without them the
//! test fails and says how to install them; it never skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    client_as, create_ticket, create_token, get_json, install_signed, person_token,
    set_up_wipe_home as set_up_home, start_server, wait_for_state,
};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Fail (not skip) with install instructions when the browser toolchain is missing.
fn require_browser_toolchain(root: &Path) {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!(
            "{CHROMIUM} is missing: install it with `apt-get install chromium`"
        ));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing.push(
            "`node` is missing: install Node.js 20 or later (`apt-get install nodejs npm`)".into(),
        ),
    }
    if !root
        .join("tests/ui/node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push(format!(
            "{} is missing: install it with `npm ci --prefix tests/ui` from the repository root",
            root.join("tests/ui/node_modules").display()
        ));
    }
    assert!(
        missing.is_empty(),
        "the browser test of the web UI cannot run:\n  - {}",
        missing.join("\n  - ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_in_the_browser_and_the_ticket_moves_on() {
    let root = repo_root();
    require_browser_toolchain(&root);

    let home = tempfile::tempdir().unwrap();
    set_up_home(home.path());
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let approver_token = create_token(home.path(), "sec-lead", &["approver", "security"]);
    let approver = client_as(&approver_token);

    // One ticket, imported by the operator, waiting for the security group.
    let report: Value = server
        .client()
        .post(format!("{base}/v1/imports?workflow=wipe"))
        .header("content-type", "text/csv")
        .body("subject\nleaver1@example.com\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = report["tickets"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no ticket in {report}"))
        .to_string();
    let url = format!("{base}/v1/tickets/{id}");
    wait_for_state(&approver, &url, "waiting_approval").await;

    // The page itself: HTML under a strict Content-Security-Policy.
    let resp = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'self'"), "CSP: {csp:?}");
    assert!(
        header("content-type").starts_with("text/html"),
        "{}",
        header("content-type")
    );
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("/ui/app.js") && html.contains("/ui/style.css"),
        "{html}"
    );

    // The browser: sign in, approve, see the ticket move on.
    browser(&root, "approve.mjs", &[&base, &approver_token, &id]).await;

    // The API agrees: succeeded, approved by the approver, trail intact.
    let detail = wait_for_state(&approver, &url, "succeeded").await;
    assert_eq!(detail["trail_verified"], true, "{detail:#}");
    let approvals: Vec<&Value> = detail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approved")
        .collect();
    assert_eq!(approvals.len(), 1, "{detail:#}");
    assert_eq!(approvals[0]["principal"], "sec-lead");
    assert_eq!(approvals[0]["step"], "wipe-laptop");
    let comment = approvals[0]["data"]["comment"].as_str().unwrap_or_default();
    assert!(
        comment.starts_with("Laptop returned"),
        "the comment typed in the browser: {comment:?}"
    );
    let decision = &detail["ticket"]["steps"]["wipe-laptop"]["decision"];
    assert_eq!(decision["approved"], true, "{decision}");
    assert_eq!(decision["by"], "sec-lead", "{decision}");
}

/// Run `tests/ui/SCRIPT` with `args` under node; fail with its output;
/// what it printed.
async fn browser(root: &Path, script: &str, args: &[&str]) -> String {
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/ui").join(script))
        .args(args)
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| panic!("tests/ui/{script} finishes within 90 s"))
        .unwrap_or_else(|e| panic!("run node tests/ui/{script}: {e}"));
    assert!(
        out.status.success(),
        "tests/ui/{script} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A home with the noop plugin and a `leaver` workflow: the manager's task
/// (`instructions`, `checklist`), then a noop step.
fn leaver_home(instructions: &str, checklist: &[&str]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    install_signed(home.path(), "testing/noop", "itsm-plugin-test-noop");
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    let task = serde_json::json!({
        "assignee": "${inputs.manager}",
        "instructions": instructions,
        "checklist": checklist,
        "due_in": "1d",
    });
    let workflow = format!(
        "name = \"leaver\"\nversion = \"1\"\n[inputs.manager]\ntype = \"email\"\nrequired = true\n\
         [[steps]]\nname = \"collect\"\n[steps.task]\n{}\n\
         [[steps]]\nname = \"disable\"\nplugin = \"noop\"\ndepends_on = [\"collect\"]\n",
        toml::to_string(&task).unwrap()
    );
    std::fs::write(home.path().join("workflows/leaver.toml"), workflow).unwrap();
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_completes_a_task_in_the_browser_and_the_ticket_moves_on() {
    let root = repo_root();
    require_browser_toolchain(&root);
    let home = leaver_home(
        "Collect the leaver's laptop and badge.",
        &["laptop", "badge"],
    );
    let manager_token = person_token(home.path(), "manager-1", "manager1@example.com");
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let id = create_ticket(
        &server.client(),
        &base,
        serde_json::json!({
            "workflow": "leaver",
            "subject": "leaver1@example.com",
            "inputs": { "manager": "manager1@example.com" },
        }),
    )
    .await;
    // Another manager's leaver, in the same layoff: not this manager's to see.
    let other = create_ticket(
        &server.client(),
        &base,
        serde_json::json!({
            "workflow": "leaver",
            "subject": "leaver2@example.com",
            "inputs": { "manager": "manager2@example.com" },
        }),
    )
    .await;
    let url = format!("{base}/v1/tickets/{id}");
    wait_for_state(&server.client(), &url, "waiting_task").await;
    wait_for_state(
        &server.client(),
        &format!("{base}/v1/tickets/{other}"),
        "waiting_task",
    )
    .await;

    browser(&root, "tasks.mjs", &[&base, &manager_token, &id, &other]).await;

    // The API agrees: done by the manager, with the answers ticked in the browser.
    let detail = wait_for_state(&server.client(), &url, "succeeded").await;
    assert_eq!(detail["trail_verified"], true, "{detail:#}");
    let done = &detail["ticket"]["steps"]["collect"]["task"]["done"];
    assert_eq!(done["by"], "manager-1", "{done}");
    assert_eq!(
        done["checklist"],
        serde_json::json!({ "laptop": true, "badge": true })
    );
    assert!(
        done["note"].as_str().unwrap().starts_with("All returned"),
        "{done}"
    );
    assert_eq!(detail["ticket"]["steps"]["disable"]["status"], "succeeded");
}

/// The `oidc-provider` process of `tests/ui/oidc-provider.mjs` on loopback
/// port `port`, sending browsers back to `redirect_uri`; its issuer.
async fn start_provider_on(
    root: &Path,
    port: u16,
    redirect_uri: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("tests/ui/oidc-provider.mjs"))
        .args([&port.to_string(), redirect_uri])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node tests/ui/oidc-provider.mjs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the provider starts within 30 s")
        .unwrap()
        .expect("the provider prints its issuer");
    let issuer = first
        .strip_prefix("issuer ")
        .unwrap_or_else(|| panic!("not an issuer line: {first:?}"))
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_signs_in_through_the_identity_provider_and_completes_their_task() {
    let root = repo_root();
    require_browser_toolchain(&root);
    let home = leaver_home("Collect the leaver's laptop.", &["laptop"]);
    // The provider's port is known before the server starts; the server's
    // before the provider starts (its one redirect URI).
    let provider_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    std::fs::write(
        home.path().join("oidc.toml"),
        format!(
            r#"
issuer = "{issuer}"
audience = "itsm"
client_id = "itsm-ui"
scopes = ["openid", "email", "itsm"]
algorithms = ["RS256"]
[roles]
"security-team" = ["approver", "security"]
"#
        ),
    )
    .unwrap();
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let (_provider, started) =
        start_provider_on(&root, provider_port, &format!("{base}/auth/callback")).await;
    assert_eq!(started, issuer);

    let id = create_ticket(
        &server.client(),
        &base,
        serde_json::json!({
            "workflow": "leaver",
            "subject": "leaver1@example.com",
            "inputs": { "manager": "mgr.a@example.com" },
        }),
    )
    .await;
    let url = format!("{base}/v1/tickets/{id}");
    wait_for_state(&server.client(), &url, "waiting_task").await;

    let said = browser(
        &root,
        "sso.mjs",
        &[&base, &issuer, "mgr.a@example.com", &id],
    )
    .await;
    let token = said
        .lines()
        .find_map(|l| l.strip_prefix("access-token "))
        .unwrap_or_else(|| panic!("sso.mjs printed no access token:\n{said}"))
        .to_string();

    // Done by the person the provider signed in, named by their e-mail.
    let detail = wait_for_state(&server.client(), &url, "succeeded").await;
    let done = &detail["ticket"]["steps"]["collect"]["task"]["done"];
    assert_eq!(done["by"], "mgr.a@example.com", "{done}");
    assert_eq!(done["checklist"], serde_json::json!({ "laptop": true }));

    // The same provider's access token calls the API: a JWT of the
    // provider's (not an itsm token), good for what its holder may read.
    assert_eq!(token.matches('.').count(), 2, "{token}");
    let person = client_as(&token);
    let me = get_json(&person, &format!("{base}/v1/me")).await;
    assert_eq!(me["name"], "mgr.a@example.com", "{me}");
    assert_eq!(
        me["roles"],
        serde_json::json!([]),
        "managers map to no role: {me}"
    );
    let list = get_json(&person, &format!("{base}/v1/tickets")).await;
    assert_eq!(list["total"], 1, "{list}");
    let audit = person
        .get(format!("{base}/v1/audit/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_opened_by_alerts_shows_its_incidents_in_the_browser() {
    let root = repo_root();
    require_browser_toolchain(&root);
    let home = tempfile::tempdir().unwrap();
    crate::correlation::set_up(home.path(), 3);
    let operator = create_token(home.path(), "op-ui", &["operator"]);
    let server = crate::correlation::start(home.path()).await;
    let mut incidents = Vec::new();
    let mut problem = None;
    for (i, host) in ["ws-11", "ws-12", "ws-13"].iter().enumerate() {
        let a = crate::correlation::alert(&server, &format!("ui-{i}"), host, "EICAR").await;
        incidents.push(a["tickets"][0].as_str().unwrap().to_string());
        problem = a["problems"][0].as_str().map(str::to_string);
    }
    let problem = problem.expect("the third alert opened the problem");
    let mut args = vec![server.base.as_str(), operator.as_str(), problem.as_str()];
    args.extend(incidents.iter().map(String::as_str));
    browser(&root, "problem.mjs", &args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_requests_from_the_catalog_in_the_browser_and_follows_it() {
    let root = repo_root();
    require_browser_toolchain(&root);
    let home = tempfile::tempdir().unwrap();
    let person = crate::catalog::staff_token(home.path(), "ann", "ann@example.com", &["staff"]);
    let c = crate::catalog::catalog_home(home.path()).await;
    // Someone else's request, which the person must not see.
    let other = create_ticket(
        &c.server.client(),
        &c.server.base,
        serde_json::json!({ "workflow": "slack-access", "subject": "carl@example.com",
                            "inputs": { "team": "support" } }),
    )
    .await;
    browser(&root, "catalog.mjs", &[&c.server.base, &person, &other]).await;
    let user = c
        .slack
        .user_by_name("ann@example.com")
        .expect("granted in Slack");
    assert_eq!(user["active"], true);
}
