//! The service catalog through the real `itsm serve`, with the bundled
//! catalog workflows (`workflows/slack-access.toml`, pre-approved, and
//! `workflows/zoom-access.toml`, approved by the licence owners) and the
//! bundled `scim-provision` plugin against the sandbox's strict SCIM
//! doubles: a person lists what their groups may request, is refused an
//! item that is not for them and a form field that is wrong (named),
//! requests for themselves, follows their request, and sees only their own.

use serde_json::{Value, json};

use crate::support::{
    Server, client_as, create_ticket, create_token, get_json, person_token, start_server_with_env,
    wait_for_state,
};
use itsm_sandbox::scim::{BASE_PATH, Scim};

pub(crate) struct Catalog {
    pub server: Server,
    pub slack: Scim,
    pub zoom: Scim,
}

async fn scim(token: &str) -> (Scim, String) {
    let double = Scim::new(Some(token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{BASE_PATH}", listener.local_addr().unwrap());
    let d = double.clone();
    tokio::spawn(async move { d.serve(listener, std::future::pending()).await });
    (double, url)
}

/// A home with the bundled catalog workflows pointed at two SCIM doubles,
/// and its server. Tokens must be made in `home` before this.
pub(crate) async fn catalog_home(home: &std::path::Path) -> Catalog {
    let (slack, slack_url) = scim("slack-scim-token").await;
    let (zoom, zoom_url) = scim("zoom-scim-token").await;
    let wf = home.join("workflows");
    std::fs::create_dir_all(&wf).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows");
    for name in ["slack-access.toml", "zoom-access.toml"] {
        std::fs::copy(root.join(name), wf.join(name)).unwrap();
    }
    std::fs::write(
        home.join("settings.toml"),
        format!(
            "[slack-access]\nslack_scim_url = \"{slack_url}\"\n\
             [zoom-access]\nzoom_scim_url = \"{zoom_url}\"\n"
        ),
    )
    .unwrap();
    let server = start_server_with_env(
        home,
        &[],
        &[
            ("ITSM_SECRET_SLACK_SCIM_TOKEN", "slack-scim-token"),
            ("ITSM_SECRET_ZOOM_SCIM_TOKEN", "zoom-scim-token"),
        ],
    )
    .await;
    Catalog {
        server,
        slack,
        zoom,
    }
}

/// A person with an e-mail and groups: `itsm token create --email`.
pub(crate) fn staff_token(
    home: &std::path::Path,
    name: &str,
    email: &str,
    roles: &[&str],
) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"));
    cmd.args([
        "token", "create", "--name", name, "--email", email, "--home",
    ])
    .arg(home);
    for r in roles {
        cmd.args(["--role", r]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn request(http: &reqwest::Client, base: &str, item: &str, inputs: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v1/catalog/{item}"))
        .json(&json!({ "inputs": inputs }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_requests_from_the_catalog_for_themselves_and_sees_only_their_own() {
    let home = tempfile::tempdir().unwrap();
    let ann = client_as(&staff_token(
        home.path(),
        "ann",
        "ann@example.com",
        &["staff"],
    ));
    let bob = client_as(&person_token(home.path(), "bob", "bob@example.com"));
    let owner = client_as(&create_token(
        home.path(),
        "zoe",
        &["approver", "zoom-owners"],
    ));
    let Catalog {
        server,
        slack,
        zoom,
    } = catalog_home(home.path()).await;
    let base = server.base.clone();

    // What each may request: staff see both; a contractor only Slack.
    let titles = |c: Value| -> Vec<String> {
        c["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    let ann_catalog = get_json(&ann, &format!("{base}/v1/catalog")).await;
    assert_eq!(
        titles(ann_catalog.clone()),
        ["zoom-access", "slack-access"],
        "{ann_catalog:#}"
    );
    let slack_item = &ann_catalog["items"][1];
    assert_eq!(slack_item["preapproved"], true);
    assert_eq!(slack_item["form"]["team"]["type"], "enum");
    assert_eq!(
        titles(get_json(&bob, &format!("{base}/v1/catalog")).await),
        ["slack-access"]
    );

    // An item not for one's groups is refused, naming them.
    let (status, body) = request(
        &bob,
        &base,
        "zoom-access",
        json!({ "reason": "x", "cost_centre": "c" }),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("staff"), "{body}");
    // A bad field is refused with 422, naming it; nothing is made.
    let (status, body) = request(&ann, &base, "slack-access", json!({ "team": "marketing" })).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("team"), "{body}");
    let (status, body) = request(&ann, &base, "slack-access", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("team"), "{body}");
    let (status, _) = request(&ann, &base, "offboarding-nope", json!({})).await;
    assert_eq!(status, 404);
    assert!(slack.user_by_name("ann@example.com").is_none());

    // Pre-approved: made at once, for the person asking.
    let (status, t) = request(&ann, &base, "slack-access", json!({ "team": "sales" })).await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(
        (t["subject"].as_str(), t["requested_by"].as_str()),
        (Some("ann@example.com"), Some("ann"))
    );
    let slack_ticket = t["id"].as_str().unwrap().to_string();
    let view = wait_for_state(
        &ann,
        &format!("{base}/v1/tickets/{slack_ticket}"),
        "succeeded",
    )
    .await;
    assert_eq!(view["view"], "whole", "the requester follows their request");
    assert_eq!(
        view["ticket"]["steps"]["grant"]["outputs"]["action"],
        "created"
    );
    assert_eq!(
        slack.user_by_name("ann@example.com").unwrap()["active"],
        true
    );

    // A licence: the owners approve, then it is made.
    let (status, t) = request(
        &ann,
        &base,
        "zoom-access",
        json!({ "reason": "Customer calls", "cost_centre": "SALES-EU" }),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let zoom_ticket = t["id"].as_str().unwrap().to_string();
    let url = format!("{base}/v1/tickets/{zoom_ticket}");
    wait_for_state(&owner, &url, "waiting_approval").await;
    assert!(
        zoom.user_by_name("ann@example.com").is_none(),
        "nothing before the approval"
    );
    let r = owner
        .post(format!("{url}/approve"))
        .json(&json!({ "comment": "Licence available" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for_state(&ann, &url, "succeeded").await;
    assert_eq!(
        zoom.user_by_name("ann@example.com").unwrap()["active"],
        true
    );

    // Each sees only their own: an operator's ticket for someone else and
    // Bob's request are not in Ann's list, nor Ann's in Bob's.
    create_ticket(
        &server.client(),
        &base,
        json!({ "workflow": "slack-access", "subject": "carl@example.com", "inputs": { "team": "support" } }),
    )
    .await;
    let (status, t) = request(&bob, &base, "slack-access", json!({ "team": "support" })).await;
    assert_eq!(status, 201, "{t}");
    let bob_ticket = t["id"].as_str().unwrap().to_string();
    let listed = |v: Value| -> Vec<String> {
        let mut ids: Vec<String> = v["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut mine = vec![slack_ticket.clone(), zoom_ticket.clone()];
    mine.sort();
    assert_eq!(
        listed(get_json(&ann, &format!("{base}/v1/tickets")).await),
        mine
    );
    assert_eq!(
        listed(get_json(&bob, &format!("{base}/v1/tickets")).await),
        [bob_ticket]
    );
    let r = bob
        .get(format!("{base}/v1/tickets/{slack_ticket}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
