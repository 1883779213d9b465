//! `/v1/plugins` and `/v1/workflows`: what the server runs, and the admin's
//! way to change it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorBody;
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
        .routes(routes!(install_status))
        .routes(routes!(list_workflows))
        .routes(routes!(show_workflow, put_workflow))
}

/// A plugin with what its manifest grants.
#[derive(Serialize, utoipa::ToSchema)]
struct PluginView {
    name: String,
    version: String,
    /// The `itsm:plugin` contract version it was built against.
    contract: String,
    description: String,
    /// The manifest's `[capabilities]`: hosts, credentials, secrets, kv.
    #[schema(value_type = Object)]
    capabilities: Value,
    /// The manifest's `[limits]`.
    #[schema(value_type = Object)]
    limits: Value,
    /// The config keys it declares, with defaults and descriptions.
    #[schema(value_type = Object)]
    config: Value,
    wasm_sha256: String,
    /// Every install of it (`GET /v1/plugins/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    installs: Option<Vec<PluginInstall>>,
    /// Its key-value state against its quota (`GET /v1/plugins/{name}`, kv plugins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    kv: Option<KvUsage>,
}

/// One install of a plugin, from the system trail.
#[derive(Serialize, utoipa::ToSchema)]
struct PluginInstall {
    at_ms: u64,
    /// Who installed it.
    by: String,
    #[schema(value_type = Object)]
    version: Value,
    #[schema(value_type = Object)]
    signed_by: Value,
    #[schema(value_type = Object)]
    wasm_sha256: Value,
}

/// Key-value state in use, and the quota.
#[derive(Serialize, utoipa::ToSchema)]
struct KvUsage {
    keys: u64,
    bytes: u64,
    max_keys: u64,
    max_bytes: u64,
}

/// The plugins the server runs.
#[derive(Serialize, utoipa::ToSchema)]
struct PluginList {
    plugins: Vec<PluginView>,
}

fn plugin_json(p: &Plugin) -> PluginView {
    let m = p.manifest();
    fn value(v: impl Serialize) -> Value {
        serde_json::to_value(v).expect("manifest serializes")
    }
    PluginView {
        name: m.name.clone(),
        version: m.version.clone(),
        contract: m.contract.clone(),
        description: m.description.clone(),
        capabilities: value(&m.capabilities),
        limits: value(&m.limits),
        config: value(&m.config),
        wasm_sha256: p.wasm_sha256().to_string(),
        installs: None,
        kv: None,
    }
}

#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Plugins with their grants and limits", body = PluginList), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody)))]
async fn list_plugins(State(app): State<AppState>, _: Caller) -> Json<PluginList> {
    let plugins: Vec<PluginView> = app.scheduler.plugins().values().map(plugin_json).collect();
    Json(PluginList { plugins })
}

#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, description = "One plugin and its install history", body = PluginView), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn show_plugin(
    State(app): State<AppState>,
    _: Caller,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    let plugins = app.scheduler.plugins();
    let p = plugins
        .get(&name)
        .ok_or_else(|| crate::Error::NotFound(format!("no plugin named `{name}`")))?;
    let history: Vec<PluginInstall> = app
        .admin
        .system()
        .events()?
        .into_iter()
        .filter(|e| e.kind == crate::audit::AuditKind::PluginInstalled && e.data["name"] == name)
        .map(|e| PluginInstall {
            at_ms: e.at_ms,
            by: e.principal,
            version: e.data["version"].clone(),
            signed_by: e.data["signed_by"].clone(),
            wasm_sha256: e.data["wasm_sha256"].clone(),
        })
        .collect();
    let mut v = plugin_json(p);
    v.installs = Some(history);
    // What it keeps in key-value state, against its quota.
    if p.manifest().capabilities.kv {
        let usage = p.kv_usage()?;
        let limits = &p.manifest().limits;
        v.kv = Some(KvUsage {
            keys: usage.keys,
            bytes: usage.bytes,
            max_keys: limits.kv_max_keys,
            max_bytes: limits.kv_max_bytes,
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
    params(("Prefer" = Option<String>, Header, description = "`respond-async`: check at once, compile in the background, answer 202 with the job to follow")),
    responses((status = 201, description = "Installed", body = crate::admin::Installed), (status = 202, description = "Checked; compiling in the background: follow `GET /v1/plugins/installs/{id}` (also in `Location`)", body = super::installs::InstallJob), (status = 200, description = "Already installed", body = crate::admin::Installed), (status = 400, description = "Malformed input, named in the body", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "Refused, saying why: a bad manifest; an unsigned, untrusted or tampered plugin; a downgrade; not a component", body = ErrorBody)))]
async fn install(
    State(app): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Result<Json<InstallBody>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    who.require(Role::Admin, "install plugins")?;
    let Json(body) = body?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(body.wasm_base64.trim())
        .map_err(|e| ApiError::bad_request(format!("`wasm_base64` is not base64: {e}")))?;
    let bundle = Bundle {
        manifest: body.manifest,
        wasm,
        signature: body.signature,
    };
    if prefers_async(&headers) {
        // What can be refused at once is, with its own status; only the
        // compile (and what follows it) runs in the background.
        let manifest = app.admin.precheck(&bundle)?;
        let job = app
            .installs
            .start(&manifest.name, &manifest.version, &who.name);
        let (admin, scheduler, installs, id) = (
            app.admin.clone(),
            app.scheduler.clone(),
            app.installs.clone(),
            job.id.clone(),
        );
        tokio::spawn(async move {
            let result = admin.install(&scheduler, bundle, &who.name).await;
            installs.finish(&id, result);
        });
        let location = format!("/v1/plugins/installs/{}", job.id);
        return Ok((
            StatusCode::ACCEPTED,
            [(axum::http::header::LOCATION, location)],
            Json(job),
        )
            .into_response());
    }
    let installed = app.admin.install(&app.scheduler, bundle, &who.name).await?;
    let status = if installed.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(installed)).into_response())
}

/// Whether the client asked for `Prefer: respond-async` (RFC 7240).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// An install started with `Prefer: respond-async`: compiling, installed
/// (with what it did) or failed (with why). Jobs live in memory: one
/// started before a restart is gone, and was not installed.
#[utoipa::path(get, path = "/v1/plugins/installs/{id}", tag = "plugins", params(("id" = String, Path, description = "The job id from the 202")),
    responses((status = 200, description = "Where the install stands", body = super::installs::InstallJob), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 404, description = "No such job (or the server restarted since)", body = ErrorBody)))]
async fn install_status(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<super::installs::InstallJob>, ApiError> {
    who.require(Role::Admin, "follow plugin installs")?;
    app.installs.get(&id).map(Json).ok_or_else(|| {
        ApiError::from(crate::Error::NotFound(format!(
            "no install job {id} (jobs are kept in memory: one started before a restart is gone, and was not installed)"
        )))
    })
}

/// A workflow's step, in short.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkflowStepSummary {
    name: String,
    plugin: String,
    depends_on: Vec<String>,
    /// The group that must approve it, if any.
    approval: Option<String>,
}

/// A workflow, in short.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkflowSummary {
    name: String,
    version: String,
    description: String,
    /// Content hash of the definition: what tickets pin.
    hash: String,
    /// The SLA, e.g. `4h`, if any.
    sla: Option<String>,
    steps: Vec<WorkflowStepSummary>,
}

/// The current workflows.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkflowList {
    workflows: Vec<WorkflowSummary>,
}

/// A definition tickets have pinned.
#[derive(Serialize, utoipa::ToSchema)]
struct PinnedVersion {
    hash: String,
    version: String,
    /// The definition, as parsed.
    #[schema(value_type = Object)]
    definition: Workflow,
}

/// A workflow: its current definition (null once removed) and every
/// version tickets have pinned.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkflowView {
    name: String,
    current: Option<WorkflowSummary>,
    /// The current definition, as parsed.
    #[schema(value_type = Option<Object>)]
    definition: Option<Workflow>,
    pinned_versions: Vec<PinnedVersion>,
}

/// What a workflow upload did.
#[derive(Serialize, utoipa::ToSchema)]
struct WorkflowApplied {
    name: String,
    version: String,
    hash: String,
    /// False when the same definition was there already.
    changed: bool,
}

fn workflow_summary(wf: &Workflow) -> WorkflowSummary {
    WorkflowSummary {
        name: wf.name.clone(),
        version: wf.version.clone(),
        description: wf.description.clone(),
        hash: wf.hash(),
        sla: wf.sla.map(|d| humantime::format_duration(d).to_string()),
        steps: wf
            .steps
            .iter()
            .map(|s| WorkflowStepSummary {
                name: s.name.clone(),
                plugin: s.plugin.clone(),
                depends_on: s.depends_on.clone(),
                approval: s.approval.as_ref().map(|a| a.voters().join(", ")),
            })
            .collect(),
    }
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, description = "Current workflows", body = WorkflowList), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody)))]
async fn list_workflows(State(app): State<AppState>, _: Caller) -> Json<WorkflowList> {
    let workflows: Vec<WorkflowSummary> = app
        .scheduler
        .workflows()
        .values()
        .map(|w| workflow_summary(w))
        .collect();
    Json(WorkflowList { workflows })
}

/// The current definition, and every version tickets have pinned.
#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")),
    responses((status = 200, description = "Current definition and pinned versions", body = WorkflowView), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
async fn show_workflow(
    State(app): State<AppState>,
    _: Caller,
    Path(name): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let current = app.scheduler.workflows().get(&name).cloned();
    let versions: Vec<PinnedVersion> = app
        .scheduler
        .store()
        .workflow_versions(&name)?
        .into_iter()
        .map(|(hash, wf)| PinnedVersion {
            hash,
            version: wf.version.clone(),
            definition: wf,
        })
        .collect();
    if current.is_none() && versions.is_empty() {
        return Err(crate::Error::NotFound(format!("no workflow named `{name}`")).into());
    }
    Ok(Json(WorkflowView {
        name,
        current: current.as_deref().map(workflow_summary),
        definition: current.as_deref().cloned(),
        pinned_versions: versions,
    }))
}

/// Replace a workflow with TOML text (`application/toml`, `text/plain`, or
/// `application/octet-stream` for clients that send files as bytes: it must
/// still be UTF-8 TOML).
#[utoipa::path(put, path = "/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")),
    request_body(description = "The workflow file (TOML)", content((String = "application/toml"), (String = "text/plain"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "Applied", body = WorkflowApplied), (status = 200, description = "Unchanged", body = WorkflowApplied), (status = 400, description = "The body is not UTF-8", body = ErrorBody), (status = 401, description = "No valid bearer token; the body says why", body = ErrorBody), (status = 403, description = "The principal lacks the role; the body says which", body = ErrorBody), (status = 415, description = "Wrong content type", body = ErrorBody), (status = 422, description = "Unknown workflow, missing inputs or invalid definition", body = ErrorBody)))]
async fn put_workflow(
    State(app): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<WorkflowApplied>), ApiError> {
    who.require(Role::Admin, "change workflows")?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !["application/toml", "text/plain", "application/octet-stream"]
        .iter()
        .any(|t| content_type.starts_with(t))
    {
        return Err(ApiError::unsupported(format!(
            "send the workflow as application/toml, not {content_type:?}"
        )));
    }
    let body = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the workflow file is not UTF-8: {e}")))?;
    let (wf, hash, changed) = app
        .admin
        .put_workflow(&app.scheduler, &name, body, &who.name)
        .await?;
    Ok((
        if changed {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(WorkflowApplied {
            name: wf.name,
            version: wf.version,
            hash,
            changed,
        }),
    ))
}
