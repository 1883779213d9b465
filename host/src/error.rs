//! The host crate's one error type. A leaf: it imports nothing of the
//! crate, so every module can use it. Expected outcomes are not errors:
//! a plugin's step failure is a `report::StepFailure`, and a create a
//! shared store refused is a `store::Refusal` beside an `Ok`.

use std::path::PathBuf;

/// Everything that can go wrong in the host, outside a plugin's own step errors
/// (those are step failures in a call's report, an expected outcome).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest that does not parse or validate; the message names the field.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// A step's configuration does not fit the plugin's declared keys.
    #[error("invalid config: {0}")]
    Config(String),
    /// A plugin that cannot be found, compiled or linked.
    #[error("plugin {name}: {message}")]
    Plugin {
        /// Plugin name or path.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file the host needed could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A workflow file that does not parse or validate; names file and step.
    #[error("invalid workflow: {0}")]
    Workflow(String),
    /// The durable store failed; nothing after the failure was acknowledged.
    #[error("store: {0}")]
    Store(String),
    /// PostgreSQL rolled a transaction back for it to be run again (a
    /// deadlock, SQLSTATE 40P01, or a serialization failure, 40001):
    /// nothing of it landed. The store's group commit runs it again; past
    /// its tries, and from every other call, it is an [`Error::Store`].
    #[error("store: {0}")]
    RolledBack(String),
    /// The disk holding the store is full (or under its reserve); nothing
    /// was written, reads go on, and writes resume once space is freed.
    #[error("store: {0}")]
    StorageFull(String),
    /// This worker no longer holds the ticket's lease (it was paused or cut
    /// off past the lease, and another worker took the ticket over): the
    /// store refused the write, so nothing of it landed.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Something asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that conflicts with the current state (approve a ticket not waiting, ...).
    #[error("{0}")]
    Conflict(String),
    /// The caller is known but may not do this (a missing role, separation of duties).
    #[error("{0}")]
    Forbidden(String),
    /// Bad input from a user (a flag, a JSON document).
    #[error("{0}")]
    Usage(String),
    /// Input over one of the intake limits; the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The service is not taking this work now (it is shutting down); the
    /// message says why and when to try again.
    #[error("{0}")]
    Unavailable(String),
    /// A wasmtime failure outside any one call (engine set-up).
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn plugin(name: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Plugin {
            name: name.into(),
            message: message.to_string(),
        }
    }

    /// A store failure handed to many waiters (one group commit, many
    /// tickets): a full disk stays [`Error::StorageFull`] for each, so each
    /// answers 507; anything else is a store error with the same words.
    pub(crate) fn copy(&self) -> Self {
        match self {
            Self::StorageFull(m) => Self::StorageFull(m.clone()),
            Self::Store(m) | Self::RolledBack(m) => Self::Store(m.clone()),
            Self::Fenced(m) => Self::Fenced(m.clone()),
            other => Self::Store(other.to_string()),
        }
    }
}

/// A file's text, or `None` if it does not exist: for optional config
/// files (`tokens.toml`, `hooks.toml`, `settings.toml`), where absence means
/// "nothing configured" and any other failure is an error naming the file.
pub(crate) fn read_optional(path: &std::path::Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.into(),
            source,
        }),
    }
}
