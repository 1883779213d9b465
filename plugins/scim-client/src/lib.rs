//! What the SCIM 2.0 (RFC 7644) plugins share: finding a user by
//! `userName`, the `active` patch, and a user's state as evidence shows it.
//! `scim-deprovision` takes access away with it; `scim-provision` grants it.
//!
//! 429 and 5xx are retryable and carry `Retry-After`; other 4xx are fatal.

use itsm_sdk::http::encode;
use itsm_sdk::{Context, Evidence, StepError, http};
use serde_json::{Value, json};

/// SCIM's media type.
pub const SCIM_JSON: &str = "application/scim+json";
/// A PATCH request's schema.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// A user's core schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// A user as found by the `userName` filter.
pub struct Found {
    /// Its SCIM id.
    pub id: String,
    /// `{base}/Users/{id}`.
    pub location: String,
    /// The resource as listed.
    pub resource: Value,
}

/// The configured SCIM base URL, without a trailing `/`.
pub fn base(ctx: &Context) -> Result<String, StepError> {
    Ok(ctx.config("base_url")?.trim_end_matches('/').to_string())
}

/// `{base}/Users/{id}`.
pub fn location(base: &str, id: &str) -> String {
    format!("{base}/Users/{}", encode(id))
}

/// `GET /Users?filter=userName eq "..."` (RFC 7644 §3.4.2.2): the one user
/// with that name, none, or a fatal error if the service is ambiguous.
pub fn find(base: &str, user_name: &str) -> Result<Option<Found>, StepError> {
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
                location: location(base, &id),
                id,
                resource,
            }))
        }
        n => Err(StepError::fatal(format!(
            "{n} SCIM users have userName {user_name:?}; refusing to guess"
        ))),
    }
}

/// The PATCH that sets `active`.
pub fn active_patch(active: bool) -> Value {
    json!({
        "schemas": [PATCH_OP],
        "Operations": [{ "op": "replace", "path": "active", "value": active }]
    })
}

/// A user's state, as evidence records it.
pub fn state(user: &Value) -> Value {
    json!({
        "id": user["id"],
        "userName": user["userName"],
        "active": user["active"],
        "lastModified": user["meta"]["lastModified"],
    })
}

/// `GET` the user at `location`: its resource, or `None` once it is gone.
pub fn read(location: &str) -> Result<Option<Value>, StepError> {
    let resp = http::get(location).header("accept", SCIM_JSON).send()?;
    if resp.status == 404 {
        return Ok(None);
    }
    Ok(Some(resp.error_for_status()?.json()?))
}

/// PATCH `active` of the user at `location`: its state after, or `None`
/// when it is gone. A service that accepts the PATCH but reports the old
/// value is a fatal error.
pub fn set_active(location: &str, id: &str, active: bool) -> Result<Option<Value>, StepError> {
    let resp = http::patch(location)
        .header("accept", SCIM_JSON)
        .json_as(&active_patch(active), SCIM_JSON)?
        .send()?;
    if resp.status == 404 {
        return Ok(None);
    }
    let resp = resp.error_for_status()?;
    // 200 carries the updated resource; 204 does not (RFC 7644 §3.5.2).
    if resp.status == 204 {
        return Ok(Some(json!({ "id": id, "active": active })));
    }
    let updated: Value = resp.json()?;
    if updated["active"] != json!(active) {
        return Err(StepError::fatal(format!(
            "{location} accepted the PATCH but still reports active={}",
            updated["active"]
        )));
    }
    Ok(Some(state(&updated)))
}

/// `verify`'s proof that `user`, read at `found.location`, has `active`
/// as wanted, or the fatal error saying it does not.
pub fn prove_active(
    found: &Found,
    user: &Value,
    subject: &str,
    want: bool,
) -> Result<Evidence, StepError> {
    if user["active"] != json!(want) {
        let is = if want {
            "is not active"
        } else {
            "is still active"
        };
        return Err(StepError::fatal(format!(
            "SCIM user {} ({subject}) {is} (active={})",
            found.id, user["active"]
        )));
    }
    Ok(Evidence::new(
        format!(
            "verified: SCIM user {} ({subject}) has active={want}",
            found.id
        ),
        &found.location,
    )
    .after(state(user)))
}
