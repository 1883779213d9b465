//! Host-side limits of one call, beyond its linear memory and time.
//!
//! `memory_mb` bounds what the plugin's own memory can grow to, but a plugin
//! can also make the host allocate: header sets, request handles, open
//! connections, key-value state. Each of those is capped here, and a call
//! that hits a cap is told so in words ("host resource limit: ...") in its
//! report, whatever the plugin did with the error it was handed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Epoch ticks of CPU after which a call counts as long-running.
const YOUNG_TICKS: u32 = 4;

/// Calls running now, and how many of them have run long, so long calls can
/// give way to short ones.
///
/// Every call yields at each epoch tick. A long-running call (a plugin
/// spinning toward its time limit, or heavy work) then also waits one tick
/// per long-running call before going on, while any short call is running:
/// long calls together take about one core, whatever their number, and short
/// calls (nearly all calls) keep the rest. With no short call waiting, long
/// calls run at full speed.
#[derive(Default)]
pub(crate) struct CallLoad {
    running: AtomicUsize,
    long: AtomicUsize,
}

/// A call in progress; counted out when dropped.
pub(crate) struct Running<'a>(&'a CallLoad);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CallLoad {
    /// Count a call in.
    pub fn enter(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(self)
    }

    /// The epoch callback for one call's store.
    pub fn pacer<T>(
        self: &Arc<Self>,
    ) -> impl FnMut(wasmtime::StoreContextMut<'_, T>) -> wasmtime::Result<wasmtime::UpdateDeadline>
    + Send
    + Sync
    + 'static {
        let load = self.clone();
        let mut ticks = 0u32;
        let long = LongGuard(load.clone(), false);
        let mut long = Some(long);
        move |_| {
            ticks = ticks.saturating_add(1);
            if ticks <= YOUNG_TICKS {
                return Ok(wasmtime::UpdateDeadline::Yield(1));
            }
            if let Some(g) = long.as_mut()
                && !g.1
            {
                g.1 = true;
                load.long.fetch_add(1, Ordering::Relaxed);
            }
            let long_now = load.long.load(Ordering::Relaxed).max(1);
            let short_now = load
                .running
                .load(Ordering::Relaxed)
                .saturating_sub(long_now);
            if short_now == 0 {
                return Ok(wasmtime::UpdateDeadline::Yield(1));
            }
            let wait = super::EPOCH_TICK * long_now as u32;
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(wait.min(Duration::from_millis(100)))),
            ))
        }
    }
}

/// Counts a long call out when its store (and so its callback) is dropped.
struct LongGuard(Arc<CallLoad>, bool);

impl Drop for LongGuard {
    fn drop(&mut self) {
        if self.1 {
            self.0.long.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
