//! A firewall's policy API, the kind a change is made through, as strict
//! as the strictest real one: every request needs the bearer token; every
//! write needs an `Idempotency-Key` (a key reused for a different request
//! is refused) and a JSON body that names only known fields with valid
//! values; rule ids are short slugs.
//!
//! - `PUT /api/v1/rules/{id}` `{"action": "allow"|"deny", "port": 1-65535,
//!   "source": "10.0.0.0/8", "comment": "..."}`: 201 made, 200 replaced;
//! - `DELETE /api/v1/rules/{id}`: 204, or 404 when there is no such rule;
//! - `GET /api/v1/rules/{id}`: the rule, or 404;
//! - `GET /api/v1/health`: `{"status": "ok"}`, or `"degraded"` with the
//!   protected ports a deny rule cuts off (443 unless told otherwise): the
//!   read a change's verification makes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `allow` or `deny`.
    pub action: String,
    /// The port it is about.
    pub port: u16,
    /// Where from: an IPv4 CIDR block.
    pub source: String,
    /// Why (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Default)]
struct Inner {
    rules: BTreeMap<String, Rule>,
    /// Idempotency key -> the request it was first used for, and the
    /// status it was answered.
    keys: BTreeMap<String, (Value, u16)>,
    protected: BTreeSet<u16>,
    /// Writes applied (replays excluded).
    writes: usize,
}

/// The double. Cheap to clone.
#[derive(Clone)]
pub struct Firewall {
    inner: Arc<Mutex<Inner>>,
    token: String,
}

impl std::fmt::Debug for Firewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firewall").finish_non_exhaustive()
    }
}

impl Firewall {
    /// A firewall whose API token is `token`, protecting port 443.
    pub fn new(token: &str) -> Self {
        let fw = Self {
            inner: Arc::default(),
            token: token.to_string(),
        };
        fw.inner
            .lock()
            .expect("firewall lock")
            .protected
            .insert(443);
        fw
    }

    /// The rules now.
    pub fn rules(&self) -> BTreeMap<String, Rule> {
        self.inner.lock().expect("firewall lock").rules.clone()
    }

    /// Writes applied so far (a replayed write is not applied again).
    pub fn writes(&self) -> usize {
        self.inner.lock().expect("firewall lock").writes
    }

    /// The HTTP routes, under `/api/v1`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/rules/{id}", get(show).put(put).delete(delete))
            .route("/api/v1/health", get(health))
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

    fn authorised(&self, headers: &HeaderMap) -> Result<(), Response> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            Some(t) if t == self.token => Ok(()),
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "invalid token")),
            None => Err(error(StatusCode::UNAUTHORIZED, "missing bearer token")),
        }
    }

    /// A write's checks and replay: `Ok(None)` to apply it, `Ok(Some)` the
    /// answer a replay of its key gets.
    fn write_key(
        &self,
        headers: &HeaderMap,
        request: &Value,
    ) -> Result<(String, Option<Response>), Response> {
        self.authorised(headers)?;
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.trim().is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "every write needs an Idempotency-Key header (1-255 characters)",
                )
            })?
            .to_string();
        let inner = self.inner.lock().expect("firewall lock");
        match inner.keys.get(&key) {
            Some((first, status)) if first == request => {
                let status = StatusCode::from_u16(*status).expect("a status we gave");
                Ok((
                    key,
                    Some((status, axum::Json(json!({ "replayed": true }))).into_response()),
                ))
            }
            Some(_) => Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Idempotency-Key {key} was used for a different request"),
            )),
            None => Ok((key, None)),
        }
    }

    fn remember(&self, key: String, request: Value, status: StatusCode) {
        let mut inner = self.inner.lock().expect("firewall lock");
        inner.writes += 1;
        inner.keys.insert(key, (request, status.as_u16()));
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn check_id(id: &str) -> Result<(), Response> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            &format!("rule id {id:?} must be 1-64 of a-z, 0-9 and -"),
        ))
    }
}

/// `a.b.c.d/n`, each part in range.
fn is_cidr(text: &str) -> bool {
    let Some((addr, bits)) = text.split_once('/') else {
        return false;
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

async fn show(State(fw): State<Firewall>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = fw.authorised(&headers).and_then(|()| check_id(&id)) {
        return r;
    }
    match fw.inner.lock().expect("firewall lock").rules.get(&id) {
        Some(rule) => axum::Json(rule).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no rule {id}")),
    }
}

async fn put(
    State(fw): State<Firewall>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = check_id(&id) {
        return r;
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the rule as application/json",
        );
    }
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let request = json!({ "PUT": id, "body": raw });
    let key = match fw.write_key(&headers, &request) {
        Ok((_, Some(replay))) => return replay,
        Ok((key, None)) => key,
        Err(r) => return r,
    };
    let rule: Rule = match serde_json::from_value(raw) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &format!("rule: {e}")),
    };
    if !["allow", "deny"].contains(&rule.action.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("action {:?} is not allow or deny", rule.action),
        );
    }
    if rule.port == 0 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "port 0 is not a port");
    }
    if !is_cidr(&rule.source) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "source {:?} is not an IPv4 CIDR block (a.b.c.d/n)",
                rule.source
            ),
        );
    }
    let existed = fw
        .inner
        .lock()
        .expect("firewall lock")
        .rules
        .insert(id, rule.clone())
        .is_some();
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    fw.remember(key, request, status);
    (status, axum::Json(rule)).into_response()
}

async fn delete(
    State(fw): State<Firewall>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = check_id(&id) {
        return r;
    }
    let request = json!({ "DELETE": id });
    let key = match fw.write_key(&headers, &request) {
        Ok((_, Some(replay))) => return replay,
        Ok((key, None)) => key,
        Err(r) => return r,
    };
    let removed = fw
        .inner
        .lock()
        .expect("firewall lock")
        .rules
        .remove(&id)
        .is_some();
    if !removed {
        return error(StatusCode::NOT_FOUND, &format!("no rule {id}"));
    }
    fw.remember(key, request, StatusCode::NO_CONTENT);
    StatusCode::NO_CONTENT.into_response()
}

async fn health(State(fw): State<Firewall>, headers: HeaderMap) -> Response {
    if let Err(r) = fw.authorised(&headers) {
        return r;
    }
    let inner = fw.inner.lock().expect("firewall lock");
    let cut: BTreeSet<u16> = inner
        .rules
        .values()
        .filter(|r| r.action == "deny" && inner.protected.contains(&r.port))
        .map(|r| r.port)
        .collect();
    if cut.is_empty() {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        axum::Json(json!({ "status": "degraded", "unreachable": cut })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_takes_well_formed_keyed_writes_and_refuses_the_rest_by_name() {
        let fw = Firewall::new("fw-token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1", listener.local_addr().unwrap());
        let f = fw.clone();
        tokio::spawn(async move { f.serve(listener, std::future::pending()).await });
        let http = reqwest::Client::new();
        let put = |id: &str, key: Option<&str>, body: Value| {
            let mut r = http
                .put(format!("{base}/rules/{id}"))
                .bearer_auth("fw-token")
                .json(&body);
            if let Some(k) = key {
                r = r.header("idempotency-key", k);
            }
            async move {
                let r = r.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let rule = json!({ "action": "deny", "port": 443, "source": "0.0.0.0/0" });
        assert_eq!(put("r1", None, rule.clone()).await.0, 400);
        let (s, t) = put(
            "r1",
            Some("k1"),
            json!({ "action": "deny", "port": 443, "src": "x" }),
        )
        .await;
        assert_eq!(s, 422);
        assert!(t.contains("src"), "{t}");
        let (s, t) = put(
            "r1",
            Some("k2"),
            json!({ "action": "drop", "port": 1, "source": "10.0.0.0/8" }),
        )
        .await;
        assert_eq!(s, 422);
        assert!(t.contains("drop"), "{t}");
        let (s, t) = put(
            "r1",
            Some("k3"),
            json!({ "action": "deny", "port": 1, "source": "10.0.0.0/33" }),
        )
        .await;
        assert_eq!(s, 422);
        assert!(t.contains("CIDR"), "{t}");
        assert_eq!(put("R_1", Some("k4"), rule.clone()).await.0, 400);
        assert_eq!(put("r1", Some("k5"), rule.clone()).await.0, 201);
        // The same key again: the first answer, applied once.
        assert_eq!(put("r1", Some("k5"), rule.clone()).await.0, 201);
        assert_eq!(fw.writes(), 1);
        // The same key for another request: refused.
        let (s, t) = put("r2", Some("k5"), rule.clone()).await;
        assert_eq!(s, 422);
        assert!(t.contains("different request"), "{t}");
        let health: Value = http
            .get(format!("{base}/health"))
            .bearer_auth("fw-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            health,
            json!({ "status": "degraded", "unreachable": [443] })
        );
        let unauthorised = http.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(unauthorised.status(), 401);
        let del = |key: &str| {
            let r = http
                .delete(format!("{base}/rules/r1"))
                .bearer_auth("fw-token")
                .header("idempotency-key", key);
            async move { r.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(del("d1").await, 204);
        assert_eq!(del("d2").await, 404);
        assert!(fw.rules().is_empty());
    }
}
