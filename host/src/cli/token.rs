//! `itsm token`: create, list and revoke the server's API tokens.
//!
//! Works on `tokens.toml` in the server's home; a running server picks up a
//! change on its next request.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Exit;
use super::serve::TOKENS_FILE;
use crate::auth::{BUILTIN_ROLES, TokenFile};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token for a principal (replacing any it had) and print it once.
    Create {
        /// The principal's name, as the trail records it.
        #[arg(long)]
        name: String,
        /// A role: admin, operator, approver, auditor, or a group such as
        /// `security`. Repeat for several. A person's token (`--email`) may
        /// have none: it reads, and does the tasks assigned to it.
        #[arg(long = "role", required_unless_present = "email")]
        roles: Vec<String>,
        /// The person's e-mail: human tasks assigned to it are theirs.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        home: Home,
    },
    /// List principals and their roles (never the tokens).
    List {
        #[command(flatten)]
        home: Home,
    },
    /// Revoke a principal's token.
    Revoke {
        /// The principal's name.
        name: String,
        #[command(flatten)]
        home: Home,
    },
}

/// Where the server's home is.
#[derive(Debug, Args)]
pub(crate) struct Home {
    /// The server's home directory (default `$ITSM_HOME`, else `~/.local/share/itsm`).
    #[arg(long)]
    home: Option<PathBuf>,
}

impl Home {
    fn tokens_file(&self) -> Result<PathBuf, Exit> {
        let home = self.home.clone().unwrap_or_else(super::data_dir);
        std::fs::create_dir_all(&home)
            .map_err(|e| Exit::Usage(format!("{}: {e}", home.display())))?;
        Ok(home.join(TOKENS_FILE))
    }
}

pub(crate) fn run(cmd: TokenCommand) -> Result<(), Exit> {
    match cmd {
        TokenCommand::Create {
            name,
            roles,
            email,
            home,
        } => {
            let path = home.tokens_file()?;
            let mut file = TokenFile::read(&path)?;
            let token = file.issue_for(&name, &roles, email.as_deref())?;
            file.write(&path)?;
            for r in roles
                .iter()
                .filter(|r| !BUILTIN_ROLES.contains(&r.as_str()))
            {
                eprintln!("note: `{r}` is not a built-in role; it is a group (approvals, tasks)");
            }
            eprintln!(
                "token for {name} ({}); shown once, only its hash is kept in {}:",
                roles.join(", "),
                path.display()
            );
            println!("{token}");
        }
        TokenCommand::List { home } => {
            let file = TokenFile::read(&home.tokens_file()?)?;
            println!("{:<24} {:<32} {:<28} CREATED", "NAME", "ROLES", "EMAIL");
            for t in file.tokens {
                println!(
                    "{:<24} {:<32} {:<28} {}",
                    t.name,
                    t.roles.join(","),
                    t.email.as_deref().unwrap_or("-"),
                    t.created
                );
            }
        }
        TokenCommand::Revoke { name, home } => {
            let path = home.tokens_file()?;
            let mut file = TokenFile::read(&path)?;
            if !file.revoke(&name) {
                return Err(Exit::Usage(format!("no token for {name}")));
            }
            file.write(&path)?;
            eprintln!("revoked {name}");
        }
    }
    Ok(())
}
