//! What a call's result becomes: the host never trusts plugin output.
//! A returned outcome is checked (outputs and evidence must be JSON
//! objects, within size), a `step-error` becomes a [`StepFailure`] that
//! keeps its kind (retryable or fatal), a trap is classified by its cause
//! (time limit, memory limit, stack overflow, a panic and its message, a
//! host limit), and every message is capped and masked of secrets.

use serde_json::Value;
use wasmtime::{Store, Trap};

use super::bindings::types as wit;
use super::limits::LimitNotes;
use super::redact::Redactor;
use super::state::CallState;
use super::{
    MAX_EVIDENCE_BYTES, MAX_FIELDS_BYTES, MAX_MESSAGE_BYTES, MAX_OUTPUTS_BYTES, MAX_RESOURCES,
};
use crate::manifest::Manifest;
use crate::report::{Evidence, FailureCause, FailureKind, Outcome, StepFailure};

pub(super) enum Returned {
    Run(wit::StepOutcome),
    Evidence(wit::Evidence),
}

pub(super) fn timeout_failure(limit_ms: u64) -> StepFailure {
    StepFailure::retryable(
        FailureCause::Timeout,
        format!(
            "the call ran past its time limit of {limit_ms} ms (limits.timeout_ms) and was stopped"
        ),
    )
}

pub(super) fn classify_trap(
    err: &wasmtime::Error,
    store: &Store<CallState>,
    m: &Manifest,
) -> StepFailure {
    let data = store.data();
    if data.limiter.memory_hit {
        return StepFailure::fatal(
            FailureCause::MemoryLimit,
            format!(
                "the plugin tried to use more than its memory limit of {} MiB (limits.memory_mb) and was stopped",
                m.limits.memory_mb
            ),
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return timeout_failure(m.limits.timeout_ms),
        Some(Trap::StackOverflow) => {
            return StepFailure::fatal(
                FailureCause::StackOverflow,
                "the plugin overflowed its stack (runaway recursion) and was stopped",
            );
        }
        _ => {}
    }
    if err.chain().any(|c| {
        c.downcast_ref::<wasmtime::component::ResourceTableError>()
            .is_some()
    }) {
        return StepFailure::fatal(
            FailureCause::ResourceLimit,
            format!(
                "host resource limit: the plugin held more than {MAX_RESOURCES} open resources \
                 (header sets, requests, bodies, streams) at once and was stopped"
            ),
        );
    }
    if let Some(e) = err
        .chain()
        .find_map(|c| c.downcast_ref::<wasmtime_wasi_http::FieldMapError>())
    {
        return StepFailure::fatal(
            FailureCause::ResourceLimit,
            format!(
                "host resource limit: a header set may hold at most {MAX_FIELDS_BYTES} bytes \
                 ({e}); the plugin tried to add more and was stopped"
            ),
        );
    }
    if err
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return StepFailure::retryable(
            FailureCause::Capacity,
            "the host is at its instance limit; try again",
        );
    }
    // A Rust panic prints "thread .. panicked at FILE:LINE:\nMESSAGE\nnote: .."
    // to stderr before trapping: that is what the plugin author needs to see.
    let stderr = String::from_utf8_lossy(&data.stderr.contents()).to_string();
    let panic = panic_message(&stderr)
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    // wasmtime's own message is "error while executing at wasm backtrace":
    // the cause is further down the chain.
    let trap = err
        .downcast_ref::<Trap>()
        .map(|t| t.to_string())
        .unwrap_or_else(|| {
            err.chain()
                .map(|c| c.to_string())
                .filter(|c| !c.starts_with("error while executing at wasm backtrace"))
                .collect::<Vec<_>>()
                .join(": ")
        });
    let trap = if trap.is_empty() {
        format!("{:?}", err.root_cause())
    } else {
        trap
    };
    let hint = if panic.is_empty() && trap.contains("out of bounds memory access") {
        " (a Rust plugin's stack lives in linear memory: runaway recursion ends this way)"
    } else {
        ""
    };
    StepFailure::fatal(
        FailureCause::Trap,
        format!("the plugin trapped: {trap}{panic}{hint}"),
    )
}

/// The panic location and message from a guest's stderr, if it panicked.
pub(super) fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let text: Vec<&str> = stderr[start..]
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Some(cap_message(text.join(" ")))
}

pub(super) fn from_step_error(e: wit::StepError) -> StepFailure {
    match e {
        wit::StepError::Retryable(r) => StepFailure {
            kind: FailureKind::Retryable,
            cause: FailureCause::Plugin,
            message: cap_message(r.message),
            retry_after_ms: r.retry_after_ms,
        },
        wit::StepError::Fatal(message) => {
            StepFailure::fatal(FailureCause::Plugin, cap_message(message))
        }
    }
}

pub(super) fn cap_message(mut m: String) -> String {
    if m.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str(" [cut]");
    }
    m
}

/// Never trust plugin output: sizes, JSON shape, then masking.
pub(super) fn check_returned(returned: Returned, redactor: &Redactor) -> Outcome {
    let result = match returned {
        Returned::Run(o) => {
            if o.outputs.len() > MAX_OUTPUTS_BYTES {
                Err(StepFailure::fatal(
                    FailureCause::OutputLimit,
                    format!(
                        "the plugin returned {} bytes of outputs; the limit is {MAX_OUTPUTS_BYTES}",
                        o.outputs.len()
                    ),
                ))
            } else {
                parse_json("outputs", &o.outputs).and_then(|outputs| {
                    if !outputs.is_object() {
                        return Err(StepFailure::fatal(
                            FailureCause::InvalidOutput,
                            "the plugin's outputs must be a JSON object",
                        ));
                    }
                    Ok((Some(outputs), check_evidence(o.evidence)?))
                })
            }
        }
        Returned::Evidence(e) => check_evidence(e).map(|e| (None, e)),
    };
    match result {
        Ok((outputs, evidence)) => Outcome::Succeeded {
            outputs: outputs.map(|o| redactor.redact_json(o)),
            evidence,
        },
        Err(error) => Outcome::Failed { error },
    }
}

pub(super) fn check_evidence(e: wit::Evidence) -> Result<Evidence, StepFailure> {
    let size = e.summary.len()
        + e.target.len()
        + e.before.as_ref().map_or(0, String::len)
        + e.after.as_ref().map_or(0, String::len);
    if size > MAX_EVIDENCE_BYTES {
        return Err(StepFailure::fatal(
            FailureCause::OutputLimit,
            format!(
                "the plugin returned {size} bytes of evidence; the limit is {MAX_EVIDENCE_BYTES}"
            ),
        ));
    }
    if e.summary.trim().is_empty() {
        return Err(StepFailure::fatal(
            FailureCause::InvalidOutput,
            "the plugin returned evidence without a summary",
        ));
    }
    Ok(Evidence {
        summary: e.summary,
        target: e.target,
        before: e
            .before
            .map(|b| parse_json("evidence.before", &b))
            .transpose()?,
        after: e
            .after
            .map(|a| parse_json("evidence.after", &a))
            .transpose()?,
    })
}

pub(super) fn parse_json(what: &str, text: &str) -> Result<Value, StepFailure> {
    serde_json::from_str(text).map_err(|e| {
        StepFailure::fatal(
            FailureCause::InvalidOutput,
            format!("the plugin's {what} is not valid JSON: {e}"),
        )
    })
}

/// A failed call also names the host limits it ran into: the plugin may have
/// turned the refusal into a vague error of its own, or trapped on it.
pub(super) fn with_notes(outcome: Outcome, notes: &LimitNotes) -> Outcome {
    match (outcome, notes.summary()) {
        (Outcome::Failed { mut error }, Some(note)) if !error.message.contains(&note) => {
            error.message = cap_message(format!("{} ({note})", error.message));
            if error.cause == FailureCause::Plugin || error.cause == FailureCause::Trap {
                error.cause = FailureCause::ResourceLimit;
            }
            Outcome::Failed { error }
        }
        (outcome, _) => outcome,
    }
}

pub(super) fn mask_outcome(outcome: Outcome, r: &Redactor) -> Outcome {
    match outcome {
        Outcome::Failed { mut error } => {
            error.message = r.redact(&error.message);
            Outcome::Failed { error }
        }
        Outcome::Succeeded { outputs, evidence } => Outcome::Succeeded {
            outputs,
            evidence: Evidence {
                summary: r.redact(&evidence.summary),
                target: r.redact(&evidence.target),
                before: evidence.before.map(|v| r.redact_json(v)),
                after: evidence.after.map(|v| r.redact_json(v)),
            },
        },
    }
}
