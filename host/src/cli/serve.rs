//! `itsm serve`: the scheduler and the API, on embedded defaults.
//!
//! Everything lives under one home directory (`--home`, else `$ITSM_HOME`,
//! else `~/.local/share/itsm`): `data/` (the sled store), `plugins/` (one
//! folder per plugin, beside the bundled ones), `workflows/` (`*.toml`),
//! `cache/` (compiled code), `trusted-keys/` (publishers' `*.pub`),
//! `system-trail.jsonl` (plugin and workflow changes), `hooks.toml` (HR webhooks), `oidc.toml` (sign-in through the identity provider),
//! `settings.toml` (per-workflow `[settings]` overrides), `tokens.toml` (API tokens, hashed; `itsm token`),
//! `audit-export.key` and `.pub` (the key export trailers are signed with). Secrets come from `ITSM_SECRET_<NAME>` variables.
//!
//! SIGTERM or SIGINT drains: no new work, calls in flight finish for up to
//! `--grace`, the rest are recorded interrupted, then exit 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Exit;
use crate::admin::{Admin, PluginPolicy};
use crate::api::{AppState, HookSet, serve};
use crate::audit::{AuditKind, Draft};
use crate::auth::{TOKENS_DOCUMENT, TokenPlace, Tokens};
use crate::bundled::OFFBOARDING_WORKFLOW;
use crate::intake::webhook::Hooks;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::scheduler::StoreKv;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::shared::system_trail::SystemTrail;
use crate::signing::TrustedKeys;
use crate::store::Store;
use crate::store::checkpoint::{Checkpoint, shortfall};
use crate::workflow::Workflow;
use itsm_sandbox::world::{Misbehaviour, World};

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
    /// Also start the local sandbox: test doubles of Microsoft Graph,
    /// Google Vault, Salesforce and two SCIM apps, seeded with
    /// user1..user25@example.com, and the bundled `offboarding` workflow
    /// pointed at them (plus `sandbox-offboarding` and
    /// `sandbox-approved-offboarding`, one SCIM step each): a first run
    /// needs nothing else.
    #[arg(long)]
    sandbox: bool,
    /// Development only: accept unsigned, untrusted or tampered plugins and
    /// version downgrades (each with a warning). Without it, a plugin must be
    /// signed by a key in `trusted-keys/`.
    #[arg(long)]
    dev: bool,
    /// Intake limits (each refusal names the flag that sets it).
    #[command(flatten)]
    intake: crate::intake::IntakeLimits,
    /// How the store is opened.
    #[command(flatten)]
    store: StoreArgs,
    /// On SIGTERM or SIGINT, how long to let the plugin calls in flight
    /// finish (e.g. `30s`, `2m`) before recording them interrupted; they
    /// run again on the next start with the same idempotency key.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    grace: std::time::Duration,
}

/// How `itsm serve` opens its store.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// Where the tickets live: a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db?sslmode=require`) for several
    /// workers sharing one database, or unset for the embedded store in the
    /// home's `data/`.
    #[arg(long = "store", env = "ITSM_STORE", value_name = "URL")]
    pub location: Option<String>,
    /// On a shared store: this worker's name, unique among the workers
    /// (default: the host name and the home directory, so a restarted
    /// worker takes its own tickets back at once).
    #[arg(long, env = "ITSM_WORKER_NAME")]
    pub worker_name: Option<String>,
    /// On a shared store: how long a worker's lease on a ticket lasts
    /// unrenewed; a worker that dies (or is paused) has its tickets taken
    /// over by the others this long after its last renewal.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// Start even though the store is behind its completeness checkpoint,
    /// or a shared store behind its witness (it lost acknowledged work:
    /// cut, rolled back, replaced or deleted from), running on what is left. Recorded in the system trail with what was lost.
    #[arg(long)]
    pub accept_store_loss: bool,
    /// Refuse writes (507, "the disk is full") while the disk holding the
    /// store has fewer than this many MiB free, so the store never meets a
    /// full disk mid-write; reads go on and writes resume once space is
    /// freed. 0 turns the reserve off.
    #[arg(long, default_value_t = DEFAULT_RESERVE_MIB)]
    pub min_free_mib: u64,
}

impl StoreArgs {
    /// This worker's lease settings.
    pub(crate) fn lease(&self, home: &std::path::Path) -> crate::store::LeaseConfig {
        crate::store::LeaseConfig {
            worker: self.worker_name.clone().unwrap_or_else(|| {
                let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
                format!("{}:{}", crate::store::hostname(), home.display())
            }),
            ttl: self.lease_ttl,
        }
    }
}

const DEFAULT_RESERVE_MIB: u64 = crate::store::space::DEFAULT_RESERVE >> 20;

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            location: None,
            worker_name: None,
            lease_ttl: crate::store::DEFAULT_TTL,
            accept_store_loss: false,
            min_free_mib: DEFAULT_RESERVE_MIB,
        }
    }
}

/// What `--sandbox` adds: the doubles, workflows against them, their secrets.
pub(crate) struct Sandbox {
    /// The running doubles.
    pub world: World,
    /// `offboarding` (the bundled workflow pointed at the doubles) and two
    /// one-step SCIM workflows.
    pub workflows: Vec<Workflow>,
}

/// Start every test double and make workflows that use them.
pub(crate) async fn start_sandbox(misbehave: Misbehaviour) -> Result<Sandbox, Exit> {
    let world = World::start(25, None, misbehave)
        .await
        .map_err(|e| Exit::Usage(format!("sandbox: {e}")))?;
    let offboarding = Workflow::parse_with(
        OFFBOARDING_WORKFLOW,
        "workflows/offboarding.toml",
        &world.settings(),
    )?;
    let slack = &world.settings()["slack_scim_url"];
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
                config = {{ base_url = "{slack}" }}
                secrets = {{ scim_token = "slack_scim_token" }}
                retry = {{ max_attempts = 5, initial_backoff = "500ms" }}
                {approval}
                "#
            ),
            "sandbox",
        )
    };
    let workflows = vec![
        offboarding,
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
    Ok(Sandbox { world, workflows })
}

fn secrets_from_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("ITSM_SECRET_")
                .map(|n| (n.to_ascii_lowercase(), v))
        })
        .collect()
}

/// A server put together, not yet listening.
pub(crate) struct Assembled {
    /// Handlers' state.
    pub state: AppState,
    /// Loaded plugin names.
    pub plugins: Vec<String>,
    /// Workflow names.
    pub workflows: Vec<String>,
    /// Tickets resumed after a restart.
    pub resumed: usize,
}

/// Open the home, load plugins and workflows, start the scheduler and
/// resume in-flight tickets: everything `itsm serve` does before it listens
/// (and what `itsm demo` runs in-process).
/// `cache` is where compiled plugin code is kept (default: the home's
/// `cache/`).
pub(crate) async fn assemble(
    home: &std::path::Path,
    cache: Option<&std::path::Path>,
    workers: usize,
    dev: bool,
    sandbox: Option<&Sandbox>,
    intake: crate::intake::IntakeLimits,
    store_args: &StoreArgs,
) -> Result<Assembled, Exit> {
    for sub in ["data", "plugins", "workflows", "cache"] {
        std::fs::create_dir_all(home.join(sub))
            .map_err(|e| Exit::Usage(format!("{}: {e}", home.join(sub).display())))?;
    }
    let store = crate::store::open(
        store_args.location.as_deref(),
        &home.join("data"),
        store_args.min_free_mib << 20,
        store_args.lease(home),
    )?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.map_or_else(|| home.join("cache"), |c| c.to_path_buf())),
        max_instances: (workers as u32).clamp(8, 1000),
        kv: Arc::new(StoreKv(store.clone())),
    })?;
    // Shared by the workers of a shared store; the home's own otherwise.
    let system = Arc::new(match store.leases() {
        Some(leases) => SystemTrail::shared(store.clone(), leases.worker())?,
        None => SystemTrail::open(&home.join("system-trail.jsonl"))?,
    });
    let checkpoint = open_checkpoint(home, store.as_ref(), &system, store_args.accept_store_loss)?;
    let policy = PluginPolicy {
        trusted: TrustedKeys::default(),
        trusted_dir: Some(home.join("trusted-keys")),
        dev,
    };
    if dev {
        eprintln!(
            "warning: --dev: unsigned, untrusted or tampered plugins and downgrades are accepted"
        );
    }
    let admin = Arc::new(Admin::new(home, runtime.clone(), policy, system.clone()));
    let mut plugins = BTreeMap::new();
    // Bundled plugins are part of this binary, trusted as it is.
    for b in crate::bundled::ALL {
        let plugin = runtime.load(b.manifest()?, b.wasm)?;
        plugins.insert(plugin.manifest().name.clone(), plugin);
    }
    let (installed, skipped) = admin.load_installed()?;
    for plugin in installed {
        plugins.insert(plugin.manifest().name.clone(), plugin);
    }
    let mut unavailable = BTreeMap::new();
    for s in &skipped {
        tracing::warn!(
            "plugin folder {} skipped (the other plugins start; its steps wait): {}",
            s.dir.display(),
            s.reason
        );
        system.append(
            Draft::new(
                AuditKind::PluginSkipped,
                serde_json::json!({ "plugin": s.name, "dir": s.dir, "reason": s.reason }),
            ),
            crate::ticket::now_ms(),
        )?;
        if !plugins.contains_key(&s.name) {
            unavailable.insert(s.name.clone(), s.reason.clone());
        }
    }
    let settings = Workflow::load_settings(&home.join("settings.toml"))?;
    let mut workflows = Workflow::load_dir_with(&home.join("workflows"), &settings)?;
    let shared = store.documents().is_some();
    if shared {
        workflows = crate::shared::workflows::adopt(store.as_ref(), workflows)?;
        // A new worker (a fresh home) joins a fleet whose workflows name
        // plugins it has yet to read from the store: it starts, and they
        // wait until it has.
        let known = |p: &str| plugins.contains_key(p) || unavailable.contains_key(p);
        for name in crate::shared::workflows::lacking(&workflows, known) {
            unavailable.insert(name, crate::shared::workflows::NOT_HERE.to_string());
        }
    }
    let mut secrets = secrets_from_env();
    if let Some(sandbox) = sandbox {
        for wf in &sandbox.workflows {
            workflows.insert(wf.name.clone(), wf.clone());
        }
        secrets.extend(sandbox.world.secrets());
    }
    let hooks = Hooks::load(&home.join("hooks.toml"))?;
    for name in hooks.names() {
        let hook = hooks.get(name).expect("listed");
        if let Some(problem) = hook.correlate.as_ref().map(|c| &c.problem)
            && !workflows.contains_key(problem)
        {
            return Err(Exit::Usage(format!(
                "{}: hook `{name}` correlates alerts into workflow `{problem}`, which is not loaded (workflows: {})",
                home.join("hooks.toml").display(),
                workflows.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let wf = &hook.workflow;
        if !workflows.contains_key(wf) {
            return Err(Exit::Usage(format!(
                "{}: hook `{name}` starts workflow `{wf}`, which is not loaded (workflows: {})",
                home.join("hooks.toml").display(),
                workflows.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let hooks = HookSet::new(hooks, &secrets)?;
    let scheduler = Scheduler::new(
        store,
        plugins.clone(),
        workflows.clone(),
        SchedulerConfig {
            workers,
            secrets,
            intake,
            checkpoint: Some(checkpoint),
            unavailable_plugins: unavailable,
        },
    )?;
    if shared {
        let local = sandbox
            .map(|s| {
                s.workflows
                    .iter()
                    .map(|w| (w.name.clone(), w.clone()))
                    .collect()
            })
            .unwrap_or_default();
        crate::admin::follow::workflows(scheduler.clone(), local);
        crate::admin::follow::plugins(scheduler.clone(), admin.clone());
    }
    // Read before recovery, so a broken `oidc.toml` stops the start at once.
    let oidc = crate::oidc::Config::load(home)?;
    let resumed = scheduler.recover().await?;
    let tokens = Arc::new(Tokens::at(token_place(home, scheduler.store())?));
    note_token_uses(tokens.clone());
    let mut state = AppState::new(scheduler, tokens, admin)
        .with_hooks(hooks)
        .with_skipped_plugins(skipped)
        .with_export_key(crate::audit::export::load_or_create_key(home)?);
    if let Some(config) = oidc {
        tracing::info!(
            "sign-in through {} (audience {}): its access tokens are taken beside itsm tokens",
            config.issuer,
            config.audience
        );
        state = state.with_oidc(crate::oidc::Provider::new(config));
    }
    Ok(Assembled {
        state,
        plugins: plugins.into_keys().collect(),
        workflows: workflows.into_keys().collect(),
        resumed,
    })
}

/// Where the tokens are: the home's file, or the shared store's document,
/// into which the home's file is copied by the first worker to start on a
/// store that has none (the others' copies are then left unread).
fn token_place(home: &std::path::Path, store: &Arc<dyn Store>) -> Result<TokenPlace, Exit> {
    let file = home.join(TOKENS_FILE);
    let Some(documents) = store.documents() else {
        return Ok(TokenPlace::File(file));
    };
    if documents.get(TOKENS_DOCUMENT)?.is_none()
        && let Some(text) = crate::error::read_optional(&file)?
    {
        crate::auth::TokenFile::parse(&text, &file.display().to_string())?;
        if documents.put(TOKENS_DOCUMENT, &text, None)? {
            tracing::info!("copied {} into the shared store's tokens", file.display());
        }
    } else if file.exists() {
        tracing::info!(
            "{} is not read: the tokens are the shared store's (itsm token --store)",
            file.display()
        );
    }
    Ok(TokenPlace::Shared(store.clone()))
}

/// Write out when each token was last used, every few seconds, off the
/// request path (`itsm token list` shows it).
fn note_token_uses(tokens: Arc<Tokens>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::auth::LAST_USE_FLUSH_EVERY);
        loop {
            every.tick().await;
            let tokens = tokens.clone();
            match tokio::task::spawn_blocking(move || tokens.flush_last_use()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot write when tokens were last used: {e}"),
                Err(e) => tracing::warn!("writing when tokens were last used failed: {e}"),
            }
        }
    });
}

/// The completeness checkpoint beside the store: what it records of every
/// acknowledged trail head.
pub(crate) const CHECKPOINT_FILE: &str = "store-checkpoint.jsonl";

/// Open the checkpoint and hold the store to it, and to the witness a
/// shared store keeps of itself: a store behind either lost acknowledged
/// work, and the server does not start on it unless told to.
fn open_checkpoint(
    home: &std::path::Path,
    store: &dyn Store,
    system: &SystemTrail,
    accept_loss: bool,
) -> Result<Arc<Checkpoint>, Exit> {
    let checkpoint = Arc::new(Checkpoint::open(&home.join(CHECKPOINT_FILE))?);
    let mut lost = Vec::new();
    if checkpoint.is_empty() {
        // A new home, or one from before the checkpoint: today's store is
        // the baseline.
        checkpoint.reset_to(store)?;
    } else {
        lost = shortfall(&checkpoint.heads(), store)?;
    }
    let witness = store.witness();
    if let Some(w) = witness {
        for problem in w.shortfall()? {
            if !lost.contains(&problem) {
                lost.push(problem);
            }
        }
    }
    if lost.is_empty() {
        return Ok(checkpoint);
    }
    let shown: Vec<&str> = lost.iter().take(10).map(String::as_str).collect();
    let (place, witnesses) = match witness {
        Some(_) => (
            "the database given by --store".to_string(),
            format!(
                "its completeness witness (itsm.witness) or this worker's checkpoint {}",
                home.join(CHECKPOINT_FILE).display()
            ),
        ),
        None => (
            home.join("data").display().to_string(),
            format!(
                "its completeness checkpoint {}",
                home.join(CHECKPOINT_FILE).display()
            ),
        ),
    };
    if !accept_loss {
        return Err(Exit::Usage(format!(
            "the store at {place} has lost acknowledged work: it is behind {witnesses} in {} \
             tickets:\n  {}{}\nrestore it from a backup; or, to run on what is left, start \
             with --accept-store-loss (recorded in the system trail)",
            lost.len(),
            shown.join("\n  "),
            if lost.len() > shown.len() {
                "\n  ..."
            } else {
                ""
            }
        )));
    }
    eprintln!(
        "warning: --accept-store-loss: running on a store behind its checkpoint in {} tickets",
        lost.len()
    );
    system.append(
        Draft::new(
            AuditKind::StoreLossAccepted,
            serde_json::json!({ "tickets": lost.len(), "lost": lost.iter().take(100).collect::<Vec<_>>() }),
        )
        .by("operator (itsm serve --accept-store-loss)"),
        crate::ticket::now_ms(),
    )?;
    checkpoint.reset_to(store)?;
    if let Some(w) = witness {
        w.accept()?;
    }
    Ok(checkpoint)
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), Exit> {
    let home = args.home.clone().unwrap_or_else(super::data_dir);
    let sandbox = if args.sandbox {
        Some(start_sandbox(Misbehaviour::default()).await?)
    } else {
        None
    };
    // Before anything can be asked of us, so an early signal is not lost.
    let mut stop = StopSignals::install()?;
    let server = assemble(
        &home,
        None,
        args.workers,
        args.dev,
        sandbox.as_ref(),
        args.intake,
        &args.store,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Exit::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(e.to_string()))?;
    println!("itsm serving on http://{addr} (home {})", home.display());
    println!("  plugins: {}", server.plugins.join(", "));
    println!(
        "  workflows: {}",
        if server.workflows.is_empty() {
            "none (add *.toml to workflows/)".to_string()
        } else {
            server.workflows.join(", ")
        }
    );
    println!("  resumed {} in-flight tickets", server.resumed);
    if crate::auth::TokenFile::read(&home.join(TOKENS_FILE))?
        .tokens
        .is_empty()
    {
        println!(
            "  no API tokens yet: create one with `itsm token create --name NAME --role ROLE{}`",
            args.home
                .as_ref()
                .map(|h| format!(" --home {}", h.display()))
                .unwrap_or_default()
        );
    }
    if let Some(sandbox) = &sandbox {
        println!("  sandbox (local test doubles, user1..user25@example.com):");
        for l in sandbox.world.describe() {
            println!("    {l}");
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let scheduler = server.state.scheduler.clone();
    let grace = args.grace;
    let (stopped, stop_http) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let which = stop.recv().await;
        eprintln!(
            "{which}: shutting down: taking no new work, letting the calls in flight finish (grace {})",
            humantime::format_duration(grace)
        );
        let drained = scheduler.drain(grace).await;
        if drained.abandoned_calls > 0 {
            eprintln!(
                "{} calls still running after the grace period: recorded interrupted; they run again on the next start with the same idempotency key",
                drained.abandoned_calls
            );
        } else {
            eprintln!("every call in flight finished and is recorded");
        }
        let _ = stopped.send(());
    });
    // HTTP stays up while draining, so probes see the 503 and writes get
    // told why; it closes once the drain is over.
    serve(listener, server.state, async {
        let _ = stop_http.await;
    })
    .await
    .map_err(|e| Exit::Usage(format!("server failed: {e}")))
}

/// SIGTERM (what systemd and Kubernetes send) and SIGINT (Ctrl-C).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, Exit> {
        use tokio::signal::unix::{SignalKind, signal};
        let install =
            |kind| signal(kind).map_err(|e| Exit::Usage(format!("cannot handle signals: {e}")));
        Ok(Self {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    /// The first stop signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
