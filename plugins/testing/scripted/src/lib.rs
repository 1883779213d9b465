//! Test plugin for the scheduler: behaves as its config says.
//!
//! - `ok`: succeed; `fail`: fatal error; `flaky`: retryable error for the
//!   first `failures` attempts of an idempotency key (counted in kv), then ok;
//! - `slow`: sleep `sleep_ms`, then ok;
//! - `sink`: POST the effect to `{sink}/effects`; `verify` GETs it back.
//! - `verify = "fail"`: verify fails fatal.
//!
//! Outputs say whether `run` saw its own step's key in `prior_outputs`
//! (`saw_own`); verify and compensate put the run outputs the host passed
//! them (`ctx.run_outputs()`) in their evidence's `before`.

use std::time::Duration;

use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, kv};
use serde_json::json;

struct Scripted;

fn setting<'a>(ctx: &'a Context, key: &str) -> &'a str {
    ctx.config.get(key).map(String::as_str).unwrap_or("")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn done(ctx: &Context, what: &str) -> Result<Outcome, StepError> {
    Ok(Outcome::new(
        json!({ "step": ctx.step, "attempt": ctx.attempt, "behaviour": what, "seen": ctx.prior_outputs.as_object().map(|o| o.len()).unwrap_or(0), "saw_own": ctx.prior_outputs.get(&ctx.step).is_some() }),
        Evidence::new(
            format!("{} {what}", ctx.step),
            format!("test:{}", ctx.idempotency_key),
        )
        .after(json!({ "done": true })),
    ))
}

impl Step for Scripted {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        match setting(ctx, "behaviour") {
            "ok" => done(ctx, "ok"),
            "fail" => Err(StepError::fatal(format!("{} fails on purpose", ctx.step))),
            "flaky" => {
                let key = format!("tries/{}", ctx.idempotency_key);
                let tries = kv::get(&key)?.map(|v| v.len()).unwrap_or(0) + 1;
                kv::set(&key, &vec![b'x'; tries])?;
                let failures: usize = setting(ctx, "failures").parse().unwrap_or(2);
                if tries <= failures {
                    return Err(StepError::retry_after(
                        format!("flaky try {tries}"),
                        Duration::from_millis(10),
                    ));
                }
                done(ctx, "flaky")
            }
            "slow" => {
                let ms: u64 = setting(ctx, "sleep_ms").parse().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                done(ctx, "slow")
            }
            "sink" => {
                let sink = setting(ctx, "sink");
                http::post(&format!("{sink}/effects"))
                    .json(&json!({ "key": ctx.idempotency_key, "ticket": ctx.ticket_id, "step": ctx.step, "attempt": ctx.attempt }))?
                    .send()?
                    .error_for_status()?;
                done(ctx, "sink")
            }
            other => Err(StepError::fatal(format!("unknown behaviour {other}"))),
        }
    }

    fn verify(ctx: &Context) -> Result<Evidence, StepError> {
        if setting(ctx, "verify") == "fail" {
            return Err(StepError::fatal(format!(
                "{} fails verify on purpose",
                ctx.step
            )));
        }
        if setting(ctx, "behaviour") == "sink" {
            let sink = setting(ctx, "sink");
            let resp =
                http::get(&format!("{sink}/effects/{}", encode(&ctx.idempotency_key))).send()?;
            if resp.status == 404 {
                return Err(StepError::fatal("the sink has no record of this effect"));
            }
            resp.error_for_status()?;
        }
        let mut proof = Evidence::new(
            format!("{} verified", ctx.step),
            format!("test:{}", ctx.idempotency_key),
        );
        proof.before = ctx.run_outputs().cloned();
        Ok(proof)
    }

    fn compensate(ctx: &Context) -> Result<Evidence, StepError> {
        if setting(ctx, "compensate") == "fail" {
            return Err(StepError::fatal("cannot undo"));
        }
        // What the host says this step's run returned, for the tests to check.
        let mut undone = Evidence::new(
            format!("{} undone", ctx.step),
            format!("test:{}", ctx.idempotency_key),
        );
        undone.before = ctx.run_outputs().cloned();
        Ok(undone)
    }
}

itsm_sdk::export!(Scripted);
