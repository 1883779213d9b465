//! Put a leaver's mailbox on hold in a Google Vault matter, and start an
//! export of it, through the Vault API v1.
//!
//! - `run`: find the matter's hold named `hold_name` (corpus `MAIL`) among
//!   `GET /v1/matters/{matter}/holds`; create it with the account
//!   (`POST .../holds`) or add the account to it (`POST
//!   .../holds/{holdId}:addHeldAccounts`) unless already held; then, with
//!   `export = true`, `POST .../exports` for the account's mail, once per
//!   ticket: the export's name is derived from the idempotency key and
//!   looked up among the matter's exports before creating one, so a call
//!   repeated after a crash between the create and the record of its id
//!   (kept in the plugin's key-value store) finds it and creates none.
//! - `verify`: read the hold back and prove it lists the account; report
//!   the export's status.
//! - no `compensate`: releasing a legal hold is a lawyer's decision.

use itsm_sdk::http::encode;
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, kv, log};
use serde_json::{Value, json};

struct MailHold;

fn matter(ctx: &Context) -> Result<String, StepError> {
    Ok(format!(
        "{}/v1/matters/{}",
        ctx.config("vault_url")?.trim_end_matches('/'),
        encode(ctx.config("matter_id")?)
    ))
}

fn email(ctx: &Context) -> Result<&str, StepError> {
    if ctx.subject.contains('@') {
        Ok(&ctx.subject)
    } else {
        Err(StepError::fatal(format!(
            "the ticket's subject {:?} is not an e-mail address",
            ctx.subject
        )))
    }
}

/// The matter's holds with this name and the MAIL corpus, oldest first.
/// Two leavers processed at once can each create the hold, so there may be
/// more than one; any of them holding the account is proof.
fn find_holds(matter: &str, name: &str) -> Result<Vec<Value>, StepError> {
    let mut url = format!("{matter}/holds");
    let mut found = Vec::new();
    for _ in 0..50 {
        let page: Value = http::get(&url).send()?.error_for_status()?.json()?;
        found.extend(
            page["holds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| {
                    h["name"].as_str() == Some(name) && h["corpus"].as_str() == Some("MAIL")
                })
                .cloned(),
        );
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => url = format!("{matter}/holds?pageToken={}", encode(t)),
            _ => return Ok(found),
        }
    }
    Err(StepError::fatal(
        "more than 50 pages of holds; refusing to go on",
    ))
}

fn holds_account(hold: &Value, email: &str) -> bool {
    hold["accounts"].as_array().into_iter().flatten().any(|a| {
        a["email"]
            .as_str()
            .is_some_and(|e| e.eq_ignore_ascii_case(email))
    })
}

fn hold_state(hold: &Value, email: &str) -> Value {
    json!({
        "holdId": hold["holdId"],
        "name": hold["name"],
        "corpus": hold["corpus"],
        "accountHeld": holds_account(hold, email),
    })
}

/// The export's name: the same on every call for a ticket's step, and
/// free of the characters Vault warns can prevent a download
/// (`~!$'(),;@:/?`).
fn export_name(ctx: &Context) -> String {
    let safe: String = ctx
        .idempotency_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                ' '
            }
        })
        .collect();
    format!("itsm offboarding {safe}")
}

/// The matter's export named `name`, if one was made.
fn find_export(matter: &str, name: &str) -> Result<Option<Value>, StepError> {
    let mut url = format!("{matter}/exports?pageSize=100");
    for _ in 0..100 {
        let page: Value = http::get(&url).send()?.error_for_status()?.json()?;
        if let Some(e) = page["exports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"].as_str() == Some(name))
        {
            return Ok(Some(e.clone()));
        }
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => {
                url = format!("{matter}/exports?pageSize=100&pageToken={}", encode(t))
            }
            _ => return Ok(None),
        }
    }
    Err(StepError::fatal(
        "more than 100 pages of exports; refusing to go on",
    ))
}

/// Start (once per ticket) an MBOX export of the account's mail.
fn export(ctx: &Context, matter: &str, email: &str) -> Result<Value, StepError> {
    let key = format!("export/{}", ctx.idempotency_key);
    if let Some(id) = kv::get(&key)? {
        let id = String::from_utf8_lossy(&id).into_owned();
        log::info(&format!("export {id} was started before; reading it"));
        return http::get(&format!("{matter}/exports/{}", encode(&id)))
            .send()?
            .error_for_status()?
            .json();
    }
    let name = export_name(ctx);
    // Made before the record of its id was kept (a crash in between)?
    if let Some(found) = find_export(matter, &name)? {
        let id = found["id"]
            .as_str()
            .ok_or_else(|| StepError::fatal("Vault listed an export without an id"))?;
        kv::set(&key, id.as_bytes())?;
        log::info(&format!(
            "export {id} ({name}) was started before its id was recorded; using it"
        ));
        return Ok(found);
    }
    let body = json!({
        "name": name,
        "query": {
            "corpus": "MAIL",
            "dataScope": "ALL_DATA",
            "searchMethod": "ACCOUNT",
            "accountInfo": { "emails": [email] },
        },
        "exportOptions": { "mailOptions": { "exportFormat": "MBOX" } },
    });
    let created: Value = http::post(&format!("{matter}/exports"))
        .json(&body)?
        .send()?
        .error_for_status()?
        .json()?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| StepError::fatal("Vault returned an export without an id"))?;
    kv::set(&key, id.as_bytes())?;
    log::info(&format!("started export {id} of {email}"));
    Ok(created)
}

impl Step for MailHold {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let matter = matter(ctx)?;
        let email = email(ctx)?;
        let name = ctx.config("hold_name")?;
        let holds = find_holds(&matter, name)?;
        let holding = holds.iter().find(|h| holds_account(h, email)).cloned();
        let existing = holding.or_else(|| holds.first().cloned());
        let before = existing.as_ref().map(|h| hold_state(h, email));
        let (hold, action) = match existing {
            Some(h) if holds_account(&h, email) => (h, "already_held"),
            Some(h) => {
                let id = h["holdId"].as_str().unwrap_or_default().to_string();
                let added: Value =
                    http::post(&format!("{matter}/holds/{}:addHeldAccounts", encode(&id)))
                        .json(&json!({ "emails": [email] }))?
                        .send()?
                        .error_for_status()?
                        .json()?;
                if let Some(status) = added["responses"][0]["status"].as_object()
                    && status.get("code").and_then(Value::as_i64).unwrap_or(0) != 0
                {
                    return Err(StepError::fatal(format!(
                        "Vault did not add {email} to hold {id}: {}",
                        status
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("no message")
                    )));
                }
                let reread = find_holds(&matter, name)?
                    .into_iter()
                    .find(|r| r["holdId"] == h["holdId"])
                    .unwrap_or(h);
                (reread, "added_to_hold")
            }
            None => {
                let created: Value = http::post(&format!("{matter}/holds"))
                    .json(&json!({
                        "name": name,
                        "corpus": "MAIL",
                        "accounts": [{ "email": email }],
                    }))?
                    .send()?
                    .error_for_status()?
                    .json()?;
                (created, "hold_created")
            }
        };
        let exported = if ctx.config("export")? == "true" {
            Some(export(ctx, &matter, email)?)
        } else {
            None
        };
        let hold_id = hold["holdId"].clone();
        Ok(Outcome::new(
            json!({
                "hold_id": hold_id,
                "action": action,
                "export_id": exported.as_ref().map(|e| e["id"].clone()),
            }),
            Evidence::new(
                format!(
                    "mailbox {email} is on hold {hold_id} in matter {}",
                    ctx.config("matter_id")?
                ),
                format!("{matter}/holds/{}", hold_id.as_str().unwrap_or_default()),
            )
            .before(json!({ "hold": before }))
            .after(json!({
                "hold": hold_state(&hold, email),
                "export": exported.map(|e| json!({ "id": e["id"], "status": e["status"] })),
            })),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let matter = matter(ctx)?;
        let email = email(ctx)?;
        let name = ctx.config("hold_name")?;
        let holds = find_holds(&matter, name)?;
        if holds.is_empty() {
            return Err(StepError::fatal(format!(
                "matter has no hold named {name:?}"
            )));
        }
        let hold = holds
            .into_iter()
            .find(|h| holds_account(h, email))
            .ok_or_else(|| StepError::fatal(format!("no hold named {name:?} lists {email}")))?;
        let export = match kv::get(&format!("export/{}", ctx.idempotency_key))? {
            Some(id) => {
                let id = String::from_utf8_lossy(&id).into_owned();
                let e: Value = http::get(&format!("{matter}/exports/{}", encode(&id)))
                    .send()?
                    .error_for_status()?
                    .json()?;
                Some(json!({ "id": e["id"], "status": e["status"] }))
            }
            None => None,
        };
        Ok(Evidence::new(
            format!("verified: hold {name:?} lists {email}"),
            format!(
                "{matter}/holds/{}",
                hold["holdId"].as_str().unwrap_or_default()
            ),
        )
        .after(json!({ "hold": hold_state(&hold, email), "export": export })))
    }

    fn compensate(_ctx: &Context) -> Result<Evidence, StepError> {
        Err(StepError::fatal(
            "a legal hold is not released automatically; release it in Vault",
        ))
    }
}

itsm_sdk::export!(MailHold);
