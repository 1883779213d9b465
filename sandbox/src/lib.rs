//! Local test doubles of the SaaS APIs connectors talk to. They are for
//! tests and demos only, never a production endpoint: a crate of their own
//! so the host crate holds the product alone, while `itsm demo` and
//! `itsm sandbox` still serve them.
//!
//! Handlers here return an early `Response` as their error value (a
//! vendor-shaped 4xx); boxing it to please `result_large_err` would only add
//! noise to code that runs in tests and demos.

pub mod chat;
pub mod chat_api;
pub mod faults;
#[allow(clippy::result_large_err)]
pub mod firewall;
#[allow(clippy::result_large_err)]
pub mod graph;
pub mod postgres;
#[allow(clippy::result_large_err)]
pub mod salesforce;
#[allow(clippy::result_large_err)]
pub mod scim;
#[allow(clippy::result_large_err)]
pub mod vault;
pub mod world;
