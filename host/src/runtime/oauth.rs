//! Token flows the host runs for plugins, so a plugin never holds a
//! credential: OAuth 2.0 client credentials (Microsoft identity platform,
//! Salesforce) and the Google service-account JWT bearer grant (RFC 7523).
//!
//! Tokens are cached per (token URL, client, scope, subject) until a minute
//! before they expire, shared by every call of every plugin that uses the
//! same credential; a 401 from the API drops the cached token so the next
//! request fetches a fresh one. Token values and client secrets are added to
//! the call's redactor, so they never reach a log line or the trail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::net::RequestRecord;

/// Starts the error a plugin sees when the token endpoint refused the
/// credential; the SDK makes it a fatal step error (see `itsm_sdk::http`).
pub(crate) const CREDENTIAL_REFUSED: &str = "credential refused: ";

/// Refresh this long before a token's stated expiry.
const EARLY: Duration = Duration::from_secs(60);
/// When a token response gives no `expires_in` (Salesforce), assume this.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// One credential's token flow, resolved for a call.
#[derive(Clone)]
pub(crate) enum Flow {
    /// `grant_type=client_credentials`.
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
    GoogleJwt {
        token_url: String,
        client_email: String,
        private_key_pem: String,
        scope: String,
        subject: Option<String>,
    },
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret parts.
        match self {
            Flow::ClientCredentials {
                token_url,
                client_id,
                ..
            } => write!(f, "ClientCredentials({token_url}, {client_id})"),
            Flow::GoogleJwt {
                token_url,
                client_email,
                ..
            } => write!(f, "GoogleJwt({token_url}, {client_email})"),
        }
    }
}

/// The service-account key file fields the flow needs.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
}

impl Flow {
    /// A client-credentials flow from a `client_id:client_secret` secret.
    pub fn client_credentials(
        token_url: String,
        secret: &str,
        scope: Option<String>,
    ) -> Result<Self, String> {
        let (id, key) = secret
            .split_once(':')
            .filter(|(id, key)| !id.is_empty() && !key.is_empty())
            .ok_or("the secret must be `client_id:client_secret`")?;
        Ok(Flow::ClientCredentials {
            token_url,
            client_id: id.to_string(),
            client_secret: key.to_string(),
            scope,
        })
    }

    /// A Google JWT flow from a service account's JSON key file.
    pub fn google(
        token_url: String,
        key_json: &str,
        scope: String,
        subject: Option<String>,
    ) -> Result<Self, String> {
        let key: ServiceAccountKey = serde_json::from_str(key_json)
            .map_err(|e| format!("the secret must be a service account's JSON key file: {e}"))?;
        jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| format!("the key file's private_key is not an RSA PEM key: {e}"))?;
        Ok(Flow::GoogleJwt {
            token_url,
            client_email: key.client_email,
            private_key_pem: key.private_key,
            scope,
            subject,
        })
    }

    /// Values to mask wherever they might appear.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Flow::ClientCredentials { client_secret, .. } => vec![client_secret.clone()],
            Flow::GoogleJwt {
                private_key_pem, ..
            } => vec![private_key_pem.clone()],
        }
    }

    fn token_url(&self) -> &str {
        match self {
            Flow::ClientCredentials { token_url, .. } | Flow::GoogleJwt { token_url, .. } => {
                token_url
            }
        }
    }

    /// What identifies one cached token.
    fn cache_key(&self) -> String {
        match self {
            Flow::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => format!(
                "cc\n{token_url}\n{client_id}\n{}\n{}",
                super::sha256_hex(client_secret.as_bytes()),
                scope.as_deref().unwrap_or_default()
            ),
            Flow::GoogleJwt {
                token_url,
                client_email,
                scope,
                subject,
                ..
            } => format!(
                "jwt\n{token_url}\n{client_email}\n{scope}\n{}",
                subject.as_deref().unwrap_or_default()
            ),
        }
    }

    /// The token request's form fields.
    fn form(&self) -> Result<Vec<(&'static str, String)>, String> {
        Ok(match self {
            Flow::ClientCredentials {
                client_id,
                client_secret,
                scope,
                ..
            } => {
                let mut f = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.clone()),
                ];
                if let Some(s) = scope {
                    f.push(("scope", s.clone()));
                }
                f
            }
            Flow::GoogleJwt {
                token_url,
                client_email,
                private_key_pem,
                scope,
                subject,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut claims = serde_json::json!({
                    "iss": client_email,
                    "scope": scope,
                    "aud": token_url,
                    "iat": now,
                    "exp": now + 3600,
                });
                if let Some(sub) = subject {
                    claims["sub"] = sub.clone().into();
                }
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
                    .map_err(|e| format!("service account key: {e}"))?;
                let jwt = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                    &claims,
                    &key,
                )
                .map_err(|e| format!("signing the JWT: {e}"))?;
                vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
                    ),
                    ("assertion", jwt),
                ]
            }
        })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Clone)]
struct Cached {
    token: String,
    fresh_until: Instant,
}

/// Tokens shared across calls.
pub(crate) struct TokenCache {
    http: reqwest::Client,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

impl TokenCache {
    pub fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // A token endpoint that redirects is not followed: the secret
                // goes to the configured URL and nowhere else.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            slots: Mutex::default(),
        }
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        self.slots
            .lock()
            .expect("token cache lock")
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// A valid access token, fetched if none is cached. The record is the
    /// token request, when one was made (for the call's journal).
    pub async fn token(&self, flow: &Flow) -> (Result<String, String>, Option<RequestRecord>) {
        let slot = self.slot(&flow.cache_key());
        // One fetch per credential at a time; the others wait and reuse it.
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fresh_until > Instant::now()
        {
            return (Ok(c.token.clone()), None);
        }
        let started = Instant::now();
        let mut record = RequestRecord {
            method: "POST".into(),
            url: flow.token_url().to_string(),
            status: None,
            error: None,
            duration_ms: 0,
            by_host: true,
            credential: false,
        };
        let result = self.fetch(flow, &mut record).await;
        record.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok((token, lifetime)) => {
                *cached = Some(Cached {
                    token: token.clone(),
                    fresh_until: Instant::now() + lifetime.saturating_sub(EARLY),
                });
                (Ok(token), Some(record))
            }
            Err(e) => {
                record.error = Some(e.clone());
                (Err(e), Some(record))
            }
        }
    }

    async fn fetch(
        &self,
        flow: &Flow,
        record: &mut RequestRecord,
    ) -> Result<(String, Duration), String> {
        let form = flow.form()?;
        let resp = self
            .http
            .post(flow.token_url())
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("token request to {} failed: {e}", flow.token_url()))?;
        let status = resp.status();
        record.status = Some(status.as_u16());
        let body = resp.bytes().await.unwrap_or_default();
        if !status.is_success() {
            // OAuth error bodies name the problem (`invalid_client`, ...)
            // and hold no secret; keep a bounded excerpt.
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.chars().take(300).collect();
            // A 4xx other than 429 is the credential itself refused (wrong
            // secret, app not consented): retrying cannot help. The prefix
            // tells the SDK to fail the step for good.
            let refused = status.is_client_error() && status.as_u16() != 429;
            return Err(format!(
                "{}token endpoint {} answered {status}: {excerpt}",
                if refused { CREDENTIAL_REFUSED } else { "" },
                flow.token_url()
            ));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("token endpoint answer has no access_token: {e}"))?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        Ok((parsed.access_token, lifetime))
    }

    /// Forget `flow`'s token (the API refused it).
    pub async fn invalidate(&self, flow: &Flow) {
        *self.slot(&flow.cache_key()).lock().await = None;
    }
}
