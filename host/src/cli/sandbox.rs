//! `itsm sandbox`: local test doubles of SaaS APIs.

use clap::Subcommand;

use super::Exit;
use itsm_sandbox::scim::{BASE_PATH, Faults, Scim};
use itsm_sandbox::world::{Misbehaviour, World};

#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCommand {
    /// Every test double at once, seeded as one small company: Microsoft
    /// Graph (users, managed devices, token endpoint), Google Vault
    /// (matters, holds, exports, token endpoint), Salesforce (query, User,
    /// UserLogin, token endpoint) and two SCIM 2.0 apps. TEST DOUBLES for
    /// tests and demos: state is in memory, nothing here is a real tenant.
    /// Inspect and steer each under /_sandbox/ (state, requests, faults).
    All {
        /// First port on 127.0.0.1: Graph, Vault, Salesforce, then the SCIM
        /// apps on the next ones (0 picks free ports).
        #[arg(long, default_value_t = 8090)]
        port: u16,
        /// Seeded people: user1@example.com .. userN@example.com.
        #[arg(long, default_value_t = 25)]
        users: u32,
        /// Answer every Nth API request of each double with 429 + Retry-After.
        #[arg(long)]
        rate_limit_every: Option<u32>,
        /// Answer this share (0..1) of API requests with --error-status.
        #[arg(long)]
        error_share: Option<f64>,
        /// The status for --error-share (429 and 503 carry Retry-After).
        #[arg(long, default_value_t = 500)]
        error_status: u16,
        /// Add this latency to each API request.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
    /// A SCIM 2.0 service on loopback, seeded with users. A test double for
    /// tests and demos: state is in memory and nothing here is a real directory.
    Scim {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// Seeded users: user1@example.com .. userN@example.com.
        #[arg(long, default_value_t = 25)]
        users: u32,
        /// Require this bearer token.
        #[arg(long)]
        token: Option<String>,
        /// Answer every Nth SCIM request with 429 and Retry-After.
        #[arg(long)]
        rate_limit_every: Option<u32>,
    },
}

pub(crate) async fn run(cmd: SandboxCommand) -> Result<(), Exit> {
    let (port, users, token, rate_limit_every) = match cmd {
        SandboxCommand::All {
            port,
            users,
            rate_limit_every,
            error_share,
            error_status,
            latency_ms,
        } => {
            if error_share.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
                return Err(Exit::Usage("--error-share must be between 0 and 1".into()));
            }
            let misbehave = Misbehaviour {
                rate_limit_every,
                error_share,
                error_status: Some(error_status),
                latency_ms,
            };
            let world = World::start(users, (port != 0).then_some(port), misbehave)
                .await
                .map_err(|e| Exit::Usage(format!("sandbox: {e}")))?;
            println!(
                "sandbox: local TEST DOUBLES with user1..user{users}@example.com (Ctrl-C stops them)"
            );
            for line in world.describe() {
                println!("  {line}");
            }
            println!("settings for workflows/offboarding.toml (settings.toml, [offboarding]):");
            for (k, v) in world.settings() {
                println!("  {k} = {v:?}");
            }
            println!(
                "settings for the change workflows (settings.toml, [standard-change] and [emergency-change]):"
            );
            for (k, v) in world.change_settings() {
                println!("  {k} = {v:?}");
            }
            println!("secrets (ITSM_SECRET_<NAME>):");
            for (k, v) in world.secrets() {
                let shown = if v.len() > 60 {
                    "<the bundled throwaway service-account key>".to_string()
                } else {
                    v
                };
                println!("  {} = {shown}", k.to_ascii_uppercase());
            }
            let _ = tokio::signal::ctrl_c().await;
            return Ok(());
        }
        SandboxCommand::Scim {
            port,
            users,
            token,
            rate_limit_every,
        } => (port, users, token, rate_limit_every),
    };
    let scim = Scim::new(token.as_deref());
    for i in 1..=users {
        scim.add_user(&format!("user{i}@example.com"), &format!("User {i}"));
    }
    scim.set_faults(Faults {
        every: rate_limit_every,
        retry_after_secs: 1,
        ..Faults::default()
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| Exit::Usage(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(e.to_string()))?;
    println!(
        "SCIM sandbox (test double) at http://{addr}{BASE_PATH} with {users} users; Ctrl-C stops it"
    );
    scim.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| Exit::Usage(format!("sandbox failed: {e}")))
}
