//! The HTTP API under `/v1`, documented at `/v1/openapi.json` (generated
//! from the handlers' annotations by utoipa).
//!
//! Routes are grouped per resource (`tickets::router`) and merged here.
//! Every `/v1` route takes a bearer token ([`Caller`]) and checks the role it
//! needs; `/healthz`, `/readyz` and `/metrics` are open, for probes and scrapers.

mod audit;
mod auth;
mod catalog;
mod error;
mod hooks;
mod imports;
mod installs;
mod links;
mod plugins;
mod read_policy;
mod sso;
mod tasks;
mod tickets;
mod ui;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use auth::Caller;
pub use error::ApiError;
pub use hooks::HookSet;

use std::sync::Arc;

use crate::admin::Admin;
use crate::auth::Tokens;
use crate::scheduler::Scheduler;
use crate::shared::system_trail::SystemTrail;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler (and, through it, the store).
    pub scheduler: Scheduler,
    /// Who may call, and with which roles.
    pub tokens: Arc<Tokens>,
    /// Changes outside tickets (plugins, workflows).
    pub system: Arc<SystemTrail>,
    /// Plugin installs and workflow changes.
    pub admin: Arc<Admin>,
    /// HR webhooks.
    pub hooks: Arc<HookSet>,
    /// Imports running now, by batch: what `itsm ticket import` shows as progress.
    pub imports: Arc<crate::intake::import::Running>,
    /// Plugin installs compiling off the request path.
    pub installs: Arc<installs::Installs>,
    /// Plugin folders found unusable at start-up and skipped (`/readyz` names them).
    pub skipped_plugins: Arc<Vec<crate::admin::Skipped>>,
    /// Signs export trailers ([`crate::audit::export`]).
    pub export_key: Arc<ed25519_dalek::SigningKey>,
    /// Trails already verified, so a re-read verifies only what is new.
    pub verified: Arc<crate::audit::Verified>,
    /// Store reads allowed at once ([`AppState::read`]).
    pub readers: Arc<tokio::sync::Semaphore>,
    /// The organisation's identity provider, when `oidc.toml` configures one.
    pub oidc: Option<Arc<crate::oidc::Provider>>,
}

/// Store reads run at once: half the cores (at least one), leaving the
/// rest to intake, ticket drivers and plugin calls.
fn readers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl AppState {
    /// State over a scheduler, its tokens, and the admin of its home.
    pub fn new(scheduler: Scheduler, tokens: Arc<Tokens>, admin: Arc<Admin>) -> Self {
        Self {
            scheduler,
            tokens,
            system: admin.system().clone(),
            admin,
            imports: Arc::default(),
            installs: Arc::default(),
            hooks: Arc::default(),
            skipped_plugins: Arc::default(),
            // Until the home's key is given: exports still verify, against
            // a key that lives as long as the process.
            export_key: Arc::new(ed25519_dalek::SigningKey::from_bytes(&rand::random())),
            verified: Arc::default(),
            readers: Arc::new(tokio::sync::Semaphore::new(readers())),
            oidc: None,
        }
    }

    /// Also take access tokens of this provider, and sign the UI in there.
    pub fn with_oidc(mut self, provider: crate::oidc::Provider) -> Self {
        self.oidc = Some(Arc::new(provider));
        self
    }

    /// Run store reads on the blocking pool rather than on the async
    /// workers, so a slow read (a long trail, a cold page, a full scan)
    /// never holds up the requests and ticket drivers sharing them; and at
    /// most half the cores at once, so 64 clients reading cannot take every
    /// core from the writes (their requests queue instead).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::store::Store) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.readers.clone().acquire_owned().await.map_err(|_| {
            ApiError::from(crate::Error::Unavailable("the server is stopping".into()))
        })?;
        let store = self.scheduler.store().clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(store.as_ref())
        })
        .await
        .map_err(|e| ApiError::from(crate::Error::Store(format!("a read failed: {e}"))))?
        .map_err(ApiError::from)
    }

    /// With the plugin folders start-up skipped.
    pub fn with_skipped_plugins(mut self, skipped: Vec<crate::admin::Skipped>) -> Self {
        self.skipped_plugins = Arc::new(skipped);
        self
    }

    /// Sign export trailers with `key` (the home's `audit-export.key`).
    pub fn with_export_key(mut self, key: ed25519_dalek::SigningKey) -> Self {
        self.export_key = Arc::new(key);
        self
    }

    /// With these webhooks.
    pub fn with_hooks(mut self, hooks: HookSet) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (api, doc) = documented(state.scheduler.intake().import_bytes).split_for_parts();
    let doc = bytes::Bytes::from(doc.to_json().expect("the OpenAPI document serializes"));
    Router::new()
        .merge(api)
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .merge(ui::router())
        .merge(sso::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_writes_while_draining,
        ))
        .layer(axum::middleware::from_fn(short_work))
        .with_state(state)
}

/// Every request is short work: while it is ready to run, long plugin
/// calls give way (a long-poll waiting for a change does not count).
async fn short_work(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    crate::cpu::short(next.run(request)).await
}

/// While the server shuts down, every request that would change something
/// gets a 503 saying so; reads are still answered.
async fn refuse_writes_while_draining(
    axum::extract::State(app): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse as _;
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if app.scheduler.is_draining() && !reads.contains(request.method()) {
        return ApiError::from(crate::Error::Unavailable(
            "the server is shutting down: it takes no new work now; retry once it is back (or against another instance)".into(),
        ))
        .into_response();
    }
    next.run(request).await
}

/// Every route that belongs in `/v1/openapi.json`, with its documentation:
/// a route cannot be added here without its `#[utoipa::path]`.
fn documented(import_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(me))
        .routes(routes!(hooks::receive))
        .merge(tickets::router())
        .merge(links::router())
        .merge(catalog::router())
        .merge(tasks::router())
        .merge(audit::router())
        .merge(plugins::router())
        .merge(
            OpenApiRouter::new()
                .routes(routes!(imports::import))
                // Large layoffs are large files: the default 64 MiB holds
                // about a million rows.
                .layer(axum::extract::DefaultBodyLimit::max(import_bytes)),
        )
}

/// The document's frame: title, auth scheme, tags.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "itsm",
        description = "ITSM automation host: tickets (one per person), bulk import, approvals, audit trail, plugins and workflows. Every /v1 route but the HR hooks takes `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "tickets", description = "Create, import, list, show, cancel, retry"),
        (name = "batches", description = "Imported tickets as a group"),
        (name = "approvals", description = "Approve or reject a waiting step"),
        (name = "tasks", description = "Human tasks: the inbox, completion, reassignment"),
        (name = "audit", description = "Export and verify the hash-chained trail"),
        (name = "plugins", description = "Installed plugins and signed installs"),
        (name = "workflows", description = "Workflow definitions and pinned versions"),
        (name = "hooks", description = "Signed HR events and correlated alerts"),
        (name = "catalog", description = "The service catalog: items a person requests for themselves"),
        (name = "service", description = "Probes, metrics, identity")
    )
)]
struct ApiDoc;

/// Declares the bearer-token scheme the operations refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// Who a token belongs to.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Me {
    /// The token's principal.
    name: String,
    /// Its roles (`admin`, `operator`, `approver`, `auditor`, and groups).
    roles: Vec<String>,
    /// The person's e-mail, which tasks are assigned to, if the token has one.
    email: Option<String>,
}

/// Who the token belongs to: the UI and CLI show it after sign-in.
#[utoipa::path(get, path = "/v1/me", tag = "service",
    responses((status = 200, description = "The caller's name and roles", body = Me),
        (status = 401, description = "No valid token; the body says why", body = error::ErrorBody)))]
async fn me(Caller(who): Caller) -> axum::Json<Me> {
    axum::Json(Me {
        name: who.name,
        roles: who.roles.into_iter().collect(),
        email: who.email,
    })
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "Always `ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// 200 once in-flight tickets are resumed, 503 before and while shutting
/// down; either way one more line per plugin folder start-up skipped.
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses((status = 200, description = "Ready (then one line per plugin folder skipped at start-up)", body = String), (status = 503, description = "Still recovering, or shutting down", body = String)))]
async fn readyz(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> (axum::http::StatusCode, String) {
    let (status, mut body) = if app.scheduler.is_draining() {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: finishing the calls in flight".to_string(),
        )
    } else if app.scheduler.is_ready() {
        (axum::http::StatusCode::OK, "ready".to_string())
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "recovering in-flight tickets".to_string(),
        )
    };
    for s in app.skipped_plugins.iter() {
        body.push_str(&format!(
            "\nplugin folder {} skipped: {}",
            s.dir.display(),
            s.reason
        ));
    }
    (status, body)
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.scheduler.metrics_text(),
    )
}

/// Serve `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
