//! Test plugin: does nothing, successfully. The runtime bench calls it to
//! measure the host's per-call cost.

use itsm_sdk::{Context, Evidence, Outcome, Step, StepError};

struct Noop;

impl Step for Noop {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        Ok(Outcome::new(
            serde_json::json!({ "attempt": ctx.attempt }),
            Evidence::new("nothing done", &ctx.subject),
        ))
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        Ok(Evidence::new("nothing to check", &ctx.subject))
    }
}

itsm_sdk::export!(Noop);
