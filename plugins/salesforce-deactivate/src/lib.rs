//! Deactivate a leaver in Salesforce through the REST API.
//!
//! - `run`: SOQL `SELECT Id, Username, IsActive FROM User WHERE Username =
//!   '{subject}'`; freeze the login first (`PATCH sobjects/UserLogin/{id}`
//!   `IsFrozen: true`), which takes effect at once even where deactivation
//!   is blocked (a user still referenced by workflow rules, for one), then
//!   `PATCH sobjects/User/{id}` `IsActive: false`. Both are idempotent.
//! - `verify`: `GET sobjects/User/{id}` and prove `IsActive` is false.
//! - `compensate`: undo only what this step's own run did, as its outputs
//!   record (`ctx.run_outputs()`): reactivate the user if the run
//!   deactivated it, then unfreeze the login if the run froze it. A user that
//!   was already inactive (or a login already frozen) before the ticket stays
//!   so; a run that found no user or changed nothing leaves nothing to undo
//!   (success, said so in the evidence).
//!
//! Needs a connected app with the client credentials flow, run as a user
//! with "Manage Users". See docs/connectors/salesforce-deactivate.md.

use itsm_sdk::http::encode;
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log};
use serde_json::{Value, json};

struct SalesforceDeactivate;

fn api(ctx: &Context) -> Result<String, StepError> {
    Ok(format!(
        "{}/services/data/{}",
        ctx.config("instance_url")?.trim_end_matches('/'),
        ctx.config("api_version")?
    ))
}

/// A SOQL string literal: backslash and quote escaped.
fn soql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `error_for_status`, plus Salesforce's own rate limit: an org out of API
/// calls answers 403 `REQUEST_LIMIT_EXCEEDED`, which clears with time.
fn check(resp: http::Response) -> Result<http::Response, StepError> {
    if resp.status == 403 && resp.text().contains("REQUEST_LIMIT_EXCEEDED") {
        return Err(StepError::retry_after(
            format!(
                "{} answered REQUEST_LIMIT_EXCEEDED: the org is out of API calls",
                resp.url
            ),
            std::time::Duration::from_secs(300),
        ));
    }
    resp.error_for_status()
}

fn query(api: &str, soql: &str) -> Result<Vec<Value>, StepError> {
    let result: Value = check(
        http::get(&format!("{api}/query?q={}", encode(soql)))
            .header("accept", "application/json")
            .send()?,
    )?
    .json()?;
    Ok(result["records"].as_array().cloned().unwrap_or_default())
}

/// The user with this username, if any.
fn find_user(api: &str, username: &str) -> Result<Option<Value>, StepError> {
    if username.is_empty() {
        return Err(StepError::fatal(
            "the ticket has no subject (username) to look up",
        ));
    }
    let mut users = query(
        api,
        &format!(
            "SELECT Id, Username, IsActive FROM User WHERE Username = {}",
            soql_literal(username)
        ),
    )?;
    match users.len() {
        0 => Ok(None),
        1 => Ok(users.pop()),
        n => Err(StepError::fatal(format!(
            "{n} users have username {username:?}"
        ))),
    }
}

/// The user's login record (where `IsFrozen` lives).
fn find_login(api: &str, user_id: &str) -> Result<Option<Value>, StepError> {
    Ok(query(
        api,
        &format!(
            "SELECT Id, IsFrozen FROM UserLogin WHERE UserId = {}",
            soql_literal(user_id)
        ),
    )?
    .into_iter()
    .next())
}

fn id_of(record: &Value) -> Result<String, StepError> {
    record["Id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StepError::fatal("Salesforce returned a record without an Id"))
}

fn patch(api: &str, object: &str, id: &str, body: Value) -> Result<(), StepError> {
    http::patch(&format!("{api}/sobjects/{object}/{}", encode(id)))
        .json(&body)?
        .send()
        .and_then(check)?;
    Ok(())
}

fn read_user(api: &str, id: &str) -> Result<Value, StepError> {
    http::get(&format!(
        "{api}/sobjects/User/{}?fields=Id,Username,IsActive",
        encode(id)
    ))
    .header("accept", "application/json")
    .send()
    .and_then(check)?
    .json()
}

fn state(user: &Value, login: Option<&Value>) -> Value {
    json!({
        "Id": user["Id"],
        "Username": user["Username"],
        "IsActive": user["IsActive"],
        "IsFrozen": login.map(|l| l["IsFrozen"].clone()),
    })
}

impl Step for SalesforceDeactivate {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let api = api(ctx)?;
        let Some(user) = find_user(&api, &ctx.subject)? else {
            log::info(&format!(
                "no Salesforce user {:?}: nothing to do",
                ctx.subject
            ));
            return Ok(Outcome::new(
                json!({ "found": false, "action": "none" }),
                Evidence::new(
                    format!("no Salesforce user with username {:?}", ctx.subject),
                    format!("{api}/query"),
                )
                .after(json!({ "present": false })),
            ));
        };
        let id = id_of(&user)?;
        let login = find_login(&api, &id)?;
        let before = state(&user, login.as_ref());
        let login_id = login.as_ref().map(id_of).transpose()?;
        let mut froze = false;
        if let (Some(l), Some(login_id)) = (&login, &login_id)
            && l["IsFrozen"] != json!(true)
        {
            patch(&api, "UserLogin", login_id, json!({ "IsFrozen": true }))?;
            froze = true;
            log::info(&format!("froze the login of Salesforce user {id}"));
        }
        let was_active = user["IsActive"] != json!(false);
        if was_active {
            patch(&api, "User", &id, json!({ "IsActive": false }))?;
            log::info(&format!("deactivated Salesforce user {id}"));
        }
        let after_user = read_user(&api, &id)?;
        let after_login = find_login(&api, &id)?;
        Ok(Outcome::new(
            json!({
                "found": true,
                "user_id": id,
                "action": if was_active { "deactivated" } else { "already_inactive" },
                "login_id": login_id,
                "froze_login": froze,
            }),
            Evidence::new(
                format!("Salesforce user {} frozen and deactivated", ctx.subject),
                format!("{api}/sobjects/User/{id}"),
            )
            .before(before)
            .after(state(&after_user, after_login.as_ref())),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let api = api(ctx)?;
        let Some(found) = find_user(&api, &ctx.subject)? else {
            return Ok(Evidence::new(
                format!("verified: no Salesforce user {:?}", ctx.subject),
                format!("{api}/query"),
            )
            .after(json!({ "present": false })));
        };
        let id = id_of(&found)?;
        let user = read_user(&api, &id)?;
        if user["IsActive"] != json!(false) {
            return Err(StepError::fatal(format!(
                "Salesforce user {} is still active",
                ctx.subject
            )));
        }
        let login = find_login(&api, &id)?;
        Ok(Evidence::new(
            format!(
                "verified: Salesforce user {} has IsActive=false",
                ctx.subject
            ),
            format!("{api}/sobjects/User/{id}"),
        )
        .after(state(&user, login.as_ref())))
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        let api = api(ctx)?;
        let did = ctx.run_outputs().cloned().unwrap_or(Value::Null);
        let action = did["action"].as_str().unwrap_or("");
        let id = did["user_id"].as_str().unwrap_or("");
        let reactivate = action == "deactivated" && !id.is_empty();
        let unfreeze = did["froze_login"] == json!(true) && did["login_id"].is_string();
        if !reactivate && !unfreeze {
            let why = match action {
                "" => "there is no record of this step's run changing anything".to_string(),
                "none" => format!("the run found no Salesforce user {:?}", ctx.subject),
                "already_inactive" => format!(
                    "Salesforce user {} was already inactive before this step and the run froze no login; it stays inactive",
                    ctx.subject
                ),
                other => format!("the run recorded action {other:?}, not a deactivation"),
            };
            return Ok(Evidence::new(
                format!("nothing to undo: {why}"),
                format!("{api}/query"),
            ));
        }
        let target = format!("{api}/sobjects/User/{id}");
        let resp = http::get(&format!(
            "{api}/sobjects/User/{}?fields=Id,Username,IsActive",
            encode(id)
        ))
        .header("accept", "application/json")
        .send()?;
        if resp.status == 404 {
            return Ok(Evidence::new(
                format!(
                    "nothing to undo: Salesforce user {id}, changed by this step, no longer exists"
                ),
                &target,
            )
            .after(json!({ "present": false })));
        }
        let user: Value = check(resp)?.json()?;
        let login = find_login(&api, id)?;
        let before = state(&user, login.as_ref());
        let mut undone = Vec::new();
        if reactivate && user["IsActive"] == json!(false) {
            patch(&api, "User", id, json!({ "IsActive": true }))?;
            undone.push("reactivated");
        }
        if unfreeze && login.as_ref().is_some_and(|l| l["IsFrozen"] == json!(true)) {
            let login_id = did["login_id"].as_str().unwrap_or("");
            patch(&api, "UserLogin", login_id, json!({ "IsFrozen": false }))?;
            undone.push("unfrozen");
        }
        let after = state(&read_user(&api, id)?, find_login(&api, id)?.as_ref());
        let summary = match (reactivate, unfreeze, undone.is_empty()) {
            (_, _, true) => format!(
                "nothing to undo: Salesforce user {} is already back as it was before this step",
                ctx.subject
            ),
            (true, false, false) => format!(
                "Salesforce user {} reactivated; its login was already frozen before this step and stays frozen",
                ctx.subject
            ),
            (false, true, false) => format!(
                "Salesforce user {} unfrozen; it was already inactive before this step and stays inactive",
                ctx.subject
            ),
            _ => format!(
                "Salesforce user {} {}: this step had changed it",
                ctx.subject,
                undone.join(" and ")
            ),
        };
        log::info(&summary);
        Ok(Evidence::new(summary, target).before(before).after(after))
    }
}

itsm_sdk::export!(SalesforceDeactivate);
