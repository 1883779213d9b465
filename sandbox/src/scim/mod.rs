//! A SCIM 2.0 service provider (RFC 7643/7644, User resources) on loopback:
//! a test double for the SaaS apps `scim-deprovision` talks to. Not a real
//! directory: state lives in memory and is gone when it stops.
//!
//! Speaks the discovery endpoints (`/ServiceProviderConfig`, `/ResourceTypes`,
//! `/Schemas`), `GET/POST /Users` with filters (`eq ne co sw ew gt ge lt le
//! pr`, `and`, `or`, `not`, value paths), paging and `attributes` /
//! `excludedAttributes`, `GET/PUT/PATCH/DELETE /Users/{id}` (PATCH `add`,
//! `replace`, `remove` per §3.5.2) and `POST /.search`, with SCIM's JSON
//! shapes, error bodies, `application/scim+json`, absolute `meta.location`
//! and `WWW-Authenticate` on 401. As strict as the strict servers: unknown
//! attributes, wrong types and chunked request bodies (411) are refused with
//! a detail naming what is wrong. Extras under `/_sandbox/` let tests and the
//! demo inspect state, read the request log, inject faults and bounce redirects.

mod filter;
mod patch;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use super::faults::Faults;
use super::faults::{self, Double, FaultPlan, Kind};
use schema::{Attr, Bad, USER};

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Where the SCIM endpoints are mounted.
pub const BASE_PATH: &str = "/scim/v2";
/// Most resources one page holds (announced in `/ServiceProviderConfig`).
const MAX_RESULTS: usize = 200;

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

/// The sandbox's state.
#[derive(Debug, Default)]
struct ScimState {
    /// Users by id, `meta.location` relative (made absolute when served).
    users: BTreeMap<String, Map<String, Value>>,
    next_id: u64,
    token: Option<String>,
    plan: FaultPlan,
    requests: Vec<SeenRequest>,
}

/// Shared handle to a running (or not yet started) sandbox.
#[derive(Debug, Clone, Default)]
pub struct Scim {
    state: Arc<Mutex<ScimState>>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
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
        let user = json!({
            "schemas": [USER_SCHEMA],
            "userName": user_name,
            "displayName": display_name,
            "active": true,
            "emails": [{ "value": user_name, "primary": true }],
        });
        let Value::Object(user) = user else {
            unreachable!("a JSON object literal")
        };
        self.lock().insert(user)
    }

    /// Set a user's `active`, as an admin would outside any ticket.
    pub fn set_active(&self, user_name: &str, active: bool) {
        let mut s = self.lock();
        if let Some(id) = s.by_name(user_name, None)
            && let Some(user) = s.users.get_mut(&id)
        {
            user.insert("active".into(), json!(active));
        }
    }

    /// A user by `userName` (case-insensitive), as stored.
    pub fn user_by_name(&self, user_name: &str) -> Option<Value> {
        let s = self.lock();
        s.by_name(user_name, None)
            .and_then(|id| s.users.get(&id))
            .cloned()
            .map(Value::Object)
    }

    /// Every user, as stored.
    pub fn users(&self) -> Vec<Value> {
        self.lock()
            .users
            .values()
            .cloned()
            .map(Value::Object)
            .collect()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    /// Replace the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().plan.set(faults);
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let at = |p: &str| format!("{BASE_PATH}{p}");
        let routes = Router::new()
            .route(&at("/Users"), get(list_users).post(create_user))
            .route(&at("/Users/.search"), post(search))
            .route(&at("/.search"), post(search))
            .route(
                &at("/Users/{id}"),
                get(get_user)
                    .patch(patch_user)
                    .delete(delete_user)
                    .put(put_user),
            )
            .route(&at("/ServiceProviderConfig"), get(provider_config))
            .route(&at("/ResourceTypes"), get(resource_types))
            .route(&at("/ResourceTypes/{id}"), get(resource_type))
            .route(&at("/Schemas"), get(schemas))
            .route(&at("/Schemas/{id}"), get(schema_by_id))
            .route("/_sandbox/users", get(dump_users))
            .route("/_sandbox/redirect", get(redirect))
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

impl ScimState {
    /// Store a canonical user under a new id, with `meta`; its id.
    fn insert(&mut self, mut user: Map<String, Value>) -> String {
        self.next_id += 1;
        let id = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            0x2819c223u32, self.next_id, self.next_id
        );
        let now = now();
        user.entry("active").or_insert(json!(true));
        user.insert("id".into(), json!(id));
        user.insert(
            "meta".into(),
            json!({
                "resourceType": "User",
                "created": now,
                "lastModified": now,
                "version": "W/\"1\"",
                "location": format!("{BASE_PATH}/Users/{id}"),
            }),
        );
        self.users.insert(id.clone(), user);
        id
    }

    /// The id of the user named `user_name` (case-insensitive), other than `except`.
    fn by_name(&self, user_name: &str, except: Option<&str>) -> Option<String> {
        self.users
            .iter()
            .find(|(id, u)| {
                Some(id.as_str()) != except
                    && u["userName"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
            })
            .map(|(id, _)| id.clone())
    }
}

impl Double for Scim {
    fn kind(&self, path: &str) -> Kind {
        if path.starts_with(BASE_PATH) {
            Kind::Api
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
        Scim::requests(self)
    }

    fn state_json(&self) -> Value {
        json!({ "users": self.users() })
    }

    fn fault_response(&self, status: StatusCode) -> Response {
        scim_error(status, None, "fault injected by the sandbox")
    }

    fn length_required(&self) -> Response {
        scim_error(
            StatusCode::LENGTH_REQUIRED,
            None,
            "a request body needs Content-Length; this server refuses chunked transfer coding",
        )
    }

    fn refuse(&self, parts: &Parts) -> Option<Response> {
        // Discovery answers without credentials, as scim2-server's does, so a
        // client can learn the authentication schemes before it has a token.
        let path = parts.uri.path().trim_start_matches(BASE_PATH);
        let discovery = ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"];
        if discovery.iter().any(|d| path.starts_with(d)) {
            return None;
        }
        let token = self.lock().token.clone()?;
        let sent = faults::bearer(parts);
        if sent == Some(token.as_str()) {
            return None;
        }
        // RFC 7644 §3.12 and RFC 6750 §3: a challenge naming the scheme.
        let challenge = match sent {
            None => "Bearer realm=\"scim\"",
            Some(_) => "Bearer realm=\"scim\", error=\"invalid_token\"",
        };
        let mut r = scim_error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
        Some(r)
    }
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

fn bad_request((scim_type, detail): Bad) -> Response {
    scim_error(StatusCode::BAD_REQUEST, Some(scim_type), &detail)
}

fn not_found_id(id: &str) -> Response {
    scim_error(
        StatusCode::NOT_FOUND,
        None,
        &format!("Resource {id} not found"),
    )
}

/// `http://HOST` of the request, for absolute `meta.location` (RFC 7643 §3.1).
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn parse_json(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Err(scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "the request has no body",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        scim_error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            &format!("body is not JSON: {e}"),
        )
    })
}

/// Which attributes to return (RFC 7644 §3.9).
#[derive(Debug, Default)]
struct Projection {
    only: Vec<Vec<&'static Attr>>,
    excluded: Vec<Vec<&'static Attr>>,
}

impl Projection {
    fn parse(attributes: &[String], excluded: &[String]) -> Result<Self, Response> {
        let resolve = |list: &[String]| {
            list.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|p| filter::resolve(p, USER))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_request(("invalidValue", e)))
        };
        Ok(Self {
            only: resolve(attributes)?,
            excluded: resolve(excluded)?,
        })
    }

    fn from_query(q: &HashMap<String, String>) -> Result<Self, Response> {
        let list = |k: &str| q.get(k).cloned().into_iter().collect::<Vec<_>>();
        Self::parse(&list("attributes"), &list("excludedAttributes"))
    }

    /// A stored user as served: projected, `meta.location` absolute.
    fn render(&self, user: &Map<String, Value>, origin: &str) -> Value {
        let mut out = if self.only.is_empty() {
            user.clone()
        } else {
            let mut out = Map::new();
            for k in ["schemas", "id"] {
                if let Some(v) = user.get(k) {
                    out.insert(k.into(), v.clone());
                }
            }
            for path in &self.only {
                let top = path[0].name;
                let Some(v) = user.get(top) else { continue };
                match path.get(1) {
                    None => {
                        out.insert(top.into(), v.clone());
                    }
                    Some(sub) => {
                        let pick = |v: &Value| {
                            v.get(sub.name)
                                .map(|s| json!({ sub.name: s }))
                                .unwrap_or(json!({}))
                        };
                        let picked = match v {
                            Value::Array(items) => Value::Array(items.iter().map(pick).collect()),
                            other => pick(other),
                        };
                        merge(out.entry(top).or_insert(Value::Null), picked);
                    }
                }
            }
            out
        };
        for path in &self.excluded {
            let top = path[0];
            if top.always {
                continue;
            }
            match path.get(1) {
                None => {
                    out.remove(top.name);
                }
                Some(sub) => match out.get_mut(top.name) {
                    Some(Value::Object(m)) => {
                        m.remove(sub.name);
                    }
                    Some(Value::Array(items)) => {
                        for i in items.iter_mut().filter_map(Value::as_object_mut) {
                            i.remove(sub.name);
                        }
                    }
                    _ => {}
                },
            }
        }
        if let Some(loc) = out
            .get_mut("meta")
            .and_then(|m| m.get_mut("location"))
            .filter(|l| l.as_str().is_some_and(|l| l.starts_with('/')))
        {
            *loc = json!(format!("{origin}{}", loc.as_str().unwrap_or_default()));
        }
        Value::Object(out)
    }
}

/// Merge sub-attribute picks into what is already projected.
fn merge(into: &mut Value, add: Value) {
    match (into, add) {
        (Value::Object(a), Value::Object(b)) => a.extend(b),
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                merge(x, y);
            }
        }
        (slot, add) => *slot = add,
    }
}

/// A query (GET or `.search`): filter, paging, projection.
struct Search {
    filter: Option<filter::Filter>,
    start: usize,
    count: usize,
    projection: Projection,
}

impl Search {
    fn new(
        filter: Option<&str>,
        start: Option<i64>,
        count: Option<i64>,
        projection: Projection,
    ) -> Result<Self, Response> {
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            None => None,
            Some(f) => Some(filter::parse(f, USER).map_err(|e| bad_request(("invalidFilter", e)))?),
        };
        Ok(Self {
            filter,
            // RFC 7644 §3.4.2.4: below 1 means 1, a negative count means 0.
            start: start.unwrap_or(1).max(1) as usize,
            count: (count.unwrap_or(MAX_RESULTS as i64).max(0) as usize).min(MAX_RESULTS),
            projection,
        })
    }

    fn run(&self, scim: &Scim, origin: &str) -> Response {
        let s = scim.lock();
        let matched: Vec<&Map<String, Value>> = s
            .users
            .values()
            .filter(|u| {
                self.filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&Value::Object((*u).clone())))
            })
            .collect();
        let page: Vec<Value> = matched
            .iter()
            .skip(self.start - 1)
            .take(self.count)
            .map(|u| self.projection.render(u, origin))
            .collect();
        scim_json(
            StatusCode::OK,
            json!({
                "schemas": [LIST_SCHEMA],
                "totalResults": matched.len(),
                "startIndex": self.start,
                "itemsPerPage": page.len(),
                "Resources": page,
            }),
        )
    }
}

fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Response> {
    q.get(name)
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                bad_request((
                    "invalidValue",
                    format!("`{name}` must be an integer, got {v:?}"),
                ))
            })
        })
        .transpose()
}

async fn list_users(
    State(scim): State<Scim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let search = Projection::from_query(&q).and_then(|p| {
        Search::new(
            q.get("filter").map(String::as_str),
            int_param(&q, "startIndex")?,
            int_param(&q, "count")?,
            p,
        )
    });
    match search {
        Ok(s) => s.run(&scim, &origin(&headers)),
        Err(r) => r,
    }
}

/// `POST /.search` and `POST /Users/.search` (RFC 7644 §3.4.3).
async fn search(State(scim): State<Scim>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let schemas_ok = body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|v| v == SEARCH_SCHEMA));
    if !schemas_ok {
        return bad_request((
            "invalidSyntax",
            format!("`schemas` must list {SEARCH_SCHEMA}"),
        ));
    }
    let strings = |k: &str| -> Result<Vec<String>, Response> {
        match &body[k] {
            Value::Null => Ok(vec![]),
            Value::Array(a) if a.iter().all(Value::is_string) => Ok(a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()),
            other => Err(bad_request((
                "invalidValue",
                format!("`{k}` must be an array of strings, got {other}"),
            ))),
        }
    };
    let int = |k: &str| -> Result<Option<i64>, Response> {
        match &body[k] {
            Value::Null => Ok(None),
            v => v.as_i64().map(Some).ok_or_else(|| {
                bad_request(("invalidValue", format!("`{k}` must be an integer, got {v}")))
            }),
        }
    };
    let filter = match &body["filter"] {
        Value::Null => None,
        Value::String(f) => Some(f.as_str()),
        other => {
            return bad_request((
                "invalidFilter",
                format!("`filter` must be a string, got {other}"),
            ));
        }
    };
    let search = (|| {
        let projection =
            Projection::parse(&strings("attributes")?, &strings("excludedAttributes")?)?;
        Search::new(filter, int("startIndex")?, int("count")?, projection)
    })();
    match search {
        Ok(s) => s.run(&scim, &origin(&headers)),
        Err(r) => r,
    }
}

async fn get_user(
    State(scim): State<Scim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let projection = match Projection::from_query(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match scim.lock().users.get(&id) {
        Some(u) => scim_json(StatusCode::OK, projection.render(u, &origin(&headers))),
        None => not_found_id(&id),
    }
}

fn conflict(user_name: &str) -> Response {
    scim_error(
        StatusCode::CONFLICT,
        Some("uniqueness"),
        &format!("userName {user_name:?} is already taken"),
    )
}

async fn create_user(
    State(scim): State<Scim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let user = match parse_json(&body).and_then(|b| schema::canonical_user(b).map_err(bad_request))
    {
        Ok(u) => u,
        Err(r) => return r,
    };
    let projection = match Projection::from_query(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut s = scim.lock();
    let name = user["userName"].as_str().unwrap_or_default().to_string();
    if s.by_name(&name, None).is_some() {
        return conflict(&name);
    }
    let id = s.insert(user);
    let origin = origin(&headers);
    let body = projection.render(&s.users[&id], &origin);
    let mut r = scim_json(StatusCode::CREATED, body);
    if let Ok(v) = format!("{origin}{BASE_PATH}/Users/{id}").parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Keep `id`, `meta` (with a new version) and store `user` under `id`.
fn replace_stored(s: &mut ScimState, id: &str, mut user: Map<String, Value>) {
    let Some(old) = s.users.get(id) else { return };
    let mut meta = old["meta"].clone();
    let version = meta["version"]
        .as_str()
        .and_then(|v| {
            v.trim_start_matches("W/\"")
                .trim_end_matches('"')
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1);
    meta["version"] = json!(format!("W/\"{}\"", version + 1));
    meta["lastModified"] = json!(now());
    user.insert("id".into(), json!(id));
    user.insert("meta".into(), meta);
    s.users.insert(id.to_string(), user);
}

async fn put_user(
    State(scim): State<Scim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let user = match parse_json(&body).and_then(|b| schema::canonical_user(b).map_err(bad_request))
    {
        Ok(u) => u,
        Err(r) => return r,
    };
    let projection = match Projection::from_query(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut s = scim.lock();
    if !s.users.contains_key(&id) {
        return not_found_id(&id);
    }
    let name = user["userName"].as_str().unwrap_or_default().to_string();
    if s.by_name(&name, Some(&id)).is_some() {
        return conflict(&name);
    }
    replace_stored(&mut s, &id, user);
    scim_json(
        StatusCode::OK,
        projection.render(&s.users[&id], &origin(&headers)),
    )
}

async fn patch_user(
    State(scim): State<Scim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let projection = match Projection::from_query(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut s = scim.lock();
    let Some(stored) = s.users.get(&id) else {
        return not_found_id(&id);
    };
    let patched =
        patch::patch(stored, &body).and_then(|u| schema::canonical_user(Value::Object(u)));
    let patched = match patched {
        Ok(u) => u,
        Err(bad) => return bad_request(bad),
    };
    let unchanged = stored
        .iter()
        .filter(|(k, _)| *k != "id" && *k != "meta")
        .eq(patched.iter());
    if !unchanged {
        let name = patched["userName"].as_str().unwrap_or_default().to_string();
        if s.by_name(&name, Some(&id)).is_some() {
            return conflict(&name);
        }
        replace_stored(&mut s, &id, patched);
    }
    scim_json(
        StatusCode::OK,
        projection.render(&s.users[&id], &origin(&headers)),
    )
}

async fn delete_user(State(scim): State<Scim>, Path(id): Path<String>) -> Response {
    match scim.lock().users.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found_id(&id),
    }
}

fn meta(resource_type: &str, origin: &str, path: &str) -> Value {
    json!({ "resourceType": resource_type, "location": format!("{origin}{BASE_PATH}{path}") })
}

async fn provider_config(headers: HeaderMap) -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://www.rfc-editor.org/rfc/rfc7644",
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": true, "maxResults": MAX_RESULTS },
            "changePassword": { "supported": false },
            "sort": { "supported": false },
            "etag": { "supported": false },
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer token in Authorization (RFC 6750)",
                "primary": true,
            }],
            "meta": meta("ServiceProviderConfig", &origin(&headers), "/ServiceProviderConfig"),
        }),
    )
}

fn user_resource_type(origin: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": USER_SCHEMA,
        "schemaExtensions": [],
        "meta": meta("ResourceType", origin, "/ResourceTypes/User"),
    })
}

fn user_schema(origin: &str) -> Value {
    let mut s = schema::user_schema();
    s["meta"] = meta("Schema", origin, &format!("/Schemas/{USER_SCHEMA}"));
    s
}

fn list_of(resources: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": resources.len(),
            "startIndex": 1,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

async fn resource_types(headers: HeaderMap) -> Response {
    list_of(vec![user_resource_type(&origin(&headers))])
}

async fn resource_type(Path(id): Path<String>, headers: HeaderMap) -> Response {
    match id.as_str() {
        "User" => scim_json(StatusCode::OK, user_resource_type(&origin(&headers))),
        _ => not_found_id(&id),
    }
}

async fn schemas(headers: HeaderMap) -> Response {
    list_of(vec![user_schema(&origin(&headers))])
}

async fn schema_by_id(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if id == USER_SCHEMA {
        scim_json(StatusCode::OK, user_schema(&origin(&headers)))
    } else {
        not_found_id(&id)
    }
}

async fn dump_users(State(scim): State<Scim>) -> Response {
    axum::Json(scim.users()).into_response()
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: String,
}

/// `302` to `?to=`: lets tests prove the host re-checks every redirect hop.
async fn redirect(Query(q): Query<RedirectQuery>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, q.to)]).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    scim_error(
        StatusCode::NOT_FOUND,
        None,
        &format!("no route for {method} {uri}"),
    )
}
