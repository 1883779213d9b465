//! A request for a new ticket, and the checks every way in holds it to
//! (the API's create, an import's row, an HR webhook's event) before the
//! scheduler looks at its workflow: a subject, inputs that are an object,
//! both within the intake limits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::IntakeLimits;
use crate::error::{Error, Result};
use crate::ticket::{StepRecord, Ticket, TicketState, new_id};
use crate::workflow::Workflow;

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

    /// The inputs as a ticket of `wf` keeps them: checked against its
    /// declarations, typed, defaults filled in; the error names every
    /// field that does not fit.
    pub fn checked_inputs(&self, wf: &Workflow) -> Result<Value> {
        wf.check_inputs(&self.subject, &self.inputs)
            .map_err(Error::Usage)
    }

    /// The ticket this request opens at `now`, pinned to `wf` (whose
    /// content hash is `hash`), with `inputs` as [`Self::checked_inputs`]
    /// gave them: its SLA set from the workflow, every step pending.
    pub fn open(
        self,
        wf: &Workflow,
        hash: &str,
        inputs: Value,
        requested_by: &str,
        now: u64,
    ) -> Result<Ticket> {
        let sla = wf.sla_times(&inputs, now).map_err(Error::Workflow)?;
        Ok(Ticket {
            id: new_id(now),
            workflow: wf.name.clone(),
            workflow_hash: hash.to_string(),
            workflow_version: wf.version.clone(),
            subject: self.subject.trim().to_string(),
            inputs,
            state: TicketState::Pending,
            requested_by: requested_by.to_string(),
            batch: self.batch,
            created_ms: now,
            updated_ms: now,
            sla_deadline_ms: sla.map(|(deadline, _)| deadline),
            sla_breached: false,
            sla_at_risk_ms: sla.map(|(_, at_risk)| at_risk),
            sla_at_risk: false,
            compensating: false,
            steps: wf
                .steps
                .iter()
                .map(|s| (s.name.clone(), StepRecord::new()))
                .collect(),
            routed_to: None,
            links: Vec::new(),
            head: Default::default(),
        })
    }
}
