//! `itsm task ...`: a person's inbox of human tasks, completion and
//! reassignment, over the HTTP API.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde_json::{Value, json};

use super::Exit;
use super::client::{Client, cell, enc, print_table};

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// Open tasks: all, yours, or a group's.
    List {
        /// Only yours: assigned to your e-mail or name, or to a group you are in.
        #[arg(long)]
        mine: bool,
        /// Only this group's.
        #[arg(long)]
        group: Option<String>,
    },
    /// Complete a task: answer every checklist item, and say why for those not done.
    Complete {
        /// Ticket id.
        id: String,
        /// The task's step.
        step: String,
        /// A checklist item done. Repeat for each.
        #[arg(long = "done")]
        done: Vec<String>,
        /// A checklist item not done (needs a --note). Repeat for each.
        #[arg(long = "not-done")]
        not_done: Vec<String>,
        /// What you say (kept in the trail).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Give a task to someone else.
    Reassign {
        /// Ticket id.
        id: String,
        /// The task's step.
        step: String,
        /// The new assignee's e-mail.
        #[arg(long)]
        to: String,
        /// Why (kept in the trail; required).
        #[arg(long)]
        reason: String,
    },
}

pub(crate) async fn run(client: &Client, cmd: TaskCommand) -> Result<(), Exit> {
    match cmd {
        TaskCommand::List { mine, group } => {
            let mut path = format!("/v1/tasks?mine={mine}");
            if let Some(g) = group {
                path += &format!("&group={}", enc(&g));
            }
            let r = client.get(&path).await?;
            client.show(&r, |r| {
                let rows: Vec<Vec<String>> = r["tasks"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| {
                        vec![
                            cell(&t["ticket"]),
                            cell(&t["step"]),
                            cell(&t["subject"]),
                            assigned(t),
                            format!(
                                "{}{}",
                                cell(&t["due"]),
                                if t["overdue"] == true {
                                    " (overdue)"
                                } else {
                                    ""
                                }
                            ),
                            t["checklist"]
                                .as_array()
                                .map(|c| c.iter().map(cell).collect::<Vec<_>>().join(", "))
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(
                    &["TICKET", "TASK", "SUBJECT", "ASSIGNED", "DUE", "CHECKLIST"],
                    &rows,
                );
            });
        }
        TaskCommand::Complete {
            id,
            step,
            done,
            not_done,
            note,
        } => {
            let checklist: BTreeMap<String, bool> = done
                .into_iter()
                .map(|i| (i, true))
                .chain(not_done.into_iter().map(|i| (i, false)))
                .collect();
            let r = client
                .post(
                    &format!("/v1/tickets/{}/steps/{}/complete", enc(&id), enc(&step)),
                    &json!({ "note": note, "checklist": checklist }),
                )
                .await?;
            client.show(&r, |_| println!("{id}: {step} done"));
        }
        TaskCommand::Reassign {
            id,
            step,
            to,
            reason,
        } => {
            let r = client
                .post(
                    &format!("/v1/tickets/{}/steps/{}/reassign", enc(&id), enc(&step)),
                    &json!({ "to": to, "reason": reason }),
                )
                .await?;
            client.show(&r, |_| println!("{id}: {step} is now {to}'s"));
        }
    }
    Ok(())
}

/// "boss@example.com, group it-support (escalated to it-managers)".
fn assigned(t: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(a) = t["assignee"].as_str() {
        parts.push(a.to_string());
    }
    if let Some(g) = t["group"].as_str() {
        parts.push(format!("group {g}"));
    }
    let mut text = parts.join(", ");
    if let Some(e) = t["escalated_to"].as_str() {
        text += &format!(" (escalated to {e})");
    }
    text
}
