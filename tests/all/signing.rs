//! Signed plugins through the real binary: `itsm keygen`, `itsm plugin sign`,
//! `itsm plugin install`; unsigned, tampered, untrusted and downgraded
//! plugins are refused with the reason, unless the server runs with `--dev`.

use std::path::Path;
use std::process::Output;

use crate::support::{create_token, plugin_dir, start_server, wasm};

fn itsm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run itsm")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The noop plugin as a folder, at `version`.
fn package(dir: &Path, version: &str, code: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = std::fs::read_to_string(plugin_dir("testing/noop/plugin.toml")).unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace("version = \"0.1.0\"", &format!("version = \"{version}\"")),
    )
    .unwrap();
    std::fs::write(dir.join("plugin.wasm"), code).unwrap();
    let _ = std::fs::remove_file(dir.join("plugin.sig"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plugins_signed_by_a_trusted_publisher_install_and_never_downgrade() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = |p: &str| work.path().join(p).to_str().unwrap().to_string();
    let mut server = start_server(home.path(), &[]).await;
    let admin = create_token(home.path(), "platform-admin", &["admin"]);
    let env = [
        ("ITSM_SERVER", server.base.as_str()),
        ("ITSM_TOKEN", admin.as_str()),
    ];
    let code = wasm("itsm-plugin-test-noop");

    let made = stdout(&itsm(&["keygen", "--out", &w("acme")], &[]));
    assert!(made.starts_with("key "), "{made}");
    let (_, mallory_pub) = itsm_host::signing::keygen();
    std::fs::create_dir_all(home.path().join("trusted-keys")).unwrap();
    std::fs::write(home.path().join("trusted-keys/mallory.pub"), mallory_pub).unwrap();

    // Unsigned.
    package(&work.path().join("pkg"), "0.2.0", &code);
    let why = refused(&itsm(&["plugin", "install", &w("pkg")], &env));
    assert!(
        why.contains("plugin noop 0.2.0 refused: it is not signed"),
        "{why}"
    );

    // Signed, but by a key the server does not trust yet.
    let signed = stdout(&itsm(
        &["plugin", "sign", &w("pkg"), "--key", &w("acme.key")],
        &[],
    ));
    assert!(signed.starts_with("signed noop 0.2.0 with key"), "{signed}");
    let why = refused(&itsm(&["plugin", "install", &w("pkg")], &env));
    assert!(why.contains("which this server does not trust"), "{why}");

    // Trusted (no restart needed); but the wasm changed after signing.
    std::fs::copy(w("acme.pub"), home.path().join("trusted-keys/acme.pub")).unwrap();
    let mut changed = code.clone();
    changed.extend_from_slice(b"\0");
    std::fs::write(work.path().join("pkg/plugin.wasm"), &changed).unwrap();
    let why = refused(&itsm(&["plugin", "install", &w("pkg")], &env));
    assert!(
        why.contains("does not match its manifest and wasm"),
        "{why}"
    );

    // Widening the grants after signing is caught the same way.
    std::fs::write(work.path().join("pkg/plugin.wasm"), &code).unwrap();
    let manifest = std::fs::read_to_string(work.path().join("pkg/plugin.toml")).unwrap();
    std::fs::write(
        work.path().join("pkg/plugin.toml"),
        format!("{manifest}\n# edited\n"),
    )
    .unwrap();
    let why = refused(&itsm(&["plugin", "install", &w("pkg")], &env));
    assert!(why.contains("does not match"), "{why}");
    std::fs::write(work.path().join("pkg/plugin.toml"), manifest).unwrap();

    // Only an admin installs.
    let operator = [
        ("ITSM_SERVER", server.base.as_str()),
        ("ITSM_TOKEN", server.operator.as_str()),
    ];
    let why = refused(&itsm(&["plugin", "install", &w("pkg")], &operator));
    assert!(why.contains("needs the `admin` role"), "{why}");

    let ok = stdout(&itsm(&["plugin", "install", &w("pkg")], &env));
    assert_eq!(ok.trim(), "installed noop 0.2.0 signed by acme");
    let again = stdout(&itsm(&["plugin", "install", &w("pkg")], &env));
    assert!(again.contains("already installed"), "{again}");
    let listed = stdout(&itsm(&["plugin", "list"], &env));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("noop") && l.contains("0.2.0")),
        "{listed}"
    );
    assert!(std::fs::read(home.path().join("plugins/noop/plugin.sig")).is_ok());

    // A lower version, properly signed, is a downgrade.
    package(&work.path().join("old"), "0.1.0", &code);
    stdout(&itsm(
        &["plugin", "sign", &w("old"), "--key", &w("acme.key")],
        &[],
    ));
    let why = refused(&itsm(&["plugin", "install", &w("old")], &env));
    assert!(
        why.contains("it is a downgrade: version 0.2.0 was installed before"),
        "{why}"
    );

    // The system trail names who installed what, and verifies.
    let shown = stdout(&itsm(&["plugin", "show", "noop"], &env));
    assert!(
        shown.contains("platform-admin") && shown.contains("acme"),
        "{shown}"
    );
    let verified = stdout(&itsm(&["audit", "verify", "--ticket", "system"], &env));
    assert!(
        verified.starts_with("system: verified, 1 events"),
        "{verified}"
    );
    // Wait for it to be gone: the store's lock goes with the process.
    server.child.kill().await.unwrap();

    // On restart, an unsigned plugin dropped into plugins/ is not loaded:
    // the server starts without it and says why...
    package(&home.path().join("plugins/noop"), "0.3.0", &code);
    let mut strict = start_server(home.path(), &[]).await;
    let ready = reqwest::get(format!("{}/readyz", strict.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ready.contains("plugins/noop skipped: plugin noop 0.3.0 refused: it is not signed"),
        "{ready}"
    );
    assert!(ready.contains("--dev"), "{ready}");
    let listed = stdout(&itsm(
        &["plugin", "list"],
        &[
            ("ITSM_SERVER", strict.base.as_str()),
            ("ITSM_TOKEN", admin.as_str()),
        ],
    ));
    assert!(!listed.contains("noop"), "{listed}");
    strict.child.kill().await.unwrap();
    // ...unless it runs in development mode, which says so.
    let dev = start_server(home.path(), &["--dev"]).await;
    let listed = stdout(&itsm(
        &["plugin", "list"],
        &[
            ("ITSM_SERVER", dev.base.as_str()),
            ("ITSM_TOKEN", admin.as_str()),
        ],
    ));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("noop") && l.contains("0.3.0")),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_installed_under_its_own_wasm_name_starts_again_and_a_bad_folder_is_skipped() {
    use base64::Engine as _;
    let home = tempfile::tempdir().unwrap();
    let (secret, public) = itsm_host::signing::keygen();
    std::fs::create_dir_all(home.path().join("trusted-keys")).unwrap();
    std::fs::write(home.path().join("trusted-keys/acme.pub"), public).unwrap();
    let mut server = start_server(home.path(), &[]).await;
    let admin = create_token(home.path(), "platform-admin", &["admin"]);

    // A manifest naming its component `noop-component.wasm`, installed over the API.
    let manifest = format!(
        "wasm = \"noop-component.wasm\"\n{}",
        std::fs::read_to_string(plugin_dir("testing/noop/plugin.toml")).unwrap()
    );
    let code = wasm("itsm-plugin-test-noop");
    let signature = itsm_host::signing::sign(
        &itsm_host::signing::read_secret(&secret).unwrap(),
        manifest.as_bytes(),
        &code,
    );
    let resp = crate::support::client_as(&admin)
        .post(format!("{}/v1/plugins", server.base))
        .json(&serde_json::json!({
            "manifest": manifest,
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&code),
            "signature": signature,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    assert_eq!(
        std::fs::read(home.path().join("plugins/noop/noop-component.wasm")).unwrap(),
        code,
        "stored where the manifest says"
    );
    server.child.kill().await.unwrap();

    // Beside it, a folder no one can use.
    std::fs::create_dir_all(home.path().join("plugins/broken")).unwrap();
    std::fs::write(
        home.path().join("plugins/broken/plugin.toml"),
        "name = \"broken\"\nversion = \"0.1.0\"\ncontract = \"0.1.0\"\ndescription = \"no wasm\"\n",
    )
    .unwrap();

    let server = start_server(home.path(), &[]).await;
    let ready = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready = ready.text().await.unwrap();
    assert!(ready.starts_with("ready"), "{ready}");
    assert!(
        ready.contains("plugins/broken skipped:") && ready.contains("plugin.wasm"),
        "the reason names the missing file: {ready}"
    );
    assert!(!ready.contains("plugins/noop"), "{ready}");
    let listed: serde_json::Value = crate::support::client_as(&admin)
        .get(format!("{}/v1/plugins", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"noop"), "{names:?}");
    assert!(!names.contains(&"broken"), "{names:?}");
}

/// A workflow naming a plugin whose folder is unusable at start-up still
/// loads: the server starts, the system trail records the skipped folder,
/// a ticket's step waits saying why (no attempt, nothing called), and it
/// runs once the plugin is installed over the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_plugin_did_not_load_waits_and_runs_once_it_is_installed() {
    let home = tempfile::tempdir().unwrap();
    crate::support::install_signed(home.path(), "testing/noop", "itsm-plugin-test-noop");
    std::fs::remove_file(home.path().join("plugins/noop/plugin.wasm")).unwrap();
    std::fs::create_dir_all(home.path().join("workflows")).unwrap();
    std::fs::write(
        home.path().join("workflows/solo.toml"),
        "name = \"solo\"\nversion = \"1\"\n[[steps]]\nname = \"only\"\nplugin = \"noop\"\n",
    )
    .unwrap();
    let server = start_server(home.path(), &[]).await;
    let operator = crate::support::client_as(&create_token(home.path(), "op", &["operator"]));
    let admin = crate::support::client_as(&create_token(home.path(), "admin-1", &["admin"]));

    let system: serde_json::Value = crate::support::get_json(
        &server.auditor_client(),
        &format!("{}/v1/audit?ticket=system", server.base),
    )
    .await;
    let skipped = system["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "plugin_skipped")
        .unwrap_or_else(|| panic!("no plugin_skipped in the system trail: {system:#}"));
    assert_eq!(skipped["data"]["plugin"], "noop", "{skipped}");
    assert!(
        skipped["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("plugin.wasm"),
        "{skipped}"
    );

    let created: serde_json::Value = operator
        .post(format!("{}/v1/tickets", server.base))
        .json(&serde_json::json!({ "workflow": "solo", "subject": "lee@example.com" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/v1/tickets/{}",
        server.base,
        created["id"].as_str().unwrap()
    );
    let detail = crate::support::get_json(&operator, &url).await;
    assert_eq!(detail["ticket"]["state"], "running", "{detail:#}");
    let step = &detail["ticket"]["steps"]["only"];
    assert_eq!(step["status"], "waiting_plugin", "{detail:#}");
    assert_eq!(
        step["attempts"].as_array().map_or(0, Vec::len),
        0,
        "nothing was called"
    );
    let waiting = detail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "step_waiting")
        .unwrap_or_else(|| panic!("no step_waiting event: {detail:#}"));
    let reason = waiting["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("plugin noop is not loaded") && reason.contains("plugin.wasm"),
        "{reason}"
    );

    // Installed over the API (signed by the publisher the server trusts),
    // the waiting step runs and the ticket finishes.
    crate::support::install_noop(&admin, &server.base, home.path()).await;
    let done = crate::support::wait_for_state(&operator, &url, "succeeded").await;
    let kinds: Vec<&str> = done["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let waited = kinds.iter().position(|k| *k == "step_waiting").unwrap();
    let started = kinds.iter().position(|k| *k == "step_started").unwrap();
    assert!(waited < started, "waited, then started: {kinds:?}");
    assert_eq!(done["trail_verified"], true, "{done:#}");
}

/// `Prefer: respond-async`: the server checks the upload at once (an
/// unsigned one is refused there and then), answers 202 with a job, and
/// compiles in the background; the job says when it is installed, or why it
/// failed (a signed upload that is not a component), and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_can_compile_off_the_request_path_and_be_followed_to_its_end() {
    use base64::Engine as _;
    let home = tempfile::tempdir().unwrap();
    let (secret, public) = itsm_host::signing::keygen();
    std::fs::create_dir_all(home.path().join("trusted-keys")).unwrap();
    std::fs::write(home.path().join("trusted-keys/acme.pub"), public).unwrap();
    let server = start_server(home.path(), &[]).await;
    let admin = crate::support::client_as(&create_token(home.path(), "platform-admin", &["admin"]));
    let manifest = std::fs::read_to_string(plugin_dir("testing/noop/plugin.toml")).unwrap();
    let upload = |wasm: &[u8], signed: bool| {
        let signature = signed.then(|| {
            itsm_host::signing::sign(
                &itsm_host::signing::read_secret(&secret).unwrap(),
                manifest.as_bytes(),
                wasm,
            )
        });
        admin
            .post(format!("{}/v1/plugins", server.base))
            .header("prefer", "respond-async")
            .json(&serde_json::json!({
                "manifest": manifest,
                "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
                "signature": signature,
            }))
    };
    let follow = |location: String| {
        let admin = admin.clone();
        let base = server.base.clone();
        async move {
            loop {
                let job: serde_json::Value =
                    crate::support::get_json(&admin, &format!("{base}{location}")).await;
                if job["state"] != "compiling" {
                    return job;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };

    // Unsigned: refused at once, no job.
    let refused = upload(&wasm("itsm-plugin-test-noop"), false)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422, "{}", refused.text().await.unwrap());

    // Signed, not a component: accepted for compiling, then failed.
    let resp = upload(b"\0asm but not really", true).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let job = follow(location).await;
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(job["error"].as_str().unwrap().contains("noop"), "{job:#}");
    let listed: serde_json::Value =
        crate::support::get_json(&admin, &format!("{}/v1/plugins", server.base)).await;
    assert!(
        !listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "noop"),
        "nothing was installed: {listed:#}"
    );

    // Signed and sound: 202 at once, then installed.
    let resp = upload(&wasm("itsm-plugin-test-noop"), true)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let accepted: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(accepted["plugin"], "noop");
    assert_eq!(
        location,
        format!("/v1/plugins/installs/{}", accepted["id"].as_str().unwrap())
    );
    let job = follow(location).await;
    assert_eq!(job["state"], "installed", "{job:#}");
    assert_eq!(job["installed"]["name"], "noop");
    assert_eq!(
        job["installed"]["signed_by"]
            .as_str()
            .map(|s| !s.is_empty()),
        Some(true),
        "{job:#}"
    );
    let listed: serde_json::Value =
        crate::support::get_json(&admin, &format!("{}/v1/plugins", server.base)).await;
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "noop"),
        "{listed:#}"
    );
    let gone = admin
        .get(format!("{}/v1/plugins/installs/I-nope", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}
