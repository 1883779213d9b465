//! Wipe a leaver's Intune-managed devices through Microsoft Graph v1.0
//! device management. Irreversible: put the step behind an approval.
//!
//! - `run`: `GET /v1.0/deviceManagement/managedDevices?$filter=userPrincipalName
//!   eq '{upn}'`, then for each device `POST .../managedDevices/{id}/wipe`,
//!   unless the device already shows a wipe in `deviceActionResults` (a
//!   retry after a crash must not wipe twice; Intune would queue it again).
//! - `verify`: read each device back and prove a `wipe` action is recorded
//!   as `pending`, `active` or `done`; `failed`, `canceled` or
//!   `notSupported` fail the step, anything else (`none`) is retried.
//! - no `compensate`: a wipe cannot be undone.
//!
//! With `mode = "find"` the step only looks: `run` lists the devices and
//! returns `{"managed": bool, "devices": n, "ids": [...]}` (a later step's
//! condition reads it, so a leaver with no managed device is not wiped and
//! security is not asked), `verify` reads the list again and proves it
//! unchanged, and there is nothing to undo.
//!
//! Graph application permissions: `DeviceManagementManagedDevices.Read.All`
//! and `DeviceManagementManagedDevices.PrivilegedOperations.All`.

use itsm_sdk::http::encode;
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log};
use serde_json::{Value, json};

struct IntuneWipe;

const SELECT: &str =
    "id,deviceName,operatingSystem,userPrincipalName,managementState,deviceActionResults";

fn graph(ctx: &Context) -> Result<String, StepError> {
    Ok(format!(
        "{}/v1.0/deviceManagement/managedDevices",
        ctx.config("graph_url")?.trim_end_matches('/')
    ))
}

/// The subject's managed devices (every page).
fn devices(base: &str, upn: &str) -> Result<Vec<Value>, StepError> {
    if upn.is_empty() {
        return Err(StepError::fatal(
            "the ticket has no subject (userPrincipalName) to look up",
        ));
    }
    // OData string literals double their single quotes.
    let filter = format!("userPrincipalName eq '{}'", upn.replace('\'', "''"));
    let mut url = format!(
        "{base}?$filter={}&$select={}",
        encode(&filter),
        encode(SELECT)
    );
    let mut all = Vec::new();
    for _ in 0..50 {
        let page: Value = http::get(&url)
            .header("accept", "application/json")
            .send()?
            .error_for_status()?
            .json()?;
        all.extend(page["value"].as_array().cloned().unwrap_or_default());
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => return Ok(all),
        }
    }
    Err(StepError::fatal(
        "more than 50 pages of devices; refusing to go on",
    ))
}

/// The latest wipe recorded on a device, if any.
fn wipe_state(device: &Value) -> Option<String> {
    device["deviceActionResults"]
        .as_array()?
        .iter()
        .rev()
        .find(|a| a["actionName"].as_str() == Some("wipe"))
        .map(|a| a["actionState"].as_str().unwrap_or("unknown").to_string())
}

fn state(device: &Value) -> Value {
    json!({
        "id": device["id"],
        "deviceName": device["deviceName"],
        "operatingSystem": device["operatingSystem"],
        "managementState": device["managementState"],
        "wipe": wipe_state(device),
    })
}

fn id_of(device: &Value) -> Result<&str, StepError> {
    device["id"]
        .as_str()
        .ok_or_else(|| StepError::fatal("Graph returned a device without an id"))
}

/// `mode = "find"`: the step only looks.
fn finding(ctx: &Context) -> Result<bool, StepError> {
    match ctx.config("mode")? {
        "wipe" => Ok(false),
        "find" => Ok(true),
        other => Err(StepError::fatal(format!(
            "config `mode` is {other:?}: use \"wipe\" or \"find\""
        ))),
    }
}

fn ids(found: &[Value]) -> Result<Vec<String>, StepError> {
    found.iter().map(|d| id_of(d).map(str::to_string)).collect()
}

fn find(ctx: &Context, base: &str) -> Result<Outcome, StepError> {
    let found = devices(base, &ctx.subject)?;
    let ids = ids(&found)?;
    Ok(Outcome::new(
        json!({ "managed": !found.is_empty(), "devices": found.len(), "ids": ids }),
        Evidence::new(
            format!(
                "{} has {} Intune-managed device(s)",
                ctx.subject,
                found.len()
            ),
            format!("{base}?$filter=userPrincipalName eq '{}'", ctx.subject),
        )
        .after(json!(found.iter().map(state).collect::<Vec<_>>())),
    ))
}

impl Step for IntuneWipe {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let base = graph(ctx)?;
        if finding(ctx)? {
            return find(ctx, &base);
        }
        let keep = ctx.config("keep_enrollment_data")? == "true";
        let found = devices(&base, &ctx.subject)?;
        let before: Vec<Value> = found.iter().map(state).collect();
        let mut wiped = Vec::new();
        let mut already = Vec::new();
        for d in &found {
            let id = id_of(d)?;
            if let Some(s @ ("pending" | "active" | "done")) = wipe_state(d).as_deref() {
                log::info(&format!(
                    "device {id} already has a wipe ({s}); not sending another"
                ));
                already.push(id.to_string());
                continue;
            }
            http::post(&format!("{base}/{}/wipe", encode(id)))
                .json(&json!({ "keepEnrollmentData": keep, "keepUserData": false }))?
                .send()?
                .error_for_status()?;
            log::info(&format!("wipe sent to device {id} ({})", d["deviceName"]));
            wiped.push(id.to_string());
        }
        let after: Vec<Value> = devices(&base, &ctx.subject)?.iter().map(state).collect();
        let summary = match (found.len(), wiped.len()) {
            (0, _) => format!(
                "{} has no Intune-managed devices: nothing to wipe",
                ctx.subject
            ),
            (n, w) => format!(
                "wipe sent to {w} of {n} Intune-managed device(s) of {} ({} already wiping)",
                ctx.subject,
                already.len()
            ),
        };
        Ok(Outcome::new(
            json!({ "devices": found.len(), "wiped": wiped, "already_wiping": already }),
            Evidence::new(
                summary,
                format!("{base}?$filter=userPrincipalName eq '{}'", ctx.subject),
            )
            .before(json!(before))
            .after(json!(after)),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let base = graph(ctx)?;
        if finding(ctx)? {
            let now = ids(&devices(&base, &ctx.subject)?)?;
            let found = ctx
                .run_outputs()
                .map(|o| o["ids"].clone())
                .unwrap_or_default();
            if json!(now) != found {
                return Err(StepError::retryable(format!(
                    "the devices of {} changed since they were listed: {found} then, {} now",
                    ctx.subject,
                    json!(now)
                )));
            }
            return Ok(Evidence::new(
                format!(
                    "verified: {} still has {} managed device(s)",
                    ctx.subject,
                    now.len()
                ),
                format!("{base}?$filter=userPrincipalName eq '{}'", ctx.subject),
            )
            .after(json!(now)));
        }
        let mut proof = Vec::new();
        for d in devices(&base, &ctx.subject)? {
            let id = id_of(&d)?;
            let device: Value =
                http::get(&format!("{base}/{}?$select={}", encode(id), encode(SELECT)))
                    .header("accept", "application/json")
                    .send()?
                    .error_for_status()?
                    .json()?;
            match wipe_state(&device).as_deref() {
                None => {
                    // Intune records the action a little after accepting it.
                    return Err(StepError::retryable(format!(
                        "device {id} shows no wipe action yet"
                    )));
                }
                Some(s @ ("failed" | "canceled" | "notSupported")) => {
                    return Err(StepError::fatal(format!("the wipe of device {id} is {s}")));
                }
                Some("pending" | "active" | "done") => proof.push(state(&device)),
                Some(other) => {
                    return Err(StepError::retryable(format!(
                        "device {id}'s wipe is {other}, not yet under way"
                    )));
                }
            }
        }
        Ok(Evidence::new(
            format!(
                "verified: every Intune-managed device of {} ({}) has a wipe recorded",
                ctx.subject,
                proof.len()
            ),
            format!("{base}?$filter=userPrincipalName eq '{}'", ctx.subject),
        )
        .after(json!(proof)))
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        if finding(ctx)? {
            return Ok(Evidence::new(
                "nothing to undo: the step only listed devices",
                format!(
                    "{}?$filter=userPrincipalName eq '{}'",
                    graph(ctx)?,
                    ctx.subject
                ),
            ));
        }
        Err(StepError::fatal("a device wipe cannot be undone"))
    }
}

itsm_sdk::export!(IntuneWipe);
