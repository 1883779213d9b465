//! scim-deprovision against scim2-server (python-scim, from PyPI), a SCIM 2.0
//! service provider written by others: the double tests faults, the peer
//! tests truth. Each test starts its own server on a free loopback port with
//! a bearer token, seeds users over the server's own SCIM API and reads the
//! final state back from it, never from the plugin's report.
//!
//! scim2-server cannot be told to throttle, so the 429/503 test puts a thin
//! fault-injecting proxy in front of it; the server still decides the truth.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use itsm_host::runtime::{FailureKind, Op, Outcome};
use serde_json::{Value, json};

use crate::support::{after_run, grants, input, scim_plugin};

const PEER_TOKEN: &str = "peer-tok-5b0e91c2";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// scim2-server as a child process, killed when dropped.
struct Peer {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`: the server serves SCIM at its root.
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Peer {
    async fn start() -> Self {
        let port = free_port();
        let child = tokio::process::Command::new("scim2-server")
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(["--bearer-token", PEER_TOKEN])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("scim2-server is not installed ({e}): run `pip install -r requirements-test.txt`")
            });
        let base = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        loop {
            let up = reqwest::get(format!("{base}/ServiceProviderConfig")).await;
            if up.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "scim2-server did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _child: child,
            base,
        }
    }

    fn client(&self) -> reqwest::Client {
        crate::support::client_as(PEER_TOKEN)
    }

    /// Create a user over the server's SCIM API; its id.
    async fn seed(&self, user_name: &str, active: bool) -> String {
        let resp = self
            .client()
            .post(format!("{}/Users", self.base))
            .header(header::CONTENT_TYPE, "application/scim+json")
            .json(&json!({
                "schemas": [USER_SCHEMA],
                "userName": user_name,
                "displayName": user_name,
                "active": active,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let user: Value = resp.json().await.unwrap();
        user["id"].as_str().unwrap().to_string()
    }

    /// The user as the server holds it.
    async fn user(&self, id: &str) -> Value {
        let resp = self
            .client()
            .get(format!("{}/Users/{id}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    /// Every user on the server.
    async fn users(&self) -> Vec<Value> {
        let list: Value = self
            .client()
            .get(format!("{}/Users", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["Resources"].as_array().cloned().unwrap_or_default()
    }

    fn grants(&self, base: &str, token: &str) -> itsm_host::runtime::Grants {
        grants(&[("base_url", base)], &[("scim_token", token)])
    }
}

#[tokio::test]
async fn an_active_user_ends_inactive_on_the_real_server_and_compensate_restores_it() {
    let peer = Peer::start().await;
    let id = peer.seed("alice@example.com", true).await;
    let bob = peer.seed("bob@example.com", true).await;
    let plugin = scim_plugin();
    let g = peer.grants(&peer.base, PEER_TOKEN);

    let run = plugin
        .call(Op::Run, &input("alice@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, evidence } = &run.outcome else {
        panic!("run failed against scim2-server: {run:?}");
    };
    assert_eq!(outputs.as_ref().unwrap()["action"], "deactivated");
    assert_eq!(outputs.as_ref().unwrap()["scim_id"], json!(id));
    assert_eq!(evidence.before.as_ref().unwrap()["active"], json!(true));
    // The server holds the change; nobody else was touched.
    assert_eq!(peer.user(&id).await["active"], json!(false));
    assert_eq!(peer.user(&bob).await["active"], json!(true));

    let verify = plugin
        .call(Op::Verify, &input("alice@example.com"), &g)
        .await
        .unwrap();
    assert!(verify.failure().is_none(), "{verify:?}");

    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("alice@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    assert!(comp.failure().is_none(), "{comp:?}");
    assert_eq!(peer.user(&id).await["active"], json!(true));
    assert_eq!(peer.user(&bob).await["active"], json!(true));
    let verify = plugin
        .call(Op::Verify, &input("alice@example.com"), &g)
        .await
        .unwrap();
    assert!(
        verify
            .failure()
            .is_some_and(|f| f.message.contains("still active")),
        "{verify:?}"
    );
}

#[tokio::test]
async fn an_already_inactive_user_is_left_alone_on_the_real_server() {
    let peer = Peer::start().await;
    let id = peer.seed("carol@example.com", false).await;
    let before = peer.user(&id).await;
    let plugin = scim_plugin();
    let g = peer.grants(&peer.base, PEER_TOKEN);
    let run = plugin
        .call(Op::Run, &input("carol@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, .. } = &run.outcome else {
        panic!("{run:?}")
    };
    assert_eq!(outputs.as_ref().unwrap()["action"], "already_inactive");
    assert!(
        run.requests.iter().all(|r| r.method == "GET"),
        "only looked: {:?}",
        run.requests
    );
    let after = peer.user(&id).await;
    assert_eq!(after["active"], json!(false));
    assert_eq!(after["meta"]["version"], before["meta"]["version"]);
    let verify = plugin
        .call(Op::Verify, &input("carol@example.com"), &g)
        .await
        .unwrap();
    assert!(verify.failure().is_none(), "{verify:?}");
    // Rolled back: the run changed nothing, so she stays inactive.
    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("carol@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    let Outcome::Succeeded { evidence, .. } = &comp.outcome else {
        panic!("{comp:?}")
    };
    assert!(
        evidence.summary.starts_with("nothing to undo"),
        "{evidence:?}"
    );
    let last = peer.user(&id).await;
    assert_eq!(last["active"], json!(false));
    assert_eq!(last["meta"]["version"], before["meta"]["version"]);
}

#[tokio::test]
async fn a_user_missing_from_the_real_server_is_success_and_creates_nothing() {
    let peer = Peer::start().await;
    peer.seed("dave@example.com", true).await;
    let plugin = scim_plugin();
    let g = peer.grants(&peer.base, PEER_TOKEN);
    let run = plugin
        .call(Op::Run, &input("ghost@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, evidence } = &run.outcome else {
        panic!("{run:?}")
    };
    assert_eq!(outputs.as_ref().unwrap()["found"], json!(false));
    assert!(evidence.summary.contains("already gone"), "{evidence:?}");
    let verify = plugin
        .call(Op::Verify, &input("ghost@example.com"), &g)
        .await
        .unwrap();
    assert!(verify.failure().is_none(), "{verify:?}");
    // Rolled back: nothing was found, so there is nothing to undo.
    let comp = plugin
        .call(
            Op::Compensate,
            &after_run(&input("ghost@example.com"), &run),
            &g,
        )
        .await
        .unwrap();
    let Outcome::Succeeded { evidence, .. } = &comp.outcome else {
        panic!("compensate must succeed when run found no user: {comp:?}")
    };
    assert!(
        evidence.summary.starts_with("nothing to undo"),
        "{evidence:?}"
    );
    let users = peer.users().await;
    assert_eq!(users.len(), 1, "{users:#?}");
    assert_eq!(users[0]["active"], json!(true));
}

#[tokio::test]
async fn a_wrong_token_fails_fatal_and_the_real_server_is_unchanged() {
    let peer = Peer::start().await;
    let id = peer.seed("erin@example.com", true).await;
    let before = peer.user(&id).await;
    let plugin = scim_plugin();
    let wrong = "wrong-peer-token-42";
    let report = plugin
        .call(
            Op::Run,
            &input("erin@example.com"),
            &peer.grants(&peer.base, wrong),
        )
        .await
        .unwrap();
    let f = report.failure().expect("401 must fail");
    assert_eq!(f.kind, FailureKind::Fatal);
    assert!(f.message.contains("401"), "{}", f.message);
    assert!(!serde_json::to_string(&report).unwrap().contains(wrong));
    assert_eq!(peer.user(&id).await, before);
}

#[tokio::test]
async fn delete_mode_removes_the_user_from_the_real_server() {
    let peer = Peer::start().await;
    let id = peer.seed("gail@example.com", true).await;
    let plugin = scim_plugin();
    let g = grants(
        &[("base_url", &peer.base), ("mode", "delete")],
        &[("scim_token", PEER_TOKEN)],
    );
    let run = plugin
        .call(Op::Run, &input("gail@example.com"), &g)
        .await
        .unwrap();
    assert!(run.failure().is_none(), "{run:?}");
    let gone = peer
        .client()
        .get(format!("{}/Users/{id}", peer.base))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let verify = plugin
        .call(Op::Verify, &input("gail@example.com"), &g)
        .await
        .unwrap();
    let Outcome::Succeeded { evidence, .. } = &verify.outcome else {
        panic!("{verify:?}")
    };
    assert_eq!(evidence.after, Some(json!({ "present": false })));
}

/// A proxy in front of the peer: answers the queued statuses first (with
/// `Retry-After: 2` on 429 and 503), then forwards. Like the doubles, it
/// refuses a chunked request body with 411.
#[derive(Clone)]
struct FaultProxy {
    upstream: String,
    queue: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
    http: reqwest::Client,
}

async fn proxy(State(p): State<FaultProxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if itsm_sandbox::faults::chunked_without_length(&parts.headers) {
        return StatusCode::LENGTH_REQUIRED.into_response();
    }
    if let Some(status) = p.queue.lock().unwrap().pop_front() {
        let status = StatusCode::from_u16(status).unwrap();
        return (
            status,
            [(header::RETRY_AFTER, "2")],
            "injected by the test proxy",
        )
            .into_response();
    }
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.upstream));
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let resp = out.body(body).send().await.unwrap();
    let status = resp.status();
    let mut headers = HeaderMap::new();
    if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    (status, headers, resp.bytes().await.unwrap()).into_response()
}

impl FaultProxy {
    async fn start(upstream: &str, statuses: &[u16]) -> (Self, SocketAddr) {
        let p = FaultProxy {
            upstream: upstream.to_string(),
            queue: std::sync::Arc::new(std::sync::Mutex::new(statuses.iter().copied().collect())),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(proxy).with_state(p.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (p, addr)
    }
}

#[tokio::test]
async fn throttling_and_unavailability_in_front_of_the_real_server_are_retryable() {
    let peer = Peer::start().await;
    let id = peer.seed("frank@example.com", true).await;
    let (_proxy, addr) = FaultProxy::start(&peer.base, &[429, 503]).await;
    let base = format!("http://{addr}");
    let plugin = scim_plugin();
    let g = peer.grants(&base, PEER_TOKEN);
    for status in [429, 503] {
        let report = plugin
            .call(Op::Run, &input("frank@example.com"), &g)
            .await
            .unwrap();
        let f = report
            .failure()
            .unwrap_or_else(|| panic!("{status} must fail: {report:?}"));
        assert_eq!(f.kind, FailureKind::Retryable, "{status}");
        assert_eq!(f.retry_after_ms, Some(2000), "{status}");
        assert!(f.message.contains(&status.to_string()), "{}", f.message);
        assert_eq!(peer.user(&id).await["active"], json!(true), "{status}");
    }
    // The faults are spent: the retry goes through the proxy to the server.
    let report = plugin
        .call(Op::Run, &input("frank@example.com"), &g)
        .await
        .unwrap();
    assert!(report.failure().is_none(), "{report:?}");
    assert_eq!(peer.user(&id).await["active"], json!(false));
}
