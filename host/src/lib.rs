//! ITSM plugin host: runs sandboxed WebAssembly step plugins for IT service
//! management automations (offboarding first).
//!
//! Layers, each usable alone: [`manifest`] (what a plugin may do),
//! [`runtime`] (run one call of a plugin in a sandbox), [`sandbox`] (local
//! test doubles of SaaS APIs), and the `itsm` command line in [`cli`].

pub mod bundled;
pub mod cli;
pub mod error;
pub mod manifest;
pub mod runtime;
pub mod sandbox;

pub use error::{Error, Result};
