//! A strict little peer for the sandbox tests, written apart from the host:
//! it echoes every request back the way httpbin's `/anything` does (headers
//! in the body and in a response header), holds `/slow` requests open while
//! counting how many are open at once, and records everything it received,
//! so a test asserts on what reached the server, not on what the host says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    open: AtomicUsize,
    max_open: AtomicUsize,
}

/// The echo server, on a loopback port for the rest of the test.
#[derive(Clone)]
pub struct EchoServer {
    shared: Arc<Shared>,
    pub addr: std::net::SocketAddr,
}

impl EchoServer {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { shared, addr }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The most `/slow` requests that were open at once.
    pub fn max_open(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// Every byte received (URIs, headers, bodies), as one lossy string.
    pub fn all_received(&self) -> String {
        self.seen()
            .iter()
            .map(|s| {
                format!(
                    "{} {} {:?} {}",
                    s.method,
                    s.uri,
                    s.headers,
                    String::from_utf8_lossy(&s.body)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: headers.clone(),
        body: body.to_vec(),
    });
    if parts.uri.path() == "/slow" {
        let now = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_open.fetch_max(now, Ordering::SeqCst);
        let ms = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        shared.open.fetch_sub(1, Ordering::SeqCst);
    }
    let auth = parts
        .headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "url": parts.uri.to_string(),
        "headers": headers.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    let big = if parts.uri.path() == "/big-header" {
        "b".repeat(100_000)
    } else {
        String::new()
    };
    Response::builder()
        .header("content-type", "application/json")
        .header("x-big", big)
        .header("x-echo-authorization", auth)
        .body(Body::from(echo.to_string()))
        .unwrap()
}
