//! A request for a new ticket, and the checks every way in holds it to
//! (the API's create, an import's row, an HR webhook's event) before the
//! scheduler looks at its workflow: a subject, inputs that are an object,
//! both within the intake limits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::IntakeLimits;
use crate::error::{Error, Result};

/// A request for a new ticket: one subject, one workflow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// Workflow name.
    pub workflow: String,
    /// Who the ticket is about.
    pub subject: String,
    /// Inputs for the steps (a JSON object).
    #[serde(default)]
    pub inputs: Value,
    /// Bulk import batch, if any.
    #[serde(default)]
    pub batch: Option<String>,
    /// Create it even if the subject already has an open ticket of this
    /// workflow (a second, deliberate run).
    #[serde(default)]
    pub allow_duplicate: bool,
}

impl NewTicket {
    /// A subject, and inputs that are a JSON object (or absent).
    pub fn check_shape(&self) -> Result<()> {
        if self.subject.trim().is_empty() {
            return Err(Error::Usage(
                "`subject` is empty: a ticket is about one person".into(),
            ));
        }
        if !(self.inputs.is_null() || self.inputs.is_object()) {
            return Err(Error::Usage("`inputs` must be a JSON object".into()));
        }
        Ok(())
    }

    /// The subject and the inputs within `limits`; the error names the
    /// limit and the flag that sets it.
    pub fn check_limits(&self, limits: &IntakeLimits) -> Result<()> {
        let subject_len = self.subject.trim().len();
        if subject_len > limits.subject_bytes {
            return Err(Error::TooLarge(IntakeLimits::over(
                "`subject`",
                subject_len,
                limits.subject_bytes,
                "--max-subject-bytes",
            )));
        }
        let inputs_len = self.inputs.to_string().len();
        if inputs_len > limits.inputs_bytes {
            return Err(Error::TooLarge(IntakeLimits::over(
                "`inputs`",
                inputs_len,
                limits.inputs_bytes,
                "--max-inputs-bytes",
            )));
        }
        Ok(())
    }
}
