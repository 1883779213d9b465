//! The API takes an identity provider's JWT access tokens beside `itsm`
//! tokens, and refuses each kind of bad one with a 401 naming why. The
//! provider here is a discovery document and a key set served on loopback
//! by the test, which signs tokens with throwaway keys
//! (`tests/fixtures/test-oidc-*`); the browser sign-in against an
//! independent provider is `ui::a_person_signs_in_through_the_identity_provider...`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{client_as, root, start_server};

/// A provider's public face: discovery and a key set the test can change,
/// counting the key set's fetches.
#[derive(Clone)]
struct FakeProvider {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl FakeProvider {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let p = FakeProvider {
            issuer: issuer.clone(),
            keys: Arc::new(Mutex::new(keys)),
            fetches: Arc::default(),
        };
        let (discovery, jwks) = (p.clone(), p.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let issuer = discovery.issuer.clone();
                    async move {
                        axum::Json(json!({
                            "issuer": issuer,
                            "authorization_endpoint": format!("{issuer}/auth"),
                            "token_endpoint": format!("{issuer}/token"),
                            "jwks_uri": format!("{issuer}/jwks"),
                        }))
                    }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    jwks.fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = jwks.keys.lock().unwrap().clone();
                    async move { axum::Json(json!({ "keys": keys })) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        p
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures").join(name)).unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("test-oidc-{name}.jwk.json"))).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a good token for ann, a security approver, changed by `edit`.
fn claims(issuer: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = json!({
        "iss": issuer,
        "aud": "itsm",
        "sub": "u-1001",
        "email": "ann@example.com",
        "groups": ["security-team", "not-mapped"],
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
    });
    edit(&mut c);
    c
}

/// `claims` signed RS256 with key `name` (`first` or `rotated`), `kid` in
/// the header.
fn signed(name: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let key = EncodingKey::from_rsa_pem(&fixture(&format!("test-oidc-{name}.pem"))).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The status and error of `GET /v1/me` with `token`.
async fn me(base: &str, token: &str) -> (u16, Value) {
    let r = client_as(token)
        .get(format!("{base}/v1/me"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn write_config(home: &std::path::Path, issuer: &str) {
    std::fs::write(
        home.join("oidc.toml"),
        format!(
            r#"
issuer = "{issuer}"
audience = "itsm"
client_id = "itsm-ui"
algorithms = ["RS256"]
leeway = "30s"
[roles]
"security-team" = ["approver", "security"]
"it-operators" = ["operator"]
"#
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_s_access_token_is_taken_and_each_bad_one_is_refused_naming_why() {
    let provider = FakeProvider::start(vec![jwk("first")]).await;
    let home = tempfile::tempdir().unwrap();
    write_config(home.path(), &provider.issuer);
    let server = start_server(home.path(), &[]).await;
    let base = server.base.clone();
    let issuer = provider.issuer.clone();

    // A good token: the principal is named by its e-mail, its groups
    // mapped through [roles] (an unmapped group grants nothing).
    let good = signed("first", "test-1", &claims(&issuer, |_| {}));
    let (status, who) = me(&base, &good).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["name"], "ann@example.com");
    assert_eq!(who["email"], "ann@example.com");
    assert_eq!(who["roles"], json!(["approver", "security"]), "{who}");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
    // An itsm token still works beside it.
    let (status, _) = me(&base, &server.operator).await;
    assert_eq!(status, 200);

    // Each refusal, one by one, with why.
    let public_pem = fixture("test-oidc-first.pub.pem");
    let hs256_with_public_key = jsonwebtoken::encode(
        &Header {
            kid: Some("test-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(&issuer, |_| {}),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(&issuer, |_| {}).to_string().as_bytes())
    );
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let more = claims(&issuer, |c| c["groups"] = json!(["it-operators"]));
        format!(
            "{}.{}.{}",
            parts[0],
            b64(more.to_string().as_bytes()),
            parts[2]
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            signed(
                "first",
                "test-1",
                &claims(&issuer, |c| c["exp"] = json!(now() - 3600)),
            ),
            "the token expired at ",
        ),
        (
            "not yet valid",
            signed(
                "first",
                "test-1",
                &claims(&issuer, |c| c["nbf"] = json!(now() + 3600)),
            ),
            "the token is not valid yet: not before ",
        ),
        (
            "wrong issuer",
            signed(
                "first",
                "test-1",
                &claims(&issuer, |c| c["iss"] = json!("https://evil.example")),
            ),
            "the token's issuer \"https://evil.example\" is not this server's provider",
        ),
        (
            "wrong audience",
            signed(
                "first",
                "test-1",
                &claims(&issuer, |c| c["aud"] = json!("crm")),
            ),
            "the token is for audience \"crm\", not itsm",
        ),
        ("alg none", unsigned, "the token is unsigned (`alg` none)"),
        (
            "HS256 signed with the public key",
            hs256_with_public_key,
            "the token is signed with HS256, a shared secret",
        ),
        (
            "unknown kid",
            signed("rotated", "test-2", &claims(&issuer, |_| {})),
            "the token's key id \"test-2\" is not among the provider's keys",
        ),
        (
            "tampered payload",
            tampered,
            "the token's signature does not verify",
        ),
        (
            "no e-mail",
            signed(
                "first",
                "test-1",
                &claims(&issuer, |c| {
                    c.as_object_mut().unwrap().remove("email");
                }),
            ),
            "the token has no `email` claim",
        ),
    ];
    for (case, token, why) in &cases {
        let (status, body) = me(&base, token).await;
        assert_eq!(status, 401, "{case}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(why), "{case}: {error}");
    }
    // The expiry is named as a time.
    let (_, body) = me(&base, &cases[0].1).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Z (allowing 30 s of clock skew)"),
        "{body}"
    );
    // A token only seconds past its expiry is within the skew: taken.
    let skewed = signed(
        "first",
        "test-1",
        &claims(&issuer, |c| c["exp"] = json!(now() - 5)),
    );
    assert_eq!(me(&base, &skewed).await.0, 200);

    // The key set was fetched seconds ago: the unknown kid, and a flood of
    // made-up kids after it, fetch nothing more (bounded), and each is refused.
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
    let flood: Vec<_> = (0..20)
        .map(|i| {
            let token = signed("first", &format!("made-up-{i}"), &claims(&issuer, |_| {}));
            let base = base.clone();
            tokio::spawn(async move { me(&base, &token).await.0 })
        })
        .collect();
    for f in flood {
        assert_eq!(f.await.unwrap(), 401);
    }
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        1,
        "bounded refetch"
    );

    // Rotation: the provider now signs with a new key and publishes only
    // it. Past the refetch bound, a token with the new kid fetches the set
    // again and is taken; one with the retired key is then refused.
    *provider.keys.lock().unwrap() = vec![jwk("rotated")];
    tokio::time::sleep(Duration::from_secs(11)).await;
    let rotated = signed("rotated", "test-2", &claims(&issuer, |_| {}));
    let (status, body) = me(&base, &rotated).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
    let (status, body) = me(&base, &good).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"test-1\" is not among"),
        "{body}"
    );

    // The mapped roles gate as a token's would: an approver, not an
    // operator, so creating a ticket is refused.
    let r = client_as(&rotated)
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "x", "subject": "a@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("ann@example.com may not create tickets")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_oidc_toml_stops_the_start_naming_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("oidc.toml"),
        "issuer = \"http://login.example.com\"\naudience = \"itsm\"\nclient_id = \"ui\"\nalgorithms = [\"HS256\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("oidc.toml"), "{said}");
    assert!(said.contains("must be https://"), "{said}");
}
