//! `itsm audit export|verify`: the auditor's commands.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use reqwest::Method;

use super::Exit;
use super::client::{cell, enc, print_table};
use crate::audit::{AuditEvent, verify_export};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// One JSON event per line (checkable offline by `itsm audit verify --file`).
    Jsonl,
    /// One event per row, for spreadsheets.
    Csv,
    /// One JSON document.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Export the trail of one ticket, of a date range, or of everything.
    Export {
        /// One ticket (`system` for plugin and workflow changes).
        #[arg(long)]
        ticket: Option<String>,
        /// Events at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Events before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Verify hash chains: on the server (one ticket, or all), or an exported file offline.
    Verify {
        /// One ticket, checked by the server against its recorded head.
        #[arg(long, conflicts_with = "file")]
        ticket: Option<String>,
        /// A JSON-lines export, checked here without the server.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub(crate) async fn run(conn: &super::client::Connection, cmd: AuditCommand) -> Result<(), Exit> {
    match cmd {
        AuditCommand::Export {
            ticket,
            from,
            to,
            format,
            out,
        } => {
            let client = conn.connect()?;
            let format_name = format!("{format:?}").to_ascii_lowercase();
            let mut q = format!("format={format_name}");
            for (k, v) in [("ticket", ticket), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let body = client
                .send(client.request(Method::GET, &format!("/v1/audit?{q}")))
                .await?
                .bytes()
                .await
                .map_err(|e| Exit::Refused(format!("reading the export: {e}")))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &body)
                        .map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))?;
                    eprintln!("wrote {} bytes to {}", body.len(), path.display());
                }
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&body)
                        .map_err(|e| Exit::Usage(e.to_string()))?;
                }
            }
        }
        AuditCommand::Verify {
            file: Some(path), ..
        } => verify_file(&path, conn.json)?,
        AuditCommand::Verify { ticket, file: None } => {
            let client = conn.connect()?;
            let path = match &ticket {
                Some(id) => format!("/v1/audit/verify?ticket={}", enc(id)),
                None => "/v1/audit/verify".to_string(),
            };
            let r = client.get(&path).await?;
            client.show(&r, |r| {
                if ticket.is_some() {
                    if r["verified"] == true {
                        println!(
                            "{}: verified, {} events, head {}",
                            cell(&r["ticket"]),
                            r["events"],
                            cell(&r["head"])
                        );
                    } else {
                        println!("{}: BROKEN: {}", cell(&r["ticket"]), cell(&r["error"]));
                    }
                } else {
                    println!(
                        "{} trails checked, {} broken",
                        r["checked"],
                        r["broken"].as_array().map_or(0, Vec::len)
                    );
                    let rows: Vec<Vec<String>> = r["broken"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| vec![cell(&b["ticket"]), cell(&b["error"])])
                        .collect();
                    if !rows.is_empty() {
                        print_table(&["TICKET", "ERROR"], &rows);
                    }
                }
            });
            if r["verified"] != true {
                return Err(Exit::Refused("verification failed".into()));
            }
        }
    }
    Ok(())
}

/// Check an export offline: every hash recomputed, every link followed.
fn verify_file(path: &std::path::Path, json: bool) -> Result<(), Exit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))?;
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let e: AuditEvent = serde_json::from_str(line).map_err(|e| {
            Exit::Usage(format!(
                "{} line {}: not an audit event: {e}",
                path.display(),
                i + 1
            ))
        })?;
        events.push(e);
    }
    match verify_export(&events) {
        Ok(tickets) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "verified": true, "events": events.len(), "tickets": tickets })
                );
            } else {
                println!(
                    "{}: verified, {} events of {} trails; every hash and link checks",
                    path.display(),
                    events.len(),
                    tickets
                );
            }
            Ok(())
        }
        Err((ticket, brk)) => Err(Exit::Refused(format!(
            "{}: BROKEN at ticket {ticket}, {brk}",
            path.display()
        ))),
    }
}
