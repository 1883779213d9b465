//! A plugin written against `wit/plugin.wit` with plain wit-bindgen and no
//! SDK: proof the contract file alone is enough to build a plugin.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "itsm:plugin/plugin",
    generate_all,
});

use exports::itsm::plugin::step::Guest;
use itsm::plugin::types::{Evidence, StepContext, StepError, StepOutcome};
use itsm::plugin::{kv, log};

struct Bare;

impl Guest for Bare {
    fn run(ctx: StepContext) -> Result<StepOutcome, StepError> {
        let greeting = ctx
            .config
            .iter()
            .find(|(k, _)| k == "greeting")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        log::log(log::Level::Info, &format!("{greeting}, {}", ctx.subject));
        // Count runs per idempotency key in plugin-private state.
        let key = format!("runs/{}", ctx.idempotency_key);
        let runs = kv::get(&key)
            .map_err(StepError::Fatal)?
            .map(|v| u32::from_le_bytes(v.try_into().unwrap_or_default()))
            .unwrap_or(0)
            + 1;
        kv::set(&key, &runs.to_le_bytes()).map_err(StepError::Fatal)?;
        Ok(StepOutcome {
            outputs: format!(
                "{{\"greeting\":\"{greeting}\",\"subject\":{:?},\"attempt\":{},\"runs\":{runs}}}",
                ctx.subject, ctx.attempt
            ),
            evidence: Evidence {
                summary: format!("greeted {}", ctx.subject),
                target: format!("ticket:{}", ctx.ticket_id),
                before: None,
                after: Some(format!("{{\"runs\":{runs}}}")),
            },
        })
    }

    fn verify(ctx: StepContext) -> Result<Evidence, StepError> {
        Ok(Evidence {
            summary: format!("{} was greeted", ctx.subject),
            target: format!("ticket:{}", ctx.ticket_id),
            before: None,
            after: None,
        })
    }

    fn compensate(_ctx: StepContext) -> Result<Evidence, StepError> {
        Err(StepError::Retryable(itsm::plugin::types::RetryableError {
            message: "try later".into(),
            retry_after_ms: Some(1500),
        }))
    }
}

export!(Bare);
