//! A Microsoft identity platform + Microsoft Graph v1.0 test double on
//! loopback, for connectors that disable accounts, revoke sessions and wipe
//! Intune devices. Not a directory: state lives in memory and is gone when
//! it stops.
//!
//! Speaks the client-credentials grant at `POST /{tenant}/oauth2/v2.0/token`
//! (form or `Basic` client auth, `scope` must be Graph's `/.default`), then
//! on `/v1.0`, only with a token it issued:
//!
//! - `GET /users/{id | userPrincipalName}` with `$select`,
//!   `PATCH /users/{id | userPrincipalName}` (204),
//!   `POST /users/{id | userPrincipalName}/revokeSignInSessions`;
//! - `GET /deviceManagement/managedDevices` with
//!   `$filter=userPrincipalName eq '…'` or `userId eq '…'`,
//!   `GET /deviceManagement/managedDevices/{id}`,
//!   `POST /deviceManagement/managedDevices/{id}/wipe` (204).
//!
//! Actions may also be addressed with their namespace
//! (`…/microsoft.graph.wipe`), as the Graph SDKs send them. Errors use the
//! identity platform's OAuth error JSON and Graph's `{"error":{"code",
//! "message","innerError"}}`. Faults, the request log and state are under
//! `/_sandbox/` (see [`super::faults`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::faults::{
    self, Double, FaultPlan, Faults, Kind, SeenRequest, basic_credentials, bearer, form,
    now_seconds, random_token,
};

/// Where Graph's endpoints are mounted.
pub const GRAPH_BASE: &str = "/v1.0";
/// Microsoft Graph's application ID, which a `.default` scope may name.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// `expires_in` of an issued token, as the identity platform sends it.
const TOKEN_LIFETIME_SECS: u64 = 3599;
/// `@odata.context` prefix; the real service names its own host here.
const METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// Properties `GET /users/{id}` returns without `$select`, per the docs.
const DEFAULT_USER_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];
/// Further user properties this double knows (returned with `$select`).
const EXTRA_USER_PROPS: &[&str] = &[
    "accountEnabled",
    "createdDateTime",
    "department",
    "mailNickname",
    "signInSessionsValidFromDateTime",
    "usageLocation",
    "userType",
];
/// User properties `PATCH` may not set.
const READ_ONLY_USER_PROPS: &[&str] = &["id", "createdDateTime", "signInSessionsValidFromDateTime"];
/// Parameters the `wipe` action takes.
const WIPE_PARAMS: &[(&str, JsonKind)] = &[
    ("keepEnrollmentData", JsonKind::Bool),
    ("keepUserData", JsonKind::Bool),
    ("macOsUnlockCode", JsonKind::String),
    ("persistEsimDataPlan", JsonKind::Bool),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Bool,
    String,
}

/// Where a device's `wipe` action is. It reads `pending` on the first API
/// read after the wipe and `done` from the read after that: a connector
/// that polls sees the transition without the test sleeping.
#[derive(Debug, Clone)]
struct WipeAction {
    started: String,
    updated: String,
    seen_pending: bool,
    done: bool,
}

#[derive(Debug, Clone)]
struct Device {
    json: Value,
    wipe: Option<WipeAction>,
}

impl Device {
    /// The device as the API shows it, with its action results.
    fn render(&self) -> Value {
        let mut json = self.json.clone();
        let results: Vec<Value> = self
            .wipe
            .iter()
            .map(|w| {
                json!({
                    "@odata.type": "microsoft.graph.deviceActionResult",
                    "actionName": "wipe",
                    "actionState": if w.done { "done" } else { "pending" },
                    "startDateTime": w.started,
                    "lastUpdatedDateTime": w.updated,
                })
            })
            .collect();
        json["deviceActionResults"] = json!(results);
        json
    }

    /// An API read: moves a wipe that was already seen pending to done.
    fn read(&mut self) -> Value {
        if let Some(w) = &mut self.wipe
            && !w.done
        {
            if w.seen_pending {
                w.done = true;
                w.updated = now_seconds();
            } else {
                w.seen_pending = true;
            }
        }
        self.render()
    }
}

/// The double's state.
#[derive(Debug)]
pub struct GraphState {
    tenant: String,
    client_id: String,
    client_secret: String,
    tokens: HashMap<String, Instant>,
    tokens_issued: u32,
    users: BTreeMap<String, Value>,
    devices: BTreeMap<String, Device>,
    next_id: u64,
    plan: FaultPlan,
    requests: Vec<SeenRequest>,
}

/// Shared handle to a running (or not yet started) Graph double.
#[derive(Debug, Clone)]
pub struct Graph {
    state: Arc<Mutex<GraphState>>,
}

impl Graph {
    /// An empty tenant with one app registration that may use the
    /// client-credentials grant.
    pub fn new(tenant: &str, client_id: &str, client_secret: &str) -> Self {
        Self {
            state: Arc::new(Mutex::new(GraphState {
                tenant: tenant.to_string(),
                client_id: client_id.to_string(),
                client_secret: client_secret.to_string(),
                tokens: HashMap::new(),
                tokens_issued: 0,
                users: BTreeMap::new(),
                devices: BTreeMap::new(),
                next_id: 0,
                plan: FaultPlan::default(),
                requests: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GraphState> {
        self.state.lock().expect("graph state lock")
    }

    /// Add an enabled user; returns its object id.
    pub fn add_user(&self, upn: &str, display_name: &str) -> String {
        let mut s = self.lock();
        let id = guid(&mut s.next_id, 0x87d3_49ed);
        let (given, surname) = split_name(display_name);
        let now = now_seconds();
        let user = json!({
            "id": id,
            "userPrincipalName": upn,
            "displayName": display_name,
            "givenName": given,
            "surname": surname,
            "mail": upn,
            "mailNickname": upn.split('@').next().unwrap_or(upn),
            "businessPhones": [],
            "jobTitle": null,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "department": null,
            "usageLocation": null,
            "userType": "Member",
            "accountEnabled": true,
            "createdDateTime": now,
            "signInSessionsValidFromDateTime": now,
        });
        s.users.insert(id.clone(), user);
        id
    }

    /// Add an Intune-managed device of `upn` (who need not exist: the device
    /// then has the nil user id); returns the device id.
    pub fn add_device(&self, upn: &str, device_name: &str, os: &str) -> String {
        let mut s = self.lock();
        let id = guid(&mut s.next_id, 0x705c_034c);
        let user = find_user(&s.users, upn).cloned();
        let user_id = user
            .as_ref()
            .and_then(|u| u["id"].as_str())
            .unwrap_or("00000000-0000-0000-0000-000000000000")
            .to_string();
        let user_name = user.as_ref().map(|u| u["displayName"].clone());
        let now = now_seconds();
        let json = json!({
            "@odata.type": "#microsoft.graph.managedDevice",
            "id": id,
            "userId": user_id,
            "userPrincipalName": upn,
            "userDisplayName": user_name.unwrap_or(Value::Null),
            "emailAddress": upn,
            "deviceName": device_name,
            "operatingSystem": os,
            "osVersion": null,
            "managedDeviceOwnerType": "company",
            "managementAgent": "mdm",
            "complianceState": "compliant",
            "deviceEnrollmentType": "userEnrollment",
            "deviceRegistrationState": "registered",
            "enrolledDateTime": now,
            "lastSyncDateTime": now,
            "isEncrypted": true,
            "serialNumber": format!("SN{:08X}", s.next_id),
        });
        s.devices.insert(id.clone(), Device { json, wipe: None });
        id
    }

    /// Set a user's `accountEnabled`, as an admin would outside any ticket.
    pub fn set_account_enabled(&self, upn: &str, enabled: bool) {
        let mut s = self.lock();
        if let Some(id) = find_user_id(&s.users, upn)
            && let Some(user) = s.users.get_mut(&id)
        {
            user["accountEnabled"] = json!(enabled);
        }
    }

    /// A user by UPN (case-insensitive), with every property this double keeps.
    pub fn user(&self, upn: &str) -> Option<Value> {
        find_user(&self.lock().users, upn).cloned()
    }

    /// The devices of `upn`, as the API would show them, without counting
    /// as a read (a pending wipe stays pending).
    pub fn devices_of(&self, upn: &str) -> Vec<Value> {
        self.lock()
            .devices
            .values()
            .filter(|d| eq_ci(&d.json["userPrincipalName"], upn))
            .map(Device::render)
            .collect()
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
        self.lock().tokens.values_mut().for_each(|e| *e = now);
    }

    /// Replace the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().plan.set(faults);
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let user = format!("{GRAPH_BASE}/users/{{id}}");
        let devices = format!("{GRAPH_BASE}/deviceManagement/managedDevices");
        let routes = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route(&user, get(get_user).patch(patch_user))
            .route(&format!("{user}/revokeSignInSessions"), post(revoke))
            .route(
                &format!("{user}/microsoft.graph.revokeSignInSessions"),
                post(revoke),
            )
            .route(&devices, get(list_devices))
            .route(&format!("{devices}/{{id}}"), get(get_device))
            .route(&format!("{devices}/{{id}}/wipe"), post(wipe))
            .route(
                &format!("{devices}/{{id}}/microsoft.graph.wipe"),
                post(wipe),
            )
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

impl Double for Graph {
    fn kind(&self, path: &str) -> Kind {
        if path.starts_with(&format!("{GRAPH_BASE}/")) {
            Kind::Api
        } else if path.ends_with("/oauth2/v2.0/token") {
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
        Graph::requests(self)
    }

    fn state_json(&self) -> Value {
        let s = self.lock();
        json!({
            "tenant": s.tenant,
            "clientId": s.client_id,
            "tokensIssued": s.tokens_issued,
            "users": s.users.values().collect::<Vec<_>>(),
            "managedDevices": s.devices.values().map(Device::render).collect::<Vec<_>>(),
        })
    }

    fn fault_response(&self, status: StatusCode) -> Response {
        // Graph's throttling answer, per its throttling guidance; other
        // statuses take the generic codes of its error reference.
        let (code, message) = match status.as_u16() {
            429 => ("TooManyRequests", "Please retry again later."),
            503 => (
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
            ),
            400 => ("invalidRequest", "The request is malformed or incorrect."),
            401 => (
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            ),
            403 => (
                "accessDenied",
                "Insufficient privileges to complete the operation.",
            ),
            404 => ("itemNotFound", "The resource could not be found."),
            411 => (
                "lengthRequired",
                "The request body needs a Content-Length header; chunked bodies are refused.",
            ),
            _ => ("generalException", "An unspecified error has occurred."),
        };
        graph_error(status, code, message)
    }

    fn refuse(&self, parts: &Parts) -> Option<Response> {
        let message = match bearer(parts) {
            None => "Access token is empty.",
            Some(token) => match self.lock().tokens.get(token) {
                Some(expiry) if Instant::now() < *expiry => return None,
                Some(_) => "Lifetime validation failed, the token is expired.",
                None => "Access token validation failure. Invalid audience.",
            },
        };
        let mut r = graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"\""),
        );
        Some(r)
    }
}

/// A GUID-shaped id, unique within this double.
fn guid(counter: &mut u64, head: u32) -> String {
    *counter += 1;
    let n = *counter;
    format!(
        "{head:08x}-{:04x}-4{:03x}-8000-{n:012x}",
        n & 0xffff,
        n & 0xfff
    )
}

fn split_name(display_name: &str) -> (Value, Value) {
    match display_name.trim().rsplit_once(' ') {
        Some((given, surname)) => (json!(given), json!(surname)),
        None => (json!(display_name), Value::Null),
    }
}

fn eq_ci(value: &Value, s: &str) -> bool {
    value.as_str().is_some_and(|v| v.eq_ignore_ascii_case(s))
}

/// `/users/{id | userPrincipalName}`: an object id, or a UPN compared
/// case-insensitively.
fn find_user<'a>(users: &'a BTreeMap<String, Value>, key: &str) -> Option<&'a Value> {
    users
        .get(key)
        .or_else(|| users.values().find(|u| eq_ci(&u["userPrincipalName"], key)))
}

fn find_user_id(users: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    find_user(users, key).and_then(|u| u["id"].as_str().map(str::to_string))
}

/// Graph's error body, with the `innerError` it carries for diagnostics.
fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid_like();
    let now = now_seconds();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now.trim_end_matches('Z'),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    (status, axum::Json(body)).into_response()
}

fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn user_not_found(key: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn device_not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("Resource not found: managedDevice '{id}'"),
    )
}

// ---------------------------------------------------------------------------
// Token endpoint

/// The identity platform's OAuth error body: `error`, `error_description`
/// (with the trace and correlation lines it appends), `error_codes`,
/// `timestamp`, `trace_id`, `correlation_id`.
fn token_error(status: StatusCode, error: &str, aadsts: u32, description: &str) -> Response {
    let trace_id = uuid_like();
    let correlation_id = uuid_like();
    let timestamp = now_seconds().replace('T', " ");
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{aadsts}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    (status, axum::Json(body)).into_response()
}

/// `scope` must be one resource's `/.default`, and the resource Graph.
fn check_scope(scope: &str) -> Result<(), Response> {
    let Some(resource) = scope.strip_suffix("/.default") else {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    };
    let graph = resource.trim_end_matches('/');
    if graph.eq_ignore_ascii_case("https://graph.microsoft.com") || graph == GRAPH_APP_ID {
        Ok(())
    } else {
        Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            &format!(
                "The resource principal named {resource} was not found in the tenant. This double only issues tokens for Microsoft Graph."
            ),
        ))
    }
}

async fn token(
    State(graph): State<Graph>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let field = |k: &str| fields.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let expected_tenant = graph.lock().tenant.clone();
    if !tenant.eq_ignore_ascii_case(&expected_tenant) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    for required in ["grant_type", "scope"] {
        if field(required).is_none() {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900_144,
                &format!("The request body must contain the following parameter: '{required}'."),
            );
        }
    }
    let grant_type = field("grant_type").unwrap_or_default();
    if grant_type != "client_credentials" {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70_003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    if let Err(r) = check_scope(field("scope").unwrap_or_default()) {
        return r;
    }
    let (client_id, secret) = match (field("client_id"), field("client_secret")) {
        (Some(id), secret) => (id.to_string(), secret.map(str::to_string)),
        (None, _) => match basic_credentials(&headers) {
            Some((id, secret)) => (id, Some(secret)),
            None => {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900_144,
                    "The request body must contain the following parameter: 'client_id'.",
                );
            }
        },
    };
    let secret = secret.or_else(|| basic_credentials(&headers).map(|(_, s)| s));
    let mut s = graph.lock();
    if client_id != s.client_id {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                s.tenant
            ),
        );
    }
    match secret {
        None => token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ),
        Some(secret) if secret != s.client_secret => token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ),
        Some(_) => {
            let access_token = random_token("sandbox-graph.");
            let expiry = Instant::now() + Duration::from_secs(TOKEN_LIFETIME_SECS);
            s.tokens.insert(access_token.clone(), expiry);
            s.tokens_issued += 1;
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_SECS,
                "access_token": access_token,
            }))
            .into_response()
        }
    }
}

// ---------------------------------------------------------------------------
// Users

/// An OData query option, with or without its `$` (v1.0 takes both).
fn option<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(&format!("${name}"))
        .or_else(|| q.get(name))
        .map(String::as_str)
}

/// Keep the `$select`ed properties, matched case-insensitively to their
/// real names. Loose where Graph is strict: names it does not know are
/// skipped rather than answered with a 400.
fn select(object: &Value, select: &str) -> (Value, Vec<String>) {
    let mut out = Map::new();
    let mut chosen = Vec::new();
    for wanted in select.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let found = object
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(wanted)));
        if let Some((k, v)) = found {
            out.insert(k.clone(), v.clone());
            chosen.push(k.clone());
        }
    }
    (Value::Object(out), chosen)
}

async fn get_user(
    State(graph): State<Graph>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(user) = find_user(&graph.lock().users, &key).cloned() else {
        return user_not_found(&key);
    };
    let (mut body, context) = match option(&q, "select") {
        Some(sel) => {
            let (body, chosen) = select(&user, sel);
            (
                body,
                format!("{METADATA}#users({})/$entity", chosen.join(",")),
            )
        }
        None => {
            let props = DEFAULT_USER_PROPS.join(",");
            (select(&user, &props).0, format!("{METADATA}#users/$entity"))
        }
    };
    body["@odata.context"] = json!(context);
    axum::Json(body).into_response()
}

/// Check a PATCH body against the user's properties; the changes to apply.
fn user_changes(body: &Value) -> Result<Map<String, Value>, Response> {
    let bad = |message: String| {
        Err(graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &message,
        ))
    };
    let Some(fields) = body.as_object() else {
        return bad("The request body must be a JSON object.".to_string());
    };
    let mut changes = Map::new();
    for (name, value) in fields {
        let known = DEFAULT_USER_PROPS
            .iter()
            .chain(EXTRA_USER_PROPS)
            .find(|p| p.eq_ignore_ascii_case(name));
        let Some(prop) = known else {
            return bad(format!(
                "Property '{name}' does not exist as a declared property or extension property."
            ));
        };
        if READ_ONLY_USER_PROPS.contains(prop) {
            return bad(format!("Property '{prop}' is read-only and cannot be set."));
        }
        let type_ok = match *prop {
            "accountEnabled" => value.is_boolean(),
            "businessPhones" => value
                .as_array()
                .is_some_and(|a| a.len() <= 1 && a.iter().all(Value::is_string)),
            "displayName" | "userPrincipalName" | "mailNickname" => value.is_string(),
            _ => value.is_string() || value.is_null(),
        };
        if !type_ok {
            return bad(format!(
                "Invalid value specified for property '{prop}' of resource 'User'."
            ));
        }
        changes.insert(prop.to_string(), value.clone());
    }
    Ok(changes)
}

async fn patch_user(State(graph): State<Graph>, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    let changes = match user_changes(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut s = graph.lock();
    let Some(id) = find_user_id(&s.users, &key) else {
        return user_not_found(&key);
    };
    let Some(user) = s.users.get_mut(&id) else {
        return user_not_found(&key);
    };
    for (k, v) in changes {
        user[k.as_str()] = v;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Resets `signInSessionsValidFromDateTime`, which is what revoking does.
async fn revoke(State(graph): State<Graph>, Path(key): Path<String>) -> Response {
    let mut s = graph.lock();
    let Some(id) = find_user_id(&s.users, &key) else {
        return user_not_found(&key);
    };
    if let Some(user) = s.users.get_mut(&id) {
        user["signInSessionsValidFromDateTime"] = json!(now_seconds());
    }
    axum::Json(json!({
        "@odata.context": format!("{METADATA}#Edm.Boolean"),
        "value": true,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------
// Intune managed devices

/// `userPrincipalName eq 'x'` or `userId eq 'x'` → (property, value). OData
/// string literals double a quote to escape it.
fn parse_device_filter(filter: &str) -> Result<(&'static str, String), String> {
    let f = filter.trim();
    let mut words = f.splitn(3, char::is_whitespace);
    let (prop, op, literal) = match (words.next(), words.next(), words.next()) {
        (Some(p), Some(o), Some(l)) => (p, o, l.trim()),
        _ => return Err(format!("Invalid filter clause: '{f}'")),
    };
    let prop = ["userPrincipalName", "userId", "deviceName"]
        .into_iter()
        .find(|p| p.eq_ignore_ascii_case(prop))
        .ok_or_else(|| {
            format!("Invalid filter clause: property '{prop}' is not supported by this double")
        })?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(format!(
            "Invalid filter clause: operator '{op}' is not supported by this double"
        ));
    }
    let inner = literal
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
        .filter(|inner| !inner.replace("''", "").contains('\''))
        .ok_or_else(|| format!("Invalid filter clause: bad string literal {literal}"))?;
    Ok((prop, inner.replace("''", "'")))
}

async fn list_devices(
    State(graph): State<Graph>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match option(&q, "filter").map(parse_device_filter).transpose() {
        Ok(f) => f,
        Err(e) => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let mut s = graph.lock();
    let value: Vec<Value> = s
        .devices
        .values_mut()
        .filter(|d| match &filter {
            None => true,
            Some((prop, want)) => eq_ci(&d.json[*prop], want),
        })
        .map(Device::read)
        .map(|d| match option(&q, "select") {
            Some(sel) => select(&d, sel).0,
            None => d,
        })
        .collect();
    axum::Json(json!({
        "@odata.context": format!("{METADATA}#deviceManagement/managedDevices"),
        "value": value,
    }))
    .into_response()
}

async fn get_device(
    State(graph): State<Graph>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut s = graph.lock();
    let Some(device) = s.devices.get_mut(&id) else {
        return device_not_found(&id);
    };
    let mut body = device.read();
    if let Some(sel) = option(&q, "select") {
        body = select(&body, sel).0;
    }
    body["@odata.context"] = json!(format!(
        "{METADATA}#deviceManagement/managedDevices/$entity"
    ));
    axum::Json(body).into_response()
}

async fn wipe(State(graph): State<Graph>, Path(id): Path<String>, body: Bytes) -> Response {
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(_) => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Unable to read JSON request payload.",
                );
            }
        }
    };
    let Some(params) = params.as_object() else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request body must be a JSON object.",
        );
    };
    for (name, value) in params {
        let ok = WIPE_PARAMS.iter().any(|(p, kind)| {
            p == name
                && match kind {
                    JsonKind::Bool => value.is_boolean(),
                    JsonKind::String => value.is_string() || value.is_null(),
                }
        });
        if !ok {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "The parameter '{name}' in the request payload is not a valid parameter for the operation 'wipe'."
                ),
            );
        }
    }
    let mut s = graph.lock();
    let Some(device) = s.devices.get_mut(&id) else {
        return device_not_found(&id);
    };
    let now = now_seconds();
    device.wipe = Some(WipeAction {
        started: now.clone(),
        updated: now,
        seen_pending: false,
        done: false,
    });
    StatusCode::NO_CONTENT.into_response()
}

/// Graph answers an unknown segment under `/v1.0` with a 400 naming it.
async fn not_found(uri: Uri) -> Response {
    match uri.path().strip_prefix(&format!("{GRAPH_BASE}/")) {
        Some(rest) => {
            let segment = rest.split('/').next().unwrap_or_default();
            graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Resource not found for the segment '{segment}'."),
            )
        }
        None => graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            &format!("No route for {}", uri.path()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "contoso.onmicrosoft.com";
    const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
    const SECRET: &str = "s3cret~value";

    async fn start(graph: &Graph) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let g = graph.clone();
        tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
        format!("http://{addr}")
    }

    fn token_form(secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", CLIENT.to_string()),
            ("client_secret", secret.to_string()),
            ("scope", "https://graph.microsoft.com/.default".to_string()),
        ]
    }

    async fn get_token(http: &reqwest::Client, base: &str) -> String {
        let r = http
            .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
            .form(&token_form(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn setup() -> (Graph, String, reqwest::Client, String) {
        let graph = Graph::new(TENANT, CLIENT, SECRET);
        let base = start(&graph).await;
        let http = reqwest::Client::new();
        let token = get_token(&http, &base).await;
        (graph, base, http, token)
    }

    #[tokio::test]
    async fn issues_tokens_and_refuses_a_wrong_secret() {
        let graph = Graph::new(TENANT, CLIENT, SECRET);
        let base = start(&graph).await;
        let http = reqwest::Client::new();
        let url = format!("{base}/{TENANT}/oauth2/v2.0/token");

        let r = http
            .post(&url)
            .form(&token_form(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        let token = body["access_token"].as_str().unwrap();
        assert!(token.len() > 20);
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

        let r = http
            .post(&url)
            .form(&token_form("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"], "invalid_client");
        assert_eq!(err["error_codes"], json!([7_000_215]));
        assert!(
            err["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS7000215: ")
        );
        assert!(err["trace_id"].is_string() && err["correlation_id"].is_string());

        // Basic client auth works too, and is the same app.
        let r = http
            .post(&url)
            .basic_auth(CLIENT, Some(SECRET))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            graph.tokens_issued(),
            2,
            "the failed attempt issues nothing"
        );

        // Wrong tenant, scope without /.default, unknown app.
        let r = http
            .post(format!("{base}/other.example/oauth2/v2.0/token"))
            .form(&token_form(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error_codes"],
            json!([90_002])
        );
        let mut form = token_form(SECRET);
        form[3].1 = "User.Read.All".to_string();
        let r = http.post(&url).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
        let mut form = token_form(SECRET);
        form[1].1 = "nobody".to_string();
        let r = http.post(&url).form(&form).send().await.unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "unauthorized_client"
        );
    }

    #[tokio::test]
    async fn api_calls_need_an_issued_unexpired_token() {
        let (graph, base, http, token) = setup().await;
        let id = graph.add_user("adele@contoso.com", "Adele Vance");
        let url = format!("{base}/v1.0/users/{id}");

        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "InvalidAuthenticationToken");
        assert_eq!(err["error"]["message"], "Access token is empty.");
        assert!(err["error"]["innerError"]["request-id"].is_string());

        let r = http.get(&url).bearer_auth("made-up").send().await.unwrap();
        assert_eq!(r.status(), 401);

        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);

        graph.expire_tokens();
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let err: Value = r.json().await.unwrap();
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
    }

    #[tokio::test]
    async fn gets_users_by_id_or_upn_with_default_and_selected_properties() {
        let (graph, base, http, token) = setup().await;
        let id = graph.add_user("AdeleV@contoso.com", "Adele Vance");

        let r = http
            .get(format!("{base}/v1.0/users/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let user: Value = r.json().await.unwrap();
        assert_eq!(user["id"], id.as_str());
        assert_eq!(user["displayName"], "Adele Vance");
        assert_eq!(user["givenName"], "Adele");
        assert_eq!(user["surname"], "Vance");
        assert_eq!(user["userPrincipalName"], "AdeleV@contoso.com");
        assert_eq!(user["businessPhones"], json!([]));
        assert!(
            user.get("accountEnabled").is_none(),
            "not a default property"
        );

        let r = http
            .get(format!("{base}/v1.0/users/adelev@contoso.com"))
            .query(&[("$select", "id,accountEnabled,DISPLAYNAME,noSuchThing")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let user: Value = r.json().await.unwrap();
        assert_eq!(
            user,
            json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,accountEnabled,displayName)/$entity",
                "id": id,
                "accountEnabled": true,
                "displayName": "Adele Vance",
            })
        );

        let r = http
            .get(format!("{base}/v1.0/users/ghost@contoso.com"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "Request_ResourceNotFound");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ghost@contoso.com")
        );
    }

    #[tokio::test]
    async fn patches_users_and_revokes_sessions() {
        let (graph, base, http, token) = setup().await;
        let id = graph.add_user("megan@contoso.com", "Megan Bowen");
        let before =
            graph.user("megan@contoso.com").unwrap()["signInSessionsValidFromDateTime"].clone();

        let r = http
            .patch(format!("{base}/v1.0/users/{id}"))
            .bearer_auth(&token)
            .json(&json!({ "accountEnabled": false, "department": "Gone" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(r.bytes().await.unwrap().is_empty());
        let user = graph.user("MEGAN@contoso.com").unwrap();
        assert_eq!(user["accountEnabled"], false);
        assert_eq!(user["department"], "Gone");

        for bad in [
            json!({"accountEnabled": "false"}),
            json!({"shoeSize": 9}),
            json!({"id": "x"}),
        ] {
            let r = http
                .patch(format!("{base}/v1.0/users/{id}"))
                .bearer_auth(&token)
                .json(&bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            assert_eq!(
                r.json::<Value>().await.unwrap()["error"]["code"],
                "Request_BadRequest"
            );
        }
        let r = http
            .patch(format!("{base}/v1.0/users/nobody@contoso.com"))
            .bearer_auth(&token)
            .json(&json!({ "accountEnabled": false }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = http
            .post(format!(
                "{base}/v1.0/users/megan@contoso.com/revokeSignInSessions"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["value"], true);
        assert_eq!(
            body["@odata.context"],
            "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean"
        );
        let after =
            graph.user("megan@contoso.com").unwrap()["signInSessionsValidFromDateTime"].clone();
        assert_ne!(before, after);

        let r = http
            .post(format!(
                "{base}/v1.0/users/{id}/microsoft.graph.revokeSignInSessions"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .post(format!("{base}/v1.0/users/nobody/revokeSignInSessions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    #[tokio::test]
    async fn lists_filters_gets_and_wipes_devices() {
        let (graph, base, http, token) = setup().await;
        let user_id = graph.add_user("pat@contoso.com", "Pat Kim");
        let laptop = graph.add_device("pat@contoso.com", "PAT-LAPTOP", "Windows");
        let phone = graph.add_device("pat@contoso.com", "Pat's iPhone", "iOS");
        graph.add_device("lee@contoso.com", "LEE-MAC", "macOS");
        let devices = format!("{base}/v1.0/deviceManagement/managedDevices");

        let list = |filter: String| {
            let http = http.clone();
            let devices = devices.clone();
            let token = token.clone();
            async move {
                let r = http
                    .get(&devices)
                    .query(&[("$filter", filter)])
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            }
        };
        let (status, body) = list("userPrincipalName eq 'PAT@contoso.com'".into()).await;
        assert_eq!(status, 200);
        let names: Vec<_> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deviceName"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"PAT-LAPTOP") && names.contains(&"Pat's iPhone"));
        let first = &body["value"][0];
        assert_eq!(first["userId"], user_id.as_str());
        assert_eq!(first["@odata.type"], "#microsoft.graph.managedDevice");
        assert_eq!(first["deviceActionResults"], json!([]));

        let (_, body) = list(format!("userId eq '{user_id}'")).await;
        assert_eq!(body["value"].as_array().unwrap().len(), 2);
        let (_, body) = list("deviceName eq 'Pat''s iPhone'".into()).await;
        assert_eq!(body["value"][0]["id"], phone.as_str());
        let (status, body) = list("operatingSystem eq 'iOS'".into()).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "BadRequest");

        let r = http
            .post(format!("{devices}/{laptop}/wipe"))
            .bearer_auth(&token)
            .json(&json!({ "keepEnrollmentData": false, "keepUserData": false }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        // The inspection helper does not count as a read.
        let seen = graph.devices_of("pat@contoso.com");
        let wiped = seen.iter().find(|d| d["id"] == laptop.as_str()).unwrap();
        assert_eq!(wiped["deviceActionResults"][0]["actionState"], "pending");

        let get = || {
            let http = http.clone();
            let url = format!("{devices}/{laptop}");
            let token = token.clone();
            async move {
                let r = http.get(url).bearer_auth(token).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            }
        };
        let first = get().await;
        let action = &first["deviceActionResults"][0];
        assert_eq!(action["actionName"], "wipe");
        assert_eq!(action["actionState"], "pending");
        assert!(action["startDateTime"].is_string());
        let second = get().await;
        assert_eq!(second["deviceActionResults"][0]["actionState"], "done");

        let r = http
            .post(format!("{devices}/{phone}/wipe"))
            .bearer_auth(&token)
            .json(&json!({ "wipeEverything": true }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = http
            .post(format!("{devices}/nope/wipe"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = http
            .get(format!("{devices}/nope"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "ResourceNotFound"
        );
    }

    #[tokio::test]
    async fn queued_429_carries_retry_after_and_is_logged() {
        let (graph, base, http, token) = setup().await;
        let id = graph.add_user("a@contoso.com", "A B");
        let r = http
            .put(format!("{base}/_sandbox/faults"))
            .json(&json!({ "next": [429, 503], "retry_after_secs": 3 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let url = format!("{base}/v1.0/users/{id}");
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "TooManyRequests"
        );
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "3");
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);

        // The token endpoint is spared unless asked.
        graph.set_faults(Faults {
            next: [429].into(),
            ..Faults::default()
        });
        get_token(&http, &base).await;
        graph.set_faults(Faults {
            next: [429].into(),
            token_endpoint: true,
            ..Faults::default()
        });
        let r = http
            .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
            .form(&token_form(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);

        let faults: Value = http
            .get(format!("{base}/_sandbox/faults"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(faults["token_endpoint"], true);
        let log: Vec<SeenRequest> = http
            .get(format!("{base}/_sandbox/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let statuses: Vec<u16> = log
            .iter()
            .filter(|r| r.uri.starts_with("/v1.0"))
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [429, 503, 200]);
        let token_req = log.iter().find(|r| r.uri.ends_with("/token")).unwrap();
        assert_eq!(
            token_req.body.as_ref().unwrap()["grant_type"],
            "client_credentials"
        );
        assert_eq!(log[..], graph.requests()[..log.len()]);
        let state: Value = http
            .get(format!("{base}/_sandbox/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["users"][0]["userPrincipalName"], "a@contoso.com");
        assert_eq!(state["tokensIssued"], 2);
    }

    #[tokio::test]
    async fn latency_and_share_apply_to_api_calls() {
        let (graph, base, http, token) = setup().await;
        let id = graph.add_user("a@contoso.com", "A B");
        let url = format!("{base}/v1.0/users/{id}");

        graph.set_faults(Faults {
            latency_ms: 300,
            ..Faults::default()
        });
        let t = Instant::now();
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        let t = Instant::now();
        http.get(format!("{base}/_sandbox/state"))
            .send()
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "inspection is not delayed"
        );

        let run = |seed| {
            let graph = graph.clone();
            let http = http.clone();
            let url = url.clone();
            let token = token.clone();
            async move {
                graph.set_faults(Faults {
                    share: Some(0.5),
                    seed,
                    retry_after_secs: 1,
                    ..Faults::default()
                });
                let mut statuses = Vec::new();
                for _ in 0..30 {
                    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                    if r.status() == 429 {
                        assert_eq!(r.headers()["retry-after"], "1");
                    }
                    statuses.push(r.status().as_u16());
                }
                statuses
            }
        };
        let a = run(7).await;
        assert_eq!(a, run(7).await, "seeded: the same faults again");
        let throttled = a.iter().filter(|s| **s == 429).count();
        assert!((5..=25).contains(&throttled), "{throttled} of 30");
        assert!(a.iter().all(|s| *s == 429 || *s == 200));

        graph.set_faults(Faults {
            share: Some(1.0),
            every_status: Some(503),
            ..Faults::default()
        });
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "serviceNotAvailable"
        );

        let r = http
            .put(format!("{base}/_sandbox/faults"))
            .json(&json!({ "share": 2.0 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }

    #[test]
    fn device_filters_parse_odata_literals() {
        assert_eq!(
            parse_device_filter("userPrincipalName eq 'a@b.c'").unwrap(),
            ("userPrincipalName", "a@b.c".to_string())
        );
        assert_eq!(
            parse_device_filter("USERID EQ 'it''s'").unwrap(),
            ("userId", "it's".to_string())
        );
        assert!(parse_device_filter("userId eq 'a'b'").is_err());
        assert!(parse_device_filter("userId ne 'a'").is_err());
        assert!(parse_device_filter("userId").is_err());
    }
}
