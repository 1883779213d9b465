//! Hostile plugins: each misbehaviour is stopped or refused, within its
//! limit, with a clear error; no secret leaks; and the same host process then
//! runs a normal plugin correctly.

use std::time::{Duration, Instant};

use itsm_host::runtime::{CallReport, FailureCause, FailureKind, Op, Outcome, Plugin};
use serde_json::Value;

use crate::support::{ScimServer, TOKEN, grants, input, load};

pub(crate) const HOSTILE: &str = "itsm-plugin-test-hostile";

/// The hostile plugin with these extra manifest lines.
pub(crate) fn hostile(limits: &str, capabilities: &str) -> Plugin {
    let manifest = format!(
        r#"
        name = "hostile"
        version = "0.1.0"
        contract = "0.1.0"
        [capabilities]
        {capabilities}
        [limits]
        {limits}
        [config.mode]
        required = true
        [config.url]
        [config.allowed]
        [config.url2]
        [config.fail]
        [config.count]
        [config.size]
        "#
    );
    load(HOSTILE, &manifest)
}

pub(crate) async fn call(
    plugin: &Plugin,
    config: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> CallReport {
    plugin
        .call(
            Op::Run,
            &input("mallory@example.com"),
            &grants(config, secrets),
        )
        .await
        .unwrap()
}

/// The host is intact: a well-behaved plugin still runs.
pub(crate) async fn host_still_works() {
    let noop = load(
        "itsm-plugin-test-noop",
        include_str!("../../plugins/testing/noop/plugin.toml"),
    );
    let report = noop
        .call(Op::Run, &input("alice@example.com"), &grants(&[], &[]))
        .await
        .unwrap();
    let Outcome::Succeeded { outputs, .. } = report.outcome else {
        panic!("noop failed: {report:?}")
    };
    assert_eq!(outputs.unwrap()["attempt"], 1);
}

pub(crate) fn failure(report: &CallReport) -> &itsm_host::runtime::StepFailure {
    report
        .failure()
        .unwrap_or_else(|| panic!("expected a failure: {report:#?}"))
}

pub(crate) fn outputs(report: &CallReport) -> Value {
    match &report.outcome {
        Outcome::Succeeded { outputs, .. } => outputs.clone().unwrap(),
        Outcome::Failed { error } => panic!("expected success, got {error}; log {:?}", report.log),
    }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_its_time_limit() {
    let plugin = hostile("timeout_ms = 300", "");
    let started = Instant::now();
    let report = call(&plugin, &[("mode", "loop")], &[]).await;
    let elapsed = started.elapsed();
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::Timeout);
    assert_eq!(f.kind, FailureKind::Retryable);
    assert!(f.message.contains("300 ms"), "{}", f.message);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped late: {elapsed:?}"
    );
    host_still_works().await;
}

#[tokio::test]
async fn memory_growth_toward_4_gib_is_stopped_at_the_memory_limit() {
    let plugin = hostile("memory_mb = 48", "");
    let report = call(&plugin, &[("mode", "memory")], &[]).await;
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::MemoryLimit, "{f:?}");
    assert_eq!(f.kind, FailureKind::Fatal);
    assert!(f.message.contains("48 MiB"), "{}", f.message);
    host_still_works().await;
}

#[tokio::test]
async fn deep_recursion_is_stopped_as_a_stack_overflow() {
    let report = call(&hostile("", ""), &[("mode", "recursion")], &[]).await;
    let f = failure(&report);
    // The wasm call stack or (for Rust) the shadow stack in linear memory
    // overflows first; either way the call is stopped and says why.
    match f.cause {
        FailureCause::StackOverflow => assert!(f.message.contains("recursion"), "{}", f.message),
        FailureCause::Trap => assert!(f.message.contains("runaway recursion"), "{}", f.message),
        other => panic!("unexpected cause {other:?}: {}", f.message),
    }
    assert_eq!(f.kind, FailureKind::Fatal);
    host_still_works().await;
}

#[tokio::test]
async fn a_panic_is_a_fatal_trap_carrying_the_panic_message() {
    let report = call(&hostile("", ""), &[("mode", "panic")], &[]).await;
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::Trap);
    assert_eq!(f.kind, FailureKind::Fatal);
    assert!(f.message.contains("panicked on purpose"), "{}", f.message);
    host_still_works().await;
}

#[tokio::test]
async fn a_raw_trap_is_reported() {
    let report = call(&hostile("", ""), &[("mode", "trap")], &[]).await;
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::Trap);
    assert!(f.message.contains("unreachable"), "{}", f.message);
    host_still_works().await;
}

#[tokio::test]
async fn a_100_mib_output_is_refused() {
    // Enough memory to build it, so the output limit is what stops it.
    let report = call(
        &hostile("memory_mb = 512\ntimeout_ms = 20000", ""),
        &[("mode", "big-output")],
        &[],
    )
    .await;
    let f = failure(&report);
    assert_eq!(f.cause, FailureCause::OutputLimit, "{f:?}");
    assert!(f.message.contains("limit is 1048576"), "{}", f.message);
    host_still_works().await;
}

#[tokio::test]
async fn outputs_that_are_not_an_object_are_refused() {
    let report = call(&hostile("", ""), &[("mode", "bad-json")], &[]).await;
    assert_eq!(failure(&report).cause, FailureCause::InvalidOutput);
}

/// Run the `http` mode against `url` with `allowed` granted; return the report.
async fn fetch(url: &str, allowed: &str) -> CallReport {
    let plugin = hostile(
        "timeout_ms = 10000",
        r#"allowed_hosts = ["${config.allowed}"]"#,
    );
    call(
        &plugin,
        &[("mode", "http"), ("url", url), ("allowed", allowed)],
        &[],
    )
    .await
}

fn assert_refused(report: &CallReport, why: &str) {
    let f = failure(report);
    assert_eq!(f.kind, FailureKind::Fatal, "{f:?}");
    assert!(f.message.contains("refused"), "{}", f.message);
    let last = report.requests.last().expect("the attempt is logged");
    assert_eq!(last.status, None);
    let error = last.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("refused: ") && error.contains(why),
        "{error}"
    );
}

#[tokio::test]
async fn a_host_not_in_the_manifest_is_refused() {
    let server = ScimServer::start(None).await;
    let report = fetch("http://example.com/", &server.origin()).await;
    assert_refused(
        &report,
        "http://example.com:80 is not in the manifest's allowed_hosts",
    );
    host_still_works().await;
}

#[tokio::test]
async fn the_cloud_metadata_address_is_refused() {
    let server = ScimServer::start(None).await;
    let report = fetch("http://169.254.169.254/latest/meta-data/", &server.origin()).await;
    assert_refused(
        &report,
        "169.254.169.254:80 is not in the manifest's allowed_hosts",
    );
}

#[tokio::test]
async fn loopback_and_private_addresses_not_granted_are_refused() {
    let server = ScimServer::start(None).await;
    // Same address, other port: the grant is scheme + host + port.
    let report = fetch("http://127.0.0.1:1/", &server.origin()).await;
    assert_refused(&report, "http://127.0.0.1:1 is not in");
    let report = fetch("http://10.20.30.40/", &server.origin()).await;
    assert_refused(&report, "http://10.20.30.40:80 is not in");
    let report = fetch("http://192.168.0.1:8080/", &server.origin()).await;
    assert_refused(&report, "192.168.0.1:8080 is not in");
    host_still_works().await;
}

#[tokio::test]
async fn a_granted_name_that_resolves_to_loopback_is_refused_after_dns() {
    let server = ScimServer::start(None).await;
    let by_name = format!("http://localhost:{}", server.addr.port());
    let report = fetch(&format!("{by_name}/_sandbox/users"), &by_name).await;
    assert_refused(&report, "localhost resolved to 127.0.0.1 (loopback)");
    assert!(
        server.scim.requests().is_empty(),
        "nothing may reach the server"
    );
    // The same server named by its address in the grant is reachable.
    let report = fetch(
        &format!("{}/_sandbox/users", server.origin()),
        &server.origin(),
    )
    .await;
    assert_eq!(outputs(&report)["status"], 200);
}

#[tokio::test]
async fn a_redirect_to_a_disallowed_host_is_checked_again_and_refused() {
    let server = ScimServer::start(None).await;
    let url = format!(
        "{}/_sandbox/redirect?to=http://169.254.169.254/latest/meta-data/",
        server.origin()
    );
    let report = fetch(&url, &server.origin()).await;
    assert_eq!(report.requests.len(), 2, "{:#?}", report.requests);
    assert_eq!(report.requests[0].status, Some(302));
    assert_refused(&report, "169.254.169.254:80 is not in");
    host_still_works().await;
}

#[tokio::test]
async fn environment_variables_are_not_visible() {
    // SAFETY-free check that the host itself has the variable to leak.
    assert!(std::env::var_os("HOME").is_some() || std::env::var_os("PATH").is_some());
    let report = call(&hostile("", ""), &[("mode", "env")], &[]).await;
    let out = outputs(&report);
    assert_eq!(out["vars"], 0);
    assert_eq!(out["home"], "Err(\"environment variable not found\")");
}

#[tokio::test]
async fn files_are_not_visible() {
    assert!(std::path::Path::new("/etc/passwd").exists());
    let report = call(&hostile("", ""), &[("mode", "file")], &[]).await;
    let out = outputs(&report);
    assert!(out["read"].as_str().unwrap().starts_with("Err("), "{out}");
    assert!(out["list"].as_str().unwrap().starts_with("Err("), "{out}");
    host_still_works().await;
}

#[tokio::test]
async fn raw_sockets_are_refused() {
    let server = ScimServer::start(None).await;
    let report = call(
        &hostile("", ""),
        &[("mode", "socket"), ("url", &server.addr.to_string())],
        &[],
    )
    .await;
    let out = outputs(&report);
    assert!(
        out["connect"].as_str().unwrap().starts_with("Err("),
        "{out}"
    );
    assert!(server.scim.requests().is_empty());
}

#[tokio::test]
async fn a_secret_not_granted_is_denied() {
    let report = call(
        &hostile("", ""),
        &[("mode", "secret"), ("url", "scim_token")],
        &[("scim_token", TOKEN)],
    )
    .await;
    let out = outputs(&report);
    assert!(
        out["denied"].as_str().unwrap().contains("not granted"),
        "{out}"
    );
}

#[tokio::test]
async fn a_granted_secret_is_masked_wherever_the_plugin_puts_it() {
    let plugin = hostile("", r#"secrets = ["api_key"]"#);
    let secret = "sk-live-0a1b2c3d4e5f";
    let report = call(
        &plugin,
        &[("mode", "secret"), ("url", "api_key")],
        &[("api_key", secret)],
    )
    .await;
    let f = failure(&report);
    assert_eq!(f.message, "leaking [REDACTED]");
    assert!(
        report
            .log
            .iter()
            .any(|l| l.message == "the secret is [REDACTED]"),
        "{:?}",
        report.log
    );
    assert!(
        report
            .log
            .iter()
            .any(|l| l.level == "stdout" && l.message == "stdout: [REDACTED]"),
        "{:?}",
        report.log
    );
    let report2 = call(
        &plugin,
        &[("mode", "echo-secret-output"), ("url", "api_key")],
        &[("api_key", secret)],
    )
    .await;
    assert_eq!(outputs(&report2)["copy"], "[REDACTED]");
    for r in [&report, &report2] {
        assert!(!serde_json::to_string(r).unwrap().contains(secret));
    }
}

#[tokio::test]
async fn a_credential_reflected_by_the_server_is_masked() {
    // The sandbox's request log echoes the Authorization header back.
    let server = ScimServer::start(None).await;
    let plugin = hostile(
        "",
        r#"allowed_hosts = ["${config.allowed}"]
        [[capabilities.credentials]]
        secret = "token"
        host = "${config.allowed}"
        scheme = "bearer""#,
    );
    let g = [
        ("mode", "http"),
        ("url", &format!("{}/_sandbox/requests", server.origin())),
        ("allowed", &server.origin()),
    ];
    // Warm the log with one authorised request so the echo contains the token.
    call(&plugin, &g, &[("token", TOKEN)]).await;
    let report = call(&plugin, &g, &[("token", TOKEN)]).await;
    let body = outputs(&report)["body"].as_str().unwrap().to_string();
    // Scrubbed by the host before the plugin read it, length kept.
    let masked = "*".repeat(format!("Bearer {TOKEN}").len());
    assert!(body.contains(&masked), "{body}");
    assert!(!body.contains(TOKEN), "{body}");
    assert!(!serde_json::to_string(&report).unwrap().contains(TOKEN));
    assert_eq!(
        server.scim.requests()[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn a_log_flood_is_capped() {
    let report = call(
        &hostile("timeout_ms = 20000", ""),
        &[("mode", "log-flood")],
        &[],
    )
    .await;
    assert!(report.failure().is_none());
    assert_eq!(report.log.len(), 1000);
    assert!(
        report
            .log
            .last()
            .unwrap()
            .message
            .contains("more lines dropped")
    );
}

#[tokio::test]
async fn key_value_state_needs_a_grant() {
    let report = call(&hostile("", ""), &[("mode", "kv")], &[]).await;
    let f = failure(&report);
    assert!(f.message.contains("kv = true"), "{}", f.message);
    let granted = call(&hostile("", "kv = true"), &[("mode", "kv")], &[]).await;
    assert!(granted.failure().is_none(), "{granted:?}");
}

#[tokio::test]
async fn no_state_survives_from_one_call_to_the_next() {
    let plugin = hostile("", "");
    for ticket in ["T-1", "T-2", "T-3"] {
        let mut step = input("mallory@example.com");
        step.ticket_id = ticket.into();
        let report = plugin
            .call(Op::Run, &step, &grants(&[("mode", "static-counter")], &[]))
            .await
            .unwrap();
        assert_eq!(
            outputs(&report),
            serde_json::json!({ "calls": 1, "ticket": ticket })
        );
    }
}

#[tokio::test]
async fn many_hostile_calls_at_once_leave_the_host_working() {
    let plugin = hostile("timeout_ms = 300\nmemory_mb = 32\nmax_instances = 4", "");
    let mut set = tokio::task::JoinSet::new();
    for mode in [
        "loop",
        "memory",
        "recursion",
        "panic",
        "trap",
        "loop",
        "memory",
        "panic",
    ] {
        let p = plugin.clone();
        set.spawn(async move { call(&p, &[("mode", mode)], &[]).await });
    }
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().failure().is_some());
        failed += 1;
    }
    assert_eq!(failed, 8);
    host_still_works().await;
}

#[tokio::test]
async fn a_full_instance_pool_is_a_retryable_capacity_error() {
    use itsm_host::manifest::Manifest;
    use itsm_host::runtime::{Runtime, RuntimeConfig};
    let small = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let manifest = Manifest::parse(
        "name = \"hostile\"\nversion = \"0.1.0\"\ncontract = \"0.1.0\"\n[limits]\ntimeout_ms = 500\n[config.mode]\n",
    )
    .unwrap();
    let plugin = small
        .load(manifest, &crate::support::wasm(HOSTILE))
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let p = plugin.clone();
        set.spawn(async move { call(&p, &[("mode", "loop")], &[]).await });
    }
    let mut causes = Vec::new();
    while let Some(r) = set.join_next().await {
        let f = r.unwrap().failure().cloned().unwrap();
        assert_eq!(f.kind, FailureKind::Retryable);
        causes.push(f.cause);
    }
    causes.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        causes,
        [
            FailureCause::Capacity,
            FailureCause::Capacity,
            FailureCause::Timeout,
            FailureCause::Timeout
        ]
    );
}
