//! Host-side limits of one call, beyond its linear memory and time.
//!
//! `memory_mb` bounds what the plugin's own memory can grow to, but a plugin
//! can also make the host allocate: header sets, request handles, open
//! connections, key-value state. Each of those is capped here, and a call
//! that hits a cap is told so in words ("host resource limit: ...") in its
//! report, whatever the plugin did with the error it was handed.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open resources (header sets, requests, bodies, streams, pollables) one
/// call may hold at once. A request through the SDK uses about a dozen.
pub const MAX_RESOURCES: usize = 512;
/// Bytes one header set (a `wasi:http` fields resource) may hold, counted
/// as wasmtime counts them (names and values).
pub const MAX_FIELDS_BYTES: usize = 64 * 1024;

/// What is most host memory a call's header sets can take: every open
/// resource a full header set.
pub const MAX_FIELDS_MEMORY: usize = MAX_RESOURCES * MAX_FIELDS_BYTES;

/// The limits a call ran into, in words, for its report.
#[derive(Clone, Default)]
pub(crate) struct LimitNotes(Arc<Mutex<Vec<String>>>);

impl LimitNotes {
    /// Note that the call hit `limit` (said once however often it is hit).
    pub fn hit(&self, limit: &str) {
        let mut notes = self.0.lock().expect("notes lock");
        if notes.len() < 8 && !notes.iter().any(|n| n == limit) {
            notes.push(limit.to_string());
        }
    }

    /// What was hit, as one clause: `host resource limit: a; b`.
    pub fn summary(&self) -> Option<String> {
        let notes = self.0.lock().expect("notes lock");
        (!notes.is_empty()).then(|| format!("host resource limit: {}", notes.join("; ")))
    }
}

/// The in-flight request caps one call is under: its own, and its plugin's
/// across every call running at once.
pub(crate) struct RequestSlots {
    pub call: Arc<Semaphore>,
    pub call_limit: u32,
    pub plugin: Arc<Semaphore>,
    pub plugin_limit: u32,
    pub plugin_name: String,
}

/// A request holding its places under both caps, until its connection
/// closes and its body is read or dropped.
pub(crate) struct InFlight {
    _call: OwnedSemaphorePermit,
    _plugin: OwnedSemaphorePermit,
}

impl RequestSlots {
    /// Take a place under both caps, or say which is full. Never waits: a
    /// plugin over its own cap is misbehaving, and one waiting on its
    /// plugin's cap would only hold its instance longer.
    pub fn acquire(&self) -> Result<InFlight, String> {
        let call = self.call.clone().try_acquire_owned().map_err(|_| {
            format!(
                "at most {} requests in flight at once in one call (limits.requests_in_flight)",
                self.call_limit
            )
        })?;
        let plugin = self.plugin.clone().try_acquire_owned().map_err(|_| {
            format!(
                "at most {} requests in flight at once across all calls of plugin {} (limits.plugin_requests_in_flight)",
                self.plugin_limit, self.plugin_name
            )
        })?;
        Ok(InFlight {
            _call: call,
            _plugin: plugin,
        })
    }
}
