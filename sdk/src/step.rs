//! The step a plugin implements and the values it takes and returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wit::itsm::plugin::types as wit;

/// One workflow step. `run` does the work, `verify` proves it holds,
/// `compensate` undoes it.
pub trait Step {
    /// Do the work. Must be idempotent on [`Context::idempotency_key`]: the
    /// host runs the step again after a crash or a retryable error.
    fn run(ctx: &Context) -> Result<Outcome, StepError>;

    /// Check, read-only, that the effect of `run` holds.
    fn verify(ctx: &Context) -> Result<Evidence, StepError>;

    /// Undo the effect of `run`. The default says the plugin cannot.
    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        let _ = ctx;
        Err(StepError::fatal("this plugin cannot compensate"))
    }
}

/// What the host tells a step about its work.
#[derive(Debug, Clone)]
pub struct Context {
    /// The ticket this step belongs to.
    pub ticket_id: String,
    /// The step's name in the workflow.
    pub step: String,
    /// Who the ticket is about, e.g. `alice@example.com`.
    pub subject: String,
    /// The ticket's inputs (a JSON object).
    pub inputs: Value,
    /// Outputs of the steps that ran before this call, by step name (a JSON
    /// object). In `verify` and `compensate` it also holds this step's own
    /// `run` outputs under [`Context::step`]: see [`Context::run_outputs`].
    pub prior_outputs: Value,
    /// Configuration from the workflow.
    pub config: BTreeMap<String, String>,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// Stable across retries and crashes: send it to APIs that deduplicate.
    pub idempotency_key: String,
}

impl Context {
    /// A config value, or a fatal error naming the missing key.
    pub fn config(&self, key: &str) -> Result<&str, StepError> {
        self.config
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| StepError::fatal(format!("config key `{key}` is not set")))
    }

    /// An input, deserialized; a fatal error names the key when it is
    /// missing or of the wrong shape.
    pub fn input<T: DeserializeOwned>(&self, key: &str) -> Result<T, StepError> {
        let v = self
            .inputs
            .get(key)
            .ok_or_else(|| StepError::fatal(format!("input `{key}` is missing")))?;
        serde_json::from_value(v.clone()).map_err(|e| {
            StepError::fatal(format!("input `{key}` is not what this step expects: {e}"))
        })
    }

    /// In `verify` and `compensate`: the outputs this step's own `run`
    /// returned, which the host passes in `prior_outputs` under the step's
    /// name. `None` in `run`, and when no `run` of this step succeeded (a
    /// compensate with no record of a change has nothing to undo).
    ///
    /// Record in `run`'s outputs what `compensate` needs to undo exactly
    /// that change and no other: the object's id and what was done to it.
    pub fn run_outputs(&self) -> Option<&Value> {
        self.prior_outputs.get(&self.step).filter(|v| v.is_object())
    }

    fn from_wit(ctx: wit::StepContext) -> Result<Self, StepError> {
        let parse = |what: &str, text: &str| {
            serde_json::from_str(text)
                .map_err(|e| StepError::fatal(format!("host sent invalid {what} JSON: {e}")))
        };
        Ok(Self {
            inputs: parse("inputs", &ctx.inputs)?,
            prior_outputs: parse("prior-outputs", &ctx.prior_outputs)?,
            ticket_id: ctx.ticket_id,
            step: ctx.step,
            subject: ctx.subject,
            config: ctx.config.into_iter().collect(),
            attempt: ctx.attempt,
            idempotency_key: ctx.idempotency_key,
        })
    }
}

/// Proof of what a step changed or checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// One line for the auditor.
    pub summary: String,
    /// The object changed or checked (a URL or `system:id`).
    pub target: String,
    /// State before, when known.
    pub before: Option<Value>,
    /// State after, or as read back.
    pub after: Option<Value>,
}

impl Evidence {
    /// Evidence with a summary and a target.
    pub fn new(summary: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            target: target.into(),
            before: None,
            after: None,
        }
    }

    /// Record the state before the change.
    pub fn before(mut self, state: Value) -> Self {
        self.before = Some(state);
        self
    }

    /// Record the state after the change.
    pub fn after(mut self, state: Value) -> Self {
        self.after = Some(state);
        self
    }

    fn into_wit(self) -> wit::Evidence {
        wit::Evidence {
            summary: self.summary,
            target: self.target,
            before: self.before.map(|v| v.to_string()),
            after: self.after.map(|v| v.to_string()),
        }
    }
}

/// A successful `run`: outputs for later steps, evidence for the trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// A JSON object later steps can read.
    pub outputs: Value,
    /// What was changed.
    pub evidence: Evidence,
}

impl Outcome {
    /// An outcome. `outputs` should be a JSON object (`json!({})` for none).
    pub fn new(outputs: Value, evidence: Evidence) -> Self {
        Self { outputs, evidence }
    }
}

/// Why a step did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// May pass: the host retries later with the same idempotency key.
    Retryable {
        /// What went wrong.
        message: String,
        /// Wait at least this long (e.g. from `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Retrying will not help.
    Fatal(String),
}

impl StepError {
    /// A fatal error.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }

    /// A retryable error, with the host's default backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A retryable error that asks for a minimum wait.
    pub fn retry_after(message: impl Into<String>, wait: Duration) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: Some(wait),
        }
    }

    /// Whether the host will retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    fn into_wit(self) -> wit::StepError {
        match self {
            Self::Retryable {
                message,
                retry_after,
            } => wit::StepError::Retryable(wit::RetryableError {
                message,
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            }),
            Self::Fatal(m) => wit::StepError::Fatal(m),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable { message, .. } => write!(f, "retryable: {message}"),
            Self::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

impl std::error::Error for StepError {}

#[doc(hidden)]
pub fn run<S: Step>(ctx: wit::StepContext) -> Result<wit::StepOutcome, wit::StepError> {
    let ctx = Context::from_wit(ctx).map_err(StepError::into_wit)?;
    match S::run(&ctx) {
        Ok(o) => Ok(wit::StepOutcome {
            outputs: o.outputs.to_string(),
            evidence: o.evidence.into_wit(),
        }),
        Err(e) => Err(e.into_wit()),
    }
}

#[doc(hidden)]
pub fn verify<S: Step>(ctx: wit::StepContext) -> Result<wit::Evidence, wit::StepError> {
    let ctx = Context::from_wit(ctx).map_err(StepError::into_wit)?;
    S::verify(&ctx)
        .map(Evidence::into_wit)
        .map_err(StepError::into_wit)
}

#[doc(hidden)]
pub fn compensate<S: Step>(ctx: wit::StepContext) -> Result<wit::Evidence, wit::StepError> {
    let ctx = Context::from_wit(ctx).map_err(StepError::into_wit)?;
    S::compensate(&ctx)
        .map(Evidence::into_wit)
        .map_err(StepError::into_wit)
}
