//! `POST /v1/hooks/{name}`: signed HR events in, one ticket per person out.
//! Authenticated by the hook's HMAC signature, not by a bearer token.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::{ApiError, AppState};
use crate::intake::webhook::Hooks;

/// Hooks and their shared secrets.
#[derive(Debug, Default)]
pub struct HookSet {
    hooks: Hooks,
    secrets: BTreeMap<String, String>,
}

impl HookSet {
    /// Hooks, each of whose secrets must be in `secrets`.
    pub fn new(hooks: Hooks, secrets: &BTreeMap<String, String>) -> crate::Result<Self> {
        let mut mine = BTreeMap::new();
        for name in hooks.names() {
            let hook = hooks.get(name).expect("listed");
            let value = secrets.get(&hook.secret).ok_or_else(|| {
                crate::Error::Config(format!(
                    "hook `{name}` needs secret `{}`: set ITSM_SECRET_{}",
                    hook.secret,
                    hook.secret.to_ascii_uppercase()
                ))
            })?;
            mine.insert(hook.secret.clone(), value.clone());
        }
        Ok(Self {
            hooks,
            secrets: mine,
        })
    }
}

/// A person of the event whose ticket could not be created.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HookError {
    /// The person's position in the event.
    index: usize,
    error: String,
}

/// What an HR event did: one batch for its people.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HookResult {
    event_id: String,
    /// `H-...`: the event's people as a batch. On a hook that correlates,
    /// `C-...`: the batch of the first alert's fingerprint (each alert is
    /// in its own fingerprint's).
    batch: String,
    /// Tickets created now.
    created: usize,
    /// Tickets this event had created before (a replay).
    existing: usize,
    /// Ticket ids, created or existing.
    tickets: Vec<String>,
    /// On a hook that correlates: the problems the event's alerts joined
    /// (or opened), each once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
    errors: Vec<HookError>,
}

#[utoipa::path(post, path = "/v1/hooks/{name}", tag = "hooks", security(()),
    params(("name" = String, Path, description = "Hook name from hooks.toml"),
        ("X-Itsm-Timestamp" = String, Header, description = "Unix seconds"),
        ("X-Itsm-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of `timestamp.body`>")),
    request_body(content = serde_json::Value, description = "The HR system's event"),
    responses((status = 201, description = "Tickets created", body = HookResult), (status = 200, description = "Replay: nothing new", body = HookResult), (status = 400, description = "Malformed input, named in the body", body = super::error::ErrorBody), (status = 401, description = "Bad, missing or stale signature", body = super::error::ErrorBody), (status = 404, description = "Not found", body = super::error::ErrorBody), (status = 415, description = "Wrong content type", body = super::error::ErrorBody)))]
pub(super) async fn receive(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<HookResult>), ApiError> {
    let hook = app
        .hooks
        .hooks
        .get(&name)
        .ok_or_else(|| crate::Error::NotFound(format!("no hook named `{name}`")))?;
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let secret = app.hooks.secrets[&hook.secret].as_bytes();
    let now = crate::ticket::now_ms() / 1000;
    hook.authenticate(
        secret,
        header("x-itsm-timestamp"),
        header("x-itsm-signature"),
        &body,
        now,
    )
    .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err(ApiError::unsupported("send the event as application/json"));
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let (event_id, people) = hook.map(&payload).map_err(ApiError::bad_request)?;
    if event_id.len() > 128 {
        return Err(ApiError::bad_request(
            "the event id is longer than 128 characters",
        ));
    }
    let by = format!("hook:{name}");
    // One event's people form a batch, to follow and steer together; a
    // correlating hook's alerts are each in their fingerprint's.
    let mut batch = crate::intake::webhook::batch_id(&name, &event_id);
    let (mut created, mut existing) = (0, 0);
    let mut tickets = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for (i, person) in people.into_iter().enumerate() {
        let result = match person {
            Ok(mapped) => {
                let mut req = mapped.ticket;
                req.batch = Some(match &mapped.fingerprint {
                    Some(f) => crate::intake::correlation::batch_id(&name, f),
                    None => batch.clone(),
                });
                if i == 0 && mapped.fingerprint.is_some() {
                    batch.clone_from(req.batch.as_ref().expect("set"));
                }
                let key = crate::intake::webhook::person_key(&name, &event_id, i);
                match app.scheduler.create(req, &by, Some(&key)).await {
                    Ok((t, new)) => {
                        let joined = match (&hook.correlate, &mapped.fingerprint) {
                            (Some(c), Some(f)) => app.scheduler.correlate(&name, c, f, &t).await,
                            _ => Ok(None),
                        };
                        match joined {
                            Ok(p) => {
                                if let Some(p) = p.filter(|p| !problems.contains(p)) {
                                    problems.push(p);
                                }
                                Ok((t, new))
                            }
                            // The incident stands; its correlation is done
                            // again when the alert is sent again.
                            Err(e) => Err(format!("{} was created, but not correlated: {e}", t.id)),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((t, new)) => {
                if new {
                    created += 1;
                } else {
                    existing += 1;
                }
                tickets.push(t.id);
            }
            Err(error) => errors.push(HookError { index: i, error }),
        }
    }
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(HookResult {
            event_id,
            batch,
            created,
            existing,
            tickets,
            problems,
            errors,
        }),
    ))
}
