//! Slack's Web API, the two methods a direct message to a person takes, as
//! strict as Slack: `GET /api/users.lookupByEmail?email=` and `POST
//! /api/chat.postMessage` with a JSON body (`channel`, non-empty `text`),
//! both with the bot token as a bearer. Errors are Slack's: HTTP 200 with
//! `{"ok": false, "error": "..."}` (`not_authed`, `invalid_auth`,
//! `users_not_found`, `invalid_arguments`, `channel_not_found`, `no_text`,
//! `invalid_form_data` for a body that is not JSON), and 429 with
//! `Retry-After` when throttled. Direct messages land in the person's
//! channel, their user id, and are kept for the tests to read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One direct message.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMessage {
    /// The person's e-mail.
    pub to: String,
    /// The text.
    pub text: String,
}

#[derive(Default)]
struct Inner {
    /// E-mail (lower case) -> user id.
    users: BTreeMap<String, String>,
    messages: Vec<DirectMessage>,
    lookups: usize,
    /// Answer this many of the next requests 429 (Retry-After: 1).
    throttle: usize,
}

/// The double. Cheap to clone.
#[derive(Clone)]
pub struct ChatApi {
    inner: Arc<Mutex<Inner>>,
    token: String,
}

impl std::fmt::Debug for ChatApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatApi").finish_non_exhaustive()
    }
}

impl ChatApi {
    /// A workspace whose bot token is `token`.
    pub fn new(token: &str) -> Self {
        Self {
            inner: Arc::default(),
            token: token.to_string(),
        }
    }

    /// Add a person; their user id.
    pub fn add_user(&self, email: &str) -> String {
        let mut inner = self.inner.lock().expect("chat api lock");
        let id = format!("U{:08X}", inner.users.len() + 1);
        inner.users.insert(email.to_lowercase(), id.clone());
        id
    }

    /// The direct messages sent so far.
    pub fn messages(&self) -> Vec<DirectMessage> {
        self.inner.lock().expect("chat api lock").messages.clone()
    }

    /// How many `users.lookupByEmail` calls were answered.
    pub fn lookups(&self) -> usize {
        self.inner.lock().expect("chat api lock").lookups
    }

    /// Answer the next `n` requests 429 with `Retry-After: 1`.
    pub fn throttle(&self, n: usize) {
        self.inner.lock().expect("chat api lock").throttle = n;
    }

    /// The HTTP routes, under `/api`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/users.lookupByEmail", get(lookup))
            .route("/api/chat.postMessage", post(post_message))
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

    /// The refusal a request gets before its method runs: throttled, or a
    /// missing or wrong bot token.
    fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        {
            let mut inner = self.inner.lock().expect("chat api lock");
            if inner.throttle > 0 {
                inner.throttle -= 1;
                return Some(
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "1")],
                        axum::Json(json!({ "ok": false, "error": "ratelimited" })),
                    )
                        .into_response(),
                );
            }
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            None => Some(slack_error("not_authed")),
            Some(t) if t != self.token => Some(slack_error("invalid_auth")),
            Some(_) => None,
        }
    }
}

fn slack_error(error: &str) -> Response {
    axum::Json(json!({ "ok": false, "error": error })).into_response()
}

async fn lookup(
    State(api): State<ChatApi>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = api.gate(&headers) {
        return refused;
    }
    let Some(email) = q.get("email").filter(|e| !e.is_empty()) else {
        return slack_error("invalid_arguments");
    };
    let mut inner = api.inner.lock().expect("chat api lock");
    inner.lookups += 1;
    match inner.users.get(&email.to_lowercase()) {
        Some(id) => axum::Json(json!({
            "ok": true,
            "user": { "id": id, "profile": { "email": email } },
        }))
        .into_response(),
        None => slack_error("users_not_found"),
    }
}

async fn post_message(State(api): State<ChatApi>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = api.gate(&headers) {
        return refused;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (true, Some(body)) = (json, parsed) else {
        return slack_error("invalid_form_data");
    };
    let text = body["text"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return slack_error("no_text");
    }
    let channel = body["channel"].as_str().unwrap_or_default();
    let mut inner = api.inner.lock().expect("chat api lock");
    let Some(to) = inner
        .users
        .iter()
        .find(|(_, id)| id.as_str() == channel)
        .map(|(email, _)| email.clone())
    else {
        return slack_error("channel_not_found");
    };
    inner.messages.push(DirectMessage {
        to,
        text: text.to_string(),
    });
    axum::Json(
        json!({ "ok": true, "channel": channel, "ts": format!("{}.000100", inner.messages.len()) }),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_takes_what_slack_takes_and_refuses_the_rest() {
        let api = ChatApi::new("xoxb-1");
        let ann = api.add_user("Ann@example.com");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api", listener.local_addr().unwrap());
        let a = api.clone();
        tokio::spawn(async move { a.serve(listener, std::future::pending()).await });
        let http = reqwest::Client::new();
        let lookup = |email: &str, token: Option<&str>| {
            let mut r = http.get(format!("{base}/users.lookupByEmail?email={email}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        assert_eq!(lookup("ann@example.com", None).await["error"], "not_authed");
        assert_eq!(
            lookup("ann@example.com", Some("xoxb-2")).await["error"],
            "invalid_auth"
        );
        assert_eq!(
            lookup("bo@example.com", Some("xoxb-1")).await["error"],
            "users_not_found"
        );
        assert_eq!(
            lookup("ann@example.com", Some("xoxb-1")).await["user"]["id"],
            ann
        );
        let post = |body: &str, content_type: &str| {
            let r = http
                .post(format!("{base}/chat.postMessage"))
                .bearer_auth("xoxb-1")
                .header("content-type", content_type)
                .body(body.to_string());
            async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let form = format!("channel={ann}&text=hi");
        assert_eq!(
            post(&form, "application/x-www-form-urlencoded").await["error"],
            "invalid_form_data"
        );
        assert_eq!(
            post(r#"{"channel":"U0","text":"hi"}"#, "application/json").await["error"],
            "channel_not_found"
        );
        let no_text = format!(r#"{{"channel":"{ann}","text":" "}}"#);
        assert_eq!(post(&no_text, "application/json").await["error"], "no_text");
        let ok = format!(r#"{{"channel":"{ann}","text":"hi"}}"#);
        assert_eq!(
            post(&ok, "application/json; charset=utf-8").await["ok"],
            true
        );
        api.throttle(1);
        let r = http
            .post(format!("{base}/chat.postMessage"))
            .bearer_auth("xoxb-1")
            .json(&json!({ "channel": ann, "text": "again" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(
            api.messages(),
            [DirectMessage {
                to: "ann@example.com".into(),
                text: "hi".into()
            }]
        );
        assert_eq!(api.lookups(), 2);
    }
}
