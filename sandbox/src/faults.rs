//! Plumbing shared by the Graph, Vault and Salesforce test doubles: fault
//! injection, the request log, the `/_sandbox/*` inspection routes and two
//! small OAuth form helpers. Test-only machinery, never a production path.
//!
//! A double implements [`Double`] (how to classify a path, how its API
//! shapes an error, how it checks a bearer token) and layers [`guard`] over
//! its router; it then gets the same fault plan, request log and inspection
//! routes as the others, so a retry test written against one reads the same
//! against the next.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request as a double saw it; the same record the SCIM double keeps.
pub use super::scim::SeenRequest;

/// Faults to inject into a double's API calls, for retry tests and demos.
///
/// Applied in this order to each API request (and to token requests only
/// when `token_endpoint` is set; never to `/_sandbox/*`): wait
/// `latency_ms`, then answer the next queued status if any, else answer
/// `every_status` if this is an `every`-th request or if the seeded draw
/// falls under `share`, else serve the request normally.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Statuses to answer to the next requests, one each, before normal service.
    pub next: VecDeque<u16>,
    /// Answer every Nth request with `every_status`.
    pub every: Option<u32>,
    /// The status for `every` and `share` (default 429).
    pub every_status: Option<u16>,
    /// `Retry-After` seconds sent with 429 and 503.
    pub retry_after_secs: u64,
    /// Delay added to each request the plan applies to, faulted or not.
    pub latency_ms: u64,
    /// Fraction (0..=1) of requests answered with `every_status`.
    pub share: Option<f64>,
    /// Seed of the draw behind `share`: one seed, one sequence of answers.
    pub seed: u64,
    /// Also apply the plan to the OAuth token endpoint.
    pub token_endpoint: bool,
    /// Accept a request body sent chunked, with no `Content-Length`, as
    /// lenient servers do. Off by default: the double answers 411 Length
    /// Required, as strict servers and proxies do (and some others read such
    /// a body as empty), so a client that streams its bodies is caught.
    pub accept_chunked: bool,
}

impl Faults {
    /// Reject plans that cannot be honoured, so a typo fails loudly.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(share) = self.share
            && !(0.0..=1.0).contains(&share)
        {
            return Err(format!("share must be within 0..=1, got {share}"));
        }
        let statuses = self.next.iter().chain(self.every_status.iter());
        for s in statuses {
            if StatusCode::from_u16(*s).is_err() || *s < 100 {
                return Err(format!("{s} is not an HTTP status"));
            }
        }
        Ok(())
    }
}

/// A fault plan and where it has got to.
#[derive(Debug, Default)]
pub struct FaultPlan {
    faults: Faults,
    counter: u32,
    rng: u64,
}

/// What the plan does to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Injection {
    /// How long to wait before answering.
    pub delay: Duration,
    /// A status to answer instead of serving the request.
    pub status: Option<u16>,
    /// `Retry-After` for that status, when it is 429 or 503.
    pub retry_after_secs: u64,
}

impl FaultPlan {
    /// Replace the plan and restart its counter and draw.
    pub fn set(&mut self, faults: Faults) {
        self.rng = faults.seed;
        self.counter = 0;
        self.faults = faults;
    }

    /// The plan as set.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Whether the plan covers requests of this kind.
    pub fn applies_to(&self, kind: Kind) -> bool {
        match kind {
            Kind::Api => true,
            Kind::Token => self.faults.token_endpoint,
            Kind::Sandbox => false,
        }
    }

    /// Decide the fate of the next request.
    pub fn draw(&mut self) -> Injection {
        let every_status = self.faults.every_status.unwrap_or(429);
        let status = match self.faults.next.pop_front() {
            Some(s) => Some(s),
            None => {
                self.counter = self.counter.wrapping_add(1);
                let nth =
                    matches!(self.faults.every, Some(n) if n > 0 && self.counter.is_multiple_of(n));
                // Draw on every request while `share` is set, so the answer to
                // request k depends only on the seed and k.
                let shared = match self.faults.share {
                    Some(p) => self.unit() < p,
                    None => false,
                };
                (nth || shared).then_some(every_status)
            }
        };
        Injection {
            delay: Duration::from_millis(self.faults.latency_ms),
            status,
            retry_after_secs: self.faults.retry_after_secs,
        }
    }

    /// A uniform draw in [0, 1) from SplitMix64. Written out rather than
    /// taken from `rand`, whose seeded generators may change their output
    /// between releases: a seed here must keep meaning the same faults.
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a request is to the double.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The API proper: faults apply and a bearer token is required.
    Api,
    /// The OAuth token endpoint: faults apply only if asked for.
    Token,
    /// Anything else (inspection routes, unknown paths).
    Sandbox,
}

/// What a double tells the shared [`guard`] about itself.
pub trait Double: Clone + Send + Sync + 'static {
    /// Classify a request path.
    fn kind(&self, path: &str) -> Kind;
    /// Run `f` on the double's fault plan, under its lock.
    fn with_plan<R>(&self, f: impl FnOnce(&mut FaultPlan) -> R) -> R;
    /// Append to the request log.
    fn record(&self, seen: SeenRequest);
    /// The request log.
    fn requests(&self) -> Vec<SeenRequest>;
    /// The state, as `/_sandbox/state` shows it.
    fn state_json(&self) -> Value;
    /// An injected `status`, in the API's own error shape.
    fn fault_response(&self, status: StatusCode) -> Response;
    /// `None` when an API request may proceed; else the API's own refusal.
    fn refuse(&self, parts: &Parts) -> Option<Response>;
    /// 411 for a chunked request body, in the API's own error shape.
    fn length_required(&self) -> Response {
        self.fault_response(StatusCode::LENGTH_REQUIRED)
    }
}

/// Whether a request sends its body chunked with no `Content-Length`: the
/// framing strict servers refuse with 411 Length Required.
pub fn chunked_without_length(headers: &HeaderMap) -> bool {
    let chunked = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
    chunked && !headers.contains_key(header::CONTENT_LENGTH)
}

/// Fault injection, auth and the request log, around every request.
pub async fn guard<D: Double>(State(double): State<D>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut seen = seen_request(&parts, &bytes);
    let kind = double.kind(parts.uri.path());
    let (injection, accept_chunked) = double.with_plan(|plan| {
        (
            plan.applies_to(kind).then(|| plan.draw()),
            plan.faults().accept_chunked,
        )
    });
    if let Some(delay) = injection.map(|i| i.delay)
        && !delay.is_zero()
    {
        tokio::time::sleep(delay).await;
    }
    let fault = injection.and_then(|i| i.status.map(|s| (s, i.retry_after_secs)));
    let response = if let Some((status, retry_after)) = fault {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        with_retry_after(double.fault_response(status), retry_after)
    } else if kind != Kind::Sandbox && !accept_chunked && chunked_without_length(&parts.headers) {
        double.length_required()
    } else if let Some(refusal) = (kind == Kind::Api).then(|| double.refuse(&parts)).flatten() {
        refusal
    } else {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    seen.status = response.status().as_u16();
    double.record(seen);
    response
}

/// `Retry-After` on 429 and 503, as throttling APIs send it.
fn with_retry_after(mut response: Response, secs: u64) -> Response {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

/// The log entry for a request; form bodies are logged as JSON objects so
/// token requests can be inspected like the rest.
fn seen_request(parts: &Parts, bytes: &Bytes) -> SeenRequest {
    let header_str = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_str(header::CONTENT_TYPE);
    let is_form = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        Some(Value::Object(
            form(bytes)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    } else {
        serde_json::from_slice(bytes).ok()
    };
    SeenRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        authorization: header_str(header::AUTHORIZATION),
        content_type,
        body,
        status: 0,
    }
}

/// A double's API routes made whole: the `/_sandbox/` routes added, the
/// guard (faults, auth, request log) around everything, and its state.
pub fn finish<D: Double>(routes: Router<D>, double: &D) -> Router {
    routes
        .merge(sandbox_routes::<D>())
        .layer(axum::middleware::from_fn_with_state(
            double.clone(),
            guard::<D>,
        ))
        .with_state(double.clone())
}

/// `/_sandbox/faults` (GET/PUT; POST as SCIM's double takes it),
/// `/_sandbox/requests` and `/_sandbox/state`.
pub fn sandbox_routes<D: Double>() -> Router<D> {
    Router::new()
        .route(
            "/_sandbox/faults",
            get(get_faults::<D>)
                .put(put_faults::<D>)
                .post(put_faults::<D>),
        )
        .route("/_sandbox/requests", get(get_requests::<D>))
        .route("/_sandbox/state", get(get_state::<D>))
}

async fn get_faults<D: Double>(State(double): State<D>) -> Response {
    axum::Json(double.with_plan(|p| p.faults().clone())).into_response()
}

async fn put_faults<D: Double>(State(double): State<D>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Faults>(&body).map_err(|e| e.to_string());
    match parsed.and_then(|f| f.validate().map(|()| f)) {
        Ok(f) => {
            double.with_plan(|p| p.set(f));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad faults: {e}")).into_response(),
    }
}

async fn get_requests<D: Double>(State(double): State<D>) -> Response {
    axum::Json(double.requests()).into_response()
}

async fn get_state<D: Double>(State(double): State<D>) -> Response {
    axum::Json(double.state_json()).into_response()
}

/// An `application/x-www-form-urlencoded` body as a map (last value wins).
pub fn form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// Client credentials from `Authorization: Basic`, which RFC 6749 §2.3.1
/// allows in place of form fields (each part form-urlencoded first).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// The bearer token of a request, if it sent one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_header(&parts.headers)
}

/// The bearer token in `Authorization`, if any.
pub fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A fresh random token with a recognisable prefix.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Now, RFC 3339 to the millisecond in UTC (`2024-05-01T12:00:00.000Z`).
pub fn now_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Now, RFC 3339 to the second in UTC (`2024-05-01T12:00:00Z`).
pub fn now_seconds() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Serve a double's router on `listener` until `shutdown` resolves.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_statuses_come_first_then_every_nth() {
        let mut plan = FaultPlan::default();
        plan.set(Faults {
            next: [503, 500].into(),
            every: Some(3),
            retry_after_secs: 7,
            ..Faults::default()
        });
        let statuses: Vec<_> = (0..8).map(|_| plan.draw().status).collect();
        assert_eq!(
            statuses,
            [
                Some(503),
                Some(500),
                None,
                None,
                Some(429),
                None,
                None,
                Some(429)
            ]
        );
        assert_eq!(plan.draw().retry_after_secs, 7);
    }

    #[test]
    fn share_is_seeded_and_roughly_honoured() {
        let run = |seed| {
            let mut plan = FaultPlan::default();
            plan.set(Faults {
                share: Some(0.25),
                every_status: Some(503),
                seed,
                ..Faults::default()
            });
            (0..400).map(|_| plan.draw().status).collect::<Vec<_>>()
        };
        let a = run(11);
        assert_eq!(a, run(11), "same seed, same faults");
        assert_ne!(a, run(12), "another seed, other faults");
        let hits = a.iter().filter(|s| **s == Some(503)).count();
        assert!((60..=140).contains(&hits), "{hits} of 400 at share 0.25");
    }

    #[test]
    fn validation_rejects_nonsense() {
        let bad_share = Faults {
            share: Some(1.5),
            ..Faults::default()
        };
        assert!(bad_share.validate().is_err());
        let bad_status = Faults {
            next: [42].into(),
            ..Faults::default()
        };
        assert!(bad_status.validate().is_err());
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn a_chunked_body_without_length_is_spotted() {
        let mut headers = HeaderMap::new();
        assert!(!chunked_without_length(&headers));
        headers.insert(header::TRANSFER_ENCODING, "gzip, Chunked".parse().unwrap());
        assert!(chunked_without_length(&headers));
        headers.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert!(!chunked_without_length(&headers));
    }

    #[test]
    fn basic_credentials_are_decoded_and_unescaped() {
        let mut headers = HeaderMap::new();
        let raw = base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {raw}").parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("my app".to_string(), "s:cret".to_string()))
        );
    }
}
