//! Apply a change through a REST API described in config, prove it, and
//! roll it back: the first-party plugin of the change workflows.
//!
//! - `run`: reads the check first (the state before, for the evidence),
//!   then sends `apply` with `apply_body`, with the call's idempotency key
//!   in `Idempotency-Key` so a repeated call is the same change. Outputs
//!   what it sent and the status, so `compensate` knows a change was made.
//! - `verify`: sends `check` and compares each pointer of `expect` with
//!   the answer; a difference is fatal and names the pointer, the value
//!   and the expected one, so the ticket is undone (`on_failure =
//!   "compensate"`) rather than left half changed.
//! - `compensate`: sends `rollback` with `rollback_body` if the run made
//!   the change; a 404 means there is nothing left to undo.
//!
//! `{{NAME}}` in a path is the ticket's input NAME (or `{{subject}}`),
//! percent-encoded; in a body, a string that is exactly `{{NAME}}` becomes
//! the input's JSON value and `{{NAME}}` inside a longer string its text.
//! The body is parsed before it is filled in, so an input can never
//! change its shape. The host attaches the API token; the plugin never
//! sees it.

use itsm_sdk::http::{self, encode};
use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, log};
use serde_json::{Map, Value, json};

struct RestChange;

/// The value `{{name}}` stands for.
fn lookup(ctx: &Context, name: &str) -> Result<Value, StepError> {
    if name == "subject" {
        return Ok(Value::String(ctx.subject.clone()));
    }
    match ctx.inputs.get(name) {
        Some(Value::Null) | None => Err(StepError::fatal(format!(
            "the change names `{{{{{name}}}}}`, but the ticket has no input `{name}`"
        ))),
        Some(v) => Ok(v.clone()),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fill every `{{NAME}}` in `text` with `each(value)`.
fn fill(ctx: &Context, text: &str, each: &dyn Fn(&Value) -> String) -> Result<String, StepError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| StepError::fatal(format!("`{text}` has an unclosed `{{{{`")))?;
        out.push_str(&each(&lookup(ctx, after[..end].trim())?));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A JSON body template filled in value by value.
fn fill_json(ctx: &Context, v: &Value) -> Result<Value, StepError> {
    Ok(match v {
        Value::String(s) => {
            let t = s.trim();
            match t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
                Some(name) if !name.contains("{{") => lookup(ctx, name.trim())?,
                _ => Value::String(fill(ctx, s, &text_of)?),
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill_json(ctx, x))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), fill_json(ctx, x)?)))
                .collect::<Result<Map<_, _>, StepError>>()?,
        ),
        other => other.clone(),
    })
}

/// A request from config: `key` is `METHOD /path`, `body_key` its body.
struct Call {
    method: String,
    url: String,
    body: Option<Value>,
}

fn call(ctx: &Context, key: &str, body_key: Option<&str>) -> Result<Call, StepError> {
    let spec = ctx.config(key)?.trim();
    let (method, path) = spec.split_once(' ').ok_or_else(|| {
        StepError::fatal(format!(
            "config `{key}` = {spec:?} is not `METHOD /path` (e.g. `PUT /rules/{{{{rule_id}}}}`)"
        ))
    })?;
    let method = method.to_ascii_uppercase();
    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
        return Err(StepError::fatal(format!(
            "config `{key}`: `{method}` is not GET, POST, PUT, PATCH or DELETE"
        )));
    }
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(StepError::fatal(format!(
            "config `{key}`: the path {path:?} must start with `/` (it is under base_url)"
        )));
    }
    let base = ctx.config("base_url")?.trim_end_matches('/');
    let url = format!("{base}{}", fill(ctx, path, &|v| encode(&text_of(v)))?);
    let body = match body_key.map(|k| (k, ctx.config(k).unwrap_or("").trim())) {
        Some((_, "")) | None => None,
        Some((k, text)) => {
            let template: Value = serde_json::from_str(text)
                .map_err(|e| StepError::fatal(format!("config `{k}` is not JSON: {e}")))?;
            Some(fill_json(ctx, &template)?)
        }
    };
    Ok(Call { method, url, body })
}

impl Call {
    fn send(&self, idempotency_key: Option<&str>) -> Result<http::Response, StepError> {
        let mut req =
            http::Request::new(&self.method, &self.url).header("accept", "application/json");
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = &self.body {
            req = req.json(b)?;
        }
        req.send()
    }

    fn describe(&self) -> Value {
        json!({ "method": self.method, "url": self.url, "body": self.body })
    }
}

/// A response's body as JSON, or its text, for the evidence.
fn body_of(resp: &http::Response) -> Value {
    if resp.body.is_empty() {
        return Value::Null;
    }
    resp.json::<Value>()
        .unwrap_or_else(|_| Value::String(resp.text()))
}

/// The check's answer, if a check is configured.
fn read_check(ctx: &Context) -> Result<Option<(Call, Value)>, StepError> {
    if ctx.config("check").unwrap_or("").trim().is_empty() {
        return Ok(None);
    }
    let check = call(ctx, "check", None)?;
    let resp = check.send(None)?.error_for_status()?;
    let body = body_of(&resp);
    Ok(Some((check, body)))
}

impl Step for RestChange {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let apply = call(ctx, "apply", Some("apply_body"))?;
        // Checked before anything is sent: a change with no way back is
        // not made.
        let rollback = call(ctx, "rollback", Some("rollback_body"))?;
        let before = read_check(ctx)?.map(|(_, b)| b);
        let resp = apply.send(Some(&ctx.idempotency_key))?.error_for_status()?;
        log::info(&format!("{} {}: {}", apply.method, apply.url, resp.status));
        let mut evidence = Evidence::new(
            format!("{} {} answered {}", apply.method, apply.url, resp.status),
            apply.url.clone(),
        )
        .after(json!({ "status": resp.status, "body": body_of(&resp) }));
        if let Some(b) = before {
            evidence = evidence.before(b);
        }
        Ok(Outcome::new(
            json!({
                "applied": true,
                "status": resp.status,
                "request": apply.describe(),
                "rollback": rollback.describe(),
            }),
            evidence,
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        let Some((check, body)) = read_check(ctx)? else {
            return Err(StepError::fatal(
                "no `check` is configured, so nothing proves the change worked",
            ));
        };
        let expect: Map<String, Value> = serde_json::from_str(ctx.config("expect").unwrap_or("{}"))
            .map_err(|e| StepError::fatal(format!("config `expect` is not a JSON object: {e}")))?;
        for (pointer, want) in &expect {
            let want = fill_json(ctx, want)?;
            let got = body.pointer(pointer).cloned().unwrap_or(Value::Null);
            if got != want {
                return Err(StepError::fatal(format!(
                    "{} {}: {pointer} is {got}, expected {want}",
                    check.method, check.url
                )));
            }
        }
        Ok(Evidence::new(
            format!(
                "{} {} answers as expected ({} checks)",
                check.method,
                check.url,
                expect.len()
            ),
            check.url.clone(),
        )
        .after(body))
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        let applied = ctx
            .run_outputs()
            .and_then(|o| o["applied"].as_bool())
            .unwrap_or(false);
        let rollback = call(ctx, "rollback", Some("rollback_body"))?;
        if !applied {
            return Ok(Evidence::new(
                "the change was not made, so there is nothing to roll back",
                rollback.url.clone(),
            ));
        }
        let resp = rollback.send(Some(&format!("{}-rollback", ctx.idempotency_key)))?;
        if resp.status == 404 {
            return Ok(Evidence::new(
                format!(
                    "{} {} answered 404: already undone",
                    rollback.method, rollback.url
                ),
                rollback.url.clone(),
            )
            .after(json!({ "status": 404 })));
        }
        let resp = resp.error_for_status()?;
        log::info(&format!(
            "{} {}: {}",
            rollback.method, rollback.url, resp.status
        ));
        // What the check reads once it is undone, where there is a check.
        let after = match read_check(ctx)? {
            Some((_, state)) => state,
            None => json!({ "status": resp.status, "body": body_of(&resp) }),
        };
        Ok(Evidence::new(
            format!(
                "rolled back: {} {} answered {}",
                rollback.method, rollback.url, resp.status
            ),
            rollback.url.clone(),
        )
        .after(after))
    }
}

itsm_sdk::export!(RestChange);
