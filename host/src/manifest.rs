//! `plugin.toml`: what a plugin is, what it may touch, and its limits.
//!
//! Data-only and strict: unknown fields are errors, every capability is denied
//! unless granted here, and values are checked when loaded so a bad manifest
//! fails at install time with the field named, not at 3 a.m. mid-offboarding.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

/// The contract version this host implements (`package itsm:plugin@...`).
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The largest memory a manifest may ask for. The engine reserves this much
/// address space per instance slot, so it is a host-wide ceiling.
pub const MAX_MEMORY_MB: u64 = 1024;

/// A plugin's manifest, as written in `plugin.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name: lowercase letters, digits and `-`, e.g. `scim-deprovision`.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// The `itsm:plugin` contract version it was built against (semver).
    pub contract: String,
    /// One line saying what the plugin does.
    #[serde(default)]
    pub description: String,
    /// The component file, relative to the manifest. Defaults to `plugin.wasm`.
    #[serde(default)]
    pub wasm: Option<String>,
    /// What the plugin may reach. Everything absent is denied.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Resource limits per call.
    #[serde(default)]
    pub limits: Limits,
    /// Configuration keys the plugin accepts, by name.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigKey>,
}

/// Grants. An empty list grants nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Outbound HTTP origins as `scheme://host[:port]`, or `${config.KEY}` to
    /// take the origin of a URL-valued config key. Scheme, host and port must
    /// match exactly. Loopback, private, link-local and metadata addresses
    /// are reachable only when named here as an IP address.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Secrets the host attaches to outbound requests; the plugin never sees them.
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// Secrets the plugin may read by name through the `secrets` import.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Whether the plugin may use its private key-value store.
    #[serde(default)]
    pub kv: bool,
}

/// A secret bound to one origin and an authentication scheme.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The secret's name, supplied by the operator at run time.
    pub secret: String,
    /// The origin (as in `allowed_hosts`) whose requests carry it.
    pub host: String,
    /// How it is attached.
    pub scheme: AuthScheme,
    /// Header name, for `scheme = "api-key"` only.
    #[serde(default)]
    pub header: Option<String>,
    /// Token endpoint, for the token flows: a URL in which `${config.KEY}`
    /// is replaced by that config value (e.g. the tenant).
    #[serde(default)]
    pub token_url: Option<String>,
    /// OAuth scope(s) to ask for, space-separated.
    #[serde(default)]
    pub scope: Option<String>,
    /// For `google-service-account`: the user to act as (domain-wide
    /// delegation), usually `${config.admin_email}`.
    #[serde(default)]
    pub subject: Option<String>,
}

/// How a credential is attached to a request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<secret>)`, the secret being `user:password`.
    Basic,
    /// `<header>: <secret>`.
    ApiKey,
    /// OAuth 2.0 client credentials (Microsoft identity platform,
    /// Salesforce): the host trades `client_id:client_secret` at `token_url`
    /// for an access token, caches it until it expires, and sends
    /// `Authorization: Bearer <access token>`.
    #[serde(rename = "oauth2-client-credentials")]
    OAuth2ClientCredentials,
    /// Google service account (JWT bearer grant, RFC 7523): the host signs a
    /// JWT with the account's private key (the secret is the key's JSON
    /// file), trades it at `token_url` for an access token, and caches it.
    GoogleServiceAccount,
}

impl AuthScheme {
    /// Whether the host runs a token flow for it.
    pub fn is_token_flow(self) -> bool {
        matches!(
            self,
            Self::OAuth2ClientCredentials | Self::GoogleServiceAccount
        )
    }
}

/// Per-call resource limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory ceiling in MiB.
    #[serde(default = "Limits::default_memory_mb")]
    pub memory_mb: u64,
    /// Wall time per call in milliseconds, including time spent waiting on HTTP.
    #[serde(default = "Limits::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Instances of this plugin running at once, host-wide.
    #[serde(default = "Limits::default_max_instances")]
    pub max_instances: u32,
    /// Outbound requests one call may have in flight at once (counted from
    /// before the connect until the response body is read or dropped).
    #[serde(default = "Limits::default_requests_in_flight")]
    pub requests_in_flight: u32,
    /// Outbound requests all calls of this plugin may have in flight at
    /// once, host-wide.
    #[serde(default = "Limits::default_plugin_requests_in_flight")]
    pub plugin_requests_in_flight: u32,
    /// Keys the plugin may keep in its key-value state.
    #[serde(default = "Limits::default_kv_max_keys")]
    pub kv_max_keys: u64,
    /// Bytes (keys and values together) the plugin may keep in its
    /// key-value state.
    #[serde(default = "Limits::default_kv_max_bytes")]
    pub kv_max_bytes: u64,
}

impl Limits {
    fn default_requests_in_flight() -> u32 {
        4
    }
    fn default_plugin_requests_in_flight() -> u32 {
        32
    }
    fn default_kv_max_keys() -> u64 {
        10_000
    }
    fn default_kv_max_bytes() -> u64 {
        16 << 20
    }
    fn default_memory_mb() -> u64 {
        64
    }
    fn default_timeout_ms() -> u64 {
        30_000
    }
    fn default_max_instances() -> u32 {
        8
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: Self::default_memory_mb(),
            timeout_ms: Self::default_timeout_ms(),
            max_instances: Self::default_max_instances(),
            requests_in_flight: Self::default_requests_in_flight(),
            plugin_requests_in_flight: Self::default_plugin_requests_in_flight(),
            kv_max_keys: Self::default_kv_max_keys(),
            kv_max_bytes: Self::default_kv_max_bytes(),
        }
    }
}

/// A configuration key the plugin accepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    /// Whether a call without it is refused.
    #[serde(default)]
    pub required: bool,
    /// Used when the key is not given.
    #[serde(default)]
    pub default: Option<String>,
    /// What the key means.
    #[serde(default)]
    pub description: String,
}

/// An origin: what `allowed_hosts` entries resolve to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercased host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Explicit or default port.
    pub port: u16,
}

impl Origin {
    /// Parse `scheme://host[:port]` (a path of `/` is tolerated, nothing more).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
            return Err(format!(
                "`{text}` must be an origin (scheme://host[:port]) without a path"
            ));
        }
        Self::of_url(&url).map_err(|e| format!("`{text}`: {e}"))
    }

    /// The origin of a full URL.
    pub fn of_url(url: &Url) -> std::result::Result<Self, String> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme `{scheme}` is not http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "credentials in URLs are not allowed; use [[capabilities.credentials]]".into(),
            );
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("no host".into()),
        };
        let port = url.port_or_known_default().ok_or("no port")?;
        Ok(Self {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    /// The host as an IP address, when it is an IP literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

impl Manifest {
    /// Read and validate `plugin.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::Manifest(msg) => Error::Manifest(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parse and validate manifest text.
    pub fn parse(text: &str) -> Result<Self> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            // toml's message names the field and shows the offending line.
            Error::Manifest(e.to_string().trim_end().to_string())
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check values serde cannot: names, versions, origins, limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Manifest(format!("`{field}`: {why}")));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(
                "name",
                format!("{:?} must be 1-64 of a-z, 0-9 and -", self.name),
            );
        }
        let version = semver::Version::parse(&self.version);
        if let Err(e) = version {
            return bad("version", format!("{:?} is not semver: {e}", self.version));
        }
        match semver::Version::parse(&self.contract) {
            Err(e) => {
                return bad(
                    "contract",
                    format!("{:?} is not semver: {e}", self.contract),
                );
            }
            Ok(v) => {
                let ours = semver::Version::parse(CONTRACT_VERSION).expect("valid constant");
                if !contract_compatible(&v, &ours) {
                    return bad(
                        "contract",
                        format!(
                            "itsm:plugin@{v} is not supported by this host (it implements {ours})"
                        ),
                    );
                }
            }
        }
        if let Some(wasm) = &self.wasm {
            let p = Path::new(wasm);
            if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
                return bad(
                    "wasm",
                    format!("{wasm:?} must be a path inside the plugin folder"),
                );
            }
        }
        for (i, host) in self.capabilities.allowed_hosts.iter().enumerate() {
            self.check_origin(host)
                .or_else(|e| bad(&format!("capabilities.allowed_hosts[{i}]"), e))?;
        }
        for (i, cred) in self.capabilities.credentials.iter().enumerate() {
            let field = format!("capabilities.credentials[{i}]");
            if cred.secret.is_empty() {
                return bad(&format!("{field}.secret"), "must name a secret".into());
            }
            self.check_origin(&cred.host)
                .or_else(|e| bad(&format!("{field}.host"), e))?;
            if !self.capabilities.allowed_hosts.contains(&cred.host) {
                return bad(
                    &format!("{field}.host"),
                    format!("{:?} is not in capabilities.allowed_hosts", cred.host),
                );
            }
            match (cred.scheme, &cred.header) {
                (AuthScheme::ApiKey, None) => {
                    return bad(
                        &format!("{field}.header"),
                        "required for scheme \"api-key\"".into(),
                    );
                }
                (AuthScheme::ApiKey, Some(h)) => {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return bad(
                            &format!("{field}.header"),
                            format!("{h:?} is not a header name"),
                        );
                    }
                }
                (_, Some(_)) => {
                    return bad(
                        &format!("{field}.header"),
                        "only used with scheme \"api-key\"".into(),
                    );
                }
                (_, None) => {}
            }
            let flow = cred.scheme.is_token_flow();
            for (name, value) in [
                ("token_url", &cred.token_url),
                ("scope", &cred.scope),
                ("subject", &cred.subject),
            ] {
                if value.is_some() && !flow {
                    return bad(
                        &format!("{field}.{name}"),
                        "only used with the token-flow schemes".into(),
                    );
                }
            }
            if flow {
                match &cred.token_url {
                    None => {
                        return bad(
                            &format!("{field}.token_url"),
                            "required for a token flow".into(),
                        );
                    }
                    Some(u) if !u.starts_with("https://") && !u.starts_with("${config.") => {
                        return bad(
                            &format!("{field}.token_url"),
                            format!("{u:?} must be https:// (or come from config)"),
                        );
                    }
                    Some(_) => {}
                }
                if cred.scheme == AuthScheme::GoogleServiceAccount && cred.scope.is_none() {
                    return bad(
                        &format!("{field}.scope"),
                        "required for scheme \"google-service-account\"".into(),
                    );
                }
            }
        }
        let limits = &self.limits;
        if limits.memory_mb == 0 || limits.memory_mb > MAX_MEMORY_MB {
            return bad(
                "limits.memory_mb",
                format!("{} must be 1..={MAX_MEMORY_MB}", limits.memory_mb),
            );
        }
        if limits.timeout_ms == 0 || limits.timeout_ms > 15 * 60 * 1000 {
            return bad(
                "limits.timeout_ms",
                format!("{} must be 1..=900000 (15 minutes)", limits.timeout_ms),
            );
        }
        if limits.max_instances == 0 || limits.max_instances > 1000 {
            return bad(
                "limits.max_instances",
                format!("{} must be 1..=1000", limits.max_instances),
            );
        }
        let ranges: [(&str, u64, u64); 4] = [
            (
                "limits.requests_in_flight",
                limits.requests_in_flight.into(),
                64,
            ),
            (
                "limits.plugin_requests_in_flight",
                limits.plugin_requests_in_flight.into(),
                4096,
            ),
            ("limits.kv_max_keys", limits.kv_max_keys, 1_000_000),
            ("limits.kv_max_bytes", limits.kv_max_bytes, 1 << 30),
        ];
        for (field, value, max) in ranges {
            if value == 0 || value > max {
                return bad(field, format!("{value} must be 1..={max}"));
            }
        }
        Ok(())
    }

    /// An `allowed_hosts` entry is an origin or `${config.KEY}` naming a declared key.
    fn check_origin(&self, entry: &str) -> std::result::Result<(), String> {
        match config_reference(entry) {
            Some(key) if self.config.contains_key(key) => Ok(()),
            Some(key) => Err(format!(
                "`{entry}` names config key `{key}`, which [config] does not declare"
            )),
            None => Origin::parse(entry).map(|_| ()),
        }
    }

    /// `text` with each `${config.KEY}` replaced by the call's config value.
    pub fn interpolate(&self, text: &str, config: &BTreeMap<String, String>) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${config.") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "${config.".len()..];
            let end = after
                .find('}')
                .ok_or_else(|| Error::Manifest(format!("unclosed `${{config.` in {text:?}")))?;
            let key = &after[..end];
            let value = config.get(key).ok_or_else(|| {
                Error::Config(format!("`{key}` is needed by {text:?} but is not set"))
            })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The origins allowed for a call with this config: entries resolved.
    pub fn resolve_origin(&self, entry: &str, config: &BTreeMap<String, String>) -> Result<Origin> {
        match config_reference(entry) {
            Some(key) => {
                let value = config.get(key).ok_or_else(|| {
                    Error::Config(format!(
                        "`{key}` is needed by allowed host `{entry}` but is not set"
                    ))
                })?;
                let url = Url::parse(value)
                    .map_err(|e| Error::Config(format!("`{key}` = {value:?} is not a URL: {e}")))?;
                Origin::of_url(&url).map_err(|e| Error::Config(format!("`{key}` = {value:?}: {e}")))
            }
            None => Origin::parse(entry).map_err(Error::Manifest),
        }
    }

    /// Check a call's config against the declared keys and fill in defaults.
    pub fn effective_config(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for key in given.keys() {
            if !self.config.contains_key(key) {
                let known: Vec<&str> = self.config.keys().map(String::as_str).collect();
                return Err(Error::Config(format!(
                    "unknown key `{key}` for plugin {} (it accepts: {})",
                    self.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        for (key, spec) in &self.config {
            match given.get(key).or(spec.default.as_ref()) {
                Some(v) => {
                    out.insert(key.clone(), v.clone());
                }
                None if spec.required => {
                    return Err(Error::Config(format!(
                        "plugin {} needs config key `{key}`{}",
                        self.name,
                        if spec.description.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", spec.description)
                        }
                    )));
                }
                None => {}
            }
        }
        Ok(out)
    }
}

/// `${config.KEY}` → `KEY`.
fn config_reference(entry: &str) -> Option<&str> {
    entry.strip_prefix("${config.")?.strip_suffix('}')
}

/// Same major version (or, before 1.0, same minor), and not newer than ours.
fn contract_compatible(theirs: &semver::Version, ours: &semver::Version) -> bool {
    let same_line = if ours.major == 0 {
        theirs.major == 0 && theirs.minor == ours.minor
    } else {
        theirs.major == ours.major
    };
    same_line && theirs <= ours
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "scim-deprovision"
        version = "0.1.0"
        contract = "0.1.0"
        [capabilities]
        allowed_hosts = ["${config.base_url}", "https://api.example.com"]
        [[capabilities.credentials]]
        secret = "token"
        host = "${config.base_url}"
        scheme = "bearer"
        [config.base_url]
        required = true
    "#;

    #[test]
    fn accepts_a_good_manifest_with_defaults() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.limits, Limits::default());
        assert!(!m.capabilities.kv);
        assert!(m.capabilities.secrets.is_empty());
    }

    #[test]
    fn unknown_field_is_named() {
        let err =
            Manifest::parse(&GOOD.replace("[capabilities]", "[capabilities]\nnetwork = true"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `network`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                GOOD.replace("scim-deprovision", "Scim Deprovision"),
                "`name`",
            ),
            (
                GOOD.replace("version = \"0.1.0\"", "version = \"one\""),
                "`version`",
            ),
            (
                GOOD.replace("contract = \"0.1.0\"", "contract = \"0.2.0\""),
                "`contract`",
            ),
            (
                GOOD.replace("https://api.example.com", "ftp://x"),
                "allowed_hosts[1]",
            ),
            (
                GOOD.replace("https://api.example.com", "https://x/path"),
                "allowed_hosts[1]",
            ),
            (
                GOOD.replace("${config.base_url}\", \"https", "${config.nope}\", \"https"),
                "allowed_hosts[0]",
            ),
            (
                GOOD.replace("scheme = \"bearer\"", "scheme = \"api-key\""),
                "credentials[0].header",
            ),
            (
                GOOD.replace(
                    "host = \"${config.base_url}\"",
                    "host = \"https://other.example\"",
                ),
                "credentials[0].host",
            ),
            (
                format!("{GOOD}\n[limits]\nmemory_mb = 5000"),
                "limits.memory_mb",
            ),
            (
                format!("{GOOD}\n[limits]\ntimeout_ms = 0"),
                "limits.timeout_ms",
            ),
        ];
        for (text, field) in cases {
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "expected {field} in: {err}");
        }
    }

    #[test]
    fn config_is_checked_against_declared_keys() {
        let m = Manifest::parse(GOOD).unwrap();
        let mut given = BTreeMap::new();
        let err = m.effective_config(&given).unwrap_err().to_string();
        assert!(err.contains("needs config key `base_url`"), "{err}");
        given.insert("bogus".into(), "1".into());
        let err = m.effective_config(&given).unwrap_err().to_string();
        assert!(err.contains("unknown key `bogus`"), "{err}");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Origin::parse("https://API.example.com").unwrap();
        assert_eq!(a.to_string(), "https://api.example.com:443");
        assert_ne!(a, Origin::parse("http://api.example.com:443").unwrap());
        assert_eq!(
            Origin::parse("http://[::1]:8080").unwrap().ip(),
            Some("::1".parse().unwrap())
        );
        assert!(Origin::parse("https://user:pw@example.com").is_err());
    }
}
