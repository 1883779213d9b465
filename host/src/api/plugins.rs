//! `/v1/plugins` and `/v1/workflows`: what the server runs, and the admin's
//! way to change it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::admin::Bundle;
use crate::auth::Role;
use crate::runtime::Plugin;
use crate::workflow::Workflow;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins, install))
        // Components of tens of MiB are normal (Python, JS runtimes inside).
        .layer(axum::extract::DefaultBodyLimit::max(128 << 20))
        .routes(routes!(show_plugin))
        .routes(routes!(list_workflows))
        .routes(routes!(show_workflow, put_workflow))
}

/// A plugin with what its manifest grants.
fn plugin_json(p: &Plugin) -> Value {
    let m = p.manifest();
    json!({
        "name": m.name,
        "version": m.version,
        "contract": m.contract,
        "description": m.description,
        "capabilities": m.capabilities,
        "limits": m.limits,
        "config": m.config,
        "wasm_sha256": p.wasm_sha256(),
    })
}

#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Plugins with their grants and limits", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody)))]
async fn list_plugins(State(app): State<AppState>, _: Caller) -> Json<Value> {
    let plugins: Vec<Value> = app.scheduler.plugins().values().map(plugin_json).collect();
    Json(json!({ "plugins": plugins }))
}

#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, description = "One plugin and its install history", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody), (status = 404, description = "Not found", body = super::error::ErrorBody)))]
async fn show_plugin(
    State(app): State<AppState>,
    _: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let plugins = app.scheduler.plugins();
    let p = plugins
        .get(&name)
        .ok_or_else(|| crate::Error::NotFound(format!("no plugin named `{name}`")))?;
    let history: Vec<Value> = app
        .admin
        .system()
        .events()?
        .into_iter()
        .filter(|e| e.kind == crate::audit::AuditKind::PluginInstalled && e.data["name"] == name)
        .map(|e| json!({ "at_ms": e.at_ms, "by": e.principal, "version": e.data["version"], "signed_by": e.data["signed_by"], "wasm_sha256": e.data["wasm_sha256"] }))
        .collect();
    let mut v = plugin_json(p);
    v["installs"] = Value::Array(history);
    // What it keeps in key-value state, against its quota.
    if p.manifest().capabilities.kv {
        let usage = p.kv_usage()?;
        let limits = &p.manifest().limits;
        v["kv"] = json!({
            "keys": usage.keys,
            "bytes": usage.bytes,
            "max_keys": limits.kv_max_keys,
            "max_bytes": limits.kv_max_bytes,
        });
    }
    Ok(Json(v))
}

/// An upload: the two signed files and the signature.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    /// `plugin.toml` text.
    manifest: String,
    /// The component, base64.
    wasm_base64: String,
    /// `plugin.sig` text; absent for an unsigned plugin (refused outside `--dev`).
    #[serde(default)]
    signature: Option<String>,
}

#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", request_body = InstallBody,
    responses((status = 201, description = "Installed", body = serde_json::Value), (status = 200, description = "Already installed", body = serde_json::Value), (status = 400, description = "Malformed input, named in the body", body = super::error::ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = super::error::ErrorBody), (status = 415, description = "Wrong content type", body = super::error::ErrorBody), (status = 422, description = "Unknown workflow, missing inputs or invalid definition", body = super::error::ErrorBody)))]
async fn install(
    State(app): State<AppState>,
    Caller(who): Caller,
    body: Result<Json<InstallBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Role::Admin, "install plugins")?;
    let Json(body) = body?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(body.wasm_base64.trim())
        .map_err(|e| ApiError::bad_request(format!("`wasm_base64` is not base64: {e}")))?;
    let installed = app
        .admin
        .install(
            &app.scheduler,
            Bundle {
                manifest: body.manifest,
                wasm,
                signature: body.signature,
            },
            &who.name,
        )
        .await?;
    let status = if installed.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::to_value(installed).expect("serializes")),
    ))
}

fn workflow_summary(wf: &Workflow) -> Value {
    json!({
        "name": wf.name,
        "version": wf.version,
        "description": wf.description,
        "hash": wf.hash(),
        "sla": wf.sla.map(|d| humantime::format_duration(d).to_string()),
        "steps": wf.steps.iter().map(|s| json!({
            "name": s.name,
            "plugin": s.plugin,
            "depends_on": s.depends_on,
            "approval": s.approval.as_ref().map(|a| a.role.clone()),
        })).collect::<Vec<_>>(),
    })
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, description = "Current workflows", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody)))]
async fn list_workflows(State(app): State<AppState>, _: Caller) -> Json<Value> {
    let workflows: Vec<Value> = app
        .scheduler
        .workflows()
        .values()
        .map(|w| workflow_summary(w))
        .collect();
    Json(json!({ "workflows": workflows }))
}

/// The current definition, and every version tickets have pinned.
#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")),
    responses((status = 200, description = "Current definition and pinned versions", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody), (status = 404, description = "Not found", body = super::error::ErrorBody)))]
async fn show_workflow(
    State(app): State<AppState>,
    _: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let current = app.scheduler.workflows().get(&name).cloned();
    let versions: Vec<Value> = app
        .scheduler
        .store()
        .workflow_versions(&name)?
        .into_iter()
        .map(|(hash, wf)| json!({ "hash": hash, "version": wf.version, "definition": wf }))
        .collect();
    if current.is_none() && versions.is_empty() {
        return Err(crate::Error::NotFound(format!("no workflow named `{name}`")).into());
    }
    Ok(Json(json!({
        "name": name,
        "current": current.as_deref().map(workflow_summary),
        "definition": current.as_deref(),
        "pinned_versions": versions,
    })))
}

/// Replace a workflow with TOML text (`application/toml` or `text/plain`).
#[utoipa::path(put, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")),
    request_body(description = "The workflow file (TOML)", content((String = "text/plain"), (String = "application/toml"))),
    responses((status = 201, description = "Applied", body = serde_json::Value), (status = 200, description = "Unchanged", body = serde_json::Value), (status = 401, description = "No valid bearer token; the body says why", body = super::error::ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = super::error::ErrorBody), (status = 415, description = "Wrong content type", body = super::error::ErrorBody), (status = 422, description = "Unknown workflow, missing inputs or invalid definition", body = super::error::ErrorBody)))]
async fn put_workflow(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(Role::Admin, "change workflows")?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !(content_type.starts_with("application/toml") || content_type.starts_with("text/plain")) {
        return Err(ApiError::unsupported(format!(
            "send the workflow as application/toml, not {content_type:?}"
        )));
    }
    let (wf, hash, changed) = app
        .admin
        .put_workflow(&app.scheduler, &name, &body, &who.name)
        .await?;
    Ok((
        if changed {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(json!({ "name": wf.name, "version": wf.version, "hash": hash, "changed": changed })),
    ))
}
