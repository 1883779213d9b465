//! Credentials the host runs token flows for: the plugin (the real
//! scim-deprovision component) only ever sees the API; the host fetches,
//! caches and attaches the token, and neither it nor the client secret
//! reaches the report.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Form, Json, Router};
use itsm_host::runtime::{Op, Outcome};
use serde_json::{Value, json};

use crate::support::{ScimServer, grants, input, load};

const ACCESS_TOKEN: &str = "at-7f3c9a21b4d84e6f";
const CLIENT_SECRET: &str = "cs-q8W2nVx4Lr";

/// A token endpoint: what it was sent, and its answer.
#[derive(Default)]
struct Issuer {
    forms: Vec<Vec<(String, String)>>,
}

async fn token_endpoint() -> (Arc<Mutex<Issuer>>, String) {
    let issuer: Arc<Mutex<Issuer>> = Arc::default();
    let app = Router::new()
        .route(
            "/tenant-1/oauth2/v2.0/token",
            post(
                |State(s): State<Arc<Mutex<Issuer>>>, Form(form): Form<Vec<(String, String)>>| async move {
                    let ok = form.contains(&("client_secret".into(), CLIENT_SECRET.into()))
                        || form.iter().any(|(k, _)| k == "assertion");
                    s.lock().unwrap().forms.push(form);
                    if ok {
                        (axum::http::StatusCode::OK, Json(json!({ "token_type": "Bearer", "expires_in": 3599, "access_token": ACCESS_TOKEN })))
                    } else {
                        (axum::http::StatusCode::UNAUTHORIZED, Json(json!({ "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided." })))
                    }
                },
            ),
        )
        .with_state(issuer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/tenant-1/oauth2/v2.0/token",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (issuer, url)
}

/// scim-deprovision with its bearer token swapped for a token flow.
fn manifest(scheme: &str, extra: &str) -> String {
    let m = std::fs::read_to_string(crate::support::plugin_dir("scim-deprovision/plugin.toml"))
        .unwrap();
    let m = m.replace(
        "allowed_hosts = [\"${config.base_url}\"]",
        "allowed_hosts = [\"${config.base_url}\", \"${config.token_url}\"]",
    );
    let m = m.replace(
        "scheme = \"bearer\"",
        &format!("scheme = \"{scheme}\"\ntoken_url = \"${{config.token_url}}\"\n{extra}"),
    );
    format!("{m}\n[config.token_url]\nrequired = true\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_exchanged_once_cached_and_never_reported() {
    let scim = ScimServer::start(Some(ACCESS_TOKEN)).await;
    scim.scim.add_user("ann@example.com", "Ann");
    scim.scim.add_user("bob@example.com", "Bob");
    let (issuer, token_url) = token_endpoint().await;
    let plugin = load(
        "itsm-plugin-scim-deprovision",
        &manifest(
            "oauth2-client-credentials",
            "scope = \"https://graph.microsoft.com/.default\"",
        ),
    );
    let secret = format!("itsm-app:{CLIENT_SECRET}");
    let g = grants(
        &[("base_url", &scim.base_url()), ("token_url", &token_url)],
        &[("scim_token", &secret)],
    );

    let first = plugin
        .call(Op::Run, &input("ann@example.com"), &g)
        .await
        .unwrap();
    assert!(
        matches!(first.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        first.outcome
    );
    let second = plugin
        .call(Op::Run, &input("bob@example.com"), &g)
        .await
        .unwrap();
    assert!(
        matches!(second.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        second.outcome
    );

    let forms = issuer.lock().unwrap().forms.clone();
    assert_eq!(forms.len(), 1, "the second call reuses the cached token");
    let field = |k: &str| {
        forms[0]
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(field("client_id").as_deref(), Some("itsm-app"));
    assert_eq!(
        field("scope").as_deref(),
        Some("https://graph.microsoft.com/.default")
    );
    // The token request shows in the first call's requests, made by the host.
    let token_req: Vec<_> = first.requests.iter().filter(|r| r.by_host).collect();
    assert_eq!((token_req.len(), token_req[0].status), (1, Some(200)));
    assert!(second.requests.iter().all(|r| !r.by_host));
    // The API saw the token; the reports hold neither it nor the client secret.
    assert!(
        scim.scim
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {ACCESS_TOKEN}")))
    );
    let reports = serde_json::to_string(&(&first, &second)).unwrap();
    assert!(
        !reports.contains(ACCESS_TOKEN) && !reports.contains(CLIENT_SECRET),
        "{reports}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_secret_fails_the_call_with_the_endpoints_reason() {
    let scim = ScimServer::start(Some(ACCESS_TOKEN)).await;
    scim.scim.add_user("ann@example.com", "Ann");
    let (_, token_url) = token_endpoint().await;
    let plugin = load(
        "itsm-plugin-scim-deprovision",
        &manifest("oauth2-client-credentials", ""),
    );
    let g = grants(
        &[("base_url", &scim.base_url()), ("token_url", &token_url)],
        &[("scim_token", "itsm-app:wrong-secret-value")],
    );
    let report = plugin
        .call(Op::Run, &input("ann@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(
        error.kind,
        itsm_host::runtime::FailureKind::Fatal,
        "a refused credential is not retried: {error:?}"
    );
    assert!(error.message.contains("credential refused"), "{error:?}");
    let token_req = report.requests.iter().find(|r| r.by_host).unwrap();
    assert_eq!(token_req.status, Some(401));
    let error = token_req.error.as_deref().unwrap();
    assert!(error.contains("invalid_client"), "{error}");
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("wrong-secret-value")
    );
    assert!(
        scim.scim.requests().is_empty(),
        "no API request went out without a token"
    );

    // A token URL outside the grants is refused before anything is sent.
    let strict = load(
        "itsm-plugin-scim-deprovision",
        &manifest("oauth2-client-credentials", "").replace(", \"${config.token_url}\"]", "]"),
    );
    let err = strict
        .call(Op::Run, &input("ann@example.com"), &g)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not in plugin scim-deprovision's allowed_hosts"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_service_account_signs_a_jwt_the_endpoint_can_verify() {
    let scim = ScimServer::start(Some(ACCESS_TOKEN)).await;
    scim.scim.add_user("ann@example.com", "Ann");
    let (issuer, token_url) = token_endpoint().await;
    let plugin = load(
        "itsm-plugin-scim-deprovision",
        &manifest(
            "google-service-account",
            "scope = \"https://www.googleapis.com/auth/ediscovery\"\nsubject = \"${config.admin}\"",
        )
        .replace(
            "[config.token_url]",
            "[config.admin]\nrequired = true\n[config.token_url]",
        ),
    );
    let root = crate::support::plugin_dir("..");
    let key =
        std::fs::read_to_string(root.join("tests/fixtures/test-service-account.json")).unwrap();
    let g = grants(
        &[
            ("base_url", &scim.base_url()),
            ("token_url", &token_url),
            ("admin", "vault-admin@example.com"),
        ],
        &[("scim_token", &key)],
    );
    let report = plugin
        .call(Op::Run, &input("ann@example.com"), &g)
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        report.outcome
    );

    let form = issuer.lock().unwrap().forms[0].clone();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get("grant_type"),
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let public = std::fs::read(root.join("tests/fixtures/test-service-account.pub.pem")).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[token_url.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(
        &get("assertion"),
        &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
        &validation,
    )
    .expect("the JWT verifies with the service account's public key")
    .claims;
    assert_eq!(
        claims["iss"],
        "itsm-vault@itsm-tests.iam.gserviceaccount.com"
    );
    assert_eq!(claims["sub"], "vault-admin@example.com");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/ediscovery"
    );
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("PRIVATE KEY")
    );
}
