//! Credentials on outbound requests: the one place a credential goes from
//! a granted secret to a header on the wire.
//!
//! 1. [`resolve`] (once per call) turns the manifest's `credentials` and
//!    the operator's secrets into an [`AttachedCredential`] per origin:
//!    a fixed header (bearer, basic, API key) or a token flow the host runs
//!    (OAuth 2 client credentials, a Google service account), whose token
//!    URL must itself be an allowed origin.
//! 2. [`PolicyInner::attach_credentials`] (each request, after the origin
//!    passed the allow-list and DNS checks in `super`) sets the header of
//!    every credential bound to that origin, fetching a flow's token through
//!    the call's token cache (`super::super::oauth`).
//! 3. Every form of every attached value (the header as sent, the bare
//!    secret, its encodings, fetched tokens) is masked in the step's log and
//!    scrubbed from responses (`scrub.rs`), so a server that echoes a
//!    credential back does not hand it to the plugin; a `401` drops the
//!    flow's cached token.
//!
//! The plugin never sees a credential: it names no secret it was not
//! granted, and the header is added outside the sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::PolicyInner;
use super::scrub::Scrubber;
use crate::error::{Error, Result};
use crate::manifest::{AuthScheme, Credential, Manifest, Origin};
use crate::runtime::oauth::Flow;
use crate::runtime::redact;

/// A credential resolved for one call: where it goes and what header it sets.
#[derive(Clone)]
pub(crate) struct AttachedCredential {
    pub origin: Origin,
    pub header: HeaderName,
    pub value: Attach,
    /// Every form of the value the host produced (the header as sent, the
    /// bare secret, basic's base64, ...): what responses are scrubbed of.
    pub forms: Vec<String>,
}

/// What a credential puts in its header.
#[derive(Clone)]
pub(crate) enum Attach {
    /// A fixed value (bearer, basic, API key).
    Static(HeaderValue),
    /// `Bearer <token>` from a token flow the host runs.
    Flow(Flow),
}

/// The credentials `m` binds to origins, resolved against `config` and
/// the operator's `secrets`, and every secret value they hold (to be
/// masked). A credential whose secret is missing, or whose value cannot be
/// a header, is an error naming it; nothing is sent.
pub(crate) fn resolve(
    m: &Manifest,
    config: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    allowed: &[Origin],
) -> Result<(Vec<AttachedCredential>, Vec<String>)> {
    let caps = &m.capabilities;
    let mut secret_values: Vec<String> = Vec::new();
    let mut credentials = Vec::new();
    for cred in &caps.credentials {
        let value = secrets.get(&cred.secret).ok_or_else(|| {
            Error::Config(format!(
                "plugin {} needs secret `{}` for {}: supply it",
                m.name, cred.secret, cred.host
            ))
        })?;
        secret_values.push(value.clone());
        let origin = m.resolve_origin(&cred.host, config)?;
        if cred.scheme.is_token_flow() {
            let flow = flow(m, cred, value, config, allowed)?;
            secret_values.extend(flow.secrets());
            credentials.push(AttachedCredential {
                origin,
                header: http::header::AUTHORIZATION,
                value: Attach::Flow(flow),
                // The token joins when it is fetched.
                forms: Vec::new(),
            });
            continue;
        }
        let (header, text) = match cred.scheme {
            AuthScheme::Bearer => (http::header::AUTHORIZATION, format!("Bearer {value}")),
            AuthScheme::Basic => (
                http::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(value)
                ),
            ),
            AuthScheme::ApiKey => {
                let name = cred.header.as_deref().unwrap_or_default();
                (
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| Error::Manifest(format!("header {name:?}: {e}")))?,
                    value.clone(),
                )
            }
            AuthScheme::OAuth2ClientCredentials | AuthScheme::GoogleServiceAccount => {
                unreachable!("token flows are handled above")
            }
        };
        let mut header_value = HeaderValue::from_str(&text).map_err(|_| {
            Error::Config(format!(
                "secret `{}` has characters not allowed in a header",
                cred.secret
            ))
        })?;
        header_value.set_sensitive(true);
        credentials.push(AttachedCredential {
            origin,
            header,
            value: Attach::Static(header_value),
            forms: credential_forms(&text, value),
        });
    }
    Ok((credentials, secret_values))
}

/// A credential's token flow for this call. Its token URL must be an
/// allowed origin: the manifest shows everywhere a secret can go.
fn flow(
    m: &Manifest,
    cred: &Credential,
    secret: &str,
    config: &BTreeMap<String, String>,
    allowed: &[Origin],
) -> Result<Flow> {
    let token_url = m.interpolate(cred.token_url.as_deref().unwrap_or_default(), config)?;
    let parsed = url::Url::parse(&token_url)
        .map_err(|e| Error::Config(format!("token URL {token_url:?}: {e}")))?;
    let origin = Origin::of_url(&parsed)
        .map_err(|e| Error::Config(format!("token URL {token_url:?}: {e}")))?;
    if !allowed.contains(&origin) {
        return Err(Error::Config(format!(
            "token URL {token_url} is not in plugin {}'s allowed_hosts",
            m.name
        )));
    }
    let scope = cred
        .scope
        .as_deref()
        .map(|s| m.interpolate(s, config))
        .transpose()?;
    let bad_secret = |e: String| Error::Config(format!("secret `{}`: {e}", cred.secret));
    match cred.scheme {
        AuthScheme::GoogleServiceAccount => {
            let subject = cred
                .subject
                .as_deref()
                .map(|s| m.interpolate(s, config))
                .transpose()?;
            Flow::google(token_url, secret, scope.unwrap_or_default(), subject).map_err(bad_secret)
        }
        _ => Flow::client_credentials(token_url, secret, scope).map_err(bad_secret),
    }
}

/// Every form of a static credential the host puts on the wire, and the
/// secret itself: a response carrying any of them is scrubbed. For basic
/// credentials that is `user:password`, its base64, and the password alone.
fn credential_forms(header_value: &str, secret: &str) -> Vec<String> {
    let mut forms = redact::encodings(secret);
    forms.push(header_value.to_string());
    if let Some((_, password)) = secret.split_once(':') {
        forms.push(password.to_string());
    }
    forms.sort();
    forms.dedup();
    forms
}

impl PolicyInner {
    /// Set the header of every credential bound to `origin` on `request`;
    /// the token flows used, so a `401` can drop their tokens. A token that
    /// cannot be fetched fails the request (journalled, masked).
    pub(super) async fn attach_credentials<'a>(
        &'a self,
        request: &mut http::Request<WasiBody>,
        origin: &Origin,
        entry: super::journal::Entry,
    ) -> std::result::Result<Vec<&'a Flow>, HttpError> {
        let mut flows = Vec::new();
        for cred in self.credentials.iter().filter(|c| c.origin == *origin) {
            let value = match &cred.value {
                Attach::Static(v) => v.clone(),
                Attach::Flow(flow) => match self.flow_header(flow).await {
                    Ok(v) => {
                        flows.push(flow);
                        v
                    }
                    Err(e) => {
                        self.journal.finish(
                            entry,
                            None,
                            Some(self.redactor.redact(&format!("credential: {e}"))),
                        );
                        return Err(HttpError::InternalError(Some(self.redactor.redact(&e))));
                    }
                },
            };
            request.headers_mut().insert(cred.header.clone(), value);
            self.journal.credential_attached(entry);
        }
        Ok(flows)
    }

    /// `Bearer <token>` for a flow, fetching the token if none is cached.
    pub(super) async fn flow_header(&self, flow: &Flow) -> Result<HeaderValue, String> {
        let (token, fetched) = self.tokens.token(flow).await;
        if let Some(mut r) = fetched {
            r.error = r.error.map(|e| self.redactor.redact(&e));
            self.journal.push_host(r);
        }
        let token = token?;
        self.redactor.add(&token);
        {
            let header = format!("Bearer {token}");
            let mut forms = self.forms.lock().expect("forms lock");
            if !forms.0.contains(&header) {
                forms.0.extend([header, token.clone()]);
                forms.1 = None;
            }
        }
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token endpoint returned a token unfit for a header".to_string())?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// The scrubber for every credential form attached so far, if any.
    pub(super) fn scrubber(&self) -> Option<Arc<Scrubber>> {
        let mut forms = self.forms.lock().expect("forms lock");
        if forms.1.is_none() && !forms.0.is_empty() {
            forms.1 = Scrubber::new(&forms.0).map(Arc::new);
        }
        forms.1.clone()
    }
}
