//! ITSM plugin host: runs sandboxed WebAssembly step plugins for IT service
//! management automations (offboarding first).
//!
//! Layers, each usable alone: [`manifest`] (what a plugin may do),
//! [`runtime`] (run one call of a plugin in a sandbox), [`scheduler`] (one
//! durable driver per ticket), and the `itsm` command line in [`cli`]. The
//! local test doubles of SaaS APIs that the demo and `itsm sandbox` serve
//! are a crate of their own, `itsm-sandbox`, so this one holds the product.

// Leaves: plain data and helpers that import nothing above them.
pub mod cpu;
pub mod digest;
pub mod error;
pub mod principal;
pub mod report;
pub mod tls;

// The core, lowest first: the trail and signatures, plain tickets and
// manifests and workflows, the store that keeps them, the runtime that
// runs plugins, and the scheduler that drives tickets through them.
pub mod access;
pub mod audit;
pub mod auth;
pub mod bundled;
pub mod manifest;
pub mod oidc;
pub mod runtime;
pub mod scheduler;
pub mod shared;
pub mod signing;
pub mod store;
pub mod ticket;
pub mod workflow;

// The edges: administration, intake, the HTTP API and the command line.
pub mod admin;
pub mod api;
pub mod cli;
pub mod intake;

pub use error::{Error, Result};

/// The allocator of every binary built on this crate (`itsm`, its tests
/// and benches, so they measure what ships): mimalloc. Buffers are built
/// on the executor's threads and freed on the committer's; under glibc's
/// malloc those cross-thread frees, and its consolidation, were about a
/// third of the committer thread's time in the scheduler bench.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
