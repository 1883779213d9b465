//! API tokens and roles.
//!
//! Tokens live in `tokens.toml` under the server's home, one entry per
//! principal, stored as SHA-256 hashes: the file can be read (backed up,
//! reviewed) without giving anyone access. A token is 32 random bytes, so a
//! plain hash is enough; there is nothing to brute-force.
//!
//! Built-in roles: `admin` (plugins, workflows), `operator` (create, import,
//! cancel, retry), `approver` (approve, reject) and `auditor` (read and
//! export). Any other role name is an approval group: a workflow step with
//! `approval = { role = "security" }` needs an approver who also holds
//! `security`. Who reads which ticket is [`crate::access`]'s to decide.
//! When each token was last used is noted apart ([`last_use`]).

mod last_use;

pub use last_use::{FLUSH_EVERY as LAST_USE_FLUSH_EVERY, LastUse, read as last_uses};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub use crate::principal::{BUILTIN_ROLES, Principal, Role};

/// One entry of `tokens.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The principal's name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The person's e-mail, if the token is a person's: tasks assigned to
    /// it are theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was made (RFC 3339), for people reading the file.
    #[serde(default)]
    pub created: String,
    /// When it stops working (RFC 3339); absent: never. A person's token
    /// expires after [`PERSON_TOKEN_LIFETIME`] unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// A service's token (an HR system, a pipeline), not a person's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service: bool,
}

/// How long a person's token works unless `--expires` says otherwise: a
/// token handed to someone for one layoff should not outlive their role.
pub const PERSON_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// How long a new token works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// A person's: [`PERSON_TOKEN_LIFETIME`]; a service's: no end.
    #[default]
    Default,
    /// No end.
    Never,
    /// This long from now.
    For(std::time::Duration),
}

impl TokenEntry {
    /// When it stops working, if it does; an `expires` that does not read
    /// as RFC 3339 (a hand edit gone wrong) counts as already past.
    fn expiry(&self) -> Option<SystemTime> {
        self.expires
            .as_deref()
            .map(|e| humantime::parse_rfc3339_weak(e).unwrap_or(SystemTime::UNIX_EPOCH))
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Entries, one per principal.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

impl TokenFile {
    /// Read `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<Self> {
        let Some(text) = crate::error::read_optional(path)? else {
            return Ok(Self::default());
        };
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: Self = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{origin}: {}", e.message())))?;
        for t in &file.tokens {
            validate_name(&t.name)?;
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Config(format!(
                    "{origin}: token `{}`: sha256 must be 64 hex digits",
                    t.name
                )));
            }
        }
        Ok(file)
    }

    /// The file's text.
    pub fn text(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Write it atomically (temp file, then rename), readable by the owner only.
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        let text = self.text()?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Add (or replace) `name`'s token; returns the token, shown once.
    pub fn issue(&mut self, name: &str, roles: &[String]) -> Result<String> {
        self.issue_for(name, roles, None)
    }

    /// [`TokenFile::issue`], for a person with this e-mail.
    pub fn issue_for(
        &mut self,
        name: &str,
        roles: &[String],
        email: Option<&str>,
    ) -> Result<String> {
        self.issue_with(name, roles, email, false, Lifetime::Default)
    }

    /// [`TokenFile::issue_for`], as a service's token (`service`) or a
    /// person's, working for `lifetime`.
    pub fn issue_with(
        &mut self,
        name: &str,
        roles: &[String],
        email: Option<&str>,
        service: bool,
        lifetime: Lifetime,
    ) -> Result<String> {
        validate_name(name)?;
        if let Some(e) = email
            && !crate::principal::is_email(e)
        {
            return Err(Error::Usage(format!("{e:?} is not an e-mail address")));
        }
        if roles.is_empty() && email.is_none() {
            return Err(Error::Usage(format!(
                "a token needs at least one role, or a person's --email (built-in roles: {})",
                BUILTIN_ROLES.join(", ")
            )));
        }
        for r in roles {
            validate_name(r)?;
        }
        let secret: [u8; 32] = rand::random();
        let token = format!(
            "itsm_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        self.tokens.retain(|t| t.name != name);
        self.tokens.push(TokenEntry {
            name: name.into(),
            roles: roles.to_vec(),
            email: email.map(|e| e.trim().to_lowercase()),
            sha256: hash(&token),
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            expires: match (lifetime, service) {
                (Lifetime::For(d), _) => Some(d),
                (Lifetime::Default, false) => Some(PERSON_TOKEN_LIFETIME),
                (Lifetime::Default, true) | (Lifetime::Never, _) => None,
            }
            .map(|d| humantime::format_rfc3339_seconds(SystemTime::now() + d).to_string()),
            service,
        });
        Ok(token)
    }

    /// Remove `name`'s token; false if there was none.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        self.tokens.len() != before
    }
}

/// The name of the token document in a shared store.
pub const TOKENS_DOCUMENT: &str = "tokens.toml";

/// Where the tokens live: the home's `tokens.toml`, or, when several
/// workers share a store, its `tokens.toml` document, so a token created or
/// revoked once holds on every worker.
#[derive(Clone)]
pub enum TokenPlace {
    /// A file in the home.
    File(PathBuf),
    /// The shared store's document.
    Shared(std::sync::Arc<dyn crate::store::Store>),
}

impl std::fmt::Debug for TokenPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TokenPlace {
    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Shared(_) => "the shared store's tokens.toml".into(),
        }
    }

    /// The tokens now, and the shared document's version (`None` for a
    /// file, or a document not written yet).
    pub fn read(&self) -> Result<(TokenFile, Option<i64>)> {
        match self {
            Self::File(path) => Ok((TokenFile::read(path)?, None)),
            Self::Shared(store) => {
                match crate::shared::documents(store.as_ref())?.get(TOKENS_DOCUMENT)? {
                    Some((text, version)) => {
                        Ok((TokenFile::parse(&text, &self.describe())?, Some(version)))
                    }
                    None => Ok((TokenFile::default(), None)),
                }
            }
        }
    }

    /// Change the tokens with `change` and write them back: for a shared
    /// document, compare-and-set, read again and retried when another
    /// writer came first.
    pub fn update<T>(&self, mut change: impl FnMut(&mut TokenFile) -> Result<T>) -> Result<T> {
        match self {
            Self::File(path) => {
                let mut file = TokenFile::read(path)?;
                let out = change(&mut file)?;
                file.write(path)?;
                Ok(out)
            }
            Self::Shared(store) => loop {
                let (mut file, version) = self.read()?;
                let out = change(&mut file)?;
                if crate::shared::documents(store.as_ref())?.put(
                    TOKENS_DOCUMENT,
                    &file.text()?,
                    version,
                )? {
                    return Ok(out);
                }
            },
        }
    }
}

/// Principal and role names: short, printable, no spaces (they land in the trail).
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{name:?} is not a valid name: use 1-64 letters, digits, `-`, `_`, `.` or `@`"
        )))
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, Unauthenticated> {
    let header = header.ok_or(Unauthenticated::Missing)?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Unauthenticated::Malformed)
}

/// Hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Why a request is not authenticated: the 401's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No `Authorization` header.
    #[error("missing `Authorization: Bearer <token>` header")]
    Missing,
    /// A header that is not a bearer token.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// A token not in the file.
    #[error("unknown or revoked token")]
    Unknown,
    /// A token past its expiry: whose, and when it expired.
    #[error("the token of {0} expired at {1}: ask an admin for a new one (`itsm token create`)")]
    Expired(String, String),
    /// The server has no tokens at all.
    #[error(
        "this server has no API tokens yet: create one with `itsm token create --name NAME --role ROLE`"
    )]
    NoTokens,
    /// The file could not be read.
    #[error("the token file cannot be read; see the server log")]
    Unreadable,
}

/// The server's view of `tokens.toml`, re-read when the file changes (or,
/// in a shared store, at most a second after the document does) so
/// `itsm token create` and `revoke` take effect without a restart.
#[derive(Debug)]
pub struct Tokens {
    place: TokenPlace,
    cache: RwLock<Cached>,
    /// When each token was last used, written out now and then.
    last_use: LastUse,
}

#[derive(Debug, Default)]
struct Cached {
    stamp: Option<Stamp>,
    /// Each token's principal, and when the token stops working.
    by_hash: BTreeMap<String, (Principal, Option<SystemTime>)>,
}

/// What says the cached tokens are current.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stamp {
    /// The file's modification time and size.
    File(SystemTime, u64),
    /// When the shared document was last read, and its version then.
    Shared(std::time::Instant, Option<i64>),
}

/// How stale the view of a shared token document may be: a revocation on
/// one worker holds on every other within this.
const SHARED_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Tokens {
    /// Tokens from `path` (it need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self::at(TokenPlace::File(path))
    }

    /// Tokens from `place`.
    pub fn at(place: TokenPlace) -> Self {
        Self {
            place,
            cache: RwLock::new(Cached::default()),
            last_use: LastUse::default(),
        }
    }

    /// Where the tokens live.
    pub fn place(&self) -> &TokenPlace {
        &self.place
    }

    /// The principal behind an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Unauthenticated> {
        let token = bearer(header)?;
        self.refresh()?;
        let cache = self.cache.read().expect("token cache lock");
        if cache.by_hash.is_empty() {
            return Err(Unauthenticated::NoTokens);
        }
        let (principal, expiry) = cache
            .by_hash
            .get(&hash(token))
            .ok_or(Unauthenticated::Unknown)?;
        if let Some(at) = expiry
            && *at <= SystemTime::now()
        {
            return Err(Unauthenticated::Expired(
                principal.name.clone(),
                humantime::format_rfc3339_seconds(*at).to_string(),
            ));
        }
        self.last_use.touch(&principal.name);
        Ok(principal.clone())
    }

    /// Write out the uses noted since the last call ([`LastUse::flush`]).
    pub fn flush_last_use(&self) -> Result<()> {
        self.last_use.flush(&self.place)
    }

    /// Re-read the file if its modification time or size changed; the
    /// shared document once its last read is a second old.
    fn refresh(&self) -> Result<(), Unauthenticated> {
        let cached = self.cache.read().expect("token cache lock").stamp;
        let unreadable = |e: Error| {
            tracing::error!(error = %e, "cannot read the tokens");
            Unauthenticated::Unreadable
        };
        let (file, stamp) = match &self.place {
            TokenPlace::File(path) => {
                let stamp = std::fs::metadata(path)
                    .ok()
                    .map(|m| Stamp::File(m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                if cached == stamp && stamp.is_some() {
                    return Ok(());
                }
                (TokenFile::read(path).map_err(unreadable)?, stamp)
            }
            TokenPlace::Shared(_) => {
                if let Some(Stamp::Shared(at, _)) = cached
                    && at.elapsed() < SHARED_REFRESH
                {
                    return Ok(());
                }
                let (file, version) = self.place.read().map_err(unreadable)?;
                (
                    file,
                    Some(Stamp::Shared(std::time::Instant::now(), version)),
                )
            }
        };
        let by_hash = file
            .tokens
            .into_iter()
            .map(|t| {
                let expiry = t.expiry();
                (
                    t.sha256.to_ascii_lowercase(),
                    (
                        Principal {
                            name: t.name,
                            roles: t.roles.into_iter().collect(),
                            email: t.email,
                        },
                        expiry,
                    ),
                )
            })
            .collect();
        *self.cache.write().expect("token cache lock") = Cached { stamp, by_hash };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_authenticate_until_revoked_and_the_file_holds_only_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let tokens = Tokens::new(path.clone());
        assert_eq!(
            tokens.authenticate(Some("Bearer x")),
            Err(Unauthenticated::NoTokens)
        );

        let mut file = TokenFile::read(&path).unwrap();
        let alice = file
            .issue("alice", &["operator".into(), "security".into()])
            .unwrap();
        file.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&alice), "the token itself is never stored");
        assert!(text.contains(&hash(&alice)));

        let p = tokens
            .authenticate(Some(&format!("Bearer {alice}")))
            .unwrap();
        assert_eq!(p.name, "alice");
        assert!(p.has(Role::Operator) && !p.has(Role::Approver));
        assert!(p.require(Role::Approver, "approve").is_err());
        assert_eq!(tokens.authenticate(None), Err(Unauthenticated::Missing));
        assert_eq!(
            tokens.authenticate(Some(&format!("Basic {alice}"))),
            Err(Unauthenticated::Malformed)
        );
        assert_eq!(
            tokens.authenticate(Some("Bearer itsm_wrong")),
            Err(Unauthenticated::Unknown)
        );

        // Revocation takes effect on the next request, no restart.
        let bob = file.issue("bob", &["auditor".into()]).unwrap();
        assert!(file.revoke("alice"));
        file.write(&path).unwrap();
        assert_eq!(
            tokens.authenticate(Some(&format!("Bearer {alice}"))),
            Err(Unauthenticated::Unknown)
        );
        assert_eq!(
            tokens
                .authenticate(Some(&format!("Bearer {bob}")))
                .unwrap()
                .name,
            "bob"
        );
    }

    #[test]
    fn bad_names_and_empty_roles_are_refused() {
        let mut file = TokenFile::default();
        assert!(file.issue("has space", &["operator".into()]).is_err());
        assert!(file.issue("ok", &[]).is_err());
        assert!(file.issue("ok", &["bad role".into()]).is_err());
    }

    #[test]
    fn a_persons_token_expires_by_default_a_services_does_not_and_a_past_expiry_is_refused_naming_it()
     {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut file = TokenFile::default();
        let person = file.issue("ann", &["operator".into()]).unwrap();
        let service = file
            .issue_with(
                "hr-system",
                &["operator".into()],
                None,
                true,
                Lifetime::Default,
            )
            .unwrap();
        let short = file
            .issue_with(
                "temp",
                &["auditor".into()],
                None,
                false,
                Lifetime::For(std::time::Duration::from_secs(3600)),
            )
            .unwrap();
        let expiry = |name: &str| {
            let t = file.tokens.iter().find(|t| t.name == name).unwrap();
            t.expiry()
                .map(|at| at.duration_since(SystemTime::now()).unwrap().as_secs())
        };
        // A person's: about 90 days; a service's: none; an hour: an hour.
        let days_90 = PERSON_TOKEN_LIFETIME.as_secs();
        assert!(expiry("ann").is_some_and(|s| s > days_90 - 60 && s <= days_90));
        assert_eq!(expiry("hr-system"), None);
        assert!(expiry("temp").is_some_and(|s| s > 3500 && s <= 3600));
        assert!(
            file.tokens
                .iter()
                .any(|t| t.name == "hr-system" && t.service)
        );

        // The same tokens, one of them past its expiry, as the server reads them.
        let past = "2020-01-01T00:00:00Z";
        file.tokens
            .iter_mut()
            .find(|t| t.name == "temp")
            .unwrap()
            .expires = Some(past.into());
        file.write(&path).unwrap();
        let tokens = Tokens::new(path.clone());
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            tokens.authenticate(Some(&bearer(&person))).unwrap().name,
            "ann"
        );
        assert_eq!(
            tokens.authenticate(Some(&bearer(&service))).unwrap().name,
            "hr-system"
        );
        let refused = tokens.authenticate(Some(&bearer(&short))).unwrap_err();
        assert_eq!(
            refused,
            Unauthenticated::Expired("temp".into(), past.into())
        );
        assert!(
            refused
                .to_string()
                .contains("expired at 2020-01-01T00:00:00Z")
        );
        // A file written before expiry existed reads, and its tokens never expire.
        let old = TokenFile::parse(
            &format!(
                "[[tokens]]\nname = \"old\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n",
                hash("itsm_old")
            ),
            "test",
        )
        .unwrap();
        assert_eq!(old.tokens[0].expiry(), None);
    }
}
