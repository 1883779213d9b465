//! SCIM 2.0 (RFC 7644) provisioning: give the ticket's subject access to a
//! service, the step of a self-service request.
//!
//! - `run`: find the user by `userName` (the subject). None: `POST /Users`
//!   an active user (with the subject as primary e-mail when it is one).
//!   Inactive: `PATCH` `active=true`. Active already: nothing to do,
//!   success with evidence saying so. Each is idempotent: a run repeated
//!   after a crash finds what the first one made.
//! - `verify`: read the user back and prove it exists with `active=true`.
//! - `compensate`: undo only what the run did, as its outputs record: delete
//!   the user it created, deactivate the user it re-activated.

use itsm_scim_client::{
    SCIM_JSON, USER_SCHEMA, base, find, location, prove_active, read, set_active, state,
};
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log};
use serde_json::{Value, json};

struct ScimProvision;

impl Step for ScimProvision {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let base = base(ctx)?;
        let outputs = |id: &str, action: &str| json!({ "scim_id": id, "action": action });
        let Some(user) = find(&base, &ctx.subject)? else {
            let mut body = json!({
                "schemas": [USER_SCHEMA],
                "userName": ctx.subject,
                "active": true,
            });
            if ctx.subject.contains('@') {
                body["emails"] = json!([{ "value": ctx.subject, "primary": true }]);
            }
            let resp = http::post(&format!("{base}/Users"))
                .header("accept", SCIM_JSON)
                .json_as(&body, SCIM_JSON)?
                .send()?;
            if resp.status == 409 {
                // Made meanwhile (by an earlier attempt of this call that
                // died before it answered): the next attempt finds it.
                return Err(StepError::retryable(format!(
                    "{base}/Users answered 409 for {:?}: made meanwhile, looking again",
                    ctx.subject
                )));
            }
            let created: Value = resp.error_for_status()?.json()?;
            let id = created["id"]
                .as_str()
                .ok_or_else(|| StepError::fatal("the SCIM service made a user without an id"))?
                .to_string();
            log::info(&format!("created SCIM user {id} ({})", ctx.subject));
            return Ok(Outcome::new(
                outputs(&id, "created"),
                Evidence::new(
                    format!("SCIM user {id} ({}) created, active", ctx.subject),
                    location(&base, &id),
                )
                .before(json!({ "present": false }))
                .after(state(&created)),
            ));
        };
        let before = state(&user.resource);
        if user.resource["active"] == json!(true) {
            return Ok(Outcome::new(
                outputs(&user.id, "already_active"),
                Evidence::new(
                    format!("SCIM user {} ({}) was already active", user.id, ctx.subject),
                    &user.location,
                )
                .before(before.clone())
                .after(before),
            ));
        }
        let after = set_active(&user.location, &user.id, true)?.ok_or_else(|| {
            StepError::retryable(format!(
                "SCIM user {} vanished before it could be activated; looking again",
                user.id
            ))
        })?;
        log::info(&format!(
            "activated SCIM user {} ({})",
            user.id, ctx.subject
        ));
        Ok(Outcome::new(
            outputs(&user.id, "activated"),
            Evidence::new(
                format!("SCIM user {} ({}) activated", user.id, ctx.subject),
                &user.location,
            )
            .before(before)
            .after(after),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let base = base(ctx)?;
        let found = find(&base, &ctx.subject)?
            .ok_or_else(|| StepError::fatal(format!("no SCIM user {:?} at {base}", ctx.subject)))?;
        // The resource itself, not the list view, for the proof.
        let user = read(&found.location)?
            .ok_or_else(|| StepError::fatal(format!("SCIM user {} is gone", found.id)))?;
        prove_active(&found, &user, &ctx.subject, true)
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        let base = base(ctx)?;
        let did = ctx.run_outputs().cloned().unwrap_or(Value::Null);
        let id = did["scim_id"].as_str().unwrap_or("");
        let at = location(&base, id);
        match did["action"].as_str().unwrap_or("") {
            "created" if !id.is_empty() => {
                let resp = http::delete(&at).send()?;
                if resp.status != 404 {
                    resp.error_for_status()?;
                }
                log::info(&format!("deleted SCIM user {id} ({})", ctx.subject));
                Ok(Evidence::new(
                    format!(
                        "SCIM user {id} ({}) deleted: this step had created it",
                        ctx.subject
                    ),
                    &at,
                )
                .after(json!({ "present": false })))
            }
            "activated" if !id.is_empty() => {
                let after = set_active(&at, id, false)?.unwrap_or(json!({ "present": false }));
                Ok(Evidence::new(
                    format!(
                        "SCIM user {id} ({}) deactivated again: this step had activated it",
                        ctx.subject
                    ),
                    &at,
                )
                .after(after))
            }
            other => Ok(Evidence::new(
                format!(
                    "nothing to undo: the run recorded {}",
                    if other.is_empty() {
                        "no change".to_string()
                    } else {
                        format!("{other:?}")
                    }
                ),
                format!("{base}/Users"),
            )),
        }
    }
}

itsm_sdk::export!(ScimProvision);
