//! Sign-in with the organisation's OpenID provider: the API takes the
//! provider's JWT access tokens beside `itsm` tokens, and the web UI signs
//! in through the authorization code flow with PKCE (`api::sso`).
//!
//! Configured by `oidc.toml` in the home (absent: no sign-in through a
//! provider, `itsm` tokens only):
//!
//! ```toml
//! issuer = "https://login.example.com"     # discovery at issuer/.well-known/openid-configuration
//! audience = "itsm"                        # the `aud` access tokens must carry
//! client_id = "itsm-ui"                    # the web UI's client at the provider
//! redirect_uri = "https://itsm.example.com/auth/callback"   # default: http://HOST/auth/callback
//! algorithms = ["RS256", "ES256"]          # the default; asymmetric only
//! leeway = "60s"                           # clock skew allowed on exp and nbf
//! name_claim = "email"                     # names the principal in the trail
//! email_claim = "email"                    # matched against task assignees
//! group_claims = ["groups", "roles"]       # their values are looked up in [roles]
//!
//! [roles]                                  # a provider group -> itsm roles and groups
//! "it-operators" = ["operator"]
//! "security-team" = ["approver", "security"]
//! ```
//!
//! A token is checked for its algorithm (on the allow-list: never `none`,
//! never a shared-secret `HS*`, which a public key must not verify), its
//! key (from the issuer's JWKS by `kid`; an unknown `kid` fetches the set
//! again, at most once per [`keys::REFETCH_AFTER`]), its signature, issuer,
//! audience, expiry and not-before (with the leeway). Each refusal names
//! why. Roles come only through `[roles]`: a provider group not listed
//! there grants nothing.

mod claims;
mod keys;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::principal::Principal;

/// The file in the home that turns sign-in through a provider on.
pub const CONFIG_FILE: &str = "oidc.toml";

/// `oidc.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The provider's issuer URL, exactly as its tokens' `iss` give it.
    pub issuer: String,
    /// The audience (`aud`) an access token must be for.
    pub audience: String,
    /// The web UI's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the UI client's secret, for a
    /// provider that registers it as confidential (PKCE is used either way).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back after sign-in (registered
    /// there); default: `http://HOST/auth/callback` for the host the browser
    /// reached. Set it (https://...) behind a TLS proxy.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Scopes the UI asks for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Signature algorithms accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "crate::workflow::duration")]
    pub leeway: Duration,
    /// The claim naming the principal.
    #[serde(default = "default_email")]
    pub name_claim: String,
    /// The claim holding the person's e-mail.
    #[serde(default = "default_email")]
    pub email_claim: String,
    /// Claims whose values are provider groups.
    #[serde(default = "default_group_claims")]
    pub group_claims: Vec<String>,
    /// Provider group -> itsm roles and approval groups.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_email() -> String {
    "email".into()
}
fn default_group_claims() -> Vec<String> {
    vec!["groups".into(), "roles".into()]
}

/// The algorithms a provider may sign with: public-key ones only.
const ASYMMETRIC: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

impl Config {
    /// `oidc.toml` under `home`, if there is one; an error naming what is
    /// wrong with it otherwise.
    pub fn load(home: &Path) -> Result<Option<Self>> {
        let path = home.join(CONFIG_FILE);
        let Some(text) = crate::error::read_optional(&path)? else {
            return Ok(None);
        };
        let at = path.display();
        let config: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{at}: {e}")))?;
        config
            .check()
            .map_err(|e| Error::Config(format!("{at}: {e}")))?;
        Ok(Some(config))
    }

    /// The checks `load` makes: an issuer over HTTPS (plain HTTP only on
    /// loopback, for tests), asymmetric algorithms only, roles that are
    /// names.
    pub fn check(&self) -> std::result::Result<(), String> {
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| format!("`issuer` {:?} is not a URL: {e}", self.issuer))?;
        let loopback = match issuer.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
            return Err(format!(
                "`issuer` {} must be https:// (plain http only on loopback)",
                self.issuer
            ));
        }
        if self.audience.trim().is_empty() || self.client_id.trim().is_empty() {
            return Err("`audience` and `client_id` must not be empty".into());
        }
        if self.algorithms.is_empty() {
            return Err("`algorithms` is empty: name at least one (e.g. RS256)".into());
        }
        for a in &self.algorithms {
            if !ASYMMETRIC.iter().any(|(n, _)| n == a) {
                return Err(format!(
                    "`algorithms`: {a:?} is not accepted: only public-key algorithms ({}); \
                     `none` and the shared-secret HS* never are",
                    ASYMMETRIC.map(|(n, _)| n).join(", ")
                ));
            }
        }
        for (group, roles) in &self.roles {
            if roles.iter().any(|r| r.trim().is_empty()) {
                return Err(format!("[roles] {group:?} maps to an empty role"));
            }
        }
        Ok(())
    }
}

/// What the provider's discovery document says, as far as we use it.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// A configured provider: its discovery document and keys, fetched on
/// first use and kept.
pub struct Provider {
    config: Config,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<Discovery>>,
    keys: keys::Keys,
}

/// The most a discovery document or key set may weigh.
const MAX_DOCUMENT: usize = 1 << 20;

impl Provider {
    /// A provider for `config` (nothing is fetched yet).
    pub fn new(config: Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS client builds");
        Self {
            config,
            keys: keys::Keys::default(),
            http,
            discovery: tokio::sync::Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The HTTP client used to reach the provider.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET a JSON document of the provider's, bounded in size.
    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T> {
        let unavailable =
            |e: String| Error::Unavailable(format!("the identity provider at {url}: {e}"));
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("answered {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
        if body.len() > MAX_DOCUMENT {
            return Err(unavailable(format!("{} bytes is too large", body.len())));
        }
        serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("not the JSON expected: {e}")))
    }

    /// The discovery document, fetched once; its `issuer` must be the
    /// configured one (OpenID Connect Discovery 1.0, section 4.3).
    pub async fn discovery(&self) -> Result<Discovery> {
        let mut held = self.discovery.lock().await;
        if let Some(d) = held.as_ref() {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.fetch_json(&url).await?;
        if d.issuer != self.config.issuer {
            return Err(Error::Unavailable(format!(
                "the identity provider's discovery document names issuer {:?}, not the configured {:?}",
                d.issuer, self.config.issuer
            )));
        }
        *held = Some(d.clone());
        Ok(d)
    }

    /// Check an access token; the principal it stands for, or why it is
    /// refused (the inner `Err`, a 401). The outer error: the provider
    /// could not be asked for its keys (a 503).
    pub async fn authenticate(
        &self,
        token: &str,
    ) -> Result<std::result::Result<Principal, String>> {
        let header = match segment_json(token, 0) {
            Ok(h) => h,
            Err(why) => return Ok(Err(why)),
        };
        let alg_name = header["alg"].as_str().unwrap_or_default().to_string();
        let alg = match self.algorithm(&alg_name) {
            Ok(a) => a,
            Err(why) => return Ok(Err(why)),
        };
        let kid = header["kid"].as_str().map(str::to_string);
        let discovery = self.discovery().await?;
        let key = match self
            .keys
            .key_for(kid.as_deref(), alg, || self.fetch_json(&discovery.jwks_uri))
            .await?
        {
            Ok(k) => k,
            Err(why) => return Ok(Err(why)),
        };
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.config.leeway.as_secs();
        let claims = match jsonwebtoken::decode::<Value>(token, &key, &v) {
            Ok(data) => data.claims,
            Err(e) => return Ok(Err(self.why_refused(token, e))),
        };
        Ok(claims::principal(&self.config, &claims))
    }

    /// The header's `alg`, if on the allow-list; why not otherwise.
    fn algorithm(&self, name: &str) -> std::result::Result<Algorithm, String> {
        if name.eq_ignore_ascii_case("none") || name.is_empty() {
            return Err("the token is unsigned (`alg` none): never accepted".into());
        }
        if name.starts_with("HS") {
            return Err(format!(
                "the token is signed with {name}, a shared secret: never accepted from an identity \
                 provider, whose keys are public (accepted: {})",
                self.config.algorithms.join(", ")
            ));
        }
        match ASYMMETRIC.iter().find(|(n, _)| *n == name) {
            Some((_, a)) if self.config.algorithms.iter().any(|c| c == name) => Ok(*a),
            _ => Err(format!(
                "the token's algorithm {name} is not accepted (accepted: {})",
                self.config.algorithms.join(", ")
            )),
        }
    }

    /// A refusal's reason in words, with the values that made it.
    fn why_refused(&self, token: &str, e: jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        let claims = segment_json(token, 1).unwrap_or(Value::Null);
        let when = |name: &str| {
            claims[name]
                .as_u64()
                .map(|s| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs(s),
                    )
                    .to_string()
                })
                .unwrap_or_else(|| "?".into())
        };
        let leeway = self.config.leeway.as_secs();
        match e.kind() {
            K::ExpiredSignature => format!(
                "the token expired at {} (allowing {leeway} s of clock skew)",
                when("exp")
            ),
            K::ImmatureSignature => format!(
                "the token is not valid yet: not before {} (allowing {leeway} s of clock skew)",
                when("nbf")
            ),
            K::InvalidIssuer => format!(
                "the token's issuer {} is not this server's provider {}",
                claims["iss"], self.config.issuer
            ),
            K::InvalidAudience => format!(
                "the token is for audience {}, not {}",
                claims["aud"], self.config.audience
            ),
            K::InvalidSignature => {
                "the token's signature does not verify: it was altered, or signed by another key"
                    .into()
            }
            K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
            _ => format!("the token is not a valid JWT: {e}"),
        }
    }
}

/// Segment `n` of a compact JWT, base64url-decoded and parsed as JSON.
fn segment_json(token: &str, n: usize) -> std::result::Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("the bearer token is not a JWT (three dot-separated parts)".into());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[n].trim_end_matches('='))
        .map_err(|e| format!("the token's part {} is not base64url: {e}", n + 1))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("the token's part {} is not JSON: {e}", n + 1))
}

/// Whether a bearer token looks like a JWT (a JSON header, base64url) rather
/// than an `itsm` token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}
