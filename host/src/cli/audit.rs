//! `itsm audit export|verify`: the auditor's commands.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use reqwest::Method;

use super::Exit;
use super::client::{cell, enc, print_table};
use crate::audit::export::{self, Scope};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// One JSON event per line, then the signed trailer.
    Jsonl,
    /// One event per row, for spreadsheets, then the signed trailer's row.
    Csv,
    /// One JSON document: events and the signed trailer.
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
        /// An export (JSON lines, JSON or CSV), checked here without the
        /// server: every hash and link, and the signed trailer.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The server's export key (`audit-export.pub` in its home, or
        /// `GET /v1/audit/key`): the trailer must be signed by it.
        #[arg(long, requires = "file")]
        key: Option<PathBuf>,
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
            file: Some(path),
            key,
            ..
        } => verify_file(&path, key.as_deref(), conn.json)?,
        AuditCommand::Verify {
            ticket, file: None, ..
        } => {
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

/// Check an export offline: every hash recomputed, every link followed,
/// and the events matched against the signed trailer, so a file cut at
/// either end, emptied or left with one line is refused.
fn verify_file(
    path: &std::path::Path,
    key: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Exit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))?;
    let pinned = key.map(export::read_key_file).transpose()?;
    let result =
        export::parse_any(&text).and_then(|parsed| export::verify_parsed(&parsed, pinned.as_ref()));
    let v = result.map_err(|e| Exit::Refused(format!("{}: REFUSED: {e}", path.display())))?;
    let of = v
        .ticket
        .as_deref()
        .map(|t| format!(" of ticket {t}"))
        .unwrap_or_default();
    let trailer = match v.scope {
        Scope::Ticket => format!("the whole trail{of}, genesis to recorded head"),
        Scope::Range => format!(
            "a date range{of} (exactly the events the server selected; it may start and end mid-chain)"
        ),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "verified": true, "events": v.events, "tickets": v.tickets, "scope": v.scope, "key_id": v.key_id, "key_pinned": pinned.is_some() })
        );
    } else {
        println!(
            "{}: verified, {} events of {} trails; every hash and link checks; the trailer says: {trailer}; signed by key {}{}",
            path.display(),
            v.events,
            v.tickets,
            v.key_id,
            if pinned.is_some() {
                " (the key given)"
            } else {
                " (pass --key with the server's audit-export.pub to check it is the server's)"
            }
        );
    }
    Ok(())
}
