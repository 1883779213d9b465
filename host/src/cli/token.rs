//! `itsm token`: create, list and revoke the server's API tokens.
//!
//! Works on `tokens.toml` in the server's home; a running server picks up a
//! change on its next request.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Exit;
use super::serve::TOKENS_FILE;
use crate::auth::{BUILTIN_ROLES, Lifetime, TokenPlace};

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
        /// A service's token (an HR system, a pipeline), not a person's: it
        /// does not expire unless `--expires` says so.
        #[arg(long)]
        service: bool,
        /// How long the token works (`90d`, `12h`, ...), or `never`. A
        /// person's token works 90 days by default.
        #[arg(long, value_parser = parse_lifetime)]
        expires: Option<Lifetime>,
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

/// Where the server's tokens are.
#[derive(Debug, Args)]
pub(crate) struct Home {
    /// The server's home directory (default `$ITSM_HOME`, else `~/.local/share/itsm`).
    #[arg(long)]
    home: Option<PathBuf>,
    /// The shared store of several workers (as `itsm serve --store`): the
    /// tokens are the database's, for every worker at once.
    #[arg(long = "store", env = "ITSM_STORE", value_name = "URL")]
    location: Option<String>,
}

impl Home {
    fn place(&self) -> Result<TokenPlace, Exit> {
        let home = self.home.clone().unwrap_or_else(super::data_dir);
        if let Some(url) = &self.location {
            let store = crate::store::open(
                Some(url),
                &home.join("data"),
                0,
                crate::store::LeaseConfig::default(),
            )?;
            if store.documents().is_some() {
                return Ok(TokenPlace::Shared(store));
            }
        }
        std::fs::create_dir_all(&home)
            .map_err(|e| Exit::Usage(format!("{}: {e}", home.display())))?;
        Ok(TokenPlace::File(home.join(TOKENS_FILE)))
    }
}

pub(crate) fn run(cmd: TokenCommand) -> Result<(), Exit> {
    match cmd {
        TokenCommand::Create {
            name,
            roles,
            email,
            service,
            expires,
            home,
        } => {
            let place = home.place()?;
            let lifetime = expires.unwrap_or_default();
            let token = place.update(|file| {
                file.issue_with(&name, &roles, email.as_deref(), service, lifetime)
            })?;
            for r in roles
                .iter()
                .filter(|r| !BUILTIN_ROLES.contains(&r.as_str()))
            {
                eprintln!("note: `{r}` is not a built-in role; it is a group (approvals, tasks)");
            }
            let (file, _) = place.read()?;
            let expires = file
                .tokens
                .iter()
                .find(|t| t.name == name)
                .and_then(|t| t.expires.clone())
                .map_or_else(|| "never expires".to_string(), |at| format!("expires {at}"));
            eprintln!(
                "token for {name} ({}; {expires}); shown once, only its hash is kept in {}:",
                roles.join(", "),
                place.describe()
            );
            println!("{token}");
        }
        TokenCommand::List { home } => {
            let place = home.place()?;
            let (file, _) = place.read()?;
            let used = crate::auth::last_uses(&place)?;
            println!(
                "{:<24} {:<8} {:<32} {:<28} {:<21} {:<21} LAST USED",
                "NAME", "KIND", "ROLES", "EMAIL", "CREATED", "EXPIRES"
            );
            for t in file.tokens {
                let last = used.get(&t.name).map_or_else(
                    || "never".to_string(),
                    |s| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(*s),
                        )
                        .to_string()
                    },
                );
                println!(
                    "{:<24} {:<8} {:<32} {:<28} {:<21} {:<21} {last}",
                    t.name,
                    if t.service { "service" } else { "person" },
                    t.roles.join(","),
                    t.email.as_deref().unwrap_or("-"),
                    t.created,
                    t.expires.as_deref().unwrap_or("never")
                );
            }
        }
        TokenCommand::Revoke { name, home } => {
            if !home.place()?.update(|file| Ok(file.revoke(&name)))? {
                return Err(Exit::Usage(format!("no token for {name}")));
            }
            eprintln!("revoked {name}");
        }
    }
    Ok(())
}

/// `--expires`: a duration (`90d`, `12h`) or `never`.
fn parse_lifetime(text: &str) -> Result<Lifetime, String> {
    if text == "never" {
        return Ok(Lifetime::Never);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 90d or 12h, nor `never`: {e}"))?;
    if d.is_zero() {
        return Err("a token that expires at once is no token: give a duration above 0".into());
    }
    Ok(Lifetime::For(d))
}
