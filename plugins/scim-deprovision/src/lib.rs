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

use itsm_sdk::http::encode;
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log};
use serde_json::{Value, json};

const SCIM_JSON: &str = "application/scim+json";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct ScimDeprovision;

/// A user as found by the `userName` filter.
struct Found {
    id: String,
    location: String,
    resource: Value,
}

fn base(ctx: &Context) -> Result<String, StepError> {
    Ok(ctx.config("base_url")?.trim_end_matches('/').to_string())
}

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

/// `GET /Users?filter=userName eq "..."` (RFC 7644 §3.4.2.2).
fn find(base: &str, user_name: &str) -> Result<Option<Found>, StepError> {
    if user_name.is_empty() {
        return Err(StepError::fatal(
            "the ticket has no subject (userName) to look up",
        ));
    }
    let escaped = user_name.replace('\\', "\\\\").replace('"', "\\\"");
    let filter = format!("userName eq \"{escaped}\"");
    let url = format!("{base}/Users?filter={}", encode(&filter));
    let list: Value = http::get(&url)
        .header("accept", SCIM_JSON)
        .send()?
        .error_for_status()?
        .json()?;
    let total = list["totalResults"].as_u64().unwrap_or(0);
    let resources = list["Resources"].as_array().cloned().unwrap_or_default();
    let matches: Vec<Value> = resources
        .into_iter()
        .filter(|r| {
            r["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        })
        .collect();
    match matches.len() {
        0 if total == 0 => Ok(None),
        0 => Err(StepError::fatal(format!(
            "{base} reported {total} results for userName {user_name:?} but returned none that match"
        ))),
        1 => {
            let resource = matches.into_iter().next().unwrap_or_default();
            let id = resource["id"]
                .as_str()
                .ok_or_else(|| StepError::fatal("SCIM user without an id"))?
                .to_string();
            Ok(Some(Found {
                location: format!("{base}/Users/{}", encode(&id)),
                id,
                resource,
            }))
        }
        n => Err(StepError::fatal(format!(
            "{n} SCIM users have userName {user_name:?}; refusing to guess"
        ))),
    }
}

fn active_patch(active: bool) -> Value {
    json!({
        "schemas": [PATCH_OP],
        "Operations": [{ "op": "replace", "path": "active", "value": active }]
    })
}

fn state(user: &Value) -> Value {
    json!({
        "id": user["id"],
        "userName": user["userName"],
        "active": user["active"],
        "lastModified": user["meta"]["lastModified"],
    })
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
        let resp = http::patch(&user.location)
            .header("accept", SCIM_JSON)
            .json_as(&active_patch(false), SCIM_JSON)?
            .send()?;
        if resp.status == 404 {
            return Ok(Outcome::new(
                outputs("already_gone"),
                Evidence::new(
                    format!("SCIM user {} vanished before deactivation", user.id),
                    &user.location,
                )
                .before(before)
                .after(json!({ "present": false })),
            ));
        }
        let resp = resp.error_for_status()?;
        // 200 carries the updated resource; 204 does not (RFC 7644 §3.5.2).
        let after = if resp.status == 204 {
            json!({ "id": user.id, "active": false })
        } else {
            let updated: Value = resp.json()?;
            if updated["active"] != json!(false) {
                return Err(StepError::fatal(format!(
                    "{} accepted the PATCH but still reports active={}",
                    user.location, updated["active"]
                )));
            }
            state(&updated)
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
        let resp = http::get(&found.location)
            .header("accept", SCIM_JSON)
            .send()?;
        if resp.status == 404 {
            return Ok(Evidence::new(
                format!("verified: SCIM user {} is gone", found.id),
                &found.location,
            )
            .after(json!({ "present": false })));
        }
        let user: Value = resp.error_for_status()?.json()?;
        if user["active"] != json!(false) {
            return Err(StepError::fatal(format!(
                "SCIM user {} ({}) is still active",
                found.id, ctx.subject
            )));
        }
        Ok(Evidence::new(
            format!(
                "verified: SCIM user {} ({}) has active=false",
                found.id, ctx.subject
            ),
            &found.location,
        )
        .after(state(&user)))
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
        let location = format!("{base}/Users/{}", encode(id));
        let resp = http::get(&location).header("accept", SCIM_JSON).send()?;
        if resp.status == 404 {
            return Ok(Evidence::new(
                format!(
                    "nothing to undo: SCIM user {id}, deactivated by this step, no longer exists"
                ),
                &location,
            )
            .after(json!({ "present": false })));
        }
        let user: Value = resp.error_for_status()?.json()?;
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
        let resp = http::patch(&location)
            .header("accept", SCIM_JSON)
            .json_as(&active_patch(true), SCIM_JSON)?
            .send()?
            .error_for_status()?;
        let updated = if resp.status == 204 {
            json!({ "id": id, "active": true })
        } else {
            let updated: Value = resp.json()?;
            if updated["active"] != json!(true) {
                return Err(StepError::fatal(format!(
                    "{location} accepted the PATCH but still reports active={}",
                    updated["active"]
                )));
            }
            state(&updated)
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
