//! The HTTP API under `/v1`: enough to create, watch and steer tickets.
//!
//! Routes are grouped per resource (`tickets::router`) and merged here.
//! Every `/v1` route takes a bearer token ([`Caller`]) and checks the role it
//! needs; `/healthz`, `/readyz` and `/metrics` are open, for probes and scrapers.

mod audit;
mod auth;
mod error;
mod hooks;
mod imports;
mod plugins;
mod tickets;
mod ui;

use axum::Router;
use axum::routing::get;

pub use auth::Caller;
pub use error::ApiError;
pub use hooks::HookSet;

use std::sync::Arc;

use crate::admin::Admin;
use crate::audit::system::SystemTrail;
use crate::auth::Tokens;
use crate::scheduler::Scheduler;

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
    pub imports: Arc<imports::Running>,
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
            hooks: Arc::default(),
        }
    }

    /// With these webhooks.
    pub fn with_hooks(mut self, hooks: HookSet) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/me", get(me))
        .route("/v1/hooks/{name}", axum::routing::post(hooks::receive))
        .merge(tickets::router())
        .merge(ui::router())
        .merge(audit::router())
        .merge(plugins::router())
        .route(
            "/v1/imports",
            // Large layoffs are large files: 64 MiB holds about a million rows.
            axum::routing::post(imports::import)
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .with_state(state)
}

/// Who the token belongs to: the UI and CLI show it after sign-in.
async fn me(Caller(who): Caller) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "name": who.name,
        "roles": who.roles,
    }))
}

/// 200 once in-flight tickets are resumed, 503 before.
async fn readyz(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> (axum::http::StatusCode, &'static str) {
    if app.scheduler.is_ready() {
        (axum::http::StatusCode::OK, "ready")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "recovering in-flight tickets",
        )
    }
}

/// Prometheus text format.
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
