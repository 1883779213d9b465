//! SCIM 2.0 (RFC 7644) deprovisioning, the interface most SaaS expose for
//! user lifecycle (Slack, Zoom, GitHub, Atlassian, ...).
//!
//! - `run`: find the user by `userName` (the ticket's subject), then either
//!   `PATCH` `active=false` (mode `deactivate`, the default) or `DELETE` it
//!   (mode `delete`). A user that is already inactive or gone is success,
//!   with evidence saying so: the step is idempotent by construction.
//! - `verify`: read the user back and prove `active=false`, or that it is gone.
//! - `compensate`: undo only what this step's own run did, as its outputs
//!   record (`ctx.run_outputs()`): re-activate the user the run deactivated,
//!   by its SCIM id. A user that was already inactive or missing when the run
//!   looked was not changed by it, so there is nothing to undo (success, said
//!   so in the evidence); a user the run deleted cannot be restored (fatal).
//!
//! 429 and 5xx are retryable and carry `Retry-After`; other 4xx are fatal.

use itsm_scim_client::{base, find, location, prove_active, read, set_active, state};
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log};
use serde_json::{Value, json};

struct ScimDeprovision;

fn mode(ctx: &Context) -> Result<&str, StepError> {
    match ctx
        .config
        .get("mode")
        .map(String::as_str)
        .unwrap_or("deactivate")
    {
        m @ ("deactivate" | "delete") => Ok(m),
        other => Err(StepError::fatal(format!(
            "config `mode` is {other:?}; use \"deactivate\" or \"delete\""
        ))),
    }
}

impl Step for ScimDeprovision {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let base = base(ctx)?;
        let mode = mode(ctx)?;
        let Some(user) = find(&base, &ctx.subject)? else {
            log::info(&format!(
                "no SCIM user {:?} at {base}: nothing to do",
                ctx.subject
            ));
            return Ok(Outcome::new(
                json!({ "found": false, "action": "none" }),
                Evidence::new(
                    format!("no SCIM user with userName {:?}: already gone", ctx.subject),
                    format!("{base}/Users"),
                )
                .after(json!({ "present": false })),
            ));
        };
        let before = state(&user.resource);
        let outputs = |action: &str| json!({ "found": true, "scim_id": user.id, "action": action });
        if mode == "delete" {
            let resp = http::delete(&user.location).send()?;
            if resp.status == 404 {
                log::info("user vanished before the delete: already gone");
            } else {
                resp.error_for_status()?;
            }
            return Ok(Outcome::new(
                outputs("deleted"),
                Evidence::new(
                    format!("SCIM user {} ({}) deleted", user.id, ctx.subject),
                    &user.location,
                )
                .before(before)
                .after(json!({ "present": false })),
            ));
        }
        if user.resource["active"] == json!(false) {
            return Ok(Outcome::new(
                outputs("already_inactive"),
                Evidence::new(
                    format!(
                        "SCIM user {} ({}) was already inactive",
                        user.id, ctx.subject
                    ),
                    &user.location,
                )
                .before(before.clone())
                .after(before),
            ));
        }
        let Some(after) = set_active(&user.location, &user.id, false)? else {
            return Ok(Outcome::new(
                outputs("already_gone"),
                Evidence::new(
                    format!("SCIM user {} vanished before deactivation", user.id),
                    &user.location,
                )
                .before(before)
                .after(json!({ "present": false })),
            ));
        };
        log::info(&format!(
            "deactivated SCIM user {} ({})",
            user.id, ctx.subject
        ));
        Ok(Outcome::new(
            outputs("deactivated"),
            Evidence::new(
                format!("SCIM user {} ({}) deactivated", user.id, ctx.subject),
                &user.location,
            )
            .before(before)
            .after(after),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let base = base(ctx)?;
        let Some(found) = find(&base, &ctx.subject)? else {
            return Ok(Evidence::new(
                format!("verified: no SCIM user with userName {:?}", ctx.subject),
                format!("{base}/Users"),
            )
            .after(json!({ "present": false })));
        };
        // Read the resource itself, not the list view, for the proof.
        let Some(user) = read(&found.location)? else {
            return Ok(Evidence::new(
                format!("verified: SCIM user {} is gone", found.id),
                &found.location,
            )
            .after(json!({ "present": false })));
        };
        prove_active(&found, &user, &ctx.subject, false)
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        let base = base(ctx)?;
        let did = ctx.run_outputs().cloned().unwrap_or(Value::Null);
        let action = did["action"].as_str().unwrap_or("");
        let id = did["scim_id"].as_str().unwrap_or("");
        match action {
            "deactivated" if !id.is_empty() => {}
            "deleted" => {
                return Err(StepError::fatal(format!(
                    "SCIM user {id} was deleted by this step; a deleted SCIM user cannot be restored by this plugin"
                )));
            }
            _ => {
                let why = match action {
                    "" => "there is no record of this step's run changing anything".to_string(),
                    "none" => format!("the run found no SCIM user {:?}", ctx.subject),
                    "already_inactive" => format!(
                        "SCIM user {id} ({}) was already inactive before this step; it stays inactive",
                        ctx.subject
                    ),
                    "already_gone" => format!("SCIM user {id} was gone before this step"),
                    other => format!("the run recorded action {other:?}, not a deactivation"),
                };
                return Ok(Evidence::new(
                    format!("nothing to undo: {why}"),
                    format!("{base}/Users"),
                ));
            }
        }
        let location = location(&base, id);
        let Some(user) = read(&location)? else {
            return Ok(Evidence::new(
                format!(
                    "nothing to undo: SCIM user {id}, deactivated by this step, no longer exists"
                ),
                &location,
            )
            .after(json!({ "present": false })));
        };
        if user["active"] != json!(false) {
            return Ok(Evidence::new(
                format!(
                    "nothing to undo: SCIM user {id} ({}) is already active again",
                    ctx.subject
                ),
                &location,
            )
            .before(state(&user))
            .after(state(&user)));
        }
        let Some(updated) = set_active(&location, id, true)? else {
            return Ok(Evidence::new(
                format!("nothing to undo: SCIM user {id} vanished before it could be re-activated"),
                &location,
            )
            .before(state(&user))
            .after(json!({ "present": false })));
        };
        log::info(&format!("re-activated SCIM user {id} ({})", ctx.subject));
        Ok(Evidence::new(
            format!(
                "SCIM user {id} ({}) re-activated: this step had deactivated it",
                ctx.subject
            ),
            &location,
        )
        .before(state(&user))
        .after(updated))
    }
}

itsm_sdk::export!(ScimDeprovision);
