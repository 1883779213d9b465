//! What a plugin call returns (the outcome, the log, the outbound requests)
//! and what it is given: plain data shared by the runtime, which makes it,
//! the ticket and the store, which keep it, and the API, which shows it.
//! A leaf: it imports nothing of the crate.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which export to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Do the work.
    Run,
    /// Check the effect holds.
    Verify,
    /// Undo.
    Compensate,
}

impl std::str::FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "run" => Ok(Self::Run),
            "verify" => Ok(Self::Verify),
            "compensate" => Ok(Self::Compensate),
            other => Err(format!(
                "unknown op `{other}`: use run, verify or compensate"
            )),
        }
    }
}

/// The ticket-side facts a step is called with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StepInput {
    /// Ticket id.
    pub ticket_id: String,
    /// Step name in the workflow.
    pub step: String,
    /// Who the ticket is about.
    pub subject: String,
    /// Ticket inputs (a JSON object).
    pub inputs: Value,
    /// Outputs of earlier steps, by step name (a JSON object).
    pub prior_outputs: Value,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Stable across retries; defaults to `ticket_id/step`.
    pub idempotency_key: String,
}

/// Proof of an effect, checked and masked by the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// One line for the auditor.
    pub summary: String,
    /// The object changed or checked.
    pub target: String,
    /// State before, when known.
    pub before: Option<Value>,
    /// State after, or as read back.
    pub after: Option<Value>,
}

/// Whether the scheduler should try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Try again later.
    Retryable,
    /// Do not retry.
    Fatal,
}

/// Who or what ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The plugin returned a step error.
    Plugin,
    /// The call ran past `limits.timeout_ms`.
    Timeout,
    /// The plugin tried to grow memory past `limits.memory_mb`.
    MemoryLimit,
    /// The plugin's stack overflowed (deep recursion).
    StackOverflow,
    /// The plugin trapped or panicked.
    Trap,
    /// The plugin returned more than the host accepts.
    OutputLimit,
    /// The plugin returned something malformed (bad JSON, ...).
    InvalidOutput,
    /// The host had no capacity for another instance.
    Capacity,
    /// The plugin ran into a host resource limit (open resources, requests
    /// in flight, key-value quota, header sizes).
    ResourceLimit,
}

/// A call that did not succeed. An expected outcome, not a host error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepFailure {
    /// Retry or not.
    pub kind: FailureKind,
    /// What ended the call.
    pub cause: FailureCause,
    /// Human-readable, secrets masked.
    pub message: String,
    /// Wait at least this long before retrying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl StepFailure {
    pub(crate) fn fatal(cause: FailureCause, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Fatal,
            cause,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub(crate) fn retryable(cause: FailureCause, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            cause,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            FailureKind::Retryable => "retryable",
            FailureKind::Fatal => "fatal",
        };
        write!(f, "{kind}: {}", self.message)?;
        if let Some(ms) = self.retry_after_ms {
            write!(f, " (retry after {ms} ms)")?;
        }
        Ok(())
    }
}

/// The result of one call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The export returned success.
    Succeeded {
        /// Outputs, for `run` only.
        #[serde(skip_serializing_if = "Option::is_none")]
        outputs: Option<Value>,
        /// Proof.
        evidence: Evidence,
    },
    /// It did not.
    Failed {
        /// Why.
        error: StepFailure,
    },
}

/// Everything one call left behind, ready for the trail or the terminal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallReport {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// SHA-256 of the plugin's wasm.
    pub wasm_sha256: String,
    /// The export called.
    pub op: Op,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The step's log: plugin log lines, then captured stdout/stderr.
    pub log: Vec<LogLine>,
    /// Outbound requests, in order.
    pub requests: Vec<RequestRecord>,
    /// Wall time of the call, instantiation included.
    pub duration_ms: u64,
}

impl CallReport {
    /// The failure, if the call failed.
    pub fn failure(&self) -> Option<&StepFailure> {
        match &self.outcome {
            Outcome::Failed { error } => Some(error),
            Outcome::Succeeded { .. } => None,
        }
    }
}

/// One line of a step's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// Milliseconds since the call started.
    pub at_ms: u64,
    /// `trace` .. `error`, or `stdout`/`stderr` for captured output.
    pub level: String,
    /// The message, secrets masked.
    pub message: String,
}

/// One outbound request, as the step log records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Full URL, with secret values masked.
    pub url: String,
    /// Response status, when a response arrived.
    pub status: Option<u16>,
    /// Why no response arrived: refused by policy, connect failure, ...
    pub error: Option<String>,
    /// From the request leaving the plugin to the response headers.
    pub duration_ms: u64,
    /// Made by the host for the plugin (a credential's token request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_host: bool,
    /// The host attached a credential to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credential: bool,
}
