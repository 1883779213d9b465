//! Plugin calls: started after the commit that asked for them, bounded by
//! the worker pool, and reported back to their ticket's driver as events.

use std::time::Duration;

use tokio::task::JoinSet;

use super::machine::Call;
use super::{Scheduler, machine};
use crate::cpu;
use crate::runtime::{CallReport, FailureCause, Grants, Outcome, Plugin, StepFailure, StepInput};
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// In-flight plugin calls of one ticket: the step and the report, or the
/// export and why the call could not be made.
pub(super) type Calls = JoinSet<(
    String,
    std::result::Result<CallReport, (crate::runtime::Op, String)>,
)>;

impl Scheduler {
    /// Make a call the committed transition asked for, unless shutting
    /// down: then the step stays `running` on disk and the next start runs
    /// it (recovery records it interrupted), so no call begins that the
    /// drain would have to wait for.
    pub(super) fn start_call(&self, calls: &mut Calls, ticket: &Ticket, wf: &Workflow, call: Call) {
        if self.is_draining() {
            return;
        }
        self.inner
            .open_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.spawn_call(calls, ticket, wf, call);
    }

    /// `n` calls' results are recorded (or dropped with their driver).
    pub(super) fn call_closed(&self, n: usize) {
        self.inner
            .open_calls
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn spawn_call(&self, calls: &mut Calls, ticket: &Ticket, wf: &Workflow, call: Call) {
        let def = wf.step(&call.step).cloned();
        let plugin = def
            .as_ref()
            .and_then(|d| self.plugin_set().plugins.get(&d.plugin).cloned());
        let input = StepInput {
            ticket_id: ticket.id.clone(),
            step: call.step.clone(),
            subject: ticket.subject.clone(),
            inputs: ticket.inputs.clone(),
            prior_outputs: machine::prior_outputs(ticket, &call.step, call.op),
            attempt: call.attempt,
            idempotency_key: format!("{}/{}", ticket.id, call.step),
        };
        let workers = self.inner.workers.clone();
        let waiting = self.inner.waiting.clone();
        let secrets = self.inner.secrets.clone();
        let step = call.step.clone();
        let (Some(def), Some(plugin)) = (def, plugin) else {
            calls.spawn(std::future::ready((
                step,
                Err((call.op, "the step's plugin is not loaded".to_string())),
            )));
            return;
        };
        // The plugin's own capacity first, holding nothing shared while
        // waiting for it: tickets queued behind a slow plugin must not sit
        // on the worker slots other plugins' tickets need. Getting them is
        // short work; the call then counts itself (short while young).
        let capacity = cpu::short({
            let plugin = plugin.clone();
            async move {
                waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let slot = plugin.slot().await;
                let permit = workers.acquire_owned().await;
                waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                (slot, permit.expect("semaphore never closed"))
            }
        });
        calls.spawn(async move {
            let (slot, _permit) = capacity.await;
            let mut secrets = secrets;
            for (wanted, supplied) in &def.secrets {
                match secrets.get(supplied).cloned() {
                    Some(v) => secrets.insert(wanted.clone(), v),
                    // Missing: the plugin's own name must not silently stand in.
                    None => secrets.remove(wanted),
                };
            }
            let grants = Grants {
                config: crate::workflow::inputs::fill_config(&def.config, &input.inputs),
                secrets,
            };
            let limit = def.timeout.unwrap_or(Duration::MAX);
            match tokio::time::timeout(limit, plugin.call_in(slot, call.op, &input, &grants)).await
            {
                Ok(Ok(report)) => (step, Ok(report)),
                Ok(Err(e)) => (step, Err((call.op, e.to_string()))),
                Err(_) => (step, Ok(timed_out(&plugin, call.op, limit))),
            }
        });
    }
}

pub(super) fn timed_out(plugin: &Plugin, op: crate::runtime::Op, limit: Duration) -> CallReport {
    CallReport {
        plugin: plugin.manifest().name.clone(),
        version: plugin.manifest().version.clone(),
        wasm_sha256: plugin.wasm_sha256().to_string(),
        op,
        outcome: Outcome::Failed {
            error: StepFailure {
                kind: crate::runtime::FailureKind::Retryable,
                cause: FailureCause::Timeout,
                message: format!(
                    "the step ran past its workflow timeout of {} ms",
                    limit.as_millis()
                ),
                retry_after_ms: None,
            },
        },
        log: Vec::new(),
        requests: Vec::new(),
        duration_ms: limit.as_millis() as u64,
    }
}
