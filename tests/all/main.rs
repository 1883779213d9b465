//! End-to-end tests: real wasm components built from `plugins/`, real HTTP on
//! loopback, and the real `itsm` binary. One test binary, a module per area.

mod api;
mod attacks;
mod audit_export;
mod auth;
mod cache;
mod cli_client;
mod conditions;
mod connectors;
mod contract;
mod corruption;
mod crash;
mod demo;
mod durability;
mod echo;
mod full_disk;
mod fuzz;
mod generated_client;
mod hooks;
mod hostile;
mod intake;
mod oauth;
mod offboarding;
mod other_language;
mod plugin_new;
mod scheduler;
mod scim;
mod scim_peer;
mod shutdown;
mod signing;
mod step_cli;
mod support;
mod tasks;
mod timers;
mod ui;
mod wait;
