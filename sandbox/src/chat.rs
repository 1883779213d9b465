//! A Slack-style incoming webhook, strict as Slack's: `POST
//! /services/T.../B.../secret` with a JSON object holding a non-empty
//! `text`, sent with its length. Anything else gets Slack's own refusals
//! (`invalid_payload`, `no_text`, `no_service`, 411 for a chunked body).
//! Each accepted message is kept for the tests to read.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// One accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The hook's path after `/services/`.
    pub hook: String,
    /// The JSON body.
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    messages: Vec<Message>,
    /// Answer this many of the next requests 429 (Retry-After: 1).
    throttle: usize,
}

/// The double. Cheap to clone.
#[derive(Clone)]
pub struct ChatWebhook {
    inner: Arc<Mutex<Inner>>,
    /// The one hook path it serves (`T000/B000/secret`).
    hook: String,
}

impl Default for ChatWebhook {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatWebhook {
    /// A double serving one random hook path.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            hook: format!("T0001/B0001/{:016x}", rand::random::<u64>()),
        }
    }

    /// The hook's path, for `http://ADDR/services/{path}`.
    pub fn hook(&self) -> &str {
        &self.hook
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Message> {
        self.inner.lock().expect("chat lock").messages.clone()
    }

    /// Answer the next `n` requests 429 with `Retry-After: 1`.
    pub fn throttle(&self, n: usize) {
        self.inner.lock().expect("chat lock").throttle = n;
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/services/{a}/{b}/{c}", post(receive))
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

fn refuse(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

async fn receive(
    State(chat): State<ChatWebhook>,
    Path((a, b, c)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if format!("{a}/{b}/{c}") != chat.hook {
        return refuse(StatusCode::NOT_FOUND, "no_service");
    }
    {
        let mut inner = chat.inner.lock().expect("chat lock");
        if inner.throttle > 0 {
            inner.throttle -= 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "rate_limited",
            )
                .into_response();
        }
    }
    if crate::faults::chunked_without_length(&headers) {
        return refuse(StatusCode::LENGTH_REQUIRED, "length_required");
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (true, Some(body)) = (json, parsed) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_payload");
    };
    if body["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
        return refuse(StatusCode::BAD_REQUEST, "no_text");
    }
    chat.inner
        .lock()
        .expect("chat lock")
        .messages
        .push(Message {
            hook: chat.hook.clone(),
            body,
        });
    refuse(StatusCode::OK, "ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_takes_what_slack_takes_and_refuses_the_rest() {
        let chat = ChatWebhook::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/services", listener.local_addr().unwrap());
        let c = chat.clone();
        tokio::spawn(async move { c.serve(listener, std::future::pending()).await });
        let http = reqwest::Client::new();
        let url = format!("{base}/{}", chat.hook());
        let send = |url: String, body: &'static str, ct: &'static str| {
            let http = http.clone();
            async move {
                let r = http
                    .post(url)
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(
            send(url.clone(), r#"{"text":"hi"}"#, "application/json").await,
            (200, "ok".into())
        );
        assert_eq!(
            send(url.clone(), r#"{"text":" "}"#, "application/json").await,
            (400, "no_text".into())
        );
        assert_eq!(
            send(url.clone(), "text=hi", "application/x-www-form-urlencoded").await,
            (400, "invalid_payload".into())
        );
        assert_eq!(
            send(
                format!("{base}/T/B/wrong"),
                r#"{"text":"hi"}"#,
                "application/json"
            )
            .await,
            (404, "no_service".into())
        );
        chat.throttle(1);
        assert_eq!(
            send(url.clone(), r#"{"text":"hi"}"#, "application/json")
                .await
                .0,
            429
        );
        assert_eq!(chat.messages().len(), 1);
        assert_eq!(chat.messages()[0].body["text"], "hi");
    }
}
