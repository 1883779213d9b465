//! The bearer-token extractor: a handler that takes a [`Caller`] runs only
//! for an authenticated principal, and checks roles itself. The token is
//! an `itsm` token, or, where a provider is configured, its JWT access
//! token ([`crate::oidc`]).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::Principal;

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        if let (Some(provider), Ok(token)) = (&app.oidc, crate::auth::bearer(header))
            && crate::oidc::looks_like_jwt(token)
        {
            return match provider.authenticate(token).await? {
                Ok(who) => Ok(Caller(who)),
                Err(why) => Err(ApiError::unauthorized(why)),
            };
        }
        app.tokens
            .authenticate(header)
            .map(Caller)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
    }
}
