//! The `itsm` command line.
//!
//! Exit codes: 0 success, 1 a step failed (the plugin's or a limit's doing)
//! or the server refused a request, 2 bad usage, bad manifest or bad input.

mod audit;
mod client;
mod demo;
mod new;
mod outbreak;
mod plugin;
mod sandbox;
mod serve;
mod step;
mod store;
mod task;
mod ticket;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Host for sandboxed ITSM automation plugins.
#[derive(Debug, Parser)]
#[command(name = "itsm", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run and debug single plugin calls.
    #[command(subcommand)]
    Step(step::StepCommand),
    /// Offboard a batch of sample leavers end to end against the local sandbox.
    Demo(demo::DemoArgs),
    /// Run the scheduler and the HTTP API on embedded defaults.
    Serve(serve::ServeArgs),
    /// Create, import, show, list, approve, reject, cancel and retry tickets.
    Ticket {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        cmd: ticket::TicketCommand,
    },
    /// Your human tasks: list, complete, reassign.
    Task {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        cmd: task::TaskCommand,
    },
    /// Show, follow, retry and cancel a batch of imported tickets.
    Batch {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        cmd: ticket::BatchCommand,
    },
    /// Make an ed25519 key pair for signing plugins.
    Keygen(plugin::KeygenArgs),
    /// Sign, install, list and show plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// List, show and apply workflows.
    Workflow {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        cmd: plugin::WorkflowCommand,
    },
    /// Export and verify the audit trail.
    Audit {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        cmd: audit::AuditCommand,
    },
    /// Create, list and revoke API tokens (in the server's home).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Check a stopped server's store: every record and every trail.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Run a local test double of a SaaS API (for tests and demos only).
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
}

/// A failure the CLI reports and exits on.
#[derive(Debug)]
pub(crate) enum Exit {
    /// A step failed: exit 1.
    StepFailed,
    /// Bad usage or input: exit 2.
    Usage(String),
    /// The server refused or failed the request, or a check failed: exit 1.
    Refused(String),
}

impl From<crate::Error> for Exit {
    fn from(e: crate::Error) -> Self {
        Exit::Usage(e.to_string())
    }
}

/// Parse the command line, run it, and map the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ITSM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Step(cmd) => step::run(cmd).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Sandbox(cmd) => sandbox::run(cmd).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Token(cmd) => token::run(cmd),
            Command::Store(cmd) => store::run(cmd),
            Command::Ticket { conn, cmd } => ticket::run(&conn.connect()?, cmd).await,
            Command::Batch { conn, cmd } => ticket::run_batch(&conn.connect()?, cmd).await,
            Command::Task { conn, cmd } => task::run(&conn.connect()?, cmd).await,
            Command::Audit { conn, cmd } => audit::run(&conn, cmd).await,
            Command::Keygen(args) => plugin::keygen(args),
            Command::Plugin(cmd) => plugin::run(cmd).await,
            Command::Workflow { conn, cmd } => plugin::run_workflow(&conn.connect()?, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::StepFailed) => ExitCode::from(1),
        Err(Exit::Refused(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Exit::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The data directory: `$ITSM_HOME`, else `$XDG_DATA_HOME/itsm`, else `~/.local/share/itsm`.
pub(crate) fn data_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("ITSM_HOME") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return std::path::PathBuf::from(d).join("itsm");
    }
    match std::env::var_os("HOME") {
        Some(h) => std::path::PathBuf::from(h).join(".local/share/itsm"),
        None => std::path::PathBuf::from(".itsm"),
    }
}
