//! Secrets the manifest grants for reading (`secrets = ["name"]`).
//!
//! Prefer `[[capabilities.credentials]]`: the host attaches those to
//! requests itself and the plugin never holds them.

use crate::StepError;

/// The secret's value, or a fatal error saying why it is unavailable.
pub fn get(name: &str) -> Result<String, StepError> {
    crate::wit::itsm::plugin::secrets::get(name).map_err(StepError::fatal)
}
