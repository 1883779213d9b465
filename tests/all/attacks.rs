//! The sandbox under attack: each boundary a hostile component pushes
//! against, checked by what the local server actually received, and each
//! followed by a normal call on the same host.

use base64::Engine as _;
use itsm_host::runtime::{FailureCause, MAX_RESOURCES};
use serde_json::Value;

use crate::echo::EchoServer;
use crate::hostile::{HOSTILE, call, failure, host_still_works, hostile, outputs};
use crate::support::{load, runtime};

const TOKEN: &str = "tok-7d41e0a9c2b86f35";
const BASIC: &str = "svc-offboard:pw-9f8e7d6c5b4a";

/// Every form of `secret` that would let a plugin rebuild it.
fn forms_of(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut forms = vec![
        secret.to_string(),
        secret.to_uppercase(),
        hex(secret),
        secret.chars().rev().collect(),
        secret.chars().step_by(2).collect(),
        secret.chars().skip(1).step_by(2).collect(),
        secret.chars().map(|c| format!("{c} ")).collect(),
        base32(secret),
        b64.encode(secret),
        b64.encode(format!("Bearer {secret}")),
        hex(&format!("Bearer {secret}")),
    ];
    if let Some((_, password)) = secret.split_once(':') {
        forms.push(password.to_string());
        forms.push(hex(password));
    }
    forms
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn base32(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits: Vec<bool> = s
        .bytes()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
        .collect();
    bits.chunks(5)
        .map(|c| {
            let v = c
                .iter()
                .enumerate()
                .fold(0, |v, (i, b)| v | (usize::from(*b) << (4 - i)));
            ALPHABET[v] as char
        })
        .collect()
}

fn assert_no_form(haystack: &str, secret: &str, where_: &str) {
    let lower = haystack.to_lowercase();
    for form in forms_of(secret) {
        assert!(
            !lower.contains(&form.to_lowercase()),
            "{where_} holds {form:?}: {haystack}"
        );
    }
}

#[tokio::test]
async fn a_credential_echoed_by_the_server_never_reaches_the_plugin_in_any_form() {
    for (scheme, secret, sent) in [
        ("bearer", TOKEN, format!("Bearer {TOKEN}")),
        (
            "basic",
            BASIC,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(BASIC)
            ),
        ),
    ] {
        let api = EchoServer::start().await;
        let drop_box = EchoServer::start().await;
        let plugin = hostile(
            "",
            &format!(
                r#"allowed_hosts = ["{}", "{}"]
                [[capabilities.credentials]]
                secret = "cred"
                host = "{}"
                scheme = "{scheme}""#,
                api.origin(),
                drop_box.origin(),
                api.origin()
            ),
        );
        let config = [
            ("mode", "exfiltrate"),
            ("url", &format!("{}/anything", api.origin())),
            ("url2", &format!("{}/collect", drop_box.origin())),
        ];
        let ok = call(&plugin, &config, &[("cred", secret)]).await;
        let mut failing = config.to_vec();
        failing.push(("fail", "yes"));
        let failed = call(&plugin, &failing, &[("cred", secret)]).await;
        assert!(failure(&failed).message.contains("exfiltrate") || !failed.log.is_empty());

        // The credential was attached and sent: the boundary is the response.
        let got = api.seen();
        assert!(!got.is_empty());
        for s in &got {
            assert_eq!(s.method, "GET", "TRACE must never leave the host: {s:?}");
            let auth = s.headers.iter().find(|(k, _)| k == "authorization");
            assert_eq!(
                auth.map(|(_, v)| v.as_str()),
                Some(sent.as_str()),
                "{scheme}"
            );
        }
        // Nothing the plugin could read held it, so nothing it sent on did...
        assert!(
            !drop_box.seen().is_empty(),
            "the plugin reached its drop box"
        );
        assert_no_form(&drop_box.all_received(), secret, "the second origin");
        // ...and nothing it returned, logged or failed with does.
        for report in [&ok, &failed] {
            assert_no_form(
                &serde_json::to_string(report).unwrap(),
                secret,
                "the report",
            );
            let trace = report
                .requests
                .iter()
                .find(|r| r.method == "TRACE")
                .expect("the TRACE is journaled");
            assert!(
                trace
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .contains("TRACE is not allowed"),
                "{trace:?}"
            );
            assert!(
                report
                    .requests
                    .iter()
                    .any(|r| r.method == "GET" && r.credential)
            );
        }
        let echoed = outputs(&ok)["plain"].as_str().unwrap().to_string();
        assert!(echoed.contains(&"*".repeat(sent.len())), "{echoed}");
    }
    host_still_works().await;
}

#[tokio::test]
async fn requests_in_flight_are_capped_per_call_before_they_connect() {
    let server = EchoServer::start().await;
    let plugin = hostile(
        "requests_in_flight = 3",
        &format!(r#"allowed_hosts = ["{}"]"#, server.origin()),
    );
    let url = format!("{}/slow?ms=300", server.origin());
    let report = call(
        &plugin,
        &[("mode", "hold"), ("count", "50"), ("url", &url)],
        &[],
    )
    .await;
    let out = outputs(&report);
    assert_eq!(out["answered"], 3, "{out}");
    assert!(
        out["errors"].to_string().contains("ConnectionLimitReached"),
        "{out}"
    );
    // What the server saw: three requests, never more than three at once.
    assert_eq!(server.seen().len(), 3);
    assert!(server.max_open() <= 3, "{}", server.max_open());
    let refused = report
        .requests
        .iter()
        .filter(|r| {
            r.error.as_deref().unwrap_or("").contains(
                "at most 3 requests in flight at once in one call (limits.requests_in_flight)",
            )
        })
        .count();
    assert_eq!(refused, 47, "{:?}", report.requests);
    host_still_works().await;
}

#[tokio::test]
async fn requests_in_flight_are_capped_across_calls_of_one_plugin() {
    let server = EchoServer::start().await;
    let manifest = format!(
        r#"
        name = "hostile-fleet"
        version = "0.1.0"
        contract = "0.1.0"
        [capabilities]
        allowed_hosts = ["{}"]
        [limits]
        requests_in_flight = 4
        plugin_requests_in_flight = 5
        [config.mode]
        [config.url]
        [config.count]
        "#,
        server.origin()
    );
    let plugin = load(HOSTILE, &manifest);
    let url = format!("{}/slow?ms=600", server.origin());
    let config = [("mode", "hold"), ("count", "4"), ("url", url.as_str())];
    let (a, b, c) = tokio::join!(
        call(&plugin, &config, &[]),
        call(&plugin, &config, &[]),
        call(&plugin, &config, &[])
    );
    let answered: u64 = [&a, &b, &c]
        .iter()
        .map(|r| outputs(r)["answered"].as_u64().unwrap())
        .sum();
    assert!(server.max_open() <= 5, "{}", server.max_open());
    assert_eq!(server.seen().len() as u64, answered);
    assert!((1..=5).contains(&answered), "{answered}");
    let plugin_wide = [&a, &b, &c]
        .iter()
        .flat_map(|r| r.requests.iter())
        .filter(|r| {
            r.error.as_deref().unwrap_or("").contains(
                "across all calls of plugin hostile-fleet (limits.plugin_requests_in_flight)",
            )
        })
        .count();
    assert_eq!(plugin_wide as u64, 12 - answered);
    host_still_works().await;
}

#[tokio::test]
async fn header_sets_cannot_grow_host_memory_past_the_resource_limit() {
    let plugin = hostile("memory_mb = 16", "");
    let report = call(
        &plugin,
        &[("mode", "fields"), ("count", "10000"), ("size", "60000")],
        &[],
    )
    .await;
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::ResourceLimit, "{f:?}");
    assert!(
        f.message.contains(&format!(
            "host resource limit: the plugin held more than {MAX_RESOURCES} open resources"
        )),
        "{}",
        f.message
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_huge_request_header_is_stopped_with_the_limit_named_and_never_sent() {
    let server = EchoServer::start().await;
    let plugin = hostile("", &format!(r#"allowed_hosts = ["{}"]"#, server.origin()));
    let url = format!("{}/anything", server.origin());
    let report = call(
        &plugin,
        &[
            ("mode", "big-request-header"),
            ("size", "1048576"),
            ("url", &url),
        ],
        &[],
    )
    .await;
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::ResourceLimit, "{f:?}");
    assert!(
        f.message
            .contains("host resource limit: a header set may hold at most 65536 bytes"),
        "{}",
        f.message
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    host_still_works().await;
}

#[tokio::test]
async fn a_response_with_a_huge_header_section_names_the_limit() {
    let server = EchoServer::start().await;
    let plugin = hostile("", &format!(r#"allowed_hosts = ["{}"]"#, server.origin()));
    let url = format!("{}/big-header", server.origin());
    let report = call(&plugin, &[("mode", "http"), ("url", &url)], &[]).await;
    let f = failure(&report);
    assert!(
        f.message.contains(
            "host resource limit: a response's header section may hold at most 65536 bytes"
        ),
        "{}",
        f.message
    );
    assert_eq!(server.seen().len(), 1);
    host_still_works().await;
}

#[tokio::test]
async fn kv_writes_stop_at_the_plugin_quota_with_the_limit_named() {
    let manifest = |name: &str, limits: &str| {
        format!(
            r#"
            name = "{name}"
            version = "0.1.0"
            contract = "0.1.0"
            [capabilities]
            kv = true
            [limits]
            {limits}
            [config.mode]
            "#
        )
    };
    let bytes = load(
        HOSTILE,
        &manifest("hostile-kv-bytes", "kv_max_bytes = 1048576"),
    );
    let out = outputs(&call(&bytes, &[("mode", "kv-fill")], &[]).await);
    assert_eq!(out["stored"], 15, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("at most 1048576 bytes (limits.kv_max_bytes)"),
        "{out}"
    );
    let usage = bytes.kv_usage().unwrap();
    assert!(usage.bytes <= 1 << 20 && usage.keys == 15, "{usage:?}");
    // The quota holds across calls: a second call may overwrite its keys
    // in place, but gains not a byte.
    let again = outputs(&call(&bytes, &[("mode", "kv-fill")], &[]).await);
    assert_eq!(again["stored"], 15, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("limits.kv_max_bytes")
    );
    assert_eq!(bytes.kv_usage().unwrap(), usage);

    let keys = load(HOSTILE, &manifest("hostile-kv-keys", "kv_max_keys = 3"));
    let out = outputs(&call(&keys, &[("mode", "kv-fill")], &[]).await);
    assert_eq!(out["stored"], 3, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("at most 3 keys (limits.kv_max_keys)"),
        "{out}"
    );
    host_still_works().await;
}

#[tokio::test]
async fn the_request_log_of_a_call_stays_bounded() {
    let server = EchoServer::start().await;
    // A generous time limit: 300 requests with 60 KB URLs on a loaded machine.
    let plugin = hostile(
        "timeout_ms = 300000",
        &format!(r#"allowed_hosts = ["{}"]"#, server.origin()),
    );
    let url = format!("{}/x", server.origin());
    let report = call(
        &plugin,
        &[("mode", "many-requests"), ("count", "300"), ("url", &url)],
        &[],
    )
    .await;
    assert_eq!(outputs(&report)["answered"], 300);
    // The server got every one of them, 60 KB URLs and all...
    assert_eq!(server.seen().len(), 300);
    // ...and the report keeps 200, each URL cut, and counts the rest.
    assert_eq!(report.requests.len(), 201);
    assert!(report.requests[..200].iter().all(|r| r.url.len() < 2200));
    assert_eq!(
        report.requests[200].error.as_deref(),
        Some("100 more requests not recorded (the log keeps 200 per call)")
    );
    let size = serde_json::to_string(&report).unwrap().len();
    assert!(size < 600 * 1024, "report is {size} bytes");
    host_still_works().await;
}

#[tokio::test]
async fn a_request_in_flight_at_the_time_limit_is_journaled_as_cancelled() {
    let server = EchoServer::start().await;
    let plugin = hostile(
        "timeout_ms = 500",
        &format!(
            r#"allowed_hosts = ["{0}"]
            [[capabilities.credentials]]
            secret = "cred"
            host = "{0}"
            scheme = "bearer""#,
            server.origin()
        ),
    );
    let url = format!("{}/slow?ms=5000", server.origin());
    let report = call(
        &plugin,
        &[("mode", "http"), ("url", &url)],
        &[("cred", TOKEN)],
    )
    .await;
    assert_eq!(failure(&report).cause, FailureCause::Timeout);
    let r = &report.requests[0];
    assert_eq!(r.method, "GET");
    assert!(r.credential, "{r:?}");
    assert_eq!(r.status, None);
    assert_eq!(
        r.error.as_deref(),
        Some("cancelled by the call's time limit (limits.timeout_ms) before a response")
    );
    // The server did get it, credential attached.
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.ends_with(TOKEN))
    );
    host_still_works().await;
}

#[tokio::test]
async fn a_symbolic_link_in_a_plugin_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("outside.txt");
    std::fs::write(&secret, "not a plugin").unwrap();
    let folder = dir.path().join("evil");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        include_str!("../../plugins/testing/noop/plugin.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, folder.join("plugin.wasm")).unwrap();
    let err = runtime()
        .load_dir(&folder)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("is a symbolic link"), "{err}");
    assert!(err.contains("only regular files"), "{err}");
    // The manifest itself as a link is refused too.
    let folder2 = dir.path().join("evil2");
    std::fs::create_dir(&folder2).unwrap();
    std::os::unix::fs::symlink(folder.join("plugin.toml"), folder2.join("plugin.toml")).unwrap();
    let err = runtime()
        .load_dir(&folder2)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("is a symbolic link"), "{err}");
    // The same folder with a real file loads.
    std::fs::remove_file(folder.join("plugin.wasm")).unwrap();
    std::fs::write(
        folder.join("plugin.wasm"),
        crate::support::wasm("itsm-plugin-test-noop"),
    )
    .unwrap();
    runtime().load_dir(&folder).expect("a regular file loads");
    host_still_works().await;
}

#[tokio::test]
async fn a_name_resolving_to_a_special_address_is_refused_before_any_packet() {
    let server = EchoServer::start().await;
    let origin = format!("http://localhost:{}", server.addr.port());
    let plugin = hostile("", &format!(r#"allowed_hosts = ["{origin}"]"#));
    let report = call(
        &plugin,
        &[("mode", "http"), ("url", &format!("{origin}/anything"))],
        &[],
    )
    .await;
    let err = report.requests[0].error.clone().unwrap_or_default();
    assert!(err.contains("loopback"), "{err}");
    assert!(server.seen().is_empty());
    let _: Value = serde_json::to_value(&report).unwrap();
    host_still_works().await;
}
