//! Disable a leaver's Microsoft Entra ID account and end their sessions,
//! through Microsoft Graph v1.0.
//!
//! - `run`: `GET /v1.0/users/{upn}` (the ticket's subject); if enabled,
//!   `PATCH /v1.0/users/{id}` with `accountEnabled: false`; then always
//!   `POST /v1.0/users/{id}/revokeSignInSessions`, so refresh tokens and
//!   session cookies issued before the disable stop working too. Running it
//!   again changes nothing more: the step is idempotent.
//! - `verify`: read the account back and prove `accountEnabled` is false.
//! - `compensate`: undo only what this step's own run did, as its outputs
//!   record (`ctx.run_outputs()`): `PATCH accountEnabled: true` on the
//!   account the run disabled, by its object id (sessions stay revoked). An
//!   account that was already disabled or missing when the run looked was not
//!   changed by it: nothing to undo, success, said so in the evidence.
//!
//! Graph application permissions: `User.ReadWrite.All` (read, disable) and
//! `User.RevokeSessions.All` (revoke). 429 and 5xx are retried after
//! `Retry-After`. See docs/connectors/entra-disable.md.

use itsm_sdk::http::encode;
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log};
use serde_json::{Value, json};

struct EntraDisable;

/// Fields read and shown as evidence.
const SELECT: &str = "id,userPrincipalName,displayName,accountEnabled";

fn graph(ctx: &Context) -> Result<String, StepError> {
    Ok(format!(
        "{}/v1.0",
        ctx.config("graph_url")?.trim_end_matches('/')
    ))
}

/// The account, or `None` when the directory has no such user.
fn read_user(graph: &str, upn: &str) -> Result<Option<Value>, StepError> {
    if upn.is_empty() {
        return Err(StepError::fatal(
            "the ticket has no subject (userPrincipalName) to look up",
        ));
    }
    let resp = http::get(&format!("{graph}/users/{}?$select={SELECT}", encode(upn)))
        .header("accept", "application/json")
        .send()?;
    if resp.status == 404 {
        return Ok(None);
    }
    Ok(Some(resp.error_for_status()?.json()?))
}

fn state(user: &Value) -> Value {
    json!({
        "id": user["id"],
        "userPrincipalName": user["userPrincipalName"],
        "accountEnabled": user["accountEnabled"],
    })
}

fn id_of(user: &Value) -> Result<String, StepError> {
    user["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StepError::fatal("Graph returned a user without an id"))
}

fn set_enabled(graph: &str, id: &str, enabled: bool) -> Result<(), StepError> {
    http::patch(&format!("{graph}/users/{}", encode(id)))
        .json(&json!({ "accountEnabled": enabled }))?
        .send()?
        .error_for_status()?;
    Ok(())
}

impl Step for EntraDisable {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let graph = graph(ctx)?;
        let Some(user) = read_user(&graph, &ctx.subject)? else {
            log::info(&format!(
                "no Entra user {:?}: nothing to disable",
                ctx.subject
            ));
            return Ok(Outcome::new(
                json!({ "found": false, "action": "none" }),
                Evidence::new(
                    format!("no Entra ID user {:?}: already gone", ctx.subject),
                    format!("{graph}/users/{}", encode(&ctx.subject)),
                )
                .after(json!({ "present": false })),
            ));
        };
        let id = id_of(&user)?;
        let location = format!("{graph}/users/{id}");
        let before = state(&user);
        let was_enabled = user["accountEnabled"] != json!(false);
        if was_enabled {
            set_enabled(&graph, &id, false)?;
            log::info(&format!("disabled Entra user {id} ({})", ctx.subject));
        }
        let revoked: Value = http::post(&format!("{location}/revokeSignInSessions"))
            .header("accept", "application/json")
            .send()?
            .error_for_status()?
            .json()
            .unwrap_or(Value::Null);
        let after = json!({
            "id": id,
            "userPrincipalName": user["userPrincipalName"],
            "accountEnabled": false,
            "signInSessionsRevoked": revoked["value"] == json!(true) || revoked.is_null(),
        });
        let summary = if was_enabled {
            format!(
                "Entra ID account {} disabled and its sign-in sessions revoked",
                ctx.subject
            )
        } else {
            format!(
                "Entra ID account {} was already disabled; sign-in sessions revoked",
                ctx.subject
            )
        };
        Ok(Outcome::new(
            json!({
                "found": true,
                "user_id": id,
                "action": if was_enabled { "disabled" } else { "already_disabled" },
            }),
            Evidence::new(summary, &location)
                .before(before)
                .after(after),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let graph = graph(ctx)?;
        let Some(user) = read_user(&graph, &ctx.subject)? else {
            return Ok(Evidence::new(
                format!("verified: no Entra ID user {:?}", ctx.subject),
                format!("{graph}/users/{}", encode(&ctx.subject)),
            )
            .after(json!({ "present": false })));
        };
        if user["accountEnabled"] != json!(false) {
            return Err(StepError::fatal(format!(
                "Entra ID account {} is still enabled",
                ctx.subject
            )));
        }
        Ok(Evidence::new(
            format!(
                "verified: Entra ID account {} has accountEnabled=false",
                ctx.subject
            ),
            format!("{graph}/users/{}", id_of(&user)?),
        )
        .after(state(&user)))
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        let graph = graph(ctx)?;
        let did = ctx.run_outputs().cloned().unwrap_or(Value::Null);
        let action = did["action"].as_str().unwrap_or("");
        let id = did["user_id"].as_str().unwrap_or("");
        if action != "disabled" || id.is_empty() {
            let why = match action {
                "" => "there is no record of this step's run changing anything".to_string(),
                "none" => format!("the run found no Entra ID user {:?}", ctx.subject),
                "already_disabled" => format!(
                    "Entra ID account {} was already disabled before this step; it stays disabled",
                    ctx.subject
                ),
                other => format!("the run recorded action {other:?}, not a disable"),
            };
            return Ok(Evidence::new(
                format!("nothing to undo: {why}"),
                format!("{graph}/users/{}", encode(&ctx.subject)),
            ));
        }
        let location = format!("{graph}/users/{}", encode(id));
        // By the object id the run recorded, which a rename does not change.
        let Some(user) = read_user(&graph, id)? else {
            return Ok(Evidence::new(
                format!(
                    "nothing to undo: Entra ID account {id}, disabled by this step, no longer exists"
                ),
                &location,
            )
            .after(json!({ "present": false })));
        };
        if user["accountEnabled"] != json!(false) {
            return Ok(Evidence::new(
                format!(
                    "nothing to undo: Entra ID account {} is already enabled again",
                    ctx.subject
                ),
                &location,
            )
            .before(state(&user))
            .after(state(&user)));
        }
        set_enabled(&graph, id, true)?;
        let after = read_user(&graph, id)?.unwrap_or_default();
        log::info(&format!("re-enabled Entra user {id} ({})", ctx.subject));
        Ok(Evidence::new(
            format!(
                "Entra ID account {} re-enabled: this step had disabled it (sign-in sessions stay revoked)",
                ctx.subject
            ),
            &location,
        )
        .before(state(&user))
        .after(state(&after)))
    }
}

itsm_sdk::export!(EntraDisable);
