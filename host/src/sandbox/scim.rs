//! A SCIM 2.0 service provider (RFC 7643/7644 subset) on loopback: a test
//! double for the SaaS apps `scim-deprovision` talks to. Not a real
//! directory: state lives in memory and is gone when it stops.
//!
//! Speaks `GET /Users?filter=userName eq "..."`, `GET/PATCH/DELETE
//! /Users/{id}`, `POST /Users`, with SCIM's JSON shapes, error bodies and
//! `application/scim+json`. Extras under `/_sandbox/` let tests and the demo
//! inspect state, read the request log, inject faults and bounce redirects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Where the SCIM endpoints are mounted.
pub const BASE_PATH: &str = "/scim/v2";

/// One request as the sandbox saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

/// Faults to inject, for retry tests and the demo.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Statuses to answer to the next requests, one each, before normal service.
    pub next: VecDeque<u16>,
    /// Answer every Nth SCIM request with `every_status`.
    pub every: Option<u32>,
    /// The status for `every` (default 429).
    pub every_status: Option<u16>,
    /// `Retry-After` seconds sent with 429 and 503.
    pub retry_after_secs: u64,
}

/// The sandbox's state.
#[derive(Debug, Default)]
pub struct ScimState {
    users: BTreeMap<String, Value>,
    next_id: u64,
    token: Option<String>,
    faults: Faults,
    counter: u32,
    requests: Vec<SeenRequest>,
}

/// Shared handle to a running (or not yet started) sandbox.
#[derive(Debug, Clone, Default)]
pub struct Scim {
    state: Arc<Mutex<ScimState>>,
}

impl Scim {
    /// An empty sandbox; `token` makes it require `Authorization: Bearer <token>`.
    pub fn new(token: Option<&str>) -> Self {
        let s = Self::default();
        s.lock().token = token.map(str::to_string);
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScimState> {
        self.state.lock().expect("scim state lock")
    }

    /// Add an active user; returns its id.
    pub fn add_user(&self, user_name: &str, display_name: &str) -> String {
        let mut s = self.lock();
        s.next_id += 1;
        let id = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            0x2819c223u32, s.next_id, s.next_id
        );
        let now = now();
        let user = json!({
            "schemas": [USER_SCHEMA],
            "id": id,
            "userName": user_name,
            "displayName": display_name,
            "active": true,
            "emails": [{ "value": user_name, "primary": true }],
            "meta": {
                "resourceType": "User",
                "created": now,
                "lastModified": now,
                "version": "W/\"1\"",
                "location": format!("{BASE_PATH}/Users/{id}"),
            }
        });
        s.users.insert(id.clone(), user);
        id
    }

    /// A user by `userName` (case-insensitive), as stored.
    pub fn user_by_name(&self, user_name: &str) -> Option<Value> {
        self.lock()
            .users
            .values()
            .find(|u| {
                u["userName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
            })
            .cloned()
    }

    /// Every user.
    pub fn users(&self) -> Vec<Value> {
        self.lock().users.values().cloned().collect()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    /// Replace the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        let mut s = self.lock();
        s.faults = faults;
        s.counter = 0;
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                &format!("{BASE_PATH}/Users"),
                get(list_users).post(create_user),
            )
            .route(
                &format!("{BASE_PATH}/Users/{{id}}"),
                get(get_user)
                    .patch(patch_user)
                    .delete(delete_user)
                    .put(put_user),
            )
            .route(
                &format!("{BASE_PATH}/ServiceProviderConfig"),
                get(provider_config),
            )
            .route("/_sandbox/users", get(dump_users))
            .route("/_sandbox/requests", get(dump_requests))
            .route("/_sandbox/faults", axum::routing::post(set_faults))
            .route("/_sandbox/redirect", get(redirect))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, SCIM_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({ "schemas": [ERROR_SCHEMA], "status": status.as_u16().to_string(), "detail": detail });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    scim_json(status, body)
}

/// Auth, fault injection and the request log, around every request.
async fn guard(
    State(scim): State<Scim>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let header_str = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut seen = SeenRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        authorization: header_str(header::AUTHORIZATION),
        content_type: header_str(header::CONTENT_TYPE),
        body: serde_json::from_slice(&bytes).ok(),
        status: 0,
    };
    let is_scim = parts.uri.path().starts_with(BASE_PATH);
    let early = {
        let mut s = scim.lock();
        if !is_scim {
            None
        } else if let Some(status) = s.faults.next.pop_front() {
            Some((status, s.faults.retry_after_secs))
        } else {
            s.counter += 1;
            match s.faults.every {
                Some(n) if n > 0 && s.counter % n == 0 => Some((
                    s.faults.every_status.unwrap_or(429),
                    s.faults.retry_after_secs,
                )),
                _ => None,
            }
        }
    };
    let response = if let Some((status, retry_after)) = early {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = scim_error(status, None, "fault injected by the sandbox");
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.into());
        }
        r
    } else if is_scim && !authorized(&scim, seen.authorization.as_deref()) {
        scim_error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        )
    } else {
        next.run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await
    };
    seen.status = response.status().as_u16();
    scim.lock().requests.push(seen);
    response
}

fn authorized(scim: &Scim, auth: Option<&str>) -> bool {
    match &scim.lock().token {
        None => true,
        Some(token) => auth == Some(format!("Bearer {token}").as_str()),
    }
}

/// `userName eq "value"` → value. The only filter this sandbox supports.
fn parse_filter(filter: &str) -> Result<String, String> {
    let f = filter.trim();
    let (attr, rest) = f
        .split_once(char::is_whitespace)
        .ok_or("expected `attribute op value`")?;
    let (op, value) = rest
        .trim()
        .split_once(char::is_whitespace)
        .ok_or("expected `attribute op value`")?;
    if !attr.eq_ignore_ascii_case("userName") || !op.eq_ignore_ascii_case("eq") {
        return Err(format!(
            "only `userName eq \"...\"` is supported, got `{f}`"
        ));
    }
    serde_json::from_str::<String>(value.trim())
        .map_err(|e| format!("bad string literal {value}: {e}"))
}

#[derive(Deserialize)]
struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<usize>,
    count: Option<usize>,
}

async fn list_users(State(scim): State<Scim>, Query(q): Query<ListQuery>) -> Response {
    let users = scim.users();
    let matched: Vec<Value> = match &q.filter {
        None => users,
        Some(f) => match parse_filter(f) {
            Ok(name) => users
                .into_iter()
                .filter(|u| {
                    u["userName"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                })
                .collect(),
            Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &e),
        },
    };
    let start = q.start_index.unwrap_or(1).max(1);
    let count = q.count.unwrap_or(100);
    let page: Vec<Value> = matched
        .iter()
        .skip(start - 1)
        .take(count)
        .cloned()
        .collect();
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": matched.len(),
            "startIndex": start,
            "itemsPerPage": page.len(),
            "Resources": page,
        }),
    )
}

async fn get_user(State(scim): State<Scim>, Path(id): Path<String>) -> Response {
    match scim.lock().users.get(&id) {
        Some(u) => scim_json(StatusCode::OK, u.clone()),
        None => scim_error(
            StatusCode::NOT_FOUND,
            None,
            &format!("Resource {id} not found"),
        ),
    }
}

async fn create_user(State(scim): State<Scim>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "body is not JSON",
        );
    };
    let Some(name) = body["userName"].as_str() else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidValue"),
            "userName is required",
        );
    };
    if scim.user_by_name(name).is_some() {
        return scim_error(
            StatusCode::CONFLICT,
            Some("uniqueness"),
            "userName is already taken",
        );
    }
    let id = scim.add_user(name, body["displayName"].as_str().unwrap_or(name));
    let user = scim.lock().users.get(&id).cloned().unwrap_or_default();
    scim_json(StatusCode::CREATED, user)
}

async fn patch_user(State(scim): State<Scim>, Path(id): Path<String>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "body is not JSON",
        );
    };
    let schemas_ok = body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|v| v == PATCH_SCHEMA));
    if !schemas_ok {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "schemas must list the PatchOp URN",
        );
    }
    let Some(ops) = body["Operations"].as_array() else {
        return scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "Operations is required",
        );
    };
    let mut active = None;
    for op in ops {
        let kind = op["op"].as_str().unwrap_or_default().to_ascii_lowercase();
        if kind != "replace" && kind != "add" {
            return scim_error(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                &format!("op {kind:?} is not supported here"),
            );
        }
        let value = match op["path"].as_str() {
            Some(p) if p.eq_ignore_ascii_case("active") => op["value"].clone(),
            Some(p) => {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidPath"),
                    &format!("path {p:?} is not supported here"),
                );
            }
            None => op["value"]["active"].clone(),
        };
        // Some clients send "False"/"True" strings; RFC 7643 says boolean.
        active = match value {
            Value::Bool(b) => Some(b),
            _ => {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidValue"),
                    "active must be a boolean",
                );
            }
        };
    }
    let mut s = scim.lock();
    let Some(user) = s.users.get_mut(&id) else {
        return scim_error(
            StatusCode::NOT_FOUND,
            None,
            &format!("Resource {id} not found"),
        );
    };
    if let Some(a) = active {
        user["active"] = json!(a);
        let version = user["meta"]["version"]
            .as_str()
            .and_then(|v| {
                v.trim_start_matches("W/\"")
                    .trim_end_matches('"')
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(1);
        user["meta"]["version"] = json!(format!("W/\"{}\"", version + 1));
        user["meta"]["lastModified"] = json!(now());
    }
    scim_json(StatusCode::OK, user.clone())
}

async fn put_user() -> Response {
    scim_error(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "PUT is not supported by this sandbox; use PATCH",
    )
}

async fn delete_user(State(scim): State<Scim>, Path(id): Path<String>) -> Response {
    match scim.lock().users.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => scim_error(
            StatusCode::NOT_FOUND,
            None,
            &format!("Resource {id} not found"),
        ),
    }
}

async fn provider_config() -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": true, "maxResults": 100 },
            "changePassword": { "supported": false },
            "sort": { "supported": false },
            "etag": { "supported": false },
            "authenticationSchemes": [{ "type": "oauthbearertoken", "name": "OAuth Bearer Token", "description": "Bearer token in Authorization" }],
        }),
    )
}

async fn dump_users(State(scim): State<Scim>) -> Response {
    axum::Json(scim.users()).into_response()
}

async fn dump_requests(State(scim): State<Scim>) -> Response {
    axum::Json(scim.requests()).into_response()
}

async fn set_faults(State(scim): State<Scim>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            scim.set_faults(f);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad faults: {e}")).into_response(),
    }
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: String,
}

/// `302` to `?to=`: lets tests prove the host re-checks every redirect hop.
async fn redirect(Query(q): Query<RedirectQuery>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, q.to)]).into_response()
}

async fn not_found(method: Method, uri: Uri, _headers: HeaderMap) -> Response {
    scim_error(
        StatusCode::NOT_FOUND,
        None,
        &format!("no route for {method} {uri}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_username_filter() {
        assert_eq!(parse_filter(r#"userName eq "a@b.c""#).unwrap(), "a@b.c");
        assert_eq!(parse_filter(r#"USERNAME EQ "x\"y""#).unwrap(), "x\"y");
        assert!(parse_filter(r#"emails co "x""#).is_err());
        assert!(parse_filter("userName").is_err());
    }
}
