//! Disable a leaver's Microsoft Entra ID account and end their sessions,
//! through Microsoft Graph v1.0.
//!
//! - `run`: `GET /v1.0/users/{upn}` (the ticket's subject); if enabled,
//!   `PATCH /v1.0/users/{id}` with `accountEnabled: false`; then always
//!   `POST /v1.0/users/{id}/revokeSignInSessions`, so refresh tokens and
//!   session cookies issued before the disable stop working too. Running it
//!   again changes nothing more: the step is idempotent.
//! - `verify`: read the account back and prove `accountEnabled` is false.
//! - `compensate`: `PATCH accountEnabled: true` (sessions stay revoked).
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
        let Some(user) = read_user(&graph, &ctx.subject)? else {
            return Err(StepError::fatal(format!(
                "no Entra ID user {:?} to re-enable",
                ctx.subject
            )));
        };
        let id = id_of(&user)?;
        set_enabled(&graph, &id, true)?;
        let after = read_user(&graph, &ctx.subject)?.unwrap_or_default();
        Ok(Evidence::new(
            format!("Entra ID account {} re-enabled", ctx.subject),
            format!("{graph}/users/{id}"),
        )
        .before(state(&user))
        .after(state(&after)))
    }
}

itsm_sdk::export!(EntraDisable);
