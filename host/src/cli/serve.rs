//! `itsm serve`: the scheduler and the API, on embedded defaults.
//!
//! Everything lives under one home directory (`--home`, else `$ITSM_HOME`,
//! else `~/.local/share/itsm`): `data/` (the sled store), `plugins/` (one
//! folder per plugin, beside the bundled ones), `workflows/` (`*.toml`),
//! `cache/` (compiled code), `trusted-keys/` (publishers' `*.pub`),
//! `system-trail.jsonl` (plugin and workflow changes), `hooks.toml` (HR webhooks), `tokens.toml` (API tokens, hashed; `itsm token`). Secrets come from `ITSM_SECRET_<NAME>` variables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Exit;
use crate::admin::{Admin, PluginPolicy};
use crate::api::{AppState, HookSet, serve};
use crate::audit::system::SystemTrail;
use crate::auth::Tokens;
use crate::hooks::Hooks;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::signing::TrustedKeys;
use crate::store::{Store, StoreKv, sled::SledStore};
use crate::workflow::Workflow;

/// The token file under the home directory.
pub(crate) const TOKENS_FILE: &str = "tokens.toml";

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Home directory for data, plugins, workflows and the code cache.
    #[arg(long)]
    home: Option<PathBuf>,
    /// Address to listen on (loopback by default; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Plugin calls in flight at once.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Also start the local SCIM sandbox (a test double with users
    /// user1..user25@example.com) and two workflows that deprovision from
    /// it, `sandbox-offboarding` and `sandbox-approved-offboarding` (after
    /// an approval by the `security` group): a first run needs nothing else.
    #[arg(long)]
    sandbox: bool,
    /// Development only: accept unsigned, untrusted or tampered plugins and
    /// version downgrades (each with a warning). Without it, a plugin must be
    /// signed by a key in `trusted-keys/`.
    #[arg(long)]
    dev: bool,
}

/// Start the SCIM sandbox; returns its workflows and the token it wants.
async fn start_sandbox() -> Result<(Vec<Workflow>, String, String), Exit> {
    use crate::sandbox::scim::{BASE_PATH, Scim};
    let token = format!("sandbox-{:x}", rand::random::<u64>());
    let scim = Scim::new(Some(&token));
    for i in 1..=25 {
        scim.add_user(&format!("user{i}@example.com"), &format!("User {i}"));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Exit::Usage(format!("sandbox: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(e.to_string()))?;
    tokio::spawn(async move { scim.serve(listener, std::future::pending()).await });
    let workflow = |name: &str, what: &str, approval: &str| {
        Workflow::parse(
            &format!(
                r#"
                name = "{name}"
                version = "1"
                description = "{what} (the local SCIM sandbox, a test double)"
                sla = "24h"
                [[steps]]
                name = "deprovision-scim"
                plugin = "scim-deprovision"
                config = {{ base_url = "http://{addr}{BASE_PATH}" }}
                retry = {{ max_attempts = 5, initial_backoff = "500ms" }}
                {approval}
                "#
            ),
            "sandbox",
        )
    };
    let wf = vec![
        workflow(
            "sandbox-offboarding",
            "Deprovision the subject from the SaaS app",
            "",
        )?,
        workflow(
            "sandbox-approved-offboarding",
            "Deprovision the subject once the security group approves",
            r#"approval = { role = "security" }"#,
        )?,
    ];
    let note = format!(
        "  SCIM sandbox (a test double) at http://{addr}{BASE_PATH} with user1..user25@example.com"
    );
    Ok((wf, token, note))
}

fn secrets_from_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("ITSM_SECRET_")
                .map(|n| (n.to_ascii_lowercase(), v))
        })
        .collect()
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), Exit> {
    let home = args.home.unwrap_or_else(super::data_dir);
    for sub in ["data", "plugins", "workflows", "cache"] {
        std::fs::create_dir_all(home.join(sub))
            .map_err(|e| Exit::Usage(format!("{}: {e}", home.join(sub).display())))?;
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&home.join("data"))?);
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(home.join("cache")),
        max_instances: (args.workers as u32).clamp(8, 1000),
        kv: Arc::new(StoreKv(store.clone())),
    })?;
    let system = Arc::new(SystemTrail::open(&home.join("system-trail.jsonl"))?);
    let policy = PluginPolicy {
        trusted: TrustedKeys::default(),
        trusted_dir: Some(home.join("trusted-keys")),
        dev: args.dev,
    };
    if args.dev {
        eprintln!(
            "warning: --dev: unsigned, untrusted or tampered plugins and downgrades are accepted"
        );
    }
    let admin = Arc::new(Admin::new(&home, runtime.clone(), policy, system));
    let mut plugins = BTreeMap::new();
    // Bundled plugins are part of this binary, trusted as it is.
    for b in crate::bundled::ALL {
        let plugin = runtime.load(b.manifest()?, b.wasm)?;
        plugins.insert(plugin.manifest().name.clone(), plugin);
    }
    for plugin in admin.load_installed()? {
        plugins.insert(plugin.manifest().name.clone(), plugin);
    }
    let mut workflows = Workflow::load_dir(&home.join("workflows"))?;
    let mut secrets = secrets_from_env();
    let mut sandbox_note = None;
    if args.sandbox {
        let (sandbox_workflows, token, note) = start_sandbox().await?;
        sandbox_note = Some(note);
        for wf in sandbox_workflows {
            workflows.insert(wf.name.clone(), wf);
        }
        secrets.insert("scim_token".into(), token);
    }
    let hook_secrets = secrets.clone();
    let scheduler = Scheduler::new(
        store,
        plugins.clone(),
        workflows.clone(),
        SchedulerConfig {
            workers: args.workers,
            secrets,
        },
    )?;
    let resumed = scheduler.recover().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Exit::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(e.to_string()))?;
    println!("itsm serving on http://{addr} (home {})", home.display());
    println!(
        "  plugins: {}",
        plugins.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    println!(
        "  workflows: {}",
        if workflows.is_empty() {
            "none (add *.toml to workflows/)".to_string()
        } else {
            workflows.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    println!("  resumed {resumed} in-flight tickets");
    if let Some(note) = sandbox_note {
        println!("{note}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let tokens = Arc::new(Tokens::new(home.join(TOKENS_FILE)));
    let hooks = HookSet::new(Hooks::load(&home.join("hooks.toml"))?, &hook_secrets)?;
    let state = AppState::new(scheduler, tokens, admin).with_hooks(hooks);
    serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| Exit::Usage(format!("server failed: {e}")))
}
