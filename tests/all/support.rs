//! Shared fixtures: the runtime, plugin paths, a SCIM sandbox on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use itsm_host::manifest::Manifest;
use itsm_host::runtime::{Grants, Plugin, Runtime, RuntimeConfig, StepInput};
use itsm_sandbox::scim::{BASE_PATH, Scim};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A plugin's source folder, e.g. `plugins/scim-deprovision` or `plugins/testing/noop`.
pub fn plugin_dir(rel: &str) -> PathBuf {
    root().join("plugins").join(rel)
}

/// The built component of a plugin crate (built by host/build.rs).
pub fn wasm(crate_name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("ITSM_PLUGIN_WASM_DIR"))
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One runtime for the whole test binary, with a compiled-code cache so each
/// plugin compiles once however many manifests a test tries on it.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            max_instances: 32,
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    })
}

/// Load a plugin crate's component under a manifest given as TOML text.
pub fn load(crate_name: &str, manifest: &str) -> Plugin {
    let manifest = Manifest::parse(manifest).expect("test manifest");
    runtime()
        .load(manifest, &wasm(crate_name))
        .expect("load plugin")
}

/// The scim-deprovision plugin under its own manifest.
pub fn scim_plugin() -> Plugin {
    let m = std::fs::read_to_string(plugin_dir("scim-deprovision/plugin.toml")).unwrap();
    load("itsm-plugin-scim-deprovision", &m)
}

/// A step input for a subject.
pub fn input(subject: &str) -> StepInput {
    StepInput {
        ticket_id: "T-1".into(),
        step: "disable".into(),
        subject: subject.into(),
        attempt: 1,
        ..StepInput::default()
    }
}

/// `input` as the scheduler passes it to `verify` and `compensate` after a
/// `run` of the same step reported `run`: the step's own run outputs in
/// `prior_outputs` under the step's name.
pub fn after_run(input: &StepInput, run: &itsm_host::runtime::CallReport) -> StepInput {
    let itsm_host::runtime::Outcome::Succeeded { outputs, .. } = &run.outcome else {
        panic!("run failed: {run:?}");
    };
    let mut prior = input.prior_outputs.as_object().cloned().unwrap_or_default();
    prior.insert(
        input.step.clone(),
        outputs.clone().unwrap_or(serde_json::json!({})),
    );
    StepInput {
        prior_outputs: serde_json::Value::Object(prior),
        ..input.clone()
    }
}

/// Grants from literal pairs.
pub fn grants(config: &[(&str, &str)], secrets: &[(&str, &str)]) -> Grants {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Grants {
        config: map(config),
        secrets: map(secrets),
    }
}

/// A SCIM sandbox serving on a loopback port for the rest of the test.
pub struct ScimServer {
    pub scim: Scim,
    pub addr: std::net::SocketAddr,
}

impl ScimServer {
    pub async fn start(token: Option<&str>) -> Self {
        let scim = Scim::new(token);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = scim.clone();
        tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
        Self { scim, addr }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/scim/v2`.
    pub fn base_url(&self) -> String {
        format!("{}{BASE_PATH}", self.origin())
    }
}

pub const TOKEN: &str = "tok-3f9a1c77e2b54d08";

/// `itsm serve` as a child process on a free loopback port.
pub struct Server {
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A token of `operator-1`, an operator.
    pub operator: String,
    /// A token of `auditor-1`, an auditor: trails in bulk (export,
    /// verify) are the auditor's and the admin's, not the operator's.
    pub auditor: String,
}

impl Server {
    /// A client that sends the operator's token.
    pub fn client(&self) -> reqwest::Client {
        client_as(&self.operator)
    }

    /// A client that sends the auditor's token.
    pub fn auditor_client(&self) -> reqwest::Client {
        client_as(&self.auditor)
    }
}

/// The token of `name` (with `roles`) saved in `home`, made the first time
/// a server starts there: restarts on the same home keep it, as a real
/// server's would.
fn saved_token(home: &std::path::Path, name: &str, roles: &[&str]) -> String {
    let saved = home.join(format!("{name}.token"));
    match std::fs::read_to_string(&saved) {
        Ok(t) => t,
        Err(_) => {
            let t = create_token(home, name, roles);
            std::fs::write(&saved, &t).unwrap();
            t
        }
    }
}

/// A client with the auditor token a server started on `home` made.
pub fn auditor_in(home: &std::path::Path) -> reqwest::Client {
    client_as(&saved_token(home, "auditor-1", &["auditor"]))
}

/// `itsm token create --home HOME --name NAME --role R...`: the printed token.
pub fn create_token(home: &std::path::Path, name: &str, roles: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"));
    cmd.args(["token", "create", "--name", name, "--home"])
        .arg(home);
    for r in roles {
        cmd.args(["--role", r]);
    }
    let out = cmd.output().expect("run itsm token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `itsm token create` for a person with an e-mail and no role.
pub fn person_token(home: &std::path::Path, name: &str, email: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args([
            "token", "create", "--name", name, "--email", email, "--home",
        ])
        .arg(home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `POST /v1/tickets` with `body` as `client`; the new ticket's id.
pub async fn create_ticket(
    client: &reqwest::Client,
    base: &str,
    body: serde_json::Value,
) -> String {
    let resp = client
        .post(format!("{base}/v1/tickets"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let created: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

/// A client that sends `token` as its bearer token.
pub fn client_as(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Start `itsm serve --home HOME --listen 127.0.0.1:0 EXTRA...` and wait for its address.
pub async fn start_server(home: &std::path::Path, extra: &[&str]) -> Server {
    start_server_with_env(home, extra, &[]).await
}

/// [`start_server`] with extra environment variables (secrets).
pub async fn start_server_with_env(
    home: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    start_server_via(&[], home, extra, env).await
}

/// [`start_server_with_env`] run under a wrapper command (`strace ... --`):
/// `wrapper[0] wrapper[1..] itsm serve ...`.
pub async fn start_server_via(
    wrapper: &[&str],
    home: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    spawn_server(wrapper, home, extra, env, std::process::Stdio::inherit()).await
}

/// [`start_server`] with its standard error piped (`child.stderr`), for a
/// test that reads what the server says as it exits.
pub async fn start_server_piped(home: &std::path::Path, extra: &[&str]) -> Server {
    spawn_server(&[], home, extra, &[], std::process::Stdio::piped()).await
}

async fn spawn_server(
    wrapper: &[&str],
    home: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> Server {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let operator = saved_token(home, "operator-1", &["operator"]);
    let auditor = saved_token(home, "auditor-1", &["auditor"]);
    let itsm = env!("CARGO_BIN_EXE_itsm");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(itsm);
            c
        }
        None => tokio::process::Command::new(itsm),
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(home)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start itsm serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // A fresh home compiles the bundled plugins first (about 26 s on a
    // loaded 2-core machine): the bound is generous so load is not failure.
    let first = tokio::time::timeout(std::time::Duration::from_secs(180), lines.next_line())
        .await
        .expect("serve starts within 180 s")
        .unwrap()
        .expect("serve prints its address");
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        base,
        operator,
        auditor,
    }
}

/// GET a URL and parse its JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The noop plugin and a two-step workflow whose second step needs the security group.
pub fn set_up_wipe_home(home: &std::path::Path) {
    install_signed(home, "testing/noop", "itsm-plugin-test-noop");
    std::fs::create_dir_all(home.join("workflows")).unwrap();
    std::fs::write(
        home.join("workflows/wipe.toml"),
        "name = \"wipe\"\nversion = \"1\"\n[[steps]]\nname = \"disable\"\nplugin = \"noop\"\n[[steps]]\nname = \"wipe-laptop\"\nplugin = \"noop\"\ndepends_on = [\"disable\"]\napproval = { role = \"security\" }\n",
    )
    .unwrap();
}

/// Put a plugin into `home/plugins/<name>/`, signed by a publisher key the
/// server trusts (`trusted-keys/tests.pub`), as an admin would install it.
/// The body of a `POST /v1/plugins` for `manifest` and the wasm of
/// `crate_name`, signed with the test publisher's key in `home`
/// ([`install_signed`] made it).
pub fn signed_upload(
    home: &std::path::Path,
    manifest: &str,
    crate_name: &str,
) -> serde_json::Value {
    use base64::Engine as _;
    let code = wasm(crate_name);
    let secret = std::fs::read_to_string(home.join("tests-publisher.key")).unwrap();
    let signature = itsm_host::signing::sign(
        &itsm_host::signing::read_secret(&secret).unwrap(),
        manifest.as_bytes(),
        &code,
    );
    serde_json::json!({
        "manifest": manifest,
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&code),
        "signature": signature,
    })
}

pub fn install_signed(home: &std::path::Path, plugin_rel: &str, crate_name: &str) {
    use itsm_host::signing;
    let key_file = home.join("tests-publisher.key");
    let secret = match std::fs::read_to_string(&key_file) {
        Ok(s) => s,
        Err(_) => {
            let (secret, public) = signing::keygen();
            std::fs::create_dir_all(home.join("trusted-keys")).unwrap();
            std::fs::write(home.join("trusted-keys/tests.pub"), public).unwrap();
            std::fs::write(&key_file, &secret).unwrap();
            secret
        }
    };
    let manifest = std::fs::read_to_string(plugin_dir(plugin_rel).join("plugin.toml")).unwrap();
    let name = manifest
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let code = wasm(crate_name);
    let dir = home.join("plugins").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.toml"), &manifest).unwrap();
    std::fs::write(dir.join("plugin.wasm"), &code).unwrap();
    let sig = signing::sign(
        &signing::read_secret(&secret).unwrap(),
        manifest.as_bytes(),
        &code,
    );
    std::fs::write(dir.join(signing::SIGNATURE_FILE), sig).unwrap();
}

/// GET a ticket until its state is `state` (20 s at most); its detail.
pub async fn wait_for_state(client: &reqwest::Client, url: &str, state: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let detail = get_json(client, url).await;
        if detail["ticket"]["state"] == state {
            return detail;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "ticket never reached {state}: {detail:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A counter or gauge from `GET {base}/metrics`.
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Install the no-op plugin over the API of the worker at `base`, signed
/// with `home`'s test key.
pub async fn install_noop(admin: &reqwest::Client, base: &str, home: &std::path::Path) {
    let manifest =
        std::fs::read_to_string(crate::support::plugin_dir("testing/noop/plugin.toml")).unwrap();
    let resp = admin
        .post(format!("{base}/v1/plugins"))
        .json(&crate::support::signed_upload(
            home,
            &manifest,
            "itsm-plugin-test-noop",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}
