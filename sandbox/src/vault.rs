//! A Google OAuth 2.0 token endpoint + Google Vault API v1 test double on
//! loopback, for connectors that put departing staff on legal hold and
//! export their mail. Not Vault: state lives in memory and is gone when it
//! stops, and exports contain nothing.
//!
//! Speaks the service-account grant at `POST /token`
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`),
//! then on `/v1`, only with a token it issued:
//!
//! - `GET /matters/{matterId}`;
//! - `GET|POST /matters/{matterId}/holds`, `GET …/holds/{holdId}`,
//!   `POST …/holds/{holdId}:addHeldAccounts` and `:removeHeldAccounts`;
//! - `GET|POST /matters/{matterId}/exports`, `GET …/exports/{exportId}`.
//!
//! JSON follows the Vault v1 discovery document (proto3 JSON: int64 as
//! strings, empty lists omitted); errors use Google's
//! `{"error":{"code","message","status"}}`. Faults, the request log and
//! state are under `/_sandbox/` (see [`super::faults`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::faults::{
    self, Double, FaultPlan, Faults, Kind, SeenRequest, form, now_millis, random_token, unix_now,
};

/// The grant type of the service-account (JWT bearer) flow.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope Vault's write methods need.
pub const EDISCOVERY: &str = "https://www.googleapis.com/auth/ediscovery";
/// The scope Vault's read methods accept besides [`EDISCOVERY`].
pub const EDISCOVERY_READONLY: &str = "https://www.googleapis.com/auth/ediscovery.readonly";
/// `expires_in` of an issued token.
const TOKEN_LIFETIME_SECS: u64 = 3599;
/// How far `iat` may sit in the future, for clock skew.
const CLOCK_SKEW_SECS: u64 = 300;
/// The longest assertion Google accepts (`exp - iat`).
const MAX_ASSERTION_SECS: u64 = 3600;
/// The values Vault's `corpus` enum takes, and each one's hold query field.
const CORPORA: &[(&str, &str)] = &[
    ("DRIVE", "driveQuery"),
    ("MAIL", "mailQuery"),
    ("GROUPS", "groupsQuery"),
    ("HANGOUTS_CHAT", "hangoutsChatQuery"),
    ("VOICE", "voiceQuery"),
];
const SEARCH_METHODS: &[&str] = &[
    "ACCOUNT",
    "ORG_UNIT",
    "TEAM_DRIVE",
    "ENTIRE_ORG",
    "ROOM",
    "SHARED_DRIVE",
];
const DATA_SCOPES: &[&str] = &["ALL_DATA", "HELD_DATA", "UNPROCESSED_DATA"];
const EXPORT_FORMATS: &[&str] = &["MBOX", "PST"];
/// Where completed exports say their files are.
const EXPORT_BUCKET: &str = "sandbox-vault-exports";

/// Messages Google's token endpoint answers a bad assertion with.
const MSG_BAD_SIGNATURE: &str = "Invalid JWT Signature.";
const MSG_BAD_AUDIENCE: &str = "Invalid JWT: Failed audience check.";
const MSG_BAD_TIME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const MSG_UNKNOWN_ACCOUNT: &str = "Invalid grant: account not found";
const MSG_BAD_SCOPE: &str = "Invalid OAuth scope or ID token audience provided.";

#[derive(Debug, Clone)]
struct Token {
    expires: Instant,
    scopes: Vec<String>,
    /// `sub` if the assertion impersonated a user, else `iss`.
    principal: String,
}

#[derive(Debug, Clone)]
struct Export {
    json: Value,
    /// API reads that will still show `IN_PROGRESS`.
    polls_left: u32,
}

impl Export {
    /// An API read: counts down, then completes the export.
    fn read(&mut self) -> Value {
        if self.json["status"] == "IN_PROGRESS" {
            if self.polls_left > 0 {
                self.polls_left -= 1;
            } else {
                complete(&mut self.json);
            }
        }
        self.json.clone()
    }
}

#[derive(Debug, Clone)]
struct Matter {
    json: Value,
    holds: Vec<Value>,
    exports: Vec<Export>,
}

/// The double's state.
#[derive(Debug)]
pub struct VaultState {
    client_email: String,
    token_url: Option<String>,
    tokens: HashMap<String, Token>,
    tokens_issued: u32,
    matters: BTreeMap<String, Matter>,
    /// Account IDs seen so far, and their emails: the double's directory.
    accounts: BTreeMap<String, String>,
    export_polls: u32,
    next_id: u64,
    plan: FaultPlan,
    requests: Vec<SeenRequest>,
}

/// Shared handle to a running (or not yet started) Vault double.
#[derive(Debug, Clone)]
pub struct Vault {
    state: Arc<Mutex<VaultState>>,
}

impl Vault {
    /// No matters yet; tokens are issued to assertions from `client_email`
    /// (the service account's `client_email`).
    pub fn new(client_email: &str) -> Self {
        Self {
            state: Arc::new(Mutex::new(VaultState {
                client_email: client_email.to_string(),
                token_url: None,
                tokens: HashMap::new(),
                tokens_issued: 0,
                matters: BTreeMap::new(),
                accounts: BTreeMap::new(),
                export_polls: 0,
                next_id: 0,
                plan: FaultPlan::default(),
                requests: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VaultState> {
        self.state.lock().expect("vault state lock")
    }

    /// The `aud` assertions must carry. Unset, it is `http://{Host}/token`
    /// for the `Host` each token request arrives with.
    pub fn set_token_url(&self, url: &str) {
        self.lock().token_url = Some(url.to_string());
    }

    /// How many API reads of a new export still show `IN_PROGRESS` before
    /// it reads `COMPLETED` (default 0: the first read completes it).
    pub fn set_export_polls(&self, polls: u32) {
        self.lock().export_polls = polls;
    }

    /// Add an open matter; returns its ID.
    pub fn add_matter(&self, name: &str) -> String {
        let mut s = self.lock();
        let id = uuid_from(next(&mut s.next_id), 0x3e4b_2f5a);
        let json = json!({ "matterId": id, "name": name, "state": "OPEN" });
        s.matters.insert(
            id.clone(),
            Matter {
                json,
                holds: Vec::new(),
                exports: Vec::new(),
            },
        );
        id
    }

    /// The holds of a matter, as stored.
    pub fn holds(&self, matter_id: &str) -> Vec<Value> {
        self.lock()
            .matters
            .get(matter_id)
            .map(|m| m.holds.clone())
            .unwrap_or_default()
    }

    /// The exports of a matter, as stored (reading them here does not
    /// advance them).
    pub fn exports(&self, matter_id: &str) -> Vec<Value> {
        self.lock()
            .matters
            .get(matter_id)
            .map(|m| m.exports.iter().map(|e| e.json.clone()).collect())
            .unwrap_or_default()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    /// How many access tokens the token endpoint has issued.
    pub fn tokens_issued(&self) -> u32 {
        self.lock().tokens_issued
    }

    /// Make every issued token expired, so the next API call gets a 401.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        self.lock()
            .tokens
            .values_mut()
            .for_each(|t| t.expires = now);
    }

    /// Replace the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().plan.set(faults);
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/token", post(token))
            .route("/v1/matters/{matter}", get(get_matter))
            .route(
                "/v1/matters/{matter}/holds",
                get(list_holds).post(create_hold),
            )
            .route(
                "/v1/matters/{matter}/holds/{hold}",
                get(get_hold).post(hold_method),
            )
            .route(
                "/v1/matters/{matter}/exports",
                get(list_exports).post(create_export),
            )
            .route("/v1/matters/{matter}/exports/{export}", get(get_export))
            .fallback(not_found);
        faults::finish(routes, self)
    }

    /// Serve on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        faults::serve(self.router(), listener, shutdown).await
    }
}

impl Double for Vault {
    fn kind(&self, path: &str) -> Kind {
        if path.starts_with("/v1/") {
            Kind::Api
        } else if path == "/token" {
            Kind::Token
        } else {
            Kind::Sandbox
        }
    }

    fn with_plan<R>(&self, f: impl FnOnce(&mut FaultPlan) -> R) -> R {
        f(&mut self.lock().plan)
    }

    fn record(&self, seen: SeenRequest) {
        self.lock().requests.push(seen);
    }

    fn requests(&self) -> Vec<SeenRequest> {
        Vault::requests(self)
    }

    fn state_json(&self) -> Value {
        let s = self.lock();
        let matters: Vec<Value> = s
            .matters
            .values()
            .map(|m| {
                let mut json = m.json.clone();
                json["holds"] = json!(m.holds);
                json["exports"] = json!(m.exports.iter().map(|e| &e.json).collect::<Vec<_>>());
                json
            })
            .collect();
        json!({
            "clientEmail": s.client_email,
            "tokensIssued": s.tokens_issued,
            "matters": matters,
            "accounts": s.accounts,
        })
    }

    fn fault_response(&self, status: StatusCode) -> Response {
        let message = match status.as_u16() {
            429 => "Quota exceeded for quota metric 'Requests' of service 'vault.googleapis.com'.",
            503 => "The service is currently unavailable.",
            411 => "POST requests require a Content-length header; chunked bodies are refused.",
            _ => "Fault injected by the sandbox.",
        };
        google_error(status, message)
    }

    fn refuse(&self, parts: &Parts) -> Option<Response> {
        let token = faults::bearer(parts).and_then(|t| {
            let s = self.lock();
            s.tokens
                .get(t)
                .filter(|t| Instant::now() < t.expires)
                .cloned()
        });
        let Some(token) = token else {
            let message = if faults::bearer(parts).is_some() {
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
            } else {
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
            };
            let mut r = google_error(StatusCode::UNAUTHORIZED, message);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
            return Some(r);
        };
        let has = |scope| token.scopes.iter().any(|s| s == scope);
        let allowed = if parts.method == Method::GET {
            has(EDISCOVERY) || has(EDISCOVERY_READONLY)
        } else {
            has(EDISCOVERY)
        };
        (!allowed).then(|| {
            let body = json!({
                "error": {
                    "code": 403,
                    "message": "Request had insufficient authentication scopes.",
                    "status": "PERMISSION_DENIED",
                    "details": [{
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                        "domain": "googleapis.com",
                        "metadata": { "service": "vault.googleapis.com" },
                    }],
                }
            });
            google_json(StatusCode::FORBIDDEN, &body)
        })
    }
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

fn uuid_from(n: u64, head: u32) -> String {
    format!(
        "{head:08x}-{:04x}-4{:03x}-9000-{n:012x}",
        n & 0xffff,
        n & 0xfff
    )
}

/// A stable Admin SDK-style account ID (21 digits) for an email.
pub fn account_id(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_ascii_lowercase().as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    format!("1{:020}", u64::from_be_bytes(head))
}

fn google_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// The canonical `google.rpc.Code` name of an HTTP status.
fn rpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Google's error body, the status named after the HTTP code.
fn google_error(status: StatusCode, message: &str) -> Response {
    google_error_as(status, rpc_status(status), message)
}

fn google_error_as(status: StatusCode, rpc: &str, message: &str) -> Response {
    let body = json!({
        "error": { "code": status.as_u16(), "message": message, "status": rpc }
    });
    google_json(status, &body)
}

fn invalid(message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, message)
}

fn entity_not_found() -> Response {
    google_error(StatusCode::NOT_FOUND, "Requested entity was not found.")
}

fn json_body(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(invalid(
            "Invalid JSON payload received. The request body must be a JSON object.",
        )),
    }
}

// ---------------------------------------------------------------------------
// Token endpoint

/// An OAuth error from Google's token endpoint.
fn token_error(error: &str, description: &str) -> Response {
    google_json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": error, "error_description": description }),
    )
}

/// What an accepted assertion grants.
#[derive(Debug, PartialEq)]
struct Grant {
    scopes: Vec<String>,
    principal: String,
}

fn b64_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Check a service-account assertion the way Google's token endpoint
/// would, except for the signature: without an RSA implementation among
/// the host's dependencies, the double checks that it is an RS256 JWS of
/// base64url parts whose signature has an RSA key's length (2048 to 4096
/// bits), not that the key signed it. Claims are checked in full: `iss`
/// is the configured service account, `aud` the token URL, `scope` a list
/// of Google scopes, and `iat`/`exp` a window of at most an hour that
/// covers now (give or take five minutes of skew).
fn check_assertion(
    assertion: &str,
    audience: &str,
    client_email: &str,
    now: u64,
) -> Result<Grant, (&'static str, String)> {
    let grant = |msg: &str| ("invalid_grant", msg.to_string());
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(grant(
            "Invalid JWT: the assertion must be three base64url parts separated by '.'",
        ));
    };
    let header = b64_json(header).ok_or_else(|| grant(MSG_BAD_SIGNATURE))?;
    let typ_ok = header.get("typ").is_none_or(|t| t == "JWT");
    if header.get("alg").and_then(Value::as_str) != Some("RS256") || !typ_ok {
        return Err(grant(MSG_BAD_SIGNATURE));
    }
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| grant(MSG_BAD_SIGNATURE))?;
    if !(256..=512).contains(&signature.len()) {
        return Err(grant(MSG_BAD_SIGNATURE));
    }
    let claims = b64_json(claims).ok_or_else(|| grant("Invalid JWT: the claim set is not JSON"))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    if text("iss") != Some(client_email) {
        return Err(grant(MSG_UNKNOWN_ACCOUNT));
    }
    if text("aud") != Some(audience) {
        return Err(grant(MSG_BAD_AUDIENCE));
    }
    let (Some(iat), Some(exp)) = (number("iat"), number("exp")) else {
        return Err(grant(MSG_BAD_TIME));
    };
    let window_ok = iat < exp && exp - iat <= MAX_ASSERTION_SECS;
    let now_ok = iat <= now + CLOCK_SKEW_SECS && now < exp + CLOCK_SKEW_SECS;
    if !(window_ok && now_ok) {
        return Err(grant(MSG_BAD_TIME));
    }
    let scopes: Vec<String> = text("scope")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if scopes.is_empty()
        || !scopes
            .iter()
            .all(|s| s.starts_with("https://www.googleapis.com/auth/"))
    {
        return Err(("invalid_scope", MSG_BAD_SCOPE.to_string()));
    }
    Ok(Grant {
        scopes,
        principal: text("sub").unwrap_or(client_email).to_string(),
    })
}

async fn token(State(vault): State<Vault>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let grant_type = fields
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if grant_type != JWT_BEARER {
        return token_error(
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        );
    }
    let Some(assertion) = fields.get("assertion").filter(|a| !a.is_empty()) else {
        return token_error("invalid_request", "Missing required parameter: assertion");
    };
    let (client_email, token_url) = {
        let s = vault.lock();
        (s.client_email.clone(), s.token_url.clone())
    };
    let audience = token_url.unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}/token")
    });
    let grant = match check_assertion(assertion, &audience, &client_email, unix_now()) {
        Ok(g) => g,
        Err((error, description)) => return token_error(error, &description),
    };
    let access_token = random_token("ya29.sandbox-");
    let scope = grant.scopes.join(" ");
    let mut s = vault.lock();
    s.tokens.insert(
        access_token.clone(),
        Token {
            expires: Instant::now() + Duration::from_secs(TOKEN_LIFETIME_SECS),
            scopes: grant.scopes,
            principal: grant.principal,
        },
    );
    s.tokens_issued += 1;
    google_json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": TOKEN_LIFETIME_SECS,
            "scope": scope,
            "token_type": "Bearer",
        }),
    )
}

// ---------------------------------------------------------------------------
// Matters and holds

async fn get_matter(State(vault): State<Vault>, Path(matter): Path<String>) -> Response {
    match vault.lock().matters.get(&matter) {
        Some(m) => google_json(StatusCode::OK, &m.json),
        None => entity_not_found(),
    }
}

fn enum_field<'a>(obj: &'a Map<String, Value>, name: &str, allowed: &[&str]) -> Option<&'a str> {
    obj.get(name)
        .and_then(Value::as_str)
        .filter(|v| allowed.contains(v))
}

/// A held account as stored: `accountId` always, `email` when known.
fn held_account(
    accounts: &mut BTreeMap<String, String>,
    email: Option<&str>,
    id: Option<&str>,
) -> Result<Value, String> {
    let (id, email) = match (
        email.filter(|e| !e.is_empty()),
        id.filter(|i| !i.is_empty()),
    ) {
        // The email takes precedence over the ID, as the API documents.
        (Some(email), _) => {
            let id = account_id(email);
            accounts.insert(id.clone(), email.to_string());
            (id, Some(email.to_string()))
        }
        (None, Some(id)) => match accounts.get(id) {
            Some(email) => (id.to_string(), Some(email.clone())),
            None => return Err(format!("Account {id} was not found.")),
        },
        (None, None) => return Err("A held account needs an email or an accountId.".to_string()),
    };
    let mut account = json!({ "accountId": id, "holdTime": now_millis() });
    if let Some(email) = email {
        account["email"] = json!(email);
    }
    Ok(account)
}

/// Validate a `Hold` from a create request (its accounts are resolved by
/// the caller).
fn check_hold(body: &Map<String, Value>) -> Result<(), String> {
    if body
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("The hold name is required.".to_string());
    }
    let corpora: Vec<&str> = CORPORA.iter().map(|(c, _)| *c).collect();
    let Some(corpus) = enum_field(body, "corpus", &corpora) else {
        return Err(format!("corpus must be one of {}.", corpora.join(", ")));
    };
    let has_accounts = body
        .get("accounts")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if body.get("orgUnit").is_some_and(|ou| !ou.is_object()) {
        return Err("orgUnit must be a HeldOrgUnit object.".to_string());
    }
    if has_accounts && body.get("orgUnit").is_some() {
        return Err("A hold applies either to accounts or to an orgUnit, not both.".to_string());
    }
    if let Some(query) = body.get("query") {
        let Some(query) = query.as_object() else {
            return Err("query must be a CorpusQuery object.".to_string());
        };
        let expected = CORPORA
            .iter()
            .find(|(c, _)| *c == corpus)
            .map(|(_, q)| *q)
            .unwrap_or_default();
        if let Some(other) = query.keys().find(|k| k.as_str() != expected) {
            return Err(format!(
                "The corpus-specific query {other} does not match corpus {corpus}."
            ));
        }
    }
    Ok(())
}

async fn create_hold(
    State(vault): State<Vault>,
    Path(matter): Path<String>,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = check_hold(&body) {
        return invalid(&e);
    }
    let mut guard = vault.lock();
    let s = &mut *guard;
    if !s.matters.contains_key(&matter) {
        return entity_not_found();
    }
    let mut accounts = Vec::new();
    for a in body
        .get("accounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |k| a.get(k).and_then(Value::as_str);
        match held_account(&mut s.accounts, text("email"), text("accountId")) {
            Ok(account) => accounts.push(account),
            Err(e) => return invalid(&e),
        }
    }
    let hold_id = format!("{:x}", 0x1a2b_0000_0000u64 + next(&mut s.next_id));
    let mut hold = Value::Object(body);
    hold["holdId"] = json!(hold_id);
    hold["updateTime"] = json!(now_millis());
    if accounts.is_empty() {
        if let Some(h) = hold.as_object_mut() {
            h.remove("accounts");
        }
    } else {
        hold["accounts"] = json!(accounts);
    }
    if hold.get("orgUnit").is_some() {
        hold["orgUnit"]["holdTime"] = json!(now_millis());
    }
    if let Some(m) = s.matters.get_mut(&matter) {
        m.holds.push(hold.clone());
    }
    google_json(StatusCode::OK, &hold)
}

/// A list in proto3 JSON: the field is left out when the list is empty,
/// as Google's APIs do, so a client must not expect `"holds": []`.
fn list_of(field: &str, items: Vec<Value>) -> Value {
    let mut body = json!({});
    if !items.is_empty() {
        body[field] = json!(items);
    }
    body
}

async fn list_holds(State(vault): State<Vault>, Path(matter): Path<String>) -> Response {
    match vault.lock().matters.get(&matter) {
        Some(m) => google_json(StatusCode::OK, &list_of("holds", m.holds.clone())),
        None => entity_not_found(),
    }
}

async fn get_hold(
    State(vault): State<Vault>,
    Path((matter, hold)): Path<(String, String)>,
) -> Response {
    let s = vault.lock();
    let found = s
        .matters
        .get(&matter)
        .and_then(|m| m.holds.iter().find(|h| h["holdId"] == hold.as_str()));
    match found {
        Some(h) => google_json(StatusCode::OK, h),
        None => entity_not_found(),
    }
}

/// `POST …/holds/{holdId}:{method}`: the custom methods on a hold.
async fn hold_method(
    State(vault): State<Vault>,
    Path((matter, segment)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some((hold, method)) = segment.split_once(':') else {
        return google_error(StatusCode::NOT_FOUND, "Method not found.");
    };
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut guard = vault.lock();
    let s = &mut *guard;
    let Some(h) = s
        .matters
        .get_mut(&matter)
        .and_then(|m| m.holds.iter_mut().find(|h| h["holdId"] == hold))
    else {
        return entity_not_found();
    };
    let result = match method {
        "addHeldAccounts" => add_held_accounts(&mut s.accounts, h, &body),
        "removeHeldAccounts" => remove_held_accounts(h, &body),
        _ => return google_error(StatusCode::NOT_FOUND, "Method not found."),
    };
    match result {
        Ok(response) => {
            h["updateTime"] = json!(now_millis());
            google_json(StatusCode::OK, &response)
        }
        Err(r) => r,
    }
}

fn strings<'a>(body: &'a Map<String, Value>, name: &str) -> Vec<&'a str> {
    body.get(name)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A `google.rpc.Status` in proto3 JSON: `{}` for OK.
fn rpc(code: u32, message: &str) -> Value {
    json!({ "code": code, "message": message })
}

fn add_held_accounts(
    directory: &mut BTreeMap<String, String>,
    hold: &mut Value,
    body: &Map<String, Value>,
) -> Result<Value, Response> {
    if hold.get("orgUnit").is_some() {
        return Err(google_error_as(
            StatusCode::BAD_REQUEST,
            "FAILED_PRECONDITION",
            "Accounts can be added only to an account-based hold.",
        ));
    }
    let (emails, ids) = (strings(body, "emails"), strings(body, "accountIds"));
    let requested: Vec<(Option<&str>, Option<&str>)> = match (emails.is_empty(), ids.is_empty()) {
        (false, true) => emails.iter().map(|e| (Some(*e), None)).collect(),
        (true, false) => ids.iter().map(|i| (None, Some(*i))).collect(),
        _ => {
            return Err(invalid(
                "Specify either emails or accountIds, but not both.",
            ));
        }
    };
    let mut responses = Vec::new();
    for (email, id) in requested {
        let account = match held_account(directory, email, id) {
            Ok(a) => a,
            Err(e) => {
                responses.push(json!({ "status": rpc(5, &e) }));
                continue;
            }
        };
        let held = hold["accounts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h["accountId"] == account["accountId"]));
        if held {
            responses.push(json!({ "status": rpc(6, "The account is already on this hold.") }));
            continue;
        }
        match hold["accounts"].as_array_mut() {
            Some(a) => a.push(account.clone()),
            None => hold["accounts"] = json!([account.clone()]),
        }
        responses.push(json!({ "account": account, "status": {} }));
    }
    Ok(json!({ "responses": responses }))
}

fn remove_held_accounts(hold: &mut Value, body: &Map<String, Value>) -> Result<Value, Response> {
    let ids = strings(body, "accountIds");
    if ids.is_empty() {
        return Err(invalid("accountIds is required."));
    }
    let mut statuses = Vec::new();
    for id in ids {
        let accounts = hold.get_mut("accounts").and_then(Value::as_array_mut);
        let index = accounts
            .as_ref()
            .and_then(|a| a.iter().position(|h| h["accountId"] == id));
        match (accounts, index) {
            (Some(a), Some(i)) => {
                a.remove(i);
                statuses.push(json!({}));
            }
            _ => statuses.push(rpc(5, &format!("Account {id} is not on this hold."))),
        }
    }
    if hold["accounts"].as_array().is_some_and(Vec::is_empty)
        && let Some(h) = hold.as_object_mut()
    {
        h.remove("accounts");
    }
    Ok(json!({ "statuses": statuses }))
}

// ---------------------------------------------------------------------------
// Exports

fn check_export(body: &Map<String, Value>) -> Result<(), String> {
    if body
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("The export name is required.".to_string());
    }
    let Some(query) = body.get("query").and_then(Value::as_object) else {
        return Err("query is required.".to_string());
    };
    let corpora: Vec<&str> = CORPORA.iter().map(|(c, _)| *c).collect();
    if enum_field(query, "corpus", &corpora).is_none() {
        return Err(format!(
            "query.corpus must be one of {}.",
            corpora.join(", ")
        ));
    }
    if query.contains_key("dataScope") && enum_field(query, "dataScope", DATA_SCOPES).is_none() {
        return Err(format!(
            "query.dataScope must be one of {}.",
            DATA_SCOPES.join(", ")
        ));
    }
    let method = enum_field(query, "method", SEARCH_METHODS)
        .or_else(|| enum_field(query, "searchMethod", SEARCH_METHODS));
    let Some(method) = method else {
        return Err("A search method must be specified.".to_string());
    };
    if method == "ACCOUNT" {
        let emails = query
            .get("accountInfo")
            .and_then(Value::as_object)
            .map(|a| strings(a, "emails").len())
            .unwrap_or_default();
        if emails == 0 {
            return Err(
                "query.accountInfo.emails is required for the ACCOUNT search method.".to_string(),
            );
        }
    }
    let format = body
        .get("exportOptions")
        .and_then(|o| o.get("mailOptions"))
        .and_then(|m| m.get("exportFormat"));
    if let Some(format) = format
        && !format.as_str().is_some_and(|f| EXPORT_FORMATS.contains(&f))
    {
        return Err(format!(
            "exportOptions.mailOptions.exportFormat must be one of {}.",
            EXPORT_FORMATS.join(", ")
        ));
    }
    Ok(())
}

/// Mark an export done and give it made-up statistics and one file.
fn complete(export: &mut Value) {
    let accounts = export["query"]["accountInfo"]["emails"]
        .as_array()
        .map_or(1, Vec::len)
        .max(1);
    let artifacts = accounts * 12;
    let size = artifacts * 2048;
    let id = export["id"].as_str().unwrap_or_default().to_string();
    export["status"] = json!("COMPLETED");
    export["stats"] = json!({
        "exportedArtifactCount": artifacts.to_string(),
        "totalArtifactCount": artifacts.to_string(),
        "sizeInBytes": size.to_string(),
    });
    export["cloudStorageSink"] = json!({
        "files": [{
            "bucketName": EXPORT_BUCKET,
            "objectName": format!("{id}/export-1.zip"),
            "size": size.to_string(),
        }]
    });
}

async fn create_export(
    State(vault): State<Vault>,
    Path(matter): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = check_export(&body) {
        return invalid(&e);
    }
    let requester = faults::bearer_header(&headers)
        .and_then(|t| vault.lock().tokens.get(t).map(|t| t.principal.clone()))
        .unwrap_or_default();
    let mut s = vault.lock();
    let polls = s.export_polls;
    let id = uuid_from(next(&mut s.next_id), 0x6578_706f);
    let Some(m) = s.matters.get_mut(&matter) else {
        return entity_not_found();
    };
    let mut export = Value::Object(body);
    export["id"] = json!(id);
    export["matterId"] = json!(matter);
    export["createTime"] = json!(now_millis());
    export["requester"] = json!({ "email": requester });
    export["status"] = json!("IN_PROGRESS");
    export["stats"] = json!({ "exportedArtifactCount": "0" });
    m.exports.push(Export {
        json: export.clone(),
        polls_left: polls,
    });
    google_json(StatusCode::OK, &export)
}

/// `exports.list`: pages of `pageSize` (default and most 100, as a client
/// may not assume more), continued with the `nextPageToken` given.
async fn list_exports(
    State(vault): State<Vault>,
    Path(matter): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let size = match q.get("pageSize").map(|s| s.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return invalid("pageSize must be between 1 and 100."),
    };
    let start = match q.get("pageToken").map(|s| s.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return invalid("Invalid page token."),
    };
    let mut s = vault.lock();
    let Some(m) = s.matters.get_mut(&matter) else {
        return entity_not_found();
    };
    let total = m.exports.len();
    let exports = m
        .exports
        .iter_mut()
        .skip(start)
        .take(size)
        .map(Export::read)
        .collect();
    let mut body = list_of("exports", exports);
    if start + size < total {
        body["nextPageToken"] = json!((start + size).to_string());
    }
    google_json(StatusCode::OK, &body)
}

async fn get_export(
    State(vault): State<Vault>,
    Path((matter, export)): Path<(String, String)>,
) -> Response {
    let mut s = vault.lock();
    let found = s.matters.get_mut(&matter).and_then(|m| {
        m.exports
            .iter_mut()
            .find(|e| e.json["id"] == export.as_str())
    });
    match found {
        Some(e) => google_json(StatusCode::OK, &e.read()),
        None => entity_not_found(),
    }
}

async fn not_found(uri: Uri) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        &format!(
            "The requested URL {} was not found on this server.",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA: &str = "vault-bot@acme-legal.iam.gserviceaccount.com";
    const ADMIN: &str = "admin@acme.example";

    async fn start(vault: &Vault) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let v = vault.clone();
        tokio::spawn(async move { v.serve(listener, std::future::pending()).await });
        format!("http://{addr}")
    }

    fn b64(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// An RS256-shaped assertion with a signature of `sig_len` random bytes.
    fn jwt(header: &Value, claims: &Value, sig_len: usize) -> String {
        let sig: Vec<u8> = (0..sig_len).map(|_| rand::random::<u8>()).collect();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
        format!("{}.{}.{sig}", b64(header), b64(claims))
    }

    fn claims(base: &str, scope: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": SA,
            "sub": ADMIN,
            "scope": scope,
            "aud": format!("{base}/token"),
            "iat": now,
            "exp": now + 3600,
        })
    }

    fn rs256() -> Value {
        json!({ "alg": "RS256", "typ": "JWT", "kid": "0123abcd" })
    }

    async fn exchange(http: &reqwest::Client, base: &str, assertion: &str) -> (u16, Value) {
        let r = http
            .post(format!("{base}/token"))
            .form(&[("grant_type", JWT_BEARER), ("assertion", assertion)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn setup() -> (Vault, String, reqwest::Client, String) {
        let vault = Vault::new(SA);
        let base = start(&vault).await;
        let http = reqwest::Client::new();
        let (status, body) = exchange(
            &http,
            &base,
            &jwt(&rs256(), &claims(&base, EDISCOVERY), 256),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap().to_string();
        (vault, base, http, token)
    }

    #[tokio::test]
    async fn exchanges_a_well_formed_assertion_and_refuses_bad_ones() {
        let vault = Vault::new(SA);
        let base = start(&vault).await;
        let http = reqwest::Client::new();

        let good = claims(&base, &format!("{EDISCOVERY} {EDISCOVERY_READONLY}"));
        let (status, body) = exchange(&http, &base, &jwt(&rs256(), &good, 256)).await;
        assert_eq!(status, 200);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["scope"], format!("{EDISCOVERY} {EDISCOVERY_READONLY}"));
        assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));

        let with = |key: &str, value: Value| {
            let mut c = good.clone();
            c[key] = value;
            c
        };
        let now = unix_now();
        let mut stale = with("iat", json!(now - 7200));
        stale["exp"] = json!(now - 3600);
        let cases = [
            (
                jwt(
                    &rs256(),
                    &with("aud", json!("https://oauth2.googleapis.com/token")),
                    256,
                ),
                "invalid_grant",
                MSG_BAD_AUDIENCE,
            ),
            (
                jwt(
                    &rs256(),
                    &with("iss", json!("someone@else.iam.gserviceaccount.com")),
                    256,
                ),
                "invalid_grant",
                MSG_UNKNOWN_ACCOUNT,
            ),
            (
                jwt(&rs256(), &with("exp", json!(now + 7200)), 256),
                "invalid_grant",
                MSG_BAD_TIME,
            ),
            (jwt(&rs256(), &stale, 256), "invalid_grant", MSG_BAD_TIME),
            (
                jwt(&rs256(), &with("scope", json!("ediscovery")), 256),
                "invalid_scope",
                MSG_BAD_SCOPE,
            ),
            (
                jwt(&json!({ "alg": "HS256", "typ": "JWT" }), &good, 256),
                "invalid_grant",
                MSG_BAD_SIGNATURE,
            ),
            (jwt(&rs256(), &good, 32), "invalid_grant", MSG_BAD_SIGNATURE),
        ];
        for (assertion, error, description) in cases {
            let (status, body) = exchange(&http, &base, &assertion).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"], error, "{body}");
            assert_eq!(body["error_description"], description);
        }
        let (status, body) = exchange(&http, &base, "not-a-jwt").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        // Standard (not url-safe) base64 with padding is not a JWS.
        let padded = jwt(&rs256(), &good, 256).replace('.', "=.");
        assert_eq!(exchange(&http, &base, &padded).await.0, 400);

        let r = http
            .post(format!("{base}/token"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "unsupported_grant_type"
        );
        assert_eq!(vault.tokens_issued(), 1);

        // An explicit token URL replaces the Host-derived one.
        vault.set_token_url("https://oauth2.googleapis.com/token");
        let real = with("aud", json!("https://oauth2.googleapis.com/token"));
        assert_eq!(
            exchange(&http, &base, &jwt(&rs256(), &real, 256)).await.0,
            200
        );
    }

    #[tokio::test]
    async fn api_calls_need_a_token_with_the_right_scope() {
        let (vault, base, http, token) = setup().await;
        let matter = vault.add_matter("Departure of J. Doe");
        let url = format!("{base}/v1/matters/{matter}");

        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], 401);
        assert_eq!(err["error"]["status"], "UNAUTHENTICATED");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Request is missing")
        );
        let r = http
            .get(&url)
            .bearer_auth("ya29.fake")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "matterId": matter, "name": "Departure of J. Doe", "state": "OPEN" })
        );

        let (_, body) = exchange(
            &http,
            &base,
            &jwt(&rs256(), &claims(&base, EDISCOVERY_READONLY), 256),
        )
        .await;
        let readonly = body["access_token"].as_str().unwrap();
        let r = http.get(&url).bearer_auth(readonly).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .post(format!("{url}/holds"))
            .bearer_auth(readonly)
            .json(&json!({ "name": "h", "corpus": "MAIL" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["status"],
            "PERMISSION_DENIED"
        );

        let r = http
            .get(format!("{base}/v1/matters/no-such-matter"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "error": { "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND" } })
        );

        vault.expire_tokens();
        assert_eq!(
            http.get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }

    #[tokio::test]
    async fn creates_lists_and_extends_holds() {
        let (vault, base, http, token) = setup().await;
        let matter = vault.add_matter("Departure of J. Doe");
        let holds = format!("{base}/v1/matters/{matter}/holds");
        let post = |url: String, body: Value| {
            let http = http.clone();
            let token = token.clone();
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };

        let r = http.get(&holds).bearer_auth(&token).send().await.unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({}),
            "empty lists are omitted"
        );

        let (status, hold) = post(
            holds.clone(),
            json!({
                "name": "J. Doe mail",
                "corpus": "MAIL",
                "accounts": [{ "email": "jdoe@acme.example" }],
                "query": { "mailQuery": { "terms": "from:jdoe" } },
            }),
        )
        .await;
        assert_eq!(status, 200, "{hold}");
        let hold_id = hold["holdId"].as_str().unwrap().to_string();
        assert_eq!(hold["name"], "J. Doe mail");
        assert_eq!(hold["corpus"], "MAIL");
        assert_eq!(hold["query"]["mailQuery"]["terms"], "from:jdoe");
        assert!(hold["updateTime"].is_string());
        let account = &hold["accounts"][0];
        assert_eq!(account["email"], "jdoe@acme.example");
        assert_eq!(account["accountId"], account_id("jdoe@acme.example"));
        assert_eq!(account["accountId"].as_str().unwrap().len(), 21);
        assert!(account["holdTime"].is_string());

        let r = http.get(&holds).bearer_auth(&token).send().await.unwrap();
        let list: Value = r.json().await.unwrap();
        assert_eq!(list["holds"].as_array().unwrap().len(), 1);
        assert_eq!(list["holds"][0]["holdId"], hold_id.as_str());
        let r = http
            .get(format!("{holds}/{hold_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["holdId"], hold_id.as_str());

        let add = format!("{holds}/{hold_id}:addHeldAccounts");
        let (status, body) = post(
            add.clone(),
            json!({ "emails": ["ann@acme.example", "jdoe@acme.example"] }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let responses = body["responses"].as_array().unwrap();
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0]["account"]["email"], "ann@acme.example");
        assert_eq!(responses[0]["status"], json!({}));
        assert!(responses[1].get("account").is_none());
        assert_eq!(responses[1]["status"]["code"], 6);
        let (status, body) = post(
            add.clone(),
            json!({ "accountIds": [account_id("ann@acme.example"), "123"] }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["responses"][0]["status"]["code"], 6,
            "already held, by ID"
        );
        assert_eq!(body["responses"][1]["status"]["code"], 5, "unknown ID");
        let (status, body) = post(
            add.clone(),
            json!({ "emails": ["a@b.c"], "accountIds": ["1"] }),
        )
        .await;
        assert_eq!(
            (status, body["error"]["status"].as_str()),
            (400, Some("INVALID_ARGUMENT"))
        );

        let stored = vault.holds(&matter);
        let emails: Vec<_> = stored[0]["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["email"].as_str().unwrap())
            .collect();
        assert_eq!(emails, ["jdoe@acme.example", "ann@acme.example"]);

        let (status, body) = post(
            format!("{holds}/{hold_id}:removeHeldAccounts"),
            json!({ "accountIds": [account_id("ann@acme.example"), "999"] }),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["statuses"][0], json!({}));
        assert_eq!(body["statuses"][1]["code"], 5);
        assert_eq!(
            vault.holds(&matter)[0]["accounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let (status, ou_hold) = post(
            holds.clone(),
            json!({ "name": "Sales OU", "corpus": "DRIVE", "orgUnit": { "orgUnitId": "id:03ph8a2z1" } }),
        )
        .await;
        assert_eq!(status, 200);
        assert!(ou_hold["orgUnit"]["holdTime"].is_string());
        let (status, body) = post(
            format!(
                "{holds}/{}:addHeldAccounts",
                ou_hold["holdId"].as_str().unwrap()
            ),
            json!({ "emails": ["x@acme.example"] }),
        )
        .await;
        assert_eq!(
            (status, body["error"]["status"].as_str()),
            (400, Some("FAILED_PRECONDITION"))
        );

        for bad in [
            json!({ "corpus": "MAIL" }),
            json!({ "name": "x", "corpus": "EMAIL" }),
            json!({ "name": "x", "corpus": "MAIL", "query": { "driveQuery": {} } }),
            json!({ "name": "x", "corpus": "MAIL", "accounts": [{}] }),
        ] {
            let (status, body) = post(holds.clone(), bad.clone()).await;
            assert_eq!(status, 400, "{bad}");
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        }
        let (status, _) = post(
            format!("{holds}/nope:addHeldAccounts"),
            json!({ "emails": ["a@b.c"] }),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = post(
            format!("{base}/v1/matters/nope/holds"),
            json!({ "name": "x", "corpus": "MAIL" }),
        )
        .await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn exports_start_in_progress_and_complete_when_polled() {
        let (vault, base, http, token) = setup().await;
        let matter = vault.add_matter("Departure of J. Doe");
        let exports = format!("{base}/v1/matters/{matter}/exports");
        let request = json!({
            "name": "J. Doe mailbox",
            "query": {
                "corpus": "MAIL",
                "dataScope": "ALL_DATA",
                "method": "ACCOUNT",
                "accountInfo": { "emails": ["jdoe@acme.example"] },
            },
            "exportOptions": { "mailOptions": { "exportFormat": "PST" }, "region": "ANY" },
        });
        let create = || {
            let http = http.clone();
            let (url, token, request) = (exports.clone(), token.clone(), request.clone());
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&request)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            }
        };
        let get = |id: String| {
            let http = http.clone();
            let (url, token) = (format!("{exports}/{id}"), token.clone());
            async move {
                let r = http.get(url).bearer_auth(token).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };

        let export = create().await;
        let id = export["id"].as_str().unwrap().to_string();
        assert_eq!(export["status"], "IN_PROGRESS");
        assert_eq!(export["matterId"], matter.as_str());
        assert_eq!(export["name"], "J. Doe mailbox");
        assert_eq!(export["requester"]["email"], ADMIN);
        assert_eq!(
            export["exportOptions"]["mailOptions"]["exportFormat"],
            "PST"
        );
        assert!(export["createTime"].is_string());
        assert_eq!(vault.exports(&matter)[0]["status"], "IN_PROGRESS");

        let (status, done) = get(id.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(done["status"], "COMPLETED");
        assert_eq!(
            done["stats"]["exportedArtifactCount"], "12",
            "int64 as a string"
        );
        assert_eq!(done["stats"]["sizeInBytes"], "24576");
        assert_eq!(
            done["cloudStorageSink"]["files"][0]["bucketName"],
            EXPORT_BUCKET
        );
        assert_eq!(
            done["cloudStorageSink"]["files"][0]["objectName"],
            format!("{id}/export-1.zip")
        );

        vault.set_export_polls(2);
        let slow = create().await["id"].as_str().unwrap().to_string();
        assert_eq!(get(slow.clone()).await.1["status"], "IN_PROGRESS");
        let r = http.get(&exports).bearer_auth(&token).send().await.unwrap();
        let list: Value = r.json().await.unwrap();
        assert_eq!(list["exports"].as_array().unwrap().len(), 2);
        assert_eq!(
            list["exports"][1]["status"], "IN_PROGRESS",
            "the list is the second poll"
        );
        assert!(list.get("nextPageToken").is_none());
        let page = |q: &'static str| {
            let (http, url, token) = (http.clone(), format!("{exports}?{q}"), token.clone());
            async move {
                let r = http.get(url).bearer_auth(token).send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            }
        };
        let (_, first) = page("pageSize=1").await;
        assert_eq!(first["exports"].as_array().unwrap().len(), 1);
        assert_eq!(first["nextPageToken"], "1");
        let (_, second) = page("pageSize=1&pageToken=1").await;
        assert_eq!(second["exports"][0]["id"], list["exports"][1]["id"]);
        assert!(second.get("nextPageToken").is_none());
        assert_eq!(page("pageSize=0").await.0, 400);
        assert_eq!(page("pageToken=x").await.0, 400);
        assert_eq!(get(slow).await.1["status"], "COMPLETED");

        assert_eq!(get("nope".into()).await.0, 404);
        for bad in [
            json!({ "query": request["query"] }),
            json!({ "name": "x" }),
            json!({ "name": "x", "query": { "corpus": "MAIL" } }),
            json!({ "name": "x", "query": { "corpus": "MAIL", "method": "ACCOUNT" } }),
            json!({ "name": "x", "query": request["query"], "exportOptions": { "mailOptions": { "exportFormat": "ZIP" } } }),
        ] {
            let r = http
                .post(&exports)
                .bearer_auth(&token)
                .json(&bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
    }

    #[tokio::test]
    async fn faults_use_googles_error_shape() {
        let (vault, base, http, token) = setup().await;
        let matter = vault.add_matter("m");
        let url = format!("{base}/v1/matters/{matter}");
        let r = http
            .put(format!("{base}/_sandbox/faults"))
            .json(&json!({ "next": [429], "retry_after_secs": 2, "latency_ms": 200 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);

        let t = Instant::now();
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], 429);
        assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
        let t = Instant::now();
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(r.status(), 200);

        // A token request is neither delayed nor faulted by default.
        vault.set_faults(Faults {
            latency_ms: 400,
            share: Some(1.0),
            ..Faults::default()
        });
        let t = Instant::now();
        let (status, _) = exchange(
            &http,
            &base,
            &jwt(&rs256(), &claims(&base, EDISCOVERY), 256),
        )
        .await;
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_millis(400));

        vault.set_faults(Faults {
            share: Some(0.3),
            seed: 99,
            every_status: Some(503),
            ..Faults::default()
        });
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(
                http.get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        let unavailable = statuses.iter().filter(|s| **s == 503).count();
        assert!((1..=12).contains(&unavailable), "{statuses:?}");
        vault.set_faults(Faults {
            share: Some(0.3),
            seed: 99,
            every_status: Some(503),
            ..Faults::default()
        });
        let mut again = Vec::new();
        for _ in 0..20 {
            again.push(
                http.get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses, again);

        let log = vault.requests();
        let token_req = log.iter().find(|r| r.uri == "/token").unwrap();
        assert_eq!(token_req.body.as_ref().unwrap()["grant_type"], JWT_BEARER);
        let state: Value = http
            .get(format!("{base}/_sandbox/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["matters"][0]["matterId"], matter.as_str());
        assert_eq!(state["tokensIssued"], 2);
    }

    #[test]
    fn account_ids_are_stable_and_case_blind() {
        assert_eq!(account_id("A@b.c"), account_id(" a@B.C "));
        assert_ne!(account_id("a@b.c"), account_id("b@b.c"));
        assert!(account_id("a@b.c").chars().all(|c| c.is_ascii_digit()));
    }
}
