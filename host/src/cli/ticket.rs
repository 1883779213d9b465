//! `itsm ticket ...` and `itsm batch ...`: the operator's and approver's
//! commands, over the HTTP API.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::Exit;
use super::client::{Client, cell, enc, print_table, time};

#[derive(Debug, Subcommand)]
pub(crate) enum TicketCommand {
    /// Create one ticket for one person.
    Create {
        /// Workflow name.
        #[arg(long)]
        workflow: String,
        /// Who the ticket is about (e.g. their e-mail address).
        #[arg(long)]
        subject: String,
        /// An input, `key=value`; repeat for several.
        #[arg(long = "input", value_parser = key_value)]
        inputs: Vec<(String, String)>,
        /// Makes a repeat of this command return the same ticket.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Import a CSV (`subject` column) or JSON-lines file: one ticket per row.
    Import {
        /// The file (`.csv`, `.jsonl` or `.ndjson`).
        file: PathBuf,
        /// Workflow name.
        #[arg(long)]
        workflow: String,
    },
    /// A ticket's steps and trail.
    Show {
        /// Ticket id.
        id: String,
    },
    /// Wait for a ticket to finish, printing each event as it is recorded:
    /// exit 0 when it succeeded, 1 when it failed, was cancelled, or
    /// `--timeout` passed first. Long-polls the server: no busy polling.
    Wait {
        /// Ticket id.
        id: String,
        /// Give up after this long (e.g. `10m`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// List tickets.
    List {
        /// pending, running, waiting_approval, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Workflow name.
        #[arg(long)]
        workflow: Option<String>,
        /// Subject.
        #[arg(long)]
        subject: Option<String>,
        /// Batch id.
        #[arg(long)]
        batch: Option<String>,
        /// Created at or after (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Created before (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print only ids, one per line (for `$(...)`).
        #[arg(long, short)]
        quiet: bool,
        /// Newest first (default: oldest first).
        #[arg(long)]
        newest: bool,
        /// The page after this ticket id (the `more:` line of the page before).
        #[arg(long)]
        after: Option<String>,
    },
    /// Approve the step waiting for approval (of each ticket given).
    Approve {
        /// Ticket ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Why (kept in the trail).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject the step waiting for approval (the ticket fails).
    Reject {
        /// Ticket id.
        id: String,
        /// Why (kept in the trail).
        #[arg(long)]
        comment: String,
    },
    /// Cancel an open ticket.
    Cancel {
        /// Ticket id.
        id: String,
        /// Why (kept in the trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Retry a failed ticket from its failed steps.
    Retry {
        /// Ticket id.
        id: String,
    },
    /// Run a step that waits for its time (`not_before`, `delay`) now.
    RunNow {
        /// Ticket id.
        id: String,
        /// The step.
        step: String,
        /// Why it runs before its time (kept in the trail; required).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BatchCommand {
    /// A batch's tickets and counts by state.
    Show {
        /// Batch id (`B-...`, printed by `itsm ticket import`).
        id: String,
        /// Follow the batch with a progress bar until every ticket has finished.
        #[arg(long)]
        watch: bool,
    },
    /// Retry every failed ticket of a batch.
    Retry {
        /// Batch id.
        id: String,
    },
    /// Cancel every open ticket of a batch.
    Cancel {
        /// Batch id.
        id: String,
        /// Why (kept in each trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub(crate) async fn run(client: &Client, cmd: TicketCommand) -> Result<(), Exit> {
    match cmd {
        TicketCommand::Create {
            workflow,
            subject,
            inputs,
            idempotency_key,
        } => {
            let inputs: Map<String, Value> = inputs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let mut req = client
                .request(Method::POST, "/v1/tickets")
                .json(&json!({ "workflow": workflow, "subject": subject, "inputs": inputs }));
            if let Some(key) = idempotency_key {
                req = req.header("Idempotency-Key", key);
            }
            let t = client.call(req).await?;
            client.show(&t, |t| {
                println!(
                    "{} {} ({})",
                    cell(&t["id"]),
                    cell(&t["state"]),
                    cell(&t["subject"])
                )
            });
        }
        TicketCommand::Import { file, workflow } => import(client, &file, &workflow).await?,
        TicketCommand::Wait { id, timeout } => wait(client, &id, timeout).await?,
        TicketCommand::Show { id } => {
            let d = client.get(&format!("/v1/tickets/{}", enc(&id))).await?;
            client.show(&d, print_ticket);
        }
        TicketCommand::List {
            state,
            workflow,
            subject,
            batch,
            since,
            until,
            limit,
            quiet,
            newest,
            after,
        } => {
            let mut q = format!("limit={limit}");
            if newest {
                q.push_str("&order=newest");
            }
            for (k, v) in [
                ("state", state),
                ("workflow", workflow),
                ("subject", subject),
                ("batch", batch),
                ("created_after", since),
                ("created_before", until),
                ("after", after),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let list = client.get(&format!("/v1/tickets?{q}")).await?;
            if quiet {
                for t in list["tickets"].as_array().into_iter().flatten() {
                    println!("{}", cell(&t["id"]));
                }
            } else {
                client.show(&list, |l| {
                    print_summaries(&l["tickets"]);
                    if let Some(next) = l["next"].as_str() {
                        println!("more: itsm ticket list --after {next} (same filters)");
                    }
                });
            }
        }
        TicketCommand::Approve { ids, comment } => {
            // Each is its own decision in its own trail; stop at the first refusal.
            for id in ids {
                decide(client, &id, "approve", &comment).await?;
            }
        }
        TicketCommand::Reject { id, comment } => decide(client, &id, "reject", &comment).await?,
        TicketCommand::Cancel { id, reason } => {
            let r = client
                .post(
                    &format!("/v1/tickets/{}/cancel", enc(&id)),
                    &json!({ "reason": reason }),
                )
                .await?;
            client.show(&r, |_| println!("cancelled {id}"));
        }
        TicketCommand::Retry { id } => {
            let r = client
                .post(&format!("/v1/tickets/{}/retry", enc(&id)), &json!({}))
                .await?;
            client.show(&r, |_| println!("retrying {id}"));
        }
        TicketCommand::RunNow { id, step, reason } => {
            let r = client
                .post(
                    &format!("/v1/tickets/{}/steps/{}/run-now", enc(&id), enc(&step)),
                    &json!({ "reason": reason }),
                )
                .await?;
            client.show(&r, |_| println!("{id}: {step} runs now"));
        }
    }
    Ok(())
}

async fn decide(client: &Client, id: &str, what: &str, comment: &str) -> Result<(), Exit> {
    let r = client
        .post(
            &format!("/v1/tickets/{}/{what}", enc(id)),
            &json!({ "comment": comment }),
        )
        .await?;
    client.show(&r, |_| {
        println!(
            "{} {id}",
            if what == "approve" {
                "approved"
            } else {
                "rejected"
            }
        )
    });
    Ok(())
}

/// Post the file, and show a progress bar from the server's count of rows
/// done while the request runs.
/// `itsm ticket wait`: long-poll the ticket until it is terminal.
async fn wait(client: &Client, id: &str, timeout: std::time::Duration) -> Result<(), Exit> {
    let deadline = std::time::Instant::now() + timeout;
    let mut printed = 0;
    let mut seen: Option<u64> = None;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let query = match seen {
            Some(n) => format!("?wait={}s&seen={n}", left.as_secs().clamp(1, 30)),
            None => String::new(),
        };
        let d = client
            .get(&format!("/v1/tickets/{}{query}", enc(id)))
            .await?;
        let trail = d["trail"].as_array().cloned().unwrap_or_default();
        for e in trail.iter().skip(printed) {
            let step = e["step"]
                .as_str()
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            println!("{} {}{step}", cell(&e["seq"]), cell(&e["kind"]));
        }
        printed = printed.max(trail.len());
        seen = Some(
            d["ticket"]["head"]["len"]
                .as_u64()
                .unwrap_or(printed as u64),
        );
        let state = d["ticket"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match state.as_str() {
            "succeeded" => {
                println!("{id} succeeded");
                return Ok(());
            }
            "failed" | "cancelled" => return Err(Exit::Refused(format!("{id} {state}"))),
            _ if left.is_zero() => {
                return Err(Exit::Refused(format!(
                    "{id} is still {state} after {}",
                    humantime::format_duration(timeout)
                )));
            }
            _ => {}
        }
    }
}

async fn import(client: &Client, file: &std::path::Path, workflow: &str) -> Result<(), Exit> {
    let bytes = std::fs::read(file).map_err(|e| Exit::Usage(format!("{}: {e}", file.display())))?;
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => "text/csv",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        _ => {
            return Err(Exit::Usage(format!(
                "{}: name a .csv, .jsonl or .ndjson file",
                file.display()
            )));
        }
    };
    // The server names the batch after the file's hash; so can we, to follow it.
    let batch = format!("B-{}", &crate::runtime::sha256_hex(&bytes)[..16]);
    let req = client
        .request(
            Method::POST,
            &format!("/v1/imports?workflow={}", enc(workflow)),
        )
        .header("content-type", content_type)
        .body(bytes);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("importing {bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
            .expect("template"),
    );
    let mut post = std::pin::pin!(client.call(req));
    let report = loop {
        tokio::select! {
            r = &mut post => break r,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if let Ok(b) = client.get(&format!("/v1/batches/{batch}")).await
                    && let (Some(rows), Some(done)) = (b["import"]["rows"].as_u64(), b["import"]["done"].as_u64())
                {
                    bar.set_length(rows);
                    bar.set_position(done);
                }
            }
        }
    };
    bar.finish_and_clear();
    let report = report?;
    client.show(&report, |r| {
        println!(
            "batch {}: {} created, {} already there, {} rows refused",
            cell(&r["batch"]),
            r["created"],
            r["existing"],
            r["errors"].as_array().map_or(0, Vec::len)
        );
        let errors: Vec<Vec<String>> = r["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| vec![cell(&e["row"]), cell(&e["error"])])
            .collect();
        if !errors.is_empty() {
            print_table(&["ROW", "ERROR"], &errors);
        }
        println!(
            "follow it with: itsm batch show {} --watch",
            cell(&r["batch"])
        );
    });
    Ok(())
}

fn print_summaries(tickets: &Value) {
    let rows: Vec<Vec<String>> = tickets
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                cell(&t["id"]),
                cell(&t["state"]),
                cell(&t["workflow"]),
                cell(&t["subject"]),
                time(&t["created_ms"]),
            ]
        })
        .collect();
    print_table(&["ID", "STATE", "WORKFLOW", "SUBJECT", "CREATED"], &rows);
}

fn print_ticket(d: &Value) {
    let t = &d["ticket"];
    println!("{}  {}", cell(&t["id"]), cell(&t["state"]));
    println!(
        "  {} for {} (workflow {} v{}), requested by {}",
        cell(&t["workflow"]),
        cell(&t["subject"]),
        cell(&t["workflow"]),
        cell(&t["workflow_version"]),
        cell(&t["requested_by"])
    );
    if let Some(b) = t["batch"].as_str() {
        println!("  batch {b}");
    }
    println!();
    // In the workflow's order when the server gives it.
    let mut ordered: Vec<(&String, &Value)> =
        t["steps"].as_object().into_iter().flatten().collect();
    let order: Vec<&str> = d["workflow_steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    ordered.sort_by_key(|(name, _)| order.iter().position(|o| o == name).unwrap_or(usize::MAX));
    let steps: Vec<Vec<String>> = ordered
        .into_iter()
        .map(|(name, s)| {
            let attempts = s["attempts"].as_array().map_or(0, Vec::len);
            let last_error = s["attempts"]
                .as_array()
                .and_then(|a| a.last())
                .map(|a| cell(&a["result"]["error"]["message"]))
                .unwrap_or_default();
            let decision = match &s["decision"] {
                Value::Null => String::new(),
                d => format!(
                    "{} by {}",
                    if d["approved"] == true {
                        "approved"
                    } else {
                        "rejected"
                    },
                    cell(&d["by"])
                ),
            };
            vec![
                name.clone(),
                cell(&s["status"]),
                attempts.to_string(),
                decision,
                last_error,
            ]
        })
        .collect();
    print_table(
        &["STEP", "STATUS", "ATTEMPTS", "DECISION", "LAST ERROR"],
        &steps,
    );
    println!();
    let trail: Vec<Vec<String>> = d["trail"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                cell(&e["seq"]),
                time(&e["at_ms"]),
                cell(&e["kind"]),
                cell(&e["step"]),
                cell(&e["principal"]),
            ]
        })
        .collect();
    print_table(&["SEQ", "AT", "EVENT", "STEP", "BY"], &trail);
    if d["trail_verified"] == true {
        println!("trail verified: {} events, hash chain intact", trail.len());
    } else {
        println!("TRAIL BROKEN: {}", cell(&d["trail_error"]));
    }
}

pub(crate) async fn run_batch(client: &Client, cmd: BatchCommand) -> Result<(), Exit> {
    match cmd {
        BatchCommand::Show { id, watch } => {
            let path = format!("/v1/batches/{}", enc(&id));
            let mut b = client.get(&path).await?;
            if watch {
                let bar = ProgressBar::new(0).with_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} finished  {msg}")
                        .expect("template"),
                );
                loop {
                    if b["import"].is_null() {
                        bar.set_length(b["total"].as_u64().unwrap_or(0));
                        bar.set_position(b["finished"].as_u64().unwrap_or(0));
                        bar.set_message(counts(&b["by_state"]));
                    } else {
                        bar.set_length(b["import"]["rows"].as_u64().unwrap_or(0));
                        bar.set_position(b["import"]["done"].as_u64().unwrap_or(0));
                        bar.set_message("rows imported so far");
                    }
                    let done = b["import"].is_null() && b["finished"] == b["total"];
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    b = client.get(&path).await?;
                }
                bar.finish_and_clear();
            }
            client.show(&b, |b| {
                println!(
                    "batch {}: {} tickets ({})",
                    id,
                    b["total"],
                    counts(&b["by_state"])
                );
                print_summaries(&b["tickets"]);
            });
        }
        BatchCommand::Retry { id } => {
            let r = client
                .post(&format!("/v1/batches/{}/retry", enc(&id)), &json!({}))
                .await?;
            client.show(&r, applied);
        }
        BatchCommand::Cancel { id, reason } => {
            let r = client
                .post(
                    &format!("/v1/batches/{}/cancel", enc(&id)),
                    &json!({ "reason": reason }),
                )
                .await?;
            client.show(&r, applied);
        }
    }
    Ok(())
}

fn counts(by_state: &Value) -> String {
    by_state
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn applied(r: &Value) {
    println!(
        "applied to {} tickets, skipped {}",
        r["applied"].as_array().map_or(0, Vec::len),
        r["skipped"].as_array().map_or(0, Vec::len)
    );
    let skipped: Vec<Vec<String>> = r["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| vec![cell(&s["id"]), cell(&s["state"]), cell(&s["error"])])
        .collect();
    if !skipped.is_empty() {
        print_table(&["SKIPPED", "STATE", "ERROR"], &skipped);
    }
}
