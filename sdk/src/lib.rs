//! Write ITSM step plugins in Rust.
//!
//! A plugin is one workflow step (disable an account, revoke a licence, wipe
//! a device) built as a WebAssembly component and run by the ITSM host in a
//! sandbox. Implement [`Step`], call [`export!`], build for `wasm32-wasip2`:
//!
//! ```no_run
//! use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http};
//! use serde_json::json;
//!
//! struct Disable;
//!
//! impl Step for Disable {
//!     fn run(ctx: &Context) -> Result<Outcome, StepError> {
//!         let base = ctx.config("base_url")?;
//!         let user = http::patch(&format!("{base}/users/{}", ctx.subject))
//!             .header("Idempotency-Key", &ctx.idempotency_key)
//!             .json(&json!({ "active": false }))?
//!             .send()?
//!             .error_for_status()?;
//!         itsm_sdk::log::info(&format!("disabled {}", ctx.subject));
//!         Ok(Outcome::new(
//!             json!({ "status": user.status }),
//!             Evidence::new(format!("{} disabled", ctx.subject), format!("{base}/users/{}", ctx.subject))
//!                 .after(json!({ "active": false })),
//!         ))
//!     }
//!
//!     fn verify(ctx: &Context) -> Result<Evidence, StepError> {
//!         let base = ctx.config("base_url")?;
//!         let user: serde_json::Value = http::get(&format!("{base}/users/{}", ctx.subject))
//!             .send()?
//!             .error_for_status()?
//!             .json()?;
//!         if user["active"] != json!(false) {
//!             return Err(StepError::fatal("user is still active"));
//!         }
//!         Ok(Evidence::new("user is inactive", format!("{base}/users/{}", ctx.subject)).after(user))
//!     }
//! }
//!
//! itsm_sdk::export!(Disable);
//! ```
//!
//! The host grants network access, credentials, secrets and key-value state
//! per plugin in its `plugin.toml`; see `sdk/README.md` for the whole loop.

#![deny(missing_docs)]

pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;
mod step;

pub use step::{Context, Evidence, Outcome, Step, StepError};

/// Generated bindings for the `itsm:plugin` world. Not part of the API.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "itsm:plugin/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_step",
        default_bindings_module: "itsm_sdk::wit",
        with: {
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
            "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
        },
    });
}

#[doc(hidden)]
pub mod __private {
    pub use crate::step::{compensate, run, verify};
    pub use crate::wit::exports::itsm::plugin::step::Guest;
    pub use crate::wit::itsm::plugin::types::{Evidence, StepContext, StepError, StepOutcome};
}

/// Export a type implementing [`Step`] as the plugin's `step` interface.
/// Call it once, at the crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            struct __ItsmStep;
            impl $crate::__private::Guest for __ItsmStep {
                fn run(
                    ctx: $crate::__private::StepContext,
                ) -> ::core::result::Result<$crate::__private::StepOutcome, $crate::__private::StepError>
                {
                    $crate::__private::run::<$ty>(ctx)
                }
                fn verify(
                    ctx: $crate::__private::StepContext,
                ) -> ::core::result::Result<$crate::__private::Evidence, $crate::__private::StepError>
                {
                    $crate::__private::verify::<$ty>(ctx)
                }
                fn compensate(
                    ctx: $crate::__private::StepContext,
                ) -> ::core::result::Result<$crate::__private::Evidence, $crate::__private::StepError>
                {
                    $crate::__private::compensate::<$ty>(ctx)
                }
            }
            $crate::wit::__export_step!(__ItsmStep with_types_in $crate::wit);
        };
    };
}
