//! `itsm sandbox`: local test doubles of SaaS APIs.

use clap::Subcommand;

use super::Exit;
use crate::sandbox::scim::{BASE_PATH, Faults, Scim};

#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCommand {
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
    let SandboxCommand::Scim {
        port,
        users,
        token,
        rate_limit_every,
    } = cmd;
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
