//! A Salesforce OAuth + REST API test double on loopback, for connectors
//! that find a user by username, deactivate them and freeze their login.
//! Not an org: state lives in memory and is gone when it stops.
//!
//! Speaks the client-credentials flow at `POST /services/oauth2/token`
//! (form or `Basic` client auth), then under `/services/data/vNN.N` (any
//! version; [`API_VERSION`] is the one to use), only with a token it issued:
//!
//! - `GET /query?q=…` (and `/query/?q=…`) for the SOQL a connector sends:
//!   `SELECT <fields> FROM User WHERE Username = '…'` (or `Id = '…'`) and
//!   `SELECT <fields> FROM UserLogin WHERE UserId = '…'` (or `Id = '…'`),
//!   with an optional `LIMIT n`;
//! - `GET|PATCH /sobjects/User/{id}` and `GET|PATCH /sobjects/UserLogin/{id}`
//!   (`IsActive`, `IsFrozen`, …; 204 on success).
//!
//! Errors use the OAuth `{"error","error_description"}` at the token
//! endpoint and REST's `[{"message","errorCode"}]` arrays elsewhere; record
//! IDs are 18-character IDs with a valid case-safe suffix, and 15-character
//! IDs are accepted too. Faults, the request log and state are under
//! `/_sandbox/` (see [`super::faults`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::faults::{
    self, Double, FaultPlan, Faults, Kind, SeenRequest, basic_credentials, bearer, form,
    now_millis, random_token,
};

/// The REST API version connectors should use; any `vNN.N` is served.
pub const API_VERSION: &str = "v60.0";
const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// What the double knows of an sObject type.
#[derive(Debug)]
struct SObject {
    name: &'static str,
    /// Fields, in the order a full record lists them.
    fields: &'static [&'static str],
    updateable: &'static [&'static str],
    booleans: &'static [&'static str],
    /// Fields a `WHERE` may test (a limit of the double, not of SOQL).
    filterable: &'static [&'static str],
    /// Updateable fields that may not be set to null.
    required: &'static [&'static str],
}

const USER: SObject = SObject {
    name: "User",
    fields: &[
        "Id",
        "Username",
        "Name",
        "FirstName",
        "LastName",
        "Email",
        "IsActive",
        "UserType",
        "CreatedDate",
        "LastModifiedDate",
    ],
    updateable: &["Username", "FirstName", "LastName", "Email", "IsActive"],
    booleans: &["IsActive"],
    filterable: &["Username", "Id"],
    required: &["Username", "LastName", "Email", "IsActive"],
};

const USER_LOGIN: SObject = SObject {
    name: "UserLogin",
    fields: &[
        "Id",
        "UserId",
        "IsFrozen",
        "IsPasswordLocked",
        "LastModifiedDate",
        "LastModifiedById",
    ],
    updateable: &["IsFrozen", "IsPasswordLocked"],
    booleans: &["IsFrozen", "IsPasswordLocked"],
    filterable: &["UserId", "Id"],
    required: &["IsFrozen", "IsPasswordLocked"],
};

fn sobject(name: &str) -> Option<&'static SObject> {
    [&USER, &USER_LOGIN]
        .into_iter()
        .find(|o| o.name.eq_ignore_ascii_case(name))
}

impl SObject {
    /// A field's API name, matched case-insensitively as Salesforce does.
    fn field(&self, name: &str) -> Option<&'static str> {
        self.fields
            .iter()
            .copied()
            .find(|f| f.eq_ignore_ascii_case(name))
    }
}

/// The double's state.
#[derive(Debug)]
pub struct SalesforceState {
    client_id: String,
    client_secret: String,
    org_id: String,
    /// The user the client-credentials flow runs as.
    run_as: String,
    instance_url: Option<String>,
    /// Issued tokens, and whether each is still valid.
    tokens: HashMap<String, bool>,
    tokens_issued: u32,
    /// Records by type, keyed by the 15-character ID.
    records: BTreeMap<&'static str, BTreeMap<String, Map<String, Value>>>,
    next_id: u64,
    plan: FaultPlan,
    requests: Vec<SeenRequest>,
}

impl SalesforceState {
    fn table(&mut self, ty: &SObject) -> &mut BTreeMap<String, Map<String, Value>> {
        self.records.entry(ty.name).or_default()
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        salesforce_id(prefix, self.next_id)
    }
}

/// Shared handle to a running (or not yet started) Salesforce double.
#[derive(Debug, Clone)]
pub struct Salesforce {
    state: Arc<Mutex<SalesforceState>>,
}

impl Salesforce {
    /// An empty org with one connected app allowed the client-credentials
    /// flow.
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        let mut state = SalesforceState {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            org_id: String::new(),
            run_as: String::new(),
            instance_url: None,
            tokens: HashMap::new(),
            tokens_issued: 0,
            records: BTreeMap::new(),
            next_id: 0,
            plan: FaultPlan::default(),
            requests: Vec::new(),
        };
        state.org_id = state.new_id("00D");
        state.run_as = state.new_id("005");
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SalesforceState> {
        self.state.lock().expect("salesforce state lock")
    }

    /// The `instance_url` tokens name. Unset, it is `http://{Host}` for the
    /// `Host` each token request arrives with.
    pub fn set_instance_url(&self, url: &str) {
        self.lock().instance_url = Some(url.to_string());
    }

    /// Add an active user and its `UserLogin`; returns the user's ID.
    pub fn add_user(&self, username: &str, name: &str) -> String {
        let mut s = self.lock();
        let id = s.new_id("005");
        let login_id = s.new_id("060");
        let now = sf_now();
        let (first, last) = match name.trim().rsplit_once(' ') {
            Some((f, l)) => (json!(f), l.to_string()),
            None => (Value::Null, name.to_string()),
        };
        let user = json!({
            "Id": id,
            "Username": username,
            "Name": name,
            "FirstName": first,
            "LastName": last,
            "Email": username,
            "IsActive": true,
            "UserType": "Standard",
            "CreatedDate": now,
            "LastModifiedDate": now,
        });
        let login = json!({
            "Id": login_id,
            "UserId": id,
            "IsFrozen": false,
            "IsPasswordLocked": false,
            "LastModifiedDate": now,
            "LastModifiedById": s.run_as,
        });
        s.table(&USER).insert(id[..15].to_string(), object(user));
        s.table(&USER_LOGIN)
            .insert(login_id[..15].to_string(), object(login));
        id
    }

    /// Set a user's `IsActive` and its login's `IsFrozen`, as an admin would
    /// outside any ticket.
    pub fn set_user_state(&self, username: &str, active: bool, frozen: bool) {
        let mut s = self.lock();
        let Some(user) = s
            .table(&USER)
            .values_mut()
            .find(|u| eq_ci(&u["Username"], username))
        else {
            return;
        };
        user.insert("IsActive".into(), json!(active));
        let id = user["Id"].clone();
        if let Some(login) = s
            .table(&USER_LOGIN)
            .values_mut()
            .find(|l| l["UserId"] == id)
        {
            login.insert("IsFrozen".into(), json!(frozen));
        }
    }

    /// A user by `Username` (case-insensitive), as stored.
    pub fn user(&self, username: &str) -> Option<Value> {
        self.lock()
            .records
            .get(USER.name)?
            .values()
            .find(|u| eq_ci(&u["Username"], username))
            .map(|u| Value::Object(u.clone()))
    }

    /// The `UserLogin` of a user found by `Username`, as stored.
    pub fn user_login(&self, username: &str) -> Option<Value> {
        let user_id = self.user(username)?["Id"].as_str()?.to_string();
        self.lock()
            .records
            .get(USER_LOGIN.name)?
            .values()
            .find(|l| l["UserId"] == user_id.as_str())
            .map(|l| Value::Object(l.clone()))
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    /// How many access tokens the token endpoint has issued.
    pub fn tokens_issued(&self) -> u32 {
        self.lock().tokens_issued
    }

    /// End every issued session, so the next API call gets a 401.
    pub fn expire_tokens(&self) {
        self.lock().tokens.values_mut().for_each(|v| *v = false);
    }

    /// Replace the fault plan.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().plan.set(faults);
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/services/oauth2/token", post(token))
            .route("/services/data/{version}/query", get(query))
            .route("/services/data/{version}/query/", get(query))
            .route(
                "/services/data/{version}/sobjects/{sobject}/{id}",
                get(get_record).patch(patch_record),
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

impl Double for Salesforce {
    fn kind(&self, path: &str) -> Kind {
        if path.starts_with("/services/data/") {
            Kind::Api
        } else if path == "/services/oauth2/token" {
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
        Salesforce::requests(self)
    }

    fn state_json(&self) -> Value {
        let s = self.lock();
        let table = |ty: &SObject| -> Vec<Value> {
            s.records
                .get(ty.name)
                .map(|t| t.values().cloned().map(Value::Object).collect())
                .unwrap_or_default()
        };
        json!({
            "orgId": s.org_id,
            "clientId": s.client_id,
            "tokensIssued": s.tokens_issued,
            "users": table(&USER),
            "userLogins": table(&USER_LOGIN),
        })
    }

    fn fault_response(&self, status: StatusCode) -> Response {
        let (code, message) = match status.as_u16() {
            429 | 403 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            401 => ("INVALID_SESSION_ID", "Session expired or invalid"),
            404 => ("NOT_FOUND", "The requested resource does not exist"),
            503 => ("SERVER_UNAVAILABLE", "Server temporarily unavailable."),
            411 => (
                "LENGTH_REQUIRED",
                "The request body needs a Content-Length header; chunked bodies are refused.",
            ),
            _ => ("UNKNOWN_EXCEPTION", "An unexpected error occurred."),
        };
        sf_error(status, code, message)
    }

    fn refuse(&self, parts: &Parts) -> Option<Response> {
        let valid = bearer(parts).is_some_and(|t| self.lock().tokens.get(t) == Some(&true));
        (!valid).then(|| {
            sf_error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            )
        })
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn eq_ci(value: &Value, s: &str) -> bool {
    value.as_str().is_some_and(|v| v.eq_ignore_ascii_case(s))
}

/// Salesforce's datetime form: `2024-05-01T12:00:00.000+0000`.
fn sf_now() -> String {
    now_millis().replace('Z', "+0000")
}

/// A Salesforce record ID: a 3-character key prefix, a 15-character
/// case-sensitive body and the 3-character suffix that makes it case-safe.
fn salesforce_id(prefix: &str, n: u64) -> String {
    let body = format!("{prefix}Dx{n:0>width$}", width = 15 - prefix.len() - 2);
    let suffix = case_safe_suffix(&body);
    format!("{body}{suffix}")
}

/// Each 5-character chunk of the 15-character ID gives one suffix
/// character: a bit per uppercase letter, least significant first.
fn case_safe_suffix(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let flags = chunk
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            ALPHABET[flags] as char
        })
        .collect()
}

/// The 15-character key of an ID in a URL or a query: 15 characters, or 18
/// whose suffix matches.
fn id_key(id: &str) -> Option<&str> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(id),
        18 if case_safe_suffix(&id[..15]).eq_ignore_ascii_case(&id[15..]) => Some(&id[..15]),
        _ => None,
    }
}

/// HMAC-SHA256 (RFC 2104) from `sha2`, to sign token responses the way
/// Salesforce does without another crate.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn sf_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, JSON_UTF8)],
        body.to_string(),
    )
        .into_response()
}

/// REST's error body: an array of `{message, errorCode}`.
fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    sf_json(status, &json!([{ "message": message, "errorCode": code }]))
}

fn sf_field_error(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Response {
    sf_json(
        status,
        &json!([{ "message": message, "errorCode": code, "fields": fields }]),
    )
}

fn resource_missing() -> Response {
    sf_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// `vNN.N`, or the 404 Salesforce answers for a version it does not have.
fn check_version(version: &str) -> Result<(), Response> {
    let ok = version
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && minor.len() == 1
                && major
                    .chars()
                    .chain(minor.chars())
                    .all(|c| c.is_ascii_digit())
        });
    if ok { Ok(()) } else { Err(resource_missing()) }
}

// ---------------------------------------------------------------------------
// Token endpoint

fn token_error(error: &str, description: &str) -> Response {
    sf_json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": error, "error_description": description }),
    )
}

async fn token(State(sf): State<Salesforce>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    if fields.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return token_error("unsupported_grant_type", "grant type not supported");
    }
    let from_form = fields.get("client_id").cloned().map(|id| {
        let secret = fields.get("client_secret").cloned().unwrap_or_default();
        (id, secret)
    });
    let (client_id, secret) = from_form
        .or_else(|| basic_credentials(&headers))
        .unwrap_or_default();
    let mut s = sf.lock();
    if client_id.is_empty() || client_id != s.client_id {
        return token_error("invalid_client_id", "client identifier invalid");
    }
    if secret != s.client_secret {
        return token_error("invalid_client", "invalid client credentials");
    }
    let instance_url = s.instance_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    });
    let id = format!("{instance_url}/id/{}/{}", s.org_id, s.run_as);
    let issued_at = (faults::unix_now() * 1000).to_string();
    let signature = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
        s.client_secret.as_bytes(),
        format!("{id}{issued_at}").as_bytes(),
    ));
    let access_token = random_token(&format!("{}!", &s.org_id[..15]));
    s.tokens.insert(access_token.clone(), true);
    s.tokens_issued += 1;
    sf_json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "signature": signature,
            "instance_url": instance_url,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }),
    )
}

// ---------------------------------------------------------------------------
// SOQL

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Comma,
    Eq,
    Str(String),
}

/// A SOQL error: its `errorCode` and message.
type SoqlError = (&'static str, String);

fn malformed(message: impl Into<String>) -> SoqlError {
    ("MALFORMED_QUERY", message.into())
}

fn tokenize(soql: &str) -> Result<Vec<Token>, SoqlError> {
    let mut tokens = Vec::new();
    let mut chars = soql.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' => {
                chars.next();
                tokens.push(Token::Comma);
            }
            '=' => {
                chars.next();
                tokens.push(Token::Eq);
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(malformed("unexpected end of query: unterminated string"));
                        }
                        Some('\'') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(e @ ('\'' | '"' | '\\' | '%' | '_')) => {
                                if matches!(e, '%' | '_') {
                                    s.push('\\');
                                }
                                s.push(e);
                            }
                            other => {
                                return Err(malformed(format!(
                                    "Invalid string literal: bad escape {:?}",
                                    other.map(String::from).unwrap_or_default()
                                )));
                            }
                        },
                        Some(other) => s.push(other),
                    }
                }
                tokens.push(Token::Str(s));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(malformed(format!("unexpected token: '{other}'"))),
        }
    }
    Ok(tokens)
}

/// The SOQL shapes the double runs.
#[derive(Debug, PartialEq)]
struct Soql {
    fields: Vec<&'static str>,
    object: &'static str,
    filter: Option<(&'static str, String)>,
    limit: Option<usize>,
}

/// Parse `SELECT f[, f…] FROM Obj [WHERE f = 'v'] [LIMIT n]`. Anything
/// else is `MALFORMED_QUERY`; an unknown type is `INVALID_TYPE` and an
/// unknown field `INVALID_FIELD`, as Salesforce names them.
fn parse_soql(soql: &str) -> Result<Soql, SoqlError> {
    let tokens = tokenize(soql)?;
    let mut it = tokens.into_iter().peekable();
    let describe = |t: Option<&Token>| match t {
        None => "unexpected token: <EOF>".to_string(),
        Some(Token::Word(w)) => format!("unexpected token: '{w}'"),
        Some(Token::Str(s)) => format!("unexpected token: ''{s}''"),
        Some(Token::Comma) => "unexpected token: ','".to_string(),
        Some(Token::Eq) => "unexpected token: '='".to_string(),
    };
    let keyword = |kw: &str, t: Option<Token>| match t {
        Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw) => Ok(()),
        other => Err(malformed(describe(other.as_ref()))),
    };
    keyword("SELECT", it.next())?;
    let mut names = Vec::new();
    loop {
        match it.next() {
            Some(Token::Word(w)) if !w.eq_ignore_ascii_case("FROM") => names.push(w),
            other => return Err(malformed(describe(other.as_ref()))),
        }
        match it.peek() {
            Some(Token::Comma) => {
                it.next();
            }
            _ => break,
        }
    }
    keyword("FROM", it.next())?;
    let ty = match it.next() {
        Some(Token::Word(w)) => sobject(&w).ok_or_else(|| {
            (
                "INVALID_TYPE",
                format!(
                    "sObject type '{w}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name."
                ),
            )
        })?,
        other => return Err(malformed(describe(other.as_ref()))),
    };
    let field = |name: &str| {
        ty.field(name).ok_or_else(|| {
            (
                "INVALID_FIELD",
                format!(
                    "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                    ty.name
                ),
            )
        })
    };
    let fields = names
        .iter()
        .map(|n| field(n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut filter = None;
    let mut limit = None;
    while let Some(t) = it.next() {
        match t {
            Token::Word(w) if w.eq_ignore_ascii_case("WHERE") && filter.is_none() => {
                let name = match it.next() {
                    Some(Token::Word(n)) => n,
                    other => return Err(malformed(describe(other.as_ref()))),
                };
                let f = field(&name)?;
                if !ty.filterable.contains(&f) {
                    return Err(malformed(format!(
                        "this sandbox filters {} only on {}",
                        ty.name,
                        ty.filterable.join(" or ")
                    )));
                }
                match (it.next(), it.next()) {
                    (Some(Token::Eq), Some(Token::Str(v))) => filter = Some((f, v)),
                    (Some(Token::Eq), other) | (other, _) => {
                        return Err(malformed(format!(
                            "{} (this sandbox takes only `field = 'value'`)",
                            describe(other.as_ref())
                        )));
                    }
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("LIMIT") && limit.is_none() => {
                match it.next() {
                    Some(Token::Word(n)) if n.parse::<usize>().is_ok() => limit = n.parse().ok(),
                    other => return Err(malformed(describe(other.as_ref()))),
                }
            }
            other => return Err(malformed(describe(Some(&other)))),
        }
    }
    Ok(Soql {
        fields,
        object: ty.name,
        filter,
        limit,
    })
}

/// A record as the API shows it: `attributes`, then the chosen fields.
fn render(ty: &SObject, version: &str, record: &Map<String, Value>, fields: &[&str]) -> Value {
    let id = record["Id"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert(
        "attributes".to_string(),
        json!({
            "type": ty.name,
            "url": format!("/services/data/{version}/sobjects/{}/{id}", ty.name),
        }),
    );
    for f in fields {
        out.insert(
            f.to_string(),
            record.get(*f).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

fn matches(record: &Map<String, Value>, field: &str, want: &str) -> bool {
    let have = &record[field];
    if field.ends_with("Id") {
        // IDs compare case-sensitively on their 15-character key.
        let key = |v: &str| id_key(v).map(str::to_string);
        have.as_str()
            .and_then(key)
            .is_some_and(|h| Some(h) == key(want))
    } else {
        // SOQL's `=` on text ignores case.
        eq_ci(have, want)
    }
}

async fn query(
    State(sf): State<Salesforce>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_version(&version) {
        return r;
    }
    let Some(q) = params.get("q").filter(|q| !q.trim().is_empty()) else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let soql = match parse_soql(q) {
        Ok(s) => s,
        Err((code, message)) => return sf_error(StatusCode::BAD_REQUEST, code, &message),
    };
    let ty = sobject(soql.object).unwrap_or(&USER);
    let s = sf.lock();
    let records: Vec<Value> = s
        .records
        .get(ty.name)
        .into_iter()
        .flat_map(BTreeMap::values)
        .filter(|r| soql.filter.as_ref().is_none_or(|(f, v)| matches(r, f, v)))
        .take(soql.limit.unwrap_or(usize::MAX))
        .map(|r| render(ty, &version, r, &soql.fields))
        .collect();
    sf_json(
        StatusCode::OK,
        &json!({ "totalSize": records.len(), "done": true, "records": records }),
    )
}

// ---------------------------------------------------------------------------
// sObject rows

/// The type and table key of `/sobjects/{type}/{id}`, or its 404.
fn locate(version: &str, ty: &str, id: &str) -> Result<(&'static SObject, String), Response> {
    check_version(version)?;
    let ty = sobject(ty).ok_or_else(resource_missing)?;
    let key = id_key(id).ok_or_else(|| {
        sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {id}"),
        )
    })?;
    Ok((ty, key.to_string()))
}

async fn get_record(
    State(sf): State<Salesforce>,
    Path((version, ty, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (ty, key) = match locate(&version, &ty, &id) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let fields: Vec<&'static str> = match params.get("fields") {
        None => ty.fields.to_vec(),
        Some(list) => {
            let mut fields = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match ty.field(name) {
                    Some(f) => fields.push(f),
                    None => {
                        return sf_error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_FIELD",
                            &format!("No such column '{name}' on sobject of type {}", ty.name),
                        );
                    }
                }
            }
            fields
        }
    };
    let mut s = sf.lock();
    match s.table(ty).get(&key) {
        Some(record) => sf_json(StatusCode::OK, &render(ty, &version, record, &fields)),
        None => resource_missing(),
    }
}

/// Check a PATCH body against the type; the changes to apply.
fn record_changes(ty: &SObject, body: &Bytes) -> Result<Map<String, Value>, Response> {
    let parser_error = |message: &str| {
        Err(sf_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            message,
        ))
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return parser_error("The request body must be a JSON object.");
    };
    let mut changes = Map::new();
    for (name, value) in body {
        let Some(field) = ty.field(&name) else {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{name}' on sobject of type {}", ty.name),
            ));
        };
        if !ty.updateable.contains(&field) {
            return Err(sf_field_error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                &format!(
                    "Unable to create/update fields: {field}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                ),
                &[field],
            ));
        }
        if value.is_null() && ty.required.contains(&field) {
            return Err(sf_field_error(
                StatusCode::BAD_REQUEST,
                "REQUIRED_FIELD_MISSING",
                &format!("Required fields are missing: [{field}]"),
                &[field],
            ));
        }
        let wanted = if ty.booleans.contains(&field) {
            "boolean"
        } else {
            "String"
        };
        let type_ok = value.is_null()
            || if wanted == "boolean" {
                value.is_boolean()
            } else {
                value.is_string()
            };
        if !type_ok {
            return parser_error(&format!(
                "Cannot deserialize instance of {wanted} from {value} value or request may be missing a required field"
            ));
        }
        changes.insert(field.to_string(), value);
    }
    Ok(changes)
}

async fn patch_record(
    State(sf): State<Salesforce>,
    Path((version, ty, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let (ty, key) = match locate(&version, &ty, &id) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let changes = match record_changes(ty, &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut s = sf.lock();
    let run_as = s.run_as.clone();
    let Some(record) = s.table(ty).get_mut(&key) else {
        return resource_missing();
    };
    let renamed = changes.contains_key("FirstName") || changes.contains_key("LastName");
    record.extend(changes);
    if renamed {
        let first = record["FirstName"].as_str().unwrap_or_default();
        let last = record["LastName"].as_str().unwrap_or_default();
        let name = format!("{first} {last}").trim().to_string();
        record.insert("Name".to_string(), json!(name));
    }
    record.insert("LastModifiedDate".to_string(), json!(sf_now()));
    if record.contains_key("LastModifiedById") {
        record.insert("LastModifiedById".to_string(), json!(run_as));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found() -> Response {
    resource_missing()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const CLIENT: &str = "3MVG9sandbox.client.id";
    const SECRET: &str = "8A4BE698BCA216718ECB0B1DCA294C69";

    async fn start(sf: &Salesforce) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = sf.clone();
        tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
        format!("http://{addr}")
    }

    fn creds(secret: &str) -> [(&'static str, String); 3] {
        [
            ("grant_type", "client_credentials".to_string()),
            ("client_id", CLIENT.to_string()),
            ("client_secret", secret.to_string()),
        ]
    }

    async fn setup() -> (Salesforce, String, reqwest::Client, String) {
        let sf = Salesforce::new(CLIENT, SECRET);
        let base = start(&sf).await;
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/services/oauth2/token"))
            .form(&creds(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        (sf, base, http, token)
    }

    async fn soql(http: &reqwest::Client, base: &str, token: &str, q: &str) -> (u16, Value) {
        let r = http
            .get(format!("{base}/services/data/{API_VERSION}/query"))
            .query(&[("q", q)])
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn issues_signed_tokens_and_refuses_bad_clients() {
        let sf = Salesforce::new(CLIENT, SECRET);
        let base = start(&sf).await;
        let http = reqwest::Client::new();
        let url = format!("{base}/services/oauth2/token");

        let r = http.post(&url).form(&creds(SECRET)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["instance_url"], base.as_str());
        let id = body["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("{base}/id/00D")), "{id}");
        let issued_at: u64 = body["issued_at"].as_str().unwrap().parse().unwrap();
        assert!(issued_at.abs_diff(faults::unix_now() * 1000) < 60_000);
        let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
            SECRET.as_bytes(),
            format!("{id}{issued_at}").as_bytes(),
        ));
        assert_eq!(body["signature"], expected.as_str());
        assert!(body["access_token"].as_str().unwrap().starts_with("00D"));

        let r = http.post(&url).form(&creds("wrong")).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "error": "invalid_client", "error_description": "invalid client credentials" })
        );
        let mut other = creds(SECRET);
        other[1].1 = "someone-else".to_string();
        let r = http.post(&url).form(&other).send().await.unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_client_id"
        );
        let r = http
            .post(&url)
            .form(&[
                ("grant_type", "password"),
                ("username", "u"),
                ("password", "p"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "unsupported_grant_type"
        );

        let r = http
            .post(&url)
            .basic_auth(CLIENT, Some(SECRET))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(sf.tokens_issued(), 2);

        sf.set_instance_url("https://acme.my.salesforce.com");
        let r = http.post(&url).form(&creds(SECRET)).send().await.unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["instance_url"],
            "https://acme.my.salesforce.com"
        );
    }

    #[tokio::test]
    async fn api_calls_need_a_live_session() {
        let (sf, base, http, token) = setup().await;
        sf.add_user("jdoe@acme.example", "Jane Doe");
        let q = "SELECT Id FROM User WHERE Username = 'jdoe@acme.example'";
        let r = http
            .get(format!("{base}/services/data/{API_VERSION}/query"))
            .query(&[("q", q)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!([{ "message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID" }])
        );
        assert_eq!(soql(&http, &base, "00Dbogus!x", q).await.0, 401);
        assert_eq!(soql(&http, &base, &token, q).await.0, 200);
        sf.expire_tokens();
        assert_eq!(soql(&http, &base, &token, q).await.0, 401);
    }

    #[tokio::test]
    async fn runs_the_user_and_user_login_queries() {
        let (sf, base, http, token) = setup().await;
        let id = sf.add_user("jdoe@acme.example", "Jane Doe");
        sf.add_user("o'brien@acme.example", "Pat O'Brien");

        let (status, body) = soql(
            &http,
            &base,
            &token,
            "select id, username, isactive from user where username = 'JDOE@acme.example' limit 1",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({
                "totalSize": 1,
                "done": true,
                "records": [{
                    "attributes": { "type": "User", "url": format!("/services/data/v60.0/sobjects/User/{id}") },
                    "Id": id,
                    "Username": "jdoe@acme.example",
                    "IsActive": true,
                }]
            })
        );

        let (_, body) = soql(
            &http,
            &base,
            &token,
            r"SELECT Name FROM User WHERE Username = 'o\'brien@acme.example'",
        )
        .await;
        assert_eq!(body["records"][0]["Name"], "Pat O'Brien");
        let (_, body) = soql(
            &http,
            &base,
            &token,
            "SELECT Id FROM User WHERE Username = 'ghost@acme.example'",
        )
        .await;
        assert_eq!(body, json!({ "totalSize": 0, "done": true, "records": [] }));

        // UserLogin by UserId, with the 15-character form of the ID.
        let (status, body) = soql(
            &http,
            &base,
            &token,
            &format!(
                "SELECT Id, IsFrozen FROM UserLogin WHERE UserId = '{}'",
                &id[..15]
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["totalSize"], 1);
        let login = &body["records"][0];
        assert_eq!(login["attributes"]["type"], "UserLogin");
        assert_eq!(login["IsFrozen"], false);
        assert!(login["Id"].as_str().unwrap().starts_with("060"));

        // Another version, and the trailing-slash form of the resource.
        let r = http
            .get(format!("{base}/services/data/v59.0/query/"))
            .query(&[("q", "SELECT Id FROM User")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["totalSize"], 2);
        assert!(
            body["records"][0]["attributes"]["url"]
                .as_str()
                .unwrap()
                .starts_with("/services/data/v59.0/")
        );

        let errors = [
            (
                "SELECT Id FROM User WHERE Email LIKE 'j%'",
                "MALFORMED_QUERY",
            ),
            (
                "SELECT Id FROM User WHERE Username != 'x'",
                "MALFORMED_QUERY",
            ),
            ("SELECT COUNT() FROM User", "MALFORMED_QUERY"),
            ("SELECT Id FROM User WHERE", "MALFORMED_QUERY"),
            ("SELECT Id User", "MALFORMED_QUERY"),
            ("DELETE FROM User", "MALFORMED_QUERY"),
            ("SELECT ShoeSize FROM User", "INVALID_FIELD"),
            ("SELECT Id FROM Account", "INVALID_TYPE"),
        ];
        for (q, code) in errors {
            let (status, body) = soql(&http, &base, &token, q).await;
            assert_eq!(status, 400, "{q}");
            assert_eq!(body[0]["errorCode"], code, "{q}: {body}");
            assert!(body[0]["message"].is_string());
        }
        let r = http
            .get(format!("{base}/services/data/{API_VERSION}/query"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = http
            .get(format!("{base}/services/data/60/query"))
            .query(&[("q", "SELECT Id FROM User")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    #[tokio::test]
    async fn reads_and_updates_users_and_logins() {
        let (sf, base, http, token) = setup().await;
        let id = sf.add_user("jdoe@acme.example", "Jane Doe");
        let users = format!("{base}/services/data/{API_VERSION}/sobjects/User");
        let login_id = sf.user_login("jdoe@acme.example").unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_string();
        let logins = format!("{base}/services/data/{API_VERSION}/sobjects/UserLogin");
        let patch = |url: String, body: Value| {
            let http = http.clone();
            let token = token.clone();
            async move {
                let r = http
                    .patch(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let bytes = r.bytes().await.unwrap();
                (
                    status,
                    serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
                )
            }
        };

        let r = http
            .get(format!("{users}/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let user: Value = r.json().await.unwrap();
        assert_eq!(
            user["attributes"],
            json!({ "type": "User", "url": format!("/services/data/v60.0/sobjects/User/{id}") })
        );
        assert_eq!(user["Name"], "Jane Doe");
        assert_eq!(user["FirstName"], "Jane");
        assert_eq!(user["LastName"], "Doe");
        assert_eq!(user["IsActive"], true);
        assert_eq!(user["UserType"], "Standard");
        let r = http
            .get(format!("{users}/{}", &id[..15]))
            .query(&[("fields", "Id,isactive")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let user: Value = r.json().await.unwrap();
        assert_eq!(user.as_object().unwrap().len(), 3, "{user}");
        assert_eq!(user["IsActive"], true);

        let (status, body) = patch(format!("{users}/{id}"), json!({ "IsActive": false })).await;
        assert_eq!((status, body), (204, Value::Null));
        assert_eq!(sf.user("JDOE@acme.example").unwrap()["IsActive"], false);

        let (status, body) = patch(format!("{users}/{id}"), json!({ "Name": "X" })).await;
        assert_eq!(status, 400);
        assert_eq!(body[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
        assert_eq!(body[0]["fields"], json!(["Name"]));
        let (status, body) = patch(format!("{users}/{id}"), json!({ "ShoeSize": 9 })).await;
        assert_eq!(
            (status, body[0]["errorCode"].as_str()),
            (400, Some("INVALID_FIELD"))
        );
        let (status, body) = patch(format!("{users}/{id}"), json!({ "IsActive": "false" })).await;
        assert_eq!(
            (status, body[0]["errorCode"].as_str()),
            (400, Some("JSON_PARSER_ERROR"))
        );
        let (status, body) = patch(format!("{users}/{id}"), json!({ "LastName": null })).await;
        assert_eq!(
            (status, body[0]["errorCode"].as_str()),
            (400, Some("REQUIRED_FIELD_MISSING"))
        );
        let (status, _) = patch(format!("{users}/{id}"), json!({ "FirstName": "Janet" })).await;
        assert_eq!(status, 204);
        assert_eq!(sf.user("jdoe@acme.example").unwrap()["Name"], "Janet Doe");

        let r = http
            .get(format!("{logins}/{login_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let login: Value = r.json().await.unwrap();
        assert_eq!(login["UserId"], id.as_str());
        assert_eq!(login["IsFrozen"], false);
        let (status, _) = patch(format!("{logins}/{login_id}"), json!({ "IsFrozen": true })).await;
        assert_eq!(status, 204);
        assert_eq!(
            sf.user_login("jdoe@acme.example").unwrap()["IsFrozen"],
            true
        );
        let (_, body) = soql(
            &http,
            &base,
            &token,
            &format!("SELECT IsFrozen FROM UserLogin WHERE UserId = '{id}'"),
        )
        .await;
        assert_eq!(body["records"][0]["IsFrozen"], true);

        let missing = salesforce_id("005", 999);
        let r = http
            .get(format!("{users}/{missing}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!([{ "message": "The requested resource does not exist", "errorCode": "NOT_FOUND" }])
        );
        let r = http
            .get(format!("{users}/not-an-id"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert!(
            body[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("Provided external ID field")
        );
        let (status, _) = patch(format!("{users}/{missing}"), json!({ "IsActive": false })).await;
        assert_eq!(status, 404);
        let r = http
            .get(format!(
                "{base}/services/data/{API_VERSION}/sobjects/Account/{id}"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    #[tokio::test]
    async fn faults_use_the_rest_error_shape() {
        let (sf, base, http, token) = setup().await;
        sf.add_user("jdoe@acme.example", "Jane Doe");
        let q = "SELECT Id FROM User WHERE Username = 'jdoe@acme.example'";
        let r = http
            .put(format!("{base}/_sandbox/faults"))
            .json(&json!({ "next": [429], "retry_after_secs": 5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = http
            .get(format!("{base}/services/data/{API_VERSION}/query"))
            .query(&[("q", q)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "5");
        assert_eq!(
            r.json::<Value>().await.unwrap()[0]["errorCode"],
            "REQUEST_LIMIT_EXCEEDED"
        );
        assert_eq!(soql(&http, &base, &token, q).await.0, 200);

        sf.set_faults(Faults {
            latency_ms: 250,
            ..Faults::default()
        });
        let t = Instant::now();
        assert_eq!(soql(&http, &base, &token, q).await.0, 200);
        assert!(t.elapsed() >= Duration::from_millis(250));
        let t = Instant::now();
        let r = http
            .post(format!("{base}/services/oauth2/token"))
            .form(&creds(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "the token endpoint is spared"
        );

        let run = |seed| {
            let (sf, http, base, token) = (sf.clone(), http.clone(), base.clone(), token.clone());
            async move {
                sf.set_faults(Faults {
                    share: Some(0.4),
                    seed,
                    every_status: Some(503),
                    ..Faults::default()
                });
                let mut out = Vec::new();
                for _ in 0..25 {
                    out.push(soql(&http, &base, &token, q).await.0);
                }
                out
            }
        };
        let a = run(3).await;
        assert_eq!(a, run(3).await);
        let unavailable = a.iter().filter(|s| **s == 503).count();
        assert!((3..=18).contains(&unavailable), "{a:?}");

        let state: Value = http
            .get(format!("{base}/_sandbox/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["users"][0]["Username"], "jdoe@acme.example");
        assert_eq!(state["userLogins"].as_array().unwrap().len(), 1);
        let log: Vec<SeenRequest> = http
            .get(format!("{base}/_sandbox/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            log.iter()
                .any(|r| r.status == 429 && r.uri.contains("/query"))
        );
        assert!(
            log.iter()
                .all(|r| r.uri.starts_with("/services") || r.uri.starts_with("/_sandbox"))
        );
    }

    #[test]
    fn ids_carry_the_case_safe_suffix() {
        // Both from the REST API guide's query example.
        assert_eq!(case_safe_suffix("001D000000IRFma"), "IAH");
        assert_eq!(case_safe_suffix("001D000000Iomaz"), "IAB");
        let id = salesforce_id("005", 42);
        assert_eq!(id.len(), 18);
        assert_eq!(id_key(&id), Some(&id[..15]));
        assert_eq!(id_key(&id[..15]), Some(&id[..15]));
        assert_eq!(id_key(&format!("{}AAA", &id[..15])), None);
        assert_eq!(id_key("005-bad"), None);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn parses_only_the_supported_soql() {
        let q = parse_soql(
            "SELECT Id, IsFrozen FROM UserLogin WHERE UserId = '005Dx0000000001' LIMIT 5",
        )
        .unwrap();
        assert_eq!(
            q,
            Soql {
                fields: vec!["Id", "IsFrozen"],
                object: "UserLogin",
                filter: Some(("UserId", "005Dx0000000001".to_string())),
                limit: Some(5),
            }
        );
        assert_eq!(
            parse_soql(r"SELECT Id FROM User WHERE Username = 'a\\b'")
                .unwrap()
                .filter
                .unwrap()
                .1,
            r"a\b"
        );
        assert!(parse_soql("SELECT Id FROM User WHERE Username = 'open").is_err());
        assert!(parse_soql("SELECT Id FROM User LIMIT many").is_err());
        assert!(parse_soql("SELECT FROM User").is_err());
    }
}
