//! The web UI's sign-in through the organisation's identity provider: the
//! authorization code flow with PKCE (RFC 7636), run by the server for the
//! page, so the page keeps its `default-src 'self'` policy and never talks
//! to another origin.
//!
//! `GET /auth/login` makes a `state` and a PKCE verifier, keeps both in a
//! short-lived `HttpOnly` cookie scoped to `/auth`, and sends the browser
//! to the provider with the verifier's S256 challenge. The provider sends
//! it back to `GET /auth/callback` with a code; the state must match the
//! cookie's (no forged callback), and the code is exchanged with the
//! verifier (a stolen code is useless). The access token is checked as
//! every API call checks it ([`crate::oidc`]) and handed to the page in
//! the URL fragment, which never reaches a server; the page keeps it in
//! its tab's session storage, as it keeps an `itsm` token.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest as _;

use super::AppState;

/// The cookie holding a sign-in's state and PKCE verifier.
const COOKIE: &str = "itsm_sso";
/// How long a sign-in may take at the provider.
const COOKIE_SECONDS: u32 = 600;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/sso", get(sso))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
}

fn random_b64() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Whether the page may offer sign-in through a provider, and which.
async fn sso(State(app): State<AppState>) -> Response {
    match &app.oidc {
        Some(p) => axum::Json(serde_json::json!({
            "issuer": p.config().issuer,
            "login": "/auth/login",
        }))
        .into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            "no identity provider is configured (oidc.toml)".into(),
        ),
    }
}

/// Where the provider sends the browser back: the configured address, or
/// this server's as the browser reached it.
fn redirect_uri(app: &AppState, headers: &HeaderMap) -> Option<String> {
    let provider = app.oidc.as_ref()?;
    if let Some(uri) = &provider.config().redirect_uri {
        return Some(uri.clone());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(format!("http://{host}/auth/callback"))
}

async fn login(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let (Some(provider), Some(redirect)) = (&app.oidc, redirect_uri(&app, &headers)) else {
        return text(
            StatusCode::NOT_FOUND,
            "no identity provider is configured (oidc.toml)".into(),
        );
    };
    let discovery = match provider.discovery().await {
        Ok(d) => d,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let (state, verifier) = (random_b64(), random_b64());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let config = provider.config();
    let mut to = match url::Url::parse(&discovery.authorization_endpoint) {
        Ok(u) => u,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("the provider's authorization endpoint is not a URL: {e}"),
            );
        }
    };
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &config.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &random_b64())
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let cookie = format!(
        "{COOKIE}={state}.{verifier}; Path=/auth; Max-Age={COOKIE_SECONDS}; HttpOnly; SameSite=Lax{}",
        if redirect.starts_with("https://") {
            "; Secure"
        } else {
            ""
        }
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, to.to_string()),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The state and verifier this browser's sign-in left in its cookie.
fn pending(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
        .find_map(|v| {
            v.split_once('.')
                .map(|(s, verifier)| (s.to_string(), verifier.to_string()))
        })
}

async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (Some(provider), Some(redirect)) = (&app.oidc, redirect_uri(&app, &headers)) else {
        return text(
            StatusCode::NOT_FOUND,
            "no identity provider is configured (oidc.toml)".into(),
        );
    };
    let refused = |why: String| text(StatusCode::UNAUTHORIZED, format!("sign-in failed: {why}"));
    let Ok(Query(q)) = query else {
        return refused("the provider's answer has no readable query".into());
    };
    if let Some(error) = q.error {
        return refused(format!(
            "the identity provider answered {error}{}",
            q.error_description
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ));
    }
    let Some((expected, verifier)) = pending(&headers) else {
        return refused(
            "no sign-in was started from this browser (or it took over 10 minutes): start again"
                .into(),
        );
    };
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refused("the provider's answer lacks `code` or `state`".into());
    };
    if state != expected {
        return refused("the answer's `state` is not this browser's sign-in".into());
    }
    let token = match exchange(provider, &code, &verifier, &redirect).await {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("sign-in failed: {e}")),
    };
    match provider.authenticate(&token).await {
        Ok(Ok(who)) => tracing::info!("{} signed in to the web UI through the provider", who.name),
        Ok(Err(why)) => return refused(format!("the provider's access token is refused: {why}")),
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
    let clear = format!("{COOKIE}=; Path=/auth; Max-Age=0; HttpOnly; SameSite=Lax");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, format!("/#sso={token}")),
            (header::SET_COOKIE, clear),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

/// The access token the provider gives for `code`.
async fn exchange(
    provider: &crate::oidc::Provider,
    code: &str,
    verifier: &str,
    redirect: &str,
) -> crate::Result<String> {
    let discovery = provider.discovery().await?;
    let config = provider.config();
    let secret = config
        .client_secret_env
        .as_deref()
        .and_then(|name| std::env::var(name).ok());
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", config.client_id.as_str()),
        ("code_verifier", verifier),
    ];
    if let Some(s) = secret.as_deref() {
        form.push(("client_secret", s));
    }
    let failed = |why: String| {
        crate::Error::Unavailable(format!(
            "the provider's token endpoint {}: {why}",
            discovery.token_endpoint
        ))
    };
    let resp = provider
        .http()
        .post(&discovery.token_endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| failed(format!("answered {status} with no JSON: {e}")))?;
    if !status.is_success() {
        return Err(failed(format!(
            "answered {status}: {} {}",
            body["error"].as_str().unwrap_or("?"),
            body["error_description"].as_str().unwrap_or("")
        )));
    }
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| failed("the answer has no `access_token`".into()))
}
